//! Errors.

use std::io;

/// What can go wrong in Discount Checking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Vista operation on the checkpoint image failed.
    #[error("vista: {0}")]
    Vista(#[from] vista::Error),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A system call failed.
    #[error("{what} failed: errno {errno} ({})", io::Error::from_raw_os_error(*errno))]
    Sys {
        /// Which call.
        what: &'static str,
        /// The errno.
        errno: i32,
    },
    /// The address space is not what Discount Checking needs.
    #[error("address space: {0}")]
    Layout(String),
    /// The checkpoint on disk was made by a different program or layout.
    #[error("checkpoint does not match this process: {0}")]
    Mismatch(String),
    /// The checkpoint files are damaged.
    #[error("corrupt checkpoint state: {0}")]
    Corrupt(String),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `init` was called twice, or a checkpoint outside `init`.
    #[error("{0}")]
    State(&'static str),

    /// A distributed checkpoint was aborted (another member of the computation failed):
    /// this process must roll back to its last committed checkpoint (`twopc`).
    #[error("the distributed checkpoint was aborted: rolling back")]
    RolledBack,

    /// Recovery cannot rebuild a piece of kernel state the checkpoint had (a lock another
    /// process holds now, ...).
    #[error("recovery cannot rebuild the kernel state: {0}")]
    Restore(String),
    /// The process has more than one thread.
    #[error("Discount Checking supports single-threaded processes only ({0} threads)")]
    Threads(usize),
    /// The kernel lacks a feature the configuration asks for.
    #[error("{0} is not available: {1}")]
    Unsupported(&'static str, String),
    /// A backing of the checkpoint store does not have the size the image needs (another
    /// program's object or file under the same name, or a damaged store).
    #[error("checkpoint store: {name} is {actual} bytes, the image needs {expected}")]
    WrongSize {
        /// The backing's name in the store.
        name: String,
        /// Its size.
        actual: u64,
        /// The size the image needs.
        expected: u64,
    },
    /// The Rio store was chosen but `/dev/rio` cannot be used (rio.ko not loaded, another
    /// ABI, the arena not formatted).
    #[cfg(feature = "rio")]
    #[error("the Rio store needs rio.ko: {0}")]
    NoRio(#[source] rio_client::Error),
    /// An object of the Rio store's image is missing.
    #[error("Rio store: no object named {0:?} (the checkpoint image is incomplete)")]
    RioObjectMissing(String),
    /// The arena has no room for an object of the image.
    #[error(
        "Rio store: the arena has no room for {name:?} ({bytes} bytes): lower DC_HEAP_MB, \
         DC_STACK_MB or DC_LOG_MB, or delete other objects"
    )]
    RioNoSpace {
        /// The object.
        name: String,
        /// Its size.
        bytes: u64,
    },
    /// Another operation on a Rio object failed.
    #[cfg(feature = "rio")]
    #[error("Rio store: {op} {name:?}: {source}")]
    Rio {
        /// What we were doing.
        op: &'static str,
        /// The object.
        name: String,
        /// rio.ko's answer.
        source: rio_client::Error,
    },
    /// The directory for the store's plain files would not survive a kernel crash.
    #[error(
        "{} is not on riofs or a file system mounted with -o sync: the Rio store keeps its \
         plain files (exec, members, grave/, trace) there, and they must survive a kernel \
         crash (use riofs: mount -t riofs -o size=16M NAME DIR)",
        dir.display()
    )]
    NotDurable {
        /// The directory.
        dir: std::path::PathBuf,
    },
    /// The undo log cannot hold one checkpoint's dirty pages.
    #[error(
        "checkpoint needs {needed} bytes of undo log, capacity is {capacity} (raise DC_LOG_MB)"
    )]
    LogFull {
        /// Bytes needed.
        needed: usize,
        /// Capacity.
        capacity: usize,
    },
}

impl Error {
    /// An error from a raw system call result.
    pub fn sys(what: &'static str, errno: i32) -> Error {
        Error::Sys { what, errno }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
