//! riofs-fsck: an offline checker (and optional repairer) of riofs images.
//!
//! A riofs is one Rio object: an array of 4 KiB blocks laid out as `rio_mod/riofs/format.rs`
//! defines (superblock, undo log, inode table, block bitmap, data). This crate reads that
//! format through [`rio_format::riofs`], the very file rio.ko compiles, and checks
//! everything the kernel relies on:
//!
//! - the superblock (magic, version, checksum, geometry) and that the image has its size;
//! - the undo log: its header and the records of the transaction after the last committed
//!   one, found as the kernel's recovery finds them. A non-empty, valid log
//!   means an operation was in flight; the mount will undo it, so it is a warning, and the
//!   rest of the checks run on the image *as the mount will leave it* (the log undone, in
//!   memory);
//! - every inode record (checksum, type, size), its block map (every pointer in range and a
//!   data block, no block reachable twice, no block past the end of the file, a directory
//!   without holes, `nblocks` matching what the map reaches, symbolic links of 1 to 4095
//!   bytes with a data block, special files without blocks);
//! - the directories: valid entries, no duplicate names, entries naming live inodes of the
//!   type their `dtype` says, every directory named exactly once and reachable from the
//!   root, link counts (files: the entries naming them; directories: 2 + subdirectories),
//!   orphans (`nlink == 0`, unnamed: freed by the next mount, a warning), live inodes the
//!   root does not reach (an error);
//! - the bitmap against what the inodes reach: a block in use but marked free is an error;
//!   one marked used that nothing reaches is leaked (a warning: frees are deferred past a
//!   transaction's commit, and the next mount rebuilds the bitmap); metadata blocks and the
//!   bits past the end of the object must read as used.
//!
//! [`check`] never changes its input. [`repair`] applies the undo log, frees orphans and
//! rebuilds the bitmap, exactly as a mount would, and refuses an image with any other error.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use rio_format::riofs::{
    crc32c, dtype_of, Dirent, FsError, Inode, InodeError, RecHdr, Super, BLOCK, DIRENTS_PER_BLOCK,
    DIRENT_SIZE, INODE_SIZE, LOG_HDR, LOG_MAGIC, MAGIC, MAX_BLOCKS, NDIRECT, PTRS, REC_HDR,
    ROOT_INO, SUPER_SIZE, S_IFLNK, S_IFMT, VERSION,
};

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Something the next mount repairs by itself (an operation in flight, an orphan, a
    /// leaked block). The image is usable.
    Warning,
    /// An inconsistency: the mount may refuse the image, or the file system misbehave.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// The class of a problem (one per check; the tests assert on these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The image is not a whole number of blocks, or not the size the superblock says.
    ImageSize,
    /// The superblock does not decode (nothing else can be checked).
    Superblock,
    /// The undo log's header (its magic) is damaged.
    LogHeader,
    /// The undo log is not valid (its length or a record): the mount refuses the image.
    LogRecord,
    /// The undo log holds the records of an operation that was in flight (a warning).
    InFlight,
    /// An inode record's checksum does not match.
    InodeChecksum,
    /// An inode has an unknown file type.
    InodeType,
    /// An inode's size is impossible (over `MAX_FILE_SIZE`, or a directory's size not a
    /// whole number of blocks).
    InodeSize,
    /// Inode 0 (never used) is not zero.
    ReservedInode,
    /// A block pointer is out of range or points at a metadata block.
    BadPointer,
    /// A block is reachable twice (from two inodes, or twice from one).
    DoubleUse,
    /// An inode's `nblocks` is not the number of blocks its map reaches.
    BlockCount,
    /// A block (or an indirect block) lies past the end of the file.
    PastEof,
    /// A device, FIFO or socket has block pointers.
    SpecialBlocks,
    /// A directory has a hole (a block inside its size that is not mapped).
    DirHole,
    /// A directory entry cannot be valid (name length, `/`, NUL, `.` or `..`).
    BadEntry,
    /// Two entries of one directory have the same name.
    DuplicateName,
    /// An entry names an inode number outside the table.
    EntryBadIno,
    /// An entry names a free inode.
    EntryFreeInode,
    /// An entry's `dtype` is not its inode's type.
    EntryType,
    /// A directory is named by more than one entry (a hard-linked directory or a cycle), or
    /// the root directory is named by an entry.
    DirLinkedTwice,
    /// An inode's link count is not what the directories say.
    LinkCount,
    /// An orphan: in use, no links, no names. The next mount frees it (a warning).
    Orphan,
    /// An orphan directory still has entries.
    OrphanDirNotEmpty,
    /// An inode in use (`nlink > 0`) that the root does not reach.
    Unreachable,
    /// A symbolic link's size is not 1..4095 or it has no data block.
    Symlink,
    /// The root inode is missing, corrupt or not a directory: the mount refuses the image.
    Root,
    /// A block in use is marked free in the bitmap.
    BitmapFree,
    /// A metadata block, or a bit past the end of the object, is marked free.
    BitmapMeta,
    /// Blocks marked used that nothing reaches (a warning: the next mount frees them).
    Leaked,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// Which check found it.
    pub kind: Kind,
    /// The inode concerned (for an entry: the directory holding it).
    pub ino: Option<u32>,
    /// The block concerned, if one.
    pub block: Option<u32>,
    /// The inode's path from the root, where known.
    pub path: Option<String>,
    /// What is wrong, for people.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        if let Some(ino) = self.ino {
            write!(f, "inode {ino}")?;
            if let Some(p) = &self.path {
                write!(f, " ({p})")?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.message)
    }
}

/// What the image holds (filled as far as the checks got).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blocks of the object.
    pub blocks: u32,
    /// Data blocks.
    pub data_blocks: u32,
    /// Data blocks the inodes reach.
    pub used_blocks: u32,
    /// Inode records (inode 0 included).
    pub inodes: u32,
    /// Inodes in use.
    pub used_inodes: u32,
    /// Directories in use.
    pub dirs: u32,
    /// Records in the undo log (the mount will undo them).
    pub undo_records: usize,
}

/// The result of a check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
    /// The superblock, if it decoded.
    pub sb: Option<Super>,
    /// Counts.
    pub stats: Stats,
}

impl Report {
    /// Problems that are errors.
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Problems that are warnings.
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, s: Severity) -> usize {
        self.problems.iter().filter(|p| p.severity == s).count()
    }

    /// No problem at all.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems of one kind.
    pub fn of_kind(&self, k: Kind) -> Vec<&Problem> {
        self.problems.iter().filter(|p| p.kind == k).collect()
    }

    /// `clean`, or `N errors, M warnings`.
    pub fn summary(&self) -> String {
        if self.is_clean() {
            "clean".to_string()
        } else {
            let (e, w) = (self.errors(), self.warnings());
            format!(
                "{e} error{}, {w} warning{}",
                if e == 1 { "" } else { "s" },
                if w == 1 { "" } else { "s" }
            )
        }
    }

    fn push(
        &mut self,
        severity: Severity,
        kind: Kind,
        ino: Option<u32>,
        block: Option<u32>,
        message: String,
    ) {
        self.problems.push(Problem {
            severity,
            kind,
            ino,
            block,
            path: None,
            message,
        });
    }

    fn err(&mut self, kind: Kind, ino: Option<u32>, block: Option<u32>, message: String) {
        self.push(Severity::Error, kind, ino, block, message);
    }

    fn warn(&mut self, kind: Kind, ino: Option<u32>, block: Option<u32>, message: String) {
        self.push(Severity::Warning, kind, ino, block, message);
    }
}

/// Why [`repair`] did not repair.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepairError {
    /// The superblock does not decode or the image is not its size.
    #[error("not a riofs image of the size its superblock says: nothing repaired")]
    NotRiofs,
    /// The undo log is not valid (the mount refuses such an image too).
    #[error("the undo log is corrupt: nothing repaired")]
    BadLog,
    /// Errors that repair does not fix (it applies the log, frees orphans and rebuilds the
    /// bitmap, nothing else).
    #[error("{0} error(s) that repair does not fix (it only applies the undo log, frees orphans and rebuilds the bitmap): nothing repaired")]
    Unrepairable(usize),
}

/// What [`repair`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Undo records applied.
    pub undone: usize,
    /// Orphans freed.
    pub orphans: u32,
    /// Bitmap bits changed.
    pub bits: u32,
}

// ---- reading the image ----------------------------------------------------------------

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Decodes the superblock. `Super::decode` is called only once the geometry words are
/// known to be small: its `check` adds them in `u32` and would overflow (a panic with
/// overflow checks) on a crafted superblock whose checksum is right.
fn decode_super(b: &[u8]) -> Result<Super, FsError> {
    let b = b.get(..SUPER_SIZE).ok_or(FsError::BadGeometry)?;
    if (12..44).step_by(4).any(|at| u32_at(b, at) > MAX_BLOCKS) {
        // The same verdicts, in the same order, as `Super::decode`.
        if b.iter().all(|&x| x == 0) {
            return Err(FsError::Blank);
        }
        if u64_at(b, 0) != MAGIC {
            return Err(FsError::BadMagic);
        }
        if u32_at(b, 8) != VERSION {
            return Err(FsError::BadVersion(u32_at(b, 8)));
        }
        if crc32c(&b[..SUPER_SIZE - 4]) != u32_at(b, SUPER_SIZE - 4) {
            return Err(FsError::BadChecksum);
        }
        return Err(FsError::BadGeometry);
    }
    Super::decode(b)
}

/// The undo log as the mount reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Log {
    /// Nothing in flight.
    Empty,
    /// Valid records of the transaction in flight: (object offset, byte offset of the old
    /// bytes in the image, length), and the bytes of log they take.
    Records(Vec<(u64, usize, usize)>, usize),
    /// Not valid: why.
    Corrupt(String),
}

/// The records of the transaction after the last committed one, found exactly as the
/// kernel's recovery finds them (`scan_log`, the one definition in format.rs).
fn read_log(img: &[u8], sb: &Super) -> Log {
    let pos = sb.log_pos() as usize;
    let Some(committed) = rio_format::riofs::log_committed(&img[pos..pos + LOG_HDR]) else {
        // The caller reports the missing magic (the mount refuses such a log); there is
        // nothing to undo that could be trusted.
        return Log::Empty;
    };
    let mut recs = Vec::new();
    let mut end = LOG_HDR;
    let scan = rio_format::riofs::scan_log(
        sb,
        committed.wrapping_add(1),
        |at| img.get(pos + at..pos + at + REC_HDR)?.try_into().ok(),
        |at, r| {
            recs.push((r.off, pos + at + REC_HDR, r.len as usize));
            end = at + RecHdr::span(r.len as usize);
            true
        },
    );
    match scan {
        rio_format::riofs::LogScan::Corrupt(at) => Log::Corrupt(format!(
            "undo log record at byte {at} runs past the log's end: the mount refuses the file system"
        )),
        _ if recs.is_empty() => Log::Empty,
        _ => Log::Records(recs, end - LOG_HDR),
    }
}

/// Applies valid records in reverse and commits the undo, as the mount's recovery does.
fn apply_log(img: &mut [u8], sb: &Super, recs: &[(u64, usize, usize)]) {
    for &(off, data, len) in recs.iter().rev() {
        let off = off as usize;
        img.copy_within(data..data + len, off);
    }
    let pos = sb.log_pos() as usize;
    let committed = u64_at(img, pos);
    img[pos..pos + 8].copy_from_slice(&committed.wrapping_add(1).to_le_bytes());
}

/// An inode record.
#[derive(Clone, Copy, Debug)]
enum Rec {
    Free,
    Live(Inode),
    Bad,
}

/// Where an inode stands in the namespace.
#[derive(Clone, Copy, Debug, Default)]
struct Names {
    /// Entries naming it (in any live directory).
    links: u32,
    /// For a directory: entries in it naming directories.
    subdirs: u32,
    /// For a directory: entries naming it.
    dir_refs: u32,
    /// For a directory: entries in it.
    entries: u32,
}

/// Everything one pass learned (the report, and what repair needs).
struct Analysis<'a> {
    report: Report,
    sb: Option<Super>,
    log: Log,
    /// The image as the mount will see it (the log undone).
    work: Cow<'a, [u8]>,
    /// Owner inode of each block (0: none).
    owners: Vec<u32>,
    /// Orphans (freed by the mount).
    orphans: Vec<u32>,
}

struct Fs<'a> {
    img: &'a [u8],
    sb: Super,
}

impl Fs<'_> {
    fn block(&self, b: u32) -> &[u8] {
        let at = b as usize * BLOCK;
        &self.img[at..at + BLOCK]
    }

    fn ptr(&self, blk: u32, idx: usize) -> u32 {
        u32_at(self.block(blk), idx * 4)
    }

    fn inode_bytes(&self, ino: u32) -> &[u8] {
        let at = u64::from(self.sb.itable_start) as usize * BLOCK + ino as usize * INODE_SIZE;
        &self.img[at..at + INODE_SIZE]
    }

    fn bit(&self, b: u64) -> bool {
        let at = self.sb.bitmap_start as usize * BLOCK + (b / 8) as usize;
        self.img[at] & (1 << (b % 8)) != 0
    }
}

/// One inode's block-map walk.
struct Walk<'o> {
    ino: u32,
    sb: Super,
    size_blocks: u64,
    owners: &'o mut [u32],
    count: u32,
    clean: bool,
    /// For a directory: its data blocks by file block (0: a hole).
    dir_blocks: Vec<u32>,
}

impl Walk<'_> {
    /// Claims block `b`, which maps file blocks `first..` (`data`: a data block, else an
    /// indirect one). Returns whether to follow it.
    fn visit(&mut self, rep: &mut Report, b: u32, first: u64, data: bool, what: &str) -> bool {
        if b == 0 {
            return false;
        }
        let ino = Some(self.ino);
        if b >= self.sb.blocks {
            rep.err(
                Kind::BadPointer,
                ino,
                Some(b),
                format!(
                    "{what} points at block {b}, past the end of the object ({} blocks)",
                    self.sb.blocks
                ),
            );
            self.clean = false;
            return false;
        }
        if b < self.sb.data_start {
            rep.err(
                Kind::BadPointer,
                ino,
                Some(b),
                format!(
                    "{what} points at metadata block {b} (data starts at {})",
                    self.sb.data_start
                ),
            );
            self.clean = false;
            return false;
        }
        let owner = self.owners[b as usize];
        if owner != 0 {
            let by = if owner == self.ino {
                "this inode".to_string()
            } else {
                format!("inode {owner}")
            };
            rep.err(
                Kind::DoubleUse,
                ino,
                Some(b),
                format!(
                    "{what} points at block {b}, already used by {by}: a block reachable twice"
                ),
            );
            self.clean = false;
            return false;
        }
        self.owners[b as usize] = self.ino;
        self.count += 1;
        if first >= self.size_blocks {
            let kind = if data { "data block" } else { "indirect block" };
            rep.err(
                Kind::PastEof,
                ino,
                Some(b),
                format!(
                    "{what}: {kind} {b} (file block {first}) lies past the end of the file ({} blocks)",
                    self.size_blocks
                ),
            );
        }
        if data {
            if let Some(slot) = self.dir_blocks.get_mut(first as usize) {
                *slot = b;
            }
        }
        true
    }
}

fn walk_inode(fs: &Fs<'_>, rep: &mut Report, owners: &mut [u32], ino: u32, i: &Inode) -> Vec<u32> {
    let size_blocks = i.size.div_ceil(BLOCK as u64);
    let dir_len = if i.is_dir() {
        (i.size / BLOCK as u64) as usize
    } else {
        0
    };
    let mut w = Walk {
        ino,
        sb: fs.sb,
        size_blocks,
        owners,
        count: 0,
        clean: true,
        dir_blocks: vec![0; dir_len],
    };
    for (f, &d) in i.direct.iter().enumerate() {
        w.visit(rep, d, f as u64, true, &format!("direct pointer {f}"));
    }
    let ind0 = NDIRECT as u64;
    if w.visit(rep, i.ind, ind0, false, "the indirect pointer") {
        for idx in 0..PTRS {
            let b = fs.ptr(i.ind, idx);
            let what = format!("indirect block {} entry {idx}", i.ind);
            w.visit(rep, b, ind0 + idx as u64, true, &what);
        }
    }
    let dind0 = ind0 + PTRS as u64;
    if w.visit(rep, i.dind, dind0, false, "the double indirect pointer") {
        for m in 0..PTRS {
            let mid = fs.ptr(i.dind, m);
            let first = dind0 + (m * PTRS) as u64;
            let what = format!("double indirect block {} entry {m}", i.dind);
            if w.visit(rep, mid, first, false, &what) {
                for idx in 0..PTRS {
                    let b = fs.ptr(mid, idx);
                    let what = format!("indirect block {mid} entry {idx}");
                    w.visit(rep, b, first + idx as u64, true, &what);
                }
            }
        }
    }
    if w.clean && w.count != i.nblocks {
        rep.err(
            Kind::BlockCount,
            Some(ino),
            None,
            format!(
                "nblocks is {} but the block map reaches {} blocks",
                i.nblocks, w.count
            ),
        );
    }
    w.dir_blocks
}

fn name_str(n: &[u8]) -> String {
    String::from_utf8_lossy(n).escape_debug().to_string()
}

/// Appends the runs of `blocks` (sorted) to the report, one problem per run.
fn runs(blocks: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == b => *hi = b,
            _ => out.push((b, b)),
        }
    }
    out
}

fn range_str((lo, hi): (u32, u32)) -> String {
    if lo == hi {
        format!("block {lo}")
    } else {
        format!("blocks {lo}..={hi} ({} blocks)", hi - lo + 1)
    }
}

/// The analysis of an image whose checks stopped early.
fn stopped(report: Report, sb: Option<Super>, image: &[u8]) -> Analysis<'_> {
    Analysis {
        report,
        sb,
        log: Log::Empty,
        work: Cow::Borrowed(image),
        owners: Vec::new(),
        orphans: Vec::new(),
    }
}

fn analyze(image: &[u8]) -> Analysis<'_> {
    let mut rep = Report::default();
    // ---- the superblock and the image's size ------------------------------------------
    if !image.len().is_multiple_of(BLOCK) {
        rep.err(
            Kind::ImageSize,
            None,
            None,
            format!(
                "the image is {} bytes, not a whole number of 4 KiB blocks",
                image.len()
            ),
        );
    }
    let sb = match decode_super(image) {
        Ok(sb) => sb,
        Err(e) => {
            let why = match e {
                FsError::Blank => "blank (never formatted: the first mount formats it)".to_string(),
                FsError::BadMagic => "bad magic: not a riofs".to_string(),
                FsError::BadVersion(v) => {
                    format!("format version {v}, this checker knows {VERSION}")
                }
                FsError::BadChecksum => "checksum mismatch".to_string(),
                FsError::BadGeometry => {
                    "inconsistent geometry (or the image is too short)".to_string()
                }
            };
            rep.err(
                Kind::Superblock,
                None,
                Some(0),
                format!("superblock: {why}"),
            );
            return stopped(rep, None, image);
        }
    };
    rep.sb = Some(sb);
    rep.stats.blocks = sb.blocks;
    rep.stats.data_blocks = sb.data_blocks();
    rep.stats.inodes = sb.inodes;
    let need = sb.blocks as usize * BLOCK;
    if image.len() != need {
        rep.err(
            Kind::ImageSize,
            None,
            None,
            format!(
                "the superblock says {} blocks ({need} bytes) but the image is {} bytes: the mount refuses it",
                sb.blocks,
                image.len()
            ),
        );
        if image.len() < need {
            return stopped(rep, Some(sb), image);
        }
    }
    let img = &image[..need];

    // ---- the undo log ------------------------------------------------------------------
    let pos = sb.log_pos() as usize;
    if u64_at(img, pos + 8) != LOG_MAGIC {
        rep.err(
            Kind::LogHeader,
            None,
            Some(sb.log_start),
            "the undo log's header has no log magic (mkfs writes it; something overwrote the log)"
                .to_string(),
        );
    }
    let log = read_log(img, &sb);
    let work: Cow<'_, [u8]> = match &log {
        Log::Empty => Cow::Borrowed(img),
        Log::Records(recs, used) => {
            rep.stats.undo_records = recs.len();
            rep.warn(
                Kind::InFlight,
                None,
                Some(sb.log_start),
                format!(
                    "undo log: an operation was in flight; mount will undo {} records ({used} bytes of log). Checking the file system as the mount will leave it",
                    recs.len()
                ),
            );
            let mut copy = img.to_vec();
            apply_log(&mut copy, &sb, recs);
            Cow::Owned(copy)
        }
        Log::Corrupt(why) => {
            rep.err(Kind::LogRecord, None, Some(sb.log_start), why.clone());
            Cow::Borrowed(img)
        }
    };
    let mut a = check_fs(&work, sb, rep);
    a.log = log;
    a.work = work;
    a
}

/// Everything after the log, on the image as the mount will see it.
fn check_fs<'a>(img: &[u8], sb: Super, mut rep: Report) -> Analysis<'a> {
    let fs = Fs { img, sb };
    let n = sb.inodes as usize;

    // ---- inode records -----------------------------------------------------------------
    if fs.inode_bytes(0).iter().any(|&x| x != 0) {
        rep.warn(
            Kind::ReservedInode,
            Some(0),
            None,
            "inode 0 is reserved (0 means none) but its record is not zero".to_string(),
        );
    }
    let mut recs = vec![Rec::Free; n];
    for ino in 1..sb.inodes {
        let b = fs.inode_bytes(ino);
        recs[ino as usize] = match Inode::decode(b) {
            Ok(i) if i.is_free() => Rec::Free,
            Ok(i) => Rec::Live(i),
            Err(e) => {
                let (kind, msg) = match e {
                    InodeError::Checksum => (
                        Kind::InodeChecksum,
                        "record checksum mismatch: the mount refuses the file system".to_string(),
                    ),
                    InodeError::BadType => (
                        Kind::InodeType,
                        format!("unknown file type (mode {:o})", u32_at(b, 0)),
                    ),
                    InodeError::TooLarge => (
                        Kind::InodeSize,
                        format!("size {} exceeds the largest riofs file", u64_at(b, 16)),
                    ),
                };
                rep.err(kind, Some(ino), None, msg);
                Rec::Bad
            }
        };
    }

    // ---- block maps --------------------------------------------------------------------
    let mut owners = vec![0u32; sb.blocks as usize];
    let mut dir_blocks: Vec<Vec<u32>> = vec![Vec::new(); n];
    for ino in 1..sb.inodes {
        let Rec::Live(i) = recs[ino as usize] else {
            continue;
        };
        rep.stats.used_inodes += 1;
        if i.is_dir() {
            rep.stats.dirs += 1;
            if i.size % BLOCK as u64 != 0 {
                rep.err(
                    Kind::InodeSize,
                    Some(ino),
                    None,
                    format!("directory size {} is not a whole number of blocks", i.size),
                );
            }
        }
        if i.has_data() {
            dir_blocks[ino as usize] = walk_inode(&fs, &mut rep, &mut owners, ino, &i);
        } else if i.direct.iter().any(|&d| d != 0) || i.ind != 0 || i.dind != 0 || i.nblocks != 0 {
            rep.err(
                Kind::SpecialBlocks,
                Some(ino),
                None,
                format!(
                    "a special file (mode {:o}) with block pointers or nblocks {}",
                    i.mode, i.nblocks
                ),
            );
        }
        if i.mode & S_IFMT == S_IFLNK {
            if !(1..BLOCK as u64).contains(&i.size) {
                rep.err(
                    Kind::Symlink,
                    Some(ino),
                    None,
                    format!(
                        "symbolic link of size {} (must be 1..{})",
                        i.size,
                        BLOCK - 1
                    ),
                );
            } else if i.direct[0] == 0 {
                rep.err(
                    Kind::Symlink,
                    Some(ino),
                    None,
                    "symbolic link without a data block".to_string(),
                );
            }
        }
    }
    rep.stats.used_blocks = owners.iter().filter(|&&o| o != 0).count() as u32;

    // ---- directories -------------------------------------------------------------------
    let mut names = vec![Names::default(); n];
    let mut children: Vec<Vec<(u32, Vec<u8>)>> = vec![Vec::new(); n];
    for dino in 1..sb.inodes {
        let Rec::Live(d) = recs[dino as usize] else {
            continue;
        };
        if !d.is_dir() {
            continue;
        }
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for (f, &b) in dir_blocks[dino as usize].iter().enumerate() {
            if b == 0 {
                rep.err(
                    Kind::DirHole,
                    Some(dino),
                    None,
                    format!(
                        "directory block {f} is a hole (the kernel refuses to read the directory)"
                    ),
                );
                continue;
            }
            let blk = fs.block(b);
            for s in 0..DIRENTS_PER_BLOCK {
                let raw = &blk[s * DIRENT_SIZE..(s + 1) * DIRENT_SIZE];
                let slot = f * DIRENTS_PER_BLOCK + s;
                let e = match Dirent::decode(raw) {
                    Ok(None) => continue,
                    Ok(Some(e)) => e,
                    Err(()) => {
                        rep.err(
                            Kind::BadEntry,
                            Some(dino),
                            Some(b),
                            format!(
                                "entry in slot {slot} (block {b}) has an invalid name (length {})",
                                u16::from_le_bytes([raw[4], raw[5]])
                            ),
                        );
                        continue;
                    }
                };
                let name = e.name().to_vec();
                let shown = name_str(&name);
                names[dino as usize].entries += 1;
                if !seen.insert(name.clone()) {
                    rep.err(
                        Kind::DuplicateName,
                        Some(dino),
                        Some(b),
                        format!("entry \"{shown}\" (slot {slot}) duplicates an earlier name"),
                    );
                }
                if e.ino >= sb.inodes {
                    rep.err(
                        Kind::EntryBadIno,
                        Some(dino),
                        Some(b),
                        format!(
                            "entry \"{shown}\" names inode {}, outside the table ({} inodes)",
                            e.ino, sb.inodes
                        ),
                    );
                    continue;
                }
                match recs[e.ino as usize] {
                    Rec::Free => {
                        rep.err(
                            Kind::EntryFreeInode,
                            Some(dino),
                            Some(b),
                            format!("entry \"{shown}\" names inode {}, which is free", e.ino),
                        );
                    }
                    // Unreadable (reported already): named, for its path, and not counted.
                    Rec::Bad => children[dino as usize].push((e.ino, name)),
                    Rec::Live(t) => {
                        if e.dtype != dtype_of(t.mode) {
                            rep.err(
                                Kind::EntryType,
                                Some(dino),
                                Some(b),
                                format!(
                                    "entry \"{shown}\" has dtype {} but inode {} has type {} (mode {:o})",
                                    e.dtype,
                                    e.ino,
                                    dtype_of(t.mode),
                                    t.mode
                                ),
                            );
                        }
                        names[e.ino as usize].links += 1;
                        if t.is_dir() {
                            names[dino as usize].subdirs += 1;
                            names[e.ino as usize].dir_refs += 1;
                        }
                        children[dino as usize].push((e.ino, name));
                    }
                }
            }
        }
    }

    // ---- reachability from the root ----------------------------------------------------
    let mut paths: Vec<Option<String>> = vec![None; n];
    let root_ok = matches!(recs.get(ROOT_INO as usize), Some(Rec::Live(r)) if r.is_dir());
    if root_ok {
        paths[ROOT_INO as usize] = Some("/".to_string());
        let mut queue = std::collections::VecDeque::from([ROOT_INO]);
        while let Some(d) = queue.pop_front() {
            let base = paths[d as usize].clone().unwrap_or_default();
            for (c, name) in &children[d as usize] {
                let c = *c as usize;
                if paths[c].is_some() {
                    continue;
                }
                let p = if base == "/" {
                    format!("/{}", name_str(name))
                } else {
                    format!("{base}/{}", name_str(name))
                };
                paths[c] = Some(p);
                if matches!(recs[c], Rec::Live(t) if t.is_dir()) {
                    queue.push_back(c as u32);
                }
            }
        }
    } else {
        let why = match recs.get(ROOT_INO as usize) {
            Some(Rec::Live(_)) => "the root inode is not a directory",
            Some(Rec::Bad) => "the root inode is corrupt",
            _ => "the root inode is free",
        };
        rep.err(
            Kind::Root,
            Some(ROOT_INO),
            None,
            format!("{why}: the mount refuses the file system"),
        );
    }

    // ---- link counts, orphans, unreachable inodes --------------------------------------
    let mut orphans = Vec::new();
    for ino in 1..sb.inodes {
        let Rec::Live(i) = recs[ino as usize] else {
            continue;
        };
        let nm = names[ino as usize];
        if ino == ROOT_INO {
            if !i.is_dir() {
                continue;
            }
            if nm.dir_refs > 0 {
                rep.err(
                    Kind::DirLinkedTwice,
                    Some(ino),
                    None,
                    format!(
                        "the root directory is named by {} entries (it must be named by none)",
                        nm.dir_refs
                    ),
                );
            }
            let want = 2 + nm.subdirs;
            if i.nlink != want {
                rep.err(
                    Kind::LinkCount,
                    Some(ino),
                    None,
                    format!(
                        "directory link count is {} but it has {} subdirectories (expected {want})",
                        i.nlink, nm.subdirs
                    ),
                );
            }
            continue;
        }
        let orphan = i.nlink == 0 && nm.links == 0;
        if orphan {
            orphans.push(ino);
            rep.warn(
                Kind::Orphan,
                Some(ino),
                None,
                format!(
                    "orphan (in use, no links: unlinked while open): will be freed at mount, with its {} blocks",
                    i.nblocks
                ),
            );
            if i.is_dir() && nm.entries > 0 {
                rep.err(
                    Kind::OrphanDirNotEmpty,
                    Some(ino),
                    None,
                    format!("orphan directory still has {} entries", nm.entries),
                );
            }
            continue;
        }
        if i.is_dir() {
            if nm.dir_refs > 1 {
                rep.err(
                    Kind::DirLinkedTwice,
                    Some(ino),
                    None,
                    format!(
                        "directory named by {} entries (a hard-linked directory or a cycle; a directory has one name)",
                        nm.dir_refs
                    ),
                );
            }
            let want = 2 + nm.subdirs;
            if i.nlink != want {
                rep.err(
                    Kind::LinkCount,
                    Some(ino),
                    None,
                    format!(
                        "directory link count is {} but it has {} subdirectories (expected {want})",
                        i.nlink, nm.subdirs
                    ),
                );
            }
        } else if i.nlink != nm.links {
            rep.err(
                Kind::LinkCount,
                Some(ino),
                None,
                format!("link count is {} but {} entries name it", i.nlink, nm.links),
            );
        }
        if root_ok && paths[ino as usize].is_none() && i.nlink > 0 {
            rep.err(
                Kind::Unreachable,
                Some(ino),
                None,
                format!(
                    "in use (nlink {}) but not reachable from the root directory{}",
                    i.nlink,
                    if nm.links > 0 {
                        " (only named in unreachable directories)"
                    } else {
                        ""
                    }
                ),
            );
        }
    }

    // ---- the bitmap --------------------------------------------------------------------
    let bits = u64::from(sb.bitmap_blocks) * (BLOCK as u64) * 8;
    let mut meta_clear = Vec::new();
    let mut leaked = Vec::new();
    for b in 0..bits {
        let set = fs.bit(b);
        let meta = b < u64::from(sb.data_start) || b >= u64::from(sb.blocks);
        if meta {
            if !set {
                meta_clear.push(b as u32);
            }
            continue;
        }
        let owner = owners[b as usize];
        if owner != 0 && !set {
            rep.err(
                Kind::BitmapFree,
                Some(owner),
                Some(b as u32),
                format!("block {b} is in use but marked free in the bitmap"),
            );
        } else if owner == 0 && set {
            leaked.push(b as u32);
        }
    }
    for r in runs(&meta_clear) {
        let what = if r.0 >= sb.blocks {
            "bits past the end of the object"
        } else {
            "metadata"
        };
        rep.err(
            Kind::BitmapMeta,
            None,
            Some(r.0),
            format!(
                "bitmap: {} ({what}) marked free: they must read as used",
                range_str(r)
            ),
        );
    }
    for r in runs(&leaked) {
        rep.warn(
            Kind::Leaked,
            None,
            Some(r.0),
            format!(
                "bitmap: {} marked used but unreachable (leaked; the next mount frees them)",
                range_str(r)
            ),
        );
    }

    // ---- paths into the problems -------------------------------------------------------
    for p in &mut rep.problems {
        if let Some(ino) = p.ino {
            p.path = paths.get(ino as usize).cloned().flatten();
        }
    }
    Analysis {
        report: rep,
        sb: Some(sb),
        log: Log::Empty,
        work: Cow::Borrowed(&[]),
        owners,
        orphans,
    }
}

/// Checks a riofs image (the raw bytes of its object). Changes nothing.
pub fn check(image: &[u8]) -> Report {
    analyze(image).report
}

/// Repairs what a mount would: applies the undo log, frees orphans, rebuilds the bitmap from
/// what the inodes reach (metadata and the bits past the end set), in place. Refuses (and
/// changes nothing) if the check finds any error that this does not fix. Returns what it
/// did; check the image again to see the result.
pub fn repair(image: &mut [u8]) -> Result<Repaired, RepairError> {
    let (sb, recs, errors) = {
        let a = analyze(image);
        let Some(sb) = a.sb else {
            return Err(RepairError::NotRiofs);
        };
        let fixable = |k: Kind| matches!(k, Kind::BitmapFree | Kind::BitmapMeta);
        let mut errors = 0;
        for p in &a.report.problems {
            match p.kind {
                Kind::ImageSize | Kind::Superblock => return Err(RepairError::NotRiofs),
                Kind::LogRecord => return Err(RepairError::BadLog),
                k if p.severity == Severity::Error && !fixable(k) => errors += 1,
                _ => {}
            }
        }
        let recs = match a.log {
            Log::Records(r, _) => r,
            _ => Vec::new(),
        };
        (sb, recs, errors)
    };
    if errors > 0 {
        return Err(RepairError::Unrepairable(errors));
    }
    let mut done = Repaired {
        undone: recs.len(),
        ..Repaired::default()
    };
    if !recs.is_empty() {
        apply_log(image, &sb, &recs);
    }
    let (mut owners, orphans) = {
        let a = analyze(image);
        (a.owners, a.orphans)
    };
    for &ino in &orphans {
        let at = sb.itable_start as usize * BLOCK + ino as usize * INODE_SIZE;
        let rec = &mut image[at..at + INODE_SIZE];
        let generation = Inode::decode(rec).map(|i| i.generation).unwrap_or(0);
        Inode {
            generation,
            ..Inode::default()
        }
        .encode(rec);
        for o in owners.iter_mut().filter(|o| **o == ino) {
            *o = 0;
        }
        done.orphans += 1;
    }
    let base = sb.bitmap_start as usize * BLOCK;
    let bits = sb.bitmap_blocks as usize * BLOCK * 8;
    for b in 0..bits {
        let used = b < sb.data_start as usize || b >= sb.blocks as usize || owners[b] != 0;
        let byte = &mut image[base + b / 8];
        let mask = 1u8 << (b % 8);
        if (*byte & mask != 0) != used {
            *byte ^= mask;
            done.bits += 1;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
