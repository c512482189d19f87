//! rio-client: a safe Rust API over `/dev/rio`.

pub mod uapi;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use uapi::RioInfo;

/// The default device node.
pub const DEFAULT_DEVICE: &str = "/dev/rio";

/// What can go wrong talking to rio.ko.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device node could not be opened.
    #[error("cannot open {path}: {source}{}", if source.kind() == std::io::ErrorKind::NotFound { " (is rio.ko loaded?)" } else { "" })]
    Open {
        /// The device path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An ioctl failed.
    #[error("{op} failed: {source}")]
    Ioctl {
        /// Which operation.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The module speaks another ABI version.
    #[error("rio.ko speaks ABI {kernel}, this program speaks {ours}: rebuild one of them")]
    AbiMismatch {
        /// The module's version.
        kernel: u32,
        /// Ours.
        ours: u32,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

/// An open `/dev/rio`.
pub struct Rio {
    file: File,
}

impl Rio {
    /// Opens [`DEFAULT_DEVICE`] and checks the ABI version.
    pub fn open() -> Result<Rio> {
        Rio::open_path(DEFAULT_DEVICE)
    }

    /// Opens the device at `path` and checks the ABI version.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Rio> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let rio = Rio { file };
        let info = rio.info()?;
        if info.abi_version != uapi::RIO_ABI_VERSION {
            return Err(Error::AbiMismatch {
                kernel: info.abi_version,
                ours: uapi::RIO_ABI_VERSION,
            });
        }
        Ok(rio)
    }

    /// What the module was loaded with.
    pub fn info(&self) -> Result<RioInfo> {
        let mut info = RioInfo::default();
        // SAFETY: RIO_IOC_INFO writes exactly size_of::<RioInfo>() bytes to the pointer,
        // which points to a live, properly aligned RioInfo.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                uapi::RIO_IOC_INFO as libc::c_ulong,
                &mut info as *mut RioInfo,
            )
        };
        if r < 0 {
            return Err(Error::Ioctl {
                op: "RIO_IOC_INFO",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(info)
    }
}
