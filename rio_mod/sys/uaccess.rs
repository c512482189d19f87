// SPDX-License-Identifier: GPL-2.0

//! Copies between user memory and shared memory that never sleep (no page faults
//! taken: usable under the store's lock), and walking a user iov_iter.

use kernel::bindings;
use kernel::prelude::*;

use crate::shared::{Shared, SharedMut};

/// The user address of the next byte of `raw` if it is a single user buffer (ITER_UBUF).
///
/// # Safety
///
/// `raw` is a live `iov_iter` that the caller holds exclusively for the call.
unsafe fn ubuf_next_raw(raw: *mut bindings::iov_iter) -> Option<usize> {
    // SAFETY: per the contract `raw` is live and not written meanwhile. For ITER_UBUF the
    // union holds `__ubuf_iovec` (base and length), and the next byte is
    // `base + iov_offset`, exactly as lib/iov_iter.c computes it.
    unsafe {
        if (*raw).iter_type != bindings::iter_type_ITER_UBUF as u8 {
            return None;
        }
        let base = (*raw).__bindgen_anon_1.__ubuf_iovec.as_ref().iov_base as usize;
        Some(base + (*raw).iov_offset)
    }
}

/// If `iov` is a single user buffer (what `write` and `pwrite` produce), the user address
/// of its next byte.
pub(crate) fn ubuf_next(iov: &mut kernel::iov::IovIterSource<'_>) -> Option<usize> {
    // SAFETY: `as_raw` gives the live iov_iter of this call, which our `&mut` holds
    // exclusively.
    unsafe { ubuf_next_raw(iov.as_raw()) }
}

/// If `iov` is a single user buffer (what `read` and `pread` produce), the user address
/// its next byte goes to.
pub(crate) fn ubuf_next_dest(iov: &mut kernel::iov::IovIterDest<'_>) -> Option<usize> {
    // SAFETY: as for a source: the live iov_iter of this call, held through our `&mut`.
    unsafe { ubuf_next_raw(iov.as_raw()) }
}

/// Copies `dst.len()` bytes from user address `src` into `dst` without sleeping (safe with
/// preemption off and under locks the fault path takes): fails instead of faulting a page
/// in, so it never takes `mmap_lock`.
pub(crate) fn copy_from_user_nofault(dst: SharedMut, src: usize) -> Result {
    // SAFETY: `dst` is writable kernel memory of its length (its constructor's contract);
    // copy_from_user_nofault checks that `src..src + len` is a user range, disables page
    // faults around the copy and returns non-zero instead of faulting.
    let r = unsafe {
        bindings::copy_from_user_nofault(
            dst.as_mut_ptr().cast(),
            src as *const core::ffi::c_void,
            dst.len(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(EFAULT)
    }
}

/// Copies `src` to user address `dst` without sleeping; fails instead of faulting (the
/// counterpart of [`copy_from_user_nofault`], for reads).
pub(crate) fn copy_to_user_nofault(dst: usize, src: Shared) -> Result {
    // SAFETY: `src` is readable kernel memory of its length; copy_to_user_nofault checks
    // that `dst..dst + len` is a user range and fails instead of faulting.
    let r = unsafe {
        bindings::copy_to_user_nofault(
            dst as *mut core::ffi::c_void,
            src.as_ptr().cast(),
            src.len(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(EFAULT)
    }
}
