// SPDX-License-Identifier: GPL-2.0

//! The Rust half of the VFS glue: the `extern "C"` entry points `riofs_vfs.c` calls, and
//! the two it provides (registering the file system type). The kernel crate has no file
//! system abstraction, so, as binder does with `rust_binderfs.c`, the VFS side (superblock,
//! dentries, iov_iters, the fault handler) is a small C file in the same module and the
//! file system's logic is here, in Rust.
//!
//! Every entry point takes the volume pointer the mount returned, checks nothing else about
//! it (the glue owns it), turns C buffers into slices only for kernel memory that nobody
//! else writes during the call (names held stable by the VFS's locks, the glue's bounce
//! buffers), takes the volume's mutex, and returns 0 or a negative errno.

use core::ffi::{c_int, c_long, c_void};

use kernel::prelude::*;
use kernel::sync::Arc;

use super::format::{Time, NAME_MAX};
use super::ops::RiofsAttr;
use super::Volume;
use crate::service::Rio;

extern "C" {
    fn rio_riofs_register_fs(rio: *const c_void, magic: u32) -> c_int;
    fn rio_riofs_unregister_fs();
}

/// Registers the `riofs` type; the glue keeps `rio` for mounts until [`unregister`].
pub(super) fn register(rio: *const Rio) -> Result {
    // SAFETY: the glue stores the pointer and hands it back only to `riofs_rs_mount`, which
    // borrows the `Rio` it points to; `Registration` keeps it alive until after unregister.
    let r = unsafe { rio_riofs_register_fs(rio.cast(), crate::abi::RIOFS_MAGIC) };
    if r < 0 {
        return Err(Error::from_errno(r));
    }
    Ok(())
}

/// Unregisters the `riofs` type.
pub(super) fn unregister() {
    // SAFETY: called once, after a successful `register` (by `Registration::drop`).
    unsafe { rio_riofs_unregister_fs() };
}

fn code(r: Result) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

fn time(sec: i64, nsec: u32) -> Time {
    Time {
        sec,
        nsec: nsec.min(999_999_999),
    }
}

/// The volume behind a pointer from `riofs_rs_mount`.
///
/// # Safety
///
/// `vol` was returned by `riofs_rs_mount` and not yet passed to `riofs_rs_unmount`.
unsafe fn volume<'a>(vol: *const c_void) -> &'a Volume {
    // SAFETY: by the function's contract `vol` is a live `Arc<Volume>` pointer, and the
    // glue keeps that reference until `riofs_rs_unmount`, after every other call.
    unsafe { &*vol.cast::<Volume>() }
}

/// A name the VFS passes: `len` bytes at `ptr`.
///
/// # Safety
///
/// `ptr..ptr + len` is readable kernel memory that nobody writes during the call (a
/// dentry's name, stable under its parent's `i_rwsem`, or the glue's own buffer).
unsafe fn bytes<'a>(ptr: *const u8, len: u32) -> Result<&'a [u8]> {
    if ptr.is_null() {
        return Err(EINVAL);
    }
    // SAFETY: by the function's contract.
    Ok(unsafe { core::slice::from_raw_parts(ptr, len as usize) })
}

fn name_ok(n: &[u8]) -> Result<&[u8]> {
    if n.len() > NAME_MAX {
        return Err(ENAMETOOLONG);
    }
    Ok(n)
}

/// Mounts object `name` (see [`Volume::mount`]); `*vol` receives the volume.
///
/// # Safety
///
/// `rio` is the pointer given to `rio_riofs_register_fs`; `name..name + len` is readable;
/// `vol` is writable.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_mount(
    rio: *const c_void,
    name: *const u8,
    len: u32,
    size: u64,
    sec: i64,
    nsec: u32,
    vol: *mut *const c_void,
) -> c_int {
    code((|| {
        // SAFETY: `rio` is the `Arc<Rio>` pointer `Registration` owns (alive while the type
        // is registered, and a mount runs only then); we take a new reference of our own.
        let rio = unsafe { Arc::<Rio>::from_raw(rio.cast()) };
        let mine = rio.clone();
        core::mem::forget(rio);
        // SAFETY: the mount's source string, which the glue owns for the call.
        let n = unsafe { bytes(name, len) }?;
        let (v, rep) = Volume::mount(mine, n, size, time(sec, nsec))?;
        if rep.formatted {
            pr_info!("riofs: formatted a new file system\n");
        }
        {
            let g = v.vol.lock();
            pr_info!(
                "riofs: mounted: {} blocks, {} free; {} inodes in use, {} free; recovery undid {} records, freed {} orphans and {} leaked blocks\n",
                g.sb.data_blocks(),
                g.free_blocks,
                rep.inodes,
                g.free_inodes,
                rep.undone,
                rep.orphans,
                rep.leaked
            );
        }
        // SAFETY: `vol` is writable by the function's contract.
        unsafe { *vol = Arc::into_raw(v).cast() };
        Ok(())
    })())
}

/// Releases a volume (the superblock is going away; every inode was evicted).
///
/// # Safety
///
/// `vol` came from `riofs_rs_mount` and is not used again.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_unmount(vol: *const c_void) {
    if vol.is_null() {
        return;
    }
    // SAFETY: the reference `riofs_rs_mount` made with `Arc::into_raw`, given back once.
    drop(unsafe { Arc::<Volume>::from_raw(vol.cast()) });
}

/// Reads the attributes of `ino`.
///
/// # Safety
///
/// `vol` as for [`volume`]; `a` is writable.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_getattr(
    vol: *const c_void,
    ino: u32,
    a: *mut RiofsAttr,
) -> c_int {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    code((|| {
        let r = v.vol.lock().getattr(ino)?;
        // SAFETY: `a` is writable by the function's contract.
        unsafe { a.write(r) };
        Ok(())
    })())
}

/// The next entry of directory `dir` from `*cookie`: 1 and the entry, 0 at the end.
///
/// # Safety
///
/// `vol` as for [`volume`]; `cookie`, `len`, `ino`, `dtype` writable; `name` has room for
/// 256 bytes.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_dir_next(
    vol: *const c_void,
    dir: u32,
    cookie: *mut u64,
    name: *mut u8,
    len: *mut u32,
    ino: *mut u32,
    dtype: *mut u32,
) -> c_int {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    // SAFETY: `cookie` is readable and writable by the function's contract.
    let mut c = unsafe { *cookie };
    let r = v.vol.lock().dir_next(dir, &mut c);
    // SAFETY: `cookie` is writable by the function's contract, and no reference to it is
    // live (the read above copied the value out).
    unsafe { *cookie = c };
    match r {
        Ok(Some(e)) => {
            let n = e.name();
            // SAFETY: `name` has room for 256 bytes and `n` is at most 255; the others are
            // writable, by the function's contract.
            unsafe {
                core::ptr::copy_nonoverlapping(n.as_ptr(), name, n.len());
                *len = n.len() as u32;
                *ino = e.ino;
                *dtype = u32::from(e.dtype);
            }
            1
        }
        Ok(None) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Creates `name` in `dir` (with `target`, `tlen > 0`: a symbolic link).
///
/// # Safety
///
/// `vol` as for [`volume`]; `name` and `target` as for [`bytes`] (`target` may be null
/// when `tlen` is 0); `ino` and `slot` writable.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_mknod(
    vol: *const c_void,
    dir: u32,
    name: *const u8,
    len: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    target: *const u8,
    tlen: u32,
    sec: i64,
    nsec: u32,
    ino: *mut u32,
    slot: *mut u64,
) -> c_int {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    code((|| {
        // SAFETY: by the function's contract.
        let n = name_ok(unsafe { bytes(name, len) }?)?;
        let t = if tlen > 0 {
            // SAFETY: by the function's contract.
            Some(unsafe { bytes(target, tlen) }?)
        } else {
            None
        };
        let (i, s) = v
            .vol
            .lock()
            .mknod(dir, n, mode, uid, gid, rdev, time(sec, nsec), t)?;
        // SAFETY: writable by the function's contract.
        unsafe {
            *ino = i;
            *slot = s;
        }
        Ok(())
    })())
}

/// Links `ino` as `name` in `dir`.
///
/// # Safety
///
/// As for [`riofs_rs_mknod`].
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_link(
    vol: *const c_void,
    ino: u32,
    dir: u32,
    name: *const u8,
    len: u32,
    sec: i64,
    nsec: u32,
    slot: *mut u64,
) -> c_int {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    code((|| {
        // SAFETY: by the function's contract.
        let n = name_ok(unsafe { bytes(name, len) }?)?;
        let s = v.vol.lock().link(ino, dir, n, time(sec, nsec))?;
        // SAFETY: writable by the function's contract.
        unsafe { *slot = s };
        Ok(())
    })())
}

/// Removes `name` (-> `ino`, found at slot `hint`, if it is still there) from `dir`.
///
/// # Safety
///
/// `vol` as for [`volume`]; `name` as for [`bytes`].
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_unlink(
    vol: *const c_void,
    dir: u32,
    name: *const u8,
    len: u32,
    hint: u64,
    ino: u32,
    is_dir: c_int,
    sec: i64,
    nsec: u32,
) -> c_int {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    code((|| {
        // SAFETY: by the function's contract.
        let n = name_ok(unsafe { bytes(name, len) }?)?;
        v.vol
            .lock()
            .unlink(dir, n, hint, ino, is_dir != 0, time(sec, nsec))
    })())
}

/// Renames `odir/oname` to `ndir/nname`, replacing `target` (0: none).
///
/// # Safety
///
/// `vol` as for [`volume`]; the names as for [`bytes`]; `nslot` writable.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_rename(
    vol: *const c_void,
    odir: u32,
    oname: *const u8,
    olen: u32,
    ohint: u64,
    ino: u32,
    ndir: u32,
    nname: *const u8,
    nlen: u32,
    nhint: u64,
    target: u32,
    sec: i64,
    nsec: u32,
    nslot: *mut u64,
) -> c_int {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    code((|| {
        // SAFETY: by the function's contract.
        let on = name_ok(unsafe { bytes(oname, olen) }?)?;
        // SAFETY: by the function's contract.
        let nn = name_ok(unsafe { bytes(nname, nlen) }?)?;
        let s = v.vol.lock().rename(
            odir,
            on,
            ohint,
            ino,
            ndir,
            nn,
            nhint,
            target,
            time(sec, nsec),
        )?;
        // SAFETY: writable by the function's contract.
        unsafe { *nslot = s };
        Ok(())
    })())
}

/// Exchanges `odir/oname` (-> `ino`) and `ndir/nname` (-> `target`); each entry keeps
/// its slot (`*oslot`, `*nslot` on return).
///
/// # Safety
///
/// `vol` as for [`volume`]; the names as for [`bytes`]; `oslot` and `nslot` writable.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_exchange(
    vol: *const c_void,
    odir: u32,
    oname: *const u8,
    olen: u32,
    ohint: u64,
    ino: u32,
    ndir: u32,
    nname: *const u8,
    nlen: u32,
    nhint: u64,
    target: u32,
    sec: i64,
    nsec: u32,
    oslot: *mut u64,
    nslot: *mut u64,
) -> c_int {
    // SAFETY: `vol` is a live volume for the call, by the function's contract.
    let v = unsafe { volume(vol) };
    code((|| {
        // SAFETY: `oname` has `olen` readable bytes, by the function's contract.
        let on = name_ok(unsafe { bytes(oname, olen) }?)?;
        // SAFETY: `nname` has `nlen` readable bytes, by the function's contract.
        let nn = name_ok(unsafe { bytes(nname, nlen) }?)?;
        let (o, n) = v.vol.lock().exchange(
            odir,
            on,
            ohint,
            ino,
            ndir,
            nn,
            nhint,
            target,
            time(sec, nsec),
        )?;
        // SAFETY: both are writable by the function's contract.
        unsafe {
            *oslot = o;
            *nslot = n;
        }
        Ok(())
    })())
}

/// Changes the attributes of `ino` named by `valid` (`SET_*`).
///
/// # Safety
///
/// `vol` as for [`volume`]; `a` readable.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_setattr(
    vol: *const c_void,
    ino: u32,
    valid: u32,
    a: *const RiofsAttr,
) -> c_int {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    // SAFETY: `a` is readable by the function's contract; `RiofsAttr` is plain data.
    let a = unsafe { a.read() };
    code(v.vol.lock().setattr(ino, valid, &a))
}

/// Reads up to `len` bytes at `pos` of `ino` into `buf`; returns the count or an errno.
///
/// # Safety
///
/// `vol` as for [`volume`]; `buf..buf + len` is a kernel buffer of the glue's, writable,
/// that nobody else uses during the call.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_read(
    vol: *const c_void,
    ino: u32,
    pos: u64,
    buf: *mut u8,
    len: u32,
) -> c_long {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    if buf.is_null() {
        return EINVAL.to_errno() as c_long;
    }
    // SAFETY: the glue's private bounce buffer, by the function's contract.
    let dst = unsafe { core::slice::from_raw_parts_mut(buf, len as usize) };
    match v.vol.lock().read_file(ino, pos, dst) {
        Ok(n) => n as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// Writes `len` bytes from `buf` at `pos` of `ino`; returns the count (and `*size`, the
/// file's new size) or an errno.
///
/// # Safety
///
/// As for [`riofs_rs_read`] (`buf` readable); `size` writable.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_write(
    vol: *const c_void,
    ino: u32,
    pos: u64,
    buf: *const u8,
    len: u32,
    sec: i64,
    nsec: u32,
    size: *mut u64,
) -> c_long {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    // SAFETY: the glue's private bounce buffer, by the function's contract.
    let src = match unsafe { bytes(buf, len) } {
        Ok(s) => s,
        Err(e) => return e.to_errno() as c_long,
    };
    match v.vol.lock().write_file(ino, pos, src, time(sec, nsec)) {
        Ok((n, s)) => {
            // SAFETY: writable by the function's contract.
            unsafe { *size = s };
            n as c_long
        }
        Err(e) => e.to_errno() as c_long,
    }
}

/// The arena frame for page `pgoff` of `ino` (allocated if a hole).
///
/// # Safety
///
/// `vol` as for [`volume`]; `pfn` writable.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_fault(
    vol: *const c_void,
    ino: u32,
    pgoff: u64,
    pfn: *mut u64,
) -> c_int {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    code((|| {
        let p = v.vol.lock().fault(ino, pgoff)?;
        // SAFETY: writable by the function's contract.
        unsafe { *pfn = p };
        Ok(())
    })())
}

/// The VFS evicted `ino`; free it if nothing links it.
///
/// # Safety
///
/// `vol` as for [`volume`].
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_evict(vol: *const c_void, ino: u32) {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    if let Err(e) = v.vol.lock().evict(ino) {
        pr_err!(
            "riofs: freeing inode {} failed (error {}); the next mount frees it\n",
            ino,
            e.to_errno()
        );
    }
}

/// `statfs`: `out` receives data blocks, free blocks, inodes, free inodes.
///
/// # Safety
///
/// `vol` as for [`volume`]; `out` has room for four `u64`.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_statfs(vol: *const c_void, out: *mut u64) {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    let (a, b, c, d) = v.vol.lock().statfs();
    // SAFETY: `out` has room for four values, by the function's contract.
    unsafe {
        *out = a;
        *out.add(1) = b;
        *out.add(2) = c;
        *out.add(3) = d;
    }
}

/// Copies the target of symbolic link `ino` into `buf` (`len` bytes of room); returns its
/// length or an errno.
///
/// # Safety
///
/// As for [`riofs_rs_read`].
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_readlink(
    vol: *const c_void,
    ino: u32,
    buf: *mut u8,
    len: u32,
) -> c_int {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    if buf.is_null() {
        return EINVAL.to_errno();
    }
    // SAFETY: the glue's private buffer, by the function's contract.
    let dst = unsafe { core::slice::from_raw_parts_mut(buf, len as usize) };
    match v.vol.lock().readlink(ino, dst) {
        Ok(n) => n as c_int,
        Err(e) => e.to_errno(),
    }
}

/// Counters for `/proc/fs`-style reporting: commits and aborts since mount.
///
/// # Safety
///
/// `vol` as for [`volume`]; `out` has room for two `u64`.
#[no_mangle]
pub(crate) unsafe extern "C" fn riofs_rs_counters(vol: *const c_void, out: *mut u64) {
    // SAFETY: by the function's contract.
    let v = unsafe { volume(vol) };
    let g = v.vol.lock();
    // SAFETY: room for two values, by the function's contract.
    unsafe {
        *out = g.commits;
        *out.add(1) = g.aborts;
    }
}
