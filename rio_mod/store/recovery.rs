// SPDX-License-Identifier: GPL-2.0

//! **Recovery**: loading an arena a crash, a clean unload or a warm reboot left. Every slot
//! copy and registry entry is checked (it is untrusted input); the newest valid copy of
//! each slot wins, a bad entry is quarantined with one `dmesg` line, pages no committed
//! object accounts for are freed, and the arena is marked active with a new epoch. See
//! [`crate::format`] for the crash-consistency rules recovery relies on (Rio, section 3:
//! the registry lets a warm reboot find every page of every file).

use kernel::prelude::*;
use kernel::sync::Arc;

use super::*;

impl Store {
    /// Validates the arena and recovers it. On refusal the arena is returned untouched.
    pub(crate) fn load(
        arena: Arc<Arena>,
        size: u64,
    ) -> core::result::Result<Store, (Arc<Arena>, Refusal)> {
        let mut page0 = [0u8; SB_COPY_B + SB_SIZE];
        if arena.read(0, 0, &mut page0).is_err() {
            return Err((
                arena,
                Refusal::Corrupt(crate::format::FormatError::BadGeometry),
            ));
        }
        let (sb, sb_copy) = match Superblock::pick(&page0) {
            Ok(x) => x,
            Err(crate::format::FormatError::Blank) => return Err((arena, Refusal::Blank)),
            Err(e) => return Err((arena, Refusal::Corrupt(e))),
        };
        if sb.arena_size != size {
            return Err((arena, Refusal::SizeMismatch(sb.arena_size)));
        }
        let geo = sb.geometry;
        let mut store = Store {
            arena,
            sb,
            sb_copy,
            geo,
            slots: KVec::new(),
            free: KVec::new(),
            dirty_pages: 0,
            quarantined: 0,
            report: LoadReport::default(),
            bytes_written: 0,
            slow_writes: 0,
            slow_reads: 0,
        };
        match store.recover() {
            Ok(()) => Ok(store),
            Err(_) => Err((
                store.arena,
                Refusal::Corrupt(crate::format::FormatError::BadGeometry),
            )),
        }
    }

    /// Rebuilds the in-memory index from the object table and the registry, frees what no
    /// committed object accounts for, and marks the arena active with a new epoch.
    /// Idempotent: it only ever frees unaccounted entries and rewrites the superblock.
    fn recover(&mut self) -> Result {
        let mut rep = LoadReport {
            crashed: self.sb.state != STATE_CLEAN,
            ..LoadReport::default()
        };
        let table = self.geo.table_start as usize;
        let nslots = crate::format::MAX_OBJECTS;
        self.slots = KVec::with_capacity(nslots, GFP_KERNEL)?;
        for i in 0..nslots {
            let at = i * 2 * SLOT_COPY_SIZE;
            let mut both = [0u8; 2 * SLOT_COPY_SIZE];
            self.arena
                .read(table + at / PAGE_SIZE, at % PAGE_SIZE, &mut both)?;
            let slot = match ObjectSlot::pick(&both) {
                Ok((s, _)) if s.in_use() && s.pages() > self.geo.data_pages => {
                    pr_err!(
                        "object slot {}: size {} is larger than the arena; slot quarantined, its pages kept\n",
                        i,
                        s.size
                    );
                    rep.bad_slots += 1;
                    Slot::Quarantined
                }
                Ok((s, _))
                    if s.in_use()
                        && self
                            .slots
                            .iter()
                            .any(|x| matches!(x, Slot::Used(o) if o.slot.name == s.name)) =>
                {
                    pr_err!("object slot {}: a second object of the same name; slot quarantined, its pages kept\n", i);
                    rep.bad_slots += 1;
                    Slot::Quarantined
                }
                Ok((s, copy)) if s.in_use() => {
                    rep.objects += 1;
                    let mut pages = KVec::with_capacity(s.pages() as usize, GFP_KERNEL)?;
                    for _ in 0..s.pages() {
                        pages.push(u32::MAX, GFP_KERNEL)?;
                    }
                    Slot::Used(Object {
                        slot: s,
                        copy,
                        pages,
                        open_count: 0,
                        exclusive: false,
                        damaged: false,
                        maps: 0,
                        wmaps: 0,
                        riofs: None,
                    })
                }
                Ok((s, copy)) => Slot::Empty { copy, seq: s.seq },
                Err(e) => {
                    pr_err!("object slot {}: both copies are corrupt ({:?}); slot quarantined, its pages kept\n", i, e);
                    rep.bad_slots += 1;
                    Slot::Quarantined
                }
            };
            self.slots.push(slot, GFP_KERNEL)?;
        }
        self.free = KVec::with_capacity(self.geo.data_pages as usize, GFP_KERNEL)?;
        // Walk the registry from the top so that the free list hands out low pages first.
        for p in (0..self.geo.data_pages).rev() {
            let raw = self.reg_raw(p)?;
            let entry = match RegEntry::decode(raw, p) {
                Ok(e) => e,
                Err(_) => {
                    rep.quarantined += 1;
                    continue;
                }
            };
            let Some(owner) = entry.owner else {
                self.free.push(p, GFP_KERNEL)?;
                continue;
            };
            let keep = match self.slots.get_mut(usize::from(owner)) {
                Some(Slot::Used(o)) => match o.pages.get_mut(entry.index as usize) {
                    Some(slot_page) if *slot_page == u32::MAX => {
                        *slot_page = p;
                        true
                    }
                    _ => false, // beyond the committed size, or a duplicate
                },
                Some(Slot::Quarantined) => {
                    rep.quarantined += 1;
                    continue;
                }
                _ => false, // owner not committed (crash during create or delete)
            };
            if keep {
                rep.pages += 1;
                if entry.dirty {
                    rep.dirty += 1;
                }
            } else {
                self.set_reg(p, RegEntry::FREE)?;
                self.free.push(p, GFP_KERNEL)?;
                rep.reclaimed += 1;
            }
        }
        for s in self.slots.iter_mut() {
            if let Slot::Used(o) = s {
                if o.pages.iter().any(|&p| p == u32::MAX) {
                    o.damaged = true;
                    rep.damaged += 1;
                }
            }
        }
        self.dirty_pages = u64::from(rep.dirty);
        self.quarantined = u64::from(rep.quarantined);
        let mut sb = self.sb;
        sb.epoch += 1;
        if rep.crashed {
            sb.recoveries += 1;
        }
        sb.state = STATE_ACTIVE;
        self.write_sb(sb)?;
        rep.saved_by = self.sb.saved_by;
        self.report = rep;
        Ok(())
    }
}
