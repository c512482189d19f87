//! Segment format and mapping: the header page, the layout of a backing, and mapping the
//! user data at a fixed, caller-chosen address.
//!
//! # Backing layout (version 1, little-endian, every area page-aligned)
//!
//! ```text
//! 0            header page (below)
//! log_off      embedded undo log (header page + records), used when the segment is alone
//! roots_off    root table (see `roots`)
//! heap_off     heap bitmaps (see `heap`), absent if the segment has no heap
//! data_off     user data, data_len bytes: mapped at base_addr
//! ```
//!
//! Everything before `data_off` is the *metadata area*, mapped at an address the kernel
//! picks, away from user data, so wild stores through user pointers are unlikely to hit it.
//!
//! Header page (static part, covered by `checksum`):
//!
//! | offset | size | field                                  |
//! |-------:|-----:|----------------------------------------|
//! | 0      | 8    | magic `"VISTASEG"`                     |
//! | 8      | 4    | version (1)                            |
//! | 12     | 4    | page size (4096)                       |
//! | 16     | 8    | segment id (random, non-zero)          |
//! | 24     | 8    | base address of the data mapping       |
//! | 32     | 8    | data_off                               |
//! | 40     | 8    | data_len                               |
//! | 48     | 8    | log_off                                |
//! | 56     | 8    | log_len (header page + record area)    |
//! | 64     | 8    | roots_off                              |
//! | 72     | 4    | roots capacity (entries)               |
//! | 76     | 4    | flags: 1 = heap, 2 = created in place  |
//! | 80     | 8    | heap_off                               |
//! | 88     | 8    | heap_len                               |
//! | 96     | 8    | checksum of bytes 0..96                |
//!
//! Mutable word at offset 256: `bound_log`, 0 while the segment uses its embedded log, or
//! the id of the shared log of the [`Group`](crate::Group) it belongs to.
//!
//! The magic is written last when a segment is created, so a creation interrupted by a
//! crash leaves a backing that `open` refuses (bad magic) and `create` refuses (not empty).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backing::Backing;
use crate::checksum::checksum;
use crate::error::{Error, Result};
use crate::heap::{self, Heap, GRANULE};
use crate::map::{page_up, Mapping, Placement, PAGE};
use crate::roots::{self, Roots};

/// Magic at the start of a segment header.
pub const SEG_MAGIC: [u8; 8] = *b"VISTASEG";
/// Segment format version.
pub const SEG_VERSION: u32 = 1;

const OFF_CHECKSUM: usize = 96;
const OFF_BOUND: usize = 256;
const FLAG_HEAP: u32 = 1;
const FLAG_IN_PLACE: u32 = 2;

/// How a segment is laid out; chosen at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    /// Bytes of user data (rounded up to whole pages).
    pub data_len: usize,
    /// Bytes of the embedded undo log's record area (rounded up to whole pages). In
    /// implicit mode every first write to a page logs 4120 bytes.
    pub log_capacity: usize,
    /// Whether the data area is managed by the transactional heap.
    pub heap: bool,
    /// Entries in the root table.
    pub roots: usize,
}

impl SegmentConfig {
    /// A segment of `data_len` bytes with a heap, 64 roots, and a log of a quarter of the
    /// data size (at least 64 KiB, at most 64 MiB).
    pub fn new(data_len: usize) -> SegmentConfig {
        SegmentConfig {
            data_len,
            log_capacity: (data_len / 4).clamp(64 << 10, 64 << 20),
            heap: true,
            roots: 64,
        }
    }

    /// Sets the log capacity.
    pub fn log_capacity(mut self, bytes: usize) -> SegmentConfig {
        self.log_capacity = bytes;
        self
    }

    /// Enables or disables the heap.
    pub fn heap(mut self, on: bool) -> SegmentConfig {
        self.heap = on;
        self
    }

    /// Sets the number of root entries.
    pub fn roots(mut self, n: usize) -> SegmentConfig {
        self.roots = n;
        self
    }
}

/// The decoded static header: the layout of one segment's backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Random non-zero id.
    pub seg_id: u64,
    /// Where the data is mapped.
    pub base: usize,
    /// Offset of the data in the backing (= length of the metadata area).
    pub data_off: usize,
    /// Bytes of data.
    pub data_len: usize,
    /// Offset of the embedded log area.
    pub log_off: usize,
    /// Bytes of the embedded log area (header page + records).
    pub log_len: usize,
    /// Offset of the root table.
    pub roots_off: usize,
    /// Root entries.
    pub roots_cap: usize,
    /// Offset of the heap bitmaps.
    pub heap_off: usize,
    /// Bytes of heap bitmaps (0 = no heap).
    pub heap_len: usize,
    /// Created in place over existing memory.
    pub in_place: bool,
}

impl Layout {
    /// Computes the layout for a new segment.
    pub fn plan(cfg: &SegmentConfig, base: usize, seg_id: u64, in_place: bool) -> Result<Layout> {
        if cfg.data_len == 0 {
            return Err(Error::InvalidConfig("data_len must be positive".into()));
        }
        if cfg.roots > 1 << 16 {
            return Err(Error::InvalidConfig("at most 65536 roots".into()));
        }
        let data_len = page_up(cfg.data_len);
        let log_off = PAGE;
        let log_len = PAGE + page_up(cfg.log_capacity.max(PAGE));
        let roots_off = log_off + log_len;
        let roots_len = page_up(cfg.roots * roots::ENTRY);
        let heap_off = roots_off + roots_len;
        let heap_len = if cfg.heap {
            page_up(heap::meta_bytes(data_len))
        } else {
            0
        };
        Ok(Layout {
            seg_id,
            base,
            data_off: heap_off + heap_len,
            data_len,
            log_off,
            log_len,
            roots_off,
            roots_cap: cfg.roots,
            heap_off,
            heap_len,
            in_place,
        })
    }

    /// Bytes the backing must have.
    pub fn total_len(&self) -> u64 {
        (self.data_off + self.data_len) as u64
    }

    /// Encodes the static header.
    pub fn encode(&self) -> [u8; OFF_CHECKSUM + 8] {
        let mut b = [0u8; OFF_CHECKSUM + 8];
        b[0..8].copy_from_slice(&SEG_MAGIC);
        b[8..12].copy_from_slice(&SEG_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(PAGE as u32).to_le_bytes());
        let words: [(usize, u64); 9] = [
            (16, self.seg_id),
            (24, self.base as u64),
            (32, self.data_off as u64),
            (40, self.data_len as u64),
            (48, self.log_off as u64),
            (56, self.log_len as u64),
            (64, self.roots_off as u64),
            (80, self.heap_off as u64),
            (88, self.heap_len as u64),
        ];
        for (at, v) in words {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        b[72..76].copy_from_slice(&(self.roots_cap as u32).to_le_bytes());
        let flags = if self.heap_len > 0 { FLAG_HEAP } else { 0 }
            | if self.in_place { FLAG_IN_PLACE } else { 0 };
        b[76..80].copy_from_slice(&flags.to_le_bytes());
        let sum = checksum(0, &b[..OFF_CHECKSUM]);
        b[OFF_CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes and checks a header against the backing length.
    pub fn decode(b: &[u8], backing_len: u64) -> Result<Layout> {
        let bad = |reason: String| Error::CorruptHeader {
            what: "segment",
            reason,
        };
        if b.len() < OFF_CHECKSUM + 8 {
            return Err(bad("header truncated".into()));
        }
        if b[0..8] != SEG_MAGIC {
            return Err(Error::BadMagic { what: "segment" });
        }
        let r64 = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let r32 = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[at..at + 4]);
            u32::from_le_bytes(w)
        };
        let version = r32(8);
        if version != SEG_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "segment",
                found: version,
                supported: SEG_VERSION,
            });
        }
        if checksum(0, &b[..OFF_CHECKSUM]) != r64(OFF_CHECKSUM) {
            return Err(bad("checksum mismatch".into()));
        }
        if r32(12) as usize != PAGE {
            return Err(bad(format!("page size {} != {PAGE}", r32(12))));
        }
        let flags = r32(76);
        let l = Layout {
            seg_id: r64(16),
            base: r64(24) as usize,
            data_off: r64(32) as usize,
            data_len: r64(40) as usize,
            log_off: r64(48) as usize,
            log_len: r64(56) as usize,
            roots_off: r64(64) as usize,
            roots_cap: r32(72) as usize,
            heap_off: r64(80) as usize,
            heap_len: r64(88) as usize,
            in_place: flags & FLAG_IN_PLACE != 0,
        };
        // The layout must be exactly what `plan` would produce for these sizes.
        let cfg = SegmentConfig {
            data_len: l.data_len,
            log_capacity: l.log_len.saturating_sub(PAGE),
            heap: flags & FLAG_HEAP != 0,
            roots: l.roots_cap,
        };
        let expect =
            Layout::plan(&cfg, l.base, l.seg_id, l.in_place).map_err(|e| bad(e.to_string()))?;
        if expect != l || l.seg_id == 0 || l.base % PAGE != 0 || l.base == 0 {
            return Err(bad("inconsistent layout".into()));
        }
        if l.total_len() > backing_len {
            return Err(Error::BackingTooSmall {
                actual: backing_len,
                needed: l.total_len(),
            });
        }
        Ok(l)
    }
}

/// How writes to a segment are logged inside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogMode {
    /// Only ranges passed to `set_range` (or written through the typed API) are logged.
    /// Stores to other ranges are permanent at once and never rolled back: this is also
    /// the mode for bookkeeping that must survive an abort.
    #[default]
    Explicit,
    /// The data is write-protected at `begin`; the first store to each page faults and
    /// the page is logged (SIGSEGV handler on an alternate stack).
    Implicit,
    /// As `Implicit`, but faults are resolved by a userfaultfd write-protect thread.
    /// Needs a shmem (tmpfs) or hugetlbfs backing and a kernel that allows userfaultfd.
    ImplicitUffd,
}

/// One segment's mappings and metadata views, as used by the engine.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) layout: Layout,
    pub(crate) data: Mapping,
    pub(crate) meta: Mapping,
    pub(crate) heap: Option<Heap>,
    pub(crate) roots: Roots,
    pub(crate) mode: LogMode,
    pub(crate) implicit: Option<crate::implicit::Registration>,
    pub(crate) uffd: Option<crate::uffd::Tracker>,
    pub(crate) backing: Backing,
}

// SAFETY: a Member owns its mappings; the raw pointers in Heap/Roots point into them.
unsafe impl Send for Member {}

fn random_id() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into our 8-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    let mut v = u64::from_le_bytes(b);
    if n != 8 {
        // Fall back to time and address entropy; ids only need to differ between segments.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        v = t ^ (&b as *const _ as u64).rotate_left(32) ^ u64::from(std::process::id());
    }
    v.max(1)
}

/// A fresh random non-zero id.
pub(crate) fn new_id() -> u64 {
    random_id()
}

impl Member {
    /// Reads and checks the header of `backing` (without mapping anything).
    pub(crate) fn read_layout(backing: &Backing) -> Result<Layout> {
        let mut page = vec![0u8; OFF_CHECKSUM + 8];
        backing.read_at(0, &mut page)?;
        Layout::decode(&page, backing.len())
    }

    /// Reads the `bound_log` word of the segment in `backing` (before anything is mapped).
    pub(crate) fn read_bound_log(backing: &Backing) -> Result<u64> {
        let mut w = [0u8; 8];
        backing.read_at(OFF_BOUND as u64, &mut w)?;
        Ok(u64::from_le_bytes(w))
    }

    /// Formats a new segment in `backing` and maps it. For `in_place`, the current memory
    /// at `addr` (data_len bytes) becomes the initial contents.
    pub(crate) fn create(
        mut backing: Backing,
        addr: usize,
        cfg: &SegmentConfig,
        in_place: bool,
    ) -> Result<Member> {
        crate::map::check_page_size()?;
        if addr % PAGE != 0 || addr == 0 {
            return Err(Error::MisalignedAddress { addr, page: PAGE });
        }
        backing.lock()?;
        let layout = Layout::plan(cfg, addr, random_id(), in_place)?;
        if backing.len() < layout.total_len() {
            return Err(Error::BackingTooSmall {
                actual: backing.len(),
                needed: layout.total_len(),
            });
        }
        let mut first = vec![0u8; PAGE];
        backing.read_at(0, &mut first)?;
        if first.iter().any(|&b| b != 0) {
            return Err(Error::NotEmpty);
        }
        let placement = if in_place {
            if cfg.data_len % PAGE != 0 {
                return Err(Error::InvalidConfig(format!(
                    "in-place length {} is not a multiple of the page size",
                    cfg.data_len
                )));
            }
            // SAFETY: the caller of create_in_place promises [addr, addr+len) is readable
            // memory it owns; we copy it into the backing before mapping over it.
            let cur = unsafe { std::slice::from_raw_parts(addr as *const u8, layout.data_len) };
            backing.write_at(layout.data_off as u64, cur)?;
            Placement::InPlace(addr)
        } else {
            Placement::Fixed(addr)
        };
        let meta = Mapping::new(&backing, 0, layout.data_off, Placement::Anywhere)?;
        // Zero the metadata areas (the backing may be a reused Rio object).
        // SAFETY: the metadata mapping is data_off bytes long and exclusively ours.
        unsafe { std::ptr::write_bytes(meta.ptr().add(PAGE), 0, layout.data_off - PAGE) };
        let data = Mapping::new(&backing, layout.data_off as u64, layout.data_len, placement)?;
        let member = Member::assemble(backing, layout, meta, data);
        Ok(member)
    }

    /// Writes the header (magic last) of a freshly created member whose log is formatted.
    pub(crate) fn seal(&self) -> Result<()> {
        let hdr = self.layout.encode();
        // SAFETY: the header page is the first page of our metadata mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                hdr.as_ptr().add(8),
                self.meta.ptr().add(8),
                hdr.len() - 8,
            );
        }
        // The magic goes in with one aligned 8-byte store, after the rest: a crash leaves
        // either no magic (all zero: an unfinished creation) or the whole, sealed header.
        // SAFETY: offset 0 of the page-aligned metadata mapping, which lives as long as
        // &self; no other reference to these bytes exists.
        let magic = unsafe { &*(self.meta.ptr() as *const AtomicU64) };
        magic.store(u64::from_le_bytes(SEG_MAGIC), Ordering::Release);
        if self.backing.durability().syncs_commit() {
            self.meta.sync(0, self.meta.len())?;
            self.data.sync(0, self.data.len())?;
        }
        Ok(())
    }

    /// Opens an existing segment at `addr` (mapping only; no recovery).
    pub(crate) fn open(mut backing: Backing, addr: usize, in_place: bool) -> Result<Member> {
        crate::map::check_page_size()?;
        if addr % PAGE != 0 || addr == 0 {
            return Err(Error::MisalignedAddress { addr, page: PAGE });
        }
        backing.lock()?;
        let layout = Member::read_layout(&backing)?;
        if layout.base != addr {
            return Err(Error::AddressMismatch {
                stored: layout.base,
                requested: addr,
            });
        }
        let meta = Mapping::new(&backing, 0, layout.data_off, Placement::Anywhere)?;
        let placement = if in_place {
            Placement::InPlace(addr)
        } else {
            Placement::Fixed(addr)
        };
        let data = Mapping::new(&backing, layout.data_off as u64, layout.data_len, placement)?;
        Ok(Member::assemble(backing, layout, meta, data))
    }

    fn assemble(backing: Backing, layout: Layout, meta: Mapping, data: Mapping) -> Member {
        // SAFETY: roots_off + roots_cap*ENTRY <= heap_off <= data_off = meta.len() by
        // construction of the (checked) layout; the mapping lives as long as the member.
        let roots = unsafe {
            Roots::new(
                meta.ptr().add(layout.roots_off),
                layout.roots_off,
                layout.roots_cap,
            )
        };
        let heap = (layout.heap_len > 0).then(|| {
            // SAFETY: heap_off + meta_bytes(data_len) <= heap_off + heap_len = data_off;
            // heap_off is page aligned.
            unsafe {
                Heap::new(
                    meta.ptr().add(layout.heap_off).cast(),
                    layout.heap_off,
                    layout.data_len / GRANULE,
                )
            }
        });
        Member {
            layout,
            data,
            meta,
            heap,
            roots,
            mode: LogMode::Explicit,
            implicit: None,
            uffd: None,
            backing,
        }
    }

    fn bound_word(&self) -> &AtomicU64 {
        // SAFETY: OFF_BOUND is an 8-aligned offset inside the header page of the metadata
        // mapping, which lives as long as &self.
        unsafe { &*(self.meta.ptr().add(OFF_BOUND) as *const AtomicU64) }
    }

    /// The shared log this segment is bound to (0 = its own).
    pub(crate) fn bound_log(&self) -> u64 {
        self.bound_word().load(Ordering::Acquire)
    }

    /// Binds the segment to a shared log (0 = back to its own).
    pub(crate) fn set_bound_log(&self, id: u64) -> Result<()> {
        self.bound_word().store(id, Ordering::Release);
        if self.backing.durability().syncs_commit() {
            self.meta.sync(OFF_BOUND, 8)?;
        }
        Ok(())
    }

    /// Pointer to the embedded log area.
    pub(crate) fn embedded_log(&self) -> (*mut u8, usize) {
        // SAFETY: log_off + log_len <= data_off = meta.len().
        (
            unsafe { self.meta.ptr().add(self.layout.log_off) },
            self.layout.log_len,
        )
    }

    /// Bytes of the metadata area that log records may target (roots and heap).
    pub(crate) fn meta_bounds(&self) -> (usize, usize) {
        (self.layout.roots_off, self.layout.data_off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_roundtrip_and_checks() {
        let cfg = SegmentConfig::new(1 << 20);
        let l = Layout::plan(&cfg, 0x7e00_0000_0000, 42, false).unwrap();
        assert_eq!(l.log_off, PAGE);
        assert_eq!(l.data_off % PAGE, 0);
        assert_eq!(l.heap_len, page_up((1 << 20) / 16 / 64 * 16));
        let b = l.encode();
        assert_eq!(&b[..8], b"VISTASEG");
        assert_eq!(Layout::decode(&b, l.total_len()).unwrap(), l);
        assert!(matches!(
            Layout::decode(&b, l.total_len() - 1),
            Err(Error::BackingTooSmall { .. })
        ));
        for i in 8..OFF_CHECKSUM + 8 {
            let mut c = b;
            c[i] ^= 4;
            assert!(Layout::decode(&c, u64::MAX).is_err(), "byte {i}");
        }
        let mut m = b;
        m[3] = 0;
        assert!(matches!(
            Layout::decode(&m, u64::MAX),
            Err(Error::BadMagic { .. })
        ));
        let mut v = b;
        v[8] = 9;
        assert!(matches!(
            Layout::decode(&v, u64::MAX),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
        let no_heap = Layout::plan(&cfg.clone().heap(false), 0x1000, 1, true).unwrap();
        assert_eq!(no_heap.heap_len, 0);
        assert_eq!(
            Layout::decode(&no_heap.encode(), u64::MAX).unwrap(),
            no_heap
        );
    }
}
