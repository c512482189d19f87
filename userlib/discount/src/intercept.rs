//! Interception: Discount Checking defines the libc functions that change kernel state or
//! are non-deterministic or visible (`open`, `read`, `write`, `sigaction`, `clock_gettime`,
//! ...). Linked into the executable, these definitions take precedence over libc's for
//! the program (Rust's std calls them through their C names), and in static builds they
//! replace glibc's (weak) ones. Each wrapper records what it must, applies the commit
//! protocol and performs the call with a raw `syscall` instruction (or the vDSO for time).
//!
//! Cost: a wrapper adds a few tens of nanoseconds to a system call (a table lookup and,
//! for writes to the program's own files, an `fstat`, an `lseek` and a `pread` of the
//! before-image). The alternatives measured against it: seccomp `SECCOMP_RET_TRAP` or
//! syscall user dispatch turn every trapped call into a SIGSYS delivery (about 1.5-3 µs),
//! and cannot see `clock_gettime`, which the vDSO answers without a system call.
//!
//! Limits: calls glibc makes internally (`printf` flushing stdout, `fopen`, `opendir`,
//! `system`) use glibc's private entry points and are not seen. Rust programs are fully
//! covered (std calls the public symbols); C programs should use `read`/`write`/`open`
//! directly for input, output and files.
//!
//! Before `init` (and after exit), every wrapper is a plain system call.

#![allow(clippy::missing_safety_doc)]
// Without `global` the wrappers are not exported, and their helpers have no caller (a
// build for the oracle alone, e.g. the QEMU tests').
#![cfg_attr(not(feature = "global"), allow(dead_code, unused_imports))]

use std::sync::atomic::Ordering;

use libc::{c_char, c_int, c_uint, c_void, size_t, ssize_t};

use crate::kstate::{self, FdEntry, UndoRec, R_CREATE, R_RENAME, R_WRITE, SIGS};
use crate::protocol::{self, Protocol};
use crate::sys::{self, check, libc_ret, sc, sc4, syscall6};
use crate::vol;

#[inline(always)]
fn active() -> bool {
    vol::get().active.load(Ordering::Acquire)
}

/// Marks Discount Checking code on the stack (timer checkpoints are deferred).
struct InDc;

impl InDc {
    #[inline]
    fn enter() -> InDc {
        vol::get().in_dc.fetch_add(1, Ordering::AcqRel);
        InDc
    }
}

impl Drop for InDc {
    #[inline]
    fn drop(&mut self) {
        let v = vol::get();
        if v.in_dc.fetch_sub(1, Ordering::AcqRel) == 1
            && v.pending.swap(false, Ordering::AcqRel)
            && active()
        {
            let _ = crate::ckpt::take(usize::MAX);
        }
    }
}

/// Signals a visible event must not be separated from its commit by: everything but the
/// synchronous ones (a fault in the program is not delivered while we run anyway).
const ASYNC_SIGNALS: u64 = !((1 << (libc::SIGSEGV - 1))
    | (1 << (libc::SIGBUS - 1))
    | (1 << (libc::SIGILL - 1))
    | (1 << (libc::SIGFPE - 1))
    | (1 << (libc::SIGTRAP - 1))
    | (1 << (libc::SIGSYS - 1)));

fn sigmask(how: c_int, set: u64) -> u64 {
    let mut old = 0u64;
    // SAFETY: rt_sigprocmask with valid 8-byte sets.
    unsafe {
        sc4(
            libc::SYS_rt_sigprocmask,
            how as usize,
            &set as *const u64 as usize,
            &mut old as *mut u64 as usize,
            8,
        )
    };
    old
}

/// A visible event: the commit the protocol asks for (and one owed to a signal that
/// arrived inside Discount Checking), the trace record and the output itself (`out`)
/// happen with asynchronous signals blocked, so that no non-deterministic event (a signal
/// delivery) falls between the commit and the output.
fn visible_event(fd: c_int, data: &[u8], out: impl FnOnce() -> isize) -> isize {
    let old = sigmask(libc::SIG_BLOCK, ASYNC_SIGNALS);
    if vol::get().pending.swap(false, Ordering::AcqRel) {
        let _ = crate::ckpt::take(usize::MAX);
    }
    protocol::visible(fd, data);
    let r = out();
    sigmask(libc::SIG_SETMASK, old);
    r
}

unsafe fn cbytes<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        return b"";
    }
    // SAFETY: caller passes a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes()
}

fn raw_ret(r: isize) -> ssize_t {
    libc_ret(r) as ssize_t
}

// ---------------------------------------------------------------------------------------
// Input (non-deterministic unless logged)

const INREC_HDR: usize = 24;

/// Reads from a descriptor that is not one of the program's files: non-deterministic, or
/// logged under the -LOG protocols.
unsafe fn input_read(fd: c_int, buf: *mut c_void, n: size_t, what: &str) -> ssize_t {
    let logs = protocol::current().logs_input();
    if logs {
        if let Some(r) = replay_input(fd, buf, n) {
            protocol::logged(what);
            return raw_ret(r);
        }
    }
    // SAFETY: the program's buffer, n bytes.
    let r = unsafe { sc(libc::SYS_read, fd as usize, buf as usize, n) };
    if logs && log_input(fd, r, buf as *const u8) {
        protocol::logged(what);
    } else {
        protocol::nondeterministic(what, usize::MAX);
    }
    raw_ret(r)
}

/// The next logged result for `fd`, if re-executing through the log.
fn replay_input(fd: c_int, buf: *mut c_void, n: size_t) -> Option<isize> {
    let rt = crate::ckpt::rt()?;
    let h = rt.image.header();
    let (area, _) = rt.image.input_area();
    // SAFETY: header mapped.
    let end = unsafe { (*h).input_end } as usize;
    let at = rt.input_cursor;
    if at + INREC_HDR > end {
        return None;
    }
    // SAFETY: [at, end) lies in the input area.
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
    // SAFETY: len <= n bytes into the program's buffer from the log.
    unsafe { std::ptr::copy_nonoverlapping(area.add(at + INREC_HDR), buf as *mut u8, len) };
    rt.input_cursor = at + ((INREC_HDR + len + 7) & !7);
    Some(res as isize)
}

/// Appends a read's result to the input log. False if it does not fit.
fn log_input(fd: c_int, res: isize, data: *const u8) -> bool {
    let Some(rt) = crate::ckpt::rt() else {
        return false;
    };
    let len = if res > 0 { res as usize } else { 0 };
    let need = (INREC_HDR + len + 7) & !7;
    let (area, cap) = rt.image.input_area();
    let h = rt.image.header();
    // SAFETY: header mapped.
    let mut end = unsafe { (*h).input_end } as usize;
    if end + need > cap {
        // A checkpoint empties the log (the data is then in the checkpointed buffer).
        let _ = crate::ckpt::take(usize::MAX);
        // SAFETY: header mapped.
        end = unsafe { (*h).input_end } as usize;
        if end + need > cap {
            return false;
        }
    }
    // SAFETY: [end, end+need) is inside the area; plain permanent stores outside any
    // transaction; the record is complete before input_end covers it.
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

// ---------------------------------------------------------------------------------------
// Files

/// Logs the before-image of `[pos, pos+len)` of an owned file (`pos` None: the current
/// offset, or the end for O_APPEND).
fn log_file_write(fd: c_int, pos: Option<u64>, len: usize) -> Result<(), i32> {
    let Some(e) = kstate::entry(fd) else {
        return Ok(());
    };
    let Some((_, size)) = kstate::stat_fd(fd) else {
        return Ok(());
    };
    let pos = match pos {
        Some(p) => p,
        None if e.flags & libc::O_APPEND != 0 => size,
        // SAFETY: lseek(fd, 0, SEEK_CUR) only reads.
        None => check(unsafe { sc(libc::SYS_lseek, fd as usize, 0, libc::SEEK_CUR as usize) })
            .map(|p| p as u64)
            .unwrap_or(size),
    };
    let data = if pos < size {
        kstate::pread_all(fd, pos, (len as u64).min(size - pos) as usize)
    } else {
        Vec::new()
    };
    kstate::undo_append(&UndoRec {
        kind: R_WRITE,
        path: e.path.clone(),
        path2: Vec::new(),
        offset: pos,
        old_size: size,
        data,
    })
}

unsafe fn do_open(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: raw openat with the caller's arguments.
    let raw = || unsafe {
        sc4(
            libc::SYS_openat,
            dirfd as usize,
            path as usize,
            flags as usize,
            mode as usize,
        )
    };
    if !active() {
        return libc_ret(raw()) as c_int;
    }
    let _g = InDc::enter();
    // SAFETY: caller passes a C string.
    let abs = kstate::absolutize(dirfd, unsafe { cbytes(path) });
    let st = kstate::stat_path(&abs);
    let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
    if flags & libc::O_CREAT != 0 && st.is_none() {
        if let Err(e) = kstate::undo_append(&UndoRec {
            kind: R_CREATE,
            path: abs.clone(),
            path2: Vec::new(),
            offset: 0,
            old_size: 0,
            data: Vec::new(),
        }) {
            sys::set_errno(e);
            return -1;
        }
    }
    if flags & libc::O_TRUNC != 0 && writes {
        if let Some((true, size, _)) = st {
            if size > 0 {
                let data = kstate::read_file_raw(&abs, size);
                if let Err(e) = kstate::undo_append(&UndoRec {
                    kind: R_WRITE,
                    path: abs.clone(),
                    path2: Vec::new(),
                    offset: 0,
                    old_size: size,
                    data,
                }) {
                    sys::set_errno(e);
                    return -1;
                }
            }
        }
    }
    let r = raw();
    if let Ok(fd) = check(r) {
        let fd = fd as c_int;
        let (reg, _) = kstate::stat_fd(fd).unwrap_or((false, 0));
        let fifo_or_sock = {
            // SAFETY: fstat into a zeroed buffer.
            let mut s: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            unsafe { sc(libc::SYS_fstat, fd as usize, &mut s as *mut _ as usize, 0) };
            let f = s.st_mode & libc::S_IFMT;
            f == libc::S_IFIFO || f == libc::S_IFSOCK
        };
        kstate::set_entry(
            fd,
            Some(FdEntry {
                path: abs,
                flags: flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL),
                offset: 0,
                owned: reg,
                reopen: !fifo_or_sock,
                seekable: reg,
            }),
        );
    }
    libc_ret(r) as c_int
}

#[cfg(feature = "global")]
mod exported {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
        // SAFETY: forwarded C contract.
        unsafe { do_open(libc::AT_FDCWD, path, flags, mode) }
    }
    #[no_mangle]
    pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
        // SAFETY: forwarded C contract.
        unsafe { do_open(libc::AT_FDCWD, path, flags, mode) }
    }
    #[no_mangle]
    pub unsafe extern "C" fn openat(
        d: c_int,
        path: *const c_char,
        flags: c_int,
        mode: c_uint,
    ) -> c_int {
        // SAFETY: forwarded C contract.
        unsafe { do_open(d, path, flags, mode) }
    }
    #[no_mangle]
    pub unsafe extern "C" fn openat64(
        d: c_int,
        path: *const c_char,
        flags: c_int,
        mode: c_uint,
    ) -> c_int {
        // SAFETY: forwarded C contract.
        unsafe { do_open(d, path, flags, mode) }
    }
    #[no_mangle]
    pub unsafe extern "C" fn creat(path: *const c_char, mode: c_uint) -> c_int {
        // SAFETY: forwarded C contract.
        unsafe {
            do_open(
                libc::AT_FDCWD,
                path,
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                mode,
            )
        }
    }
    #[no_mangle]
    pub unsafe extern "C" fn creat64(path: *const c_char, mode: c_uint) -> c_int {
        // SAFETY: forwarded C contract.
        unsafe {
            do_open(
                libc::AT_FDCWD,
                path,
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                mode,
            )
        }
    }

    #[no_mangle]
    pub unsafe extern "C" fn close(fd: c_int) -> c_int {
        if active() {
            let _g = InDc::enter();
            kstate::set_entry(fd, None);
            // SAFETY: closing the program's descriptor.
            return libc_ret(unsafe { sc(libc::SYS_close, fd as usize, 0, 0) }) as c_int;
        }
        // SAFETY: as above.
        libc_ret(unsafe { sc(libc::SYS_close, fd as usize, 0, 0) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
        if !active() || kstate::is_owned(fd) {
            // SAFETY: the program's buffer.
            return raw_ret(unsafe { sc(libc::SYS_read, fd as usize, buf as usize, n) });
        }
        let _g = InDc::enter();
        // SAFETY: forwarded C contract.
        unsafe { input_read(fd, buf, n, "read") }
    }

    #[no_mangle]
    pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
        // SAFETY: the program's buffer of n bytes.
        let raw = || unsafe { sc(libc::SYS_write, fd as usize, buf as usize, n) };
        if !active() {
            return raw_ret(raw());
        }
        let _g = InDc::enter();
        if kstate::is_owned(fd) {
            if let Err(e) = log_file_write(fd, None, n) {
                sys::set_errno(e);
                return -1;
            }
            return raw_ret(raw());
        }
        // SAFETY: the program's buffer of n bytes.
        let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
        raw_ret(visible_event(fd, data, raw))
    }

    #[no_mangle]
    pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: i64) -> ssize_t {
        // SAFETY: the program's buffer.
        let r = unsafe {
            sc4(
                libc::SYS_pread64,
                fd as usize,
                buf as usize,
                n,
                off as usize,
            )
        };
        if active() && !kstate::is_owned(fd) {
            let _g = InDc::enter();
            protocol::nondeterministic("pread", usize::MAX);
        }
        raw_ret(r)
    }
    #[no_mangle]
    pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: i64) -> ssize_t {
        // SAFETY: forwarded.
        unsafe { pread64(fd, buf, n, off) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn pwrite64(
        fd: c_int,
        buf: *const c_void,
        n: size_t,
        off: i64,
    ) -> ssize_t {
        // SAFETY: the program's buffer.
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
        let _g = InDc::enter();
        if kstate::is_owned(fd) {
            if let Err(e) = log_file_write(fd, Some(off as u64), n) {
                sys::set_errno(e);
                return -1;
            }
            return raw_ret(raw());
        }
        // SAFETY: the program's buffer.
        let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
        raw_ret(visible_event(fd, data, raw))
    }

    #[no_mangle]
    pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: i64) -> ssize_t {
        // SAFETY: forwarded.
        unsafe { pwrite64(fd, buf, n, off) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t {
        // SAFETY: the program's iovec.
        let raw = || unsafe { sc(libc::SYS_writev, fd as usize, iov as usize, cnt as usize) };
        if !active() || cnt <= 0 {
            return raw_ret(raw());
        }
        let _g = InDc::enter();
        // SAFETY: the program's iovec array of cnt entries.
        let v = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
        let total: usize = v.iter().map(|x| x.iov_len).sum();
        if kstate::is_owned(fd) {
            if let Err(e) = log_file_write(fd, None, total) {
                sys::set_errno(e);
                return -1;
            }
            return raw_ret(raw());
        }
        let mut all = Vec::with_capacity(total);
        for x in v {
            // SAFETY: each iovec describes a readable buffer.
            all.extend_from_slice(unsafe {
                std::slice::from_raw_parts(x.iov_base as *const u8, x.iov_len)
            });
        }
        raw_ret(visible_event(fd, &all, raw))
    }

    #[no_mangle]
    pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t {
        if !active() || kstate::is_owned(fd) || cnt <= 0 {
            // SAFETY: the program's iovec.
            return raw_ret(unsafe {
                sc(libc::SYS_readv, fd as usize, iov as usize, cnt as usize)
            });
        }
        let _g = InDc::enter();
        // Input: read into the first non-empty buffer (a short read is always allowed).
        // SAFETY: the program's iovec array.
        let v = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
        match v.iter().find(|x| x.iov_len > 0) {
            // SAFETY: forwarded buffer.
            Some(x) => unsafe { input_read(fd, x.iov_base, x.iov_len, "readv") },
            None => 0,
        }
    }

    #[no_mangle]
    pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
        if !active() || flags != 0 {
            // SAFETY: recvfrom with null address.
            let r = unsafe {
                syscall6(
                    libc::SYS_recvfrom,
                    [fd as usize, buf as usize, n, flags as usize, 0, 0],
                )
            };
            if active() {
                let _g = InDc::enter();
                protocol::nondeterministic("recv", usize::MAX);
            }
            return raw_ret(r);
        }
        let _g = InDc::enter();
        // SAFETY: forwarded (recv with flags 0 is read).
        unsafe { input_read(fd, buf, n, "recv") }
    }

    #[no_mangle]
    pub unsafe extern "C" fn send(
        fd: c_int,
        buf: *const c_void,
        n: size_t,
        flags: c_int,
    ) -> ssize_t {
        // SAFETY: sendto with null address.
        let raw = || unsafe {
            syscall6(
                libc::SYS_sendto,
                [fd as usize, buf as usize, n, flags as usize, 0, 0],
            )
        };
        if !active() {
            return raw_ret(raw());
        }
        let _g = InDc::enter();
        // SAFETY: the program's buffer.
        let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n) };
        raw_ret(visible_event(fd, data, raw))
    }

    #[no_mangle]
    pub unsafe extern "C" fn lseek64(fd: c_int, off: i64, whence: c_int) -> i64 {
        // SAFETY: plain lseek.
        libc_ret(unsafe { sc(libc::SYS_lseek, fd as usize, off as usize, whence as usize) }) as i64
    }
    #[no_mangle]
    pub unsafe extern "C" fn lseek(fd: c_int, off: i64, whence: c_int) -> i64 {
        // SAFETY: forwarded.
        unsafe { lseek64(fd, off, whence) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn ftruncate64(fd: c_int, len: i64) -> c_int {
        if active() && kstate::is_owned(fd) {
            let _g = InDc::enter();
            if let (Some(e), Some((_, size))) = (kstate::entry(fd), kstate::stat_fd(fd)) {
                let data = if (len as u64) < size {
                    kstate::pread_all(fd, len as u64, (size - len as u64) as usize)
                } else {
                    Vec::new()
                };
                if let Err(er) = kstate::undo_append(&UndoRec {
                    kind: R_WRITE,
                    path: e.path.clone(),
                    path2: Vec::new(),
                    offset: (len as u64).min(size),
                    old_size: size,
                    data,
                }) {
                    sys::set_errno(er);
                    return -1;
                }
            }
        }
        // SAFETY: plain ftruncate.
        libc_ret(unsafe { sc(libc::SYS_ftruncate, fd as usize, len as usize, 0) }) as c_int
    }
    #[no_mangle]
    pub unsafe extern "C" fn ftruncate(fd: c_int, len: i64) -> c_int {
        // SAFETY: forwarded.
        unsafe { ftruncate64(fd, len) }
    }

    fn dup_entry(old: c_int, new: c_int) {
        if let Some(e) = kstate::entry(old).cloned() {
            kstate::set_entry(new, Some(e));
        } else {
            kstate::set_entry(new, None);
        }
    }

    #[no_mangle]
    pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
        // SAFETY: plain dup.
        let r = unsafe { sc(libc::SYS_dup, fd as usize, 0, 0) };
        if active() {
            if let Ok(n) = check(r) {
                let _g = InDc::enter();
                dup_entry(fd, n as c_int);
            }
        }
        libc_ret(r) as c_int
    }
    #[no_mangle]
    pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
        if fd == to {
            // SAFETY: fcntl F_GETFD checks validity (dup2 semantics for equal fds).
            let r = unsafe { sc(libc::SYS_fcntl, fd as usize, libc::F_GETFD as usize, 0) };
            return if r < 0 { libc_ret(r) as c_int } else { to };
        }
        // SAFETY: forwarded.
        unsafe { dup3(fd, to, 0) }
    }
    #[no_mangle]
    pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
        // SAFETY: plain dup3.
        let r = unsafe { sc(libc::SYS_dup3, fd as usize, to as usize, flags as usize) };
        if active() && r >= 0 {
            let _g = InDc::enter();
            dup_entry(fd, to);
        }
        libc_ret(r) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
        // SAFETY: fcntl with the caller's (integer or pointer) argument.
        let r = unsafe { sc(libc::SYS_fcntl, fd as usize, cmd as usize, arg) };
        if active() && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
            if let Ok(n) = check(r) {
                let _g = InDc::enter();
                dup_entry(fd, n as c_int);
            }
        }
        libc_ret(r) as c_int
    }
    #[no_mangle]
    pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
        // SAFETY: forwarded.
        unsafe { fcntl(fd, cmd, arg) }
    }

    unsafe fn do_unlink(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: plain unlinkat.
        let raw = || unsafe {
            sc(
                libc::SYS_unlinkat,
                dirfd as usize,
                path as usize,
                flags as usize,
            )
        };
        if !active() || flags & libc::AT_REMOVEDIR != 0 {
            return libc_ret(raw()) as c_int;
        }
        let _g = InDc::enter();
        // SAFETY: C string.
        let abs = kstate::absolutize(dirfd, unsafe { cbytes(path) });
        match kstate::stat_path(&abs) {
            Some((_, _, false)) => match kstate::bury(&abs) {
                Ok(_) => 0,
                Err(e) => {
                    sys::set_errno(e);
                    -1
                }
            },
            _ => libc_ret(raw()) as c_int,
        }
    }

    #[no_mangle]
    pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
        // SAFETY: forwarded.
        unsafe { do_unlink(libc::AT_FDCWD, path, 0) }
    }
    #[no_mangle]
    pub unsafe extern "C" fn unlinkat(d: c_int, path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: forwarded.
        unsafe { do_unlink(d, path, flags) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn rename(from: *const c_char, to: *const c_char) -> c_int {
        // SAFETY: plain rename.
        let raw = || unsafe {
            syscall6(
                libc::SYS_renameat2,
                [
                    libc::AT_FDCWD as usize,
                    from as usize,
                    libc::AT_FDCWD as usize,
                    to as usize,
                    0,
                    0,
                ],
            )
        };
        if !active() {
            return libc_ret(raw()) as c_int;
        }
        let _g = InDc::enter();
        // SAFETY: C strings.
        let (a, b) = unsafe {
            (
                kstate::absolutize(libc::AT_FDCWD, cbytes(from)),
                kstate::absolutize(libc::AT_FDCWD, cbytes(to)),
            )
        };
        if kstate::stat_path(&a).is_none() {
            return libc_ret(raw()) as c_int;
        }
        if let Some((_, _, false)) = kstate::stat_path(&b) {
            if let Err(e) = kstate::bury(&b) {
                sys::set_errno(e);
                return -1;
            }
        }
        if let Err(e) = kstate::undo_append(&UndoRec {
            kind: R_RENAME,
            path: a.clone(),
            path2: b.clone(),
            offset: 0,
            old_size: 0,
            data: Vec::new(),
        }) {
            sys::set_errno(e);
            return -1;
        }
        let r = raw();
        if r >= 0 {
            for e in kstate::ks().fds.iter_mut().flatten() {
                if e.path == a {
                    e.path = b.clone();
                }
            }
        }
        libc_ret(r) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
        // SAFETY: plain chdir.
        let r = unsafe { sc(libc::SYS_chdir, path as usize, 0, 0) };
        if active() && r == 0 {
            let _g = InDc::enter();
            // SAFETY: C string.
            let abs = kstate::absolutize(libc::AT_FDCWD, unsafe { cbytes(path) });
            kstate::ks().cwd = abs;
        }
        libc_ret(r) as c_int
    }

    // ---- signals ----

    #[no_mangle]
    pub unsafe extern "C" fn sigaction(
        sig: c_int,
        act: *const libc::sigaction,
        old: *mut libc::sigaction,
    ) -> c_int {
        // SAFETY: forwarded C contract.
        unsafe { do_sigaction(sig, act, old) }
    }
    #[no_mangle]
    pub unsafe extern "C" fn __sigaction(
        sig: c_int,
        act: *const libc::sigaction,
        old: *mut libc::sigaction,
    ) -> c_int {
        // SAFETY: forwarded C contract.
        unsafe { do_sigaction(sig, act, old) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t {
        // SAFETY: zeroed sigaction structs are valid values.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = h;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: valid structs.
        if unsafe { do_sigaction(sig, &act, &mut old) } != 0 {
            return libc::SIG_ERR;
        }
        old.sa_sigaction
    }

    #[no_mangle]
    pub unsafe extern "C" fn setitimer(
        which: c_int,
        new: *const libc::itimerval,
        old: *mut libc::itimerval,
    ) -> c_int {
        // SAFETY: plain setitimer.
        let r = unsafe {
            sc(
                libc::SYS_setitimer,
                which as usize,
                new as usize,
                old as usize,
            )
        };
        if active() && r == 0 && !new.is_null() && (0..3).contains(&which) {
            let _g = InDc::enter();
            // SAFETY: new is a valid itimerval.
            let n = unsafe { &*new };
            let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
            kstate::ks().itimers[which as usize] = kstate::ITimer {
                interval_us: us(n.it_interval),
                value_us: us(n.it_value),
                set_ns: sys::mono_ns(),
            };
        }
        libc_ret(r) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn alarm(secs: c_uint) -> c_uint {
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
        // SAFETY: valid structs.
        if unsafe { setitimer(libc::ITIMER_REAL, &new, &mut old) } != 0 {
            return 0;
        }
        (old.it_value.tv_sec + if old.it_value.tv_usec > 0 { 1 } else { 0 }) as c_uint
    }

    #[no_mangle]
    pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> c_int {
        // SAFETY: plain mprotect with the program's arguments.
        let r = unsafe { sc(libc::SYS_mprotect, addr as usize, len, prot as usize) };
        if active() && r == 0 {
            let _g = InDc::enter();
            kstate::ks().prots.push((addr as usize, len, prot));
        }
        libc_ret(r) as c_int
    }

    // ---- time and other non-determinism ----

    #[no_mangle]
    pub unsafe extern "C" fn clock_gettime(clk: libc::clockid_t, ts: *mut libc::timespec) -> c_int {
        // SAFETY: forwarded.
        let r = unsafe { crate::vdso::clock_gettime(clk, ts) };
        if active() {
            let _g = InDc::enter();
            protocol::nondeterministic("clock_gettime", usize::MAX);
        }
        libc_ret(r) as c_int
    }
    #[no_mangle]
    pub unsafe extern "C" fn __clock_gettime(
        clk: libc::clockid_t,
        ts: *mut libc::timespec,
    ) -> c_int {
        // SAFETY: forwarded.
        unsafe { clock_gettime(clk, ts) }
    }

    #[no_mangle]
    pub unsafe extern "C" fn gettimeofday(tv: *mut libc::timeval, tz: *mut c_void) -> c_int {
        // SAFETY: forwarded.
        let r = unsafe { crate::vdso::gettimeofday(tv, tz) };
        if active() {
            let _g = InDc::enter();
            protocol::nondeterministic("gettimeofday", usize::MAX);
        }
        libc_ret(r) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn time(t: *mut libc::time_t) -> libc::time_t {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts writable.
        unsafe { crate::vdso::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        if !t.is_null() {
            // SAFETY: caller's pointer.
            unsafe { *t = ts.tv_sec };
        }
        if active() {
            let _g = InDc::enter();
            protocol::nondeterministic("time", usize::MAX);
        }
        ts.tv_sec
    }

    #[no_mangle]
    pub unsafe extern "C" fn getrandom(buf: *mut c_void, n: size_t, flags: c_uint) -> ssize_t {
        // SAFETY: plain getrandom into the caller's buffer.
        let r = unsafe { sc(libc::SYS_getrandom, buf as usize, n, flags as usize) };
        if active() {
            let _g = InDc::enter();
            protocol::nondeterministic("getrandom", usize::MAX);
        }
        raw_ret(r)
    }

    #[no_mangle]
    pub unsafe extern "C" fn getpid() -> libc::pid_t {
        // SAFETY: getpid has no arguments.
        let r = unsafe { sc(libc::SYS_getpid, 0, 0, 0) };
        if active() {
            let _g = InDc::enter();
            protocol::nondeterministic("getpid", usize::MAX);
        }
        r as libc::pid_t
    }

    #[no_mangle]
    pub unsafe extern "C" fn poll(
        fds: *mut libc::pollfd,
        n: libc::nfds_t,
        timeout: c_int,
    ) -> c_int {
        // SAFETY: plain poll.
        let r = unsafe { sc(libc::SYS_poll, fds as usize, n as usize, timeout as usize) };
        if active() {
            let _g = InDc::enter();
            protocol::nondeterministic("poll", usize::MAX);
        }
        libc_ret(r) as c_int
    }
}

// ---- signal plumbing (also used by recovery) ----

unsafe fn do_sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    if !(1..65).contains(&sig) {
        sys::set_errno(libc::EINVAL);
        return -1;
    }
    let timer = crate::ckpt::rt().and_then(|rt| rt.cfg.interval.map(|_| rt.cfg.timer_signal));
    let mut kold = sys::KSigaction::default();
    if !active() || Some(sig) == timer {
        if Some(sig) == timer && !act.is_null() {
            sys::set_errno(libc::EINVAL);
            return -1;
        }
        let knew = (!act.is_null()).then(|| {
            // SAFETY: act is a valid sigaction.
            let a = unsafe { &*act };
            sys::KSigaction {
                handler: a.sa_sigaction,
                flags: a.sa_flags as u64,
                restorer: 0,
                // SAFETY: sigset_t starts with the 64-bit kernel mask.
                mask: unsafe { *(&a.sa_mask as *const libc::sigset_t as *const u64) },
            }
        });
        if let Err(e) = sys::rt_sigaction(sig, knew.as_ref(), Some(&mut kold)) {
            sys::set_errno(e);
            return -1;
        }
        if !old.is_null() {
            // SAFETY: old is writable.
            unsafe { fill_old(old, kold.handler, kold.flags, kold.mask) };
        }
        return 0;
    }
    let _g = InDc::enter();
    let e = &SIGS[sig as usize];
    let (oh, of, om) = if e.set.load(Ordering::Relaxed) {
        (
            e.handler.load(Ordering::Relaxed),
            e.flags.load(Ordering::Relaxed),
            e.mask.load(Ordering::Relaxed),
        )
    } else {
        if let Err(er) = sys::rt_sigaction(sig, None, Some(&mut kold)) {
            sys::set_errno(er);
            return -1;
        }
        (kold.handler, kold.flags, kold.mask)
    };
    if !act.is_null() {
        // SAFETY: valid sigaction.
        let a = unsafe { &*act };
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            sys::set_errno(libc::EINVAL);
            return -1;
        }
        e.handler.store(a.sa_sigaction, Ordering::Relaxed);
        e.flags.store(a.sa_flags as u64, Ordering::Relaxed);
        // SAFETY: sigset_t starts with the 64-bit kernel mask.
        e.mask.store(
            unsafe { *(&a.sa_mask as *const libc::sigset_t as *const u64) },
            Ordering::Relaxed,
        );
        e.set.store(true, Ordering::Release);
        install_app_signal(sig);
    }
    if !old.is_null() {
        // SAFETY: old writable.
        unsafe { fill_old(old, oh, of, om) };
    }
    0
}

unsafe fn fill_old(old: *mut libc::sigaction, h: usize, flags: u64, mask: u64) {
    // SAFETY: zeroed sigaction is valid; old is writable (caller).
    unsafe {
        let mut o: libc::sigaction = std::mem::zeroed();
        o.sa_sigaction = h;
        o.sa_flags = (flags & !(crate::sys::SA_RESTORER as u64)) as c_int;
        *(&mut o.sa_mask as *mut libc::sigset_t as *mut u64) = mask;
        *old = o;
    }
}

/// Installs the kernel disposition for a program signal from the table.
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

extern "C" fn on_app_signal(sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    // SAFETY: errno slot of this thread.
    let saved = unsafe { *libc::__errno_location() };
    let e = &SIGS[sig as usize];
    let h = e.handler.load(Ordering::Relaxed);
    let flags = e.flags.load(Ordering::Relaxed);
    if flags & libc::SA_RESETHAND as u64 != 0 {
        e.handler.store(libc::SIG_DFL, Ordering::Relaxed);
    }
    // The delivery is the non-deterministic event; CAND commits right after it, before
    // the handler can do anything visible.
    let v = vol::get();
    crate::trace::event_num("N", sig as u64);
    match protocol::current() {
        Protocol::Cand | Protocol::CandLog => {
            if v.in_dc.load(Ordering::Acquire) == 0 && !v.busy.load(Ordering::Acquire) {
                // SAFETY: SA_SIGINFO handlers get the interrupted context.
                let rsp = unsafe {
                    (*(uc as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RSP as usize]
                } as usize;
                let _ = crate::ckpt::take(crate::vol::handler_low_hint(rsp));
            } else {
                v.pending.store(true, Ordering::Release);
            }
        }
        Protocol::Cbndvs | Protocol::CbndvsLog => protocol::mark_nd(),
        _ => {}
    }
    if h != libc::SIG_DFL && h != libc::SIG_IGN {
        // SAFETY: errno back for the program's handler.
        unsafe { *libc::__errno_location() = saved };
        if flags & libc::SA_SIGINFO as u64 != 0 {
            // SAFETY: the program registered an SA_SIGINFO handler of this type.
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                unsafe { std::mem::transmute(h) };
            f(sig, info, uc);
        } else {
            // SAFETY: a plain handler.
            let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(h) };
            f(sig);
        }
    }
    // SAFETY: errno slot.
    unsafe { *libc::__errno_location() = saved };
}
