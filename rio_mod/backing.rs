// SPDX-License-Identifier: GPL-2.0

//! The backing store: the disk home of every object (format in [`crate::format`]).
//!
//! Dirty data reaches it by *writeback*: from the background thread every `writeback_ms`,
//! on `RIO_IOC_SYNC`, at load after a crash, and at a clean unload. It is what survives a
//! power loss that takes the arena with it: on a load that finds the arena blank and the
//! disk ours, the objects are restored from it.
//!
//! What is read from the disk is untrusted input: an entry whose extent leaves the data
//! area, overlaps another entry's, does not fit the arena or repeats a name is quarantined
//! (one `dmesg` line): it is not restored, writeback leaves it as it was found, and its
//! slot stays out of use until the next format. Every block number is computed with checked
//! arithmetic.

use kernel::prelude::*;

use crate::format::{
    disk_bytes_needed, encode_name, first_fit, DiskEntry, DiskSuper, FormatError, Geometry,
    ObjectSlot, DISK_DATA_START, DISK_ENTRY_SIZE, DISK_TABLE_BLOCKS, DISK_TABLE_START, MAX_OBJECTS,
    OBJ_IN_USE, OBJ_MAPPED, PAGE_SIZE, SB_SIZE,
};
use crate::store::{Slot, Store};
use crate::sys::BlockFile;

/// Identifies rio.ko as the exclusive holder of the backing device.
static HOLDER: u8 = 0;

/// What the disk's first block says.
pub(crate) enum DiskState {
    /// All zero: never used.
    Blank,
    /// A Rio disk, of the arena with this UUID.
    Ours([u8; 16]),
}

/// The opened backing device.
pub(crate) struct Backing {
    file: BlockFile,
    /// `major:minor`, for messages.
    pub(crate) dev: (u32, u32),
    entries: KVec<DiskEntry>,
    /// Entries found bad at load: never restored, never overwritten by writeback while
    /// their arena slot is empty.
    quarantined: KVec<bool>,
    data_blocks: u64,
    /// A format could not initialise the disk for this arena: retried by every writeback.
    pending_init: Option<[u8; 16]>,
    /// Bytes written back since load.
    pub(crate) bytes_written_back: u64,
    /// Writeback passes that wrote something.
    pub(crate) writebacks: u64,
}

fn same_object(a: &ObjectSlot, b: &ObjectSlot) -> bool {
    a.name == b.name
        && a.size == b.size
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mode == b.mode
        && (a.flags & OBJ_IN_USE) == (b.flags & OBJ_IN_USE)
}

/// Byte position of data block `start + i` of an extent (checked: a bad entry must not
/// overflow, which the kernel's Rust overflow checks would turn into a panic).
fn data_pos(start: u64, i: u64) -> Result<u64> {
    DISK_DATA_START
        .checked_add(start)
        .and_then(|b| b.checked_add(i))
        .and_then(|b| b.checked_mul(PAGE_SIZE as u64))
        .ok_or(EIO)
}

fn block_pos(block: u64) -> u64 {
    block * PAGE_SIZE as u64
}

impl Backing {
    /// Opens `major:minor` for an arena of `geo`, checks its size and reads what it holds.
    /// Every problem is refused with a clear message; nothing is written.
    pub(crate) fn open(major: u32, minor: u32, geo: &Geometry) -> Result<(Self, DiskState)> {
        let holder = core::ptr::addr_of!(HOLDER).cast_mut().cast();
        let file = BlockFile::open(major, minor, holder).inspect_err(|e| {
            pr_err!(
                "cannot open backing device {}:{}: error {}\n",
                major,
                minor,
                e.to_errno()
            );
        })?;
        let size = file.size()?;
        let need = disk_bytes_needed(geo);
        if size < need {
            pr_err!(
                "backing device {}:{} is too small: {} bytes, the arena needs at least {} ({} MiB)\n",
                major,
                minor,
                size,
                need,
                need.div_ceil(1 << 20)
            );
            return Err(ENOSPC);
        }
        let mut block = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?;
        file.read_at(&mut block, 0)?;
        let state = match DiskSuper::decode(&block[..SB_SIZE]) {
            Ok(d) => DiskState::Ours(d.uuid),
            Err(FormatError::Blank) => DiskState::Blank,
            Err(e) => {
                pr_err!(
                    "backing device {}:{} holds something other than a Rio disk ({:?}); refusing to overwrite it\n",
                    major,
                    minor,
                    e
                );
                return Err(EINVAL);
            }
        };
        let mut b = Backing {
            file,
            dev: (major, minor),
            entries: KVec::new(),
            quarantined: KVec::new(),
            data_blocks: size / PAGE_SIZE as u64 - DISK_DATA_START,
            pending_init: None,
            bytes_written_back: 0,
            writebacks: 0,
        };
        b.read_table(matches!(state, DiskState::Ours(_)))?;
        b.check_table(geo)?;
        Ok((b, state))
    }

    /// Quarantines the entries that cannot be right (see the module documentation).
    fn check_table(&mut self, geo: &Geometry) -> Result {
        self.quarantined = KVec::from_elem(false, self.entries.len(), GFP_KERNEL)?;
        let quarantine = |q: &mut KVec<bool>, i: usize, why: &str| {
            if !q[i] {
                pr_err!(
                    "backing disk: object entry {} {}; quarantined (not restored, left as found)\n",
                    i,
                    why
                );
                q[i] = true;
            }
        };
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            if !e.in_use() {
                continue;
            }
            if encode_name(e.slot.name()).is_none() {
                quarantine(&mut self.quarantined, i, "has an invalid name");
            } else if e
                .start
                .checked_add(e.blocks)
                .is_none_or(|end| end > self.data_blocks)
            {
                quarantine(&mut self.quarantined, i, "points past the end of the disk");
            } else if e.slot.pages() > geo.data_pages {
                quarantine(&mut self.quarantined, i, "is larger than the arena");
            } else if self.entries[..i]
                .iter()
                .enumerate()
                .any(|(j, f)| f.in_use() && !self.quarantined[j] && f.slot.name == e.slot.name)
            {
                quarantine(
                    &mut self.quarantined,
                    i,
                    "repeats the name of an earlier entry",
                );
            }
        }
        // Overlapping extents: one object's writeback would overwrite the other's data, and
        // nothing says which is right, so both go.
        for i in 0..self.entries.len() {
            for j in i + 1..self.entries.len() {
                let (a, b) = (self.entries[i], self.entries[j]);
                if !a.in_use() || !b.in_use() || self.quarantined[i] || self.quarantined[j] {
                    continue;
                }
                if a.start < b.start.saturating_add(b.blocks)
                    && b.start < a.start.saturating_add(a.blocks)
                {
                    quarantine(&mut self.quarantined, i, "overlaps another entry's extent");
                    quarantine(&mut self.quarantined, j, "overlaps another entry's extent");
                }
            }
        }
        Ok(())
    }

    /// The slots whose disk entries are quarantined.
    pub(crate) fn quarantined_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.quarantined
            .iter()
            .enumerate()
            .filter(|(_, q)| **q)
            .map(|(i, _)| i)
    }

    /// Makes the disk blank (its superblock zeroed and synced), as the first step of a
    /// format: if this fails nothing has changed; if a later step fails, a blank disk is
    /// what any arena accepts and fills at its next load.
    pub(crate) fn blank(&mut self) -> Result {
        let block = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?;
        self.file.write_at(&block, 0)?;
        self.file.sync()
    }

    fn read_table(&mut self, ours: bool) -> Result {
        let mut table = KVec::from_elem(0u8, (DISK_TABLE_BLOCKS as usize) * PAGE_SIZE, GFP_KERNEL)?;
        if ours {
            self.file.read_at(&mut table, block_pos(DISK_TABLE_START))?;
        }
        self.entries = KVec::with_capacity(MAX_OBJECTS, GFP_KERNEL)?;
        for i in 0..MAX_OBJECTS {
            let at = i * DISK_ENTRY_SIZE;
            let e = DiskEntry::decode(&table[at..at + DISK_ENTRY_SIZE]).unwrap_or_else(|_| {
                pr_err!("backing disk: object entry {} is corrupt; ignored\n", i);
                DiskEntry::EMPTY
            });
            self.entries.push(e, GFP_KERNEL)?;
        }
        Ok(())
    }

    /// Makes the disk the (empty) home of the arena `uuid`. If that fails, every later
    /// writeback tries again before it writes anything.
    pub(crate) fn initialize(&mut self, uuid: [u8; 16]) -> Result {
        self.pending_init = Some(uuid);
        self.try_initialize()
    }

    fn try_initialize(&mut self) -> Result {
        let Some(uuid) = self.pending_init else {
            return Ok(());
        };
        let mut block = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?;
        for b in DISK_TABLE_START..DISK_DATA_START {
            self.file.write_at(&block, block_pos(b))?;
        }
        DiskSuper {
            uuid,
            blocks: self.data_blocks + DISK_DATA_START,
        }
        .encode(&mut block[..SB_SIZE]);
        self.file.write_at(&block, 0)?;
        self.file.sync()?;
        for e in self.entries.iter_mut() {
            *e = DiskEntry::EMPTY;
        }
        for q in self.quarantined.iter_mut() {
            *q = false;
        }
        self.pending_init = None;
        Ok(())
    }

    fn write_entry(&self, idx: usize, e: &DiskEntry) -> Result {
        let mut buf = [0u8; DISK_ENTRY_SIZE];
        e.encode(&mut buf);
        self.file.write_at(
            &buf,
            block_pos(DISK_TABLE_START) + (idx * DISK_ENTRY_SIZE) as u64,
        )
    }

    /// Writes every dirty page (every page of objects mapped writable) to the disk, then
    /// the object table, then marks what it wrote clean. With `only_uid`, only that owner's
    /// objects (an unprivileged `SYNC`). Returns the pages written.
    pub(crate) fn writeback(&mut self, store: &mut Store, only_uid: Option<u32>) -> Result<u64> {
        self.try_initialize()?;
        let mut written = 0u64;
        let mut new_entries: KVec<(usize, DiskEntry)> = KVec::new();
        let mut cleaned: KVec<u32> = KVec::new();
        let mut bounce = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?;
        for idx in 0..store.slots.len() {
            let quarantined = self.quarantined.get(idx).copied().unwrap_or(false);
            // A quarantined entry is not ours to reuse: treat it as absent (its extent
            // stays out of first fit below).
            let old = if quarantined {
                DiskEntry::EMPTY
            } else {
                self.entries[idx]
            };
            let o = match &store.slots[idx] {
                Slot::Used(o) if !o.damaged && only_uid.is_none_or(|u| u == o.slot.uid) => o,
                Slot::Empty { .. } if only_uid.is_none() && old.in_use() => {
                    new_entries.push((idx, DiskEntry::EMPTY), GFP_KERNEL)?;
                    continue;
                }
                _ => continue,
            };
            let need = (o.pages.len() as u64).max(1);
            let mapped = o.slot.flags & OBJ_MAPPED != 0;
            // A mounted riofs always goes to a fresh extent, and its entry moves only
            // after the data is on the disk: a power cut during writeback leaves the
            // previous image whole, never a mix of two (a riofs is only consistent as a
            // whole). It costs twice its size on the disk.
            let riofs = o.riofs.clone();
            let moved = !old.in_use()
                || old.slot.name != o.slot.name
                || old.blocks < need
                || riofs.is_some();
            let entry = if moved {
                // A new extent, clear of every extent an entry on disk still points at.
                let mut used = KVec::with_capacity(self.entries.len(), GFP_KERNEL)?;
                for e in self.entries.iter().filter(|e| e.in_use()) {
                    // Quarantined entries too (those past the disk's end are harmless).
                    used.push((e.start, e.blocks), GFP_KERNEL)?;
                }
                for (_, e) in new_entries.iter().filter(|(_, e)| e.in_use()) {
                    used.push((e.start, e.blocks), GFP_KERNEL)?;
                }
                let Some(start) = first_fit(&mut used, need, self.data_blocks) else {
                    pr_err!(
                        "backing disk is too fragmented for {} blocks; writeback postponed\n",
                        need
                    );
                    return Err(ENOSPC);
                };
                DiskEntry {
                    slot: o.slot,
                    start,
                    blocks: need,
                }
            } else {
                DiskEntry {
                    slot: o.slot,
                    ..old
                }
            };
            // Lock order: the store's mutex (held by our caller), then the volume's.
            let _quiet = riofs.as_ref().map(|g| g.lock());
            for (i, &p) in o.pages.iter().enumerate() {
                let dirty = store.reg(p).map(|e| e.dirty).unwrap_or(true);
                if !(moved || mapped || dirty) {
                    continue;
                }
                // A snapshot first: the page may change under us (mappings, block devices),
                // and the disk write must not read memory others write.
                store.arena.read(store.arena_page(p), 0, &mut bounce)?;
                self.file
                    .write_at(&bounce, data_pos(entry.start, i as u64)?)?;
                written += 1;
                // A page of an object mapped writable can change at any time: it stays
                // dirty (the mark goes, and every page becomes dirty in the registry, when
                // the last writable mapping does).
                if dirty && !mapped {
                    cleaned.push(p, GFP_KERNEL)?;
                }
            }
            if moved || !same_object(&old.slot, &o.slot) {
                let mut e = entry;
                e.slot.flags = OBJ_IN_USE;
                e.slot.seq = 0;
                new_entries.push((idx, e), GFP_KERNEL)?;
            }
        }
        if written == 0 && new_entries.is_empty() {
            return Ok(0);
        }
        // Data first, then the entries that point at it.
        self.file.sync()?;
        for (idx, e) in new_entries.iter() {
            self.write_entry(*idx, e)?;
        }
        self.file.sync()?;
        for (idx, e) in new_entries.into_iter() {
            self.entries[idx] = e;
            // The arena's object now owns this entry: the quarantine is over.
            if let Some(q) = self.quarantined.get_mut(idx) {
                *q = false;
            }
        }
        for p in cleaned {
            store.set_clean(p)?;
        }
        self.bytes_written_back += written * PAGE_SIZE as u64;
        self.writebacks += 1;
        Ok(written)
    }

    /// Fills a freshly formatted arena with the objects on the disk. Returns how many.
    /// Quarantined entries are skipped (their slots reserved); any other failure (a read
    /// error, objects that together no longer fit) stops it with the index of the entry.
    /// The disk is only read.
    pub(crate) fn restore(
        &mut self,
        store: &mut Store,
    ) -> core::result::Result<u32, (usize, Error)> {
        let mut buf = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL).map_err(|e| (0, e.into()))?;
        let mut n = 0;
        for idx in 0..self.entries.len() {
            let e = self.entries[idx];
            if !e.in_use() {
                continue;
            }
            if self.quarantined.get(idx).copied().unwrap_or(false) {
                store.reserve_slot(idx);
                continue;
            }
            let s = e.slot;
            let fail = |err: Error| (idx, err);
            store
                .create_at(idx, s.name(), s.size, s.uid, s.gid, s.mode)
                .map_err(fail)?;
            let count = store.object(idx).map_err(fail)?.pages.len();
            for i in 0..count {
                let p = *store
                    .object(idx)
                    .map_err(fail)?
                    .pages
                    .get(i)
                    .ok_or(EIO)
                    .map_err(fail)?;
                let pos = data_pos(e.start, i as u64).map_err(fail)?;
                self.file.read_at(&mut buf, pos).map_err(fail)?;
                store
                    .arena
                    .write_page(store.arena_page(p), |page| page.write(0, &buf))
                    .and_then(|r| r)
                    .map_err(fail)?;
                store.set_clean(p).map_err(fail)?;
            }
            n += 1;
        }
        Ok(n)
    }
}
