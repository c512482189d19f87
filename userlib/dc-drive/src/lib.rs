//! Typing a scripted session into a program on a pseudo-terminal, like a user who types
//! the next input when the program waits for one; the driver of the crash tests of real
//! full-screen programs under Discount Checking, on the host (`dc/tests/common/pty.rs`,
//! which adds the emulated screen and the SIGKILLs) and in the guest (`dc-drive`, where
//! the crash is a kernel panic and the driver itself dies with the kernel).
//!
//! Each run gets a fresh pseudo-terminal, as a user who runs the same command again in a
//! new window would. Pacing: the next input is sent when the program is blocked reading
//! its terminal (`/proc/<pid>/syscall`), its output has been quiet for a moment, and what
//! was typed has been read. Which input is next is, for a run under Discount Checking,
//! read from the event trace ([`reads_in_history`]): a recovery truncates the history to
//! the checkpoint it resumed, so an input lost with a crash is typed again and one the
//! program kept is not; a driver that itself died in the crash needs to remember nothing.
//! For the failure-free run (no trace) it is simply the next one.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use discount::oracle::{self, Event};

pub mod apps;
pub mod dist;

/// Screen size of the terminal.
pub const ROWS: u16 = 24;
/// See [`ROWS`].
pub const COLS: u16 = 80;

/// What can go wrong while driving a session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the trace does not parse: {0}")]
    Trace(#[from] discount::Error),
    #[error("the trace recovers checkpoint {seq}, but the last committed is {last:?}")]
    UnknownCheckpoint { seq: u64, last: Option<u64> },
    #[error("the trace shows {at} reads of the input, but only {typed} were typed")]
    ReadTooMuch { at: usize, typed: usize },
    #[error(
        "input up to {typed} was typed {secs} s ago and the program is waiting for input, \
         but the trace shows {at} reads"
    )]
    Unread { typed: usize, at: usize, secs: u64 },
    #[error("the deadline passed; the run's last output: {tail:?}")]
    Deadline { tail: String },
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// How a program reads its terminal, which decides what one traced `read` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// One read takes a whole burst of typing (nvi reads into a large buffer): the reads
    /// in the history count the inputs the program has.
    Bursts,
    /// One read per byte (ncurses' `getch`, as sc reads its keys): the reads in the
    /// history count the bytes it has, so after a crash in the middle of an input the new
    /// run gets the rest of it, as a user who sees where the program stands would type
    /// it. The program must consume what was typed before the next is sent (the
    /// terminal's input queue is empty).
    Bytes,
}

impl std::str::FromStr for Pacing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "bursts" => Ok(Pacing::Bursts),
            "bytes" => Ok(Pacing::Bytes),
            _ => Err(format!("{s:?}: the pacing is bursts or bytes")),
        }
    }
}

/// The scripted session: its inputs, and where each ends in the unit one read takes.
#[derive(Debug, Clone)]
pub struct Session {
    inputs: Vec<Vec<u8>>,
    stream: Vec<u8>,
    ends: Vec<usize>,
    pacing: Pacing,
}

impl Session {
    pub fn new(inputs: Vec<Vec<u8>>, pacing: Pacing) -> Session {
        let stream = inputs.concat();
        let ends = match pacing {
            Pacing::Bursts => (1..=inputs.len()).collect(),
            Pacing::Bytes => inputs
                .iter()
                .scan(0, |at, s| {
                    *at += s.len();
                    Some(*at)
                })
                .collect(),
        };
        Session {
            inputs,
            stream,
            ends,
            pacing,
        }
    }

    /// The session as a JSON array of strings (what `dc-drive --session` reads).
    pub fn from_json(text: &str, pacing: Pacing) -> std::result::Result<Session, String> {
        let v: Vec<String> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if v.is_empty() {
            return Err("the session has no input".into());
        }
        Ok(Session::new(
            v.into_iter().map(String::into_bytes).collect(),
            pacing,
        ))
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    pub fn pacing(&self) -> Pacing {
        self.pacing
    }

    /// Reads (inputs or bytes) the whole session takes.
    fn total(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    fn begin(&self, k: usize) -> usize {
        if k == 0 {
            0
        } else {
            self.ends[k - 1]
        }
    }

    /// The input the program is in after `at` reads, and the part of it still to type.
    fn next(&self, at: usize) -> (usize, &[u8]) {
        let k = self
            .ends
            .iter()
            .position(|&e| e > at)
            .unwrap_or(self.inputs.len() - 1);
        let keys = match self.pacing {
            Pacing::Bursts => &self.inputs[k][..],
            Pacing::Bytes => &self.stream[at..self.ends[k]],
        };
        (k, keys)
    }
}

/// The terminal reads in the history the trace leaves (`trace`: every event of every
/// run so far): a fresh start clears it, a recovery of checkpoint `seq` cuts it back to
/// that commit. A recovery of the checkpoint after the last traced one is a crash that
/// landed between that checkpoint's commit point and its trace line (`C` is written after
/// the commit, so that the trace never claims a commit that did not happen): the commit
/// was the crashed run's last act, so nothing is cut, the rule
/// [`oracle::check_resumed`] applies. Any other unknown checkpoint is an error.
pub fn reads_in_history(trace: &[Event]) -> Result<usize> {
    let mut h: Vec<Event> = Vec::new();
    let mut last: Option<u64> = None;
    for e in trace {
        match e {
            Event::Start => {
                h.clear();
                last = None;
            }
            Event::Recover(seq) => {
                match h
                    .iter()
                    .rposition(|x| matches!(x, Event::Commit(c) if c == seq))
                {
                    Some(i) if last == Some(*seq) => h.truncate(i + 1),
                    None if last.map_or(1, |c| c + 1) == *seq => h.push(Event::Commit(*seq)),
                    _ => return Err(Error::UnknownCheckpoint { seq: *seq, last }),
                }
                last = Some(*seq);
            }
            Event::Commit(seq) => {
                last = Some(*seq);
                h.push(e.clone());
            }
            _ => h.push(e.clone()),
        }
    }
    Ok(h.iter()
        .filter(|e| matches!(e, Event::Nd(w) | Event::Logged(w) if w == "read"))
        .count())
}

/// Whether process `pid` is blocked in `read(0, ...)` (`/proc/<pid>/syscall`; under
/// Syscall User Dispatch the read is made by the SIGSYS handler, on the program's
/// behalf, and shows the same).
pub fn waiting_for_stdin(pid: u32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let mut f = s.split_whitespace();
    f.next() == Some("0") && f.next() == Some("0x0")
}

/// The number after `key` in the `/proc/<pid>/<file>` line that starts with it (0 if
/// there is none).
fn proc_number(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// How often process `pid` has blocked so far (`voluntary_ctxt_switches` of
/// `/proc/<pid>/status`, which every kernel has, unlike `/proc/<pid>/io`): a program
/// that was blocked reading its terminal and is blocked there again has been woken in
/// between.
pub fn blocked_count(pid: u32) -> u64 {
    proc_number(pid, "status", "voluntary_ctxt_switches:")
}

/// Bytes process `pid` has read so far (`rchar` of `/proc/<pid>/io`; the host tests' pipe
/// driver).
pub fn rchar(pid: u32) -> u64 {
    proc_number(pid, "io", "rchar:")
}

/// Bytes waiting to be read from `fd`: a pipe (either end), or a terminal's input queue
/// (on its slave side).
pub fn pending(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into the local; the descriptor is borrowed, open.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return usize::MAX;
    }
    n as usize
}

/// A fresh pseudo-terminal pair, [`ROWS`] by [`COLS`], its master non-blocking.
struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
}

impl Pty {
    fn open() -> Result<Pty> {
        let (mut m, mut s) = (-1, -1);
        let ws = libc::winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the locals and reads the winsize;
        // name and termios may be null.
        let r =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        if r != 0 {
            return Err(io("openpty")(std::io::Error::last_os_error()));
        }
        // SAFETY: openpty returned two fresh descriptors that nothing else owns.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        // SAFETY: fcntl on a descriptor this function owns (in `master`).
        let ok = unsafe {
            let fl = libc::fcntl(m, libc::F_GETFL);
            fl >= 0 && libc::fcntl(m, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
        };
        if !ok {
            return Err(io("make the terminal non-blocking")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Pty { master, slave })
    }
}

/// What to run: argv, environment (added to a cleared one with only PATH), working
/// directory, and the Discount Checking trace that paces it (None: the failure-free
/// run, paced by counting).
#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub trace: Option<PathBuf>,
}

/// A running program on its terminal; killed and reaped when dropped.
///
/// Started with a plain `fork` and `execve` rather than `std::process::Command`: std's
/// spawn asks the kernel for a Unix-domain socket pair, which the guest's kernel (no
/// networking) does not have.
struct Proc {
    /// The child's pid while it is not reaped.
    pid: Option<libc::pid_t>,
    pty: Pty,
    last_out: Instant,
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| io(format!("{s:?}"))(std::io::Error::other("a NUL byte")))
}

impl Proc {
    fn spawn(c: &Command) -> Result<Proc> {
        let pty = Pty::open()?;
        if c.argv.is_empty() {
            return Err(io("spawn")(std::io::Error::other("no command")));
        }
        // Everything the child needs, made before the fork (after it, only
        // async-signal-safe calls).
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let prog = if c.argv[0].contains('/') {
            PathBuf::from(&c.argv[0])
        } else {
            std::env::split_paths(&path)
                .map(|d| d.join(&c.argv[0]))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    io(format!("spawn {:?}", c.argv))(std::io::Error::from(
                        std::io::ErrorKind::NotFound,
                    ))
                })?
        };
        let prog = CString::new(prog.as_os_str().as_bytes())
            .map_err(|_| io("the program's path")(std::io::Error::other("a NUL byte")))?;
        let argv: Vec<CString> = c.argv.iter().map(|a| cstring(a)).collect::<Result<_>>()?;
        let mut envv: Vec<CString> = vec![cstring(&format!("PATH={path}"))?];
        for (k, v) in &c.env {
            envv.push(cstring(&format!("{k}={v}"))?);
        }
        let cwd = CString::new(c.cwd.as_os_str().as_bytes())
            .map_err(|_| io("the working directory")(std::io::Error::other("a NUL byte")))?;
        let mut argp: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argp.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envv.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        let slave = pty.slave.as_raw_fd();
        let master = pty.master.as_raw_fd();
        // SAFETY: fork in a process that may have other threads: the child only makes
        // async-signal-safe calls (dup2, close, setsid, ioctl, chdir, execve, _exit) on
        // memory prepared above, then execs or exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io("fork")(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: this is the forked child, which may have inherited locks held by other
            // threads, so it makes only async-signal-safe calls (close, dup2, setsid, ioctl,
            // chdir, execve, _exit) and allocates nothing; the pointers are into live vectors
            // of the parent's copied address space, NUL-terminated and null-terminated.
            unsafe {
                libc::close(master);
                for fd in 0..3 {
                    libc::dup2(slave, fd);
                }
                if slave > 2 {
                    libc::close(slave);
                }
                // A new session whose controlling terminal is the pty.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    libc::_exit(126);
                }
                if libc::chdir(cwd.as_ptr()) < 0 {
                    libc::_exit(126);
                }
                libc::execve(prog.as_ptr(), argp.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        Ok(Proc {
            pid: Some(pid),
            pty,
            last_out: Instant::now(),
        })
    }

    fn pid(&self) -> u32 {
        self.pid.map_or(0, |p| p as u32)
    }

    /// Reads what is there and hands it on.
    fn pump(&mut self, out: &mut Vec<u8>, on: &mut dyn FnMut(Seen<'_>)) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.pty.master.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    out.extend_from_slice(&chunk[..n]);
                    on(Seen::Output(&chunk[..n]));
                    self.last_out = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock, or EIO once the program's side is closed.
                Err(_) => return,
            }
        }
    }

    /// The exit code once it has exited (a death by a signal nobody sent it, as our kills
    /// go through [`Proc::kill`], as 128 + signal).
    fn exited(&mut self) -> Result<Option<i32>> {
        let Some(pid) = self.pid else {
            return Ok(Some(-1));
        };
        let mut st = 0;
        // SAFETY: waitpid on our own child, writing its status into the local.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r < 0 {
            return Err(io("wait for the program")(std::io::Error::last_os_error()));
        }
        if r == 0 {
            return Ok(None);
        }
        self.pid = None;
        Ok(Some(if libc::WIFEXITED(st) {
            libc::WEXITSTATUS(st)
        } else {
            128 + libc::WTERMSIG(st)
        }))
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(pid) = self.pid.take() {
            // SAFETY: SIGKILL to our own child, not reaped yet (so the pid is still its),
            // then reaping it into a local.
            let r = unsafe {
                libc::kill(pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(pid, &mut st, 0)
            };
            if r < 0 {
                return Err(io("reap the program")(std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// What the driver saw, as it happens (for a screen, or an output file that must survive
/// a crash of the driver itself).
pub enum Seen<'a> {
    /// Output of the program.
    Output(&'a [u8]),
    /// The last input is about to be typed (the screen now is the "before the last input"
    /// one the tests compare).
    BeforeLast,
    /// The planned crash, [`Crash::Stop`]: the program is stopped and everything it wrote
    /// has been handed on. The caller crashes the machine now; if this returns, the
    /// program is killed.
    Stopped,
}

/// How the planned crash of a run happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// SIGKILL the program (a crash of the program; the terminal lives on).
    Kill,
    /// SIGSTOP it, take in all it wrote, then [`Seen::Stopped`]: for a crash of the
    /// machine that also takes the terminal down (a kernel panic in the guest, where this
    /// driver runs). Stopping first makes the terminal have shown every write that
    /// returned before the crash, as a terminal outside the failing machine would have;
    /// the program stops at whatever point it was, mid-checkpoint included.
    Stop,
}

/// A planned crash: once input `after` (or a later one) has been typed, wait `delay_ms`,
/// then crash as `how` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub after: usize,
    pub delay_ms: u64,
    pub how: Crash,
}

/// Whether process `pid` is stopped (`/proc/<pid>/stat` state `T`).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        == Some('T')
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It exited with this code (128 + signal for a death by a signal).
    Exited(i32),
    /// The planned kill landed.
    Killed,
}

/// One run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Everything it wrote to its terminal.
    pub out: Vec<u8>,
    pub end: End,
    /// The reads (inputs or bytes) typed so far: the failure-free run's pacing.
    pub typed: usize,
}

/// Runs `c` once on a fresh terminal through the rest of `session` until it exits, or
/// until the planned crash `plan` happens. `typed`: what the failure-free pacing has
/// typed before (0 for a first run).
pub fn run_once(
    c: &Command,
    session: &Session,
    plan: Option<Plan>,
    typed: usize,
    deadline: Instant,
    on: &mut dyn FnMut(Seen<'_>),
) -> Result<Run> {
    let quiet = Duration::from_millis(40);
    let mut p = Proc::spawn(c)?;
    let mut out = Vec::new();
    let mut typed_total = typed;
    // What this run typed last: the reads the program must reach, when, and how often
    // the program had blocked then.
    let mut last_sent: Option<(usize, Instant, u64)> = None;
    loop {
        p.pump(&mut out, on);
        if Instant::now() > deadline {
            return Err(Error::Deadline {
                tail: String::from_utf8_lossy(&out[out.len().saturating_sub(400)..]).into(),
            });
        }
        if let Some(code) = p.exited()? {
            p.pump(&mut out, on);
            return Ok(Run {
                out,
                end: End::Exited(code),
                typed: typed_total,
            });
        }
        // Idle: blocked reading the terminal, quiet, and what was typed has been read:
        // the terminal's input queue is empty and the program has blocked again since
        // (not the process's read counter: the guest's kernel has no I/O accounting).
        let woken = last_sent.is_none_or(|(_, _, b)| blocked_count(p.pid()) > b);
        let idle = woken
            && pending(&p.pty.slave) == 0
            && waiting_for_stdin(p.pid())
            && p.last_out.elapsed() > quiet;
        if !idle {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        // Output written between the pump above and the program's blocking read (a
        // redraw, and then the read) would be missed by what follows: take it in, and
        // decide again once it has been quiet.
        let seen = out.len();
        p.pump(&mut out, on);
        if out.len() != seen {
            continue;
        }
        // Where in the session the program stands (see `Pacing`).
        let at = match &c.trace {
            Some(path) => {
                let text = std::fs::read(path).unwrap_or_default();
                reads_in_history(&oracle::parse(&String::from_utf8_lossy(&text))?)?
            }
            None => typed_total,
        };
        if let Some((want, since, _)) = last_sent {
            if at > want {
                return Err(Error::ReadTooMuch { at, typed: want });
            }
            if at < want {
                // Typed, not traced yet (or read without a trace event: then never).
                if since.elapsed() > Duration::from_secs(5) {
                    return Err(Error::Unread {
                        typed: want,
                        at,
                        secs: 5,
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        }
        if at >= session.total() {
            // Everything typed: the last input ends the program.
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let (k, keys) = session.next(at);
        if k + 1 == session.len() && at == session.begin(k) {
            on(Seen::BeforeLast);
        }
        if std::env::var_os("DC_TEST_DEBUG").is_some() {
            eprintln!(
                "send input {k} from {at}: {:?}",
                String::from_utf8_lossy(keys)
            );
        }
        let blocked = blocked_count(p.pid());
        // One write, like a burst of typing.
        p.pty
            .master
            .write_all(keys)
            .map_err(io("type into the terminal"))?;
        let want = session.ends[k];
        last_sent = Some((want, Instant::now(), blocked));
        typed_total = want;
        if let Some(plan) = plan {
            if plan.after <= k {
                std::thread::sleep(Duration::from_millis(plan.delay_ms));
                if plan.how == Crash::Stop {
                    // SAFETY: SIGSTOP to our own child, not reaped yet.
                    unsafe { libc::kill(p.pid() as i32, libc::SIGSTOP) };
                    let t = Instant::now();
                    while !stopped(p.pid()) && t.elapsed() < Duration::from_secs(5) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    p.pump(&mut out, on);
                    on(Seen::Stopped);
                }
                p.pump(&mut out, on);
                p.kill()?;
                p.pump(&mut out, on);
                return Ok(Run {
                    out,
                    end: End::Killed,
                    typed: typed_total,
                });
            }
        }
    }
}

/// Appends `bytes` to `path` and makes them durable (the guest driver's output files,
/// which must hold what the program showed when the kernel dies a moment later).
pub fn append_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oracle::Event::{Commit, Nd, Recover, Start};

    fn read() -> Event {
        Nd("read".into())
    }

    /// A crash between a checkpoint's commit point and its `C` line leaves `R <seq>` with
    /// no `C <seq>`: the reads before it were committed and must not be typed again
    /// (counting them as lost retyped the session's first inputs into nvi).
    #[test]
    fn the_pacing_keeps_reads_committed_just_before_a_crash() {
        // Two reads, commit 1, a read, crash, recovery of 1: the two committed reads remain.
        let t = [Start, read(), read(), Commit(1), read(), Recover(1)];
        assert_eq!(reads_in_history(&t).ok(), Some(2));
        // The third read was committed as checkpoint 2, whose line the crash cut off.
        let t = [Start, read(), Commit(1), read(), read(), Recover(2)];
        assert_eq!(reads_in_history(&t).ok(), Some(3));
        // A later recovery of that checkpoint finds it where the crash left it.
        let t = [
            Start,
            read(),
            Commit(1),
            read(),
            Recover(2),
            read(),
            Recover(2),
        ];
        assert_eq!(reads_in_history(&t).ok(), Some(2));
        // A fresh start forgets everything; a checkpoint never committed is an error.
        assert_eq!(
            reads_in_history(&[read(), Commit(1), Start, read()]).ok(),
            Some(1)
        );
        assert!(reads_in_history(&[Start, Commit(1), Recover(3)]).is_err());
        assert!(reads_in_history(&[Start, Commit(1), Commit(2), Recover(1)]).is_err());
    }

    #[test]
    fn byte_pacing_types_the_rest_of_an_input() {
        let s = Session::new(vec![b"ab".to_vec(), b"cde".to_vec()], Pacing::Bytes);
        assert_eq!(s.total(), 5);
        assert_eq!(s.next(0), (0, &b"ab"[..]));
        assert_eq!(s.next(3), (1, &b"de"[..]));
        let s = Session::new(vec![b"ab".to_vec(), b"cde".to_vec()], Pacing::Bursts);
        assert_eq!(s.total(), 2);
        assert_eq!(s.next(1), (1, &b"cde"[..]));
    }
}
