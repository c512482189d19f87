//! Reading and writing descriptors: `read`, `readv`, `pread`, `recv` (input: the reads of
//! anything but the program's own files are non-deterministic, or logged under the -LOG
//! protocols), `write`, `writev`, `pwrite`, `send` (output: writes to anything but the
//! program's own files are visible events; writes to its files are logged for undo), and
//! the readiness calls (`poll`, `ppoll`, `select`, `pselect6`, `epoll_wait`,
//! `epoll_pwait`, `epoll_pwait2`: non-deterministic, or logged under the -LOG protocols
//! like reads). Only `poll` has a libc wrapper here; the others are trapped.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use libc::{c_int, c_void, size_t, ssize_t};

use super::files::log_file_write;
use super::{
    active, logged, nondeterministic, raw_ret, received, visible_event, wait_as_member, Entry,
};
use crate::ckpt::{self, Ctx};
use crate::protocol;
use crate::sys::{libc_ret, sc, sc4, syscall6};

// ---------------------------------------------------------------------------------------
// Input (non-deterministic unless logged)

// The input log (the -LOG protocols, thesis 6.2.2) is a sequence of 8-byte aligned
// records in the control segment's input area, appended in the order the calls returned
// and replayed in that order by the re-execution after a recovery:
//
//   tag: i64, res: i64, len: u64, data: [u8; len], padding to 8 bytes
//
// A read's record has the descriptor as its tag and the bytes it returned as its data. A
// readiness call's (`poll`, `select`, `epoll_wait`, ... below) has `READY_TAG - nr` as
// its tag (never a descriptor: those fit in an `int`) and, as its data, a word giving the
// call's shape (see `ReadyCall::shape`) followed by everything the call wrote into the
// program's memory.

const INREC_HDR: usize = 24;

/// Base of the tags of readiness calls' records: `READY_TAG - nr` for system call `nr`,
/// below every `int` descriptor a read's record carries.
pub(super) const READY_TAG: i64 = -(1 << 32);

/// One record of the input log, as found at the replay cursor.
pub(super) struct InRec {
    pub(super) tag: i64,
    pub(super) res: i64,
    /// The record's data, inside the input area.
    pub(super) data: *const u8,
    pub(super) len: usize,
    /// Offset of the next record.
    next: usize,
}

/// The next record of the input log, if re-executing through it (None when the log is
/// used up, or when the record there is malformed: replay then stops).
pub(super) fn next_record(cx: &mut Ctx) -> Option<InRec> {
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
    let (tag, res, len) = unsafe {
        let p = area.add(at);
        (
            (p as *const i64).read(),
            (p.add(8) as *const i64).read(),
            (p.add(16) as *const u64).read() as usize,
        )
    };
    if len > end - at - INREC_HDR {
        rt.input_cursor = end;
        return None;
    }
    Some(InRec {
        tag,
        res,
        // SAFETY: inside the area (checked just above).
        data: unsafe { area.add(at + INREC_HDR) },
        len,
        next: at + ((INREC_HDR + len + 7) & !7),
    })
}

/// Re-execution diverged from the log (the next record is not for this call): replay
/// stops, and every later input call is performed (and logged) again.
pub(super) fn diverge(cx: &mut Ctx) {
    if let Some(rt) = cx.rt() {
        // SAFETY: the header lies in the control member, mapped while the runtime lives.
        rt.input_cursor = unsafe { (*rt.image.header()).input_end } as usize;
    }
}

/// The record `rec` was replayed: the cursor moves past it.
pub(super) fn consume(cx: &mut Ctx, rec: &InRec) {
    if let Some(rt) = cx.rt() {
        rt.input_cursor = rec.next;
    }
}

/// Reads from a descriptor that is not one of the program's files: non-deterministic, or
/// logged under the -LOG protocols.
///
/// # Safety
/// `buf` is writable for `n` bytes (the C contract of `read`).
unsafe fn input_read(e: &mut Entry, fd: c_int, buf: *mut c_void, n: size_t, what: &str) -> isize {
    // SAFETY: the program's buffer, writable for n bytes (function contract).
    if let Some(k) = unsafe { drained_read(e, fd, buf, n, what) } {
        return k;
    }
    let logs = protocol::current().logs_input();
    if logs {
        if let Some(r) = replay_input(e.cx(), fd, buf, n) {
            if r >= 0 {
                // SAFETY: replay_input copied r bytes (at most n) into the buffer.
                let data =
                    unsafe { std::slice::from_raw_parts(buf as *const u8, (r as usize).min(n)) };
                received(e.cx(), fd, data);
            }
            logged(what);
            return r;
        }
    }
    wait_as_member(e.cx(), fd, libc::POLLIN, -1);
    // A round served while waiting may have drained this connection: those bytes come
    // before the kernel's.
    // SAFETY: the program's buffer, writable for n bytes (function contract).
    if let Some(k) = unsafe { drained_read(e, fd, buf, n, what) } {
        return k;
    }
    // SAFETY: the program's buffer, writable for n bytes (function contract).
    let r = unsafe { sc(libc::SYS_read, fd as usize, buf as usize, n) };
    let len = if r > 0 { r as usize } else { 0 };
    // SAFETY: the kernel just wrote len bytes into the program's buffer.
    let data = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
    if r >= 0 {
        received(e.cx(), fd, data);
    }
    if logs && log_record(e.cx(), fd as i64, r, &[data]) {
        logged(what);
    } else {
        nondeterministic(e.cx(), what, usize::MAX);
    }
    r
}

/// [`from_drained`], as the read's result (a received message, a non-deterministic
/// event).
///
/// # Safety
/// `buf` is writable for `n` bytes.
unsafe fn drained_read(
    e: &mut Entry,
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    what: &str,
) -> Option<isize> {
    // SAFETY: the program's buffer, writable for n bytes (function contract).
    let k = unsafe { from_drained(e.cx(), fd, buf as *mut u8, n) }?;
    // SAFETY: from_drained copied k bytes (at most n) into the buffer.
    let data = unsafe { std::slice::from_raw_parts(buf as *const u8, k) };
    received(e.cx(), fd, data);
    nondeterministic(e.cx(), what, usize::MAX);
    Some(k as isize)
}

/// A read of a stream connection or FIFO whose drained bytes (the distributed
/// checkpoint's drain, `kstate::sock` and `kstate::pipe`, issue 16) are not all read yet:
/// served from them, up to `n` bytes.
///
/// # Safety
/// `buf` is writable for `n` bytes.
pub(super) unsafe fn from_drained(
    cx: &mut Ctx,
    fd: c_int,
    buf: *mut u8,
    n: usize,
) -> Option<usize> {
    let inbuf = cx.ks().drained_mut(fd)?;
    if inbuf.is_empty() || n == 0 {
        return None;
    }
    let k = n.min(inbuf.len());
    // SAFETY: k bytes from the record's buffer into the program's (writable for n >= k).
    unsafe { std::ptr::copy_nonoverlapping(inbuf.as_ptr(), buf, k) };
    inbuf.drain(..k);
    Some(k)
}

/// Whether `fd` is a stream connection or FIFO with drained bytes not yet read.
pub(super) fn has_drained(cx: &mut Ctx, fd: c_int) -> bool {
    cx.ks().has_drained(fd)
}

/// The next logged result for `fd`, if re-executing through the log.
fn replay_input(cx: &mut Ctx, fd: c_int, buf: *mut c_void, n: size_t) -> Option<isize> {
    let rec = next_record(cx)?;
    if rec.tag != fd as i64 || rec.len > n {
        diverge(cx);
        return None;
    }
    // SAFETY: len <= n bytes from the log (inside the area, `next_record`) into the
    // program's buffer, writable for n bytes (the caller's contract).
    unsafe { std::ptr::copy_nonoverlapping(rec.data, buf as *mut u8, rec.len) };
    consume(cx, &rec);
    Some(rec.res as isize)
}

/// Appends a record (`tag`, `res`, the concatenation of `parts`) to the input log. A
/// full log forces a checkpoint first (which empties it: what the call returned is then
/// in the checkpointed memory). False if it still does not fit.
pub(super) fn log_record(cx: &mut Ctx, tag: i64, res: isize, parts: &[&[u8]]) -> bool {
    let len: usize = parts.iter().map(|p| p.len()).sum();
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
    // SAFETY: [end, end+need) is inside the area (`fits`); `parts` are live slices (what
    // the kernel just returned) that do not overlap the area; plain permanent stores
    // outside any transaction; the record is complete before input_end covers it.
    unsafe {
        let p = area.add(end);
        (p as *mut i64).write(tag);
        (p.add(8) as *mut i64).write(res as i64);
        (p.add(16) as *mut u64).write(len as u64);
        let mut at = INREC_HDR;
        for part in parts {
            std::ptr::copy_nonoverlapping(part.as_ptr(), p.add(at), part.len());
            at += part.len();
        }
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        std::ptr::write_volatile(&mut (*h).input_end, (end + need) as u64);
    }
    rt.input_cursor = end + need;
    true
}

// ---------------------------------------------------------------------------------------
// Readiness calls: logged like reads under the -LOG protocols

/// The readiness system calls whose results the -LOG protocols log: thesis 6.2.2, where
/// CAND-LOG and CBNDVS-LOG "write the results of the recv, recvfrom, recvmsg, read, and
/// select calls to a log in order to make those events deterministic"; `poll`, `ppoll`,
/// `pselect6` and the `epoll_wait` family are today's `select`. The thesis left
/// `gettimeofday`, `bind` and signals non-deterministic under those protocols, and so do
/// we: the time calls (`clock_gettime`, `gettimeofday`, `time`, `intercept::time`) are
/// non-deterministic events under every protocol.
fn is_readiness(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_poll
            | libc::SYS_ppoll
            | libc::SYS_select
            | libc::SYS_pselect6
            | libc::SYS_epoll_wait
            | libc::SYS_epoll_pwait
            | libc::SYS_epoll_pwait2
    )
}

/// Most regions of the program's memory a readiness call writes (`select`: three
/// `fd_set`s and the timeout).
const READY_REGIONS: usize = 4;

/// What a readiness call with arguments `a` writes into the program's memory: its shape
/// (one word: the number of descriptors or events and which optional arguments are
/// present, the same for the same call in a re-execution) and the regions it writes, in
/// the record's order.
struct ReadyCall {
    shape: u64,
    /// (address, length) of each region; `n` used.
    regions: [(usize, usize); READY_REGIONS],
    n: usize,
    /// `poll`/`ppoll`: region 0 is the `pollfd` array, whose descriptors and requested
    /// events are checked on replay.
    pollfds: bool,
}

const POLLFD_LEN: usize = std::mem::size_of::<libc::pollfd>();
/// An `epoll_event` (12 bytes, packed, on x86_64).
const EPOLL_EVENT_LEN: usize = std::mem::size_of::<libc::epoll_event>();
/// Bound on the descriptors and events a logged call may name (the kernel refuses more
/// than `RLIMIT_NOFILE` descriptors anyway): larger calls are not logged.
const READY_MAX: usize = 1 << 20;

impl ReadyCall {
    /// The call `nr` with arguments `a` that returned `res` (for `epoll_wait`, the number
    /// of events written). Its regions are those it wrote if it succeeded or was
    /// interrupted (the kernel then read every pointer, so they are valid), none for any
    /// other error. None if the call is too large to log.
    fn of(nr: i64, a: &[usize; 6], res: i64) -> Option<ReadyCall> {
        let wrote = res >= 0 || res == -(libc::EINTR as i64);
        let mut c = ReadyCall {
            shape: 0,
            regions: [(0, 0); READY_REGIONS],
            n: 0,
            pollfds: false,
        };
        let push = |c: &mut ReadyCall, p: usize, len: usize| {
            if wrote && p != 0 && len != 0 {
                c.regions[c.n] = (p, len);
                c.n += 1;
            }
        };
        match nr {
            libc::SYS_poll | libc::SYS_ppoll => {
                let n = a[1];
                if n > READY_MAX {
                    return None;
                }
                c.pollfds = true;
                push(&mut c, a[0], n * POLLFD_LEN);
                // ppoll writes the time left into its timeout (glibc's ppoll passes a
                // copy; a trapped ppoll, the program's own).
                let tmo = if nr == libc::SYS_ppoll { a[2] } else { 0 };
                c.shape = n as u64 | ((tmo != 0) as u64) << 32;
                push(&mut c, tmo, std::mem::size_of::<libc::timespec>());
            }
            libc::SYS_select | libc::SYS_pselect6 => {
                let nfds = a[0] as c_int;
                if !(0..=READY_MAX as c_int).contains(&nfds) {
                    return None;
                }
                // The kernel reads and writes whole longs of each set.
                let set = (nfds as usize).div_ceil(64) * 8;
                c.shape = nfds as u64;
                for (i, &p) in a[1..4].iter().enumerate() {
                    c.shape |= ((p != 0) as u64) << (32 + i);
                    push(&mut c, p, set);
                }
                // Both write the time left into the timeout (a timeval for select, a
                // timespec for pselect6: 16 bytes either way), unless it is read-only.
                c.shape |= ((a[4] != 0) as u64) << 35;
                push(&mut c, a[4], 16);
            }
            _ => {
                let max = a[2] as c_int;
                if !(0..=READY_MAX as c_int).contains(&max) || res > max as i64 {
                    return None;
                }
                c.shape = max as u64;
                push(&mut c, a[1], res.max(0) as usize * EPOLL_EVENT_LEN);
            }
        }
        Some(c)
    }

    fn regions(&self) -> &[(usize, usize)] {
        &self.regions[..self.n]
    }

    fn len(&self) -> usize {
        8 + self.regions().iter().map(|r| r.1).sum::<usize>()
    }
}

/// The next logged result of readiness call `nr`, if re-executing through the log and
/// the record there is of this call and shape: its outputs are copied into the program's
/// memory, and its result returned. Otherwise replay stops (as for a read that diverges).
///
/// # Safety
/// `a` are the program's arguments for `nr`, valid as that call's contract says.
unsafe fn replay_ready(cx: &mut Ctx, nr: i64, a: &[usize; 6]) -> Option<isize> {
    let rec = next_record(cx)?;
    let call = match ReadyCall::of(nr, a, rec.res) {
        Some(c) if rec.tag == READY_TAG - nr && rec.len == c.len() => c,
        _ => {
            diverge(cx);
            return None;
        }
    };
    // SAFETY: the record's first word (its length is at least 8), inside the area.
    if unsafe { (rec.data as *const u64).read_unaligned() } != call.shape {
        diverge(cx);
        return None;
    }
    if call.pollfds {
        if let Some(&(p, len)) = call.regions().first() {
            // SAFETY: the record holds len bytes of pollfds after its shape word; the
            // program's array is readable for len bytes (poll's contract).
            let (logged, now) = unsafe {
                (
                    std::slice::from_raw_parts(rec.data.add(8), len),
                    std::slice::from_raw_parts(p as *const u8, len),
                )
            };
            // The same descriptors and requested events, or the program diverged.
            let same = logged
                .chunks(POLLFD_LEN)
                .zip(now.chunks(POLLFD_LEN))
                .all(|(l, n)| l[..6] == n[..6]);
            if !same {
                diverge(cx);
                return None;
            }
        }
    }
    let mut at = 8;
    for &(p, len) in call.regions() {
        // SAFETY: [at, at+len) lies in the record (its length was checked); the region
        // is the program's, readable, and written by the call it replays, except for a
        // timeout the kernel could not update (read-only): only bytes that differ are
        // stored, and those the kernel did write.
        unsafe {
            let from = std::slice::from_raw_parts(rec.data.add(at), len);
            let to = std::slice::from_raw_parts_mut(p as *mut u8, len);
            if to != from {
                to.copy_from_slice(from);
            }
        }
        at += len;
    }
    consume(cx, &rec);
    Some(rec.res as isize)
}

/// Readiness call `nr` under a -LOG protocol (`sys_nd` hands it over): replayed from the
/// input log in a re-execution, or performed and logged, so it is a deterministic
/// (logged, `L`) event rather than a non-deterministic one; non-deterministic only if it
/// cannot be logged (the log is full even after a checkpoint, or the call is too large).
///
/// # Safety
/// `a` are valid arguments for system call `nr`.
unsafe fn ready_logged(nr: i64, a: [usize; 6], what: &str) -> isize {
    let mut e = Entry::enter();
    // SAFETY: the program's arguments for nr (function contract).
    if let Some(r) = unsafe { replay_ready(e.cx(), nr, &a) } {
        logged(what);
        return r;
    }
    // SAFETY: the caller's arguments for nr (function contract).
    let r = unsafe { syscall6(nr, a) };
    let logged_ok = ReadyCall::of(nr, &a, r as i64).is_some_and(|c| {
        let shape = c.shape.to_ne_bytes();
        let mut parts: [&[u8]; READY_REGIONS + 1] = [&[]; READY_REGIONS + 1];
        parts[0] = &shape;
        for (i, &(p, len)) in c.regions().iter().enumerate() {
            // SAFETY: a region the call just wrote (or read and left), in the program's
            // memory, readable for len bytes (`ReadyCall::of`).
            parts[i + 1] = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
        }
        log_record(e.cx(), READY_TAG - nr, r, &parts[..c.n + 1])
    });
    if logged_ok {
        logged(what);
    } else {
        nondeterministic(e.cx(), what, usize::MAX);
    }
    r
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
    if e.cx().ks().is_self_pipe(fd) {
        // The process's own pipe: its bytes are captured at each checkpoint, so a write to
        // it is no visible event (`kstate::pipe`).
        return raw();
    }
    visible_event(&mut e, fd, None, &data(), raw)
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
    if e.cx().ks().is_self_pipe(fd) {
        // The process's own pipe: state, not input (`kstate::pipe`).
        wait_as_member(e.cx(), fd, libc::POLLIN, -1);
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
    if crate::twopc::configured() {
        let mut e = Entry::enter();
        // (A connection to a peer outside the computation is written as under the
        // single-process protocols: a broken one is no sign of a rollback to come.)
        if e.cx().ks().sock(fd).is_some_and(|s| s.member_connection()) {
            drop(e);
            // SAFETY: send from the program's buffer, readable for n bytes.
            let send = || unsafe {
                syscall6(
                    libc::SYS_sendto,
                    [
                        fd as usize,
                        buf as usize,
                        n,
                        libc::MSG_NOSIGNAL as usize,
                        0,
                        0,
                    ],
                )
            };
            let r = output(fd, None, n, data, send);
            return broken_stream(r, true);
        }
        if e.cx().ks().is_fifo(fd) {
            drop(e);
            let r = output(fd, None, n, data, || without_sigpipe(raw));
            return broken_stream(r, true);
        }
    }
    output(fd, None, n, data, raw)
}

/// A write to a FIFO of a member of a computation (issue 16), made inside
/// `visible_event`, which blocks the asynchronous signals: a `SIGPIPE` the kernel raised
/// because nobody reads the FIFO (usually: its reader crashed, and a rollback order
/// follows) is taken back, as `MSG_NOSIGNAL` does for a stream socket, so that
/// [`broken_stream`] can wait for the rollback before the program gets it.
fn without_sigpipe(raw: impl FnOnce() -> isize) -> isize {
    let bit = 1u64 << (libc::SIGPIPE - 1);
    let pending = || {
        let mut set = 0u64;
        // SAFETY: rt_sigpending writes an 8-byte set into the live local.
        unsafe { sc(libc::SYS_rt_sigpending, &mut set as *mut u64 as usize, 8, 0) };
        set & bit != 0
    };
    let before = pending();
    let r = raw();
    if r == -(libc::EPIPE as isize) && !before {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: rt_sigtimedwait reads the 8-byte set and the zero timeout from live
        // locals and takes the pending (blocked) SIGPIPE without waiting; no siginfo.
        unsafe {
            sc4(
                libc::SYS_rt_sigtimedwait,
                &bit as *const u64 as usize,
                0,
                &zero as *const libc::timespec as usize,
                8,
            )
        };
    }
    r
}

/// After a write or send on a stream connection of a member of a computation (issue
/// 16), made with `MSG_NOSIGNAL`: a broken connection (`EPIPE`, `ECONNRESET`) usually
/// means that the peer crashed, and then the coordinator orders a rollback: the member
/// waits for it (serving the coordinator) up to [`BROKEN_WAIT_MS`] rather than let the
/// program see a failure that recovery undoes. Past that, the peer really closed: the
/// program gets what the kernel would have given it (`SIGPIPE` when `sigpipe`, then the
/// error).
fn broken_stream(r: isize, sigpipe: bool) -> isize {
    if r != -(libc::EPIPE as isize) && r != -(libc::ECONNRESET as isize) {
        return r;
    }
    {
        let mut e = Entry::enter();
        super::member::wait_for_rollback(e.cx(), BROKEN_WAIT_MS);
    }
    if sigpipe && r == -(libc::EPIPE as isize) {
        // SAFETY: kill of this process with a plain signal number.
        unsafe {
            sc(
                libc::SYS_kill,
                sc(libc::SYS_getpid, 0, 0, 0) as usize,
                libc::SIGPIPE as usize,
                0,
            )
        };
    }
    r
}

/// How long a member waits for a rollback after its stream connection broke.
const BROKEN_WAIT_MS: u64 = 3000;

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
    if crate::twopc::configured() && Entry::enter().cx().ks().is_fifo(fd) {
        let r = output(fd, None, total, data, || without_sigpipe(raw));
        return broken_stream(r, true);
    }
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
    if e.cx().ks().is_self_pipe(fd) {
        // The process's own pipe: state, not input (`kstate::pipe`).
        wait_as_member(e.cx(), fd, libc::POLLIN, -1);
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
    if active() && flags & libc::MSG_DONTWAIT == 0 {
        let mut e = Entry::enter();
        wait_as_member(e.cx(), fd, libc::POLLIN, -1);
    }
    if active() && flags & libc::MSG_PEEK == 0 && addr == 0 {
        let mut e = Entry::enter();
        // SAFETY: the program's buffer, writable for n bytes.
        if let Some(k) = unsafe { drained_read(&mut e, fd, buf, n, "recv") } {
            return k;
        }
    }
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
            if r >= 0 {
                // SAFETY: the kernel just wrote r bytes (at most n) into the buffer.
                let data =
                    unsafe { std::slice::from_raw_parts(buf as *const u8, (r as usize).min(n)) };
                received(e.cx(), fd, data);
            }
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
    let dest = if addr != 0 && alen <= crate::kstate::sock::ADDR_MAX {
        // SAFETY: a non-null address is readable for alen bytes (sendto's contract).
        Some(unsafe { std::slice::from_raw_parts(addr as *const u8, alen) })
    } else {
        None
    };
    visible_event(&mut e, fd, dest, data, raw)
}

/// A call whose result is a non-deterministic event and that changes nothing we record
/// (`poll`, `ppoll`, `select`, `pselect6`, the `epoll_wait` family, `getppid`, `times`,
/// ...): performed, then reported to the protocol. Under the -LOG protocols the readiness
/// calls among them are logged instead (`ready_logged`, thesis 6.2.2).
///
/// # Safety
/// `a` are valid arguments for system call `nr`.
pub(super) unsafe fn sys_nd(nr: i64, a: [usize; 6], what: &str) -> isize {
    if is_readiness(nr) && active() && protocol::current().logs_input() {
        // SAFETY: the caller's arguments for nr (function contract).
        return unsafe { ready_logged(nr, a, what) };
    }
    if active() && crate::twopc::configured() && is_readiness(nr) {
        let mut e = Entry::enter();
        // SAFETY: the caller's arguments for nr (function contract).
        if let Some(r) = unsafe { ready_drained(e.cx(), nr, &a) } {
            nondeterministic(e.cx(), what, usize::MAX);
            return r;
        }
    }
    let mut a = a;
    let mut zero = ZERO_TIMEOUT;
    if active() && crate::twopc::configured() && crate::twopc::serving() == 0 {
        let mut e = Entry::enter();
        // SAFETY: the caller's arguments for nr (function contract).
        if unsafe { wait_ready_as_member(e.cx(), nr, &a) } {
            // Waited for the whole timeout already: the call only reports the state now.
            match nr {
                libc::SYS_poll => a[2] = 0,
                libc::SYS_ppoll => a[2] = zero.as_mut_ptr() as usize,
                libc::SYS_select | libc::SYS_pselect6 => a[4] = zero.as_mut_ptr() as usize,
                libc::SYS_epoll_pwait2 => a[3] = zero.as_mut_ptr() as usize,
                _ => a[3] = 0,
            }
        }
    }
    // SAFETY: the caller's arguments for nr (function contract), a timeout replaced by
    // a zero one of ours (a live local the kernel may write).
    let r = unsafe { syscall6(nr, a) };
    if active() {
        let mut e = Entry::enter();
        nondeterministic(e.cx(), what, usize::MAX);
    }
    r
}

/// A readiness call (`poll`, `ppoll`, `select`, `pselect6`, the `epoll_wait` family)
/// asking for input on a stream connection or FIFO whose drained bytes are not all read
/// yet (issue 16: a round's drain moved them from the kernel into the checkpoint, where
/// the kernel cannot see them): the call is made with a zero timeout and those
/// descriptors are reported readable as well, as the kernel would have reported them had
/// the bytes stayed with it. None if the call asks for no such descriptor (it is then
/// made as it is).
///
/// # Safety
/// `a` are valid arguments for system call `nr`.
unsafe fn ready_drained(cx: &mut Ctx, nr: i64, a: &[usize; 6]) -> Option<isize> {
    // SAFETY: the caller's arguments for nr (function contract), by call.
    unsafe {
        match nr {
            libc::SYS_poll | libc::SYS_ppoll => poll_drained(cx, nr, a),
            libc::SYS_select | libc::SYS_pselect6 => select_drained(cx, nr, a),
            _ => epoll_drained(cx, nr, a),
        }
    }
}

/// A zero timeout for the call made instead (a `timespec`, or a `timeval`: 16 bytes
/// either way; the kernel may write the time left into it).
const ZERO_TIMEOUT: [u64; 2] = [0, 0];

/// [`ready_drained`] for `poll` and `ppoll`: every `pollfd` asking for `POLLIN` on such a
/// descriptor gets `POLLIN` in its `revents`.
///
/// # Safety
/// `a` are valid arguments for `poll` or `ppoll` (`nr`).
unsafe fn poll_drained(cx: &mut Ctx, nr: i64, a: &[usize; 6]) -> Option<isize> {
    let (fds, n) = (a[0] as *mut libc::pollfd, a[1]);
    if fds.is_null() || n == 0 || n > 1024 {
        return None;
    }
    // SAFETY: the program's array of n pollfds (poll's contract).
    let p = unsafe { std::slice::from_raw_parts_mut(fds, n) };
    let want =
        |cx: &mut Ctx, q: &libc::pollfd| q.events & libc::POLLIN != 0 && has_drained(cx, q.fd);
    if !p.iter().any(|q| want(cx, q)) {
        return None;
    }
    let mut zero = ZERO_TIMEOUT;
    let r = if nr == libc::SYS_ppoll {
        // SAFETY: ppoll on the program's array and signal mask, with a zero timeout of
        // ours (a live local the kernel may write).
        unsafe {
            syscall6(
                libc::SYS_ppoll,
                [a[0], n, zero.as_mut_ptr() as usize, a[3], a[4], 0],
            )
        }
    } else {
        // SAFETY: poll on the program's array, timeout 0.
        unsafe { sc(libc::SYS_poll, fds as usize, n, 0) }
    };
    if r < 0 {
        return Some(r);
    }
    let mut ready = 0;
    for q in p.iter_mut() {
        if want(cx, q) {
            q.revents |= libc::POLLIN;
        }
        if q.revents != 0 {
            ready += 1;
        }
    }
    Some(ready)
}

/// Most descriptors `select_drained` and `epoll_drained` report from drained bytes in
/// one call (more: the rest at the next call).
const DRAINED_MAX: usize = 64;

/// [`ready_drained`] for `select` and `pselect6`: each such descriptor in the read set
/// stays in it, and the result counts it.
///
/// # Safety
/// `a` are valid arguments for `select` or `pselect6` (`nr`).
unsafe fn select_drained(cx: &mut Ctx, nr: i64, a: &[usize; 6]) -> Option<isize> {
    let nfds = a[0] as c_int;
    if a[1] == 0 || !(1..=READY_MAX as c_int).contains(&nfds) {
        return None;
    }
    // The kernel reads and writes whole longs of each set.
    let words = (nfds as usize).div_ceil(64);
    let mut want = [0usize; DRAINED_MAX];
    let mut k = 0;
    {
        // SAFETY: the program's read set, nfds bits rounded up to longs (select's
        // contract), only read here.
        let set = unsafe { std::slice::from_raw_parts(a[1] as *const u64, words) };
        for fd in 0..nfds as usize {
            if k < DRAINED_MAX && set[fd / 64] >> (fd % 64) & 1 != 0 && has_drained(cx, fd as c_int)
            {
                want[k] = fd;
                k += 1;
            }
        }
    }
    if k == 0 {
        return None;
    }
    let mut zero = ZERO_TIMEOUT;
    let mut b = *a;
    b[4] = zero.as_mut_ptr() as usize;
    // SAFETY: the program's sets (and pselect6's signal mask argument) with a zero
    // timeout of ours, a live local the kernel may write.
    let r = unsafe { syscall6(nr, b) };
    if r < 0 {
        return Some(r);
    }
    // SAFETY: the program's read set again (the call has returned; nothing else holds
    // it), now written.
    let set = unsafe { std::slice::from_raw_parts_mut(a[1] as *mut u64, words) };
    for &fd in &want[..k] {
        set[fd / 64] |= 1 << (fd % 64);
    }
    let mut count = 0isize;
    for &p in &a[1..4] {
        if p != 0 {
            // SAFETY: one of the program's sets of `words` longs (select's contract).
            let s = unsafe { std::slice::from_raw_parts(p as *const u64, words) };
            count += s.iter().map(|w| w.count_ones() as isize).sum::<isize>();
        }
    }
    Some(count)
}

/// [`ready_drained`] for the `epoll_wait` family: each registration of the instance that
/// asks for `EPOLLIN` on such a descriptor is reported with `EPOLLIN` (added to the
/// kernel's event for it, or as an event of its own if there is room).
///
/// # Safety
/// `a` are valid arguments for `epoll_wait`, `epoll_pwait` or `epoll_pwait2` (`nr`).
unsafe fn epoll_drained(cx: &mut Ctx, nr: i64, a: &[usize; 6]) -> Option<isize> {
    let (epfd, events, max) = (a[0] as c_int, a[1] as *mut u8, a[2] as c_int);
    if events.is_null() || !(1..=READY_MAX as c_int).contains(&max) {
        return None;
    }
    let mut want = [0u64; DRAINED_MAX];
    let mut k = 0;
    {
        let ks = cx.ks();
        let regs = ks.entry_ref(epfd)?.epoll.as_ref()?;
        for &(t, ev, data) in regs {
            if k < DRAINED_MAX && ev & libc::EPOLLIN as u32 != 0 && ks.has_drained(t) {
                want[k] = data;
                k += 1;
            }
        }
    }
    if k == 0 {
        return None;
    }
    let mut zero = ZERO_TIMEOUT;
    let mut b = *a;
    b[3] = if nr == libc::SYS_epoll_pwait2 {
        zero.as_mut_ptr() as usize
    } else {
        0
    };
    // SAFETY: the program's instance, event array and signal mask, with a zero timeout.
    let r = unsafe { syscall6(nr, b) };
    if r < 0 {
        return Some(r);
    }
    let mut n = (r as usize).min(max as usize);
    for &data in &want[..k] {
        // SAFETY: the program's array of `max` packed 12-byte epoll_events (the call's
        // contract): the events field at offset 0, the data at 4; n <= max.
        unsafe {
            let at = (0..n).find(|&i| {
                (events.add(i * EPOLL_EVENT_LEN + 4) as *const u64).read_unaligned() == data
            });
            match at {
                Some(i) => {
                    let p = events.add(i * EPOLL_EVENT_LEN) as *mut u32;
                    p.write_unaligned(p.read_unaligned() | libc::EPOLLIN as u32);
                }
                None if n < max as usize => {
                    let p = events.add(n * EPOLL_EVENT_LEN);
                    (p as *mut u32).write_unaligned(libc::EPOLLIN as u32);
                    (p.add(4) as *mut u64).write_unaligned(data);
                    n += 1;
                }
                None => {}
            }
        }
    }
    Some(n as isize)
}

/// For a member of a computation, before a readiness call that may block (`poll`,
/// `ppoll`, `select`, `pselect6`, the `epoll_wait` family, with a timeout that is not
/// 0): waits for the same readiness (and as long as the timeout) while serving the
/// coordinator (`member::wait_ready`), so that the call itself then returns at once, and
/// a member waiting for a FIFO or stream whose writer stopped for a round's quiesce step
/// takes part in that round. Returns true if the wait timed out (the call is then made
/// with a zero timeout: it has been waited for). Calls with more descriptors than
/// [`crate::twopc::MAX_WAIT_FDS`] block unserved (a member blocked in one answers a
/// prepare when it returns).
///
/// # Safety
/// `a` are valid arguments for system call `nr`.
unsafe fn wait_ready_as_member(cx: &mut Ctx, nr: i64, a: &[usize; 6]) -> bool {
    const MAX: usize = crate::twopc::MAX_WAIT_FDS;
    // The descriptors waited for, on the stack (the wait may checkpoint).
    let mut fds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX];
    let (n, ms) = match nr {
        libc::SYS_poll | libc::SYS_ppoll => {
            let n = a[1];
            let p = a[0] as *const libc::pollfd;
            let ms = if nr == libc::SYS_poll {
                a[2] as i32
            } else {
                // SAFETY: ppoll's timeout is null or a timespec (the call's contract).
                unsafe { timeout_ms(a[2], true) }
            };
            if ms == 0 || n > MAX || (n > 0 && p.is_null()) {
                return false;
            }
            if n > 0 {
                // The program's array, copied so that the wait does not write into it.
                // SAFETY: the program's array of n pollfds (poll's contract), only read.
                fds[..n].copy_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
            }
            (n, ms)
        }
        libc::SYS_select | libc::SYS_pselect6 => {
            let nfds = a[0] as c_int;
            // SAFETY: select's timeout is null or a timeval, pselect6's a timespec.
            let ms = unsafe { timeout_ms(a[4], nr == libc::SYS_pselect6) };
            if ms == 0 || !(0..=1024).contains(&nfds) {
                return false;
            }
            let words = (nfds as usize).div_ceil(64);
            let set = |p: usize, fd: usize| {
                // SAFETY: a non-null set holds nfds bits rounded up to longs (select's
                // contract), only read.
                p != 0
                    && unsafe { std::slice::from_raw_parts(p as *const u64, words) }[fd / 64]
                        >> (fd % 64)
                        & 1
                        != 0
            };
            let mut n = 0;
            for fd in 0..nfds as usize {
                let ev = if set(a[1], fd) { libc::POLLIN } else { 0 }
                    | if set(a[2], fd) { libc::POLLOUT } else { 0 }
                    | if set(a[3], fd) { libc::POLLPRI } else { 0 };
                if ev == 0 {
                    continue;
                }
                if n == MAX {
                    return false;
                }
                fds[n] = libc::pollfd {
                    fd: fd as c_int,
                    events: ev,
                    revents: 0,
                };
                n += 1;
            }
            (n, ms)
        }
        libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => {
            let ms = if nr == libc::SYS_epoll_pwait2 {
                // SAFETY: epoll_pwait2's timeout is null or a timespec (its contract).
                unsafe { timeout_ms(a[3], true) }
            } else {
                a[3] as i32
            };
            if ms == 0 {
                return false;
            }
            // The instance is readable when one of its registrations is ready.
            fds[0] = libc::pollfd {
                fd: a[0] as i32,
                events: libc::POLLIN,
                revents: 0,
            };
            (1, ms)
        }
        _ => return false,
    };
    matches!(super::member::wait_ready(cx, &mut fds[..n], ms), Ok(0)) && ms > 0
}

/// A readiness call's timeout in milliseconds, rounded up (-1: none, wait forever):
/// `p` null, or a `timespec` (`nsec`) or `timeval`.
///
/// # Safety
/// `p` is null or points at a `timespec` (`nsec`) or a `timeval`.
unsafe fn timeout_ms(p: usize, nsec: bool) -> i32 {
    if p == 0 {
        return -1;
    }
    // SAFETY: both are two longs: seconds, then nanoseconds or microseconds.
    let (sec, frac) = unsafe { ((p as *const i64).read(), (p as *const i64).add(1).read()) };
    let frac_ms = if nsec {
        (frac + 999_999) / 1_000_000
    } else {
        (frac + 999) / 1000
    };
    sec.saturating_mul(1000)
        .saturating_add(frac_ms)
        .clamp(0, i32::MAX as i64) as i32
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
            let r = unsafe {
                sys_nd(libc::SYS_ioctl, [fd as usize, req as usize, arg, 0, 0, 0], "ioctl")
            };
            if r == 0 && arg != 0 {
                // Bytes a round drained (issue 16) are still to be read.
                let mut e = Entry::enter();
                let k = e.cx().ks().drained_mut(fd).map_or(0, |b| b.len());
                if k > 0 {
                    // SAFETY: the int FIONREAD just wrote (the caller's contract).
                    unsafe { *(arg as *mut c_int) += k as c_int };
                }
            }
            r
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_records_hold_what_the_call_wrote() {
        let eintr = -(libc::EINTR as i64);
        // select(65, read, -, except, timeout): two sets of two longs, the time left.
        let a = [65, 0x1000, 0, 0x2000, 0x3000, 0];
        let c = ReadyCall::of(libc::SYS_select, &a, 1).unwrap();
        assert_eq!(c.regions(), &[(0x1000, 16), (0x2000, 16), (0x3000, 16)]);
        assert_eq!(c.shape, 65 | 1 << 32 | 1 << 34 | 1 << 35);
        assert_eq!(c.len(), 8 + 48);
        // Interrupted: the same regions (the kernel read them all); another error: none,
        // but the same shape.
        assert_eq!(ReadyCall::of(libc::SYS_pselect6, &a, eintr).unwrap().n, 3);
        let bad = ReadyCall::of(libc::SYS_select, &a, -(libc::EBADF as i64)).unwrap();
        assert!(bad.regions().is_empty());
        assert_eq!(bad.shape, c.shape);
        assert_eq!(bad.len(), 8);
        // poll: the whole pollfd array; ppoll also its timeout.
        let c = ReadyCall::of(libc::SYS_poll, &[0x1000, 3, 0, 0, 0, 0], 0).unwrap();
        assert_eq!(
            (c.regions(), c.shape, c.pollfds),
            (&[(0x1000, 24)][..], 3, true)
        );
        let c = ReadyCall::of(libc::SYS_ppoll, &[0x1000, 3, 0x2000, 0, 8, 0], eintr).unwrap();
        assert_eq!(c.regions(), &[(0x1000, 24), (0x2000, 16)]);
        assert_eq!(c.shape, 3 | 1 << 32);
        // epoll_wait: res packed 12-byte events; the shape is maxevents.
        assert_eq!(EPOLL_EVENT_LEN, 12);
        let c = ReadyCall::of(libc::SYS_epoll_wait, &[5, 0x1000, 8, 100, 0, 0], 2).unwrap();
        assert_eq!((c.regions(), c.shape), (&[(0x1000, 24)][..], 8));
        let c = ReadyCall::of(libc::SYS_epoll_pwait, &[5, 0x1000, 8, 100, 0, 8], 0).unwrap();
        assert!(c.regions().is_empty());
        // Not logged: more events than room, a negative nfds, too many pollfds.
        assert!(ReadyCall::of(libc::SYS_epoll_wait, &[5, 0x1000, 8, 0, 0, 0], 9).is_none());
        assert!(ReadyCall::of(libc::SYS_select, &[usize::MAX, 0, 0, 0, 0, 0], 0).is_none());
        let many = [0x1000, READY_MAX + 1, 0, 0, 0, 0];
        assert!(ReadyCall::of(libc::SYS_poll, &many, 0).is_none());
        // A readiness record's tag is never a descriptor.
        for nr in [libc::SYS_poll, libc::SYS_epoll_pwait2] {
            assert!(is_readiness(nr) && READY_TAG - nr < i32::MIN as i64);
        }
        assert!(!is_readiness(libc::SYS_read));
    }
}
