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
//! | `E` | normal exit |

use crate::sys::{check, sc4, write_all_raw};

/// Opens the trace file if tracing is configured.
pub fn open() -> crate::error::Result<()> {
    let Some(rt) = crate::ckpt::rt() else {
        return Ok(());
    };
    let Some(path) = rt.cfg.trace.clone() else {
        return Ok(());
    };
    let mut p = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    p.push(0);
    // SAFETY: p is NUL-terminated.
    let fd = check(unsafe {
        sc4(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            p.as_ptr() as usize,
            (libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC) as usize,
            0o644,
        )
    })
    .map_err(|e| crate::error::Error::sys("open trace", e))?;
    rt.trace_fd = crate::kstate::move_high(fd as i32);
    Ok(())
}

fn emit(kind: &str, args: std::fmt::Arguments<'_>) {
    let Some(rt) = crate::ckpt::rt() else { return };
    if rt.trace_fd < 0 {
        return;
    }
    let mut w = crate::sys::StackWriter::new();
    let _ = std::fmt::Write::write_fmt(&mut w, format_args!("{kind} {args}\n"));
    rt.trace_seq += 1;
    write_all_raw(rt.trace_fd, w.as_str().as_bytes());
}

/// Records an event with a text argument.
pub fn event(kind: &str, what: &str) {
    emit(kind, format_args!("{what}"));
}

/// Records an event with a number.
pub fn event_num(kind: &str, n: u64) {
    emit(kind, format_args!("{n}"));
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
