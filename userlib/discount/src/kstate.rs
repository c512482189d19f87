//! Kernel state: recorded as the program changes it, redone on recovery (thesis 5.2.2).
//!
//! The records live in checkpointed memory (statics in `.bss` and the persistent heap), so
//! after recovery they describe the kernel state *as of the checkpoint*, and redoing them
//! rebuilds it:
//!
//! * **open files and offsets**: every descriptor the program opens on a path is recorded
//!   (absolute path, flags, mode); offsets are read with `lseek` just before each
//!   checkpoint (so `dup`ed descriptors and `O_APPEND` are right without tracking every
//!   read). Recovery reopens each file at the same descriptor number and seeks.
//!   Descriptors the program inherited (stdin, stdout, stderr) are not reopened; if stdin
//!   is a regular file its offset is restored.
//! * **file data**: the program's own files are part of its state, so writes to them are
//!   undone on recovery. Before a write, truncation, creation, unlink or rename, a record
//!   with the before-image goes into the *file undo log* in the control segment (not
//!   rolled back; emptied atomically by each checkpoint). Extending a file logs only the
//!   old size. Recovery replays the log newest first.
//! * **delayed unlink**: `unlink` renames the file into `<dir>/grave/` (logged), so a
//!   rollback can bring it back and open descriptors can be reopened; it is deleted for
//!   real once a checkpoint has committed the unlink and no descriptor refers to it.
//! * **signal handlers** (`sigaction`, `signal`): recorded and reinstalled; the mask is
//!   saved at every checkpoint. Program handlers run through a wrapper (on the alternate
//!   stack) that reports the delivery as a non-deterministic event.
//! * **interval timers** (`setitimer`, `alarm`): recorded and re-armed with the time that
//!   was left at the checkpoint.
//! * **`mprotect`** calls: recorded and redone.
//! * **working directory** (`chdir`) and **umask**: recorded and restored.
//! * **shared offsets**: descriptors made by `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD)` share
//!   one open file description with their original (one offset, one set of status
//!   flags); each open gets an id ([`FdEntry::ofd`]) that its duplicates keep, and
//!   recovery opens the file once and duplicates it onto the other numbers, so they share
//!   the offset again instead of being independent opens.
//! * **descriptor flags**: `fcntl(F_SETFL)` (O_APPEND, O_NONBLOCK, ...) is recorded in the
//!   entry's flags of every descriptor of that open file description and redone on
//!   recovery (on inherited descriptors too: a terminal set non-blocking); `F_SETFD`
//!   (close-on-exec) per descriptor.
//! * **locks** on the program's own files: `fcntl` record locks (`F_SETLK`, `F_SETLKW`,
//!   `F_OFD_SETLK`, ...) are kept as the list of lock operations that still matter
//!   ([`LockRec`]; an operation whose range a later one covers is dropped), `flock` per
//!   open file description; recovery re-takes them without waiting, and fails with a
//!   message naming the file if another process holds one meanwhile.
//! * **terminal settings** (thesis 6.1: a full-screen program comes back in the mode it
//!   was in): the `termios` the program set with `ioctl(TCSETS/TCSETSW/TCSETSF)` (what
//!   `tcsetattr` does) on each descriptor, redone in the order set on the *new* run's
//!   terminal at that descriptor. Window-size and mode queries change nothing.
//! * **epoll instances**: the instance and its registrations (`epoll_ctl`) are rebuilt
//!   at the same descriptor number; waiting on one is a non-deterministic event.
//! * **datagram sockets** (UDP, `AF_UNIX` datagram; [`sock`]): made again at the same
//!   numbers, bound to the same name (the port the kernel chose, for a port 0),
//!   connected to the same peer, with the options and the shutdown the program gave them.
//! * **pipes and FIFOs** ([`pipe`]): a FIFO opened by path is opened again at the same
//!   numbers with the same flags (for a member of a computation after its join, with the
//!   bytes a round drained from it kept for its reads); an anonymous pipe of the process
//!   (`pipe`, `pipe2`) is made again with the bytes it held at the checkpoint.
//!
//! Discount Checking's own descriptors are moved to numbers >= [`FD_FLOOR`] so that the
//! program's descriptor numbers are free when recovery reopens them.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::sys::{self, check, sc, sc4, syscall6};

pub use crate::sys::{move_high, FD_FLOOR};

pub mod pipe;
pub mod sock;
pub use pipe::PipeRec;
pub use sock::{SockOpt, SockRec};

/// One descriptor the program opened (or inherited and we watch).
#[derive(Debug, Clone)]
pub struct FdEntry {
    /// Absolute path (for a file unlinked since, its place in the graveyard).
    pub path: Vec<u8>,
    /// Open flags, without `O_CREAT`, `O_TRUNC`, `O_EXCL`.
    pub flags: i32,
    /// Offset at the last checkpoint.
    pub offset: u64,
    /// A regular file the program opened: part of its state (writes undone, reads
    /// deterministic).
    pub owned: bool,
    /// Reopen on recovery (false for inherited descriptors).
    pub reopen: bool,
    /// Track and restore the offset.
    pub seekable: bool,
    /// The open file description: descriptors with the same non-zero id share one
    /// (duplicates), and recovery rebuilds them as one.
    pub ofd: u64,
    /// The status flags in `flags` were set with `F_SETFL`: redone on recovery (also
    /// for a descriptor that is not reopened).
    pub setfl: bool,
    /// The `flock` lock this open file description holds (`LOCK_SH`, `LOCK_EX`; 0: none).
    pub flock: i32,
    /// An epoll instance: its registrations (target descriptor, events, data).
    pub epoll: Option<Vec<(i32, u32, u64)>>,
}

impl FdEntry {
    /// A descriptor the program inherited (not reopened on recovery; `seekable`: its
    /// offset is restored).
    pub fn inherited(seekable: bool) -> FdEntry {
        FdEntry {
            path: Vec::new(),
            flags: 0,
            offset: 0,
            owned: false,
            reopen: false,
            seekable,
            ofd: 0,
            setfl: false,
            flock: 0,
            epoll: None,
        }
    }
}

/// One `fcntl` record-lock operation on one of the program's files that still matters
/// (replayed in order on recovery; thesis 5.2.2's "kernel state the program changes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRec {
    /// The descriptor it was taken through (open whenever the lock lives: closing any
    /// descriptor of the file releases a process's POSIX locks).
    pub fd: i32,
    /// The file (for the close rule and messages).
    pub path: Vec<u8>,
    /// An open-file-description lock (`F_OFD_SETLK`), else a process (POSIX) lock.
    pub ofd_lock: bool,
    /// `F_RDLCK`, `F_WRLCK`, `F_UNLCK`.
    pub kind: i16,
    /// First byte.
    pub start: i64,
    /// One past the last byte (`i64::MAX`: to the end of the file, however long).
    pub end: i64,
}

/// The terminal settings the program gave one descriptor (the kernel's `struct termios`,
/// 36 bytes: what `TCSETS` reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermRec {
    /// The descriptor.
    pub fd: i32,
    /// Order of setting (redone oldest first).
    pub seq: u64,
    /// The kernel `struct termios` bytes.
    pub raw: [u8; TERMIOS_LEN],
}

/// Size of the kernel's `struct termios` on x86-64 (4 flag words, `c_line`, 19 `c_cc`).
pub const TERMIOS_LEN: usize = 36;

/// Recorded interval timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ITimer {
    /// Interval (µs).
    pub interval_us: u64,
    /// First expiry after `set_ns` (µs); 0 = disarmed.
    pub value_us: u64,
    /// When it was set (CLOCK_MONOTONIC ns).
    pub set_ns: u64,
}

/// Kernel-state records (checkpointed memory).
#[derive(Debug)]
pub struct KState {
    /// Descriptor table, indexed by fd.
    pub fds: Vec<Option<FdEntry>>,
    /// ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF.
    pub itimers: [ITimer; 3],
    /// `mprotect` calls: (addr, len, prot).
    pub prots: Vec<(usize, usize, i32)>,
    /// Working directory.
    pub cwd: Vec<u8>,
    /// Unlinked files kept in the graveyard.
    pub graves: Vec<Vec<u8>>,
    /// Graveyard name counter.
    pub grave_seq: u64,
    /// The graveyard directory.
    pub grave_dir: Vec<u8>,
    /// Last open-file-description id handed out.
    pub next_ofd: u64,
    /// Record-lock operations that still matter, oldest first.
    pub locks: Vec<LockRec>,
    /// Terminal settings per descriptor (the latest for each).
    pub termios: Vec<TermRec>,
    /// Sequence of terminal settings.
    pub term_seq: u64,
    /// The umask the program set (None: never set).
    pub umask: Option<u32>,
    /// Datagram sockets, one per open file description ([`sock`]).
    pub socks: Vec<SockRec>,
    /// Pipe ends and FIFOs, one per open file description ([`pipe`]).
    pub pipes: Vec<PipeRec>,
}

impl KState {
    /// No records (the initial value of the one instance, a static in checkpointed
    /// memory owned by [`crate::ckpt::Ctx`]).
    pub(crate) const fn new() -> KState {
        KState {
            fds: Vec::new(),
            itimers: [ITimer {
                interval_us: 0,
                value_us: 0,
                set_ns: 0,
            }; 3],
            prots: Vec::new(),
            cwd: Vec::new(),
            graves: Vec::new(),
            grave_seq: 0,
            grave_dir: Vec::new(),
            next_ofd: 0,
            locks: Vec::new(),
            termios: Vec::new(),
            term_seq: 0,
            umask: None,
            socks: Vec::new(),
            pipes: Vec::new(),
        }
    }
}

/// The program's view of one signal's disposition (checkpointed memory).
pub struct AppSig {
    /// Handler (SIG_DFL = 0, SIG_IGN = 1, or a function).
    pub handler: AtomicUsize,
    /// SA_* flags as the program gave them.
    pub flags: AtomicU64,
    /// Mask as the program gave it.
    pub mask: AtomicU64,
    /// The program has set this signal.
    pub set: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const APPSIG: AppSig = AppSig {
    handler: AtomicUsize::new(0),
    flags: AtomicU64::new(0),
    mask: AtomicU64::new(0),
    set: AtomicBool::new(false),
};
/// Signal table (index = signal number).
pub static SIGS: [AppSig; 65] = [APPSIG; 65];

// ---------------------------------------------------------------------------------------
// Helpers

fn cstr(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.push(0);
    v
}

/// `newfstatat(AT_FDCWD, p, flags)`: the stat of a path (`None` if the call fails).
fn stat_at(p: &[u8], flags: i32) -> Option<libc::stat> {
    let c = cstr(p);
    // SAFETY: a zeroed stat is a valid value of the plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path and st a live stat newfstatat writes once.
    let r = unsafe {
        sc4(
            libc::SYS_newfstatat,
            libc::AT_FDCWD as usize,
            c.as_ptr() as usize,
            &mut st as *mut _ as usize,
            flags as usize,
        )
    };
    check(r).ok()?;
    Some(st)
}

/// `stat` of a path: (is regular, size, is dir); `None` if it does not exist.
pub fn stat_path(p: &[u8]) -> Option<(bool, u64, bool)> {
    let st = stat_at(p, 0)?;
    let fmt = st.st_mode & libc::S_IFMT;
    Some((
        fmt == libc::S_IFREG,
        st.st_size as u64,
        fmt == libc::S_IFDIR,
    ))
}

/// Whether `p` names a FIFO (following symlinks, as `open` does).
pub fn is_fifo_path(p: &[u8]) -> bool {
    stat_at(p, 0).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

/// The permission bits of a path, not following a final symlink (`None` if it does not
/// exist).
pub fn mode_of(p: &[u8]) -> Option<u32> {
    stat_at(p, libc::AT_SYMLINK_NOFOLLOW).map(|st| st.st_mode & 0o7777)
}

/// `fstat`: (is regular, size).
pub fn stat_fd(fd: i32) -> Option<(bool, u64)> {
    // SAFETY: a zeroed stat is a valid value of the plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid output buffer.
    let r = unsafe { sc(libc::SYS_fstat, fd as usize, &mut st as *mut _ as usize, 0) };
    check(r).ok()?;
    Some((
        st.st_mode & libc::S_IFMT == libc::S_IFREG,
        st.st_size as u64,
    ))
}

fn getcwd_raw() -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf is writable for its length.
    let r = unsafe { sc(libc::SYS_getcwd, buf.as_mut_ptr() as usize, buf.len(), 0) };
    match check(r) {
        Ok(n) if n > 0 => {
            buf.truncate(n - 1);
            buf
        }
        _ => b"/".to_vec(),
    }
}

/// The absolute form of `path` relative to `dirfd` (`cwd`: the recorded working
/// directory).
pub fn absolutize(cwd: &[u8], dirfd: i32, path: &[u8]) -> Vec<u8> {
    if path.first() == Some(&b'/') {
        return path.to_vec();
    }
    let mut base = if dirfd == libc::AT_FDCWD {
        cwd.to_vec()
    } else {
        let link = cstr(format!("/proc/self/fd/{dirfd}").as_bytes());
        let mut buf = vec![0u8; 4096];
        // SAFETY: readlinkat into our buffer.
        let r = unsafe {
            sc4(
                libc::SYS_readlinkat,
                libc::AT_FDCWD as usize,
                link.as_ptr() as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
            )
        };
        match check(r) {
            Ok(n) => {
                buf.truncate(n);
                buf
            }
            Err(_) => cwd.to_vec(),
        }
    };
    if base.is_empty() {
        base = getcwd_raw();
    }
    if base.last() != Some(&b'/') {
        base.push(b'/');
    }
    base.extend_from_slice(path);
    base
}

impl KState {
    /// The entry for `fd`.
    pub fn entry(&mut self, fd: i32) -> Option<&mut FdEntry> {
        let i = usize::try_from(fd).ok()?;
        self.fds.get_mut(i).and_then(|e| e.as_mut())
    }

    /// The entry for `fd`, to read.
    pub fn entry_ref(&self, fd: i32) -> Option<&FdEntry> {
        let i = usize::try_from(fd).ok()?;
        self.fds.get(i).and_then(|e| e.as_ref())
    }

    /// Records an entry.
    pub fn set_entry(&mut self, fd: i32, e: Option<FdEntry>) {
        if !(0..FD_FLOOR).contains(&fd) {
            return;
        }
        let t = &mut self.fds;
        let i = fd as usize;
        if t.len() <= i {
            if e.is_none() {
                return;
            }
            t.resize(i + 1, None);
        }
        t[i] = e;
    }

    /// Whether `fd` is one of the program's own regular files.
    pub fn is_owned(&self, fd: i32) -> bool {
        self.entry_ref(fd).is_some_and(|e| e.owned)
    }
}

// ---------------------------------------------------------------------------------------
// The file undo log

const REC_HDR: usize = 40;
/// Restore `data` at `offset`, then truncate to `old_size`.
pub const R_WRITE: u32 = 1;
/// The file did not exist: remove it.
pub const R_CREATE: u32 = 2;
/// The file was moved to the graveyard (path2): move it back.
pub const R_UNLINK: u32 = 3;
/// The file was renamed from path to path2: rename it back.
pub const R_RENAME: u32 = 4;
/// The directory did not exist: remove it.
pub const R_MKDIR: u32 = 5;
/// The (empty) directory was removed: make it again, with mode `old_size`.
pub const R_RMDIR: u32 = 6;
/// The permissions were changed: set them back to `old_size`.
pub const R_CHMOD: u32 = 7;

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoRec {
    /// R_*.
    pub kind: u32,
    /// Path.
    pub path: Vec<u8>,
    /// Second path (graveyard, rename target).
    pub path2: Vec<u8>,
    /// Offset of `data`.
    pub offset: u64,
    /// Size before the change.
    pub old_size: u64,
    /// Before-image.
    pub data: Vec<u8>,
}

fn align8(x: usize) -> usize {
    (x + 7) & !7
}

/// Encodes a record into `out`.
pub fn encode_rec(r: &UndoRec, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&r.kind.to_le_bytes());
    out.extend_from_slice(&(r.path.len() as u32).to_le_bytes());
    out.extend_from_slice(&(r.path2.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&r.offset.to_le_bytes());
    out.extend_from_slice(&r.old_size.to_le_bytes());
    out.extend_from_slice(&(r.data.len() as u64).to_le_bytes());
    out.extend_from_slice(&r.path);
    out.extend_from_slice(&r.path2);
    out.extend_from_slice(&r.data);
    out.resize(start + align8(out.len() - start), 0);
}

/// Decodes all records of a log area.
pub fn decode_recs(area: &[u8]) -> Result<Vec<UndoRec>> {
    let mut out = Vec::new();
    let mut at = 0;
    let bad = || Error::Corrupt("file undo log".into());
    while at < area.len() {
        if area.len() - at < REC_HDR {
            return Err(bad());
        }
        let h = &area[at..at + REC_HDR];
        let u32_ = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as usize;
        let u64_ = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let (kind, pl, p2l) = (u32_(0) as u32, u32_(4), u32_(8));
        let (offset, old_size, dl) = (u64_(16), u64_(24), u64_(32) as usize);
        let body = REC_HDR + pl + p2l + dl;
        if !(R_WRITE..=R_CHMOD).contains(&kind) || at + body > area.len() {
            return Err(bad());
        }
        let b = &area[at + REC_HDR..at + body];
        out.push(UndoRec {
            kind,
            path: b[..pl].to_vec(),
            path2: b[pl..pl + p2l].to_vec(),
            offset,
            old_size,
            data: b[pl + p2l..].to_vec(),
        });
        at += align8(body);
    }
    Ok(out)
}

/// Why a record could not be appended to the file undo log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UndoFull {
    /// Not now: a checkpoint empties the log, then it fits.
    #[error("the file undo log is full until the next checkpoint")]
    UntilCheckpoint,
    /// Never: the record is bigger than the whole log.
    #[error("the record is bigger than the file undo log")]
    TooBig,
}

impl UndoFull {
    /// The errno the program's call fails with when the record cannot be logged.
    pub fn errno(self) -> i32 {
        libc::ENOSPC
    }
}

/// Appends a record to `img`'s file undo log (before the change it undoes). When the log
/// is full the caller checkpoints (which empties it) and tries again.
pub fn undo_append(img: &crate::image::Image, r: &UndoRec) -> std::result::Result<(), UndoFull> {
    let mut buf = Vec::new();
    encode_rec(r, &mut buf);
    let (area, cap) = img.fundo_area();
    if buf.len() > cap {
        return Err(UndoFull::TooBig);
    }
    let h = img.header();
    // SAFETY: the header lies in the control member, mapped while `img` lives.
    let end = unsafe { (*h).fundo_end } as usize;
    if end + buf.len() > cap {
        return Err(UndoFull::UntilCheckpoint);
    }
    // SAFETY: [end, end+len) lies inside the area (checked); no transaction is active
    // (wrappers never run inside a checkpoint), so these are plain permanent stores; the
    // record is complete before fundo_end covers it.
    unsafe {
        std::ptr::copy_nonoverlapping(buf.as_ptr(), area.add(end), buf.len());
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        std::ptr::write_volatile(&mut (*h).fundo_end, (end + buf.len()) as u64);
    }
    Ok(())
}

fn raw_open(p: &[u8], flags: i32, mode: u32) -> std::result::Result<i32, i32> {
    let c = cstr(p);
    // SAFETY: c is NUL-terminated.
    check(unsafe {
        sc4(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            c.as_ptr() as usize,
            (flags | libc::O_CLOEXEC) as usize,
            mode as usize,
        )
    })
    .map(|f| f as i32)
}

fn raw_close(fd: i32) {
    // SAFETY: closing a descriptor we opened.
    unsafe { sc(libc::SYS_close, fd as usize, 0, 0) };
}

pub(crate) fn raw_rename(a: &[u8], b: &[u8]) -> std::result::Result<(), i32> {
    let (ca, cb) = (cstr(a), cstr(b));
    // SAFETY: NUL-terminated paths.
    check(unsafe {
        syscall6(
            libc::SYS_renameat2,
            [
                libc::AT_FDCWD as usize,
                ca.as_ptr() as usize,
                libc::AT_FDCWD as usize,
                cb.as_ptr() as usize,
                0,
                0,
            ],
        )
    })
    .map(|_| ())
}

fn raw_unlink(a: &[u8]) -> std::result::Result<(), i32> {
    let ca = cstr(a);
    // SAFETY: NUL-terminated path.
    check(unsafe {
        sc(
            libc::SYS_unlinkat,
            libc::AT_FDCWD as usize,
            ca.as_ptr() as usize,
            0,
        )
    })
    .map(|_| ())
}

/// Reads `[off, off+len)` of `fd` (fewer bytes at end of file).
pub fn pread_all(fd: i32, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut got = 0;
    while got < len {
        // SAFETY: v is writable from got for len-got bytes.
        let r = unsafe {
            sc4(
                libc::SYS_pread64,
                fd as usize,
                v.as_mut_ptr() as usize + got,
                len - got,
                off as usize + got,
            )
        };
        match check(r) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    v.truncate(got);
    v
}

/// Reads up to `size` bytes of a file by path (raw calls).
pub fn read_file_raw(p: &[u8], size: u64) -> Vec<u8> {
    match raw_open(p, libc::O_RDONLY, 0) {
        Ok(fd) => {
            let v = pread_all(fd, 0, size as usize);
            raw_close(fd);
            v
        }
        Err(_) => Vec::new(),
    }
}

fn apply_undo(r: &UndoRec) {
    match r.kind {
        R_WRITE => {
            let Ok(fd) = raw_open(&r.path, libc::O_WRONLY, 0) else {
                return;
            };
            let mut done = 0;
            while done < r.data.len() {
                // SAFETY: data is readable.
                let n = unsafe {
                    sc4(
                        libc::SYS_pwrite64,
                        fd as usize,
                        r.data.as_ptr() as usize + done,
                        r.data.len() - done,
                        r.offset as usize + done,
                    )
                };
                match check(n) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => done += n,
                }
            }
            // SAFETY: ftruncate on our descriptor.
            unsafe { sc(libc::SYS_ftruncate, fd as usize, r.old_size as usize, 0) };
            raw_close(fd);
        }
        R_CREATE => {
            let _ = raw_unlink(&r.path);
        }
        R_UNLINK if stat_path(&r.path2).is_some() => {
            let _ = raw_rename(&r.path2, &r.path);
        }
        R_RENAME => {
            let _ = raw_rename(&r.path2, &r.path);
        }
        R_MKDIR => {
            let c = cstr(&r.path);
            // SAFETY: NUL-terminated path.
            unsafe {
                sc(
                    libc::SYS_unlinkat,
                    libc::AT_FDCWD as usize,
                    c.as_ptr() as usize,
                    libc::AT_REMOVEDIR as usize,
                )
            };
        }
        R_CHMOD => {
            let c = cstr(&r.path);
            // SAFETY: NUL-terminated path.
            unsafe {
                sc4(
                    libc::SYS_fchmodat,
                    libc::AT_FDCWD as usize,
                    c.as_ptr() as usize,
                    r.old_size as usize,
                    0,
                )
            };
        }
        R_RMDIR => {
            let c = cstr(&r.path);
            // SAFETY: NUL-terminated path.
            unsafe {
                sc(
                    libc::SYS_mkdirat,
                    libc::AT_FDCWD as usize,
                    c.as_ptr() as usize,
                    r.old_size as usize,
                )
            };
        }
        _ => {}
    }
}

/// Recovery, step one: undo every file change made after the checkpoint (newest first),
/// then empty the log. Idempotent: a crash in the middle just replays again.
pub fn replay_file_undo(img: &crate::image::Image, _dir: &std::path::Path) -> Result<()> {
    let h = img.header();
    let (area, cap) = img.fundo_area();
    // SAFETY: header mapped.
    let end = (unsafe { (*h).fundo_end } as usize).min(cap);
    // SAFETY: the area is mapped for cap bytes.
    let bytes = unsafe { std::slice::from_raw_parts(area, end) };
    let recs = decode_recs(bytes)?;
    for r in recs.iter().rev() {
        apply_undo(r);
    }
    // SAFETY: plain permanent store (no transaction active).
    unsafe { std::ptr::write_volatile(&mut (*h).fundo_end, 0) };
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Lifecycle

impl KState {
    /// First run: records the working directory and the inherited regular files, makes
    /// the graveyard in the state directory `dir`.
    pub fn init(&mut self, dir: &std::path::Path) -> Result<()> {
        self.cwd = getcwd_raw();
        let g = dir.join("grave");
        std::fs::create_dir_all(&g).map_err(|e| Error::Io {
            what: "create graveyard",
            source: e,
        })?;
        let g = std::fs::canonicalize(&g).unwrap_or(g);
        self.grave_dir = g.as_os_str().as_bytes().to_vec();
        // Standard input read from a file: its offset is part of the state. (Output
        // descriptors are not: a restart may send them elsewhere, and writes to them are
        // visible events, not file state.)
        {
            let fd = 0;
            if let Some((true, _)) = stat_fd(fd) {
                self.set_entry(fd, Some(FdEntry::inherited(true)));
            }
        }
        Ok(())
    }

    /// Just before a checkpoint's memory is captured: the current offsets, and the bytes
    /// in the process's anonymous pipes ([`KState::capture_pipes`]).
    pub fn before_commit(&mut self) {
        self.capture_pipes();
        for (fd, e) in self.fds.iter_mut().enumerate() {
            if let Some(e) = e {
                if e.seekable {
                    // SAFETY: lseek(fd, 0, SEEK_CUR) only reads the offset.
                    let r = unsafe { sc(libc::SYS_lseek, fd, 0, libc::SEEK_CUR as usize) };
                    if let Ok(off) = check(r) {
                        if e.offset != off as u64 {
                            e.offset = off as u64;
                        }
                    }
                }
            }
        }
    }

    /// After a commit: unlinks that are now permanent and whose file nobody has open are
    /// carried out.
    pub fn after_commit(&mut self) {
        if self.graves.is_empty() {
            return;
        }
        let fds = &self.fds;
        self.graves.retain(|g| {
            let open = fds.iter().flatten().any(|e| &e.path == g);
            if !open {
                let _ = raw_unlink(g);
            }
            open
        });
    }

    /// At normal exit, once the image is marked finished (no recovery rolls the unlinks
    /// back any more): the delayed unlinks no commit has carried out yet are.
    pub fn at_exit(&mut self) {
        for g in self.graves.drain(..) {
            let _ = raw_unlink(&g);
        }
    }

    /// A fresh name in the graveyard for `path` (same file system if possible).
    pub fn grave_for(&mut self, path: &[u8]) -> Vec<u8> {
        self.grave_seq += 1;
        let base = path.rsplit(|&c| c == b'/').next().unwrap_or(b"f");
        let mut g = self.grave_dir.clone();
        g.extend_from_slice(format!("/{}.", self.grave_seq).as_bytes());
        g.extend_from_slice(base);
        g
    }

    /// A file moved from `path` to `grave`: descriptors open on it now refer to the
    /// grave, which is kept until the unlink is committed and nobody has it open.
    pub fn buried(&mut self, path: &[u8], grave: &[u8]) {
        self.renamed(path, grave);
        self.graves.push(grave.to_vec());
    }

    /// A file renamed from `from` to `to`: descriptors open on it follow.
    pub fn renamed(&mut self, from: &[u8], to: &[u8]) {
        for e in self.fds.iter_mut().flatten() {
            if e.path == from {
                e.path = to.to_vec();
            }
        }
        for l in &mut self.locks {
            if l.path == from {
                l.path = to.to_vec();
            }
        }
    }

    /// A fresh open-file-description id (for a descriptor the program opens).
    pub fn new_ofd(&mut self) -> u64 {
        self.next_ofd += 1;
        self.next_ofd
    }

    /// Whether another descriptor than `fd` shares `fd`'s open file description.
    fn ofd_shared(&self, fd: i32) -> bool {
        let Some(e) = self.entry_ref(fd) else {
            return false;
        };
        e.ofd != 0
            && self
                .fds
                .iter()
                .enumerate()
                .any(|(i, o)| i as i32 != fd && o.as_ref().is_some_and(|o| o.ofd == e.ofd))
    }

    /// Descriptor `fd` is about to be closed (by `close`, or by `dup2`/`dup3` onto it):
    /// what the kernel releases with it is forgotten too: the process's POSIX locks on
    /// the file (any descriptor's close releases them), and, if no other descriptor
    /// shares its open file description, its `flock` lock, its OFD locks and its
    /// registrations in epoll instances.
    pub fn closing(&mut self, fd: i32) {
        let Some(e) = self.entry_ref(fd) else {
            return;
        };
        let (path, ofd) = (e.path.clone(), e.ofd);
        let last = !self.ofd_shared(fd);
        if last && ofd != 0 {
            // The socket, pipe end or FIFO goes with its last descriptor.
            self.socks.retain(|s| s.ofd != ofd);
            self.pipe_closed(ofd);
        }
        let fds = &self.fds;
        let same_ofd = |l: &LockRec| {
            let of = |x: i32| {
                usize::try_from(x)
                    .ok()
                    .and_then(|i| fds.get(i))
                    .and_then(|o| o.as_ref())
                    .map(|o| o.ofd)
            };
            l.fd == fd || (of(l.fd).is_some() && of(l.fd) == of(fd) && of(fd) != Some(0))
        };
        let keep: Vec<bool> = self
            .locks
            .iter()
            .map(|l| {
                if l.ofd_lock {
                    !(last && same_ofd(l))
                } else {
                    path.is_empty() || l.path != path
                }
            })
            .collect();
        let mut k = keep.iter();
        self.locks.retain(|_| *k.next().unwrap_or(&true));
        if last {
            for o in self.fds.iter_mut().flatten() {
                if let Some(regs) = &mut o.epoll {
                    regs.retain(|r| r.0 != fd);
                }
            }
        }
    }

    /// Records a record-lock operation (`fcntl` `F_SETLK` family) already performed:
    /// earlier operations of the same owner on the same file that it covers no longer
    /// matter; an unlock that overlaps nothing recorded is not kept.
    pub fn lock_op(&mut self, rec: LockRec) {
        let ofd = |ks: &KState, fd: i32| ks.entry_ref(fd).map(|e| e.ofd);
        let same_owner = |ks: &KState, l: &LockRec| {
            l.path == rec.path
                && l.ofd_lock == rec.ofd_lock
                && (!rec.ofd_lock || ofd(ks, l.fd) == ofd(ks, rec.fd))
        };
        let covered: Vec<bool> = self
            .locks
            .iter()
            .map(|l| same_owner(self, l) && l.start >= rec.start && l.end <= rec.end)
            .collect();
        let mut c = covered.iter();
        self.locks.retain(|_| !*c.next().unwrap_or(&false));
        let overlaps = self
            .locks
            .iter()
            .any(|l| same_owner(self, l) && l.start < rec.end && rec.start < l.end);
        if rec.kind != libc::F_UNLCK as i16 || overlaps {
            self.locks.push(rec);
        }
    }

    /// Records the terminal settings the program gave `fd` (the latest per descriptor).
    pub fn set_termios(&mut self, fd: i32, raw: [u8; TERMIOS_LEN]) {
        self.term_seq += 1;
        let seq = self.term_seq;
        self.termios.retain(|t| t.fd != fd);
        self.termios.push(TermRec { fd, seq, raw });
    }

    /// Recovery: rebuild the kernel state from the restored records. `commit_ns` is when
    /// the resumed checkpoint was taken (timers are re-armed with what was left then);
    /// `reinstall_signal` installs the kernel disposition of a signal the program set
    /// (the interception layer's, see `ckpt::Hooks`).
    pub fn restore(&self, commit_ns: u64, reinstall_signal: fn(i32)) -> Result<()> {
        let k = self;
        if !k.cwd.is_empty() {
            let c = cstr(&k.cwd);
            // SAFETY: NUL-terminated path.
            unsafe { sc(libc::SYS_chdir, c.as_ptr() as usize, 0, 0) };
        }
        if let Some(m) = k.umask {
            // SAFETY: umask takes a number.
            unsafe { sc(libc::SYS_umask, m as usize, 0, 0) };
        }
        k.restore_fds()?;
        // Graveyard: files not kept for an open descriptor are left over from committed
        // unlinks.
        if !k.grave_dir.is_empty() {
            let gd = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&k.grave_dir));
            if let Ok(rd) = std::fs::read_dir(&gd) {
                for f in rd.flatten() {
                    let p = f.path().as_os_str().as_bytes().to_vec();
                    if !k.graves.contains(&p) {
                        let _ = raw_unlink(&p);
                    }
                }
            }
        }
        // Handlers before timers, so that no timer signal meets a default disposition.
        for (sig, e) in SIGS.iter().enumerate().skip(1) {
            if e.set.load(Ordering::Relaxed) {
                reinstall_signal(sig as i32);
            }
        }
        // Timers: re-arm with what was left at the checkpoint.
        let ckpt_ns = commit_ns;
        for (which, t) in k.itimers.iter().enumerate() {
            if t.value_us == 0 {
                continue;
            }
            let elapsed = ckpt_ns.saturating_sub(t.set_ns) / 1000;
            let left = if elapsed < t.value_us {
                t.value_us - elapsed
            } else if t.interval_us > 0 {
                t.interval_us - (elapsed - t.value_us) % t.interval_us
            } else {
                1
            };
            let tv = |us: u64| libc::timeval {
                tv_sec: (us / 1_000_000) as libc::time_t,
                tv_usec: (us % 1_000_000) as libc::suseconds_t,
            };
            let it = libc::itimerval {
                it_interval: tv(t.interval_us),
                it_value: tv(left.max(1)),
            };
            // SAFETY: setitimer reads the itimerval.
            unsafe { sc(libc::SYS_setitimer, which, &it as *const _ as usize, 0) };
        }
        for &(a, l, p) in &k.prots {
            // SAFETY: redoing the program's own mprotect call.
            unsafe { sc(libc::SYS_mprotect, a, l, p as usize) };
        }
        k.restore_locks()?;
        k.restore_termios()
    }

    /// Recovery: the descriptors. Each open file description is opened once, at the
    /// lowest number that had it, and duplicated onto the others (so duplicates share one
    /// offset again); offsets are seeked, status flags set with `F_SETFL` redone (on
    /// inherited descriptors too), close-on-exec per descriptor; then the datagram
    /// sockets are made again, bound and connected ([`KState::restore_socks`]: a name
    /// that cannot be bound again fails recovery), the pipes and FIFOs
    /// ([`KState::restore_pipes`]; a member of a computation's FIFOs after its join), and
    /// epoll instances are made again at their numbers with their registrations.
    pub fn restore_fds(&self) -> Result<()> {
        let k = self;
        for (fd, e) in k.fds.iter().enumerate() {
            let Some(e) = e else { continue };
            if e.epoll.is_some() || k.is_sock_ofd(e.ofd) || k.is_pipe_ofd(e.ofd) {
                continue;
            }
            let cloexec = if e.flags & libc::O_CLOEXEC != 0 {
                libc::O_CLOEXEC
            } else {
                0
            };
            let fd = fd as i32;
            if e.reopen {
                let first = k.fds[..fd as usize].iter().position(|o| {
                    o.as_ref().is_some_and(|o| {
                        o.ofd != 0 && o.ofd == e.ofd && o.reopen && o.epoll.is_none()
                    })
                });
                if let Some(src) = first {
                    // A duplicate: the same open file description (and offset) again.
                    // SAFETY: dup3 onto the recorded number (ours are >= FD_FLOOR).
                    let r = unsafe { sc(libc::SYS_dup3, src, fd as usize, cloexec as usize) };
                    if let Err(errno) = check(r) {
                        crate::diag::diag(&format!(
                            "recovery: cannot duplicate fd {src} onto {fd}: errno {errno}"
                        ));
                    }
                    continue;
                }
                match raw_open(&e.path, e.flags & !libc::O_CLOEXEC, 0) {
                    Ok(n) => {
                        if n != fd {
                            // SAFETY: dup3 onto the recorded number (ours are >= FD_FLOOR).
                            unsafe {
                                sc(libc::SYS_dup3, n as usize, fd as usize, cloexec as usize)
                            };
                            raw_close(n);
                        } else if cloexec == 0 {
                            // SAFETY: clear FD_CLOEXEC on our own new descriptor.
                            unsafe { sc(libc::SYS_fcntl, fd as usize, libc::F_SETFD as usize, 0) };
                        }
                    }
                    Err(errno) => {
                        crate::diag::diag(&format!(
                            "recovery: cannot reopen {} as fd {fd}: errno {errno}",
                            String::from_utf8_lossy(&e.path)
                        ));
                        continue;
                    }
                }
            } else if e.setfl {
                // An inherited descriptor whose status flags the program changed.
                // SAFETY: fcntl(F_SETFL) takes numbers only.
                let r = unsafe {
                    sc(
                        libc::SYS_fcntl,
                        fd as usize,
                        libc::F_SETFL as usize,
                        e.flags as usize,
                    )
                };
                if let Err(errno) = check(r) {
                    crate::diag::diag(&format!(
                        "recovery: cannot set the status flags of fd {fd}: errno {errno}"
                    ));
                }
            }
            if e.seekable && e.flags & libc::O_APPEND == 0 && stat_fd(fd).is_some_and(|s| s.0) {
                // SAFETY: lseek on the program's descriptor.
                unsafe {
                    sc(
                        libc::SYS_lseek,
                        fd as usize,
                        e.offset as usize,
                        libc::SEEK_SET as usize,
                    )
                };
            }
        }
        k.restore_socks()?;
        k.restore_pipes()?;
        for (fd, e) in k.fds.iter().enumerate() {
            let Some(Some(regs)) = e.as_ref().map(|e| e.epoll.as_ref()) else {
                continue;
            };
            let cloexec = e.as_ref().map_or(0, |e| e.flags & libc::O_CLOEXEC);
            // SAFETY: epoll_create1 takes a flag.
            let n = match check(unsafe {
                sc(libc::SYS_epoll_create1, libc::EPOLL_CLOEXEC as usize, 0, 0)
            }) {
                Ok(n) => n,
                Err(errno) => {
                    crate::diag::diag(&format!(
                        "recovery: cannot make epoll instance {fd}: errno {errno}"
                    ));
                    continue;
                }
            };
            // SAFETY: dup3 onto the recorded number (ours are >= FD_FLOOR).
            unsafe { sc(libc::SYS_dup3, n, fd, cloexec as usize) };
            raw_close(n as i32);
            for &(t, events, data) in regs {
                if k.fifo_after_join(t) {
                    continue; // registered once it is open again (`reopen_fifos`)
                }
                let mut ev = libc::epoll_event { events, u64: data };
                // SAFETY: epoll_ctl reads one epoll_event from a live local.
                let r = unsafe {
                    sc4(
                        libc::SYS_epoll_ctl,
                        fd,
                        libc::EPOLL_CTL_ADD as usize,
                        t as usize,
                        &mut ev as *mut _ as usize,
                    )
                };
                if let Err(errno) = check(r) {
                    crate::diag::diag(&format!(
                        "recovery: cannot register fd {t} in epoll instance {fd}: errno {errno}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Recovery: the locks, re-taken without waiting (the crashed process's are gone with
    /// it). A lock another process took meanwhile cannot be given back to the program:
    /// recovery fails with a message naming the file.
    pub fn restore_locks(&self) -> Result<()> {
        for (fd, e) in self.fds.iter().enumerate() {
            let Some(e) = e else { continue };
            let dup_of_earlier = self.fds[..fd]
                .iter()
                .any(|o| o.as_ref().is_some_and(|o| o.ofd != 0 && o.ofd == e.ofd));
            if e.flock == 0 || dup_of_earlier {
                continue;
            }
            // SAFETY: flock takes numbers only.
            let r = unsafe { sc(libc::SYS_flock, fd, (e.flock | libc::LOCK_NB) as usize, 0) };
            if let Err(errno) = check(r) {
                return Err(Error::Restore(format!(
                    "flock of {} (fd {fd}): {} ({errno}); another process holds it now",
                    String::from_utf8_lossy(&e.path),
                    sys::errno_name(errno)
                )));
            }
        }
        for l in &self.locks {
            let fl = libc::flock {
                l_type: l.kind,
                l_whence: libc::SEEK_SET as i16,
                l_start: l.start,
                l_len: if l.end == i64::MAX {
                    0
                } else {
                    l.end - l.start
                },
                l_pid: 0,
            };
            let cmd = if l.ofd_lock {
                libc::F_OFD_SETLK
            } else {
                libc::F_SETLK
            };
            // SAFETY: fcntl reads one struct flock from a live local.
            let r = unsafe {
                sc(
                    libc::SYS_fcntl,
                    l.fd as usize,
                    cmd as usize,
                    &fl as *const _ as usize,
                )
            };
            if let Err(errno) = check(r) {
                return Err(Error::Restore(format!(
                    "record lock [{}, {}) of {} (fd {}): {} ({errno}); another process holds it now",
                    l.start,
                    if l.end == i64::MAX { "end".to_string() } else { l.end.to_string() },
                    String::from_utf8_lossy(&l.path),
                    l.fd,
                    sys::errno_name(errno)
                )));
            }
        }
        Ok(())
    }

    /// Recovery: the terminal settings, in the order the program set them, on the new
    /// run's terminal at the same descriptors (`TCSETS`: at once; nothing typed ahead is
    /// discarded). A descriptor that is no terminal now is reported, not ignored.
    pub fn restore_termios(&self) -> Result<()> {
        let mut t: Vec<&TermRec> = self.termios.iter().collect();
        t.sort_by_key(|t| t.seq);
        for r in t {
            // SAFETY: TCSETS reads a kernel struct termios (36 bytes) from the record.
            let res = unsafe {
                sc(
                    libc::SYS_ioctl,
                    r.fd as usize,
                    libc::TCSETS as usize,
                    r.raw.as_ptr() as usize,
                )
            };
            if let Err(errno) = check(res) {
                return Err(Error::Restore(format!(
                    "the terminal settings of fd {}: {} ({errno}) (run it again on a terminal)",
                    r.fd,
                    sys::errno_name(errno)
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_entry(path: &std::path::Path, flags: i32, offset: u64, ofd: u64) -> FdEntry {
        FdEntry {
            path: path.as_os_str().as_bytes().to_vec(),
            flags,
            offset,
            owned: true,
            reopen: true,
            seekable: true,
            ofd,
            ..FdEntry::inherited(false)
        }
    }

    fn close_all(fds: &[i32]) {
        for &f in fds {
            // SAFETY: closing descriptors this test made.
            unsafe { libc::close(f) };
        }
    }

    fn offset(fd: i32) -> i64 {
        // SAFETY: lseek on a descriptor this test owns.
        unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) }
    }

    #[test]
    fn dup_entries_are_rebuilt_sharing_one_offset() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"0123456789abcdef").unwrap();
        let mut ks = KState::new();
        // fds 610 and 612 are one open file description (a dup), 611 another open.
        ks.set_entry(610, Some(file_entry(&p, libc::O_RDWR, 4, 1)));
        ks.set_entry(611, Some(file_entry(&p, libc::O_RDONLY, 9, 2)));
        let mut dup = file_entry(&p, libc::O_RDWR | libc::O_CLOEXEC, 4, 1);
        dup.offset = 4;
        ks.set_entry(612, Some(dup));
        ks.restore_fds().unwrap();
        assert_eq!((offset(610), offset(611), offset(612)), (4, 9, 4));
        // SAFETY: lseek on a descriptor the restore made.
        unsafe { libc::lseek(610, 7, libc::SEEK_SET) };
        assert_eq!(offset(612), 7, "a dup must share the offset");
        assert_eq!(offset(611), 9, "another open must not");
        // Close-on-exec is per descriptor.
        // SAFETY: F_GETFD on descriptors the restore made.
        let fdf = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!((fdf(610), fdf(612)), (0, libc::FD_CLOEXEC));
        close_all(&[610, 611, 612]);
    }

    #[test]
    fn status_flags_are_redone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let mut ks = KState::new();
        let mut e = file_entry(&p, libc::O_RDWR | libc::O_NONBLOCK, 0, 1);
        e.setfl = true;
        ks.set_entry(620, Some(e));
        // An inherited descriptor (here a pipe) set non-blocking by the program.
        let mut pfd = [0i32; 2];
        // SAFETY: pipe writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe(pfd.as_mut_ptr()) }, 0);
        let mut inh = FdEntry::inherited(false);
        inh.flags = libc::O_NONBLOCK;
        inh.setfl = true;
        ks.set_entry(pfd[0], Some(inh));
        ks.restore_fds().unwrap();
        // SAFETY: F_GETFL on descriptors this test owns.
        let fl = |fd| unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_ne!(fl(620) & libc::O_NONBLOCK, 0);
        assert_ne!(fl(pfd[0]) & libc::O_NONBLOCK, 0);
        close_all(&[620, pfd[0], pfd[1]]);
    }

    fn lock(fd: i32, kind: i16, start: i64, end: i64, path: &[u8]) -> LockRec {
        LockRec {
            fd,
            path: path.to_vec(),
            ofd_lock: false,
            kind,
            start,
            end,
        }
    }

    #[test]
    fn lock_ops_keep_what_matters() {
        let mut ks = KState::new();
        let (w, u, r) = (
            libc::F_WRLCK as i16,
            libc::F_UNLCK as i16,
            libc::F_RDLCK as i16,
        );
        ks.lock_op(lock(5, w, 0, 10, b"/a"));
        ks.lock_op(lock(5, r, 20, 30, b"/a"));
        ks.lock_op(lock(6, w, 0, 10, b"/b"));
        // An unlock covering the first lock drops it and is itself not kept.
        ks.lock_op(lock(5, u, 0, 10, b"/a"));
        assert_eq!(ks.locks.len(), 2);
        // A partial unlock is kept, after what it cuts.
        ks.lock_op(lock(5, u, 25, 26, b"/a"));
        assert_eq!(ks.locks.last().map(|l| l.kind), Some(u));
        // A whole-file unlock of /a leaves only /b's lock.
        ks.lock_op(lock(5, u, 0, i64::MAX, b"/a"));
        assert_eq!(ks.locks, vec![lock(6, w, 0, 10, b"/b")]);
    }

    #[test]
    fn closing_releases_what_the_kernel_releases() {
        let mut ks = KState::new();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        ks.set_entry(5, Some(file_entry(&p, libc::O_RDWR, 0, 1)));
        ks.set_entry(6, Some(file_entry(&p, libc::O_RDONLY, 0, 2)));
        let pb = p.as_os_str().as_bytes().to_vec();
        ks.lock_op(lock(5, libc::F_WRLCK as i16, 0, 10, &pb));
        // Closing *another* descriptor of the file releases the process's POSIX locks.
        ks.closing(6);
        assert!(ks.locks.is_empty());
    }

    #[test]
    fn locks_are_retaken_on_recovery() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let pb = p.as_os_str().as_bytes().to_vec();
        let mut ks = KState::new();
        let mut e = file_entry(&p, libc::O_RDWR, 0, 1);
        e.flock = libc::LOCK_EX;
        ks.set_entry(630, Some(e));
        ks.lock_op(lock(630, libc::F_WRLCK as i16, 2, 5, &pb));
        ks.restore_fds().unwrap();
        ks.restore_locks().unwrap();
        // Seen from another open file description: the record lock and the flock.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let mut fl = libc::flock {
            l_type: libc::F_WRLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: F_OFD_GETLK fills the live local.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) }, 0);
        assert_eq!(
            (fl.l_type, fl.l_start, fl.l_len),
            (libc::F_WRLCK as i16, 2, 3)
        );
        // SAFETY: flock on our descriptor.
        let r = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, -1, "the flock lock must be held again");
        // Held by someone else: recovery fails with a message naming the file.
        close_all(&[630]);
        // SAFETY: flock on our descriptor.
        assert_eq!(unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) }, 0);
        ks.restore_fds().unwrap();
        let err = ks.restore_locks().unwrap_err().to_string();
        assert!(err.contains("flock of") && err.contains("/f"), "{err}");
        close_all(&[630]);
    }

    #[test]
    fn epoll_instances_are_rebuilt() {
        let mut pfd = [0i32; 2];
        // SAFETY: pipe writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe(pfd.as_mut_ptr()) }, 0);
        let mut ks = KState::new();
        ks.set_entry(
            640,
            Some(FdEntry {
                epoll: Some(vec![(pfd[0], libc::EPOLLIN as u32, 77)]),
                ..FdEntry::inherited(false)
            }),
        );
        ks.restore_fds().unwrap();
        // SAFETY: writing one byte into our pipe.
        assert_eq!(unsafe { libc::write(pfd[1], b"x".as_ptr().cast(), 1) }, 1);
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: epoll_wait fills one event into the live local.
        let n = unsafe { libc::epoll_wait(640, &mut ev, 1, 1000) };
        assert_eq!((n, { ev.u64 }), (1, 77));
        close_all(&[640, pfd[0], pfd[1]]);
    }

    #[test]
    fn terminal_settings_come_back_on_a_new_terminal() {
        let (mut m, mut sl) = (0, 0);
        // SAFETY: openpty writes two descriptors; the other arguments may be null.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut sl,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if r != 0 {
            vista::testing::record_skip("terminal_settings_come_back", "no pseudo-terminals")
                .expect("record the skip");
            return;
        }
        // The program's setting: raw mode (what nvi's and curses' tcsetattr does).
        // SAFETY: a zeroed termios is valid; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr on our terminal into the live local.
        assert_eq!(unsafe { libc::tcgetattr(sl, &mut t) }, 0);
        let cooked = t;
        // SAFETY: cfmakeraw edits the live local.
        unsafe { libc::cfmakeraw(&mut t) };
        let mut raw = [0u8; TERMIOS_LEN];
        // SAFETY: glibc's struct termios starts with the kernel's 36 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&t as *const libc::termios).cast::<u8>(),
                raw.as_mut_ptr(),
                TERMIOS_LEN,
            )
        };
        let mut ks = KState::new();
        ks.set_termios(sl, raw);
        // The new run's terminal starts cooked; recovery puts the program's mode back.
        ks.restore_termios().unwrap();
        // SAFETY: a zeroed termios is valid; tcgetattr fills it.
        let mut now: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr on our terminal.
        assert_eq!(unsafe { libc::tcgetattr(sl, &mut now) }, 0);
        assert_eq!(now.c_lflag & (libc::ICANON | libc::ECHO), 0);
        assert_ne!(cooked.c_lflag & libc::ICANON, 0);
        assert_eq!(now.c_iflag, t.c_iflag);
        // A descriptor that is no terminal now: reported, not ignored.
        let mut ks2 = KState::new();
        let f = tempfile::tempfile().unwrap();
        ks2.set_termios(std::os::fd::AsRawFd::as_raw_fd(&f), raw);
        let err = ks2.restore_termios().unwrap_err().to_string();
        assert!(
            err.contains("terminal settings") && err.contains("ENOTTY"),
            "{err}"
        );
        close_all(&[m, sl]);
    }

    #[test]
    fn chmod_and_directory_records_decode_and_undo() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let pb = p.as_os_str().as_bytes().to_vec();
        let recs = vec![
            UndoRec {
                kind: R_MKDIR,
                path: b"/x/d".to_vec(),
                path2: vec![],
                offset: 0,
                old_size: 0,
                data: vec![],
            },
            UndoRec {
                kind: R_RMDIR,
                path: b"/x/e".to_vec(),
                path2: vec![],
                offset: 0,
                old_size: 0o700,
                data: vec![],
            },
            UndoRec {
                kind: R_CHMOD,
                path: pb.clone(),
                path2: vec![],
                offset: 0,
                old_size: 0o640,
                data: vec![],
            },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            encode_rec(r, &mut buf);
        }
        assert_eq!(decode_recs(&buf).unwrap(), recs);
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        apply_undo(&recs[2]);
        assert_eq!(mode_of(&pb), Some(0o640));
    }

    #[test]
    fn records_roundtrip() {
        let recs = vec![
            UndoRec {
                kind: R_WRITE,
                path: b"/a/b".to_vec(),
                path2: vec![],
                offset: 5,
                old_size: 9,
                data: b"hello".to_vec(),
            },
            UndoRec {
                kind: R_UNLINK,
                path: b"/x".to_vec(),
                path2: b"/g/1.x".to_vec(),
                offset: 0,
                old_size: 0,
                data: vec![],
            },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            encode_rec(r, &mut buf);
        }
        assert_eq!(buf.len() % 8, 0);
        assert_eq!(decode_recs(&buf).unwrap(), recs);
        assert!(decode_recs(&buf[..buf.len() - 8]).is_err());
    }

    #[test]
    fn undo_restores_files_newest_first() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let pb = p.as_os_str().as_bytes().to_vec();
        std::fs::write(&p, b"0123456789").unwrap();
        // Two overwrites and an extension, logged as a program would.
        let recs = [
            UndoRec {
                kind: R_WRITE,
                path: pb.clone(),
                path2: vec![],
                offset: 2,
                old_size: 10,
                data: b"23".to_vec(),
            },
            UndoRec {
                kind: R_WRITE,
                path: pb.clone(),
                path2: vec![],
                offset: 2,
                old_size: 10,
                data: b"XY".to_vec(),
            },
            UndoRec {
                kind: R_WRITE,
                path: pb.clone(),
                path2: vec![],
                offset: 10,
                old_size: 10,
                data: vec![],
            },
        ];
        std::fs::write(&p, b"01ZW456789tail").unwrap();
        for r in recs.iter().rev() {
            apply_undo(r);
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"0123456789");
        let q = d.path().join("new");
        std::fs::write(&q, b"x").unwrap();
        apply_undo(&UndoRec {
            kind: R_CREATE,
            path: q.as_os_str().as_bytes().to_vec(),
            path2: vec![],
            offset: 0,
            old_size: 0,
            data: vec![],
        });
        assert!(!q.exists());
    }
}
