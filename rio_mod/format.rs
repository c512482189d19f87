// SPDX-License-Identifier: GPL-2.0

//! The on-arena format. Pure `core` code: rio.ko compiles it, and so does the host crate
//! `userlib/rio-format` (by path), whose unit tests test exactly this file.
//!
//! ```text
//! page 0                superblock, two copies (A at 0, B at 2048), newest valid wins
//! pages 1 ..= T         object table: MAX_OBJECTS slots of two 128-byte copies (A/B)
//! pages T+1 ..= T+R     registry: one u64 entry per data page
//! pages T+R+1 ..        data pages
//! ```
//!
//! Crash consistency rests on three rules:
//! - metadata records (superblock, object slot) are written as a *new copy* with a higher
//!   sequence number and a checksum into the older of the two places, so a torn write
//!   leaves the previous copy valid;
//! - a registry entry is one aligned `u64`, written with a single store, so it is never torn;
//!   its 16-bit check (over its fields and its own page number) catches wild stores;
//! - object creation and growth claim (zeroed) pages in the registry *before* the object
//!   slot that makes them reachable is committed; shrinking and deletion commit the slot
//!   first. Recovery frees every registry entry that its slot does not account for.

// Items are `pub` for the host crate that also compiles this file; in rio.ko they are
// crate-visible only.
#![allow(unreachable_pub)]

/// Arena page size.
pub const PAGE_SIZE: usize = 4096;
/// `"RIOARENA"`, little endian.
pub const SB_MAGIC: u64 = u64::from_le_bytes(*b"RIOARENA");
/// Version of this format.
pub const FORMAT_VERSION: u32 = 1;
/// Object slots in the table.
pub const MAX_OBJECTS: usize = 256;
/// Longest object name, in bytes (names are NUL padded in a 64-byte field).
pub const NAME_MAX: usize = 63;
/// Bytes of one copy of a slot.
pub const SLOT_COPY_SIZE: usize = 128;
/// Offset of superblock copy B in page 0.
pub const SB_COPY_B: usize = 2048;
/// Encoded superblock size.
pub const SB_SIZE: usize = 128;

/// Superblock state: the module was unloaded cleanly and everything was written back.
pub const STATE_CLEAN: u32 = 1;
/// Superblock state: in use (or crashed while in use).
pub const STATE_ACTIVE: u32 = 2;

/// `Superblock::saved_by`: the last clean shutdown was an ordinary unload.
pub const SAVED_BY_UNLOAD: u32 = 0;
/// `Superblock::saved_by`: the crash kernel wrote everything back after a panic (safe
/// sync).
pub const SAVED_BY_CRASH_KERNEL: u32 = 1;

/// Object flag: the slot holds an object.
pub const OBJ_IN_USE: u32 = 1;
/// Object flag: mapped writable into a process since its last writeback; every page may
/// be dirty without the registry knowing.
pub const OBJ_MAPPED: u32 = 2;
/// Object flag: has a block device, re-created when the arena is loaded.
pub const OBJ_BLOCKDEV: u32 = 4;

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32C (Castagnoli), table-driven (riofs checksums an inode on every update).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Little-endian field access, shared with the riofs format (`riofs/format.rs`).
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Little-endian field access, shared with the riofs format (`riofs/format.rs`).
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Little-endian field access, shared with the riofs format (`riofs/format.rs`).
pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Little-endian field access, shared with the riofs format (`riofs/format.rs`).
pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Why a metadata record was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// Every byte is zero: never formatted.
    Blank,
    /// Not our magic number: a foreign or corrupt arena.
    BadMagic,
    /// Our magic, another version.
    BadVersion(u32),
    /// The checksum does not match.
    BadChecksum,
    /// The fields contradict each other or the arena size.
    BadGeometry,
}

/// Checks a versioned header of `b.len()` bytes: not all zero, `magic` at byte 0, `version`
/// (u32) at byte 8, and the CRC-32C of all but the last four bytes in those. Every header
/// of rio.ko's formats (the arena superblock, the disk superblock, riofs's) starts so.
pub fn check_header(b: &[u8], magic: u64, version: u32) -> Result<(), FormatError> {
    if b.iter().all(|&x| x == 0) {
        return Err(FormatError::Blank);
    }
    if get_u64(b, 0) != magic {
        return Err(FormatError::BadMagic);
    }
    let v = get_u32(b, 8);
    if v != version {
        return Err(FormatError::BadVersion(v));
    }
    let end = b.len() - 4;
    if crc32c(&b[..end]) != get_u32(b, end) {
        return Err(FormatError::BadChecksum);
    }
    Ok(())
}

/// Where everything is, derived from the arena size alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// All pages of the arena.
    pub total_pages: u32,
    /// First object-table page.
    pub table_start: u32,
    /// Object-table pages.
    pub table_pages: u32,
    /// First registry page.
    pub registry_start: u32,
    /// Registry pages.
    pub registry_pages: u32,
    /// First data page.
    pub data_start: u32,
    /// Data pages.
    pub data_pages: u32,
}

impl Geometry {
    /// The layout for an arena of `arena_size` bytes; `None` if it is too small or too big.
    pub fn for_size(arena_size: u64) -> Option<Geometry> {
        let total = arena_size / PAGE_SIZE as u64;
        if total > u64::from(MAX_DATA_PAGES) || total == 0 {
            return None;
        }
        let total = total as u32;
        let table_pages = (MAX_OBJECTS * 2 * SLOT_COPY_SIZE / PAGE_SIZE) as u32;
        let table_start = 1;
        let registry_start = table_start + table_pages;
        // Each registry page describes PAGE_SIZE / 8 data pages.
        let per = (PAGE_SIZE / 8) as u32;
        let rest = total.checked_sub(registry_start)?;
        let registry_pages = rest.div_ceil(per + 1);
        let data_start = registry_start + registry_pages;
        let data_pages = total.checked_sub(data_start)?;
        if data_pages == 0 {
            return None;
        }
        Some(Geometry {
            total_pages: total,
            table_start,
            table_pages,
            registry_start,
            registry_pages,
            data_start,
            data_pages,
        })
    }
}

/// The superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Bumped on every rewrite; the newer valid copy wins.
    pub seq: u64,
    /// [`STATE_CLEAN`] or [`STATE_ACTIVE`].
    pub state: u32,
    /// Identity of this arena (and of its backing store).
    pub uuid: [u8; 16],
    /// Incremented on every load.
    pub epoch: u64,
    /// Arena size in bytes.
    pub arena_size: u64,
    /// Layout.
    pub geometry: Geometry,
    /// Loads that found the arena not cleanly shut down.
    pub recoveries: u64,
    /// Who made the arena clean last ([`SAVED_BY_UNLOAD`], [`SAVED_BY_CRASH_KERNEL`]).
    pub saved_by: u32,
}

impl Superblock {
    /// Encodes into `out[..SB_SIZE]`, checksum last.
    pub fn encode(&self, out: &mut [u8]) {
        let b = &mut out[..SB_SIZE];
        b.fill(0);
        put_u64(b, 0, SB_MAGIC);
        put_u32(b, 8, FORMAT_VERSION);
        put_u32(b, 12, self.state);
        put_u64(b, 16, self.seq);
        b[24..40].copy_from_slice(&self.uuid);
        put_u64(b, 40, self.epoch);
        put_u64(b, 48, self.arena_size);
        let g = &self.geometry;
        put_u32(b, 56, g.total_pages);
        put_u32(b, 60, g.table_start);
        put_u32(b, 64, g.table_pages);
        put_u32(b, 68, g.registry_start);
        put_u32(b, 72, g.registry_pages);
        put_u32(b, 76, g.data_start);
        put_u32(b, 80, g.data_pages);
        put_u64(b, 84, self.recoveries);
        put_u32(b, 92, self.saved_by);
        let crc = crc32c(&b[..SB_SIZE - 4]);
        put_u32(b, SB_SIZE - 4, crc);
    }

    /// Decodes and checks one copy.
    pub fn decode(b: &[u8]) -> Result<Superblock, FormatError> {
        let b = &b[..SB_SIZE];
        check_header(b, SB_MAGIC, FORMAT_VERSION)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[24..40]);
        let sb = Superblock {
            state: get_u32(b, 12),
            seq: get_u64(b, 16),
            uuid,
            epoch: get_u64(b, 40),
            arena_size: get_u64(b, 48),
            geometry: Geometry {
                total_pages: get_u32(b, 56),
                table_start: get_u32(b, 60),
                table_pages: get_u32(b, 64),
                registry_start: get_u32(b, 68),
                registry_pages: get_u32(b, 72),
                data_start: get_u32(b, 76),
                data_pages: get_u32(b, 80),
            },
            recoveries: get_u64(b, 84),
            saved_by: get_u32(b, 92),
        };
        if Geometry::for_size(sb.arena_size) != Some(sb.geometry)
            || (sb.state != STATE_CLEAN && sb.state != STATE_ACTIVE)
        {
            return Err(FormatError::BadGeometry);
        }
        Ok(sb)
    }

    /// Picks the newest valid copy of page 0. On failure, reports the error of copy A (the
    /// more telling one when both are bad).
    pub fn pick(page0: &[u8]) -> Result<(Superblock, usize), FormatError> {
        pick_newest(
            Superblock::decode(&page0[..SB_SIZE]),
            Superblock::decode(&page0[SB_COPY_B..SB_COPY_B + SB_SIZE]),
            |s| s.seq,
        )
    }
}

/// The copy to overwrite next: the one that is not `current` (0 = A, 1 = B).
pub fn other_copy(current: usize) -> usize {
    1 - current
}

fn pick_newest<T: Copy>(
    a: Result<T, FormatError>,
    b: Result<T, FormatError>,
    seq: impl Fn(&T) -> u64,
) -> Result<(T, usize), FormatError> {
    match (a, b) {
        (Ok(x), Ok(y)) => Ok(if seq(&y) > seq(&x) { (y, 1) } else { (x, 0) }),
        (Ok(x), Err(_)) => Ok((x, 0)),
        (Err(_), Ok(y)) => Ok((y, 1)),
        (Err(e), Err(_)) => Err(e),
    }
}

/// One object slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectSlot {
    /// Bumped on every rewrite; the newer valid copy wins.
    pub seq: u64,
    /// [`OBJ_IN_USE`], [`OBJ_MAPPED`].
    pub flags: u32,
    /// The name, NUL padded.
    pub name: [u8; 64],
    /// Size in bytes.
    pub size: u64,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Permission bits (as in `chmod`).
    pub mode: u32,
}

impl ObjectSlot {
    /// An empty slot.
    pub const EMPTY: ObjectSlot = ObjectSlot {
        seq: 0,
        flags: 0,
        name: [0; 64],
        size: 0,
        uid: 0,
        gid: 0,
        mode: 0,
    };

    /// Whether it holds an object.
    pub fn in_use(&self) -> bool {
        self.flags & OBJ_IN_USE != 0
    }

    /// The name as bytes (up to the first NUL).
    pub fn name(&self) -> &[u8] {
        let n = self.name.iter().position(|&c| c == 0).unwrap_or(64);
        &self.name[..n]
    }

    /// Pages needed for its size.
    pub fn pages(&self) -> u32 {
        pages_for(self.size)
    }

    /// Encodes one copy into `out[..SLOT_COPY_SIZE]`, checksum last.
    pub fn encode(&self, out: &mut [u8]) {
        let b = &mut out[..SLOT_COPY_SIZE];
        b.fill(0);
        put_u64(b, 0, self.seq);
        put_u32(b, 8, self.flags);
        b[12..76].copy_from_slice(&self.name);
        put_u64(b, 76, self.size);
        put_u32(b, 84, self.uid);
        put_u32(b, 88, self.gid);
        put_u32(b, 92, self.mode);
        let crc = crc32c(&b[..SLOT_COPY_SIZE - 4]);
        put_u32(b, SLOT_COPY_SIZE - 4, crc);
    }

    /// Decodes and checks one copy. An all-zero copy is a valid empty slot.
    pub fn decode(b: &[u8]) -> Result<ObjectSlot, FormatError> {
        let b = &b[..SLOT_COPY_SIZE];
        if b.iter().all(|&x| x == 0) {
            return Ok(ObjectSlot::EMPTY);
        }
        if crc32c(&b[..SLOT_COPY_SIZE - 4]) != get_u32(b, SLOT_COPY_SIZE - 4) {
            return Err(FormatError::BadChecksum);
        }
        let mut name = [0u8; 64];
        name.copy_from_slice(&b[12..76]);
        let s = ObjectSlot {
            seq: get_u64(b, 0),
            flags: get_u32(b, 8),
            name,
            size: get_u64(b, 76),
            uid: get_u32(b, 84),
            gid: get_u32(b, 88),
            mode: get_u32(b, 92),
        };
        if s.in_use() && (s.name().is_empty() || name[NAME_MAX] != 0) {
            return Err(FormatError::BadGeometry);
        }
        Ok(s)
    }

    /// Picks the newest valid copy from the two copies of a slot (`2 * SLOT_COPY_SIZE`
    /// bytes).
    pub fn pick(both: &[u8]) -> Result<(ObjectSlot, usize), FormatError> {
        pick_newest(
            ObjectSlot::decode(&both[..SLOT_COPY_SIZE]),
            ObjectSlot::decode(&both[SLOT_COPY_SIZE..2 * SLOT_COPY_SIZE]),
            |s| s.seq,
        )
    }
}

/// Pages needed to hold `size` bytes.
pub fn pages_for(size: u64) -> u32 {
    size.div_ceil(PAGE_SIZE as u64).min(u64::from(u32::MAX)) as u32
}

/// Largest page count the registry can address (24-bit page index).
pub const MAX_DATA_PAGES: u32 = 1 << 24;

/// A registry entry: which object owns a data page, at which page index, and whether the
/// page is dirty. One `u64`, stored with a single write:
///
/// ```text
/// bits  0..24  page index in the object
/// bits 24..36  owner: object slot + 1 (0 = free)
/// bit  36      dirty: newer than the backing store
/// bits 48..64  check: a hash of bits 0..48 and the data page's own number
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegEntry {
    /// Owning slot, `None` for a free page.
    pub owner: Option<u16>,
    /// Page index within the owner.
    pub index: u32,
    /// Newer than the backing store.
    pub dirty: bool,
}

/// Why a registry entry was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadEntry;

impl RegEntry {
    /// A free page.
    pub const FREE: RegEntry = RegEntry {
        owner: None,
        index: 0,
        dirty: false,
    };

    fn check(low: u64, page: u32) -> u64 {
        let mut x = low ^ (u64::from(page) << 20) ^ 0x9e37_79b9_7f4a_7c15;
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
        x & 0xffff
    }

    /// Encodes the entry of data page `page`. A free, clean page encodes as zero so that a
    /// freshly zeroed registry is valid.
    pub fn encode(&self, page: u32) -> u64 {
        let owner = self.owner.map_or(0, |o| u64::from(o) + 1);
        let low =
            u64::from(self.index & 0x00ff_ffff) | (owner << 24) | (u64::from(self.dirty) << 36);
        if low == 0 {
            return 0;
        }
        low | (RegEntry::check(low, page) << 48)
    }

    /// Decodes the entry of data page `page`.
    pub fn decode(raw: u64, page: u32) -> Result<RegEntry, BadEntry> {
        if raw == 0 {
            return Ok(RegEntry::FREE);
        }
        let low = raw & 0x0000_ffff_ffff_ffff;
        if raw >> 48 != RegEntry::check(low, page) || low >> 37 != 0 {
            return Err(BadEntry);
        }
        let owner = ((low >> 24) & 0xfff) as u16;
        Ok(RegEntry {
            owner: owner.checked_sub(1),
            index: (low & 0x00ff_ffff) as u32,
            dirty: low & (1 << 36) != 0,
        })
    }
}

/// Checks a user-supplied object name: 1 to [`NAME_MAX`] bytes, printable ASCII without
/// `/`; returns the NUL-padded field.
pub fn encode_name(name: &[u8]) -> Option<[u8; 64]> {
    if name.is_empty() || name.len() > NAME_MAX {
        return None;
    }
    if !name.iter().all(|&c| c.is_ascii_graphic() && c != b'/') {
        return None;
    }
    let mut out = [0u8; 64];
    out[..name.len()].copy_from_slice(name);
    Some(out)
}

// ---- the backing disk ---------------------------------------------------------------------
//
// ```text
// block 0                      disk superblock (identity: the arena's UUID)
// blocks 1 ..= 8               object table: MAX_OBJECTS entries of 128 bytes; entry i
//                              describes arena slot i
// blocks 9 ..                  data: each object in one contiguous extent
// ```
//
// Writeback writes an object's pages into its extent, syncs, then writes its entry and
// syncs again: an entry never points at data that is not on the disk. An object that
// outgrows its extent gets a new one, written in full before its entry moves to it.

/// `"RIODISK1"`, little endian.
pub const DISK_MAGIC: u64 = u64::from_le_bytes(*b"RIODISK1");
/// Blocks (of [`PAGE_SIZE`]) before the data area.
pub const DISK_TABLE_START: u64 = 1;
/// Blocks of the object table.
pub const DISK_TABLE_BLOCKS: u64 = (MAX_OBJECTS * SLOT_COPY_SIZE / PAGE_SIZE) as u64;
/// First data block.
pub const DISK_DATA_START: u64 = DISK_TABLE_START + DISK_TABLE_BLOCKS;
/// Bytes of an encoded disk entry.
pub const DISK_ENTRY_SIZE: usize = 128;

/// Bytes a backing disk needs for an arena of `geometry`: every data page must fit.
pub fn disk_bytes_needed(geometry: &Geometry) -> u64 {
    (DISK_DATA_START + u64::from(geometry.data_pages)) * PAGE_SIZE as u64
}

/// The backing disk's superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSuper {
    /// The arena this disk backs.
    pub uuid: [u8; 16],
    /// Size of the disk in blocks.
    pub blocks: u64,
}

impl DiskSuper {
    /// Encodes into `out[..SB_SIZE]`.
    pub fn encode(&self, out: &mut [u8]) {
        let b = &mut out[..SB_SIZE];
        b.fill(0);
        put_u64(b, 0, DISK_MAGIC);
        put_u32(b, 8, FORMAT_VERSION);
        b[16..32].copy_from_slice(&self.uuid);
        put_u64(b, 32, self.blocks);
        let crc = crc32c(&b[..SB_SIZE - 4]);
        put_u32(b, SB_SIZE - 4, crc);
    }

    /// Decodes and checks.
    pub fn decode(b: &[u8]) -> Result<DiskSuper, FormatError> {
        let b = &b[..SB_SIZE];
        check_header(b, DISK_MAGIC, FORMAT_VERSION)?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[16..32]);
        Ok(DiskSuper {
            uuid,
            blocks: get_u64(b, 32),
        })
    }
}

/// One object on the backing disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskEntry {
    /// The object's slot contents (name, size, owner, mode; `OBJ_IN_USE`).
    pub slot: ObjectSlot,
    /// First block of its extent, relative to [`DISK_DATA_START`].
    pub start: u64,
    /// Blocks in its extent (its capacity).
    pub blocks: u64,
}

impl DiskEntry {
    /// No object.
    pub const EMPTY: DiskEntry = DiskEntry {
        slot: ObjectSlot::EMPTY,
        start: 0,
        blocks: 0,
    };

    /// Whether it describes an object.
    pub fn in_use(&self) -> bool {
        self.slot.in_use()
    }

    /// Encodes into `out[..DISK_ENTRY_SIZE]`. The slot's sequence field carries the extent
    /// start and its first reserved bytes the extent length.
    pub fn encode(&self, out: &mut [u8]) {
        let b = &mut out[..DISK_ENTRY_SIZE];
        if !self.in_use() {
            b.fill(0);
            return;
        }
        let slot = ObjectSlot {
            seq: self.start,
            ..self.slot
        };
        slot.encode(b);
        put_u64(b, 96, self.blocks);
        let crc = crc32c(&b[..DISK_ENTRY_SIZE - 4]);
        put_u32(b, DISK_ENTRY_SIZE - 4, crc);
    }

    /// Decodes and checks.
    pub fn decode(b: &[u8]) -> Result<DiskEntry, FormatError> {
        let b = &b[..DISK_ENTRY_SIZE];
        let slot = ObjectSlot::decode(b)?;
        if !slot.in_use() {
            return Ok(DiskEntry::EMPTY);
        }
        let blocks = get_u64(b, 96);
        if u64::from(slot.pages()) > blocks {
            return Err(FormatError::BadGeometry);
        }
        Ok(DiskEntry {
            slot: ObjectSlot { seq: 0, ..slot },
            start: slot.seq,
            blocks,
        })
    }
}

/// First fit: the lowest start of `need` free blocks among `used` extents `(start, blocks)`
/// in a data area of `total` blocks.
pub fn first_fit(used: &mut [(u64, u64)], need: u64, total: u64) -> Option<u64> {
    used.sort_unstable();
    let mut at = 0u64;
    for &(s, n) in used.iter() {
        if s >= at && s - at >= need {
            return Some(at);
        }
        at = at.max(s.saturating_add(n));
    }
    (total.checked_sub(at)? >= need).then_some(at)
}
