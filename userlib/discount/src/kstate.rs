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
//! * **working directory** (`chdir`): recorded and restored.
//!
//! Discount Checking's own descriptors are moved to numbers >= [`FD_FLOOR`] so that the
//! program's descriptor numbers are free when recovery reopens them.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::sys::{self, check, sc, sc4, syscall6};

pub use crate::sys::{move_high, FD_FLOOR};

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
}

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

/// `stat` of a path: (exists, is regular, size, is dir).
pub fn stat_path(p: &[u8]) -> Option<(bool, u64, bool)> {
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
            0,
        )
    };
    check(r).ok()?;
    let fmt = st.st_mode & libc::S_IFMT;
    Some((
        fmt == libc::S_IFREG,
        st.st_size as u64,
        fmt == libc::S_IFDIR,
    ))
}

/// The permission bits of a path (`None` if it does not exist).
pub fn mode_of(p: &[u8]) -> Option<u32> {
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
            libc::AT_SYMLINK_NOFOLLOW as usize,
        )
    };
    check(r).ok().map(|_| st.st_mode & 0o7777)
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
        if !(R_WRITE..=R_RENAME).contains(&kind) || at + body > area.len() {
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
                self.set_entry(
                    fd,
                    Some(FdEntry {
                        path: Vec::new(),
                        flags: 0,
                        offset: 0,
                        owned: false,
                        reopen: false,
                        seekable: true,
                    }),
                );
            }
        }
        Ok(())
    }

    /// Just before a checkpoint's memory is captured: the current offsets.
    pub fn before_commit(&mut self) {
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
        for (fd, e) in k.fds.iter().enumerate() {
            let Some(e) = e else { continue };
            let fd = fd as i32;
            if e.reopen {
                match raw_open(&e.path, e.flags & !libc::O_CLOEXEC, 0) {
                    Ok(n) => {
                        if n != fd {
                            let cloexec = if e.flags & libc::O_CLOEXEC != 0 {
                                libc::O_CLOEXEC
                            } else {
                                0
                            };
                            // SAFETY: dup3 onto the recorded number (ours are >= FD_FLOOR).
                            unsafe {
                                sc(libc::SYS_dup3, n as usize, fd as usize, cloexec as usize)
                            };
                            raw_close(n);
                        } else if e.flags & libc::O_CLOEXEC == 0 {
                            // SAFETY: clear FD_CLOEXEC on our own new descriptor.
                            unsafe { sc(libc::SYS_fcntl, fd as usize, libc::F_SETFD as usize, 0) };
                        }
                    }
                    Err(errno) => {
                        sys::diag(&format!(
                            "recovery: cannot reopen {} as fd {fd}: errno {errno}",
                            String::from_utf8_lossy(&e.path)
                        ));
                        continue;
                    }
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
