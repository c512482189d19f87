//! The front doors: [`Segment`] (one segment, its own embedded log) and [`Group`]
//! (several segments sharing one log, so one transaction spans them all).
//!
//! # Multi-segment commit
//!
//! The members of a group share one undo log in a backing of its own. Every record names
//! its member by slot (the order of the member table in the log header), so the single
//! commit point of the shared log (`tail = 0`) commits the changes to every member at
//! once, and recovery rolls all of them back together. Each member's header records the
//! id of the shared log it is bound to (`bound_log`), so a member cannot be opened alone
//! (and recovered without the rest) while it belongs to a group.
//!
//! # Prepared transactions (two-phase commit)
//!
//! A participant in a distributed commit ([`Tx::prepare`]) must be able to vote "yes",
//! crash, and afterwards do whatever the coordinator decided. The plain opening calls
//! (`Segment::open`, `Group::open`, ...) keep rolling back an unfinished transaction that
//! was never prepared, but refuse one that was with [`Error::Prepared`], changing nothing,
//! so that a caller unaware of two-phase commit cannot destroy a decision. The
//! `*_resolving` variants take a [`Resolver`] that is called with the prepared tag and
//! answers [`Resolution::Commit`] or [`Resolution::Abort`]; [`Group::prepared_tag`] and
//! [`Segment::prepared_tag`] only look.

use std::path::Path;

use crate::backing::{Backing, Durability};
use crate::engine::{Engine, LogHome, Recovery, Resolution, Resolver};
use crate::error::{Error, Result};
use crate::heap::GRANULE;
use crate::log::{self as vlog, LogCore, LogInfo, LOG_HEADER_LEN, MAX_MEMBERS};
use crate::map::{page_up, Mapping, Placement, PAGE};
use crate::roots::RootEntry;
use crate::segment::{Layout, LogMode, Member, SegmentConfig};
use crate::tx::Tx;
use crate::typed::{self, PPtr, PSlice, Pod};

/// Heap occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes in allocated blocks.
    pub used: usize,
    /// Bytes managed by the heap.
    pub total: usize,
}

fn member_info(m: &Member) -> SegmentInfo {
    SegmentInfo {
        id: m.layout.seg_id,
        base: m.layout.base,
        len: m.layout.data_len,
        mode: m.mode,
        heap: m.heap.as_ref().map(|h| HeapStats {
            used: h.used_granules() * GRANULE,
            total: h.granules() * GRANULE,
        }),
    }
}

/// Facts about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment's id.
    pub id: u64,
    /// Address of its data.
    pub base: usize,
    /// Bytes of data.
    pub len: usize,
    /// Current logging mode.
    pub mode: LogMode,
    /// Heap occupancy, if it has a heap.
    pub heap: Option<HeapStats>,
}

/// The methods [`Segment`] and [`Group`] share word for word: each is an [`Engine`] (`eng`,
/// one member or several) and what recovery did when it was opened (`recovery`).
macro_rules! engine_methods {
    () => {
        /// What recovery did when it was opened.
        pub fn recovery(&self) -> Recovery {
            self.recovery
        }

        /// Begins a transaction (spanning every member of a group).
        #[inline]
        pub fn begin(&mut self) -> Result<Tx<'_>> {
            Tx::begin(&mut self.eng)
        }

        /// The tag of a prepared transaction whose handle was dropped undecided (it is in
        /// doubt: `begin` fails with [`Error::Prepared`] until [`resolve`](Self::resolve)).
        pub fn in_doubt(&self) -> Option<u64> {
            self.eng.prepared()
        }

        /// Decides the prepared transaction left in doubt by a dropped handle: commits or
        /// rolls it back. [`Error::NotActive`] if there is none.
        pub fn resolve(&mut self, decision: Resolution) -> Result<()> {
            self.eng.resolve(decision)
        }

        /// Capacity of the undo log's record area in bytes (a group's log is shared).
        pub fn log_capacity(&self) -> usize {
            self.eng.log.capacity()
        }

        /// Reads a value (in any member).
        pub fn get<T: Pod>(&self, p: PPtr<T>) -> Result<&T> {
            typed::get(&self.eng, p)
        }

        /// Reads a slice (in any member).
        pub fn get_slice<T: Pod>(&self, s: PSlice<T>) -> Result<&[T]> {
            typed::get_slice(&self.eng, s)
        }

        /// A checksum over every member's data, heap and roots (for tests and crash checks).
        #[doc(hidden)]
        pub fn digest(&self) -> u64 {
            self.eng.digest()
        }

        #[cfg(test)]
        pub(crate) fn engine(&mut self) -> &mut Engine {
            &mut self.eng
        }
    };
}

/// A recoverable segment with its own undo log.
#[derive(Debug)]
pub struct Segment {
    eng: Engine,
    recovery: Recovery,
}

impl Segment {
    engine_methods!();

    /// Bytes a backing needs for `cfg`.
    pub fn backing_len(cfg: &SegmentConfig) -> Result<u64> {
        Ok(Layout::plan(cfg, PAGE, 1, false)?.total_len())
    }

    /// Formats `backing` (whose first page must be all zero) as a new segment and maps its
    /// data at `addr`, which must be page-aligned and free in this process.
    pub fn create(backing: Backing, addr: usize, cfg: &SegmentConfig) -> Result<Segment> {
        let m = Member::create(backing, addr, cfg, false)?;
        Segment::finish_create(m)
    }

    /// Creates a segment *in place* over memory that already holds data (a buffer, or a
    /// process's `.data`/`.bss`): the current contents of `[addr, addr + cfg.data_len)`
    /// are copied into the backing, then the backing is mapped over the same addresses, so
    /// the data stays where it is and becomes recoverable. `data_len` must be a multiple of
    /// the page size. When the segment is dropped the range becomes private anonymous
    /// memory again, with its last contents.
    ///
    /// # Safety
    /// `[addr, addr + cfg.data_len)` must be mapped, readable and writable memory that the
    /// caller controls, with no other thread touching it during the call.
    pub unsafe fn create_in_place(
        backing: Backing,
        addr: usize,
        cfg: &SegmentConfig,
    ) -> Result<Segment> {
        let m = Member::create(backing, addr, cfg, true)?;
        Segment::finish_create(m)
    }

    fn finish_create(m: Member) -> Result<Segment> {
        let (base, len) = m.embedded_log();
        let info = LogInfo {
            log_id: m.layout.seg_id,
            capacity: (len - LOG_HEADER_LEN) as u64,
            members: vec![m.layout.seg_id],
        };
        let dur = m.backing.durability();
        // SAFETY: the embedded log area lies inside the member's metadata mapping, which
        // the engine keeps alive as long as the LogCore.
        let log = unsafe { LogCore::format(base, len, &info, dur.syncs_records())? };
        m.seal()?;
        Ok(Segment {
            eng: Engine::new(log, dur, vec![m], LogHome::Embedded),
            recovery: Recovery::default(),
        })
    }

    /// Opens an existing segment at `addr` (where it was created) and runs recovery: an
    /// unfinished transaction is rolled back. A prepared one is refused with
    /// [`Error::Prepared`] and left as it is (see [`Segment::open_resolving`]).
    pub fn open(backing: Backing, addr: usize) -> Result<Segment> {
        let m = Member::open(backing, addr, false)?;
        Segment::finish_open(m, None)
    }

    /// As [`Segment::open`], but a prepared transaction in the log is decided by
    /// `resolve` (called with its tag): committed or rolled back. An unprepared
    /// unfinished transaction is rolled back without asking.
    pub fn open_resolving(backing: Backing, addr: usize, resolve: Resolver<'_>) -> Result<Segment> {
        let m = Member::open(backing, addr, false)?;
        Segment::finish_open(m, Some(resolve))
    }

    /// Whether the segment in `backing` (not open) holds a prepared transaction, and its
    /// tag; reads only. [`Error::BoundToGroup`] for a group member: ask its group's log
    /// ([`Group::prepared_tag`]).
    pub fn prepared_tag(backing: &Backing) -> Result<Option<u64>> {
        let layout = Member::read_layout(backing)?;
        let bound = Member::read_bound_log(backing)?;
        if bound != 0 {
            return Err(Error::BoundToGroup { log_id: bound });
        }
        let mut page = vec![0u8; LOG_HEADER_LEN];
        backing.read_at(layout.log_off as u64, &mut page)?;
        vlog::prepared_in(&page, layout.log_len as u64)
    }

    /// Opens an in-place segment: maps it over the memory at `addr` (replacing what is
    /// there, e.g. a restarted program's fresh `.data`) and runs recovery.
    ///
    /// # Safety
    /// As for [`Segment::create_in_place`]; the previous contents of the range are lost.
    pub unsafe fn open_in_place(backing: Backing, addr: usize) -> Result<Segment> {
        // SAFETY: forwarded contract.
        unsafe { Segment::open_in_place_inner(backing, addr, None) }
    }

    /// [`Segment::open_in_place`] with a resolver for a prepared transaction, as
    /// [`Segment::open_resolving`].
    ///
    /// # Safety
    /// As for [`Segment::open_in_place`].
    pub unsafe fn open_in_place_resolving(
        backing: Backing,
        addr: usize,
        resolve: Resolver<'_>,
    ) -> Result<Segment> {
        // SAFETY: forwarded contract.
        unsafe { Segment::open_in_place_inner(backing, addr, Some(resolve)) }
    }

    /// # Safety
    /// As for [`Segment::open_in_place`].
    unsafe fn open_in_place_inner(
        backing: Backing,
        addr: usize,
        resolve: Option<Resolver<'_>>,
    ) -> Result<Segment> {
        let layout = Member::read_layout(&backing)?;
        if !layout.in_place {
            return Err(Error::InvalidConfig(
                "segment was not created in place".into(),
            ));
        }
        let m = Member::open(backing, addr, true)?;
        Segment::finish_open(m, resolve)
    }

    /// Opens without running recovery (tests of recovery itself).
    #[cfg(test)]
    pub(crate) fn open_without_recovery(backing: Backing, addr: usize) -> Result<Segment> {
        let m = Member::open(backing, addr, false)?;
        let (base, len) = m.embedded_log();
        let dur = m.backing.durability();
        // SAFETY: the embedded log area lies inside the member's metadata mapping, which
        // the engine keeps alive as long as the LogCore.
        let log = unsafe { LogCore::open(base, len, dur.syncs_records())? };
        Ok(Segment {
            eng: Engine::new(log, dur, vec![m], LogHome::Embedded),
            recovery: Recovery::default(),
        })
    }

    fn finish_open(m: Member, resolve: Option<Resolver<'_>>) -> Result<Segment> {
        let bound = m.bound_log();
        if bound != 0 {
            return Err(Error::BoundToGroup { log_id: bound });
        }
        let (base, len) = m.embedded_log();
        let dur = m.backing.durability();
        // SAFETY: the embedded log area lies inside the member's metadata mapping, which
        // the engine keeps alive as long as the LogCore.
        let log = unsafe { LogCore::open(base, len, dur.syncs_records())? };
        let id = m.layout.seg_id;
        if log.info().log_id != id || log.info().members != [id] {
            return Err(Error::CorruptHeader {
                what: "log",
                reason: "embedded log belongs to another segment".into(),
            });
        }
        let mut eng = Engine::new(log, dur, vec![m], LogHome::Embedded);
        let recovery = eng.recover(resolve)?;
        Ok(Segment { eng, recovery })
    }

    /// Creates a file of the right size at `path` and a segment in it.
    pub fn create_file(
        path: impl AsRef<Path>,
        addr: usize,
        cfg: &SegmentConfig,
        durability: Durability,
    ) -> Result<Segment> {
        let b = Backing::create_file(path, Segment::backing_len(cfg)?, durability)?;
        Segment::create(b, addr, cfg)
    }

    /// Opens the segment in the file at `path`.
    pub fn open_file(
        path: impl AsRef<Path>,
        addr: usize,
        durability: Durability,
    ) -> Result<Segment> {
        Segment::open(Backing::open_file(path, durability)?, addr)
    }

    /// Start of the data.
    pub fn base(&self) -> *mut u8 {
        self.eng.members[0].data.ptr()
    }

    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.eng.members[0].data.len()
    }

    /// Whether the data area is empty (never: segments have at least one page).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Facts about the segment.
    pub fn info(&self) -> SegmentInfo {
        member_info(&self.eng.members[0])
    }

    /// Chooses how writes are logged (no transaction may be active).
    pub fn set_mode(&mut self, mode: LogMode) -> Result<()> {
        self.eng.set_mode(0, mode)
    }

    /// Looks up a typed root.
    pub fn root<T: Pod>(&self, name: &str) -> Result<Option<PPtr<T>>> {
        typed::root(&self.eng, 0, name)
    }

    /// Looks up a typed slice root.
    pub fn root_slice<T: Pod>(&self, name: &str) -> Result<Option<PSlice<T>>> {
        typed::root_slice(&self.eng, 0, name)
    }

    /// Looks up a raw root.
    pub fn root_raw(&self, name: &str) -> Result<Option<RootEntry>> {
        self.eng.root(0, name)
    }

    /// All roots.
    pub fn roots(&self) -> Vec<(String, RootEntry)> {
        self.eng.members[0].roots.list()
    }
}

/// Several segments that commit and recover together through one shared undo log.
#[derive(Debug)]
pub struct Group {
    eng: Engine,
    recovery: Recovery,
}

fn map_log(backing: &mut Backing) -> Result<Mapping> {
    backing.lock()?;
    let len = backing.len() as usize & !(PAGE - 1);
    if len < 2 * PAGE {
        return Err(Error::BackingTooSmall {
            actual: backing.len(),
            needed: 2 * PAGE as u64,
        });
    }
    Mapping::new(backing, 0, len, Placement::Anywhere)
}

fn take_members(eng: &mut Engine) -> Result<Vec<Member>> {
    if eng.is_active() {
        return Err(Error::InTransaction("moving segments between logs"));
    }
    for i in 0..eng.members.len() {
        eng.set_mode(i, LogMode::Explicit)?;
    }
    Ok(std::mem::take(&mut eng.members))
}

impl Group {
    engine_methods!();

    /// Bytes a log backing needs for a record area of `log_capacity` bytes.
    pub fn log_backing_len(log_capacity: usize) -> u64 {
        (LOG_HEADER_LEN + page_up(log_capacity.max(PAGE))) as u64
    }

    /// Binds `segments` (1..=16, each recovered and idle) to a new shared log formatted in
    /// `log` (first page all zero). Member indices follow the order given.
    pub fn create(mut log: Backing, segments: Vec<Segment>) -> Result<Group> {
        if segments.is_empty() || segments.len() > MAX_MEMBERS {
            return Err(Error::InvalidConfig(format!(
                "a group has 1..={MAX_MEMBERS} segments, not {}",
                segments.len()
            )));
        }
        let map = map_log(&mut log)?;
        let mut first = [0u8; 64];
        log.read_at(0, &mut first)?;
        if first.iter().any(|&b| b != 0) {
            return Err(Error::NotEmpty);
        }
        let mut members = Vec::new();
        for mut s in segments {
            members.extend(take_members(&mut s.eng)?);
        }
        let log_id = crate::segment::new_id();
        let info = Engine::log_info(log_id, map.len() - LOG_HEADER_LEN, &members);
        let dur = log.durability();
        // SAFETY: the mapping is exclusively ours and is kept in the engine's LogHome
        // (dropped after the LogCore).
        let core = unsafe { LogCore::format(map.ptr(), map.len(), &info, dur.syncs_records())? };
        if dur.syncs_commit() {
            map.sync(0, LOG_HEADER_LEN)?;
        }
        for m in &members {
            m.set_bound_log(log_id)?;
        }
        Ok(Group {
            eng: Engine::new(
                core,
                dur,
                members,
                LogHome::Shared {
                    _map: map,
                    _backing: log,
                },
            ),
            recovery: Recovery::default(),
        })
    }

    /// Opens a group: its shared log and every member (in any order; indices follow the
    /// order of creation), then runs recovery across all members: an unfinished
    /// transaction is rolled back. A prepared one is refused with [`Error::Prepared`] and
    /// left as it is (see [`Group::open_resolving`]).
    pub fn open(log: Backing, members: Vec<(Backing, usize)>) -> Result<Group> {
        Group::open_inner(log, members, None)
    }

    /// As [`Group::open`], but a prepared transaction in the shared log is decided by
    /// `resolve` (called with its tag, e.g. to ask the two-phase-commit coordinator):
    /// committed ([`Resolution::Commit`]: the commit point `tail = 0`) or rolled back
    /// across all members ([`Resolution::Abort`]). An `Err` from `resolve` fails the open
    /// and leaves the log as it was. An unprepared unfinished transaction is rolled back
    /// without asking. [`Group::recovery`] tells what was decided.
    pub fn open_resolving(
        log: Backing,
        members: Vec<(Backing, usize)>,
        resolve: Resolver<'_>,
    ) -> Result<Group> {
        Group::open_inner(log, members, Some(resolve))
    }

    /// Whether the shared log in `log` (not open) holds a prepared transaction, and its
    /// tag; reads only, takes no lock (for status tools; the answer may be stale if the
    /// group is open in a running process).
    pub fn prepared_tag(log: &Backing) -> Result<Option<u64>> {
        let len = log.len() & !(PAGE as u64 - 1);
        let mut page = vec![0u8; LOG_HEADER_LEN];
        log.read_at(0, &mut page)?;
        vlog::prepared_in(&page, len)
    }

    fn open_inner(
        mut log: Backing,
        members: Vec<(Backing, usize)>,
        resolve: Option<Resolver<'_>>,
    ) -> Result<Group> {
        let map = map_log(&mut log)?;
        let dur = log.durability();
        // SAFETY: the mapping is exclusively ours and is kept in the engine's LogHome
        // (dropped after the LogCore).
        let core = unsafe { LogCore::open(map.ptr(), map.len(), dur.syncs_records())? };
        let info = core.info().clone();
        let mut slots: Vec<Option<Member>> = (0..info.members.len()).map(|_| None).collect();
        for (b, addr) in members {
            let mut m = Member::open(b, addr, false)?;
            let id = m.layout.seg_id;
            let Some(slot) = info.members.iter().position(|&x| x == id) else {
                return Err(Error::NotAMember {
                    seg_id: id,
                    log_id: info.log_id,
                });
            };
            let bound = m.bound_log();
            if bound == 0 {
                // Created as a member but not yet bound (crash during Group::create), or
                // unbound again: recover it on its own log first, then bind.
                let mut alone = Segment::finish_open(m, None)?;
                m = take_members(&mut alone.eng)?
                    .pop()
                    .ok_or(Error::MissingSegment { seg_id: id })?;
                if core.tail() != 0 {
                    return Err(Error::CorruptLog {
                        at: 0,
                        reason: format!("unbound segment {id:#x} with a transaction in flight"),
                    });
                }
                m.set_bound_log(info.log_id)?;
            } else if bound != info.log_id {
                return Err(Error::NotAMember {
                    seg_id: id,
                    log_id: info.log_id,
                });
            }
            slots[slot] = Some(m);
        }
        let mut ordered = Vec::new();
        for (i, s) in slots.into_iter().enumerate() {
            ordered.push(s.ok_or(Error::MissingSegment {
                seg_id: info.members[i],
            })?);
        }
        let mut eng = Engine::new(
            core,
            dur,
            ordered,
            LogHome::Shared {
                _map: map,
                _backing: log,
            },
        );
        let recovery = eng.recover(resolve)?;
        Ok(Group { eng, recovery })
    }

    /// Dissolves the group: every member goes back to its own embedded log.
    pub fn into_segments(mut self) -> Result<Vec<Segment>> {
        let members = take_members(&mut self.eng)?;
        let mut out = Vec::new();
        for m in members {
            m.set_bound_log(0)?;
            out.push(Segment::finish_open(m, None)?);
        }
        Ok(out)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.eng.members.len()
    }

    /// Whether the group has no members (never).
    pub fn is_empty(&self) -> bool {
        self.eng.members.is_empty()
    }

    /// Facts about member `i`.
    pub fn info(&self, i: usize) -> Result<SegmentInfo> {
        self.eng
            .members
            .get(i)
            .map(member_info)
            .ok_or(Error::NoSuchSegment(i))
    }

    /// Start of member `i`'s data.
    pub fn base(&self, i: usize) -> Result<*mut u8> {
        self.info(i).map(|s| s.base as *mut u8)
    }

    /// Chooses how writes to member `i` are logged (no transaction may be active).
    pub fn set_mode(&mut self, i: usize, mode: LogMode) -> Result<()> {
        self.eng.set_mode(i, mode)
    }

    /// Looks up a typed root of member `i`.
    pub fn root<T: Pod>(&self, i: usize, name: &str) -> Result<Option<PPtr<T>>> {
        typed::root(&self.eng, i, name)
    }

    /// Looks up a typed slice root of member `i`.
    pub fn root_slice<T: Pod>(&self, i: usize, name: &str) -> Result<Option<PSlice<T>>> {
        typed::root_slice(&self.eng, i, name)
    }
}
