//! Time and randomness: `clock_gettime` (and `__clock_gettime`), `gettimeofday`, `time`,
//! `getrandom`. Each is a non-deterministic event; time is read through the vDSO (the
//! wrappers) or the kernel (a trapped system call: glibc's own, or the vDSO's fallback).

use libc::{c_int, c_uint, c_void, size_t, ssize_t};

use super::{active, nondeterministic, raw_ret, Entry};
use crate::sys::{libc_ret, sc};

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
