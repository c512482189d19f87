// SPDX-License-Identifier: GPL-2.0

//! The `/dev/rio` ioctl ABI: the one definition of its structs, numbers and flags. Pure
//! `core` code, like `format.rs`: rio.ko compiles it (through [`crate::uapi`], which adds
//! the kernel's byte-view traits) and so does the host crate `userlib/rio-client` (by
//! path). The size and offset assertions at the bottom run in both builds.
//!
//! All structs are `repr(C)` with explicit padding, little endian, the same on every
//! 64-bit target. Bump [`RIO_ABI_VERSION`] on any incompatible change.
//!
//! | ioctl | on | does | who may (see README "Security model") |
//! |---|---|---|---|
//! | `RIO_IOC_INFO` | any fd | ABI version, arena range, state, protection | anyone |
//! | `RIO_IOC_FORMAT` | any fd | format the arena (refused if not blank, unless `FORCE`) | admin |
//! | `RIO_IOC_CREATE` | any fd | create a named object | anyone, within the per-user limits |
//! | `RIO_IOC_OPEN` | unbound fd | bind the fd to an object: then pread/pwrite/mmap | by owner/other mode bits; admin |
//! | `RIO_IOC_RESIZE` | bound fd (writable) | change the bound object's size | writers |
//! | `RIO_IOC_DELETE` | any fd | delete a named object that nobody has open | owner, admin |
//! | `RIO_IOC_LIST` | any fd | list objects into a user buffer | anyone |
//! | `RIO_IOC_STAT` | bound fd | the bound object's attributes | the binder |
//! | `RIO_IOC_STATS` | any fd | counters | anyone |
//! | `RIO_IOC_SYNC` | any fd | write dirty pages back now | admin: all; others: their own |
//! | `RIO_IOC_WILD_STORE` | any fd | debug: a wild kernel store into the arena | admin, `allow_wild_store=1` |
//! | `RIO_IOC_BLKDEV_ADD` | bound fd (writable) | create `/dev/riobN` over the object; returns N | admin |
//! | `RIO_IOC_BLKDEV_REMOVE` | bound fd | remove the object's block device (not while open) | admin |

// Items are `pub` for the host crate that also compiles this file; in rio.ko they are
// crate-visible only.
#![allow(unreachable_pub, dead_code)]

use core::mem::{offset_of, size_of};

/// Version of this ABI. 4: per-user limits, `RioStats` slow-path counters, uids in the
/// caller's user namespace.
pub const RIO_ABI_VERSION: u32 = 4;

/// The ioctl type byte for `/dev/rio`.
pub const RIO_IOC_MAGIC: u32 = 0xb7;

const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// The Linux `_IOC` encoding (include/uapi/asm-generic/ioctl.h; x86 uses the generic one).
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// `RioInfo::state`: no valid arena (blank or refused); only `FORMAT` works.
pub const STATE_UNFORMATTED: u32 = 0;
/// `RioInfo::state`: refused as corrupt or foreign; `FORMAT` with `FORCE` erases it.
pub const STATE_CORRUPT: u32 = 1;
/// `RioInfo::state`: in service.
pub const STATE_READY: u32 = 2;

/// `RioFormat::flags`: erase a non-blank arena.
pub const FORMAT_FORCE: u32 = 1;
/// `RioOpen::flags`: fail with `EBUSY` if anyone else has the object open, and keep others
/// out while it is open. Needs a writable fd and write permission.
pub const OPEN_EXCLUSIVE: u32 = 1;
/// `RioObjInfo::flags`: mapped writable (or by a block device) since its last writeback.
pub const OBJ_MAPPED: u32 = 2;
/// `RioObjInfo::flags`: the object could not be fully recovered; it cannot be opened.
pub const OBJ_DAMAGED: u32 = 1 << 8;
/// `statfs(2)`'s `f_type` of a riofs mount (`"RIOF"`). rio.ko hands this value to its C
/// VFS glue at registration, so this is its one definition.
pub const RIOFS_MAGIC: u32 = 0x5249_4f46;
/// `RioObjInfo::flags`: the object has a block device (`/dev/riob<slot>`).
pub const OBJ_BLKDEV: u32 = 1 << 9;

/// The uid reported for an owner that has no mapping in the caller's user namespace
/// (the kernel's default `overflowuid`).
pub const OVERFLOW_UID: u32 = 65534;

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

/// One object, as `RIO_IOC_LIST` and `RIO_IOC_STAT` describe it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RioObjInfo {
    pub name: [u8; 64],
    pub size: u64,
    /// Owner, in the caller's user namespace ([`OVERFLOW_UID`] if unmapped there).
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub flags: u32,
    pub pages: u32,
    pub dirty_pages: u32,
    pub open_count: u32,
    /// The slot: the N of `/dev/riobN`.
    pub slot: u32,
}

impl RioObjInfo {
    /// All zero.
    pub const ZERO: RioObjInfo = RioObjInfo {
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
    };
}

impl Default for RioObjInfo {
    fn default() -> Self {
        Self::ZERO
    }
}

/// `RIO_IOC_LIST`: the user passes a buffer of `capacity` [`RioObjInfo`]s at `buf`; the
/// module fills up to `capacity` and sets `count` to the number of objects in all.
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
    /// Pieces of `pwrite` whose user page was not resident: copied through a bounce page.
    pub slow_writes: u64,
    /// Pieces of `pread` whose user page was not resident: copied through a bounce page.
    pub slow_reads: u64,
}

/// `RIO_IOC_WILD_STORE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RioWildStore {
    pub offset: u64,
    pub value: u32,
    pub _pad: u32,
}

pub const RIO_IOC_INFO: u32 = ioc(IOC_READ, RIO_IOC_MAGIC, 0x01, size_of::<RioInfo>());
pub const RIO_IOC_FORMAT: u32 = ioc(IOC_WRITE, RIO_IOC_MAGIC, 0x02, size_of::<RioFormat>());
pub const RIO_IOC_CREATE: u32 = ioc(IOC_WRITE, RIO_IOC_MAGIC, 0x03, size_of::<RioCreate>());
pub const RIO_IOC_OPEN: u32 = ioc(IOC_WRITE, RIO_IOC_MAGIC, 0x04, size_of::<RioOpen>());
pub const RIO_IOC_RESIZE: u32 = ioc(IOC_WRITE, RIO_IOC_MAGIC, 0x05, size_of::<RioResize>());
pub const RIO_IOC_DELETE: u32 = ioc(IOC_WRITE, RIO_IOC_MAGIC, 0x06, size_of::<RioName>());
pub const RIO_IOC_LIST: u32 = ioc(
    IOC_READ | IOC_WRITE,
    RIO_IOC_MAGIC,
    0x07,
    size_of::<RioList>(),
);
pub const RIO_IOC_STAT: u32 = ioc(IOC_READ, RIO_IOC_MAGIC, 0x08, size_of::<RioObjInfo>());
pub const RIO_IOC_STATS: u32 = ioc(IOC_READ, RIO_IOC_MAGIC, 0x09, size_of::<RioStats>());
pub const RIO_IOC_SYNC: u32 = ioc(IOC_NONE, RIO_IOC_MAGIC, 0x0a, 0);
pub const RIO_IOC_WILD_STORE: u32 = ioc(IOC_WRITE, RIO_IOC_MAGIC, 0x0b, size_of::<RioWildStore>());
pub const RIO_IOC_BLKDEV_ADD: u32 = ioc(IOC_NONE, RIO_IOC_MAGIC, 0x0c, 0);
pub const RIO_IOC_BLKDEV_REMOVE: u32 = ioc(IOC_NONE, RIO_IOC_MAGIC, 0x0d, 0);

// The layout, checked wherever this file is compiled (rio.ko and rio-client).
const _: () = {
    assert!(size_of::<RioInfo>() == 48);
    assert!(offset_of!(RioInfo, arena_phys) == 8);
    assert!(offset_of!(RioInfo, protect) == 24);
    assert!(offset_of!(RioInfo, uuid) == 32);
    assert!(size_of::<RioFormat>() == 8);
    assert!(size_of::<RioCreate>() == 80);
    assert!(offset_of!(RioCreate, size) == 64);
    assert!(offset_of!(RioCreate, mode) == 72);
    assert!(size_of::<RioOpen>() == 72);
    assert!(offset_of!(RioOpen, flags) == 64);
    assert!(size_of::<RioName>() == 64);
    assert!(size_of::<RioResize>() == 8);
    assert!(size_of::<RioObjInfo>() == 104);
    assert!(offset_of!(RioObjInfo, size) == 64);
    assert!(offset_of!(RioObjInfo, uid) == 72);
    assert!(offset_of!(RioObjInfo, slot) == 100);
    assert!(size_of::<RioList>() == 16);
    assert!(offset_of!(RioList, capacity) == 8);
    assert!(size_of::<RioStats>() == 112);
    assert!(offset_of!(RioStats, slow_writes) == 96);
    assert!(size_of::<RioWildStore>() == 16);
    // Golden numbers: what a C program or strace would show.
    assert!(RIO_IOC_INFO == 0x8030_b701);
    assert!(RIO_IOC_SYNC == 0x0000_b70a);
    assert!(RIO_IOC_LIST == 0xc010_b707);
    assert!(RIO_IOC_STATS == 0x8070_b709);
};
