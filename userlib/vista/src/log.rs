//! The persistent undo log: format, append, validation and replay.
//!
//! # Format (version 1, little-endian)
//!
//! A log area is one header page followed by `capacity` bytes of records. It lives in its
//! own mapping, never in user data: inside a segment's metadata for a standalone segment,
//! or in a separate backing shared by the members of a [`Group`](crate::Group).
//!
//! Header page (static part, written once at format time, covered by `checksum`):
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! | 0      | 8    | magic `"VISTALOG"`                                 |
//! | 8      | 4    | version (1)                                        |
//! | 12     | 4    | header length in bytes (4096)                      |
//! | 16     | 8    | log id (random, non-zero)                          |
//! | 24     | 8    | capacity of the record area in bytes               |
//! | 32     | 4    | number of member segments (1..=16)                 |
//! | 36     | 4    | reserved, zero                                     |
//! | 40     | 128  | member segment ids, 16 x u64 (unused slots zero)   |
//! | 168    | 8    | checksum of bytes 0..168                           |
//!
//! Mutable words, each 8-byte aligned on its own cache line:
//!
//! | offset | field    | meaning                                                        |
//! |-------:|----------|----------------------------------------------------------------|
//! | 256    | tail     | bytes of valid records; **0 means no transaction in flight**   |
//! | 320    | seq      | number of the current (or last) transaction, bumped by `begin` |
//! | 384    | prepared | tag of a prepared transaction (two-phase commit); 0 = none     |
//!
//! `prepared` means something only while `tail != 0`: a log holds a *prepared*
//! transaction exactly when `tail != 0 && prepared != 0`. A non-zero `prepared` with
//! `tail == 0` is stale (a crash between the two stores that end a prepared
//! transaction) and is cleared by the next `begin` or open.
//!
//! The version stays 1 although `prepared` is new: it occupies bytes of the header page
//! that no earlier code read or wrote and that every creation path leaves zero (the log
//! is formatted in a fresh, zero-filled file or Rio object; `format` now also zeroes the
//! word explicitly), so every existing log reads as "nothing prepared" and is opened
//! exactly as before. The one thing an older Vista cannot do is honour a prepared
//! transaction: it would roll it back at open. Do not open a log that holds one (see
//! [`Group::prepared_tag`](crate::Group::prepared_tag)) with a Vista that predates
//! `prepare`. A version bump would buy nothing here but refusing every existing log.
//!
//! Record (at a multiple of 8 in the record area):
//!
//! | offset | size | field                                                       |
//! |-------:|-----:|-------------------------------------------------------------|
//! | 0      | 8    | checksum of bytes 8..24+len, seeded with `seq` and position |
//! | 8      | 8    | byte offset of the range within its area                    |
//! | 16     | 4    | len: bytes of before-image                                   |
//! | 20     | 2    | target: member slot (index into the header's member table) |
//! | 22     | 1    | area: 0 = user data, 1 = segment metadata (heap, roots)     |
//! | 23     | 1    | kind: 1 = before-image                                      |
//! | 24     | len  | before-image, then zero to seven bytes of padding           |
//!
//! # Protocol
//!
//! * `begin`: `seq += 1` (tail is 0).
//! * `set_range`: write the record past `tail`, then store the new `tail`. A crash before
//!   the `tail` store leaves a record nobody reads; the caller stores into the range only
//!   after `set_range` returned, so the range is still unmodified.
//! * commit point: **one aligned 8-byte store `tail = 0`**. It marks the transaction
//!   committed and discards its log in the same instant.
//! * prepare (two-phase commit, [`Tx::prepare`](crate::Tx::prepare)): whatever commit
//!   does before its commit point (deferred frees, and for the `Msync` policies forcing
//!   the records, `tail` and the data), then `prepared = tag`, forced like the commit
//!   point. No record is appended after it.
//! * commit of a prepared transaction: the commit point `tail = 0` (forced), then
//!   `prepared = 0` (forced). A crash in between leaves a stale `prepared`: committed.
//! * open: `tail == 0`: nothing to do (a stale `prepared` is cleared). `tail != 0`,
//!   `prepared == 0`: roll back (below). `tail != 0`, `prepared != 0`: the transaction
//!   is in doubt; only a resolver may decide it, commit (`tail = 0`, then
//!   `prepared = 0`) or roll back (below). A plain open refuses with
//!   [`Error::Prepared`] and changes nothing.
//! * abort and recovery: validate every record in `0..tail` (checksum with the current
//!   `seq`, target, bounds), then copy before-images back newest first, so that for a range
//!   logged twice the oldest image wins; then `tail = 0`. A crash during replay leaves the
//!   log as it was, and replaying again gives the same result (idempotent). If any record
//!   fails validation nothing is replayed and [`Error::CorruptLog`] is returned. A
//!   prepared transaction's `prepared` word is cleared only after `tail = 0` is durable.

use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::checksum::checksum;
use crate::error::{Error, Result};
use crate::map::{sync_range, PAGE};

#[cfg(not(target_endian = "little"))]
compile_error!("Vista's on-media formats are little-endian; big-endian targets are not supported");

/// Magic at the start of a log header.
pub const LOG_MAGIC: [u8; 8] = *b"VISTALOG";
/// Log format version.
pub const LOG_VERSION: u32 = 1;
/// Most segments that can share one log.
pub const MAX_MEMBERS: usize = 16;
/// Bytes of the header page.
pub const LOG_HEADER_LEN: usize = PAGE;
/// Bytes of a record header.
pub const REC_HDR: usize = 24;

const OFF_CHECKSUM: usize = 168;
const OFF_TAIL: usize = 256;
const OFF_SEQ: usize = 320;
const OFF_PREPARED: usize = 384;

/// Area tag: user data.
pub const AREA_DATA: u8 = 0;
/// Area tag: segment metadata (heap bitmaps, roots).
pub const AREA_META: u8 = 1;
const KIND_BEFORE_IMAGE: u8 = 1;

/// The static part of a log header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    /// Random non-zero id.
    pub log_id: u64,
    /// Bytes in the record area.
    pub capacity: u64,
    /// Segment ids, by slot.
    pub members: Vec<u64>,
}

/// Bytes a record for `len` bytes of before-image takes in the log.
pub const fn record_size(len: usize) -> usize {
    REC_HDR + ((len + 7) & !7)
}

/// Encodes the static header (the first 176 bytes of the header page).
pub fn encode_header(info: &LogInfo) -> [u8; OFF_CHECKSUM + 8] {
    let mut b = [0u8; OFF_CHECKSUM + 8];
    b[0..8].copy_from_slice(&LOG_MAGIC);
    b[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(LOG_HEADER_LEN as u32).to_le_bytes());
    b[16..24].copy_from_slice(&info.log_id.to_le_bytes());
    b[24..32].copy_from_slice(&info.capacity.to_le_bytes());
    b[32..36].copy_from_slice(&(info.members.len() as u32).to_le_bytes());
    for (i, m) in info.members.iter().take(MAX_MEMBERS).enumerate() {
        b[40 + 8 * i..48 + 8 * i].copy_from_slice(&m.to_le_bytes());
    }
    let sum = checksum(0, &b[..OFF_CHECKSUM]);
    b[OFF_CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
    b
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn corrupt(reason: impl Into<String>) -> Error {
    Error::CorruptHeader {
        what: "log",
        reason: reason.into(),
    }
}

/// Decodes and checks a static header; `area_len` is the bytes available for the whole
/// log area (header page plus records).
pub fn decode_header(b: &[u8], area_len: u64) -> Result<LogInfo> {
    if b.len() < OFF_CHECKSUM + 8 {
        return Err(corrupt("header truncated"));
    }
    if b[0..8] != LOG_MAGIC {
        return Err(Error::BadMagic { what: "log" });
    }
    let version = le32(b, 8);
    if version != LOG_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "log",
            found: version,
            supported: LOG_VERSION,
        });
    }
    if checksum(0, &b[..OFF_CHECKSUM]) != le64(b, OFF_CHECKSUM) {
        return Err(corrupt("checksum mismatch"));
    }
    if le32(b, 12) as usize != LOG_HEADER_LEN {
        return Err(corrupt("unexpected header length"));
    }
    let log_id = le64(b, 16);
    let capacity = le64(b, 24);
    let n = le32(b, 32) as usize;
    if log_id == 0 {
        return Err(corrupt("log id is zero"));
    }
    if n == 0 || n > MAX_MEMBERS {
        return Err(corrupt(format!("{n} members")));
    }
    if capacity % 8 != 0 || capacity + LOG_HEADER_LEN as u64 > area_len {
        return Err(corrupt(format!(
            "capacity {capacity} does not fit in a {area_len}-byte area"
        )));
    }
    let members = (0..n).map(|i| le64(b, 40 + 8 * i)).collect();
    Ok(LogInfo {
        log_id,
        capacity,
        members,
    })
}

/// Reads, without changing anything, whether the log area whose header page is `b`
/// (`area_len` bytes in all) holds a prepared transaction, and its tag.
pub fn prepared_in(b: &[u8], area_len: u64) -> Result<Option<u64>> {
    decode_header(b, area_len)?;
    if b.len() < OFF_PREPARED + 8 {
        return Err(corrupt("header truncated"));
    }
    let (tail, tag) = (le64(b, OFF_TAIL), le64(b, OFF_PREPARED));
    Ok((tail != 0 && tag != 0).then_some(tag))
}

/// One validated record: where it is and what it restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Position of the record in the record area.
    pub pos: usize,
    /// Member slot.
    pub target: u16,
    /// [`AREA_DATA`] or [`AREA_META`].
    pub area: u8,
    /// Offset in the area.
    pub offset: u64,
    /// Bytes of before-image.
    pub len: usize,
}

#[inline(always)]
fn seed(seq: u64, pos: usize) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ pos as u64
}

/// A mapped log area. Shared (by raw pointer) with the implicit-mode fault handler, so
/// everything mutable is either an atomic or memory reached through raw pointers.
#[derive(Debug)]
pub(crate) struct LogCore {
    base: *mut u8,
    recs: *mut u8,
    cap: usize,
    /// Bytes promised to commit-time records (deferred frees), not usable by `append`.
    reserved: AtomicUsize,
    sync_records: bool,
    info: LogInfo,
}

// SAFETY: LogCore only holds pointers into a shared mapping owned by the engine that owns
// the LogCore; all mutation goes through atomics or through `&mut Engine`-serialized paths
// (plus the fault handler, which runs on the thread that owns the transaction).
unsafe impl Send for LogCore {}
// SAFETY: `&LogCore` from two threads at once happens only for the fault handler and the
// userfaultfd thread, which append while the owning thread is blocked in the faulting
// store; the counters they share (`reserved`) are atomic, and the pointed-to mapping lives
// as long as the engine that owns the LogCore.
unsafe impl Sync for LogCore {}

impl LogCore {
    /// Formats a log area at `base` (`area_len` bytes, zeroed) and returns it.
    ///
    /// # Safety
    /// `base` must be the page-aligned start of a writable mapping of `area_len` bytes that
    /// outlives the returned value and that nothing else uses.
    pub(crate) unsafe fn format(
        base: *mut u8,
        area_len: usize,
        info: &LogInfo,
        sync_records: bool,
    ) -> Result<LogCore> {
        let hdr = encode_header(info);
        // SAFETY: the caller guarantees `area_len >= LOG_HEADER_LEN` writable bytes at base
        // (checked again by decode below before any use).
        unsafe {
            std::ptr::write_bytes(base.add(OFF_TAIL), 0, 16);
            std::ptr::write_bytes(base.add(OFF_SEQ), 0, 8);
            std::ptr::write_bytes(base.add(OFF_PREPARED), 0, 8);
            std::ptr::copy_nonoverlapping(hdr.as_ptr(), base, hdr.len());
        }
        // SAFETY: same contract as ours.
        unsafe { LogCore::open(base, area_len, sync_records) }
    }

    /// Opens a formatted log area at `base`, checking its header (not its records).
    ///
    /// # Safety
    /// As for [`LogCore::format`].
    pub(crate) unsafe fn open(
        base: *mut u8,
        area_len: usize,
        sync_records: bool,
    ) -> Result<LogCore> {
        if area_len < LOG_HEADER_LEN {
            return Err(corrupt("log area smaller than its header"));
        }
        // SAFETY: the caller guarantees area_len readable bytes; we read the first 176.
        let hdr = unsafe { std::slice::from_raw_parts(base, OFF_CHECKSUM + 8) };
        let info = decode_header(hdr, area_len as u64)?;
        Ok(LogCore {
            base,
            // SAFETY: LOG_HEADER_LEN <= area_len, checked above.
            recs: unsafe { base.add(LOG_HEADER_LEN) },
            cap: info.capacity as usize,
            reserved: AtomicUsize::new(0),
            sync_records,
            info,
        })
    }

    /// The static header.
    pub(crate) fn info(&self) -> &LogInfo {
        &self.info
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        // SAFETY: OFF_TAIL/OFF_SEQ/OFF_PREPARED are 8-byte aligned offsets inside the header page of a
        // live mapping; AtomicU64 has the layout of u64 and the mapping outlives &self.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    /// Current tail (0 = no transaction in flight).
    #[inline(always)]
    pub(crate) fn tail(&self) -> usize {
        self.word(OFF_TAIL).load(Ordering::Acquire) as usize
    }

    /// Current transaction number.
    pub(crate) fn seq(&self) -> u64 {
        self.word(OFF_SEQ).load(Ordering::Acquire)
    }

    /// The `prepared` word: the tag of a prepared transaction if `tail != 0`, else stale
    /// or 0.
    #[inline(always)]
    pub(crate) fn prepared(&self) -> u64 {
        self.word(OFF_PREPARED).load(Ordering::Acquire)
    }

    /// Stores the `prepared` word (one aligned 8-byte store, fenced on both sides so
    /// that it is ordered against the stores to `tail` and to the data).
    pub(crate) fn set_prepared(&self, tag: u64) {
        compiler_fence(Ordering::SeqCst);
        self.word(OFF_PREPARED).store(tag, Ordering::Release);
        compiler_fence(Ordering::SeqCst);
    }

    /// `msync` of the `prepared` word.
    pub(crate) fn sync_prepared(&self) -> Result<()> {
        sync_range(self.base as usize + OFF_PREPARED, 8)
    }

    /// Starts a transaction: bumps `seq`. Requires `tail == 0`.
    #[inline]
    pub(crate) fn begin(&self) {
        let s = self.seq().wrapping_add(1);
        self.word(OFF_SEQ).store(s, Ordering::Release);
        compiler_fence(Ordering::SeqCst);
    }

    /// The commit point (also ends an abort or a recovery): one aligned 8-byte store.
    #[inline(always)]
    pub(crate) fn clear(&self) {
        compiler_fence(Ordering::SeqCst);
        self.word(OFF_TAIL).store(0, Ordering::Release);
        compiler_fence(Ordering::SeqCst);
    }

    /// Free record bytes (excluding reservations).
    pub(crate) fn free(&self) -> usize {
        self.cap
            .saturating_sub(self.tail())
            .saturating_sub(self.reserved.load(Ordering::Relaxed))
    }

    /// Capacity of the record area.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Reserves `bytes` for a later [`LogCore::append_reserved`].
    pub(crate) fn reserve(&self, bytes: usize) -> Result<()> {
        let free = self.free();
        if bytes > free {
            return Err(Error::LogFull {
                needed: bytes,
                free,
                capacity: self.cap,
            });
        }
        self.reserved.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Drops all reservations (end of transaction).
    pub(crate) fn unreserve_all(&self) {
        self.reserved.store(0, Ordering::Relaxed);
    }

    /// Appends a before-image of `len` bytes read from `src`. Returns the record position.
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes and must not overlap the log.
    #[inline(always)]
    pub(crate) unsafe fn append(
        &self,
        target: u16,
        area: u8,
        offset: u64,
        src: *const u8,
        len: usize,
    ) -> Result<usize> {
        let reserved = self.reserved.load(Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe {
            self.append_within(
                target,
                area,
                offset,
                src,
                len,
                self.cap.saturating_sub(reserved),
            )
        }
    }

    /// Appends using space reserved earlier with [`LogCore::reserve`].
    ///
    /// # Safety
    /// As for [`LogCore::append`].
    pub(crate) unsafe fn append_reserved(
        &self,
        target: u16,
        area: u8,
        offset: u64,
        src: *const u8,
        len: usize,
    ) -> Result<usize> {
        let need = record_size(len);
        let r = self.reserved.load(Ordering::Relaxed);
        self.reserved
            .store(r.saturating_sub(need), Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { self.append_within(target, area, offset, src, len, self.cap) }
    }

    #[inline(always)]
    unsafe fn append_within(
        &self,
        target: u16,
        area: u8,
        offset: u64,
        src: *const u8,
        len: usize,
        limit: usize,
    ) -> Result<usize> {
        let tail = self.tail();
        let need = record_size(len);
        if len > u32::MAX as usize || tail + need > limit {
            return Err(Error::LogFull {
                needed: need,
                free: limit.saturating_sub(tail),
                capacity: self.cap,
            });
        }
        // SAFETY: tail + need <= cap, so the record lies inside the record area of our
        // mapping; `tail` is a multiple of 8 (every record size is), and the area is page
        // aligned, so the u64/u32/u16 header stores are aligned. `src` is readable for
        // `len` bytes and disjoint from the log (caller contract).
        unsafe {
            let rec = self.recs.add(tail);
            std::ptr::copy_nonoverlapping(src, rec.add(REC_HDR), len);
            (rec.add(8) as *mut u64).write(offset);
            (rec.add(16) as *mut u32).write(len as u32);
            (rec.add(20) as *mut u16).write(target);
            rec.add(22).write(area);
            rec.add(23).write(KIND_BEFORE_IMAGE);
            let body = std::slice::from_raw_parts(rec.add(8), 16 + len);
            (rec as *mut u64).write(checksum(seed(self.seq(), tail), body));
        }
        // The record must be complete before tail covers it, and tail must cover it before
        // the caller's first store into the range.
        compiler_fence(Ordering::SeqCst);
        self.word(OFF_TAIL)
            .store((tail + need) as u64, Ordering::Release);
        compiler_fence(Ordering::SeqCst);
        if self.sync_records {
            // SAFETY: tail + need <= limit (checked at the top) and both callers pass a limit
            // of at most `cap`, so `recs + tail` is inside the record area of our mapping.
            let rec = unsafe { self.recs.add(tail) } as usize;
            sync_range(rec, need)?;
            sync_range(self.base as usize + OFF_TAIL, 8)?;
        }
        Ok(tail)
    }

    /// Validates every record in `0..tail`. `bounds(target, area)` gives the byte range
    /// `lo..hi` records may restore in that area, or `None` if the pair is invalid.
    pub(crate) fn validate(
        &self,
        out: &mut Vec<Record>,
        bounds: impl Fn(u16, u8) -> Option<(u64, u64)>,
    ) -> Result<()> {
        out.clear();
        let tail = self.tail();
        let bad = |at: usize, reason: String| Error::CorruptLog {
            at: at as u64,
            reason,
        };
        if tail % 8 != 0 || tail > self.cap {
            return Err(bad(
                0,
                format!("tail {tail} outside a {}-byte log", self.cap),
            ));
        }
        let seq = self.seq();
        let mut pos = 0;
        while pos < tail {
            if tail - pos < REC_HDR {
                return Err(bad(pos, "truncated record header".into()));
            }
            // SAFETY: pos + REC_HDR <= tail <= cap: inside the record area; pos % 8 == 0.
            let (sum, offset, len, target, area, kind) = unsafe {
                let rec = self.recs.add(pos);
                (
                    (rec as *const u64).read(),
                    (rec.add(8) as *const u64).read(),
                    (rec.add(16) as *const u32).read() as usize,
                    (rec.add(20) as *const u16).read(),
                    rec.add(22).read(),
                    rec.add(23).read(),
                )
            };
            let size = record_size(len);
            if size > tail - pos {
                return Err(bad(
                    pos,
                    format!("record of {len} bytes runs past tail {tail}"),
                ));
            }
            // SAFETY: pos + size <= tail <= cap.
            let body = unsafe { std::slice::from_raw_parts(self.recs.add(pos + 8), 16 + len) };
            if checksum(seed(seq, pos), body) != sum {
                return Err(bad(pos, "checksum mismatch".into()));
            }
            if kind != KIND_BEFORE_IMAGE {
                return Err(bad(pos, format!("unknown record kind {kind}")));
            }
            let Some((lo, hi)) = bounds(target, area) else {
                return Err(bad(pos, format!("no area {area} in member {target}")));
            };
            if offset < lo || offset.checked_add(len as u64).is_none_or(|end| end > hi) {
                return Err(bad(
                    pos,
                    format!("range {offset}+{len} outside {lo}..{hi} of area {area}"),
                ));
            }
            out.push(Record {
                pos,
                target,
                area,
                offset,
                len,
            });
            pos += size;
        }
        Ok(())
    }

    /// The before-image of a validated record.
    pub(crate) fn image(&self, r: &Record) -> *const u8 {
        // SAFETY: validated records lie inside the record area.
        unsafe { self.recs.add(r.pos + REC_HDR) }
    }

    /// `msync` of the records of the current transaction and the tail word.
    pub(crate) fn sync_records(&self) -> Result<()> {
        sync_range(self.recs as usize, self.tail())?;
        self.sync_tail()
    }

    /// `msync` of the header's mutable words (after the commit point, Msync policies).
    pub(crate) fn sync_tail(&self) -> Result<()> {
        sync_range(self.base as usize + OFF_TAIL, 8)
    }

    /// Corrupts a record's checksum (tests only).
    #[cfg(test)]
    pub(crate) fn smash_record(&self, pos: usize) {
        // SAFETY: test-only; pos comes from a validated record.
        unsafe { *self.recs.add(pos) ^= 0xff };
    }

    /// Sets tail directly (tests only).
    #[cfg(test)]
    pub(crate) fn set_tail_for_test(&self, tail: usize) {
        self.word(OFF_TAIL).store(tail as u64, Ordering::Release);
    }
}

/// The step both implicit-mode trackers share (the SIGSEGV handler in `implicit.rs`, the
/// userfaultfd thread in `uffd.rs`): before the program's first write to a page of a
/// segment in a transaction, the page's before-image goes into the undo log (Vista,
/// section 3.2: implicit logging by page protection).
pub(crate) struct PageLogger {
    log: *const LogCore,
    base: usize,
    target: u16,
    armed: AtomicBool,
}

impl PageLogger {
    /// Logs pages of the segment at `base` into `log` as member `target`; disarmed.
    ///
    /// # Safety
    /// `log` must stay valid for as long as this value exists.
    pub(crate) unsafe fn new(log: *const LogCore, base: usize, target: u16) -> PageLogger {
        PageLogger {
            log,
            base,
            target,
            armed: AtomicBool::new(false),
        }
    }

    /// Start or stop logging (a transaction begins or ends).
    pub(crate) fn arm(&self, on: bool) {
        self.armed.store(on, Ordering::Release);
    }

    /// The segment's first byte.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// Logs the before-image of `page` if armed, and says whether it did. `Err` if the log
    /// is full (or its msync failed), or if the transaction is prepared (nothing may be
    /// logged after `prepare`): the caller cannot let the write go ahead.
    ///
    /// # Safety
    /// `page` is a readable, page-aligned page of the segment, not written until this
    /// returns, and not part of the log's mapping.
    pub(crate) unsafe fn log_before_write(&self, page: usize) -> Result<bool> {
        if !self.armed.load(Ordering::Acquire) {
            return Ok(false);
        }
        // SAFETY: `log` is valid (contract of `new`).
        let tag = unsafe { (*self.log).prepared() };
        if tag != 0 {
            // A store to a page not logged before `prepare`: it cannot be logged now.
            return Err(Error::Prepared { tag });
        }
        // SAFETY: `log` is valid (contract of `new`); `page` is readable for PAGE bytes and
        // does not overlap the log (this function's contract).
        unsafe {
            (*self.log).append(
                self.target,
                AREA_DATA,
                (page - self.base) as u64,
                page as *const u8,
                PAGE,
            )
        }
        .map(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> LogInfo {
        LogInfo {
            log_id: 0x1234,
            capacity: 8192,
            members: vec![7, 8, 9],
        }
    }

    #[test]
    fn header_roundtrip() {
        let b = encode_header(&info());
        assert_eq!(&b[0..8], b"VISTALOG");
        assert_eq!(decode_header(&b, 4096 + 8192).unwrap(), info());
    }

    #[test]
    fn header_rejects_damage() {
        let b = encode_header(&info());
        let mut m = b;
        m[0] = b'X';
        assert!(matches!(
            decode_header(&m, 1 << 20),
            Err(Error::BadMagic { .. })
        ));
        let mut v = b;
        v[8] = 2;
        assert!(matches!(
            decode_header(&v, 1 << 20),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        for i in 12..OFF_CHECKSUM + 8 {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(
                matches!(decode_header(&c, 1 << 20), Err(Error::CorruptHeader { .. })),
                "byte {i}"
            );
        }
        // Capacity larger than the area.
        assert!(matches!(
            decode_header(&b, 4096 + 100),
            Err(Error::CorruptHeader { .. })
        ));
    }

    #[test]
    fn prepared_word_layout_and_peek() {
        let mut buf = Buf::new(4096 + 8192);
        let info = info();
        // Garbage where the word goes is zeroed by format.
        // SAFETY: inside the buffer.
        unsafe { buf.ptr().add(OFF_PREPARED).write(0xee) };
        // SAFETY: buffer of the stated size that outlives `log`.
        let log = unsafe { LogCore::format(buf.ptr(), 4096 + 8192, &info, false).unwrap() };
        assert_eq!(log.prepared(), 0);
        let page = |b: &mut Buf| {
            // SAFETY: the header page of the buffer.
            unsafe { std::slice::from_raw_parts(b.ptr(), LOG_HEADER_LEN) }.to_vec()
        };
        assert_eq!(prepared_in(&page(&mut buf), 4096 + 8192).unwrap(), None);
        log.begin();
        let data = [3u8; 8];
        // SAFETY: data is readable and disjoint from the log.
        unsafe { log.append(0, AREA_DATA, 0, data.as_ptr(), 8).unwrap() };
        assert_eq!(prepared_in(&page(&mut buf), 4096 + 8192).unwrap(), None);
        log.set_prepared(0x1122_3344_5566_7788);
        let p = page(&mut buf);
        assert_eq!(le64(&p, 384), 0x1122_3344_5566_7788);
        assert_eq!(
            prepared_in(&p, 4096 + 8192).unwrap(),
            Some(0x1122_3344_5566_7788)
        );
        // The static header (and its checksum) does not cover the word.
        assert_eq!(decode_header(&p, 4096 + 8192).unwrap(), info);
        // With tail == 0 the word is stale: nothing is prepared.
        log.clear();
        assert_eq!(prepared_in(&page(&mut buf), 4096 + 8192).unwrap(), None);
        assert!(prepared_in(&p[..200], 4096 + 8192).is_err());
    }

    #[test]
    fn record_sizes() {
        assert_eq!(record_size(0), 24);
        assert_eq!(record_size(1), 32);
        assert_eq!(record_size(8), 32);
        assert_eq!(record_size(9), 40);
        assert_eq!(record_size(4096), 4120);
    }

    /// A log in a heap buffer, for format tests.
    struct Buf(Vec<u64>);
    impl Buf {
        fn new(bytes: usize) -> Buf {
            Buf(vec![0u64; bytes / 8])
        }
        fn ptr(&mut self) -> *mut u8 {
            self.0.as_mut_ptr().cast()
        }
    }

    #[test]
    fn append_validate_and_layout() {
        let mut buf = Buf::new(4096 + 8192);
        let info = info();
        // SAFETY: buffer of the stated size that outlives `log`.
        let log = unsafe { LogCore::format(buf.ptr(), 4096 + 8192, &info, false).unwrap() };
        log.begin();
        assert_eq!(log.seq(), 1);
        let data = *b"hello, vista!";
        // SAFETY: data is readable and disjoint from the log.
        let p0 = unsafe {
            log.append(2, AREA_DATA, 100, data.as_ptr(), data.len())
                .unwrap()
        };
        // SAFETY: the first 8 bytes of `data`, a local array, are readable and not in the
        // log's buffer.
        let p1 = unsafe { log.append(0, AREA_META, 8, data.as_ptr(), 8).unwrap() };
        assert_eq!(p0, 0);
        assert_eq!(p1, record_size(13));
        assert_eq!(log.tail(), record_size(13) + record_size(8));
        // Raw layout of the first record.
        // SAFETY: the buffer holds the header page plus 8192 record bytes.
        let raw = unsafe { std::slice::from_raw_parts(buf.ptr().add(4096), 64) };
        assert_eq!(le64(raw, 8), 100);
        assert_eq!(le32(raw, 16), 13);
        assert_eq!(u16::from_le_bytes([raw[20], raw[21]]), 2);
        assert_eq!(raw[22], AREA_DATA);
        assert_eq!(raw[23], 1);
        assert_eq!(&raw[24..37], b"hello, vista!");
        let mut recs = Vec::new();
        log.validate(&mut recs, |t, a| (t < 3 && a <= 1).then_some((0, 1000)))
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].target, recs[0].offset, recs[0].len), (2, 100, 13));
        // Out of bounds is refused.
        assert!(matches!(
            log.validate(&mut recs, |_, _| Some((0, 105))),
            Err(Error::CorruptLog { at: 0, .. })
        ));
        // A stale record (older seq) does not validate.
        log.begin();
        assert!(matches!(
            log.validate(&mut recs, |_, _| Some((0, 1000))),
            Err(Error::CorruptLog { .. })
        ));
        log.clear();
        assert_eq!(log.tail(), 0);
        log.validate(&mut recs, |_, _| Some((0, 1000))).unwrap();
        assert!(recs.is_empty());
    }

    #[test]
    fn damaged_records_are_refused() {
        let mut buf = Buf::new(4096 + 4096);
        let info = LogInfo {
            capacity: 4096,
            ..info()
        };
        // SAFETY: buffer of the stated size that outlives `log`.
        let log = unsafe { LogCore::format(buf.ptr(), 8192, &info, false).unwrap() };
        log.begin();
        let data = [5u8; 64];
        for i in 0..4 {
            // SAFETY: data readable, disjoint.
            unsafe { log.append(0, AREA_DATA, i * 64, data.as_ptr(), 64).unwrap() };
        }
        let mut recs = Vec::new();
        log.validate(&mut recs, |_, _| Some((0, 4096))).unwrap();
        assert_eq!(recs.len(), 4);
        // Flip one byte in every position of the second record: always detected.
        let rec_len = record_size(64);
        for off in 0..rec_len {
            // SAFETY: inside the buffer (second record).
            let p = unsafe { buf.ptr().add(4096 + rec_len + off) };
            // SAFETY: p is inside the buffer.
            unsafe { *p ^= 0x40 };
            assert!(
                log.validate(&mut recs, |_, _| Some((0, 4096))).is_err(),
                "byte {off}"
            );
            // SAFETY: p is inside the buffer.
            unsafe { *p ^= 0x40 };
        }
        // Misaligned or oversized tail.
        log.set_tail_for_test(rec_len + 4);
        assert!(log.validate(&mut recs, |_, _| Some((0, 4096))).is_err());
        log.set_tail_for_test(8192);
        assert!(log.validate(&mut recs, |_, _| Some((0, 4096))).is_err());
        log.set_tail_for_test(4 * rec_len);
        log.validate(&mut recs, |_, _| Some((0, 4096))).unwrap();
    }

    #[test]
    fn full_log_and_reservations() {
        let mut buf = Buf::new(4096 + 256);
        let info = LogInfo {
            capacity: 256,
            ..info()
        };
        // SAFETY: buffer of the stated size that outlives `log`.
        let log = unsafe { LogCore::format(buf.ptr(), 4096 + 256, &info, false).unwrap() };
        log.begin();
        let data = [1u8; 100];
        log.reserve(64).unwrap();
        // 256 - 64 = 192 usable: one 128-byte record fits, a second does not.
        // SAFETY: data is readable and disjoint from the log.
        unsafe { log.append(0, AREA_DATA, 0, data.as_ptr(), 100).unwrap() };
        assert!(matches!(
            // SAFETY: `data`, a local array of 100 bytes, is readable and not in the log's
            // buffer.
            unsafe { log.append(0, AREA_DATA, 0, data.as_ptr(), 100) },
            Err(Error::LogFull { .. })
        ));
        // The reservation is usable by append_reserved.
        // SAFETY: 40 bytes of `data`, a local array, are readable and not in the log's buffer.
        unsafe {
            log.append_reserved(0, AREA_META, 0, data.as_ptr(), 40)
                .unwrap()
        };
        assert!(log.reserve(1000).is_err());
    }
}
