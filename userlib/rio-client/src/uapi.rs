//! The `/dev/rio` ioctl ABI, mirrored from `rio_mod/uapi.rs`. Change both together.

/// The ABI version this crate speaks.
pub const RIO_ABI_VERSION: u32 = 1;

const RIO_IOC_MAGIC: u32 = 0xb7;

const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (RIO_IOC_MAGIC << 8) | nr
}

/// `RIO_IOC_INFO` result.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RioInfo {
    /// The module's ABI version.
    pub abi_version: u32,
    /// Reserved.
    pub flags: u32,
    /// Physical start of the arena.
    pub arena_phys: u64,
    /// Arena size in bytes.
    pub arena_size: u64,
}

/// Reads a [`RioInfo`].
pub const RIO_IOC_INFO: u32 = ioc(IOC_READ, 0x01, std::mem::size_of::<RioInfo>());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_encoding() {
        // _IOR(0xb7, 1, 24) as the kernel computes it.
        assert_eq!(RIO_IOC_INFO, 0x8018_b701);
        assert_eq!(std::mem::size_of::<RioInfo>(), 24);
    }
}
