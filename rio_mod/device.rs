// SPDX-License-Identifier: GPL-2.0

//! `/dev/rio`: the miscdevice through which userspace reaches the store.
//!
//! A freshly opened file is *unbound*: it can create, list, delete and format. `RIO_IOC_OPEN`
//! binds it to one object; from then on `pread`/`pwrite` address that object. A write is
//! durable when it returns: it has been copied into the protected arena.
//!
//! Who may do what is decided here (README, "Security model"): identities are initial-
//! namespace uids and `CAP_SYS_ADMIN` there ([`crate::sys::caller`]). No user memory is
//! touched under the store's lock (see the lock order in [`crate::service`]).

use kernel::{
    fs::{File, Kiocb},
    ioctl::_IOC_SIZE,
    iov::{IovIterDest, IovIterSource},
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::virt::{flags as vm_flags, VmaNew},
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    uaccess::{UserSlice, UserSliceReader, UserSliceWriter},
};

use crate::format::{NAME_MAX, PAGE_SIZE};
use crate::service::{ArenaState, Rio};
use crate::store::{Slot, Store};
use crate::sys::Caller;
use crate::uapi::*;

kernel::sync::global_lock! {
    // SAFETY: initialised in `Registration::new`, before `/dev/rio` is registered and so
    // before any file can reach it.
    unsafe(uninit) static RIO: Mutex<Option<Arc<Rio>>> = None;
}

/// The registered `/dev/rio`.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration {
    #[pin]
    misc: MiscDeviceRegistration<RioFile>,
}

impl Registration {
    /// The registered miscdevice (to install the fsync table on).
    pub(crate) fn misc(&self) -> &MiscDeviceRegistration<RioFile> {
        &self.misc
    }

    /// Publishes `rio` and registers `/dev/rio`.
    pub(crate) fn new(rio: Arc<Rio>) -> impl PinInit<Self, Error> {
        // SAFETY: called once, from module init, before the device exists.
        unsafe { RIO.init() };
        *RIO.lock() = Some(rio);
        try_pin_init!(Self {
            misc <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"rio" }),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for Registration {
    fn drop(self: Pin<&mut Self>) {
        // The misc device is deregistered after this (field drop); no file is open because
        // each one holds a reference on the module. Dropping the last `Arc<Rio>` runs the
        // clean shutdown.
        RIO.lock().take();
    }
}

/// What an open file is bound to.
#[derive(Clone, Copy)]
struct Binding {
    slot: usize,
    writable: bool,
    exclusive: bool,
}

/// One open file of `/dev/rio`.
#[pin_data(PinnedDrop)]
pub(crate) struct RioFile {
    rio: Arc<Rio>,
    #[pin]
    binding: Mutex<Option<Binding>>,
    /// Opened for writing (`O_WRONLY` or `O_RDWR`).
    can_write: bool,
}

const O_ACCMODE: u32 = 3;
const O_RDONLY: u32 = 0;

/// Whether `who` may open the object of `slot` for reading, and for writing if `write`.
/// Owner bits for the owner, "other" bits for everyone else (group bits are not used:
/// rio.ko records no group), everything for an administrator.
fn permitted(slot: &crate::format::ObjectSlot, who: &Caller, write: bool) -> bool {
    if who.admin {
        return true;
    }
    let bits = if who.uid == slot.uid {
        (slot.mode >> 6) & 7
    } else {
        slot.mode & 7
    };
    let need = if write { 0o6 } else { 0o4 };
    bits & need == need
}

fn name_of(field: &[u8; 64]) -> Result<&[u8]> {
    let n = field.iter().position(|&c| c == 0).ok_or(ENAMETOOLONG)?;
    if n > NAME_MAX {
        return Err(ENAMETOOLONG);
    }
    Ok(&field[..n])
}

fn ready(st: &mut ArenaState) -> Result<&mut Store> {
    match st {
        ArenaState::Ready(s) => Ok(s),
        // "Structure needs cleaning": the arena is blank or refused; format it.
        _ => Err(EUCLEAN),
    }
}

fn obj_info(store: &Store, idx: usize, blkdev: bool, who: &Caller) -> Result<RioObjInfo> {
    let o = store.object(idx)?;
    Ok(RioObjInfo {
        name: o.slot.name,
        size: o.slot.size,
        uid: who.show_uid(o.slot.uid),
        gid: o.slot.gid,
        mode: o.slot.mode,
        flags: (o.slot.flags & 0xff)
            | if o.damaged { OBJ_DAMAGED } else { 0 }
            | if blkdev { OBJ_BLKDEV } else { 0 },
        pages: o.slot.pages(),
        dirty_pages: store.dirty_of(idx),
        open_count: o.open_count,
        slot: idx as u32,
    })
}

/// The per-user limits of an unprivileged caller, for an owner that would hold `objects`
/// objects of `pages` data pages in all: `EDQUOT` past them.
fn within_limits(rio: &Rio, store: &Store, who: &Caller, objects: u32, pages: u64) -> Result {
    if who.admin {
        return Ok(());
    }
    let max_pages = match rio.options.max_user_pages {
        0 => u64::from(store.geo.data_pages) / 2,
        n => u64::from(n),
    };
    if objects > rio.options.max_user_objects || pages > max_pages {
        return Err(EDQUOT);
    }
    Ok(())
}

/// Where one piece of a transfer is: `off` bytes into arena page `page` (the object's data
/// page `data`), `n` bytes long.
struct Piece {
    data: u32,
    page: usize,
    off: usize,
    n: usize,
}

/// The piece of the object in `slot` that byte `at` starts, at most `left` bytes long and
/// within one page; `None` at or past the object's end (which may have moved since the
/// last piece: the store's lock is dropped between pieces).
fn piece(store: &Store, slot: usize, at: u64, left: usize) -> Result<Option<Piece>> {
    let o = store.object(slot)?;
    if at >= o.slot.size || left == 0 {
        return Ok(None);
    }
    let at_us = usize::try_from(at).map_err(|_| EINVAL)?;
    let off = at_us % PAGE_SIZE;
    let n = left
        .min(PAGE_SIZE - off)
        .min((o.slot.size - at).min(PAGE_SIZE as u64) as usize);
    let p = *o.pages.get(at_us / PAGE_SIZE).ok_or(EIO)?;
    if p == u32::MAX {
        return Err(EIO);
    }
    Ok(Some(Piece {
        data: p,
        page: store.arena_page(p),
        off,
        n,
    }))
}

impl RioFile {
    fn bound(&self) -> Result<Binding> {
        (*self.binding.lock()).ok_or(EBADFD)
    }

    fn info(&self, mut w: UserSliceWriter) -> Result<isize> {
        let info = {
            let st = self.rio.state.lock();
            let uuid = match &st.arena {
                ArenaState::Ready(s) => s.sb.uuid,
                _ => [0; 16],
            };
            RioInfo {
                abi_version: RIO_ABI_VERSION,
                state: st.arena.code(),
                arena_phys: self.rio.config.phys,
                arena_size: self.rio.config.size,
                protect: u32::from(self.rio.options.protect),
                max_objects: crate::format::MAX_OBJECTS as u32,
                uuid,
            }
        };
        w.write(&info)?;
        Ok(0)
    }

    fn create(&self, mut r: UserSliceReader) -> Result<isize> {
        let req: RioCreate = r.read()?;
        let name = name_of(&req.name)?;
        let who = crate::sys::caller();
        let mut st = self.rio.state.lock();
        let store = ready(&mut st.arena)?;
        // A name in use is that, whatever the caller's quota.
        if store.find(name).is_some() {
            return Err(EEXIST);
        }
        let used = store.usage(who.uid);
        let pages = u64::from(crate::format::pages_for(req.size));
        within_limits(
            &self.rio,
            store,
            &who,
            used.objects + 1,
            used.pages.saturating_add(pages),
        )?;
        store.create(name, req.size, who.uid, 0, req.mode)?;
        Ok(0)
    }

    fn open_object(&self, mut r: UserSliceReader) -> Result<isize> {
        let req: RioOpen = r.read()?;
        let name = name_of(&req.name)?;
        let exclusive = req.flags & OPEN_EXCLUSIVE != 0;
        // Exclusive use keeps every other user out: it needs the right to write.
        if exclusive && !self.can_write {
            return Err(EACCES);
        }
        let who = crate::sys::caller();
        let mut binding = self.binding.lock();
        if binding.is_some() {
            return Err(EBUSY);
        }
        let mut st = self.rio.state.lock();
        let store = ready(&mut st.arena)?;
        let idx = store.find(name).ok_or(ENOENT)?;
        let o = store.object_mut(idx)?;
        if o.damaged {
            return Err(EIO);
        }
        if !permitted(&o.slot, &who, self.can_write) {
            return Err(EACCES);
        }
        if o.exclusive || (exclusive && o.open_count > 0) {
            return Err(EBUSY);
        }
        o.open_count += 1;
        o.exclusive = exclusive;
        *binding = Some(Binding {
            slot: idx,
            writable: self.can_write,
            exclusive,
        });
        Ok(0)
    }

    fn resize(&self, mut r: UserSliceReader) -> Result<isize> {
        let req: RioResize = r.read()?;
        let b = self.bound()?;
        if !b.writable {
            return Err(EBADF);
        }
        let who = crate::sys::caller();
        let mut st = self.rio.state.lock();
        let store = ready(&mut st.arena)?;
        let o = store.object(b.slot)?;
        let (owner, old) = (o.slot.uid, u64::from(o.slot.pages()));
        let new = u64::from(crate::format::pages_for(req.size));
        if new > old {
            // Growth counts against the owner's limits (a writer who is not the owner
            // spends the owner's share, as with a file in someone else's quota).
            let used = store.usage(owner);
            let as_owner = Caller {
                uid: owner,
                admin: who.admin,
            };
            within_limits(
                &self.rio,
                store,
                &as_owner,
                used.objects,
                used.pages - old + new,
            )?;
        }
        store.resize(b.slot, req.size)?;
        Ok(0)
    }

    fn delete(&self, mut r: UserSliceReader) -> Result<isize> {
        let req: RioName = r.read()?;
        let name = name_of(&req.name)?;
        let who = crate::sys::caller();
        let mut st = self.rio.state.lock();
        let store = ready(&mut st.arena)?;
        let idx = store.find(name).ok_or(ENOENT)?;
        let o = store.object(idx)?;
        if !who.admin && who.uid != o.slot.uid {
            return Err(EACCES);
        }
        store.delete(idx)?;
        Ok(0)
    }

    fn list(&self, mut r: UserSliceReader, mut w: UserSliceWriter) -> Result<isize> {
        let mut req: RioList = r.read()?;
        let who = crate::sys::caller();
        let cap = req.capacity as usize;
        let size = core::mem::size_of::<RioObjInfo>();
        let out = UserSlice::new(
            UserPtr::from_addr(req.buf as usize),
            cap.checked_mul(size).ok_or(EINVAL)?,
        );
        // Collected under the lock, copied out after it (the copy may fault).
        let mut infos = KVec::with_capacity(cap.min(crate::format::MAX_OBJECTS), GFP_KERNEL)?;
        let mut count = 0usize;
        {
            let mut guard = self.rio.state.lock();
            let st = &mut *guard;
            let store = ready(&mut st.arena)?;
            for idx in 0..store.slots.len() {
                if !matches!(store.slots[idx], Slot::Used(_)) {
                    continue;
                }
                if count < cap {
                    let blk = st.blockdevs.iter().any(|d| d.slot == idx);
                    infos.push(obj_info(store, idx, blk, &who)?, GFP_KERNEL)?;
                }
                count += 1;
            }
        }
        let mut out = out.writer();
        for info in infos.iter() {
            out.write(info)?;
        }
        req.count = count as u32;
        w.write(&req)?;
        Ok(0)
    }

    fn stat(&self, mut w: UserSliceWriter) -> Result<isize> {
        let b = self.bound()?;
        let who = crate::sys::caller();
        let info = {
            let mut guard = self.rio.state.lock();
            let st = &mut *guard;
            let blk = st.blockdevs.iter().any(|d| d.slot == b.slot);
            obj_info(ready(&mut st.arena)?, b.slot, blk, &who)?
        };
        w.write(&info)?;
        Ok(0)
    }

    fn stats(&self, mut w: UserSliceWriter) -> Result<isize> {
        let stats = {
            let mut st = self.rio.state.lock();
            let (written_back, writebacks) = st
                .backing
                .as_ref()
                .map_or((0, 0), |b| (b.bytes_written_back, b.writebacks));
            let store = ready(&mut st.arena)?;
            RioStats {
                objects: store.object_count(),
                data_pages: u64::from(store.geo.data_pages),
                pages_in_use: store.pages_in_use(),
                dirty_pages: store.dirty_pages,
                windows_opened: store
                    .arena
                    .stats
                    .windows
                    .load(kernel::sync::atomic::Relaxed),
                bytes_written: store.bytes_written,
                bytes_written_back: written_back,
                writebacks,
                recoveries: store.sb.recoveries,
                epoch: store.sb.epoch,
                quarantined_pages: store.quarantined,
                reclaimed_pages: u64::from(store.report.reclaimed),
                slow_writes: store.slow_writes,
                slow_reads: store.slow_reads,
            }
        };
        w.write(&stats)?;
        Ok(0)
    }

    fn wild_store(&self, mut r: UserSliceReader) -> Result<isize> {
        if !self.rio.options.allow_wild_store || !crate::sys::caller().admin {
            return Err(EPERM);
        }
        let req: RioWildStore = r.read()?;
        let offset = usize::try_from(req.offset).map_err(|_| EINVAL)?;
        if req.offset >= self.rio.config.size {
            return Err(EINVAL);
        }
        let st = self.rio.state.lock();
        let arena = match &st.arena {
            ArenaState::Ready(s) => &s.arena,
            ArenaState::Refused { arena, .. } => arena,
            ArenaState::Gone => return Err(EIO),
        };
        pr_warn!(
            "debug: wild store of {:#x} at arena offset {:#x} (protection {})\n",
            req.value as u8,
            offset,
            if arena.protected() {
                "on: this must oops"
            } else {
                "off"
            }
        );
        arena.wild_store(offset, req.value as u8);
        Ok(0)
    }

    fn sync(&self) -> Result<isize> {
        let who = crate::sys::caller();
        // An administrator writes everything back; anyone else only what they own.
        let only = (!who.admin).then_some(who.uid);
        self.rio.state.lock().writeback(only)?;
        Ok(0)
    }

    fn blkdev_add(&self) -> Result<isize> {
        // The device's contents are parsed by udev, blkid and root's mount: only an
        // administrator may create one.
        if !crate::sys::caller().admin {
            return Err(EPERM);
        }
        let b = self.bound()?;
        if !b.writable {
            return Err(EBADF);
        }
        let slot = self
            .rio
            .state
            .lock()
            .add_blockdev(b.slot, self.rio.options.module)?;
        Ok(slot as isize)
    }

    fn blkdev_remove(&self) -> Result<isize> {
        if !crate::sys::caller().admin {
            return Err(EPERM);
        }
        let b = self.bound()?;
        self.rio.state.lock().remove_blockdev(b.slot)?;
        Ok(0)
    }
}

/// A `pread` piece, decided under the store's lock.
enum ReadStep {
    /// Copied straight to the user's (resident) buffer: `n` bytes.
    Direct(usize),
    /// Copied into the bounce page, to be copied to the user after the lock: `n` bytes.
    Bounced(usize),
}

/// The end of a transfer: the bytes moved, or the error that stopped it before any moved;
/// the file position advances by what moved.
fn finish(
    kiocb: &mut Kiocb<'_, Pin<KBox<RioFile>>>,
    pos: u64,
    done: usize,
    error: Option<Error>,
) -> Result<usize> {
    if done == 0 {
        if let Some(e) = error {
            return Err(e);
        }
    }
    *kiocb.ki_pos_mut() = pos.saturating_add(done as u64) as i64;
    Ok(done)
}

impl crate::sys::MapTracker for RioFile {
    fn vma_opened(&self, writable: bool) {
        let Ok(b) = self.bound() else {
            return;
        };
        let mut st = self.rio.state.lock();
        if let ArenaState::Ready(store) = &mut st.arena {
            if let Err(e) = store.map_opened(b.slot, writable) {
                pr_err!(
                    "could not count a copy of a mapping of slot {}: error {}\n",
                    b.slot,
                    e.to_errno()
                );
            }
        }
    }

    fn vma_closed(&self, writable: bool) {
        let Ok(b) = self.bound() else {
            return;
        };
        let mut st = self.rio.state.lock();
        if let ArenaState::Ready(store) = &mut st.arena {
            if let Err(e) = store.map_closed(b.slot, writable) {
                pr_err!(
                    "could not settle slot {} after its last mapping: error {}\n",
                    b.slot,
                    e.to_errno()
                );
            }
        }
    }
}

#[vtable]
impl MiscDevice for RioFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        let rio = RIO.lock().clone().ok_or(ENODEV)?;
        let can_write = file.flags() & O_ACCMODE != O_RDONLY;
        KBox::try_pin_init(
            try_pin_init!(RioFile {
                rio,
                binding <- new_mutex!(None),
                can_write,
            }),
            GFP_KERNEL,
        )
    }

    /// Page by page: each piece is found and copied under the store's lock, straight to
    /// the user's buffer when it is resident (a copy that cannot fault), or into a bounce
    /// page that is copied to the user after the lock is dropped (that copy may fault and
    /// so take `mmap_lock`, which must never happen under the store's lock).
    fn read_iter(mut kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let me = kiocb.file();
        let b = me.bound()?;
        let pos = u64::try_from(kiocb.ki_pos()).map_err(|_| EINVAL)?;
        let want = iov.len();
        let mut bounce: Option<KVec<u8>> = None;
        let mut done = 0usize;
        let mut error = None;
        while done < want {
            let at = pos.saturating_add(done as u64);
            let step = {
                let mut st = me.rio.state.lock();
                let r = ready(&mut st.arena).and_then(|store| {
                    let Some(pc) = piece(store, b.slot, at, want - done)? else {
                        return Ok(None);
                    };
                    let src = store.arena.page(pc.page)?.slice(pc.off, pc.n)?;
                    if let Some(dst) = crate::sys::ubuf_next_dest(iov) {
                        if crate::sys::copy_to_user_nofault(dst, src).is_ok() {
                            return Ok(Some(ReadStep::Direct(pc.n)));
                        }
                    }
                    let buf = match &mut bounce {
                        Some(x) => x,
                        None => bounce.insert(KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?),
                    };
                    src.read(0, &mut buf[..pc.n])?;
                    store.slow_reads += 1;
                    Ok(Some(ReadStep::Bounced(pc.n)))
                });
                r
            };
            match step {
                Ok(None) => break,
                Ok(Some(ReadStep::Direct(n))) => {
                    iov.advance(n);
                    done += n;
                }
                Ok(Some(ReadStep::Bounced(n))) => {
                    let got = bounce.as_ref().map_or(0, |buf| iov.copy_to_iter(&buf[..n]));
                    done += got;
                    if got < n {
                        if got == 0 {
                            error = Some(EFAULT);
                        }
                        break;
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        finish(&mut kiocb, pos, done, error)
    }

    /// Page by page, as `read_iter`: the fast path copies from the user's buffer straight
    /// into the window (a copy that cannot fault); when the user's page is not resident the
    /// data is first faulted into a bounce page with the lock dropped, and then copied in
    /// through the window under the lock (the object is looked up again: it may have
    /// shrunk meanwhile).
    fn write_iter(mut kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let me = kiocb.file();
        let b = me.bound()?;
        if !b.writable {
            return Err(EBADF);
        }
        let pos = u64::try_from(kiocb.ki_pos()).map_err(|_| EINVAL)?;
        let want = iov.len();
        {
            let mut st = me.rio.state.lock();
            let size = ready(&mut st.arena)?.object(b.slot)?.slot.size;
            if pos >= size {
                return if want == 0 { Ok(0) } else { Err(EFBIG) };
            }
        }
        let mut bounce: Option<KVec<u8>> = None;
        let mut done = 0usize;
        let mut error = None;
        while done < want {
            let at = pos.saturating_add(done as u64);
            // First try: under the lock, straight from the user's buffer.
            let direct = {
                let mut st = me.rio.state.lock();
                ready(&mut st.arena).and_then(|store| {
                    let Some(pc) = piece(store, b.slot, at, want - done)? else {
                        return Ok(None);
                    };
                    store.mark_dirty(pc.data)?;
                    let copied = match crate::sys::ubuf_next(iov) {
                        Some(src) => store.arena.write_page(pc.page, |w| {
                            w.slice(pc.off, pc.n)
                                .and_then(|dst| crate::sys::copy_from_user_nofault(dst, src))
                                .is_ok()
                        })?,
                        None => false,
                    };
                    if copied {
                        store.bytes_written += pc.n as u64;
                    }
                    Ok(Some((pc.n, copied)))
                })
            };
            let n = match direct {
                Ok(None) => break,
                Ok(Some((n, true))) => {
                    iov.advance(n);
                    done += n;
                    continue;
                }
                Ok(Some((n, false))) => n,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            // Slow path: fault the user's data into the bounce page with no lock held.
            let buf = match &mut bounce {
                Some(x) => x,
                None => match KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL) {
                    Ok(v) => bounce.insert(v),
                    Err(e) => {
                        error = Some(e.into());
                        break;
                    }
                },
            };
            let got = iov.copy_from_iter(&mut buf[..n]);
            if got == 0 {
                error = Some(EFAULT);
                break;
            }
            let r = {
                let mut st = me.rio.state.lock();
                ready(&mut st.arena).and_then(|store| {
                    let Some(pc) = piece(store, b.slot, at, got)? else {
                        return Ok(0);
                    };
                    store.mark_dirty(pc.data)?;
                    store
                        .arena
                        .write_page(pc.page, |w| w.write(pc.off, &buf[..pc.n]))??;
                    store.bytes_written += pc.n as u64;
                    store.slow_writes += 1;
                    Ok(pc.n)
                })
            };
            match r {
                Ok(stored) => {
                    done += stored;
                    if stored < n {
                        // Short: the object shrank meanwhile, or the user's buffer ended in
                        // a hole. The return value says how much was written.
                        break;
                    }
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        finish(&mut kiocb, pos, done, error)
    }

    fn mmap(me: Pin<&RioFile>, _file: &File, vma: &VmaNew) -> Result {
        let b = me.bound()?;
        let flags = vma.flags();
        // Arena pages are shared memory: a private (copy-on-write) mapping makes no sense.
        // `VM_MAYSHARE` is what says MAP_SHARED: for a read-only file the kernel clears
        // `VM_SHARED` (and `VM_MAYWRITE`) of a shared mapping, which is still shared.
        if flags & vm_flags::MAYSHARE == 0 {
            return Err(EINVAL);
        }
        let writable = flags & vm_flags::MAYWRITE != 0;
        if writable && !b.writable {
            return Err(EACCES);
        }
        let start = vma.start();
        let npages = (vma.end() - start) / PAGE_SIZE;
        let first = crate::sys::vma_pgoff(vma);
        let mut st = me.rio.state.lock();
        let store = ready(&mut st.arena)?;
        let o = store.object(b.slot)?;
        if first
            .checked_add(npages)
            .is_none_or(|end| end > o.pages.len())
        {
            return Err(ENXIO);
        }
        let base = store.arena.first_pfn();
        for i in 0..npages {
            let p = *o.pages.get(first + i).ok_or(EIO)?;
            if p == u32::MAX {
                return Err(EIO);
            }
            crate::sys::remap_page(
                vma,
                start + i * PAGE_SIZE,
                base + store.arena_page(p) as u64,
            )?;
        }
        // Counted before the stores can start (the mapping becomes visible when this
        // returns): a writable mapping marks the object, so that a crash from here on treats
        // every page as dirty.
        store.map_opened(b.slot, writable)?;
        crate::sys::track_vma(vma, &*me);
        Ok(())
    }

    fn ioctl(me: Pin<&RioFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd));
        match cmd {
            RIO_IOC_INFO => me.info(user.writer()),
            RIO_IOC_FORMAT => {
                let req: RioFormat = user.reader().read()?;
                if !crate::sys::caller().admin {
                    return Err(EPERM);
                }
                me.rio.format(req.flags & FORMAT_FORCE != 0)?;
                Ok(0)
            }
            RIO_IOC_CREATE => me.create(user.reader()),
            RIO_IOC_OPEN => me.open_object(user.reader()),
            RIO_IOC_RESIZE => me.resize(user.reader()),
            RIO_IOC_DELETE => me.delete(user.reader()),
            RIO_IOC_LIST => {
                let (r, w) = user.reader_writer();
                me.list(r, w)
            }
            RIO_IOC_STAT => me.stat(user.writer()),
            RIO_IOC_STATS => me.stats(user.writer()),
            RIO_IOC_SYNC => me.sync(),
            RIO_IOC_WILD_STORE => me.wild_store(user.reader()),
            RIO_IOC_BLKDEV_ADD => me.blkdev_add(),
            RIO_IOC_BLKDEV_REMOVE => me.blkdev_remove(),
            _ => Err(ENOTTY),
        }
    }
}

#[pinned_drop]
impl PinnedDrop for RioFile {
    fn drop(self: Pin<&mut Self>) {
        let Some(b) = *self.binding.lock() else {
            return;
        };
        let mut st = self.rio.state.lock();
        if let ArenaState::Ready(store) = &mut st.arena {
            if let Ok(o) = store.object_mut(b.slot) {
                o.open_count = o.open_count.saturating_sub(1);
                if b.exclusive {
                    o.exclusive = false;
                }
            }
        }
    }
}
