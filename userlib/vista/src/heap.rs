//! The persistent heap: a bitmap allocator whose metadata lives in the segment's metadata
//! mapping, never among user data.
//!
//! # Format
//!
//! The data area is divided into 16-byte granules. For every 64 granules the heap area
//! holds one 16-byte group: an *allocated* word (bit i set: granule i is in use) followed
//! by a *start* word (bit i set: a block begins at granule i). A block is a run of
//! allocated granules that begins at a start bit and ends before the next start bit or the
//! next free granule. All words are little-endian u64.
//!
//! # Transactions
//!
//! Every change to the bitmaps is logged (physical before-image of the words, area
//! "metadata") before it is made, so abort and recovery restore the heap exactly as they
//! restore user data. Frees of blocks that existed before the transaction are deferred to
//! commit by the engine (see [`crate::Tx::free_raw`]); this module only flips bits.

use crate::error::{Error, Result};
use crate::log::{record_size, LogCore, AREA_META};

/// Allocation granule in bytes.
pub const GRANULE: usize = 16;

/// Bytes of heap metadata for a data area of `data_len` bytes (before page rounding).
pub const fn meta_bytes(data_len: usize) -> usize {
    let gran = data_len / GRANULE;
    gran.div_ceil(64) * 16
}

/// The heap of one segment.
#[derive(Debug)]
pub(crate) struct Heap {
    /// Start of the bitmap groups (inside the metadata mapping).
    bits: *mut u64,
    /// Offset of `bits` within the metadata area (for log records).
    meta_off: usize,
    /// Number of granules.
    n_gran: usize,
    /// Next-fit cursor (volatile; any value is correct).
    hint: usize,
}

impl Heap {
    /// A heap over `n_gran` granules whose bitmaps start at `bits`, `meta_off` bytes into
    /// the metadata area.
    ///
    /// # Safety
    /// `bits` must point to `meta_bytes(n_gran * GRANULE)` writable, 8-aligned bytes of a
    /// mapping that outlives the heap.
    pub(crate) unsafe fn new(bits: *mut u64, meta_off: usize, n_gran: usize) -> Heap {
        Heap {
            bits,
            meta_off,
            n_gran,
            hint: 0,
        }
    }

    fn alloc_word(&self, w: usize) -> u64 {
        // SAFETY: w < n_gran.div_ceil(64), inside the bitmap (constructor contract).
        unsafe { self.bits.add(2 * w).read() }
    }

    fn start_word(&self, w: usize) -> u64 {
        // SAFETY: w < n_gran.div_ceil(64), so word 2w+1 is inside the bitmap of
        // 2 * n_gran.div_ceil(64) words the constructor's contract provides.
        unsafe { self.bits.add(2 * w + 1).read() }
    }

    fn set_words(&mut self, w: usize, alloc: u64, start: u64) {
        // SAFETY: w < n_gran.div_ceil(64), so words 2w and 2w+1 are inside the bitmap the
        // constructor's contract provides (writable, outliving the heap); `&mut self`
        // serializes writers.
        unsafe {
            self.bits.add(2 * w).write(alloc);
            self.bits.add(2 * w + 1).write(start);
        }
    }

    fn is_alloc(&self, g: usize) -> bool {
        self.alloc_word(g / 64) >> (g % 64) & 1 == 1
    }

    fn is_start(&self, g: usize) -> bool {
        self.start_word(g / 64) >> (g % 64) & 1 == 1
    }

    /// First granule >= g whose allocated bit equals `want`, or `n_gran`.
    fn next_with(&self, mut g: usize, want: bool) -> usize {
        while g < self.n_gran {
            let w = g / 64;
            let word = if want {
                self.alloc_word(w)
            } else {
                !self.alloc_word(w)
            };
            let masked = word & (!0u64 << (g % 64));
            if masked != 0 {
                return (w * 64 + masked.trailing_zeros() as usize).min(self.n_gran);
            }
            g = (w + 1) * 64;
        }
        self.n_gran
    }

    /// Granules in the block that starts at `g`, if a block starts there.
    pub(crate) fn block_len(&self, g: usize) -> Option<usize> {
        if g >= self.n_gran || !self.is_alloc(g) || !self.is_start(g) {
            return None;
        }
        let mut e = g + 1;
        while e < self.n_gran {
            let w = e / 64;
            // Ends at the first granule that is free or starts another block.
            let stop = (!self.alloc_word(w) | self.start_word(w)) & (!0u64 << (e % 64));
            if stop != 0 {
                e = w * 64 + stop.trailing_zeros() as usize;
                break;
            }
            e = (w + 1) * 64;
        }
        Some(e.min(self.n_gran) - g)
    }

    /// Whether granule `g` is in use (by any block).
    pub(crate) fn is_allocated(&self, g: usize) -> bool {
        g < self.n_gran && self.is_alloc(g)
    }

    fn find(&self, n: usize, align: usize, from: usize) -> Option<usize> {
        let mut g = from;
        loop {
            g = self.next_with(g, false);
            g = g.div_ceil(align) * align;
            if g + n > self.n_gran {
                return None;
            }
            let e = self.next_with(g, true);
            if e - g >= n {
                return Some(g);
            }
            g = e;
        }
    }

    /// Log bytes an allocation or free of `n` granules at `g` needs.
    pub(crate) fn log_bytes(g: usize, n: usize) -> usize {
        let words = (g + n - 1) / 64 - g / 64 + 1;
        record_size(words * 16)
    }

    /// Logs the bitmap groups covering `[g, g + n)` before they change.
    fn log_groups(
        &self,
        log: &LogCore,
        slot: u16,
        g: usize,
        n: usize,
        reserved: bool,
    ) -> Result<()> {
        let w0 = g / 64;
        let w1 = (g + n - 1) / 64;
        // SAFETY: groups w0..=w1 lie inside the bitmap; the log is another area.
        let src = unsafe { self.bits.add(2 * w0) } as *const u8;
        let off = (self.meta_off + 16 * w0) as u64;
        let len = 16 * (w1 - w0 + 1);
        // SAFETY: src is readable for len bytes (inside the bitmap) and not in the log.
        unsafe {
            if reserved {
                log.append_reserved(slot, AREA_META, off, src, len)?;
            } else {
                log.append(slot, AREA_META, off, src, len)?;
            }
        }
        Ok(())
    }

    fn mark(&mut self, g: usize, n: usize, used: bool) {
        let mut i = g;
        while i < g + n {
            let w = i / 64;
            let lo = i % 64;
            let hi = (g + n - w * 64).min(64);
            let mask = if hi - lo == 64 {
                !0u64
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            let (mut a, mut s) = (self.alloc_word(w), self.start_word(w));
            if used {
                a |= mask;
            } else {
                a &= !mask;
            }
            s &= !mask;
            if used && i == g {
                s |= 1u64 << lo;
            }
            self.set_words(w, a, s);
            i = (w + 1) * 64;
        }
    }

    /// Allocates `size` bytes aligned to `align` (a power of two up to 4096). Returns the
    /// granule index of the block. Logs the metadata change first.
    pub(crate) fn alloc(
        &mut self,
        log: &LogCore,
        slot: u16,
        size: usize,
        align: usize,
    ) -> Result<usize> {
        let oom = Error::OutOfMemory { size, align };
        if !align.is_power_of_two() || align > crate::map::PAGE {
            return Err(Error::InvalidConfig(format!(
                "alignment {align} unsupported"
            )));
        }
        let n = size.max(1).div_ceil(GRANULE);
        let ag = (align / GRANULE).max(1);
        let g = self
            .find(n, ag, self.hint.min(self.n_gran))
            .or_else(|| self.find(n, ag, 0))
            .ok_or(oom)?;
        self.log_groups(log, slot, g, n, false)?;
        self.mark(g, n, true);
        self.hint = g + n;
        Ok(g)
    }

    /// Frees the block at granule `g` now (logged). `reserved`: use log space reserved
    /// earlier (commit-time frees).
    pub(crate) fn free_now(
        &mut self,
        log: &LogCore,
        slot: u16,
        g: usize,
        reserved: bool,
    ) -> Result<()> {
        let n = self
            .block_len(g)
            .ok_or(Error::DoubleFree { addr: g * GRANULE })?;
        self.log_groups(log, slot, g, n, reserved)?;
        self.mark(g, n, false);
        Ok(())
    }

    /// Resets the volatile cursor (after abort).
    pub(crate) fn reset_hint(&mut self) {
        self.hint = 0;
    }

    /// Granules in use.
    pub(crate) fn used_granules(&self) -> usize {
        (0..self.n_gran.div_ceil(64))
            .map(|w| self.alloc_word(w).count_ones() as usize)
            .sum()
    }

    /// Total granules.
    pub(crate) fn granules(&self) -> usize {
        self.n_gran
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogInfo;

    struct Fixture {
        _bits: Vec<u64>,
        _logbuf: Vec<u64>,
        heap: Heap,
        log: LogCore,
    }

    fn fixture(n_gran: usize) -> Fixture {
        let mut bits = vec![0u64; meta_bytes(n_gran * GRANULE) / 8];
        let mut logbuf = vec![0u64; (4096 + (1 << 16)) / 8];
        // SAFETY: both buffers outlive the fixture's users and have the stated sizes.
        let log = unsafe {
            LogCore::format(
                logbuf.as_mut_ptr().cast(),
                4096 + (1 << 16),
                &LogInfo {
                    log_id: 1,
                    capacity: 1 << 16,
                    members: vec![1],
                },
                false,
            )
            .unwrap()
        };
        log.begin();
        // SAFETY: bits has meta_bytes(...) bytes and outlives the heap.
        let heap = unsafe { Heap::new(bits.as_mut_ptr(), 0, n_gran) };
        Fixture {
            _bits: bits,
            _logbuf: logbuf,
            heap,
            log,
        }
    }

    #[test]
    fn alloc_free_extents() {
        let mut f = fixture(300);
        let a = f.heap.alloc(&f.log, 0, 40, 16).unwrap(); // 3 granules
        let b = f.heap.alloc(&f.log, 0, 16, 16).unwrap(); // 1
        let c = f.heap.alloc(&f.log, 0, 2000, 16).unwrap(); // 125, crosses words
        assert_eq!((a, b, c), (0, 3, 4));
        assert_eq!(f.heap.block_len(a), Some(3));
        assert_eq!(f.heap.block_len(b), Some(1));
        assert_eq!(f.heap.block_len(c), Some(125));
        assert_eq!(f.heap.block_len(1), None);
        assert_eq!(f.heap.used_granules(), 129);
        f.heap.free_now(&f.log, 0, b, false).unwrap();
        assert!(matches!(
            f.heap.free_now(&f.log, 0, b, false),
            Err(Error::DoubleFree { .. })
        ));
        assert_eq!(f.heap.block_len(a), Some(3));
        assert_eq!(f.heap.used_granules(), 128);
        // Next fit continues after c, then wraps to reuse b's hole.
        let d = f.heap.alloc(&f.log, 0, 16, 16).unwrap();
        assert_eq!(d, 129);
        f.heap.hint = 290;
        let e = f.heap.alloc(&f.log, 0, 16 * 20, 16).unwrap();
        assert_eq!(e, 130);
        f.heap.hint = 300;
        let g = f.heap.alloc(&f.log, 0, 16, 16).unwrap();
        assert_eq!(g, 3);
    }

    #[test]
    fn alignment_and_exhaustion() {
        let mut f = fixture(512);
        let _ = f.heap.alloc(&f.log, 0, 16, 16).unwrap();
        let p = f.heap.alloc(&f.log, 0, 100, 4096).unwrap();
        assert_eq!(p % 256, 0);
        assert_eq!(p, 256);
        assert!(matches!(
            f.heap.alloc(&f.log, 0, 512 * 16, 16),
            Err(Error::OutOfMemory { .. })
        ));
        assert!(f.heap.alloc(&f.log, 0, 16, 3).is_err());
    }

    #[test]
    fn adjacent_blocks_keep_their_extents() {
        let mut f = fixture(128);
        let v: Vec<usize> = (0..10)
            .map(|_| f.heap.alloc(&f.log, 0, 64, 16).unwrap())
            .collect();
        for w in v.windows(2) {
            assert_eq!(w[1] - w[0], 4);
        }
        f.heap.free_now(&f.log, 0, v[4], false).unwrap();
        assert_eq!(f.heap.block_len(v[3]), Some(4));
        assert_eq!(f.heap.block_len(v[5]), Some(4));
        assert!(!f.heap.is_allocated(v[4]));
        assert_eq!(f.heap.block_len(v[4]), None);
    }
}
