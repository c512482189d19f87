//! The model of riofs as the fuzzer's ops see it: a POSIX tree with the VFS's permission
//! rules (no ACLs, no set-id bits, `fs.protected_*` off), one method per system call that
//! checks its conditions in the order Linux reports them.
//!
//! Simplifications that keep it exact: symbolic links point to [`LINK_TARGETS`], which
//! never resolve (following one gives `ENOENT`); names are never `.` or `..`; every write
//! is at most [`MAX_WRITE`] bytes (one riofs transaction, so a write in flight at a crash is
//! all or nothing); directory sizes are not compared (they are riofs's business).
//!
//! Who may do what ("privileged over an inode" is `capable_wrt_inode_uidgid`): root always;
//! the namespaced actor (root of a user namespace mapping only 1002) over inodes whose uid
//! and gid are both 1002.
//!
//! Mappings (`mmap(MAP_SHARED)`): riofs maps the arena frames of a file, so a mapping sees
//! the file's *page image* ([`Fs::image`]): its bytes, then the rest of its last page (the
//! *tail*). Stores and loads are in the file at once, both ways, for every process; a page
//! at or past the end of the file rounded up to a page is `SIGBUS`. The tail is what
//! stores through a mapping left past the end: riofs zeroes it whenever the size changes
//! (and before a write that starts past the end), so the file's bytes never show it; a
//! write that starts at or before the end leaves the tail past its own end as it was.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Identity, OVERFLOW_UID};
use crate::ops::{Handle, OFlags};

/// Where the coordinator mounts the riofs.
pub const MOUNT: &str = "/mnt/rfz";
/// The Rio object that holds it.
pub const FS_OBJECT: &str = "rfz";
/// Its size.
pub const FS_SIZE: u64 = 16 << 20;
/// The actors' umask.
pub const UMASK: u32 = 0o002;
/// Targets of the symbolic links (outside riofs, never existing).
pub const LINK_TARGETS: [&str; 2] = ["/nonexistent/t0", "/nonexistent/rfz-target-1"];
/// The directories the coordinator makes before the history: name, mode, owner (uid and
/// gid). The root of the file system is root's, mode 0755.
pub const TOPS: [(&str, u32, u32); 5] = [
    ("pub", 0o1777, 0),
    ("u1000", 0o700, 1000),
    ("u1001", 0o700, 1001),
    ("u1002", 0o700, 1002),
    ("ro", 0o755, 0),
];
/// Names the ops use below the top directories.
pub const LEAVES: [&str; 6] = ["f0", "f1", "f2", "d0", "d1", "l0"];
/// Largest write.
pub const MAX_WRITE: u32 = 8192;
/// Files stay below this size (offsets and truncations are generated below it).
pub const MAX_FILE: u64 = 48 << 10;

const EPERM: i32 = libc::EPERM;
const ENOENT: i32 = libc::ENOENT;
const EACCES: i32 = libc::EACCES;
const EEXIST: i32 = libc::EEXIST;
const ENOTDIR: i32 = libc::ENOTDIR;
const EISDIR: i32 = libc::EISDIR;
const EINVAL: i32 = libc::EINVAL;
const ENOTEMPTY: i32 = libc::ENOTEMPTY;
const EBADF: i32 = libc::EBADF;
const ENODEV: i32 = libc::ENODEV;

const MAY_EXEC: u32 = 1;
const MAY_WRITE: u32 = 2;
const MAY_READ: u32 = 4;

/// `S_IFREG`, `S_IFDIR`, `S_IFLNK`.
pub const S_IFREG: u32 = 0o100000;
/// See [`S_IFREG`].
pub const S_IFDIR: u32 = 0o040000;
/// See [`S_IFREG`].
pub const S_IFLNK: u32 = 0o120000;

/// The root directory's inode (in the model).
pub const ROOT: u32 = 1;

/// The page size (of mappings and of riofs blocks).
pub const PAGE: u64 = 4096;

/// `size` rounded up to a page: where the pages a mapping may touch end.
pub fn page_end(size: u64) -> u64 {
    size.div_ceil(PAGE) * PAGE
}

/// What an inode is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file and its bytes.
    File(Vec<u8>),
    /// A directory: name -> inode.
    Dir(BTreeMap<String, u32>),
    /// A symbolic link and its target.
    Link(String),
}

/// An inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Permission bits (and the sticky bit).
    pub mode: u32,
    /// Owner (kuid).
    pub uid: u32,
    /// Group (kgid).
    pub gid: u32,
    /// Names (files and links; directories: see [`Fs::nlink`]).
    pub links: u32,
    /// A directory that was removed (kept while a descriptor holds it).
    pub dead: bool,
}

impl Node {
    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }
    fn type_bits(&self) -> u32 {
        match self.kind {
            Kind::File(_) => S_IFREG,
            Kind::Dir(_) => S_IFDIR,
            Kind::Link(_) => S_IFLNK,
        }
    }
    fn size(&self) -> u64 {
        match &self.kind {
            Kind::File(d) => d.len() as u64,
            Kind::Link(t) => t.len() as u64,
            Kind::Dir(_) => 0,
        }
    }
}

/// An open file description of riofs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RFile {
    /// Its inode.
    pub ino: u32,
    /// Opened for reading.
    pub read: bool,
    /// Opened for writing.
    pub write: bool,
    /// `O_APPEND`.
    pub append: bool,
    /// Descriptors (over all processes) that hold it.
    pub refs: u32,
}

/// What `stat` says (ids as the caller sees them; a directory's size is not modelled and
/// is compared as 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// `st_uid`.
    pub uid: u32,
    /// `st_gid`.
    pub gid: u32,
    /// `st_nlink`.
    pub nlink: u32,
    /// `st_size` (0 for directories).
    pub size: u64,
}

/// One entry of a tree listing (for verify): path (`""` for the root), stat as root, and
/// the contents of a file or the target of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path below the mount point.
    pub path: String,
    /// What `lstat` says as root.
    pub st: FileStat,
    /// File bytes or link target.
    pub data: Vec<u8>,
}

/// The file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fs {
    /// Inodes.
    pub nodes: BTreeMap<u32, Node>,
    next: u32,
    /// Open file descriptions by handle (held by descriptors and by mappings).
    pub files: BTreeMap<Handle, RFile>,
    /// The tails of files whose tail is not all zero (see the module's documentation).
    tails: BTreeMap<u32, Vec<u8>>,
}

type R<T> = Result<T, i32>;

/// What a riofs op changes and answers, decided by [`Fs`].
pub enum Answer {
    /// Success with this value.
    Ok(u64),
    /// These bytes.
    Data(Vec<u8>),
    /// A stat.
    Stat(FileStat),
    /// A new open file description for the op's handle.
    Opened(RFile),
}

fn gid_of(who: &Identity) -> u32 {
    who.kuid
}

/// How id `k` shows to `who` (uid or gid: the namespaced actor maps both the same way).
pub fn view_id(who: &Identity, k: u32) -> u32 {
    match who.ns_root_of {
        Some(o) if k == o => 0,
        Some(_) => OVERFLOW_UID,
        None => k,
    }
}

fn comps(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

impl Default for Fs {
    fn default() -> Self {
        Fs::new()
    }
}

impl Fs {
    /// The tree the coordinator makes: the root (0755 root) and [`TOPS`].
    pub fn new() -> Fs {
        let mut fs = Fs {
            nodes: BTreeMap::new(),
            next: ROOT + 1,
            files: BTreeMap::new(),
            tails: BTreeMap::new(),
        };
        fs.nodes.insert(
            ROOT,
            Node {
                kind: Kind::Dir(BTreeMap::new()),
                mode: 0o755,
                uid: 0,
                gid: 0,
                links: 0,
                dead: false,
            },
        );
        for (name, mode, owner) in TOPS {
            let ino = fs.alloc(Kind::Dir(BTreeMap::new()), mode, owner, owner);
            fs.dir_mut(ROOT).insert(name.to_string(), ino);
        }
        fs
    }

    /// The states the coordinator's setup passes through (a crash may come in the middle
    /// of it): the empty root, then per top directory `mkdir` (0700, root's), `chown`,
    /// `chmod`. The last is [`Fs::new`].
    pub fn setup_states() -> Vec<Fs> {
        let mut fs = Fs::new();
        fs.dir_mut(ROOT).clear();
        fs.nodes.retain(|&k, _| k == ROOT);
        fs.next = ROOT + 1;
        let mut out = vec![fs.clone()];
        for (name, mode, owner) in TOPS {
            let ino = fs.alloc(Kind::Dir(BTreeMap::new()), 0o700, 0, 0);
            fs.dir_mut(ROOT).insert(name.to_string(), ino);
            out.push(fs.clone());
            let n = fs.nodes.get_mut(&ino).expect("inode");
            (n.uid, n.gid) = (owner, owner);
            out.push(fs.clone());
            fs.nodes.get_mut(&ino).expect("inode").mode = mode;
            out.push(fs.clone());
        }
        out
    }

    fn alloc(&mut self, kind: Kind, mode: u32, uid: u32, gid: u32) -> u32 {
        let ino = self.next;
        self.next += 1;
        let links = u32::from(!matches!(kind, Kind::Dir(_)));
        self.nodes.insert(
            ino,
            Node {
                kind,
                mode,
                uid,
                gid,
                links,
                dead: false,
            },
        );
        ino
    }

    fn node(&self, ino: u32) -> &Node {
        &self.nodes[&ino]
    }

    fn dir(&self, ino: u32) -> &BTreeMap<String, u32> {
        match &self.node(ino).kind {
            Kind::Dir(d) => d,
            _ => panic!("inode {ino} is not a directory"),
        }
    }

    fn dir_mut(&mut self, ino: u32) -> &mut BTreeMap<String, u32> {
        match &mut self.nodes.get_mut(&ino).expect("inode").kind {
            Kind::Dir(d) => d,
            _ => panic!("inode {ino} is not a directory"),
        }
    }

    /// `st_nlink`.
    pub fn nlink(&self, ino: u32) -> u32 {
        let n = self.node(ino);
        match &n.kind {
            Kind::Dir(d) if !n.dead => {
                2 + d.values().filter(|c| self.node(**c).is_dir()).count() as u32
            }
            Kind::Dir(_) => 0,
            _ => n.links,
        }
    }

    fn privileged(who: &Identity, n: &Node) -> bool {
        who.admin || who.ns_root_of.is_some_and(|k| n.uid == k && n.gid == k)
    }

    /// `inode_permission` (`generic_permission` without ACLs; nothing is executed).
    fn permitted(who: &Identity, n: &Node, mask: u32) -> bool {
        let bits = if who.kuid == n.uid {
            n.mode >> 6
        } else if gid_of(who) == n.gid {
            n.mode >> 3
        } else {
            n.mode
        } & 7;
        mask & !bits == 0 || Fs::privileged(who, n)
    }

    fn need(&self, who: &Identity, ino: u32, mask: u32) -> R<()> {
        if Fs::permitted(who, self.node(ino), mask) {
            Ok(())
        } else {
            Err(EACCES)
        }
    }

    /// The path walk up to the last component: its directory and name.
    fn parent<'p>(&self, who: &Identity, path: &'p str) -> R<(u32, &'p str)> {
        let c = comps(path);
        let mut cur = ROOT;
        for (i, name) in c.iter().enumerate() {
            self.need(who, cur, MAY_EXEC)?;
            if i + 1 == c.len() {
                return Ok((cur, name));
            }
            let ino = *self.dir(cur).get(*name).ok_or(ENOENT)?;
            match self.node(ino).kind {
                Kind::Dir(_) => cur = ino,
                // Following the link leaves the file system for a path that does not exist.
                Kind::Link(_) => return Err(ENOENT),
                Kind::File(_) => return Err(ENOTDIR),
            }
        }
        Err(ENOENT)
    }

    fn lookup(&self, dir: u32, name: &str) -> Option<u32> {
        self.dir(dir).get(name).copied()
    }

    /// The inode `path` names (following a final symbolic link if `follow`).
    fn resolve(&self, who: &Identity, path: &str, follow: bool) -> R<u32> {
        let (d, n) = self.parent(who, path)?;
        let ino = self.lookup(d, n).ok_or(ENOENT)?;
        if follow && matches!(self.node(ino).kind, Kind::Link(_)) {
            return Err(ENOENT);
        }
        Ok(ino)
    }

    /// The directory's path components (for the rename ancestry checks): directories are
    /// never linked twice, so the path is unique.
    fn path_of_dir(&self, ino: u32) -> Vec<String> {
        fn find(fs: &Fs, at: u32, want: u32, acc: &mut Vec<String>) -> bool {
            if at == want {
                return true;
            }
            for (name, &c) in fs.dir(at) {
                if fs.node(c).is_dir() {
                    acc.push(name.clone());
                    if find(fs, c, want, acc) {
                        return true;
                    }
                    acc.pop();
                }
            }
            false
        }
        let mut acc = Vec::new();
        find(self, ROOT, ino, &mut acc);
        acc
    }

    /// The sticky-bit rule: `true` if `who` may not remove `victim` from `dir`.
    fn sticky_denies(&self, who: &Identity, dir: u32, victim: u32) -> bool {
        let d = self.node(dir);
        let v = self.node(victim);
        d.mode & 0o1000 != 0 && who.kuid != v.uid && who.kuid != d.uid && !Fs::privileged(who, v)
    }

    /// `may_delete`: may `who` remove `victim` from `dir` (`is_dir`: as a directory)?
    fn may_delete(&self, who: &Identity, dir: u32, victim: u32, is_dir: bool) -> R<()> {
        self.need(who, dir, MAY_WRITE | MAY_EXEC)?;
        if self.sticky_denies(who, dir, victim) {
            return Err(EPERM);
        }
        let v = self.node(victim).is_dir();
        if is_dir && !v {
            return Err(ENOTDIR);
        }
        if !is_dir && v {
            return Err(EISDIR);
        }
        Ok(())
    }

    fn unlink_name(&mut self, dir: u32, name: &str) {
        let Some(ino) = self.dir_mut(dir).remove(name) else {
            return;
        };
        let n = self.nodes.get_mut(&ino).expect("inode");
        if n.is_dir() {
            n.dead = true;
        } else {
            n.links = n.links.saturating_sub(1);
        }
        self.gc(ino);
    }

    fn gc(&mut self, ino: u32) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        let gone = if n.is_dir() { n.dead } else { n.links == 0 };
        if gone && !self.files.values().any(|f| f.ino == ino) {
            self.nodes.remove(&ino);
            self.tails.remove(&ino);
        }
    }

    fn stat_of(&self, who: &Identity, ino: u32) -> FileStat {
        let n = self.node(ino);
        FileStat {
            mode: n.type_bits() | n.mode,
            uid: view_id(who, n.uid),
            gid: view_id(who, n.gid),
            nlink: self.nlink(ino),
            size: n.size(),
        }
    }

    /// A size change (`truncate`, `ftruncate`, `O_TRUNC`). riofs zeroes the tail when the
    /// size changes (shrinking: what lies past the new end in its page; growing: the old
    /// tail, and the new pages are holes); the same size changes nothing, not even the tail.
    fn set_size(&mut self, ino: u32, size: u64) {
        if let Kind::File(d) = &mut self.nodes.get_mut(&ino).expect("inode").kind {
            if d.len() as u64 != size {
                d.resize(size as usize, 0);
                self.tails.remove(&ino);
            }
        }
    }

    /// The page image of file `ino`: its bytes, then its tail (up to [`page_end`] of its
    /// size). `None` if `ino` is not a regular file.
    pub fn image(&self, ino: u32) -> Option<Vec<u8>> {
        let Kind::File(d) = &self.nodes.get(&ino)?.kind else {
            return None;
        };
        let mut img = d.clone();
        match self.tails.get(&ino) {
            Some(t) => img.extend_from_slice(t),
            None => img.resize(page_end(d.len() as u64) as usize, 0),
        }
        Some(img)
    }

    /// Sets file `ino` to the first `size` bytes of `img` and its tail to the rest (`img`
    /// must be [`page_end`]`(size)` long).
    fn set_image(&mut self, ino: u32, mut img: Vec<u8>, size: usize) {
        let tail = img.split_off(size);
        if let Some(Node {
            kind: Kind::File(d),
            ..
        }) = self.nodes.get_mut(&ino)
        {
            *d = img;
            if tail.iter().any(|&b| b != 0) {
                self.tails.insert(ino, tail);
            } else {
                self.tails.remove(&ino);
            }
        }
    }

    // ---- the system calls ---------------------------------------------------------------

    /// `open`.
    pub fn open(&mut self, who: &Identity, path: &str, fl: OFlags, mode: u32) -> R<Answer> {
        let (dir, name) = self.parent(who, path)?;
        let file = |ino| RFile {
            ino,
            read: fl.read,
            write: fl.write,
            append: fl.append,
            refs: 1,
        };
        let ino = match self.lookup(dir, name) {
            None if fl.creat => {
                self.need(who, dir, MAY_WRITE | MAY_EXEC)?;
                let m = mode & 0o7777 & !UMASK;
                let ino = self.alloc(Kind::File(Vec::new()), m, who.kuid, gid_of(who));
                self.dir_mut(dir).insert(name.to_string(), ino);
                // A file this open created is not checked against its mode.
                return Ok(Answer::Opened(file(ino)));
            }
            None => return Err(ENOENT),
            Some(ino) => ino,
        };
        if fl.creat && fl.excl {
            return Err(EEXIST);
        }
        let n = self.node(ino);
        if matches!(n.kind, Kind::Link(_)) {
            return Err(ENOENT);
        }
        if n.is_dir() && (fl.creat || fl.write || fl.trunc) {
            return Err(EISDIR);
        }
        let mut mask = 0;
        if fl.read {
            mask |= MAY_READ;
        }
        if fl.write || fl.trunc {
            mask |= MAY_WRITE;
        }
        self.need(who, ino, mask)?;
        if fl.trunc && !n.is_dir() {
            self.set_size(ino, 0);
        }
        Ok(Answer::Opened(file(ino)))
    }

    /// `pread` on an open file.
    pub fn pread(&self, f: &RFile, off: u64, len: u32) -> R<Answer> {
        if !f.read {
            return Err(EBADF);
        }
        match &self.node(f.ino).kind {
            Kind::File(d) => {
                let s = (off as usize).min(d.len());
                let e = (s + len as usize).min(d.len());
                Ok(Answer::Data(d[s..e].to_vec()))
            }
            _ => Err(EISDIR),
        }
    }

    /// `pwrite` of `bytes` (at the end with `O_APPEND`, whatever `off` says). A write that
    /// starts past the end zeroes the tail first (the gap reads as zeros); one that starts
    /// at or before the end leaves the tail past its own end alone.
    pub fn pwrite(&mut self, f: &RFile, off: u64, bytes: &[u8]) -> R<Answer> {
        if !f.write {
            return Err(EBADF);
        }
        let Some(mut img) = self.image(f.ino) else {
            return Err(EINVAL);
        };
        if bytes.is_empty() {
            return Ok(Answer::Ok(0));
        }
        let size = self.size_of_ino(f.ino) as usize;
        let at = if f.append { size } else { off as usize };
        if at > size {
            img[size..].fill(0);
        }
        let end = at + bytes.len();
        if img.len() < end {
            img.resize(page_end(end as u64) as usize, 0);
        }
        img[at..end].copy_from_slice(bytes);
        self.set_image(f.ino, img, size.max(end));
        Ok(Answer::Ok(bytes.len() as u64))
    }

    fn size_of_ino(&self, ino: u32) -> u64 {
        self.nodes.get(&ino).map_or(0, Node::size)
    }

    /// `mmap` of an open file (the checks of `do_mmap`, in its order; a length of zero is
    /// never asked): a shared writable mapping needs a description open for writing, every
    /// mapping one open for reading, and only regular files can be mapped.
    pub fn mmap(&self, f: &RFile, write: bool, shared: bool) -> R<()> {
        if shared && write && !f.write {
            return Err(EACCES);
        }
        if !f.read {
            return Err(EACCES);
        }
        match self.nodes.get(&f.ino).map(|n| &n.kind) {
            Some(Kind::File(_)) => Ok(()),
            _ => Err(ENODEV),
        }
    }

    /// Stores `bytes` at byte `at` of file `ino`'s page image: those below its end (the
    /// bytes past it are the part of a store that `SIGBUS` stops).
    pub fn store(&mut self, ino: u32, at: u64, bytes: &[u8]) {
        let Some(mut img) = self.image(ino) else {
            return;
        };
        let at = at as usize;
        let end = (at + bytes.len()).min(img.len());
        if at >= end {
            return;
        }
        img[at..end].copy_from_slice(&bytes[..end - at]);
        let size = self.size_of_ino(ino) as usize;
        self.set_image(ino, img, size);
    }

    /// The names (paths) of inode `ino`.
    pub fn names_of(&self, ino: u32) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((p, dir)) = stack.pop() {
            for (name, &c) in self.dir(dir) {
                let q = if p.is_empty() {
                    name.clone()
                } else {
                    format!("{p}/{name}")
                };
                if c == ino {
                    out.push(q.clone());
                }
                if self.node(c).is_dir() {
                    stack.push((q, c));
                }
            }
        }
        out.sort();
        out
    }

    /// `ftruncate`.
    pub fn ftruncate(&mut self, f: &RFile, size: u64) -> R<Answer> {
        if !f.write || !matches!(self.node(f.ino).kind, Kind::File(_)) {
            return Err(EINVAL);
        }
        self.set_size(f.ino, size);
        Ok(Answer::Ok(0))
    }

    /// `fstat`.
    pub fn fstat(&self, who: &Identity, f: &RFile) -> R<Answer> {
        Ok(Answer::Stat(self.stat_of(who, f.ino)))
    }

    /// `truncate`.
    pub fn truncate(&mut self, who: &Identity, path: &str, size: u64) -> R<Answer> {
        let ino = self.resolve(who, path, true)?;
        if self.node(ino).is_dir() {
            return Err(EISDIR);
        }
        self.need(who, ino, MAY_WRITE)?;
        self.set_size(ino, size);
        Ok(Answer::Ok(0))
    }

    /// `unlink`.
    pub fn unlink(&mut self, who: &Identity, path: &str) -> R<Answer> {
        let (dir, name) = self.parent(who, path)?;
        let ino = self.lookup(dir, name).ok_or(ENOENT)?;
        self.may_delete(who, dir, ino, false)?;
        self.unlink_name(dir, name);
        Ok(Answer::Ok(0))
    }

    /// `rmdir`.
    pub fn rmdir(&mut self, who: &Identity, path: &str) -> R<Answer> {
        let (dir, name) = self.parent(who, path)?;
        let ino = self.lookup(dir, name).ok_or(ENOENT)?;
        self.may_delete(who, dir, ino, true)?;
        if !self.dir(ino).is_empty() {
            return Err(ENOTEMPTY);
        }
        self.unlink_name(dir, name);
        Ok(Answer::Ok(0))
    }

    /// Where a new name goes (`filename_create` and `may_create`).
    fn creating<'p>(&self, who: &Identity, path: &'p str) -> R<(u32, &'p str)> {
        let (dir, name) = self.parent(who, path)?;
        if self.lookup(dir, name).is_some() {
            return Err(EEXIST);
        }
        self.need(who, dir, MAY_WRITE | MAY_EXEC)?;
        Ok((dir, name))
    }

    /// `mkdir`.
    pub fn mkdir(&mut self, who: &Identity, path: &str, mode: u32) -> R<Answer> {
        let (dir, name) = self.creating(who, path)?;
        let m = mode & 0o1777 & !UMASK;
        let ino = self.alloc(Kind::Dir(BTreeMap::new()), m, who.kuid, gid_of(who));
        self.dir_mut(dir).insert(name.to_string(), ino);
        Ok(Answer::Ok(0))
    }

    /// `symlink`.
    pub fn symlink(&mut self, who: &Identity, path: &str, target: &str) -> R<Answer> {
        let (dir, name) = self.creating(who, path)?;
        let ino = self.alloc(Kind::Link(target.into()), 0o777, who.kuid, gid_of(who));
        self.dir_mut(dir).insert(name.to_string(), ino);
        Ok(Answer::Ok(0))
    }

    /// `link`.
    pub fn link(&mut self, who: &Identity, from: &str, to: &str) -> R<Answer> {
        let ino = self.resolve(who, from, false)?;
        let (dir, name) = self.creating(who, to)?;
        if self.node(ino).is_dir() {
            return Err(EPERM);
        }
        self.nodes.get_mut(&ino).expect("inode").links += 1;
        self.dir_mut(dir).insert(name.to_string(), ino);
        Ok(Answer::Ok(0))
    }

    /// `rename` (no flags).
    pub fn rename(&mut self, who: &Identity, from: &str, to: &str) -> R<Answer> {
        let (od, on) = self.parent(who, from)?;
        let (nd, nn) = self.parent(who, to)?;
        let ino = self.lookup(od, on).ok_or(ENOENT)?;
        let target = self.lookup(nd, nn);
        if od != nd {
            // lock_rename's trap: the child of the ancestor on the way to the other.
            let (op, np) = (self.path_of_dir(od), self.path_of_dir(nd));
            if np.len() > op.len() && np.starts_with(&op) && np[op.len()] == on {
                return Err(EINVAL);
            }
            if op.len() > np.len() && op.starts_with(&np) && op[np.len()] == nn {
                return Err(ENOTEMPTY);
            }
        }
        if target == Some(ino) {
            return Ok(Answer::Ok(0));
        }
        let is_dir = self.node(ino).is_dir();
        self.may_delete(who, od, ino, is_dir)?;
        match target {
            None => self.need(who, nd, MAY_WRITE | MAY_EXEC)?,
            Some(t) => self.may_delete(who, nd, t, is_dir)?,
        }
        if od != nd && is_dir {
            self.need(who, ino, MAY_WRITE)?;
        }
        if let Some(t) = target {
            if self.node(t).is_dir() && !self.dir(t).is_empty() {
                return Err(ENOTEMPTY);
            }
            self.unlink_name(nd, nn);
        }
        self.dir_mut(od).remove(on);
        self.dir_mut(nd).insert(nn.to_string(), ino);
        Ok(Answer::Ok(0))
    }

    /// `chmod`.
    pub fn chmod(&mut self, who: &Identity, path: &str, mode: u32) -> R<Answer> {
        let ino = self.resolve(who, path, true)?;
        let n = self.nodes.get_mut(&ino).expect("inode");
        if !who.admin && who.kuid != n.uid {
            return Err(EPERM);
        }
        n.mode = mode & 0o7777;
        Ok(Answer::Ok(0))
    }

    /// `chown(path, uid, -1)` with `uid` a kuid (the namespaced actor passes its own as 0
    /// and others unchanged, which it cannot map).
    pub fn chown(&mut self, who: &Identity, path: &str, uid: u32) -> R<Answer> {
        let ino = self.resolve(who, path, true)?;
        if who.ns_root_of.is_some_and(|k| uid != k) {
            return Err(EINVAL);
        }
        let n = self.nodes.get_mut(&ino).expect("inode");
        let owner_noop = who.kuid == n.uid && uid == n.uid;
        if !owner_noop && !Fs::privileged(who, n) {
            return Err(EPERM);
        }
        n.uid = uid;
        Ok(Answer::Ok(0))
    }

    /// `stat` or `lstat`.
    pub fn stat(&self, who: &Identity, path: &str, follow: bool) -> R<Answer> {
        let ino = self.resolve(who, path, follow)?;
        Ok(Answer::Stat(self.stat_of(who, ino)))
    }

    /// A descriptor was closed (or its process exited).
    pub fn unref(&mut self, h: Handle) {
        if let Some(f) = self.files.get_mut(&h) {
            f.refs -= 1;
            if f.refs == 0 {
                let ino = f.ino;
                self.files.remove(&h);
                self.gc(ino);
            }
        }
    }

    // ---- for the generator and verify ---------------------------------------------------

    /// Every path in the tree (not the root), with whether it is a directory.
    pub fn paths(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((p, ino)) = stack.pop() {
            for (name, &c) in self.dir(ino) {
                let q = if p.is_empty() {
                    name.clone()
                } else {
                    format!("{p}/{name}")
                };
                let d = self.node(c).is_dir();
                out.push((q.clone(), d));
                if d {
                    stack.push((q, c));
                }
            }
        }
        out.sort();
        out
    }

    /// Whether `who` can walk to the last component of `path`.
    pub fn reachable(&self, who: &Identity, path: &str) -> bool {
        self.parent(who, path).is_ok()
    }

    /// Whether `who` may make names in directory `dir` (a path; `""` is the root).
    pub fn can_create_in(&self, who: &Identity, dir: &str) -> bool {
        let ino = if dir.is_empty() {
            Ok(ROOT)
        } else {
            self.resolve(who, dir, true)
        };
        ino.is_ok_and(|i| {
            self.node(i).is_dir() && Fs::permitted(who, self.node(i), MAY_WRITE | MAY_EXEC)
        })
    }

    /// The size of the file an open file description holds.
    pub fn size_of(&self, h: Handle) -> u64 {
        self.files
            .get(&h)
            .and_then(|f| self.nodes.get(&f.ino))
            .map_or(0, Node::size)
    }

    /// The whole tree as root sees it, sorted by path (the root is `""`).
    pub fn listing(&self) -> Vec<Entry> {
        let root = Identity {
            kuid: 0,
            admin: true,
            ns_root_of: None,
        };
        let mut out = vec![Entry {
            path: String::new(),
            st: self.stat_of(&root, ROOT),
            data: Vec::new(),
        }];
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((p, ino)) = stack.pop() {
            for (name, &c) in self.dir(ino) {
                let q = if p.is_empty() {
                    name.clone()
                } else {
                    format!("{p}/{name}")
                };
                let data = match &self.node(c).kind {
                    Kind::File(d) => d.clone(),
                    Kind::Link(t) => t.as_bytes().to_vec(),
                    Kind::Dir(_) => {
                        stack.push((q.clone(), c));
                        Vec::new()
                    }
                };
                out.push(Entry {
                    path: q,
                    st: self.stat_of(&root, c),
                    data,
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Inodes that open descriptions hold.
    pub fn held(&self) -> BTreeSet<u32> {
        self.files.values().map(|f| f.ino).collect()
    }
}

/// Whether `got` is `before` with a store in flight at a crash applied in part: every entry
/// equal to its entry in `before` or `after`, or (same stat, same length) every byte of its
/// data the byte of one of them.
pub fn torn_store_fits(before: &[Entry], after: &[Entry], got: &[Entry]) -> bool {
    if before.len() != got.len() || after.len() != got.len() {
        return false;
    }
    before.iter().zip(after).zip(got).all(|((a, b), g)| {
        a.path == g.path
            && b.path == g.path
            && (g == a
                || g == b
                || (g.st == a.st
                    && a.data.len() == g.data.len()
                    && b.data.len() == g.data.len()
                    && (0..g.data.len()).all(|i| g.data[i] == a.data[i] || g.data[i] == b.data[i])))
    })
}

/// How two listings differ (empty: they are equal), at most `max` lines.
pub fn diff_listings(want: &[Entry], got: &[Entry], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let w: BTreeMap<&str, &Entry> = want.iter().map(|e| (e.path.as_str(), e)).collect();
    let g: BTreeMap<&str, &Entry> = got.iter().map(|e| (e.path.as_str(), e)).collect();
    let names: BTreeSet<&str> = w.keys().chain(g.keys()).copied().collect();
    for n in names {
        let line = match (w.get(n), g.get(n)) {
            (Some(_), None) => format!("/{n}: missing"),
            (None, Some(e)) => format!("/{n}: unexpected ({:?})", e.st),
            (Some(a), Some(b)) if a.st != b.st => {
                format!("/{n}: expected {:?}, got {:?}", a.st, b.st)
            }
            (Some(a), Some(b)) if a.data != b.data => {
                let first = a.data.iter().zip(&b.data).position(|(x, y)| x != y);
                format!(
                    "/{n}: contents differ ({} vs {} bytes, first difference at {first:?})",
                    a.data.len(),
                    b.data.len()
                )
            }
            _ => continue,
        };
        out.push(line);
        if out.len() >= max {
            out.push("...".into());
            break;
        }
    }
    out
}
