// SPDX-License-Identifier: GPL-2.0

//! x86-64 kernel page tables and `vmap` mappings: the entry bits and protections, the leaf
//! lookup, the local TLB flush, and [`VMapping`]. Shared by rio.ko (as `sys::kmap`) and by
//! riofault.ko (which includes this file by path): one copy of the page-table walk and of
//! the protection bits for both modules. Not every item is used by both.

use kernel::prelude::*;

mod ffi {
    use kernel::bindings::pgprot_t;
    extern "C" {
        // mm/vmalloc.c, EXPORT_SYMBOL(vmap) / EXPORT_SYMBOL(vunmap); not in the generated
        // bindings because rust/bindings_helper.h does not include <linux/vmalloc.h>'s
        // vmap declarations.
        pub(super) fn vmap(
            // `struct page **`; declared as `void **` because bindgen's `page` is not
            // FFI-safe by value (it is only ever used through pointers here).
            pages: *mut *mut core::ffi::c_void,
            count: core::ffi::c_uint,
            flags: core::ffi::c_ulong,
            prot: pgprot_t,
        ) -> *mut core::ffi::c_void;
        pub(super) fn vunmap(addr: *const core::ffi::c_void);
    }
}

/// `VM_MAP` from include/linux/vmalloc.h.
pub(crate) const VM_MAP: core::ffi::c_ulong = 0x4;

// x86-64 page-table bits (arch/x86/include/asm/pgtable_types.h).
pub(crate) const PTE_PRESENT: usize = 1 << 0;
pub(crate) const PTE_RW: usize = 1 << 1;
pub(crate) const PTE_ACCESSED: usize = 1 << 5;
pub(crate) const PTE_DIRTY: usize = 1 << 6;
pub(crate) const PTE_GLOBAL: usize = 1 << 8;
pub(crate) const PTE_NX: usize = 1 << 63;
pub(crate) const PTE_PFN_MASK: usize = 0x000f_ffff_ffff_f000;

/// `PAGE_KERNEL_RO` or `PAGE_KERNEL`, before `__supported_pte_mask` (vmap applies it).
/// Dirty goes only with RW: Dirty without RW is how x86 marks shadow-stack pages.
pub(crate) fn kernel_prot(writable: bool) -> kernel::bindings::pgprot_t {
    let mut v = PTE_PRESENT | PTE_ACCESSED | PTE_GLOBAL | PTE_NX;
    if writable {
        v |= PTE_RW | PTE_DIRTY;
    }
    kernel::bindings::pgprot_t { pgprot: v }
}

/// The PTE bits this CPU supports (NX only where the CPU has it).
pub(crate) fn supported_pte_mask() -> usize {
    // SAFETY: `__supported_pte_mask` is written once during early boot and only read after.
    unsafe { kernel::bindings::__supported_pte_mask }
}

/// The leaf page-table entry that maps kernel address `va`, and the size it maps (4 KiB,
/// 2 MiB or 1 GiB); `None` if `va` is unmapped or mapped at another level.
pub(crate) fn leaf(va: usize) -> Option<(*mut kernel::bindings::pte_t, usize)> {
    let mut level: core::ffi::c_uint = 0;
    // SAFETY: lookup_address only walks the kernel page tables for `va` (no locks, no
    // allocation: usable in IPI context) and writes the level to our local.
    let pte = unsafe { kernel::bindings::lookup_address(va, &mut level) };
    if pte.is_null() {
        return None;
    }
    let size = match level {
        l if l == kernel::bindings::pg_level_PG_LEVEL_4K => 1 << 12,
        l if l == kernel::bindings::pg_level_PG_LEVEL_2M => 1 << 21,
        l if l == kernel::bindings::pg_level_PG_LEVEL_1G => 1 << 30,
        _ => return None,
    };
    Some((pte, size))
}

/// Flushes one page from the local TLB.
pub(crate) fn invlpg(va: usize) {
    // SAFETY: `invlpg` only drops a TLB entry of this CPU; it has no other effect on memory.
    unsafe { core::arch::asm!("invlpg [{0}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// A virtually contiguous kernel mapping of pages (`vmap`), unmapped on drop.
/// Always 4 KiB page-table entries: the protection window relies on that.
pub(crate) struct VMapping {
    addr: core::ptr::NonNull<u8>,
}

// SAFETY: The mapping is a plain kernel address range; it can be used and unmapped from any
// thread.
unsafe impl Send for VMapping {}
// SAFETY: `VMapping` hands out its address only; synchronising access to the memory is the
// users' job.
unsafe impl Sync for VMapping {}

impl VMapping {
    fn map(frames: &mut KVec<*mut kernel::bindings::page>, writable: bool) -> Result<Self> {
        let count = u32::try_from(frames.len()).map_err(|_| EINVAL)?;
        // SAFETY: `frames` holds `count` valid `struct page` pointers; vmap only reads the
        // array and maps each page at a fresh vmalloc-area address with 4 KiB PTEs.
        let addr = unsafe {
            ffi::vmap(
                frames.as_mut_ptr().cast(),
                count,
                VM_MAP,
                kernel_prot(writable),
            )
        };
        let addr = core::ptr::NonNull::new(addr.cast::<u8>()).ok_or(ENOMEM)?;
        Ok(Self { addr })
    }

    /// Maps one page `count` times, read-only (window slots start out this way).
    pub(crate) fn map_repeated(page: &kernel::page::Page, count: usize) -> Result<Self> {
        let mut frames = KVec::with_capacity(count, GFP_KERNEL)?;
        for _ in 0..count {
            frames.push(page.as_ptr(), GFP_KERNEL)?;
        }
        Self::map(&mut frames, false)
    }

    /// Start of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }
}

impl Drop for VMapping {
    fn drop(&mut self) {
        // SAFETY: `addr` came from `vmap` and is unmapped exactly once, here.
        unsafe { ffi::vunmap(self.addr.as_ptr().cast()) };
    }
}

impl VMapping {
    /// A writable alias of one frame of System RAM, `pfn`, whatever its kernel mapping is
    /// (kernel text is mapped read-only): the fault injector writes through it.
    ///
    /// # Safety
    ///
    /// `pfn` is a frame of System RAM (it has a `struct page` in the vmemmap).
    #[allow(dead_code, reason = "riofault.ko's: rio.ko compiles this file too")]
    pub(crate) unsafe fn alias_of_ram_frame(pfn: usize) -> Result<Self> {
        // SAFETY: reading `vmemmap_base`, written once during early boot; the caller
        // promises that `pfn` has a `struct page`, which lives at vmemmap_base + pfn.
        let page = unsafe {
            (kernel::bindings::vmemmap_base as *mut kernel::bindings::page).wrapping_add(pfn)
        };
        let mut frames = KVec::with_capacity(1, GFP_KERNEL)?;
        frames.push(page, GFP_KERNEL)?;
        Self::map(&mut frames, true)
    }
}
