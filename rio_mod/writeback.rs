// SPDX-License-Identifier: GPL-2.0

//! The background writeback thread: every `writeback_ms` it writes dirty pages back to the
//! backing device. Stopped (and waited for) before the store is shut down.

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::service::Rio;
use crate::sys::{self, Kthread, ThreadWork};

/// The thread's state.
pub(crate) struct Writeback {
    rio: Arc<Rio>,
    interval_ms: u32,
}

impl Writeback {
    /// Starts the thread.
    pub(crate) fn start(rio: Arc<Rio>, interval_ms: u32) -> Result<Kthread<Writeback>> {
        let work = Arc::new(Writeback { rio, interval_ms }, GFP_KERNEL)?;
        Kthread::spawn(c"rio-writeback", work)
    }
}

impl ThreadWork for Writeback {
    fn run(&self) {
        let mut failing = false;
        while !sys::kthread_should_stop() {
            sys::sleep_interruptible(self.interval_ms);
            if sys::kthread_should_stop() {
                break;
            }
            match self.rio.state.lock().writeback(None) {
                Ok(_) => failing = false,
                // Say it once per failure streak, not every interval.
                Err(e) if !failing => {
                    pr_err!("background writeback failed: error {}\n", e.to_errno());
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
