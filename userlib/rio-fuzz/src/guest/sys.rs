//! Raw system calls of the guest program, each behind a small wrapper that returns the
//! errno on failure.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Opens the device read-only or read-write.
pub fn open_dev(path: &CString, write: bool) -> Result<OwnedFd, i32> {
    let flags = libc::O_CLOEXEC | if write { libc::O_RDWR } else { libc::O_RDONLY };
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An ioctl whose argument is `arg`; returns its value.
pub fn ioctl<T>(fd: RawFd, cmd: u32, arg: &mut T) -> Result<i32, i32> {
    // SAFETY: `arg` is a live `T`; callers pass commands whose encoded size is the size of
    // `T` (the kernel reads or writes exactly that).
    let r = unsafe { libc::ioctl(fd, cmd as libc::c_ulong, arg as *mut T) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// An ioctl without an argument; returns its value.
pub fn ioctl_none(fd: RawFd, cmd: u32) -> Result<i32, i32> {
    // SAFETY: the command takes no argument, so the kernel reads nothing through it.
    let r = unsafe { libc::ioctl(fd, cmd as libc::c_ulong, 0usize) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// `pread` into `buf`.
pub fn pread(fd: RawFd, buf: &mut [u8], off: u64) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

/// `pread` into raw memory (a fresh mapping the kernel must fault in).
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
pub unsafe fn pread_raw(fd: RawFd, ptr: *mut u8, len: usize, off: u64) -> Result<usize, i32> {
    // SAFETY: the caller guarantees `ptr..ptr+len` is writable memory.
    let r = unsafe { libc::pread(fd, ptr.cast(), len, off as libc::off_t) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

/// `pwrite` of `buf`.
pub fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let r = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off as libc::off_t) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

/// `mmap` of `len` bytes of `fd` (or anonymous memory for `fd` -1 with `MAP_ANONYMOUS`).
pub fn mmap(fd: RawFd, len: usize, prot: i32, flags: i32, off: u64) -> Result<*mut u8, i32> {
    // SAFETY: a null hint without MAP_FIXED never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            flags,
            fd,
            off as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p.cast())
    }
}

/// `munmap`.
///
/// # Safety
/// `ptr`/`len` must be a mapping made by [`mmap`] that nothing references any more.
pub unsafe fn munmap(ptr: *mut u8, len: usize) -> Result<(), i32> {
    // SAFETY: guaranteed by the caller.
    if unsafe { libc::munmap(ptr.cast(), len) } != 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// `msync` of `len` bytes at `addr` (an address inside a mapping of this process, or not
/// page-aligned on purpose: the kernel checks).
pub fn msync(addr: usize, len: usize, flags: i32) -> Result<(), i32> {
    // SAFETY: msync neither changes memory contents nor unmaps anything; an address that is
    // not page-aligned or not mapped is refused by the kernel (EINVAL, ENOMEM).
    if unsafe { libc::msync(addr as *mut libc::c_void, len, flags) } != 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Where [`report_fault`] sends its answer: the reply pipe of the actor this process is.
static FAULT_REPLY_FD: AtomicI32 = AtomicI32::new(-1);

/// The handler of `SIGBUS` and `SIGSEGV` in actors: an access through a mapping that the
/// model expected to succeed faulted. It answers the op with `Reply::Signal` (a frame built
/// without allocating) and exits: the coordinator reports the mismatch and stops the run.
extern "C" fn report_fault(sig: libc::c_int) {
    let frame = crate::wire::signal_frame(sig);
    let fd = FAULT_REPLY_FD.load(Ordering::Relaxed);
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `frame` lives on this stack for
    // the call. Nothing of the interrupted code runs again.
    unsafe {
        libc::write(fd, frame.as_ptr().cast(), frame.len());
        libc::_exit(6);
    }
}

fn set_fault_handler(handler: libc::sighandler_t) -> Result<(), i32> {
    for sig in [libc::SIGBUS, libc::SIGSEGV] {
        // SAFETY: an all-zero sigaction is a valid value of the plain C struct (empty mask,
        // no flags); the handler is SIG_DFL or `report_fault`, which has the signature of a
        // non-SA_SIGINFO handler and does only async-signal-safe calls.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// From now on `SIGBUS` and `SIGSEGV` answer the current op on `reply` with
/// `Reply::Signal` and end this process (the handler writes one prebuilt frame and exits).
pub fn report_faults_to(reply: RawFd) -> Result<(), i32> {
    FAULT_REPLY_FD.store(reply, Ordering::Relaxed);
    set_fault_handler(report_fault as extern "C" fn(libc::c_int) as libc::sighandler_t)
}

/// Runs `f` in a child process (this one must be single-threaded) and says how it ended:
/// `Ok(None)` if `f` returned, `Ok(Some(sig))` if the child died of signal `sig`. A child
/// that does not end within `timeout` is killed (`ETIMEDOUT`).
pub fn in_child(f: impl FnOnce(), timeout: Duration) -> Result<Option<i32>, i32> {
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    match fork()? {
        0 => {
            die_with_parent(me);
            // Here a fault is the answer: die of it.
            if set_fault_handler(libc::SIG_DFL).is_err() {
                exit_now(8);
            }
            f();
            exit_now(0)
        }
        pid => match wait_timeout(pid, timeout) {
            None => {
                kill(pid);
                let _ = wait_timeout(pid, Duration::from_secs(5));
                Err(libc::ETIMEDOUT)
            }
            Some(st) if st >= 0 && libc::WIFSIGNALED(st) => Ok(Some(libc::WTERMSIG(st))),
            Some(st) if st >= 0 && libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 => Ok(None),
            Some(_) => Err(libc::ECHILD),
        },
    }
}

/// A pipe: (read end, write end), close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd), i32> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes all of `buf`.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = &buf[r as usize..];
    }
    Ok(())
}

/// Why a read of a frame failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing came in time.
    Timeout,
    /// The other end closed (the process died).
    Eof,
    /// Another error.
    Errno(i32),
}

fn read_exact(fd: RawFd, buf: &mut [u8], deadline: Option<Instant>) -> Result<(), RecvError> {
    let mut got = 0;
    while got < buf.len() {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: `p` is one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(RecvError::Errno(e));
            }
            if r == 0 {
                return Err(RecvError::Timeout);
            }
        }
        // SAFETY: `buf[got..]` is valid for writes of its length.
        let r = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if r < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(RecvError::Errno(e));
        }
        if r == 0 {
            return Err(RecvError::Eof);
        }
        got += r as usize;
    }
    Ok(())
}

/// Sends one frame.
pub fn send_frame(fd: RawFd, payload: &[u8]) -> Result<(), i32> {
    let mut v = Vec::with_capacity(payload.len() + 4);
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    write_all(fd, &v)
}

/// Receives one frame, waiting at most `timeout` (forever if `None`).
pub fn recv_frame(fd: RawFd, timeout: Option<Duration>) -> Result<Vec<u8>, RecvError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut len = [0u8; 4];
    read_exact(fd, &mut len, deadline)?;
    let mut v = vec![0u8; u32::from_le_bytes(len) as usize];
    read_exact(fd, &mut v, deadline)?;
    Ok(v)
}

/// `fork`: `Ok(0)` in the child, the child's pid in the parent.
pub fn fork() -> Result<libc::pid_t, i32> {
    // SAFETY: the callers fork only while single-threaded (the coordinator before any
    // thread starts; actors never start threads), so the child's memory state is consistent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(errno())
    } else {
        Ok(pid)
    }
}

/// Dies with SIGKILL when the parent dies; exits at once if it already died.
pub fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; getppid and _exit cannot
    // fail.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(3);
        }
    }
}

/// Kills `pid` with SIGKILL.
pub fn kill(pid: libc::pid_t) {
    // SAFETY: kill takes a pid and a signal number; errors (already gone) are fine.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Waits for `pid` to exit, at most `timeout`; returns its wait status.
pub fn wait_timeout(pid: libc::pid_t, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid int to write the status into.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && errno() != libc::EINTR {
            return Some(-1);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Writes `text` to the file at `path`.
fn write_file(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {path:?} to {text:?}: {e}"))
}

/// Turns this process into `who` (uid and gid `kuid`, no supplementary groups); for the
/// namespaced actor, then into root of a new user namespace that maps only that uid.
pub fn become_identity(who: &crate::model::Identity) -> Result<(), String> {
    if who.kuid == 0 {
        return Ok(());
    }
    let id = who.kuid;
    // SAFETY: setgroups with a zero count reads nothing; setresgid/setresuid take ids.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(format!("setgroups: errno {}", errno()));
        }
        if libc::setresgid(id, id, id) != 0 {
            return Err(format!("setresgid({id}): errno {}", errno()));
        }
        if libc::setresuid(id, id, id) != 0 {
            return Err(format!("setresuid({id}): errno {}", errno()));
        }
    }
    // Changing credentials cleared the dumpable flag, which makes /proc/self root's;
    // the uid_map below must be writable by this process.
    // SAFETY: prctl(PR_SET_DUMPABLE) takes a flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1 as libc::c_ulong) };
    if let Some(outside) = who.ns_root_of {
        // SAFETY: unshare takes flags only.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWUSER): errno {} (is CONFIG_USER_NS on?)",
                errno()
            ));
        }
        write_file("/proc/self/setgroups", "deny")?;
        write_file("/proc/self/uid_map", &format!("0 {outside} 1"))?;
        write_file("/proc/self/gid_map", &format!("0 {outside} 1"))?;
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not uid 0 inside the new user namespace".into());
        }
    }
    Ok(())
}

/// Closes a descriptor that this process does not need (inherited from the coordinator).
pub fn close_raw(fd: RawFd) {
    // SAFETY: closing a descriptor number; the caller owns no Rust value for it in this
    // process (it is a copy inherited across fork whose owner lives in another process).
    unsafe { libc::close(fd) };
}

/// The raw fd of an owned one.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// `tcdrain` (waits until a serial port has sent everything; harmless on other files).
pub fn drain(fd: RawFd) {
    // SAFETY: tcdrain on an open fd; a non-tty gives ENOTTY, which is fine.
    unsafe { libc::tcdrain(fd) };
}

/// Leaves the process at once, without unwinding or running destructors (an actor's
/// mappings and descriptors go with it).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}
