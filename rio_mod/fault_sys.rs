// SPDX-License-Identifier: GPL-2.0

//! riofault.ko's safe layer: every raw kernel call the fault injector makes is here, behind
//! a small safe function or type (the page tables and `vmap` come from rio.ko's own
//! `sys/kmap.rs`). What stays in `riofault.rs` is the deliberate damage itself: stores
//! through addresses chosen to corrupt.

use kernel::bindings;
use kernel::prelude::*;

use crate::kmap::{leaf, VMapping, PTE_PFN_MASK, PTE_PRESENT};

/// Flips bit `bit % 8` of the byte at kernel address `addr`, which may be mapped read-only
/// (kernel text): through a temporary writable alias of its frame, unmapped right after.
///
/// `EFAULT` if `addr` is unmapped or its frame is not System RAM.
///
/// # Safety
///
/// The flip corrupts whatever lives at `addr`: the caller means to.
pub(crate) unsafe fn flip_through_alias(addr: usize, bit: u32) -> Result {
    let (pte, span) = leaf(addr).ok_or(EFAULT)?;
    // SAFETY: `pte` is the live leaf entry of `addr` (any level), read as a plain integer.
    let v = unsafe { core::ptr::read_volatile(pte) }.pte;
    let pfn = ((v & PTE_PFN_MASK) + (addr & (span - 1) & !0xfff)) >> 12;
    if !is_system_ram_page((pfn as u64) << 12) {
        return Err(EFAULT);
    }
    // SAFETY: the frame was just found to be System RAM, so it has a `struct page`.
    let alias = unsafe { VMapping::alias_of_ram_frame(pfn) }?;
    let at = alias.as_ptr().wrapping_add(addr & 0xfff);
    // SAFETY: `at` is inside the one-page writable alias just created, which stays mapped
    // until `alias` drops below; what the byte means to the kernel is the caller's concern.
    unsafe { core::ptr::write_volatile(at, core::ptr::read_volatile(at) ^ (1 << (bit % 8))) };
    Ok(())
}

/// Whether the 4 KiB page at physical address `phys` is System RAM (and so in the direct
/// map). Holes and reserved memory (the Rio arena) are not.
pub(crate) fn is_system_ram_page(phys: u64) -> bool {
    // SAFETY: `region_intersects` only walks the iomem resource tree under its own read
    // lock and accepts any arguments.
    let r = unsafe {
        bindings::region_intersects(
            phys,
            4096,
            bindings::IORESOURCE_SYSTEM_RAM as usize,
            bindings::IORES_DESC_NONE as usize,
        )
    };
    r == bindings::REGION_INTERSECTS as i32
}

/// The direct-map address of physical address `phys`.
pub(crate) fn direct_map(phys: u64) -> usize {
    // SAFETY: `page_offset_base` is written once during early boot and only read after.
    let base = unsafe { bindings::page_offset_base };
    base as usize + phys as usize
}

/// The kernel's direct-map address of physical address `phys` in legacy persistent memory
/// (`memmap=SIZE!ADDR`, an e820 type-12 range), where a wild store from kernel code would
/// land. `EINVAL` if `phys` is not persistent memory (never System RAM or the Rio arena by
/// mistake), `EFAULT` if the kernel does not map it (the pmem driver maps the region with
/// `memremap_pages` only while an fsdax namespace is enabled).
pub(crate) fn pmem_direct_map(phys: u64) -> Result<usize> {
    // SAFETY: `region_intersects` only walks the iomem resource tree under its own read
    // lock and accepts any arguments.
    let r = unsafe {
        bindings::region_intersects(
            phys,
            1,
            bindings::IORESOURCE_MEM as usize,
            bindings::IORES_DESC_PERSISTENT_MEMORY_LEGACY as usize,
        )
    };
    if r != bindings::REGION_INTERSECTS as i32 {
        return Err(EINVAL);
    }
    let addr = direct_map(phys);
    let (pte, _) = leaf(addr).ok_or(EFAULT)?;
    // SAFETY: `pte` is the live leaf entry of `addr`, read as a plain integer.
    if unsafe { core::ptr::read_volatile(pte) }.pte & PTE_PRESENT == 0 {
        return Err(EFAULT);
    }
    Ok(addr)
}

/// What [`Task::snapshot`] read of a task, racily on purpose.
pub(crate) struct TaskState {
    /// Asleep (interruptible or not).
    pub(crate) sleeping: bool,
    /// Exiting or dead.
    pub(crate) exiting: bool,
    /// Lowest address of its kernel stack (0 if it has none).
    pub(crate) stack: usize,
    /// Its saved kernel stack pointer.
    pub(crate) sp: usize,
}

/// A reference on a task, dropped on drop.
pub(crate) struct Task(core::ptr::NonNull<bindings::task_struct>);

impl Task {
    /// The task with pid `nr` in the initial namespace, if there is one.
    pub(crate) fn find(nr: i32) -> Option<Task> {
        // SAFETY: find_get_pid takes a reference on the pid it returns (or returns NULL).
        let pid = unsafe { bindings::find_get_pid(nr) };
        if pid.is_null() {
            return None;
        }
        // SAFETY: `pid` is referenced; get_pid_task takes a task reference (or returns NULL).
        let task = unsafe { bindings::get_pid_task(pid, bindings::pid_type_PIDTYPE_PID) };
        // SAFETY: drops the reference find_get_pid took; `task` holds its own.
        unsafe { bindings::put_pid(pid) };
        core::ptr::NonNull::new(task).map(Task)
    }

    /// Its state, stack and saved stack pointer, read without locks (a fault injector
    /// wants a snapshot, not a consistent one).
    pub(crate) fn snapshot(&self) -> TaskState {
        let t = self.0.as_ptr();
        // SAFETY: we hold a reference on the task, so its task_struct stays valid; the
        // fields are read racily on purpose, as plain integers and a pointer, with volatile
        // reads for the two the task itself changes.
        let (state, exit, stack, sp) = unsafe {
            (
                core::ptr::read_volatile(core::ptr::addr_of!((*t).__state)),
                core::ptr::read_volatile(core::ptr::addr_of!((*t).exit_state)),
                (*t).stack as usize,
                (*t).thread.sp as usize,
            )
        };
        TaskState {
            sleeping: state & (bindings::TASK_INTERRUPTIBLE | bindings::TASK_UNINTERRUPTIBLE) != 0,
            exiting: exit != 0,
            stack,
            sp,
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        // SAFETY: drops the reference get_pid_task took in `find`.
        unsafe { bindings::put_task_struct(self.0.as_ptr()) };
    }
}

unsafe extern "C" fn panic_thread(data: *mut core::ffi::c_void) -> core::ffi::c_int {
    // SAFETY: a plain sleep; `data` carries the delay in ms (see `panic_after`).
    unsafe { bindings::msleep(data as usize as u32) };
    // SAFETY: panic with a constant format string and no arguments.
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

/// Starts a kernel thread running `f(data)`.
fn spawn(
    f: unsafe extern "C" fn(*mut core::ffi::c_void) -> core::ffi::c_int,
    data: usize,
    name: &'static CStr,
) -> Result {
    // SAFETY: `f` has the thread-function signature and takes `data` by value (an integer
    // in a pointer), so nothing it receives can dangle; the name is static.
    let t = unsafe {
        bindings::kthread_create_on_node(Some(f), data as *mut _, -1, name.as_char_ptr())
    };
    let t = kernel::error::from_err_ptr(t)?;
    // SAFETY: `t` is the fresh kthread just created, not yet woken.
    unsafe { bindings::wake_up_process(t) };
    Ok(())
}

/// Panics the kernel from a new kernel thread after `ms` milliseconds.
pub(crate) fn panic_after(ms: u32) -> Result {
    spawn(panic_thread, ms as usize, c"riofault-panic")
}

/// Hangs one CPU forever in a new kernel thread: spinning with preemption off, and with
/// interrupts off too if `irqs_off`.
pub(crate) fn hang_cpu(irqs_off: bool) -> Result {
    spawn(hang_thread, usize::from(irqs_off), c"riofault-hang")
}
