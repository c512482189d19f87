//! An [`Arena`]: a bump pointer plus segregated free lists (one singly linked list per
//! size class) over a fixed range of memory, all of its state plain memory (see
//! [`crate::alloc`], which picks the arena and is the global allocator and `malloc`).
//!
//! Every block carries a 16-byte header (size class, offset from the block start for
//! over-aligned requests, magic), so C's `free(p)` needs no size. Freed blocks are reused
//! for the same class only; nothing is coalesced (simple, O(1), some fragmentation).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) const HDR: usize = 16;
const MAGIC: u32 = 0xDC0A_110C;
const SMALL_MAX: usize = 1024;
pub(crate) const NCLASS: usize = 64 + 4 * 40;

/// Block size of class `c` (header included).
pub(crate) const fn class_size(c: usize) -> usize {
    if c < 64 {
        (c + 1) * 16
    } else {
        let b = 10 + (c - 64) / 4;
        let k = (c - 64) % 4 + 1;
        (1usize << b) + k * (1usize << (b - 2))
    }
}

/// Smallest class whose block holds `need` bytes.
pub(crate) fn class_of(need: usize) -> Option<usize> {
    if need <= SMALL_MAX {
        return Some(need.max(1).div_ceil(16) - 1);
    }
    // need > 1024: b = floor(log2(need - 1)), block sizes 2^b * (1 + k/4), k = 1..=4.
    let b = (usize::BITS - 1 - (need - 1).leading_zeros()) as usize;
    let quarter = 1usize << (b - 2);
    let k = (need - (1usize << b)).div_ceil(quarter).max(1);
    let c = 64 + (b - 10) * 4 + (k - 1);
    (c < NCLASS).then_some(c)
}

#[repr(C)]
struct Header {
    class: u32,
    offset: u32,
    magic: u32,
    _pad: u32,
}

/// A bump-plus-free-lists allocator over `[base, end)`. All state is plain memory.
#[repr(C)]
pub struct Arena {
    lock: AtomicBool,
    inner: UnsafeCell<ArenaInner>,
}

#[repr(C)]
struct ArenaInner {
    base: usize,
    end: usize,
    bump: usize,
    live: usize,
    free: [usize; NCLASS],
}

// SAFETY: all access to `inner` happens with `lock` held (see `with`).
unsafe impl Sync for Arena {}

impl Arena {
    /// An arena with no memory yet.
    pub const fn empty() -> Arena {
        Arena {
            lock: AtomicBool::new(false),
            inner: UnsafeCell::new(ArenaInner {
                base: 0,
                end: 0,
                bump: 0,
                live: 0,
                free: [0; NCLASS],
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut ArenaInner) -> R) -> R {
        let mut spins = 0u32;
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins > 1000 {
                // SAFETY: sched_yield has no preconditions.
                unsafe { crate::sys::sc(libc::SYS_sched_yield, 0, 0, 0) };
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: the lock gives exclusive access to inner.
        let r = f(unsafe { &mut *self.inner.get() });
        self.lock.store(false, Ordering::Release);
        r
    }

    /// Gives the arena `[base, end)` (page aligned, readable and writable, zero).
    pub fn set_region(&self, base: usize, end: usize) {
        self.with(|a| {
            a.base = base;
            a.end = end;
            a.bump = base;
            a.live = 0;
            a.free = [0; NCLASS];
        })
    }

    /// Gives the arena `[base, end)` unless it has memory already (an arena two callers
    /// may race to set up: the boot arena).
    pub(crate) fn set_region_once(&self, base: usize, end: usize) {
        self.with(|a| {
            if a.base == 0 {
                a.base = base;
                a.end = end;
                a.bump = base;
            }
        })
    }

    /// Whether the arena has memory.
    pub fn is_set(&self) -> bool {
        // SAFETY: a racy read of a word that only changes in set_region; used as a hint.
        unsafe { (*self.inner.get()).base != 0 }
    }

    /// Whether `p` lies in the arena's region.
    #[inline]
    pub fn contains(&self, p: usize) -> bool {
        // SAFETY: base/end only change in set_region, before the arena is used.
        let a = unsafe { &*self.inner.get() };
        p >= a.base && p < a.end
    }

    /// `(base, high-water mark, end)`: memory above the mark has never been handed out.
    pub fn bounds(&self) -> (usize, usize, usize) {
        self.with(|a| (a.base, a.bump, a.end))
    }

    /// The high-water mark read without the lock (for a checkpoint taken by a signal
    /// that may have interrupted an allocation holding the lock; single-threaded).
    pub fn hwm_unlocked(&self) -> usize {
        // SAFETY: a racy read of one word; see the doc comment.
        unsafe { std::ptr::read_volatile(&(*self.inner.get()).bump) }
    }

    /// Bytes in live blocks (headers and class rounding included).
    pub fn live_bytes(&self) -> usize {
        self.with(|a| a.live)
    }

    /// Allocates `size` bytes aligned to `align` (a power of two). Null when full.
    pub fn alloc(&self, size: usize, align: usize) -> *mut u8 {
        let extra = if align > HDR { align } else { 0 };
        let Some(need) = size.checked_add(HDR + extra) else {
            return std::ptr::null_mut();
        };
        let Some(c) = class_of(need) else {
            return std::ptr::null_mut();
        };
        let bsize = class_size(c);
        let block = self.with(|a| {
            let head = a.free[c];
            if head != 0 {
                // SAFETY: free blocks of this arena hold the next link in their first word.
                a.free[c] = unsafe { *(head as *const usize) };
                a.live += bsize;
                return head;
            }
            if a.base == 0 || a.end - a.bump < bsize {
                return 0;
            }
            let b = a.bump;
            a.bump += bsize;
            a.live += bsize;
            b
        });
        if block == 0 {
            return std::ptr::null_mut();
        }
        let a_ = align.max(HDR);
        let user = (block + HDR + a_ - 1) & !(a_ - 1);
        let h = (user - HDR) as *mut Header;
        // SAFETY: user - HDR >= block and user + size <= block + bsize (need accounts for
        // the header and the alignment slack), so the header lies inside our block.
        unsafe {
            h.write(Header {
                class: c as u32,
                offset: (user - block) as u32,
                magic: MAGIC,
                _pad: 0,
            })
        };
        user as *mut u8
    }

    /// Returns the block holding `p` (from this arena) to its free list.
    ///
    /// # Safety
    /// `p` must have been returned by `alloc` of this arena and not freed since.
    pub unsafe fn free(&self, p: *mut u8) {
        // SAFETY: caller contract: a live block's header precedes it.
        let (c, block) = unsafe {
            let h = &*((p as usize - HDR) as *const Header);
            if h.magic != MAGIC || h.class as usize >= NCLASS {
                crate::sys::fatal_to(2, "free() of a pointer that is not a live heap block");
            }
            (h.class as usize, p as usize - h.offset as usize)
        };
        // SAFETY: invalidate the magic so that a double free is caught above.
        unsafe { (*((p as usize - HDR) as *mut Header)).magic = 0 };
        self.with(|a| {
            // SAFETY: the block is ours and free now; its first word becomes the link.
            unsafe { *(block as *mut usize) = a.free[c] };
            a.free[c] = block;
            a.live -= class_size(c);
        });
    }
}

/// Usable bytes of the block at `p` (any arena).
///
/// # Safety
/// `p` must be a live block returned by this module.
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: caller contract.
    let h = unsafe { &*((p as usize - HDR) as *const Header) };
    class_size(h.class as usize) - h.offset as usize
}
