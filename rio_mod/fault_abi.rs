// SPDX-License-Identifier: GPL-2.0

//! The `/dev/riofault` ioctl ABI: the one definition, compiled by riofault.ko and by the
//! host crate `userlib/rio-check` (by path). Pure `core` code; the assertions at the
//! bottom pin the layout in both builds.

#![allow(unreachable_pub, dead_code)]

use core::mem::{offset_of, size_of};

/// `RIOFAULT_INJECT`'s argument.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct FaultReq {
    /// One of the class numbers below.
    pub class: u32,
    pub _pad: u32,
    /// Seed of the module's generator: the same seed picks the same fault.
    pub seed: u64,
    /// For `TEXT`: the address range to pick from. For `HEAP`, `WILD`, `POINTER`: `end` is
    /// the top of System RAM (physical), from /proc/iomem.
    pub start: u64,
    pub end: u64,
}

/// The ioctl type byte for `/dev/riofault`.
pub const RIOFAULT_MAGIC: u32 = 0xb8;
/// `_IOW(0xb8, 0x01, struct FaultReq)`.
pub const RIOFAULT_INJECT: u32 =
    (1 << 30) | ((size_of::<FaultReq>() as u32) << 16) | (RIOFAULT_MAGIC << 8) | 1;

/// Flip a bit in kernel text.
pub const TEXT: u32 = 0;
/// Flip a bit of a random page of System RAM, through the direct map.
pub const HEAP: u32 = 1;
/// Flip a bit in a sleeping task's kernel stack.
pub const STACK: u32 = 2;
/// Store to a random kernel address.
pub const WILD: u32 = 3;
/// Dereference a random kernel pointer.
pub const POINTER: u32 = 4;
/// Panic from a kernel thread after a random delay of up to 1 s.
pub const PANIC: u32 = 5;
/// (6 is `arena` in `rio-check inject`: rio.ko's own wild store, not a riofault class.)
/// Hang one CPU with interrupts off: a kernel thread spins forever in
/// `spin_lock_irq` on a lock it already holds. Only the hard-lockup detector sees it.
pub const HANG_IRQ: u32 = 7;
/// Hang one CPU with preemption off (interrupts on): a kernel thread spins forever in
/// `spin_lock` on a lock it already holds. The soft-lockup detector sees it.
pub const HANG: u32 = 8;
/// Store one byte into legacy persistent memory through the kernel's own (direct-map)
/// mapping of it, as a wild store from buggy kernel code would land there: the pmem-dax
/// configuration's counterpart of `arena`. `start` is the physical address (the caller
/// aims it: file-system metadata or file data), the byte is the seed's generator's first
/// value. Refused (`EINVAL`) unless the address is in a persistent-memory resource, and
/// (`EFAULT`) unless the kernel maps it.
pub const PMEM: u32 = 9;

const _: () = {
    assert!(size_of::<FaultReq>() == 32);
    assert!(offset_of!(FaultReq, seed) == 8);
    assert!(offset_of!(FaultReq, end) == 24);
    assert!(RIOFAULT_INJECT == 0x4020_b801);
};
