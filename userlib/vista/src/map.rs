//! Shared mappings of a backing: `mmap`, `msync`, `mprotect`, `munmap` behind one RAII type.

use std::ptr;

use crate::backing::Backing;
use crate::error::{Error, Result};

/// The page size Vista is built for (x86-64, most aarch64 configurations).
pub const PAGE: usize = 4096;

/// Checks that the running kernel uses [`PAGE`]-byte pages.
pub(crate) fn check_page_size() -> Result<()> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page != PAGE as libc::c_long {
        return Err(Error::InvalidConfig(format!(
            "page size is {page}, Vista needs {PAGE}"
        )));
    }
    Ok(())
}

/// Rounds `x` up to a multiple of [`PAGE`].
pub(crate) const fn page_up(x: usize) -> usize {
    (x + PAGE - 1) & !(PAGE - 1)
}

/// Where a fixed mapping goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Anywhere the kernel likes.
    Anywhere,
    /// Exactly at this address, which must be free (`MAP_FIXED_NOREPLACE`).
    Fixed(usize),
    /// Exactly at this address, replacing whatever memory is there (in-place segments).
    /// On drop, the range is turned back into private anonymous memory holding the
    /// mapping's last contents, so the process keeps running.
    InPlace(usize),
}

/// One `MAP_SHARED` mapping of a range of a backing.
#[derive(Debug)]
pub(crate) struct Mapping {
    addr: usize,
    len: usize,
    in_place: bool,
}

impl Mapping {
    /// Maps `len` bytes of `backing` at byte offset `off`.
    pub(crate) fn new(
        backing: &Backing,
        off: u64,
        len: usize,
        placement: Placement,
    ) -> Result<Mapping> {
        if len == 0 || len % PAGE != 0 || off % PAGE as u64 != 0 {
            return Err(Error::InvalidConfig(format!(
                "mapping of {len} bytes at offset {off} is not page-aligned"
            )));
        }
        if off + len as u64 > backing.len() {
            return Err(Error::BackingTooSmall {
                actual: backing.len(),
                needed: off + len as u64,
            });
        }
        let (hint, flags) = match placement {
            Placement::Anywhere => (0usize, libc::MAP_SHARED),
            Placement::Fixed(a) => (a, libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE),
            Placement::InPlace(a) => (a, libc::MAP_SHARED | libc::MAP_FIXED),
        };
        if hint % PAGE != 0 {
            return Err(Error::MisalignedAddress {
                addr: hint,
                page: PAGE,
            });
        }
        if hint != 0 && hint.checked_add(len).is_none() {
            return Err(Error::InvalidConfig(format!(
                "address {hint:#x}+{len} overflows"
            )));
        }
        // SAFETY: mapping a descriptor we hold. With MAP_FIXED_NOREPLACE the kernel refuses
        // to touch existing mappings; MAP_FIXED (in-place) replaces memory the caller
        // explicitly handed over (see `Segment::create_in_place`), whose contents were
        // copied into the backing first.
        let p = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                backing.raw_fd(),
                off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                return Err(Error::AddressInUse {
                    addr: hint,
                    end: hint + len,
                });
            }
            return Err(Error::Os {
                op: "mmap",
                source: err,
            });
        }
        let got = p as usize;
        if hint != 0 && got != hint {
            // An old kernel that ignores MAP_FIXED_NOREPLACE treats it as a hint.
            // SAFETY: unmapping exactly the mapping that was just created.
            unsafe { libc::munmap(p, len) };
            return Err(Error::AddressInUse {
                addr: hint,
                end: hint + len,
            });
        }
        Ok(Mapping {
            addr: got,
            len,
            in_place: matches!(placement, Placement::InPlace(_)),
        })
    }

    /// Start address.
    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    /// Start as a pointer.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `msync(MS_SYNC)` of the pages covering `[off, off + len)`.
    pub(crate) fn sync(&self, off: usize, len: usize) -> Result<()> {
        sync_range(self.addr + off, len)
    }

    /// Changes the protection of the pages covering `[off, off + len)`.
    pub(crate) fn protect(&self, off: usize, len: usize, writable: bool) -> Result<()> {
        let start = (self.addr + off) & !(PAGE - 1);
        let end = page_up(self.addr + off + len).min(self.addr + self.len);
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: the range lies within this mapping (clamped above); changing protection
        // cannot invalidate memory, only make stores fault (which implicit mode handles).
        let rc = unsafe { libc::mprotect(start as *mut libc::c_void, end - start, prot) };
        if rc != 0 {
            return Err(Error::last_os("mprotect"));
        }
        Ok(())
    }
}

/// `msync(MS_SYNC)` of the pages covering `[addr, addr + len)`.
pub(crate) fn sync_range(addr: usize, len: usize) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let start = addr & !(PAGE - 1);
    let end = page_up(addr + len);
    // SAFETY: msync only flushes; callers pass ranges inside their own shared mappings.
    let rc = unsafe { libc::msync(start as *mut libc::c_void, end - start, libc::MS_SYNC) };
    if rc != 0 {
        return Err(Error::last_os("msync"));
    }
    Ok(())
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.in_place {
            restore_anonymous(self.addr, self.len);
            return;
        }
        // SAFETY: we created this mapping and nobody else unmaps it; every reference into
        // it is tied to a borrow of the owner, which is being dropped.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// Turns an in-place shared mapping back into private anonymous memory with the same
/// contents, so code that lives in (or points into) that range keeps working.
fn restore_anonymous(addr: usize, len: usize) {
    let mut copy = vec![0u8; len];
    // SAFETY: [addr, addr+len) is our live mapping, readable (protection may have been
    // reduced to read-only by implicit mode, which still allows this read).
    unsafe { ptr::copy_nonoverlapping(addr as *const u8, copy.as_mut_ptr(), len) };
    // SAFETY: replaces exactly our own mapping with fresh anonymous memory at the same
    // address; nothing else is mapped there.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        // Leave the shared mapping in place rather than a hole.
        return;
    }
    // SAFETY: the new anonymous mapping is writable and `len` bytes long.
    unsafe { ptr::copy_nonoverlapping(copy.as_ptr(), addr as *mut u8, len) };
}
