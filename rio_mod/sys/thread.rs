// SPDX-License-Identifier: GPL-2.0

//! A kernel thread running a `ThreadWork`, stopped and joined on drop.

use kernel::bindings;
use kernel::prelude::*;

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
