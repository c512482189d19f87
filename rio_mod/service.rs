// SPDX-License-Identifier: GPL-2.0

//! The loaded Rio: the arena's state (in service, or refused and left untouched), explicit
//! formatting, and the clean shutdown at unload.

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

use crate::arena::Arena;
use crate::config::ArenaConfig;
use crate::format::FormatError;
use crate::store::{LoadReport, Refusal, Store};
use crate::uapi;

/// The arena's state.
pub(crate) enum ArenaState {
    /// Formatted and recovered: objects are served.
    Ready(Store),
    /// Blank, corrupt or foreign: left exactly as found; only `FORMAT` changes it.
    Refused { arena: Arena, why: Refusal },
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
}

/// Everything one load of rio.ko serves.
#[pin_data(PinnedDrop)]
pub(crate) struct Rio {
    pub(crate) config: ArenaConfig,
    pub(crate) options: Options,
    #[pin]
    pub(crate) state: Mutex<ArenaState>,
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
    /// Maps the arena and validates and recovers it; a bad arena is refused, not repaired.
    pub(crate) fn new(config: ArenaConfig, options: Options) -> Result<Arc<Rio>> {
        let arena = Arena::map(config.phys, config.size, options.protect)?;
        let state = match Store::load(arena, config.size) {
            Ok(store) => {
                report(&store.report, &store);
                ArenaState::Ready(store)
            }
            Err((arena, why)) => {
                explain(&why, &config);
                ArenaState::Refused { arena, why }
            }
        };
        Arc::pin_init(
            try_pin_init!(Rio {
                config,
                options,
                state <- new_mutex!(state),
            }),
            GFP_KERNEL,
        )
    }

    /// Formats the arena. A non-blank arena is erased only with `force`.
    pub(crate) fn format(&self, force: bool) -> Result {
        let mut st = self.state.lock();
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
                pr_info!(
                    "formatted arena {:#x}..{:#x}: {} data pages\n",
                    self.config.phys,
                    self.config.end(),
                    store.geo.data_pages
                );
                *st = ArenaState::Ready(store);
                Ok(())
            }
            Err((arena, e)) => {
                *st = ArenaState::Refused {
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
        let mut st = self.state.lock();
        if let ArenaState::Ready(store) = &mut *st {
            match store.mark_clean() {
                Ok(()) => pr_info!("arena marked clean\n"),
                Err(e) => pr_err!("could not mark the arena clean: {:?}\n", e),
            }
        }
    }
}
