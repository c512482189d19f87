//! The operations of a fuzz run. A run is a list of [`Op`]s generated from a seed; any
//! subset of it (for shrinking) is also a valid run: an op whose handle, mapping or process
//! does not exist in the model when its turn comes is skipped.
//!
//! Handles, mappings and child processes are named by the index of the op that made them
//! (the `open`, `mmap` or `fork`), so the names stay meaningful in any subset.

use std::fmt;

/// A process that does operations: the four base actors, or a child forked by one.
pub type ProcId = u32;

/// A bound `/dev/rio` descriptor: the index of the `open` that bound it.
pub type Handle = u32;

/// A mapping: the index of the `mmap` that made it.
pub type MapId = u32;

/// The base actors, by [`ProcId`]: root (the admin), uid 1000, uid 1001, and uid 1002 that
/// is root of its own user namespace.
pub const BASE_ACTORS: u32 = 4;

/// The first [`ProcId`] of children: `CHILD_BASE + index of the fork`.
pub const CHILD_BASE: u32 = 1_000_000;

/// The object names that the ops use.
pub const NAMES: [&str; 6] = ["o0", "o1", "o2", "o3", "o4", "o5"];

/// How `open` opens the device and binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenHow {
    /// `O_RDONLY`, plain bind.
    ReadOnly,
    /// `O_RDWR`, plain bind.
    ReadWrite,
    /// `O_RDWR`, `OPEN_EXCLUSIVE`.
    Exclusive,
    /// `O_RDONLY`, `OPEN_EXCLUSIVE` (must be refused).
    ExclusiveReadOnly,
}

impl OpenHow {
    /// The device fd is opened for writing.
    pub fn fd_writable(self) -> bool {
        matches!(self, OpenHow::ReadWrite | OpenHow::Exclusive)
    }
    /// The bind asks for exclusivity.
    pub fn exclusive(self) -> bool {
        matches!(self, OpenHow::Exclusive | OpenHow::ExclusiveReadOnly)
    }
}

/// How a riofs `open` opens a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OFlags {
    /// `O_RDONLY` / `O_WRONLY` / `O_RDWR`: (read, write).
    pub read: bool,
    /// See `read`.
    pub write: bool,
    /// `O_CREAT`.
    pub creat: bool,
    /// `O_EXCL` (with `O_CREAT`).
    pub excl: bool,
    /// `O_TRUNC` (only with write access).
    pub trunc: bool,
    /// `O_APPEND`.
    pub append: bool,
}

impl OFlags {
    /// The `open(2)` flags.
    pub fn bits(self) -> i32 {
        let mut f = match (self.read, self.write) {
            (true, true) => libc::O_RDWR,
            (false, true) => libc::O_WRONLY,
            _ => libc::O_RDONLY,
        };
        for (on, b) in [
            (self.creat, libc::O_CREAT),
            (self.excl, libc::O_EXCL),
            (self.trunc, libc::O_TRUNC),
            (self.append, libc::O_APPEND),
        ] {
            if on {
                f |= b;
            }
        }
        f
    }
}

impl fmt::Display for OFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let acc = match (self.read, self.write) {
            (true, true) => "O_RDWR",
            (false, true) => "O_WRONLY",
            _ => "O_RDONLY",
        };
        write!(f, "{acc}")?;
        for (on, n) in [
            (self.creat, "|O_CREAT"),
            (self.excl, "|O_EXCL"),
            (self.trunc, "|O_TRUNC"),
            (self.append, "|O_APPEND"),
        ] {
            if on {
                write!(f, "{n}")?;
            }
        }
        Ok(())
    }
}

/// What an op does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `CREATE` of `NAMES[name]`.
    Create { name: u8, size: u64, mode: u32 },
    /// A new fd, then `OPEN` of `NAMES[name]`; on success the fd is handle `index`.
    Open { name: u8, how: OpenHow },
    /// `OPEN` again on bound handle `h` (must be refused).
    Rebind { h: Handle, name: u8 },
    /// `close` of handle `h`.
    Close { h: Handle },
    /// `pread` of `len` bytes at `off`.
    Pread { h: Handle, off: u64, len: u32 },
    /// `pwrite` of `len` payload bytes at `off`.
    Pwrite { h: Handle, off: u64, len: u32 },
    /// `mmap` of `pages` pages from page `page_off`; on success mapping `index`.
    Mmap {
        h: Handle,
        page_off: u32,
        pages: u32,
        write: bool,
        private: bool,
    },
    /// Stores of `len` payload bytes at byte `off` of the mapping.
    Store { m: MapId, off: u32, len: u32 },
    /// Loads of `len` bytes at byte `off` of the mapping.
    MapRead { m: MapId, off: u32, len: u32 },
    /// `munmap`.
    Munmap { m: MapId },
    /// `RESIZE` on handle `h`.
    Resize { h: Handle, size: u64 },
    /// `DELETE` of `NAMES[name]`.
    Delete { name: u8 },
    /// `LIST`.
    List,
    /// `STAT` on handle `h`.
    Stat { h: Handle },
    /// `STATS`.
    Stats,
    /// `INFO`.
    Info,
    /// `SYNC`.
    Sync,
    /// `BLKDEV_ADD` on handle `h`.
    BlkAdd { h: Handle },
    /// `BLKDEV_REMOVE` on handle `h`.
    BlkRemove { h: Handle },
    /// `fork`: the child (process `CHILD_BASE + index`) inherits fds and mappings.
    Fork,
    /// The child exits (sent to its parent, which kills and reaps it).
    Exit { child: ProcId },
    /// `FORMAT` without force (generated for non-admins only: must be refused).
    Format,
    /// `WILD_STORE` (generated only when the module refuses it for everyone).
    WildStore,
    // ---- riofs (paths are relative to the mount point) ----
    /// `open(path, flags, mode)`; on success the fd is riofs handle `index`.
    FOpen {
        path: String,
        flags: OFlags,
        mode: u32,
    },
    /// `close` of riofs handle `h`.
    FClose { h: Handle },
    /// `pread` on riofs handle `h`.
    FRead { h: Handle, off: u64, len: u32 },
    /// `pwrite` of `len` payload bytes on riofs handle `h`.
    FWrite { h: Handle, off: u64, len: u32 },
    /// `ftruncate` on riofs handle `h`.
    FTruncate { h: Handle, size: u64 },
    /// `fstat` on riofs handle `h`.
    FStat { h: Handle },
    /// `truncate(path)`.
    Truncate { path: String, size: u64 },
    /// `unlink`.
    Unlink { path: String },
    /// `mkdir`.
    Mkdir { path: String, mode: u32 },
    /// `rmdir`.
    Rmdir { path: String },
    /// `rename`.
    Rename { from: String, to: String },
    /// `link` (does not follow a symbolic link `from`).
    Link { from: String, to: String },
    /// `symlink(LINK_TARGETS[target], path)` (targets that never resolve).
    Symlink { path: String, target: u8 },
    /// `chmod` (follows symbolic links).
    Chmod { path: String, mode: u32 },
    /// `chown(path, uid, -1)` (follows symbolic links; `uid` is a kuid).
    Chown { path: String, uid: u32 },
    /// `stat` (`follow`) or `lstat`.
    PStat { path: String, follow: bool },
    /// `mmap` of `pages` pages of riofs handle `h` from page `page_off`: `PROT_READ`, plus
    /// `PROT_WRITE` if `write`; `MAP_SHARED` if `shared`, else `MAP_PRIVATE`. On success
    /// it is riofs mapping `index` (it holds the open file description, as the VMA does).
    FMmap {
        h: Handle,
        page_off: u32,
        pages: u32,
        write: bool,
        shared: bool,
    },
    /// Stores of `len` payload bytes at byte `off` of riofs mapping `m` (one byte at a
    /// time, upwards: a store that runs into a page past the end of the file has stored
    /// the bytes before that page when `SIGBUS` comes).
    FStore { m: MapId, off: u32, len: u32 },
    /// Loads of `len` bytes at byte `off` of riofs mapping `m`.
    FLoad { m: MapId, off: u32, len: u32 },
    /// `msync` of `len` bytes at byte `off` of riofs mapping `m` with
    /// `MSYNC_FLAGS[flags]`.
    FMsync {
        m: MapId,
        off: u32,
        len: u32,
        flags: u8,
    },
    /// `munmap` of riofs mapping `m`.
    FMunmap { m: MapId },
}

/// The `msync` flags that [`OpKind::FMsync`] uses (the last two are invalid: both
/// `MS_SYNC` and `MS_ASYNC`, and an unknown bit).
pub const MSYNC_FLAGS: [i32; 8] = [
    libc::MS_SYNC,
    libc::MS_ASYNC,
    libc::MS_INVALIDATE,
    libc::MS_SYNC | libc::MS_INVALIDATE,
    libc::MS_ASYNC | libc::MS_INVALIDATE,
    0,
    libc::MS_SYNC | libc::MS_ASYNC,
    8,
];

/// The `msync` flags of [`OpKind::FMsync`]'s `flags` index (an out-of-range index is the
/// unknown bit).
pub fn msync_flags(i: u8) -> i32 {
    MSYNC_FLAGS.get(usize::from(i)).copied().unwrap_or(8)
}

/// One operation: who does what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The process that does it.
    pub proc: ProcId,
    /// What it does.
    pub kind: OpKind,
}

/// A process's name in reports.
pub fn proc_name(p: ProcId) -> String {
    match p {
        0 => "root".into(),
        1 => "u1000".into(),
        2 => "u1001".into(),
        3 => "nsroot".into(),
        p if p >= CHILD_BASE => format!("child{}", p - CHILD_BASE),
        p => format!("proc{p}"),
    }
}

fn name(n: u8) -> &'static str {
    NAMES.get(usize::from(n)).copied().unwrap_or("?")
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", proc_name(self.proc))?;
        match &self.kind {
            OpKind::Create {
                name: n,
                size,
                mode,
            } => {
                write!(f, "create {} size={size} mode={mode:o}", name(*n))
            }
            OpKind::Open { name: n, how } => write!(f, "open {} {how:?}", name(*n)),
            OpKind::Rebind { h, name: n } => write!(f, "rebind h{h} to {}", name(*n)),
            OpKind::Close { h } => write!(f, "close h{h}"),
            OpKind::Pread { h, off, len } => write!(f, "pread h{h} off={off} len={len}"),
            OpKind::Pwrite { h, off, len } => write!(f, "pwrite h{h} off={off} len={len}"),
            OpKind::Mmap {
                h,
                page_off,
                pages,
                write,
                private,
            } => write!(
                f,
                "mmap h{h} page_off={page_off} pages={pages} {} {}",
                if *write { "rw" } else { "ro" },
                if *private { "private" } else { "shared" }
            ),
            OpKind::Store { m, off, len } => write!(f, "store m{m} off={off} len={len}"),
            OpKind::MapRead { m, off, len } => write!(f, "load m{m} off={off} len={len}"),
            OpKind::Munmap { m } => write!(f, "munmap m{m}"),
            OpKind::Resize { h, size } => write!(f, "resize h{h} size={size}"),
            OpKind::Delete { name: n } => write!(f, "delete {}", name(*n)),
            OpKind::List => write!(f, "list"),
            OpKind::Stat { h } => write!(f, "stat h{h}"),
            OpKind::Stats => write!(f, "stats"),
            OpKind::Info => write!(f, "info"),
            OpKind::Sync => write!(f, "sync"),
            OpKind::BlkAdd { h } => write!(f, "blkdev add h{h}"),
            OpKind::BlkRemove { h } => write!(f, "blkdev remove h{h}"),
            OpKind::Fork => write!(f, "fork"),
            OpKind::Exit { child } => write!(f, "exit {}", proc_name(*child)),
            OpKind::Format => write!(f, "format (no force)"),
            OpKind::WildStore => write!(f, "wild store"),
            OpKind::FOpen { path, flags, mode } => {
                write!(f, "fs open {path:?} {flags} mode={mode:o}")
            }
            OpKind::FClose { h } => write!(f, "fs close f{h}"),
            OpKind::FRead { h, off, len } => write!(f, "fs pread f{h} off={off} len={len}"),
            OpKind::FWrite { h, off, len } => write!(f, "fs pwrite f{h} off={off} len={len}"),
            OpKind::FTruncate { h, size } => write!(f, "fs ftruncate f{h} size={size}"),
            OpKind::FStat { h } => write!(f, "fs fstat f{h}"),
            OpKind::Truncate { path, size } => write!(f, "fs truncate {path:?} size={size}"),
            OpKind::Unlink { path } => write!(f, "fs unlink {path:?}"),
            OpKind::Mkdir { path, mode } => write!(f, "fs mkdir {path:?} mode={mode:o}"),
            OpKind::Rmdir { path } => write!(f, "fs rmdir {path:?}"),
            OpKind::Rename { from, to } => write!(f, "fs rename {from:?} -> {to:?}"),
            OpKind::Link { from, to } => write!(f, "fs link {from:?} -> {to:?}"),
            OpKind::Symlink { path, target } => write!(f, "fs symlink {path:?} (target {target})"),
            OpKind::Chmod { path, mode } => write!(f, "fs chmod {path:?} {mode:o}"),
            OpKind::Chown { path, uid } => write!(f, "fs chown {path:?} uid={uid}"),
            OpKind::PStat { path, follow } => {
                write!(f, "fs {} {path:?}", if *follow { "stat" } else { "lstat" })
            }
            OpKind::FMmap {
                h,
                page_off,
                pages,
                write,
                shared,
            } => write!(
                f,
                "fs mmap f{h} page_off={page_off} pages={pages} {} {}",
                if *write { "rw" } else { "ro" },
                if *shared { "shared" } else { "private" }
            ),
            OpKind::FStore { m, off, len } => write!(f, "fs store fm{m} off={off} len={len}"),
            OpKind::FLoad { m, off, len } => write!(f, "fs load fm{m} off={off} len={len}"),
            OpKind::FMsync { m, off, len, flags } => write!(
                f,
                "fs msync fm{m} off={off} len={len} flags={:#x}",
                msync_flags(*flags)
            ),
            OpKind::FMunmap { m } => write!(f, "fs munmap fm{m}"),
        }
    }
}

impl OpKind {
    /// The op's kind as one word (for failure signatures).
    pub fn word(&self) -> &'static str {
        match self {
            OpKind::Create { .. } => "create",
            OpKind::Open { .. } => "open",
            OpKind::Rebind { .. } => "rebind",
            OpKind::Close { .. } => "close",
            OpKind::Pread { .. } => "pread",
            OpKind::Pwrite { .. } => "pwrite",
            OpKind::Mmap { .. } => "mmap",
            OpKind::Store { .. } => "store",
            OpKind::MapRead { .. } => "load",
            OpKind::Munmap { .. } => "munmap",
            OpKind::Resize { .. } => "resize",
            OpKind::Delete { .. } => "delete",
            OpKind::List => "list",
            OpKind::Stat { .. } => "stat",
            OpKind::Stats => "stats",
            OpKind::Info => "info",
            OpKind::Sync => "sync",
            OpKind::BlkAdd { .. } => "blkdev-add",
            OpKind::BlkRemove { .. } => "blkdev-remove",
            OpKind::Fork => "fork",
            OpKind::Exit { .. } => "exit",
            OpKind::Format => "format",
            OpKind::WildStore => "wild-store",
            OpKind::FOpen { .. } => "fs-open",
            OpKind::FClose { .. } => "fs-close",
            OpKind::FRead { .. } => "fs-pread",
            OpKind::FWrite { .. } => "fs-pwrite",
            OpKind::FTruncate { .. } => "fs-ftruncate",
            OpKind::FStat { .. } => "fs-fstat",
            OpKind::Truncate { .. } => "fs-truncate",
            OpKind::Unlink { .. } => "fs-unlink",
            OpKind::Mkdir { .. } => "fs-mkdir",
            OpKind::Rmdir { .. } => "fs-rmdir",
            OpKind::Rename { .. } => "fs-rename",
            OpKind::Link { .. } => "fs-link",
            OpKind::Symlink { .. } => "fs-symlink",
            OpKind::Chmod { .. } => "fs-chmod",
            OpKind::Chown { .. } => "fs-chown",
            OpKind::PStat { .. } => "fs-stat",
            OpKind::FMmap { .. } => "fs-mmap",
            OpKind::FStore { .. } => "fs-store",
            OpKind::FLoad { .. } => "fs-load",
            OpKind::FMsync { .. } => "fs-msync",
            OpKind::FMunmap { .. } => "fs-munmap",
        }
    }

    /// Whether this is a riofs op.
    pub fn is_fs(&self) -> bool {
        self.word().starts_with("fs-")
    }
}

/// A set of op indices, written `1,4-9,12`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSet(pub std::collections::BTreeSet<u32>);

/// A malformed index list.
#[derive(Debug, thiserror::Error)]
#[error("bad op index list {0:?}: expected numbers and ranges like 1,4-9,12")]
pub struct BadIndexList(pub String);

impl std::str::FromStr for IndexSet {
    type Err = BadIndexList;
    fn from_str(s: &str) -> Result<IndexSet, BadIndexList> {
        let bad = || BadIndexList(s.to_string());
        let mut set = std::collections::BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: u32 = a.parse().map_err(|_| bad())?;
                    let b: u32 = b.parse().map_err(|_| bad())?;
                    if a > b || b - a > 10_000_000 {
                        return Err(bad());
                    }
                    set.extend(a..=b);
                }
                None => {
                    set.insert(part.parse().map_err(|_| bad())?);
                }
            }
        }
        Ok(IndexSet(set))
    }
}

impl fmt::Display for IndexSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<u32> = self.0.iter().copied().collect();
        let mut i = 0;
        let mut first = true;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            if !first {
                write!(f, ",")?;
            }
            first = false;
            if j > i {
                write!(f, "{}-{}", v[i], v[j])?;
            } else {
                write!(f, "{}", v[i])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

/// Which ops of the generated list a run executes.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only these (all if `None`).
    pub only: Option<IndexSet>,
    /// Never these.
    pub skip: IndexSet,
}

impl Selection {
    /// Whether op `i` runs.
    pub fn runs(&self, i: u32) -> bool {
        self.only.as_ref().is_none_or(|o| o.0.contains(&i)) && !self.skip.0.contains(&i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_round_trip() {
        let s: IndexSet = "1,4-9, 12,13".parse().unwrap();
        assert_eq!(s.0.len(), 9);
        assert_eq!(s.to_string(), "1,4-9,12-13");
        assert!("3-1".parse::<IndexSet>().is_err());
        assert!("x".parse::<IndexSet>().is_err());
        let sel = Selection {
            only: Some(s),
            skip: "5".parse().unwrap(),
        };
        assert!(sel.runs(4) && !sel.runs(5) && !sel.runs(2));
    }
}
