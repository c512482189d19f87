// SPDX-License-Identifier: GPL-2.0

//! The arena's kernel mapping (read-only unless protection is off), the protection
//! window's own page-table entries, and the TLB flush on every CPU that protecting the
//! mapping needs (Rio, section 3.1: the file cache is writable only through the window).

use kernel::bindings;
use kernel::prelude::*;

use super::kmap::{
    invlpg, leaf, supported_pte_mask, PTE_ACCESSED, PTE_DIRTY, PTE_NX, PTE_PFN_MASK, PTE_PRESENT,
    PTE_RW,
};

/// The kernel mapping of the arena: `ioremap_cache` (write-back, like RAM), made read-only
/// unless protection is off. It needs no `struct page` for the arena's frames, so it works
/// in a crash kernel too, where the arena lies outside any memory section the kernel owns.
/// The entries may be 4 KiB, 2 MiB or 1 GiB: the window never touches them.
pub(crate) struct ArenaMapping {
    addr: core::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: a plain kernel address range; usable and unmappable from any thread.
unsafe impl Send for ArenaMapping {}
// SAFETY: it hands out its address only; access to the memory is synchronised by its users.
unsafe impl Sync for ArenaMapping {}

impl ArenaMapping {
    /// Maps `[phys, phys + len)`, read-only unless `writable`.
    pub(crate) fn map(phys: u64, len: usize, writable: bool) -> Result<Self> {
        // SAFETY: the range was validated as reserved, non-RAM memory; ioremap_cache maps it
        // write-back at a fresh kernel address.
        let addr = unsafe { bindings::ioremap_cache(phys, len) };
        let addr = core::ptr::NonNull::new(addr.cast::<u8>()).ok_or(ENOMEM)?;
        let m = Self { addr, len };
        if !writable {
            m.write_protect()?;
        }
        Ok(m)
    }

    /// Clears the RW bit of every leaf entry of the mapping, then flushes the TLBs of every
    /// CPU. `ioremap_cache` made the mapping writable, and although nothing of ours has
    /// used it yet, any CPU may have loaded a (writable) translation of it speculatively:
    /// a local `invlpg` would leave those, and a wild store on that CPU would go through.
    fn write_protect(&self) -> Result {
        let start = self.addr.as_ptr() as usize;
        let mut va = start;
        while va < start + self.len {
            let (pte, size) = leaf(va).ok_or(EFAULT)?;
            // SAFETY: `pte` is the leaf entry (at any level the RW bit is bit 1) mapping `va`
            // in our own mapping, which nothing else uses yet.
            unsafe {
                let v = core::ptr::read_volatile(pte).pte;
                core::ptr::write_volatile(pte, bindings::pte_t { pte: v & !PTE_RW });
            }
            va = (va & !(size - 1)) + size;
        }
        flush_tlb_range_all_cpus(start, self.len);
        Ok(())
    }

    /// Start of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for ArenaMapping {
    fn drop(&mut self) {
        // SAFETY: `addr` came from ioremap_cache and is unmapped once, here.
        unsafe { bindings::iounmap(self.addr.as_ptr().cast()) };
    }
}

/// One 4 KiB kernel page-table entry that a window slot owns exclusively.
pub(crate) struct SlotPte {
    va: usize,
    pte: *mut kernel::bindings::pte_t,
    closed: usize,
    open_flags: usize,
}

// SAFETY: The PTE is only touched under the owning slot's spinlock.
unsafe impl Send for SlotPte {}

impl SlotPte {
    /// Finds the PTE of `va`, which must be mapped with a 4 KiB page by `VMapping`.
    pub(crate) fn new(va: usize) -> Result<Self> {
        let mut level: core::ffi::c_uint = 0;
        // SAFETY: lookup_address only walks the kernel page tables for `va`.
        let pte = unsafe { kernel::bindings::lookup_address(va, &mut level) };
        if pte.is_null() || level != kernel::bindings::pg_level_PG_LEVEL_4K {
            return Err(EFAULT);
        }
        // SAFETY: `pte` points to the live PTE of `va`, which stays mapped (by the window's
        // VMapping) for as long as this SlotPte exists.
        let closed = unsafe { core::ptr::read_volatile(pte) }.pte;
        let open_flags =
            (PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY | PTE_NX) & supported_pte_mask();
        Ok(Self {
            va,
            pte,
            closed,
            open_flags,
        })
    }

    /// Points the slot at physical frame `pfn`, writable, and returns its address.
    ///
    /// # Safety
    ///
    /// The caller holds the slot exclusively with preemption disabled until [`Self::close`],
    /// and `pfn` is an arena frame.
    pub(crate) unsafe fn open(&self, pfn: u64) -> *mut u8 {
        let v = ((pfn as usize) << 12 & PTE_PFN_MASK) | self.open_flags;
        // SAFETY: `self.pte` is this slot's PTE (see `new`) and the caller holds it
        // exclusively.
        unsafe { core::ptr::write_volatile(self.pte, kernel::bindings::pte_t { pte: v }) };
        // `close` flushed the entry this CPU used, but this CPU's TLB may still hold one it
        // loaded speculatively while another CPU had the slot open on a different frame
        // (x86 may cache any translation it can walk to, and `close` flushes only the CPU
        // that closes). Writing through such an entry would hit that other frame: a lost
        // write here and silent damage there. So flush before use, too.
        invlpg(self.va);
        self.va as *mut u8
    }

    /// Restores the read-only dummy entry and flushes it from this CPU's TLB.
    ///
    /// # Safety
    ///
    /// As for [`Self::open`]: called on the same CPU, still holding the slot.
    pub(crate) unsafe fn close(&self) {
        // SAFETY: `self.pte` is this slot's own PTE (found in `new`, kept mapped by the
        // window's VMapping), and the caller still holds the slot exclusively with
        // preemption off, so no other CPU or task writes it meanwhile; `closed` is the
        // read-only dummy entry read in `new`.
        unsafe {
            core::ptr::write_volatile(self.pte, kernel::bindings::pte_t { pte: self.closed })
        };
        invlpg(self.va);
    }
}

/// A kernel virtual range whose translations every CPU must drop.
struct FlushRange {
    start: usize,
    len: usize,
}

unsafe extern "C" fn flush_range_local(info: *mut core::ffi::c_void) {
    // SAFETY: `info` is the `FlushRange` that `flush_tlb_range_all_cpus` passed, which
    // lives until every CPU has run this function (the call waits).
    let r = unsafe { &*info.cast::<FlushRange>() };
    let mut va = r.start;
    while va < r.start + r.len {
        let size = leaf(va).map_or(1 << 12, |(_, size)| size);
        invlpg(va);
        va = (va & !(size - 1)) + size;
    }
}

/// Drops every CPU's translations of `[start, start + len)` (one `invlpg` per leaf entry on
/// each online CPU), and waits until all have done it. (`__flush_tlb_all` would do, but
/// 7.3 exports it to KVM only.)
fn flush_tlb_range_all_cpus(start: usize, len: usize) {
    let range = FlushRange { start, len };
    // SAFETY: `flush_range_local` has the `smp_call_func_t` signature and only reads the
    // `FlushRange` it is given, which outlives the call because `wait` is true (the call
    // returns after every CPU ran the function); no condition function;
    // `__cpu_online_mask` is the kernel's own mask of online CPUs, which lives forever.
    // Called from process context (module load), as the function requires.
    unsafe {
        bindings::on_each_cpu_cond_mask(
            None,
            Some(flush_range_local),
            core::ptr::from_ref(&range).cast_mut().cast(),
            true,
            core::ptr::addr_of!(bindings::__cpu_online_mask),
        )
    };
}
