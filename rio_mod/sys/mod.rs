// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers around the raw kernel calls rio.ko needs that the `kernel` crate does not
//! abstract yet. Every use of `kernel::bindings` in rio.ko lives under this module, one
//! file per kernel subsystem: [`cred`] (who is calling), [`iomem`] (where physical memory
//! is), [`kmap`] (page tables and `vmap`, shared with riofault.ko), [`window`] (the arena's
//! mapping and the window's PTEs), [`vma`] (user mappings), [`fops`] (the fsync table),
//! [`blockfile`] (the backing device), [`thread`] (a kernel thread), [`uaccess`] (nofault
//! user copies), [`blk`] (block requests); and here, the CPU number and random bytes.

mod blk;
mod blockfile;
mod cred;
mod fops;
mod iomem;
pub(crate) mod kmap;
mod thread;
mod uaccess;
mod vma;
mod window;
pub(crate) use blk::{ModuleRef, RawRequest, ReqOp, SeenDisk};
pub(crate) use blockfile::BlockFile;
pub(crate) use cred::{caller, Caller};
pub(crate) use fops::FsyncFops;
pub(crate) use iomem::{reserved_overlap, system_ram_overlap, Overlap};
pub(crate) use kmap::VMapping;
pub(crate) use thread::{kthread_should_stop, sleep_interruptible, Kthread, ThreadWork};
pub(crate) use uaccess::{copy_from_user_nofault, copy_to_user_nofault, ubuf_next, ubuf_next_dest};
pub(crate) use vma::{remap_page, track_vma, vma_pgoff, MapTracker};
pub(crate) use window::{ArenaMapping, SlotPte};

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
