//! The persistent heap: one allocator behind both Rust's global allocator and C's `malloc`.
//!
//! An [`Arena`] is a bump pointer plus segregated free lists (one singly linked list per
//! size class) over a fixed range of memory. All of its state is ordinary memory: the
//! struct itself lives in a static, the free-list links inside the free blocks. So when the
//! whole address space is rolled back to a checkpoint, the allocator is rolled back with it
//! and needs no transactions or logging of its own (unlike `vista_malloc`, which has to be
//! transactional because Vista only rolls back what was logged).
//!
//! Three arenas, chosen by address on `free` and by state on `malloc`:
//!
//! * `BOOT`: a 1 MiB buffer in `.bss`, used before `init` (the Rust runtime and libc
//!   allocate before `main`). `.bss` is checkpointed, so these blocks survive recovery.
//! * `HEAP`: the persistent heap region at [`HEAP_BASE`], checkpointed, used after `init`.
//! * `VOLATILE`: anonymous memory that is never checkpointed, used for Discount Checking's
//!   own bookkeeping (Vista's engine objects), which must *not* be rolled back, and as an
//!   overflow when `BOOT` fills up before `init`.
//!
//! Every block carries a 16-byte header (size class, offset from the block start for
//! over-aligned requests, magic), so C's `free(p)` needs no size. Freed blocks are reused
//! for the same class only; nothing is coalesced (simple, O(1), some fragmentation).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::arena::{usable_size, Arena};

/// Where the persistent heap lives (working memory; fixed so pointers stay valid).
pub const HEAP_BASE: usize = 0x2000_0000_0000;

#[repr(C, align(4096))]
struct BootBuf(UnsafeCell<[u8; BOOT_LEN]>);
// SAFETY: handed out only through BOOT's lock.
unsafe impl Sync for BootBuf {}
const BOOT_LEN: usize = 1 << 20;

static BOOT_BUF: BootBuf = BootBuf(UnsafeCell::new([0; BOOT_LEN]));
/// The pre-`init` arena (checkpointed, in `.bss`).
pub static BOOT: Arena = Arena::empty();
/// The persistent heap (checkpointed; its memory is the heap range).
pub static HEAP: Arena = Arena::empty();

static BOOT_READY: AtomicBool = AtomicBool::new(false);

fn boot() -> &'static Arena {
    if !BOOT_READY.load(Ordering::Acquire) {
        let b = BOOT_BUF.0.get() as usize;
        BOOT.set_region_once(b, b + BOOT_LEN);
        BOOT_READY.store(true, Ordering::Release);
    }
    &BOOT
}

/// Volatile arena size (virtual; pages are only used when touched).
const VOL_LEN: usize = 64 << 30;

fn volatile() -> Option<&'static Arena> {
    let v = &crate::vol::get().valloc;
    if !v.is_set() {
        // One reservation per process; concurrent first users spin.
        let flag = &crate::vol::get().vreserving;
        while flag.swap(true, Ordering::Acquire) {
            std::hint::spin_loop();
        }
        if !v.is_set() {
            match crate::sys::mmap_anon(0, VOL_LEN, false) {
                Ok(p) => v.set_region(p, p + VOL_LEN),
                Err(_) => {
                    flag.store(false, Ordering::Release);
                    return None;
                }
            }
        }
        flag.store(false, Ordering::Release);
    }
    Some(v)
}

/// Runs `f` with allocations routed to the volatile arena.
pub(crate) fn internal<R>(f: impl FnOnce() -> R) -> R {
    let v = &crate::vol::get().internal;
    v.fetch_add(1, Ordering::AcqRel);
    let r = f();
    v.fetch_sub(1, Ordering::AcqRel);
    r
}

/// The arena new allocations come from.
fn current() -> Option<&'static Arena> {
    if crate::vol::get().internal.load(Ordering::Acquire) > 0 {
        return volatile();
    }
    if HEAP.is_set() {
        return Some(&HEAP);
    }
    Some(boot())
}

/// Allocates from the current arena (falling back to the volatile one before `init`).
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    let Some(a) = current() else {
        return std::ptr::null_mut();
    };
    let p = a.alloc(size, align);
    if !p.is_null() {
        return p;
    }
    if std::ptr::eq(a, &BOOT) {
        if let Some(v) = volatile() {
            return v.alloc(size, align);
        }
    }
    std::ptr::null_mut()
}

/// Frees a block from any arena. Unknown pointers (not from us) are ignored.
///
/// # Safety
/// `p` is null or a live block from [`alloc`].
pub unsafe fn free(p: *mut u8) {
    if p.is_null() {
        return;
    }
    let a = p as usize;
    let arena = if HEAP.contains(a) {
        &HEAP
    } else if BOOT.contains(a) {
        &BOOT
    } else if crate::vol::get().valloc.contains(a) {
        &crate::vol::get().valloc
    } else {
        return;
    };
    // SAFETY: forwarded contract.
    unsafe { arena.free(p) }
}

/// Resizes a block (C `realloc` semantics, alignment `align`).
///
/// # Safety
/// `p` is null or a live block from [`alloc`].
pub unsafe fn realloc(p: *mut u8, size: usize, align: usize) -> *mut u8 {
    if p.is_null() {
        return alloc(size, align);
    }
    // SAFETY: caller contract.
    let old = unsafe { usable_size(p) };
    let mine = HEAP.contains(p as usize)
        || BOOT.contains(p as usize)
        || crate::vol::get().valloc.contains(p as usize);
    if mine && size <= old && size >= old / 2 && (p as usize) % align.max(1) == 0 {
        return p;
    }
    let q = alloc(size, align);
    if q.is_null() {
        return q;
    }
    let n = if mine { old.min(size) } else { size };
    // SAFETY: both blocks are at least n bytes (for foreign pointers we trust the caller's
    // size, the best we can do) and distinct.
    unsafe {
        std::ptr::copy_nonoverlapping(p, q, n);
        free(p);
    }
    q
}

/// The Rust global allocator (see the crate docs).
pub struct DcAlloc;

// SAFETY: alloc returns blocks of at least layout.size() bytes aligned to layout.align(),
// distinct while live; dealloc/realloc accept exactly those blocks.
unsafe impl GlobalAlloc for DcAlloc {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        alloc(l.size(), l.align())
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        // SAFETY: forwarded GlobalAlloc contract.
        unsafe { free(p) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = alloc(l.size(), l.align());
        if !p.is_null() {
            // SAFETY: p holds l.size() writable bytes.
            unsafe { std::ptr::write_bytes(p, 0, l.size()) };
        }
        p
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded GlobalAlloc contract.
        unsafe { realloc(p, new, l.align()) }
    }
}

#[cfg(feature = "global")]
#[global_allocator]
static GLOBAL: DcAlloc = DcAlloc;

/// The C allocation functions. Defining them in the executable interposes them for the
/// program, for libc (which calls `malloc` through its PLT so that it can be replaced) and,
/// in static builds, instead of glibc's own `malloc.o`.
#[cfg(feature = "global")]
mod c {
    use super::*;
    use libc::{c_int, c_void, size_t};

    #[no_mangle]
    pub extern "C" fn malloc(n: size_t) -> *mut c_void {
        let p = alloc(n, 16);
        if p.is_null() {
            crate::sys::set_errno(libc::ENOMEM);
        }
        p.cast()
    }

    /// # Safety
    /// C `free` contract.
    #[no_mangle]
    pub unsafe extern "C" fn free(p: *mut c_void) {
        // SAFETY: C contract: p is null or from our malloc family.
        unsafe { super::free(p.cast()) }
    }

    #[no_mangle]
    pub extern "C" fn calloc(n: size_t, m: size_t) -> *mut c_void {
        let Some(t) = n.checked_mul(m) else {
            crate::sys::set_errno(libc::ENOMEM);
            return std::ptr::null_mut();
        };
        let p = alloc(t, 16);
        if p.is_null() {
            crate::sys::set_errno(libc::ENOMEM);
        } else {
            // SAFETY: p holds t writable bytes.
            unsafe { std::ptr::write_bytes(p, 0, t) };
        }
        p.cast()
    }

    /// # Safety
    /// C `realloc` contract.
    #[no_mangle]
    pub unsafe extern "C" fn realloc(p: *mut c_void, n: size_t) -> *mut c_void {
        if !p.is_null() && n == 0 {
            // SAFETY: C contract.
            unsafe { super::free(p.cast()) };
            return std::ptr::null_mut();
        }
        // SAFETY: C contract.
        let q = unsafe { super::realloc(p.cast(), n, 16) };
        if q.is_null() {
            crate::sys::set_errno(libc::ENOMEM);
        }
        q.cast()
    }

    /// # Safety
    /// C `reallocarray` contract.
    #[no_mangle]
    pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: size_t, m: size_t) -> *mut c_void {
        match n.checked_mul(m) {
            // SAFETY: C contract.
            Some(t) => unsafe { realloc(p, t) },
            None => {
                crate::sys::set_errno(libc::ENOMEM);
                std::ptr::null_mut()
            }
        }
    }

    fn aligned(align: size_t, n: size_t) -> *mut c_void {
        if !align.is_power_of_two() {
            crate::sys::set_errno(libc::EINVAL);
            return std::ptr::null_mut();
        }
        let p = alloc(n, align.max(16));
        if p.is_null() {
            crate::sys::set_errno(libc::ENOMEM);
        }
        p.cast()
    }

    #[no_mangle]
    pub extern "C" fn memalign(align: size_t, n: size_t) -> *mut c_void {
        aligned(align, n)
    }

    #[no_mangle]
    pub extern "C" fn aligned_alloc(align: size_t, n: size_t) -> *mut c_void {
        aligned(align, n)
    }

    /// # Safety
    /// C `posix_memalign` contract: `out` is writable.
    #[no_mangle]
    pub unsafe extern "C" fn posix_memalign(
        out: *mut *mut c_void,
        align: size_t,
        n: size_t,
    ) -> c_int {
        if !align.is_power_of_two() || align % std::mem::size_of::<usize>() != 0 {
            return libc::EINVAL;
        }
        let p = alloc(n, align.max(16));
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: C contract.
        unsafe { *out = p.cast() };
        0
    }

    #[no_mangle]
    pub extern "C" fn valloc(n: size_t) -> *mut c_void {
        aligned(4096, n)
    }

    #[no_mangle]
    pub extern "C" fn pvalloc(n: size_t) -> *mut c_void {
        aligned(4096, n.div_ceil(4096).max(1) * 4096)
    }

    /// # Safety
    /// `p` is null or a live block.
    #[no_mangle]
    pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> size_t {
        if p.is_null() {
            return 0;
        }
        // SAFETY: caller contract.
        unsafe { usable_size(p as *const u8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{class_of, class_size, NCLASS};

    #[test]
    fn classes_are_monotonic_and_fit() {
        let mut prev = 0;
        for c in 0..NCLASS {
            let s = class_size(c);
            assert!(s > prev, "class {c}");
            assert_eq!(s % 16, 0);
            prev = s;
        }
        for need in (1..5000).chain([1 << 20, (1 << 20) + 1, 3 << 30]) {
            let c = class_of(need).unwrap();
            assert!(class_size(c) >= need, "need {need}");
            if c > 0 {
                assert!(class_size(c - 1) < need, "need {need} not tight");
            }
        }
    }

    #[test]
    fn arena_alloc_free_reuse_align() {
        let len = 4 << 20;
        let base = crate::sys::mmap_anon(0, len, false).unwrap();
        let a = Arena::empty();
        a.set_region(base, base + len);
        let p = a.alloc(100, 8);
        let q = a.alloc(100, 8);
        assert_ne!(p, q);
        assert_eq!(p as usize % 16, 0);
        // SAFETY: p is live.
        unsafe { a.free(p) };
        let r = a.alloc(110, 8);
        assert_eq!(r, p, "freed block reused for the same class");
        for align in [32usize, 64, 4096] {
            let x = a.alloc(10, align);
            assert_eq!(x as usize % align, 0);
            // SAFETY: x is live.
            assert!(unsafe { usable_size(x) } >= 10);
            // SAFETY: x is live.
            unsafe { a.free(x) };
        }
        assert!(a.alloc(len, 8).is_null(), "too big");
        let (b, hwm, e) = a.bounds();
        assert!(b == base && hwm > base && e == base + len);
    }
}
