//! Where Discount Checking's messages go: the file `DC_LOG` names (for a program that owns
//! the terminal, such as a full-screen editor), else stderr. Kept out of [`crate::sys`] so
//! that the lowest layer does not depend on the volatile page, which depends on it.

use std::sync::atomic::Ordering;

use crate::sys;

fn fd() -> i32 {
    let fd = crate::vol::get().log_fd.load(Ordering::Acquire);
    if fd >= 0 {
        fd
    } else {
        2
    }
}

/// Prints a diagnostic line with a raw write (safe in any state, including the middle of
/// recovery).
pub fn diag(msg: &str) {
    sys::diag_to(fd(), msg);
}

/// Prints a diagnostic and ends the process (`abort`).
pub fn fatal(msg: &str) -> ! {
    sys::fatal_to(fd(), msg)
}
