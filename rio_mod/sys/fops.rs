// SPDX-License-Identifier: GPL-2.0

//! The miscdevice's file operations table with an `fsync` that returns at once.

use kernel::bindings;
use kernel::prelude::*;

/// A copy of a miscdevice's file operations whose `fsync` returns at once (data written to
/// Rio is already durable), installed on the device after registration. The Rust
/// `MiscDevice` vtable has no `fsync`. Keep this alive until the device is deregistered.
pub(crate) struct FsyncFops {
    _ops: KBox<kernel::types::Opaque<bindings::file_operations>>,
}

// SAFETY: the table is written once in `install`, before the device can use it, and is only
// read afterwards (by the VFS, from any thread).
unsafe impl Send for FsyncFops {}
// SAFETY: shared references only reach the table through the VFS, which reads it; it is
// never written after `install`, so concurrent readers on any CPU are fine.
unsafe impl Sync for FsyncFops {}

impl FsyncFops {
    /// Installs it on `misc`. Keep the result until `misc` is dropped (deregistered).
    pub(crate) fn install<T: kernel::miscdevice::MiscDevice>(
        misc: &kernel::miscdevice::MiscDeviceRegistration<T>,
    ) -> Result<Self> {
        let misc = misc.as_raw();
        let ops = KBox::new(
            kernel::types::Opaque::<bindings::file_operations>::uninit(),
            GFP_KERNEL,
        )?;
        // SAFETY: `misc` is a registered miscdevice (a `MiscDeviceRegistration` is registered
        // for as long as it exists), so `fops` points to a valid table that
        // lives as long as the module); `ops` is fresh memory of the same type. The pointer
        // store is one aligned word, so a concurrent `misc_open` sees the old table or the
        // new one, both complete.
        unsafe {
            core::ptr::copy_nonoverlapping((*misc).fops, ops.get(), 1);
            (*ops.get()).fsync = Some(bindings::noop_fsync);
            core::ptr::write_volatile(
                core::ptr::addr_of_mut!((*misc).fops),
                ops.get().cast_const(),
            );
        }
        Ok(Self { _ops: ops })
    }
}
