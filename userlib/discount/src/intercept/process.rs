//! The rest of the process's state: `chdir` (recorded, restored on recovery), `mprotect`
//! (recorded, redone), `getpid` (a non-deterministic event: a new process has a new one).

use libc::{c_char, c_int, c_void, size_t};

use super::{active, cbytes, nondeterministic, Entry};
use crate::kstate;
use crate::sys::{libc_ret, sc};

/// `chdir(2)`.
///
/// # Safety
/// `path` is a NUL-terminated string.
pub(super) unsafe fn sys_chdir(path: *const c_char) -> isize {
    // SAFETY: chdir to the caller's C string.
    let r = unsafe { sc(libc::SYS_chdir, path as usize, 0, 0) };
    if active() && r == 0 {
        let mut e = Entry::enter();
        let ks = e.cx().ks();
        // SAFETY: the caller passes a C string.
        let abs = kstate::absolutize(&ks.cwd, libc::AT_FDCWD, unsafe { cbytes(path) });
        ks.cwd = abs;
    }
    r
}

/// `mprotect(2)`.
///
/// # Safety
/// The program's own `mprotect` call (its memory, its consequences).
pub(super) unsafe fn sys_mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> isize {
    // SAFETY: the program's own mprotect call, with its arguments.
    let r = unsafe { sc(libc::SYS_mprotect, addr as usize, len, prot as usize) };
    if active() && r == 0 {
        let mut e = Entry::enter();
        e.cx().ks().prots.push((addr as usize, len, prot));
    }
    r
}

/// `getpid(2)` (and `gettid`, the same number in a single-threaded process).
pub(super) fn sys_getpid(nr: i64) -> isize {
    // SAFETY: getpid and gettid take no arguments.
    let r = unsafe { sc(nr, 0, 0, 0) };
    if active() {
        let mut e = Entry::enter();
        nondeterministic(e.cx(), "getpid", usize::MAX);
    }
    r
}

#[cfg(feature = "global")]
mod exported {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
        // SAFETY: chdir's contract, forwarded.
        libc_ret(unsafe { sys_chdir(path) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> c_int {
        // SAFETY: mprotect's contract, forwarded.
        libc_ret(unsafe { sys_mprotect(addr, len, prot) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn getpid() -> libc::pid_t {
        sys_getpid(libc::SYS_getpid) as libc::pid_t
    }
}
