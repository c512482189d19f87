//! Event traces for the oracle: one line per event, appended to `<dir>/trace` with a raw
//! `write` (so lines survive a SIGKILL and reflect what really happened, including events
//! later rolled back).
//!
//! | line | event |
//! |---|---|
//! | `S` | a fresh start (first checkpoint follows) |
//! | `C <seq>` | checkpoint number `seq` committed |
//! | `R <seq>` | recovery resumed checkpoint `seq` (later events of the crashed run are gone) |
//! | `N <what>` | a non-deterministic event (input read, time, signal, ...) |
//! | `L <what>` | an input event made deterministic by logging (or replayed from the log) |
//! | `V <fd> <len> <hash>` | a visible event (output written to fd) |
//! | `M <len> <hash>` | a message sent on a socket (before the send) |
//! | `G <len> <hash>` | a message received on a socket |
//! | `D <epoch>` | the `C` before it was this process's part of distributed checkpoint `epoch` |
//! | `J <epoch> <boot> <pid>`, `Q <epoch>`, `B <epoch>`, `PC`/`PA <epoch>` | two-phase commit: joined, asked for a round, rolled back, a prepared checkpoint committed or aborted at recovery |
//! | `E` | normal exit |

use std::path::Path;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::sys::{check, sc4, write_all_raw};

/// Opens `path` for appending (created if missing) with a raw call, at a descriptor above
/// the program's ([`crate::sys::move_high`]); `what` names it in the error.
fn open_append(path: &Path, what: &'static str) -> Result<i32> {
    let mut p = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    p.push(0);
    // SAFETY: p is a NUL-terminated path that outlives the call; openat only reads it.
    let fd = check(unsafe {
        sc4(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            p.as_ptr() as usize,
            (libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC) as usize,
            0o644,
        )
    })
    .map_err(|e| Error::sys(what, e))?;
    Ok(crate::sys::move_high(fd as i32))
}

/// Opens the trace file `path` (if tracing is configured) for this process.
pub fn open(path: Option<&Path>) -> Result<()> {
    if let Some(path) = path {
        let fd = open_append(path, "open trace")?;
        crate::vol::get().trace_fd.store(fd, Ordering::Release);
    }
    Ok(())
}

/// Opens the diagnostics file `path` (`DC_LOG`, appended to) for this process: from now
/// on [`crate::diag::diag`] writes there instead of stderr.
pub fn open_log(path: Option<&Path>) -> Result<()> {
    if let Some(path) = path {
        let fd = open_append(path, "open log")?;
        crate::vol::get().log_fd.store(fd, Ordering::Release);
    }
    Ok(())
}

/// Appends one line. Needs no runtime, so it is safe from anywhere, signal handlers
/// included: the line is formatted on the stack and written with one `write` to an
/// `O_APPEND` descriptor.
fn emit(kind: &str, args: std::fmt::Arguments<'_>) {
    let fd = crate::vol::get().trace_fd.load(Ordering::Acquire);
    if fd < 0 {
        return;
    }
    let mut w = crate::sys::StackWriter::new();
    let _ = std::fmt::Write::write_fmt(&mut w, format_args!("{kind} {args}\n"));
    write_all_raw(fd, w.as_str().as_bytes());
}

/// Records an event with a text argument.
pub fn event(kind: &str, what: &str) {
    emit(kind, format_args!("{what}"));
}

/// Records an event with a number.
pub fn event_num(kind: &str, n: u64) {
    emit(kind, format_args!("{n}"));
}

/// Whether a trace is being written (so that callers can skip work only the trace needs).
pub fn on() -> bool {
    crate::vol::get().trace_fd.load(Ordering::Relaxed) >= 0
}

/// Records a message sent on a socket (before the send): `M <len> <hash>`; the oracle
/// matches it with the receive of the same bytes (`G`) to order the processes' traces.
pub fn message_sent(data: &[u8]) {
    emit("M", format_args!("{} {:016x}", data.len(), fnv(data)));
}

/// Records a message received on a socket (after the receive): `G <len> <hash>`.
pub fn message_received(data: &[u8]) {
    emit("G", format_args!("{} {:016x}", data.len(), fnv(data)));
}

/// [`message_received`] for the first `n` bytes of a receive's buffers `iov`.
///
/// # Safety
/// Each iovec describes readable memory of its length.
pub unsafe fn message_received_iov(iov: &[libc::iovec], n: usize) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut left = n;
    for v in iov {
        let k = v.iov_len.min(left);
        if k == 0 || v.iov_base.is_null() {
            continue;
        }
        // SAFETY: the iovec's buffer is readable for iov_len >= k bytes (contract).
        let b = unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, k) };
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        left -= k;
    }
    emit("G", format_args!("{n} {h:016x}"));
}

/// Records that this process's last commit was its part of distributed checkpoint
/// `epoch` (two-phase commit): `D <epoch>`, right after its `C` line.
pub fn round(epoch: u64) {
    emit("D", format_args!("{epoch}"));
}

/// Records that this process joined its computation from the checkpoint of `epoch`
/// (two-phase commit): `J <epoch> <boot> <pid>`.
pub fn joined(epoch: u64, boot: u64, pid: i64) {
    emit("J", format_args!("{epoch} {boot:016x} {pid}"));
}

/// Records a visible event.
pub fn visible(fd: i32, data: &[u8]) {
    emit("V", format_args!("{fd} {} {:016x}", data.len(), fnv(data)));
}

/// FNV-1a (content fingerprint of visible events).
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
