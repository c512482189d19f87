// SPDX-License-Identifier: GPL-2.0

//! The `/dev/rio` ioctl ABI as rio.ko sees it: the definitions of [`crate::abi`] (the one
//! file shared with `userlib/rio-client`), plus the kernel's byte-view traits that let
//! `UserSliceReader::read` and `UserSliceWriter::write` move them.

use kernel::transmute::{AsBytes, FromBytes};

pub(crate) use crate::abi::*;

macro_rules! plain_data {
    ($($t:ty),*) => {$(
        // SAFETY: `$t` is `repr(C)` with integer and byte-array fields only and explicit
        // padding fields (the layout assertions in `abi.rs` pin every size and offset), so
        // it has no implicit padding and its bytes may be read.
        unsafe impl AsBytes for $t {}
        // SAFETY: `$t` has integer and byte-array fields only, for which every bit pattern
        // is a valid value, so any bytes from userspace make a valid `$t`.
        unsafe impl FromBytes for $t {}
    )*};
}
plain_data!(
    RioInfo,
    RioFormat,
    RioCreate,
    RioOpen,
    RioName,
    RioResize,
    RioObjInfo,
    RioList,
    RioStats,
    RioWildStore
);
