// SPDX-License-Identifier: GPL-2.0

//! User mappings: counting them (`vm_operations_struct` open and close, which the kernel's
//! `VmaNew` does not abstract yet), and mapping arena pages into them.
//!
//! The kernel calls `open` for every new copy of a mapping (`fork`, a split by a partial
//! `munmap` or `mprotect`) and `close` for every one that goes (including the one that
//! failed to be set up after our `mmap` returned), with `mmap_lock` held. So a counter
//! that `mmap` raises and `close` lowers counts live VMAs exactly.

use kernel::bindings;
use kernel::mm::virt::{flags as vm_flags, VmaNew, VmaRef};

/// What a mapping's owner is told when a copy of a mapping appears or one goes away.
///
/// Both run with `mmap_lock` held, in process context: they may sleep and take the
/// store's mutex (which is below `mmap_lock` in the lock order, see `crate::service`), but
/// must not touch user memory.
pub(crate) trait MapTracker: Sync {
    /// A new copy of a mapping (writable if it may ever be written).
    fn vma_opened(&self, writable: bool);
    /// A mapping went away.
    fn vma_closed(&self, writable: bool);
}

struct Ops<T>(core::marker::PhantomData<T>);

impl<T: MapTracker> Ops<T> {
    const OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        open: Some(vma_open::<T>),
        close: Some(vma_close::<T>),
        // SAFETY: every other field of `vm_operations_struct` is an `Option` of a function
        // pointer or a plain pointer, for which all-zero is `None`/null: "not provided".
        ..unsafe { core::mem::zeroed() }
    };
}

/// Whether `vma` may ever be written (`VM_MAYWRITE`: `mprotect` can make it writable).
///
/// # Safety
///
/// `vma` is a live VMA and the caller holds its mm's `mmap_lock` (as the kernel does around
/// `vm_ops` calls).
unsafe fn may_write(vma: *mut bindings::vm_area_struct) -> bool {
    // SAFETY: per the contract the VMA is live and the mmap lock is held, which is what
    // `VmaRef::from_raw` requires.
    let vma = unsafe { VmaRef::from_raw(vma) };
    vma.flags() & vm_flags::MAYWRITE != 0
}

/// # Safety
///
/// Called by the kernel as `vm_ops->open` of a VMA that [`track_vma`] set up.
unsafe extern "C" fn vma_open<T: MapTracker>(vma: *mut bindings::vm_area_struct) {
    // SAFETY: the kernel calls `open` on a live VMA with `mmap_lock` held; its
    // `vm_private_data` was copied from the VMA `track_vma` set up, so it points to the
    // tracker, which outlives the VMA (see `track_vma`).
    unsafe {
        let tracker = &*(*vma).vm_private_data.cast::<T>();
        tracker.vma_opened(may_write(vma));
    }
}

/// # Safety
///
/// Called by the kernel as `vm_ops->close` of a VMA that [`track_vma`] set up.
unsafe extern "C" fn vma_close<T: MapTracker>(vma: *mut bindings::vm_area_struct) {
    // SAFETY: the kernel calls `close` on a live VMA with `mmap_lock` held (what
    // `may_write` needs), before it drops the VMA's file reference; `vm_private_data` was
    // set by `track_vma` (or copied by `open` from such a VMA) to the tracker, which the
    // file keeps alive, so the reference is valid for the call.
    unsafe {
        let tracker = &*(*vma).vm_private_data.cast::<T>();
        tracker.vma_closed(may_write(vma));
    }
}

/// Makes the kernel report every copy and every end of the mapping `vma` (being set up by
/// `mmap`) to `tracker`. Call it last in `mmap`, once nothing can fail any more; the
/// caller counts this first mapping itself.
///
/// `tracker` must live at least as long as the VMA: the state of the open file the VMA
/// maps is such a thing, because every VMA holds a reference on its file, released after
/// `close`.
pub(crate) fn track_vma<T: MapTracker>(vma: &VmaNew, tracker: &T) {
    let ops: &'static bindings::vm_operations_struct = &Ops::<T>::OPS;
    // SAFETY: `vma` is the VMA under construction in our `mmap` handler, which the caller
    // (the kernel, holding `mmap_lock` for writing) lets the driver set up: `vm_ops` and
    // `vm_private_data` are the driver's fields. `ops` is a promoted constant, so it lives
    // forever; `tracker` outlives the VMA (see above).
    unsafe {
        let raw = vma.as_ptr();
        (*raw).vm_ops = ops;
        (*raw).vm_private_data = core::ptr::from_ref(tracker).cast_mut().cast();
    }
}

/// The page offset (`vm_pgoff`) an mmap asked for.
pub(crate) fn vma_pgoff(vma: &kernel::mm::virt::VmaNew) -> usize {
    // SAFETY: `vma` is a live VMA under construction; reading a plain field is fine.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}

/// Maps arena frame `pfn` at user address `addr` of `vma` (in the mmap handler).
pub(crate) fn remap_page(
    vma: &kernel::mm::virt::VmaNew,
    addr: usize,
    pfn: u64,
) -> kernel::error::Result {
    // SAFETY: `vma` is live and being set up by mmap (the caller holds the mmap lock);
    // `vm_page_prot` is a plain field.
    let prot = unsafe { (*vma.as_ptr()).vm_page_prot };
    // SAFETY: `addr..addr + 4096` lies inside `vma` (checked by the caller), and `pfn` is an
    // arena frame: reserved memory that no allocator owns, which stays mapped in the user's
    // page tables only for as long as the VMA (and so the file, and so the module) lives.
    kernel::error::to_result(unsafe {
        bindings::remap_pfn_range(vma.as_ptr(), addr, pfn as usize, 4096, prot)
    })
}
