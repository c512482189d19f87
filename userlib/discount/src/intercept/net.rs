//! Sockets: `socket`, `socketpair`, `bind`, `connect`, `listen`, `accept`/`accept4`,
//! `setsockopt`, `shutdown` on datagram sockets (UDP over IPv4 and IPv6, `AF_UNIX`
//! datagram) and stream sockets (TCP over IPv4 and IPv6, `AF_UNIX` stream) are performed
//! and recorded ([`crate::kstate::sock`]), and redone on recovery at the same descriptor
//! numbers (thesis 5.2.2: a bound socket is bound again to the name the kernel gave it, a
//! connected one connected to the same destination). A bind whose port (or abstract
//! name) the kernel chooses is a non-deterministic event (thesis 6.2.2: `bind` stays
//! non-deterministic under the -LOG protocols too); so is the implicit bind of an unbound
//! socket's first `sendto`/`sendmsg`/`connect`/`listen`, which is made explicit here so
//! that its port is recorded. Sends (`sendto`, `sendmsg`) are visible events; receives
//! (`recvfrom` with an address or flags, `recvmsg`) are non-deterministic, or logged
//! under the -LOG protocols with the sender's address, the control data and the flags the
//! kernel returned (a plain `recv`/`read` goes through `io` like any read).
//!
//! # Stream sockets (issue 16)
//!
//! **Inside a computation (CPV-2PC, CBNDV-2PC): a stream is internal unless its peer is
//! named outside.** Under the 2PC protocols a stream socket is taken to connect two
//! members of the computation, unless its peer is one `dc run --outside` names (or an
//! unnamed `AF_UNIX` peer of an accepted connection): [`crate::outside`] has that
//! decision and why it is explicit, and the treatment of such a connection (the outside
//! world's, below). A connection to an outside process that the list does not name is
//! taken for a member's: its recovery then fails after
//! [`RECONNECT_S`](crate::kstate::sock::RECONNECT_S) seconds with a message naming it
//! (and `--outside`). Every member rolls back to the same committed round after any
//! failure, so every connection between members is made again at recovery, and no byte
//! may be in transit at a commit:
//!
//! * **Quiesce and drain** (`intercept/member.rs`, `twopc/coord.rs`). Once some member
//!   has stream sockets (it tells the coordinator, `Streams`, before it makes its first
//!   one; after a recovery its join carries the flag) every round starts with a
//!   `Quiesce`: each member stops (it sends nothing more until the decision), reads its
//!   stream connections' readable bytes into their buffers (so that a peer blocked on a
//!   full window can finish) until its own send queues are empty (`SIOCOUTQ` 0: for TCP
//!   sent and acknowledged, for `AF_UNIX` read by the peer; after 5 s it answers anyway,
//!   with a diagnostic) and answers `Quiesced`. Only when every member has answered does
//!   the coordinator send the prepares; each member then drains once more (non-blocking
//!   reads until `EAGAIN`) into [`SockRec::inbuf`](crate::kstate::sock::SockRec), which
//!   is checkpointed memory, and takes its prepared checkpoint. Then every byte sent
//!   before the commit is in its receiver's checkpoint, every byte sent after it is sent
//!   again by the re-executed sender, and the new connections carry none of the old
//!   bytes. The program's reads (`read`, `readv`, `recv`, `recvfrom`, `recvmsg`) are
//!   served from the buffer first, and the readiness calls (`poll`, `ppoll`, `select`,
//!   `pselect6`, the `epoll_wait` family) report such a descriptor readable
//!   (`io::ready_drained`). FIFOs between members are quiesced and drained the same way
//!   (`kstate::pipe`). Without stream sockets or FIFOs rounds are as before (no quiesce
//!   step, no cost).
//! * **A stream sender** may never block in a receive: its writes to a connection serve
//!   the coordinator without waiting (a quiesce waits for it) and, when the window is
//!   full, wait for room while serving it. Writes to a connection go out with
//!   `MSG_NOSIGNAL`: a broken connection (`EPIPE`, `ECONNRESET`: usually a crashed peer)
//!   waits up to 3 s for the rollback order the coordinator sends after a failure, and
//!   only then gives the program its `SIGPIPE` and error.
//! * **Re-establishment** (`kstate/sock.rs`). A listening socket is bound again to its
//!   name and listens again at its descriptor (before the member joins). A connecting
//!   socket was bound explicitly before its connect (TCP: wildcard address, a port the
//!   kernel chooses, with `SO_REUSEADDR` so that the same port can be bound again while
//!   the crashed run's connection lingers in TIME_WAIT; `AF_UNIX`: autobind to an
//!   abstract name, a bind with only `sun_family`); recovery binds it to the same port or
//!   name before the join. After the join (when every member has rebuilt its listeners,
//!   and every old process is gone) it connects again, retrying for up to 10 s; then
//!   each accepted socket takes, from its listener, the connection whose peer address is
//!   the one recorded at the `accept`, installed at its descriptor (so no handshake byte
//!   enters the stream). Connections from other peers (connects that the program had
//!   not accepted at the checkpoint) are kept and handed to the program's next
//!   `accept` on that listener. A connection that does not come back within 10 s fails
//!   recovery with a message naming the socket and the peer.
//! * **The end of a stream**: a member that exits shuts its connections down for writing
//!   before its last commit, so its peers' drains in that round read the end
//!   ([`SockRec::eof`](crate::kstate::sock::SockRec)) and their recoveries do not wait for
//!   a member that has left; an ended connection comes back as one that reads the
//!   buffered bytes, then the end.
//!
//! **Single-process protocols (and a connection under them to anything), and under the
//! 2PC protocols a connection to a peer outside the computation: a stream is a
//! connection to the outside world** (thesis 2.2.5 and 6.2.2: output to it is a visible
//! event, input from it non-deterministic). Sends are visible events (under CPV-2PC a
//! distributed commit before each, under CBNDV-2PC one if a non-deterministic event came
//! since the last commit; traced `V`, not `M`), receives non-deterministic (or logged
//! under the -LOG protocols, like datagrams; not traced as messages); a round's quiesce
//! step neither waits for an outside connection's send queue nor drains it; a send that
//! finds the window full waits serving the coordinator; a broken one is not waited on
//! for a rollback. Listeners come back listening on their names, but after a recovery
//! (or a rollback) a connection is gone: its descriptor reads `ECONNRESET` (then the end
//! of the stream) and writes fail with `EPIPE` (and `SIGPIPE`), as when a peer resets a
//! connection; a real program reconnects. (Its descriptor is then an `AF_UNIX` stream
//! socket whose peer is closed.) A datagram to an outside peer (a connected socket's, or
//! a `sendto`/`sendmsg` naming one) is a visible event under the 2PC protocols too.
//!
//! Refused with a message (`ENOSYS`): `SOCK_SEQPACKET`, stream `socketpair`s, other
//! families and types, `listen`/`accept` on sockets Discount Checking did not see made,
//! options Discount Checking does not redo, and the calls that change a socket it did not
//! see made. Descriptors passed over a socket (`SCM_RIGHTS`) are not taken: they are
//! closed and the message is marked `MSG_CTRUNC`, as when there is no room for them.
//! FIFOs and the process's own pipes are recovered too: `kstate::pipe` has their design.

use std::sync::atomic::{AtomicBool, Ordering};

use libc::{c_int, c_void, size_t, sockaddr, socklen_t, ssize_t};

use super::io::{consume, diverge, log_record, next_record, READY_TAG};
use super::trap::refuse_named;
use super::{
    active, logged, nondeterministic, raw_ret, undo, visible_event, wait_as_member, Entry,
};
use crate::ckpt::Ctx;
use crate::kstate::sock::{self, SockRec, ADDR_MAX, OPT_MAX, SHUT_RD_BIT, SHUT_WR_BIT};
use crate::kstate::{self, FdEntry, UndoRec, R_CREATE};
use crate::protocol;
use crate::sys::{check, libc_ret, sc, sc4, syscall6};

// ---------------------------------------------------------------------------------------
// The input log, for receives.
//
// The log is `io`'s (see there for its format and rules): 8-byte aligned records
// `(tag, res, len, data)`. A receive's tag is `READY_TAG - nr` (`nr`: `SYS_recvfrom` or
// `SYS_recvmsg`), in the same space as `io`'s readiness records and never a descriptor.
// Its data: a shape word (the descriptor, bits 32-63 the flags), a word with the name
// length the kernel returned and (bits 32-63) the bytes of it kept, a word with the
// returned `msg_flags` and (bits 32-63) the control length, the payload length; then the
// name, the control data and the payload.

const RECV_HDR: usize = 32;

// ---------------------------------------------------------------------------------------
// Receives

/// Where a receive puts what it returns, in the program's memory (null pointers: not
/// asked for).
struct Recv<'a> {
    /// The sender's name and its capacity.
    name: *mut u8,
    name_cap: usize,
    /// Where the kernel writes the name's length.
    name_len: *mut socklen_t,
    /// The payload's buffers.
    iov: &'a [libc::iovec],
    /// Control data, its capacity, where its length goes (`recvmsg`).
    ctl: *mut u8,
    ctl_cap: usize,
    ctl_len: *mut size_t,
    /// Where `msg_flags` goes (`recvmsg`).
    flags_out: *mut c_int,
}

impl Recv<'_> {
    fn room(&self) -> usize {
        self.iov.iter().map(|v| v.iov_len).sum()
    }
}

fn shape(fd: c_int, flags: c_int) -> u64 {
    u64::from(fd as u32) | u64::from(flags as u32) << 32
}

/// The next logged result of this receive, if re-executing through the log and the
/// record there is of the same call on the same descriptor with the same flags and fits
/// the program's buffers: copied into them.
///
/// # Safety
/// `rv`'s pointers are null or valid for their capacities (the call's contract).
unsafe fn replay_recv(cx: &mut Ctx, nr: i64, fd: c_int, flags: c_int, rv: &Recv) -> Option<isize> {
    let rec = next_record(cx)?;
    let (data, len) = (rec.data, rec.len);
    if rec.tag != READY_TAG - nr || len < RECV_HDR {
        diverge(cx);
        return None;
    }
    // SAFETY: the record's first four words (its length is at least RECV_HDR), inside
    // the area.
    let w = |i: usize| unsafe { (data.add(8 * i) as *const u64).read_unaligned() };
    let (name_ret, name_kept) = ((w(1) & 0xffff_ffff) as usize, (w(1) >> 32) as usize);
    let (msg_flags, ctl_len) = ((w(2) & 0xffff_ffff) as c_int, (w(2) >> 32) as usize);
    let pay = w(3) as usize;
    let fits = w(0) == shape(fd, flags)
        && RECV_HDR + name_kept + ctl_len + pay == len
        && name_kept <= if rv.name.is_null() { 0 } else { rv.name_cap }
        && ctl_len <= if rv.ctl.is_null() { 0 } else { rv.ctl_cap }
        && pay <= rv.room();
    if !fits {
        diverge(cx);
        return None;
    }
    // SAFETY: the copies stay inside the record (its length was checked) and inside the
    // program's buffers (their capacities were checked); the output words are the
    // program's (null when not asked for).
    unsafe {
        let mut at = data.add(RECV_HDR);
        if name_kept > 0 {
            std::ptr::copy_nonoverlapping(at, rv.name, name_kept);
        }
        at = at.add(name_kept);
        if !rv.name_len.is_null() {
            *rv.name_len = name_ret as socklen_t;
        }
        if ctl_len > 0 {
            std::ptr::copy_nonoverlapping(at, rv.ctl, ctl_len);
        }
        at = at.add(ctl_len);
        if !rv.ctl_len.is_null() {
            *rv.ctl_len = ctl_len;
        }
        if !rv.flags_out.is_null() {
            *rv.flags_out = msg_flags;
        }
        let mut left = pay;
        for v in rv.iov {
            let k = left.min(v.iov_len);
            if k > 0 {
                std::ptr::copy_nonoverlapping(at, v.iov_base as *mut u8, k);
            }
            at = at.add(k);
            left -= k;
        }
    }
    consume(cx, &rec);
    Some(rec.res as isize)
}

/// Logs what a receive that returned `res` wrote.
///
/// # Safety
/// `rv`'s pointers are null or valid for their capacities; the call just returned.
unsafe fn log_recv(cx: &mut Ctx, nr: i64, fd: c_int, flags: c_int, res: isize, rv: &Recv) -> bool {
    let ok = res >= 0;
    // SAFETY: output words the kernel just wrote (null when not asked for).
    let (name_ret, ctl_len, msg_flags) = unsafe {
        (
            if ok && !rv.name_len.is_null() && !rv.name.is_null() {
                *rv.name_len as usize
            } else {
                0
            },
            if ok && !rv.ctl_len.is_null() && !rv.ctl.is_null() {
                (*rv.ctl_len).min(rv.ctl_cap)
            } else {
                0
            },
            if ok && !rv.flags_out.is_null() {
                *rv.flags_out
            } else {
                0
            },
        )
    };
    let name_kept = name_ret.min(rv.name_cap);
    let pay = if ok { (res as usize).min(rv.room()) } else { 0 };
    let hdr: [u64; 4] = [
        shape(fd, flags),
        name_ret as u64 | (name_kept as u64) << 32,
        u64::from(msg_flags as u32) | (ctl_len as u64) << 32,
        pay as u64,
    ];
    // SAFETY: a live local array of plain words.
    let hdr_bytes = unsafe { std::slice::from_raw_parts(hdr.as_ptr() as *const u8, RECV_HDR) };
    let mut parts: Vec<&[u8]> = Vec::with_capacity(3 + rv.iov.len());
    parts.push(hdr_bytes);
    // SAFETY: the regions the kernel just wrote, inside the program's buffers.
    unsafe {
        if name_kept > 0 {
            parts.push(std::slice::from_raw_parts(rv.name, name_kept));
        }
        if ctl_len > 0 {
            parts.push(std::slice::from_raw_parts(rv.ctl, ctl_len));
        }
        let mut left = pay;
        for v in rv.iov {
            let k = left.min(v.iov_len);
            if k > 0 {
                parts.push(std::slice::from_raw_parts(v.iov_base as *const u8, k));
            }
            left -= k;
        }
    }
    log_record(cx, READY_TAG - nr, res, &parts)
}

/// A receive: replayed from the input log in a re-execution under a -LOG protocol, else
/// performed (`raw`) and logged (an `L` event) or, under the other protocols or when it
/// does not fit in the log, a non-deterministic event.
///
/// # Safety
/// `rv` describes the program's buffers of this call (the call's contract).
unsafe fn receive(
    e: &mut Entry,
    nr: i64,
    fd: c_int,
    flags: c_int,
    rv: &Recv,
    raw: impl FnOnce() -> isize,
    what: &str,
) -> isize {
    let logs = protocol::current().logs_input();
    if logs {
        // SAFETY: the caller's buffers (function contract).
        if let Some(r) = unsafe { replay_recv(e.cx(), nr, fd, flags, rv) } {
            traced(r, rv);
            logged(what);
            return r;
        }
    }
    if flags & libc::MSG_DONTWAIT == 0 {
        // A member of a computation serves its coordinator while it waits.
        wait_as_member(e.cx(), fd, libc::POLLIN, -1);
    }
    if let Some(v) = rv
        .iov
        .iter()
        .find(|v| v.iov_len > 0 && flags & libc::MSG_PEEK == 0)
    {
        // A stream connection's drained bytes come first (issue 16; into the first
        // buffer, a short receive).
        // SAFETY: the program's buffer, writable for iov_len bytes.
        let k = unsafe { super::io::from_drained(e.cx(), fd, v.iov_base as *mut u8, v.iov_len) };
        if let Some(k) = k {
            traced(k as isize, rv);
            nondeterministic(e.cx(), what, usize::MAX);
            return k as isize;
        }
    }
    let r = raw();
    if !super::outside_fd(e.cx(), fd) {
        // (Input from outside the computation is no message of it.)
        traced(r, rv);
    }
    // SAFETY: as above; the call has returned.
    if logs && unsafe { log_recv(e.cx(), nr, fd, flags, r, rv) } {
        logged(what);
    } else {
        nondeterministic(e.cx(), what, usize::MAX);
    }
    r
}

/// The message a receive returned (`r` bytes in `rv`'s buffers), for the oracle's trace.
fn traced(r: isize, rv: &Recv) {
    if r >= 0 && crate::trace::on() {
        // SAFETY: the call wrote r bytes (at most the buffers' room) into the program's
        // buffers, which `rv.iov` describes.
        unsafe { crate::trace::message_received_iov(rv.iov, (r as usize).min(rv.room())) };
    }
}

/// `recvfrom(2)`: on a recorded socket with an address or flags, a receive logged with
/// its sender (`receive`); otherwise `io`'s (a plain `recv` is a read).
///
/// # Safety
/// `buf` is writable for `n` bytes; `addr` null or writable for `*alen` bytes.
pub(super) unsafe fn sys_recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: usize,
    alen: usize,
) -> isize {
    // SAFETY: recvfrom's contract, forwarded.
    let io_path = || unsafe { super::io::sys_recvfrom(fd, buf, n, flags, addr, alen) };
    if !active() || (flags == 0 && addr == 0) || (addr != 0 && alen == 0) {
        return io_path();
    }
    let mut e = Entry::enter();
    if e.cx().ks().sock(fd).is_none() {
        drop(e);
        return io_path();
    }
    let iov = [libc::iovec {
        iov_base: buf,
        iov_len: n,
    }];
    let rv = Recv {
        name: addr as *mut u8,
        name_cap: if addr != 0 {
            // SAFETY: a non-null address comes with its length, a readable socklen_t
            // (recvfrom's contract; alen is not null, checked above).
            unsafe { *(alen as *const socklen_t) as usize }
        } else {
            0
        },
        name_len: if addr != 0 {
            alen as *mut socklen_t
        } else {
            std::ptr::null_mut()
        },
        iov: &iov,
        ctl: std::ptr::null_mut(),
        ctl_cap: 0,
        ctl_len: std::ptr::null_mut(),
        flags_out: std::ptr::null_mut(),
    };
    // SAFETY: recvfrom into the program's buffer with its address arguments.
    let raw = || unsafe {
        syscall6(
            libc::SYS_recvfrom,
            [fd as usize, buf as usize, n, flags as usize, addr, alen],
        )
    };
    // SAFETY: rv describes this call's buffers.
    unsafe { receive(&mut e, libc::SYS_recvfrom, fd, flags, &rv, raw, "recvfrom") }
}

/// Descriptors passed in `msg`'s control data (`SCM_RIGHTS`) would be kernel state
/// nobody records: they are closed, and the message marked `MSG_CTRUNC` with no control
/// data (what the kernel does when there is no room for them).
///
/// # Safety
/// `msg` is the `msghdr` a `recvmsg` just filled.
unsafe fn drop_passed_fds(msg: *mut libc::msghdr) {
    let mut found = false;
    // SAFETY: walking the control data the kernel just wrote, with libc's macros, inside
    // msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                found = true;
                let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                let fds = libc::CMSG_DATA(c) as *const c_int;
                for i in 0..n {
                    sc(libc::SYS_close, fds.add(i).read_unaligned() as usize, 0, 0);
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
        if found {
            (*msg).msg_controllen = 0;
            (*msg).msg_flags |= libc::MSG_CTRUNC;
        }
    }
    if found {
        let _ = refuse_named(
            "recvmsg receiving descriptors (SCM_RIGHTS; closed, message marked MSG_CTRUNC)",
            libc::SYS_recvmsg,
        );
    }
}

/// `recvmsg(2)`: a receive (`receive`), with the sender's name, the control data and
/// `msg_flags` logged under the -LOG protocols.
///
/// # Safety
/// `msg` is a valid `msghdr` (the call's contract).
pub(super) unsafe fn sys_recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> isize {
    // SAFETY: recvmsg with the program's msghdr.
    let raw = move || unsafe {
        let r = syscall6(
            libc::SYS_recvmsg,
            [fd as usize, msg as usize, flags as usize, 0, 0, 0],
        );
        if r >= 0 && !(*msg).msg_control.is_null() && (*msg).msg_controllen > 0 {
            drop_passed_fds(msg);
        }
        r
    };
    if !active() || msg.is_null() {
        return raw();
    }
    // SAFETY: a valid msghdr (the call's contract): its iovec array has msg_iovlen
    // entries; the raw pointers below are its fields.
    let rv = unsafe {
        let m = &mut *msg;
        let iov: &[libc::iovec] = if m.msg_iov.is_null() || m.msg_iovlen == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen)
        };
        let named = !m.msg_name.is_null();
        Recv {
            name: m.msg_name as *mut u8,
            name_cap: if named { m.msg_namelen as usize } else { 0 },
            name_len: if named {
                &mut m.msg_namelen
            } else {
                std::ptr::null_mut()
            },
            iov,
            ctl: m.msg_control as *mut u8,
            ctl_cap: m.msg_controllen,
            ctl_len: &mut m.msg_controllen,
            flags_out: &mut m.msg_flags,
        }
    };
    let mut e = Entry::enter();
    // SAFETY: rv describes this call's buffers.
    unsafe { receive(&mut e, libc::SYS_recvmsg, fd, flags, &rv, raw, "recvmsg") }
}

// ---------------------------------------------------------------------------------------
// Sends

/// Before a send or connect on a recorded UDP socket that is not bound yet: the implicit
/// bind the kernel would make (wildcard address, a port it chooses) is made explicitly
/// and recorded, so that recovery binds the same port; the choice is a non-deterministic
/// event (the protocol sees it before the visible send).
fn autobind(cx: &mut Ctx, fd: c_int) {
    let Some(s) = cx.ks().sock(fd) else {
        return;
    };
    let stream = s.stream();
    let any: &[u8] = match s.domain {
        _ if s.bound.is_some() || s.listen >= 0 => return,
        libc::AF_INET => &[0u8; 16],
        libc::AF_INET6 => &[0u8; 28],
        // A stream's connecting end gets an abstract name (autobind: only sun_family), so
        // that the listener's recovery can tell its connection by the peer's name.
        libc::AF_UNIX if stream => &[0u8; 2],
        _ => return,
    };
    let mut a = any.to_vec();
    a[..2].copy_from_slice(&(s.domain as u16).to_ne_bytes());
    if stream && s.domain != libc::AF_UNIX {
        // Recovery binds this port again while the crashed run's connection on it may
        // linger in TIME_WAIT; the same option now lets that bind through.
        sock::reuse_addr(fd);
    }
    // SAFETY: bind reads a.len() bytes of socket address from the live vector.
    let r = unsafe { sc(libc::SYS_bind, fd as usize, a.as_ptr() as usize, a.len()) };
    if r != 0 {
        return; // the send makes the kernel's own choice, or fails
    }
    let name = sock::sock_name(fd, false).unwrap_or(a);
    if let Some(s) = cx.ks().sock_mut(fd) {
        s.bound = Some(name);
        s.chosen = true;
    }
    nondeterministic(cx, "bind", usize::MAX);
}

/// `sendto(2)`: a visible event (`io`'s), after the implicit bind of an unbound UDP
/// socket (`autobind`).
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
    if active() && addr != 0 {
        let mut e = Entry::enter();
        autobind(e.cx(), fd);
    }
    // SAFETY: sendto's contract, forwarded.
    unsafe { super::io::sys_sendto(fd, buf, n, flags, addr, alen) }
}

/// `sendmsg(2)`: a visible event (the bytes of all its buffers), after the implicit bind
/// of an unbound UDP socket (`autobind`).
///
/// # Safety
/// `msg` is a valid `msghdr` (the call's contract).
pub(super) unsafe fn sys_sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    // SAFETY: sendmsg with the program's msghdr.
    let raw = || unsafe {
        syscall6(
            libc::SYS_sendmsg,
            [fd as usize, msg as usize, flags as usize, 0, 0, 0],
        )
    };
    if !active() || msg.is_null() {
        return raw();
    }
    let mut e = Entry::enter();
    let mut dest = None;
    // SAFETY: a valid msghdr whose iovec array has msg_iovlen readable buffers, and whose
    // name, when not null, is readable for msg_namelen bytes.
    let data = unsafe {
        let m = &*msg;
        if !m.msg_name.is_null() {
            autobind(e.cx(), fd);
            dest = addr_bytes(m.msg_name as *const sockaddr, m.msg_namelen);
        }
        let mut all = Vec::new();
        if !m.msg_iov.is_null() {
            for v in std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen) {
                all.extend_from_slice(std::slice::from_raw_parts(
                    v.iov_base as *const u8,
                    v.iov_len,
                ));
            }
        }
        all
    };
    visible_event(&mut e, fd, dest.as_deref(), &data, raw)
}

/// Whether `peer` (a `connect`'s address, a datagram's destination, or with `accepted`
/// the peer of an accepted connection) is outside the computation ([`crate::outside`]):
/// it matches `dc run --outside`, or, accepted, is an unnamed `AF_UNIX` peer (every
/// member's connecting socket is bound first, `autobind`). Never under the negative
/// control `DC_TEST_OUTSIDE_INTERNAL=1`.
pub(super) fn outside_peer(cx: &mut Ctx, peer: &[u8], accepted: bool) -> bool {
    let Some((rt, ks)) = cx.both() else {
        return false;
    };
    if rt.cfg.test_outside_internal {
        return false;
    }
    let stream_unnamed = accepted && crate::outside::unnamed_unix(peer);
    stream_unnamed || rt.cfg.outside.iter().any(|o| o.matches(peer, &ks.cwd))
}

// ---------------------------------------------------------------------------------------
// Making, binding, connecting and setting up sockets

/// `socket`'s refusals, each reported once (the trap's report is once per system call:
/// glibc's refused netlink socket would hide the stream socket's message).
static REFUSED_STREAM: AtomicBool = AtomicBool::new(false);
static REFUSED_OTHER: AtomicBool = AtomicBool::new(false);

fn refuse_socket(once: &AtomicBool, what: &str) -> isize {
    if once.swap(true, Ordering::Relaxed) {
        return -(libc::ENOSYS as isize);
    }
    let mut w = crate::sys::StackWriter::new();
    let _ = std::fmt::Write::write_fmt(
        &mut w,
        format_args!(
            "system call {what} ({}) is not supported under Discount Checking (its effect \
             would not be recovered): refused with {} ({})",
            libc::SYS_socket,
            crate::sys::errno_name(libc::ENOSYS),
            libc::ENOSYS
        ),
    );
    crate::diag::diag(w.as_str());
    -(libc::ENOSYS as isize)
}

/// `socket(2)`: a datagram socket is made and recorded; anything else is refused.
pub(super) fn sys_socket(domain: c_int, ty: c_int, proto: c_int) -> isize {
    // SAFETY: socket takes numbers only.
    let raw = || unsafe {
        sc(
            libc::SYS_socket,
            domain as usize,
            ty as usize,
            proto as usize,
        )
    };
    if !active() {
        return raw();
    }
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let proto_ok = match (domain, base) {
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM) => {
            proto == 0 || proto == libc::IPPROTO_UDP
        }
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM) => {
            proto == 0 || proto == libc::IPPROTO_TCP
        }
        (libc::AF_UNIX, _) => proto == 0,
        _ => false,
    };
    if base == libc::SOCK_SEQPACKET {
        return refuse_socket(
            &REFUSED_STREAM,
            "socket of type SOCK_SEQPACKET (only datagram and SOCK_STREAM sockets are \
             recovered)",
        );
    }
    if (base != libc::SOCK_DGRAM && base != libc::SOCK_STREAM) || !proto_ok {
        return refuse_socket(
            &REFUSED_OTHER,
            "socket of a family, type or protocol that is not recovered (only AF_INET, \
             AF_INET6 and AF_UNIX datagram and stream sockets are)",
        );
    }
    if base == libc::SOCK_STREAM {
        // A member of a computation tells its coordinator first, so that every later
        // round quiesces (issue 16).
        let mut e = Entry::enter();
        super::member::announce_streams(e.cx());
    }
    let r = raw();
    if let Ok(fd) = check(r) {
        let mut e = Entry::enter();
        let ks = e.cx().ks();
        let ofd = ks.new_ofd();
        ks.add_sock(
            fd as c_int,
            SockRec::new(ofd, domain, base, proto),
            type_flags(ty),
        );
    }
    r
}

/// The descriptor flags in a socket type.
fn type_flags(ty: c_int) -> c_int {
    let mut f = 0;
    if ty & libc::SOCK_NONBLOCK != 0 {
        f |= libc::O_NONBLOCK;
    }
    if ty & libc::SOCK_CLOEXEC != 0 {
        f |= libc::O_CLOEXEC;
    }
    f
}

/// `socketpair(2)`: an `AF_UNIX` datagram pair is made and recorded (made again as a
/// pair on recovery); anything else is refused.
///
/// # Safety
/// `sv` is writable for two descriptors.
pub(super) unsafe fn sys_socketpair(
    domain: c_int,
    ty: c_int,
    proto: c_int,
    sv: *mut c_int,
) -> isize {
    // SAFETY: socketpair writes two descriptors into the program's array.
    let raw = || unsafe {
        syscall6(
            libc::SYS_socketpair,
            [
                domain as usize,
                ty as usize,
                proto as usize,
                sv as usize,
                0,
                0,
            ],
        )
    };
    if !active() {
        return raw();
    }
    let base = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    if domain != libc::AF_UNIX || base != libc::SOCK_DGRAM || proto != 0 {
        return refuse_named(
            "socketpair other than AF_UNIX SOCK_DGRAM (stream pairs are not recovered)",
            libc::SYS_socketpair,
        );
    }
    let r = raw();
    if r == 0 {
        // SAFETY: the call succeeded: it wrote two descriptors at sv.
        let (a, b) = unsafe { (*sv, *sv.add(1)) };
        let mut e = Entry::enter();
        let ks = e.cx().ks();
        let (oa, ob) = (ks.new_ofd(), ks.new_ofd());
        let mut ra = SockRec::new(oa, domain, base, proto);
        let mut rb = SockRec::new(ob, domain, base, proto);
        ra.pair = ob;
        rb.pair = oa;
        ks.add_sock(a, ra, type_flags(ty));
        ks.add_sock(b, rb, type_flags(ty));
    }
    r
}

/// The socket address the program passed (None for a null pointer or one longer than a
/// `sockaddr_storage`, which the kernel refuses).
///
/// # Safety
/// `addr` is null or readable for `len` bytes.
unsafe fn addr_bytes(addr: *const sockaddr, len: socklen_t) -> Option<Vec<u8>> {
    if addr.is_null() || len as usize > ADDR_MAX {
        return None;
    }
    // SAFETY: readable for len bytes (function contract).
    Some(unsafe { std::slice::from_raw_parts(addr as *const u8, len as usize) }.to_vec())
}

/// Whether `a` is an `AF_UNIX` path relative to the working directory.
fn relative_unix(a: &[u8]) -> bool {
    sock::unix_path(a).is_some_and(|p| p.first() != Some(&b'/'))
}

/// `bind(2)` on a recorded socket: performed and recorded with the name the kernel gave
/// it (for port 0, the port it chose: a non-deterministic event). Binding an `AF_UNIX`
/// path makes a socket file, logged like a created file (a rollback removes it).
///
/// # Safety
/// `addr` is null or readable for `len` bytes.
pub(super) unsafe fn sys_bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> isize {
    // SAFETY: bind reads the caller's address.
    let raw = || unsafe { sc(libc::SYS_bind, fd as usize, addr as usize, len as usize) };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let cx = e.cx();
    if cx.ks().sock(fd).is_none() {
        return refuse_named(
            "bind on a socket Discount Checking did not see made",
            libc::SYS_bind,
        );
    }
    // SAFETY: the caller's address (function contract).
    let Some(a) = (unsafe { addr_bytes(addr, len) }) else {
        return raw();
    };
    let cwd = cx.ks().cwd.clone();
    if let Some(p) = sock::unix_path(&a) {
        let abs = kstate::absolutize(&cwd, libc::AT_FDCWD, p);
        if kstate::stat_path(&abs).is_none() {
            let rec = UndoRec {
                kind: R_CREATE,
                path: abs,
                path2: Vec::new(),
                offset: 0,
                old_size: 0,
                data: Vec::new(),
            };
            if let Err(er) = undo(cx, &rec) {
                return -(er as isize);
            }
        }
    }
    let r = raw();
    if r == 0 {
        let chosen = match sock::family(&a) {
            libc::AF_INET | libc::AF_INET6 => sock::port(&a) == Some(0),
            libc::AF_UNIX => a.len() == 2, // autobind: an abstract name the kernel picks
            _ => false,
        };
        let name = sock::sock_name(fd, false).unwrap_or_else(|_| a.clone());
        let dir = if relative_unix(&a) { cwd } else { Vec::new() };
        if let Some(s) = cx.ks().sock_mut(fd) {
            s.bound = Some(name);
            s.chosen = chosen;
            s.bind_dir = dir;
        }
        if chosen {
            nondeterministic(cx, "bind", usize::MAX);
        }
    }
    r
}

/// `connect(2)` on a recorded socket: the peer is recorded (an `AF_UNSPEC` address
/// dissolves the association); an unbound UDP or stream socket is bound first
/// (`autobind`: a stream's local port or abstract name is what its peer's recovery
/// matches).
///
/// # Safety
/// `addr` is null or readable for `len` bytes.
pub(super) unsafe fn sys_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> isize {
    // SAFETY: connect reads the caller's address.
    let raw = || unsafe { sc(libc::SYS_connect, fd as usize, addr as usize, len as usize) };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let cx = e.cx();
    if cx.ks().sock(fd).is_none() {
        return refuse_named(
            "connect on a socket Discount Checking did not see made",
            libc::SYS_connect,
        );
    }
    // SAFETY: the caller's address (function contract).
    let Some(a) = (unsafe { addr_bytes(addr, len) }) else {
        return raw();
    };
    if sock::family(&a) == libc::AF_UNSPEC {
        let r = raw();
        if r == 0 {
            // The kernel may have released a port it chose (and the address it filled in).
            let now = sock::sock_name(fd, false).ok();
            if let Some(s) = cx.ks().sock_mut(fd) {
                s.peer = None;
                s.peer_dir.clear();
                s.outside = false;
                if s.chosen {
                    s.bound = now.filter(|n| sock::port(n) != Some(0));
                }
            }
        }
        return r;
    }
    autobind(cx, fd);
    let r = raw();
    if r == 0 || r == -(libc::EINPROGRESS as isize) {
        let dir = if relative_unix(&a) {
            cx.ks().cwd.clone()
        } else {
            Vec::new()
        };
        let outside = outside_peer(cx, &a, false);
        if let Some(s) = cx.ks().sock_mut(fd) {
            s.peer = Some(a);
            s.peer_dir = dir;
            s.outside = outside;
        }
    }
    r
}

/// `listen(2)` on a recorded stream socket: performed and recorded (the backlog); an
/// unbound socket is bound first, as the kernel would (a port or abstract name it
/// chooses, recorded so that recovery listens there again).
pub(super) fn sys_listen(fd: c_int, backlog: c_int) -> isize {
    // SAFETY: listen takes numbers only.
    let raw = || unsafe { sc(libc::SYS_listen, fd as usize, backlog as usize, 0) };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let cx = e.cx();
    if !cx.ks().sock(fd).is_some_and(|s| s.stream()) {
        return refuse_named(
            "listen on a socket Discount Checking did not see made as a stream socket",
            libc::SYS_listen,
        );
    }
    autobind(cx, fd);
    let r = raw();
    if r == 0 {
        if let Some(s) = cx.ks().sock_mut(fd) {
            s.listen = backlog.max(0);
        }
    }
    r
}

/// `accept(2)`/`accept4(2)` on a recorded listener: the connection is recorded with its
/// peer (recovery installs the peer's new connection at the same descriptor); which peer
/// comes is a non-deterministic event. A connection recovery accepted and kept for the
/// program (`kstate::sock::take_pending`) comes first. A peer outside the computation
/// ([`outside_peer`]) makes the connection the outside world's (thesis 6.2.2: only the
/// computation's processes commit and roll back together).
///
/// # Safety
/// `addr` is null or writable for `*alen` bytes.
pub(super) unsafe fn sys_accept4(fd: c_int, addr: usize, alen: usize, flags: c_int) -> isize {
    // SAFETY: accept4 writes the peer's address into the caller's buffer.
    let raw = || unsafe { sc4(libc::SYS_accept4, fd as usize, addr, alen, flags as usize) };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let Some(l) = e.cx().ks().sock(fd).filter(|s| s.listen >= 0) else {
        return refuse_named(
            "accept on a socket Discount Checking did not see listen",
            libc::SYS_accept4,
        );
    };
    let (domain, proto, lofd) = (l.domain, l.proto, l.ofd);
    let r = match sock::take_pending(fd, None) {
        Some(n) => {
            let n = crate::sys::move_to_lowest(n, flags & libc::SOCK_CLOEXEC != 0);
            if flags & libc::SOCK_NONBLOCK != 0 {
                // SAFETY: F_SETFL takes numbers only.
                unsafe {
                    sc(
                        libc::SYS_fcntl,
                        n as usize,
                        libc::F_SETFL as usize,
                        libc::O_NONBLOCK as usize,
                    )
                };
            }
            if addr != 0 && alen != 0 {
                if let Ok(p) = sock::sock_name(n, true) {
                    // SAFETY: the caller's buffer holds *alen bytes (accept's contract).
                    unsafe {
                        let cap = *(alen as *const socklen_t) as usize;
                        std::ptr::copy_nonoverlapping(
                            p.as_ptr(),
                            addr as *mut u8,
                            cap.min(p.len()),
                        );
                        *(alen as *mut socklen_t) = p.len() as socklen_t;
                    }
                }
            }
            n as isize
        }
        None => {
            wait_as_member(e.cx(), fd, libc::POLLIN, -1);
            raw()
        }
    };
    if let Ok(n) = check(r) {
        let n = n as c_int;
        let cx = e.cx();
        let ofd = cx.ks().new_ofd();
        let mut rec = SockRec::new(ofd, domain, libc::SOCK_STREAM, proto);
        rec.bound = sock::sock_name(n, false).ok();
        rec.peer = sock::sock_name(n, true).ok();
        rec.accepted_by = lofd;
        rec.outside = rec
            .peer
            .as_deref()
            .is_some_and(|p| outside_peer(cx, p, true));
        cx.ks().add_sock(n, rec, type_flags(flags));
        nondeterministic(cx, "accept", usize::MAX);
    }
    r
}

/// `setsockopt(2)` on a recorded socket: one of the options [`sock::opt_recorded`] lists
/// is performed and recorded; others are refused.
///
/// # Safety
/// `val` is null or readable for `len` bytes.
pub(super) unsafe fn sys_setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> isize {
    // SAFETY: setsockopt reads the caller's value.
    let raw = || unsafe {
        syscall6(
            libc::SYS_setsockopt,
            [
                fd as usize,
                level as usize,
                name as usize,
                val as usize,
                len as usize,
                0,
            ],
        )
    };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let ks = e.cx().ks();
    if ks.sock(fd).is_none() {
        return refuse_named(
            "setsockopt on a socket Discount Checking did not see made",
            libc::SYS_setsockopt,
        );
    }
    if !sock::opt_recorded(level, name) || len as usize > OPT_MAX {
        return refuse_named(
            "setsockopt with an option Discount Checking does not redo on recovery",
            libc::SYS_setsockopt,
        );
    }
    let r = raw();
    if r == 0 && !val.is_null() {
        // SAFETY: the call succeeded, so val was readable for len bytes.
        let v = unsafe { std::slice::from_raw_parts(val as *const u8, len as usize) };
        if let Some(s) = ks.sock_mut(fd) {
            s.set_opt(level, name, v);
        }
    }
    r
}

/// `shutdown(2)` on a recorded socket: recorded (also when an unconnected datagram
/// socket answers `ENOTCONN`, as it is shut down all the same).
pub(super) fn sys_shutdown(fd: c_int, how: c_int) -> isize {
    // SAFETY: shutdown takes numbers only.
    let raw = || unsafe { sc(libc::SYS_shutdown, fd as usize, how as usize, 0) };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let ks = e.cx().ks();
    if ks.sock(fd).is_none() {
        return refuse_named(
            "shutdown of a socket Discount Checking did not see made",
            libc::SYS_shutdown,
        );
    }
    let r = raw();
    if r == 0 || r == -(libc::ENOTCONN as isize) {
        let bits = match how {
            libc::SHUT_RD => SHUT_RD_BIT,
            libc::SHUT_WR => SHUT_WR_BIT,
            libc::SHUT_RDWR => SHUT_RD_BIT | SHUT_WR_BIT,
            _ => 0,
        };
        if let Some(s) = ks.sock_mut(fd) {
            s.shut |= bits;
        }
    }
    r
}

/// `ioctl(FIONBIO)` (how Rust's std sets a socket non-blocking): recorded like
/// `fcntl(F_SETFL)`, on every descriptor of the open file description.
///
/// # Safety
/// `arg` points at an `int`.
pub(super) unsafe fn sys_fionbio(fd: c_int, arg: usize) -> isize {
    // SAFETY: FIONBIO reads one int at arg (the caller's contract).
    let r = unsafe { sc(libc::SYS_ioctl, fd as usize, libc::FIONBIO as usize, arg) };
    if !active() || r != 0 {
        return r;
    }
    // SAFETY: F_GETFL takes numbers only.
    let Ok(fl) = check(unsafe { sc(libc::SYS_fcntl, fd as usize, libc::F_GETFL as usize, 0) })
    else {
        return r;
    };
    let nb = fl as c_int & libc::O_NONBLOCK;
    let mut e = Entry::enter();
    let ks = e.cx().ks();
    if ks.entry_ref(fd).is_none() {
        ks.set_entry(fd, Some(FdEntry::inherited(false)));
    }
    let ofd = ks.entry_ref(fd).map_or(0, |en| en.ofd);
    for (i, en) in ks.fds.iter_mut().enumerate() {
        let Some(en) = en else { continue };
        if i as c_int == fd || (ofd != 0 && en.ofd == ofd) {
            en.flags = (en.flags & !libc::O_NONBLOCK) | nb;
            en.setfl = true;
        }
    }
    r
}

#[cfg(feature = "global")]
mod exported {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
        libc_ret(sys_socket(domain, ty, proto)) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn socketpair(
        domain: c_int,
        ty: c_int,
        proto: c_int,
        sv: *mut c_int,
    ) -> c_int {
        // SAFETY: socketpair's contract, forwarded.
        libc_ret(unsafe { sys_socketpair(domain, ty, proto, sv) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
        // SAFETY: bind's contract, forwarded.
        libc_ret(unsafe { sys_bind(fd, addr, len) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
        // SAFETY: connect's contract, forwarded.
        libc_ret(unsafe { sys_connect(fd, addr, len) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        val: *const c_void,
        len: socklen_t,
    ) -> c_int {
        // SAFETY: setsockopt's contract, forwarded.
        libc_ret(unsafe { sys_setsockopt(fd, level, name, val, len) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
        libc_ret(sys_listen(fd, backlog)) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> c_int {
        // SAFETY: accept's contract, forwarded.
        libc_ret(unsafe { sys_accept4(fd, addr as usize, alen as usize, 0) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn accept4(
        fd: c_int,
        addr: *mut sockaddr,
        alen: *mut socklen_t,
        flags: c_int,
    ) -> c_int {
        // SAFETY: accept4's contract, forwarded.
        libc_ret(unsafe { sys_accept4(fd, addr as usize, alen as usize, flags) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
        libc_ret(sys_shutdown(fd, how)) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn sendto(
        fd: c_int,
        buf: *const c_void,
        n: size_t,
        flags: c_int,
        addr: *const sockaddr,
        alen: socklen_t,
    ) -> ssize_t {
        // SAFETY: sendto's contract, forwarded.
        raw_ret(unsafe { sys_sendto(fd, buf, n, flags, addr as usize, alen as usize) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> ssize_t {
        // SAFETY: sendmsg's contract, forwarded.
        raw_ret(unsafe { sys_sendmsg(fd, msg, flags) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn recvfrom(
        fd: c_int,
        buf: *mut c_void,
        n: size_t,
        flags: c_int,
        addr: *mut sockaddr,
        alen: *mut socklen_t,
    ) -> ssize_t {
        // SAFETY: recvfrom's contract, forwarded.
        raw_ret(unsafe { sys_recvfrom(fd, buf, n, flags, addr as usize, alen as usize) })
    }

    #[no_mangle]
    pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> ssize_t {
        // SAFETY: recvmsg's contract, forwarded.
        raw_ret(unsafe { sys_recvmsg(fd, msg, flags) })
    }
}
