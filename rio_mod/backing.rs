// SPDX-License-Identifier: GPL-2.0

//! The backing store: the disk home of every object (format in [`crate::format`]).
//!
//! Dirty data reaches it by *writeback*: from the background thread every `writeback_ms`,
//! on `RIO_IOC_SYNC`, at load after a crash, and at a clean unload. It is what survives a
//! power loss that takes the arena with it: on a load that finds the arena blank and the
//! disk ours, the objects are restored from it.

use kernel::prelude::*;

use crate::format::{
    disk_bytes_needed, first_fit, DiskEntry, DiskSuper, FormatError, Geometry, ObjectSlot,
    DISK_DATA_START, DISK_ENTRY_SIZE, DISK_TABLE_BLOCKS, DISK_TABLE_START, MAX_OBJECTS,
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
    data_blocks: u64,
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

fn block_pos(block: u64) -> u64 {
    block * PAGE_SIZE as u64
}

impl Backing {
    /// Opens `major:minor` for an arena of `geo`, checks its size and reads what it holds.
    /// Every problem is refused with a clear message; nothing is written.
    pub(crate) fn open(major: u32, minor: u32, geo: &Geometry) -> Result<(Self, DiskState)> {
        let holder = core::ptr::addr_of!(HOLDER).cast_mut().cast();
        let file = BlockFile::open(major, minor, holder).inspect_err(|e| {
            pr_err!("cannot open backing device {}:{}: error {}\n", major, minor, e.to_errno());
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
            data_blocks: size / PAGE_SIZE as u64 - DISK_DATA_START,
            bytes_written_back: 0,
            writebacks: 0,
        };
        b.read_table(matches!(state, DiskState::Ours(_)))?;
        Ok((b, state))
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

    /// Makes the disk the (empty) home of the arena `uuid`.
    pub(crate) fn initialize(&mut self, uuid: [u8; 16]) -> Result {
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
        Ok(())
    }

    fn write_entry(&self, idx: usize, e: &DiskEntry) -> Result {
        let mut buf = [0u8; DISK_ENTRY_SIZE];
        e.encode(&mut buf);
        self.file
            .write_at(&buf, block_pos(DISK_TABLE_START) + (idx * DISK_ENTRY_SIZE) as u64)
    }

    /// Writes every dirty page (every page of objects mapped writable) to the disk, then
    /// the object table, then marks what it wrote clean. Returns the pages written.
    pub(crate) fn writeback(&mut self, store: &mut Store) -> Result<u64> {
        let mut written = 0u64;
        let mut new_entries: KVec<(usize, DiskEntry)> = KVec::new();
        let mut cleaned: KVec<u32> = KVec::new();
        let mut unmapped: KVec<usize> = KVec::new();
        for idx in 0..store.slots.len() {
            let old = self.entries[idx];
            let o = match &store.slots[idx] {
                Slot::Used(o) if !o.damaged => o,
                Slot::Empty { .. } if old.in_use() => {
                    new_entries.push((idx, DiskEntry::EMPTY), GFP_KERNEL)?;
                    continue;
                }
                _ => continue,
            };
            let need = (o.pages.len() as u64).max(1);
            let mapped = o.slot.flags & OBJ_MAPPED != 0;
            let moved = !old.in_use() || old.slot.name != o.slot.name || old.blocks < need;
            let entry = if moved {
                // A new extent, clear of every extent an entry on disk still points at.
                let mut used = KVec::with_capacity(self.entries.len(), GFP_KERNEL)?;
                for e in self.entries.iter().filter(|e| e.in_use()) {
                    used.push((e.start, e.blocks), GFP_KERNEL)?;
                }
                for (_, e) in new_entries.iter().filter(|(_, e)| e.in_use()) {
                    used.push((e.start, e.blocks), GFP_KERNEL)?;
                }
                let Some(start) = first_fit(&mut used, need, self.data_blocks) else {
                    pr_err!("backing disk is too fragmented for {} blocks; writeback postponed\n", need);
                    return Err(ENOSPC);
                };
                DiskEntry {
                    slot: o.slot,
                    start,
                    blocks: need,
                }
            } else {
                DiskEntry { slot: o.slot, ..old }
            };
            for (i, &p) in o.pages.iter().enumerate() {
                let dirty = store.reg(p).map(|e| e.dirty).unwrap_or(true);
                if !(moved || mapped || dirty) {
                    continue;
                }
                let page = store.arena.page(store.arena_page(p))?;
                self.file
                    .write_at(page, block_pos(DISK_DATA_START + entry.start + i as u64))?;
                written += 1;
                // A page of an object that may still be mapped can change under us at any
                // time: it stays dirty. With no mapping left (no open file), what was just
                // written is what the page holds.
                if dirty && (!mapped || o.open_count == 0) {
                    cleaned.push(p, GFP_KERNEL)?;
                }
            }
            if moved || !same_object(&old.slot, &o.slot) {
                let mut e = entry;
                e.slot.flags = OBJ_IN_USE;
                e.slot.seq = 0;
                new_entries.push((idx, e), GFP_KERNEL)?;
            }
            if mapped && o.open_count == 0 {
                unmapped.push(idx, GFP_KERNEL)?;
            }
        }
        if written == 0 && new_entries.is_empty() && unmapped.is_empty() {
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
        }
        for p in cleaned {
            store.set_clean(p)?;
        }
        for idx in unmapped {
            // No file is open, so no mapping exists (a mapping holds its file open): every
            // page was just written; the registry is authoritative again.
            store.clear_mapped(idx)?;
        }
        self.bytes_written_back += written * PAGE_SIZE as u64;
        self.writebacks += 1;
        Ok(written)
    }

    /// Fills a freshly formatted arena with the objects on the disk. Returns how many.
    pub(crate) fn restore(&mut self, store: &mut Store) -> Result<u32> {
        let mut buf = KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?;
        let mut n = 0;
        for idx in 0..self.entries.len() {
            let e = self.entries[idx];
            if !e.in_use() {
                continue;
            }
            let s = e.slot;
            store.create_at(idx, s.name(), s.size, s.uid, s.gid, s.mode)?;
            let count = store.object(idx)?.pages.len();
            for i in 0..count {
                let p = *store.object(idx)?.pages.get(i).ok_or(EIO)?;
                self.file
                    .read_at(&mut buf, block_pos(DISK_DATA_START + e.start + i as u64))?;
                store
                    .arena
                    .write_page(store.arena_page(p), |page| page.copy_from_slice(&buf))?;
                store.set_clean(p)?;
            }
            n += 1;
        }
        Ok(n)
    }
}
