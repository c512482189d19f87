// SPDX-License-Identifier: GPL-2.0

//! The `/dev/rio` ioctl ABI. Mirrored in `userlib/rio-client/src/uapi.rs`: change both, and
//! bump [`RIO_ABI_VERSION`] on any incompatible change.

use kernel::ioctl::_IOR;

/// Version of this ABI.
pub(crate) const RIO_ABI_VERSION: u32 = 1;

/// The ioctl type byte for `/dev/rio`.
const RIO_IOC_MAGIC: u32 = 0xb7;

/// `RIO_IOC_INFO`: what the module was loaded with.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct RioInfo {
    /// [`RIO_ABI_VERSION`].
    pub(crate) abi_version: u32,
    /// Reserved, zero.
    pub(crate) flags: u32,
    /// Physical start of the arena.
    pub(crate) arena_phys: u64,
    /// Arena size in bytes.
    pub(crate) arena_size: u64,
}

// SAFETY: `RioInfo` is `repr(C)` with only integer fields and no padding (4 + 4 + 8 + 8).
unsafe impl kernel::transmute::AsBytes for RioInfo {}

/// Reads a [`RioInfo`].
pub(crate) const RIO_IOC_INFO: u32 = _IOR::<RioInfo>(RIO_IOC_MAGIC, 0x01);
