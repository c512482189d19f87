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
use crate::sys::{libc_ret, sc, sc4, syscall6};

// ---------------------------------------------------------------------------------------
// Input (non-deterministic unless logged)

const INREC_HDR: usize = 24;

/// Reads from a descriptor that is not one of the program's files: non-deterministic, or
/// logged under the -LOG protocols.
///
/// # Safety
/// `buf` is writable for `n` bytes (the C contract of `read`).
unsafe fn input_read(e: &mut Entry, fd: c_int, buf: *mut c_void, n: size_t, what: &str) -> isize {
    let logs = protocol::current().logs_input();
    if logs {
        if let Some(r) = replay_input(e.cx(), fd, buf, n) {
            logged(what);
            return r;
        }
    }
    // SAFETY: the program's buffer, writable for n bytes (function contract).
    let r = unsafe { sc(libc::SYS_read, fd as usize, buf as usize, n) };
    if logs && log_input(e.cx(), fd, r, buf as *const u8) {
        logged(what);
    } else {
        nondeterministic(e.cx(), what, usize::MAX);
    }
    r
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
/// Raw result.
fn output<'a>(
    fd: c_int,
    pos: Option<u64>,
    n: usize,
    data: impl FnOnce() -> Cow<'a, [u8]>,
    raw: impl FnOnce() -> isize,
) -> isize {
    let mut e = Entry::enter();
    if e.cx().ks().is_owned(fd) {
        if let Err(er) = log_file_write(e.cx(), fd, pos, n) {
            return -(er as isize);
        }
        return raw();
    }
    visible_event(&mut e, fd, &data(), raw)
}

// ---------------------------------------------------------------------------------------
// One handler per system call, shared by the libc wrapper (`exported`, below) and the
// SIGSYS trap (`super::trap`). Each takes the system call's arguments and returns the
// kernel's convention (`-errno` on failure).

/// `read(2)`.
///
/// # Safety
/// `buf` is writable for `n` bytes (the contract of `read`).
pub(super) unsafe fn sys_read(fd: c_int, buf: *mut c_void, n: size_t) -> isize {
    // SAFETY: the program's buffer, writable for n bytes (read's contract).
    let raw = || unsafe { sc(libc::SYS_read, fd as usize, buf as usize, n) };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    if e.cx().ks().is_owned(fd) {
        return raw();
    }
    // SAFETY: read's contract, forwarded.
    unsafe { input_read(&mut e, fd, buf, n, "read") }
}

/// `write(2)`.
///
/// # Safety
/// `buf` is readable for `n` bytes.
pub(super) unsafe fn sys_write(fd: c_int, buf: *const c_void, n: size_t) -> isize {
    // SAFETY: the program's buffer, readable for n bytes (write's contract).
    let raw = || unsafe { sc(libc::SYS_write, fd as usize, buf as usize, n) };
    if !active() {
        return raw();
    }
    // SAFETY: write's contract: buf is readable for n bytes for the whole call.
    let data = || Cow::Borrowed(unsafe { std::slice::from_raw_parts(buf as *const u8, n) });
    output(fd, None, n, data, raw)
}

/// `pread64(2)`.
///
/// # Safety
/// `buf` is writable for `n` bytes.
pub(super) unsafe fn sys_pread(fd: c_int, buf: *mut c_void, n: size_t, off: i64) -> isize {
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
    r
}

/// `pwrite64(2)`.
///
/// # Safety
/// `buf` is readable for `n` bytes.
pub(super) unsafe fn sys_pwrite(fd: c_int, buf: *const c_void, n: size_t, off: i64) -> isize {
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
        return raw();
    }
    // SAFETY: pwrite's contract: buf is readable for n bytes for the whole call.
    let data = || Cow::Borrowed(unsafe { std::slice::from_raw_parts(buf as *const u8, n) });
    output(fd, Some(off as u64), n, data, raw)
}

/// `writev(2)`.
///
/// # Safety
/// `iov` is an array of `cnt` iovecs describing readable buffers.
pub(super) unsafe fn sys_writev(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> isize {
    // SAFETY: the program's iovec array of cnt readable buffers (writev's contract).
    let raw = || unsafe { sc(libc::SYS_writev, fd as usize, iov as usize, cnt as usize) };
    if !active() || cnt <= 0 {
        return raw();
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

/// `readv(2)`.
///
/// # Safety
/// `iov` is an array of `cnt` iovecs describing writable buffers.
pub(super) unsafe fn sys_readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> isize {
    // SAFETY: the program's iovec array of cnt writable buffers (readv's contract).
    let raw = || unsafe { sc(libc::SYS_readv, fd as usize, iov as usize, cnt as usize) };
    if !active() || cnt <= 0 {
        return raw();
    }
    let mut e = Entry::enter();
    if e.cx().ks().is_owned(fd) {
        return raw();
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

/// `recvfrom(2)` (`recv` is `recvfrom` without an address).
///
/// # Safety
/// `buf` is writable for `n` bytes; `addr`/`alen` null or valid.
pub(super) unsafe fn sys_recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: usize,
    alen: usize,
) -> isize {
    if !active() || flags != 0 || addr != 0 {
        // SAFETY: recvfrom into the program's buffer (writable for n bytes), with its
        // address arguments.
        let r = unsafe {
            syscall6(
                libc::SYS_recvfrom,
                [fd as usize, buf as usize, n, flags as usize, addr, alen],
            )
        };
        if active() {
            let mut e = Entry::enter();
            nondeterministic(e.cx(), "recv", usize::MAX);
        }
        return r;
    }
    let mut e = Entry::enter();
    // SAFETY: recv with flags 0 and no address is read; the buffer is writable for n
    // bytes.
    unsafe { input_read(&mut e, fd, buf, n, "recv") }
}

/// `sendto(2)` (`send` is `sendto` without an address).
///
/// # Safety
/// `buf` is readable for `n` bytes; `addr` null or valid for `alen` bytes.
pub(super) unsafe fn sys_sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: usize,
    alen: usize,
) -> isize {
    // SAFETY: sendto from the program's buffer (readable for n bytes) with its address.
    let raw = || unsafe {
        syscall6(
            libc::SYS_sendto,
            [fd as usize, buf as usize, n, flags as usize, addr, alen],
        )
    };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    // SAFETY: the program's buffer, readable for n bytes.
    let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
    visible_event(&mut e, fd, data, raw)
}

/// A call whose result is a non-deterministic event and that changes nothing we record
/// (`poll`, `ppoll`, `select`, `pselect6`, `getppid`, `times`, ...): performed, then
/// reported to the protocol.
///
/// # Safety
/// `a` are valid arguments for system call `nr`.
pub(super) unsafe fn sys_nd(nr: i64, a: [usize; 6], what: &str) -> isize {
    // SAFETY: the caller's arguments for nr (function contract).
    let r = unsafe { syscall6(nr, a) };
    if active() {
        let mut e = Entry::enter();
        nondeterministic(e.cx(), what, usize::MAX);
    }
    r
}

/// `ioctl(2)`: terminal settings (`TCSETS`, `TCSETSW`, `TCSETSF`: what `tcsetattr` does)
/// are performed and recorded, to be redone on the new run's terminal on recovery (thesis
/// 6.1: a full-screen program comes back in the mode it was in); `FIONREAD` is a
/// non-deterministic event; the queries on the harmless list pass; every other request
/// (setting the window size, the foreground group, injecting input, device requests) is
/// refused with a message.
///
/// # Safety
/// `arg` is what request `req` expects (for the terminal settings, a kernel `struct
/// termios`).
pub(super) unsafe fn sys_ioctl(fd: c_int, req: u64, arg: usize) -> isize {
    // SAFETY: the caller's ioctl, with its argument.
    let raw = || unsafe { sc(libc::SYS_ioctl, fd as usize, req as usize, arg) };
    if !active() {
        return raw();
    }
    const TCSETS: u64 = libc::TCSETS;
    const TCSETSW: u64 = libc::TCSETSW;
    const TCSETSF: u64 = libc::TCSETSF;
    match req {
        TCSETS | TCSETSW | TCSETSF => {
            if arg == 0 {
                return -(libc::EFAULT as isize);
            }
            let r = raw();
            if r == 0 {
                let mut t = [0u8; crate::kstate::TERMIOS_LEN];
                // SAFETY: the call succeeded, so arg points at a readable kernel struct
                // termios of TERMIOS_LEN bytes.
                unsafe { std::ptr::copy_nonoverlapping(arg as *const u8, t.as_mut_ptr(), t.len()) };
                let mut e = Entry::enter();
                e.cx().ks().set_termios(fd, t);
            }
            r
        }
        0x541b /* FIONREAD */ => {
            // SAFETY: FIONREAD writes one int at arg (the caller's contract).
            unsafe { sys_nd(libc::SYS_ioctl, [fd as usize, req as usize, arg, 0, 0, 0], "ioctl") }
        }
        _ if super::trap::harmless(libc::SYS_ioctl, &[fd as usize, req as usize, arg, 0, 0, 0]) => raw(),
        _ => super::trap::refuse_named(
            "ioctl with a request that changes state Discount Checking does not record",
            libc::SYS_ioctl,
        ),
    }
}

#[cfg(feature = "global")]
mod exported {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
        // SAFETY: read's contract, forwarded.
        raw_ret(unsafe { sys_read(fd, buf, n) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
        // SAFETY: write's contract, forwarded.
        raw_ret(unsafe { sys_write(fd, buf, n) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: i64) -> ssize_t {
        // SAFETY: pread's contract, forwarded.
        raw_ret(unsafe { sys_pread(fd, buf, n, off) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: i64) -> ssize_t {
        // SAFETY: pwrite's contract, forwarded.
        raw_ret(unsafe { sys_pwrite(fd, buf, n, off) })
    }

    alias! {
        pread64 => pread(fd: c_int, buf: *mut c_void, n: size_t, off: i64) -> ssize_t;
        pwrite64 => pwrite(fd: c_int, buf: *const c_void, n: size_t, off: i64) -> ssize_t;
    }

    #[no_mangle]
    pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t {
        // SAFETY: writev's contract, forwarded.
        raw_ret(unsafe { sys_writev(fd, iov, cnt) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t {
        // SAFETY: readv's contract, forwarded.
        raw_ret(unsafe { sys_readv(fd, iov, cnt) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
        // SAFETY: recv's contract (recvfrom without an address), forwarded.
        raw_ret(unsafe { sys_recvfrom(fd, buf, n, flags, 0, 0) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn send(
        fd: c_int,
        buf: *const c_void,
        n: size_t,
        flags: c_int,
    ) -> ssize_t {
        // SAFETY: send's contract (sendto without an address), forwarded.
        raw_ret(unsafe { sys_sendto(fd, buf, n, flags, 0, 0) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn poll(
        fds: *mut libc::pollfd,
        n: libc::nfds_t,
        timeout: c_int,
    ) -> c_int {
        // SAFETY: poll on the program's array of n pollfds (poll's contract).
        let r = unsafe {
            sys_nd(
                libc::SYS_poll,
                [fds as usize, n as usize, timeout as usize, 0, 0, 0],
                "poll",
            )
        };
        libc_ret(r) as c_int
    }
}
