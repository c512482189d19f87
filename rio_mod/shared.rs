// SPDX-License-Identifier: GPL-2.0

//! Memory that others may write while rio.ko copies it, reached only by raw copies.
//!
//! Arena frames are written concurrently by user mappings (stores through `mmap`), by block
//! requests of `/dev/riobN` and by another CPU's window onto the same frame; the pages of a
//! block request may be a user's `O_DIRECT` buffer. None of that memory may become a Rust
//! `&[u8]` or `&mut [u8]`: a reference promises that nobody else writes (or, for `&mut`,
//! reads) the bytes while it lives, and here that is false. [`Shared`] and [`SharedMut`]
//! are a pointer and a length with bounds-checked copy methods instead.
//!
//! A copy that races a writer sees, byte by byte, the old or the new value: the same
//! guarantee the C `memcpy` the page cache uses gives, and all that the callers need (a
//! racing `pwrite` and a store through a mapping have no defined order anyway).

use kernel::prelude::*;

/// A read-only view of `len` bytes of shared memory at `ptr`.
#[derive(Clone, Copy)]
pub(crate) struct Shared {
    ptr: *const u8,
    len: usize,
}

/// A writable view of `len` bytes of shared memory at `ptr`.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut {
    ptr: *mut u8,
    len: usize,
}

fn check(len: usize, off: usize, n: usize) -> Result {
    match off.checked_add(n) {
        Some(end) if end <= len => Ok(()),
        _ => {
            pr_err!(
                "internal error: shared copy {}+{} outside {} bytes\n",
                off,
                n,
                len
            );
            Err(EIO)
        }
    }
}

impl Shared {
    /// A view of `ptr..ptr + len`.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` is mapped, readable kernel memory for as long as this value (or a
    /// copy of it) is used.
    pub(crate) unsafe fn new(ptr: *const u8, len: usize) -> Self {
        Self { ptr, len }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The start address, for kernel calls that copy from it themselves.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Copies `dst.len()` bytes from offset `off` into `dst`.
    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) -> Result {
        check(self.len, off, dst.len())?;
        // SAFETY: `off + dst.len() <= len` (checked), so the source lies inside the readable
        // range promised by `new`; `dst` is a distinct, exclusively borrowed kernel buffer, so
        // the ranges do not overlap. No reference to the shared bytes is formed.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Reads the aligned `u64` at `off` with one load (so a concurrent single-store writer
    /// is seen entirely or not at all).
    pub(crate) fn read_u64(&self, off: usize) -> Result<u64> {
        check(self.len, off, 8)?;
        if (self.ptr as usize + off) % 8 != 0 {
            return Err(EINVAL);
        }
        // SAFETY: in bounds (checked) and 8-byte aligned (checked), so one aligned load of
        // readable memory.
        Ok(unsafe { core::ptr::read_volatile(self.ptr.add(off).cast::<u64>()) })
    }

    /// The sub-range `off..off + n`.
    pub(crate) fn slice(&self, off: usize, n: usize) -> Result<Shared> {
        check(self.len, off, n)?;
        // SAFETY: a sub-range of a range that satisfies `new`'s contract satisfies it too.
        Ok(unsafe { Shared::new(self.ptr.add(off), n) })
    }
}

impl SharedMut {
    /// A writable view of `ptr..ptr + len`.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` is mapped, readable and writable kernel memory for as long as this
    /// value (or a copy of it) is used.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Self { ptr, len }
    }

    /// The same bytes, read-only.
    pub(crate) fn as_shared(&self) -> Shared {
        Shared {
            ptr: self.ptr,
            len: self.len,
        }
    }

    /// The start address, for kernel calls that copy into it themselves.
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `src` to offset `off`.
    pub(crate) fn write(&self, off: usize, src: &[u8]) -> Result {
        check(self.len, off, src.len())?;
        // SAFETY: the destination is inside the writable range promised by `new` (checked);
        // `src` is a kernel buffer borrowed from elsewhere, so the ranges do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) };
        Ok(())
    }

    /// Copies all of `src` (another shared range) to offset `off`.
    pub(crate) fn copy_from(&self, off: usize, src: Shared) -> Result {
        check(self.len, off, src.len)?;
        // SAFETY: both ranges are valid per their constructors and in bounds (checked).
        // They may be the same memory only if a caller copies an arena page onto itself,
        // which no caller does; `copy` (memmove) is used anyway so that even that is
        // defined.
        unsafe { core::ptr::copy(src.ptr, self.ptr.add(off), src.len) };
        Ok(())
    }

    /// Sets `n` bytes from `off` to `byte`.
    pub(crate) fn fill(&self, off: usize, n: usize, byte: u8) -> Result {
        check(self.len, off, n)?;
        // SAFETY: in bounds of the writable range (checked).
        unsafe { core::ptr::write_bytes(self.ptr.add(off), byte, n) };
        Ok(())
    }

    /// Stores the aligned `u64` at `off` with one store (so it is never torn).
    pub(crate) fn write_u64(&self, off: usize, value: u64) -> Result {
        check(self.len, off, 8)?;
        if (self.ptr as usize + off) % 8 != 0 {
            return Err(EINVAL);
        }
        // SAFETY: in bounds and 8-byte aligned (both checked): one aligned store.
        unsafe { core::ptr::write_volatile(self.ptr.add(off).cast::<u64>(), value) };
        Ok(())
    }

    /// The sub-range `off..off + n`.
    pub(crate) fn slice(&self, off: usize, n: usize) -> Result<SharedMut> {
        check(self.len, off, n)?;
        // SAFETY: a sub-range of a range that satisfies `new`'s contract satisfies it too.
        Ok(unsafe { SharedMut::new(self.ptr.add(off), n) })
    }
}
