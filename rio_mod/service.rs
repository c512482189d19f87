// SPDX-License-Identifier: GPL-2.0

//! The loaded Rio: the arena's state (in service, or refused and left untouched), explicit
//! formatting, and the clean shutdown at unload.
//!
//! # Lock order
//!
//! The one place it is written down. Outer to inner:
//!
//! 1. `mmap_lock` of a process (taken by the kernel around our `mmap` and the mappings'
//!    `vm_ops` open/close);
//! 2. [`crate::device`]'s per-file `binding` mutex;
//! 3. [`Rio::state`], the store's mutex (everything in [`Inner`]);
//! 4. a mounted riofs's volume mutex ([`crate::riofs`], which writes the rest of its order
//!    down: the VFS's locks come before it);
//! 5. a window slot's spinlock ([`crate::arena`]); nothing sleeps under it.
//!
//! The rule that keeps this a DAG: **no user memory is touched while 2 or 3 is held**, because
//! a page fault on user memory takes `mmap_lock` (1). Under the store's mutex rio.ko only
//! uses `copy_{from,to}_user_nofault`, which fail instead of faulting; user structs are read
//! before the mutex is taken and results are written after it is released, and data that
//! must fault goes through a bounce page outside the mutex. The writeback thread and the
//! block devices take nothing above 3.
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

use crate::arena::Arena;
use crate::backing::{Backing, DiskState};
use crate::config::ArenaConfig;
use crate::format::{FormatError, OBJ_BLOCKDEV};
use crate::store::{LoadReport, Refusal, Slot, Store};
use crate::uapi;

/// The arena's state.
pub(crate) enum ArenaState {
    /// Formatted and recovered: objects are served.
    Ready(Store),
    /// Blank, corrupt or foreign: left exactly as found; only `FORMAT` changes it.
    Refused { arena: Arc<Arena>, why: Refusal },
    /// Transient, while a format swaps states.
    Gone,
}

impl ArenaState {
    /// The uapi state code.
    pub(crate) fn code(&self) -> u32 {
        match self {
            ArenaState::Ready(_) => uapi::STATE_READY,
            ArenaState::Refused {
                why: Refusal::Blank,
                ..
            }
            | ArenaState::Gone => uapi::STATE_UNFORMATTED,
            ArenaState::Refused { .. } => uapi::STATE_CORRUPT,
        }
    }
}

/// Load-time options.
#[derive(Clone, Copy)]
pub(crate) struct Options {
    /// Map the arena read-only and write through the window.
    pub(crate) protect: bool,
    /// Allow the wild-store debug ioctl.
    pub(crate) allow_wild_store: bool,
    /// The backing block device, `major:minor`.
    pub(crate) backing: Option<(u32, u32)>,
    /// This module (block devices pin it).
    pub(crate) module: &'static ThisModule,
    /// Running in the crash kernel: the clean unload records that it saved a crash.
    pub(crate) crash_kernel: bool,
    /// Objects one unprivileged user may own.
    pub(crate) max_user_objects: u32,
    /// Data pages one unprivileged user may own (0: half of the arena's data pages).
    pub(crate) max_user_pages: u32,
}

/// What the store's lock protects.
pub(crate) struct Inner {
    /// The arena.
    pub(crate) arena: ArenaState,
    /// The backing store, if one was given.
    pub(crate) backing: Option<Backing>,
    /// Block devices over objects.
    pub(crate) blockdevs: KVec<crate::blockdev::BlockDev>,
}

impl Inner {
    /// Creates `/dev/riob<slot>` over the object in `slot`; returns the slot.
    ///
    /// The device writes without the store's lock, so the object counts as mapped (every
    /// page dirty) and stays open (it cannot be deleted or shrunk) while the device exists.
    /// The object remembers it has a device, and the next load re-creates it.
    pub(crate) fn add_blockdev(
        &mut self,
        slot: usize,
        module: &'static ThisModule,
    ) -> Result<usize> {
        if self.blockdevs.iter().any(|d| d.slot == slot) {
            return Err(EEXIST);
        }
        let ArenaState::Ready(store) = &mut self.arena else {
            return Err(EUCLEAN);
        };
        let o = store.object(slot)?;
        let bytes = o.slot.size;
        if bytes == 0 || bytes % crate::format::PAGE_SIZE as u64 != 0 || o.damaged {
            return Err(EINVAL);
        }
        let mut pages = KVec::with_capacity(o.pages.len(), GFP_KERNEL)?;
        for &p in o.pages.iter() {
            pages.push(store.arena_page(p), GFP_KERNEL)?;
        }
        self.blockdevs.reserve(1, GFP_KERNEL)?;
        let dev = crate::blockdev::BlockDev::new(module, slot, store.arena.clone(), pages, bytes)?;
        // From here on nothing may fail without undoing: the device exists.
        if let Err(e) = store
            .set_flags(slot, OBJ_BLOCKDEV, 0)
            .and_then(|()| store.map_opened(slot, true))
        {
            drop(dev);
            return Err(e);
        }
        if let Ok(o) = store.object_mut(slot) {
            o.open_count += 1;
        }
        self.blockdevs.push(dev, GFP_KERNEL)?;
        Ok(slot)
    }

    /// Removes the device of the object in `slot` (refused while it is open or mounted).
    pub(crate) fn remove_blockdev(&mut self, slot: usize) -> Result {
        let i = self
            .blockdevs
            .iter()
            .position(|d| d.slot == slot)
            .ok_or(ENODEV)?;
        if self.blockdevs[i].is_open() {
            return Err(EBUSY);
        }
        drop(self.blockdevs.remove(i)?);
        if let ArenaState::Ready(store) = &mut self.arena {
            store.set_flags(slot, 0, OBJ_BLOCKDEV)?;
            let o = store.object_mut(slot)?;
            o.open_count = o.open_count.saturating_sub(1);
            store.map_closed(slot, true)?;
        }
        Ok(())
    }

    /// Re-creates the block devices the objects had (at load).
    fn restore_blockdevs(&mut self, module: &'static ThisModule) {
        let ArenaState::Ready(store) = &self.arena else {
            return;
        };
        let mut want = KVec::new();
        for (i, s) in store.slots.iter().enumerate() {
            if matches!(s, Slot::Used(o) if o.slot.flags & OBJ_BLOCKDEV != 0)
                && want.push(i, GFP_KERNEL).is_err()
            {
                return;
            }
        }
        for slot in want {
            match self.add_blockdev(slot, module) {
                Ok(_) => pr_info!("block device /dev/riob{} is back\n", slot),
                Err(e) => pr_err!(
                    "could not re-create /dev/riob{}: error {}\n",
                    slot,
                    e.to_errno()
                ),
            }
        }
    }

    /// Writes dirty data back, if there is a store and a backing device; with `only_uid`,
    /// only that owner's objects.
    pub(crate) fn writeback(&mut self, only_uid: Option<u32>) -> Result<u64> {
        match (&mut self.arena, &mut self.backing) {
            (ArenaState::Ready(store), Some(b)) => b.writeback(store, only_uid),
            (_, None) => Err(ENODEV),
            _ => Err(EUCLEAN),
        }
    }
}

/// Everything one load of rio.ko serves.
#[pin_data(PinnedDrop)]
pub(crate) struct Rio {
    pub(crate) config: ArenaConfig,
    pub(crate) options: Options,
    #[pin]
    pub(crate) state: Mutex<Inner>,
}

fn report(rep: &LoadReport, store: &Store) {
    let sb = &store.sb;
    if rep.crashed {
        pr_warn!(
            "recovered arena after a crash (epoch {}, recovery #{}): {} objects, {} pages, {} dirty, {} reclaimed, {} quarantined, {} damaged objects, {} bad slots\n",
            sb.epoch,
            sb.recoveries,
            rep.objects,
            rep.pages,
            rep.dirty,
            rep.reclaimed,
            rep.quarantined,
            rep.damaged,
            rep.bad_slots
        );
    } else if rep.saved_by == crate::format::SAVED_BY_CRASH_KERNEL {
        pr_warn!(
            "the last crash was saved by the crash kernel (safe sync): every dirty page was written back; epoch {}, {} objects, {} pages\n",
            sb.epoch,
            rep.objects,
            rep.pages
        );
    } else {
        pr_info!(
            "arena was shut down cleanly (epoch {}): {} objects, {} pages\n",
            sb.epoch,
            rep.objects,
            rep.pages
        );
    }
}

fn explain(why: &Refusal, config: &ArenaConfig) {
    match why {
        Refusal::Blank => pr_info!("arena is blank: format it with 'rio format'\n"),
        Refusal::Corrupt(FormatError::BadMagic) => pr_err!(
            "refusing arena at {:#x}: not a Rio arena (bad magic); left untouched; 'rio format --force' erases it\n",
            config.phys
        ),
        Refusal::Corrupt(FormatError::BadVersion(v)) => pr_err!(
            "refusing arena at {:#x}: format version {} is not {}; left untouched\n",
            config.phys,
            v,
            crate::format::FORMAT_VERSION
        ),
        Refusal::Corrupt(e) => pr_err!(
            "refusing arena at {:#x}: corrupt superblock ({:?}); left untouched; 'rio format --force' erases it\n",
            config.phys,
            e
        ),
        Refusal::SizeMismatch(s) => pr_err!(
            "refusing arena at {:#x}: formatted for {:#x} bytes, loaded with {:#x}; left untouched\n",
            config.phys,
            s,
            config.size
        ),
    }
}

impl Rio {
    /// Maps the arena, validates and recovers it, and attaches the backing device: dirty
    /// pages a crash left are written back, and a blank arena is restored from a disk that
    /// holds its objects. A bad arena is refused, not repaired; a bad backing device fails
    /// the load with a message and nothing written.
    pub(crate) fn new(config: ArenaConfig, options: Options) -> Result<Arc<Rio>> {
        let geo = crate::format::Geometry::for_size(config.size).ok_or(EINVAL)?;
        let mut backing = match options.backing {
            Some((major, minor)) => Some(Backing::open(major, minor, &geo)?),
            None => None,
        };
        let arena = Arc::new(
            Arena::map(config.phys, config.size, options.protect)?,
            GFP_KERNEL,
        )?;
        let state = match Store::load(arena, config.size) {
            Ok(mut store) => {
                report(&store.report, &store);
                // A crash ended every mapping: the registry becomes exact again.
                store.settle_all_mapped()?;
                if let Some((b, _)) = backing.as_ref() {
                    for idx in b.quarantined_slots() {
                        store.reserve_slot(idx);
                    }
                }
                if let Some((b, disk)) = backing.as_mut() {
                    match disk {
                        DiskState::Blank => b.initialize(store.sb.uuid)?,
                        DiskState::Ours(uuid) if *uuid == store.sb.uuid => {}
                        DiskState::Ours(_) => {
                            pr_err!(
                                "backing device {}:{} belongs to another arena; load without it or give the right one\n",
                                b.dev.0,
                                b.dev.1
                            );
                            return Err(EINVAL);
                        }
                    }
                    let pages = b.writeback(&mut store, None)?;
                    if pages > 0 {
                        pr_info!(
                            "wrote {} dirty pages back to {}:{}\n",
                            pages,
                            b.dev.0,
                            b.dev.1
                        );
                    }
                }
                ArenaState::Ready(store)
            }
            Err((arena, Refusal::Blank)) => match backing.as_mut() {
                Some((b, DiskState::Ours(uuid))) => {
                    let uuid = *uuid;
                    let mut store = Store::format(arena, config.size, uuid).map_err(|(_, e)| e)?;
                    let n = match b.restore(&mut store) {
                        Ok(n) => n,
                        Err((idx, e)) => {
                            // The arena must not stay valid with the disk's identity: the
                            // next load's writeback would write empty entries over every
                            // object not restored yet. Blank it; the disk was only read.
                            drop(store.unformat());
                            pr_err!(
                                "restore from backing device {}:{} failed at object entry {} (error {}): the disk is unchanged and the arena is blank again; fix the disk (or copy it away) and load again, or load without the backing device to start empty\n",
                                b.dev.0,
                                b.dev.1,
                                idx,
                                e.to_errno()
                            );
                            return Err(e);
                        }
                    };
                    pr_warn!(
                        "arena was blank (power loss?): restored {} objects from backing device {}:{}\n",
                        n,
                        b.dev.0,
                        b.dev.1
                    );
                    ArenaState::Ready(store)
                }
                _ => {
                    explain(&Refusal::Blank, &config);
                    ArenaState::Refused {
                        arena,
                        why: Refusal::Blank,
                    }
                }
            },
            Err((arena, why)) => {
                explain(&why, &config);
                ArenaState::Refused { arena, why }
            }
        };
        let mut inner = Inner {
            arena: state,
            backing: backing.map(|(b, _)| b),
            blockdevs: KVec::new(),
        };
        inner.restore_blockdevs(options.module);
        Arc::pin_init(
            try_pin_init!(Rio {
                config,
                options,
                state <- new_mutex!(inner),
            }),
            GFP_KERNEL,
        )
    }

    /// Formats the arena. A non-blank arena is erased only with `force`.
    ///
    /// All or nothing: the backing disk is blanked first (a failure there changes nothing
    /// that matters: a blank disk is what any arena accepts and fills at its next load),
    /// then the arena is formatted, then the disk initialised for it. If that last step
    /// fails the arena is in service and its disk blank, which the next load repairs.
    pub(crate) fn format(&self, force: bool) -> Result {
        let mut inner = self.state.lock();
        let st = &mut inner.arena;
        match &*st {
            ArenaState::Refused {
                why: Refusal::Blank,
                ..
            } => {}
            _ if force => {}
            ArenaState::Ready(s) if s.object_count() == 0 => {}
            _ => return Err(ENOTEMPTY),
        }
        if let ArenaState::Ready(s) = &*st {
            if s.slots
                .iter()
                .any(|x| matches!(x, crate::store::Slot::Used(o) if o.open_count > 0))
            {
                return Err(EBUSY);
            }
        }
        if let Some(b) = inner.backing.as_mut() {
            b.blank().inspect_err(|e| {
                pr_err!(
                    "format refused: cannot write the backing device (error {}); nothing changed\n",
                    e.to_errno()
                );
            })?;
        }
        let st = &mut inner.arena;
        let arena = match core::mem::replace(&mut *st, ArenaState::Gone) {
            ArenaState::Ready(s) => s.arena,
            ArenaState::Refused { arena, .. } => arena,
            ArenaState::Gone => return Err(EIO),
        };
        let mut uuid = [0u8; 16];
        crate::sys::random_bytes(&mut uuid);
        match Store::format(arena, self.config.size, uuid) {
            Ok(store) => {
                if let Some(b) = inner.backing.as_mut() {
                    if let Err(e) = b.initialize(uuid) {
                        pr_err!(
                            "formatted the arena, but initialising the backing device failed (error {}): it stays blank and is filled at the next load\n",
                            e.to_errno()
                        );
                    }
                }
                pr_info!(
                    "formatted arena {:#x}..{:#x}: {} data pages\n",
                    self.config.phys,
                    self.config.end(),
                    store.geo.data_pages
                );
                inner.arena = ArenaState::Ready(store);
                Ok(())
            }
            Err((arena, e)) => {
                inner.arena = ArenaState::Refused {
                    arena,
                    why: Refusal::Corrupt(FormatError::BadGeometry),
                };
                Err(e)
            }
        }
    }
}

#[pinned_drop]
impl PinnedDrop for Rio {
    fn drop(self: Pin<&mut Self>) {
        let mut inner = self.state.lock();
        if inner.backing.is_some() {
            if let Err(e) = inner.writeback(None) {
                pr_err!("final writeback failed ({:?}): the arena stays marked in use, so the next load writes back again\n", e);
                return;
            }
        }
        let saved_by = if self.options.crash_kernel {
            crate::format::SAVED_BY_CRASH_KERNEL
        } else {
            crate::format::SAVED_BY_UNLOAD
        };
        if let ArenaState::Ready(store) = &mut inner.arena {
            match store.mark_clean(saved_by) {
                Ok(()) => pr_info!("arena marked clean\n"),
                Err(e) => pr_err!("could not mark the arena clean: {:?}\n", e),
            }
        }
    }
}
