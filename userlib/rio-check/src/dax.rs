//! `rio-check dax FILE...`: whether files are accessed through DAX (the pmem-dax peer:
//! ext4 `-o dax` on `/dev/pmem0`), as `statx(2)` reports it (`STATX_ATTR_DAX`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::{Error, Result};

/// `STATX_ATTR_DAX` (include/uapi/linux/stat.h): the file's data bypasses the page cache.
const ATTR_DAX: u64 = libc::STATX_ATTR_DAX as u64;

/// Whether `path` is a DAX file: `Ok(false)` when the kernel says it is not, or when it
/// does not report the attribute at all (it does not know it, or the file system cannot
/// tell), so a `true` is never a guess.
pub fn is_dax(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Io {
        what: format!("statx of {}", path.display()),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let mut st = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` is a writable `struct statx` that the
    // call fills in; the flags and mask are plain integers.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_BASIC_STATS,
            st.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(Error::Io {
            what: format!("statx of {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: statx returned 0, so it wrote the structure (which started zeroed anyway).
    let st = unsafe { st.assume_init() };
    Ok(st.stx_attributes_mask & ATTR_DAX != 0 && st.stx_attributes & ATTR_DAX != 0)
}
