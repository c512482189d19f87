// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers around the raw kernel calls rio.ko needs that the `kernel` crate does not
//! abstract yet. Every use of `kernel::bindings` in rio.ko lives under this module:
//! [`cred`] (who is calling), [`vma`] (tracking user mappings), and in this file the iomem
//! checks, kernel mappings and the window's PTEs, the backing block device, a kernel
//! thread, copies from and to user memory that never sleep, and block requests.

use kernel::bindings;
use kernel::prelude::*;

use crate::shared::{Shared, SharedMut};

mod cred;
pub(crate) mod kmap;
mod vma;
pub(crate) use cred::{caller, Caller};
pub(crate) use kmap::VMapping;
use kmap::{
    invlpg, leaf, supported_pte_mask, PTE_ACCESSED, PTE_DIRTY, PTE_NX, PTE_PFN_MASK, PTE_PRESENT,
    PTE_RW,
};
pub(crate) use vma::{track_vma, MapTracker};

/// How a physical range relates to the resources of one kind in the iomem tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// No byte of the range is in such a resource.
    Disjoint,
    /// Every byte of the range is in such resources.
    Within,
    /// Some bytes are, some are not (or the range crosses a hole).
    Mixed,
}

fn region(start: u64, size: u64, flags: u64, desc: u64) -> Overlap {
    let Ok(size) = usize::try_from(size) else {
        return Overlap::Mixed;
    };
    // SAFETY: `region_intersects` only walks the iomem resource tree under its own read
    // lock; it accepts any start, size, flags and descriptor values and dereferences nothing
    // of ours.
    let r = unsafe { bindings::region_intersects(start, size, flags as usize, desc as usize) };
    if r == bindings::REGION_DISJOINT as i32 {
        Overlap::Disjoint
    } else if r == bindings::REGION_INTERSECTS as i32 {
        Overlap::Within
    } else {
        Overlap::Mixed
    }
}

/// How `[start, start + size)` overlaps System RAM.
pub(crate) fn system_ram_overlap(start: u64, size: u64) -> Overlap {
    region(
        start,
        size,
        u64::from(bindings::IORESOURCE_SYSTEM_RAM),
        u64::from(bindings::IORES_DESC_NONE),
    )
}

/// How `[start, start + size)` overlaps firmware-reserved memory (`memmap=SIZE$ADDR`).
pub(crate) fn reserved_overlap(start: u64, size: u64) -> Overlap {
    region(
        start,
        size,
        u64::from(bindings::IORESOURCE_MEM),
        u64::from(bindings::IORES_DESC_RESERVED),
    )
}

// ---- kernel mappings of arena pages ---------------------------------------------------------

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

/// The CPU we are running on (a hint: it can change unless preemption is off).
pub(crate) fn this_cpu() -> usize {
    // SAFETY: reading the current CPU number has no preconditions.
    unsafe { kernel::bindings::raw_smp_processor_id() as usize }
}

/// Fills `buf` with random bytes.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    unsafe { kernel::bindings::get_random_bytes(buf.as_mut_ptr().cast(), buf.len()) };
}

// ---- user mappings ----------------------------------------------------------------------------

/// The page offset (`vm_pgoff`) an mmap asked for.
pub(crate) fn vma_pgoff(vma: &kernel::mm::virt::VmaNew) -> usize {
    // SAFETY: `vma` is a live VMA under construction; reading a plain field is fine.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}

/// Maps arena frame `pfn` at user address `addr` of `vma` (in the mmap handler).
pub(crate) fn remap_page(vma: &kernel::mm::virt::VmaNew, addr: usize, pfn: u64) -> Result {
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

// ---- fsync ------------------------------------------------------------------------------------

/// A copy of a miscdevice's file operations whose `fsync` returns at once (data written to
/// Rio is already durable), installed on the device after registration. The Rust
/// `MiscDevice` vtable has no `fsync`. Keep this alive until the device is deregistered.
pub(crate) struct FsyncFops {
    _ops: KBox<kernel::types::Opaque<bindings::file_operations>>,
}

// SAFETY: the table is written once in `install`, before the device can use it, and is only
// read afterwards (by the VFS, from any thread).
unsafe impl Send for FsyncFops {}
// SAFETY: shared references only reach the table through the VFS, which reads it; it is
// never written after `install`, so concurrent readers on any CPU are fine.
unsafe impl Sync for FsyncFops {}

impl FsyncFops {
    /// Installs it on `misc`. Keep the result until `misc` is dropped (deregistered).
    pub(crate) fn install<T: kernel::miscdevice::MiscDevice>(
        misc: &kernel::miscdevice::MiscDeviceRegistration<T>,
    ) -> Result<Self> {
        let misc = misc.as_raw();
        let ops = KBox::new(
            kernel::types::Opaque::<bindings::file_operations>::uninit(),
            GFP_KERNEL,
        )?;
        // SAFETY: `misc` is a registered miscdevice (a `MiscDeviceRegistration` is registered
        // for as long as it exists), so `fops` points to a valid table that
        // lives as long as the module); `ops` is fresh memory of the same type. The pointer
        // store is one aligned word, so a concurrent `misc_open` sees the old table or the
        // new one, both complete.
        unsafe {
            core::ptr::copy_nonoverlapping((*misc).fops, ops.get(), 1);
            (*ops.get()).fsync = Some(bindings::noop_fsync);
            core::ptr::write_volatile(
                core::ptr::addr_of_mut!((*misc).fops),
                ops.get().cast_const(),
            );
        }
        Ok(Self { _ops: ops })
    }
}

// ---- the backing block device -----------------------------------------------------------------

/// `BLK_OPEN_READ` and `BLK_OPEN_WRITE` from include/linux/blkdev.h (not in the bindings:
/// they are `__force` casts).
const BLK_OPEN_READ_WRITE: u32 = (1 << 0) | (1 << 1);
const SEEK_END: core::ffi::c_int = 2;

/// A block device opened exclusively for reading and writing; closed on drop. I/O goes
/// through the device's page cache (`kernel_read`/`kernel_write`) and [`Self::sync`] makes
/// it durable.
pub(crate) struct BlockFile {
    file: *mut bindings::file,
}

// SAFETY: a `struct file` may be used and released from any thread.
unsafe impl Send for BlockFile {}
// SAFETY: the VFS read/write paths used here are safe to call concurrently.
unsafe impl Sync for BlockFile {}

impl BlockFile {
    /// Opens device `major:minor`; `holder` identifies rio.ko as its exclusive user.
    pub(crate) fn open(major: u32, minor: u32, holder: *mut core::ffi::c_void) -> Result<Self> {
        if major >= 1 << 12 || minor >= 1 << 20 {
            return Err(EINVAL);
        }
        let dev = (major << 20) | minor;
        // SAFETY: `dev` is any device number; `holder` is an opaque non-null cookie; no
        // holder ops.
        let file = unsafe {
            bindings::bdev_file_open_by_dev(dev, BLK_OPEN_READ_WRITE, holder, core::ptr::null())
        };
        let file = kernel::error::from_err_ptr(file)?;
        Ok(Self { file })
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> Result<u64> {
        // SAFETY: `self.file` is an open file.
        let n = unsafe { bindings::vfs_llseek(self.file, 0, SEEK_END) };
        u64::try_from(n).map_err(|_| EIO)
    }

    /// Reads exactly `buf.len()` bytes at `pos`.
    pub(crate) fn read_at(&self, buf: &mut [u8], pos: u64) -> Result {
        let mut off = i64::try_from(pos).map_err(|_| EINVAL)?;
        // SAFETY: `buf` is valid for writes of its length; `off` is a local.
        let n = unsafe {
            bindings::kernel_read(self.file, buf.as_mut_ptr().cast(), buf.len(), &mut off)
        };
        if n < 0 {
            return Err(Error::from_errno(n as i32));
        }
        if n as usize != buf.len() {
            return Err(EIO);
        }
        Ok(())
    }

    /// Writes all of `buf` at `pos`.
    pub(crate) fn write_at(&self, buf: &[u8], pos: u64) -> Result {
        let mut off = i64::try_from(pos).map_err(|_| EINVAL)?;
        // SAFETY: `buf` is valid for reads of its length; `off` is a local.
        let n =
            unsafe { bindings::kernel_write(self.file, buf.as_ptr().cast(), buf.len(), &mut off) };
        if n < 0 {
            return Err(Error::from_errno(n as i32));
        }
        if n as usize != buf.len() {
            return Err(EIO);
        }
        Ok(())
    }

    /// Writes the device's dirty cache out and flushes its write cache.
    pub(crate) fn sync(&self) -> Result {
        // SAFETY: `self.file` is an open file.
        kernel::error::to_result(unsafe { bindings::vfs_fsync(self.file, 0) })
    }
}

impl Drop for BlockFile {
    fn drop(&mut self) {
        // SAFETY: the file came from `bdev_file_open_by_dev` and is released once, here.
        unsafe { bindings::fput(self.file) };
    }
}

// ---- a kernel thread --------------------------------------------------------------------------

/// Work a [`Kthread`] does: `run` loops until [`kthread_should_stop`] says so.
pub(crate) trait ThreadWork: Send + Sync {
    /// The thread's body.
    fn run(&self);
}

/// A kernel thread that holds an `Arc<T>` and runs [`ThreadWork::run`]; stopped (and the
/// `Arc` released) on drop.
pub(crate) struct Kthread<T: ThreadWork> {
    task: *mut bindings::task_struct,
    data: *const T,
}

// SAFETY: the handle is only used to stop the thread, from any thread.
unsafe impl<T: ThreadWork> Send for Kthread<T> {}
// SAFETY: `&Kthread` gives access to nothing (no method takes `&self`); the task pointer is
// used only by `drop`, which needs `&mut self`.
unsafe impl<T: ThreadWork> Sync for Kthread<T> {}

unsafe extern "C" fn thread_main<T: ThreadWork>(data: *mut core::ffi::c_void) -> core::ffi::c_int {
    // SAFETY: `data` came from `Arc::into_raw` in `Kthread::spawn`; this function owns that
    // reference from here on (kthread_stop reports whether it ran).
    let work = unsafe { kernel::sync::Arc::<T>::from_raw(data.cast::<T>()) };
    work.run();
    0
}

impl<T: ThreadWork> Kthread<T> {
    /// Starts a thread named `name` running `work.run()`.
    pub(crate) fn spawn(name: &'static CStr, work: kernel::sync::Arc<T>) -> Result<Self> {
        let data = kernel::sync::Arc::into_raw(work);
        // SAFETY: `thread_main::<T>` matches the kthread signature; `data` stays valid until
        // the thread or `drop` releases it; `name` is a NUL-terminated string without format
        // directives; NUMA_NO_NODE is -1.
        let task = unsafe {
            bindings::kthread_create_on_node(
                Some(thread_main::<T>),
                data.cast_mut().cast(),
                -1,
                name.as_char_ptr(),
            )
        };
        match kernel::error::from_err_ptr(task) {
            Ok(task) => {
                // SAFETY: `task` is a freshly created, not yet running kthread.
                unsafe { bindings::wake_up_process(task) };
                Ok(Self { task, data })
            }
            Err(e) => {
                // SAFETY: the thread was not created, so the reference is still ours.
                drop(unsafe { kernel::sync::Arc::from_raw(data) });
                Err(e)
            }
        }
    }
}

impl<T: ThreadWork> Drop for Kthread<T> {
    fn drop(&mut self) {
        // SAFETY: `task` is our thread, not yet stopped; kthread_stop waits for it to exit.
        let r = unsafe { bindings::kthread_stop(self.task) };
        if r == -(bindings::EINTR as i32) {
            // The thread was stopped before it ever ran `thread_main`: the reference is
            // still ours to release.
            // SAFETY: `data` came from `Arc::into_raw` and nobody else consumed it.
            drop(unsafe { kernel::sync::Arc::from_raw(self.data) });
        }
    }
}

/// Whether the current kthread has been asked to stop.
pub(crate) fn kthread_should_stop() -> bool {
    // SAFETY: called from a kthread (ThreadWork::run); no other precondition.
    unsafe { bindings::kthread_should_stop() }
}

/// Sleeps up to `ms` milliseconds, interruptibly (kthread_stop wakes it).
pub(crate) fn sleep_interruptible(ms: u32) {
    let jiffies = kernel::time::msecs_to_jiffies(ms);
    // SAFETY: plain sleep in process context.
    unsafe { bindings::schedule_timeout_interruptible(jiffies as isize) };
}

// ---- copying from user memory without sleeping ------------------------------------------------

/// The user address of the next byte of `raw` if it is a single user buffer (ITER_UBUF).
///
/// # Safety
///
/// `raw` is a live `iov_iter` that the caller holds exclusively for the call.
unsafe fn ubuf_next_raw(raw: *mut bindings::iov_iter) -> Option<usize> {
    // SAFETY: per the contract `raw` is live and not written meanwhile. For ITER_UBUF the
    // union holds `__ubuf_iovec` (base and length), and the next byte is
    // `base + iov_offset`, exactly as lib/iov_iter.c computes it.
    unsafe {
        if (*raw).iter_type != bindings::iter_type_ITER_UBUF as u8 {
            return None;
        }
        let base = (*raw).__bindgen_anon_1.__ubuf_iovec.as_ref().iov_base as usize;
        Some(base + (*raw).iov_offset)
    }
}

/// If `iov` is a single user buffer (what `write` and `pwrite` produce), the user address
/// of its next byte.
pub(crate) fn ubuf_next(iov: &mut kernel::iov::IovIterSource<'_>) -> Option<usize> {
    // SAFETY: `as_raw` gives the live iov_iter of this call, which our `&mut` holds
    // exclusively.
    unsafe { ubuf_next_raw(iov.as_raw()) }
}

/// If `iov` is a single user buffer (what `read` and `pread` produce), the user address
/// its next byte goes to.
pub(crate) fn ubuf_next_dest(iov: &mut kernel::iov::IovIterDest<'_>) -> Option<usize> {
    // SAFETY: as for a source: the live iov_iter of this call, held through our `&mut`.
    unsafe { ubuf_next_raw(iov.as_raw()) }
}

/// Copies `dst.len()` bytes from user address `src` into `dst` without sleeping (safe with
/// preemption off and under locks the fault path takes): fails instead of faulting a page
/// in, so it never takes `mmap_lock`.
pub(crate) fn copy_from_user_nofault(dst: SharedMut, src: usize) -> Result {
    // SAFETY: `dst` is writable kernel memory of its length (its constructor's contract);
    // copy_from_user_nofault checks that `src..src + len` is a user range, disables page
    // faults around the copy and returns non-zero instead of faulting.
    let r = unsafe {
        bindings::copy_from_user_nofault(
            dst.as_mut_ptr().cast(),
            src as *const core::ffi::c_void,
            dst.len(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(EFAULT)
    }
}

/// Copies `src` to user address `dst` without sleeping; fails instead of faulting (the
/// counterpart of [`copy_from_user_nofault`], for reads).
pub(crate) fn copy_to_user_nofault(dst: usize, src: Shared) -> Result {
    // SAFETY: `src` is readable kernel memory of its length; copy_to_user_nofault checks
    // that `dst..dst + len` is a user range and fails instead of faulting.
    let r = unsafe {
        bindings::copy_to_user_nofault(
            dst as *mut core::ffi::c_void,
            src.as_ptr().cast(),
            src.len(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(EFAULT)
    }
}

// ---- block requests ---------------------------------------------------------------------------

// Multi-page bio vectors are walked page by page with `page + n`, which is `nth_page` under
// SPARSEMEM_VMEMMAP (always on x86-64): check that the binding's `struct page` has the
// kernel's size, so the pointer arithmetic is right.
const _: () = assert!(core::mem::size_of::<bindings::page>() == 64);

/// What a block request asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqOp {
    /// `REQ_OP_READ`.
    Read,
    /// `REQ_OP_WRITE`.
    Write,
    /// Anything else (rio's queue advertises no cache, discard or zeroing, so none is
    /// expected).
    Other,
}

/// A read-only view of a started blk-mq request: its operation and its data segments.
pub(crate) struct RawRequest(*mut bindings::request);

impl RawRequest {
    /// The request behind `rq`.
    pub(crate) fn new<T: kernel::block::mq::Operations>(
        rq: &kernel::block::mq::Request<T>,
    ) -> Self {
        // `Request<T>` is `repr(transparent)` over `Opaque<bindings::request>`.
        Self(core::ptr::from_ref(rq).cast_mut().cast())
    }

    /// The operation.
    pub(crate) fn op(&self) -> ReqOp {
        // SAFETY: the request is live while the driver owns it (between queue_rq and its
        // completion), and `cmd_flags` is not written meanwhile.
        let flags = unsafe { (*self.0).cmd_flags };
        match flags & ((1 << bindings::REQ_OP_BITS) - 1) {
            x if x == bindings::req_op_REQ_OP_READ => ReqOp::Read,
            x if x == bindings::req_op_REQ_OP_WRITE => ReqOp::Write,
            _ => ReqOp::Other,
        }
    }

    /// Calls `f(device byte position, data)` for every piece of the request's data, each
    /// within one memory page, in order. The data may be a user's `O_DIRECT` buffer that
    /// the user writes meanwhile, so it comes as a [`SharedMut`], not a slice.
    pub(crate) fn for_each_segment(&self, mut f: impl FnMut(u64, SharedMut) -> Result) -> Result {
        const PAGE: usize = 4096;
        // SAFETY: the driver owns the started request, so its bio chain, their vectors and
        // the pages they name stay valid and unchanged until it completes; the walk follows
        // bio_for_each_segment (include/linux/bvec.h, bio.h) without modifying anything.
        unsafe {
            let mut bio = (*self.0).bio;
            while !bio.is_null() {
                let iter = core::ptr::read_unaligned(core::ptr::addr_of!((*bio).bi_iter));
                let vecs = (*bio).bi_io_vec;
                let mut pos = iter.bi_sector * 512;
                let mut idx = iter.bi_idx as usize;
                let mut off = iter.bi_offset as usize;
                let mut left = iter.bi_size as usize;
                while left > 0 {
                    let bv = *vecs.add(idx);
                    let n = (bv.bv_len as usize - off).min(left);
                    let mut done = 0;
                    while done < n {
                        let abs = bv.bv_offset as usize + off + done;
                        let page = bv.bv_page.wrapping_add(abs / PAGE);
                        let in_page = abs % PAGE;
                        let chunk = (n - done).min(PAGE - in_page);
                        let va = bindings::kmap_local_page(page).cast::<u8>();
                        let r = f(pos + done as u64, SharedMut::new(va.add(in_page), chunk));
                        bindings::kunmap_local(va.cast());
                        r?;
                        done += chunk;
                    }
                    pos += n as u64;
                    left -= n;
                    off += n;
                    if off == bv.bv_len as usize {
                        idx += 1;
                        off = 0;
                    }
                }
                bio = (*bio).bi_next;
            }
        }
        Ok(())
    }
}

/// A blk-mq device's disk, learnt from its first request (`rq->q->disk`): what the
/// device needs to ask whether anyone has it open.
pub(crate) struct SeenDisk(core::sync::atomic::AtomicPtr<bindings::gendisk>);

impl SeenDisk {
    /// None seen yet.
    pub(crate) const fn new() -> Self {
        Self(core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()))
    }

    /// Learns the disk of `rq`.
    pub(crate) fn learn(&self, rq: &RawRequest) {
        // SAFETY: a live request's queue outlives it, and the queue's disk pointer is set
        // before any request is dispatched.
        let disk = unsafe { (*(*rq.0).q).disk };
        self.0.store(disk, core::sync::atomic::Ordering::Relaxed);
    }

    /// Whether anyone has the whole-disk device open (`part0->bd_openers`); `false` before
    /// any request was seen.
    ///
    /// # Safety
    ///
    /// The disk learnt is still registered (not yet deleted).
    pub(crate) unsafe fn is_open(&self) -> bool {
        let disk = self.0.load(core::sync::atomic::Ordering::Relaxed);
        if disk.is_null() {
            return false;
        }
        // SAFETY: per the contract `disk` and its part0 are live; `bd_openers` is an
        // atomic_t, read with a volatile load as atomic_read does.
        unsafe {
            let part0 = (*disk).part0;
            core::ptr::read_volatile(core::ptr::addr_of!((*part0).bd_openers.counter)) > 0
        }
    }
}

/// A reference on rio.ko itself: while one exists the module cannot be unloaded.
pub(crate) struct ModuleRef(*mut bindings::module);

// SAFETY: module references may be taken and dropped on any thread.
unsafe impl Send for ModuleRef {}
// SAFETY: `&ModuleRef` exposes nothing; the pointer is only passed to module_put by `drop`,
// which needs `&mut self`.
unsafe impl Sync for ModuleRef {}

impl ModuleRef {
    /// Takes a reference on `module` (this one).
    pub(crate) fn new(module: &'static kernel::ThisModule) -> Self {
        let m = module.as_ptr();
        // SAFETY: we are running code of this module, so it is live; __module_get only
        // increments its reference count.
        unsafe { bindings::__module_get(m) };
        Self(m)
    }
}

impl Drop for ModuleRef {
    fn drop(&mut self) {
        // SAFETY: releases the reference taken in `new`, exactly once.
        unsafe { bindings::module_put(self.0) };
    }
}
