//! Descriptors and the file system: `open` (and `openat`, `creat`), `close`, `dup`,
//! `dup2`, `dup3`, `fcntl(F_DUPFD)`, `lseek`, `ftruncate`, `unlink`, `unlinkat`, `rename`,
//! `mknod` (`mkfifo`), `pipe`/`pipe2`.
//! Descriptors the program opens on paths are recorded (reopened on recovery); changes to
//! the program's own files are logged to the file undo log first; `unlink` is delayed
//! (the file is moved into the graveyard). FIFOs opened by path and the process's own
//! anonymous pipes are recorded too (`kstate::pipe`, which has the design).

use libc::{c_char, c_int, c_uint};

use super::{active, cbytes, undo, Entry};
use crate::ckpt::Ctx;
use crate::kstate::pipe::{self, PipeRec, PIPE2_FLAGS};
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
    if flags & libc::O_PATH == 0 && kstate::is_fifo_path(&abs) {
        // SAFETY: the caller's C string (function contract).
        return unsafe { open_fifo(&mut e, dirfd, path, flags, mode, abs) };
    }
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
        let (fifo_or_sock, dir) = {
            // SAFETY: a zeroed stat is a valid value of the plain C struct.
            let mut s: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes one stat into the live local.
            unsafe { sc(libc::SYS_fstat, fd as usize, &mut s as *mut _ as usize, 0) };
            let f = s.st_mode & libc::S_IFMT;
            (
                f == libc::S_IFIFO || f == libc::S_IFSOCK,
                f == libc::S_IFDIR,
            )
        };
        let ofd = cx.ks().new_ofd();
        cx.ks().set_entry(
            fd,
            Some(FdEntry {
                path: abs,
                flags: flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL),
                // A directory is file-system state too: reading it (EISDIR) is no input.
                owned: reg || dir,
                reopen: !fifo_or_sock,
                seekable: reg,
                ofd,
                ..FdEntry::inherited(false)
            }),
        );
    }
    r
}

/// `open` of a FIFO (issue 16; `kstate::pipe` has the design): performed and recorded
/// ([`PipeRec::fifo`]), to be opened again at recovery.
///
/// For a member of a computation (CPV-2PC, CBNDV-2PC) the FIFO is internal: the
/// coordinator is told first (as for a stream socket, so that every round quiesces), and
/// an open that would block (`O_RDONLY` or `O_WRONLY` without `O_NONBLOCK`: the kernel
/// waits for the other end) waits here serving the coordinator instead, so that a round
/// another member asks for meanwhile can complete: an `O_WRONLY` open is tried with
/// `O_NONBLOCK`, which fails with `ENXIO` until a reader has the FIFO open; an `O_RDONLY`
/// open is made with `O_NONBLOCK` (it never waits), recorded at once (so a round's drain
/// covers it), then waits until a writer has the FIFO open (`pipe::writer_present`).
/// Either then gets the program's status flags. Under the other protocols the open is
/// the kernel's, blocking as it does.
///
/// # Safety
/// `path` is a NUL-terminated string.
unsafe fn open_fifo(
    e: &mut Entry,
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
    abs: Vec<u8>,
) -> isize {
    // SAFETY: a raw openat with the caller's C string and these flags.
    let open = |fl: c_int| unsafe {
        sc4(
            libc::SYS_openat,
            dirfd as usize,
            path as usize,
            fl as usize,
            mode as usize,
        )
    };
    let twopc = crate::twopc::configured();
    let acc = flags & libc::O_ACCMODE;
    if twopc {
        super::member::announce_streams(e.cx());
    }
    let wait = twopc && flags & libc::O_NONBLOCK == 0 && acc != libc::O_RDWR;
    let r = if !wait {
        open(flags)
    } else {
        loop {
            let r = open(flags | libc::O_NONBLOCK);
            if acc != libc::O_WRONLY || r != -(libc::ENXIO as isize) {
                break r;
            }
            // No reader yet (the kernel's open would wait for one).
            let _ = super::member::wait_ready(e.cx(), &mut [], 10);
        }
    };
    let Ok(fd) = check(r) else {
        return r;
    };
    let fd = fd as c_int;
    let ks = e.cx().ks();
    let ofd = ks.new_ofd();
    ks.add_pipe(
        fd,
        PipeRec::fifo(ofd, acc),
        flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL),
    );
    if let Some(en) = ks.entry(fd) {
        en.path = abs;
    }
    if wait {
        // A checkpoint taken while waiting records the FIFO open; resumed after a
        // recovery, this loop goes on in the new process with the descriptor reopened.
        while acc == libc::O_RDONLY && !pipe::writer_present(fd) {
            let _ = super::member::wait_ready(e.cx(), &mut [], 10);
        }
        // SAFETY: F_SETFL takes numbers only: the program's status flags.
        unsafe {
            sc(
                libc::SYS_fcntl,
                fd as usize,
                libc::F_SETFL as usize,
                (flags & SETFL_MASK) as usize,
            )
        };
    }
    r
}

/// `mknodat(2)` (and `mknod`; `mkfifo` is `mknodat` of a FIFO): a FIFO or a regular file
/// is made like a file the program creates, with a creation record in the file undo log
/// (a rollback removes it again); device and socket nodes are refused.
///
/// # Safety
/// `path` is a NUL-terminated string.
pub(super) unsafe fn sys_mknodat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_uint,
    dev: u64,
) -> isize {
    // SAFETY: a raw mknodat with the caller's arguments (a C string, numbers).
    let raw = || unsafe {
        sc4(
            libc::SYS_mknodat,
            dirfd as usize,
            path as usize,
            mode as usize,
            dev as usize,
        )
    };
    if !active() {
        return raw();
    }
    let kind = mode & libc::S_IFMT;
    if kind != libc::S_IFIFO && kind != libc::S_IFREG && kind != 0 {
        return super::trap::refuse_named(
            "mknod of a device or socket node (only FIFOs and regular files are recovered)",
            libc::SYS_mknodat,
        );
    }
    let mut e = Entry::enter();
    // SAFETY: the caller passes a C string.
    if let Err(er) = log_made(e.cx(), dirfd, unsafe { cbytes(path) }, R_CREATE) {
        return -(er as isize);
    }
    raw()
}

/// `pipe2(2)` (and `pipe`): an anonymous pipe of this process (a self-pipe, as event
/// loops use; child processes are refused, so both ends stay in it): recorded
/// ([`PipeRec::anon`]), its bytes captured at each checkpoint, made again at recovery at
/// the same descriptors with its flags and bytes (`kstate::pipe`). Flags other than
/// `O_NONBLOCK` and `O_CLOEXEC` (packet mode, notification pipes) are refused.
///
/// # Safety
/// `fds` is writable for two descriptors.
pub(super) unsafe fn sys_pipe2(fds: *mut c_int, flags: c_int) -> isize {
    // SAFETY: pipe2 writes two descriptors into the program's array.
    let raw = || unsafe { sc(libc::SYS_pipe2, fds as usize, flags as usize, 0) };
    if !active() {
        return raw();
    }
    if flags & !PIPE2_FLAGS != 0 {
        return super::trap::refuse_named(
            "pipe2 with flags other than O_NONBLOCK and O_CLOEXEC",
            libc::SYS_pipe2,
        );
    }
    let r = raw();
    if r == 0 {
        // SAFETY: the call succeeded: it wrote two descriptors at fds.
        let (rd, wr) = unsafe { (*fds, *fds.add(1)) };
        let mut e = Entry::enter();
        let ks = e.cx().ks();
        let (ro, wo) = (ks.new_ofd(), ks.new_ofd());
        ks.add_pipe(rd, PipeRec::anon(ro, true, wo), libc::O_RDONLY | flags);
        ks.add_pipe(wr, PipeRec::anon(wo, false, ro), libc::O_WRONLY | flags);
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

/// `old`'s record, copied to `new` (or cleared there), which now shares `old`'s open file
/// description; `cloexec`: the new descriptor's close-on-exec flag (its own, not shared).
/// Whatever `new` referred to before was closed by the call.
fn dup_entry(cx: &mut Ctx, old: c_int, new: c_int, cloexec: bool) {
    let ks = cx.ks();
    ks.closing(new);
    let mut e = ks.entry_ref(old).cloned();
    if let Some(e) = &mut e {
        if e.ofd == 0 && e.epoll.is_none() {
            // An inherited descriptor: the two numbers share it from now on.
            let id = ks.new_ofd();
            e.ofd = id;
            if let Some(o) = ks.entry(old) {
                o.ofd = id;
            }
        }
        e.flags = if cloexec {
            e.flags | libc::O_CLOEXEC
        } else {
            e.flags & !libc::O_CLOEXEC
        };
    }
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
    // SAFETY: the caller passes a C string.
    if let Err(er) = log_made(e.cx(), dirfd, unsafe { cbytes(path) }, R_MKDIR) {
        return -(er as isize);
    }
    raw()
}

/// Before the program makes `path` (relative to `dirfd`): a record of kind `kind`
/// (`R_CREATE`, `R_MKDIR`) in the file undo log, so that a rollback removes it again,
/// unless something is there already (then the call fails or changes nothing).
fn log_made(cx: &mut Ctx, dirfd: c_int, path: &[u8], kind: u32) -> Result<(), i32> {
    let abs = kstate::absolutize(&cx.ks().cwd, dirfd, path);
    if kstate::stat_path(&abs).is_some() {
        return Ok(());
    }
    undo(
        cx,
        &UndoRec {
            kind,
            path: abs,
            path2: Vec::new(),
            offset: 0,
            old_size: 0,
            data: Vec::new(),
        },
    )
}

/// `close(2)`.
pub(super) fn sys_close(fd: c_int) -> isize {
    if active() {
        let mut e = Entry::enter();
        let ks = e.cx().ks();
        ks.closing(fd);
        ks.set_entry(fd, None);
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
            dup_entry(e.cx(), fd, n as c_int, false);
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
        dup_entry(e.cx(), fd, to, flags & libc::O_CLOEXEC != 0);
    }
    r
}

/// Status flags `F_SETFL` can change (the rest of `flags` is the access mode and the
/// open-time flags).
const SETFL_MASK: c_int =
    libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;

/// `fcntl(2)`: `F_DUPFD` and `F_DUPFD_CLOEXEC` are recorded like `dup`, `F_SETFD` and
/// `F_SETFL` in the descriptor's record, record locks on the program's own files as
/// [`kstate::LockRec`]s (re-taken on recovery); queries pass; every other command that
/// changes something (`F_SETOWN`, `F_SETSIG`, `F_SETLEASE`, `F_NOTIFY`, seals, pipe
/// sizes, locks on files that are not the program's) is refused with a message.
///
/// # Safety
/// `arg` is what `cmd` expects (an integer, or a valid pointer).
pub(super) unsafe fn sys_fcntl(fd: c_int, cmd: c_int, arg: usize) -> isize {
    // SAFETY: fcntl with the caller's (integer or pointer) argument, as its C contract
    // has it.
    let raw = || unsafe { sc(libc::SYS_fcntl, fd as usize, cmd as usize, arg) };
    if !active() {
        return raw();
    }
    match cmd {
        libc::F_GETFD
        | libc::F_GETFL
        | libc::F_GETLK
        | libc::F_OFD_GETLK
        | libc::F_GETOWN
        | 16 /* F_GETOWN_EX */
        | 11 /* F_GETSIG */
        | libc::F_GETLEASE
        | libc::F_GETPIPE_SZ
        | libc::F_GET_SEALS => raw(),
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let r = raw();
            if let Ok(n) = check(r) {
                let mut e = Entry::enter();
                dup_entry(e.cx(), fd, n as c_int, cmd == libc::F_DUPFD_CLOEXEC);
            }
            r
        }
        libc::F_SETFD => {
            let r = raw();
            if r >= 0 {
                let mut e = Entry::enter();
                if let Some(en) = e.cx().ks().entry(fd) {
                    en.flags = if arg as c_int & libc::FD_CLOEXEC != 0 {
                        en.flags | libc::O_CLOEXEC
                    } else {
                        en.flags & !libc::O_CLOEXEC
                    };
                }
            }
            r
        }
        libc::F_SETFL => {
            let r = raw();
            if r >= 0 {
                let mut e = Entry::enter();
                let ks = e.cx().ks();
                if ks.entry_ref(fd).is_none() {
                    // An inherited descriptor (a terminal, a pipe): its flags are state now.
                    ks.set_entry(fd, Some(FdEntry::inherited(false)));
                }
                let ofd = ks.entry_ref(fd).map_or(0, |en| en.ofd);
                let new = arg as c_int & SETFL_MASK;
                for (i, en) in ks.fds.iter_mut().enumerate() {
                    let Some(en) = en else { continue };
                    if i as c_int == fd || (ofd != 0 && en.ofd == ofd) {
                        en.flags = (en.flags & !SETFL_MASK) | new;
                        en.setfl = true;
                    }
                }
            }
            r
        }
        libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => {
            // SAFETY: the lock commands take a struct flock (fcntl's contract).
            unsafe { lock(fd, cmd, arg as *const libc::flock) }
        }
        _ => super::trap::refuse_named(
            "fcntl with a command that changes state Discount Checking does not record",
            libc::SYS_fcntl,
        ),
    }
}

/// `fcntl`'s record locks: on one of the program's own files, performed and recorded (the
/// range made absolute now); on anything else refused.
///
/// # Safety
/// `fl` points at a `struct flock`.
unsafe fn lock(fd: c_int, cmd: c_int, fl: *const libc::flock) -> isize {
    let mut e = Entry::enter();
    let cx = e.cx();
    let Some(path) = cx
        .ks()
        .entry_ref(fd)
        .filter(|en| en.owned)
        .map(|en| en.path.clone())
    else {
        return super::trap::refuse_named(
            "fcntl record lock on a descriptor that is not one of the program's files",
            libc::SYS_fcntl,
        );
    };
    if fl.is_null() {
        return -(libc::EFAULT as isize);
    }
    // SAFETY: a non-null struct flock (the caller's contract).
    let f = unsafe { *fl };
    let base = match f.l_whence as c_int {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => {
            // SAFETY: lseek(fd, 0, SEEK_CUR) only reads the offset.
            let r = unsafe { sc(libc::SYS_lseek, fd as usize, 0, libc::SEEK_CUR as usize) };
            r as i64
        }
        libc::SEEK_END => kstate::stat_fd(fd).map_or(0, |s| s.1 as i64),
        _ => return -(libc::EINVAL as isize),
    };
    // SAFETY: fcntl reads the caller's struct flock (as above).
    let r = unsafe { sc(libc::SYS_fcntl, fd as usize, cmd as usize, fl as usize) };
    if r < 0 {
        return r;
    }
    let s0 = base.saturating_add(f.l_start);
    let (start, end) = match f.l_len {
        0 => (s0, i64::MAX),
        l if l > 0 => (s0, s0.saturating_add(l)),
        l => (s0.saturating_add(l), s0),
    };
    cx.ks().lock_op(kstate::LockRec {
        fd,
        path,
        ofd_lock: cmd == libc::F_OFD_SETLK || cmd == libc::F_OFD_SETLKW,
        kind: f.l_type,
        start,
        end,
    });
    r
}

/// `flock(2)`: on one of the program's own files, performed and recorded on its open file
/// description (re-taken on recovery); on anything else refused.
pub(super) fn sys_flock(fd: c_int, op: c_int) -> isize {
    // SAFETY: flock takes numbers only.
    let raw = || unsafe { sc(libc::SYS_flock, fd as usize, op as usize, 0) };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let ks = e.cx().ks();
    if !ks.is_owned(fd) {
        return super::trap::refuse_named(
            "flock on a descriptor that is not one of the program's files",
            libc::SYS_flock,
        );
    }
    let r = raw();
    if r >= 0 {
        let held = match op & !libc::LOCK_NB {
            libc::LOCK_UN => 0,
            k => k,
        };
        let ofd = ks.entry_ref(fd).map_or(0, |en| en.ofd);
        for (i, en) in ks.fds.iter_mut().enumerate() {
            let Some(en) = en else { continue };
            if i as c_int == fd || (ofd != 0 && en.ofd == ofd) {
                en.flock = held;
            }
        }
    }
    r
}

/// `epoll_create1(2)` (and `epoll_create`): the instance is recorded, to be made again at
/// its number on recovery.
pub(super) fn sys_epoll_create1(flags: c_int) -> isize {
    // SAFETY: epoll_create1 takes a flag.
    let r = unsafe { sc(libc::SYS_epoll_create1, flags as usize, 0, 0) };
    if active() {
        if let Ok(fd) = check(r) {
            let mut e = Entry::enter();
            let cloexec = if flags & libc::EPOLL_CLOEXEC != 0 {
                libc::O_CLOEXEC
            } else {
                0
            };
            e.cx().ks().set_entry(
                fd as c_int,
                Some(FdEntry {
                    flags: cloexec,
                    epoll: Some(Vec::new()),
                    ..FdEntry::inherited(false)
                }),
            );
        }
    }
    r
}

/// `epoll_ctl(2)`: registrations in a recorded instance are recorded; an instance Discount
/// Checking did not see made is refused.
///
/// # Safety
/// `ev` is null or points at an `epoll_event` (the call's contract).
pub(super) unsafe fn sys_epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut libc::epoll_event,
) -> isize {
    // SAFETY: epoll_ctl with the caller's arguments.
    let raw = || unsafe {
        sc4(
            libc::SYS_epoll_ctl,
            epfd as usize,
            op as usize,
            fd as usize,
            ev as usize,
        )
    };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let ks = e.cx().ks();
    if ks.entry_ref(epfd).is_none_or(|en| en.epoll.is_none()) {
        return super::trap::refuse_named(
            "epoll_ctl on an epoll instance Discount Checking did not record",
            libc::SYS_epoll_ctl,
        );
    }
    let r = raw();
    if r < 0 {
        return r;
    }
    let (events, data) = if ev.is_null() {
        (0, 0)
    } else {
        // SAFETY: ADD and MOD read an epoll_event (the call succeeded, so it is valid).
        unsafe { ((*ev).events, (*ev).u64) }
    };
    if let Some(regs) = ks.entry(epfd).and_then(|en| en.epoll.as_mut()) {
        regs.retain(|x| x.0 != fd);
        if op != libc::EPOLL_CTL_DEL {
            regs.push((fd, events, data));
        }
    }
    r
}

/// `umask(2)`: recorded, set again on recovery.
pub(super) fn sys_umask(mask: c_uint) -> isize {
    // SAFETY: umask takes a number.
    let r = unsafe { sc(libc::SYS_umask, mask as usize, 0, 0) };
    if active() {
        let mut e = Entry::enter();
        e.cx().ks().umask = Some(mask & 0o777);
    }
    r
}

/// `fchmodat(2)` (and `chmod`, `fchmod`: `path` null means descriptor `dirfd` itself):
/// the old mode is logged first, so a rollback puts it back.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
pub(super) unsafe fn sys_fchmodat(dirfd: c_int, path: *const c_char, mode: c_uint) -> isize {
    // SAFETY: fchmod/fchmodat with the caller's arguments.
    let raw = || unsafe {
        if path.is_null() {
            sc(libc::SYS_fchmod, dirfd as usize, mode as usize, 0)
        } else {
            sc4(
                libc::SYS_fchmodat,
                dirfd as usize,
                path as usize,
                mode as usize,
                0,
            )
        }
    };
    if !active() {
        return raw();
    }
    let mut e = Entry::enter();
    let cx = e.cx();
    let abs = if path.is_null() {
        match cx.ks().entry_ref(dirfd).filter(|en| !en.path.is_empty()) {
            Some(en) => en.path.clone(),
            None => {
                return super::trap::refuse_named(
                    "fchmod of a descriptor Discount Checking did not see opened",
                    libc::SYS_fchmod,
                )
            }
        }
    } else {
        // SAFETY: the caller passes a C string.
        kstate::absolutize(&cx.ks().cwd, dirfd, unsafe { cbytes(path) })
    };
    if let Some(old) = kstate::mode_of(&abs) {
        let rec = UndoRec {
            kind: kstate::R_CHMOD,
            path: abs,
            path2: Vec::new(),
            offset: 0,
            old_size: old as u64,
            data: Vec::new(),
        };
        if let Err(er) = undo(cx, &rec) {
            return -(er as isize);
        }
    }
    raw()
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
    pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
        // SAFETY: the caller's array of two descriptors (pipe's contract).
        libc_ret(unsafe { sys_pipe2(fds, 0) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
        // SAFETY: the caller's array of two descriptors (pipe2's contract).
        libc_ret(unsafe { sys_pipe2(fds, flags) }) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn rename(from: *const c_char, to: *const c_char) -> c_int {
        // SAFETY: the caller passes two C strings.
        libc_ret(unsafe { sys_renameat2(libc::AT_FDCWD, from, libc::AT_FDCWD, to, 0) }) as c_int
    }
}
