//! Checkpoint and recovery: the heart of Discount Checking.
//!
//! # Memory
//!
//! The process runs in ordinary (private) memory; the *image* of each checkpointed range
//! lives in a Vista segment at an address of its own (see [`crate::image`]). A checkpoint
//! finds the pages written since the previous one ([`crate::track`]) and, inside one Vista
//! transaction, logs each image page's before-image (`set_range`) and copies the working
//! page over it; then it logs and updates the control header and commits. So the
//! checkpoint is Vista's commit, and "recovery is abort": opening the group after a crash
//! rolls back a half-written checkpoint, and the image is the last committed one.
//!
//! This copies a dirty page at checkpoint time (two 4 KB copies: before-image into the
//! log, working page into the image) instead of at its first write as the thesis did
//! (write-protect, SIGSEGV, copy, unprotect): the kernel only has to *mark* the page
//! written, which is several times cheaper than a signal and an `mprotect`.
//!
//! # Registers
//!
//! [`crate::sys`]'s `dc_ckpt_enter` pushes the callee-saved registers, MXCSR and the x87
//! control word onto the stack and calls the commit with that stack pointer, so the saved
//! registers are simply part of the stack image, and the only register the header keeps is
//! the stack pointer. The stack above it (the live frames, back to `_start`, the argument
//! and environment strings) is checkpointed; below it nothing is, since it is dead when
//! the checkpoint is resumed ("the unused part of the stack is not logged").
//!
//! # Recovery
//!
//! The program is restarted; `init` re-executes it as first started with ASLR off (see
//! [`crate::reexec`]), so every object and the stack are where they were. It opens the
//! image (Vista rolls back an unfinished checkpoint), undoes file writes made after the
//! checkpoint (`kstate`), switches to a temporary stack, copies every range's image back
//! over the live memory, redoes the kernel state (files, offsets, signal handlers and
//! mask, timers, `mprotect`s), restores the two TCB words glibc derives from the random
//! bytes of the first run (stack canary, pointer guard), and jumps into the saved context:
//! `dc_ckpt_enter` returns a second time, now with 1.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use crate::alloc::{internal, HEAP, HEAP_BASE};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::image::{self, CtlHeader, CtlLayout, Image, Store};
use crate::kstate::KState;
use crate::layout::{self, Kind, Range};
use crate::sys::{self, check, sc, sc4};
use crate::track::Tracker;
use crate::vol;

const PAGE: usize = 4096;

/// Size of the field `f` selects (without a value of `T`).
fn field_size<T, F>(_f: impl Fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

/// The time-stamp counter (cheaper than a clock read; used only for ratios).
#[inline(always)]
fn cycles() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn page_down(x: usize) -> usize {
    x & !(PAGE - 1)
}
fn page_up(x: usize) -> usize {
    (x + PAGE - 1) & !(PAGE - 1)
}

/// One checkpointed range at run time.
#[derive(Debug, Clone)]
pub struct RtRange {
    /// What it is.
    pub kind: Kind,
    /// Working start (for the stack: the lowest address the image can hold).
    pub start: usize,
    /// Working end.
    pub end: usize,
    /// `image - working`.
    pub delta: isize,
}

/// Counters (volatile; for benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Checkpoints committed by this process.
    pub checkpoints: u64,
    /// Pages copied into the image.
    pub pages: u64,
    /// Nanoseconds spent in checkpoints.
    pub ns: u64,
    /// Pages copied by the last checkpoint.
    pub last_pages: u64,
    /// Nanoseconds of the last checkpoint.
    pub last_ns: u64,
    /// Nanoseconds spent finding dirty pages and copying them (all checkpoints).
    pub scan_copy_ns: u64,
    /// Nanoseconds spent in Vista begin, header logging and commit (all checkpoints).
    pub vista_ns: u64,
}

/// Discount Checking's volatile state for the current process (in the volatile arena).
#[derive(Debug)]
pub struct Runtime {
    /// The configuration.
    pub cfg: Config,
    /// Where the files are.
    pub store: Box<dyn Store>,
    /// The image.
    pub image: Image,
    /// The ranges.
    pub ranges: Vec<RtRange>,
    /// Indices into `ranges` of the ranges each `PAGEMAP_SCAN` walk covers.
    walks: Vec<Vec<usize>>,
    /// Dirty-page tracking.
    pub tracker: Tracker,
    /// Lowest live stack address hint for the checkpoint in progress.
    low_hint: usize,
    /// Counters.
    pub stats: Stats,
    /// Replay cursor into the input log (bytes from the area start).
    pub input_cursor: usize,
    /// The interception layer's entry points that start-up and recovery install.
    pub(crate) hooks: Hooks,
    /// Top of the temporary stack used during recovery.
    tmp_top: usize,
    /// Start of the kernel's stack mapping before recovery copied the stack back.
    stack_vma_start: usize,
}

impl Runtime {
    /// A runtime over `ranges` of `image`, with the walk plan made from the current
    /// mappings and fresh counters. `(tmp_top, stack_vma_start)` are for recovery ((0, 0)
    /// on a fresh start).
    fn new(
        cfg: &Config,
        store: Box<dyn Store>,
        image: Image,
        ranges: Vec<RtRange>,
        tracker: Tracker,
        hooks: Hooks,
        (tmp_top, stack_vma_start): (usize, usize),
    ) -> Result<Box<Runtime>> {
        Ok(Box::new(Runtime {
            cfg: cfg.clone(),
            store,
            image,
            walks: plan_walks(&ranges, &layout::maps()?),
            ranges,
            tracker,
            low_hint: usize::MAX,
            stats: Stats::default(),
            input_cursor: 0,
            hooks,
            tmp_top,
            stack_vma_start,
        }))
    }
}

/// The entry points of the interception layer ([`crate::intercept`]) that start-up and
/// recovery install. The interception layer calls into this module (checkpoints); these
/// function pointers let this module reach back without depending on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hooks {
    /// Installs the kernel disposition of a program signal recorded in
    /// [`crate::kstate::SIGS`] (the handler wrapper for a program handler).
    pub reinstall_signal: fn(i32),
    /// The periodic-checkpoint timer's signal handler.
    pub on_timer: crate::signals::Handler,
    /// The SIGSYS handler of Syscall User Dispatch ([`crate::sud`]).
    pub on_sigsys: crate::signals::Handler,
    /// A distributed checkpoint for a member of a computation ([`crate::twopc`]): asks
    /// for a round and serves it (as [`take`]: `Ok(true)` when resumed after recovery).
    pub global_commit: fn(&mut Ctx) -> Result<bool>,
    /// A member's last distributed commit and goodbye at exit.
    pub leave: fn(&mut Ctx),
    /// A member's rollback (re-execution into recovery) for the image in the directory.
    pub rollback_in: fn(&std::path::Path) -> !,
}

/// The kernel-state records: checkpointed memory (`.bss`, their vectors on the persistent
/// heap), owned by [`Ctx`] like the runtime.
struct KCell(UnsafeCell<KState>);

// SAFETY: the cell is only reached through a [`Ctx`], and `Ctx::enter`'s contract makes
// every use of a context exclusive (one thread, no reentry from signal handlers).
unsafe impl Sync for KCell {}

static KS: KCell = KCell(UnsafeCell::new(KState::new()));

/// The context of one entry into Discount Checking: the one owner of the runtime
/// ([`Runtime`], in the volatile arena) and of the kernel-state records ([`KState`], in
/// checkpointed memory). It is created at the entry points (the interposed libc
/// functions, `init`, `checkpoint`, the signal handlers, the timer, exit) and passed down
/// to everything that needs either.
///
/// A context holds no pointer: every borrow re-reads the runtime pointer, and lives no
/// longer than the `&mut self` it is taken from, so two borrows never overlap, and a
/// context on a stack that a checkpoint resumes in a new process is as valid there as it
/// was before (the runtime it reaches is the new process's).
pub(crate) struct Ctx {
    /// Neither `Send` nor `Sync`: a context belongs to the program's one thread.
    _one_thread: PhantomData<*mut ()>,
}

impl Ctx {
    /// The context: the one way to reach the runtime and the kernel-state records.
    ///
    /// # Safety
    ///
    /// The caller must make sure that no other context is in use while it uses this one
    /// (and what it borrows from it). That holds when:
    ///
    /// * the caller runs on the program's only thread (`init` refuses a program with
    ///   more than one; Discount Checking does not support threads started later), so the
    ///   only other code that can run meanwhile is a signal handler interrupting it; and
    /// * the caller holds a reentrancy guard for as long as it uses the context: it has
    ///   raised [`Vol::in_dc`](crate::vol::Vol::in_dc) (an interposed function's entry,
    ///   `intercept::Entry`), or it has won [`Vol::busy`](crate::vol::Vol::busy) (a
    ///   checkpoint, recovery, exit), or no entry point can run yet (`init` before
    ///   [`Vol::active`](crate::vol::Vol::active) is set, with the program's handlers not
    ///   wrapped yet); and
    /// * every signal handler that enters (the timer, the program-handler wrapper, the
    ///   checkpoint a program handler asks for) does so only after finding `in_dc` zero
    ///   and winning `busy`, so it never runs on top of a guard holder, and a handler
    ///   that it interrupts in turn finds its guard.
    pub(crate) unsafe fn enter() -> Ctx {
        Ctx {
            _one_thread: PhantomData,
        }
    }

    /// The runtime, once `init` (or recovery) has published it.
    pub(crate) fn rt(&mut self) -> Option<&mut Runtime> {
        let p = vol::get().rt.load(Ordering::Acquire).cast::<Runtime>();
        // SAFETY: a published runtime is a leaked box that is never freed; the context
        // is in exclusive use (`Ctx::enter`'s contract) and the borrow is bounded by
        // `&mut self`, so it is the only reference to the runtime while it lives.
        (!p.is_null()).then(|| unsafe { &mut *p })
    }

    /// The kernel-state records.
    pub(crate) fn ks(&mut self) -> &mut KState {
        // SAFETY: the records are a static, always valid; the context is in exclusive use
        // (`Ctx::enter`'s contract) and the borrow is bounded by `&mut self`, so it is the
        // only reference to them while it lives.
        unsafe { &mut *KS.0.get() }
    }

    /// The runtime and the records together (they are distinct objects).
    pub(crate) fn both(&mut self) -> Option<(&mut Runtime, &mut KState)> {
        let p = vol::get().rt.load(Ordering::Acquire).cast::<Runtime>();
        if p.is_null() {
            return None;
        }
        // SAFETY: a published runtime is a leaked box, never freed, and the records a
        // static; the context is in exclusive use (`Ctx::enter`'s contract) and both
        // borrows are bounded by `&mut self`; the runtime (volatile arena) and the
        // records (a static) are distinct objects, so the two borrows do not alias.
        Some(unsafe { (&mut *p, &mut *KS.0.get()) })
    }
}

/// Makes `rt` the runtime: leaks it (it lives as long as the process) and publishes it
/// for [`Ctx`], with the protocol and timer signal that signal handlers read lock-free.
fn publish(rt: Box<Runtime>) -> *mut Runtime {
    let v = vol::get();
    crate::protocol::set_current(rt.cfg.protocol);
    if rt.cfg.test_no_drain {
        v.no_drain_for_tests.store(true, Ordering::Relaxed);
    }
    if rt.cfg.test_uncoordinated {
        crate::vol::get()
            .sends_internal_for_tests
            .store(true, Ordering::Relaxed);
    }
    let timer = rt.cfg.interval.map_or(0, |_| rt.cfg.timer_signal);
    v.timer_sig.store(timer, Ordering::Relaxed);
    let raw = Box::into_raw(rt);
    // (`Vol::rt` is type-erased; only this module reads it, as a `Runtime`.)
    v.rt.store(raw.cast::<()>(), Ordering::Release);
    raw
}

/// Whether a runtime was published (`init` ran in this process).
pub(crate) fn runtime_published() -> bool {
    !vol::get().rt.load(Ordering::Acquire).is_null()
}

/// Image length for a range.
fn image_len(r: &Range, cfg: &Config) -> usize {
    match r.kind {
        Kind::Data => r.end - r.start,
        Kind::Heap => r.end - r.start,
        Kind::Stack => cfg.stack_size.max(r.end - r.start),
    }
}

/// Discovers the ranges to checkpoint in this process.
fn discover(cfg: &Config) -> Result<Vec<Range>> {
    let mut v = layout::data_ranges();
    layout::check_mapped(&v)?;
    let (s, top) = layout::stack_vma()?;
    v.push(Range {
        kind: Kind::Heap,
        start: HEAP_BASE,
        end: HEAP_BASE + cfg.heap_size,
        name: "heap".into(),
    });
    v.push(Range {
        kind: Kind::Stack,
        start: s,
        end: top,
        name: "[stack]".into(),
    });
    Ok(v)
}

fn rt_ranges(recs: &[image::RangeRec], cfg: &Config) -> Result<Vec<RtRange>> {
    recs.iter()
        .map(|r| {
            let kind = Kind::from_u32(r.kind).ok_or(Error::Corrupt("range kind".into()))?;
            let (start, end) = (r.start as usize, r.end as usize);
            let start = if kind == Kind::Stack {
                end - cfg.stack_size.max(end - start)
            } else {
                start
            };
            Ok(RtRange {
                kind,
                start,
                end,
                delta: r.image as isize - r.start as isize,
            })
        })
        .collect()
}

fn map_heap(cfg: &Config) -> Result<()> {
    let p = sys::mmap_anon(HEAP_BASE, cfg.heap_size, true)
        .map_err(|e| Error::sys("mmap persistent heap", e))?;
    // SAFETY: advising our own fresh mapping; keeps dirty tracking at 4 KB granularity.
    unsafe { libc::madvise(p as *mut libc::c_void, cfg.heap_size, libc::MADV_NOHUGEPAGE) };
    Ok(())
}

fn ctl_layout(cfg: &Config) -> CtlLayout {
    CtlLayout::new(cfg.fundo_capacity, cfg.input_capacity)
}

/// First run: create the image, copy the address space into it, start tracking, and take
/// the first checkpoint. Returns when the program should go on (first run, or resumed
/// into this very checkpoint after a crash).
pub(crate) fn init_fresh(cfg: Config, store: Box<dyn Store>, hooks: Hooks) -> Result<()> {
    let rt = internal(|| -> Result<Box<Runtime>> {
        map_heap(&cfg)?;
        let ranges = discover(&cfg)?;
        let with_len: Vec<(Range, usize)> = ranges
            .iter()
            .map(|r| (r.clone(), image_len(r, &cfg)))
            .collect();
        let ctl = ctl_layout(&cfg);
        let (members, recs) = image::plan(&with_len, &ctl)?;
        let img = Image::create(store.as_ref(), &members, ctl, cfg.log_capacity, &recs)?;
        let mut tracker = Tracker::new(cfg.tracker)?;
        let rts = rt_ranges(&recs, &cfg)?;
        for r in &rts {
            let (s, e) = tracked_extent(r)?;
            tracker.register(s, e)?;
            tracker.reset(s, e)?;
        }
        // The initial copy: whatever is not written from now on keeps these contents.
        let sp = page_down(sys::stack_pointer());
        for r in &rts {
            let (s, e) = match r.kind {
                Kind::Data => (r.start, r.end),
                Kind::Heap => (r.start, r.start),
                Kind::Stack => (sp.max(r.start), r.end),
            };
            copy_nonzero(s, e, r.delta);
        }
        Runtime::new(&cfg, store, img, rts, tracker, hooks, (0, 0))
    })?;
    HEAP.set_region(HEAP_BASE, HEAP_BASE + cfg.heap_size);
    publish_stack(&rt.ranges);
    publish(rt);
    // SAFETY: until `active` is set below, no entry point enters (the wrappers are plain
    // system calls, the handlers and `checkpoint` back off), so this is the only context
    // in use; after that it is used only by `take`, which wins `busy` before it borrows
    // (a handler that runs in between completes before `take` starts).
    let mut cx = unsafe { Ctx::enter() };
    crate::trace::open(cfg.trace.as_deref())?;
    if let Some((rt, ks)) = cx.both() {
        ks.init(rt.store.dir())?;
    }
    start_signals(&mut cx)?;
    vol::get().active.store(true, Ordering::Release);
    crate::trace::event("S", "start");
    take(&mut cx, usize::MAX).map(|_| ())
}

/// Bytes a heap walk reaches past the high-water mark. `PAGEMAP_SCAN` flushes the TLB
/// from the first page it write-protects to the end of the walk (within one page
/// table): page by page up to 33 pages (`tlb_single_page_flush_ceiling`), at about
/// 0.1-0.4 µs a page here, and wholesale (about 0.3 µs) beyond. Ending the walk at
/// least 34 pages further makes it one whole flush, unless a page table ends first.
const FLUSH_SPAN: usize = 34 * PAGE;

/// Bytes of live stack above its lowest live byte that every checkpoint copies instead
/// of tracking (rounded up to a page end, so 4 to 8 KiB in all).
const STACK_PIN: usize = PAGE;

/// Mappings a walk may skip to save a `PAGEMAP_SCAN` call: skipping an unregistered
/// mapping costs about 30 ns (a VMA lookup and test), a call about 300 ns (measured).
const WALK_MERGE_VMAS: usize = 8;

/// Groups the ranges into `PAGEMAP_SCAN` walks (indices into `ranges`). The heap and
/// the stack get a walk each: the heap's ends [`FLUSH_SPAN`] past its high-water mark,
/// and the stack's starts above the part of the live stack every checkpoint copies
/// ([`STACK_PIN`]). Static-data ranges, in address order, share a walk when at most
/// [`WALK_MERGE_VMAS`] mappings lie between them (`maps`, read now: a mapping created
/// later only makes a walk slower, never wrong).
fn plan_walks(ranges: &[RtRange], maps: &[layout::MapLine]) -> Vec<Vec<usize>> {
    let mut walks: Vec<Vec<usize>> = Vec::new();
    let mut data: Vec<usize> = (0..ranges.len())
        .filter(|&i| ranges[i].kind == Kind::Data)
        .collect();
    data.sort_by_key(|&i| ranges[i].start);
    let mut last_end = 0;
    for i in data {
        let r = &ranges[i];
        let between = maps
            .iter()
            .filter(|m| m.start < r.start && m.end > last_end)
            .count();
        match walks.last_mut() {
            Some(w) if between <= WALK_MERGE_VMAS => w.push(i),
            _ => walks.push(vec![i]),
        }
        last_end = r.end;
    }
    for (i, r) in ranges.iter().enumerate() {
        if r.kind != Kind::Data {
            walks.push(vec![i]);
        }
    }
    walks
}

fn publish_stack(ranges: &[RtRange]) {
    if let Some(r) = ranges.iter().find(|r| r.kind == Kind::Stack) {
        let v = vol::get();
        v.stack_lo.store(r.start, Ordering::Relaxed);
        v.stack_hi.store(r.end, Ordering::Relaxed);
    }
}

/// `[start, end)` to register with the tracker: the whole range, except the stack, which
/// is registered as the kernel's stack mapping (it grows inside that mapping).
fn tracked_extent(r: &RtRange) -> Result<(usize, usize)> {
    match r.kind {
        Kind::Stack => {
            let (s, e) = layout::stack_vma()?;
            Ok((s, e))
        }
        _ => Ok((r.start, r.end)),
    }
}

fn copy_nonzero(s: usize, e: usize, delta: isize) {
    let mut p = s;
    while p < e {
        // SAFETY: [p, p+PAGE) is a page of a mapped working range; the image mapping at
        // p+delta is a page of its (writable) member; the two never overlap.
        unsafe {
            let src = std::slice::from_raw_parts(p as *const u8, PAGE);
            if src.iter().any(|&b| b != 0) {
                std::ptr::copy_nonoverlapping(src.as_ptr(), (p as isize + delta) as *mut u8, PAGE);
            }
        }
        p += PAGE;
    }
}

extern "C" fn commit_entry(arg: usize, sp: usize) -> usize {
    // SAFETY: arg is the runtime pointer `take_busy` derived from its context's exclusive
    // borrow and does not use until this returns.
    let rt = unsafe { &mut *(arg as *mut Runtime) };
    match rt.commit(sp) {
        Ok(()) => 0,
        // The round was aborted (another member failed): the image is as the last
        // committed checkpoint left it, and this process re-executes into recovery.
        Err(Error::RolledBack) => (rt.hooks.rollback_in)(rt.store.dir()),
        Err(e) => {
            // The dirty bits were consumed: the image can no longer follow the working
            // memory. Die; the next run resumes from the previous checkpoint. (No heap
            // allocation here: we may have interrupted the allocator.)
            let mut w = sys::StackWriter::new();
            let _ = std::fmt::Write::write_fmt(&mut w, format_args!("checkpoint failed: {e}"));
            crate::diag::fatal(w.as_str())
        }
    }
}

fn current_sigmask() -> u64 {
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask with a null new set only reads the mask into `old` (8 bytes).
    unsafe {
        sc4(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK as usize,
            0,
            &mut old as *mut u64 as usize,
            8,
        )
    };
    old
}

impl Runtime {
    fn header(&self) -> *mut CtlHeader {
        self.image.header()
    }

    /// The checkpoint proper (runs below the save area at `sp`).
    fn commit(&mut self, sp: usize) -> Result<()> {
        let t0 = crate::vdso::mono_ns();
        let c0 = cycles();
        let hwm = page_up(HEAP.hwm_unlocked().max(HEAP_BASE));
        let stack = self
            .ranges
            .iter()
            .find(|r| r.kind == Kind::Stack)
            .map(|r| (r.start, r.end))
            .unwrap_or((0, 0));
        // Live stack: from the save area up, or (in a signal handler on the alternate
        // stack) from the interrupted code's stack pointer minus its red zone.
        let on_main = sp >= stack.0 && sp < stack.1;
        let hint_on_main = self.low_hint >= stack.0 && self.low_hint < stack.1;
        let (live, live_known) = if on_main {
            (sp.min(self.low_hint), true)
        } else if hint_on_main {
            (self.low_hint, true)
        } else {
            // No handler told us where the main stack's live part starts (a checkpoint
            // from a handler that did not come through ours): all of its mapping.
            match crate::vol::get().handler_low.load(Ordering::Relaxed) {
                usize::MAX => (stack.0, false),
                h => (h.clamp(stack.0, stack.1), true),
            }
        };
        let low = page_down(live);
        if low < stack.0 {
            return Err(Error::Layout(format!(
                "stack deeper than the image ({} bytes; raise DC_STACK_MB)",
                stack.1 - low
            )));
        }
        let low = low.min(stack.1);
        // The bottom of the live stack, from its first live byte to the end of the page
        // [`STACK_PIN`] bytes above it, is copied at every checkpoint and never walked:
        // the code that resumes (`take` and its callers, or the interrupted code) writes
        // these frames again as soon as the checkpoint returns, so write-protecting them
        // would only buy a fault a microsecond later (and, for the save area's page, one
        // inside `PAGEMAP_SCAN` itself, whose argument lives in the frames below). A page
        // the tracker does not write-protect stays "written", so it is reported by the
        // first walk that covers it again. (Only when the live part is known to be
        // mapped: the fallback above may point far below the mapping.)
        let pinned = if live_known {
            (live & !63, page_up(live + STACK_PIN).min(stack.1))
        } else {
            (low, low)
        };
        // SAFETY: header is mapped.
        let input_end = unsafe { (*self.header()).input_end } as usize;
        let cursor = self.input_cursor;
        let input_done = cursor >= input_end;
        if input_done {
            self.input_cursor = 0;
        }
        let Runtime {
            image,
            ranges,
            walks,
            tracker,
            stats,
            ..
        } = self;
        let h = image.header();
        let c_begin = cycles();
        let mut tx = image.group.begin()?;
        let c_scan = cycles();
        let mut pages = 0u64;
        // What to checkpoint of each range: all of a data range, the heap up to its
        // high-water mark, the live part of the stack.
        let extent = |r: &RtRange| match r.kind {
            Kind::Data => (r.start, r.end),
            Kind::Heap => (r.start, hwm.min(r.end)),
            Kind::Stack => (low, r.end),
        };
        // Copies the written run [a, b) of range r into the image, logged.
        let mut save = |r: &RtRange, a: usize, b: usize| -> Result<()> {
            let (s, e) = extent(r);
            let (a, b) = (a.max(s), b.min(e));
            if b <= a {
                return Ok(());
            }
            let img = (a as isize + r.delta) as usize;
            tx.set_range(img as *const u8, b - a).map_err(|e| match e {
                vista::Error::LogFull {
                    needed, capacity, ..
                } => Error::LogFull { needed, capacity },
                e => Error::Vista(e),
            })?;
            // SAFETY: [a, b) is mapped working memory of this range and [img, img+b-a)
            // its image page(s), just logged; distinct mappings.
            unsafe { std::ptr::copy_nonoverlapping(a as *const u8, img as *mut u8, b - a) };
            pages += ((page_up(b) - page_down(a)) / PAGE) as u64;
            Ok(())
        };
        if tracker.kind() == crate::track::TrackerKind::Uffd {
            // One `PAGEMAP_SCAN` walk per group of `walks` (see `plan_walks`). A walk
            // skips the mappings between its ranges, which are not registered; written
            // pages it reports outside every range's extent (e.g. below the live stack)
            // are dropped by `save`. A run is offered to every range it meets, so a
            // walk that strays over another group's range loses nothing.
            let walk_extent = |r: &RtRange| match r.kind {
                Kind::Stack => (pinned.1, r.end),
                // Nothing is written past the high-water mark, but walking a little
                // further makes the kernel's TLB flush one whole flush, see
                // `FLUSH_SPAN`.
                Kind::Heap => (r.start, (hwm + FLUSH_SPAN).min(r.end)),
                Kind::Data => extent(r),
            };
            for w in walks.iter() {
                let (mut lo, mut hi) = (usize::MAX, 0);
                for &i in w {
                    let (s, e) = walk_extent(&ranges[i]);
                    if e > s {
                        lo = lo.min(s);
                        hi = hi.max(e);
                    }
                }
                if hi <= lo {
                    continue;
                }
                tracker.scan(lo, hi, 0, &mut |a, b| {
                    for r in ranges.iter() {
                        if a < r.end && b > r.start {
                            save(r, a, b)?;
                        }
                    }
                    Ok(())
                })?;
            }
            if let Some(r) = ranges.iter().find(|r| r.kind == Kind::Stack) {
                save(r, pinned.0, pinned.1)?;
            }
        } else {
            for r in ranges.iter() {
                let (s, e) = extent(r);
                tracker.scan(s, e, r.delta, &mut |a, b| save(r, a, b))?;
            }
        }
        let c_scanned = cycles();
        // The header minus its table of ranges (written once, by `format_header`): two
        // small records instead of one of the whole header.
        let table = std::mem::offset_of!(CtlHeader, ranges);
        let after = table + field_size(|h: &CtlHeader| &h.ranges);
        tx.set_range(h as *const u8, table)?;
        tx.set_range(
            (h as usize + after) as *const u8,
            std::mem::size_of::<CtlHeader>() - after,
        )?;
        let (canary, guard) = sys::tcb_guards();
        // SAFETY: the header lies in the control member and was just logged (all but
        // the table of ranges, which is not written here).
        unsafe {
            (*h).seq += 1;
            (*h).saved_sp = sp as u64;
            (*h).stack_low = low as u64;
            (*h).heap_hwm = hwm as u64;
            (*h).sigmask = current_sigmask();
            (*h).canary = canary;
            (*h).guard = guard;
            (*h).commit_ns = t0;
            (*h).state = image::STATE_VALID;
            // This checkpoint makes every file write so far permanent.
            (*h).fundo_end = 0;
            // Input consumed so far is part of the checkpointed state now.
            if input_done {
                (*h).input_start = 0;
                (*h).input_end = 0;
            } else {
                (*h).input_start = cursor as u64;
            }
        }
        // A round of a distributed checkpoint (`twopc`): prepared, voted, and committed
        // only if the coordinator says every member prepared; otherwise aborted and the
        // process rolls back (`Error::RolledBack`).
        let round = crate::twopc::serving();
        if round != 0 {
            tx.prepare(round)?;
            if !crate::twopc::vote(round) {
                let _ = tx.abort();
                return Err(Error::RolledBack);
            }
        }
        tx.commit()?;
        let c_end = cycles();
        let dt = crate::vdso::mono_ns().saturating_sub(t0);
        // Split `dt` between the phases by their cycle counts (cheaper than a clock read
        // per phase).
        let per_cycle = dt as f64 / c_end.wrapping_sub(c0).max(1) as f64;
        let part = |c: u64| (c as f64 * per_cycle) as u64;
        stats.scan_copy_ns += part(c_scanned.wrapping_sub(c_scan));
        stats.vista_ns += part(c_scan.wrapping_sub(c_begin)) + part(c_end.wrapping_sub(c_scanned));
        stats.checkpoints += 1;
        stats.pages += pages;
        stats.ns += dt;
        stats.last_pages = pages;
        stats.last_ns = dt;
        Ok(())
    }
}

/// Takes a checkpoint for an entry point that holds no context: the program's
/// `checkpoint()`, a signal handler (the timer, a CAND commit for a program signal), or
/// a deferred checkpoint. `low_hint` is the lowest live address of the main stack when
/// the caller is a signal handler running on the alternate stack (usize::MAX otherwise).
/// Returns `Ok(true)` when returning a second time, after recovery.
///
/// While Discount Checking's own code runs below the caller (`in_dc` raised: the caller
/// is a handler that interrupted it) the checkpoint is deferred to the end of that code,
/// as the timer's always was: the code below holds the context.
pub(crate) fn checkpoint(low_hint: usize) -> Result<bool> {
    let _allow = crate::sud::Allow::new();
    let v = vol::get();
    if !v.active.load(Ordering::Acquire) {
        return Err(Error::State("Discount Checking is not initialized"));
    }
    if v.in_dc.load(Ordering::Acquire) > 0 {
        v.pending.store(true, Ordering::Release);
        return Ok(false);
    }
    if v.busy.swap(true, Ordering::AcqRel) {
        return Ok(false);
    }
    // SAFETY: no guard holder runs below us (in_dc is zero, and we won `busy`, which we
    // hold until `take_busy` returns): the only context in use.
    let mut cx = unsafe { Ctx::enter() };
    if crate::twopc::wants_global() {
        // A member of a computation checkpoints only together with the others; `take`
        // (called by the round) wins `busy` again. The protocols that use 2PC refuse the
        // periodic timer and take no checkpoint in a signal handler, so nothing enters
        // between here and there.
        v.busy.store(false, Ordering::Release);
        v.in_dc.fetch_add(1, Ordering::AcqRel);
        let r = match cx.rt().map(|rt| rt.hooks.global_commit) {
            Some(global) => global(&mut cx),
            None => Err(Error::State("no runtime")),
        };
        v.in_dc.fetch_sub(1, Ordering::AcqRel);
        return r;
    }
    take_busy(&mut cx, low_hint)
}

/// Takes a checkpoint for an entry point that holds the context `cx` (the interposed
/// functions). See [`checkpoint`].
pub(crate) fn take(cx: &mut Ctx, low_hint: usize) -> Result<bool> {
    let v = vol::get();
    if !v.active.load(Ordering::Acquire) {
        return Err(Error::State("Discount Checking is not initialized"));
    }
    if crate::twopc::wants_global() {
        return match cx.rt().map(|rt| rt.hooks.global_commit) {
            Some(global) => global(cx),
            None => Err(Error::State("no runtime")),
        };
    }
    if v.busy.swap(true, Ordering::AcqRel) {
        return Ok(false);
    }
    take_busy(cx, low_hint)
}

/// The checkpoint, with `busy` won by the caller (released here).
fn take_busy(cx: &mut Ctx, low_hint: usize) -> Result<bool> {
    let v = vol::get();
    crate::protocol::clear_nd();
    cx.ks().before_commit();
    let Some(run) = cx.rt() else {
        v.busy.store(false, Ordering::Release);
        return Err(Error::State("no runtime"));
    };
    run.low_hint = low_hint;
    let run = run as *mut Runtime;
    // The depth of Discount Checking code below us: a local, so that a resumed context
    // (whose stack is this frame) knows it too.
    let depth = v.in_dc.fetch_add(1, Ordering::AcqRel);
    // SAFETY: commit_entry has the signature dc_ckpt_enter calls, and receives the
    // runtime pointer derived from this context's exclusive borrow, which nothing else
    // uses until dc_ckpt_enter returns.
    let r = unsafe { sys::dc_ckpt_enter(commit_entry, run as usize) };
    if r == 1 {
        // Resumed after recovery, in a new process whose runtime `recover` set up. Only
        // now is it safe to let signals take checkpoints: before the jump, a checkpoint
        // would have captured recovery's temporary stack.
        v.in_dc.store(depth, Ordering::Release);
        // Signals stayed blocked through the jump: one delivered before it would have
        // put its frame on top of a restored alternate stack. Now we are on the right
        // stack, the checkpoint's mask can return. (`cx` holds no pointer, so it reaches
        // this process's runtime; `run` was the crashed process's.)
        let mask = cx
            .rt()
            // SAFETY: the header lies in the control member, mapped while the runtime
            // lives.
            .map(|rt| unsafe { (*rt.header()).sigmask });
        v.busy.store(false, Ordering::Release);
        v.active.store(true, Ordering::Release);
        // A member of a computation joins it again before anything of the program runs;
        // once every member has (and so rebuilt its listeners), its stream connections
        // are made again (issue 16).
        crate::twopc::join();
        if let Err(e) = cx.ks().reconnect_streams() {
            sys::fatal_to(
                2,
                &format!("discount: recovery cannot rebuild the kernel state: {e}"),
            );
        }
        // Its FIFOs too, only now (every old process's descriptors are closed, so no old
        // pipe with bytes written after the commit lives on); while waiting for their
        // other ends, a failure of another member rolls this one back from here.
        let rollback = cx
            .rt()
            .map(|rt| (rt.store.dir().to_path_buf(), rt.hooks.rollback_in));
        let mut serve = || {
            while let Some(m) = crate::twopc::recv() {
                if let (true, Some((dir, rollback_in))) =
                    (crate::twopc::rollback_for_me(&m), rollback.as_ref())
                {
                    rollback_in(dir);
                }
            }
        };
        if let Err(e) = cx.ks().reopen_fifos(&mut serve) {
            sys::fatal_to(
                2,
                &format!("discount: recovery cannot rebuild the kernel state: {e}"),
            );
        }
        if let Some(mask) = mask {
            // SAFETY: rt_sigprocmask reads an 8-byte set from a live local.
            unsafe {
                sc4(
                    libc::SYS_rt_sigprocmask,
                    libc::SIG_SETMASK as usize,
                    &mask as *const u64 as usize,
                    0,
                    8,
                )
            };
        }
        return Ok(true);
    }
    v.in_dc.fetch_sub(1, Ordering::AcqRel);
    cx.ks().after_commit();
    // SAFETY: the header lies in the control member, mapped while the runtime lives.
    let seq = cx.rt().map(|rt| unsafe { (*rt.header()).seq }).unwrap_or(0);
    crate::trace::event_num("C", seq);
    v.busy.store(false, Ordering::Release);
    Ok(false)
}

/// Checkpoint counters of this process (zero before `init`).
pub(crate) fn stats() -> Stats {
    let v = vol::get();
    if v.in_dc.load(Ordering::Acquire) > 0 || v.busy.swap(true, Ordering::AcqRel) {
        // Called from a handler on top of Discount Checking's own code (which holds the
        // context): nothing to report safely.
        return Stats::default();
    }
    // SAFETY: we won `busy` with no guard holder below us: the only context in use.
    let mut cx = unsafe { Ctx::enter() };
    let s = cx.rt().map(|rt| rt.stats).unwrap_or_default();
    v.busy.store(false, Ordering::Release);
    s
}

/// Whether the image in `store` holds a committed checkpoint (opens it, which also runs
/// Vista's recovery).
pub(crate) fn has_valid_checkpoint(store: &dyn Store, cfg: &Config) -> Result<bool> {
    if !image::exists(store) {
        return Ok(false);
    }
    let img = match internal(|| Image::open(store, ctl_layout(cfg))) {
        Ok(img) => img,
        // Prepared for a distributed commit (a member of a computation that crashed in a
        // round): an earlier checkpoint was committed before any round could begin, and
        // the process that recovers (with its coordinator to ask) resolves this one.
        Err(Error::Vista(vista::Error::Prepared { .. })) => return Ok(true),
        Err(e) => return Err(e),
    };
    img.check_header()?;
    // SAFETY: header is mapped while img lives.
    let st = unsafe { (*img.header()).state };
    Ok(st == image::STATE_VALID)
}

/// Recovery: never returns on success.
pub(crate) fn recover(cfg: Config, store: Box<dyn Store>, hooks: Hooks) -> Result<()> {
    let rt = internal(|| -> Result<Box<Runtime>> {
        let img = Image::open(store.as_ref(), ctl_layout(&cfg))?;
        img.check_header()?;
        let recs = img.ranges();
        // The layout must be the one the checkpoint was taken in.
        let now = discover(&cfg)?;
        if now.len() != recs.len() {
            return Err(Error::Mismatch(format!(
                "{} ranges now, {} in the checkpoint",
                now.len(),
                recs.len()
            )));
        }
        for (n, r) in now.iter().zip(&recs) {
            let same = n.kind as u32 == r.kind
                && n.end as u64 == r.end
                && (n.kind == Kind::Stack || n.start as u64 == r.start);
            if !same {
                return Err(Error::Mismatch(format!(
                    "{} at {:#x}..{:#x}, checkpoint has {:#x}..{:#x} (was ASLR disabled? same binary?)",
                    n.name, n.start, n.end, r.start, r.end
                )));
            }
        }
        let rts = rt_ranges(&recs, &cfg)?;
        let tracker = Tracker::new(cfg.tracker)?;
        let tmp = sys::mmap_anon(0, 1 << 20, false).map_err(|e| Error::sys("mmap", e))?;
        let stack_vma_start = layout::stack_vma()?.0;
        Runtime::new(
            &cfg,
            store,
            img,
            rts,
            tracker,
            hooks,
            (tmp + (1 << 20) - 64, stack_vma_start),
        )
    })?;
    // Files first: undo writes made after the checkpoint (idempotent if we crash here).
    internal(|| crate::kstate::replay_file_undo(&rt.image, rt.store.dir()))?;
    map_heap(&rt.cfg)?;
    publish_stack(&rt.ranges);
    let top = rt.tmp_top;
    // Until the jump lands, no entry point may run: `restore_entry` sets `busy` and
    // blocks every signal first thing, and `active` is not set in this process yet.
    publish(rt);
    // SAFETY: restore_entry runs on the fresh temporary stack and never returns on
    // success (it resumes the checkpoint); on failure it returns an error code.
    let code = unsafe { sys::dc_on_stack(top, restore_entry, 0) };
    Err(Error::State(match code {
        2 => "recovery failed while restoring memory",
        _ => "recovery failed while restoring kernel state",
    }))
}

fn image_page_is_zero(working: usize, delta: isize) -> bool {
    // SAFETY: the image mapping covers every page of the range's image.
    let p =
        unsafe { std::slice::from_raw_parts((working as isize + delta) as *const u64, PAGE / 8) };
    p.iter().all(|&w| w == 0)
}

extern "C" fn restore_entry(_: usize) -> usize {
    let v = vol::get();
    v.busy.store(true, Ordering::Release);
    v.active.store(false, Ordering::Release);
    // No signal handler may run while memory is replaced; the checkpoint's mask is set
    // again just before the jump.
    let all: u64 = !0;
    // SAFETY: rt_sigprocmask with a valid 8-byte set.
    unsafe {
        sc4(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &all as *const u64 as usize,
            0,
            8,
        )
    };
    // SAFETY: `busy` is ours, every signal is blocked and `active` is not set: nothing
    // else can enter Discount Checking, so this is the only context in use.
    let mut cx = unsafe { Ctx::enter() };
    let Some(rt) = cx.rt() else {
        return 3;
    };
    // SAFETY: the header lies in the control member, mapped while the runtime lives.
    let h = unsafe { &*rt.header() };
    let (sp, low, hwm) = (
        h.saved_sp as usize,
        h.stack_low as usize,
        h.heap_hwm as usize,
    );
    // From here until the jump, the program's memory is being replaced: use only the
    // volatile arena, raw system calls and the runtime.
    vol::get().internal.fetch_add(1, Ordering::AcqRel);
    for r in &rt.ranges {
        let (s, e) = match r.kind {
            Kind::Data => (r.start, r.end),
            Kind::Heap => (r.start, hwm.min(r.end)),
            Kind::Stack => {
                // Below the stack mapping we run on, skip image pages that were never
                // written (a conservative `stack_low` may reach far below the live part,
                // and the kernel grows a stack only up to RLIMIT_STACK).
                let mut s = page_down(low.max(r.start));
                while s < rt.stack_vma_start.min(r.end) && image_page_is_zero(s, r.delta) {
                    s += PAGE;
                }
                (s, r.end)
            }
        };
        if e > s {
            // SAFETY: [s, e) is working memory of this range (mapped: data ranges were
            // checked, the heap was just mapped, the stack grows down into its mapping),
            // and the image pages at s+delta are mapped; distinct mappings. We run on the
            // temporary stack, so overwriting the main stack is safe.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (s as isize + r.delta) as *const u8,
                    s as *mut u8,
                    e - s,
                )
            };
        }
    }
    // Start tracking only now: the copies above are not changes. (No /proc reads here:
    // std's statics are the restored program's now, and writes are not tracked yet.)
    let vma_start = page_down(rt.stack_vma_start.min(low));
    let reg = (|| -> Result<()> {
        for i in 0..rt.ranges.len() {
            let r = &rt.ranges[i];
            let (s, e) = match r.kind {
                Kind::Stack => (vma_start.max(r.start), r.end),
                _ => (r.start, r.end),
            };
            rt.tracker.register(s, e)?;
            rt.tracker.reset(s, e)?;
        }
        Ok(())
    })();
    if let Err(e) = reg {
        crate::diag::diag(&format!("recovery: {e}"));
        return 2;
    }
    if let Err(e) = crate::trace::open(rt.cfg.trace.as_deref()) {
        crate::diag::diag(&format!("recovery: trace: {e}"));
    }
    // SAFETY: the header lies in the control member, mapped while the runtime lives.
    let (canary, guard, seq, input_start, commit_ns) = unsafe {
        let h = &*rt.header();
        (h.canary, h.guard, h.seq, h.input_start, h.commit_ns)
    };
    rt.input_cursor = input_start as usize;
    let reinstall = rt.hooks.reinstall_signal;
    if let Err(e) = cx.ks().restore(commit_ns, reinstall) {
        crate::diag::diag(&format!("recovery: {e}"));
        return 3;
    }
    if let Err(e) = start_signals(&mut cx) {
        crate::diag::diag(&format!("recovery: {e}"));
        return 3;
    }
    crate::trace::event_num("R", seq);
    // `take` sets `active` and clears `busy` once the jump has landed; until then a
    // signal must neither checkpoint nor find the wrappers live.
    let v = vol::get();
    v.pending.store(false, Ordering::Release);
    v.internal.store(0, Ordering::Release);
    // SAFETY: the guards the restored memory was built with; then the jump into the
    // restored stack (signals stay blocked until `take` is back on it).
    unsafe {
        sys::set_tcb_guards(canary, guard);
        sys::dc_ckpt_resume(sp)
    }
}

/// Installs the alternate signal stack, the periodic-checkpoint timer and Syscall User
/// Dispatch (with the selector at ALLOW: whoever returns to the program sets BLOCK).
fn start_signals(cx: &mut Ctx) -> Result<()> {
    crate::signals::install_altstack()?;
    let Some(rt) = cx.rt() else { return Ok(()) };
    if let Some(iv) = rt.cfg.interval {
        crate::signals::start_timer(rt.cfg.timer_signal, iv, rt.hooks.on_timer)?;
    }
    match rt.cfg.sud {
        crate::config::SudMode::Off => {}
        crate::config::SudMode::On => crate::sud::enable(rt.hooks.on_sigsys)?,
        crate::config::SudMode::Auto => {
            if let Err(e) = crate::sud::enable(rt.hooks.on_sigsys) {
                crate::diag::diag(&format!(
                    "{e}: only the libc wrappers intercept system calls (glibc's internal calls are not seen)"
                ));
            }
        }
    }
    Ok(())
}

/// Marks the image finished (normal exit; an entry point, from `atexit`). After it no
/// checkpoint is taken: `busy` stays set and `active` is cleared.
pub(crate) fn finish() {
    let _allow = crate::sud::Allow::new();
    let v = vol::get();
    if v.in_dc.load(Ordering::Acquire) == 0 && !v.busy.swap(true, Ordering::AcqRel) {
        // SAFETY: no guard holder runs below us and we won `busy` (kept: nothing may
        // checkpoint after this): the only context in use.
        let mut cx = unsafe { Ctx::enter() };
        if crate::twopc::configured() {
            // The exit is a visible event of the computation: commit with the others,
            // then leave (rounds no longer wait for this member).
            v.busy.store(false, Ordering::Release);
            if let Some(leave) = cx.rt().map(|rt| rt.hooks.leave) {
                leave(&mut cx);
            }
            v.busy.store(true, Ordering::Release);
        }
        if let Some(rt) = cx.rt() {
            // SAFETY: the runtime's header is mapped.
            unsafe { image::mark_finished(rt.header()) };
            crate::trace::event("E", "exit");
            cx.ks().at_exit();
        }
    }
    // (Otherwise `exit` was called by a handler on top of Discount Checking's own code:
    // the image stays as the last checkpoint left it, and the next run resumes there.)
    v.active.store(false, Ordering::Release);
}

/// Raw read of a whole small file (used where std may not be safe).
#[allow(dead_code)]
pub(crate) fn read_small(path: &[u8]) -> Option<Vec<u8>> {
    // SAFETY: path is NUL-terminated by callers.
    let fd = check(unsafe {
        sc4(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            path.as_ptr() as usize,
            libc::O_RDONLY as usize,
            0,
        )
    })
    .ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: valid buffer.
        let n = unsafe { sc(libc::SYS_read, fd, buf.as_mut_ptr() as usize, buf.len()) };
        match check(n) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    // SAFETY: closing our fd.
    unsafe { sc(libc::SYS_close, fd, 0, 0) };
    Some(out)
}
