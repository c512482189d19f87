//! The `/dev/rio` ioctl ABI, mirrored from `rio_mod/uapi.rs` (see there for the table of
//! ioctls). Change both together.

/// The ABI version this crate speaks.
pub const RIO_ABI_VERSION: u32 = 3;

const RIO_IOC_MAGIC: u32 = 0xb7;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (RIO_IOC_MAGIC << 8) | nr
}

/// `RioInfo::state`: blank; only format works.
pub const STATE_UNFORMATTED: u32 = 0;
/// `RioInfo::state`: refused as corrupt or foreign.
pub const STATE_CORRUPT: u32 = 1;
/// `RioInfo::state`: in service.
pub const STATE_READY: u32 = 2;
/// Format flag: erase a non-blank arena.
pub const FORMAT_FORCE: u32 = 1;
/// Open flag: exclusive.
pub const OPEN_EXCLUSIVE: u32 = 1;
/// Object flag: mapped writable since its last writeback.
pub const OBJ_MAPPED: u32 = 2;
/// Object flag: damaged, cannot be opened.
pub const OBJ_DAMAGED: u32 = 1 << 8;
/// Object flag: has a block device (`/dev/riob<slot>`).
pub const OBJ_BLKDEV: u32 = 1 << 9;

/// `RIO_IOC_INFO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RioInfo {
    pub abi_version: u32,
    pub state: u32,
    pub arena_phys: u64,
    pub arena_size: u64,
    pub protect: u32,
    pub max_objects: u32,
    pub uuid: [u8; 16],
}

/// `RIO_IOC_FORMAT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RioFormat {
    pub flags: u32,
    pub _pad: u32,
}

/// `RIO_IOC_CREATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RioCreate {
    pub name: [u8; 64],
    pub size: u64,
    pub mode: u32,
    pub _pad: u32,
}

/// `RIO_IOC_OPEN`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RioOpen {
    pub name: [u8; 64],
    pub flags: u32,
    pub _pad: u32,
}

/// `RIO_IOC_DELETE`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RioName {
    pub name: [u8; 64],
}

/// `RIO_IOC_RESIZE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RioResize {
    pub size: u64,
}

/// `RIO_IOC_LIST` and `RIO_IOC_STAT` entries.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RioObjInfo {
    pub name: [u8; 64],
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub flags: u32,
    pub pages: u32,
    pub dirty_pages: u32,
    pub open_count: u32,
    pub slot: u32,
}

impl Default for RioObjInfo {
    fn default() -> Self {
        RioObjInfo {
            name: [0; 64],
            size: 0,
            uid: 0,
            gid: 0,
            mode: 0,
            flags: 0,
            pages: 0,
            dirty_pages: 0,
            open_count: 0,
            slot: 0,
        }
    }
}

/// `RIO_IOC_LIST`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RioList {
    pub buf: u64,
    pub capacity: u32,
    pub count: u32,
}

/// `RIO_IOC_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RioStats {
    pub objects: u64,
    pub data_pages: u64,
    pub pages_in_use: u64,
    pub dirty_pages: u64,
    pub windows_opened: u64,
    pub bytes_written: u64,
    pub bytes_written_back: u64,
    pub writebacks: u64,
    pub recoveries: u64,
    pub epoch: u64,
    pub quarantined_pages: u64,
    pub reclaimed_pages: u64,
}

/// `RIO_IOC_WILD_STORE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RioWildStore {
    pub offset: u64,
    pub value: u32,
    pub _pad: u32,
}

use std::mem::size_of;
pub const RIO_IOC_INFO: u32 = ioc(IOC_READ, 0x01, size_of::<RioInfo>());
pub const RIO_IOC_FORMAT: u32 = ioc(IOC_WRITE, 0x02, size_of::<RioFormat>());
pub const RIO_IOC_CREATE: u32 = ioc(IOC_WRITE, 0x03, size_of::<RioCreate>());
pub const RIO_IOC_OPEN: u32 = ioc(IOC_WRITE, 0x04, size_of::<RioOpen>());
pub const RIO_IOC_RESIZE: u32 = ioc(IOC_WRITE, 0x05, size_of::<RioResize>());
pub const RIO_IOC_DELETE: u32 = ioc(IOC_WRITE, 0x06, size_of::<RioName>());
pub const RIO_IOC_LIST: u32 = ioc(IOC_READ | IOC_WRITE, 0x07, size_of::<RioList>());
pub const RIO_IOC_STAT: u32 = ioc(IOC_READ, 0x08, size_of::<RioObjInfo>());
pub const RIO_IOC_STATS: u32 = ioc(IOC_READ, 0x09, size_of::<RioStats>());
pub const RIO_IOC_SYNC: u32 = ioc(IOC_NONE, 0x0a, 0);
pub const RIO_IOC_WILD_STORE: u32 = ioc(IOC_WRITE, 0x0b, size_of::<RioWildStore>());
pub const RIO_IOC_BLKDEV_ADD: u32 = ioc(IOC_NONE, 0x0c, 0);
pub const RIO_IOC_BLKDEV_REMOVE: u32 = ioc(IOC_NONE, 0x0d, 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(size_of::<RioInfo>(), 48);
        assert_eq!(size_of::<RioCreate>(), 80);
        assert_eq!(size_of::<RioOpen>(), 72);
        assert_eq!(size_of::<RioObjInfo>(), 104);
        assert_eq!(size_of::<RioStats>(), 96);
        assert_eq!(RIO_IOC_INFO, 0x8030_b701);
        assert_eq!(RIO_IOC_SYNC, 0x0000_b70a);
        assert_eq!(RIO_IOC_LIST, 0xc010_b707);
    }
}
