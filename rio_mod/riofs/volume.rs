// SPDX-License-Identifier: GPL-2.0

//! One mounted riofs: its blocks (arena pages of the object), the undo log and its
//! transactions, block and inode allocation, and the block map of a file.
//!
//! Everything here runs under the volume's mutex ([`super::Volume`]). Every byte reaches
//! the arena through [`Arena::write_page`], that is, through the protection window; every
//! byte read back is checked before it is trusted (see [`super::format`]).
//!
//! # Transactions
//!
//! An operation calls [`Vol::begin`], changes the object with [`Vol::write_logged`] (the old
//! bytes go to the undo log first, as a record of this transaction's number) or
//! [`Vol::write_data`] on a block this transaction allocated (nothing to undo), then
//! [`Vol::commit`] (one store: the log header's committed number) or, on an error,
//! [`Vol::abort`] (undo, as recovery would). Frees are deferred until after the
//! commit and are not logged: a crash between the commit and the frees leaks the blocks
//! until the next mount, which rebuilds the bitmap from what the inodes reach.

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::arena::Arena;

use super::format::{
    log_committed, record_pos, scan_log, Inode, LogScan, RecHdr, Super, BLOCK, INODE_SIZE, LOG_HDR,
    LOG_MAGIC, NDIRECT, PTRS, REC_HDR,
};

/// Most blocks one transaction allocates (bounds its log records).
pub(crate) const MAX_TX_ALLOC: usize = 256;

/// The state of one mounted riofs.
pub(crate) struct Vol {
    arena: Arc<Arena>,
    /// Arena page of each block.
    pages: KVVec<usize>,
    pub(crate) sb: Super,
    /// The last committed transaction (the log header's number); the running one is next.
    seq: u64,
    /// Where the running transaction's next record goes (a byte of the log; `LOG_HDR`
    /// while it has logged nothing).
    used: usize,
    /// Blocks allocated by the running transaction (writes to them are not logged).
    fresh: KVec<u32>,
    /// Bitmap words already logged by the running transaction.
    logged_words: KVec<u32>,
    /// Blocks to free once the running transaction commits.
    pending_free: KVec<u32>,
    /// A record's worth of scratch space (old bytes on their way to the log).
    scratch: KVec<u8>,
    pub(crate) free_blocks: u32,
    pub(crate) free_inodes: u32,
    blk_hint: u32,
    ino_hint: u32,
    /// Per inode: every directory slot below it is in use.
    pub(crate) dir_hint: KVVec<u32>,
    /// Counters at `begin`, restored by `abort`.
    saved: (u32, u32),
    /// Transactions committed and rolled back, since mount.
    pub(crate) commits: u64,
    pub(crate) aborts: u64,
}

fn corrupt(what: &str, n: u64) -> Error {
    pr_err!(
        "riofs: corrupt metadata: {} {}; run 'riofs-fsck' on an image\n",
        what,
        n
    );
    EUCLEAN
}

impl Vol {
    /// A volume over `pages` with superblock `sb`; counters are set by the mount.
    pub(crate) fn new(arena: Arc<Arena>, pages: KVVec<usize>, sb: Super) -> Result<Self> {
        // A block, and room for a record's header in front of it.
        let mut scratch = KVec::with_capacity(BLOCK + REC_HDR, GFP_KERNEL)?;
        scratch.resize(BLOCK + REC_HDR, 0, GFP_KERNEL)?;
        let mut dir_hint = KVVec::with_capacity(sb.inodes as usize, GFP_KERNEL)?;
        dir_hint.resize(sb.inodes as usize, 0, GFP_KERNEL)?;
        Ok(Self {
            arena,
            pages,
            sb,
            seq: 0,
            used: LOG_HDR,
            fresh: KVec::new(),
            logged_words: KVec::new(),
            pending_free: KVec::new(),
            scratch,
            free_blocks: 0,
            free_inodes: 0,
            blk_hint: sb.data_start,
            ino_hint: 2,
            dir_hint,
            saved: (0, 0),
            commits: 0,
            aborts: 0,
        })
    }

    /// Blocks of the object.
    pub(crate) fn blocks(&self) -> usize {
        self.pages.len()
    }

    /// Arena page of block `b`.
    fn page_of(&self, b: usize) -> Result<usize> {
        self.pages.get(b).copied().ok_or(EIO)
    }

    /// Arena frame of block `b` (for user mappings).
    pub(crate) fn pfn_of(&self, b: u32) -> Result<u64> {
        Ok(self.arena.first_pfn() + self.page_of(b as usize)? as u64)
    }

    /// Copies object bytes `off..off + dst.len()` out.
    pub(crate) fn read(&self, off: u64, dst: &mut [u8]) -> Result {
        let mut done = 0;
        while done < dst.len() {
            let at = off + done as u64;
            let b = usize::try_from(at / BLOCK as u64).map_err(|_| EIO)?;
            let o = (at % BLOCK as u64) as usize;
            let n = (dst.len() - done).min(BLOCK - o);
            self.arena
                .read(self.page_of(b)?, o, &mut dst[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Reads the little-endian `u32` at `off`.
    pub(crate) fn read_u32(&self, off: u64) -> Result<u32> {
        let mut w = [0u8; 4];
        self.read(off, &mut w)?;
        Ok(u32::from_le_bytes(w))
    }

    /// Writes object bytes in place, unlogged (through the window).
    fn write_raw(&self, off: u64, src: &[u8]) -> Result {
        let mut done = 0;
        while done < src.len() {
            let at = off + done as u64;
            let b = usize::try_from(at / BLOCK as u64).map_err(|_| EIO)?;
            let o = (at % BLOCK as u64) as usize;
            let n = (src.len() - done).min(BLOCK - o);
            let piece = &src[done..done + n];
            self.arena
                .write_page(self.page_of(b)?, |p| p.write(o, piece))??;
            done += n;
        }
        Ok(())
    }

    /// Zeroes `n` bytes at `off` of block `b` in place, unlogged.
    fn zero_raw(&self, b: u32, off: usize, n: usize) -> Result {
        if n == 0 {
            return Ok(());
        }
        self.arena
            .write_page(self.page_of(b as usize)?, |p| p.fill(off, n, 0))?
    }

    /// Stores `seq` as the last committed transaction: one aligned store, the commit point.
    fn set_committed(&mut self, seq: u64) -> Result {
        // Program order is the persistence order here: the records and the changes they
        // cover were stored before this word (x86 keeps stores in order; the window's
        // page-table writes and flushes are compiler barriers as well).
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        let pos = self.sb.log_pos();
        self.write_raw(pos, &seq.to_le_bytes())?;
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        self.seq = seq;
        Ok(())
    }

    /// Starts a transaction.
    pub(crate) fn begin(&mut self) {
        self.used = LOG_HDR;
        self.fresh.clear();
        self.logged_words.clear();
        self.pending_free.clear();
        self.saved = (self.free_blocks, self.free_inodes);
    }

    /// Commits the running transaction (one store, if it logged anything), then frees
    /// what it released.
    pub(crate) fn commit(&mut self) -> Result {
        if self.used != LOG_HDR {
            self.set_committed(self.seq + 1)?;
            self.used = LOG_HDR;
        }
        self.commits += 1;
        let pending = core::mem::take(&mut self.pending_free);
        for &b in pending.iter() {
            // Not logged: a crash here leaks `b` until the next mount's bitmap rebuild.
            self.set_bit(b, false)?;
            self.free_blocks += 1;
            if b < self.blk_hint {
                self.blk_hint = b;
            }
        }
        self.fresh.clear();
        self.logged_words.clear();
        Ok(())
    }

    /// Rolls the running transaction back and returns `err`.
    pub(crate) fn abort(&mut self, err: Error) -> Error {
        self.aborts += 1;
        if let Err(e) = self.undo() {
            pr_err!(
                "riofs: could not roll back a failed operation (error {}); the log stays for the next mount\n",
                e.to_errno()
            );
        }
        self.used = LOG_HDR;
        (self.free_blocks, self.free_inodes) = self.saved;
        self.pending_free.clear();
        self.fresh.clear();
        self.logged_words.clear();
        self.blk_hint = self.sb.data_start;
        self.ino_hint = 2;
        for h in self.dir_hint.iter_mut() {
            *h = 0;
        }
        err
    }

    /// Applies the records of the transaction after the last committed one in reverse
    /// (recovery and abort), then commits the undo. Refuses (changing nothing) a log
    /// without its magic or with a record that runs past its end. Returns the records.
    pub(crate) fn undo(&mut self) -> Result<usize> {
        let pos = self.sb.log_pos();
        let mut head = [0u8; 16];
        self.read(pos, &mut head)?;
        let committed = log_committed(&head)
            .ok_or_else(|| corrupt("undo log magic at block", u64::from(self.sb.log_start)))?;
        self.seq = committed;
        let cur = committed.wrapping_add(1);
        let mut recs: KVec<(usize, RecHdr)> = KVec::new();
        let mut failed = false;
        let scan = scan_log(
            &self.sb,
            cur,
            |at| {
                let mut h = [0u8; REC_HDR];
                self.read(pos + at as u64, &mut h).ok().map(|()| h)
            },
            |at, r| {
                failed = recs.push((at, r), GFP_KERNEL).is_err();
                !failed
            },
        );
        match scan {
            LogScan::Records(_) => {}
            LogScan::Corrupt(at) => return Err(corrupt("undo log record at byte", at as u64)),
            LogScan::Stopped => return Err(ENOMEM),
        }
        let n = recs.len();
        if n == 0 {
            return Ok(0);
        }
        for &(at, r) in recs.iter().rev() {
            let len = r.len as usize;
            let mut buf = core::mem::take(&mut self.scratch);
            let res = self
                .read(pos + (at + REC_HDR) as u64, &mut buf[..len])
                .and_then(|()| self.write_raw(r.off, &buf[..len]));
            self.scratch = buf;
            res?;
        }
        // The undo is done: its records become stale, as a commit's would.
        self.set_committed(cur)?;
        Ok(n)
    }

    /// Appends the current bytes of `off..off + len` (`len <= BLOCK`) to the log as a
    /// record of the running transaction: the old bytes first, the header last (a record
    /// whose header did not land is not found by recovery, and its range is unchanged).
    fn log_range(&mut self, off: u64, len: usize) -> Result {
        let at = record_pos(self.used);
        let span = RecHdr::span(len);
        if at + span > self.sb.log_bytes() {
            pr_err!("riofs: internal error: a transaction outgrew the undo log\n");
            return Err(ENOSPC);
        }
        let mut buf = core::mem::take(&mut self.scratch);
        let res = (|| -> Result {
            self.read(off, &mut buf[REC_HDR..REC_HDR + len])?;
            RecHdr {
                off,
                len: len as u32,
                seq: self.seq + 1,
            }
            .encode(&mut buf[..REC_HDR]);
            self.write_record(self.sb.log_pos() + at as u64, &buf[..REC_HDR + len])
        })();
        self.scratch = buf;
        res?;
        self.used = at + span;
        Ok(())
    }

    /// Writes record `rec` (header, then old bytes) at object byte `at`, the header's
    /// block last and, within it, the header after the bytes: the header never lands
    /// before the bytes it describes. The header does not straddle a block (`record_pos`).
    fn write_record(&self, at: u64, rec: &[u8]) -> Result {
        let bs = BLOCK as u64;
        let first_len = ((bs - at % bs) as usize).min(rec.len());
        // The bytes in the blocks after the header's (their order does not matter: all of
        // them land before the header).
        if rec.len() > first_len {
            self.write_raw(at + first_len as u64, &rec[first_len..])?;
        }
        // The header's block: the bytes, then the header, in one window.
        let b = usize::try_from(at / bs).map_err(|_| EIO)?;
        let o = (at % bs) as usize;
        let head = &rec[..first_len];
        self.arena.write_page(self.page_of(b)?, |p| {
            p.write(o + REC_HDR, &head[REC_HDR..])?;
            core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
            p.write(o, &head[..REC_HDR])
        })?
    }

    /// Changes `off..off + src.len()` in place, logging the old bytes first.
    pub(crate) fn write_logged(&mut self, off: u64, src: &[u8]) -> Result {
        let mut done = 0;
        while done < src.len() {
            let at = off + done as u64;
            let n = (src.len() - done).min(BLOCK - (at % BLOCK as u64) as usize);
            self.log_range(at, n)?;
            self.write_raw(at, &src[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Zeroes `n` bytes at `off` of block `b`, logged (`off + n <= BLOCK`).
    pub(crate) fn zero_logged(&mut self, b: u32, off: usize, n: usize) -> Result {
        if n == 0 {
            return Ok(());
        }
        let at = u64::from(b) * BLOCK as u64 + off as u64;
        self.log_range(at, n)?;
        self.zero_raw(b, off, n)
    }

    /// Writes `src` at `off` of data block `b`: unlogged if this transaction allocated `b`,
    /// logged otherwise.
    pub(crate) fn write_data(&mut self, b: u32, off: usize, src: &[u8]) -> Result {
        let at = u64::from(b) * BLOCK as u64 + off as u64;
        if self.fresh.contains(&b) {
            self.write_raw(at, src)
        } else {
            self.write_logged(at, src)
        }
    }

    /// Blocks this transaction allocated so far.
    pub(crate) fn fresh_count(&self) -> usize {
        self.fresh.len()
    }

    // ---- the bitmap ----------------------------------------------------------------------

    fn bitmap_word(&self, b: u32) -> Result<u64> {
        let mut w = [0u8; 8];
        self.read(self.sb.bitmap_word_pos(b), &mut w)?;
        Ok(u64::from_le_bytes(w))
    }

    fn set_bit(&mut self, b: u32, on: bool) -> Result {
        let w = self.bitmap_word(b)?;
        let bit = 1u64 << (b % 64);
        let nw = if on { w | bit } else { w & !bit };
        self.write_raw(self.sb.bitmap_word_pos(b), &nw.to_le_bytes())
    }

    /// Whether block `b` is marked in use.
    pub(crate) fn bit(&self, b: u32) -> Result<bool> {
        Ok(self.bitmap_word(b)? & (1u64 << (b % 64)) != 0)
    }

    /// Rewrites the whole bitmap from `used` (one bit per block), unlogged: the mount's
    /// rebuild. Returns the number of free data blocks.
    pub(crate) fn write_bitmap(&mut self, used: &[u64]) -> Result<u32> {
        let pos = u64::from(self.sb.bitmap_start) * BLOCK as u64;
        let mut free = 0u32;
        for (i, w) in used.iter().enumerate() {
            let cur = self.bitmap_word(i as u32 * 64)?;
            if cur != *w {
                self.write_raw(pos + i as u64 * 8, &w.to_le_bytes())?;
            }
        }
        for b in self.sb.data_start..self.sb.blocks {
            if used[(b / 64) as usize] & (1u64 << (b % 64)) == 0 {
                free += 1;
            }
        }
        self.free_blocks = free;
        Ok(free)
    }

    /// Allocates a data block for the running transaction, zeroed unless `will_fill`
    /// (the caller overwrites all of it).
    pub(crate) fn alloc_block(&mut self, will_fill: bool) -> Result<u32> {
        if self.free_blocks == 0 {
            return Err(ENOSPC);
        }
        if self.fresh.len() >= MAX_TX_ALLOC {
            pr_err!("riofs: internal error: a transaction allocated too many blocks\n");
            return Err(EIO);
        }
        let total = self.sb.blocks;
        let start = self.blk_hint.clamp(self.sb.data_start, total - 1);
        // Whole bitmap words from the hint's, wrapping around once.
        let words = total.div_ceil(64);
        let mut w = start / 64;
        for _ in 0..=words {
            let word = self.bitmap_word(w * 64)?;
            if word != u64::MAX {
                for bit in 0..64 {
                    let cand = w * 64 + bit;
                    if cand >= total {
                        break;
                    }
                    if cand >= self.sb.data_start && word & (1u64 << bit) == 0 {
                        return self.take_block(cand, will_fill);
                    }
                }
            }
            w = if (w + 1) * 64 >= total {
                self.sb.data_start / 64
            } else {
                w + 1
            };
        }
        // The counter said there was room; the bitmap disagrees.
        Err(corrupt("free block count", u64::from(self.free_blocks)))
    }

    fn take_block(&mut self, b: u32, will_fill: bool) -> Result<u32> {
        let word = b / 64;
        if !self.logged_words.contains(&word) {
            self.log_range(self.sb.bitmap_word_pos(b), 8)?;
            self.logged_words.push(word, GFP_KERNEL)?;
        }
        self.fresh.push(b, GFP_KERNEL)?;
        self.set_bit(b, true)?;
        self.free_blocks -= 1;
        self.blk_hint = b + 1;
        if !will_fill {
            self.zero_raw(b, 0, BLOCK)?;
        }
        Ok(b)
    }

    /// Frees block `b` when the running transaction commits.
    pub(crate) fn free_block(&mut self, b: u32) -> Result {
        if !self.sb.is_data(b) {
            return Err(corrupt("block number", u64::from(b)));
        }
        Ok(self.pending_free.push(b, GFP_KERNEL)?)
    }

    // ---- inodes --------------------------------------------------------------------------

    /// Reads and checks inode `ino`.
    pub(crate) fn iget(&self, ino: u32) -> Result<Inode> {
        let pos = self.sb.inode_pos(ino).ok_or(ESTALE)?;
        let mut b = [0u8; INODE_SIZE];
        self.read(pos, &mut b)?;
        Inode::decode(&b).map_err(|_| corrupt("inode", u64::from(ino)))
    }

    /// Reads inode `ino`, which must be in use.
    pub(crate) fn iget_live(&self, ino: u32) -> Result<Inode> {
        let i = self.iget(ino)?;
        if i.is_free() {
            return Err(ESTALE);
        }
        Ok(i)
    }

    /// Writes inode `ino` (logged).
    pub(crate) fn iput(&mut self, ino: u32, i: &Inode) -> Result {
        let pos = self.sb.inode_pos(ino).ok_or(EIO)?;
        let mut b = [0u8; INODE_SIZE];
        i.encode(&mut b);
        self.write_logged(pos, &b)
    }

    /// Writes inode `ino` unlogged (mkfs only).
    pub(crate) fn iput_raw(&mut self, ino: u32, i: &Inode) -> Result {
        let pos = self.sb.inode_pos(ino).ok_or(EIO)?;
        let mut b = [0u8; INODE_SIZE];
        i.encode(&mut b);
        self.write_raw(pos, &b)
    }

    /// Finds a free inode number (the caller writes it).
    pub(crate) fn alloc_ino(&mut self) -> Result<u32> {
        if self.free_inodes == 0 {
            return Err(ENOSPC);
        }
        let n = self.sb.inodes;
        let mut ino = self.ino_hint.clamp(2, n - 1);
        for _ in 0..n {
            if ino >= 2 {
                let pos = self.sb.inode_pos(ino).ok_or(EIO)?;
                // The mode word alone says whether it is free (0).
                if self.read_u32(pos)? == 0 {
                    self.free_inodes -= 1;
                    self.ino_hint = ino + 1;
                    return Ok(ino);
                }
            }
            ino = if ino + 1 >= n { 2 } else { ino + 1 };
        }
        Err(corrupt("free inode count", u64::from(self.free_inodes)))
    }

    /// Counts an inode freed by the running transaction.
    pub(crate) fn inode_freed(&mut self, ino: u32) {
        self.free_inodes += 1;
        if ino < self.ino_hint {
            self.ino_hint = ino;
        }
    }

    // ---- the block map -------------------------------------------------------------------

    fn ptr_at(&self, blk: u32, idx: usize) -> Result<u32> {
        let b = self.read_u32(u64::from(blk) * BLOCK as u64 + idx as u64 * 4)?;
        if b != 0 && !self.sb.is_data(b) {
            return Err(corrupt("block pointer", u64::from(b)));
        }
        Ok(b)
    }

    fn set_ptr(&mut self, blk: u32, idx: usize, v: u32) -> Result {
        self.write_data(blk, idx * 4, &v.to_le_bytes())
    }

    fn check_ptr(&self, b: u32) -> Result<u32> {
        if b != 0 && !self.sb.is_data(b) {
            return Err(corrupt("block pointer", u64::from(b)));
        }
        Ok(b)
    }

    /// The data block holding file block `f` of `i`, 0 for a hole.
    pub(crate) fn bmap(&self, i: &Inode, f: u64) -> Result<u32> {
        let f = usize::try_from(f).map_err(|_| EFBIG)?;
        if f < NDIRECT {
            return self.check_ptr(i.direct[f]);
        }
        let f = f - NDIRECT;
        if f < PTRS {
            let ind = self.check_ptr(i.ind)?;
            return if ind == 0 { Ok(0) } else { self.ptr_at(ind, f) };
        }
        let f = f - PTRS;
        if f >= PTRS * PTRS {
            return Err(EFBIG);
        }
        let dind = self.check_ptr(i.dind)?;
        if dind == 0 {
            return Ok(0);
        }
        let mid = self.ptr_at(dind, f / PTRS)?;
        if mid == 0 {
            return Ok(0);
        }
        self.ptr_at(mid, f % PTRS)
    }

    /// The data block of file block `f`, allocated (with any indirect blocks) if it is a
    /// hole; `i` is updated in memory (the caller writes it). Returns the block and
    /// whether this call allocated it.
    pub(crate) fn bmap_alloc(
        &mut self,
        i: &mut Inode,
        f: u64,
        will_fill: bool,
    ) -> Result<(u32, bool)> {
        let f = usize::try_from(f).map_err(|_| EFBIG)?;
        if f < NDIRECT {
            let b = self.check_ptr(i.direct[f])?;
            if b != 0 {
                return Ok((b, false));
            }
            let nb = self.alloc_block(will_fill)?;
            i.direct[f] = nb;
            i.nblocks += 1;
            return Ok((nb, true));
        }
        let g = f - NDIRECT;
        if g < PTRS {
            if self.check_ptr(i.ind)? == 0 {
                i.ind = self.alloc_block(false)?;
                i.nblocks += 1;
            }
            let ind = i.ind;
            return self.slot_alloc(i, ind, g, will_fill);
        }
        let g = g - PTRS;
        if g >= PTRS * PTRS {
            return Err(EFBIG);
        }
        if self.check_ptr(i.dind)? == 0 {
            i.dind = self.alloc_block(false)?;
            i.nblocks += 1;
        }
        let dind = i.dind;
        let (mid, _) = self.slot_alloc(i, dind, g / PTRS, false)?;
        self.slot_alloc(i, mid, g % PTRS, will_fill)
    }

    fn slot_alloc(
        &mut self,
        i: &mut Inode,
        blk: u32,
        idx: usize,
        will_fill: bool,
    ) -> Result<(u32, bool)> {
        let b = self.ptr_at(blk, idx)?;
        if b != 0 {
            return Ok((b, false));
        }
        let nb = self.alloc_block(will_fill)?;
        i.nblocks += 1;
        self.set_ptr(blk, idx, nb)?;
        Ok((nb, true))
    }

    /// Releases every block of `i` at file block `keep` and beyond (deferred frees), and
    /// clears the pointers to them that survive. `i` is updated in memory.
    pub(crate) fn truncate_blocks(&mut self, i: &mut Inode, keep: u64) -> Result {
        let keep = usize::try_from(keep).map_err(|_| EFBIG)?;
        for f in keep.min(NDIRECT)..NDIRECT {
            let b = self.check_ptr(i.direct[f])?;
            if b != 0 {
                self.free_block(b)?;
                i.direct[f] = 0;
                i.nblocks = i.nblocks.saturating_sub(1);
            }
        }
        let ind_keep = keep.saturating_sub(NDIRECT).min(PTRS);
        if self.check_ptr(i.ind)? != 0 {
            let ind = i.ind;
            let freed = self.trim_level(ind, ind_keep, 1)?;
            i.nblocks = i.nblocks.saturating_sub(freed);
            if ind_keep == 0 {
                self.free_block(ind)?;
                i.ind = 0;
                i.nblocks = i.nblocks.saturating_sub(1);
            }
        }
        let dkeep = keep.saturating_sub(NDIRECT + PTRS);
        if self.check_ptr(i.dind)? != 0 {
            let dind = i.dind;
            let freed = self.trim_level(dind, dkeep, 2)?;
            i.nblocks = i.nblocks.saturating_sub(freed);
            if dkeep == 0 {
                self.free_block(dind)?;
                i.dind = 0;
                i.nblocks = i.nblocks.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Frees what indirect block `blk` (of `depth` 1 or 2) maps at index `keep` and beyond;
    /// pointers in a block that stays are cleared (logged). Returns the blocks freed.
    fn trim_level(&mut self, blk: u32, keep: usize, depth: u32) -> Result<u32> {
        let per = if depth == 1 { 1 } else { PTRS };
        let first = keep.div_ceil(per);
        let mut freed = 0u32;
        if depth == 2 && keep % PTRS != 0 {
            // The child that is cut in the middle keeps its head.
            let mid = self.ptr_at(blk, keep / PTRS)?;
            if mid != 0 {
                freed += self.trim_level(mid, keep % PTRS, 1)?;
            }
        }
        for idx in first..PTRS {
            let b = self.ptr_at(blk, idx)?;
            if b == 0 {
                continue;
            }
            if depth == 2 {
                freed += self.trim_level(b, 0, 1)?;
            }
            self.free_block(b)?;
            freed += 1;
            if keep > 0 {
                self.set_ptr(blk, idx, 0)?;
            }
        }
        Ok(freed)
    }

    /// Every block `i` reaches (data and indirect), for the mount's bitmap rebuild.
    pub(crate) fn for_each_block(&self, i: &Inode, mut f: impl FnMut(u32) -> Result) -> Result {
        for &d in i.direct.iter() {
            if self.check_ptr(d)? != 0 {
                f(d)?;
            }
        }
        if self.check_ptr(i.ind)? != 0 {
            f(i.ind)?;
            for idx in 0..PTRS {
                let b = self.ptr_at(i.ind, idx)?;
                if b != 0 {
                    f(b)?;
                }
            }
        }
        if self.check_ptr(i.dind)? != 0 {
            f(i.dind)?;
            for m in 0..PTRS {
                let mid = self.ptr_at(i.dind, m)?;
                if mid == 0 {
                    continue;
                }
                f(mid)?;
                for idx in 0..PTRS {
                    let b = self.ptr_at(mid, idx)?;
                    if b != 0 {
                        f(b)?;
                    }
                }
            }
        }
        Ok(())
    }

    // ---- mkfs ----------------------------------------------------------------------------

    /// Formats a blank object: the log header, the bitmap (metadata blocks in use), the
    /// root directory, and the superblock last (an interrupted mkfs leaves no superblock,
    /// and a non-blank object without one is refused).
    pub(crate) fn mkfs(&mut self, root: &Inode) -> Result {
        let pos = self.sb.log_pos();
        self.write_raw(pos + 8, &LOG_MAGIC.to_le_bytes())?;
        // Metadata blocks, and the bits past the end of the object, read as used, so
        // nothing allocates them. The object is blank: only non-zero words are written.
        let words = (self.sb.bitmap_blocks as usize * BLOCK) / 8;
        let base = u64::from(self.sb.bitmap_start) * BLOCK as u64;
        for w in 0..words {
            let mut v = 0u64;
            for bit in 0..64u64 {
                let b = w as u64 * 64 + bit;
                if b < u64::from(self.sb.data_start) || b >= u64::from(self.sb.blocks) {
                    v |= 1 << bit;
                }
            }
            if v != 0 {
                self.write_raw(base + w as u64 * 8, &v.to_le_bytes())?;
            }
        }
        self.iput_raw(super::format::ROOT_INO, root)?;
        let mut sbb = [0u8; super::format::SUPER_SIZE];
        self.sb.encode(&mut sbb);
        self.write_raw(0, &sbb)?;
        self.free_blocks = self.sb.data_blocks();
        self.free_inodes = self.sb.inodes - 2;
        Ok(())
    }

    /// Whether every byte of the object is zero (a blank object mkfs may format).
    pub(crate) fn is_blank(&self) -> Result<bool> {
        let mut buf = [0u8; 512];
        for b in 0..self.blocks() {
            for o in (0..BLOCK).step_by(buf.len()) {
                self.arena.read(self.page_of(b)?, o, &mut buf)?;
                if buf.iter().any(|&x| x != 0) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
