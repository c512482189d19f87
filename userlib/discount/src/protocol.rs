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
//! | `CandLog` | as `Cand`, but input reads and readiness calls (`poll`, `select`, ...) are logged (replayed after recovery) and so deterministic |
//! | `CbndvsLog` | as `Cbndvs`, with input reads and readiness calls logged |
//! | `Manual` | only when the program calls `checkpoint()` (and on the optional timer) |
//!
//! Under the `-Log` protocols the data a read returned, and what a readiness call (`poll`,
//! `ppoll`, `select`, `pselect6`, the `epoll_wait` family) wrote, is appended to the input
//! log in the control segment before the program sees it (thesis 6.2.2: the results of
//! recv, read and select are logged; time calls, `bind` and signals stay
//! non-deterministic); after a crash, re-execution takes the logged results again instead
//! of the devices', until the log is used up or the program asks for something else. The
//! log is truncated by each checkpoint.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// A commit protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
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
    /// Commit prior to a visible event, all processes of the computation together by
    /// two-phase commit; sends are not visible (thesis 6.2.2, CPV-2PC).
    Cpv2pc,
    /// As `Cpv2pc`, only if this process had a non-deterministic event since its last
    /// commit (CBNDV-2PC).
    Cbndv2pc,
}

impl Protocol {
    /// All protocols.
    pub const ALL: [Protocol; 8] = [
        Protocol::Manual,
        Protocol::Cand,
        Protocol::Cpvs,
        Protocol::Cbndvs,
        Protocol::CandLog,
        Protocol::CbndvsLog,
        Protocol::Cpv2pc,
        Protocol::Cbndv2pc,
    ];

    /// Whether checkpoints are distributed (two-phase commit with the other processes of
    /// the computation, `crate::twopc`). Logging is not combined with them (thesis
    /// 6.2.2: a logged receive cannot be aborted by the sender).
    pub fn uses_2pc(self) -> bool {
        matches!(self, Protocol::Cpv2pc | Protocol::Cbndv2pc)
    }

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
            Protocol::Cpv2pc => "CPV-2PC",
            Protocol::Cbndv2pc => "CBNDV-2PC",
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
            "cpv2pc" => Protocol::Cpv2pc,
            "cbndv2pc" => Protocol::Cbndv2pc,
            _ => {
                return Err(Error::Config(format!(
                    "unknown protocol {s:?} (manual, cand, cpvs, cbndvs, cand-log, cbndvs-log, cpv-2pc, cbndv-2pc)"
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

impl Protocol {
    /// The protocol's number in [`crate::vol::Vol::protocol`].
    pub(crate) fn as_u8(self) -> u8 {
        self as u8
    }

    /// The protocol numbered `n` by [`Protocol::as_u8`] (`Manual` for anything else).
    pub(crate) fn from_u8(n: u8) -> Protocol {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_u8() == n)
            .unwrap_or(Protocol::Manual)
    }
}

/// A non-deterministic event happened since the last commit. Checkpointed memory: it is
/// rolled back with everything else.
static ND_PENDING: AtomicBool = AtomicBool::new(false);

/// The active protocol (Manual when not initialized). Lock-free, for any caller, signal
/// handlers included.
pub fn current() -> Protocol {
    Protocol::from_u8(crate::vol::get().protocol.load(Ordering::Relaxed))
}

/// Makes `p` the active protocol (when the runtime is published).
pub(crate) fn set_current(p: Protocol) {
    crate::vol::get()
        .protocol
        .store(p.as_u8(), Ordering::Relaxed);
}

/// Forgets the non-deterministic event owed a commit: the checkpoint being taken covers
/// it (called while its memory is captured).
pub(crate) fn clear_nd() {
    // Only store when it changes: every store dirties a page the checkpoint then copies.
    if ND_PENDING.load(Ordering::Relaxed) {
        ND_PENDING.store(false, Ordering::Relaxed);
    }
}

/// Notes a non-deterministic event for the CBNDVS protocols.
pub(crate) fn mark_nd() {
    ND_PENDING.store(true, Ordering::Relaxed);
}

/// Whether a non-deterministic event happened since the last commit.
pub(crate) fn nd_pending() -> bool {
    ND_PENDING.load(Ordering::Relaxed)
}

/// What `p` does after a non-deterministic event.
pub(crate) fn commits_after_nd(p: Protocol) -> bool {
    matches!(p, Protocol::Cand | Protocol::CandLog)
}

/// Whether `p` commits before a visible event now (with `nd` the state of
/// [`nd_pending`]).
pub(crate) fn commits_before_visible(p: Protocol, nd: bool) -> bool {
    match p {
        Protocol::Cpvs | Protocol::Cpv2pc => true,
        Protocol::Cbndvs | Protocol::CbndvsLog | Protocol::Cbndv2pc => nd,
        Protocol::Cand | Protocol::CandLog | Protocol::Manual => false,
    }
}

/// Whether `p` remembers non-deterministic events until the next visible one.
pub(crate) fn defers_nd(p: Protocol) -> bool {
    matches!(
        p,
        Protocol::Cbndvs | Protocol::CbndvsLog | Protocol::Cbndv2pc
    )
}

/// Whether a send on a socket is a visible event under `p` (all but the 2PC protocols,
/// under which the other end is a process of the computation that commits with this one,
/// unless it is named outside it: `intercept::visible`, [`crate::outside`]).
pub(crate) fn send_is_visible(p: Protocol) -> bool {
    !p.uses_2pc()
        && !crate::vol::get()
            .sends_internal_for_tests
            .load(Ordering::Relaxed)
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
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_u8(p.as_u8()), p);
        }
        assert!("sometimes".parse::<Protocol>().is_err());
    }
}
