//! The Rio store (feature `rio`): the checkpoint image in Rio objects, so that a program
//! survives a kernel crash, not only its own.
//!
//! The image's backings (the control segment, one segment per checkpointed range, and the
//! shared Vista undo log) are objects of `/dev/rio` named `<prefix>.m<N>.vista` and
//! `<prefix>.log.vista`, opened exclusively and mapped `MAP_SHARED`. Every store through
//! those mappings is durable as it executes (rio.ko's arena survives a kernel crash and is
//! recovered at the next load, see the top-level README), so a checkpoint's commit (one
//! 8-byte store) is durable the moment it is made, without a system call.
//!
//! The small plain files the image keeps (`exec`, `members`, `grave/`, `trace`) stay in a
//! directory, which must be on a file system where every write has reached Rio when it
//! returns (checked with `statfs`, [`Error::NotDurable`] otherwise): riofs (`mount -t
//! riofs`, the intended place), or any file system mounted `-o sync` (ext4 on a Rio block
//! device). The program's own
//! files should live there too: Discount Checking undoes writes to them after a crash,
//! which only works if the writes themselves survived it.
//!
//! Every byte of a Rio object is resident in the arena, so the image must be small:
//! [`crate::Config::rio`] starts from sizes that fit a 64 MiB arena, and an object that
//! does not fit is reported as [`Error::RioNoSpace`].

use std::path::{Path, PathBuf};

use rio_client::{OpenMode, Rio};
use vista::{Backing, Durability};

use crate::error::{Error, Result};
use crate::image::Store;

/// Permission bits of the objects the store creates.
const OBJECT_MODE: u32 = 0o600;
/// Longest backing name the image uses (`m15.vista`, `log.vista`).
const LONGEST_BACKING: usize = 9;
/// Longest Rio object name.
const MAX_OBJECT_NAME: usize = 63;

/// Checks that `prefix` makes valid object names: 1 to 53 printable ASCII characters,
/// no `/`.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let max = MAX_OBJECT_NAME - LONGEST_BACKING - 1;
    let ok = !prefix.is_empty()
        && prefix.len() <= max
        && prefix.bytes().all(|c| c.is_ascii_graphic() && c != b'/');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "Rio store prefix {prefix:?}: 1 to {max} printable ASCII characters, no '/' or space"
        )))
    }
}

/// Whether `object` is one of the image backings of `prefix`.
fn is_backing_of(prefix: &str, object: &str) -> bool {
    let Some(rest) = object
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_suffix(".vista"))
    else {
        return false;
    };
    rest == "log"
        || rest
            .strip_prefix('m')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// Whether the file system holding `dir` makes every write durable when it returns:
/// riofs, or a file system mounted synchronously.
fn durable_dir(dir: &Path) -> Result<bool> {
    Ok(on_riofs(dir)? || mounted_sync(dir)?)
}

/// Whether `dir` is on riofs (`statfs`'s `f_type`).
fn on_riofs(dir: &Path) -> Result<bool> {
    let mut p = std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()).to_vec();
    p.push(0);
    // SAFETY: statfs is plain old data; all-zero is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is NUL-terminated and `st` a valid buffer for the call to fill.
    if unsafe { libc::statfs(p.as_ptr().cast(), &mut st) } != 0 {
        return Err(Error::Io {
            what: "statfs state directory",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(st.f_type as u64 == u64::from(rio_client::uapi::RIOFS_MAGIC))
}

/// Whether the file system holding `dir` is mounted synchronously.
fn mounted_sync(dir: &Path) -> Result<bool> {
    let mut p = std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()).to_vec();
    p.push(0);
    // SAFETY: statvfs is plain old data; all-zero is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is NUL-terminated and `st` a valid buffer for the call to fill.
    if unsafe { libc::statvfs(p.as_ptr().cast(), &mut st) } != 0 {
        return Err(Error::Io {
            what: "statvfs state directory",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(st.f_flag & libc::ST_SYNCHRONOUS != 0)
}

/// Rio objects for the image, plain files on riofs or a synchronously mounted file system.
pub struct RioStore {
    rio: Rio,
    device: PathBuf,
    prefix: String,
    dir: PathBuf,
}

impl std::fmt::Debug for RioStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RioStore")
            .field("device", &self.device)
            .field("prefix", &self.prefix)
            .field("dir", &self.dir)
            .finish()
    }
}

impl RioStore {
    /// A store on [`rio_client::DEFAULT_DEVICE`] (`/dev/rio`): objects named
    /// `<prefix>.*`, plain files in `dir` (created if missing).
    ///
    /// Errors: [`Error::Config`] for a bad prefix, [`Error::NoRio`] if the device cannot
    /// be opened or its arena is not in service, [`Error::NotDurable`] if `dir` is not on
    /// riofs or on a file system mounted `-o sync`.
    pub fn new(prefix: &str, dir: impl Into<PathBuf>) -> Result<RioStore> {
        RioStore::with_device(rio_client::DEFAULT_DEVICE, prefix, dir)
    }

    /// As [`RioStore::new`], on the device node `device`.
    pub fn with_device(
        device: impl AsRef<Path>,
        prefix: &str,
        dir: impl Into<PathBuf>,
    ) -> Result<RioStore> {
        check_prefix(prefix)?;
        let device = device.as_ref().to_path_buf();
        let rio = Rio::open_path(&device).map_err(Error::NoRio)?;
        let info = rio.info().map_err(Error::NoRio)?;
        if info.state != rio_client::ArenaState::Ready {
            return Err(Error::NoRio(rio_client::Error::NotReady(
                "blank or refused",
            )));
        }
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            what: "create state directory",
            source: e,
        })?;
        if !durable_dir(&dir)? {
            return Err(Error::NotDurable { dir });
        }
        Ok(RioStore {
            rio,
            device,
            prefix: prefix.to_string(),
            dir,
        })
    }

    /// The object that holds backing `name`.
    pub fn object_name(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Names of the objects of the image in the arena now.
    pub fn objects(&self) -> Result<Vec<String>> {
        let all = self.rio.list().map_err(|source| Error::Rio {
            op: "list",
            name: String::new(),
            source,
        })?;
        Ok(all
            .into_iter()
            .map(|o| o.name)
            .filter(|n| is_backing_of(&self.prefix, n))
            .collect())
    }

    fn open_object(&self, object: &str) -> Result<Backing> {
        let o = self
            .rio
            .open_object(object, OpenMode::Exclusive)
            .map_err(|e| match e {
                rio_client::Error::NotFound(_) => Error::RioObjectMissing(object.to_string()),
                source => Error::Rio {
                    op: "open",
                    name: object.to_string(),
                    source,
                },
            })?;
        Ok(Backing::from_rio(o, Durability::Memory)?)
    }
}

impl Store for RioStore {
    fn create(&self, name: &str, len: u64) -> Result<Backing> {
        let object = self.object_name(name);
        match self.rio.delete(&object) {
            Ok(()) | Err(rio_client::Error::NotFound(_)) => {}
            Err(source) => {
                return Err(Error::Rio {
                    op: "delete old",
                    name: object,
                    source,
                })
            }
        }
        self.rio
            .create(&object, len, OBJECT_MODE)
            .map_err(|e| match e {
                rio_client::Error::NoSpace(_) | rio_client::Error::TooBig(_) => Error::RioNoSpace {
                    name: object.clone(),
                    bytes: len,
                },
                source => Error::Rio {
                    op: "create",
                    name: object.clone(),
                    source,
                },
            })?;
        self.open_object(&object)
    }

    fn open(&self, name: &str) -> Result<Backing> {
        self.open_object(&self.object_name(name))
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn exists(&self, name: &str) -> bool {
        let object = self.object_name(name);
        self.rio
            .list()
            .is_ok_and(|l| l.iter().any(|o| o.name == object))
    }

    fn clear(&self) -> Result<()> {
        for object in self.objects()? {
            self.rio.delete(&object).map_err(|source| Error::Rio {
                op: "delete old",
                name: object.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(check_prefix("kv").is_ok());
        assert!(check_prefix(&"p".repeat(53)).is_ok());
        for bad in ["", "a/b", "a b", "é", &"p".repeat(54)] {
            assert!(
                matches!(check_prefix(bad), Err(Error::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn backing_names() {
        assert!(is_backing_of("kv", "kv.m0.vista"));
        assert!(is_backing_of("kv", "kv.m15.vista"));
        assert!(is_backing_of("kv", "kv.log.vista"));
        assert!(!is_backing_of("kv", "kv.fs"));
        assert!(!is_backing_of("kv", "kv.m.vista"));
        assert!(!is_backing_of("kv", "kv2.m0.vista"));
        assert!(!is_backing_of("kv", "kv.mx.vista"));
        assert!(!is_backing_of("k", "kv.m0.vista"));
    }

    #[test]
    fn a_missing_device_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = RioStore::with_device(dir.path().join("no-rio"), "kv", dir.path()).unwrap_err();
        assert!(
            matches!(e, Error::NoRio(rio_client::Error::Open { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("is rio.ko loaded?"), "{e}");
        let e = RioStore::with_device("/dev/null", "a b", dir.path()).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }

    #[test]
    fn a_directory_that_is_not_mounted_sync_is_refused() {
        // Whatever /tmp is on here, it is not mounted -o sync on a test machine; the
        // check the store makes after opening the device:
        let dir = tempfile::tempdir().unwrap();
        assert!(!mounted_sync(dir.path()).unwrap());
        assert!(!on_riofs(dir.path()).unwrap());
        assert!(!durable_dir(dir.path()).unwrap());
        let e = Error::NotDurable {
            dir: dir.path().to_path_buf(),
        };
        assert!(e.to_string().contains("-o sync"), "{e}");
    }
}
