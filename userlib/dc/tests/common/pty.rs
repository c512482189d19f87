//! A terminal for the full-screen tests: each run gets a fresh pseudo-terminal (as a
//! user who runs the same command again in a new window would), its output is fed to one
//! emulated screen (`vt100`) that persists across runs like the user's terminal window,
//! and the program is driven like a user who types the next input when it waits for one.
//!
//! Pacing: the next input is sent when the program is blocked reading its terminal
//! (`/proc/<pid>/syscall`) and its output has been quiet for a moment. Which input is
//! next is, for a run under Discount Checking, read from the event trace: the number of
//! terminal reads in the history that survives (a recovery truncates the history to the
//! checkpoint it resumed; logged input replayed counts as read), so an input lost with a
//! crash is typed again and one the program kept is not. A read is a whole input for a
//! program that reads bursts (nvi), one byte for one that reads a key at a time (sc):
//! [`Pacing`]. For the failure-free run (no trace) it is simply the next one.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use discount::oracle::{self, Event};

use super::{preload, trace_since, waiting_for_stdin, Run};

/// Screen size of the emulated terminal.
pub const ROWS: u16 = 24;
/// See [`ROWS`].
pub const COLS: u16 = 80;

/// A fresh pseudo-terminal pair.
pub struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
}

impl Pty {
    pub fn open() -> Result<Pty> {
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
            bail!("openpty: {}", std::io::Error::last_os_error());
        }
        // SAFETY: openpty returned two fresh descriptors that nothing else owns.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        // SAFETY: fcntl on our own descriptor.
        unsafe {
            let fl = libc::fcntl(m, libc::F_GETFL);
            libc::fcntl(m, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Ok(Pty { master, slave })
    }
}

/// What to run (each run on a new [`Pty`]).
pub struct Target<'a> {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: &'a Path,
    /// The event trace (None: the failure-free run, paced by counting).
    pub trace: Option<PathBuf>,
}

/// The terminal reads in the history the trace leaves (`trace`: every event of every
/// run so far): a fresh start clears it, a recovery of checkpoint `seq` cuts it back to
/// that commit. A recovery of the checkpoint after the last traced one is a kill that
/// landed between that checkpoint's commit point and its trace line (`C` is written
/// after the commit, so that the trace never claims a commit that did not happen): the
/// commit was the crashed run's last act, so nothing is cut, the rule
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
                    _ => {
                        bail!("the trace recovers checkpoint {seq}, the last committed is {last:?}")
                    }
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

/// Bytes process `pid` has read so far (`rchar` of `/proc/<pid>/io`).
pub fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("rchar: ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// A running program on its terminal; killed and reaped when dropped.
struct Proc {
    child: Option<Child>,
    pty: Pty,
    out: Vec<u8>,
    last_out: Instant,
}

impl Proc {
    fn spawn(t: &Target<'_>) -> Result<Proc> {
        let pty = Pty::open()?;
        let mut cmd = Command::new(&t.argv[0]);
        let io = || -> Result<Stdio> { Ok(Stdio::from(pty.slave.try_clone()?)) };
        cmd.args(&t.argv[1..])
            .current_dir(t.cwd)
            .stdin(io()?)
            .stdout(io()?)
            .stderr(io()?)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DC_PRELOAD", preload());
        for (k, v) in &t.env {
            cmd.env(k, v);
        }
        // SAFETY: between fork and exec only async-signal-safe calls: a new session
        // whose controlling terminal is the pty (stdin, already dup'ed there).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("spawn {:?}", t.argv))?;
        Ok(Proc {
            child: Some(child),
            pty,
            out: Vec::new(),
            last_out: Instant::now(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Reads what is there; feeds the screen.
    fn pump(&mut self, screen: &mut vt100::Parser) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.pty.master.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    self.out.extend_from_slice(&chunk[..n]);
                    screen.process(&chunk[..n]);
                    self.last_out = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock, or EIO once the program's side is closed.
                Err(_) => return,
            }
        }
    }

    fn send(&mut self, keys: &[u8]) -> Result<()> {
        // One write, like a burst of typing.
        self.pty.master.write_all(keys)?;
        Ok(())
    }

    fn exited(&mut self) -> Result<Option<i32>> {
        let Some(c) = self.child.as_mut() else {
            return Ok(Some(-1));
        };
        // A death by a signal nobody sent it (our kills go through `kill`) as 128 + signal.
        Ok(c.try_wait()?.map(|st| {
            st.code().unwrap_or_else(|| {
                128 + std::os::unix::process::ExitStatusExt::signal(&st).unwrap_or(0)
            })
        }))
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            // SAFETY: SIGKILL to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// What a session of runs produced.
pub struct Session {
    pub runs: Vec<Run>,
    /// The emulated screen after the last run.
    pub screen: vt100::Parser,
    /// The screen's contents just before the last input was typed.
    pub before_last: String,
}

/// Text and cursor of a screen, for comparisons and messages.
pub fn show(s: &vt100::Screen) -> String {
    format!(
        "{}\n[cursor {:?}, alternate screen {}]",
        s.contents(),
        s.cursor_position(),
        s.alternate_screen()
    )
}

/// How a program reads its terminal, which decides what one traced `read` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// One read takes a whole burst of typing (nvi reads into a large buffer): the reads
    /// in the history count the inputs the program has.
    Bursts,
    /// One read per byte (ncurses' `getch`, as sc reads its keys): the reads in the
    /// history count the bytes it has, so after a kill in the middle of an input the
    /// new run gets the rest of it, as a user who sees where the program stands would
    /// type it. The program must consume what was typed before the next is sent (the
    /// terminal's input queue is empty).
    Bytes,
}

/// Runs `t` through `inputs` (each sent as one write, or with [`Pacing::Bytes`] its part
/// the program has not read yet). `kills`: sorted input indices with delays (ms): once the
/// input of that index (or a later one) has been typed, wait the delay and SIGKILL the
/// program, then run the same command again on a new terminal.
pub fn drive(
    t: &Target<'_>,
    inputs: &[String],
    pacing: Pacing,
    kills: &[(usize, u64)],
    deadline: Duration,
) -> Result<Session> {
    // The input stream, and the offset just past each input, in the unit one read takes.
    let stream: Vec<u8> = inputs.concat().into_bytes();
    let ends: Vec<usize> = match pacing {
        Pacing::Bursts => (1..=inputs.len()).collect(),
        Pacing::Bytes => inputs
            .iter()
            .scan(0, |at, s| {
                *at += s.len();
                Some(*at)
            })
            .collect(),
    };
    let total = ends.last().copied().unwrap_or(0);
    let begin = |k: usize| if k == 0 { 0 } else { ends[k - 1] };
    let end = Instant::now() + deadline;
    let mut screen = vt100::Parser::new(ROWS, COLS, 0);
    let mut before_last = String::new();
    let mut runs = Vec::new();
    let mut pending: Vec<(usize, u64)> = kills.to_vec();
    let (_, mut traced) = trace_since(t.trace.as_deref(), u64::MAX)?;
    let quiet = Duration::from_millis(40);
    // Failure-free pacing: inputs sent so far.
    let mut sent_total = 0usize;
    'runs: loop {
        let mut p = Proc::spawn(t)?;
        // The input this run typed last, when (to detect one that is never read), and the
        // process's read counter then.
        let mut last_sent: Option<(usize, Instant, u64)> = None;
        loop {
            if Instant::now() > end {
                p.pump(&mut screen);
                bail!(
                    "deadline exceeded; screen:\n{}\nlast run's output: {:?}",
                    show(screen.screen()),
                    String::from_utf8_lossy(&p.out[p.out.len().saturating_sub(400)..])
                );
            }
            p.pump(&mut screen);
            if let Some(code) = p.exited()? {
                p.pump(&mut screen);
                let (trace, _) = trace_since(t.trace.as_deref(), traced)?;
                runs.push(Run {
                    out: std::mem::take(&mut p.out),
                    code: Some(code),
                    trace,
                });
                if code != 0 {
                    bail!("run ended with {code}; screen:\n{}", show(screen.screen()));
                }
                if !pending.is_empty() {
                    bail!("the run ended before the planned kills {pending:?} landed");
                }
                return Ok(Session {
                    runs,
                    screen,
                    before_last,
                });
            }
            // Idle: blocked reading the terminal, quiet, and (after typing) the typed
            // input was read (the process's read counter moved since).
            let read_since = last_sent.is_none_or(|(_, _, rc)| rchar(p.pid()) > rc);
            let drained = pacing == Pacing::Bursts
                || super::pipe_pending(std::os::fd::AsRawFd::as_raw_fd(&p.pty.slave)) == 0;
            let idle =
                read_since && drained && waiting_for_stdin(p.pid()) && p.last_out.elapsed() > quiet;
            if !idle {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            // Where in the input the program stands (inputs, or bytes: see `Pacing`).
            let at = match &t.trace {
                Some(path) => {
                    let all = oracle::parse(&String::from_utf8_lossy(
                        &std::fs::read(path).unwrap_or_default(),
                    ))?;
                    reads_in_history(&all)?
                }
                None => sent_total,
            };
            if let Some((want, since, _)) = last_sent {
                if at > want {
                    bail!("the trace shows {at} reads of the input, {want} were typed");
                }
                if at < want {
                    // Typed, not read yet (or read without a trace event: then never).
                    if since.elapsed() > Duration::from_secs(5) {
                        bail!(
                            "input up to {want} was typed 5 s ago and the program is \
                             waiting for input, but the trace shows {at} reads"
                        );
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            }
            if at >= total {
                // Everything typed: the last input ends the program.
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            // The input the program is in, and the part of it still to type.
            let k = ends
                .iter()
                .position(|&e| e > at)
                .unwrap_or(inputs.len() - 1);
            let keys: &[u8] = match pacing {
                Pacing::Bursts => inputs[k].as_bytes(),
                Pacing::Bytes => &stream[at..ends[k]],
            };
            if k + 1 == inputs.len() && at == begin(k) {
                before_last = show(screen.screen());
            }
            if std::env::var_os("DC_TEST_DEBUG").is_some() {
                eprintln!(
                    "send input {k} from {at}: {:?}",
                    String::from_utf8_lossy(keys)
                );
            }
            let rc = rchar(p.pid());
            p.send(keys)?;
            last_sent = Some((ends[k], Instant::now(), rc));
            sent_total = ends[k];
            if pending.first().is_some_and(|&(i, _)| i <= k) {
                let (_, delay) = pending.remove(0);
                std::thread::sleep(Duration::from_millis(delay));
                p.pump(&mut screen);
                p.kill()?;
                p.pump(&mut screen);
                let (trace, n) = trace_since(t.trace.as_deref(), traced)?;
                traced = n;
                runs.push(Run {
                    out: std::mem::take(&mut p.out),
                    code: None,
                    trace,
                });
                continue 'runs;
            }
        }
    }
}
