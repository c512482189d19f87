// SPDX-License-Identifier: GPL-2.0

//! The arena's kernel mapping and the protection window.
//!
//! With protection on, rio.ko maps the arena **read-only**: a wild store from anywhere in
//! the kernel faults instead of corrupting file data, and `memmap=` kept the range out of
//! the direct map, so there is no writable alias. Legitimate writes go through a *window*:
//! a slot of kernel virtual address space whose page-table entry is pointed, writable, at
//! the one arena frame being written, and pointed back at a read-only dummy page right
//! after the copy, with a local TLB flush ("each write changes the protection twice").
//!
//! Slots are taken under a spinlock, which disables preemption: a slot's writable entry is
//! only ever *used* on the CPU that opened it, which flushes it on close. Another CPU may
//! still hold a translation of the slot that it loaded speculatively while the slot pointed
//! elsewhere, so [`SlotPte::open`] flushes the local entry before use as well. With both
//! flushes no cross-CPU TLB shootdown is needed: a CPU only ever writes through a
//! translation it loaded after its own flush. (The kernel's `kmap_local` needs neither
//! flush, because its slots are per-CPU addresses; ours are shared by the CPUs.)
//!
//! The arena's bytes are written concurrently by user mappings and block devices, so every
//! access goes through [`Shared`]/[`SharedMut`] copies (see [`crate::shared`]), never a
//! Rust reference.
//!
//! With protection off (`protect=0`, for comparison runs) the arena mapping is writable and
//! writes go straight to it.

use kernel::new_spinlock;
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::atomic::{Atomic, Relaxed};
use kernel::sync::SpinLock;

use crate::format::PAGE_SIZE;
use crate::shared::{Shared, SharedMut};
use crate::sys::{ArenaMapping, SlotPte, VMapping};

/// Number of window slots: enough that CPUs rarely wait for one another.
const SLOTS: usize = 8;

/// One window slot.
struct Slot {
    pte: SlotPte,
}

/// The window: slots and the mapping that owns their page-table entries.
struct Window {
    slots: KVec<Pin<KBox<SpinLock<Slot>>>>,
    // Holds the slots' address range (and so their PTEs) alive; dropped after `slots`.
    _map: VMapping,
    _dummy: Page,
}

impl Window {
    fn new() -> Result<Self> {
        let dummy = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let map = VMapping::map_repeated(&dummy, SLOTS)?;
        let mut slots = KVec::with_capacity(SLOTS, GFP_KERNEL)?;
        for i in 0..SLOTS {
            let pte = SlotPte::new(map.as_ptr() as usize + i * PAGE_SIZE)?;
            slots.push(
                KBox::pin_init(new_spinlock!(Slot { pte }), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        Ok(Self {
            slots,
            _map: map,
            _dummy: dummy,
        })
    }

    /// Runs `f` on a writable view of frame `pfn`.
    fn with_page<R>(&self, pfn: u64, f: impl FnOnce(*mut u8) -> R) -> R {
        // Spread CPUs over the slots; the lock makes any choice correct.
        let hint = crate::sys::this_cpu() % SLOTS;
        let slot = self.slots[hint].lock();
        // SAFETY: we hold the slot's spinlock (so preemption is off and nobody else uses the
        // slot) until after `close`, and `pfn` is an arena frame (checked by the caller).
        let va = unsafe { slot.pte.open(pfn) };
        let r = f(va);
        // SAFETY: same CPU, same critical section as `open`.
        unsafe { slot.pte.close() };
        r
    }
}

/// Counters of the protection machinery.
pub(crate) struct ArenaStats {
    /// Windows opened (each one changes the protection twice).
    pub(crate) windows: Atomic<u64>,
}

/// The arena as the kernel sees it.
pub(crate) struct Arena {
    map: ArenaMapping,
    window: Option<Window>,
    phys: u64,
    pages: usize,
    pub(crate) stats: ArenaStats,
}

impl Arena {
    /// Maps `[phys, phys + size)`; read-only with a window if `protect`, else writable.
    pub(crate) fn map(phys: u64, size: u64, protect: bool) -> Result<Self> {
        let pages = usize::try_from(size / PAGE_SIZE as u64).map_err(|_| EINVAL)?;
        let map = ArenaMapping::map(phys, pages * PAGE_SIZE, !protect)?;
        let window = if protect { Some(Window::new()?) } else { None };
        Ok(Self {
            map,
            window,
            phys,
            pages,
            stats: ArenaStats {
                windows: Atomic::new(0),
            },
        })
    }

    /// Whether the mapping is write-protected.
    pub(crate) fn protected(&self) -> bool {
        self.window.is_some()
    }

    /// Physical frame number of the first arena page.
    pub(crate) fn first_pfn(&self) -> u64 {
        self.phys >> 12
    }

    /// A read-only view of arena page `page`. The bytes may change under the reader (user
    /// mappings and block devices write without the store's lock), so this is a [`Shared`]
    /// range to copy from, never a slice.
    pub(crate) fn page(&self, page: usize) -> Result<Shared> {
        check_page(page, self.pages)?;
        // SAFETY: the mapping covers `pages` pages (checked above) and lives as long as
        // `self`, which outlives every use of the view (callers copy and drop it at once).
        Ok(unsafe { Shared::new(self.map.as_ptr().add(page * PAGE_SIZE), PAGE_SIZE) })
    }

    /// Copies `dst.len()` bytes of page `page` from offset `off`.
    pub(crate) fn read(&self, page: usize, off: usize, dst: &mut [u8]) -> Result {
        self.page(page)?.read(off, dst)
    }

    /// Reads the aligned `u64` at `off` of page `page` with one load.
    pub(crate) fn read_u64(&self, page: usize, off: usize) -> Result<u64> {
        self.page(page)?.read_u64(off)
    }

    /// The only way to change arena memory: runs `f` on a writable view of page `page`,
    /// through the window when protected.
    pub(crate) fn write_page<R>(&self, page: usize, f: impl FnOnce(SharedMut) -> R) -> Result<R> {
        check_page(page, self.pages)?;
        Ok(match &self.window {
            Some(w) => {
                self.stats.windows.add(1, Relaxed);
                w.with_page(self.first_pfn() + page as u64, |va| {
                    // SAFETY: while `f` runs the window maps exactly this one frame at `va`,
                    // writable, for this CPU only (preemption is off under the slot's lock).
                    f(unsafe { SharedMut::new(va, PAGE_SIZE) })
                })
            }
            None => {
                // SAFETY: protection is off, so the mapping is writable; the page is in it
                // (checked above) and the mapping outlives the call.
                f(unsafe { SharedMut::new(self.map.as_ptr().add(page * PAGE_SIZE), PAGE_SIZE) })
            }
        })
    }

    /// Stores one aligned `u64` with a single write (registry entries are never torn).
    pub(crate) fn write_u64(&self, page: usize, offset: usize, value: u64) -> Result {
        self.write_page(page, |p| p.write_u64(offset, value))?
    }

    /// A wild store through the arena's own kernel mapping, as buggy kernel code would do.
    /// With protection on this faults (an oops); with it off, it corrupts the byte. Only the
    /// debug ioctl calls this, and only when `allow_wild_store=1`.
    pub(crate) fn wild_store(&self, offset: usize, value: u8) {
        if offset >= self.map.len() {
            return;
        }
        // SAFETY: deliberately unsafe in effect, not in memory safety: the address is inside
        // our own mapping. If it is read-only the CPU raises a page fault, which the kernel
        // turns into an oops; that is the point of the test.
        unsafe { core::ptr::write_volatile(self.map.as_ptr().add(offset), value) };
    }
}

fn check_page(page: usize, pages: usize) -> Result {
    if page >= pages {
        // Callers index with validated registry data; reaching here is a rio.ko bug.
        pr_err!(
            "internal error: arena page {} out of range ({} pages)\n",
            page,
            pages
        );
        return Err(EIO);
    }
    Ok(())
}
