//! Descriptors and the file system: `open` (and `openat`, `creat`), `close`, `dup`,
//! `dup2`, `dup3`, `fcntl(F_DUPFD)`, `lseek`, `ftruncate`, `unlink`, `unlinkat`, `rename`.
//! Descriptors the program opens on paths are recorded (reopened on recovery); changes to
//! the program's own files are logged to the file undo log first; `unlink` is delayed
//! (the file is moved into the graveyard).

use libc::{c_char, c_int, c_uint};

use super::{active, cbytes, undo, Entry};
use crate::ckpt::Ctx;
use crate::kstate::{
    self, FdEntry, UndoRec, R_CREATE, R_MKDIR, R_RENAME, R_RMDIR, R_UNLINK, R_WRITE,
};
use crate::sys::{check, libc_ret, sc, sc4, syscall6};

/// Logs the before-image of `[pos, pos+len)` of an owned file (`pos` None: the current
/// offset, or the end for O_APPEND).
pub(super) fn log_file_write(
    cx: &mut Ctx,
    fd: c_int,
    pos: Option<u64>,
    len: usize,
) -> Result<(), i32> {
    let Some(e) = cx.ks().entry_ref(fd) else {
        return Ok(());
    };
    let (path, append) = (e.path.clone(), e.flags & libc::O_APPEND != 0);
    let Some((_, size)) = kstate::stat_fd(fd) else {
        return Ok(());
    };
    let pos = match pos {
        Some(p) => p,
        None if append => size,
        // SAFETY: lseek(fd, 0, SEEK_CUR) only reads the offset.
        None => check(unsafe { sc(libc::SYS_lseek, fd as usize, 0, libc::SEEK_CUR as usize) })
            .map(|p| p as u64)
            .unwrap_or(size),
    };
    let data = if pos < size {
        kstate::pread_all(fd, pos, (len as u64).min(size - pos) as usize)
    } else {
        Vec::new()
    };
    undo(
        cx,
        &UndoRec {
            kind: R_WRITE,
            path,
            path2: Vec::new(),
            offset: pos,
            old_size: size,
            data,
        },
    )
}

/// `openat(2)`, for every `open` flavour (raw result).
///
/// # Safety
/// `path` is a NUL-terminated string (the C contract of `openat`).
pub(super) unsafe fn sys_openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> isize {
    // SAFETY: a raw openat with the caller's arguments (a C string, flags, mode).
    let raw = || unsafe {
        sc4(
            libc::SYS_openat,
            dirfd as usize,
            path as usize,
            flags as usize,
            mode as usize,
        )
    };
    if !active() {
        return raw();
    }
    if flags & libc::O_TMPFILE == libc::O_TMPFILE {
        // An unnamed file cannot be reopened on recovery. Refused; glibc's `tmpfile`
        // then makes a named one and unlinks it, which the graveyard keeps.
        return super::trap::refuse_with(
            "openat with O_TMPFILE",
            libc::SYS_openat,
            libc::EOPNOTSUPP,
        );
    }
    let mut e = Entry::enter();
    let cx = e.cx();
    // SAFETY: the caller passes a C string.
    let abs = kstate::absolutize(&cx.ks().cwd, dirfd, unsafe { cbytes(path) });
    let st = kstate::stat_path(&abs);
    let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
    if flags & libc::O_CREAT != 0 && st.is_none() {
        let rec = UndoRec {
            kind: R_CREATE,
            path: abs.clone(),
            path2: Vec::new(),
            offset: 0,
            old_size: 0,
            data: Vec::new(),
        };
        if let Err(er) = undo(cx, &rec) {
            return -(er as isize);
        }
    }
    if flags & libc::O_TRUNC != 0 && writes {
        if let Some((true, size, _)) = st {
            if size > 0 {
                let data = kstate::read_file_raw(&abs, size);
                let rec = UndoRec {
                    kind: R_WRITE,
                    path: abs.clone(),
                    path2: Vec::new(),
                    offset: 0,
                    old_size: size,
                    data,
                };
                if let Err(er) = undo(cx, &rec) {
                    return -(er as isize);
                }
            }
        }
    }
    let r = raw();
    if let Ok(fd) = check(r) {
        let fd = fd as c_int;
        let (reg, _) = kstate::stat_fd(fd).unwrap_or((false, 0));
        let fifo_or_sock = {
            // SAFETY: a zeroed stat is a valid value of the plain C struct.
            let mut s: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes one stat into the live local.
            unsafe { sc(libc::SYS_fstat, fd as usize, &mut s as *mut _ as usize, 0) };
            let f = s.st_mode & libc::S_IFMT;
            f == libc::S_IFIFO || f == libc::S_IFSOCK
        };
        cx.ks().set_entry(
            fd,
            Some(FdEntry {
                path: abs,
                flags: flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL),
                offset: 0,
                owned: reg,
                reopen: !fifo_or_sock,
                seekable: reg,
            }),
        );
    }
    r
}

/// Moves `path` into the graveyard (logged). Returns the grave.
fn bury(cx: &mut Ctx, path: &[u8]) -> Result<Vec<u8>, i32> {
    // Logged before each rename, so recovery can move the file back.
    let log = |cx: &mut Ctx, grave: &[u8]| {
        undo(
            cx,
            &UndoRec {
                kind: R_UNLINK,
                path: path.to_vec(),
                path2: grave.to_vec(),
                offset: 0,
                old_size: 0,
                data: Vec::new(),
            },
        )
    };
    let mut grave = cx.ks().grave_for(path);
    log(cx, &grave)?;
    if let Err(e) = kstate::raw_rename(path, &grave) {
        if e != libc::EXDEV {
            return Err(e);
        }
        // Another file system: a hidden sibling instead.
        let (dir, base) = match path.iter().rposition(|&c| c == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b"."[..], path),
        };
        grave = dir.to_vec();
        grave.extend_from_slice(format!("/.dc-grave.{}.", cx.ks().grave_seq).as_bytes());
        grave.extend_from_slice(base);
        log(cx, &grave)?;
        kstate::raw_rename(path, &grave)?;
    }
    cx.ks().buried(path, &grave);
    Ok(grave)
}

/// `fd`'s record, copied to `new` (or cleared there).
fn dup_entry(cx: &mut Ctx, old: c_int, new: c_int) {
    let ks = cx.ks();
    let e = ks.entry_ref(old).cloned();
    ks.set_entry(new, e);
}

/// `unlinkat(2)`, for both `unlink` flavours: a file is buried, a directory removed (raw
/// result).
///
/// # Safety
/// `path` is a NUL-terminated string (the C contract of `unlinkat`).
pub(super) unsafe fn sys_unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> isize {
    // SAFETY: a raw unlinkat with the caller's arguments.
    let raw = || unsafe {
        sc(
            libc::SYS_unlinkat,
            dirfd as usize,
            path as usize,
            flags as usize,
        )
    };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let cx = e.cx();
    // SAFETY: the caller passes a C string.
    let abs = kstate::absolutize(&cx.ks().cwd, dirfd, unsafe { cbytes(path) });
    if flags & libc::AT_REMOVEDIR != 0 {
        // An empty directory: recreated with its mode if rolled back.
        let Some(mode) = kstate::mode_of(&abs) else {
            return raw();
        };
        let rec = UndoRec {
            kind: R_RMDIR,
            path: abs,
            path2: Vec::new(),
            offset: 0,
            old_size: mode as u64,
            data: Vec::new(),
        };
        if let Err(er) = undo(cx, &rec) {
            return -(er as isize);
        }
        return raw();
    }
    match kstate::stat_path(&abs) {
        Some((_, _, false)) => match bury(cx, &abs) {
            Ok(_) => 0,
            Err(er) => -(er as isize),
        },
        _ => raw(),
    }
}

/// `mkdirat(2)` (and `mkdir`): a new directory is removed again if rolled back.
///
/// # Safety
/// `path` is a NUL-terminated string.
pub(super) unsafe fn sys_mkdirat(dirfd: c_int, path: *const c_char, mode: c_uint) -> isize {
    // SAFETY: a raw mkdirat with the caller's arguments.
    let raw = || unsafe {
        sc(
            libc::SYS_mkdirat,
            dirfd as usize,
            path as usize,
            mode as usize,
        )
    };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let cx = e.cx();
    // SAFETY: the caller passes a C string.
    let abs = kstate::absolutize(&cx.ks().cwd, dirfd, unsafe { cbytes(path) });
    if kstate::stat_path(&abs).is_none() {
        let rec = UndoRec {
            kind: R_MKDIR,
            path: abs,
            path2: Vec::new(),
            offset: 0,
            old_size: 0,
            data: Vec::new(),
        };
        if let Err(er) = undo(cx, &rec) {
            return -(er as isize);
        }
    }
    raw()
}

/// `close(2)`.
pub(super) fn sys_close(fd: c_int) -> isize {
    if active() {
        let mut e = Entry::enter();
        e.cx().ks().set_entry(fd, None);
    }
    // SAFETY: close takes a descriptor number only.
    unsafe { sc(libc::SYS_close, fd as usize, 0, 0) }
}

/// `lseek(2)` (offsets are read at each checkpoint; nothing to record).
pub(super) fn sys_lseek(fd: c_int, off: i64, whence: c_int) -> isize {
    // SAFETY: lseek takes numbers only.
    unsafe { sc(libc::SYS_lseek, fd as usize, off as usize, whence as usize) }
}

/// `ftruncate(2)`: the cut-off data of one of the program's files is logged first.
pub(super) fn sys_ftruncate(fd: c_int, len: i64) -> isize {
    if active() {
        let mut e = Entry::enter();
        let cx = e.cx();
        let path = cx
            .ks()
            .entry_ref(fd)
            .filter(|e| e.owned)
            .map(|e| e.path.clone());
        if let (Some(path), Some((_, size))) = (path, kstate::stat_fd(fd)) {
            let data = if (len as u64) < size {
                kstate::pread_all(fd, len as u64, (size - len as u64) as usize)
            } else {
                Vec::new()
            };
            let rec = UndoRec {
                kind: R_WRITE,
                path,
                path2: Vec::new(),
                offset: (len as u64).min(size),
                old_size: size,
                data,
            };
            if let Err(er) = undo(cx, &rec) {
                return -(er as isize);
            }
        }
    }
    // SAFETY: ftruncate takes numbers only.
    unsafe { sc(libc::SYS_ftruncate, fd as usize, len as usize, 0) }
}

/// `dup(2)`.
pub(super) fn sys_dup(fd: c_int) -> isize {
    // SAFETY: dup takes a descriptor number only.
    let r = unsafe { sc(libc::SYS_dup, fd as usize, 0, 0) };
    if active() {
        if let Ok(n) = check(r) {
            let mut e = Entry::enter();
            dup_entry(e.cx(), fd, n as c_int);
        }
    }
    r
}

/// `dup2(2)`.
pub(super) fn sys_dup2(fd: c_int, to: c_int) -> isize {
    if fd == to {
        // SAFETY: fcntl F_GETFD takes numbers only (dup2's check for equal fds).
        let r = unsafe { sc(libc::SYS_fcntl, fd as usize, libc::F_GETFD as usize, 0) };
        return if r < 0 { r } else { to as isize };
    }
    sys_dup3(fd, to, 0)
}

/// `dup3(2)`.
pub(super) fn sys_dup3(fd: c_int, to: c_int, flags: c_int) -> isize {
    // SAFETY: dup3 takes numbers only.
    let r = unsafe { sc(libc::SYS_dup3, fd as usize, to as usize, flags as usize) };
    if active() && r >= 0 {
        let mut e = Entry::enter();
        dup_entry(e.cx(), fd, to);
    }
    r
}

/// `fcntl(2)`: `F_DUPFD` and `F_DUPFD_CLOEXEC` are recorded like `dup`.
///
/// # Safety
/// `arg` is what `cmd` expects (an integer, or a valid pointer).
pub(super) unsafe fn sys_fcntl(fd: c_int, cmd: c_int, arg: usize) -> isize {
    // SAFETY: fcntl with the caller's (integer or pointer) argument, as its C contract
    // has it.
    let r = unsafe { sc(libc::SYS_fcntl, fd as usize, cmd as usize, arg) };
    if active() && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
        if let Ok(n) = check(r) {
            let mut e = Entry::enter();
            dup_entry(e.cx(), fd, n as c_int);
        }
    }
    r
}

/// `renameat2(2)` (and `rename`, `renameat`): a file replaced at the target is buried,
/// the rename logged, and descriptors open on the file follow it.
///
/// # Safety
/// `from` and `to` are NUL-terminated strings.
pub(super) unsafe fn sys_renameat2(
    fromdir: c_int,
    from: *const c_char,
    todir: c_int,
    to: *const c_char,
    flags: c_uint,
) -> isize {
    // SAFETY: renameat2 with the caller's two C strings, directory descriptors and flags.
    let raw = || unsafe {
        syscall6(
            libc::SYS_renameat2,
            [
                fromdir as usize,
                from as usize,
                todir as usize,
                to as usize,
                flags as usize,
                0,
            ],
        )
    };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let cx = e.cx();
    let cwd = &cx.ks().cwd;
    // SAFETY: the caller passes two C strings.
    let (a, b) = unsafe {
        (
            kstate::absolutize(cwd, fromdir, cbytes(from)),
            kstate::absolutize(cwd, todir, cbytes(to)),
        )
    };
    if flags != 0 {
        // RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT: not logged.
        return super::trap::refuse_named("renameat2 with flags", libc::SYS_renameat2);
    }
    if kstate::stat_path(&a).is_none() {
        return raw();
    }
    if let Some((_, _, false)) = kstate::stat_path(&b) {
        if let Err(er) = bury(cx, &b) {
            return -(er as isize);
        }
    }
    let rec = UndoRec {
        kind: R_RENAME,
        path: a.clone(),
        path2: b.clone(),
        offset: 0,
        old_size: 0,
        data: Vec::new(),
    };
    if let Err(er) = undo(cx, &rec) {
        return -(er as isize);
    }
    let r = raw();
    if r >= 0 {
        cx.ks().renamed(&a, &b);
    }
    r
}

#[cfg(feature = "global")]
mod exported {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
        // SAFETY: the caller keeps open's C contract, which is openat's at AT_FDCWD.
        libc_ret(unsafe { sys_openat(libc::AT_FDCWD, path, flags, mode) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn openat(
        d: c_int,
        path: *const c_char,
        flags: c_int,
        mode: c_uint,
    ) -> c_int {
        // SAFETY: the caller keeps openat's C contract.
        libc_ret(unsafe { sys_openat(d, path, flags, mode) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn creat(path: *const c_char, mode: c_uint) -> c_int {
        // SAFETY: creat is open with these flags; the caller passes a C string.
        libc_ret(unsafe {
            sys_openat(
                libc::AT_FDCWD,
                path,
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                mode,
            )
        }) as c_int
    }

    alias! {
        open64 => open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
        openat64 => openat(d: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int;
        creat64 => creat(path: *const c_char, mode: c_uint) -> c_int;
        lseek64 => lseek(fd: c_int, off: i64, whence: c_int) -> i64;
        ftruncate64 => ftruncate(fd: c_int, len: i64) -> c_int;
        fcntl64 => fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int;
    }

    #[no_mangle]
    pub unsafe extern "C" fn close(fd: c_int) -> c_int {
        libc_ret(sys_close(fd)) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn lseek(fd: c_int, off: i64, whence: c_int) -> i64 {
        libc_ret(sys_lseek(fd, off, whence)) as i64
    }

    #[no_mangle]
    pub unsafe extern "C" fn ftruncate(fd: c_int, len: i64) -> c_int {
        libc_ret(sys_ftruncate(fd, len)) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
        libc_ret(sys_dup(fd)) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
        libc_ret(sys_dup2(fd, to)) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
        libc_ret(sys_dup3(fd, to, flags)) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
        // SAFETY: fcntl's contract, forwarded.
        libc_ret(unsafe { sys_fcntl(fd, cmd, arg) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
        // SAFETY: the caller passes a C string.
        libc_ret(unsafe { sys_unlinkat(libc::AT_FDCWD, path, 0) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn unlinkat(d: c_int, path: *const c_char, flags: c_int) -> c_int {
        // SAFETY: the caller passes a C string.
        libc_ret(unsafe { sys_unlinkat(d, path, flags) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn mkdir(path: *const c_char, mode: c_uint) -> c_int {
        // SAFETY: the caller passes a C string.
        libc_ret(unsafe { sys_mkdirat(libc::AT_FDCWD, path, mode) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn rmdir(path: *const c_char) -> c_int {
        // SAFETY: the caller passes a C string.
        libc_ret(unsafe { sys_unlinkat(libc::AT_FDCWD, path, libc::AT_REMOVEDIR) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn rename(from: *const c_char, to: *const c_char) -> c_int {
        // SAFETY: the caller passes two C strings.
        libc_ret(unsafe { sys_renameat2(libc::AT_FDCWD, from, libc::AT_FDCWD, to, 0) }) as c_int
    }
}
