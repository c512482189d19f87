//! Signals and timers: `sigaction` (and `__sigaction`, `signal`), `setitimer`, `alarm`;
//! the wrapper every program handler runs through (the delivery is a non-deterministic
//! event); and the periodic-checkpoint timer's handler. Both handlers are entry points:
//! they enter Discount Checking only when nothing of it runs below them.

use std::sync::atomic::Ordering;

use libc::{c_int, c_uint, c_void};

use super::{active, Entry};
use crate::kstate::{self, SIGS};
use crate::protocol;
use crate::sys::{self, libc_ret, sc, KSigaction};
use crate::vol;

/// `rt_sigaction(2)` for the program, in the kernel's layout: its handlers are recorded
/// in [`SIGS`] and installed through [`on_app_signal`] (with Discount Checking's
/// restorer, whatever restorer the program gave); the periodic timer's signal, and
/// SIGSYS while system calls are trapped, are refused. Raw result.
pub(super) fn sys_rt_sigaction(
    sig: c_int,
    act: Option<&KSigaction>,
    old: Option<&mut KSigaction>,
) -> isize {
    if !(1..65).contains(&sig) {
        return -(libc::EINVAL as isize);
    }
    let timer = match vol::get().timer_sig.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    };
    if sig == libc::SIGSYS && crate::sud::on() && act.is_some() {
        crate::diag::diag(
            "the program's SIGSYS handler is refused: Discount Checking traps system calls with it",
        );
        return -(libc::EINVAL as isize);
    }
    if !active() || Some(sig) == timer {
        if Some(sig) == timer && act.is_some() {
            return -(libc::EINVAL as isize);
        }
        let mut kold = sys::KSigaction::default();
        let knew = act.map(|a| sys::KSigaction {
            restorer: 0,
            flags: a.flags & !(sys::SA_RESTORER as u64),
            ..*a
        });
        if let Err(e) = sys::rt_sigaction(sig, knew.as_ref(), Some(&mut kold)) {
            return -(e as isize);
        }
        if let Some(o) = old {
            *o = kold;
        }
        return 0;
    }
    let _e = Entry::enter();
    let e = &SIGS[sig as usize];
    let prev = if e.set.load(Ordering::Relaxed) {
        sys::KSigaction {
            handler: e.handler.load(Ordering::Relaxed),
            flags: e.flags.load(Ordering::Relaxed),
            restorer: 0,
            mask: e.mask.load(Ordering::Relaxed),
        }
    } else {
        let mut kold = sys::KSigaction::default();
        if let Err(er) = sys::rt_sigaction(sig, None, Some(&mut kold)) {
            return -(er as isize);
        }
        kold
    };
    if let Some(a) = act {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            return -(libc::EINVAL as isize);
        }
        e.handler.store(a.handler, Ordering::Relaxed);
        e.flags.store(a.flags, Ordering::Relaxed);
        e.mask.store(a.mask, Ordering::Relaxed);
        e.set.store(true, Ordering::Release);
        install_app_signal(sig);
    }
    if let Some(o) = old {
        *o = sys::KSigaction {
            flags: prev.flags & !(sys::SA_RESTORER as u64),
            restorer: 0,
            ..prev
        };
    }
    0
}

/// `setitimer(2)`: the timer is recorded (re-armed on recovery).
///
/// # Safety
/// `new` and `old` are null or valid.
pub(super) unsafe fn sys_setitimer(
    which: c_int,
    new: *const libc::itimerval,
    old: *mut libc::itimerval,
) -> isize {
    // SAFETY: setitimer with the caller's pointers (null or valid, its C contract).
    let r = unsafe {
        sc(
            libc::SYS_setitimer,
            which as usize,
            new as usize,
            old as usize,
        )
    };
    if active() && r == 0 && !new.is_null() && (0..3).contains(&which) {
        let mut e = Entry::enter();
        // SAFETY: new is a valid itimerval (non-null, the caller's contract).
        let n = unsafe { &*new };
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        e.cx().ks().itimers[which as usize] = kstate::ITimer {
            interval_us: us(n.it_interval),
            value_us: us(n.it_value),
            set_ns: sys::mono_ns(),
        };
    }
    r
}

/// `alarm(2)`: `setitimer(ITIMER_REAL)`; returns the seconds that were left.
pub(super) fn sys_alarm(secs: c_uint) -> isize {
    let new = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: secs as libc::time_t,
            tv_usec: 0,
        },
    };
    let mut old = new;
    // SAFETY: both structs are live locals.
    if unsafe { sys_setitimer(libc::ITIMER_REAL, &new, &mut old) } != 0 {
        return 0;
    }
    (old.it_value.tv_sec + if old.it_value.tv_usec > 0 { 1 } else { 0 }) as isize
}

/// The kernel-layout disposition of a glibc `struct sigaction`.
fn ksig_of(a: &libc::sigaction) -> KSigaction {
    KSigaction {
        handler: a.sa_sigaction,
        flags: a.sa_flags as u64 & !(sys::SA_RESTORER as u64),
        restorer: 0,
        // SAFETY: sigset_t starts with the 64-bit kernel mask.
        mask: unsafe { *(&a.sa_mask as *const libc::sigset_t as *const u64) },
    }
}

#[cfg(feature = "global")]
mod exported {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn sigaction(
        sig: c_int,
        act: *const libc::sigaction,
        old: *mut libc::sigaction,
    ) -> c_int {
        // SAFETY: act is null or a valid sigaction (the caller's contract).
        let knew = (!act.is_null()).then(|| ksig_of(unsafe { &*act }));
        let mut kold = KSigaction::default();
        let r = sys_rt_sigaction(sig, knew.as_ref(), Some(&mut kold));
        if r == 0 && !old.is_null() {
            // SAFETY: old is writable (non-null, the caller's contract).
            unsafe { fill_old(old, kold.handler, kold.flags, kold.mask) };
        }
        libc_ret(r) as c_int
    }

    alias! {
        __sigaction => sigaction(
            sig: c_int,
            act: *const libc::sigaction,
            old: *mut libc::sigaction,
        ) -> c_int;
    }

    #[no_mangle]
    pub unsafe extern "C" fn signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t {
        let act = KSigaction {
            handler: h,
            flags: libc::SA_RESTART as u64,
            restorer: 0,
            mask: 0,
        };
        let mut old = KSigaction::default();
        if sys_rt_sigaction(sig, Some(&act), Some(&mut old)) != 0 {
            return libc::SIG_ERR;
        }
        old.handler
    }

    #[no_mangle]
    pub unsafe extern "C" fn setitimer(
        which: c_int,
        new: *const libc::itimerval,
        old: *mut libc::itimerval,
    ) -> c_int {
        // SAFETY: setitimer's contract, forwarded.
        libc_ret(unsafe { sys_setitimer(which, new, old) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn alarm(secs: c_uint) -> c_uint {
        sys_alarm(secs) as c_uint
    }
}

/// Writes a disposition into the program's `struct sigaction`.
///
/// # Safety
/// `old` is valid for writes.
unsafe fn fill_old(old: *mut libc::sigaction, h: usize, flags: u64, mask: u64) {
    // SAFETY: a zeroed sigaction is a valid value; `old` is writable (function contract);
    // sigset_t starts with the 64-bit kernel mask.
    unsafe {
        let mut o: libc::sigaction = std::mem::zeroed();
        o.sa_sigaction = h;
        o.sa_flags = (flags & !(crate::sys::SA_RESTORER as u64)) as c_int;
        *(&mut o.sa_mask as *mut libc::sigset_t as *mut u64) = mask;
        *old = o;
    }
}

/// Installs the kernel disposition for a program signal from the table (also used by
/// recovery, [`crate::ckpt::Hooks::reinstall_signal`]).
pub(crate) fn install_app_signal(sig: c_int) {
    let e = &SIGS[sig as usize];
    let h = e.handler.load(Ordering::Relaxed);
    let flags = e.flags.load(Ordering::Relaxed) & !(crate::sys::SA_RESTORER as u64);
    let mask = e.mask.load(Ordering::Relaxed);
    let k = if h == libc::SIG_DFL || h == libc::SIG_IGN {
        sys::KSigaction {
            handler: h,
            flags,
            restorer: 0,
            mask,
        }
    } else {
        sys::KSigaction {
            handler: on_app_signal as *const () as usize,
            flags: flags | (libc::SA_SIGINFO | libc::SA_ONSTACK) as u64,
            restorer: 0,
            mask,
        }
    };
    let _ = sys::rt_sigaction(sig, Some(&k), None);
}

/// The interrupted code's stack pointer, from an `SA_SIGINFO` handler's context.
///
/// # Safety
/// `uc` is the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
unsafe fn interrupted_rsp(uc: *mut c_void) -> usize {
    // SAFETY: the function contract.
    unsafe { (*(uc as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RSP as usize] as usize }
}

/// Whether a handler may enter Discount Checking now: nothing of it runs below (its
/// guards are clear). Otherwise the handler marks its checkpoint pending, for the code
/// below to take when it is done.
fn may_enter() -> bool {
    let v = vol::get();
    v.in_dc.load(Ordering::Acquire) == 0 && !v.busy.load(Ordering::Acquire)
}

/// The wrapper every program handler runs through (on the alternate stack).
extern "C" fn on_app_signal(sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    // Discount Checking's code runs: system calls pass (the program's handler below runs
    // with them trapped again).
    let _allow = crate::sud::Allow::new();
    // SAFETY: __errno_location is this thread's errno slot, always valid.
    let saved = unsafe { *libc::__errno_location() };
    let e = &SIGS[sig as usize];
    let h = e.handler.load(Ordering::Relaxed);
    let flags = e.flags.load(Ordering::Relaxed);
    if flags & libc::SA_RESETHAND as u64 != 0 {
        e.handler.store(libc::SIG_DFL, Ordering::Relaxed);
    }
    // The delivery is the non-deterministic event; CAND commits right after it, before
    // the handler can do anything visible.
    crate::trace::event_num("N", sig as u64);
    let p = protocol::current();
    if protocol::commits_after_nd(p) {
        if may_enter() {
            // SAFETY: installed with SA_SIGINFO, so uc is the interrupted context.
            let rsp = unsafe { interrupted_rsp(uc) };
            let _ = crate::ckpt::checkpoint(vol::handler_low_hint(rsp));
        } else {
            vol::get().pending.store(true, Ordering::Release);
        }
    } else if protocol::defers_nd(p) {
        protocol::mark_nd();
    }
    if h != libc::SIG_DFL && h != libc::SIG_IGN {
        // SAFETY: errno back for the program's handler (this thread's slot).
        unsafe { *libc::__errno_location() = saved };
        if flags & libc::SA_SIGINFO as u64 != 0 {
            // SAFETY: the program registered an SA_SIGINFO handler of this type.
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                unsafe { std::mem::transmute(h) };
            crate::sud::as_program(|| f(sig, info, uc));
        } else {
            // SAFETY: the program registered a plain handler of this type.
            let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(h) };
            crate::sud::as_program(|| f(sig));
        }
    }
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = saved };
}

/// The periodic-checkpoint timer's handler ([`crate::ckpt::Hooks::on_timer`]).
pub(crate) extern "C" fn on_timer(_sig: c_int, _info: *mut libc::siginfo_t, uc: *mut c_void) {
    let _allow = crate::sud::Allow::new();
    // SAFETY: __errno_location is this thread's errno slot, always valid.
    let saved = unsafe { *libc::__errno_location() };
    if active() && may_enter() {
        // SAFETY: installed with SA_SIGINFO, so uc is the interrupted context.
        let rsp = unsafe { interrupted_rsp(uc) };
        let _ = crate::ckpt::checkpoint(vol::handler_low_hint(rsp));
    } else {
        vol::get().pending.store(true, Ordering::Release);
    }
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = saved };
}
