// SPDX-License-Identifier: GPL-2.0

//! blk-mq requests (their segments as shared memory), the disk a request belongs to,
//! and a reference on rio.ko that keeps it loaded while a block device exists.

use kernel::bindings;
use kernel::prelude::*;

use crate::shared::SharedMut;

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
