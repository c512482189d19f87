// SPDX-License-Identifier: GPL-2.0

//! rio.ko: a crash-surviving, write-protected file cache in reserved memory, after Rio
//! (Chen et al., ASPLOS 1996).
//!
//! Layout, one concern per file:
//! - [`config`]: the arena's module parameters and their validation;
//! - [`format`]: the on-arena format (shared with the host crate `userlib/rio-format`);
//! - [`arena`]: the read-only kernel mapping and the protection window;
//! - [`store`]: objects, the registry, and recovery;
//! - [`backing`]: the disk home of every object: writeback and restore;
//! - [`blockdev`]: a block device per object (blk-mq), for file systems on Rio;
//! - [`writeback`]: the background writeback thread;
//! - [`service`]: the arena's state (in service or refused), format, clean shutdown;
//! - [`device`]: `/dev/rio`, the miscdevice users talk to;
//! - [`riofs`]: the Rio file system (`mount -t riofs`), one object holding a whole POSIX
//!   file system (its VFS glue is the C file `riofs_vfs.c`);
//! - [`abi`]: the ioctl ABI, the one definition (also compiled by `userlib/rio-client`);
//!   [`uapi`] adds the kernel's byte-view traits to it;
//! - [`shared`]: memory others write concurrently (arena frames, request pages), reached
//!   only by raw copies;
//! - [`sys`]: the raw kernel calls with no Rust abstraction yet, behind safe wrappers
//!   (including [`sys::caller`]: who is calling, and [`sys::track_vma`]: counting mappings).
//!
//! The lock order, and the rule that no user memory is touched under rio.ko's locks, are
//! written down once, in [`service`].

use kernel::prelude::*;

mod abi;
mod arena;
mod backing;
mod blockdev;
mod config;
mod device;
mod format;
mod riofs;
mod service;
mod shared;
mod store;
mod sys;
mod uapi;
mod writeback;

module! {
    type: RioModule,
    name: "rio",
    authors: ["Rio in Rust developers"],
    description: "Rio: a crash-surviving, write-protected file cache in reserved memory",
    license: "GPL",
    params: {
        arena_phys: u64 {
            default: 0,
            description: "Physical address of the arena, reserved at boot with memmap=SIZE$ADDR",
        },
        arena_size: u64 {
            default: 0,
            description: "Size of the arena in bytes (page aligned)",
        },
        protect: bool {
            default: true,
            description: "Map the arena read-only and write through a per-page window (0 for comparison runs)",
        },
        allow_wild_store: bool {
            default: false,
            description: "Enable the debug ioctl that performs a wild kernel store into the arena",
        },
        backing_major: u32 {
            default: 0,
            description: "Major number of the backing block device (0: none)",
        },
        backing_minor: u32 {
            default: 0,
            description: "Minor number of the backing block device",
        },
        crash_kernel: bool {
            default: false,
            description: "Set by the crash kernel's init: record that this load saved a crash (safe sync)",
        },
        writeback_ms: u32 {
            default: 5000,
            description: "Background writeback interval in milliseconds (0: only on sync, crash recovery and unload)",
        },
        max_user_objects: u32 {
            default: 64,
            description: "Objects one user without CAP_SYS_ADMIN may own (EDQUOT past it)",
        },
        max_user_pages: u32 {
            default: 0,
            description: "Data pages one user without CAP_SYS_ADMIN may own (0: half of the arena; EDQUOT past it)",
        },
    },
}

#[pin_data(PinnedDrop)]
struct RioModule {
    // Dropped first of all: unregisters riofs (no mount can exist: each pins the module).
    _riofs: riofs::Registration,
    // Dropped first: stops the writeback thread (which holds a reference on the store).
    _writeback: Option<sys::Kthread<writeback::Writeback>>,
    // Dropped next: deregisters /dev/rio (no file can be open: each holds a module ref).
    dev: Pin<KBox<device::Registration>>,
    // Dropped second: the fsync-capable file operations the device pointed to.
    _fops: sys::FsyncFops,
}

impl kernel::InPlaceModule for RioModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pin_init::pin_init_scope(move || {
            let arena = config::ArenaConfig::from_params(
                *module_parameters::arena_phys.value_ref(),
                *module_parameters::arena_size.value_ref(),
            )?;
            let major = *module_parameters::backing_major.value_ref();
            let options = service::Options {
                protect: *module_parameters::protect.value_ref(),
                allow_wild_store: *module_parameters::allow_wild_store.value_ref(),
                backing: (major != 0)
                    .then(|| (major, *module_parameters::backing_minor.value_ref())),
                module,
                crash_kernel: *module_parameters::crash_kernel.value_ref(),
                max_user_objects: *module_parameters::max_user_objects.value_ref(),
                max_user_pages: *module_parameters::max_user_pages.value_ref(),
            };
            pr_info!(
                "arena {:#x}..{:#x} ({} KiB of reserved memory), protection {}, ABI {}\n",
                arena.phys,
                arena.end(),
                arena.size >> 10,
                if options.protect { "on" } else { "off" },
                uapi::RIO_ABI_VERSION
            );
            let rio = service::Rio::new(arena, options)?;
            let interval = *module_parameters::writeback_ms.value_ref();
            let writeback = if options.backing.is_some() && interval > 0 {
                Some(writeback::Writeback::start(rio.clone(), interval)?)
            } else {
                None
            };
            let riofs = riofs::Registration::new(rio.clone())?;
            let dev = KBox::pin_init(device::Registration::new(rio), GFP_KERNEL)?;
            let fops = sys::FsyncFops::install(dev.misc())?;
            Ok(try_pin_init!(Self {
                _riofs: riofs,
                _writeback: writeback,
                dev,
                _fops: fops,
            }))
        })
    }
}

#[pinned_drop]
impl PinnedDrop for RioModule {
    fn drop(self: Pin<&mut Self>) {
        pr_info!("unloaded\n");
    }
}
