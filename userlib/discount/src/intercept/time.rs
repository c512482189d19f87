//! Time and randomness: `clock_gettime` (and `__clock_gettime`), `gettimeofday`, `time`,
//! `getrandom`. Each is a non-deterministic event; time is read through the vDSO (the
//! wrappers) or the kernel (a trapped system call: glibc's own, or the vDSO's fallback).
//! And sleeping (`nanosleep`, `clock_nanosleep`), which a member of a computation does
//! serving the coordinator.

use libc::{c_int, c_uint, c_void, size_t, ssize_t};

use super::{active, nondeterministic, raw_ret, Entry};
use crate::sys::{libc_ret, sc, sc4};

/// The protocol's part of a non-deterministic call.
fn event(what: &str) {
    if active() {
        let mut e = Entry::enter();
        nondeterministic(e.cx(), what, usize::MAX);
    }
}

/// `clock_gettime(2)` as a system call.
///
/// # Safety
/// `ts` is writable.
pub(super) unsafe fn sys_clock_gettime(clk: libc::clockid_t, ts: *mut libc::timespec) -> isize {
    // SAFETY: ts is writable (function contract).
    let r = unsafe { sc(libc::SYS_clock_gettime, clk as usize, ts as usize, 0) };
    event("clock_gettime");
    r
}

/// `gettimeofday(2)` as a system call.
///
/// # Safety
/// `tv` and `tz` are null or writable.
pub(super) unsafe fn sys_gettimeofday(tv: *mut libc::timeval, tz: *mut c_void) -> isize {
    // SAFETY: tv and tz are null or writable (function contract).
    let r = unsafe { sc(libc::SYS_gettimeofday, tv as usize, tz as usize, 0) };
    event("gettimeofday");
    r
}

/// `time(2)`.
///
/// # Safety
/// `t` is null or writable.
pub(super) unsafe fn sys_time(t: *mut libc::time_t) -> isize {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live local.
    unsafe { crate::vdso::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    if !t.is_null() {
        // SAFETY: t is null or writable (time's contract), and not null here.
        unsafe { *t = ts.tv_sec };
    }
    event("time");
    ts.tv_sec as isize
}

/// `getrandom(2)`.
///
/// # Safety
/// `buf` is writable for `n` bytes.
pub(super) unsafe fn sys_getrandom(buf: *mut c_void, n: size_t, flags: c_uint) -> isize {
    // SAFETY: getrandom into the caller's buffer, writable for n bytes (its contract).
    let r = unsafe { sc(libc::SYS_getrandom, buf as usize, n, flags as usize) };
    event("getrandom");
    r
}

#[cfg(feature = "global")]
mod exported {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn clock_gettime(clk: libc::clockid_t, ts: *mut libc::timespec) -> c_int {
        // SAFETY: ts is writable (clock_gettime's contract).
        let r = unsafe { crate::vdso::clock_gettime(clk, ts) };
        event("clock_gettime");
        libc_ret(r) as c_int
    }

    alias! {
        __clock_gettime => clock_gettime(clk: libc::clockid_t, ts: *mut libc::timespec) -> c_int;
    }

    #[no_mangle]
    pub unsafe extern "C" fn gettimeofday(tv: *mut libc::timeval, tz: *mut c_void) -> c_int {
        // SAFETY: tv and tz are null or writable (gettimeofday's contract).
        let r = unsafe { crate::vdso::gettimeofday(tv, tz) };
        event("gettimeofday");
        libc_ret(r) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn time(t: *mut libc::time_t) -> libc::time_t {
        // SAFETY: time's contract, forwarded.
        unsafe { sys_time(t) as libc::time_t }
    }

    #[no_mangle]
    pub unsafe extern "C" fn getrandom(buf: *mut c_void, n: size_t, flags: c_uint) -> ssize_t {
        // SAFETY: getrandom's contract, forwarded.
        raw_ret(unsafe { sys_getrandom(buf, n, flags) })
    }
}

/// Longest piece of a member's sleep between two looks at the coordinator's socket.
const SLEEP_SLICE_NS: u64 = 20_000_000;

/// `nanosleep(2)` and `clock_nanosleep(2)` (trapped: glibc's `nanosleep`, `usleep` and
/// `sleep` make them) for a member of a computation under CPV-2PC or CBNDV-2PC (thesis
/// 6.2.2): the sleep is cut into slices of at most 20 ms, and before each the member
/// serves what the coordinator sent (`member::serve_pending`), so that a round never
/// waits for a member that sleeps, or polls for something in a loop with sleeps between
/// (seen: a reader waiting with `FIONREAD` and 10 ms sleeps for bytes its writer would
/// only write once the round it had asked for was over: no round, no bytes, for ever).
/// The sleep keeps its meaning: it ends at the same time (an absolute one of its clock,
/// or the relative one measured on the monotonic clock), and a signal ends it early with
/// `EINTR` and, for a relative sleep, the time left in `rem`. Not a member (or inside a
/// round): the call as it is.
///
/// # Safety
/// `a` are valid arguments for system call `nr` (`SYS_nanosleep` or
/// `SYS_clock_nanosleep`).
pub(super) unsafe fn sys_sleep(nr: i64, a: [usize; 6]) -> isize {
    if !(active() && crate::twopc::configured() && crate::twopc::serving() == 0) {
        // SAFETY: the caller's arguments for nr (function contract).
        return unsafe { crate::sys::syscall6(nr, a) };
    }
    let (clock, flags, req, rem) = if nr == libc::SYS_nanosleep {
        (libc::CLOCK_MONOTONIC, 0, a[0], a[1])
    } else {
        (a[0] as libc::clockid_t, a[1] as c_int, a[2], a[3])
    };
    if req == 0 {
        return -(libc::EFAULT as isize);
    }
    // SAFETY: req points at the caller's timespec (function contract); read, not kept.
    let t = unsafe { (req as *const libc::timespec).read_unaligned() };
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return -(libc::EINVAL as isize);
    }
    let want = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
    let abs = flags & libc::TIMER_ABSTIME != 0;
    // How long is left: an absolute sleep against its own clock, a relative one against
    // the monotonic clock from now.
    let start = crate::sys::mono_ns();
    let left = |clock_now: Option<u64>| -> u64 {
        match clock_now {
            Some(now) => want.saturating_sub(now),
            None => (start + want).saturating_sub(crate::sys::mono_ns()),
        }
    };
    let clock_ns = || -> Option<u64> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the live local.
        let r = unsafe {
            sc(
                libc::SYS_clock_gettime,
                clock as usize,
                &mut ts as *mut _ as usize,
                0,
            )
        };
        (r == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    };
    loop {
        let now = if abs {
            match clock_ns() {
                Some(n) => Some(n),
                // SAFETY: the caller's arguments for nr (function contract): the kernel
                // gives the clock's own error.
                None => return unsafe { crate::sys::syscall6(nr, a) },
            }
        } else {
            None
        };
        let n = left(now);
        if n == 0 {
            return 0;
        }
        {
            let mut e = Entry::enter();
            super::member::serve_pending(e.cx());
        }
        let slice = n.min(SLEEP_SLICE_NS);
        let ts = libc::timespec {
            tv_sec: (slice / 1_000_000_000) as libc::time_t,
            tv_nsec: (slice % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: a relative sleep of the monotonic clock on a live local timespec, no
        // remainder asked for.
        let r = unsafe {
            sc4(
                libc::SYS_clock_nanosleep,
                libc::CLOCK_MONOTONIC as usize,
                0,
                &ts as *const libc::timespec as usize,
                0,
            )
        };
        if r == -(libc::EINTR as isize) {
            if !abs && rem != 0 {
                let n = left(None);
                let out = libc::timespec {
                    tv_sec: (n / 1_000_000_000) as libc::time_t,
                    tv_nsec: (n % 1_000_000_000) as libc::c_long,
                };
                // SAFETY: rem points at the caller's writable timespec (function
                // contract: a relative sleep's remainder).
                unsafe { (rem as *mut libc::timespec).write_unaligned(out) };
            }
            return r;
        }
    }
}
