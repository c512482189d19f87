//! Errors of the Vistagrams library.

use crate::RequestId;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying Vista segment or transaction failed.
    #[error("vista: {0}")]
    Vista(#[from] vista::Error),
    /// The UDP socket failed (bind, option setting, a receive that is not a timeout).
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The persistent tables read back from the segment are not well formed.
    #[error("corrupt persistent table ({what}): {reason}")]
    Corrupt {
        /// Which structure.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The tables were written by another format version.
    #[error("persistent tables have format version {found}, this library reads {expected}")]
    UnsupportedVersion {
        /// Version in the segment.
        found: u32,
        /// Version this library reads and writes.
        expected: u32,
    },
    /// A message is larger than the endpoint's configured maximum.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Bytes given.
        len: usize,
        /// Largest payload allowed.
        max: usize,
    },
    /// Every slot of the request table holds an unanswered request.
    #[error("request table full ({capacity} outstanding requests)")]
    RequestTableFull {
        /// Slots in the table.
        capacity: usize,
    },
    /// `receive_response` or `select` named a request that is not outstanding.
    #[error("request {0} is not outstanding at this endpoint")]
    UnknownRequest(RequestId),
    /// `receive_response` on a request sent in the same transaction: the request only goes
    /// out at commit (thesis 4.3), so its response cannot arrive inside this transaction.
    #[error("request {0} was sent in this transaction; commit before waiting for its response")]
    SentInThisTransaction(RequestId),
    /// `send_response` for a request this endpoint has not received.
    #[error("request {0} was not received by this endpoint")]
    NotReceived(RequestId),
    /// `send_response` twice for one request.
    #[error("request {0} already has a response")]
    AlreadyResponded(RequestId),
    /// A typed message whose size is not the size of the type.
    #[error("message for {id} has {got} bytes, the type has {expected}")]
    MessageSize {
        /// The request it belongs to.
        id: RequestId,
        /// Size of the type.
        expected: usize,
        /// Size received.
        got: usize,
    },
    /// The transaction was begun on another segment than the endpoint's tables live in.
    #[error("endpoint tables live in the segment at {expected:#x}, not {got:#x}")]
    WrongSegment {
        /// Base of the endpoint's segment.
        expected: usize,
        /// Base of the transaction's segment.
        got: usize,
    },
    /// An endpoint configuration that cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}
