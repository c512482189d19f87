//! Discount Checking (Lowell and Chen 1998; Lowell's thesis, chapters 5 and 6): failure
//! transparency for single-threaded programs with one call at the start of `main`.
//!
//! ```no_run
//! # fn run() -> discount::Result<()> {
//! discount::init(discount::Config::from_env()?)?; // first line of main
//! // ... the program, unchanged: after a crash, running it again resumes it from its
//! // last checkpoint, with its files, descriptors and signal handlers.
//! # Ok(()) }
//! ```
//!
//! From C: `dc_init()` (configured by environment variables, see [`Config::from_env`]),
//! and optionally `dc_checkpoint()`; header `discount/include/dc.h`.
//!
//! How it works, in one paragraph per part:
//!
//! * **Memory** ([`ckpt`], [`image`], [`layout`], [`alloc`]): the writable static data of
//!   every loaded object, a persistent heap (the Rust global allocator and C `malloc`) and
//!   the main stack are checkpointed into a Vista group: a checkpoint is a Vista
//!   transaction that copies the pages written since the last one into the image, and
//!   recovery is Vista's abort plus a copy back.
//! * **Dirty pages** ([`track`]): userfaultfd asynchronous write-protect + `PAGEMAP_SCAN`.
//! * **Registers** ([`sys`]): a setjmp-like save onto the checkpointed stack.
//! * **Same addresses every run** ([`reexec`]): ASLR off and a re-exec with the first
//!   run's arguments and environment.
//! * **Kernel state** ([`kstate`], [`intercept`], [`sud`]): files and offsets (with a
//!   file-data undo log and delayed unlink), directories made and removed, signal
//!   handlers and mask, interval timers, `mprotect`, working directory; recorded by
//!   wrapping libc calls, and, for the calls glibc makes internally (stdio), by trapping
//!   them with Syscall User Dispatch into the same handlers; redone on recovery.
//! * **One owner**: the runtime and the kernel-state records are reached only through a
//!   context (`ckpt::Ctx`) created at the entry points (the interposed libc functions,
//!   `init`, `checkpoint`, the signal handlers, the timer, exit) and passed down; its one
//!   `unsafe` constructor states why no two uses overlap (one thread, and the reentrancy
//!   guards `in_dc` and `busy` against signal handlers).
//! * **Protocols** ([`protocol`]): CAND, CPVS, CBNDVS, CAND-LOG, CBNDVS-LOG, manual;
//!   for a computation of several processes CPV-2PC and CBNDV-2PC ([`twopc`]), with the
//!   peers outside the computation named ([`outside`]).
//! * **Oracle** ([`oracle`], [`trace`]): event traces and a checker for the commit
//!   invariant (Theorem 2 / Save-work) and for consistent output.
//! * **Where the image lives** ([`StoreKind`]): plain files ([`image::FileStore`],
//!   survives process crashes), or Rio objects ([`rio_store::RioStore`], feature `rio`,
//!   survives kernel crashes when rio.ko is loaded).
//!
//! Unmodified dynamically linked programs run under `dc run` (crate `dc`), which preloads
//! this crate as a shared object whose constructor calls `dc_init()`.
//!
//! Limits (see the README): single-threaded; thread-local storage, anonymous `mmap`s,
//! `fork`ed children and memory shared with other processes are not checkpointed (the
//! calls are refused with a message when trapped); glibc's internal reads of the vDSO
//! clock are not seen; sockets are rebuilt as `intercept::net` describes.

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod alloc;
mod arena;
pub mod ckpt;
mod config;
pub mod diag;
mod error;
pub mod image;
pub mod intercept;
pub mod kstate;
pub mod layout;
pub mod oracle;
pub mod outside;
pub mod protocol;
pub mod reexec;
#[cfg(feature = "rio")]
pub mod rio_store;
pub mod signals;
pub mod state;
pub mod sud;
pub mod sys;
pub mod trace;
pub mod track;
pub mod twopc;
pub mod vdso;
pub mod vol;

use std::sync::atomic::Ordering;

pub use config::{Config, StoreKind, SudMode};

/// The system libraries a C program linked with `libdiscount.a` needs after it, in this
/// order (the Rust standard library's own dependencies): what `include/dc.h` and the
/// README tell C programs to link with, and what the tests that build C programs pass to
/// `cc`.
pub const C_LINK_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];
pub use error::{Error, Result};
pub use protocol::Protocol;
pub use track::TrackerKind;
pub use vista::Durability;

extern "C" fn at_exit() {
    // With Syscall User Dispatch the image is marked finished at `exit_group` instead,
    // after stdio's final flush (which runs after every atexit handler) went through the
    // protocol.
    if !sud::on() {
        ckpt::finish();
    }
}

/// Makes the calling program recoverable. Call it first in `main`.
///
/// * On the first run: re-executes the program with ASLR off (so this call happens twice;
///   the first process never returns from it), creates the image in `cfg.dir`, takes the
///   first checkpoint and returns `Ok(())`.
/// * After a crash (the image holds a checkpoint the program did not finish from):
///   re-executes the program exactly as it was first started and resumes it from its
///   last checkpoint. This call then does not return (unless that checkpoint was the one
///   taken here).
/// * When the program exits normally the image is marked finished, and the next run
///   starts afresh.
///
/// With `DC_DISABLE=1` in the environment it does nothing.
pub fn init(cfg: Config) -> Result<()> {
    if std::env::var_os("DC_DISABLE").is_some() {
        vol::get().disabled.store(true, Ordering::Release);
        return Ok(());
    }
    if !cfg!(feature = "global") {
        return Err(Error::State(
            "the discount crate was built without its `global` feature",
        ));
    }
    cfg.check()?;
    let v = vol::get();
    if v.active.load(Ordering::Acquire) || ckpt::runtime_published() {
        return Err(Error::State("init was already called"));
    }
    let n = layout::threads();
    if n != 1 {
        return Err(Error::Threads(n));
    }
    let store = alloc::internal(|| cfg.open_store())?;
    if !reexec::is_stage1() {
        // The process the user started: re-execute with ASLR off, as first started.
        let valid = ckpt::has_valid_checkpoint(store.as_ref(), &cfg)?;
        let info = if valid {
            let i = reexec::ExecInfo::load(store.dir())?;
            i.check_same_binary()?;
            i
        } else {
            let i = reexec::ExecInfo::current()?;
            i.save(store.dir())?;
            i
        };
        return Err(info.exec());
    }
    // Diagnostics to the log from here on (the re-executed process; recovery too).
    trace::open_log(cfg.log.as_deref())?;
    if !reexec::aslr_off() {
        return Err(Error::Layout(
            "address-space randomization is still on after the re-exec".into(),
        ));
    }
    if let Some(m) = &cfg.twopc {
        // A member of a computation: its socket to the coordinator first, since recovery
        // may have to ask it about a prepared checkpoint.
        twopc::setup(m)?;
    }
    if ckpt::has_valid_checkpoint(store.as_ref(), &cfg)? {
        return ckpt::recover(cfg, store, intercept::HOOKS);
    }
    // SAFETY: registering a plain extern "C" function with atexit.
    unsafe { libc::atexit(at_exit) };
    let r = ckpt::init_fresh(cfg, store, intercept::HOOKS);
    if r.is_ok() {
        // A member waits here until every member of the computation has started.
        twopc::join();
    }
    // Back to the program (the first time, or resumed into this checkpoint after a
    // crash): its system calls are trapped from here on.
    if sud::on() {
        sud::set(sud::BLOCK);
    }
    r
}

/// Takes a checkpoint now. Returns `Ok(true)` when this call returns a second time, in a
/// new process, after a crash and recovery. A no-op (`Ok(false)`) when `init` was
/// disabled with `DC_DISABLE`.
pub fn checkpoint() -> Result<bool> {
    if vol::get().disabled.load(Ordering::Acquire) {
        return Ok(false);
    }
    ckpt::checkpoint(usize::MAX)
}

/// Whether Discount Checking is running in this process.
pub fn is_active() -> bool {
    vol::get().active.load(Ordering::Acquire)
}

/// Checkpoint counters of this process (not of earlier incarnations).
pub fn stats() -> ckpt::Stats {
    ckpt::stats()
}

/// C entry points.
pub mod capi {
    use super::*;

    /// `int dc_init(void)`: [`init`] with [`Config::from_env`]. Returns 0, or -1 after
    /// printing the error to stderr.
    #[no_mangle]
    pub extern "C" fn dc_init() -> libc::c_int {
        match Config::from_env().and_then(init) {
            Ok(()) => 0,
            Err(e) => {
                crate::diag::diag(&format!("dc_init: {e}"));
                -1
            }
        }
    }

    /// `int dc_checkpoint(void)`: 0 after a checkpoint, 1 when resumed after recovery,
    /// -1 on error.
    #[no_mangle]
    pub extern "C" fn dc_checkpoint() -> libc::c_int {
        match checkpoint() {
            Ok(false) => 0,
            Ok(true) => 1,
            Err(e) => {
                crate::diag::diag(&format!("dc_checkpoint: {e}"));
                -1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_kinds_parse() {
        assert_eq!("files".parse::<StoreKind>().unwrap(), StoreKind::Files);
        assert_eq!(
            "rio:kv".parse::<StoreKind>().unwrap(),
            StoreKind::Rio {
                prefix: "kv".into()
            }
        );
        for bad in ["", "rio", "file", "nvme:x"] {
            assert!(
                matches!(bad.parse::<StoreKind>(), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rio_config_is_small_and_checked() {
        let c = Config::rio("kv", "/mnt/dc");
        if cfg!(not(feature = "rio")) {
            assert!(matches!(c.check(), Err(Error::Unsupported(..))));
            return;
        }
        assert!(c.check().is_ok());
        let image = c.heap_size + c.stack_size + c.log_capacity;
        assert!(image <= 16 << 20, "{image}");
        let mut bad = Config::rio("a b", "/mnt/dc");
        assert!(matches!(bad.check(), Err(Error::Config(_))));
        bad.store = StoreKind::Rio {
            prefix: String::new(),
        };
        assert!(matches!(bad.check(), Err(Error::Config(_))));
    }

    #[cfg(feature = "rio")]
    #[test]
    fn opening_the_rio_store_without_rio_ko_is_a_typed_error() {
        if std::path::Path::new(rio_client::DEFAULT_DEVICE).exists() {
            return; // rio.ko is loaded here: nothing to show
        }
        let dir = tempfile::tempdir().unwrap();
        let e = Config::rio("kv", dir.path()).open_store().unwrap_err();
        assert!(matches!(e, Error::NoRio(_)), "{e}");
    }
}
