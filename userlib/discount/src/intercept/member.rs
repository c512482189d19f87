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
    if m.kind == Kind::Prepare
        && m.epoch > twopc::epoch()
        && m.inc >= vol::get().tp_inc.load(Ordering::Relaxed)
    {
        return round(cx, m.epoch);
    }
    Ok(false)
}

/// Takes this member's part of round `e`.
fn round(cx: &mut Ctx, e: u64) -> Result<bool> {
    let before = twopc::epoch();
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
