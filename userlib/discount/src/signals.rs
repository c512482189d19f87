//! Signals: the persistent alternate signal stack and the periodic-checkpoint timer.
//!
//! Every handler runs on one alternate stack (the thesis' "signals are handled on an
//! alternate stack"). It lies in `.bss`, so it is checkpointed with the rest of the static
//! data: a checkpoint taken inside a handler (the timer's, or one forced by a protocol in
//! a wrapped application handler) resumes inside that handler after a crash, and the
//! handler's return (`rt_sigreturn`) then finds its signal frame intact. When no handler
//! runs, its pages are simply not written and cost nothing.
//!
//! Periodic checkpoints use a POSIX timer (`timer_create`, CLOCK_MONOTONIC) on a
//! real-time signal ([`crate::Config::timer_signal`], default 62), leaving SIGALRM and the
//! program's own interval timers alone. If the timer fires while Discount Checking's own
//! code runs, the checkpoint is deferred to when that code returns. The handler itself
//! is an entry point and lives with the others in [`crate::intercept`].

use std::cell::UnsafeCell;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys::{self, check, sc, sc4, KSigaction};

const ALT_LEN: usize = 256 << 10;

#[repr(C, align(4096))]
struct AltStack(UnsafeCell<[u8; ALT_LEN]>);
// SAFETY: only the kernel writes it (signal frames) and handlers running on it.
unsafe impl Sync for AltStack {}
static ALTSTACK: AltStack = AltStack(UnsafeCell::new([0; ALT_LEN]));

/// `[start, end)` of the alternate stack.
pub fn altstack_range() -> (usize, usize) {
    let s = ALTSTACK.0.get() as usize;
    (s, s + ALT_LEN)
}

/// Makes the persistent buffer this thread's alternate signal stack.
pub fn install_altstack() -> Result<()> {
    let (s, _) = altstack_range();
    let ss = libc::stack_t {
        ss_sp: s as *mut libc::c_void,
        ss_flags: 0,
        ss_size: ALT_LEN,
    };
    // SAFETY: ss describes our static buffer, which lives forever.
    check(unsafe { sc(libc::SYS_sigaltstack, &ss as *const _ as usize, 0, 0) })
        .map_err(|e| Error::sys("sigaltstack", e))?;
    Ok(())
}

/// Whether `sp` is on the alternate stack.
pub fn on_altstack(sp: usize) -> bool {
    let (s, e) = altstack_range();
    sp >= s && sp < e
}

/// Installs our handler for `sig` (raw, bypassing the `sigaction` wrapper).
pub fn install_handler(sig: i32, f: Handler, extra_mask: u64) -> Result<()> {
    let act = KSigaction {
        handler: f as *const () as usize,
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART) as u64,
        restorer: 0,
        mask: extra_mask,
    };
    sys::rt_sigaction(sig, Some(&act), None).map_err(|e| Error::sys("rt_sigaction", e))
}

/// A signal handler as `SA_SIGINFO` calls it.
pub type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Starts the periodic checkpoint timer: `on_timer` (the interception layer's timer entry
/// point, which takes the checkpoint) runs on `sig` every `every`.
pub fn start_timer(sig: i32, every: Duration, on_timer: Handler) -> Result<()> {
    if !(libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) && sig != libc::SIGALRM {
        return Err(Error::Config(format!(
            "timer signal {sig} is not a real-time signal"
        )));
    }
    install_handler(sig, on_timer, 0)?;
    // SAFETY: a zeroed sigevent is valid; we fill notify and signo.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_SIGNAL;
    sev.sigev_signo = sig;
    let mut id: i32 = 0;
    // SAFETY: timer_create reads the sigevent and writes the kernel timer id.
    check(unsafe {
        sc(
            libc::SYS_timer_create,
            libc::CLOCK_MONOTONIC as usize,
            &sev as *const _ as usize,
            &mut id as *mut i32 as usize,
        )
    })
    .map_err(|e| Error::sys("timer_create", e))?;
    let ts = libc::timespec {
        tv_sec: every.as_secs() as libc::time_t,
        tv_nsec: every.subsec_nanos() as libc::c_long,
    };
    let its = libc::itimerspec {
        it_interval: ts,
        it_value: ts,
    };
    // SAFETY: timer_settime reads the itimerspec.
    check(unsafe {
        sc4(
            libc::SYS_timer_settime,
            id as usize,
            0,
            &its as *const _ as usize,
            0,
        )
    })
    .map_err(|e| Error::sys("timer_settime", e))?;
    Ok(())
}
