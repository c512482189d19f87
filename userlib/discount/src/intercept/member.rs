//! A member's part of the distributed checkpoints (`crate::twopc`) that takes
//! checkpoints: serving a round, asking for one, rolling back, leaving at exit, and
//! waiting in a blocking call while serving the coordinator. Here rather than in `twopc`
//! because it calls `ckpt` (which reaches it through `ckpt::Hooks`), so that no import
//! cycle forms.

use std::sync::atomic::Ordering;

use crate::ckpt::Ctx;
use crate::error::{Error, Result};
use crate::sys::{self, sc};
use crate::twopc::wire::{Kind, Msg};
use crate::twopc::{self, MAX_WAIT_FDS, RESEND_MS};
use crate::vol;

/// What a member does with a message while it waits or is blocked: take part in a round
/// (`Ok(true)` when this call returns in a new process after recovery, as a checkpoint
/// does), or roll back.
fn serve(cx: &mut Ctx, m: &Msg) -> Result<bool> {
    if twopc::rollback_for_me(m) {
        rollback(cx);
    }
    let fresh = m.epoch > twopc::epoch() && m.inc >= vol::get().tp_inc.load(Ordering::Relaxed);
    if m.kind == Kind::Prepare && fresh {
        return round(cx, m.epoch);
    }
    if m.kind == Kind::Quiesce && fresh {
        return quiesce(cx, m.epoch);
    }
    Ok(false)
}

/// How long a member waits for its stream sockets' send queues to empty before it
/// answers the quiesce all the same (with a diagnostic).
const QUIESCE_MS: u64 = 5000;

/// The quiesce step of round `e` (issue 16; a step before the prepare of thesis 6.2.2's
/// CPV-2PC/CBNDV-2PC round, which assumed messages the program itself retransmits): this
/// member sends nothing more (it stays
/// here until the prepare, or a rollback), drains its stream connections and the FIFOs
/// it reads into their buffers (so that a peer blocked on a full window or a full FIFO
/// can finish, and its send queue empty) until its own send queues are empty (`SIOCOUTQ`
/// 0, and `FIONREAD` 0 on the FIFOs it writes), then answers quiesced, repeating the
/// answer until the prepare comes. When every member has answered, no byte of a
/// connection or FIFO of the computation is in a send queue, on the wire or in a FIFO:
/// what was sent is in the receiver's socket or already in its buffer.
fn quiesce(cx: &mut Ctx, e: u64) -> Result<bool> {
    let drain = !vol::get().no_drain_for_tests.load(Ordering::Relaxed);
    let start = sys::mono_ns();
    let mut said = false;
    loop {
        if drain {
            cx.ks().drain_streams();
            cx.ks().drain_fifos();
        }
        // (The negative control skips the wait too: without the drain a peer's AF_UNIX
        // send queue, the bytes this member has not read, would not empty.)
        let empty = !drain || cx.ks().streams_outq() + cx.ks().fifos_outq() == 0;
        if !empty && !said && sys::mono_ns() - start > QUIESCE_MS * 1_000_000 {
            said = true;
            let stuck = cx.ks().streams_stuck();
            crate::diag::diag(&format!(
                "quiesce: a stream socket's send queue or a FIFO this member writes did not \
                 empty in 5 s (its reader does not read?){}{stuck}: answering quiesced all \
                 the same; bytes in it may be lost by a rollback (a peer outside the \
                 computation is named with `dc run --outside`, and then not waited for)",
                if stuck.is_empty() { "" } else { ": " }
            ));
        }
        if empty || said {
            twopc::send(Kind::Quiesced, e);
        }
        let Some(m) = twopc::recv_wait(if empty || said { RESEND_MS } else { 1 }) else {
            continue;
        };
        if twopc::rollback_for_me(&m) {
            rollback(cx);
        }
        if m.kind == Kind::Prepare && m.epoch == e {
            return round(cx, e);
        }
        if m.kind == Kind::Decide && m.epoch == e && !m.flag {
            return Ok(false); // aborted (a rollback order follows)
        }
    }
}

/// Waits up to `ms` serving the coordinator (a stream connection broke: if a peer
/// crashed, the rollback order comes and this never returns).
pub(crate) fn wait_for_rollback(cx: &mut Ctx, ms: u64) {
    let until = sys::mono_ns() + ms * 1_000_000;
    while sys::mono_ns() < until {
        if let Some(m) = twopc::recv_wait(RESEND_MS) {
            if let Err(er) = serve(cx, &m) {
                crate::diag::diag(&format!("distributed checkpoint failed: {er}"));
            }
        }
    }
}

/// Serves the messages the coordinator has sent, without waiting (a stream send's).
pub(crate) fn serve_pending(cx: &mut Ctx) {
    while let Some(m) = twopc::recv() {
        if let Err(er) = serve(cx, &m) {
            crate::diag::diag(&format!("distributed checkpoint failed: {er}"));
        }
    }
}

/// Before this member makes its first stream socket: tells the coordinator, which from
/// then on quiesces every round first; waits (serving it) until it answers, which it does
/// once no round is open that skipped the quiesce step.
pub(crate) fn announce_streams(cx: &mut Ctx) {
    let v = vol::get();
    if !twopc::configured() || v.tp_inc.load(Ordering::Acquire) == 0 {
        v.tp_streams.store(true, Ordering::Release);
        return;
    }
    if v.tp_streams.load(Ordering::Acquire) {
        return;
    }
    let mut patience = twopc::Patience::new("announcing stream sockets");
    loop {
        patience.tick();
        twopc::send(Kind::Streams, twopc::epoch());
        if let Some(m) = twopc::recv_wait(RESEND_MS) {
            if m.kind == Kind::StreamsOk {
                v.tp_streams.store(true, Ordering::Release);
                return;
            }
            // A round in progress is served; a checkpoint taken here is before the socket.
            if let Err(er) = serve(cx, &m) {
                crate::diag::diag(&format!("distributed checkpoint failed: {er}"));
            }
        }
    }
}

/// Takes this member's part of round `e`.
fn round(cx: &mut Ctx, e: u64) -> Result<bool> {
    let before = twopc::epoch();
    if !vol::get().no_drain_for_tests.load(Ordering::Relaxed) {
        // After the quiesce step nobody sends: every byte of the computation's streams is
        // in a receiver's socket or FIFO, and goes into its checkpoint here.
        cx.ks().drain_streams();
        cx.ks().drain_fifos();
    }
    twopc::set_serving(e);
    twopc::set_epoch(e);
    let r = crate::ckpt::take(cx, usize::MAX);
    twopc::set_serving(0);
    if matches!(r, Ok(false)) {
        crate::trace::round(e);
    }
    match r {
        Err(Error::RolledBack) => rollback(cx),
        Err(err) => {
            twopc::set_epoch(before);
            Err(err)
        }
        ok => ok,
    }
}

/// Re-executes this process into recovery from its last committed checkpoint. Closes
/// every descriptor above stderr first, so that the program's sockets, bound to the ports
/// recovery binds again, are gone.
fn rollback(cx: &mut Ctx) -> ! {
    match cx.rt().map(|rt| rt.store.dir().to_path_buf()) {
        Some(d) => rollback_in(&d),
        None => sys::fatal_to(2, "discount: rollback failed: no runtime"),
    }
}

/// [`rollback`] for the image whose plain files are in `dir`.
pub(crate) fn rollback_in(dir: &std::path::Path) -> ! {
    crate::trace::event_num("B", twopc::epoch());
    let err = crate::alloc::internal(|| match crate::reexec::ExecInfo::load(dir) {
        Ok(info) => {
            // SAFETY: close_range takes plain values; nothing of this process is used
            // after the exec below.
            unsafe { sc(libc::SYS_close_range, 3, u32::MAX as usize, 0) };
            info.exec()
        }
        Err(e) => e,
    });
    sys::fatal_to(2, &format!("discount: rollback failed: {err}"))
}

/// A distributed checkpoint: asks the coordinator for a round and serves it until one
/// has committed this member's state. As [`crate::ckpt::take`]: `Ok(true)` when returning
/// in a new process after recovery.
pub(crate) fn global_commit(cx: &mut Ctx) -> Result<bool> {
    let start = twopc::epoch();
    crate::trace::event_num("Q", start);
    let mut patience = twopc::Patience::new("asking for a distributed checkpoint");
    loop {
        patience.tick();
        twopc::send(Kind::Request, start);
        let deadline = sys::mono_ns() + RESEND_MS as u64 * 1_000_000;
        while sys::mono_ns() < deadline {
            if let Some(m) = twopc::recv_wait(RESEND_MS) {
                if serve(cx, &m)? {
                    return Ok(true);
                }
                if twopc::epoch() > start {
                    return Ok(false);
                }
            }
        }
    }
}

/// Leaves the computation at exit, after a last distributed commit (the exit is a
/// visible event). Waits for the coordinator's answer a few seconds at most.
pub(crate) fn leave(cx: &mut Ctx) {
    if !twopc::configured() || vol::get().tp_inc.load(Ordering::Acquire) == 0 {
        return;
    }
    // The ends of this member's stream connections are shut down for writing before its
    // last commit, so that the peers' drains of that round see the end of the stream and
    // their recoveries do not wait for this member to connect again (it leaves).
    // Its FIFOs are closed for the same reason (their readers' drains record that no
    // writer is left, their writers' that no reader is); the records stay, for a recovery
    // of this member should the commit fail. A connection to a peer outside the
    // computation is left to the exit, as the program would have it.
    for fd in 0..cx.ks().fds.len() as i32 {
        if cx.ks().sock(fd).is_some_and(|s| s.member_connection()) {
            // SAFETY: shutdown takes numbers only.
            unsafe { sc(libc::SYS_shutdown, fd as usize, libc::SHUT_WR as usize, 0) };
            if let Some(s) = cx.ks().sock_mut(fd) {
                s.shut |= crate::kstate::sock::SHUT_WR_BIT;
            }
        }
        if cx.ks().is_fifo(fd) {
            // SAFETY: close of the program's descriptor at its exit (nothing of the
            // program runs after this commit).
            unsafe { sc(libc::SYS_close, fd as usize, 0, 0) };
        }
    }
    if let Err(e) = global_commit(cx) {
        crate::diag::diag(&format!("last distributed commit before exit failed: {e}"));
    }
    let until = sys::mono_ns() + 3_000_000_000;
    while sys::mono_ns() < until {
        twopc::send(Kind::Leave, twopc::epoch());
        // Nothing but the answer counts now: this member's last state is committed, and
        // a round opened meanwhile stops waiting for it once the goodbye arrives.
        if let Some(m) = twopc::recv_wait(RESEND_MS) {
            if m.kind == Kind::Resume {
                return;
            }
        }
    }
}

/// Waits until one of `fds` is ready (as `poll(fds, ms)` would), serving the coordinator
/// meanwhile (more than [`MAX_WAIT_FDS`]: returns 0 at once). Returns the number of ready descriptors (0 on timeout) or `-errno`, with
/// `revents` filled in; `Err(true)` if it returned in a new process after recovery (the
/// caller must then redo its call from the start: the checkpoint was taken before it).
pub(crate) fn wait_ready(
    cx: &mut Ctx,
    fds: &mut [libc::pollfd],
    ms: i32,
) -> std::result::Result<isize, bool> {
    let until = (ms >= 0).then(|| sys::mono_ns() + ms as u64 * 1_000_000);
    // On the stack, not the heap: a round may checkpoint and this frame may then resume
    // in a new process (whose heap, volatile or not, never held this).
    if fds.len() > MAX_WAIT_FDS {
        return Ok(0);
    }
    let mut buf = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX_WAIT_FDS + 1];
    buf[..fds.len()].copy_from_slice(fds);
    buf[fds.len()] = libc::pollfd {
        fd: vol::get().tp_fd.load(Ordering::Relaxed),
        events: libc::POLLIN,
        revents: 0,
    };
    let all = &mut buf[..fds.len() + 1];
    loop {
        let left = match until {
            None => -1,
            Some(u) => (u.saturating_sub(sys::mono_ns()) / 1_000_000) as i32,
        };
        for p in all.iter_mut() {
            p.revents = 0;
        }
        let r = twopc::poll_with_ctl(all, left);
        if r < 0 {
            return Ok(r);
        }
        let ctl = all[all.len() - 1].revents != 0;
        let n = all.len() - 1;
        let ready = all[..n].iter().filter(|p| p.revents != 0).count();
        if ctl {
            while let Some(m) = twopc::recv() {
                match serve(cx, &m) {
                    Ok(true) => return Err(true),
                    Ok(false) => {}
                    Err(e) => crate::diag::diag(&format!("distributed checkpoint failed: {e}")),
                }
            }
        }
        if ready > 0 || r == 0 {
            fds.copy_from_slice(&all[..n]);
            return Ok(ready as isize);
        }
    }
}
