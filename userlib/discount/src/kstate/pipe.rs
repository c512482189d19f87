//! Pipes and FIFOs as recovered kernel state (thesis 5.2.2: the kernel state a program
//! changes is recorded and redone at recovery; issue 16 for FIFOs between the members of
//! a computation, whose distributed checkpoints are thesis 6.2.2's CPV-2PC and
//! CBNDV-2PC; the quiesce-and-drain step is this project's addition, see
//! `intercept/net.rs`).
//!
//! One [`PipeRec`] per open file description ([`PipeRec::ofd`]), like sockets: its
//! descriptors (the one `open`/`pipe` returned and their `dup`s) are in the descriptor
//! table with that id, and the record goes with the last of them.
//!
//! **FIFOs** (named pipes, made with `mkfifo` and opened by path; [`PipeRec::fifo`]):
//!
//! * *Between the members of a computation (CPV-2PC, CBNDV-2PC)* a FIFO is internal, like
//!   an `AF_UNIX` stream: every round's quiesce step covers it (the writer stops; the
//!   reader drains the FIFO into [`PipeRec::inbuf`], checkpointed memory, until it is
//!   empty: [`KState::drain_fifos`], and the writer waits until `FIONREAD` on its end is
//!   0: [`KState::fifos_outq`]); the program's reads are served from the buffer first.
//!   At recovery the FIFO is opened again at the same descriptors, with the same flags,
//!   only *after the join* ([`KState::reopen_fifos`]): then every old process of the
//!   computation is gone, and with it every descriptor of the old pipe, so the first
//!   opener gets a fresh, empty pipe, with none of the bytes written after the commit
//!   (which the re-executed writers write again). Opened earlier, a new process would
//!   keep the old pipe, and those bytes, alive. How the opens avoid deadlock and a
//!   false end of file is explained at [`KState::reopen_fifos`].
//! * *Under the single-process protocols* a FIFO is the outside world: writes are
//!   visible events, reads input (non-deterministic, or logged by the -LOG protocols).
//!   After a recovery it is opened again at its descriptors during the restore, without
//!   waiting for anyone ([`KState::restore_pipes`]). What a reader sees then: the FIFO as
//!   it is now: what is in it (bytes written while the process was down stay in the
//!   kernel's pipe only if some other process kept the FIFO open meanwhile), then what
//!   its current writers write; if nobody has it open for writing, the end of file (as
//!   after the writer closed it). A writer whose reader is gone gets `EPIPE` (and
//!   `SIGPIPE`), as when a reader closes; one with a reader goes on writing to it.
//!
//! **Anonymous pipes within one process** (`pipe`, `pipe2`: a self-pipe, as event loops
//! use; [`PipeRec::fifo`] false): both ends are the process's own (child processes stay
//! refused, so no end can leave it), so a pipe is state, not input or output: writes to
//! it are no visible events and reads from it are no input. At each checkpoint the bytes
//! in it are captured without being consumed ([`KState::capture_pipes`]: `tee(2)` into a
//! scratch pipe, then read from there) into [`PipeRec::held`]; recovery makes the pipe
//! again at the same descriptors and flags and writes them back.

use super::{raw_close, raw_open, KState};
use crate::error::{Error, Result};
use crate::sys::{self, check, sc, sc4};

/// One pipe end or FIFO open (checkpointed memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeRec {
    /// Its open-file-description id (its descriptors' [`super::FdEntry::ofd`]).
    pub ofd: u64,
    /// A FIFO opened by path (the path is its descriptors' [`super::FdEntry::path`]);
    /// false: one end of an anonymous pipe of this process.
    pub fifo: bool,
    /// Open for reading (`O_RDONLY`, `O_RDWR`; an anonymous pipe's read end).
    pub read: bool,
    /// Open for writing (`O_WRONLY`, `O_RDWR`; an anonymous pipe's write end).
    pub write: bool,
    /// An anonymous pipe: the other end's id (0: that end is closed).
    pub pair: u64,
    /// FIFOs: bytes a distributed checkpoint drained from it that the program has not
    /// read yet; its reads are served from here first.
    pub inbuf: Vec<u8>,
    /// An anonymous pipe's read end: the bytes in the pipe at the last checkpoint (still
    /// in the kernel's pipe too; written into the new pipe at recovery).
    pub held: Vec<u8>,
    /// FIFOs open for reading only: at the last drain nobody had it open for writing
    /// (recovery does not wait for a writer to come back).
    pub writer_gone: bool,
    /// FIFOs open for writing only: at the last drain nobody had it open for reading
    /// (recovery opens it all the same, as an end whose writes fail with `EPIPE`).
    pub reader_gone: bool,
}

impl PipeRec {
    /// A FIFO opened with access mode `acc` (`O_RDONLY`, `O_WRONLY`, `O_RDWR`).
    pub fn fifo(ofd: u64, acc: i32) -> PipeRec {
        PipeRec {
            ofd,
            fifo: true,
            read: acc != libc::O_WRONLY,
            write: acc != libc::O_RDONLY,
            pair: 0,
            inbuf: Vec::new(),
            held: Vec::new(),
            writer_gone: false,
            reader_gone: false,
        }
    }

    /// One end of an anonymous pipe (`read`: the read end) whose other end is `pair`.
    pub fn anon(ofd: u64, read: bool, pair: u64) -> PipeRec {
        PipeRec {
            ofd,
            fifo: false,
            read,
            write: !read,
            pair,
            inbuf: Vec::new(),
            held: Vec::new(),
            writer_gone: false,
            reader_gone: false,
        }
    }

    /// The access mode it was opened with.
    fn access(&self) -> i32 {
        match (self.read, self.write) {
            (true, true) => libc::O_RDWR,
            (false, true) => libc::O_WRONLY,
            _ => libc::O_RDONLY,
        }
    }

    /// What it is, for messages.
    fn what(&self) -> &'static str {
        match (self.read, self.write) {
            (true, true) => "reading and writing",
            (false, true) => "writing",
            _ => "reading",
        }
    }
}

/// `FIONREAD`: the bytes in the pipe `fd` is an end of (0 on an error).
pub fn unread(fd: i32) -> usize {
    let mut n: i32 = 0;
    // SAFETY: FIONREAD writes one int into the live local.
    let r = unsafe {
        sc(
            libc::SYS_ioctl,
            fd as usize,
            libc::FIONREAD as usize,
            &mut n as *mut i32 as usize,
        )
    };
    if r == 0 && n > 0 {
        n as usize
    } else {
        0
    }
}

/// A scratch pipe of Discount Checking's own (close-on-exec, above the program's
/// numbers): (read end, write end).
fn scratch_pipe() -> std::result::Result<(i32, i32), i32> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the live array.
    check(unsafe {
        sc(
            libc::SYS_pipe2,
            p.as_mut_ptr() as usize,
            (libc::O_CLOEXEC | libc::O_NONBLOCK) as usize,
            0,
        )
    })?;
    Ok((sys::move_high(p[0]), sys::move_high(p[1])))
}

/// `tee(2)` of up to `len` bytes from the pipe `fd` reads into the scratch pipe's write
/// end `w`, without waiting and without consuming them: the bytes copied, 0 when the
/// pipe is empty and nobody has it open for writing, or `-errno` (`-EAGAIN`: empty,
/// with a writer).
fn tee(fd: i32, w: i32, len: usize) -> isize {
    // SAFETY: tee takes descriptors and numbers only.
    unsafe {
        sc4(
            libc::SYS_tee,
            fd as usize,
            w as usize,
            len,
            libc::SPLICE_F_NONBLOCK as usize,
        )
    }
}

/// Whether a writer has come to the FIFO whose read end is `fd` (what a blocking
/// `O_RDONLY` open waits for): it has the FIFO open now, or wrote to it (there are bytes
/// in it), probed with a one-byte `tee` into a scratch pipe, which neither consumes
/// anything nor waits, whatever `fd`'s own flags (`EAGAIN`: empty with a writer; 0:
/// empty, nobody writing); or it came and went since `fd` was opened (`POLLHUP`, which
/// the kernel holds back on a read end opened with `O_NONBLOCK` until a writer has come).
pub fn writer_present(fd: i32) -> bool {
    let Ok((r, w)) = scratch_pipe() else {
        return false;
    };
    let t = tee(fd, w, 1);
    raw_close(r);
    raw_close(w);
    if t > 0 || t == -(libc::EAGAIN as isize) {
        return true;
    }
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: poll reads and writes one pollfd of the live local; timeout 0.
    let r = unsafe { sc(libc::SYS_poll, p.as_mut_ptr() as usize, 1, 0) };
    r > 0 && p[0].revents & libc::POLLHUP != 0
}

/// Whether nobody has the pipe whose write end is `fd` open for reading (`poll` reports
/// `POLLERR` on such a write end).
fn reader_gone(fd: i32) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    }];
    // SAFETY: poll reads and writes one pollfd of the live local; timeout 0.
    let r = unsafe { sc(libc::SYS_poll, p.as_mut_ptr() as usize, 1, 0) };
    r > 0 && p[0].revents & libc::POLLERR != 0
}

/// Sets `O_NONBLOCK` on `fd`; returns the status flags it had.
fn nonblocking(fd: i32) -> usize {
    // SAFETY: fcntl F_GETFL/F_SETFL take numbers only.
    unsafe {
        let fl = sc(libc::SYS_fcntl, fd as usize, libc::F_GETFL as usize, 0).max(0) as usize;
        sc(
            libc::SYS_fcntl,
            fd as usize,
            libc::F_SETFL as usize,
            fl | libc::O_NONBLOCK as usize,
        );
        fl
    }
}

fn set_flags(fd: i32, fl: usize) {
    // SAFETY: fcntl F_SETFL takes numbers only.
    unsafe { sc(libc::SYS_fcntl, fd as usize, libc::F_SETFL as usize, fl) };
}

/// Opens the FIFO at `path` for writing without waiting for a reader: directly if one
/// has it open; else through a transient `O_RDWR` open, which on Linux never blocks and
/// counts as a reader, so that the `O_WRONLY | O_NONBLOCK` open then succeeds; the
/// transient open is closed at once, leaving a write end whose reader is gone (its writes
/// fail with `EPIPE`, as when the reader closed). The descriptor is non-blocking.
fn open_writer_alone(path: &[u8]) -> std::result::Result<i32, i32> {
    match raw_open(path, libc::O_WRONLY | libc::O_NONBLOCK, 0) {
        Err(libc::ENXIO) => {
            let keeper = raw_open(path, libc::O_RDWR | libc::O_NONBLOCK, 0)?;
            let r = raw_open(path, libc::O_WRONLY | libc::O_NONBLOCK, 0);
            raw_close(keeper);
            r
        }
        r => r,
    }
}

/// How long recovery waits for the other end of a FIFO of the computation.
pub const REOPEN_S: u64 = super::sock::RECONNECT_S;

impl KState {
    /// The record of the pipe or FIFO `fd` refers to.
    pub fn pipe(&self, fd: i32) -> Option<&PipeRec> {
        let ofd = self.entry_ref(fd)?.ofd;
        self.pipes.iter().find(|p| ofd != 0 && p.ofd == ofd)
    }

    /// The record of the pipe or FIFO `fd` refers to, to change.
    pub fn pipe_mut(&mut self, fd: i32) -> Option<&mut PipeRec> {
        let ofd = self.entry_ref(fd)?.ofd;
        self.pipes.iter_mut().find(|p| ofd != 0 && p.ofd == ofd)
    }

    /// Whether `ofd` is a recorded pipe end or FIFO.
    pub fn is_pipe_ofd(&self, ofd: u64) -> bool {
        ofd != 0 && self.pipes.iter().any(|p| p.ofd == ofd)
    }

    /// Whether `fd` is an end of an anonymous pipe of this process (its reads are no
    /// input, its writes no visible events).
    pub fn is_self_pipe(&self, fd: i32) -> bool {
        self.pipe(fd).is_some_and(|p| !p.fifo)
    }

    /// Whether `fd` is a FIFO the program opened by path.
    pub fn is_fifo(&self, fd: i32) -> bool {
        self.pipe(fd).is_some_and(|p| p.fifo)
    }

    /// A pipe end or FIFO the program made at `fd` (`flags`: the descriptor's access mode
    /// and status flags, `O_CLOEXEC`).
    pub fn add_pipe(&mut self, fd: i32, rec: PipeRec, flags: i32) {
        self.set_entry(
            fd,
            Some(super::FdEntry {
                flags,
                ofd: rec.ofd,
                ..super::FdEntry::inherited(false)
            }),
        );
        self.pipes.retain(|p| p.ofd != rec.ofd);
        self.pipes.push(rec);
    }

    /// The last descriptor of `ofd` is being closed: its record goes (an anonymous pipe's
    /// other end then has none).
    pub(super) fn pipe_closed(&mut self, ofd: u64) {
        if !self.is_pipe_ofd(ofd) {
            return;
        }
        self.pipes.retain(|p| p.ofd != ofd);
        for p in self.pipes.iter_mut().filter(|p| p.pair == ofd) {
            p.pair = 0;
        }
    }

    /// The bytes a distributed checkpoint drained from the stream connection or FIFO `fd`
    /// and the program has not read yet (None: neither).
    pub fn drained_mut(&mut self, fd: i32) -> Option<&mut Vec<u8>> {
        let ofd = self.entry_ref(fd)?.ofd;
        if ofd == 0 {
            return None;
        }
        if self.is_sock_ofd(ofd) {
            return self
                .socks
                .iter_mut()
                .find(|s| s.ofd == ofd)
                .map(|s| &mut s.inbuf);
        }
        self.pipes
            .iter_mut()
            .find(|p| p.ofd == ofd && p.fifo)
            .map(|p| &mut p.inbuf)
    }

    /// Whether `fd` is a stream connection or FIFO with drained bytes not yet read.
    pub fn has_drained(&self, fd: i32) -> bool {
        let Some(ofd) = self.entry_ref(fd).map(|e| e.ofd).filter(|&o| o != 0) else {
            return false;
        };
        self.socks
            .iter()
            .any(|s| s.ofd == ofd && !s.inbuf.is_empty())
            || self
                .pipes
                .iter()
                .any(|p| p.ofd == ofd && p.fifo && !p.inbuf.is_empty())
    }

    /// A distributed checkpoint's drain of the FIFOs (issue 16; with
    /// [`KState::drain_streams`] for the stream sockets): every FIFO open for reading is
    /// read without waiting (`O_NONBLOCK` set for the reads and put back) until it is
    /// empty, into its [`PipeRec::inbuf`]; the read that finds it empty also tells
    /// whether anyone has it open for writing (`EAGAIN`) or not (0, the end:
    /// [`PipeRec::writer_gone`]). A FIFO open for writing only records whether anyone
    /// reads it ([`PipeRec::reader_gone`]). Returns the bytes drained.
    pub fn drain_fifos(&mut self) -> usize {
        let mut total = 0;
        let mut buf = [0u8; 4096];
        for i in 0..self.pipes.len() {
            if !self.pipes[i].fifo {
                continue;
            }
            let Some(fd) = self.first_fd(self.pipes[i].ofd) else {
                continue;
            };
            if !self.pipes[i].read {
                self.pipes[i].reader_gone = reader_gone(fd);
                continue;
            }
            let fl = nonblocking(fd);
            loop {
                // SAFETY: read writes at most buf.len() bytes into the live local.
                let r = unsafe { sc(libc::SYS_read, fd as usize, buf.as_mut_ptr() as usize, 4096) };
                if r > 0 {
                    self.pipes[i].inbuf.extend_from_slice(&buf[..r as usize]);
                    total += r as usize;
                    continue;
                }
                if r == 0 || r == -(libc::EAGAIN as isize) {
                    self.pipes[i].writer_gone = r == 0;
                }
                if r != -(libc::EINTR as isize) {
                    break;
                }
            }
            set_flags(fd, fl);
        }
        total
    }

    /// The bytes the FIFOs this process writes still hold (`FIONREAD` on the write end:
    /// not yet read by their reader; 0 for one nobody reads).
    pub fn fifos_outq(&self) -> usize {
        let mut total = 0;
        for p in self.pipes.iter().filter(|p| p.fifo && p.write) {
            let Some(fd) = self.first_fd(p.ofd) else {
                continue;
            };
            if !p.read && reader_gone(fd) {
                continue;
            }
            total += unread(fd);
        }
        total
    }

    /// At each checkpoint, before memory is captured: the bytes in each anonymous pipe
    /// of this process, copied without consuming them (`tee` into a scratch pipe, then
    /// read from there) into its read end's [`PipeRec::held`].
    pub fn capture_pipes(&mut self) {
        if !self.pipes.iter().any(|p| !p.fifo && p.read) {
            return;
        }
        let mut scratch = None;
        for i in 0..self.pipes.len() {
            let p = &self.pipes[i];
            if p.fifo || !p.read {
                continue;
            }
            let Some(fd) = self.first_fd(p.ofd) else {
                continue;
            };
            let n = unread(fd);
            if n == 0 {
                self.pipes[i].held.clear();
                continue;
            }
            if scratch.is_none() {
                scratch = scratch_pipe().ok();
            }
            let Some((sr, sw)) = scratch else {
                crate::diag::diag("checkpoint: no scratch pipe: a pipe's bytes not captured");
                return;
            };
            let mut held = Vec::with_capacity(n);
            let t = tee(fd, sw, n);
            let mut left = t.max(0) as usize;
            let mut buf = [0u8; 4096];
            while left > 0 {
                // SAFETY: read writes at most 4096 bytes into the live local.
                let r = unsafe { sc(libc::SYS_read, sr as usize, buf.as_mut_ptr() as usize, 4096) };
                if r <= 0 {
                    break;
                }
                held.extend_from_slice(&buf[..r as usize]);
                left = left.saturating_sub(r as usize);
            }
            if held.len() < n {
                crate::diag::diag(&format!(
                    "checkpoint: captured {} of the {n} bytes in the pipe of fd {fd}",
                    held.len()
                ));
            }
            self.pipes[i].held = held;
        }
        if let Some((sr, sw)) = scratch {
            raw_close(sr);
            raw_close(sw);
        }
    }

    /// Whether `fd` is a FIFO that recovery opens only after the join
    /// ([`KState::reopen_fifos`]): a member of a computation's.
    pub fn fifo_after_join(&self, fd: i32) -> bool {
        crate::twopc::configured() && self.is_fifo(fd)
    }

    fn pipe_fail(&self, p: &PipeRec, what: &str, errno: i32, why: &str) -> Error {
        let fd = self.first_fd(p.ofd).unwrap_or(-1);
        let path = self
            .entry_ref(fd)
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .unwrap_or_default();
        Error::Restore(format!(
            "the FIFO {path} (fd {fd}, open for {}): cannot {what}: {} ({errno}){why}",
            p.what(),
            sys::errno_name(errno)
        ))
    }

    fn path_of(&self, p: &PipeRec) -> Vec<u8> {
        self.first_fd(p.ofd)
            .and_then(|fd| self.entry_ref(fd))
            .map(|e| e.path.clone())
            .unwrap_or_default()
    }

    /// Recovery, during the restore (after the files, before the epoll instances): the
    /// anonymous pipes, made again at their descriptors with their flags and the bytes
    /// they held at the checkpoint; and, unless this process is a member of a
    /// computation, the FIFOs, opened again without waiting for anyone (the outside
    /// world's: see the module's documentation for what a reader sees). A FIFO that
    /// cannot be opened again fails recovery with a message naming its path.
    pub fn restore_pipes(&self) -> Result<()> {
        let twopc = crate::twopc::configured();
        for p in &self.pipes {
            if p.fifo {
                if twopc {
                    // Quiesced at every round (the join says so), opened after the join.
                    crate::vol::get()
                        .tp_streams
                        .store(true, std::sync::atomic::Ordering::Release);
                    continue;
                }
                let path = self.path_of(p);
                let n = match p.access() {
                    libc::O_WRONLY => open_writer_alone(&path),
                    acc => raw_open(&path, acc | libc::O_NONBLOCK, 0),
                }
                .map_err(|errno| self.pipe_fail(p, "open it again", errno, ""))?;
                self.place_sock(n, p.ofd);
                continue;
            }
            if !p.read && p.pair != 0 {
                continue; // made with its read end
            }
            let mut fds = [0i32; 2];
            // SAFETY: pipe2 writes two descriptors into the live array.
            let r = unsafe {
                sc(
                    libc::SYS_pipe2,
                    fds.as_mut_ptr() as usize,
                    libc::O_CLOEXEC as usize,
                    0,
                )
            };
            if let Err(errno) = check(r) {
                return Err(Error::Restore(format!(
                    "cannot make the pipe of fd {} again: {} ({errno})",
                    self.first_fd(p.ofd).unwrap_or(-1),
                    sys::errno_name(errno)
                )));
            }
            // Out of the program's numbers first: placing one end must not close the
            // other, which the kernel may have put at the first one's number.
            let (rd, wr) = (sys::move_high(fds[0]), sys::move_high(fds[1]));
            if p.read && !p.held.is_empty() {
                set_flags(wr, libc::O_NONBLOCK as usize);
                // SAFETY: write reads held.len() bytes from the record's buffer.
                let w = unsafe {
                    sc(
                        libc::SYS_write,
                        wr as usize,
                        p.held.as_ptr() as usize,
                        p.held.len(),
                    )
                };
                if w != p.held.len() as isize {
                    return Err(Error::Restore(format!(
                        "cannot put the {} bytes of the pipe of fd {} back (wrote {w})",
                        p.held.len(),
                        self.first_fd(p.ofd).unwrap_or(-1)
                    )));
                }
            }
            let (read_ofd, write_ofd) = if p.read { (p.ofd, p.pair) } else { (0, p.ofd) };
            match self
                .pipes
                .iter()
                .find(|q| read_ofd != 0 && q.ofd == read_ofd)
            {
                Some(q) => {
                    self.place_sock(rd, q.ofd);
                }
                None => raw_close(rd),
            }
            match self
                .pipes
                .iter()
                .find(|q| write_ofd != 0 && q.ofd == write_ofd)
            {
                Some(q) => {
                    self.place_sock(wr, q.ofd);
                }
                None => raw_close(wr),
            }
        }
        Ok(())
    }

    /// Recovery of a member of a computation (2PC), after it joined (issue 16): its
    /// FIFOs, opened again at their descriptors with their flags.
    ///
    /// *After the join*, because only then is every old process of the computation gone
    /// (each rolled back, its descriptors closed, or was killed): the first process to
    /// open the FIFO now gets a fresh pipe, so no byte written after the commit is in it
    /// (those were never in a checkpoint: the re-executed writer writes them again; the
    /// bytes written before it are in the reader's [`PipeRec::inbuf`]).
    ///
    /// *Without deadlock and without a false end of file.* A plain `O_RDONLY` or
    /// `O_WRONLY` open blocks until the other end opens, and members open in their own
    /// orders (a member reading FIFO a and writing b, another reading b and writing a,
    /// would each wait in its first open), so nothing here blocks in an open:
    ///
    /// 1. every end open for reading is opened with `O_NONBLOCK` (which never waits) and
    ///    `O_RDWR` ends as they are (which never wait either, on Linux);
    /// 2. then every end open for writing only is opened with `O_NONBLOCK`, which fails
    ///    with `ENXIO` until a reader has it open: retried (every member did step 1 first,
    ///    which waits for nothing, so the readers come) for up to [`REOPEN_S`] seconds;
    ///    one whose reader was gone at the checkpoint ([`PipeRec::reader_gone`]) is
    ///    opened through a transient `O_RDWR` open instead, leaving an end whose writes
    ///    fail with `EPIPE` as they did;
    /// 3. then every end open for reading only waits until a writer has the FIFO open
    ///    again (`writer_present`), unless none had it at the checkpoint
    ///    ([`PipeRec::writer_gone`]): a read before that would return 0, the end of file,
    ///    while the writer is still being recovered. Writers came in step 2, which waits
    ///    only for step 1, so this waits for nothing that waits for it.
    ///
    /// Not `O_RDWR` transiently for the readers too: a reader holding a write end of its
    /// own would never see the real end of the stream once the writer closes, and there
    /// is no moment at which it could tell that its writer is back and let go. The
    /// status flags are those recorded (`O_NONBLOCK` cleared unless the program had set
    /// it). `serve` is called while waiting (it serves the coordinator: a failure meanwhile
    /// rolls this member back from there). The epoll registrations of these descriptors
    /// are made again last. A FIFO that does not come back fails recovery with a message
    /// naming its path.
    pub fn reopen_fifos(&self, serve: &mut dyn FnMut()) -> Result<()> {
        if !crate::twopc::configured() || !self.pipes.iter().any(|p| p.fifo) {
            return Ok(());
        }
        let deadline = sys::mono_ns() + REOPEN_S * 1_000_000_000;
        let wait = |serve: &mut dyn FnMut()| {
            serve();
            sys::sleep_ms(5);
        };
        // 1. The ends open for reading.
        for p in self.pipes.iter().filter(|p| p.fifo && p.read) {
            let n = raw_open(&self.path_of(p), p.access() | libc::O_NONBLOCK, 0)
                .map_err(|errno| self.pipe_fail(p, "open it again", errno, ""))?;
            self.place_sock(n, p.ofd);
        }
        // 2. The ends open for writing only.
        for p in self.pipes.iter().filter(|p| p.fifo && !p.read) {
            let path = self.path_of(p);
            let n = loop {
                if p.reader_gone {
                    break open_writer_alone(&path);
                }
                match raw_open(&path, libc::O_WRONLY | libc::O_NONBLOCK, 0) {
                    Err(libc::ENXIO) if sys::mono_ns() < deadline => wait(serve),
                    r => break r,
                }
            };
            let n = n.map_err(|errno| {
                let why = if errno == libc::ENXIO {
                    " (no reader opened it again within the 10 s recovery allows)"
                } else {
                    ""
                };
                self.pipe_fail(p, "open it again", errno, why)
            })?;
            self.place_sock(n, p.ofd);
        }
        // 3. The ends open for reading only wait for their writer.
        for p in self
            .pipes
            .iter()
            .filter(|p| p.fifo && !p.write && !p.writer_gone)
        {
            let Some(fd) = self.first_fd(p.ofd) else {
                continue;
            };
            while !writer_present(fd) {
                if sys::mono_ns() >= deadline {
                    return Err(self.pipe_fail(
                        p,
                        "find its writer again",
                        libc::ETIMEDOUT,
                        " (nobody opened it for writing again within the 10 s recovery \
                         allows)",
                    ));
                }
                wait(serve);
            }
        }
        // The epoll instances watching them (made during the restore, without them).
        for (ep, e) in self.fds.iter().enumerate() {
            let Some(Some(regs)) = e.as_ref().map(|e| e.epoll.as_ref()) else {
                continue;
            };
            for &(t, events, data) in regs.iter().filter(|r| self.is_fifo(r.0)) {
                let mut ev = libc::epoll_event { events, u64: data };
                // SAFETY: epoll_ctl reads one epoll_event from a live local.
                let r = unsafe {
                    sc4(
                        libc::SYS_epoll_ctl,
                        ep,
                        libc::EPOLL_CTL_ADD as usize,
                        t as usize,
                        &mut ev as *mut _ as usize,
                    )
                };
                if let Err(errno) = check(r) {
                    crate::diag::diag(&format!(
                        "recovery: cannot register FIFO fd {t} in epoll instance {ep}: errno {errno}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `pipe2(2)`'s flags Discount Checking records (the descriptors' status and
/// close-on-exec flags); others (`O_DIRECT`, notification pipes) are refused.
pub const PIPE2_FLAGS: i32 = libc::O_NONBLOCK | libc::O_CLOEXEC;

#[cfg(test)]
mod tests {
    use super::super::FdEntry;
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(p: &std::path::Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    fn open(p: &std::path::Path, flags: i32) -> i32 {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: open reads a NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        assert!(
            fd >= 0,
            "open {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        fd
    }

    fn write(fd: i32, b: &[u8]) {
        // SAFETY: write reads b.len() bytes of the live slice.
        let r = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        assert_eq!(r, b.len() as isize);
    }

    fn read(fd: i32, n: usize) -> (isize, Vec<u8>) {
        let mut b = vec![0u8; n];
        // SAFETY: read writes at most n bytes into the live vector.
        let r = unsafe { libc::read(fd, b.as_mut_ptr().cast(), n) };
        b.truncate(r.max(0) as usize);
        (r, b)
    }

    fn close_all(fds: &[i32]) {
        for &f in fds {
            // SAFETY: closing descriptors this test made.
            unsafe { libc::close(f) };
        }
    }

    fn fifo_entry(ks: &mut KState, fd: i32, path: &std::path::Path, acc: i32) -> u64 {
        let ofd = ks.new_ofd();
        ks.add_pipe(fd, PipeRec::fifo(ofd, acc & libc::O_ACCMODE), acc);
        if let Some(e) = ks.entry(fd) {
            e.path = path.as_os_str().as_bytes().to_vec();
        }
        ofd
    }

    #[test]
    fn the_writer_probe_neither_waits_nor_consumes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        mkfifo(&p);
        let r = open(&p, libc::O_RDONLY | libc::O_NONBLOCK);
        assert!(!writer_present(r), "nobody writes yet");
        let w = open(&p, libc::O_WRONLY);
        assert!(writer_present(r), "a writer has it open");
        write(w, b"abc");
        assert!(writer_present(r));
        assert_eq!(unread(r), 3, "the probe consumed nothing");
        assert_eq!(unread(w), 3, "FIONREAD works on the write end too");
        close_all(&[w]);
        assert!(writer_present(r), "bytes are still there to read");
        assert_eq!(read(r, 8).1, b"abc");
        assert!(
            writer_present(r),
            "empty, the writer came and went: the end"
        );
        close_all(&[r]);
        // Opened with O_NONBLOCK while nobody writes: no writer has come yet, then one
        // comes and goes without writing.
        let r = open(&p, libc::O_RDONLY | libc::O_NONBLOCK);
        assert!(!writer_present(r));
        close_all(&[open(&p, libc::O_WRONLY | libc::O_NONBLOCK)]);
        assert!(writer_present(r), "a writer came and went");
        close_all(&[r]);
    }

    #[test]
    fn a_drain_takes_the_bytes_and_sees_the_writer_go() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        mkfifo(&p);
        let r = open(&p, libc::O_RDONLY | libc::O_NONBLOCK);
        let w = open(&p, libc::O_WRONLY);
        // SAFETY: dup3 of live descriptors onto free numbers.
        unsafe {
            assert_eq!(libc::dup3(r, 670, 0), 670);
            assert_eq!(libc::dup3(w, 671, 0), 671);
        }
        close_all(&[r, w]);
        // SAFETY: clear O_NONBLOCK: the program's reader blocks; the drain must not.
        unsafe { libc::fcntl(670, libc::F_SETFL, 0) };
        let mut ks = KState::new();
        fifo_entry(&mut ks, 670, &p, libc::O_RDONLY);
        fifo_entry(&mut ks, 671, &p, libc::O_WRONLY);
        write(671, &[5u8; 10000]);
        assert_eq!(ks.fifos_outq(), 10000);
        assert_eq!(ks.drain_fifos(), 10000);
        assert_eq!(ks.fifos_outq(), 0);
        let rec = ks.pipe(670).unwrap();
        assert_eq!((rec.inbuf.len(), rec.writer_gone), (10000, false));
        // SAFETY: F_GETFL on our descriptor.
        let fl = unsafe { libc::fcntl(670, libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0, "the drain puts the flags back");
        assert_eq!(ks.drained_mut(670).map(|b| b.len()), Some(10000));
        ks.closing(671);
        ks.set_entry(671, None);
        close_all(&[671]);
        ks.drain_fifos();
        assert!(ks.pipe(670).unwrap().writer_gone, "the writer closed");
        // The writer's side: a reader gone is recorded.
        let r2 = open(&p, libc::O_RDONLY | libc::O_NONBLOCK);
        let w2 = open(&p, libc::O_WRONLY | libc::O_NONBLOCK);
        // SAFETY: dup3 of a live descriptor onto a free number.
        assert_eq!(unsafe { libc::dup3(w2, 672, 0) }, 672);
        close_all(&[w2]);
        fifo_entry(&mut ks, 672, &p, libc::O_WRONLY);
        ks.drain_fifos();
        assert!(!ks.pipe(672).unwrap().reader_gone);
        close_all(&[r2, 670]);
        ks.drain_fifos();
        assert!(ks.pipe(672).unwrap().reader_gone);
        close_all(&[672]);
    }

    #[test]
    fn fifos_outside_a_computation_come_back_without_waiting() {
        assert!(!crate::twopc::configured());
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        mkfifo(&p);
        let mut ks = KState::new();
        // A reader (blocking), a writer whose reader is gone, a dup of the reader.
        let ofd = fifo_entry(&mut ks, 673, &p, libc::O_RDONLY);
        fifo_entry(&mut ks, 674, &p, libc::O_WRONLY | libc::O_NONBLOCK);
        ks.set_entry(
            675,
            Some(FdEntry {
                flags: libc::O_RDONLY | libc::O_CLOEXEC,
                ofd,
                ..FdEntry::inherited(false)
            }),
        );
        ks.restore_fds().unwrap();
        // SAFETY: F_GETFL/F_GETFD on descriptors the restore made.
        let (fl3, fl4, fd5) = unsafe {
            (
                libc::fcntl(673, libc::F_GETFL),
                libc::fcntl(674, libc::F_GETFL),
                libc::fcntl(675, libc::F_GETFD),
            )
        };
        assert_eq!(fl3 & (libc::O_ACCMODE | libc::O_NONBLOCK), libc::O_RDONLY);
        assert_eq!(
            fl4 & (libc::O_ACCMODE | libc::O_NONBLOCK),
            libc::O_WRONLY | libc::O_NONBLOCK
        );
        assert_eq!(fd5, libc::FD_CLOEXEC);
        // The restored writer writes into the restored reader.
        write(674, b"hi");
        assert_eq!(read(675, 8).1, b"hi");
        close_all(&[674]);
        assert_eq!(read(673, 8).0, 0, "no writer: the end of file");
        // Outside the computation, a writer with no reader at all comes back as an end
        // whose writes fail with EPIPE.
        close_all(&[673, 675]);
        let mut ks2 = KState::new();
        fifo_entry(&mut ks2, 676, &p, libc::O_WRONLY | libc::O_NONBLOCK);
        ks2.restore_fds().unwrap();
        // SAFETY: send-free write with SIGPIPE ignored for the check.
        unsafe {
            let old = libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            let r = libc::write(676, b"x".as_ptr().cast(), 1);
            let e = std::io::Error::last_os_error().raw_os_error();
            libc::signal(libc::SIGPIPE, old);
            assert_eq!((r, e), (-1, Some(libc::EPIPE)));
        }
        close_all(&[676]);
        // A FIFO that is gone fails recovery, naming its path.
        std::fs::remove_file(&p).unwrap();
        let mut ks3 = KState::new();
        fifo_entry(&mut ks3, 677, &p, libc::O_RDONLY);
        let err = ks3.restore_fds().unwrap_err().to_string();
        assert!(
            err.contains(&p.display().to_string())
                && err.contains("fd 677")
                && err.contains("ENOENT"),
            "{err}"
        );
    }

    #[test]
    fn anonymous_pipes_come_back_with_their_bytes() {
        let mut fds = [0i32; 2];
        // SAFETY: pipe writes two descriptors into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: dup3 onto free numbers.
        unsafe {
            assert_eq!(libc::dup3(fds[0], 680, 0), 680);
            assert_eq!(libc::dup3(fds[1], 681, libc::O_CLOEXEC), 681);
        }
        close_all(&fds);
        let mut ks = KState::new();
        let (r, w) = (ks.new_ofd(), ks.new_ofd());
        ks.add_pipe(680, PipeRec::anon(r, true, w), libc::O_RDONLY);
        ks.add_pipe(
            681,
            PipeRec::anon(w, false, r),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        );
        // SAFETY: F_SETFL on our descriptor (the recorded O_NONBLOCK).
        unsafe { libc::fcntl(681, libc::F_SETFL, libc::O_NONBLOCK) };
        write(681, b"wake");
        ks.capture_pipes();
        assert_eq!(ks.pipe(680).unwrap().held, b"wake");
        assert_eq!(unread(680), 4, "captured, not consumed");
        // The crash: the pipe is gone; recovery makes it again with its bytes.
        close_all(&[680, 681]);
        ks.restore_fds().unwrap();
        assert_eq!(read(680, 16).1, b"wake");
        // SAFETY: F_GETFL/F_GETFD on descriptors the restore made.
        let (fl, fdfl) = unsafe {
            (
                libc::fcntl(681, libc::F_GETFL),
                libc::fcntl(681, libc::F_GETFD),
            )
        };
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        assert_eq!(fdfl, libc::FD_CLOEXEC);
        write(681, b"more");
        assert_eq!(read(680, 16).1, b"more");
        // With the write end closed: the bytes, then the end of file.
        write(681, b"last");
        ks.capture_pipes();
        ks.closing(681);
        ks.set_entry(681, None);
        close_all(&[681]);
        assert_eq!(ks.pipe(680).unwrap().pair, 0);
        close_all(&[680]);
        ks.restore_fds().unwrap();
        assert_eq!(read(680, 16).1, b"last");
        assert_eq!(read(680, 16).0, 0);
        close_all(&[680]);
    }
}
