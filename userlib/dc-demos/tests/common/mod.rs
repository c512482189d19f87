//! Test harness: runs the demo programs, kills them with SIGKILL at chosen points, runs
//! them again until they finish, and collects the output of every run.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use discount::oracle;

/// Output of one run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Stdout.
    pub out: Vec<u8>,
    /// Exit code (None: killed).
    pub code: Option<i32>,
    /// The events this run appended to the trace ([`Target::trace`]; empty without one).
    pub trace: Vec<oracle::Event>,
}

impl Run {
    /// Ended by a signal (our SIGKILL), not by exiting.
    pub fn killed(&self) -> bool {
        self.code.is_none()
    }

    /// For [`oracle::check_resumed`].
    pub fn record(&self) -> oracle::RunRecord<'_> {
        oracle::RunRecord {
            out: &self.out,
            trace: &self.trace,
            killed: self.killed(),
        }
    }
}

/// Reads the trace from byte `from` on: the part one run appended.
fn trace_since(trace: Option<&Path>, from: u64) -> Result<(Vec<oracle::Event>, u64)> {
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

pub struct Proc {
    child: Child,
    out: std::process::ChildStdout,
    buf: Vec<u8>,
    last: Instant,
    closed: bool,
}

impl Proc {
    pub fn spawn(
        bin: &Path,
        args: &[&str],
        env: &[(String, String)],
        cwd: &Path,
        stderr: &Path,
    ) -> Result<Proc> {
        let errf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr)?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(errf));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
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
            last: Instant::now(),
            closed: false,
        })
    }

    /// Reads everything the program has written so far (without blocking).
    pub fn pump(&mut self) {
        let mut chunk = [0u8; 4096];
        while !self.closed {
            match self.out.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.last = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// Output so far (call `pump` first).
    pub fn output(&self) -> &[u8] {
        &self.buf
    }

    pub fn send(&mut self, line: &str) -> Result<()> {
        // One write, so the line reaches the program whole (like a terminal in canonical
        // mode): a read never sees half of it.
        let s = self.child.stdin.as_mut().context("stdin")?;
        s.write_all(format!("{line}\n").as_bytes())?;
        s.flush()?;
        Ok(())
    }

    /// Bytes sent to the program's stdin that it has not read yet (`FIONREAD`).
    pub fn unread_input(&self) -> usize {
        use std::os::fd::AsRawFd;
        let Some(s) = self.child.stdin.as_ref() else {
            return 0;
        };
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD on our own end of the pipe writes one int into the local.
        if unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
            return 0;
        }
        n as usize
    }

    pub fn close_stdin(&mut self) {
        self.child.stdin.take();
    }

    pub fn kill(self) -> Result<Run> {
        // SAFETY: sending SIGKILL to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        self.finish()
    }

    pub fn finish(mut self) -> Result<Run> {
        let st = self.child.wait()?;
        // The pipe's write end is closed now: drain to EOF.
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

    pub fn try_done(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

/// Whether process `pid` is blocked in `read(0, ...)`, i.e. waiting for the user
/// (`/proc/<pid>/syscall` shows the system call a blocked process is in).
pub fn waiting_for_stdin(pid: i32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let mut f = s.split_whitespace();
    f.next() == Some("0") && f.next() == Some("0x0")
}

/// What to run and where.
pub struct Target<'a> {
    pub bin: &'a Path,
    pub args: &'a [&'a str],
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    pub stderr: &'a Path,
    /// The program's event trace (`DC_TRACE`): each [`Run`] gets the part it appended.
    pub trace: Option<&'a Path>,
    /// Called after each kill, before the next run (the negative control throws the
    /// checkpoint image away there).
    pub after_kill: Option<&'a dyn Fn() -> Result<()>>,
}

impl Target<'_> {
    fn spawn(&self) -> Result<Proc> {
        Proc::spawn(self.bin, self.args, self.env, self.cwd, self.stderr)
    }

    fn killed(&self) -> Result<()> {
        match self.after_kill {
            Some(f) => f(),
            None => Ok(()),
        }
    }
}

/// Where to kill a run of a program that is not interactive: once it has written
/// `after_bytes` bytes (0: at once), `delay_ms` later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub after_bytes: usize,
    pub delay_ms: u64,
}

/// The prompt number if `out` ends with `kv[N]> `.
pub fn prompt(out: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(out).ok()?;
    let s = s.strip_suffix("]> ")?;
    let i = s.rfind("kv[")?;
    s[i + 3..].parse().ok()
}

/// Drives the key-value shell through `inputs` (the last should be `quit`), like a user
/// who types the next command when the shell shows a prompt and waits for input (blocked
/// reading stdin: while it re-executes from its input log after a recovery it prints
/// prompts without waiting, and typing then would be typing ahead). `kills` maps an input
/// index to a delay: after sending that input, wait the delay and SIGKILL the shell, then
/// start it again (each entry is used once). Returns the output of every run.
pub fn drive_kv(
    t: &Target<'_>,
    inputs: &[String],
    kills: &[(usize, u64)],
    deadline: Duration,
) -> Result<Vec<Run>> {
    let end = Instant::now() + deadline;
    let mut runs = Vec::new();
    let mut pending: Vec<(usize, u64)> = kills.to_vec();
    let (_, mut traced) = trace_since(t.trace, u64::MAX)?;
    'runs: loop {
        let mut p = t.spawn()?;
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
            if p.try_done()? {
                let mut r = p.finish()?;
                r.trace = trace_since(t.trace, traced)?.0;
                let code = r.code;
                runs.push(r);
                if code == Some(0) && pending.is_empty() {
                    return Ok(runs);
                }
                if code == Some(0) {
                    bail!(
                        "the run ended before the planned kills {pending:?} (at input numbers) landed"
                    );
                }
                bail!(
                    "run ended with {:?}; stderr in {}",
                    code,
                    t.stderr.display()
                );
            }
            // Blocked reading stdin means everything it printed before is in the pipe:
            // drain it again, then answer the prompt it ends with.
            if waiting_for_stdin(p.pid()) {
                p.pump();
                let out = p.output();
                if out.len() != answered_len {
                    if let Some(n) = prompt(out) {
                        answered_len = out.len();
                        if n < inputs.len() {
                            p.send(&inputs[n])?;
                        } else {
                            p.close_stdin();
                        }
                        if let Some(i) = pending.iter().position(|&(k, _)| k == n) {
                            let (_, delay) = pending.remove(i);
                            // The kill lands once the program has read the whole input
                            // (then, `delay` later, anywhere in its processing): a
                            // program reading one byte at a time (the C notes) could
                            // otherwise be killed halfway through a line, which a -LOG
                            // protocol replays from its input log while this driver,
                            // which sends whole lines, would send the line again.
                            let t0 = Instant::now();
                            while p.unread_input() > 0 && t0.elapsed() < Duration::from_secs(5) {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            std::thread::sleep(Duration::from_millis(delay));
                            let mut r = p.kill()?;
                            (r.trace, traced) = trace_since(t.trace, traced)?;
                            runs.push(r);
                            t.killed()?;
                            continue 'runs;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Runs a program to completion, killing it as `kills` says, one kill per run (each
/// relative to the start of its run), restarting it after each kill. Fails if a run ends
/// by itself before its kill.
pub fn run_with_kills(t: &Target<'_>, kills: &[Kill], deadline: Duration) -> Result<Vec<Run>> {
    let end = Instant::now() + deadline;
    let mut runs = Vec::new();
    let mut plan = kills.iter();
    let (_, mut traced) = trace_since(t.trace, u64::MAX)?;
    loop {
        let mut p = t.spawn()?;
        p.close_stdin();
        let kill = plan.next().copied();
        let mut kill_at: Option<Instant> = None;
        loop {
            if Instant::now() > end {
                let _ = p.kill();
                bail!("deadline exceeded");
            }
            p.pump();
            if p.try_done()? {
                let mut r = p.finish()?;
                r.trace = trace_since(t.trace, traced)?.0;
                let code = r.code;
                runs.push(r);
                if code != Some(0) {
                    bail!("run ended with {code:?}; stderr in {}", t.stderr.display());
                }
                if let Some(k) = kill {
                    bail!(
                        "run {} ended by itself before its kill {k:?} landed ({} bytes written)",
                        runs.len() - 1,
                        runs.last().map_or(0, |r| r.out.len())
                    );
                }
                return Ok(runs);
            }
            if let Some(k) = kill {
                if kill_at.is_none() && p.output().len() >= k.after_bytes {
                    kill_at = Some(Instant::now() + Duration::from_millis(k.delay_ms));
                }
            }
            if kill_at.is_some_and(|at| Instant::now() >= at) {
                let mut r = p.kill()?;
                (r.trace, traced) = trace_since(t.trace, traced)?;
                runs.push(r);
                t.killed()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Every regular file under `dir` (relative path, contents), sorted.
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

pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
