//! Implicit mode: log each page on its first write fault.
//!
//! At `begin` the engine write-protects every implicit segment (`mprotect(PROT_READ)`).
//! The first store to a page raises SIGSEGV; the handler below (on an alternate signal
//! stack, so it works even when the faulting code's stack is itself a protected segment)
//! finds the segment in a fixed, lock-free registry, appends the page's before-image to
//! the segment's undo log (one 4 KB copy), makes the page writable (one `mprotect`) and
//! returns; the store then executes. Every later store to that page runs at full speed
//! until the next `begin`.
//!
//! Outside a transaction the handler still unprotects pages (without logging), so pages
//! left read-only by a commit never break ordinary stores.
//!
//! Faults that are not ours are passed to the handler that was installed before
//! (normally Rust's stack-overflow reporter, which restores the default action).
//!
//! Restrictions: only the thread that owns the transaction may store into an implicit
//! segment while it is armed (the handler appends to that transaction's log); if the log
//! is full the handler cannot return an error, so it aborts the process, and recovery then
//! rolls the transaction back.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::log::{LogCore, PageLogger};
use crate::map::PAGE;

const SLOTS: usize = 64;
/// `si_code` of a SIGSEGV caused by a protection violation (not in the libc crate).
const SEGV_ACCERR: libc::c_int = 2;
const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const READY: u8 = 2;

/// What the handler needs to know about one implicit segment.
struct Ctx {
    len: usize,
    pages: PageLogger,
}

struct Slot {
    state: AtomicU8,
    base: AtomicUsize,
    end: AtomicUsize,
    ctx: AtomicPtr<Ctx>,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    state: AtomicU8::new(FREE),
    base: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    ctx: AtomicPtr::new(std::ptr::null_mut()),
};

static REGISTRY: [Slot; SLOTS] = [EMPTY; SLOTS];

/// The handler that was installed before ours.
struct Prev(libc::sigaction);
// SAFETY: written once (inside OnceLock initialization) before our handler is installed,
// read-only afterwards.
unsafe impl Sync for Prev {}
// SAFETY: plain old data.
unsafe impl Send for Prev {}

static PREV: OnceLock<std::result::Result<Prev, i32>> = OnceLock::new();

/// Statistics: faults handled (all threads).
static FAULTS: AtomicUsize = AtomicUsize::new(0);

/// Number of write faults the handler has logged so far in this process.
pub fn faults_handled() -> usize {
    FAULTS.load(Ordering::Relaxed)
}

fn install() -> Result<()> {
    let r = PREV.get_or_init(|| {
        // SAFETY: zeroed sigaction is a valid "no handler, empty mask" value that we fill in.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_fault as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        // SAFETY: sa_mask is a valid sigset_t inside `new`.
        unsafe { libc::sigemptyset(&mut new.sa_mask) };
        // SAFETY: sigaction is plain C data; all-zero is a valid value, which the
        // sigaction call below overwrites with the previous handler.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to valid sigaction structs.
        let rc = unsafe { libc::sigaction(libc::SIGSEGV, &new, &mut old) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(Prev(old))
    });
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Os {
            op: "sigaction(SIGSEGV)",
            source: std::io::Error::from_raw_os_error(*e),
        }),
    }
}

struct AltStack {
    base: usize,
    len: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: disabling the alternate stack of the exiting thread, then unmapping the
        // stack we mapped for it; no signal handler can be running on it at thread exit.
        unsafe {
            let ss = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&ss, std::ptr::null_mut());
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

thread_local! {
    static ALTSTACK_OK: Cell<bool> = const { Cell::new(false) };
    static OWN_ALTSTACK: Cell<Option<AltStack>> = const { Cell::new(None) };
}

/// Makes sure the calling thread has an alternate signal stack.
pub(crate) fn ensure_altstack() -> Result<()> {
    if ALTSTACK_OK.with(|c| c.get()) {
        return Ok(());
    }
    // SAFETY: querying the current alternate stack into a valid struct.
    let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: null new-stack pointer means "query only".
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut cur) } != 0 {
        return Err(Error::last_os("sigaltstack"));
    }
    if cur.ss_flags & libc::SS_DISABLE != 0 {
        let len = 64 << 10;
        // SAFETY: a fresh private anonymous mapping, owned by the thread-local below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::last_os("mmap signal stack"));
        }
        let ss = libc::stack_t {
            ss_sp: p,
            ss_flags: 0,
            ss_size: len,
        };
        // SAFETY: `ss` describes the mapping just created, which lives until thread exit.
        if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
            // SAFETY: unmapping our own fresh mapping.
            unsafe { libc::munmap(p, len) };
            return Err(Error::last_os("sigaltstack"));
        }
        OWN_ALTSTACK.with(|c| {
            c.set(Some(AltStack {
                base: p as usize,
                len,
            }))
        });
    }
    ALTSTACK_OK.with(|c| c.set(true));
    Ok(())
}

/// An implicit segment registered with the fault handler. Unregisters on drop.
pub(crate) struct Registration {
    slot: usize,
    ctx: Box<Ctx>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("slot", &self.slot)
            .field("base", &self.ctx.pages.base())
            .field("len", &self.ctx.len)
            .finish()
    }
}

// SAFETY: the registration only holds a pointer to the engine's boxed LogCore, which
// outlives it (the engine drops registrations first).
unsafe impl Send for Registration {}

impl Registration {
    /// Registers `[base, base + len)`, logging into `log` as member `target`.
    ///
    /// # Safety
    /// `log` must stay valid until the registration is dropped.
    pub(crate) unsafe fn new(
        base: usize,
        len: usize,
        log: *const LogCore,
        target: u16,
    ) -> Result<Registration> {
        install()?;
        let ctx = Box::new(Ctx {
            len,
            // SAFETY: `log` stays valid until the registration, which owns `ctx`, drops
            // (this function's contract).
            pages: unsafe { PageLogger::new(log, base, target) },
        });
        for (i, s) in REGISTRY.iter().enumerate() {
            if s.state
                .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.base.store(base, Ordering::Relaxed);
                s.end.store(base + len, Ordering::Relaxed);
                s.ctx
                    .store(&*ctx as *const Ctx as *mut Ctx, Ordering::Relaxed);
                s.state.store(READY, Ordering::Release);
                return Ok(Registration { slot: i, ctx });
            }
        }
        Err(Error::InvalidConfig(format!(
            "more than {SLOTS} implicit segments in one process"
        )))
    }

    /// Start logging faults (transaction active).
    pub(crate) fn arm(&self) {
        self.ctx.pages.arm(true);
    }

    /// Stop logging faults (no transaction).
    pub(crate) fn disarm(&self) {
        self.ctx.pages.arm(false);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let s = &REGISTRY[self.slot];
        s.state.store(CLAIMED, Ordering::Release);
        s.ctx.store(std::ptr::null_mut(), Ordering::Release);
        s.state.store(FREE, Ordering::Release);
    }
}

fn fatal(msg: &str) -> ! {
    // SAFETY: write(2) and abort() are async-signal-safe; msg is a valid buffer.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort();
    }
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    if code != SEGV_ACCERR || !is_write_fault(uctx) {
        return chain(sig, info, uctx);
    }
    for s in REGISTRY.iter() {
        if s.state.load(Ordering::Acquire) != READY {
            continue;
        }
        if addr < s.base.load(Ordering::Relaxed) || addr >= s.end.load(Ordering::Relaxed) {
            continue;
        }
        let ctx = s.ctx.load(Ordering::Acquire);
        if ctx.is_null() {
            continue;
        }
        // SAFETY: a READY slot's ctx points to the Box owned by a live Registration.
        let ctx = unsafe { &*ctx };
        let page = addr & !(PAGE - 1);
        // SAFETY: `page` is a readable page of the registered segment, still protected (so
        // not written yet); the log is valid while registered and is a different mapping.
        match unsafe { ctx.pages.log_before_write(page) } {
            Ok(true) => {
                FAULTS.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(Error::Prepared { .. }) => fatal("vista: store to a page not logged before prepare (implicit mode); aborting, the transaction stays prepared for the resolver\n"),
            Err(_) => fatal("vista: undo log full (or msync failed) while logging a page in implicit mode; aborting, recovery will roll the transaction back\n"),
        }
        // SAFETY: making one page of our own mapping writable again.
        let rc = unsafe {
            libc::mprotect(
                page as *mut libc::c_void,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            fatal("vista: mprotect failed in the implicit-mode fault handler (too many mappings? see vm.max_map_count); aborting\n");
        }
        return;
    }
    chain(sig, info, uctx);
}

#[cfg(target_arch = "x86_64")]
fn is_write_fault(uctx: *mut libc::c_void) -> bool {
    if uctx.is_null() {
        return true;
    }
    // SAFETY: for SA_SIGINFO handlers the third argument is the interrupted context; on
    // x86-64 the page-fault error code is in REG_ERR and bit 1 means "write".
    let err =
        unsafe { (*(uctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_ERR as usize] };
    err & 2 != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn is_write_fault(_uctx: *mut libc::c_void) -> bool {
    true
}

fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    let prev = match PREV.get() {
        Some(Ok(p)) => p.0,
        _ => return restore_default(sig),
    };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        return restore_default(sig);
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was registered with SA_SIGINFO, so it has this
        // signature; we forward the kernel's own arguments.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, uctx);
    } else {
        // SAFETY: a non-SA_SIGINFO handler takes just the signal number.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

fn restore_default(sig: libc::c_int) {
    // SAFETY: resetting the disposition to SIG_DFL; returning re-executes the faulting
    // instruction, which then kills the process with the original signal.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
    }
}
