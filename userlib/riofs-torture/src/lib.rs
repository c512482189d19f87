//! The host side of riofs-torture: the log and dump formats the program writes, and an
//! independent model of Linux file-system semantics that replays a log.
//!
//! The `riofs-torture` program (the code under test's workload) deliberately does not use
//! this library: it picks its operations from the real tree and keeps no model, so that the
//! oracle here shares nothing with the program it checks. The data and hash functions are
//! written again here from their specification ([`model::data`], [`model::fnv`]).
//!
//! - [`log`]: `OP`/`ACK`/`DONE` lines into operations and their acknowledged results, and
//!   `dump` lines into canonical entries.
//! - [`model`]: the inode model, [`model::replay`] (the states before and after the op in
//!   flight) and [`model::prefix_states`] (which prefix of the log a tree is).

pub mod log;
pub mod model;

/// A log or dump the model cannot read, or a guest that disagrees with the model about an
/// operation's result.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A log line that is not what riofs-torture writes.
    #[error("bad log line {line:?}: {why}")]
    BadLog {
        /// The line.
        line: String,
        /// What is wrong with it.
        why: String,
    },
    /// A dump line that is not what `riofs-torture dump` prints.
    #[error("bad dump line {line:?}: {why}")]
    BadDump {
        /// The line.
        line: String,
        /// What is wrong with it.
        why: String,
    },
    /// The guest's result of an acknowledged operation is not the model's.
    #[error("op {n} {op}: the guest got {guest:?}, the model says {model:?}")]
    Diverged {
        /// The operation's number.
        n: u64,
        /// Its logged description (JSON).
        op: String,
        /// What the guest's call returned (`Err(errno)`).
        guest: Result<(), i32>,
        /// What the model says it returns.
        model: Result<(), i32>,
    },
}

/// The result of this library's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
