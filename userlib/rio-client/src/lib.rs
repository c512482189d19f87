//! rio-client: a safe Rust API over `/dev/rio`, the Rio crash-surviving file cache.
//!
//! ```no_run
//! use rio_client::{Rio, OpenMode};
//! let rio = Rio::open()?;
//! rio.create("journal", 1 << 20, 0o600)?;
//! let obj = rio.open_object("journal", OpenMode::ReadWrite)?;
//! obj.write_all_at(b"durable when this returns", 0)?;
//! # Ok::<(), rio_client::Error>(())
//! ```

pub mod uapi;

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uapi::*;

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
    /// The module speaks another ABI version.
    #[error("rio.ko speaks ABI {kernel}, this program speaks {ours}: rebuild one of them")]
    AbiMismatch {
        /// The module's version.
        kernel: u32,
        /// Ours.
        ours: u32,
    },
    /// The arena is blank or was refused at load; it must be formatted first.
    #[error("the arena is not in service ({0}); see dmesg, and 'rio format'")]
    NotReady(&'static str),
    /// An arena that is not blank needs an explicit `force` to be erased.
    #[error("the arena holds data: formatting it needs --force (this erases every object)")]
    NotBlank,
    /// No object by that name.
    #[error("no object named {0:?}")]
    NotFound(String),
    /// The name is taken.
    #[error("an object named {0:?} already exists")]
    Exists(String),
    /// The name is empty, too long, or has a character other than printable ASCII sans `/`.
    #[error("invalid object name {0:?}: 1 to 63 printable ASCII characters, no '/' or space")]
    InvalidName(String),
    /// Not enough free arena pages.
    #[error("the arena is full: not enough free pages for {0:?}")]
    NoSpace(String),
    /// Larger than the arena could ever hold.
    #[error("{0:?} would be larger than the whole arena")]
    TooBig(String),
    /// The object table is full.
    #[error("the object table is full")]
    TableFull,
    /// Permission denied by the object's owner and mode.
    #[error("permission denied for object {0:?}")]
    PermissionDenied(String),
    /// Open elsewhere (delete, exclusive open) or mapped (shrink).
    #[error("object {0:?} is busy (open elsewhere, opened exclusively, or mapped)")]
    Busy(String),
    /// Recovery could not account for all of its pages.
    #[error("object {0:?} is damaged and cannot be opened (see dmesg)")]
    Damaged(String),
    /// Writing past the end of an object.
    #[error("write past the end of {0:?}: resize it first")]
    PastEnd(String),
    /// The object already has a block device.
    #[error("object {0:?} already has a block device")]
    BlockdevExists(String),
    /// The object has no block device.
    #[error("object {0:?} has no block device")]
    NoBlockdev(String),
    /// The block device is open or mounted.
    #[error("the block device of {0:?} is open or mounted: unmount it first")]
    BlockdevBusy(String),
    /// A block device needs a size that is a whole number of 4 KiB blocks.
    #[error("{0:?} is not a whole number of 4 KiB blocks: resize it first")]
    NotWholeBlocks(String),
    /// The debug ioctl is disabled, or the caller is not an administrator.
    #[error("wild stores need CAP_SYS_ADMIN and rio.ko loaded with allow_wild_store=1")]
    WildStoreDisabled,
    /// The caller's per-user limit (objects or pages) would be exceeded.
    #[error("{0:?}: over your Rio quota (the max_user_objects / max_user_pages limits of rio.ko); delete objects or ask an administrator")]
    QuotaExceeded(String),
    /// The operation needs CAP_SYS_ADMIN (format, block devices).
    #[error("{0} needs CAP_SYS_ADMIN in the initial user namespace (root outside any container)")]
    NotPrivileged(&'static str),
    /// Any other failure of an operation.
    #[error("{op} failed: {source}")]
    Os {
        /// Which operation.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Turns an OS error of `op` on object `name` into a precise error.
fn classify(op: &'static str, name: &str, e: std::io::Error) -> Error {
    let n = name.to_string();
    match errno(&e) {
        libc::ENOENT => Error::NotFound(n),
        libc::EEXIST => Error::Exists(n),
        libc::EINVAL | libc::ENAMETOOLONG if op == "create" || op == "open" || op == "delete" => {
            Error::InvalidName(n)
        }
        libc::ENOSPC => Error::NoSpace(n),
        libc::EFBIG if op == "write" => Error::PastEnd(n),
        libc::EFBIG => Error::TooBig(n),
        libc::ENFILE => Error::TableFull,
        libc::EACCES => Error::PermissionDenied(n),
        libc::EBUSY => Error::Busy(n),
        libc::EIO if op == "open" => Error::Damaged(n),
        libc::ENXIO if op == "mmap" => Error::PastEnd(n),
        libc::EUCLEAN => Error::NotReady("blank or refused"),
        libc::ENOTEMPTY if op == "format" => Error::NotBlank,
        libc::EPERM if op == "wild store" => Error::WildStoreDisabled,
        libc::EPERM
            if op == "format" || op == "add block device" || op == "remove block device" =>
        {
            Error::NotPrivileged(op)
        }
        libc::EDQUOT => Error::QuotaExceeded(n),
        _ => Error::Os { op, source: e },
    }
}

fn ioctl<T>(fd: BorrowedFd<'_>, cmd: u32, arg: *mut T) -> std::io::Result<()> {
    // SAFETY: every caller passes a pointer to a live `T` whose size is the size encoded in
    // `cmd`, as the kernel reads or writes exactly that many bytes.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd as libc::c_ulong, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn name_field(name: &str) -> Result<[u8; 64]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 63 || !b.iter().all(|&c| c.is_ascii_graphic() && c != b'/') {
        return Err(Error::InvalidName(name.to_string()));
    }
    let mut f = [0u8; 64];
    f[..b.len()].copy_from_slice(b);
    Ok(f)
}

fn field_name(f: &[u8; 64]) -> String {
    let n = f.iter().position(|&c| c == 0).unwrap_or(64);
    String::from_utf8_lossy(&f[..n]).into_owned()
}

/// The state of the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaState {
    /// Never formatted.
    Unformatted,
    /// Refused at load as corrupt or foreign (left untouched).
    Corrupt,
    /// In service.
    Ready,
}

/// What the module was loaded with.
#[derive(Clone, Debug)]
pub struct Info {
    /// ABI version.
    pub abi_version: u32,
    /// The arena's state.
    pub state: ArenaState,
    /// Physical start.
    pub arena_phys: u64,
    /// Size in bytes.
    pub arena_size: u64,
    /// Write protection on.
    pub protect: bool,
    /// Object-table capacity.
    pub max_objects: u32,
    /// Arena identity (zero unless ready).
    pub uuid: [u8; 16],
}

/// One object's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Arena pages.
    pub pages: u32,
    /// Pages newer than the backing store.
    pub dirty_pages: u32,
    /// Open files bound to it.
    pub open_count: u32,
    /// Mapped writable since its last writeback.
    pub mapped: bool,
    /// Not fully recovered.
    pub damaged: bool,
    /// Its table slot.
    pub slot: u32,
    /// Its block device, if it has one.
    pub blockdev: Option<String>,
}

impl From<RioObjInfo> for ObjectInfo {
    fn from(o: RioObjInfo) -> Self {
        ObjectInfo {
            name: field_name(&o.name),
            size: o.size,
            uid: o.uid,
            gid: o.gid,
            mode: o.mode,
            pages: o.pages,
            dirty_pages: o.dirty_pages,
            open_count: o.open_count,
            mapped: o.flags & OBJ_MAPPED != 0,
            damaged: o.flags & OBJ_DAMAGED != 0,
            slot: o.slot,
            blockdev: (o.flags & OBJ_BLKDEV != 0).then(|| format!("/dev/riob{}", o.slot)),
        }
    }
}

/// Counters.
pub type Stats = RioStats;

/// How to open an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only.
    ReadOnly,
    /// Read and write.
    ReadWrite,
    /// Read and write, and nobody else may have it open meanwhile.
    Exclusive,
}

/// An open `/dev/rio` (not bound to an object).
pub struct Rio {
    path: PathBuf,
    file: File,
}

impl Rio {
    /// Opens [`DEFAULT_DEVICE`] and checks the ABI version.
    pub fn open() -> Result<Rio> {
        Rio::open_path(DEFAULT_DEVICE)
    }

    /// Opens the device at `path` and checks the ABI version.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Rio> {
        let path = path.as_ref().to_path_buf();
        let file = open_dev(&path, true)?;
        let rio = Rio { path, file };
        let info = rio.info()?;
        if info.abi_version != RIO_ABI_VERSION {
            return Err(Error::AbiMismatch {
                kernel: info.abi_version,
                ours: RIO_ABI_VERSION,
            });
        }
        Ok(rio)
    }

    /// What the module was loaded with, and the arena's state.
    pub fn info(&self) -> Result<Info> {
        let mut i = RioInfo::default();
        ioctl(self.file.as_fd(), RIO_IOC_INFO, &mut i)
            .map_err(|source| Error::Os { op: "info", source })?;
        Ok(Info {
            abi_version: i.abi_version,
            state: match i.state {
                STATE_READY => ArenaState::Ready,
                STATE_CORRUPT => ArenaState::Corrupt,
                _ => ArenaState::Unformatted,
            },
            arena_phys: i.arena_phys,
            arena_size: i.arena_size,
            protect: i.protect != 0,
            max_objects: i.max_objects,
            uuid: i.uuid,
        })
    }

    /// Formats the arena. A non-blank arena is erased only with `force`.
    pub fn format(&self, force: bool) -> Result<()> {
        let mut f = RioFormat {
            flags: if force { FORMAT_FORCE } else { 0 },
            _pad: 0,
        };
        ioctl(self.file.as_fd(), RIO_IOC_FORMAT, &mut f).map_err(|e| classify("format", "", e))
    }

    /// Creates an object of `size` bytes (zero filled) with permission bits `mode`.
    pub fn create(&self, name: &str, size: u64, mode: u32) -> Result<()> {
        let mut c = RioCreate {
            name: name_field(name)?,
            size,
            mode,
            _pad: 0,
        };
        ioctl(self.file.as_fd(), RIO_IOC_CREATE, &mut c).map_err(|e| classify("create", name, e))
    }

    /// Deletes an object nobody has open.
    pub fn delete(&self, name: &str) -> Result<()> {
        let mut n = RioName {
            name: name_field(name)?,
        };
        ioctl(self.file.as_fd(), RIO_IOC_DELETE, &mut n).map_err(|e| classify("delete", name, e))
    }

    /// Lists the objects.
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        let mut cap = 16usize;
        loop {
            let mut buf = vec![RioObjInfo::default(); cap];
            let mut l = RioList {
                buf: buf.as_mut_ptr() as u64,
                capacity: cap as u32,
                count: 0,
            };
            ioctl(self.file.as_fd(), RIO_IOC_LIST, &mut l).map_err(|e| classify("list", "", e))?;
            let n = l.count as usize;
            if n <= cap {
                buf.truncate(n);
                return Ok(buf.into_iter().map(ObjectInfo::from).collect());
            }
            cap = n;
        }
    }

    /// Counters.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = RioStats::default();
        ioctl(self.file.as_fd(), RIO_IOC_STATS, &mut s).map_err(|e| classify("stats", "", e))?;
        Ok(s)
    }

    /// Writes every dirty page back to the backing store now.
    pub fn sync(&self) -> Result<()> {
        ioctl::<u8>(self.file.as_fd(), RIO_IOC_SYNC, std::ptr::null_mut())
            .map_err(|e| classify("sync", "", e))
    }

    /// Opens an object on a new file descriptor.
    pub fn open_object(&self, name: &str, mode: OpenMode) -> Result<Object> {
        let flags = if mode == OpenMode::Exclusive {
            OPEN_EXCLUSIVE
        } else {
            0
        };
        self.open_object_raw(name, mode != OpenMode::ReadOnly, flags)
    }

    /// Opens an object with any combination of descriptor mode and `RIO_IOC_OPEN` flags,
    /// including ones the module must refuse (an exclusive open on a read-only descriptor):
    /// for tests and the fuzzer.
    pub fn open_object_raw(&self, name: &str, writable_fd: bool, flags: u32) -> Result<Object> {
        let file = open_dev(&self.path, writable_fd)?;
        let mut o = RioOpen {
            name: name_field(name)?,
            flags,
            _pad: 0,
        };
        ioctl(file.as_fd(), RIO_IOC_OPEN, &mut o).map_err(|e| classify("open", name, e))?;
        Ok(Object {
            name: name.to_string(),
            file,
        })
    }

    /// Debug: a wild kernel store of `value` at arena byte `offset`. With protection on this
    /// oopses the kernel (and, with `oops=panic`, crashes it).
    pub fn wild_store(&self, offset: u64, value: u8) -> Result<()> {
        let mut w = RioWildStore {
            offset,
            value: u32::from(value),
            _pad: 0,
        };
        ioctl(self.file.as_fd(), RIO_IOC_WILD_STORE, &mut w)
            .map_err(|e| classify("wild store", "", e))
    }
}

fn open_dev(path: &Path, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// An open object: positional reads and writes; every write is durable when it returns.
pub struct Object {
    name: String,
    file: File,
}

impl Object {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its attributes.
    pub fn stat(&self) -> Result<ObjectInfo> {
        let mut o = RioObjInfo::default();
        ioctl(self.file.as_fd(), RIO_IOC_STAT, &mut o)
            .map_err(|e| classify("stat", &self.name, e))?;
        Ok(o.into())
    }

    /// Its size in bytes.
    pub fn size(&self) -> Result<u64> {
        Ok(self.stat()?.size)
    }

    /// Creates a block device over the object (whole 4 KiB blocks; it must be opened
    /// writable). Returns the device path, `/dev/riobN`. While it exists the object cannot
    /// be deleted or shrunk, and rio.ko cannot be unloaded.
    pub fn add_blockdev(&self) -> Result<String> {
        // SAFETY: the ioctl takes no argument.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                RIO_IOC_BLKDEV_ADD as libc::c_ulong,
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match errno(&e) {
                libc::EEXIST => Error::BlockdevExists(self.name.clone()),
                libc::EINVAL => Error::NotWholeBlocks(self.name.clone()),
                _ => classify("add block device", &self.name, e),
            });
        }
        Ok(format!("/dev/riob{r}"))
    }

    /// Removes the object's block device (refused while it is open or mounted).
    pub fn remove_blockdev(&self) -> Result<()> {
        ioctl::<u8>(
            self.file.as_fd(),
            RIO_IOC_BLKDEV_REMOVE,
            std::ptr::null_mut(),
        )
        .map_err(|e| match errno(&e) {
            libc::ENODEV => Error::NoBlockdev(self.name.clone()),
            libc::EBUSY => Error::BlockdevBusy(self.name.clone()),
            _ => classify("remove block device", &self.name, e),
        })
    }

    /// Changes its size; new bytes read as zero.
    pub fn resize(&self, size: u64) -> Result<()> {
        let mut r = RioResize { size };
        ioctl(self.file.as_fd(), RIO_IOC_RESIZE, &mut r)
            .map_err(|e| classify("resize", &self.name, e))
    }

    /// Reads at `offset`; returns bytes read (0 at the end).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.file
            .read_at(buf, offset)
            .map_err(|e| classify("read", &self.name, e))
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| classify("read", &self.name, e))
    }

    /// Writes at `offset`; returns bytes written (short at the object's end).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize> {
        self.file
            .write_at(buf, offset)
            .map_err(|e| classify("write", &self.name, e))
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| classify("write", &self.name, e))
    }
}

impl Object {
    /// Maps `len` bytes of the object from byte `offset` (page aligned) with `MAP_SHARED`,
    /// read-write if the object was opened for writing. With `at`, the mapping is placed at
    /// exactly that address (`MAP_FIXED_NOREPLACE`: an occupied range is an error, never
    /// silently replaced). Every store through the mapping is durable when it executes.
    pub fn map(
        &self,
        at: Option<usize>,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> Result<Mapping> {
        let page = 4096u64;
        if offset % page != 0 || len == 0 || at.is_some_and(|a| a % page as usize != 0) {
            return Err(Error::Os {
                op: "mmap",
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let mut flags = libc::MAP_SHARED;
        if at.is_some() {
            flags |= libc::MAP_FIXED_NOREPLACE;
        }
        let hint = at.unwrap_or(0) as *mut libc::c_void;
        // SAFETY: mmap with a null or caller-chosen hint and MAP_FIXED_NOREPLACE cannot
        // replace an existing mapping; the fd is live.
        let p = unsafe {
            libc::mmap(
                hint,
                len,
                prot,
                flags,
                self.file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(classify(
                "mmap",
                &self.name,
                std::io::Error::last_os_error(),
            ));
        }
        if let Some(a) = at {
            if p as usize != a {
                // An old kernel that ignores MAP_FIXED_NOREPLACE: undo and refuse.
                // SAFETY: `p` is the mapping just made, of `len` bytes.
                unsafe { libc::munmap(p, len) };
                return Err(Error::Os {
                    op: "mmap",
                    source: std::io::Error::from_raw_os_error(libc::EEXIST),
                });
            }
        }
        Ok(Mapping { ptr: p.cast(), len })
    }
}

/// A shared mapping of an object; unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// The start address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: mappings have at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The mapped bytes, for stores (which are durable as they execute). Needs a writable
    /// mapping: a store to a read-only one raises SIGSEGV.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, valid for as long as `self` lives; `&mut self`
        // makes this the only slice handed out. A store to a read-only mapping faults
        // (SIGSEGV) rather than breaking memory safety.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value owns.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl AsFd for Object {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_the_kernel_sees_them() {
        assert!(name_field("ok.name-1").is_ok());
        assert!(matches!(name_field(""), Err(Error::InvalidName(_))));
        assert!(matches!(name_field("a/b"), Err(Error::InvalidName(_))));
        assert!(matches!(
            name_field(&"x".repeat(64)),
            Err(Error::InvalidName(_))
        ));
        assert_eq!(field_name(&name_field("abc").unwrap()), "abc");
    }

    #[test]
    fn errors_are_classified_with_context() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert!(matches!(classify("open", "x", e(libc::ENOENT)), Error::NotFound(n) if n == "x"));
        assert!(matches!(
            classify("create", "x", e(libc::ENOSPC)),
            Error::NoSpace(_)
        ));
        assert!(matches!(
            classify("write", "x", e(libc::EFBIG)),
            Error::PastEnd(_)
        ));
        assert!(matches!(
            classify("create", "x", e(libc::EFBIG)),
            Error::TooBig(_)
        ));
        assert!(matches!(
            classify("open", "x", e(libc::EACCES)),
            Error::PermissionDenied(_)
        ));
        assert!(matches!(
            classify("format", "", e(libc::ENOTEMPTY)),
            Error::NotBlank
        ));
        assert!(classify("read", "x", e(libc::EUCLEAN))
            .to_string()
            .contains("rio format"));
    }
}
