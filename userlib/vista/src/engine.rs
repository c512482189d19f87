//! The transaction engine shared by [`Segment`](crate::Segment) and
//! [`Group`](crate::Group): one undo log, one or more member segments, and the volatile
//! state of the transaction in flight.
//!
//! The hot path (`begin`, `set_range`, `commit` with [`Durability::Memory`]) makes no
//! system call, takes no lock and allocates nothing: `begin` bumps the log's sequence
//! number, `set_range` appends one record (copy + checksum + one 8-byte store of the tail)
//! and `commit` is the single store `tail = 0`.
//!
//! # Prepared transactions (two-phase commit)
//!
//! `prepare(tag)` does everything commit does before its commit point and then records
//! `tag` in the log's `prepared` word (see [`log`](crate::log) for the format and the
//! order of the stores). From then on the transaction is *in doubt*: it may still commit
//! or abort, but nothing more may be logged, and neither dropping the handle nor dropping
//! the engine aborts it (a participant that voted "yes" has given up the right to abort on
//! its own; Gray 1978). Opening a log that holds one needs a resolver ([`Resolution`]).

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
    /// Undo records replayed (0: the last run ended cleanly, or a prepared transaction
    /// was committed).
    pub records: usize,
    /// Bytes of before-image copied back.
    pub bytes: usize,
    /// A prepared transaction found at open: its tag and what the resolver decided.
    pub resolved: Option<(u64, Resolution)>,
}

/// The outcome of a prepared transaction, as the two-phase-commit coordinator decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Keep the transaction's changes (finish it: the commit point `tail = 0`).
    Commit,
    /// Roll the transaction back from its undo records.
    Abort,
}

/// What an opening variant with a resolver (e.g.
/// [`Group::open_resolving`](crate::Group::open_resolving)) calls with the tag of a
/// prepared transaction it finds in the log; an `Err` fails the open with the log unchanged.
pub type Resolver<'a> = &'a mut dyn FnMut(u64) -> Result<Resolution>;

/// One log, several segments, one transaction at a time.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) log: Box<LogCore>,
    log_durability: Durability,
    pub(crate) members: Vec<Member>,
    active: bool,
    /// Tag of the active transaction's `prepare` (0: not prepared).
    prepared: u64,
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
            prepared: 0,
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

    /// The tag of the active transaction if it is prepared.
    pub(crate) fn prepared(&self) -> Option<u64> {
        (self.active && self.prepared != 0).then_some(self.prepared)
    }

    /// `Ok` if a transaction is active and may still log (is not prepared).
    #[inline(always)]
    fn check_open(&self) -> Result<()> {
        if !self.active {
            return Err(Error::NotActive);
        }
        if self.prepared != 0 {
            return Err(Error::Prepared { tag: self.prepared });
        }
        Ok(())
    }

    /// Starts a transaction.
    #[inline]
    pub(crate) fn begin(&mut self) -> Result<()> {
        if self.active {
            if self.prepared != 0 {
                return Err(Error::Prepared { tag: self.prepared });
            }
            return Err(Error::TransactionActive);
        }
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.log.prepared() != 0 {
            // Stale (tail is 0): it must be gone before this transaction's first record.
            self.clear_prepared_word()?;
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
        self.check_open()?;
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
    /// the commit point, then forces the commit point. A prepared transaction did all but
    /// the commit point in `prepare`: it takes the commit point, then clears `prepared`.
    pub(crate) fn commit(&mut self) -> Result<()> {
        if !self.active {
            return Err(Error::NotActive);
        }
        let tag = self.prepared;
        if tag == 0 {
            self.before_commit_point()?;
        }
        // The commit point: one aligned 8-byte store.
        self.log.clear();
        self.end_tx();
        if self.log_durability.syncs_commit() {
            self.log.sync_tail()?;
        }
        if tag != 0 {
            // Only once `tail = 0` is durable: a crash before this leaves a stale word.
            self.clear_prepared_word()?;
        }
        Ok(())
    }

    /// Everything commit does before its commit point (and prepare before its word):
    /// deferred frees applied (logged), then, for the Msync policies, the records, `tail`
    /// and the data they cover forced.
    fn before_commit_point(&mut self) -> Result<()> {
        // Each free leaves the list once applied, so that a failure part-way (then an
        // abort, or a second `prepare`) never applies one twice.
        while let Some(&(slot, g)) = self.tx_frees.first() {
            let heap = self.members[slot as usize]
                .heap
                .as_mut()
                .ok_or(Error::NoHeap {
                    segment: slot as usize,
                })?;
            heap.free_now(&self.log, slot, g, true)?;
            self.tx_frees.swap_remove(0);
        }
        if self.any_sync {
            self.sync_before_commit()?;
        }
        Ok(())
    }

    /// Prepares the active transaction (phase one of two-phase commit) under `tag`
    /// (non-zero): makes its undo records and its stores as durable as commit would, then
    /// records `tag` durably in the log's `prepared` word. On `Err` no vote may be sent:
    /// the transaction is still active and counts as not prepared (abort, or dropping the
    /// handle, rolls it back and clears the word if it was stored).
    pub(crate) fn prepare(&mut self, tag: u64) -> Result<()> {
        self.check_open()?;
        if tag == 0 {
            return Err(Error::InvalidConfig(
                "a prepare tag must be non-zero".into(),
            ));
        }
        self.before_commit_point()?;
        self.log.set_prepared(tag);
        if self.log_durability.syncs_commit() {
            self.log.sync_prepared()?;
        }
        self.prepared = tag;
        Ok(())
    }

    /// `prepared = 0`, forced for the Msync policies. Only with `tail == 0` (durably).
    fn clear_prepared_word(&mut self) -> Result<()> {
        self.log.set_prepared(0);
        if self.log_durability.syncs_commit() {
            self.log.sync_prepared()?;
        }
        Ok(())
    }

    /// Decides the active prepared transaction in this process (after its handle was
    /// dropped): commit or abort it.
    pub(crate) fn resolve(&mut self, r: Resolution) -> Result<()> {
        if self.prepared().is_none() {
            return Err(Error::NotActive);
        }
        match r {
            Resolution::Commit => self.commit(),
            Resolution::Abort => self.abort(),
        }
    }

    fn end_tx(&mut self) {
        self.active = false;
        self.prepared = 0;
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
        if self.log.prepared() != 0 {
            // A prepared transaction rolled back: the word goes only after `tail = 0`.
            self.clear_prepared_word()?;
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
                self.prepared = 0;
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

    /// Recovery, run at open: roll back whatever transaction the log holds, unless it is
    /// prepared. A prepared one goes to `resolve` (commit or roll back); without a
    /// resolver it is refused with [`Error::Prepared`] and nothing changes.
    pub(crate) fn recover(&mut self, resolve: Option<Resolver<'_>>) -> Result<Recovery> {
        let tag = self.log.prepared();
        if self.log.tail() == 0 {
            if tag != 0 {
                // Stale: a prepared transaction ended (tail = 0) just before a crash.
                self.clear_prepared_word()?;
            }
            return Ok(Recovery::default());
        }
        if tag == 0 {
            return self.rollback();
        }
        let Some(resolve) = resolve else {
            return Err(Error::Prepared { tag });
        };
        match resolve(tag)? {
            Resolution::Commit => {
                self.log.clear();
                if self.log_durability.syncs_commit() {
                    self.log.sync_tail()?;
                }
                self.clear_prepared_word()?;
                Ok(Recovery {
                    resolved: Some((tag, Resolution::Commit)),
                    ..Recovery::default()
                })
            }
            Resolution::Abort => {
                let mut rep = self.rollback()?;
                rep.resolved = Some((tag, Resolution::Abort));
                Ok(rep)
            }
        }
    }

    /// Allocates in member `seg`'s heap.
    pub(crate) fn alloc(&mut self, seg: usize, size: usize, align: usize) -> Result<usize> {
        self.check_open()?;
        let m = self.members.get_mut(seg).ok_or(Error::NoSuchSegment(seg))?;
        let heap = m.heap.as_mut().ok_or(Error::NoHeap { segment: seg })?;
        let g = heap.alloc(&self.log, seg as u16, size, align)?;
        self.tx_allocs.push((seg as u16, g));
        Ok(m.layout.base + g * GRANULE)
    }

    /// Frees a heap block: at once if it was allocated in this transaction, else at commit.
    pub(crate) fn free(&mut self, addr: usize) -> Result<()> {
        self.check_open()?;
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
        self.check_open()?;
        let m = self.members.get_mut(seg).ok_or(Error::NoSuchSegment(seg))?;
        m.roots.set(&self.log, seg as u16, name, e)
    }

    /// Removes a root of member `seg`.
    pub(crate) fn remove_root(&mut self, seg: usize, name: &str) -> Result<bool> {
        self.check_open()?;
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
        self.prepared = 0;
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
        if self.active && self.prepared == 0 {
            // An unfinished transaction never commits: roll it back now rather than at
            // the next open (same result). A prepared one stays in doubt in the log, as
            // at a crash: only its coordinator's decision may end it.
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
