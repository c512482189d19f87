//! `libdc_preload.so`: Discount Checking as a shared object for `dc run` (`LD_PRELOAD`).
//!
//! Preloaded, its definitions of `malloc`, `read`, `write`, `open`, `sigaction`, ... (the
//! discount crate's `intercept` and `alloc`) come first in the symbol search order, so
//! they interpose glibc's for the program and for glibc's other libraries; whatever glibc
//! does internally is trapped by Syscall User Dispatch. Its ELF constructor calls the
//! same `dc_init()` a statically linked program calls first in `main` (thesis 5.2: "the
//! program is linked with the Discount Checking library"): it runs before `main`, after
//! the libraries' own constructors, re-executes the program with ASLR off, and resumes
//! the last checkpoint after a crash. A program that fails to initialize exits with 70
//! (`EX_SOFTWARE`) after the error on stderr, rather than run without recovery.

// The discount crate's exported symbols are what this library is for.
pub use discount::capi::{dc_checkpoint, dc_init};

/// Exit status when Discount Checking cannot start (`EX_SOFTWARE`).
pub const INIT_FAILED: i32 = 70;

#[cfg(not(test))]
extern "C" fn dc_preload_ctor() {
    if discount::capi::dc_init() != 0 {
        // SAFETY: _exit ends the process at once (the error was printed by dc_init).
        unsafe { libc::_exit(INIT_FAILED) };
    }
}

/// Runs `dc_preload_ctor` as an ELF constructor (not in this crate's own unit-test
/// binary, which would otherwise make itself recoverable).
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static DC_PRELOAD_CTOR: extern "C" fn() = dc_preload_ctor;
