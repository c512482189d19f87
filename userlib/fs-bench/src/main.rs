//! fs-bench: runs inside the test guest against one mounted file system at a time, and
//! turns the collected results into a table. Workloads, after the Rio paper's:
//! - `smallfile`: create, write 4 KB, fsync, close, N times; then delete them all;
//! - `cp`/`rm`: `cp -r` of a source tree (built once in tmpfs) onto the file system, then
//!   `rm -r` of the copy (with a final `sync`, as a user waiting for durability would);
//! - `sqlite`: small transactions (one UPDATE each) in WAL mode with synchronous=FULL.
//!
//! Also for `make bench-fio` (`fio-record`, `fio-report`: fio's JSON to a table) and for
//! crash tests (`log`: a line the host is sure to have before the next step starts).

mod fio;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// File-system benchmark for the Rio guest.
#[derive(Parser)]
#[command(name = "fs-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the source tree used by the cp/rm workload.
    MakeTree {
        /// Where (tmpfs).
        dir: PathBuf,
    },
    /// Run every workload in `dir`, appending `label workload seconds` lines to `out`.
    Run {
        /// Name of this configuration.
        #[arg(long)]
        label: String,
        /// A directory on the file system under test.
        #[arg(long)]
        dir: PathBuf,
        /// The source tree (from make-tree).
        #[arg(long)]
        tree: PathBuf,
        /// Results file.
        #[arg(long)]
        out: PathBuf,
        /// Files in the small-file workload.
        #[arg(long, default_value_t = 300)]
        files: usize,
        /// SQLite transactions.
        #[arg(long, default_value_t = 300)]
        transactions: usize,
        /// Repetitions; the table uses the median.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Print the markdown table of a results file.
    Report {
        /// Results file.
        out: PathBuf,
    },
    /// Append one line to `path` (the host's log port, /dev/ttyS2) and return only when the
    /// port has sent it (tcdrain): a crash right after cannot lose it.
    Log {
        /// The log: a serial port, or a plain file.
        path: PathBuf,
        /// The words of the line.
        #[arg(required = true, trailing_var_arg = true)]
        message: Vec<String>,
    },
    /// Append what one fio run measured (its --output-format=json file) to a results file.
    FioRecord {
        /// Name of the file system.
        #[arg(long)]
        label: String,
        /// Name of the workload.
        #[arg(long)]
        workload: String,
        /// fio's JSON output.
        #[arg(long)]
        json: PathBuf,
        /// Results file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the markdown table of a fio results file: medians, IOPS against two baselines.
    FioReport {
        /// Results file.
        out: PathBuf,
        /// First baseline (a label).
        #[arg(long, default_value = "tmpfs")]
        base: String,
        /// Second baseline (a label).
        #[arg(long, default_value = "ext4 on disk")]
        base2: String,
    },
}

fn log_line(path: &Path, message: &[String]) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(format!("{}\n", message.join(" ")).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    // SAFETY: tcdrain on a file descriptor this function owns and keeps open; on a plain
    // file it fails with ENOTTY, which is fine (there is nothing to drain).
    unsafe { libc::tcdrain(f.as_raw_fd()) };
    Ok(())
}

fn make_tree(dir: &Path) -> Result<()> {
    // 20 directories of 25 files from 1 to 25 KB: a small source tree.
    let mut seed = 0x1234_5678u64;
    for d in 0..20 {
        let sub = dir.join(format!("dir{d:02}"));
        fs::create_dir_all(&sub)?;
        for f in 0..25 {
            let len = 1024 * (1 + (d * 25 + f) % 25);
            let mut data = vec![0u8; len];
            for b in data.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz \n{}();";
                *b = ALPHABET[(seed % ALPHABET.len() as u64) as usize];
            }
            fs::write(sub.join(format!("file{f:02}.c")), data)?;
        }
    }
    Ok(())
}

fn smallfile(dir: &Path, n: usize) -> Result<f64> {
    let d = dir.join("smallfile");
    fs::create_dir_all(&d)?;
    let data = vec![0x61u8; 4096];
    let t = Instant::now();
    for i in 0..n {
        let mut f = fs::File::create(d.join(format!("f{i}")))?;
        f.write_all(&data)?;
        f.sync_all()?;
    }
    for i in 0..n {
        fs::remove_file(d.join(format!("f{i}")))?;
    }
    // Make the deletions durable too.
    fs::File::open(&d)?.sync_all()?;
    Ok(t.elapsed().as_secs_f64())
}

fn shell(cmd: &str) -> Result<()> {
    let st = Command::new("/bin/sh").arg("-c").arg(cmd).status()?;
    if !st.success() {
        bail!("`{cmd}` failed");
    }
    Ok(())
}

fn cp_rm(dir: &Path, tree: &Path) -> Result<(f64, f64)> {
    let dst = dir.join("tree");
    let t = Instant::now();
    shell(&format!(
        "cp -r {} {} && sync",
        tree.display(),
        dst.display()
    ))?;
    let cp = t.elapsed().as_secs_f64();
    let t = Instant::now();
    shell(&format!("rm -r {} && sync", dst.display()))?;
    Ok((cp, t.elapsed().as_secs_f64()))
}

fn sqlite(dir: &Path, n: usize) -> Result<f64> {
    let path = dir.join("bench.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{ext}", path.display()));
    }
    let db = rusqlite::Connection::open(&path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute(
        "CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER)",
        [],
    )?;
    {
        let tx = db.unchecked_transaction()?;
        for i in 0..1000 {
            tx.execute("INSERT INTO acct VALUES (?1, 0)", [i])?;
        }
        tx.commit()?;
    }
    let t = Instant::now();
    for i in 0..n {
        db.execute(
            "UPDATE acct SET bal = bal + 1 WHERE id = ?1",
            [(i * 7919 % 1000) as i64],
        )?;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(out: &Path) -> Result<()> {
    let text = fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    // label -> workload -> seconds
    let mut r: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut order = Vec::new();
    for line in text.lines() {
        let mut it = line.split('\t');
        let (Some(l), Some(w), Some(s)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if !order.contains(&l.to_string()) {
            order.push(l.to_string());
        }
        r.entry(l.into()).or_default().insert(w.into(), s.parse()?);
    }
    let workloads = ["smallfile", "cp", "rm", "sqlite"];
    let base = r
        .get("ext4 sync (write-through)")
        .cloned()
        .unwrap_or_default();
    println!("| file system | small files+fsync (s) | cp -r (s) | rm -r (s) | SQLite FULL (s) | speedup over write-through (small / cp / rm / sqlite) |");
    println!("|---|---:|---:|---:|---:|---|");
    for l in &order {
        let row = &r[l];
        let cells: Vec<String> = workloads
            .iter()
            .map(|w| format!("{:.3}", row.get(*w).copied().unwrap_or(f64::NAN)))
            .collect();
        let ratios: Vec<String> = workloads
            .iter()
            .map(|w| match (base.get(*w), row.get(*w)) {
                (Some(b), Some(x)) => format!("{:.1}x", b / x),
                _ => "-".into(),
            })
            .collect();
        println!("| {l} | {} | {} |", cells.join(" | "), ratios.join(" / "));
    }
    for name in ["ext4 on Rio", "riofs", "pmem-dax (ext4 -o dax)"] {
        if let (Some(rio), Some(tmp)) = (r.get(name), r.get("tmpfs")) {
            let v: Vec<String> = workloads
                .iter()
                .filter_map(|w| {
                    Some(format!(
                        "{w} {:+.0} %",
                        (rio.get(*w)? / tmp.get(*w)? - 1.0) * 100.0
                    ))
                })
                .collect();
            println!("\n{name} against tmpfs (time): {}", v.join(", "));
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::MakeTree { dir } => make_tree(&dir),
        Cmd::Report { out } => report(&out),
        Cmd::Log { path, message } => log_line(&path, &message),
        Cmd::FioRecord {
            label,
            workload,
            json,
            out,
        } => {
            let s = fio::record(&label, &workload, &json, &out)?;
            eprintln!(
                "[bench-fio] {label}, {workload}: {:.0} IOPS, p50 {:.1} us, p99 {:.1} us",
                s.iops, s.p50, s.p99
            );
            Ok(())
        }
        Cmd::FioReport { out, base, base2 } => {
            print!("{}", fio::report(&out, &base, &base2)?);
            Ok(())
        }
        Cmd::Run {
            label,
            dir,
            tree,
            out,
            files,
            transactions,
            runs,
        } => {
            let runs = runs.max(1);
            let (mut sf, mut cp, mut rm, mut sq) = (vec![], vec![], vec![], vec![]);
            for run in 1..=runs {
                sf.push(smallfile(&dir, files)?);
                let (c, r) = cp_rm(&dir, &tree)?;
                cp.push(c);
                rm.push(r);
                sq.push(sqlite(&dir, transactions)?);
                eprintln!(
                    "[fs-bench] {label}: run {run}/{runs}: small files {:.3} s, cp {c:.3} s, rm {r:.3} s, sqlite {:.3} s",
                    sf[sf.len() - 1],
                    sq[sq.len() - 1]
                );
            }
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out)?;
            for (w, v) in [("smallfile", sf), ("cp", cp), ("rm", rm), ("sqlite", sq)] {
                writeln!(f, "{label}\t{w}\t{}", median(v))?;
            }
            eprintln!("[fs-bench] {label} done");
            Ok(())
        }
    }
}
