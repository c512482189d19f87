// SPDX-License-Identifier: GPL-2.0

//! The backing block device, opened exclusively, read and written through its page
//! cache and synced.

use kernel::bindings;
use kernel::prelude::*;

/// `BLK_OPEN_READ` and `BLK_OPEN_WRITE` from include/linux/blkdev.h (not in the bindings:
/// they are `__force` casts).
const BLK_OPEN_READ_WRITE: u32 = (1 << 0) | (1 << 1);
const SEEK_END: core::ffi::c_int = 2;

/// A block device opened exclusively for reading and writing; closed on drop. I/O goes
/// through the device's page cache (`kernel_read`/`kernel_write`) and [`Self::sync`] makes
/// it durable.
pub(crate) struct BlockFile {
    file: *mut bindings::file,
}

// SAFETY: a `struct file` may be used and released from any thread.
unsafe impl Send for BlockFile {}
// SAFETY: the VFS read/write paths used here are safe to call concurrently.
unsafe impl Sync for BlockFile {}

impl BlockFile {
    /// Opens device `major:minor`; `holder` identifies rio.ko as its exclusive user.
    pub(crate) fn open(major: u32, minor: u32, holder: *mut core::ffi::c_void) -> Result<Self> {
        if major >= 1 << 12 || minor >= 1 << 20 {
            return Err(EINVAL);
        }
        let dev = (major << 20) | minor;
        // SAFETY: `dev` is any device number; `holder` is an opaque non-null cookie; no
        // holder ops.
        let file = unsafe {
            bindings::bdev_file_open_by_dev(dev, BLK_OPEN_READ_WRITE, holder, core::ptr::null())
        };
        let file = kernel::error::from_err_ptr(file)?;
        Ok(Self { file })
    }

    /// Size in bytes.
    pub(crate) fn size(&self) -> Result<u64> {
        // SAFETY: `self.file` is an open file.
        let n = unsafe { bindings::vfs_llseek(self.file, 0, SEEK_END) };
        u64::try_from(n).map_err(|_| EIO)
    }

    /// Reads exactly `buf.len()` bytes at `pos`.
    pub(crate) fn read_at(&self, buf: &mut [u8], pos: u64) -> Result {
        let mut off = i64::try_from(pos).map_err(|_| EINVAL)?;
        // SAFETY: `buf` is valid for writes of its length; `off` is a local.
        let n = unsafe {
            bindings::kernel_read(self.file, buf.as_mut_ptr().cast(), buf.len(), &mut off)
        };
        if n < 0 {
            return Err(Error::from_errno(n as i32));
        }
        if n as usize != buf.len() {
            return Err(EIO);
        }
        Ok(())
    }

    /// Writes all of `buf` at `pos`.
    pub(crate) fn write_at(&self, buf: &[u8], pos: u64) -> Result {
        let mut off = i64::try_from(pos).map_err(|_| EINVAL)?;
        // SAFETY: `buf` is valid for reads of its length; `off` is a local.
        let n =
            unsafe { bindings::kernel_write(self.file, buf.as_ptr().cast(), buf.len(), &mut off) };
        if n < 0 {
            return Err(Error::from_errno(n as i32));
        }
        if n as usize != buf.len() {
            return Err(EIO);
        }
        Ok(())
    }

    /// Writes the device's dirty cache out and flushes its write cache.
    pub(crate) fn sync(&self) -> Result {
        // SAFETY: `self.file` is an open file.
        kernel::error::to_result(unsafe { bindings::vfs_fsync(self.file, 0) })
    }
}

impl Drop for BlockFile {
    fn drop(&mut self) {
        // SAFETY: the file came from `bdev_file_open_by_dev` and is released once, here.
        unsafe { bindings::fput(self.file) };
    }
}
