//! rio-campaign: the crash campaign runner. Resumable: results are appended to a JSON-lines
//! file, and a rerun skips what is already there.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rio_campaign::{applies, run_one, table, Config, Outcome, CLASSES, HUNG};
use riovm::{Artifacts, VmConfig};

/// Crash the Rio guest in every way we know, recover, and count what was lost.
#[derive(Parser)]
#[command(name = "rio-campaign", version, about)]
struct Cli {
    /// Runs per fault class per configuration (each injects faults until a crash).
    #[arg(long, default_value_t = 5)]
    count: u64,
    /// Configurations (default: the first four): ext4-sync, ext4-default, rio-unprotected,
    /// rio-protected, riofs (a riofs file system in a protected object, under random POSIX
    /// operations, judged by the riofs crash model), rio-safe-sync (protection, crash
    /// kernel, RAM lost after the crash), pmem-dax (ext4 -o dax on legacy persistent
    /// memory; its `arena` class is stores aimed at the region), pmem-dax-sparse (the same
    /// with sparse files: block allocations wait for the journal).
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
    /// Fault classes (default: all): text, heap, stack, wild, pointer, panic, arena, reset, power.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Results (JSON lines; resumed if present).
    #[arg(long, default_value = "results/campaign.jsonl")]
    results: PathBuf,
    /// Markdown summary.
    #[arg(long, default_value = "results/campaign.md")]
    table: PathBuf,
    /// Keep each run's VM directory (console logs) under this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Keep the logs and disk image of runs that lost data they should not have (or
    /// failed) under this directory, one subdirectory per run.
    #[arg(long)]
    keep_failures: Option<PathBuf>,
    /// Explain a run kept by --keep-failures instead of running anything: which pages of
    /// which files lost writes, and what they hold instead.
    #[arg(long, value_name = "RUN_DIR")]
    explain: Option<PathBuf>,
    /// Guests to run at once (each takes about one host core under TCG).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
}

/// Runs one crash in its own directory and turns a harness failure into an outcome (so
/// the table shows it and a rerun does not retry it forever).
fn run_cell(cli: &Cli, artifacts: &Artifacts, c: Config, k: &str, i: u64) -> Result<Outcome> {
    let (dir, tmp) = match &cli.keep {
        Some(d) => {
            let p = d.join(format!("{}-{k}-{i}", c.name()));
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            (p, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("rio-campaign-")
                .tempdir()
                .context("creating a VM directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let base = VmConfig::new(artifacts.clone(), &dir);
    let o = match run_one(&base, &dir, c, k, i) {
        Ok(o) => o,
        Err(e) => Outcome {
            config: c,
            class: k.into(),
            index: i,
            crashed: false,
            corrupted_files: 0,
            lost_writes: 0,
            acked_writes: 0,
            recovery: String::new(),
            note: format!("harness error: {:#}", anyhow::Error::from(e)),
            faults: 0,
            oldest_loss_ms: None,
        },
    };
    // Keep the evidence of a crash that lost data, or of a harness failure: console logs,
    // workload log, disk image (the RAM file is dropped: it is most of the space).
    if let (Some(to), Some(tmp)) = (&cli.keep_failures, tmp) {
        // Losses that break a promise: not those of delayed writes (ext4 defaults, and
        // the block allocations of pmem-dax's sparse files) or of a power cut (everything
        // newer than the last writeback may go).
        let promised = !matches!(c, Config::Ext4Default | Config::PmemDaxSparse) && k != "power";
        // riofs promises a whole prefix state even after a power cut.
        let whole = c == Config::Riofs;
        let bad = (o.crashed && promised && (o.lost_writes > 0 || o.corrupted_files > 0))
            || (o.crashed && whole && o.corrupted_files > 0)
            || o.note.starts_with("harness error")
            || o.note.starts_with("recovery failed");
        if bad {
            let dest = to.join(format!("{}-{k}-{i}", c.name()));
            std::fs::create_dir_all(&dest)
                .with_context(|| format!("creating {}", dest.display()))?;
            for e in std::fs::read_dir(tmp.path())?.flatten() {
                let name = e.file_name();
                let n = name.to_string_lossy();
                // riofs runs: the dump of the recovered tree and the model's verdict too.
                if n.ends_with(".log")
                    || n.ends_with(".img")
                    || n.ends_with(".jsonl")
                    || n.ends_with(".txt")
                {
                    std::fs::copy(e.path(), dest.join(&name))
                        .with_context(|| format!("keeping {n}"))?;
                }
            }
            // For Rio, the arena as recovery left it: registry, object table and pages.
            if let (true, Some(a)) = (c.is_rio(), base.arena) {
                keep_arena(
                    &tmp.path().join("guest-ram"),
                    a.phys,
                    a.size,
                    &dest.join("arena.img"),
                )?;
            }
        }
    }
    Ok(o)
}

/// Copies the arena's bytes (`phys`, `size`) out of a guest RAM file, if there is one.
fn keep_arena(ram: &Path, phys: u64, size: u64, to: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(ram) else {
        return Ok(());
    };
    f.seek(SeekFrom::Start(phys))?;
    let mut out =
        std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    std::io::copy(&mut f.take(size), &mut out).context("copying the arena")?;
    Ok(())
}

/// The workload files of a kept run: what the guest read back (`got-mt<i>.img`), or, for
/// runs kept before those were saved, the files in the ext4 image (`debugfs`).
fn kept_files(dir: &Path, files: usize) -> Result<Vec<Vec<u8>>> {
    let got = |i: usize| dir.join(format!("got-mt{i}.img"));
    if got(0).exists() {
        return (0..files)
            .map(|i| std::fs::read(got(i)).with_context(|| format!("reading {}", got(i).display())))
            .collect();
    }
    let disk = dir.join("disk.img");
    (0..files)
        .map(|i| {
            let out = std::process::Command::new("debugfs")
                .arg("-R")
                .arg(format!("cat /mt{i}"))
                .arg(&disk)
                .stderr(std::process::Stdio::null())
                .output()
                .context("running debugfs (e2fsprogs) on disk.img")?;
            if !out.status.success() {
                bail!("debugfs could not read mt{i} from {}", disk.display());
            }
            Ok(out.stdout)
        })
        .collect()
}

/// `--explain`: prints where a kept run's lost writes went.
fn explain(dir: &Path) -> Result<()> {
    let log = riovm::workload_log_path(dir);
    let text = std::fs::read_to_string(&log).with_context(|| {
        format!(
            "reading {} (is this a run kept by --keep-failures?)",
            log.display()
        )
    })?;
    let exp = rio_check::memtest::expected(&text).context("the workload log has no header")?;
    let files = kept_files(dir, exp.data.len())?;
    // Built in memory and written once, so that `| head` ends it quietly.
    let mut out = String::new();
    let lost = exp.lost(&files);
    let age = |i: Option<usize>| match i.and_then(|i| exp.age_ms(i)) {
        Some(ms) => format!("{ms} ms before the end"),
        None => "age unknown".into(),
    };
    let seq = |i: Option<usize>| match i.and_then(|i| exp.acked.get(i)) {
        Some(w) => format!("write {}", w.0),
        None => "no acknowledged write".into(),
    };
    writeln!(
        out,
        "{}: {} of {} acknowledged writes lost",
        dir.display(),
        lost.len(),
        exp.acked.len()
    )?;
    if let Some(&oldest) = lost.first() {
        writeln!(
            out,
            "  oldest lost: {} ({})",
            seq(Some(oldest)),
            age(Some(oldest))
        )?;
    }
    for p in exp.stale_pages(&files, 4096) {
        writeln!(
        out,
            "  mt{} page {:2}: {:4} stale bytes ({} zero, {} missing); holds {} ({}), should hold {} ({})",
            p.file,
            p.page,
            p.stale,
            p.zero,
            p.missing,
            seq(p.holds),
            age(p.holds),
            seq(p.should_hold),
            age(p.should_hold)
        )?;
    }
    // What the kernel said while recovering.
    let mut consoles: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("console"))
        })
        .collect();
    consoles.sort();
    for c in consoles {
        let t = std::fs::read_to_string(&c).unwrap_or_default();
        for l in t
            .lines()
            .filter(|l| l.contains("] rio: ") || l.contains("rio-crash: ") || l.contains("EXT4-fs"))
        {
            writeln!(
                out,
                "  {}: {l}",
                c.file_name().unwrap_or_default().to_string_lossy()
            )?;
        }
    }
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(dir) = &cli.explain {
        return explain(dir);
    }
    let configs: Vec<Config> = if cli.configs.is_empty() {
        Config::ALL.to_vec()
    } else {
        cli.configs
            .iter()
            .map(|n| {
                Config::EVERY
                    .into_iter()
                    .find(|c| c.name() == n)
                    .with_context(|| format!("unknown configuration {n:?}"))
            })
            .collect::<Result<_>>()?
    };
    let classes: Vec<&str> = if cli.classes.is_empty() {
        CLASSES.to_vec()
    } else {
        cli.classes
            .iter()
            .map(|n| {
                CLASSES
                    .iter()
                    .copied()
                    .find(|c| c == n)
                    .with_context(|| format!("unknown class {n:?}"))
            })
            .collect::<Result<_>>()?
    };
    let done: Vec<Outcome> = std::fs::read_to_string(&cli.results)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default();
    let mut todo = Vec::new();
    // Round-robin over the cells, so a campaign cut short still fills every row evenly.
    for i in 0..cli.count {
        for &c in &configs {
            for &k in &classes {
                if applies(c, k)
                    && !done
                        .iter()
                        .any(|o| o.config == c && o.class == k && o.index == i)
                {
                    todo.push((c, k, i));
                }
            }
        }
    }
    if let Some(dir) = cli.results.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let artifacts = Artifacts::locate()?;
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} runs, eta {eta} {msg}",
    )?);
    let out = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cli.results)
            .with_context(|| format!("opening {}", cli.results.display()))?,
    );
    let tty = std::io::stderr().is_terminal();
    let queue = Mutex::new(todo.into_iter());
    let done = Mutex::new(done);
    // Each worker boots its own guest (one vCPU each under TCG), so `--jobs` up to the
    // number of host cores runs that many crashes at once.
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..cli.jobs)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let next = queue.lock().map_err(|_| anyhow!("a worker died"))?.next();
                        let Some((c, k, i)) = next else {
                            return Ok(());
                        };
                        let o = run_cell(&cli, &artifacts, c, k, i)?;
                        if !o.note.is_empty() && o.note != "no crash" && o.note != HUNG {
                            let line = format!("{} / {k} #{i}: {}", c.name(), o.note);
                            if tty {
                                bar.println(line);
                            } else {
                                eprintln!("{line}");
                            }
                        }
                        bar.set_message(format!("last: {} / {k} #{i}", c.name()));
                        if !tty {
                            // No terminal (CI, nohup): one plain line per run instead of a bar.
                            eprintln!(
                                "[{}/{}] {} / {k} #{i}: {}",
                                bar.position() + 1,
                                bar.length().unwrap_or(0),
                                c.name(),
                                match (o.crashed, o.note == HUNG) {
                                    (true, true) => "hung, reset",
                                    (true, false) => "crashed",
                                    _ => "no crash",
                                }
                            );
                        }
                        writeln!(
                            out.lock().map_err(|_| anyhow!("a worker died"))?,
                            "{}",
                            serde_json::to_string(&o)?
                        )?;
                        done.lock().map_err(|_| anyhow!("a worker died"))?.push(o);
                        bar.inc(1);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow!("a campaign worker panicked"))??;
        }
        Ok(())
    })?;
    let done = done.into_inner().map_err(|_| anyhow!("a worker died"))?;
    bar.finish_with_message("done");
    let t = table(&done);
    std::fs::write(&cli.table, &t)?;
    print!("{t}");
    Ok(())
}
