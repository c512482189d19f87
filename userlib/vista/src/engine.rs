//! The transaction engine shared by [`Segment`](crate::Segment) and
//! [`Group`](crate::Group): one undo log, one or more member segments, and the volatile
//! state of the transaction in flight.
//!
//! The hot path (`begin`, `set_range`, `commit` with [`Durability::Memory`]) makes no
//! system call, takes no lock and allocates nothing: `begin` bumps the log's sequence
//! number, `set_range` appends one record (copy + checksum + one 8-byte store of the tail)
//! and `commit` is the single store `tail = 0`.

use crate::backing::{Backing, Durability};
use crate::error::{Error, Result};
use crate::heap::{Heap, GRANULE};
use crate::log::{LogCore, LogInfo, Record, AREA_DATA, AREA_META};
use crate::map::Mapping;
use crate::roots::RootEntry;
use crate::segment::{LogMode, Member};

/// Where the log lives.
#[derive(Debug)]
pub(crate) enum LogHome {
    /// In member 0's metadata area.
    Embedded,
    /// In a backing of its own, shared by all members.
    Shared {
        /// The mapping (dropped after the members' registrations).
        _map: Mapping,
        /// The backing, kept for its lock and descriptor.
        _backing: Backing,
    },
}

/// What recovery did when a segment or group was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Undo records replayed (0: the last run ended cleanly).
    pub records: usize,
    /// Bytes of before-image copied back.
    pub bytes: usize,
}

/// One log, several segments, one transaction at a time.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) log: Box<LogCore>,
    log_durability: Durability,
    pub(crate) members: Vec<Member>,
    active: bool,
    poisoned: bool,
    any_implicit: bool,
    any_sync: bool,
    /// Heap blocks allocated in this transaction: (member, granule).
    tx_allocs: Vec<(u16, usize)>,
    /// Frees deferred to commit: (member, granule).
    tx_frees: Vec<(u16, usize)>,
    scratch: Vec<Record>,
    // Declared last: dropped after the members (whose registrations point into the log).
    _home: LogHome,
}

impl Engine {
    /// An engine over `members` with log `log`. Runs no recovery.
    pub(crate) fn new(
        log: LogCore,
        log_durability: Durability,
        members: Vec<Member>,
        home: LogHome,
    ) -> Engine {
        let any_sync = log_durability.syncs_commit()
            || members
                .iter()
                .any(|m| m.backing.durability().syncs_commit());
        Engine {
            log: Box::new(log),
            log_durability,
            members,
            active: false,
            poisoned: false,
            any_implicit: false,
            any_sync,
            tx_allocs: Vec::with_capacity(64),
            tx_frees: Vec::with_capacity(64),
            scratch: Vec::new(),
            _home: home,
        }
    }

    /// Builds the log info for a set of members.
    pub(crate) fn log_info(log_id: u64, capacity: usize, members: &[Member]) -> LogInfo {
        LogInfo {
            log_id,
            capacity: capacity as u64,
            members: members.iter().map(|m| m.layout.seg_id).collect(),
        }
    }

    /// Whether a transaction is active.
    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    /// Starts a transaction.
    #[inline]
    pub(crate) fn begin(&mut self) -> Result<()> {
        if self.active {
            return Err(Error::TransactionActive);
        }
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.log.begin();
        if self.any_implicit {
            self.arm_implicit()?;
        }
        self.active = true;
        Ok(())
    }

    fn arm_implicit(&mut self) -> Result<()> {
        crate::implicit::ensure_altstack()?;
        for m in &self.members {
            match m.mode {
                LogMode::Explicit => {}
                LogMode::Implicit => {
                    if let Some(r) = &m.implicit {
                        r.arm();
                    }
                    m.data.protect(0, m.data.len(), false)?;
                }
                LogMode::ImplicitUffd => {
                    if let Some(t) = &m.uffd {
                        t.arm()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops logging faults. Pages stay as they are: a store to a page still protected
    /// is resolved by the fault handler (or uffd thread) without logging, including the
    /// stores of an abort's replay.
    fn disarm_implicit(&mut self) -> Result<()> {
        for m in &self.members {
            if let Some(r) = &m.implicit {
                r.disarm();
            }
            if let Some(t) = &m.uffd {
                t.disarm(false)?;
            }
        }
        Ok(())
    }

    /// Finds the member holding `[addr, addr + len)`: (slot, offset in data).
    #[inline(always)]
    pub(crate) fn locate(&self, addr: usize, len: usize) -> Result<(u16, usize)> {
        for (i, m) in self.members.iter().enumerate() {
            let off = addr.wrapping_sub(m.layout.base);
            if off < m.layout.data_len && len <= m.layout.data_len - off {
                return Ok((i as u16, off));
            }
        }
        Err(Error::OutOfRange { addr, len })
    }

    /// Logs the before-image of `[addr, addr + len)`.
    #[inline(always)]
    pub(crate) fn set_range(&mut self, addr: usize, len: usize) -> Result<()> {
        if !self.active {
            return Err(Error::NotActive);
        }
        let (slot, off) = self.locate(addr, len)?;
        // SAFETY: locate() proved the range lies inside member `slot`'s data mapping, which
        // is readable (implicit mode only removes write permission) and is not the log.
        unsafe {
            self.log
                .append(slot, AREA_DATA, off as u64, addr as *const u8, len)?
        };
        Ok(())
    }

    /// Commits: applies deferred frees (logged), forces data if the policy says so, then
    /// the commit point, then forces the commit point.
    pub(crate) fn commit(&mut self) -> Result<()> {
        if !self.active {
            return Err(Error::NotActive);
        }
        let mut i = 0;
        while i < self.tx_frees.len() {
            let (slot, g) = self.tx_frees[i];
            let heap = self.members[slot as usize]
                .heap
                .as_mut()
                .ok_or(Error::NoHeap {
                    segment: slot as usize,
                })?;
            heap.free_now(&self.log, slot, g, true)?;
            i += 1;
        }
        self.tx_frees.clear();
        if self.any_sync {
            self.sync_before_commit()?;
        }
        // The commit point: one aligned 8-byte store.
        self.log.clear();
        self.end_tx();
        if self.log_durability.syncs_commit() {
            self.log.sync_tail()?;
        }
        Ok(())
    }

    fn end_tx(&mut self) {
        self.active = false;
        self.tx_allocs.clear();
        self.tx_frees.clear();
        self.log.unreserve_all();
        if self.any_implicit {
            let _ = self.disarm_implicit();
        }
    }

    fn bounds(members: &[Member]) -> impl Fn(u16, u8) -> Option<(u64, u64)> + '_ {
        move |t, area| {
            let m = members.get(t as usize)?;
            match area {
                AREA_DATA => Some((0, m.layout.data_len as u64)),
                AREA_META => {
                    let (lo, hi) = m.meta_bounds();
                    Some((lo as u64, hi as u64))
                }
                _ => None,
            }
        }
    }

    fn record_addr(&self, r: &Record) -> usize {
        let m = &self.members[r.target as usize];
        if r.area == AREA_DATA {
            m.data.addr() + r.offset as usize
        } else {
            m.meta.addr() + r.offset as usize
        }
    }

    /// Members (bit per slot) that records of the current transaction touch.
    fn touched_members(&mut self) -> Result<u32> {
        let mut recs = std::mem::take(&mut self.scratch);
        let r = self.log.validate(&mut recs, Engine::bounds(&self.members));
        let mask = recs.iter().fold(0u32, |m, r| m | 1 << r.target);
        self.scratch = recs;
        r.map(|_| mask)
    }

    /// Forces the touched members' files (data and metadata) with one `fdatasync` each.
    fn sync_members(&self, mask: u32) -> Result<()> {
        for (i, m) in self.members.iter().enumerate() {
            if mask & (1 << i) != 0 && m.backing.durability().syncs_commit() {
                m.backing.sync_data()?;
            }
        }
        Ok(())
    }

    /// Before the commit point (Msync policies): the undo records reach stable storage
    /// (unless `MsyncWal` already forced each one), then the data they cover.
    fn sync_before_commit(&mut self) -> Result<()> {
        if self.log_durability.syncs_commit() && !self.log_durability.syncs_records() {
            self.log.sync_records()?;
        }
        let mask = self.touched_members()?;
        self.sync_members(mask)
    }

    /// Rolls back the transaction in the log (abort and recovery): validate everything,
    /// then replay newest first, then clear. Idempotent.
    fn rollback(&mut self) -> Result<Recovery> {
        let mut recs = std::mem::take(&mut self.scratch);
        let v = self.log.validate(&mut recs, Engine::bounds(&self.members));
        if let Err(e) = v {
            self.scratch = recs;
            return Err(e);
        }
        let mut rep = Recovery::default();
        for r in recs.iter().rev() {
            let dst = self.record_addr(r);
            // SAFETY: validate() checked that the record lies inside the target area, and
            // the target mapping is writable (implicit protection was lifted by the caller);
            // source is in the log, a different mapping.
            unsafe { std::ptr::copy_nonoverlapping(self.log.image(r), dst as *mut u8, r.len) };
            rep.records += 1;
            rep.bytes += r.len;
        }
        let mask = recs.iter().fold(0u32, |m, r| m | 1 << r.target);
        self.scratch = recs;
        if self.any_sync {
            self.sync_members(mask)?;
        }
        self.log.clear();
        if self.log_durability.syncs_commit() {
            self.log.sync_tail()?;
        }
        Ok(rep)
    }

    /// Aborts the active transaction: the segments and heaps return to their state at
    /// `begin`.
    pub(crate) fn abort(&mut self) -> Result<()> {
        if !self.active {
            return Err(Error::NotActive);
        }
        if self.any_implicit {
            if let Err(e) = self.disarm_implicit() {
                self.poisoned = true;
                return Err(e);
            }
        }
        match self.rollback() {
            Ok(_) => {}
            Err(e) => {
                self.poisoned = true;
                self.active = false;
                return Err(e);
            }
        }
        for m in &mut self.members {
            if let Some(h) = &mut m.heap {
                h.reset_hint();
            }
        }
        self.end_tx();
        Ok(())
    }

    /// Recovery: abort whatever transaction the log holds. Run at open.
    pub(crate) fn recover(&mut self) -> Result<Recovery> {
        if self.log.tail() == 0 {
            return Ok(Recovery::default());
        }
        self.rollback()
    }

    /// Allocates in member `seg`'s heap.
    pub(crate) fn alloc(&mut self, seg: usize, size: usize, align: usize) -> Result<usize> {
        if !self.active {
            return Err(Error::NotActive);
        }
        let m = self.members.get_mut(seg).ok_or(Error::NoSuchSegment(seg))?;
        let heap = m.heap.as_mut().ok_or(Error::NoHeap { segment: seg })?;
        let g = heap.alloc(&self.log, seg as u16, size, align)?;
        self.tx_allocs.push((seg as u16, g));
        Ok(m.layout.base + g * GRANULE)
    }

    /// Frees a heap block: at once if it was allocated in this transaction, else at commit.
    pub(crate) fn free(&mut self, addr: usize) -> Result<()> {
        if !self.active {
            return Err(Error::NotActive);
        }
        let (slot, off) = self
            .locate(addr, 1)
            .map_err(|_| Error::InvalidFree { addr })?;
        let heap = self.members[slot as usize]
            .heap
            .as_mut()
            .ok_or(Error::NoHeap {
                segment: slot as usize,
            })?;
        if off % GRANULE != 0 {
            return Err(Error::InvalidFree { addr });
        }
        let g = off / GRANULE;
        let Some(n) = heap.block_len(g) else {
            if heap.is_allocated(g) {
                return Err(Error::InvalidFree { addr });
            }
            return Err(Error::DoubleFree { addr });
        };
        if let Some(i) = self.tx_allocs.iter().position(|&e| e == (slot, g)) {
            heap.free_now(&self.log, slot, g, false)?;
            self.tx_allocs.swap_remove(i);
            return Ok(());
        }
        if self.tx_frees.contains(&(slot, g)) {
            return Err(Error::DoubleFree { addr });
        }
        self.log.reserve(Heap::log_bytes(g, n))?;
        self.tx_frees.push((slot, g));
        Ok(())
    }

    /// Bytes of the heap block starting at `addr`, if one does.
    pub(crate) fn block_size(&self, addr: usize) -> Option<usize> {
        let (slot, off) = self.locate(addr, 1).ok()?;
        if off % GRANULE != 0 {
            return None;
        }
        let heap = self.members[slot as usize].heap.as_ref()?;
        heap.block_len(off / GRANULE).map(|n| n * GRANULE)
    }

    /// Sets a root of member `seg`.
    pub(crate) fn set_root(&mut self, seg: usize, name: &str, e: RootEntry) -> Result<()> {
        if !self.active {
            return Err(Error::NotActive);
        }
        let m = self.members.get_mut(seg).ok_or(Error::NoSuchSegment(seg))?;
        m.roots.set(&self.log, seg as u16, name, e)
    }

    /// Removes a root of member `seg`.
    pub(crate) fn remove_root(&mut self, seg: usize, name: &str) -> Result<bool> {
        if !self.active {
            return Err(Error::NotActive);
        }
        let m = self.members.get_mut(seg).ok_or(Error::NoSuchSegment(seg))?;
        m.roots.remove(&self.log, seg as u16, name)
    }

    /// Reads a root of member `seg`.
    pub(crate) fn root(&self, seg: usize, name: &str) -> Result<Option<RootEntry>> {
        let m = self.members.get(seg).ok_or(Error::NoSuchSegment(seg))?;
        m.roots.get(name)
    }

    /// Changes a member's logging mode (no transaction may be active).
    pub(crate) fn set_mode(&mut self, seg: usize, mode: LogMode) -> Result<()> {
        if self.active {
            return Err(Error::InTransaction("set_mode"));
        }
        let log_ptr: *const LogCore = &*self.log;
        let m = self.members.get_mut(seg).ok_or(Error::NoSuchSegment(seg))?;
        if m.mode == mode {
            return Ok(());
        }
        // Tear down the old mechanism (pages writable again).
        if let Some(r) = m.implicit.take() {
            r.disarm();
            m.data.protect(0, m.data.len(), true)?;
        }
        if let Some(t) = m.uffd.take() {
            t.disarm(true)?;
        }
        m.mode = LogMode::Explicit;
        match mode {
            LogMode::Explicit => {}
            LogMode::Implicit => {
                // SAFETY: the log is boxed and owned by this engine, which drops the
                // registration (with its member) before the log.
                m.implicit = Some(unsafe {
                    crate::implicit::Registration::new(
                        m.data.addr(),
                        m.data.len(),
                        log_ptr,
                        seg as u16,
                    )?
                });
            }
            LogMode::ImplicitUffd => {
                // SAFETY: the log is boxed and owned by this engine, which drops the tracker
                // (joining its handler thread, the only other user of `log_ptr`) before the
                // log.
                m.uffd = Some(unsafe {
                    crate::uffd::Tracker::new(m.data.addr(), m.data.len(), log_ptr, seg as u16)?
                });
            }
        }
        m.mode = mode;
        self.any_implicit = self.members.iter().any(|m| m.mode != LogMode::Explicit);
        Ok(())
    }

    /// A digest of every member's logical state: roots; for members with a heap, the set
    /// of allocated blocks and their contents (free memory is not state); for members
    /// without, all data. Blocks whose free is pending count as freed, so inside a
    /// transaction this is the digest the state will have once committed (crash checks).
    pub(crate) fn digest(&self) -> u64 {
        let mut h = 0u64;
        for (slot, m) in self.members.iter().enumerate() {
            // SAFETY: the data mapping is readable for its whole length.
            let data = unsafe { std::slice::from_raw_parts(m.data.ptr(), m.data.len()) };
            match &m.heap {
                Some(heap) => {
                    let mut g = 0;
                    while g < heap.granules() {
                        match heap.block_len(g) {
                            Some(n) => {
                                if !self.tx_frees.contains(&(slot as u16, g)) {
                                    h = crate::checksum::checksum(
                                        h ^ (g as u64) << 20 ^ n as u64,
                                        &data[g * GRANULE..(g + n) * GRANULE],
                                    );
                                }
                                g += n;
                            }
                            None => g += 1,
                        }
                    }
                }
                None => h = crate::checksum::checksum(h, data),
            }
            let lo = m.layout.roots_off;
            let hi = lo + m.layout.roots_cap * crate::roots::ENTRY;
            // SAFETY: the root table lies inside the metadata mapping.
            let roots = unsafe { std::slice::from_raw_parts(m.meta.ptr().add(lo), hi - lo) };
            h = crate::checksum::checksum(h, roots);
        }
        h
    }

    /// Marks the engine so that dropping it does not abort (used to simulate a crash).
    #[cfg(test)]
    pub(crate) fn forget_tx(&mut self) {
        self.active = false;
    }

    /// Replays only the newest `k` records and leaves the log in place: a crash in the
    /// middle of recovery (tests only).
    #[cfg(test)]
    pub(crate) fn partial_rollback(&mut self, k: usize) -> Result<()> {
        let mut recs = Vec::new();
        self.log
            .validate(&mut recs, Engine::bounds(&self.members))?;
        for r in recs.iter().rev().take(k) {
            let dst = self.record_addr(r);
            // SAFETY: validated record, writable target (test only).
            unsafe { std::ptr::copy_nonoverlapping(self.log.image(r), dst as *mut u8, r.len) };
        }
        Ok(())
    }

    /// Log bytes in use by the active transaction.
    pub(crate) fn log_used(&self) -> usize {
        self.log.tail()
    }

    /// Free log bytes.
    pub(crate) fn log_free(&self) -> usize {
        self.log.free()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.active {
            // An unfinished transaction never commits: roll it back now rather than at
            // the next open (same result).
            let _ = self.abort();
        }
        for m in &mut self.members {
            if let Some(t) = m.uffd.take() {
                let _ = t.disarm(true);
            }
            m.implicit = None;
        }
    }
}
