// SPDX-License-Identifier: GPL-2.0

//! riofault.ko: injects the fault classes of the Rio paper's crash tests into the running
//! kernel, on request, through `/dev/riofault`. It exists to crash test kernels; never load
//! it anywhere else.
//!
//! | class | what it does |
//! |---|---|
//! | `TEXT` | flips a random bit of kernel text (range from /proc/kallsyms) |
//! | `HEAP` | flips a random bit of a random page of System RAM, through the direct map |
//! | `STACK` | flips a random bit in the live part of a sleeping task's kernel stack |
//! | `WILD` | stores a random word at a random kernel address (half in the direct map) |
//! | `POINTER` | dereferences a random kernel pointer |
//! | `PANIC` | panics from a kernel thread after a random delay of up to 1 s |
//! | `PMEM` | stores a byte at a given physical address of persistent memory (pmem-dax) |
//!
//! Stores aimed at the arena are rio.ko's own debug ioctl (`rio wild-store`); hard resets and
//! power loss are done by the host.

use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
    transmute::FromBytes,
    uaccess::UserSlice,
};

module! {
    type: RioFault,
    name: "riofault",
    authors: ["Rio in Rust developers"],
    description: "Fault injection for Rio crash campaigns (test kernels only)",
    license: "GPL",
}

mod fault_abi;
mod fault_sys;
// rio.ko's page tables and vmap wrapper; riofault uses only some of it.
#[allow(dead_code)]
#[path = "sys/kmap.rs"]
mod kmap;
use fault_abi::{
    FaultReq, HANG, HANG_IRQ, HEAP, PANIC, PMEM, POINTER, RIOFAULT_INJECT, STACK, TEXT, WILD,
};

// SAFETY: `FaultReq` is `repr(C)` with integer fields and an explicit padding field (its
// layout is asserted in fault_abi.rs), so every bit pattern is a valid value.
unsafe impl FromBytes for FaultReq {}

/// A small deterministic generator, so a campaign can replay a fault from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn random_ram_address(rng: &mut Rng, ram_top: u64) -> usize {
    let max = ram_top >> 12;
    loop {
        let pfn = 0x1000 + rng.next() % max.saturating_sub(0x1000).max(1);
        let phys = pfn << 12;
        // Only System RAM: holes and the arena (reserved) are not in the direct map.
        if fault_sys::is_system_ram_page(phys) {
            return fault_sys::direct_map(phys) + (rng.next() % 4096) as usize;
        }
    }
}

fn random_kernel_address(rng: &mut Rng, ram_top: u64) -> usize {
    if rng.next() % 2 == 0 {
        random_ram_address(rng, ram_top)
    } else {
        // Anywhere in the upper half: mostly unmapped, so mostly an oops.
        (0xffff_8000_0000_0000u64 | rng.next()) as usize & !7
    }
}

/// Kernel stacks are `THREAD_SIZE` bytes: 16 KB on x86-64 without KASAN.
const THREAD_SIZE: usize = 16384;

/// Flips a random bit in the live part of the kernel stack of a random sleeping task (the
/// frames it returns through when it wakes), as the Rio paper's stack faults hit random
/// processes. Returns the task's pid and the address, or `None` if no sleeping task was
/// found in a few hundred tries.
fn sleeping_stack_address(rng: &mut Rng) -> Option<(i32, usize)> {
    for _ in 0..512 {
        let nr = 1 + (rng.next() % 1024) as i32;
        let Some(task) = fault_sys::Task::find(nr) else {
            continue;
        };
        let t = task.snapshot();
        if !t.sleeping
            || t.exiting
            || t.stack == 0
            || t.sp <= t.stack
            || t.sp >= t.stack + THREAD_SIZE
        {
            continue;
        }
        let addr = t.sp + (rng.next() % (t.stack + THREAD_SIZE - t.sp) as u64) as usize;
        let bit = rng.next() % 8;
        // SAFETY: deliberate corruption. `addr` is in the live part of the stack of a task
        // that is asleep and not exiting, and we hold a reference on it, so the stack is
        // allocated (a task frees it only after it has run to exit, which a wake-up this
        // instant could start: that race would turn this flip into a store to freed memory,
        // which is also a fault).
        unsafe {
            let p = addr as *mut u8;
            core::ptr::write_volatile(p, core::ptr::read_volatile(p) ^ (1 << bit));
        }
        drop(task);
        return Some((nr, addr));
    }
    None
}

fn inject(req: &FaultReq) -> Result {
    let mut rng = Rng(req.seed);
    if matches!(req.class, HEAP | WILD | POINTER) && req.end < (32 << 20) {
        return Err(EINVAL);
    }
    match req.class {
        TEXT => {
            if req.end <= req.start {
                return Err(EINVAL);
            }
            let addr = (req.start + rng.next() % (req.end - req.start)) as usize;
            pr_warn!("injecting: bit flip in kernel text at {:#x}\n", addr);
            // SAFETY: deliberate corruption of what the request names as kernel text (the
            // campaign reads the range from /proc/kallsyms); a frame that is not System RAM
            // is refused with EFAULT.
            unsafe { fault_sys::flip_through_alias(addr, rng.next() as u32) }
        }
        HEAP => {
            let addr = random_ram_address(&mut rng, req.end);
            let bit = rng.next() % 8;
            pr_warn!("injecting: bit flip in RAM at {:#x}\n", addr);
            // SAFETY: deliberate corruption; `addr` is in the direct map of System RAM.
            unsafe {
                let p = addr as *mut u8;
                core::ptr::write_volatile(p, core::ptr::read_volatile(p) ^ (1 << bit));
            }
            Ok(())
        }
        STACK => {
            let (pid, addr) = sleeping_stack_address(&mut rng).ok_or(ESRCH)?;
            pr_warn!(
                "injecting: bit flip in the kernel stack of pid {} at {:#x}\n",
                pid,
                addr
            );
            Ok(())
        }
        WILD => {
            let addr = random_kernel_address(&mut rng, req.end) & !7;
            let val = rng.next();
            pr_warn!("injecting: wild store of {:#x} at {:#x}\n", val, addr);
            // SAFETY: deliberate wild store; an unmapped address oopses, which is the test.
            unsafe { core::ptr::write_volatile(addr as *mut u64, val) };
            Ok(())
        }
        POINTER => {
            let addr = random_kernel_address(&mut rng, req.end) & !7;
            pr_warn!("injecting: dereference of {:#x}\n", addr);
            // SAFETY: deliberate read through a corrupted pointer.
            let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
            pr_warn!("the pointer was mapped ({:#x}): no fault\n", v);
            Ok(())
        }
        PANIC => {
            let delay = rng.next() % 1000;
            pr_warn!("injecting: panic in {} ms\n", delay);
            fault_sys::panic_after(delay as u32)
        }
        PMEM => {
            let addr = fault_sys::pmem_direct_map(req.start)?;
            let val = rng.next() as u8;
            pr_warn!(
                "injecting: store of {:#x} into persistent memory at {:#x} (phys {:#x})\n",
                val,
                addr,
                req.start
            );
            // SAFETY: deliberate corruption: `addr` is the kernel's present direct-map
            // alias of persistent memory (checked by `pmem_direct_map`), as a wild store
            // from buggy kernel code would hit it.
            unsafe { core::ptr::write_volatile(addr as *mut u8, val) };
            Ok(())
        }
        HANG | HANG_IRQ => {
            let irq = req.class == HANG_IRQ;
            pr_warn!(
                "injecting: a CPU hung with {} off\n",
                if irq { "interrupts" } else { "preemption" }
            );
            fault_sys::hang_cpu(irq)
        }
        _ => Err(EINVAL),
    }
}

#[pin_data]
struct RioFault {
    #[pin]
    misc: MiscDeviceRegistration<FaultFile>,
}

impl kernel::InPlaceModule for RioFault {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_warn!("loaded: this module crashes kernels on request; test use only\n");
        try_pin_init!(Self {
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"riofault" }),
        })
    }
}

struct FaultFile;

#[vtable]
impl MiscDevice for FaultFile {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(FaultFile, GFP_KERNEL)?)
    }

    fn ioctl(_me: &FaultFile, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if cmd != RIOFAULT_INJECT {
            return Err(ENOTTY);
        }
        let req: FaultReq =
            UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<FaultReq>())
                .reader()
                .read()?;
        inject(&req)?;
        Ok(0)
    }
}
