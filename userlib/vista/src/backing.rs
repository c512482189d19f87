//! Backings: where a segment or a log lives.
//!
//! A [`Backing`] is a file descriptor that can be mapped `MAP_SHARED`, its length, and a
//! [`Durability`] policy. Vista never reads or writes it with system calls on the
//! transaction path: everything goes through the mapping. Today's backend is a plain file
//! (durable across process crashes: the page cache outlives the process). A Rio object
//! (`/dev/rio`, feature `rio`) is the same thing with every store already durable:
//! [`Backing::from_rio`] with [`Durability::Memory`].

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// When a transaction's effects reach the backing's stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Rely on the mapping: stores are durable when the memory is (Rio: at once; a plain
    /// file: across process crashes, not power loss). No system call on the transaction
    /// path. This is Vista as the paper built it.
    #[default]
    Memory,
    /// `commit` forces the transaction's undo records (`msync`), then the data it changed
    /// (one `fdatasync` per touched backing), then makes the commit point and forces it:
    /// committed data survives power loss. A transaction caught in flight by a power loss
    /// may be torn if the kernel wrote back a dirty data page before the undo record of
    /// that page reached the disk; [`Durability::MsyncWal`] excludes that.
    Msync,
    /// Like `Msync`, and in addition every undo record is `msync`ed before `set_range`
    /// returns (write-ahead rule for an undo log on disk): atomic and durable across power
    /// loss, at one synchronous write per logged range.
    MsyncWal,
}

impl Durability {
    /// Whether commit forces data and commit record with `msync`.
    pub fn syncs_commit(self) -> bool {
        !matches!(self, Durability::Memory)
    }

    /// Whether every undo record is forced before the caller may store.
    pub fn syncs_records(self) -> bool {
        matches!(self, Durability::MsyncWal)
    }
}

/// How concurrent opens of the same backing are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// `flock(LOCK_EX | LOCK_NB)` on the descriptor, held while the backing is open.
    Flock,
    /// The caller guarantees exclusivity (e.g. a device that locks per object itself).
    None,
}

/// A mappable file descriptor plus length and durability policy.
#[derive(Debug)]
pub struct Backing {
    fd: OwnedFd,
    len: u64,
    durability: Durability,
    locking: Locking,
    locked: bool,
}

impl Backing {
    /// Creates a new file of `len` bytes (zero-filled, sparse). Fails if it exists.
    pub fn create_file(
        path: impl AsRef<Path>,
        len: u64,
        durability: Durability,
    ) -> Result<Backing> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path.as_ref())
            .map_err(|source| Error::Os {
                op: "create backing file",
                source,
            })?;
        file.set_len(len).map_err(|source| Error::Os {
            op: "size backing file",
            source,
        })?;
        Backing::from_file(file, durability)
    }

    /// Opens an existing file.
    pub fn open_file(path: impl AsRef<Path>, durability: Durability) -> Result<Backing> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path.as_ref())
            .map_err(|source| Error::Os {
                op: "open backing file",
                source,
            })?;
        Backing::from_file(file, durability)
    }

    /// Wraps an open file; its length is its current size. Locked with `flock`.
    pub fn from_file(file: File, durability: Durability) -> Result<Backing> {
        let len = file
            .metadata()
            .map_err(|source| Error::Os {
                op: "stat backing file",
                source,
            })?
            .len();
        Ok(Backing {
            fd: OwnedFd::from(file),
            len,
            durability,
            locking: Locking::Flock,
            locked: false,
        })
    }

    /// Wraps any mappable descriptor of `len` bytes (e.g. a Rio object). The fd must
    /// support `mmap(MAP_SHARED)` at page-aligned offsets below `len`.
    pub fn from_fd(fd: OwnedFd, len: u64, durability: Durability, locking: Locking) -> Backing {
        Backing {
            fd,
            len,
            durability,
            locking,
            locked: false,
        }
    }

    /// Wraps an open Rio object (feature `rio`): its length is the object's size, locking
    /// is [`Locking::None`] (`flock` on a `/dev/rio` descriptor would lock the one device
    /// inode shared by every object), so open the object with
    /// [`rio_client::OpenMode::Exclusive`] to keep a second opener out: rio.ko then refuses
    /// it with `Busy`, which Vista reports as [`Error::Busy`]. Use [`Durability::Memory`]:
    /// every store to a Rio mapping is durable as it executes, so `msync` would only cost.
    ///
    /// The object's file descriptor is duplicated; the exclusive open lasts until the
    /// backing (and every mapping of it) is gone.
    #[cfg(feature = "rio")]
    pub fn from_rio(object: rio_client::Object, durability: Durability) -> Result<Backing> {
        use std::os::fd::AsFd;
        let len = object.size().map_err(|e| Error::rio("stat object", e))?;
        let fd = object
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| Error::Os {
                op: "dup rio object descriptor",
                source,
            })?;
        Ok(Backing::from_fd(fd, len, durability, Locking::None))
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the backing has zero length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The durability policy.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The raw descriptor.
    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Takes the exclusive lock (idempotent). [`Error::Busy`] if someone else holds it.
    pub(crate) fn lock(&mut self) -> Result<()> {
        if self.locked || self.locking == Locking::None {
            return Ok(());
        }
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(self.fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Busy);
            }
            return Err(Error::Os {
                op: "flock backing",
                source: err,
            });
        }
        self.locked = true;
        Ok(())
    }

    /// `fdatasync`: everything written through any mapping of this backing reaches its
    /// stable storage (free for a Rio object, whose stores are durable already).
    pub(crate) fn sync_data(&self) -> Result<()> {
        // SAFETY: fdatasync on a descriptor we own; no memory is passed.
        if unsafe { libc::fdatasync(self.fd.as_raw_fd()) } != 0 {
            return Err(Error::last_os("fdatasync"));
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `off` (used before anything is mapped).
    pub(crate) fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &mut buf[done..];
            // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
            let n = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    (off + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                return Err(Error::last_os("pread backing"));
            }
            if n == 0 {
                return Err(Error::BackingTooSmall {
                    actual: off + done as u64,
                    needed: off + buf.len() as u64,
                });
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Writes `buf` at `off` (used for in-place creation, before the mapping replaces memory).
    pub(crate) fn write_at(&self, off: u64, buf: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &buf[done..];
            // SAFETY: `rest` is a valid readable buffer of `rest.len()` bytes.
            let n = unsafe {
                libc::pwrite(
                    self.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    (off + done as u64) as libc::off_t,
                )
            };
            if n <= 0 {
                return Err(Error::last_os("pwrite backing"));
            }
            done += n as usize;
        }
        Ok(())
    }
}
