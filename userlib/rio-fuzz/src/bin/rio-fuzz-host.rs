//! rio-fuzz-host: boots guests, runs the guest fuzzer seed after seed for a while (some
//! runs crash the kernel and verify the recovered arena), shrinks failures and prints how
//! to reproduce them.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use rio_fuzz::host::{self, FuzzConfig, RunResult, RunSpec, Session, ShrinkBudget, Verdict};
use rio_fuzz::ops::IndexSet;

#[derive(Parser)]
#[command(about = "Fuzz /dev/rio in QEMU guests against the model, with crashes and recovery")]
struct Cli {
    /// Keep starting runs for this many seconds.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// The first seed (then seed-start+1, ...).
    #[arg(long, default_value_t = 1)]
    seed_start: u64,
    /// At most this many runs (default: as many as fit in --duration).
    #[arg(long)]
    runs: Option<u64>,
    /// Ops per run.
    #[arg(long, default_value_t = 300)]
    ops: u32,
    /// Seeds divisible by K crash the kernel mid-run, then recover and verify (0: never).
    #[arg(long, default_value_t = 4)]
    panic_every: u64,
    /// Guests at once (each takes about one host core).
    #[arg(long, default_value_t = 1)]
    jobs: u32,
    /// No noise threads.
    #[arg(long)]
    no_noise: bool,
    /// Extra rio.ko parameters, e.g. "max_user_objects=3 max_user_pages=40".
    #[arg(long, default_value = "")]
    module_params: String,
    /// Extra rio-fuzz flags to match them, e.g. "--max-user-objects 3 --max-user-pages 40"
    /// (write it as --fuzz-flags="...").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    fuzz_flags: String,
    /// Also fuzz riofs system calls (each run mounts a fresh riofs; after a crash the tree
    /// is verified too).
    #[arg(long)]
    riofs: bool,
    /// Run only these op indices (reproducing a shrunk failure; with --runs 1).
    #[arg(long)]
    only: Option<IndexSet>,
    /// Do not shrink failures.
    #[arg(long)]
    no_shrink: bool,
    /// Guest runs a shrink may take.
    #[arg(long, default_value_t = 120)]
    shrink_runs: u32,
    /// Where the VMs live (default: a directory in $TMPDIR, removed at the end).
    #[arg(long)]
    workdir: Option<PathBuf>,
}

enum Event {
    Done(RunResult),
    Shrunk { line: String },
    Error { seed: u64, error: String },
}

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "pass".into(),
        Verdict::Mismatch { report, .. } => format!("MISMATCH\n{report}"),
        Verdict::Hang { report } => format!("HANG\n{report}"),
        Verdict::Splat { text } => format!("KERNEL SPLAT\n{text}"),
        Verdict::VerifyFailed { report } => format!("VERIFY FAILED after the crash\n{report}"),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let artifacts = riovm::Artifacts::locate().context("finding the kernel and initramfs")?;
    let fc = FuzzConfig {
        ops: cli.ops,
        noise: !cli.no_noise,
        module_params: cli.module_params.clone(),
        fuzz_flags: if cli.riofs {
            format!("{} --riofs", cli.fuzz_flags).trim().to_string()
        } else {
            cli.fuzz_flags.clone()
        },
        ..FuzzConfig::default()
    };
    let root = cli.workdir.clone().unwrap_or_else(host::default_root);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let deadline = Instant::now() + Duration::from_secs(cli.duration);
    let next = Arc::new(AtomicU64::new(cli.seed_start));
    let limit = cli.runs.map(|r| cli.seed_start + r);
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for j in 0..cli.jobs.max(1) {
        let (tx, next, fc, artifacts) = (tx.clone(), next.clone(), fc.clone(), artifacts.clone());
        let dir = root.join(format!("job{j}"));
        let only = cli.only.clone();
        let (panic_every, no_shrink, shrink_runs) =
            (cli.panic_every, cli.no_shrink, cli.shrink_runs);
        workers.push(std::thread::spawn(move || {
            // The VMs stay with this thread (riovm kills QEMU when its starting thread dies).
            let mut sess = Session::new(artifacts, dir, fc.clone());
            while Instant::now() < deadline {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if limit.is_some_and(|l| seed >= l) {
                    break;
                }
                let mut spec = RunSpec::for_seed(seed, &fc, panic_every);
                spec.only = only.clone();
                let r = match sess.run(&spec) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Event::Error { seed, error: e.to_string() });
                        continue;
                    }
                };
                let shrinkable = match &r.verdict {
                    Verdict::Mismatch { op, signature, .. } if *op != u32::MAX && !no_shrink => Some((*op, signature.clone())),
                    _ => None,
                };
                let _ = tx.send(Event::Done(r));
                if let Some((op, sig)) = shrinkable {
                    let budget = ShrinkBudget { max_runs: shrink_runs, max_time: Duration::from_secs(1200) };
                    let line = match host::shrink(&mut sess, &spec, op, &sig, budget, |_| {}) {
                        Ok((set, runs)) => {
                            let mut s = spec.clone();
                            s.only = Some(set.clone());
                            s.noise = false;
                            s.panic_after = None;
                            format!(
                                "seed {seed}: shrunk to {} ops in {runs} runs ({sig}); reproduce:\n  rio-fuzz-host --seed-start {seed} --runs 1 --ops {} --panic-every 0 --no-noise --no-shrink --only {set}\n  in the guest: {}",
                                set.0.len(),
                                spec.ops,
                                s.guest_command(&fc)
                            )
                        }
                        Err(e) => format!("seed {seed}: shrink failed: {e}"),
                    };
                    let _ = tx.send(Event::Shrunk { line });
                }
            }
        }));
    }
    drop(tx);
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(cli.duration);
        b.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let started = Instant::now();
    let (mut runs, mut ops, mut crashes, mut failures, mut errors) =
        (0u64, 0u64, 0u64, Vec::new(), 0u64);
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    let say = |bar: &Option<indicatif::ProgressBar>, s: &str| match bar {
        Some(b) => b.println(s),
        None => println!("{s}"),
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Event::Done(r)) => {
                runs += 1;
                ops += r.acked;
                crashes += u64::from(r.crashed);
                lo = lo.min(r.spec.seed);
                hi = hi.max(r.spec.seed);
                let line = format!(
                    "seed {} ops {} acked {}{}{} {:.1}s: {}",
                    r.spec.seed,
                    r.spec.ops,
                    r.acked,
                    if r.spec.backing { " backing" } else { "" },
                    if r.crashed { " crash+verify" } else { "" },
                    r.took.as_secs_f64(),
                    describe(&r.verdict)
                );
                if !r.verdict.passed() {
                    failures.push(r.spec.seed);
                }
                if bar.is_none() || !r.verdict.passed() {
                    say(&bar, &line);
                }
            }
            Ok(Event::Shrunk { line, .. }) => say(&bar, &line),
            Ok(Event::Error { seed, error }) => {
                errors += 1;
                say(&bar, &format!("seed {seed}: harness error: {error}"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(b) = &bar {
            b.set_position(started.elapsed().as_secs().min(cli.duration));
            b.set_message(format!(
                "runs {runs} ops {ops} crashes {crashes} failures {}",
                failures.len()
            ));
        }
    }
    for w in workers {
        let _ = w.join();
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if cli.workdir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    let seeds = if runs == 0 {
        "none".to_string()
    } else {
        format!("{lo}..={hi}")
    };
    println!(
        "summary: runs {runs}, ops {ops}, crashes {crashes}, seeds {seeds}, mismatches {} {:?}, harness errors {errors}",
        failures.len(),
        failures
    );
    if !failures.is_empty() || errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
