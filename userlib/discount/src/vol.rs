//! The volatile page: Discount Checking's own state that must *not* be rolled back.
//!
//! Everything else in `.data`/`.bss` (including Discount Checking's tables of open files,
//! signal handlers and protocol flags) is checkpointed and restored with the program.
//! What describes the *current* process instead (descriptors of the checkpoint files,
//! the userfaultfd, the volatile allocator, "we are inside the library" flags) lives in
//! this one page-aligned static, and the page is cut out of the checkpointed ranges. This
//! is the problem the thesis (5.2.4) met with Vista's globals: recovery would otherwise
//! "restore" them to the crashed process's values.

use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
};

use crate::arena::Arena;

/// The volatile state (one or more whole pages).
#[repr(C, align(4096))]
pub struct Vol {
    /// Allocations go to the volatile arena while positive.
    pub internal: AtomicUsize,
    /// The volatile arena.
    pub valloc: Arena,
    /// Depth of Discount Checking code on the stack (wrappers, checkpoint); a timer that
    /// fires while positive only marks `pending`.
    pub in_dc: AtomicU32,
    /// A checkpoint was requested while `in_dc` was positive.
    pub pending: AtomicBool,
    /// `init` finished: checkpoints and interception are live.
    pub active: AtomicBool,
    /// Recovery or checkpoint in progress (no reentry).
    pub busy: AtomicBool,
    /// The runtime (volatile arena). Read and written only by `ckpt` (`ckpt::Ctx`, the
    /// one owner of the runtime, and `publish`); everything else reaches the runtime through
    /// a context passed down from its entry point.
    /// (Type-erased: `ckpt::Runtime`, so that this page depends on nothing above it.)
    pub(crate) rt: AtomicPtr<()>,
    /// The trace file of this process (-1: not tracing). Here rather than in the runtime
    /// because any code may trace, signal handlers included.
    pub trace_fd: AtomicI32,
    /// Where diagnostics go (`DC_LOG`; -1: stderr). Volatile like `trace_fd`.
    pub log_fd: AtomicI32,
    /// The commit protocol, [`crate::Protocol`] as `u8` (set when the runtime is
    /// published; `Manual` before). Here so that signal handlers can read it without the
    /// runtime.
    pub protocol: AtomicU8,
    /// The periodic timer's signal, 0 when there is no timer (the `sigaction` wrapper
    /// refuses to let the program take it).
    pub timer_sig: AtomicI32,
    /// Someone is reserving the volatile arena.
    pub vreserving: AtomicBool,
    /// `init` was called with `DC_DISABLE` set: checkpoints are no-ops.
    pub disabled: AtomicBool,
    /// The main stack's image range `[lo, hi)`.
    pub stack_lo: AtomicUsize,
    /// See `stack_lo`.
    pub stack_hi: AtomicUsize,
    /// Lowest live main-stack address of the outermost signal handler running (the
    /// interrupted code's stack pointer minus its red zone).
    pub handler_low: AtomicUsize,
    /// Syscall User Dispatch's selector byte ([`crate::sud`]): `ALLOW` while Discount
    /// Checking's own code runs, `BLOCK` while the program does. The kernel reads it at
    /// every system call made outside Discount Checking's gate.
    pub sud_selector: AtomicU8,
    /// Syscall User Dispatch is on in this process.
    pub sud_on: AtomicBool,
    /// Two-phase commit ([`crate::twopc`]): the socket to the coordinator (-1: this
    /// process is no member of a computation).
    pub tp_fd: AtomicI32,
    /// This process's random boot id (non-zero once a member).
    pub tp_boot: AtomicU64,
    /// The member index.
    pub tp_member: AtomicU32,
    /// The incarnation of the computation this process joined (0: not joined yet).
    pub tp_inc: AtomicU64,
    /// The epoch of the round whose checkpoint is being taken (0: none).
    pub tp_serving: AtomicU64,
    /// Negative controls only (`DC_TEST_UNCOORDINATED=1`): sends on sockets are not
    /// visible although no coordinator commits the receivers with the sender.
    pub sends_internal_for_tests: AtomicBool,
    /// This member has stream sockets (the coordinator was told: [`crate::twopc`]'s
    /// `Streams`, or the flag of its join after a recovery that rebuilt some).
    pub tp_streams: AtomicBool,
    /// Negative controls only (`DC_TEST_NO_DRAIN=1`): a round does not drain the stream
    /// sockets into the checkpoint.
    pub no_drain_for_tests: AtomicBool,
    /// Connections a listener's recovery accepted that matched no recorded accepted socket
    /// (connects redone by peers that the listener had not accepted at the checkpoint):
    /// `(listener fd + 1) << 32 | connection fd`, 0 for an empty slot; the program's next
    /// `accept` on that listener takes them first (`intercept::net`).
    pub st_pending: [AtomicU64; ST_PENDING],
}

/// Slots of [`Vol::st_pending`].
pub const ST_PENDING: usize = 16;

/// The one instance.
pub static VOL: Vol = Vol {
    internal: AtomicUsize::new(0),
    valloc: Arena::empty(),
    in_dc: AtomicU32::new(0),
    pending: AtomicBool::new(false),
    active: AtomicBool::new(false),
    busy: AtomicBool::new(false),
    rt: AtomicPtr::new(std::ptr::null_mut()),
    trace_fd: AtomicI32::new(-1),
    log_fd: AtomicI32::new(-1),
    protocol: AtomicU8::new(0),
    timer_sig: AtomicI32::new(0),
    vreserving: AtomicBool::new(false),
    disabled: AtomicBool::new(false),
    stack_lo: AtomicUsize::new(0),
    stack_hi: AtomicUsize::new(0),
    handler_low: AtomicUsize::new(usize::MAX),
    sud_selector: AtomicU8::new(0),
    sud_on: AtomicBool::new(false),
    tp_fd: AtomicI32::new(-1),
    tp_boot: AtomicU64::new(0),
    tp_member: AtomicU32::new(0),
    tp_inc: AtomicU64::new(0),
    tp_serving: AtomicU64::new(0),
    sends_internal_for_tests: AtomicBool::new(false),
    tp_streams: AtomicBool::new(false),
    no_drain_for_tests: AtomicBool::new(false),
    st_pending: [const { AtomicU64::new(0) }; ST_PENDING],
};

/// For a signal handler that interrupted code whose stack pointer was `rsp`: the lowest
/// live main-stack address to checkpoint. When `rsp` is on the main stack (the outermost
/// handler), that is `rsp` minus the 128-byte red zone, remembered for nested handlers;
/// when it is not (a handler interrupted a handler on the alternate stack), the
/// outermost handler's value.
pub fn handler_low_hint(rsp: usize) -> usize {
    let v = get();
    let (lo, hi) = (
        v.stack_lo.load(std::sync::atomic::Ordering::Relaxed),
        v.stack_hi.load(std::sync::atomic::Ordering::Relaxed),
    );
    if rsp > lo && rsp <= hi {
        let low = rsp.saturating_sub(128);
        v.handler_low
            .store(low, std::sync::atomic::Ordering::Relaxed);
        low
    } else {
        v.handler_low.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The volatile state.
#[inline(always)]
pub fn get() -> &'static Vol {
    &VOL
}

/// `[start, end)` of the volatile page(s), excluded from checkpoints.
pub fn range() -> (usize, usize) {
    let s = &VOL as *const Vol as usize;
    (s, s + std::mem::size_of::<Vol>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn whole_pages() {
        let (s, e) = super::range();
        assert_eq!(s % 4096, 0);
        assert_eq!((e - s) % 4096, 0);
        assert!(e > s);
    }
}
