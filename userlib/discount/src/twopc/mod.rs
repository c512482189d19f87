//! Two-phase commit for a computation of several processes (thesis 6.2.2, CPV-2PC and
//! CBNDV-2PC): every checkpoint of a member is a *distributed* checkpoint that all the
//! computation's processes take together, run by a coordinator ([`coord`], `dc coord`),
//! so that sends between members need no commit and only real visible events do.
//!
//! The member's side, here:
//!
//! * **Start**: after its first checkpoint (epoch 0) or after recovery, a member joins
//!   ([`wire::Kind::Join`], with its last committed epoch) and waits until the
//!   coordinator says every member has ([`wire::Kind::Resume`]).
//! * **A commit the protocol asks for** (before a visible event under CPV-2PC; under
//!   CBNDV-2PC only after a non-deterministic event since the last commit) and every
//!   other checkpoint Discount Checking would take (a full undo log, ...) become a
//!   request to the coordinator ([`global_commit`]); the member then waits, serving the
//!   coordinator, until a round has committed its state.
//! * **Prepare** ([`wire::Kind::Prepare`]): the member takes its checkpoint as a Vista
//!   *prepared* transaction tagged with the epoch (every page copied and logged, the
//!   commit store not yet done), votes, and waits for the decision: on commit it does the
//!   commit store; on abort (another member failed) it aborts the transaction and rolls
//!   back. A member that crashes while prepared finds its checkpoint prepared at
//!   recovery and asks the coordinator what became of that epoch ([`resolve`]) instead
//!   of deciding alone (Gray's participant rule).
//! * **Serving while blocked**: a member blocked in a receive or a readiness call
//!   (`read`, `recv`, `poll`, ...) would never answer a prepare, and a member waiting for
//!   another's message that itself waits for a commit would deadlock; so those calls
//!   wait on the coordinator's socket too ([`wait_ready`]) and serve it.
//! * **Rollback** ([`wire::Kind::Rollback`]): another member failed; this process
//!   re-executes itself into recovery from its last committed checkpoint, which is the
//!   same round's as every other member's.
//!
//! The parts that take checkpoints (serving a round, asking for one, rolling back,
//! leaving, waiting while serving) are in `intercept/member.rs`, which `ckpt` reaches
//! through its hooks: this module depends on nothing that takes a checkpoint.
//!
//! Messages from and to the coordinator go over Discount Checking's own UDP socket (a
//! descriptor >= [`crate::kstate::FD_FLOOR`], not part of the program's state), connected
//! to the coordinator so that nothing else reaches it; each is repeated every
//! [`RESEND_MS`] until answered, since UDP may lose it.
//!
//! * **Quiesce** ([`wire::Kind::Quiesce`], issue 16): when some member has stream
//!   sockets, a round first quiesces every member (no sends, send queues empty) and only
//!   then prepares; each member drains its stream connections into its checkpoint at the
//!   prepare, so no byte of a stream is in transit at a commit (`intercept::net`).
//!
//! Limits (see the README): datagrams between members are the program's own (UDP
//! programs retransmit, as the thesis's did), so a datagram in flight when a round
//! commits, or sent by a process that is rolled back, is lost or repeated as UDP may lose
//! or repeat it (streams are exact: above); a socket is taken to be a channel inside the
//! computation unless its peer is named outside it (`dc run --outside`,
//! [`crate::outside`]: then its sends are visible events and a round does not quiesce
//! it); a FIFO is always inside; a member serves the coordinator in its sends, receives,
//! readiness calls and sleeps (`nanosleep`, `clock_nanosleep`: `intercept::time`), so
//! one that computes without those (or loops over calls that never wait, an `ioctl`)
//! answers a prepare at its next one.

pub mod coord;
pub mod wire;

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::sys::{self, sc, syscall6};
use crate::vol;
use wire::{Kind, Msg};

/// How often an unanswered message is repeated.
pub const RESEND_MS: i32 = 20;

/// The member's configuration ([`crate::Config::twopc`]; `DC_COORD`, `DC_MEMBER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The coordinator's address.
    pub coord: SocketAddrV4,
    /// This member's index in the computation (0 to n-1).
    pub index: u16,
}

/// The epoch of the last committed checkpoint. Checkpointed memory: after recovery it is
/// the epoch of the checkpoint resumed. Set to the round's epoch before the round's
/// checkpoint copies memory, so the image of epoch `e` says `e`.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Sets the epoch of the last committed checkpoint (a round's, before its checkpoint
/// copies memory; back if the round failed).
pub(crate) fn set_epoch(e: u64) {
    EPOCH.store(e, Ordering::Release);
}

/// Sets the epoch of the round being prepared (0: none).
pub(crate) fn set_serving(e: u64) {
    vol::get().tp_serving.store(e, Ordering::Release);
}

/// Whether this process is a member of a computation (configured, and its socket open).
pub fn configured() -> bool {
    vol::get().tp_fd.load(Ordering::Acquire) >= 0
}

/// Whether a checkpoint must be a distributed one now: a member that has joined, not
/// already inside a round.
pub(crate) fn wants_global() -> bool {
    let v = vol::get();
    configured()
        && v.tp_inc.load(Ordering::Acquire) > 0
        && v.tp_serving.load(Ordering::Acquire) == 0
}

/// The epoch of the round being prepared (0: none).
pub(crate) fn serving() -> u64 {
    vol::get().tp_serving.load(Ordering::Acquire)
}

/// The last committed epoch.
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Opens the member's socket to the coordinator and draws this process's boot id
/// (once per process; called by `init`, fresh and at recovery, before the image is
/// opened).
pub(crate) fn setup(m: &Member) -> Result<()> {
    let v = vol::get();
    if v.tp_fd.load(Ordering::Acquire) >= 0 {
        return Ok(());
    }
    let mut boot = 0u64;
    while boot == 0 {
        // SAFETY: getrandom writes 8 bytes into a live local.
        let r = unsafe { sc(libc::SYS_getrandom, &mut boot as *mut u64 as usize, 8, 0) };
        if r != 8 {
            return Err(Error::sys("getrandom", -(r as i32)));
        }
    }
    // SAFETY: socket takes plain values.
    let fd = unsafe {
        sc(
            libc::SYS_socket,
            libc::AF_INET as usize,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as usize,
            0,
        )
    };
    let fd = sys::check(fd).map_err(|e| Error::sys("socket (to the coordinator)", e))? as i32;
    let fd = sys::move_high(fd);
    let sa = sockaddr(m.coord);
    // SAFETY: connect reads a sockaddr_in from a live local of that size.
    let r = unsafe {
        sc(
            libc::SYS_connect,
            fd as usize,
            &sa as *const libc::sockaddr_in as usize,
            std::mem::size_of::<libc::sockaddr_in>(),
        )
    };
    if let Err(e) = sys::check(r) {
        return Err(Error::sys("connect (to the coordinator)", e));
    }
    v.tp_boot.store(boot, Ordering::Release);
    v.tp_member.store(m.index as u32, Ordering::Release);
    v.tp_fd.store(fd, Ordering::Release);
    Ok(())
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

pub(crate) fn send(kind: Kind, epoch: u64) {
    send_flag(kind, epoch, false);
}

/// [`send`] with the message's flag (a join's: this member has stream sockets).
pub(crate) fn send_flag(kind: Kind, epoch: u64, flag: bool) {
    let v = vol::get();
    let m = Msg {
        member: v.tp_member.load(Ordering::Relaxed) as u16,
        boot: v.tp_boot.load(Ordering::Relaxed),
        flag,
        ..Msg::new(kind, epoch)
    };
    let b = m.encode();
    // SAFETY: send reads LEN bytes from a live local; the socket is connected. A lost or
    // refused datagram (the coordinator not there yet) is repeated by the caller.
    unsafe {
        syscall6(
            libc::SYS_sendto,
            [
                v.tp_fd.load(Ordering::Relaxed) as usize,
                b.as_ptr() as usize,
                b.len(),
                libc::MSG_NOSIGNAL as usize,
                0,
                0,
            ],
        )
    };
}

/// Polls `fds` plus the coordinator's socket (last) for up to `ms` milliseconds (-1:
/// forever); returns poll's result with the `revents` filled in.
pub(crate) fn poll_with_ctl(fds: &mut [libc::pollfd], ms: i32) -> isize {
    // SAFETY: poll reads and writes `fds.len()` pollfds of a live slice.
    unsafe {
        sc(
            libc::SYS_poll,
            fds.as_mut_ptr() as usize,
            fds.len(),
            ms as isize as usize,
        )
    }
}

/// The next message from the coordinator, if one is waiting (never blocks).
pub(crate) fn recv() -> Option<Msg> {
    let fd = vol::get().tp_fd.load(Ordering::Relaxed);
    let mut b = [0u8; wire::LEN + 1];
    loop {
        let r = sys::recv_nowait(fd, &mut b);
        if r < 0 {
            return None;
        }
        // Anything that is not a coordinator's message is dropped (untrusted input).
        if let Some(m) = Msg::decode(&b[..r as usize]) {
            if !m.kind.from_member() {
                return Some(m);
            }
        }
    }
}

/// Waits up to `ms` for a message from the coordinator.
pub(crate) fn recv_wait(ms: i32) -> Option<Msg> {
    if let Some(m) = recv() {
        return Some(m);
    }
    let mut p = [libc::pollfd {
        fd: vol::get().tp_fd.load(Ordering::Relaxed),
        events: libc::POLLIN,
        revents: 0,
    }];
    if poll_with_ctl(&mut p, ms) > 0 {
        recv()
    } else {
        None
    }
}

/// Whether rollback order `m` is for this process now.
pub(crate) fn rollback_for_me(m: &Msg) -> bool {
    let v = vol::get();
    let boot = v.tp_boot.load(Ordering::Relaxed);
    m.kind == Kind::Rollback
        && (m.boot == 0 || m.boot == boot)
        && m.inc > v.tp_inc.load(Ordering::Relaxed)
}

/// Counts the retransmissions of one wait and says once, after about five seconds,
/// that the coordinator does not answer (it may be down: the member keeps waiting, since
/// it may not go on alone).
pub(crate) struct Patience {
    tries: u32,
    what: &'static str,
}

impl Patience {
    pub(crate) fn new(what: &'static str) -> Patience {
        Patience { tries: 0, what }
    }

    pub(crate) fn tick(&mut self) {
        self.tries += 1;
        if self.tries == 5000 / RESEND_MS as u32 {
            let mut w = sys::StackWriter::new();
            let _ = std::fmt::Write::write_fmt(
                &mut w,
                format_args!(
                    "no answer from the coordinator for 5 s ({}): still waiting",
                    self.what
                ),
            );
            crate::diag::diag(w.as_str());
        }
    }
}

/// Joins the computation from the checkpoint of [`epoch`] and waits until every member
/// has (the start barrier, also after a rollback).
pub(crate) fn join() {
    if !configured() {
        return;
    }
    crate::trace::joined(
        epoch(),
        vol::get().tp_boot.load(Ordering::Relaxed),
        // SAFETY: getpid takes nothing.
        unsafe { sc(libc::SYS_getpid, 0, 0, 0) } as i64,
    );
    let mut patience = Patience::new("joining");
    loop {
        patience.tick();
        send_flag(
            Kind::Join,
            epoch(),
            vol::get().tp_streams.load(Ordering::Acquire),
        );
        let deadline = sys::mono_ns() + RESEND_MS as u64 * 1_000_000;
        while sys::mono_ns() < deadline {
            match recv_wait(RESEND_MS) {
                Some(m) if m.kind == Kind::Resume => {
                    vol::get().tp_inc.store(m.inc.max(1), Ordering::Release);
                    return;
                }
                _ => {}
            }
        }
    }
}

/// Asks the coordinator what became of prepared epoch `tag` (recovery found this
/// member's checkpoint prepared): `true` to commit it.
pub(crate) fn resolve(tag: u64) -> bool {
    let mut patience = Patience::new("asking what became of a prepared checkpoint");
    loop {
        patience.tick();
        send(Kind::Ask, tag);
        if let Some(m) = recv_wait(RESEND_MS) {
            if m.kind == Kind::Outcome && m.epoch == tag {
                crate::trace::event_num(if m.flag { "PC" } else { "PA" }, tag);
                return m.flag;
            }
        }
    }
}

/// Inside a round's checkpoint, after the transaction was prepared: votes yes and waits
/// for the decision. `true`: commit; `false`: abort (and then roll back).
pub(crate) fn vote(e: u64) -> bool {
    let mut patience = Patience::new("waiting for the decision on a prepared checkpoint");
    loop {
        patience.tick();
        send(Kind::Vote, e);
        if let Some(m) = recv_wait(RESEND_MS) {
            if m.kind == Kind::Decide && m.epoch == e {
                return m.flag;
            }
            if rollback_for_me(&m) {
                return false;
            }
        }
    }
}

/// The most descriptors [`wait_ready`] waits on (a call with more blocks unserved).
pub const MAX_WAIT_FDS: usize = 64;
