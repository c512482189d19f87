//! Reading and writing descriptors: `read`, `readv`, `pread`, `recv` (input: the reads of
//! anything but the program's own files are non-deterministic, or logged under the -LOG
//! protocols), `write`, `writev`, `pwrite`, `send` (output: writes to anything but the
//! program's own files are visible events; writes to its files are logged for undo), and
//! `poll`.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use libc::{c_int, c_void, size_t, ssize_t};

use super::files::log_file_write;
use super::{active, logged, nondeterministic, raw_ret, visible_event, Entry};
use crate::ckpt::{self, Ctx};
use crate::protocol;
use crate::sys::{self, libc_ret, sc, sc4, syscall6};

// ---------------------------------------------------------------------------------------
// Input (non-deterministic unless logged)

const INREC_HDR: usize = 24;

/// Reads from a descriptor that is not one of the program's files: non-deterministic, or
/// logged under the -LOG protocols.
///
/// # Safety
/// `buf` is writable for `n` bytes (the C contract of `read`).
unsafe fn input_read(e: &mut Entry, fd: c_int, buf: *mut c_void, n: size_t, what: &str) -> ssize_t {
    let logs = protocol::current().logs_input();
    if logs {
        if let Some(r) = replay_input(e.cx(), fd, buf, n) {
            logged(what);
            return raw_ret(r);
        }
    }
    // SAFETY: the program's buffer, writable for n bytes (function contract).
    let r = unsafe { sc(libc::SYS_read, fd as usize, buf as usize, n) };
    if logs && log_input(e.cx(), fd, r, buf as *const u8) {
        logged(what);
    } else {
        nondeterministic(e.cx(), what, usize::MAX);
    }
    raw_ret(r)
}

/// The next logged result for `fd`, if re-executing through the log.
fn replay_input(cx: &mut Ctx, fd: c_int, buf: *mut c_void, n: size_t) -> Option<isize> {
    let rt = cx.rt()?;
    let h = rt.image.header();
    let (area, _) = rt.image.input_area();
    // SAFETY: the header lies in the control member, mapped while the runtime lives.
    let end = unsafe { (*h).input_end } as usize;
    let at = rt.input_cursor;
    if at + INREC_HDR > end {
        return None;
    }
    // SAFETY: [at, at + INREC_HDR) lies in the input area (checked against input_end,
    // which never exceeds its capacity); records are 8-byte aligned.
    let (rfd, res, len) = unsafe {
        let p = area.add(at);
        (
            (p as *const i64).read(),
            (p.add(8) as *const i64).read(),
            (p.add(16) as *const u64).read() as usize,
        )
    };
    if rfd != fd as i64 || len > n || at + INREC_HDR + len > end {
        // Re-execution diverged from the log: stop replaying.
        rt.input_cursor = end;
        return None;
    }
    // SAFETY: len <= n bytes from the log (inside the area, checked) into the program's
    // buffer, writable for n bytes (the caller's contract).
    unsafe { std::ptr::copy_nonoverlapping(area.add(at + INREC_HDR), buf as *mut u8, len) };
    rt.input_cursor = at + ((INREC_HDR + len + 7) & !7);
    Some(res as isize)
}

/// Appends a read's result to the input log. False if it does not fit.
fn log_input(cx: &mut Ctx, fd: c_int, res: isize, data: *const u8) -> bool {
    let len = if res > 0 { res as usize } else { 0 };
    let need = (INREC_HDR + len + 7) & !7;
    // Where the record goes: the end of the log, after a checkpoint if it is full now.
    let fits = |cx: &mut Ctx| -> Option<bool> {
        let rt = cx.rt()?;
        let (_, cap) = rt.image.input_area();
        // SAFETY: the header lies in the control member, mapped while the runtime lives.
        let end = unsafe { (*rt.image.header()).input_end } as usize;
        Some(end + need <= cap)
    };
    match fits(cx) {
        None => return false,
        Some(true) => {}
        Some(false) => {
            // A checkpoint empties the log (the data is then in the checkpointed buffer).
            let _ = ckpt::take(cx, usize::MAX);
            if fits(cx) != Some(true) {
                return false;
            }
        }
    }
    let Some(rt) = cx.rt() else {
        return false;
    };
    let (area, _) = rt.image.input_area();
    let h = rt.image.header();
    // SAFETY: the header is mapped (as above).
    let end = unsafe { (*h).input_end } as usize;
    // SAFETY: [end, end+need) is inside the area (`fits`); `data` holds `len` bytes the
    // kernel just read; plain permanent stores outside any transaction; the record is
    // complete before input_end covers it.
    unsafe {
        let p = area.add(end);
        (p as *mut i64).write(fd as i64);
        (p.add(8) as *mut i64).write(res as i64);
        (p.add(16) as *mut u64).write(len as u64);
        std::ptr::copy_nonoverlapping(data, p.add(INREC_HDR), len);
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        std::ptr::write_volatile(&mut (*h).input_end, (end + need) as u64);
    }
    rt.input_cursor = end + need;
    true
}

/// A write of `n` bytes at `data` to `fd` (`pos`: `pwrite`'s offset), made by `raw`:
/// logged for undo when `fd` is one of the program's files, a visible event otherwise.
fn output<'a>(
    fd: c_int,
    pos: Option<u64>,
    n: usize,
    data: impl FnOnce() -> Cow<'a, [u8]>,
    raw: impl FnOnce() -> isize,
) -> ssize_t {
    let mut e = Entry::enter();
    if e.cx().ks().is_owned(fd) {
        if let Err(er) = log_file_write(e.cx(), fd, pos, n) {
            sys::set_errno(er);
            return -1;
        }
        return raw_ret(raw());
    }
    raw_ret(visible_event(&mut e, fd, &data(), raw))
}

#[cfg(feature = "global")]
mod exported {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
        // SAFETY: the program's buffer, writable for n bytes (read's contract).
        let raw = || unsafe { sc(libc::SYS_read, fd as usize, buf as usize, n) };
        if !active() {
            return raw_ret(raw());
        }
        let mut e = Entry::enter();
        if e.cx().ks().is_owned(fd) {
            return raw_ret(raw());
        }
        // SAFETY: read's contract, forwarded.
        unsafe { input_read(&mut e, fd, buf, n, "read") }
    }

    #[no_mangle]
    pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
        // SAFETY: the program's buffer, readable for n bytes (write's contract).
        let raw = || unsafe { sc(libc::SYS_write, fd as usize, buf as usize, n) };
        if !active() {
            return raw_ret(raw());
        }
        // SAFETY: write's contract: buf is readable for n bytes for the whole call.
        let data = || Cow::Borrowed(unsafe { std::slice::from_raw_parts(buf as *const u8, n) });
        output(fd, None, n, data, raw)
    }

    #[no_mangle]
    pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: i64) -> ssize_t {
        // SAFETY: the program's buffer, writable for n bytes (pread's contract).
        let r = unsafe {
            sc4(
                libc::SYS_pread64,
                fd as usize,
                buf as usize,
                n,
                off as usize,
            )
        };
        if active() {
            let mut e = Entry::enter();
            if !e.cx().ks().is_owned(fd) {
                nondeterministic(e.cx(), "pread", usize::MAX);
            }
        }
        raw_ret(r)
    }

    #[no_mangle]
    pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: i64) -> ssize_t {
        // SAFETY: the program's buffer, readable for n bytes (pwrite's contract).
        let raw = || unsafe {
            sc4(
                libc::SYS_pwrite64,
                fd as usize,
                buf as usize,
                n,
                off as usize,
            )
        };
        if !active() {
            return raw_ret(raw());
        }
        // SAFETY: pwrite's contract: buf is readable for n bytes for the whole call.
        let data = || Cow::Borrowed(unsafe { std::slice::from_raw_parts(buf as *const u8, n) });
        output(fd, Some(off as u64), n, data, raw)
    }

    alias! {
        pread64 => pread(fd: c_int, buf: *mut c_void, n: size_t, off: i64) -> ssize_t;
        pwrite64 => pwrite(fd: c_int, buf: *const c_void, n: size_t, off: i64) -> ssize_t;
    }

    #[no_mangle]
    pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t {
        // SAFETY: the program's iovec array of cnt readable buffers (writev's contract).
        let raw = || unsafe { sc(libc::SYS_writev, fd as usize, iov as usize, cnt as usize) };
        if !active() || cnt <= 0 {
            return raw_ret(raw());
        }
        // SAFETY: the program's iovec array of cnt entries.
        let v = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
        let total: usize = v.iter().map(|x| x.iov_len).sum();
        let data = || {
            let mut all = Vec::with_capacity(total);
            for x in v {
                // SAFETY: each iovec describes a readable buffer (writev's contract).
                all.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(x.iov_base as *const u8, x.iov_len)
                });
            }
            Cow::Owned(all)
        };
        output(fd, None, total, data, raw)
    }

    #[no_mangle]
    pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t {
        // SAFETY: the program's iovec array of cnt writable buffers (readv's contract).
        let raw = || unsafe { sc(libc::SYS_readv, fd as usize, iov as usize, cnt as usize) };
        if !active() || cnt <= 0 {
            return raw_ret(raw());
        }
        let mut e = Entry::enter();
        if e.cx().ks().is_owned(fd) {
            return raw_ret(raw());
        }
        // Input: read into the first non-empty buffer (a short read is always allowed).
        // SAFETY: the program's iovec array of cnt entries.
        let v = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
        match v.iter().find(|x| x.iov_len > 0) {
            // SAFETY: the iovec's buffer is writable for iov_len bytes.
            Some(x) => unsafe { input_read(&mut e, fd, x.iov_base, x.iov_len, "readv") },
            None => 0,
        }
    }

    #[no_mangle]
    pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
        if !active() || flags != 0 {
            // SAFETY: recvfrom into the program's buffer (writable for n bytes), no
            // address.
            let r = unsafe {
                syscall6(
                    libc::SYS_recvfrom,
                    [fd as usize, buf as usize, n, flags as usize, 0, 0],
                )
            };
            if active() {
                let mut e = Entry::enter();
                nondeterministic(e.cx(), "recv", usize::MAX);
            }
            return raw_ret(r);
        }
        let mut e = Entry::enter();
        // SAFETY: recv with flags 0 is read; the buffer is writable for n bytes.
        unsafe { input_read(&mut e, fd, buf, n, "recv") }
    }

    #[no_mangle]
    pub unsafe extern "C" fn send(
        fd: c_int,
        buf: *const c_void,
        n: size_t,
        flags: c_int,
    ) -> ssize_t {
        // SAFETY: sendto from the program's buffer (readable for n bytes), no address.
        let raw = || unsafe {
            syscall6(
                libc::SYS_sendto,
                [fd as usize, buf as usize, n, flags as usize, 0, 0],
            )
        };
        if !active() {
            return raw_ret(raw());
        }
        let mut e = Entry::enter();
        // SAFETY: the program's buffer, readable for n bytes.
        let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
        raw_ret(visible_event(&mut e, fd, data, raw))
    }

    #[no_mangle]
    pub unsafe extern "C" fn poll(
        fds: *mut libc::pollfd,
        n: libc::nfds_t,
        timeout: c_int,
    ) -> c_int {
        // SAFETY: poll on the program's array of n pollfds (poll's contract).
        let r = unsafe { sc(libc::SYS_poll, fds as usize, n as usize, timeout as usize) };
        if active() {
            let mut e = Entry::enter();
            nondeterministic(e.cx(), "poll", usize::MAX);
        }
        libc_ret(r) as c_int
    }
}
