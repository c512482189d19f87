// SPDX-License-Identifier: GPL-2.0

//! `/dev/rio`: the miscdevice through which userspace reaches the arena.

use kernel::{
    fs::File,
    ioctl::_IOC_SIZE,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
    uaccess::UserSlice,
};

use crate::config::ArenaConfig;
use crate::uapi::{RioInfo, RIO_ABI_VERSION, RIO_IOC_INFO};

/// The registered `/dev/rio` and the arena it serves.
#[pin_data]
pub(crate) struct Registration {
    #[pin]
    misc: MiscDeviceRegistration<RioFile>,
}

impl Registration {
    /// Registers `/dev/rio` for `arena`.
    pub(crate) fn new(arena: ArenaConfig) -> impl PinInit<Self, Error> {
        // The arena is fixed for the module's lifetime; open files read it from here.
        ARENA.populate(arena);
        try_pin_init!(Self {
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"rio" }),
        })
    }
}

/// The arena of this load; set once in [`Registration::new`].
static ARENA: kernel::sync::SetOnce<ArenaConfig> = kernel::sync::SetOnce::new();

/// One open file of `/dev/rio`.
pub(crate) struct RioFile {
    arena: ArenaConfig,
}

#[vtable]
impl MiscDevice for RioFile {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        let arena = *ARENA.as_ref().ok_or(ENODEV)?;
        KBox::new(RioFile { arena }, GFP_KERNEL)
    }

    fn ioctl(me: &RioFile, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd));
        match cmd {
            RIO_IOC_INFO => {
                let info = RioInfo {
                    abi_version: RIO_ABI_VERSION,
                    flags: 0,
                    arena_phys: me.arena.phys,
                    arena_size: me.arena.size,
                };
                user.writer().write(&info)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}
