// SPDX-License-Identifier: GPL-2.0

//! A block device per object (`/dev/riobN`, N = the object's slot), so that any file system
//! can live in Rio memory.
//!
//! Reads copy out of the arena; writes copy in through the same protection window as
//! `pwrite`. The queue advertises no volatile write cache, so the block layer completes
//! flushes itself and drops FUA: once a write request completes its data is already in the
//! arena, which is what a flush would have promised. Every journal commit and `fsync` of a
//! file system on the device therefore costs a memory copy.
//!
//! While a device exists, rio.ko holds a reference on itself (it cannot be unloaded), and
//! the device is removed only when nobody has it open (not mounted).
//!
//! `queue_rq` must not sleep, so it cannot take the store's mutex. A device is therefore
//! built over a fixed list of the object's arena pages, and while it exists the object is
//! held open (it cannot be deleted or shrunk) and counts as mapped: writeback treats all of
//! its pages as dirty, as for a writable `mmap`.

use kernel::block::mq::{
    self,
    gen_disk::{GenDisk, GenDiskBuilder},
    Operations, TagSet,
};
use kernel::prelude::*;
use kernel::sync::{aref::ARef, Arc, ArcBorrow};

use crate::arena::Arena;
use crate::format::PAGE_SIZE;
use crate::sys::{self, ModuleRef, RawRequest, ReqOp};

/// What the queue needs: the arena and the object's pages.
pub(crate) struct BlkData {
    arena: Arc<Arena>,
    /// Arena page of each object page.
    pages: KVec<usize>,
    /// The disk, learnt from its first request (the partition scan at registration).
    disk: sys::SeenDisk,
}

/// The blk-mq driver of Rio devices.
pub(crate) struct RioBlk;

impl BlkData {
    fn transfer(&self, rq: &RawRequest, write: bool) -> Result {
        rq.for_each_segment(|pos, buf| {
            let mut done = 0usize;
            while done < buf.len() {
                let at = usize::try_from(pos).map_err(|_| EIO)? + done;
                let page = *self.pages.get(at / PAGE_SIZE).ok_or(EIO)?;
                let off = at % PAGE_SIZE;
                let n = (buf.len() - done).min(PAGE_SIZE - off);
                // Both sides are shared memory (the arena; a request's pages, which may be
                // a user's O_DIRECT buffer): raw copies, no slices.
                if write {
                    let src = buf.slice(done, n)?.as_shared();
                    self.arena
                        .write_page(page, |dst| dst.copy_from(off, src))??;
                } else {
                    let src = self.arena.page(page)?.slice(off, n)?;
                    buf.copy_from(done, src)?;
                }
                done += n;
            }
            Ok(())
        })
    }
}

#[vtable]
impl Operations for RioBlk {
    type QueueData = Arc<BlkData>;

    fn queue_rq(
        data: ArcBorrow<'_, BlkData>,
        rq: ARef<mq::Request<Self>>,
        _is_last: bool,
    ) -> Result {
        let raw = RawRequest::new(&rq);
        data.disk.learn(&raw);
        match raw.op() {
            ReqOp::Read => data.transfer(&raw, false)?,
            ReqOp::Write => data.transfer(&raw, true)?,
            ReqOp::Other => return Err(EOPNOTSUPP),
        }
        mq::Request::end_ok(rq).map_err(|_| EIO)
    }

    fn commit_rqs(_data: ArcBorrow<'_, BlkData>) {}

    fn complete(rq: ARef<mq::Request<Self>>) {
        // Requests are completed in queue_rq; nothing completes asynchronously.
        let _ = mq::Request::end_ok(rq);
    }
}

/// A registered Rio block device.
pub(crate) struct BlockDev {
    /// The object's slot.
    pub(crate) slot: usize,
    data: Arc<BlkData>,
    // Dropped before `_pin`: the disk is deleted while the module is still pinned.
    _disk: GenDisk<RioBlk>,
    _pin: ModuleRef,
}

// SAFETY: `GenDisk` is not `Send` only because the kernel crate does not mark `TagSet`
// thread-safe; the C tag set and disk are used from every CPU by the block layer anyway.
// rio.ko only creates and drops a `BlockDev` (del_gendisk, process context) under the
// store's mutex, from whichever thread holds it.
unsafe impl Send for BlockDev {}

impl BlockDev {
    /// Registers `/dev/riob<slot>` over `pages` (arena page numbers) of `bytes` bytes.
    pub(crate) fn new(
        module: &'static kernel::ThisModule,
        slot: usize,
        arena: Arc<Arena>,
        pages: KVec<usize>,
        bytes: u64,
    ) -> Result<Self> {
        let sectors = bytes / 512;
        let tagset = Arc::pin_init(TagSet::new(1, 64, 1), GFP_KERNEL)?;
        let data = Arc::new(
            BlkData {
                arena,
                pages,
                disk: sys::SeenDisk::new(),
            },
            GFP_KERNEL,
        )?;
        let disk = GenDiskBuilder::new()
            .capacity_sectors(sectors)
            .logical_block_size(PAGE_SIZE as u32)?
            .physical_block_size(PAGE_SIZE as u32)?
            .rotational(false)
            .build(fmt!("riob{}", slot), tagset, data.clone())?;
        Ok(Self {
            slot,
            data,
            _disk: disk,
            _pin: ModuleRef::new(module),
        })
    }

    /// Whether the device is open (for example mounted).
    pub(crate) fn is_open(&self) -> bool {
        // SAFETY: the disk it learnt is this device's gendisk, registered until `_disk` is
        // dropped, which `self` owns.
        unsafe { self.data.disk.is_open() }
    }
}
