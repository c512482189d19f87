//! Implicit mode through userfaultfd write-protect, the alternative to the SIGSEGV path.
//!
//! The segment is registered with a userfaultfd in write-protect mode. `begin`
//! write-protects the whole range with one ioctl; a store to a protected page blocks the
//! faulting thread and queues an event; a dedicated thread reads it, logs the page and
//! removes the protection of that page, which wakes the faulting thread.
//!
//! Availability: Linux only allows write-protect faults on anonymous memory, shmem (tmpfs,
//! `/dev/shm`) and hugetlbfs, so a segment backed by a file on a disk file system gets
//! [`Error::UffdUnavailable`]; so does a process without the right to use userfaultfd
//! (`vm.unprivileged_userfaultfd = 0` and no `CAP_SYS_PTRACE`). The SIGSEGV path
//! ([`LogMode::Implicit`](crate::LogMode::Implicit)) works everywhere.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::log::{LogCore, PageLogger};
use crate::map::PAGE;
use crate::uffd_abi::*;

/// Above this many dirty pages, `arm` re-protects the whole range with one ioctl.
const DIRTY_MAX: usize = 256;

fn ioctl<T>(fd: i32, req: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: every request used here takes a pointer to the matching #[repr(C)] struct,
    // which `arg` is, and the kernel writes at most size_of::<T>() bytes back.
    let rc = unsafe { libc::ioctl(fd, req, arg as *mut T) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn writeprotect(fd: i32, start: usize, len: usize, protect: bool) -> std::io::Result<()> {
    let mut wp = UffdioWriteprotect {
        range: UffdioRange {
            start: start as u64,
            len: len as u64,
        },
        mode: if protect {
            UFFDIO_WRITEPROTECT_MODE_WP
        } else {
            0
        },
    };
    ioctl(fd, UFFDIO_WRITEPROTECT, &mut wp)
}

struct Shared {
    pages: PageLogger,
    /// Pages unprotected since the last `arm` (exact unless `all_dirty`).
    dirty: Mutex<Vec<usize>>,
    /// The whole range must be re-protected (first arm, overflow, or full unprotect).
    all_dirty: AtomicBool,
    /// Thread id of the handler thread (0 until it runs) and the CPU it is pinned to.
    tid: AtomicI32,
    pinned_cpu: AtomicI32,
}

// SAFETY: `pages` points to the engine's boxed LogCore, which outlives the tracker (the
// engine drops trackers, joining their threads, before the log). The handler thread only
// appends while the owning thread is blocked in the fault it is resolving.
unsafe impl Send for Shared {}
// SAFETY: shared between the owning thread and the handler thread: every field but the
// log pointer in `pages` is atomic or immutable after construction, and the log is only appended to by the handler
// while the owning thread is blocked in the fault it resolves (see Send above).
unsafe impl Sync for Shared {}

/// A userfaultfd write-protect tracker for one segment.
pub(crate) struct Tracker {
    uffd: Arc<OwnedFd>,
    stop: OwnedFd,
    base: usize,
    len: usize,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish()
    }
}

fn unavailable(what: &str, e: std::io::Error) -> Error {
    Error::UffdUnavailable(format!("{what}: {e}"))
}

impl Tracker {
    /// Registers `[base, base + len)` for write-protect tracking into `log`.
    ///
    /// # Safety
    /// `log` must stay valid until the tracker is dropped.
    pub(crate) unsafe fn new(
        base: usize,
        len: usize,
        log: *const LogCore,
        target: u16,
    ) -> Result<Tracker> {
        // SAFETY: the userfaultfd syscall takes only flags.
        let mut fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY,
            )
        };
        if fd < 0 {
            // Kernels before 5.11 do not know UFFD_USER_MODE_ONLY.
            // SAFETY: the userfaultfd syscall takes only flags and touches no memory of ours.
            fd =
                unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        }
        if fd < 0 {
            return Err(unavailable(
                "userfaultfd()",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
            ioctls: 0,
        };
        ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api)
            .map_err(|e| unavailable("UFFDIO_API (write-protect features)", e))?;
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: base as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut reg).map_err(|e| {
            unavailable(
                "UFFDIO_REGISTER in write-protect mode (needs a tmpfs/shmem or hugetlbfs backing)",
                e,
            )
        })?;
        // SAFETY: eventfd takes only an initial value and flags.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(Error::last_os("eventfd"));
        }
        // SAFETY: fresh descriptor we own.
        let stop = unsafe { OwnedFd::from_raw_fd(efd) };
        let shared = Arc::new(Shared {
            // SAFETY: `log` outlives the tracker (this function's contract), and the
            // tracker owns `shared`'s last use (its thread is joined on drop).
            pages: unsafe { PageLogger::new(log, base, target) },
            dirty: Mutex::new(Vec::with_capacity(DIRTY_MAX)),
            all_dirty: AtomicBool::new(true),
            tid: AtomicI32::new(0),
            pinned_cpu: AtomicI32::new(-1),
        });
        let uffd = Arc::new(uffd);
        let (u2, s2, stopfd) = (uffd.clone(), shared.clone(), stop.as_raw_fd());
        let thread = std::thread::Builder::new()
            .name("vista-uffd".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                s2.tid.store(unsafe { libc::gettid() }, Ordering::Release);
                serve(&u2, stopfd, &s2)
            })
            .map_err(|source| Error::Os {
                op: "spawn userfaultfd thread",
                source,
            })?;
        Ok(Tracker {
            uffd,
            stop,
            base,
            len,
            shared,
            thread: Some(thread),
        })
    }

    /// Write-protects the segment (only the pages unprotected since the last `arm`, when
    /// that is known and few) and starts logging faults.
    pub(crate) fn arm(&self) -> Result<()> {
        self.follow_caller();
        let fd = self.uffd.as_raw_fd();
        let os = |source| Error::Os {
            op: "UFFDIO_WRITEPROTECT",
            source,
        };
        let mut dirty = self.shared.dirty.lock().map_err(|_| Error::Poisoned)?;
        if self.shared.all_dirty.swap(false, Ordering::AcqRel) || dirty.len() > DIRTY_MAX {
            dirty.clear();
            drop(dirty);
            self.shared.pages.arm(true);
            return writeprotect(fd, self.base, self.len, true).map_err(os);
        }
        dirty.sort_unstable();
        let mut i = 0;
        while i < dirty.len() {
            let start = dirty[i];
            let mut end = start + PAGE;
            i += 1;
            while i < dirty.len() && dirty[i] <= end {
                end = end.max(dirty[i] + PAGE);
                i += 1;
            }
            writeprotect(fd, start, end - start, true).map_err(os)?;
        }
        dirty.clear();
        self.shared.pages.arm(true);
        Ok(())
    }

    /// Pins the handler thread to the CPU the transaction runs on, so resolving a fault is
    /// a local context switch rather than a cross-CPU wakeup (50-100 µs in a VM whose
    /// other vCPU is idle). One `sched_getcpu` per `begin`; a syscall only on migration.
    fn follow_caller(&self) {
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        let tid = self.shared.tid.load(Ordering::Acquire);
        if cpu < 0 || tid == 0 || self.shared.pinned_cpu.load(Ordering::Relaxed) == cpu {
            return;
        }
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it; the tid
        // is our own handler thread (alive until the tracker is dropped).
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc == 0 {
            self.shared.pinned_cpu.store(cpu, Ordering::Relaxed);
        }
    }

    /// Stops logging. With `unprotect`, removes all protection (before the tracker goes
    /// away); otherwise pages stay protected and a stray store is resolved without logging.
    pub(crate) fn disarm(&self, unprotect: bool) -> Result<()> {
        self.shared.pages.arm(false);
        if unprotect {
            self.shared.all_dirty.store(true, Ordering::Release);
            writeprotect(self.uffd.as_raw_fd(), self.base, self.len, false).map_err(|source| {
                Error::Os {
                    op: "UFFDIO_WRITEPROTECT",
                    source,
                }
            })?;
        }
        Ok(())
    }
}

fn die(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::abort();
}

fn serve(uffd: &OwnedFd, stop: i32, sh: &Shared) {
    let fd = uffd.as_raw_fd();
    let mut msgs = [0u8; 32 * 16];
    loop {
        let mut pfd = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: pfd is a valid array of two pollfd structs.
        let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            die("vista: poll on userfaultfd failed");
        }
        if pfd[1].revents != 0 {
            return;
        }
        // SAFETY: reading into our buffer of the stated length.
        let got = unsafe { libc::read(fd, msgs.as_mut_ptr().cast(), msgs.len()) };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                continue;
            }
            die("vista: read from userfaultfd failed");
        }
        for m in msgs[..got as usize].chunks_exact(32) {
            if m[0] != UFFD_EVENT_PAGEFAULT {
                continue;
            }
            let mut w = [0u8; 8];
            w.copy_from_slice(&m[8..16]);
            let flags = u64::from_le_bytes(w);
            w.copy_from_slice(&m[16..24]);
            let addr = u64::from_le_bytes(w) as usize;
            if flags & UFFD_PAGEFAULT_FLAG_WP == 0 {
                continue;
            }
            let page = addr & !(PAGE - 1);
            // SAFETY: page is inside the registered (readable) segment and still
            // write-protected; the log is valid while the tracker lives and is a different
            // mapping; the owning thread is blocked on this very fault.
            match unsafe { sh.pages.log_before_write(page) } {
                Ok(_) => {}
                Err(Error::Prepared { .. }) => die("vista: store to a page not logged before prepare (userfaultfd); aborting, the transaction stays prepared for the resolver"),
                Err(_) => die("vista: undo log full while logging a page (userfaultfd); aborting, recovery will roll the transaction back"),
            }
            match sh.dirty.lock() {
                Ok(mut d) if d.len() <= DIRTY_MAX => d.push(page),
                _ => sh.all_dirty.store(true, Ordering::Release),
            }
            if writeprotect(fd, page, PAGE, false).is_err() {
                die("vista: UFFDIO_WRITEPROTECT failed while resolving a fault");
            }
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut range = UffdioRange {
            start: self.base as u64,
            len: self.len as u64,
        };
        let _ = ioctl(self.uffd.as_raw_fd(), UFFDIO_UNREGISTER, &mut range);
    }
}
