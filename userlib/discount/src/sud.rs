//! Syscall User Dispatch (Linux 5.11+): seeing every system call the program makes,
//! including the ones glibc makes internally (stdio's `write` and `read`, `fopen`'s
//! `openat`, `opendir`), which never reach the interposed libc symbols of
//! [`crate::intercept`].
//!
//! The thesis (5.2.2) intercepts "the system calls that change kernel state" by
//! relinking the program with libdc's wrappers; with glibc today many of those calls are
//! made inside libc, below any symbol a program can interpose. So the wrappers stay as
//! the fast path, and everything that escapes them is trapped:
//!
//! * `prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, begin, len, &selector)`
//!   makes every `syscall` instruction outside `[begin, begin+len)` consult a selector
//!   byte: `ALLOW` lets it through, `BLOCK` turns it into a SIGSYS (the kernel rolls the
//!   call back; `rax` holds its number, the argument registers its arguments).
//! * `[begin, begin+len)` is Discount Checking's system call gate (`dc_syscall`, which
//!   every raw call of Discount Checking goes through, see [`crate::sys::syscall6`]) and
//!   its signal return trampoline (`dc_restore_rt`, the restorer of every handler it
//!   installs, program handlers included: `rt_sigreturn` is never trapped).
//! * The selector (in the volatile page, [`crate::vol::Vol::sud_selector`]) is `BLOCK`
//!   while the program runs and `ALLOW` while Discount Checking's own code runs (its
//!   wrappers, checkpoints, recovery, its signal handlers: each saves the value it
//!   found and puts it back, see [`Allow`]), because that code also calls glibc (std's
//!   file functions, Vista's `msync`), whose system calls must not trap.
//! * The SIGSYS handler (`intercept::trap`) decodes the call, runs the same handler the
//!   wrapper of that call runs (one function per system call, shared by both), and
//!   writes the result into the interrupted context's `rax`. Calls that are neither
//!   handled nor on its list of harmless ones are refused with a message naming them.
//!
//! The selector is volatile (never rolled back); the values each entry point saved are
//! on the checkpointed stacks, so a context resumed after a crash puts back what it found
//! when it returns, and recovery switches dispatch on again in the new process before it
//! jumps (it is not inherited across `execve`).

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::sys::{self, check, syscall6, KSigaction};
use crate::vol;

/// The selector value that lets system calls through.
pub const ALLOW: u8 = 0;
/// The selector value that traps system calls (SIGSYS).
pub const BLOCK: u8 = 1;

const PR_SET_SYSCALL_USER_DISPATCH: usize = 59;
const PR_SYS_DISPATCH_ON: usize = 1;
/// `si_code` of a SIGSYS raised by Syscall User Dispatch.
pub const SYS_USER_DISPATCH: i32 = 2;

/// Whether dispatch is on in this process.
#[inline(always)]
pub fn on() -> bool {
    vol::get().sud_on.load(Ordering::Relaxed)
}

/// Sets the selector.
#[inline(always)]
pub fn set(v: u8) {
    vol::get().sud_selector.store(v, Ordering::Release);
}

/// The selector now.
#[inline(always)]
pub fn get() -> u8 {
    vol::get().sud_selector.load(Ordering::Acquire)
}

/// `ALLOW` for as long as it lives (Discount Checking's own code runs), then the value
/// it found. Every entry point from the program into Discount Checking holds one.
#[must_use]
pub struct Allow {
    old: u8,
}

impl Allow {
    /// Lets system calls through until dropped.
    #[inline(always)]
    pub fn new() -> Allow {
        let old = get();
        if old != ALLOW {
            set(ALLOW);
        }
        Allow { old }
    }

    /// The value found on entry (put back on drop).
    pub fn found(&self) -> u8 {
        self.old
    }
}

impl Default for Allow {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Allow {
    #[inline(always)]
    fn drop(&mut self) {
        if self.old != ALLOW {
            set(self.old);
        }
    }
}

/// Runs `f` (the program's code, e.g. its signal handler) with system calls trapped
/// (when dispatch is on), then lets them through again.
pub fn as_program<R>(f: impl FnOnce() -> R) -> R {
    if !on() {
        return f();
    }
    let old = get();
    set(BLOCK);
    let r = f();
    set(old);
    r
}

/// The exempt code range `[begin, end)`.
pub fn exempt_range() -> (usize, usize) {
    (
        sys::dc_sud_begin as *const () as usize,
        sys::dc_sud_end as *const () as usize,
    )
}

/// Switches dispatch on for this process with the selector at `ALLOW` (the caller sets
/// `BLOCK` when it returns to the program) and installs `on_sigsys` as the SIGSYS handler
/// (on the alternate stack; `SA_NODEFER`, so that a program handler that runs while a
/// trapped call blocks, e.g. in `read`, can trap in turn).
pub fn enable(on_sigsys: crate::signals::Handler) -> Result<()> {
    let act = KSigaction {
        handler: on_sigsys as *const () as usize,
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER | libc::SA_RESTART) as u64,
        restorer: 0,
        mask: 0,
    };
    sys::rt_sigaction(libc::SIGSYS, Some(&act), None)
        .map_err(|e| Error::sys("rt_sigaction(SIGSYS)", e))?;
    set(ALLOW);
    let (begin, end) = exempt_range();
    let sel = &vol::get().sud_selector as *const _ as usize;
    // SAFETY: prctl takes numbers and the address of the selector byte, which lives in a
    // static for the life of the process.
    let r = unsafe {
        syscall6(
            libc::SYS_prctl,
            [
                PR_SET_SYSCALL_USER_DISPATCH,
                PR_SYS_DISPATCH_ON,
                begin,
                end - begin,
                sel,
                0,
            ],
        )
    };
    check(r).map_err(|e| {
        Error::Unsupported(
            "Syscall User Dispatch",
            format!(
                "prctl(PR_SET_SYSCALL_USER_DISPATCH) failed: {} (Linux 5.11+ needed)",
                std::io::Error::from_raw_os_error(e)
            ),
        )
    })?;
    vol::get().sud_on.store(true, Ordering::Release);
    Ok(())
}

/// Whether this kernel offers Syscall User Dispatch (asks in a child process, so that
/// nothing changes here).
pub fn available() -> bool {
    // SAFETY: fork in a single-threaded test or tool; the child only makes raw system
    // calls and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let sel = 0u8;
        let (begin, end) = exempt_range();
        // SAFETY: prctl with the address of a live local; the child exits at once.
        let r = unsafe {
            syscall6(
                libc::SYS_prctl,
                [
                    PR_SET_SYSCALL_USER_DISPATCH,
                    PR_SYS_DISPATCH_ON,
                    begin,
                    end - begin,
                    &sel as *const u8 as usize,
                    0,
                ],
            )
        };
        // SAFETY: _exit ends the child (dispatch, if it came on, has the selector at
        // ALLOW, so its exit_group is let through).
        unsafe { libc::_exit(i32::from(r != 0)) }
    }
    if pid < 0 {
        return false;
    }
    let mut st = 0;
    // SAFETY: waiting for our own child into a live local.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn exempt_range_is_small_and_ordered() {
        let (b, e) = super::exempt_range();
        assert!(e > b && e - b < 256, "{b:#x}..{e:#x}");
        let rt = crate::sys::dc_restore_rt as *const () as usize;
        assert!((b..e).contains(&rt));
    }
}
