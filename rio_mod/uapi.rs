// SPDX-License-Identifier: GPL-2.0

//! The `/dev/rio` ioctl ABI. Mirrored in `userlib/rio-client/src/uapi.rs`: change both, and
//! bump [`RIO_ABI_VERSION`] on any incompatible change. All structs are `repr(C)` with
//! explicit padding, little endian, the same on every 64-bit target.
//!
//! | ioctl | on | does |
//! |---|---|---|
//! | `RIO_IOC_INFO` | any fd | ABI version, arena range, state, protection |
//! | `RIO_IOC_FORMAT` | any fd | format the arena (refused if not blank, unless `FORCE`) |
//! | `RIO_IOC_CREATE` | any fd | create a named object |
//! | `RIO_IOC_OPEN` | unbound fd | bind the fd to an object: then pread/pwrite/mmap |
//! | `RIO_IOC_RESIZE` | bound fd | change the bound object's size |
//! | `RIO_IOC_DELETE` | any fd | delete a named object that nobody has open |
//! | `RIO_IOC_LIST` | any fd | list objects into a user buffer |
//! | `RIO_IOC_STAT` | bound fd | the bound object's attributes |
//! | `RIO_IOC_STATS` | any fd | counters |
//! | `RIO_IOC_SYNC` | any fd | write every dirty page back now |
//! | `RIO_IOC_WILD_STORE` | any fd | debug: a wild kernel store into the arena |
//! | `RIO_IOC_BLKDEV_ADD` | bound fd (writable) | create `/dev/riobN` over the object; returns N |
//! | `RIO_IOC_BLKDEV_REMOVE` | bound fd | remove the object's block device (not while open) |

use kernel::ioctl::{_IO, _IOR, _IOW, _IOWR};
use kernel::transmute::{AsBytes, FromBytes};

/// Version of this ABI.
pub(crate) const RIO_ABI_VERSION: u32 = 3;

/// The ioctl type byte for `/dev/rio`.
const RIO_IOC_MAGIC: u32 = 0xb7;

/// `RioInfo::state`: no valid arena (blank or refused); only `FORMAT` works.
pub(crate) const STATE_UNFORMATTED: u32 = 0;
/// `RioInfo::state`: refused as corrupt or foreign; `FORMAT` with `FORCE` erases it.
pub(crate) const STATE_CORRUPT: u32 = 1;
/// `RioInfo::state`: in service.
pub(crate) const STATE_READY: u32 = 2;

/// `RioFormat::flags`: erase a non-blank arena.
pub(crate) const FORMAT_FORCE: u32 = 1;
/// `RioOpen::flags`: fail with `EBUSY` if anyone else has the object open, and keep others
/// out while it is open.
pub(crate) const OPEN_EXCLUSIVE: u32 = 1;
/// `RioObjInfo::flags`: the object could not be fully recovered; it cannot be opened.
pub(crate) const OBJ_DAMAGED: u32 = 1 << 8;
/// `RioObjInfo::flags`: the object has a block device (`/dev/riob<slot>`).
pub(crate) const OBJ_BLKDEV: u32 = 1 << 9;

/// `RIO_IOC_INFO`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct RioInfo {
    pub(crate) abi_version: u32,
    pub(crate) state: u32,
    pub(crate) arena_phys: u64,
    pub(crate) arena_size: u64,
    pub(crate) protect: u32,
    pub(crate) max_objects: u32,
    pub(crate) uuid: [u8; 16],
}

/// `RIO_IOC_FORMAT`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct RioFormat {
    pub(crate) flags: u32,
    pub(crate) _pad: u32,
}

/// `RIO_IOC_CREATE`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RioCreate {
    pub(crate) name: [u8; 64],
    pub(crate) size: u64,
    pub(crate) mode: u32,
    pub(crate) _pad: u32,
}

/// `RIO_IOC_OPEN`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RioOpen {
    pub(crate) name: [u8; 64],
    pub(crate) flags: u32,
    pub(crate) _pad: u32,
}

/// `RIO_IOC_DELETE`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RioName {
    pub(crate) name: [u8; 64],
}

/// `RIO_IOC_RESIZE`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct RioResize {
    pub(crate) size: u64,
}

/// One object, as `RIO_IOC_LIST` and `RIO_IOC_STAT` describe it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RioObjInfo {
    pub(crate) name: [u8; 64],
    pub(crate) size: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
    pub(crate) flags: u32,
    pub(crate) pages: u32,
    pub(crate) dirty_pages: u32,
    pub(crate) open_count: u32,
    /// The slot: the N of `/dev/riobN`.
    pub(crate) slot: u32,
}

/// `RIO_IOC_LIST`: the user passes a buffer of `capacity` [`RioObjInfo`]s at `buf`; the
/// module fills up to `capacity` and sets `count` to the number of objects in all.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct RioList {
    pub(crate) buf: u64,
    pub(crate) capacity: u32,
    pub(crate) count: u32,
}

/// `RIO_IOC_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct RioStats {
    pub(crate) objects: u64,
    pub(crate) data_pages: u64,
    pub(crate) pages_in_use: u64,
    pub(crate) dirty_pages: u64,
    pub(crate) windows_opened: u64,
    pub(crate) bytes_written: u64,
    pub(crate) bytes_written_back: u64,
    pub(crate) writebacks: u64,
    pub(crate) recoveries: u64,
    pub(crate) epoch: u64,
    pub(crate) quarantined_pages: u64,
    pub(crate) reclaimed_pages: u64,
}

/// `RIO_IOC_WILD_STORE`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct RioWildStore {
    pub(crate) offset: u64,
    pub(crate) value: u32,
    pub(crate) _pad: u32,
}

macro_rules! plain_data {
    ($($t:ty),*) => {$(
        // SAFETY: `repr(C)`, integer and byte-array fields only, explicit padding fields: no
        // implicit padding, and every bit pattern is valid.
        unsafe impl AsBytes for $t {}
        // SAFETY: as above.
        unsafe impl FromBytes for $t {}
    )*};
}
plain_data!(RioInfo, RioFormat, RioCreate, RioOpen, RioName, RioResize, RioObjInfo, RioList, RioStats, RioWildStore);

pub(crate) const RIO_IOC_INFO: u32 = _IOR::<RioInfo>(RIO_IOC_MAGIC, 0x01);
pub(crate) const RIO_IOC_FORMAT: u32 = _IOW::<RioFormat>(RIO_IOC_MAGIC, 0x02);
pub(crate) const RIO_IOC_CREATE: u32 = _IOW::<RioCreate>(RIO_IOC_MAGIC, 0x03);
pub(crate) const RIO_IOC_OPEN: u32 = _IOW::<RioOpen>(RIO_IOC_MAGIC, 0x04);
pub(crate) const RIO_IOC_RESIZE: u32 = _IOW::<RioResize>(RIO_IOC_MAGIC, 0x05);
pub(crate) const RIO_IOC_DELETE: u32 = _IOW::<RioName>(RIO_IOC_MAGIC, 0x06);
pub(crate) const RIO_IOC_LIST: u32 = _IOWR::<RioList>(RIO_IOC_MAGIC, 0x07);
pub(crate) const RIO_IOC_STAT: u32 = _IOR::<RioObjInfo>(RIO_IOC_MAGIC, 0x08);
pub(crate) const RIO_IOC_STATS: u32 = _IOR::<RioStats>(RIO_IOC_MAGIC, 0x09);
pub(crate) const RIO_IOC_SYNC: u32 = _IO(RIO_IOC_MAGIC, 0x0a);
pub(crate) const RIO_IOC_WILD_STORE: u32 = _IOW::<RioWildStore>(RIO_IOC_MAGIC, 0x0b);
pub(crate) const RIO_IOC_BLKDEV_ADD: u32 = _IO(RIO_IOC_MAGIC, 0x0c);
pub(crate) const RIO_IOC_BLKDEV_REMOVE: u32 = _IO(RIO_IOC_MAGIC, 0x0d);
