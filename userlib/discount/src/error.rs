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
    /// The process has more than one thread.
    #[error("Discount Checking supports single-threaded processes only ({0} threads)")]
    Threads(usize),
    /// The kernel lacks a feature the configuration asks for.
    #[error("{0} is not available: {1}")]
    Unsupported(&'static str, String),
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
