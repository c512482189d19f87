//! The host driver: boots a guest, loads rio.ko, runs the guest fuzzer for a seed, crashes
//! the kernel in some runs and verifies the recovered arena, scans the console for kernel
//! splats, and shrinks failing op lists by delta debugging.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use riovm::{Artifacts, Disk, Vm, VmConfig};

use crate::ops::IndexSet;
use crate::prng::Rng;

/// What can go wrong in the harness itself (not a finding about rio.ko).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The VM runner failed.
    #[error(transparent)]
    Vm(#[from] riovm::VmError),
    /// Anything else in the harness.
    #[error("{0}")]
    Harness(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, HostError>;

/// Console markers of a kernel problem.
pub const SPLATS: [&str; 8] = [
    "BUG:",
    "WARNING:",
    "KASAN",
    "lockdep",
    "possible circular locking",
    "INFO: task",
    "UBSAN",
    "Oops",
];

/// The first kernel splat in `text`, with the lines after it.
pub fn find_splat(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| SPLATS.iter().any(|s| l.contains(s)))?;
    Some(lines[i..lines.len().min(i + 40)].join("\n"))
}

/// How the fuzzing is set up (the same for every seed).
#[derive(Clone, Debug)]
pub struct FuzzConfig {
    /// Ops per run.
    pub ops: u32,
    /// Noise threads in normal runs (never while shrinking).
    pub noise: bool,
    /// Extra rio.ko parameters (`rio-load` arguments).
    pub module_params: String,
    /// Extra `rio-fuzz` flags (e.g. `--max-user-objects 3` to match the parameters).
    pub fuzz_flags: String,
    /// A guest run may take this long.
    pub run_timeout: Duration,
    /// Guest memory, MiB.
    pub memory_mib: u64,
}

impl Default for FuzzConfig {
    fn default() -> Self {
        FuzzConfig {
            ops: 300,
            noise: true,
            module_params: String::new(),
            fuzz_flags: String::new(),
            run_timeout: Duration::from_secs(300),
            memory_mib: 512,
        }
    }
}

/// One run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Seed.
    pub seed: u64,
    /// Ops generated.
    pub ops: u32,
    /// Only these op indices (all if `None`).
    pub only: Option<IndexSet>,
    /// Noise threads.
    pub noise: bool,
    /// With a backing disk.
    pub backing: bool,
    /// Crash the kernel this many milliseconds after the fuzzer starts.
    pub panic_after: Option<u64>,
}

impl RunSpec {
    /// The run of `seed`: whether it has a backing disk and whether (and when) it panics
    /// follow from the seed, so a seed reproduces its run.
    pub fn for_seed(seed: u64, fc: &FuzzConfig, panic_every: u64) -> RunSpec {
        let mut r = Rng::stream(seed, 99);
        let panic = panic_every > 0 && seed.is_multiple_of(panic_every);
        RunSpec {
            seed,
            ops: fc.ops,
            only: None,
            noise: fc.noise,
            backing: seed % 2 == 1,
            // Runs of 300 ops take one to a few seconds under TCG; with riofs, mounting and
            // the setup take a second or two more, and the ops are slower.
            panic_after: panic.then(|| {
                if fc.fuzz_flags.contains("--riofs") {
                    1500 + r.below(u64::from(fc.ops) * 15)
                } else {
                    150 + r.below(u64::from(fc.ops) * 5)
                }
            }),
        }
    }

    /// The `rio-fuzz` flags of this run (seed, ops, selection, noise, backing, extras).
    pub fn flags(&self, fc: &FuzzConfig) -> String {
        let mut s = format!("--seed {} --ops {}", self.seed, self.ops);
        if let Some(o) = &self.only {
            s.push_str(&format!(" --only {o}"));
        }
        if self.noise {
            s.push_str(" --noise");
        }
        if self.backing {
            s.push_str(" --backing");
        }
        if !fc.fuzz_flags.is_empty() {
            s.push(' ');
            s.push_str(&fc.fuzz_flags);
        }
        s
    }

    /// The guest command that reproduces this run (on a loaded, formatted rio.ko).
    pub fn guest_command(&self, fc: &FuzzConfig) -> String {
        format!("rio-fuzz run {} --fresh", self.flags(fc))
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every answer matched the model (and the recovered arena, after a crash).
    Pass,
    /// An answer differed from the model.
    Mismatch {
        /// The guest's report.
        report: String,
        /// Op kind and outcome classes (shrinking keeps this).
        signature: String,
        /// The failing op.
        op: u32,
    },
    /// An op or the whole run did not finish in time.
    Hang {
        /// What the guest or the harness saw.
        report: String,
    },
    /// The kernel printed a splat.
    Splat {
        /// The console lines.
        text: String,
    },
    /// After the crash, the recovered arena differs from the model.
    VerifyFailed {
        /// The guest's report.
        report: String,
    },
}

impl Verdict {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        *self == Verdict::Pass
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The run.
    pub spec: RunSpec,
    /// Its verdict.
    pub verdict: Verdict,
    /// Ops acknowledged.
    pub acked: u64,
    /// The kernel was crashed on purpose (and recovered).
    pub crashed: bool,
    /// Wall time.
    pub took: Duration,
}

/// Parses a guest report: `(op index, signature)` of a `MISMATCH` block.
pub fn parse_mismatch(text: &str) -> Option<(u32, String)> {
    let i = text.find("MISMATCH seed ")?;
    let rest = &text[i..];
    let op: u32 = rest
        .split(" op ")
        .nth(1)?
        .split(':')
        .next()?
        .trim()
        .parse()
        .ok()?;
    let sig = rest
        .lines()
        .find_map(|l| l.trim().strip_prefix("signature: "))?
        .trim()
        .to_string();
    Some((op, sig))
}

/// The acknowledgements in a log excerpt: their count and the last op index.
pub fn parse_acks(log: &str) -> (u64, Option<u32>) {
    let mut n = 0;
    let mut last = None;
    for l in log.lines() {
        if let Some(v) = l
            .trim()
            .strip_prefix("A ")
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            n += 1;
            last = Some(v);
        }
    }
    (n, last)
}

/// A guest that runs one seed after another (reused while runs end cleanly).
pub struct Session {
    artifacts: Artifacts,
    root: PathBuf,
    fc: FuzzConfig,
    vm: Option<Vm>,
    backing: bool,
    boots: u64,
}

fn read_from(path: &Path, from: u64) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(b.get(from as usize..).unwrap_or_default()).into_owned())
        .unwrap_or_default()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

impl Session {
    /// A session keeping its VMs under `root`.
    pub fn new(artifacts: Artifacts, root: impl Into<PathBuf>, fc: FuzzConfig) -> Session {
        Session {
            artifacts,
            root: root.into(),
            fc,
            vm: None,
            backing: false,
            boots: 0,
        }
    }

    fn workdir(&self) -> PathBuf {
        self.root.join(format!("vm{}", self.boots))
    }

    fn load_params(&self) -> String {
        let mut p = String::new();
        if self.backing {
            p.push_str("backing=/dev/vda ");
        }
        p.push_str(&self.fc.module_params);
        p
    }

    /// Boots a fresh guest (cold, new RAM file), loads rio.ko and formats the arena.
    fn boot(&mut self, backing: bool) -> Result<()> {
        self.vm = None;
        if self.boots > 0 {
            let _ = std::fs::remove_dir_all(self.workdir());
        }
        self.boots += 1;
        self.backing = backing;
        let dir = self.workdir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| HostError::Harness(format!("create {}: {e}", dir.display())))?;
        let mut cfg = VmConfig::new(self.artifacts.clone(), &dir);
        cfg.memory_mib = self.fc.memory_mib;
        cfg.boot_timeout = Duration::from_secs(120);
        if backing {
            let disk = dir.join("disk.img");
            riovm::create_disk(&disk, 96 << 20)?;
            cfg.disks = vec![Disk { path: disk }];
        }
        let mut vm = Vm::start(cfg)?;
        let params = self.load_params();
        vm.sh(&format!("rio-load {params}"))?;
        vm.sh("rio format --force")?;
        self.vm = Some(vm);
        Ok(())
    }

    /// The current guest, if one is up (after a passing run it stays up, with rio.ko loaded).
    pub fn guest(&mut self) -> Option<&mut Vm> {
        self.vm.as_mut()
    }

    fn vm(&mut self) -> Result<&mut Vm> {
        self.vm
            .as_mut()
            .ok_or_else(|| HostError::Harness("no VM".into()))
    }

    /// Runs one seed.
    pub fn run(&mut self, spec: &RunSpec) -> Result<RunResult> {
        let start = Instant::now();
        if self.vm.is_none() || self.backing != spec.backing || spec.panic_after.is_some() {
            self.boot(spec.backing)?;
        }
        let r = match spec.panic_after {
            None => self.run_plain(spec),
            Some(k) => self.run_crash(spec, k),
        };
        match r {
            Ok((verdict, acked, crashed)) => {
                if !verdict.passed() {
                    // Do not reuse a guest that failed: the next run boots a fresh one.
                    self.vm = None;
                }
                Ok(RunResult {
                    spec: spec.clone(),
                    verdict,
                    acked,
                    crashed,
                    took: start.elapsed(),
                })
            }
            Err(e) => {
                self.vm = None;
                Err(e)
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        riovm::workload_log_path(&self.workdir())
    }

    fn run_plain(&mut self, spec: &RunSpec) -> Result<(Verdict, u64, bool)> {
        let log = self.log_path();
        let log0 = file_len(&log);
        let timeout = self.fc.run_timeout;
        let cmd = format!(
            "rio-fuzz run {} --fresh --log /dev/ttyS2 --deadline {}",
            spec.flags(&self.fc),
            timeout.as_secs().saturating_sub(10).max(10)
        );
        let vm = self.vm()?;
        let con0 = vm.console().len();
        let out = match vm.run_timeout(&cmd, timeout) {
            Ok(o) => o,
            Err(riovm::VmError::Timeout { console_tail, .. }) => {
                let console = vm.console();
                let acked = parse_acks(&read_from(&log, log0)).0;
                if let Some(text) = find_splat(console.get(con0..).unwrap_or_default()) {
                    return Ok((Verdict::Splat { text }, acked, false));
                }
                return Ok((
                    Verdict::Hang {
                        report: format!(
                            "the guest run did not finish in {timeout:?}:\n{console_tail}"
                        ),
                    },
                    acked,
                    false,
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let console = vm.console();
        let acked = parse_acks(&read_from(&log, log0)).0;
        if let Some(text) = find_splat(console.get(con0..).unwrap_or_default()) {
            return Ok((Verdict::Splat { text }, acked, false));
        }
        Ok((
            self.judge(&out.stdout_str(), &out.stderr_str(), out.status)?,
            acked,
            false,
        ))
    }

    fn judge(&self, stdout: &str, stderr: &str, status: i32) -> Result<Verdict> {
        match status {
            0 => Ok(Verdict::Pass),
            1 => {
                if let Some((op, signature)) = parse_mismatch(stdout) {
                    Ok(Verdict::Mismatch {
                        report: stdout.trim().to_string(),
                        signature,
                        op,
                    })
                } else if stdout.contains("hang:") {
                    Ok(Verdict::Hang {
                        report: format!("{}\n{}", stdout.trim(), stderr.trim()),
                    })
                } else {
                    Ok(Verdict::Mismatch {
                        report: format!("{}\n{}", stdout.trim(), stderr.trim()),
                        signature: "noise".into(),
                        op: u32::MAX,
                    })
                }
            }
            s => Err(HostError::Harness(format!(
                "rio-fuzz exited {s}: {}{}",
                stdout.trim(),
                stderr.trim()
            ))),
        }
    }

    fn run_crash(&mut self, spec: &RunSpec, delay_ms: u64) -> Result<(Verdict, u64, bool)> {
        let log = self.log_path();
        let log0 = file_len(&log);
        let timeout = self.fc.run_timeout;
        // The crash comes from a shell started with the fuzzer that sleeps the seed's delay:
        // it lands at a random point of the history, in the middle of an op or between two.
        let cmd = format!(
            "(sleep {}.{:03}; echo c > /proc/sysrq-trigger) & rio-fuzz run {} --fresh --log /dev/ttyS2 --deadline {} > /tmp/fuzz.out 2>&1",
            delay_ms / 1000,
            delay_ms % 1000,
            spec.flags(&self.fc),
            timeout.as_secs().saturating_sub(10).max(10)
        );
        let vm = self.vm()?;
        let con0 = vm.console().len();
        vm.spawn(&cmd)?;
        match vm.wait_console(
            "Kernel panic",
            Duration::from_millis(delay_ms) + Duration::from_secs(60),
        ) {
            Ok(()) => {}
            Err(riovm::VmError::Timeout { console_tail, .. }) => {
                let acked = parse_acks(&read_from(&log, log0)).0;
                return Ok((
                    Verdict::Hang {
                        report: format!("the kernel did not panic on sysrq:\n{console_tail}"),
                    },
                    acked,
                    false,
                ));
            }
            Err(e) => return Err(e.into()),
        }
        vm.wait_reboot(Duration::from_secs(180))?;
        // Splats before the deliberate crash count; the crash itself does not.
        let console = vm.console();
        let before = console.get(con0..).unwrap_or_default();
        let before = before
            .split("sysrq: Trigger a crash")
            .next()
            .unwrap_or(before);
        let text = read_from(&log, log0);
        let (acked, last) = parse_acks(&text);
        if let Some(text) = find_splat(before) {
            return Ok((Verdict::Splat { text }, acked, true));
        }
        // A mismatch before the crash (its report went to the log port too).
        let report: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("F "))
            .map(|l| l.trim_end())
            .collect();
        if !report.is_empty() {
            let report = report.join("\n");
            let (op, signature) = parse_mismatch(&report).unwrap_or((u32::MAX, "unknown".into()));
            return Ok((
                Verdict::Mismatch {
                    report,
                    signature,
                    op,
                },
                acked,
                true,
            ));
        }
        let con1 = console.len();
        let params = self.load_params();
        let fc = self.fc.clone();
        let vm = self.vm()?;
        vm.sh(&format!("rio-load {params}"))?;
        let last = last.map_or(String::new(), |l| format!(" --last-acked {l}"));
        let out = vm.run_timeout(
            &format!("rio-fuzz verify {}{last}", spec.flags(&fc)),
            Duration::from_secs(120),
        )?;
        let console = vm.console();
        if let Some(text) = find_splat(console.get(con1..).unwrap_or_default()) {
            return Ok((Verdict::Splat { text }, acked, true));
        }
        match out.status {
            0 => Ok((Verdict::Pass, acked, true)),
            1 => Ok((
                Verdict::VerifyFailed {
                    report: out.stdout_str().trim().to_string(),
                },
                acked,
                true,
            )),
            s => Err(HostError::Harness(format!(
                "rio-fuzz verify exited {s}: {}{}",
                out.stdout_str(),
                out.stderr_str()
            ))),
        }
    }
}

/// Limits of a shrink.
#[derive(Clone, Copy, Debug)]
pub struct ShrinkBudget {
    /// Guest runs at most.
    pub max_runs: u32,
    /// Time at most.
    pub max_time: Duration,
}

/// Delta debugging (ddmin, Zeller): the smallest list of op indices (found within the
/// budget) whose run still fails with the same signature. Shrinking runs without noise.
pub fn shrink(
    sess: &mut Session,
    failed: &RunSpec,
    op: u32,
    signature: &str,
    budget: ShrinkBudget,
    mut progress: impl FnMut(&str),
) -> Result<(IndexSet, u32)> {
    let start = Instant::now();
    let mut runs = 0u32;
    let mut cur: Vec<u32> = (0..=op.min(failed.ops.saturating_sub(1)))
        .filter(|i| failed.only.as_ref().is_none_or(|o| o.0.contains(i)))
        .collect();
    let test = |sess: &mut Session, cand: &[u32], runs: &mut u32| -> Result<bool> {
        *runs += 1;
        let mut s = failed.clone();
        s.only = Some(IndexSet(cand.iter().copied().collect()));
        s.noise = false;
        s.panic_after = None;
        let r = sess.run(&s)?;
        Ok(matches!(&r.verdict, Verdict::Mismatch { signature: sig, .. } if sig == signature))
    };
    // First: is the failure reproducible without noise, with ops 0..=op?
    if !test(sess, &cur, &mut runs)? {
        return Err(HostError::Harness(format!(
            "the failure ({signature}) does not reproduce without noise on ops 0..={op}"
        )));
    }
    let mut n = 2usize;
    while cur.len() >= 2 && runs < budget.max_runs && start.elapsed() < budget.max_time {
        let chunk = cur.len().div_ceil(n);
        let mut reduced = None;
        for i in 0..n {
            if runs >= budget.max_runs || start.elapsed() >= budget.max_time {
                break;
            }
            let lo = (i * chunk).min(cur.len());
            let hi = ((i + 1) * chunk).min(cur.len());
            if lo == hi {
                continue;
            }
            let comp: Vec<u32> = cur[..lo].iter().chain(&cur[hi..]).copied().collect();
            if comp.is_empty() {
                continue;
            }
            if test(sess, &comp, &mut runs)? {
                reduced = Some(comp);
                break;
            }
        }
        if let Some(comp) = reduced {
            cur = comp;
            n = (n - 1).max(2);
            progress(&format!("shrink: {} ops left after {runs} runs", cur.len()));
        } else {
            if n >= cur.len() {
                break;
            }
            n = (n * 2).min(cur.len());
        }
    }
    Ok((IndexSet(cur.into_iter().collect()), runs))
}

/// The default place for the VMs of a fuzzing session.
pub fn default_root() -> PathBuf {
    std::env::temp_dir().join(format!("rio-fuzz-{}", std::process::id()))
}
