//! The `/dev/rio` ioctl ABI: compiled from the module's own `rio_mod/abi.rs`, the one
//! definition of its structs, numbers and flags (see there for the table of ioctls). Its
//! layout assertions run in this build too.

#[path = "../../../rio_mod/abi.rs"]
mod abi;

pub use abi::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden numbers, written down independently of `abi.rs`'s own assertions: what a C
    /// program's `_IOR(0xb7, 1, struct rio_info)` etc. give.
    #[test]
    fn numbers_and_sizes_are_the_documented_ones() {
        assert_eq!(std::mem::size_of::<RioInfo>(), 48);
        assert_eq!(std::mem::size_of::<RioCreate>(), 80);
        assert_eq!(std::mem::size_of::<RioOpen>(), 72);
        assert_eq!(std::mem::size_of::<RioObjInfo>(), 104);
        assert_eq!(std::mem::size_of::<RioStats>(), 112);
        assert_eq!(RIO_IOC_INFO, 0x8030_b701);
        assert_eq!(RIO_IOC_CREATE, 0x4050_b703);
        assert_eq!(RIO_IOC_SYNC, 0x0000_b70a);
        assert_eq!(RIO_IOC_LIST, 0xc010_b707);
        assert_eq!(RIO_IOC_BLKDEV_REMOVE, 0x0000_b70d);
    }
}
