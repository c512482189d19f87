// SPDX-License-Identifier: GPL-2.0

//! riofs: the Rio file cache as a Linux file system (`mount -t riofs`).
//!
//! # One namespace over one registry
//!
//! A riofs is one Rio object (`mount -t riofs -o size=64M NAME /mnt` creates object `NAME`
//! and formats it; later mounts find it). Its blocks are the object's arena pages, so
//! everything objects already have covers the file system as a whole, with no second
//! registry and no second recovery: the protection window, warm-reboot recovery at load,
//! the backing disk's writeback and restore, safe sync from the crash kernel. Objects stay
//! beside riofs for Vista and Discount Checking, which map them directly; a Vista segment
//! can equally be an `mmap`ed riofs file, since riofs maps arena frames just as
//! `/dev/rio` does.
//!
//! While mounted the object is held open exclusively (nobody can open, map, resize or
//! delete it through `/dev/rio`) and counts as writably mapped, so writeback treats all of
//! its pages as dirty. Writeback copies it under the volume's lock (between two
//! operations; the undo log in the copy covers the one a crash would interrupt) into a
//! fresh extent of the disk, so that a power cut leaves the previous image whole.
//!
//! # Layout
//!
//! - [`format`]: the on-object format and the crash-consistency rule (an undo log);
//! - [`volume`]: blocks, the log and its transactions, allocation, the block map;
//! - [`ops`]: the operations, one transaction each, and mount-time recovery;
//! - [`vfs`]: the Rust half of the VFS glue (`extern "C"` entry points for
//!   `riofs_vfs.c`, which holds the VFS side: the superblock, the dentry cache, iov_iters,
//!   the page-fault handler).
//!
//! # Lock order (extends the one in [`crate::service`])
//!
//! A directory's or file's `i_rwsem` and a mapping's `invalidate_lock` (taken by the VFS and
//! the glue) come before the volume's mutex; the volume's mutex comes before a window slot's
//! spinlock. The store's mutex ([`crate::service::Rio::state`]) comes *before* the volume's:
//! writeback holds it and takes the volume's to copy the object, and mount and unmount take
//! it with no volume lock held. Nothing takes the store's mutex under the volume's. No user memory is touched under the volume's
//! mutex: the glue copies between user memory and a kernel bounce buffer outside it.

pub(crate) mod format;
mod ops;
mod vfs;
mod volume;

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

use crate::format::PAGE_SIZE;
use crate::service::{ArenaState, Rio};

use format::{FsError, Super, Time};
use ops::MountReport;
use volume::Vol;

/// A mounted riofs's state behind its lock, which the store's object also holds so that
/// writeback can copy the object between two operations.
pub(crate) type Gate = Mutex<Vol>;

/// A mounted riofs.
#[pin_data(PinnedDrop)]
pub(crate) struct Volume {
    rio: Arc<Rio>,
    /// The object's slot in the store.
    object: usize,
    vol: Arc<Gate>,
}

/// Releases the object of slot `slot` that a mount claimed.
fn release_object(rio: &Rio, slot: usize, delete: bool) {
    let mut inner = rio.state.lock();
    if let ArenaState::Ready(store) = &mut inner.arena {
        if let Ok(o) = store.object_mut(slot) {
            o.open_count = o.open_count.saturating_sub(1);
            o.exclusive = false;
        }
        if let Ok(o) = store.object_mut(slot) {
            o.riofs = None;
        }
        if let Err(e) = store.map_closed(slot, true) {
            pr_err!(
                "riofs: releasing object slot {}: error {}\n",
                slot,
                e.to_errno()
            );
        }
        if delete {
            let _ = store.delete(slot);
        }
    }
}

impl Volume {
    /// Mounts object `name`, creating a `size`-byte one if there is none (`size` 0: do not
    /// create), formatting it if it is blank, recovering it otherwise.
    pub(crate) fn mount(
        rio: Arc<Rio>,
        name: &[u8],
        size: u64,
        now: Time,
    ) -> Result<(Arc<Volume>, MountReport)> {
        let (object, gate, rep) = {
            let mut inner = rio.state.lock();
            let ArenaState::Ready(store) = &mut inner.arena else {
                pr_err!("riofs: the arena is not in service (format it with 'rio format')\n");
                return Err(ENODEV);
            };
            let (idx, created) = match store.find(name) {
                Some(i) => (i, false),
                None if size == 0 => {
                    pr_err!("riofs: no object of that name; give -o size=BYTES to create one\n");
                    return Err(ENOENT);
                }
                None => {
                    let bytes = size
                        .checked_next_multiple_of(PAGE_SIZE as u64)
                        .ok_or(EINVAL)?;
                    if bytes / (PAGE_SIZE as u64) < u64::from(format::MIN_BLOCKS) {
                        pr_err!(
                            "riofs: size too small (at least {} KiB)\n",
                            format::MIN_BLOCKS as usize * PAGE_SIZE / 1024
                        );
                        return Err(EINVAL);
                    }
                    if bytes / PAGE_SIZE as u64 > u64::from(format::MAX_BLOCKS) {
                        pr_err!(
                            "riofs: size too large (at most {} blocks)\n",
                            format::MAX_BLOCKS
                        );
                        return Err(EINVAL);
                    }
                    (store.create(name, bytes, 0, 0, 0o600)?, true)
                }
            };
            let o = store.object(idx)?;
            if o.damaged {
                pr_err!("riofs: the object is damaged (recovery could not find all its pages)\n");
                return Err(EUCLEAN);
            }
            if o.open_count > 0 || o.maps > 0 {
                pr_err!("riofs: the object is open or mapped (mounted already, or in use through /dev/rio)\n");
                return Err(EBUSY);
            }
            if o.slot.uid != 0 {
                pr_err!("riofs: the object is owned by uid {}, not root: refusing to mount a user's object\n", o.slot.uid);
                return Err(EPERM);
            }
            let blocks = o.slot.size / PAGE_SIZE as u64;
            if o.slot.size % PAGE_SIZE as u64 != 0
                || blocks < u64::from(format::MIN_BLOCKS)
                || blocks > u64::from(format::MAX_BLOCKS)
                || o.pages.len() as u64 != blocks
            {
                pr_err!(
                    "riofs: the object's size ({} bytes) is not a whole number of blocks between {} and {}\n",
                    o.slot.size,
                    format::MIN_BLOCKS,
                    format::MAX_BLOCKS
                );
                return Err(EINVAL);
            }
            let mut pages = KVVec::with_capacity(o.pages.len(), GFP_KERNEL)?;
            for &p in o.pages.iter() {
                if p == u32::MAX {
                    return Err(EUCLEAN);
                }
                pages.push(store.arena_page(p), GFP_KERNEL)?;
            }
            // Recovery (or mkfs) runs under the store's lock: writeback must not copy the
            // object half recovered, and nobody else may claim it meanwhile.
            let opened = Self::open(store.arena.clone(), pages, now).and_then(|(vol, rep)| {
                let gate = Arc::pin_init(new_mutex!(vol), GFP_KERNEL)?;
                Ok((gate, rep))
            });
            let (gate, rep) = match opened {
                Ok(x) => x,
                Err(e) => {
                    if created {
                        let _ = store.delete(idx);
                    }
                    return Err(e);
                }
            };
            store.map_opened(idx, true)?;
            let o = store.object_mut(idx)?;
            o.open_count += 1;
            o.exclusive = true;
            o.riofs = Some(gate.clone());
            (idx, gate, rep)
        };
        let mine = rio.clone();
        match Arc::pin_init(
            pin_init!(Volume {
                rio: mine,
                object,
                vol: gate,
            }),
            GFP_KERNEL,
        ) {
            Ok(v) => Ok((v, rep)),
            Err(e) => {
                release_object(&rio, object, false);
                Err(e)
            }
        }
    }

    fn open(
        arena: Arc<crate::arena::Arena>,
        pages: KVVec<usize>,
        now: Time,
    ) -> Result<(Vol, MountReport)> {
        let first = *pages.first().ok_or(EINVAL)?;
        let mut b0 = [0u8; format::SUPER_SIZE];
        arena.read(first, 0, &mut b0)?;
        let blocks = u32::try_from(pages.len()).map_err(|_| EINVAL)?;
        match Super::decode(&b0) {
            Ok(sb) => {
                if sb.blocks != blocks {
                    pr_err!(
                        "riofs: formatted for {} blocks, but the object has {}: left untouched\n",
                        sb.blocks,
                        blocks
                    );
                    return Err(EUCLEAN);
                }
                let mut vol = Vol::new(arena, pages, sb)?;
                let rep = vol.recover()?;
                Ok((vol, rep))
            }
            Err(FsError::Blank) => {
                let mut uuid = [0u8; 16];
                crate::sys::random_bytes(&mut uuid);
                let sb = Super::for_blocks(blocks, uuid, now.sec as u64).ok_or(EINVAL)?;
                let mut vol = Vol::new(arena, pages, sb)?;
                if !vol.is_blank()? {
                    pr_err!("riofs: the object has no riofs superblock but is not blank (another kind of object, or an interrupted format): left untouched; delete it with 'rio rm' to start over\n");
                    return Err(EINVAL);
                }
                vol.format(now)?;
                let mut rep = vol.recover()?;
                rep.formatted = true;
                Ok((vol, rep))
            }
            Err(e) => {
                pr_err!("riofs: not a riofs object ({:?}): left untouched\n", e);
                Err(EINVAL)
            }
        }
    }
}

#[pinned_drop]
impl PinnedDrop for Volume {
    fn drop(self: Pin<&mut Self>) {
        release_object(&self.rio, self.object, false);
    }
}

/// The registration of the `riofs` file system type: unregistered when dropped (no mount
/// can exist by then: each pins the module).
pub(crate) struct Registration {
    rio: *const Rio,
}

// SAFETY: `rio` is an `Arc<Rio>` turned into a pointer, owned by this value; `Rio` is
// `Send + Sync`.
unsafe impl Send for Registration {}
// SAFETY: as for `Send`: the value only holds the pointer, which it never dereferences.
unsafe impl Sync for Registration {}

impl Registration {
    /// Registers `riofs`, serving the store of `rio`.
    pub(crate) fn new(rio: Arc<Rio>) -> Result<Self> {
        let raw = Arc::into_raw(rio);
        if let Err(e) = vfs::register(raw) {
            // SAFETY: `raw` came from `Arc::into_raw` just above and was not handed out
            // (registration failed, so the glue does not keep it).
            drop(unsafe { Arc::from_raw(raw) });
            return Err(e);
        }
        Ok(Self { rio: raw })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        vfs::unregister();
        // SAFETY: `rio` came from `Arc::into_raw` in `new`; the glue dropped its copy of the
        // pointer in `unregister`, and no mount (which would use it) can exist any more.
        drop(unsafe { Arc::from_raw(self.rio) });
    }
}
