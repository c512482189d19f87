// SPDX-License-Identifier: GPL-2.0

//! The riofs format: a whole POSIX file system inside one Rio object. Pure `core` code:
//! rio.ko compiles it, and so does the host crate `userlib/rio-format` (by path, as its
//! module `riofs`, beside `format`, whose CRC it uses), with which `riofs-fsck` checks
//! images; that crate's unit tests test exactly this file.
//!
//! The object is an array of 4 KiB blocks (block `b` is object bytes `b * 4096 ..`):
//!
//! ```text
//! block 0                         superblock (written once, by mkfs; checksummed)
//! blocks log_start ..+log_blocks  undo log: a header (last committed transaction), records
//! blocks itable_start ..          inode table: 32 inodes of 128 bytes per block
//! blocks bitmap_start ..          block bitmap: one bit per block of the object
//! blocks data_start ..            data: file contents, directories, indirect blocks
//! ```
//!
//! # Crash consistency: an undo log (Vista's idea, in the file system)
//!
//! Every operation is one transaction, numbered: the log's header holds the number of the
//! last committed one (one aligned `u64`), and the running one is the next. Before a byte
//! range of the object is changed in place, its old contents are appended to the log as a
//! record (`offset, length, transaction, check`, then the old bytes), the old bytes stored
//! first and the header last, then the range is changed. The operation commits by storing
//! its number in the log's header: that one store makes all its records stale. A crash at
//! any point leaves either no record of the next transaction's number (nothing in flight:
//! every completed operation is there) or the records of the one in flight, found by
//! scanning from the log's start while headers are valid and carry that number, which
//! mounting applies in reverse order, leaving the file system exactly as before it (and
//! then commits the undo). A record whose header did not land is not found, and nothing it
//! covers was changed yet; stale records of older transactions carry older numbers. Each
//! change so costs two windows (the record, the range) and each operation one more (the
//! commit). Blocks the transaction allocated
//! need no undo (the bitmap and pointers that reach them are logged and rolled back), so
//! appending data costs no logging; overwriting existing data logs the old bytes, which is
//! why a single `write` that overwrites data is atomic up to [`Super::tx_data_limit`] bytes
//! (a quarter of the log; larger overwrites are a sequence of atomic steps of that size).
//!
//! Everything read back is untrusted: block and inode numbers are range-checked on every
//! use, inodes carry a checksum, and log records are checked before anything is undone.

#![allow(unreachable_pub)]
#![allow(dead_code)]

/// Block size (the arena's page size).
pub const BLOCK: usize = 4096;
/// `"RIOFS\0v1"` (the version field says which).
pub const MAGIC: u64 = u64::from_le_bytes(*b"RIOFS\0v1");
/// `"RIOFSLOG"`, at offset 8 of the log's first block.
pub const LOG_MAGIC: u64 = u64::from_le_bytes(*b"RIOFSLOG");
/// Format version.
pub const VERSION: u32 = 2;
/// Encoded superblock bytes (the rest of block 0 is zero).
pub const SUPER_SIZE: usize = 128;
/// Bytes per inode.
pub const INODE_SIZE: usize = 128;
/// Inodes per block.
pub const INODES_PER_BLOCK: usize = BLOCK / INODE_SIZE;
/// Bytes per directory entry.
pub const DIRENT_SIZE: usize = 264;
/// Directory entries per directory block (the last 136 bytes of a block are unused).
pub const DIRENTS_PER_BLOCK: usize = BLOCK / DIRENT_SIZE;
/// Longest name (Linux's `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Direct block pointers in an inode.
pub const NDIRECT: usize = 10;
/// Block pointers in an indirect block.
pub const PTRS: usize = BLOCK / 4;
/// Largest file: direct, single and double indirect blocks.
pub const MAX_FILE_BLOCKS: u64 = (NDIRECT + PTRS + PTRS * PTRS) as u64;
/// Largest file size in bytes.
pub const MAX_FILE_SIZE: u64 = MAX_FILE_BLOCKS * BLOCK as u64;
/// The root directory's inode (inode 0 is never used: 0 means "none").
pub const ROOT_INO: u32 = 1;
/// Bytes of the log header (the last committed transaction's number, the magic, padding).
pub const LOG_HDR: usize = 64;
/// Bytes of a log record's header: offset (u64), length (u32), check (u32), transaction
/// (u64).
pub const REC_HDR: usize = 24;
/// Smallest object riofs formats: superblock, log, inodes, bitmap and some data.
pub const MIN_BLOCKS: u32 = 128;
/// Largest object (the bitmap and block numbers are sized for it).
pub const MAX_BLOCKS: u32 = 1 << 24;

/// File type bits of `mode` (as in `stat`).
pub const S_IFMT: u32 = 0o170000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// Block device.
pub const S_IFBLK: u32 = 0o060000;
/// FIFO.
pub const S_IFIFO: u32 = 0o010000;
/// Socket.
pub const S_IFSOCK: u32 = 0o140000;

/// Whether `mode` has a file type riofs stores.
pub fn valid_type(mode: u32) -> bool {
    matches!(
        mode & S_IFMT,
        S_IFDIR | S_IFREG | S_IFLNK | S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK
    )
}

pub use crate::format::crc32c;
use crate::format::{get_u32, get_u64, put_u32, put_u64};

/// Why an image is not a riofs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsError {
    /// Block 0 is all zero: never formatted.
    Blank,
    /// Not a riofs superblock.
    BadMagic,
    /// Another format version.
    BadVersion(u32),
    /// The superblock's checksum does not match.
    BadChecksum,
    /// The geometry is inconsistent or does not fit the object.
    BadGeometry,
}

impl From<crate::format::FormatError> for FsError {
    fn from(e: crate::format::FormatError) -> Self {
        use crate::format::FormatError as F;
        match e {
            F::Blank => FsError::Blank,
            F::BadMagic => FsError::BadMagic,
            F::BadVersion(v) => FsError::BadVersion(v),
            F::BadChecksum => FsError::BadChecksum,
            F::BadGeometry => FsError::BadGeometry,
        }
    }
}

/// The superblock: the geometry, fixed by mkfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Super {
    /// Blocks in the file system (the object's size / 4096).
    pub blocks: u32,
    /// Inodes in the table (inode 0 included, never used).
    pub inodes: u32,
    /// First block of the log.
    pub log_start: u32,
    /// Blocks of the log.
    pub log_blocks: u32,
    /// First block of the inode table.
    pub itable_start: u32,
    /// First block of the bitmap.
    pub bitmap_start: u32,
    /// Blocks of the bitmap.
    pub bitmap_blocks: u32,
    /// First data block.
    pub data_start: u32,
    /// Random identity, set by mkfs.
    pub uuid: [u8; 16],
    /// When mkfs ran (seconds since the epoch).
    pub created: u64,
}

fn div_up(a: u32, b: u32) -> u32 {
    a.div_ceil(b)
}

impl Super {
    /// The geometry mkfs gives `blocks` blocks: a log of 1/64 of the object (between 16
    /// and 1024 blocks), one inode per two blocks (at least 64), the bitmap, then data.
    pub fn for_blocks(blocks: u32, uuid: [u8; 16], created: u64) -> Option<Super> {
        if !(MIN_BLOCKS..=MAX_BLOCKS).contains(&blocks) {
            return None;
        }
        let log_blocks = (blocks / 64).clamp(16, 1024);
        let inodes = (blocks / 2)
            .max(64)
            .next_multiple_of(INODES_PER_BLOCK as u32);
        let itable_blocks = inodes / INODES_PER_BLOCK as u32;
        let bitmap_blocks = div_up(blocks, (BLOCK * 8) as u32);
        let log_start = 1;
        let itable_start = log_start + log_blocks;
        let bitmap_start = itable_start + itable_blocks;
        let data_start = bitmap_start + bitmap_blocks;
        let s = Super {
            blocks,
            inodes,
            log_start,
            log_blocks,
            itable_start,
            bitmap_start,
            bitmap_blocks,
            data_start,
            uuid,
            created,
        };
        s.check().ok().map(|()| s)
    }

    /// Checks that the regions are in order, inside the object, and leave data blocks.
    pub fn check(&self) -> Result<(), FsError> {
        // In u64: the fields are untrusted, and a sum of two u32 may overflow.
        let w = u64::from;
        let ok = (MIN_BLOCKS..=MAX_BLOCKS).contains(&self.blocks)
            && self.log_start == 1
            && self.log_blocks >= 16
            && w(self.itable_start) == w(self.log_start) + w(self.log_blocks)
            && self.inodes >= 64
            && self.inodes % INODES_PER_BLOCK as u32 == 0
            && w(self.bitmap_start)
                == w(self.itable_start) + w(self.inodes / INODES_PER_BLOCK as u32)
            && self.bitmap_blocks == div_up(self.blocks, (BLOCK * 8) as u32)
            && w(self.data_start) == w(self.bitmap_start) + w(self.bitmap_blocks)
            && w(self.data_start) + 16 <= w(self.blocks);
        if ok {
            Ok(())
        } else {
            Err(FsError::BadGeometry)
        }
    }

    /// Object byte offset of inode `ino`'s record.
    pub fn inode_pos(&self, ino: u32) -> Option<u64> {
        (ino > 0 && ino < self.inodes).then(|| {
            u64::from(self.itable_start) * BLOCK as u64 + u64::from(ino) * INODE_SIZE as u64
        })
    }

    /// Object byte offset of the bitmap word holding block `b`'s bit.
    pub fn bitmap_word_pos(&self, b: u32) -> u64 {
        u64::from(self.bitmap_start) * BLOCK as u64 + u64::from(b / 64) * 8
    }

    /// Object byte offset of the log.
    pub fn log_pos(&self) -> u64 {
        u64::from(self.log_start) * BLOCK as u64
    }

    /// Bytes the log can hold after its header.
    pub fn log_capacity(&self) -> usize {
        self.log_blocks as usize * BLOCK - LOG_HDR
    }

    /// Bytes of the log, header included (record positions are offsets into it).
    pub fn log_bytes(&self) -> usize {
        self.log_blocks as usize * BLOCK
    }

    /// Most bytes of existing data one transaction overwrites in place (and so logs): a
    /// quarter of the log, leaving the rest for the metadata records of the same step.
    pub fn tx_data_limit(&self) -> usize {
        (self.log_capacity() / 4) & !(BLOCK - 1)
    }

    /// Whether `b` is a data block (may be pointed to by an inode).
    pub fn is_data(&self, b: u32) -> bool {
        b >= self.data_start && b < self.blocks
    }

    /// Data blocks in total.
    pub fn data_blocks(&self) -> u32 {
        self.blocks - self.data_start
    }

    /// Encodes into the first [`SUPER_SIZE`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) {
        out[..SUPER_SIZE].fill(0);
        put_u64(out, 0, MAGIC);
        put_u32(out, 8, VERSION);
        put_u32(out, 12, self.blocks);
        put_u32(out, 16, self.inodes);
        put_u32(out, 20, self.log_start);
        put_u32(out, 24, self.log_blocks);
        put_u32(out, 28, self.itable_start);
        put_u32(out, 32, self.bitmap_start);
        put_u32(out, 36, self.bitmap_blocks);
        put_u32(out, 40, self.data_start);
        out[44..60].copy_from_slice(&self.uuid);
        put_u64(out, 64, self.created);
        let crc = crc32c(&out[..SUPER_SIZE - 4]);
        put_u32(out, SUPER_SIZE - 4, crc);
    }

    /// Decodes and checks a superblock.
    pub fn decode(b: &[u8]) -> Result<Super, FsError> {
        let b = b.get(..SUPER_SIZE).ok_or(FsError::BadGeometry)?;
        crate::format::check_header(b, MAGIC, VERSION)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[44..60]);
        let s = Super {
            blocks: get_u32(b, 12),
            inodes: get_u32(b, 16),
            log_start: get_u32(b, 20),
            log_blocks: get_u32(b, 24),
            itable_start: get_u32(b, 28),
            bitmap_start: get_u32(b, 32),
            bitmap_blocks: get_u32(b, 36),
            data_start: get_u32(b, 40),
            uuid,
            created: get_u64(b, 64),
        };
        s.check()?;
        Ok(s)
    }
}

/// A timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Time {
    /// Seconds since the epoch.
    pub sec: i64,
    /// Nanoseconds (below 1e9).
    pub nsec: u32,
}

/// An inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inode {
    /// Type and permission bits; 0 = free.
    pub mode: u32,
    /// Owner (initial user namespace).
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links (a directory: 2 + subdirectories). 0 with `mode != 0`: an orphan
    /// (unlinked while open), freed at the next mount.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last access.
    pub atime: Time,
    /// Last modification.
    pub mtime: Time,
    /// Last status change.
    pub ctime: Time,
    /// Bumped each time the inode number is reused.
    pub generation: u32,
    /// Direct block pointers (0 = hole).
    pub direct: [u32; NDIRECT],
    /// Single indirect block.
    pub ind: u32,
    /// Double indirect block.
    pub dind: u32,
    /// Device number of a device special file.
    pub rdev: u32,
    /// Data blocks this inode holds (data and indirect), for `st_blocks`.
    pub nblocks: u32,
}

/// Why an inode record is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InodeError {
    /// The checksum does not match.
    Checksum,
    /// An unknown file type.
    BadType,
    /// Larger than riofs files can be.
    TooLarge,
}

impl Inode {
    /// Whether the record is free.
    pub fn is_free(&self) -> bool {
        self.mode == 0
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// Whether it has data blocks (regular files, directories, symbolic links).
    pub fn has_data(&self) -> bool {
        matches!(self.mode & S_IFMT, S_IFDIR | S_IFREG | S_IFLNK)
    }

    /// Encodes into `out[..INODE_SIZE]`, checksum last.
    pub fn encode(&self, out: &mut [u8]) {
        out[..INODE_SIZE].fill(0);
        put_u32(out, 0, self.mode);
        put_u32(out, 4, self.uid);
        put_u32(out, 8, self.gid);
        put_u32(out, 12, self.nlink);
        put_u64(out, 16, self.size);
        put_u64(out, 24, self.atime.sec as u64);
        put_u64(out, 32, self.mtime.sec as u64);
        put_u64(out, 40, self.ctime.sec as u64);
        put_u32(out, 48, self.atime.nsec);
        put_u32(out, 52, self.mtime.nsec);
        put_u32(out, 56, self.ctime.nsec);
        put_u32(out, 60, self.generation);
        for (i, d) in self.direct.iter().enumerate() {
            put_u32(out, 64 + 4 * i, *d);
        }
        put_u32(out, 104, self.ind);
        put_u32(out, 108, self.dind);
        put_u32(out, 112, self.rdev);
        put_u32(out, 116, self.nblocks);
        let crc = crc32c(&out[..INODE_SIZE - 4]);
        put_u32(out, INODE_SIZE - 4, crc);
    }

    /// Decodes a record. An all-zero record is a free inode (mkfs leaves the table zero).
    pub fn decode(b: &[u8]) -> Result<Inode, InodeError> {
        let b = &b[..INODE_SIZE];
        if b.iter().all(|&x| x == 0) {
            return Ok(Inode::default());
        }
        if crc32c(&b[..INODE_SIZE - 4]) != get_u32(b, INODE_SIZE - 4) {
            return Err(InodeError::Checksum);
        }
        let mut direct = [0u32; NDIRECT];
        for (i, d) in direct.iter_mut().enumerate() {
            *d = get_u32(b, 64 + 4 * i);
        }
        let t = |s: usize, n: usize| Time {
            sec: get_u64(b, s) as i64,
            nsec: get_u32(b, n),
        };
        let i = Inode {
            mode: get_u32(b, 0),
            uid: get_u32(b, 4),
            gid: get_u32(b, 8),
            nlink: get_u32(b, 12),
            size: get_u64(b, 16),
            atime: t(24, 48),
            mtime: t(32, 52),
            ctime: t(40, 56),
            generation: get_u32(b, 60),
            direct,
            ind: get_u32(b, 104),
            dind: get_u32(b, 108),
            rdev: get_u32(b, 112),
            nblocks: get_u32(b, 116),
        };
        if i.mode != 0 && !valid_type(i.mode) {
            return Err(InodeError::BadType);
        }
        if i.size > MAX_FILE_SIZE {
            return Err(InodeError::TooLarge);
        }
        Ok(i)
    }
}

/// `d_type`-style file type of a directory entry.
pub fn dtype_of(mode: u32) -> u8 {
    ((mode & S_IFMT) >> 12) as u8
}

/// A directory entry: `ino == 0` is a free slot.
#[derive(Clone, Copy)]
pub struct Dirent {
    /// The inode it names.
    pub ino: u32,
    /// Length of the name.
    pub name_len: u16,
    /// File type (`mode >> 12`), for `readdir`.
    pub dtype: u8,
    /// The name (the first `name_len` bytes).
    pub name: [u8; 256],
}

impl Dirent {
    /// A new entry; `None` if the name is empty, too long, or contains `/` or NUL.
    pub fn new(ino: u32, name: &[u8], dtype: u8) -> Option<Dirent> {
        if !valid_name(name) {
            return None;
        }
        let mut n = [0u8; 256];
        n[..name.len()].copy_from_slice(name);
        Some(Dirent {
            ino,
            name_len: name.len() as u16,
            dtype,
            name: n,
        })
    }

    /// The name.
    pub fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.name_len).min(NAME_MAX)]
    }

    /// Encodes into `out[..DIRENT_SIZE]`.
    pub fn encode(&self, out: &mut [u8]) {
        out[..DIRENT_SIZE].fill(0);
        put_u32(out, 0, self.ino);
        out[4..6].copy_from_slice(&self.name_len.to_le_bytes());
        out[6] = self.dtype;
        out[8..8 + 256].copy_from_slice(&self.name);
    }

    /// Decodes an entry; `None` for a free slot; `Err` for one that cannot be valid.
    pub fn decode(b: &[u8]) -> Result<Option<Dirent>, ()> {
        let ino = get_u32(b, 0);
        if ino == 0 {
            return Ok(None);
        }
        let name_len = u16::from_le_bytes([b[4], b[5]]);
        let mut name = [0u8; 256];
        name.copy_from_slice(&b[8..8 + 256]);
        let d = Dirent {
            ino,
            name_len,
            dtype: b[6],
            name,
        };
        if usize::from(name_len) > NAME_MAX || !valid_name(d.name()) {
            return Err(());
        }
        Ok(Some(d))
    }
}

/// Whether `name` can be a directory entry.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name != b"."
        && name != b".."
        && !name.iter().any(|&c| c == b'/' || c == 0)
}

/// A log record's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecHdr {
    /// Object byte offset of the range.
    pub off: u64,
    /// Its length.
    pub len: u32,
    /// The transaction it belongs to.
    pub seq: u64,
}

impl RecHdr {
    fn check(off: u64, len: u32, seq: u64) -> u32 {
        let mut b = [0u8; 20];
        put_u64(&mut b, 0, off);
        put_u32(&mut b, 8, len);
        put_u64(&mut b, 12, seq);
        crc32c(&b) ^ 0x5249_4f46
    }

    /// Encodes into `out[..REC_HDR]`.
    pub fn encode(&self, out: &mut [u8]) {
        put_u64(out, 0, self.off);
        put_u32(out, 8, self.len);
        put_u32(out, 12, Self::check(self.off, self.len, self.seq));
        put_u64(out, 16, self.seq);
    }

    /// Decodes a header of transaction `seq`, checking its check word and that the range
    /// lies in the object after the log (the superblock and the log are never undone).
    pub fn decode(b: &[u8], sb: &Super, seq: u64) -> Option<RecHdr> {
        let off = get_u64(b, 0);
        let len = get_u32(b, 8);
        let s = get_u64(b, 16);
        if s != seq
            || get_u32(b, 12) != Self::check(off, len, s)
            || len == 0
            || len as usize > BLOCK
        {
            return None;
        }
        let lo = u64::from(sb.itable_start) * BLOCK as u64;
        let hi = u64::from(sb.blocks) * BLOCK as u64;
        (off >= lo && off.checked_add(u64::from(len))? <= hi).then_some(RecHdr { off, len, seq })
    }

    /// Bytes the record takes in the log (header, data, padding to 8).
    pub fn span(len: usize) -> usize {
        REC_HDR + len.next_multiple_of(8)
    }
}

/// Where the next record's header goes when the last one ended at byte `pos` of the log:
/// there, or at the next block if the header would straddle one (so that one store of a
/// header is never split between two pages).
pub fn record_pos(pos: usize) -> usize {
    let r = pos % BLOCK;
    if r + REC_HDR > BLOCK {
        pos + (BLOCK - r)
    } else {
        pos
    }
}

/// What a scan of the log found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogScan {
    /// This many records of the transaction, in order (0: nothing in flight).
    Records(usize),
    /// A valid header of the transaction at this byte of the log whose record runs past
    /// the log's end: corrupt.
    Corrupt(usize),
    /// The visitor stopped the scan.
    Stopped,
}

/// Scans the log of `sb` for the records of transaction `seq` (the one after the last
/// committed): `header(pos)` returns the `REC_HDR` bytes at byte `pos` of the log, and
/// `visit(pos, hdr)` is called for each record in order (its old bytes follow the header);
/// returning `false` stops the scan. The kernel's recovery and `riofs-fsck` both use this.
pub fn scan_log(
    sb: &Super,
    seq: u64,
    mut header: impl FnMut(usize) -> Option<[u8; REC_HDR]>,
    mut visit: impl FnMut(usize, RecHdr) -> bool,
) -> LogScan {
    let end = sb.log_bytes();
    let mut pos = LOG_HDR;
    let mut n = 0;
    loop {
        pos = record_pos(pos);
        if pos + REC_HDR > end {
            return LogScan::Records(n);
        }
        let Some(h) = header(pos) else {
            return LogScan::Records(n);
        };
        let Some(r) = RecHdr::decode(&h, sb, seq) else {
            return LogScan::Records(n);
        };
        let span = RecHdr::span(r.len as usize);
        if pos + span > end {
            return LogScan::Corrupt(pos);
        }
        if !visit(pos, r) {
            return LogScan::Stopped;
        }
        n += 1;
        pos += span;
    }
}

/// Reads the number of the last committed transaction out of the log's header (`log` is
/// at least `LOG_HDR` bytes of its start); `None` if the log magic is missing.
pub fn log_committed(log: &[u8]) -> Option<u64> {
    (get_u64(log, 8) == LOG_MAGIC).then(|| get_u64(log, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_known_vector() {
        // RFC 3720's CRC-32C check value.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn geometry_is_consistent_for_many_sizes() {
        for blocks in [128u32, 129, 1000, 4096, 16384, 65536, 1 << 20] {
            let s = Super::for_blocks(blocks, [7; 16], 1).expect("geometry");
            assert!(s.data_start < s.blocks);
            assert!(s.bitmap_blocks as usize * BLOCK * 8 >= blocks as usize);
            let mut b = [0u8; SUPER_SIZE];
            s.encode(&mut b);
            assert_eq!(Super::decode(&b), Ok(s));
        }
        assert!(Super::for_blocks(64, [0; 16], 0).is_none());
    }

    #[test]
    fn geometry_sums_that_overflow_are_refused_not_a_panic() {
        let mut s = Super::for_blocks(4096, [1; 16], 5).expect("geometry");
        s.log_blocks = u32::MAX;
        let mut b = [0u8; SUPER_SIZE];
        s.encode(&mut b);
        assert_eq!(Super::decode(&b), Err(FsError::BadGeometry));
        s.log_blocks = 64;
        s.bitmap_start = u32::MAX;
        s.data_start = u32::MAX;
        s.encode(&mut b);
        assert_eq!(Super::decode(&b), Err(FsError::BadGeometry));
    }

    #[test]
    fn superblock_rejects_damage() {
        let s = Super::for_blocks(4096, [1; 16], 5).expect("geometry");
        let mut b = [0u8; SUPER_SIZE];
        s.encode(&mut b);
        b[20] ^= 1;
        assert_eq!(Super::decode(&b), Err(FsError::BadChecksum));
        assert_eq!(Super::decode(&[0u8; SUPER_SIZE]), Err(FsError::Blank));
    }

    #[test]
    fn inode_round_trips_and_detects_a_flip() {
        let i = Inode {
            mode: S_IFREG | 0o644,
            uid: 1000,
            gid: 100,
            nlink: 1,
            size: 12345,
            direct: [9; NDIRECT],
            ind: 77,
            nblocks: 11,
            mtime: Time { sec: -5, nsec: 7 },
            ..Inode::default()
        };
        let mut b = [0u8; INODE_SIZE];
        i.encode(&mut b);
        assert_eq!(Inode::decode(&b), Ok(i));
        b[17] ^= 0x40;
        assert_eq!(Inode::decode(&b), Err(InodeError::Checksum));
        assert_eq!(Inode::decode(&[0u8; INODE_SIZE]), Ok(Inode::default()));
    }

    #[test]
    fn dirent_names_are_checked() {
        assert!(Dirent::new(5, b"a/b", 8).is_none());
        assert!(Dirent::new(5, b"..", 4).is_none());
        assert!(Dirent::new(5, &[b'x'; 256], 8).is_none());
        let d = Dirent::new(5, &[b'x'; 255], 8).expect("255 bytes is NAME_MAX");
        let mut b = [0u8; DIRENT_SIZE];
        d.encode(&mut b);
        let back = Dirent::decode(&b).expect("valid").expect("used");
        assert_eq!(back.name(), &[b'x'; 255][..]);
        b[8] = b'/';
        assert!(Dirent::decode(&b).is_err());
    }

    #[test]
    fn log_records_outside_the_undoable_area_or_of_another_transaction_are_refused() {
        let s = Super::for_blocks(4096, [1; 16], 5).expect("geometry");
        let mut b = [0u8; REC_HDR];
        RecHdr {
            off: 0,
            len: 8,
            seq: 3,
        }
        .encode(&mut b);
        assert!(
            RecHdr::decode(&b, &s, 3).is_none(),
            "the superblock is never undone"
        );
        let off = u64::from(s.itable_start) * BLOCK as u64;
        let r = RecHdr {
            off,
            len: 8,
            seq: 3,
        };
        r.encode(&mut b);
        assert_eq!(RecHdr::decode(&b, &s, 3), Some(r));
        assert!(
            RecHdr::decode(&b, &s, 4).is_none(),
            "a stale record of transaction 3"
        );
        b[3] ^= 1;
        assert!(RecHdr::decode(&b, &s, 3).is_none());
    }

    #[test]
    fn a_scan_finds_the_running_transactions_records_and_stops_at_stale_ones() {
        let s = Super::for_blocks(4096, [1; 16], 5).expect("geometry");
        let mut log = vec![0u8; s.log_bytes()];
        put_u64(&mut log, 8, LOG_MAGIC);
        put_u64(&mut log, 0, 6);
        let off = u64::from(s.itable_start) * BLOCK as u64;
        // Three records of transaction 7 (one would straddle a block: moved to the next),
        // then a stale one of transaction 6.
        let mut pos = LOG_HDR;
        let mut want = Vec::new();
        for (i, len) in [128usize, 3840, 8, 16].iter().enumerate() {
            pos = record_pos(pos);
            let seq = if i < 3 { 7 } else { 6 };
            RecHdr {
                off,
                len: *len as u32,
                seq,
            }
            .encode(&mut log[pos..pos + REC_HDR]);
            if i < 3 {
                want.push(pos);
            }
            pos += RecHdr::span(*len);
        }
        assert_eq!(log_committed(&log), Some(6));
        let hdr = |p: usize| -> Option<[u8; REC_HDR]> { log.get(p..p + REC_HDR)?.try_into().ok() };
        let mut got = Vec::new();
        let r = scan_log(&s, 7, hdr, |p, _| {
            got.push(p);
            true
        });
        assert_eq!(r, LogScan::Records(3));
        assert_eq!(got, want);
        assert_eq!(
            want,
            [LOG_HDR, LOG_HDR + 152, BLOCK],
            "the third moved past the block end"
        );
        // Committing transaction 7 makes them all stale.
        assert_eq!(scan_log(&s, 8, hdr, |_, _| true), LogScan::Records(0));
    }
}
