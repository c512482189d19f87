// SPDX-License-Identifier: GPL-2.0

//! The loaded Rio: the arena's state (in service, or refused and left untouched), explicit
//! formatting, and the clean shutdown at unload.

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

use crate::arena::Arena;
use crate::backing::{Backing, DiskState};
use crate::config::ArenaConfig;
use crate::format::FormatError;
use crate::store::{LoadReport, Refusal, Store};
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
            ArenaState::Refused { why: Refusal::Blank, .. } | ArenaState::Gone => uapi::STATE_UNFORMATTED,
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
    /// Writes dirty data back, if there is a store and a backing device.
    pub(crate) fn writeback(&mut self) -> Result<u64> {
        match (&mut self.arena, &mut self.backing) {
            (ArenaState::Ready(store), Some(b)) => b.writeback(store),
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
        let arena = Arc::new(Arena::map(config.phys, config.size, options.protect)?, GFP_KERNEL)?;
        let state = match Store::load(arena, config.size) {
            Ok(mut store) => {
                report(&store.report, &store);
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
                    let pages = b.writeback(&mut store)?;
                    if pages > 0 {
                        pr_info!("wrote {} dirty pages back to {}:{}\n", pages, b.dev.0, b.dev.1);
                    }
                }
                ArenaState::Ready(store)
            }
            Err((arena, Refusal::Blank)) => match backing.as_mut() {
                Some((b, DiskState::Ours(uuid))) => {
                    let uuid = *uuid;
                    let mut store = Store::format(arena, config.size, uuid).map_err(|(_, e)| e)?;
                    let n = b.restore(&mut store)?;
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
                    ArenaState::Refused { arena, why: Refusal::Blank }
                }
            },
            Err((arena, why)) => {
                explain(&why, &config);
                ArenaState::Refused { arena, why }
            }
        };
        let inner = Inner {
            arena: state,
            backing: backing.map(|(b, _)| b),
            blockdevs: KVec::new(),
        };
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
    pub(crate) fn format(&self, force: bool) -> Result {
        let mut inner = self.state.lock();
        let st = &mut inner.arena;
        match &*st {
            ArenaState::Refused { why: Refusal::Blank, .. } => {}
            _ if force => {}
            ArenaState::Ready(s) if s.object_count() == 0 => {}
            _ => return Err(ENOTEMPTY),
        }
        if let ArenaState::Ready(s) = &*st {
            if s.slots.iter().any(|x| matches!(x, crate::store::Slot::Used(o) if o.open_count > 0)) {
                return Err(EBUSY);
            }
        }
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
                    b.initialize(uuid)?;
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
            if let Err(e) = inner.writeback() {
                pr_err!("final writeback failed ({:?}): the arena stays marked in use, so the next load writes back again\n", e);
                return;
            }
        }
        if let ArenaState::Ready(store) = &mut inner.arena {
            match store.mark_clean() {
                Ok(()) => pr_info!("arena marked clean\n"),
                Err(e) => pr_err!("could not mark the arena clean: {:?}\n", e),
            }
        }
    }
}
