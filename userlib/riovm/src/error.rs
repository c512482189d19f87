//! Errors of the VM runner.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while driving a guest.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A file the runner needs (kernel, initramfs, disk) is missing.
    #[error("{what} not found at {path}: {hint}")]
    MissingArtifact {
        /// What the file is.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// How to make it.
        hint: &'static str,
    },
    /// The configuration asks for something impossible.
    #[error("bad VM configuration: {0}")]
    Config(String),
    /// QEMU could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The QEMU binary.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// QEMU exited while the runner still needed it.
    #[error("QEMU exited unexpectedly ({status}); last console lines:\n{console_tail}")]
    QemuExited {
        /// Its exit status.
        status: String,
        /// The end of the guest console.
        console_tail: String,
    },
    /// A wait ran out.
    #[error("timed out after {after:?} waiting for {what}; last console lines:\n{console_tail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
        /// The end of the guest console.
        console_tail: String,
    },
    /// The QMP monitor answered with an error or garbage.
    #[error("QMP: {0}")]
    Qmp(String),
    /// The guest agent spoke out of protocol.
    #[error("guest agent protocol error: {0}")]
    Protocol(String),
    /// An I/O error on a socket or file.
    #[error("{context}: {source}")]
    Io {
        /// What the runner was doing.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl VmError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
        let context = context.into();
        move |source| VmError::Io { context, source }
    }
}

/// Result alias for the runner.
pub type Result<T> = std::result::Result<T, VmError>;
