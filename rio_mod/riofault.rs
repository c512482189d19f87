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
//!
//! Stores aimed at the arena are rio.ko's own debug ioctl (`rio wild-store`); hard resets and
//! power loss are done by the host.

use kernel::{
    bindings,
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
use fault_abi::{
    FaultReq, HANG, HANG_IRQ, HEAP, PANIC, POINTER, RIOFAULT_INJECT, STACK, TEXT, WILD,
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

mod raw {
    use kernel::bindings::pgprot_t;
    extern "C" {
        // mm/vmalloc.c, exported; see rio_mod/sys.rs for why these are declared by hand
        // (and why `struct page **` is spelled `void **`).
        pub(super) fn vmap(
            pages: *mut *mut core::ffi::c_void,
            count: u32,
            flags: u64,
            prot: pgprot_t,
        ) -> *mut core::ffi::c_void;
        pub(super) fn vunmap(addr: *const core::ffi::c_void);
    }
}

/// Flips one bit at kernel address `addr` that may be mapped read-only (kernel text):
/// through a temporary writable alias of its frame.
fn flip_through_alias(addr: usize, bit: u32) -> Result {
    let mut level: core::ffi::c_uint = 0;
    // SAFETY: lookup_address only walks the kernel page tables.
    let pte = unsafe { bindings::lookup_address(addr, &mut level) };
    if pte.is_null() {
        return Err(EFAULT);
    }
    let span: usize = match level {
        l if l == bindings::pg_level_PG_LEVEL_4K => 1 << 12,
        l if l == bindings::pg_level_PG_LEVEL_2M => 1 << 21,
        l if l == bindings::pg_level_PG_LEVEL_1G => 1 << 30,
        _ => return Err(EFAULT),
    };
    // SAFETY: `pte` is the live leaf entry of `addr`.
    let v = unsafe { core::ptr::read_volatile(pte) }.pte;
    let pfn = ((v & 0x000f_ffff_ffff_f000) + (addr & (span - 1) & !0xfff)) >> 12;
    // SAFETY: reading `vmemmap_base`, constant after boot; kernel text is RAM, so its frame
    // has a `struct page` at vmemmap_base + pfn.
    let mut pg: *mut core::ffi::c_void =
        unsafe { (bindings::vmemmap_base as *mut bindings::page).wrapping_add(pfn) }.cast();
    // PAGE_KERNEL without global/NX subtleties: present, RW, accessed, dirty.
    let prot = bindings::pgprot_t { pgprot: 0x63 };
    // SAFETY: one valid page pointer; the alias is unmapped right after the store.
    let alias = unsafe { raw::vmap(&mut pg, 1, 0x4, prot) };
    if alias.is_null() {
        return Err(ENOMEM);
    }
    let at = alias.cast::<u8>().wrapping_add(addr & 0xfff);
    // SAFETY: deliberately corrupting kernel text is this module's purpose; `at` is inside
    // the one-page alias just created.
    unsafe {
        let b = core::ptr::read_volatile(at);
        core::ptr::write_volatile(at, b ^ (1 << (bit % 8)));
        raw::vunmap(alias);
    }
    Ok(())
}

fn random_ram_address(rng: &mut Rng, ram_top: u64) -> usize {
    // SAFETY: a boot-time constant.
    let base = unsafe { bindings::page_offset_base };
    let max = ram_top >> 12;
    loop {
        let pfn = 0x1000 + rng.next() % max.saturating_sub(0x1000).max(1);
        let phys = pfn << 12;
        // Only System RAM: holes and the arena (reserved) are not in the direct map.
        // SAFETY: region_intersects reads the resource tree under its own lock.
        let r = unsafe {
            bindings::region_intersects(
                phys,
                4096,
                bindings::IORESOURCE_SYSTEM_RAM as usize,
                bindings::IORES_DESC_NONE as usize,
            )
        };
        if r == bindings::REGION_INTERSECTS as i32 {
            return base as usize + phys as usize + (rng.next() % 4096) as usize;
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
        // SAFETY: find_get_pid takes a reference on the pid it returns (or returns NULL).
        let pid = unsafe { bindings::find_get_pid(nr) };
        if pid.is_null() {
            continue;
        }
        // SAFETY: `pid` is referenced; get_pid_task takes a task reference (or returns NULL).
        let task = unsafe { bindings::get_pid_task(pid, bindings::pid_type_PIDTYPE_PID) };
        // SAFETY: drops the reference find_get_pid took.
        unsafe { bindings::put_pid(pid) };
        if task.is_null() {
            continue;
        }
        // SAFETY: we hold a reference on `task`, so its task_struct stays valid; the fields
        // are read racily on purpose (a fault injector), as plain integers and a pointer.
        let (state, exit, stack, sp) = unsafe {
            (
                core::ptr::read_volatile(core::ptr::addr_of!((*task).__state)),
                core::ptr::read_volatile(core::ptr::addr_of!((*task).exit_state)),
                (*task).stack as usize,
                (*task).thread.sp as usize,
            )
        };
        let sleeping = state & (bindings::TASK_INTERRUPTIBLE | bindings::TASK_UNINTERRUPTIBLE) != 0;
        let found = if sleeping && exit == 0 && stack != 0 && sp > stack && sp < stack + THREAD_SIZE
        {
            let addr = sp + (rng.next() % (stack + THREAD_SIZE - sp) as u64) as usize;
            let bit = rng.next() % 8;
            // SAFETY: deliberate corruption. `addr` is in the live part of the stack of a task
            // that is asleep and not exiting, so the stack is allocated (a task frees it only
            // after it has run to exit, which a wake-up this instant could start: that race
            // would turn this flip into a store to freed memory, which is also a fault).
            unsafe {
                let p = addr as *mut u8;
                core::ptr::write_volatile(p, core::ptr::read_volatile(p) ^ (1 << bit));
            }
            Some((nr, addr))
        } else {
            None
        };
        // SAFETY: drops the reference get_pid_task took.
        unsafe { bindings::put_task_struct(task) };
        if found.is_some() {
            return found;
        }
    }
    None
}

unsafe extern "C" fn panic_thread(data: *mut core::ffi::c_void) -> core::ffi::c_int {
    // SAFETY: plain sleep; `data` carries the delay in ms.
    unsafe { bindings::msleep(data as usize as u32) };
    // SAFETY: panic with a constant format and no arguments.
    unsafe { bindings::panic(c"riofault: injected panic".as_char_ptr()) }
}

/// `data` is 1 for a hang with interrupts off, 0 for one with only preemption off.
unsafe extern "C" fn hang_thread(data: *mut core::ffi::c_void) -> core::ffi::c_int {
    // A lock of this thread's own, taken twice: the second acquisition spins forever with
    // preemption (and, for `HANG_IRQ`, interrupts) disabled. Deliberate: a hung CPU for the
    // lockup detectors to find. The lock lives on this thread's stack, which never returns.
    let mut lock = core::mem::MaybeUninit::<bindings::spinlock_t>::zeroed();
    let lock = lock.as_mut_ptr();
    let key = kernel::sync::static_lock_class!();
    // SAFETY: `lock` points to zeroed memory the size of a `spinlock_t` on our stack, which
    // `__spin_lock_init` initialises; the name and the lock class key are static.
    unsafe { bindings::__spin_lock_init(lock, c"riofault-hang".as_char_ptr(), key.as_ptr()) };
    // SAFETY: `lock` is an initialised spinlock that nothing else knows of; taking it twice
    // from one thread deadlocks on purpose (this function never returns).
    unsafe {
        if data.is_null() {
            bindings::spin_lock(lock);
            bindings::spin_lock(lock);
        } else {
            bindings::spin_lock_irq_disable(lock);
            bindings::spin_lock_irq_disable(lock);
        }
    }
    0
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
            flip_through_alias(addr, rng.next() as u32)
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
            // SAFETY: thread function and data (the delay) are valid; the thread panics.
            let t = unsafe {
                bindings::kthread_create_on_node(
                    Some(panic_thread),
                    delay as usize as *mut _,
                    -1,
                    c"riofault-panic".as_char_ptr(),
                )
            };
            let t = kernel::error::from_err_ptr(t)?;
            // SAFETY: `t` is a fresh kthread.
            unsafe { bindings::wake_up_process(t) };
            Ok(())
        }
        HANG | HANG_IRQ => {
            let irq = req.class == HANG_IRQ;
            pr_warn!(
                "injecting: a CPU hung with {} off\n",
                if irq { "interrupts" } else { "preemption" }
            );
            // SAFETY: thread function and data (a flag) are valid; the thread hangs.
            let t = unsafe {
                bindings::kthread_create_on_node(
                    Some(hang_thread),
                    usize::from(irq) as *mut _,
                    -1,
                    c"riofault-hang".as_char_ptr(),
                )
            };
            let t = kernel::error::from_err_ptr(t)?;
            // SAFETY: `t` is a fresh kthread.
            unsafe { bindings::wake_up_process(t) };
            Ok(())
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
