// SPDX-License-Identifier: GPL-2.0

//! **The registry**: one 8-byte entry per data page of the arena (owner slot, index in the
//! object, dirty bit; [`crate::format::RegEntry`]), written through the protection window
//! before the slot that makes a page reachable is committed, so that recovery can account
//! for every page and writeback knows which pages the backing disk has not seen.

use kernel::prelude::*;

use super::*;

impl Store {
    pub(super) fn reg_location(&self, p: u32) -> (usize, usize) {
        let at = p as usize * 8;
        (
            self.geo.registry_start as usize + at / PAGE_SIZE,
            at % PAGE_SIZE,
        )
    }

    pub(super) fn reg_raw(&self, p: u32) -> Result<u64> {
        let (page, off) = self.reg_location(p);
        self.arena.read_u64(page, off)
    }

    pub(super) fn set_reg(&self, p: u32, e: RegEntry) -> Result {
        let (page, off) = self.reg_location(p);
        self.arena.write_u64(page, off, e.encode(p))
    }

    /// The registry entry of data page `p`.
    pub(crate) fn reg(&self, p: u32) -> Result<RegEntry> {
        RegEntry::decode(self.reg_raw(p)?, p).map_err(|_| EIO)
    }

    /// Arena page number of data page `p`.
    pub(crate) fn arena_page(&self, p: u32) -> usize {
        (self.geo.data_start + p) as usize
    }

    /// Takes `n` free pages, zeroes them and records them as owned by `owner` from index
    /// `first` on (dirty: the backing store has not seen them). Called before the slot
    /// that makes them reachable is committed.
    pub(super) fn claim(&mut self, owner: usize, first: u32, n: u32) -> Result<KVec<u32>> {
        if (n as usize) > self.free.len() {
            return Err(ENOSPC);
        }
        let mut got = KVec::with_capacity(n as usize, GFP_KERNEL)?;
        for i in 0..n {
            let Some(p) = self.free.pop() else {
                return Err(ENOSPC);
            };
            got.push(p, GFP_KERNEL)?;
            self.arena
                .write_page(self.arena_page(p), |b| b.fill(0, PAGE_SIZE, 0))??;
            self.set_reg(
                p,
                RegEntry {
                    owner: Some(owner as u16),
                    index: first + i,
                    dirty: true,
                },
            )?;
            self.dirty_pages += 1;
        }
        Ok(got)
    }

    /// Returns pages to the free list (after the slot no longer accounts for them).
    pub(super) fn release(&mut self, pages: &[u32]) -> Result {
        for &p in pages {
            if self.reg(p).map(|e| e.dirty).unwrap_or(false) {
                self.dirty_pages = self.dirty_pages.saturating_sub(1);
            }
            self.set_reg(p, RegEntry::FREE)?;
            self.free.push(p, GFP_KERNEL)?;
        }
        Ok(())
    }

    /// Records that data page `p` is about to change (before the data is copied, so that a
    /// crash in between errs on the side of writing back).
    pub(crate) fn mark_dirty(&mut self, p: u32) -> Result {
        let e = self.reg(p)?;
        if !e.dirty {
            self.set_reg(p, RegEntry { dirty: true, ..e })?;
            self.dirty_pages += 1;
        }
        Ok(())
    }

    /// Records that data page `p` matches the backing store.
    pub(crate) fn set_clean(&mut self, p: u32) -> Result {
        let e = self.reg(p)?;
        if e.dirty {
            self.set_reg(p, RegEntry { dirty: false, ..e })?;
            self.dirty_pages = self.dirty_pages.saturating_sub(1);
        }
        Ok(())
    }
}
