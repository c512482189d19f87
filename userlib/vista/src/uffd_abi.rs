//! The userfaultfd ABI (`linux/userfaultfd.h`, x86-64): the constants and `#[repr(C)]`
//! structs Vista's implicit mode ([`LogMode::ImplicitUffd`](crate::LogMode::ImplicitUffd))
//! and Discount Checking's dirty-page tracker both use, declared once.

/// `UFFD_API`: the API version `UFFDIO_API` negotiates.
pub const UFFD_API: u64 = 0xAA;
/// `UFFD_USER_MODE_ONLY`: a `userfaultfd(2)` flag (Linux 5.11+): handle user-mode faults
/// only, which unprivileged processes may ask for.
pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
/// `UFFD_FEATURE_PAGEFAULT_FLAG_WP`: report write-protect faults.
pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// `UFFD_FEATURE_WP_HUGETLBFS_SHMEM`: write-protect on shmem and hugetlbfs.
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
/// `UFFD_FEATURE_WP_ASYNC`: write-protect faults resolved by the kernel, no event (6.7+).
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFD_EVENT_PAGEFAULT`: the event type of a fault message.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFD_PAGEFAULT_FLAG_WP`: the fault was a write to a write-protected page.
pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;
/// `UFFDIO_REGISTER_MODE_WP`: register a range for write-protect tracking.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_WRITEPROTECT_MODE_WP`: set (rather than clear) the protection.
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
/// `UFFDIO_API` = `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
pub const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
/// `UFFDIO_REGISTER` = `_IOWR(0xAA, 0x00, struct uffdio_register)`.
pub const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
/// `UFFDIO_UNREGISTER` = `_IOR(0xAA, 0x01, struct uffdio_range)`.
pub const UFFDIO_UNREGISTER: libc::c_ulong = 0x8010_AA01;
/// `UFFDIO_WRITEPROTECT` = `_IOWR(0xAA, 0x06, struct uffdio_writeprotect)`.
pub const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xC018_AA06;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct UffdioApi {
    /// [`UFFD_API`].
    pub api: u64,
    /// Features asked for (in) and available (out).
    pub features: u64,
    /// Ioctls available (out).
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct UffdioRange {
    /// Start address (page-aligned).
    pub start: u64,
    /// Length in bytes (whole pages).
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct UffdioRegister {
    /// The range.
    pub range: UffdioRange,
    /// `UFFDIO_REGISTER_MODE_*`.
    pub mode: u64,
    /// Ioctls available on the range (out).
    pub ioctls: u64,
}

/// `struct uffdio_writeprotect`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct UffdioWriteprotect {
    /// The range.
    pub range: UffdioRange,
    /// `UFFDIO_WRITEPROTECT_MODE_*`.
    pub mode: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_ioctl_numbers() {
        // The size is bits 16..30 of an ioctl number.
        let size = |req: libc::c_ulong| ((req >> 16) & 0x3fff) as usize;
        assert_eq!(size(UFFDIO_API), std::mem::size_of::<UffdioApi>());
        assert_eq!(size(UFFDIO_REGISTER), std::mem::size_of::<UffdioRegister>());
        assert_eq!(size(UFFDIO_UNREGISTER), std::mem::size_of::<UffdioRange>());
        assert_eq!(
            size(UFFDIO_WRITEPROTECT),
            std::mem::size_of::<UffdioWriteprotect>()
        );
    }
}
