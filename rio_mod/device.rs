// SPDX-License-Identifier: GPL-2.0

//! `/dev/rio`: the miscdevice through which userspace reaches the store.
//!
//! A freshly opened file is *unbound*: it can create, list, delete and format. `RIO_IOC_OPEN`
//! binds it to one object; from then on `pread`/`pwrite` address that object. A write is
//! durable when it returns: it has been copied into the protected arena.

use kernel::{
    fs::{File, Kiocb},
    ioctl::_IOC_SIZE,
    iov::{IovIterDest, IovIterSource},
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    mm::virt::{flags as vm_flags, VmaNew},
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    task::Kuid,
    uaccess::{UserSlice, UserSliceReader, UserSliceWriter},
};

use crate::format::{PAGE_SIZE, NAME_MAX};
use crate::service::{ArenaState, Rio};
use crate::store::{Slot, Store};
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
    /// The raw miscdevice (to install the fsync table on).
    pub(crate) fn misc_raw(&self) -> *mut kernel::bindings::miscdevice {
        self.misc.as_raw()
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

fn current_uid() -> u32 {
    Kuid::current_euid().into_uid_in_current_ns()
}

/// Owner/other permission bits; root may do anything. (Group bits are not checked.)
fn permitted(slot: &crate::format::ObjectSlot, want_write: bool) -> bool {
    let uid = current_uid();
    if uid == 0 {
        return true;
    }
    let bits = if uid == slot.uid { (slot.mode >> 6) & 7 } else { slot.mode & 7 };
    let need = if want_write { 0o6 } else { 0o4 };
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

fn obj_info(store: &Store, idx: usize, blkdev: bool) -> Result<RioObjInfo> {
    let o = store.object(idx)?;
    Ok(RioObjInfo {
        name: o.slot.name,
        size: o.slot.size,
        uid: o.slot.uid,
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

/// Moves `len` bytes of an object from byte `pos` on, one piece per page:
/// `copy(page index, offset in the page, length)` returns how many bytes it moved, and a
/// short move ends the transfer. Returns the bytes moved; `EFAULT` if none could be.
fn for_each_piece(
    pos: usize,
    len: usize,
    mut copy: impl FnMut(usize, usize, usize) -> Result<usize>,
) -> Result<usize> {
    let mut done = 0;
    while done < len {
        let at = pos + done;
        let off = at % PAGE_SIZE;
        let n = (len - done).min(PAGE_SIZE - off);
        let got = copy(at / PAGE_SIZE, off, n)?;
        done += got;
        if got < n {
            break;
        }
    }
    if done == 0 && len > 0 {
        return Err(EFAULT);
    }
    Ok(done)
}

impl RioFile {
    fn bound(&self) -> Result<Binding> {
        (*self.binding.lock()).ok_or(EBADFD)
    }

    fn info(&self, mut w: UserSliceWriter) -> Result<isize> {
        let st = self.rio.state.lock();
        let uuid = match &st.arena {
            ArenaState::Ready(s) => s.sb.uuid,
            _ => [0; 16],
        };
        w.write(&RioInfo {
            abi_version: RIO_ABI_VERSION,
            state: st.arena.code(),
            arena_phys: self.rio.config.phys,
            arena_size: self.rio.config.size,
            protect: u32::from(self.rio.options.protect),
            max_objects: crate::format::MAX_OBJECTS as u32,
            uuid,
        })?;
        Ok(0)
    }

    fn create(&self, mut r: UserSliceReader) -> Result<isize> {
        let req: RioCreate = r.read()?;
        let name = name_of(&req.name)?;
        let mut st = self.rio.state.lock();
        let store = ready(&mut st.arena)?;
        store.create(name, req.size, current_uid(), 0, req.mode)?;
        Ok(0)
    }

    fn open_object(&self, mut r: UserSliceReader) -> Result<isize> {
        let req: RioOpen = r.read()?;
        let name = name_of(&req.name)?;
        let exclusive = req.flags & OPEN_EXCLUSIVE != 0;
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
        if !permitted(&o.slot, self.can_write) {
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
        let mut st = self.rio.state.lock();
        ready(&mut st.arena)?.resize(b.slot, req.size)?;
        Ok(0)
    }

    fn delete(&self, mut r: UserSliceReader) -> Result<isize> {
        let req: RioName = r.read()?;
        let name = name_of(&req.name)?;
        let mut st = self.rio.state.lock();
        let store = ready(&mut st.arena)?;
        let idx = store.find(name).ok_or(ENOENT)?;
        let o = store.object(idx)?;
        let uid = current_uid();
        if uid != 0 && uid != o.slot.uid {
            return Err(EACCES);
        }
        store.delete(idx)?;
        Ok(0)
    }

    fn list(&self, mut r: UserSliceReader, mut w: UserSliceWriter) -> Result<isize> {
        let mut req: RioList = r.read()?;
        let mut guard = self.rio.state.lock();
        let st = &mut *guard;
        let store = ready(&mut st.arena)?;
        let size = core::mem::size_of::<RioObjInfo>();
        let cap = req.capacity as usize;
        let out = UserSlice::new(UserPtr::from_addr(req.buf as usize), cap.checked_mul(size).ok_or(EINVAL)?);
        let mut out = out.writer();
        let mut count = 0usize;
        for idx in 0..store.slots.len() {
            if !matches!(store.slots[idx], Slot::Used(_)) {
                continue;
            }
            if count < cap {
                let blk = st.blockdevs.iter().any(|d| d.slot == idx);
                out.write(&obj_info(store, idx, blk)?)?;
            }
            count += 1;
        }
        req.count = count as u32;
        w.write(&req)?;
        Ok(0)
    }

    fn stat(&self, mut w: UserSliceWriter) -> Result<isize> {
        let b = self.bound()?;
        let mut guard = self.rio.state.lock();
        let st = &mut *guard;
        let blk = st.blockdevs.iter().any(|d| d.slot == b.slot);
        w.write(&obj_info(ready(&mut st.arena)?, b.slot, blk)?)?;
        Ok(0)
    }

    fn stats(&self, mut w: UserSliceWriter) -> Result<isize> {
        let mut st = self.rio.state.lock();
        let (written_back, writebacks) = st
            .backing
            .as_ref()
            .map_or((0, 0), |b| (b.bytes_written_back, b.writebacks));
        let store = ready(&mut st.arena)?;
        w.write(&RioStats {
            objects: store.object_count(),
            data_pages: u64::from(store.geo.data_pages),
            pages_in_use: store.pages_in_use(),
            dirty_pages: store.dirty_pages,
            windows_opened: store.arena.stats.windows.load(kernel::sync::atomic::Relaxed),
            bytes_written: store.bytes_written,
            bytes_written_back: written_back,
            writebacks,
            recoveries: store.sb.recoveries,
            epoch: store.sb.epoch,
            quarantined_pages: store.quarantined,
            reclaimed_pages: u64::from(store.report.reclaimed),
        })?;
        Ok(0)
    }

    fn wild_store(&self, mut r: UserSliceReader) -> Result<isize> {
        if !self.rio.options.allow_wild_store {
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
            if arena.protected() { "on: this must oops" } else { "off" }
        );
        arena.wild_store(offset, req.value as u8);
        Ok(0)
    }

    fn blkdev_add(&self) -> Result<isize> {
        let b = self.bound()?;
        if !b.writable {
            return Err(EBADF);
        }
        let slot = self.rio.state.lock().add_blockdev(b.slot, self.rio.options.module)?;
        Ok(slot as isize)
    }

    fn blkdev_remove(&self) -> Result<isize> {
        let b = self.bound()?;
        self.rio.state.lock().remove_blockdev(b.slot)?;
        Ok(0)
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

    fn read_iter(mut kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let me = kiocb.file();
        let b = me.bound()?;
        let pos = u64::try_from(kiocb.ki_pos()).map_err(|_| EINVAL)?;
        let mut st = me.rio.state.lock();
        let store = ready(&mut st.arena)?;
        let o = store.object(b.slot)?;
        if pos >= o.slot.size {
            return Ok(0);
        }
        let len = (o.slot.size - pos).min(iov.len() as u64) as usize;
        let done = for_each_piece(pos as usize, len, |idx, off, n| {
            let p = *o.pages.get(idx).ok_or(EIO)?;
            let page = store.arena.page(store.arena_page(p))?;
            Ok(iov.copy_to_iter(&page[off..off + n]))
        })?;
        *kiocb.ki_pos_mut() = (pos as usize + done) as i64;
        Ok(done)
    }

    fn write_iter(mut kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let me = kiocb.file();
        let b = me.bound()?;
        if !b.writable {
            return Err(EBADF);
        }
        let pos = u64::try_from(kiocb.ki_pos()).map_err(|_| EINVAL)?;
        let mut bounce: Option<KVec<u8>> = None;
        let mut st = me.rio.state.lock();
        let store = ready(&mut st.arena)?;
        let size = store.object(b.slot)?.slot.size;
        if pos >= size {
            return if iov.is_empty() { Ok(0) } else { Err(EFBIG) };
        }
        let len = (size - pos).min(iov.len() as u64) as usize;
        let done = for_each_piece(pos as usize, len, |idx, off, n| {
            let p = *store.object(b.slot)?.pages.get(idx).ok_or(EIO)?;
            store.mark_dirty(p)?;
            let page = store.arena_page(p);
            // Fast path: one copy, straight from the user's buffer into the window. The
            // window cannot sleep, so this only works if the user's page is resident.
            let direct = match crate::sys::ubuf_next(iov) {
                Some(src) => store.arena.write_page(page, |dst| {
                    crate::sys::copy_from_user_atomic(&mut dst[off..off + n], src).is_ok()
                })?,
                None => false,
            };
            if direct {
                iov.advance(n);
                return Ok(n);
            }
            // Slow path: fault the user's data into a bounce page (may sleep), then copy it
            // in through the window.
            let buf = match &mut bounce {
                Some(b) => b,
                None => bounce.insert(KVec::from_elem(0u8, PAGE_SIZE, GFP_KERNEL)?),
            };
            let got = iov.copy_from_iter(&mut buf[..n]);
            store
                .arena
                .write_page(page, |dst| dst[off..off + got].copy_from_slice(&buf[..got]))?;
            Ok(got)
        })?;
        store.bytes_written += done as u64;
        *kiocb.ki_pos_mut() = (pos as usize + done) as i64;
        Ok(done)
    }

    fn mmap(me: Pin<&RioFile>, _file: &File, vma: &VmaNew) -> Result {
        let b = me.bound()?;
        let flags = vma.flags();
        // Arena pages are shared memory: a private (copy-on-write) mapping makes no sense.
        if flags & vm_flags::SHARED == 0 {
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
        if first.checked_add(npages).is_none_or(|end| end > o.pages.len()) {
            return Err(ENXIO);
        }
        if writable {
            // Stores through the mapping bypass the registry: from now on every page of the
            // object counts as dirty until it is written back with no writable mapping left.
            store.mark_mapped(b.slot)?;
        }
        let base = store.arena.first_pfn();
        let o = store.object(b.slot)?;
        for i in 0..npages {
            let p = *o.pages.get(first + i).ok_or(EIO)?;
            crate::sys::remap_page(vma, start + i * PAGE_SIZE, base + store.arena_page(p) as u64)?;
        }
        Ok(())
    }

    fn ioctl(me: Pin<&RioFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd));
        match cmd {
            RIO_IOC_INFO => me.info(user.writer()),
            RIO_IOC_FORMAT => {
                let req: RioFormat = user.reader().read()?;
                if current_uid() != 0 {
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
            RIO_IOC_SYNC => {
                me.rio.state.lock().writeback()?;
                Ok(0)
            }
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
