//! Every way a Vista call can fail.
//!
//! Each variant names one cause. Errors returned while opening a segment leave the backing
//! untouched (nothing is replayed, formatted or truncated); errors returned inside a
//! transaction leave the transaction open and consistent, so the caller may still commit
//! what it logged so far or abort.

use std::io;

/// What can go wrong in Vista.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// Which operation.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The requested address is not a multiple of the page size.
    #[error("address {addr:#x} is not aligned to the {page}-byte page size")]
    MisalignedAddress {
        /// The address given.
        addr: usize,
        /// The page size.
        page: usize,
    },
    /// Something is already mapped somewhere in the requested range.
    #[error("address range {addr:#x}..{end:#x} is already in use in this process")]
    AddressInUse {
        /// Start of the range.
        addr: usize,
        /// End of the range.
        end: usize,
    },
    /// The segment was created for another address; its stored pointers would be wrong.
    #[error("segment was created at {stored:#x}, not at {requested:#x}")]
    AddressMismatch {
        /// Where the segment lives.
        stored: usize,
        /// Where the caller asked for it.
        requested: usize,
    },
    /// The backing is already open (by this or another process).
    #[error("segment backing is already open elsewhere (locked)")]
    Busy,
    /// The backing is shorter than its header says, or too short for what was asked.
    #[error("backing is {actual} bytes, needs at least {needed}")]
    BackingTooSmall {
        /// Bytes available.
        actual: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// `create` was given a backing whose first page is not all zero.
    #[error("backing is not empty: refusing to format over existing data")]
    NotEmpty,
    /// The backing holds no Vista segment (or a creation that never finished).
    #[error("not a Vista {what}: bad magic")]
    BadMagic {
        /// "segment" or "log".
        what: &'static str,
    },
    /// The backing was written by an incompatible version of Vista.
    #[error("{what} format version {found} is not supported (this library reads {supported})")]
    UnsupportedVersion {
        /// "segment" or "log".
        what: &'static str,
        /// Version in the backing.
        found: u32,
        /// Version this library speaks.
        supported: u32,
    },
    /// A header failed its checksum or describes an impossible layout.
    #[error("corrupt {what} header: {reason}")]
    CorruptHeader {
        /// "segment" or "log".
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The undo log of an unfinished transaction is damaged. Nothing was replayed: the data
    /// is exactly as the crash left it, and the log is kept for inspection.
    #[error("corrupt undo log at byte {at}: {reason}; nothing was replayed")]
    CorruptLog {
        /// Byte offset in the record area.
        at: u64,
        /// What was wrong.
        reason: String,
    },
    /// A parameter is out of its allowed range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// `begin` while a transaction is active (e.g. a `Tx` was leaked with `mem::forget`).
    #[error("a transaction is already active")]
    TransactionActive,
    /// The transaction handle outlived its transaction (e.g. `checkpoint` committed but
    /// could not begin the next one).
    #[error("no transaction is active")]
    NotActive,
    /// The engine was poisoned by an earlier failure to abort; reopen the segment to recover.
    #[error("segment is poisoned by an earlier failed abort; reopen it to run recovery")]
    Poisoned,
    /// A range given to `set_range` (or a pointer) is not inside a segment of this transaction.
    #[error("range {addr:#x}+{len} is outside every segment of this transaction")]
    OutOfRange {
        /// Start address.
        addr: usize,
        /// Length in bytes.
        len: usize,
    },
    /// A typed pointer is not aligned for its type.
    #[error("pointer {addr:#x} is not aligned to {align}")]
    Misaligned {
        /// The address.
        addr: usize,
        /// Required alignment.
        align: usize,
    },
    /// The undo log has no room for this record. The transaction is still open.
    #[error("undo log full: need {needed} bytes, {free} free of {capacity}")]
    LogFull {
        /// Bytes needed.
        needed: usize,
        /// Bytes free.
        free: usize,
        /// Capacity of the record area.
        capacity: usize,
    },
    /// The heap has no free block of this size.
    #[error("heap exhausted: no free block of {size} bytes (align {align})")]
    OutOfMemory {
        /// Requested size.
        size: usize,
        /// Requested alignment.
        align: usize,
    },
    /// The segment was created without a heap.
    #[error("segment {segment} has no heap")]
    NoHeap {
        /// Member index.
        segment: usize,
    },
    /// `free` of a block that is not allocated (freed earlier, or never allocated).
    #[error("double free or free of unallocated block at {addr:#x}")]
    DoubleFree {
        /// The address.
        addr: usize,
    },
    /// `free` of an address that is not the start of a heap block.
    #[error("{addr:#x} is not the start of a heap block")]
    InvalidFree {
        /// The address.
        addr: usize,
    },
    /// A root name is empty, too long, or contains a NUL byte.
    #[error("invalid root name {0:?} (1..={max} bytes, no NUL)", max = crate::roots::NAME_MAX)]
    InvalidRootName(String),
    /// The root table is full.
    #[error("root table full ({0} entries)")]
    RootsFull(usize),
    /// A root exists but was stored for another type (size or alignment differ).
    #[error("root {name:?} holds a {stored_size}-byte value, asked for {asked_size}")]
    RootTypeMismatch {
        /// Root name.
        name: String,
        /// Element size stored.
        stored_size: u64,
        /// Element size asked for.
        asked_size: u64,
    },
    /// A segment index does not exist in this group.
    #[error("no segment {0} in this transaction")]
    NoSuchSegment(usize),
    /// The segment belongs to a group with a shared log; open it through that group.
    #[error("segment is bound to shared log {log_id:#018x}; open it with Group::open")]
    BoundToGroup {
        /// The group log's id.
        log_id: u64,
    },
    /// The segment is bound to another group log than the one it is opened with.
    #[error("segment {seg_id:#018x} is not a member of log {log_id:#018x}")]
    NotAMember {
        /// The segment's id.
        seg_id: u64,
        /// The log's id.
        log_id: u64,
    },
    /// A segment the shared log refers to was not supplied to `Group::open`.
    #[error("shared log names segment {seg_id:#018x}, which was not supplied")]
    MissingSegment {
        /// The missing segment's id.
        seg_id: u64,
    },
    /// Implicit (page-fault) logging via userfaultfd is not available here.
    #[error("userfaultfd write-protect unavailable: {0}")]
    UffdUnavailable(String),
    /// The log holds a *prepared* transaction (two-phase commit: [`Tx::prepare`] voted
    /// "yes" with this `tag`) whose outcome only the coordinator may decide. Returned by a
    /// plain `open` (which leaves the backings untouched: open with a resolver, e.g.
    /// [`Group::open_resolving`]), and by anything but `commit` or `abort` on a prepared
    /// transaction (`set_range`, heap and root changes, a second `prepare`, `begin` while
    /// it is still in doubt).
    ///
    /// [`Tx::prepare`]: crate::Tx::prepare
    /// [`Group::open_resolving`]: crate::Group::open_resolving
    #[error("a prepared transaction (tag {tag:#x}) awaits its commit-or-abort decision")]
    Prepared {
        /// The tag given to `prepare` (e.g. the 2PC epoch).
        tag: u64,
    },
    /// The operation is not possible while a transaction is active.
    #[error("not allowed while a transaction is active: {0}")]
    InTransaction(&'static str),
    /// A call to rio.ko failed (feature `rio`). An object opened exclusively elsewhere is
    /// reported as [`Error::Busy`] instead.
    #[cfg(feature = "rio")]
    #[error("rio: {op}: {source}")]
    Rio {
        /// Which operation.
        op: &'static str,
        /// The Rio error.
        source: rio_client::Error,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps a Rio error of operation `op`; `Busy` (opened exclusively elsewhere) becomes
    /// [`Error::Busy`], as for a locked file.
    #[cfg(feature = "rio")]
    pub(crate) fn rio(op: &'static str, source: rio_client::Error) -> Error {
        match source {
            rio_client::Error::Busy(_) => Error::Busy,
            source => Error::Rio { op, source },
        }
    }

    /// Wraps the current `errno` for operation `op`.
    pub(crate) fn last_os(op: &'static str) -> Error {
        Error::Os {
            op,
            source: io::Error::last_os_error(),
        }
    }
}
