// SPDX-License-Identifier: GPL-2.0

//! The file system operations, each one transaction on a [`Vol`]: the namespace (create,
//! link, unlink, rename), attributes, data (read, write, the pages of a mapping), inode
//! lifetime (evict), and mount-time recovery.
//!
//! The VFS (through `riofs_vfs.c`) has already checked permissions, that a name to create
//! does not exist and one to remove does (the dentry cache holds the whole tree), and that a
//! directory to remove or replace is empty; these functions check again what a corrupt
//! image could contradict, and leave the object unchanged when they fail.

use kernel::prelude::*;

use super::format::{
    dtype_of, Dirent, Inode, Time, BLOCK, DIRENTS_PER_BLOCK, DIRENT_SIZE, MAX_FILE_SIZE, ROOT_INO,
    S_IFDIR, S_IFLNK, S_IFMT,
};
use super::volume::{Vol, MAX_TX_ALLOC};

/// Attributes as the VFS glue reads and sets them. Mirrored by `struct riofs_attr` in
/// `riofs_vfs.c`, which checks its size against [`ATTR_SIZE`].
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct RiofsAttr {
    pub(crate) size: u64,
    /// In 512-byte units, as `st_blocks`.
    pub(crate) blocks: u64,
    pub(crate) atime_sec: i64,
    pub(crate) mtime_sec: i64,
    pub(crate) ctime_sec: i64,
    pub(crate) atime_nsec: u32,
    pub(crate) mtime_nsec: u32,
    pub(crate) ctime_nsec: u32,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) nlink: u32,
    pub(crate) rdev: u32,
    pub(crate) generation: u32,
    pub(crate) pad: u32,
}

/// `sizeof(struct riofs_attr)`.
pub(crate) const ATTR_SIZE: usize = 80;
const _: () = assert!(core::mem::size_of::<RiofsAttr>() == ATTR_SIZE);

/// `setattr` fields to change (the glue maps `ATTR_*` to these).
pub(crate) const SET_MODE: u32 = 1;
pub(crate) const SET_UID: u32 = 2;
pub(crate) const SET_GID: u32 = 4;
pub(crate) const SET_SIZE: u32 = 8;
pub(crate) const SET_ATIME: u32 = 16;
pub(crate) const SET_MTIME: u32 = 32;
pub(crate) const SET_CTIME: u32 = 64;

fn attr_of(i: &Inode) -> RiofsAttr {
    RiofsAttr {
        size: i.size,
        blocks: u64::from(i.nblocks) * (BLOCK as u64 / 512),
        atime_sec: i.atime.sec,
        mtime_sec: i.mtime.sec,
        ctime_sec: i.ctime.sec,
        atime_nsec: i.atime.nsec,
        mtime_nsec: i.mtime.nsec,
        ctime_nsec: i.ctime.nsec,
        mode: i.mode,
        uid: i.uid,
        gid: i.gid,
        nlink: i.nlink,
        rdev: i.rdev,
        generation: i.generation,
        pad: 0,
    }
}

/// What mounting found and did.
#[derive(Default, Clone, Copy)]
pub(crate) struct MountReport {
    pub(crate) formatted: bool,
    pub(crate) undone: usize,
    pub(crate) orphans: u32,
    pub(crate) inodes: u32,
    pub(crate) leaked: u32,
}

impl Vol {
    /// Runs `f` as one transaction: committed if it succeeds, rolled back if it fails.
    fn tx<R>(&mut self, f: impl FnOnce(&mut Vol) -> Result<R>) -> Result<R> {
        self.begin();
        match f(self) {
            Ok(r) => {
                self.commit()?;
                Ok(r)
            }
            Err(e) => Err(self.abort(e)),
        }
    }

    /// The attributes of `ino`.
    pub(crate) fn getattr(&self, ino: u32) -> Result<RiofsAttr> {
        Ok(attr_of(&self.iget_live(ino)?))
    }

    // ---- directories ---------------------------------------------------------------------

    fn dir_of(&self, ino: u32) -> Result<Inode> {
        let d = self.iget_live(ino)?;
        if !d.is_dir() {
            return Err(ENOTDIR);
        }
        Ok(d)
    }

    fn slots_of(dir: &Inode) -> u64 {
        dir.size / BLOCK as u64 * DIRENTS_PER_BLOCK as u64
    }

    /// Object byte offset of directory slot `slot`.
    fn slot_pos(&self, dir: &Inode, slot: u64) -> Result<u64> {
        let b = self.bmap(dir, slot / DIRENTS_PER_BLOCK as u64)?;
        if b == 0 {
            pr_err!("riofs: corrupt metadata: a hole in a directory; run 'riofs-fsck'\n");
            return Err(EUCLEAN);
        }
        Ok(u64::from(b) * BLOCK as u64 + (slot % DIRENTS_PER_BLOCK as u64) * DIRENT_SIZE as u64)
    }

    fn read_dirent(&self, dir: &Inode, slot: u64) -> Result<Option<Dirent>> {
        let pos = self.slot_pos(dir, slot)?;
        if self.read_u32(pos)? == 0 {
            return Ok(None);
        }
        let mut b = [0u8; DIRENT_SIZE];
        self.read(pos, &mut b)?;
        match Dirent::decode(&b) {
            Ok(d) => Ok(d),
            Err(()) => {
                pr_err!(
                    "riofs: corrupt directory entry (slot {}); run 'riofs-fsck'\n",
                    slot
                );
                Err(EUCLEAN)
            }
        }
    }

    /// The next used entry of directory `dir` at or after slot `*cookie`; advances it.
    pub(crate) fn dir_next(&self, dir: u32, cookie: &mut u64) -> Result<Option<Dirent>> {
        let d = self.dir_of(dir)?;
        while *cookie < Self::slots_of(&d) {
            let slot = *cookie;
            *cookie += 1;
            if let Some(e) = self.read_dirent(&d, slot)? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    fn find_entry(&self, d: &Inode, name: &[u8]) -> Result<Option<(u64, Dirent)>> {
        for slot in 0..Self::slots_of(d) {
            if let Some(e) = self.read_dirent(d, slot)? {
                if e.name() == name {
                    return Ok(Some((slot, e)));
                }
            }
        }
        Ok(None)
    }

    /// Adds `e` to directory `dino` (`d` is updated in memory if it grows). Returns the slot.
    fn add_entry(&mut self, dino: u32, d: &mut Inode, e: &Dirent) -> Result<u64> {
        let hint = u64::from(*self.dir_hint.get(dino as usize).ok_or(EIO)?);
        let mut slot = None;
        for s in hint..Self::slots_of(d) {
            if self.read_u32(self.slot_pos(d, s)?)? == 0 {
                slot = Some(s);
                break;
            }
        }
        let slot = match slot {
            Some(s) => s,
            None => {
                let f = d.size / BLOCK as u64;
                if d.size + BLOCK as u64 > MAX_FILE_SIZE {
                    return Err(ENOSPC);
                }
                self.bmap_alloc(d, f, false)?;
                d.size += BLOCK as u64;
                f * DIRENTS_PER_BLOCK as u64
            }
        };
        let mut b = [0u8; DIRENT_SIZE];
        e.encode(&mut b);
        let pos = self.slot_pos(d, slot)?;
        let blk = (pos / BLOCK as u64) as u32;
        self.write_data(blk, (pos % BLOCK as u64) as usize, &b)?;
        if let Some(h) = self.dir_hint.get_mut(dino as usize) {
            *h = u32::try_from(slot + 1).unwrap_or(u32::MAX);
        }
        Ok(slot)
    }

    /// Finds the entry `name` -> `ino` of `d`, trying slot `hint` first.
    fn locate(&self, d: &Inode, name: &[u8], ino: u32, hint: u64) -> Result<u64> {
        if hint < Self::slots_of(d) {
            if let Some(e) = self.read_dirent(d, hint)? {
                if e.ino == ino && e.name() == name {
                    return Ok(hint);
                }
            }
        }
        match self.find_entry(d, name)? {
            Some((s, e)) if e.ino == ino => Ok(s),
            _ => Err(ENOENT),
        }
    }

    fn clear_entry(&mut self, dino: u32, d: &Inode, slot: u64) -> Result {
        let pos = self.slot_pos(d, slot)?;
        self.write_logged(pos, &0u32.to_le_bytes())?;
        if let Some(h) = self.dir_hint.get_mut(dino as usize) {
            *h = (*h).min(u32::try_from(slot).unwrap_or(u32::MAX));
        }
        Ok(())
    }

    fn is_empty_dir(&self, d: &Inode) -> Result<bool> {
        for slot in 0..Self::slots_of(d) {
            if self.read_u32(self.slot_pos(d, slot)?)? != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    // ---- the namespace -------------------------------------------------------------------

    /// Creates `name` in `dir`: a file, directory, device, FIFO or socket, or (with
    /// `target`) a symbolic link. Returns the new inode and its directory slot.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mknod(
        &mut self,
        dir: u32,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
        now: Time,
        target: Option<&[u8]>,
    ) -> Result<(u32, u64)> {
        if !super::format::valid_type(mode) {
            return Err(EINVAL);
        }
        if target.is_some_and(|t| t.is_empty() || t.len() >= BLOCK) {
            return Err(ENAMETOOLONG);
        }
        self.tx(|v| {
            let mut d = v.dir_of(dir)?;
            let ino = v.alloc_ino()?;
            let old = v.iget(ino)?;
            let is_dir = mode & S_IFMT == S_IFDIR;
            let mut i = Inode {
                mode,
                uid,
                gid,
                nlink: if is_dir { 2 } else { 1 },
                atime: now,
                mtime: now,
                ctime: now,
                generation: old.generation.wrapping_add(1),
                rdev,
                ..Inode::default()
            };
            if let Some(t) = target {
                let (b, _) = v.bmap_alloc(&mut i, 0, false)?;
                v.write_data(b, 0, t)?;
                i.size = t.len() as u64;
            }
            v.iput(ino, &i)?;
            if let Some(h) = v.dir_hint.get_mut(ino as usize) {
                *h = 0;
            }
            let e = Dirent::new(ino, name, dtype_of(mode)).ok_or(EINVAL)?;
            let slot = v.add_entry(dir, &mut d, &e)?;
            if is_dir {
                d.nlink = d.nlink.checked_add(1).ok_or(EMLINK)?;
            }
            d.mtime = now;
            d.ctime = now;
            v.iput(dir, &d)?;
            Ok((ino, slot))
        })
    }

    /// Adds the name `name` in `dir` for `ino` (not a directory). Returns the slot.
    pub(crate) fn link(&mut self, ino: u32, dir: u32, name: &[u8], now: Time) -> Result<u64> {
        self.tx(|v| {
            let mut i = v.iget_live(ino)?;
            if i.is_dir() {
                return Err(EPERM);
            }
            let mut d = v.dir_of(dir)?;
            i.nlink = i.nlink.checked_add(1).ok_or(EMLINK)?;
            i.ctime = now;
            v.iput(ino, &i)?;
            let e = Dirent::new(ino, name, dtype_of(i.mode)).ok_or(EINVAL)?;
            let slot = v.add_entry(dir, &mut d, &e)?;
            d.mtime = now;
            d.ctime = now;
            v.iput(dir, &d).map(|()| slot)
        })
    }

    /// Removes `name` -> `ino` from `dir` (`rmdir` if `is_dir`: `ino` must be empty). An
    /// inode whose last link goes is kept, as an orphan, until [`Vol::evict`].
    pub(crate) fn unlink(
        &mut self,
        dir: u32,
        name: &[u8],
        hint: u64,
        ino: u32,
        is_dir: bool,
        now: Time,
    ) -> Result {
        self.tx(|v| {
            let mut d = v.dir_of(dir)?;
            let mut i = v.iget_live(ino)?;
            if i.is_dir() != is_dir {
                return Err(if is_dir { ENOTDIR } else { EISDIR });
            }
            if is_dir && !v.is_empty_dir(&i)? {
                return Err(ENOTEMPTY);
            }
            let slot = v.locate(&d, name, ino, hint)?;
            v.clear_entry(dir, &d, slot)?;
            if is_dir {
                i.nlink = 0;
                d.nlink = d.nlink.saturating_sub(1).max(2);
            } else {
                i.nlink = i.nlink.saturating_sub(1);
            }
            i.ctime = now;
            v.iput(ino, &i)?;
            d.mtime = now;
            d.ctime = now;
            v.iput(dir, &d)
        })
    }

    /// Renames `odir/oname` (-> `ino`) to `ndir/nname`, atomically replacing `target` (0:
    /// none) if given. Returns the entry's new slot.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rename(
        &mut self,
        odir: u32,
        oname: &[u8],
        ohint: u64,
        ino: u32,
        ndir: u32,
        nname: &[u8],
        nhint: u64,
        target: u32,
        now: Time,
    ) -> Result<u64> {
        self.tx(|v| {
            let mut od = v.dir_of(odir)?;
            let mut i = v.iget_live(ino)?;
            let oslot = v.locate(&od, oname, ino, ohint)?;
            let moving_dir = i.is_dir();
            let e = Dirent::new(ino, nname, dtype_of(i.mode)).ok_or(EINVAL)?;
            let nslot;
            if target != 0 {
                let mut t = v.iget_live(target)?;
                if t.is_dir() != moving_dir {
                    return Err(if moving_dir { ENOTDIR } else { EISDIR });
                }
                if t.is_dir() && !v.is_empty_dir(&t)? {
                    return Err(ENOTEMPTY);
                }
                let nd = if ndir == odir { od } else { v.dir_of(ndir)? };
                nslot = v.locate(&nd, nname, target, nhint)?;
                // The replacement is one logged overwrite of the entry: the name never
                // disappears, even for an instant, in any state a crash can leave.
                let mut b = [0u8; DIRENT_SIZE];
                e.encode(&mut b);
                let pos = v.slot_pos(&nd, nslot)?;
                v.write_logged(pos, &b)?;
                if t.is_dir() {
                    t.nlink = 0;
                } else {
                    t.nlink = t.nlink.saturating_sub(1);
                }
                t.ctime = now;
                v.iput(target, &t)?;
                if t.is_dir() {
                    // The replaced directory no longer counts in its parent.
                    if ndir == odir {
                        od.nlink = od.nlink.saturating_sub(1).max(2);
                    } else {
                        let mut nd = v.dir_of(ndir)?;
                        nd.nlink = nd.nlink.saturating_sub(1).max(2);
                        v.iput(ndir, &nd)?;
                    }
                }
            } else if ndir == odir {
                nslot = v.add_entry(odir, &mut od, &e)?;
            } else {
                let mut nd = v.dir_of(ndir)?;
                nslot = v.add_entry(ndir, &mut nd, &e)?;
                v.iput(ndir, &nd)?;
            }
            v.clear_entry(odir, &od, oslot)?;
            if moving_dir && ndir != odir {
                od.nlink = od.nlink.saturating_sub(1).max(2);
                let mut nd = v.dir_of(ndir)?;
                nd.nlink = nd.nlink.checked_add(1).ok_or(EMLINK)?;
                nd.mtime = now;
                nd.ctime = now;
                v.iput(ndir, &nd)?;
            } else if ndir != odir {
                let mut nd = v.dir_of(ndir)?;
                nd.mtime = now;
                nd.ctime = now;
                v.iput(ndir, &nd)?;
            }
            od.mtime = now;
            od.ctime = now;
            v.iput(odir, &od)?;
            i.ctime = now;
            v.iput(ino, &i)?;
            Ok(nslot)
        })
    }

    /// `renameat2(RENAME_EXCHANGE)`: `odir/oname` (-> `ino`) and `ndir/nname` (-> `target`)
    /// swap inodes, atomically. Each entry keeps its slot and name and is rewritten in
    /// place by one logged overwrite, so no state a crash can leave has either name
    /// missing or both names on one inode. A directory that changes parent moves its
    /// count from one parent to the other (the other inode may be a directory too, or not).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn exchange(
        &mut self,
        odir: u32,
        oname: &[u8],
        ohint: u64,
        ino: u32,
        ndir: u32,
        nname: &[u8],
        nhint: u64,
        target: u32,
        now: Time,
    ) -> Result<(u64, u64)> {
        if ino == target {
            return Err(EINVAL);
        }
        self.tx(|v| {
            let mut od = v.dir_of(odir)?;
            let mut i = v.iget_live(ino)?;
            let mut t = v.iget_live(target)?;
            let oslot = v.locate(&od, oname, ino, ohint)?;
            let nd0 = if ndir == odir { od } else { v.dir_of(ndir)? };
            let nslot = v.locate(&nd0, nname, target, nhint)?;
            let at_old = Dirent::new(target, oname, dtype_of(t.mode)).ok_or(EINVAL)?;
            let at_new = Dirent::new(ino, nname, dtype_of(i.mode)).ok_or(EINVAL)?;
            let mut b = [0u8; DIRENT_SIZE];
            at_old.encode(&mut b);
            let pos = v.slot_pos(&od, oslot)?;
            v.write_logged(pos, &b)?;
            at_new.encode(&mut b);
            let pos = v.slot_pos(&nd0, nslot)?;
            v.write_logged(pos, &b)?;
            if ndir != odir {
                let mut nd = nd0;
                match (i.is_dir(), t.is_dir()) {
                    // `ino` leaves odir for ndir; `target` comes the other way.
                    (true, false) => {
                        od.nlink = od.nlink.saturating_sub(1).max(2);
                        nd.nlink = nd.nlink.checked_add(1).ok_or(EMLINK)?;
                    }
                    (false, true) => {
                        nd.nlink = nd.nlink.saturating_sub(1).max(2);
                        od.nlink = od.nlink.checked_add(1).ok_or(EMLINK)?;
                    }
                    _ => {}
                }
                nd.mtime = now;
                nd.ctime = now;
                v.iput(ndir, &nd)?;
            }
            od.mtime = now;
            od.ctime = now;
            v.iput(odir, &od)?;
            i.ctime = now;
            v.iput(ino, &i)?;
            t.ctime = now;
            v.iput(target, &t)?;
            Ok((oslot, nslot))
        })
    }

    // ---- attributes ----------------------------------------------------------------------

    /// Changes the attributes `valid` names to those in `a`. A size change frees or
    /// zeroes what lies past the new end, in the same transaction (the glue has unmapped
    /// those pages from every process first).
    pub(crate) fn setattr(&mut self, ino: u32, valid: u32, a: &RiofsAttr) -> Result {
        self.tx(|v| {
            let mut i = v.iget_live(ino)?;
            if valid & SET_SIZE != 0 && a.size != i.size {
                if i.mode & S_IFMT != super::format::S_IFREG {
                    return Err(EINVAL);
                }
                if a.size > MAX_FILE_SIZE {
                    return Err(EFBIG);
                }
                v.resize(&mut i, a.size)?;
            }
            if valid & SET_MODE != 0 {
                i.mode = (i.mode & S_IFMT) | (a.mode & 0o7777);
            }
            if valid & SET_UID != 0 {
                i.uid = a.uid;
            }
            if valid & SET_GID != 0 {
                i.gid = a.gid;
            }
            if valid & SET_ATIME != 0 {
                i.atime = Time {
                    sec: a.atime_sec,
                    nsec: a.atime_nsec,
                };
            }
            if valid & SET_MTIME != 0 {
                i.mtime = Time {
                    sec: a.mtime_sec,
                    nsec: a.mtime_nsec,
                };
            }
            if valid & SET_CTIME != 0 {
                i.ctime = Time {
                    sec: a.ctime_sec,
                    nsec: a.ctime_nsec,
                };
            }
            v.iput(ino, &i)
        })
    }

    /// Sets `i.size` to `size`: frees the blocks past it, or zeroes the old tail when
    /// growing (a store through a mapping may have left bytes past the old end).
    fn resize(&mut self, i: &mut Inode, size: u64) -> Result {
        let bs = BLOCK as u64;
        if size < i.size {
            self.truncate_blocks(i, size.div_ceil(bs))?;
            if size % bs != 0 {
                let b = self.bmap(i, size / bs)?;
                if b != 0 {
                    let off = (size % bs) as usize;
                    self.zero_logged(b, off, BLOCK - off)?;
                }
            }
        } else {
            self.zero_tail(i)?;
        }
        i.size = size;
        Ok(())
    }

    /// Zeroes the bytes past `i.size` in its last block.
    fn zero_tail(&mut self, i: &Inode) -> Result {
        let bs = BLOCK as u64;
        if i.size % bs != 0 {
            let b = self.bmap(i, i.size / bs)?;
            if b != 0 {
                let off = (i.size % bs) as usize;
                self.zero_logged(b, off, BLOCK - off)?;
            }
        }
        Ok(())
    }

    // ---- data ----------------------------------------------------------------------------

    /// Copies file bytes from `pos` into `dst`; returns how many (0 at or past the end).
    pub(crate) fn read_file(&self, ino: u32, pos: u64, dst: &mut [u8]) -> Result<usize> {
        let i = self.iget_live(ino)?;
        if i.is_dir() {
            return Err(EISDIR);
        }
        if pos >= i.size {
            return Ok(0);
        }
        let n = (dst.len() as u64).min(i.size - pos) as usize;
        let bs = BLOCK as u64;
        let mut done = 0usize;
        while done < n {
            let at = pos + done as u64;
            let off = (at % bs) as usize;
            let k = (n - done).min(BLOCK - off);
            let b = self.bmap(&i, at / bs)?;
            if b == 0 {
                dst[done..done + k].fill(0);
            } else {
                self.read(u64::from(b) * bs + off as u64, &mut dst[done..done + k])?;
            }
            done += k;
        }
        Ok(n)
    }

    /// Writes `src` at `pos` of regular file `ino`; returns the bytes written and the new
    /// size. Each step is one transaction: appends of any size in steps of
    /// [`MAX_TX_ALLOC`] blocks, overwrites in steps of the log's data limit. A step that
    /// fails is rolled back; the steps before it stay (a short write).
    pub(crate) fn write_file(
        &mut self,
        ino: u32,
        pos: u64,
        src: &[u8],
        now: Time,
    ) -> Result<(usize, u64)> {
        let end = pos.checked_add(src.len() as u64).ok_or(EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(EFBIG);
        }
        let limit = self.sb.tx_data_limit();
        let mut done = 0usize;
        let mut size = self.iget_live(ino)?.size;
        while done < src.len() {
            let step = self.tx(|v| {
                let mut i = v.iget_live(ino)?;
                if i.mode & S_IFMT != super::format::S_IFREG {
                    return Err(EINVAL);
                }
                let start = pos + done as u64;
                if start > i.size {
                    v.zero_tail(&i)?;
                }
                let bs = BLOCK as u64;
                let mut n = 0usize;
                let mut logged = 0usize;
                while done + n < src.len() {
                    let at = start + n as u64;
                    let off = (at % bs) as usize;
                    let k = (src.len() - done - n).min(BLOCK - off);
                    let f = at / bs;
                    let existing = v.bmap(&i, f)?;
                    if existing != 0 {
                        if n > 0 && logged + k > limit {
                            break;
                        }
                        logged += k;
                    } else if n > 0 && v.fresh_count() + 3 > MAX_TX_ALLOC {
                        break;
                    }
                    let whole = off == 0 && k == BLOCK;
                    let (b, _) = v.bmap_alloc(&mut i, f, whole)?;
                    v.write_data(b, off, &src[done + n..done + n + k])?;
                    n += k;
                }
                let new_end = start + n as u64;
                if new_end > i.size {
                    i.size = new_end;
                }
                i.mtime = now;
                i.ctime = now;
                v.iput(ino, &i)?;
                Ok((n, i.size))
            });
            match step {
                Ok((n, s)) => {
                    done += n;
                    size = s;
                    if n == 0 {
                        break;
                    }
                }
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok((done, size))
    }

    /// The arena frame behind page `pgoff` of `ino`, allocated if it is a hole, for a user
    /// mapping. `ERANGE` past the end of the file (the glue answers `SIGBUS`).
    pub(crate) fn fault(&mut self, ino: u32, pgoff: u64) -> Result<u64> {
        let b = self.tx(|v| {
            let mut i = v.iget_live(ino)?;
            if i.mode & S_IFMT != super::format::S_IFREG {
                return Err(EINVAL);
            }
            if pgoff >= i.size.div_ceil(BLOCK as u64) {
                return Err(ERANGE);
            }
            let (b, fresh) = v.bmap_alloc(&mut i, pgoff, false)?;
            if fresh {
                v.iput(ino, &i)?;
            }
            Ok(b)
        })?;
        self.pfn_of(b)
    }

    /// The VFS let go of `ino`: if no name links it any more, free it.
    pub(crate) fn evict(&mut self, ino: u32) -> Result {
        let i = self.iget(ino)?;
        if i.is_free() || i.nlink > 0 {
            return Ok(());
        }
        self.free_inode(ino, i)
    }

    fn free_inode(&mut self, ino: u32, i: Inode) -> Result {
        self.tx(|v| {
            let mut i = i;
            if i.has_data() {
                v.truncate_blocks(&mut i, 0)?;
            }
            let free = Inode {
                generation: i.generation,
                ..Inode::default()
            };
            v.iput(ino, &free)?;
            v.inode_freed(ino);
            Ok(())
        })
    }

    // ---- mounting ------------------------------------------------------------------------

    /// Formats a blank object with an empty root directory owned by root.
    pub(crate) fn format(&mut self, now: Time) -> Result {
        let root = Inode {
            mode: S_IFDIR | 0o755,
            nlink: 2,
            atime: now,
            mtime: now,
            ctime: now,
            generation: 1,
            ..Inode::default()
        };
        self.mkfs(&root)
    }

    /// Recovery at mount: undoes the operation a crash interrupted, frees orphans, and
    /// rebuilds the bitmap from what the inodes reach. Refuses (changing nothing beyond the
    /// undo) an image whose inodes or block pointers are corrupt.
    pub(crate) fn recover(&mut self) -> Result<MountReport> {
        let mut rep = MountReport {
            undone: self.undo()?,
            ..MountReport::default()
        };
        let root = self.iget(ROOT_INO)?;
        if !root.is_dir() || root.nlink < 2 {
            pr_err!("riofs: the root inode is not a directory; run 'riofs-fsck'\n");
            return Err(EUCLEAN);
        }
        // Orphans first (unlinked while open when the system went down).
        for ino in 2..self.sb.inodes {
            let i = self.iget(ino)?;
            if !i.is_free() && i.nlink == 0 {
                self.free_inode(ino, i)?;
                rep.orphans += 1;
            }
        }
        let words = (self.sb.bitmap_blocks as usize * BLOCK) / 8;
        let mut used: KVVec<u64> = KVVec::with_capacity(words, GFP_KERNEL)?;
        used.resize(words, 0, GFP_KERNEL)?;
        let mark = |used: &mut KVVec<u64>, b: u32| -> Result {
            let w = used.get_mut((b / 64) as usize).ok_or(EIO)?;
            let bit = 1u64 << (b % 64);
            if *w & bit != 0 {
                pr_err!(
                    "riofs: corrupt metadata: block {} is used twice; run 'riofs-fsck'\n",
                    b
                );
                return Err(EUCLEAN);
            }
            *w |= bit;
            Ok(())
        };
        for b in 0..self.sb.data_start {
            mark(&mut used, b)?;
        }
        for b in self.sb.blocks..(words as u64 * 64).min(u64::from(u32::MAX)) as u32 {
            mark(&mut used, b)?;
        }
        let mut free_inodes = 0u32;
        for ino in 1..self.sb.inodes {
            let i = self.iget(ino)?;
            if i.is_free() {
                free_inodes += 1;
                continue;
            }
            rep.inodes += 1;
            if i.has_data() {
                self.for_each_block(&i, |b| mark(&mut used, b))?;
            }
        }
        let before = self.free_blocks_in_bitmap()?;
        let free = self.write_bitmap(&used)?;
        rep.leaked = free.saturating_sub(before);
        self.free_inodes = free_inodes;
        Ok(rep)
    }

    fn free_blocks_in_bitmap(&self) -> Result<u32> {
        let mut n = 0;
        for b in self.sb.data_start..self.sb.blocks {
            if !self.bit(b)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// `statfs`: data blocks, free data blocks, inodes, free inodes.
    pub(crate) fn statfs(&self) -> (u64, u64, u64, u64) {
        (
            u64::from(self.sb.data_blocks()),
            u64::from(self.free_blocks),
            u64::from(self.sb.inodes - 1),
            u64::from(self.free_inodes),
        )
    }

    /// Reads a symbolic link's target into `dst`; returns its length.
    pub(crate) fn readlink(&self, ino: u32, dst: &mut [u8]) -> Result<usize> {
        let i = self.iget_live(ino)?;
        if i.mode & S_IFMT != S_IFLNK {
            return Err(EINVAL);
        }
        let n = self.read_file_unchecked(&i, dst)?;
        Ok(n)
    }

    fn read_file_unchecked(&self, i: &Inode, dst: &mut [u8]) -> Result<usize> {
        let n = (i.size as usize).min(dst.len());
        let b = self.bmap(i, 0)?;
        if b == 0 {
            return Err(EUCLEAN);
        }
        self.read(u64::from(b) * BLOCK as u64, &mut dst[..n])?;
        Ok(n)
    }
}
