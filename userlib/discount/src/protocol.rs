//! Commit protocols (thesis 2.2.5 and 6.2.2): when to checkpoint so that the commit
//! invariant of Theorem 2 (Save-work) holds.
//!
//! The wrappers in `intercept` classify each event:
//!
//! * **non-deterministic**: reading from anything that is not one of the program's own
//!   files (terminal, pipe, socket, inherited descriptors), `poll`/`select`,
//!   `clock_gettime`/`gettimeofday`/`time`, `getrandom`, `getpid`, and the delivery of a
//!   signal to one of the program's handlers;
//! * **visible** (or send): writing to anything that is not one of the program's own
//!   files (stdout, stderr, terminal, pipe, socket), `send`/`sendto`;
//! * neither: reads and writes of the program's own regular files (they are part of its
//!   state: writes are undone on recovery through the file undo log).
//!
//! | protocol | commits |
//! |---|---|
//! | `Cand` | after every non-deterministic event |
//! | `Cpvs` | before every visible event |
//! | `Cbndvs` | before a visible event if a non-deterministic event happened since the last commit |
//! | `CandLog` | as `Cand`, but input reads are logged (replayed after recovery) and so deterministic |
//! | `CbndvsLog` | as `Cbndvs`, with input reads logged |
//! | `Manual` | only when the program calls `checkpoint()` (and on the optional timer) |
//!
//! Under the `-Log` protocols the data a read returned is appended to the input log in
//! the control segment before the program sees it; after a crash, re-execution reads the
//! logged data again instead of the device, until the log is used up. The log is
//! truncated by each checkpoint.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// A commit protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Checkpoint only when asked (and on the timer, if configured).
    #[default]
    Manual,
    /// Commit after non-deterministic events.
    Cand,
    /// Commit prior to visible or send events.
    Cpvs,
    /// Commit between a non-deterministic event and a visible or send event.
    Cbndvs,
    /// `Cand` with input logging.
    CandLog,
    /// `Cbndvs` with input logging.
    CbndvsLog,
}

impl Protocol {
    /// All protocols.
    pub const ALL: [Protocol; 6] = [
        Protocol::Manual,
        Protocol::Cand,
        Protocol::Cpvs,
        Protocol::Cbndvs,
        Protocol::CandLog,
        Protocol::CbndvsLog,
    ];

    /// Whether input reads are logged.
    pub fn logs_input(self) -> bool {
        matches!(self, Protocol::CandLog | Protocol::CbndvsLog)
    }

    /// The thesis' name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Manual => "manual",
            Protocol::Cand => "CAND",
            Protocol::Cpvs => "CPVS",
            Protocol::Cbndvs => "CBNDVS",
            Protocol::CandLog => "CAND-LOG",
            Protocol::CbndvsLog => "CBNDVS-LOG",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Protocol, Error> {
        let k: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match k.as_str() {
            "manual" | "none" => Protocol::Manual,
            "cand" => Protocol::Cand,
            "cpvs" => Protocol::Cpvs,
            "cbndvs" => Protocol::Cbndvs,
            "candlog" => Protocol::CandLog,
            "cbndvslog" => Protocol::CbndvsLog,
            _ => {
                return Err(Error::Config(format!(
                    "unknown protocol {s:?} (manual, cand, cpvs, cbndvs, cand-log, cbndvs-log)"
                )))
            }
        })
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A non-deterministic event happened since the last commit. Checkpointed memory: it is
/// rolled back with everything else.
static ND_PENDING: AtomicBool = AtomicBool::new(false);

/// The active protocol (Manual when not initialized).
pub fn current() -> Protocol {
    crate::ckpt::rt().map_or(Protocol::Manual, |rt| rt.cfg.protocol)
}

/// State updates that must be in the image of the checkpoint being taken.
pub(crate) fn before_commit() {
    // Only store when it changes: every store dirties a page the checkpoint then copies.
    if ND_PENDING.load(Ordering::Relaxed) {
        ND_PENDING.store(false, Ordering::Relaxed);
    }
    crate::kstate::before_commit();
}

// Called by the wrappers, which only exist with the `global` feature.
#[cfg_attr(not(feature = "global"), allow(dead_code))]
fn commit(low_hint: usize) {
    if let Err(e) = crate::ckpt::take(low_hint) {
        crate::sys::diag(&format!("protocol checkpoint skipped: {e}"));
    }
}

/// After a non-deterministic event (its result already in memory).
#[cfg_attr(not(feature = "global"), allow(dead_code))]
pub(crate) fn nondeterministic(what: &str, low_hint: usize) {
    crate::trace::event("N", what);
    match current() {
        Protocol::Cand | Protocol::CandLog => commit(low_hint),
        Protocol::Cbndvs | Protocol::CbndvsLog => ND_PENDING.store(true, Ordering::Relaxed),
        Protocol::Cpvs | Protocol::Manual => {}
    }
}

/// Notes a non-deterministic event for the CBNDVS protocols (signal handlers).
pub(crate) fn mark_nd() {
    ND_PENDING.store(true, Ordering::Relaxed);
}

/// An input event made deterministic by the log.
#[cfg_attr(not(feature = "global"), allow(dead_code))]
pub(crate) fn logged(what: &str) {
    crate::trace::event("L", what);
}

/// Before a visible event (`data` is what will be written).
#[cfg_attr(not(feature = "global"), allow(dead_code))]
pub(crate) fn visible(fd: i32, data: &[u8]) {
    match current() {
        Protocol::Cpvs => commit(usize::MAX),
        Protocol::Cbndvs | Protocol::CbndvsLog => {
            if ND_PENDING.load(Ordering::Relaxed) {
                commit(usize::MAX)
            }
        }
        Protocol::Cand | Protocol::CandLog | Protocol::Manual => {}
    }
    crate::trace::visible(fd, data);
}

/// The periodic timer fired (outside Discount Checking's code).
pub(crate) fn timer_checkpoint(low_hint: usize) {
    let _ = crate::ckpt::take(low_hint);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        for p in Protocol::ALL {
            assert_eq!(p.name().parse::<Protocol>().unwrap(), p);
        }
        assert_eq!(
            "cbndvs_log".parse::<Protocol>().unwrap(),
            Protocol::CbndvsLog
        );
        assert!("sometimes".parse::<Protocol>().is_err());
    }
}
