// SPDX-License-Identifier: GPL-2.0

//! The object store: named objects in arena pages, described by the object table and the
//! registry (see [`crate::format`] for the layout and the crash-consistency rules).
//!
//! All metadata and data changes happen under the store's one mutex (in [`crate::device`]),
//! and every byte reaches the arena through [`Arena::write_page`], that is, through the
//! protection window.
//!
//! Everything read back from the arena is untrusted input (a crash, a wild store or a bit
//! flip may have left anything there): recovery checks every slot and registry entry,
//! quarantines the one bad entry with one `dmesg` line and serves the rest.

use kernel::prelude::*;

use kernel::sync::Arc;

use crate::arena::Arena;

mod recovery;
mod registry;
use crate::format::{
    encode_name, other_copy, pages_for, Geometry, ObjectSlot, RegEntry, Superblock, OBJ_BLOCKDEV,
    OBJ_IN_USE, OBJ_MAPPED, PAGE_SIZE, SB_COPY_B, SB_SIZE, SLOT_COPY_SIZE, STATE_ACTIVE,
    STATE_CLEAN,
};

/// An object as the running module tracks it.
pub(crate) struct Object {
    /// The committed slot contents.
    pub(crate) slot: ObjectSlot,
    /// Which copy (0 = A, 1 = B) holds them.
    copy: usize,
    /// Data page (relative to the data area) of each page index.
    pub(crate) pages: KVec<u32>,
    /// Open files bound to it.
    pub(crate) open_count: u32,
    /// Opened with `OPEN_EXCLUSIVE`.
    pub(crate) exclusive: bool,
    /// Recovery could not account for all of its pages: it cannot be opened.
    pub(crate) damaged: bool,
    /// Live user mappings (VMAs) of it, read-only or writable, plus one for a block device.
    pub(crate) maps: u32,
    /// Of those, the ones that may be written (a block device is one).
    pub(crate) wmaps: u32,
    /// Mounted as a riofs: its volume's lock, which writeback holds while it copies the
    /// object, so that the disk gets an image with at most one operation in flight (which
    /// the undo log in the image itself undoes).
    pub(crate) riofs: Option<Arc<crate::riofs::Gate>>,
}

/// One slot of the object table.
pub(crate) enum Slot {
    /// Free; the next write goes to the copy after `copy`, with a higher `seq`.
    Empty { copy: usize, seq: u64 },
    /// Holds an object.
    Used(Object),
    /// Both copies are corrupt, or the slot contradicts the arena (a size larger than the
    /// arena, a second object of the same name): its pages are kept (never handed out)
    /// until a format.
    Quarantined,
    /// Empty, but the backing disk's entry for this slot was quarantined at load: not handed
    /// out, so that writeback leaves that entry as it was found (until a format).
    Reserved,
}

/// What loading found and did.
#[derive(Default, Clone, Copy)]
pub(crate) struct LoadReport {
    /// The arena was not shut down cleanly.
    pub(crate) crashed: bool,
    /// Objects found.
    pub(crate) objects: u32,
    /// Data pages in use.
    pub(crate) pages: u32,
    /// Dirty pages found.
    pub(crate) dirty: u32,
    /// Registry entries freed because no committed object accounted for them.
    pub(crate) reclaimed: u32,
    /// Pages kept out of service because their entry or their owner's slot is corrupt.
    pub(crate) quarantined: u32,
    /// Objects whose pages could not all be found.
    pub(crate) damaged: u32,
    /// Slots whose both copies are corrupt.
    pub(crate) bad_slots: u32,
    /// Who made the arena clean last (when it was clean).
    pub(crate) saved_by: u32,
}

/// Why an arena cannot be used.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    /// Never formatted (the superblock area is zero).
    Blank,
    /// Both superblock copies are bad; the error of copy A.
    Corrupt(crate::format::FormatError),
    /// Formatted for another size.
    SizeMismatch(u64),
}

/// The store of a formatted, recovered arena.
pub(crate) struct Store {
    /// Shared with the block devices, which reach it without the store's lock.
    pub(crate) arena: Arc<Arena>,
    pub(crate) sb: Superblock,
    sb_copy: usize,
    pub(crate) geo: Geometry,
    pub(crate) slots: KVec<Slot>,
    free: KVec<u32>,
    pub(crate) dirty_pages: u64,
    pub(crate) quarantined: u64,
    pub(crate) report: LoadReport,
    pub(crate) bytes_written: u64,
    /// `pwrite` pieces that went through a bounce page (the user's page was not resident).
    pub(crate) slow_writes: u64,
    /// `pread` pieces that went through a bounce page.
    pub(crate) slow_reads: u64,
}

/// How much of the arena one owner holds.
#[derive(Clone, Copy, Default)]
pub(crate) struct Usage {
    /// Objects.
    pub(crate) objects: u32,
    /// Data pages.
    pub(crate) pages: u64,
}

impl Store {
    /// Formats the arena: new identity, empty table and registry.
    pub(crate) fn format(
        arena: Arc<Arena>,
        size: u64,
        uuid: [u8; 16],
    ) -> core::result::Result<Store, (Arc<Arena>, Error)> {
        let Some(geo) = Geometry::for_size(size) else {
            return Err((arena, EINVAL));
        };
        let zero = |arena: &Arena, first: u32, n: u32| -> Result {
            for p in first..first + n {
                arena.write_page(p as usize, |b| b.fill(0, PAGE_SIZE, 0))??;
            }
            Ok(())
        };
        if let Err(e) = zero(&arena, 0, 1)
            .and_then(|()| zero(&arena, geo.table_start, geo.table_pages))
            .and_then(|()| zero(&arena, geo.registry_start, geo.registry_pages))
        {
            return Err((arena, e));
        }
        let sb = Superblock {
            seq: 1,
            state: STATE_CLEAN,
            uuid,
            epoch: 0,
            arena_size: size,
            geometry: geo,
            recoveries: 0,
            saved_by: crate::format::SAVED_BY_UNLOAD,
        };
        let mut page0 = [0u8; SB_SIZE];
        sb.encode(&mut page0);
        if let Err(e) = arena.write_page(0, |b| b.write(0, &page0)).and_then(|r| r) {
            return Err((arena, e));
        }
        Store::load(arena, size).map_err(|(a, _)| (a, EIO))
    }

    /// Makes the arena blank again (both superblock copies zeroed), for a restore from the
    /// backing disk that could not finish: the next load sees a blank arena, not a valid
    /// one that would let writeback overwrite the disk's objects with empty entries.
    pub(crate) fn unformat(self) -> Arc<Arena> {
        if let Err(e) = self
            .arena
            .write_page(0, |b| b.fill(0, PAGE_SIZE, 0))
            .and_then(|r| r)
        {
            pr_err!(
                "could not blank the arena's superblock: error {}\n",
                e.to_errno()
            );
        }
        self.arena
    }

    /// Writes a new superblock copy over the older one.
    fn write_sb(&mut self, mut sb: Superblock) -> Result {
        sb.seq = self.sb.seq + 1;
        let copy = other_copy(self.sb_copy);
        let mut buf = [0u8; SB_SIZE];
        sb.encode(&mut buf);
        let off = if copy == 0 { 0 } else { SB_COPY_B };
        self.arena.write_page(0, |p| p.write(off, &buf))??;
        self.sb = sb;
        self.sb_copy = copy;
        Ok(())
    }

    /// Marks the arena cleanly shut down (everything written back) by `saved_by`.
    pub(crate) fn mark_clean(&mut self, saved_by: u32) -> Result {
        let mut sb = self.sb;
        sb.state = STATE_CLEAN;
        sb.saved_by = saved_by;
        self.write_sb(sb)
    }

    /// Commits new contents of slot `idx` (into the older copy, with a higher sequence);
    /// returns the slot as written and the copy it went to.
    fn commit_slot(&mut self, idx: usize, mut s: ObjectSlot) -> Result<(ObjectSlot, usize)> {
        let (copy, seq) = match self.slots.get(idx) {
            Some(Slot::Used(o)) => (other_copy(o.copy), o.slot.seq + 1),
            Some(Slot::Empty { copy, seq }) => (other_copy(*copy), seq + 1),
            _ => return Err(EIO),
        };
        s.seq = seq;
        let mut buf = [0u8; SLOT_COPY_SIZE];
        s.encode(&mut buf);
        let at = idx * 2 * SLOT_COPY_SIZE + copy * SLOT_COPY_SIZE;
        let page = self.geo.table_start as usize + at / PAGE_SIZE;
        let off = at % PAGE_SIZE;
        self.arena.write_page(page, |p| p.write(off, &buf))??;
        Ok((s, copy))
    }

    /// Finds an object by name.
    pub(crate) fn find(&self, name: &[u8]) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| matches!(s, Slot::Used(o) if o.slot.name() == name))
    }

    /// The object in slot `idx`.
    pub(crate) fn object(&self, idx: usize) -> Result<&Object> {
        match self.slots.get(idx) {
            Some(Slot::Used(o)) => Ok(o),
            _ => Err(ENOENT),
        }
    }

    /// The object in slot `idx`, mutably.
    pub(crate) fn object_mut(&mut self, idx: usize) -> Result<&mut Object> {
        match self.slots.get_mut(idx) {
            Some(Slot::Used(o)) => Ok(o),
            _ => Err(ENOENT),
        }
    }

    /// Creates an object in the first free slot.
    pub(crate) fn create(
        &mut self,
        name: &[u8],
        size: u64,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<usize> {
        encode_name(name).ok_or(EINVAL)?;
        if self.find(name).is_some() {
            return Err(EEXIST);
        }
        let idx = self
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Empty { .. }))
            .ok_or(ENFILE)?;
        self.create_at(idx, name, size, uid, gid, mode)?;
        Ok(idx)
    }

    /// Creates an object in slot `idx`, which must be empty (restore puts objects back in
    /// the slots they had).
    pub(crate) fn create_at(
        &mut self,
        idx: usize,
        name: &[u8],
        size: u64,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result {
        let field = encode_name(name).ok_or(EINVAL)?;
        if self.find(name).is_some() {
            return Err(EEXIST);
        }
        if !matches!(self.slots.get(idx), Some(Slot::Empty { .. })) {
            return Err(EBUSY);
        }
        let max = u64::from(self.geo.data_pages) * PAGE_SIZE as u64;
        if size > max {
            return Err(EFBIG);
        }
        let n = pages_for(size);
        if n as usize > self.free.len() {
            return Err(ENOSPC);
        }
        let pages = match self.claim(idx, 0, n) {
            Ok(p) => p,
            Err(e) => {
                // Nothing committed: the claimed pages are orphans; give them back now
                // (recovery would reclaim them too).
                self.reclaim_orphans(idx)?;
                return Err(e);
            }
        };
        let slot = ObjectSlot {
            seq: 0,
            flags: OBJ_IN_USE,
            name: field,
            size,
            uid,
            gid,
            mode: mode & 0o777,
        };
        let (slot, copy) = self.commit_slot(idx, slot)?;
        self.slots[idx] = Slot::Used(Object {
            slot,
            copy,
            pages,
            open_count: 0,
            exclusive: false,
            damaged: false,
            maps: 0,
            wmaps: 0,
            riofs: None,
        });
        Ok(())
    }

    fn reclaim_orphans(&mut self, owner: usize) -> Result {
        for p in 0..self.geo.data_pages {
            if let Ok(e) = self.reg(p) {
                if e.owner == Some(owner as u16) {
                    self.release(&[p])?;
                }
            }
        }
        Ok(())
    }

    /// Deletes the object in slot `idx` (nobody may have it open).
    pub(crate) fn delete(&mut self, idx: usize) -> Result {
        let o = self.object(idx)?;
        if o.open_count > 0 {
            return Err(EBUSY);
        }
        let (empty, copy) = self.commit_slot(idx, ObjectSlot::EMPTY)?;
        let old = core::mem::replace(
            &mut self.slots[idx],
            Slot::Empty {
                copy,
                seq: empty.seq,
            },
        );
        if let Slot::Used(o) = old {
            let mut pages = o.pages;
            pages.retain(|p| *p != u32::MAX);
            self.release(&pages)?;
        }
        Ok(())
    }

    /// Changes the size of the object in slot `idx`.
    pub(crate) fn resize(&mut self, idx: usize, size: u64) -> Result {
        let o = self.object(idx)?;
        // A live mapping (or block device) keeps its frames in page tables that rio.ko
        // does not rewrite: freeing them would hand another object's data to it.
        if o.maps > 0 && pages_for(size) < o.slot.pages() {
            return Err(EBUSY);
        }
        // A block device's capacity was fixed when it was made: its object cannot shrink
        // at all (not even within its last page, whose tail a shrink would zero).
        if o.slot.flags & OBJ_BLOCKDEV != 0 && size < o.slot.size {
            return Err(EBUSY);
        }
        let max = u64::from(self.geo.data_pages) * PAGE_SIZE as u64;
        if size > max {
            return Err(EFBIG);
        }
        let old_pages = o.slot.pages();
        let new_pages = pages_for(size);
        let mut slot = o.slot;
        slot.size = size;
        if new_pages > old_pages {
            let grow = new_pages - old_pages;
            if grow as usize > self.free.len() {
                return Err(ENOSPC);
            }
            let got = self.claim(idx, old_pages, grow)?;
            let (slot, copy) = self.commit_slot(idx, slot)?;
            let o = self.object_mut(idx)?;
            for p in got {
                o.pages.push(p, GFP_KERNEL)?;
            }
            o.slot = slot;
            o.copy = copy;
        } else {
            let (slot, copy) = self.commit_slot(idx, slot)?;
            let o = self.object_mut(idx)?;
            o.slot = slot;
            o.copy = copy;
            let cut: KVec<u32> = {
                let mut v = KVec::new();
                while o.pages.len() > new_pages as usize {
                    // Skip the missing-page marker of a damaged object.
                    if let Some(p) = o.pages.pop().filter(|&p| p != u32::MAX) {
                        v.push(p, GFP_KERNEL)?;
                    }
                }
                v
            };
            self.release(&cut)?;
            // Bytes past the new end of the last page must read as zero if it grows again.
            let tail = (size % PAGE_SIZE as u64) as usize;
            if tail != 0 {
                if let Some(&last) = self.object(idx)?.pages.last().filter(|&&p| p != u32::MAX) {
                    self.mark_dirty(last)?;
                    self.arena.write_page(self.arena_page(last), |b| {
                        b.fill(tail, PAGE_SIZE - tail, 0)
                    })??;
                }
            }
        }
        Ok(())
    }

    /// Clears the mapped mark of slot `idx` once no writable mapping is left: every page is
    /// marked dirty first (stores through the mapping bypassed the registry), so the
    /// registry is exact again and writeback goes back to writing only dirty pages.
    pub(crate) fn settle_mapped(&mut self, idx: usize) -> Result {
        let o = self.object(idx)?;
        if o.slot.flags & OBJ_MAPPED == 0 || o.wmaps > 0 {
            return Ok(());
        }
        let mut pages = KVec::with_capacity(o.pages.len(), GFP_KERNEL)?;
        for &p in o.pages.iter().filter(|&&p| p != u32::MAX) {
            pages.push(p, GFP_KERNEL)?;
        }
        for p in pages {
            self.mark_dirty(p)?;
        }
        self.set_flags(idx, 0, OBJ_MAPPED)
    }

    /// After recovery: objects marked mapped have no mapping any more (a crash ended them).
    pub(crate) fn settle_all_mapped(&mut self) -> Result {
        for idx in 0..self.slots.len() {
            if matches!(&self.slots[idx], Slot::Used(o) if !o.damaged) {
                self.settle_mapped(idx)?;
            }
        }
        Ok(())
    }

    /// A mapping (or a block device) of slot `idx` appeared.
    pub(crate) fn map_opened(&mut self, idx: usize, writable: bool) -> Result {
        if writable {
            self.mark_mapped(idx)?;
        }
        let o = self.object_mut(idx)?;
        o.maps = o.maps.saturating_add(1);
        if writable {
            o.wmaps = o.wmaps.saturating_add(1);
        }
        Ok(())
    }

    /// A mapping (or a block device) of slot `idx` went away.
    pub(crate) fn map_closed(&mut self, idx: usize, writable: bool) -> Result {
        let o = self.object_mut(idx)?;
        o.maps = o.maps.saturating_sub(1);
        if writable {
            o.wmaps = o.wmaps.saturating_sub(1);
        }
        self.settle_mapped(idx)
    }

    /// Objects and data pages owned by `uid`.
    pub(crate) fn usage(&self, uid: u32) -> Usage {
        let mut u = Usage::default();
        for s in self.slots.iter() {
            if let Slot::Used(o) = s {
                if o.slot.uid == uid {
                    u.objects += 1;
                    u.pages += o.pages.len() as u64;
                }
            }
        }
        u
    }

    /// Keeps slot `idx` out of use for this load if it is empty (its disk entry is
    /// quarantined).
    pub(crate) fn reserve_slot(&mut self, idx: usize) {
        if let Some(s @ Slot::Empty { .. }) = self.slots.get_mut(idx) {
            *s = Slot::Reserved;
        }
    }

    /// Sets and clears flags of slot `idx`, committing the slot if they change.
    pub(crate) fn set_flags(&mut self, idx: usize, set: u32, clear: u32) -> Result {
        let mut slot = self.object(idx)?.slot;
        let flags = (slot.flags | set) & !clear;
        if flags == slot.flags {
            return Ok(());
        }
        slot.flags = flags;
        let (slot, copy) = self.commit_slot(idx, slot)?;
        let o = self.object_mut(idx)?;
        o.slot = slot;
        o.copy = copy;
        Ok(())
    }

    /// Records that slot `idx` is mapped writable: stores through the mapping do not pass
    /// through rio.ko, so recovery and writeback must treat every page as dirty.
    pub(crate) fn mark_mapped(&mut self, idx: usize) -> Result {
        self.set_flags(idx, OBJ_MAPPED, 0)
    }

    /// Pages of slot `idx` that are dirty.
    pub(crate) fn dirty_of(&self, idx: usize) -> u32 {
        self.object(idx)
            .map(|o| {
                if o.slot.flags & OBJ_MAPPED != 0 {
                    return o.pages.len() as u32;
                }
                o.pages
                    .iter()
                    .filter(|&&p| p != u32::MAX && self.reg(p).map(|e| e.dirty).unwrap_or(false))
                    .count() as u32
            })
            .unwrap_or(0)
    }

    /// Pages in use by objects.
    pub(crate) fn pages_in_use(&self) -> u64 {
        u64::from(self.geo.data_pages) - self.free.len() as u64 - self.quarantined
    }

    /// Objects in the table.
    pub(crate) fn object_count(&self) -> u64 {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Used(_)))
            .count() as u64
    }
}
