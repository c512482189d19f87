//! Test harness for `dc run` on real programs: spawns a command with its stdin and stdout
//! on pipes, drives it like a user who types the next line when it waits for input (it
//! is blocked in `read(0)` and its output ends with the prompt that asks for that line),
//! SIGKILLs it at planned points and runs the same command again until it finishes.

#![allow(dead_code)]

/// One `#[test]` per line, `name: f(args);`, each calling `f(args)` (an
/// `anyhow::Result`) unless Syscall User Dispatch is missing ([`sud_or_skip`]), and
/// panicking with the whole error chain if it fails. (`#[macro_use] mod common;`.)
#[allow(unused_macros)]
macro_rules! cases {
    ($($name:ident: $f:ident($($arg:expr),*);)*) => {
        $(
            #[test]
            fn $name() {
                if !common::sud_or_skip(stringify!($name)) {
                    return;
                }
                if let Err(e) = $f($($arg),*) {
                    panic!("{e:#}");
                }
            }
        )*
    };
}

pub mod apps;
pub mod dist;
pub mod pty;
pub mod screen;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use discount::oracle;

/// The `dc` binary under test.
pub fn dc_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dc"))
}

/// The shared object `dc run` preloads, as this build made it: cargo builds the library
/// for the tests into `deps/` and copies it next to the binary only for `cargo build`, so
/// the copy there may be stale. Tests pass this one (`DC_PRELOAD`).
pub fn preload() -> PathBuf {
    let dir = dc_bin().parent().unwrap_or(Path::new("."));
    let deps = dir.join("deps").join("libdc_preload.so");
    if deps.exists() {
        deps
    } else {
        dir.join("libdc_preload.so")
    }
}

/// Whether `dc run` can work here: Syscall User Dispatch (Linux 5.11+). A test that
/// cannot run records itself as skipped (never passes silently).
pub fn sud_or_skip(test: &str) -> bool {
    if discount::sud::available() {
        return true;
    }
    vista::testing::record_skip(
        test,
        "Syscall User Dispatch is not available on this kernel",
    )
    .expect("record the skip in RIO_SKIP_LOG");
    false
}

/// Output of one run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Stdout.
    pub out: Vec<u8>,
    /// Exit code (None: killed).
    pub code: Option<i32>,
    /// The events this run appended to the trace.
    pub trace: Vec<oracle::Event>,
}

impl Run {
    /// For [`oracle::check_resumed`].
    pub fn record(&self) -> oracle::RunRecord<'_> {
        oracle::RunRecord {
            out: &self.out,
            trace: &self.trace,
            killed: self.code.is_none(),
        }
    }
}

/// Reads the trace from byte `from` on: the part one run appended.
pub fn trace_since(trace: Option<&Path>, from: u64) -> Result<(Vec<oracle::Event>, u64)> {
    match trace {
        Some(p) => Ok(oracle::trace_since(p, from)?),
        None => Ok((Vec::new(), 0)),
    }
}

/// The kill plan's generator: seeded from DC_TEST_SEED if set, else `seed`, and the seed
/// printed so that a failing plan can be rerun.
pub fn plan_rng(seed: u64) -> rio_prng::Rng {
    let s = rio_prng::seed_from_env("DC_TEST_SEED", seed);
    eprintln!("kill-plan seed {s} (set DC_TEST_SEED to reproduce)");
    rio_prng::Rng::new(s)
}

/// What to run and where.
pub struct Target<'a> {
    /// The command (`dc run ... -- PROGRAM ...`, or PROGRAM itself for the reference).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: &'a Path,
    pub stderr: &'a Path,
    /// The event trace: each [`Run`] gets the part it appended.
    pub trace: Option<PathBuf>,
    /// Called after each kill, before the next run.
    pub after_kill: Option<&'a dyn Fn() -> Result<()>>,
}

pub struct Proc {
    child: Child,
    out: std::process::ChildStdout,
    buf: Vec<u8>,
    closed: bool,
}

impl Proc {
    fn spawn(t: &Target<'_>) -> Result<Proc> {
        let errf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.stderr)?;
        let mut cmd = Command::new(&t.argv[0]);
        cmd.args(&t.argv[1..])
            .current_dir(t.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(errf));
        cmd.env("DC_PRELOAD", preload());
        for (k, v) in &t.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("spawn {:?}", t.argv))?;
        let out = child.stdout.take().context("stdout")?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&out);
        // SAFETY: setting O_NONBLOCK on our end of the pipe.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Ok(Proc {
            child,
            out,
            buf: Vec::new(),
            closed: false,
        })
    }

    fn pump(&mut self) {
        let mut chunk = [0u8; 4096];
        while !self.closed {
            match self.out.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<()> {
        // One write, so a read never sees half of the line (like a terminal).
        let s = self.child.stdin.as_mut().context("stdin")?;
        s.write_all(format!("{line}\n").as_bytes())?;
        s.flush()?;
        Ok(())
    }

    fn kill(self) -> Result<Run> {
        // SAFETY: sending SIGKILL to our own child (`dc run` executed the program in it).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.finish()
    }

    fn finish(mut self) -> Result<Run> {
        self.child.stdin.take();
        let st = self.child.wait()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.out);
        // SAFETY: clearing O_NONBLOCK on our end of the pipe.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        let _ = self.out.read_to_end(&mut self.buf);
        Ok(Run {
            out: self.buf,
            code: st.code(),
            trace: Vec::new(),
        })
    }
}

pub use dc_drive::waiting_for_stdin;

/// `dc run OPTIONS -- PROGRAM ARGS` with the `dc` binary under test.
pub fn dc_run_argv(options: &[String], program: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec![dc_bin().display().to_string(), "run".into()];
    v.extend(options.iter().cloned());
    v.push("--".into());
    v.push(program.into());
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// The `DC_*` settings every crash test gives `dc run` ([`apps::DC_ENV`]), as an
/// environment.
pub fn dc_env() -> Vec<(String, String)> {
    apps::DC_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The number in a prompt `<name>[N]> ` that `out` ends with.
pub fn prompt(out: &[u8], name: &str) -> Option<usize> {
    let s = std::str::from_utf8(out).ok()?;
    let s = s.strip_suffix("]> ")?;
    let i = s.rfind(&format!("{name}["))?;
    s[i + name.len() + 1..].parse().ok()
}

/// Drives `t` through `inputs`: when the program is blocked reading stdin and its output
/// ends with prompt N (`<name>[N]> `), it gets input N (stdin is closed after the last).
/// `kills` maps an input index to a delay: after sending that input, wait the delay and
/// SIGKILL the program, then run the same command again (each entry used once). Returns
/// every run's output and trace.
pub fn drive(
    t: &Target<'_>,
    name: &str,
    inputs: &[String],
    kills: &[(usize, u64)],
    deadline: Duration,
) -> Result<Vec<Run>> {
    let end = Instant::now() + deadline;
    let mut runs = Vec::new();
    let mut pending: Vec<(usize, u64)> = kills.to_vec();
    let (_, mut traced) = trace_since(t.trace.as_deref(), u64::MAX)?;
    'runs: loop {
        let mut p = Proc::spawn(t)?;
        let mut answered_len = usize::MAX;
        loop {
            if Instant::now() > end {
                let r = p.kill()?;
                bail!(
                    "deadline exceeded; last run's output: {:?}",
                    String::from_utf8_lossy(&r.out)
                );
            }
            p.pump();
            if p.child.try_wait()?.is_some() {
                let mut r = p.finish()?;
                r.trace = trace_since(t.trace.as_deref(), traced)?.0;
                let code = r.code;
                runs.push(r);
                if code == Some(0) && pending.is_empty() {
                    return Ok(runs);
                }
                if code == Some(0) {
                    bail!("the run ended before the planned kills {pending:?} landed");
                }
                bail!(
                    "run ended with {code:?}; stderr: {}",
                    std::fs::read_to_string(t.stderr).unwrap_or_default()
                );
            }
            if waiting_for_stdin(p.child.id()) {
                p.pump();
                let out = &p.buf;
                if out.len() != answered_len {
                    if let Some(n) = prompt(out, name) {
                        answered_len = out.len();
                        if n < inputs.len() {
                            p.send(&inputs[n])?;
                        } else {
                            p.child.stdin.take();
                        }
                        if let Some(i) = pending.iter().position(|&(k, _)| k == n) {
                            let (_, delay) = pending.remove(i);
                            std::thread::sleep(Duration::from_millis(delay));
                            let mut r = p.kill()?;
                            (r.trace, traced) = trace_since(t.trace.as_deref(), traced)?;
                            runs.push(r);
                            if let Some(f) = t.after_kill {
                                f()?;
                            }
                            continue 'runs;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Every regular file directly in `dir` (name, contents), sorted.
pub fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_file() {
                v.push((
                    PathBuf::from(e.file_name()),
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    v.sort();
    v
}

pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Drives `t` through `inputs` on a pipe, for a program that reads its standard input
/// one byte at a time (unbuffered stdin, as GNU ed does when it is not a terminal): the
/// inputs are one stream of bytes, and each `inputs[k]` (its own newlines included) is
/// sent as one write when the program is blocked reading an empty pipe.
///
/// Which byte the program waits for is, for a run under Discount Checking, read from the
/// event trace: the number of `read` events in the history that survives (each a read of
/// one byte; a recovery cuts the history back to its checkpoint; logged input replayed
/// counts as read), so after a kill in the middle of a line the new run gets the rest of
/// that line, as a user who sees where the program stands would type it, and input the
/// program kept is never sent twice. After each write the program must consume exactly
/// that write (the trace shows it) before anything else is sent, which also checks that
/// every byte read is traced. For the failure-free run (`t.trace` is None) it is the
/// bytes sent so far.
///
/// `kills`: sorted input indices with delays (ms): once the input of that index (or a
/// later one, or its rest) has been sent, wait the delay and SIGKILL the program, then
/// run the same command again (each entry used once). Returns every run's output and
/// trace.
pub fn drive_bytes(
    t: &Target<'_>,
    inputs: &[String],
    kills: &[(usize, u64)],
    deadline: Duration,
) -> Result<Vec<Run>> {
    let end = Instant::now() + deadline;
    let stream: Vec<u8> = inputs.concat().into_bytes();
    // Byte offset just past each input.
    let ends: Vec<usize> = inputs
        .iter()
        .scan(0, |at, s| {
            *at += s.len();
            Some(*at)
        })
        .collect();
    let mut runs = Vec::new();
    let mut pending: Vec<(usize, u64)> = kills.to_vec();
    let (_, mut traced) = trace_since(t.trace.as_deref(), u64::MAX)?;
    // Failure-free pacing: bytes sent so far.
    let mut sent_total = 0usize;
    'runs: loop {
        let mut p = Proc::spawn(t)?;
        let stdin_fd = std::os::fd::AsRawFd::as_raw_fd(p.child.stdin.as_ref().context("stdin")?);
        // What this run sent last: the offset the program must reach, and when.
        let mut expect: Option<(usize, Instant)> = None;
        loop {
            if Instant::now() > end {
                let r = p.kill()?;
                bail!(
                    "deadline exceeded; last run's output: {:?}",
                    String::from_utf8_lossy(&r.out[r.out.len().saturating_sub(400)..])
                );
            }
            p.pump();
            if p.child.try_wait()?.is_some() {
                let mut r = p.finish()?;
                r.trace = trace_since(t.trace.as_deref(), traced)?.0;
                let code = r.code;
                runs.push(r);
                if code == Some(0) && pending.is_empty() {
                    return Ok(runs);
                }
                if code == Some(0) {
                    bail!("the run ended before the planned kills {pending:?} landed");
                }
                bail!(
                    "run ended with {code:?}; stderr: {}",
                    std::fs::read_to_string(t.stderr).unwrap_or_default()
                );
            }
            let pid = p.child.id();
            let idle =
                |p: &Proc| waiting_for_stdin(pid) && dc_drive::pending(&stdin_fd) == 0 && !p.closed;
            if !idle(&p) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            // Still idle a moment later, having read nothing since: not a read that is
            // returning the last byte right now.
            let rc = dc_drive::rchar(pid);
            std::thread::sleep(Duration::from_millis(3));
            if !idle(&p) || dc_drive::rchar(pid) != rc {
                continue;
            }
            let at = match &t.trace {
                Some(path) => {
                    let all = oracle::parse(&String::from_utf8_lossy(
                        &std::fs::read(path).unwrap_or_default(),
                    ))?;
                    pty::reads_in_history(&all)?
                }
                None => sent_total,
            };
            if let Some((want, since)) = expect {
                if at > want {
                    bail!("the program read {at} bytes of input, {want} were sent");
                }
                if at < want {
                    // Sent and read, not yet traced (or read without a trace event).
                    if since.elapsed() > Duration::from_secs(5) {
                        bail!(
                            "{want} bytes of input were sent and read 5 s ago, but the \
                             trace shows {at} reads"
                        );
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
            if at >= stream.len() {
                // Everything sent: the last input ends the program.
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let k = ends
                .iter()
                .position(|&e| e > at)
                .unwrap_or(inputs.len() - 1);
            if std::env::var_os("DC_TEST_DEBUG").is_some() {
                eprintln!(
                    "send input {k} from byte {at}: {:?}",
                    lossy(&stream[at..ends[k]])
                );
            }
            let s = p.child.stdin.as_mut().context("stdin")?;
            s.write_all(&stream[at..ends[k]])?;
            s.flush()?;
            expect = Some((ends[k], Instant::now()));
            sent_total = ends[k];
            if pending.first().is_some_and(|&(i, _)| i <= k) {
                let (_, delay) = pending.remove(0);
                std::thread::sleep(Duration::from_millis(delay));
                let mut r = p.kill()?;
                (r.trace, traced) = trace_since(t.trace.as_deref(), traced)?;
                runs.push(r);
                if let Some(f) = t.after_kill {
                    f()?;
                }
                continue 'runs;
            }
        }
    }
}

/// The checks every crash test of a real program makes beyond `check_resumed` (`m`): the
/// commit invariant over all runs' traces (`all`; thesis Theorem 2), one recovery per kill,
/// and under CPVS at most one write repeated per recovery (it commits before every visible
/// event, so only the interrupted write can be written again).
pub fn check_runs(
    name: &str,
    protocol: &str,
    all: &[oracle::Event],
    m: &oracle::Resumption,
    kills: usize,
    state: &Path,
    show: &str,
) -> Result<()> {
    // The program finished: every unlink it made has been carried out, so Discount
    // Checking's graveyard (delayed unlinks, STATE/grave) holds nothing any more.
    let graves: Vec<String> = std::fs::read_dir(state.join("grave"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        graves.is_empty(),
        "{name}: files the program unlinked are still in the graveyard after it finished: {graves:?}"
    );
    let bad = oracle::check_one(all);
    ensure!(bad.is_empty(), "{name}: commit invariant violated: {bad:?}");
    ensure!(
        m.recoveries == kills,
        "{name}: {} recoveries for {kills} kills\n{show}",
        m.recoveries
    );
    if protocol == "cpvs" {
        let maxv = all
            .iter()
            .filter_map(|e| match e {
                oracle::Event::Visible { len, .. } => Some(*len),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        ensure!(
            m.output.repeated.iter().all(|&r| r <= maxv),
            "{name}: repeated {:?} > one write ({maxv})",
            m.output.repeated
        );
    }
    Ok(())
}
