//! Vista against the stores a user would otherwise pick, on a disk directory and on tmpfs.
//!
//! Run with `scripts/bench-vista.sh` (or `cargo bench -p vista-compare --bench compare`). Prints markdown tables on stdout, progress on stderr.
//!
//! Environment:
//! * `VISTA_BENCH_SCALE` (default 1): multiplies the measuring time of every cell.
//! * `VISTA_BENCH_DIRS` (default `/var/tmp/vista-bench:/dev/shm/vista-bench`): where the
//!   stores live; the first is reported as "disk", the second as "tmpfs".
//! * `VISTA_BENCH_ONLY`: comma-separated substrings; only systems whose name matches run.
//!
//! Method (the workloads live in the `vista_compare` library, shared with the guest program
//! `vista-rio`): every workload runs through one small key-value interface (fixed-size
//! records in numbered tables, keys dense from 0), so each system does the same logical
//! work: a read of a record is a `get`, an update is a `put` of the whole record. Vista
//! implements it as one persistent array per table: `get` copies the record out, `put` is
//! `set_range` + copy. The "raw" rows use Vista's own API directly (begin, `set_range`,
//! store, commit) with no indirection. Each cell is the median of 7 timed rounds after a
//! warm-up; ratios are the system's time per transaction over Vista's (file, Memory).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vista::{Backing, Durability, LogMode, Segment, SegmentConfig};
use vista_compare::{
    debit_credit, fmt_time, measure, order_entry, raw_small, small, vista_addr, HeedKv, Kv, RedbKv,
    Rng, SqliteKv, VistaKv,
};

type R<T> = Result<T, Box<dyn Error>>;

// ---------------------------------------------------------------------------------------
// Timing

fn scale() -> f64 {
    std::env::var("VISTA_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// The length of one timed round.
fn round() -> Duration {
    Duration::from_secs_f64(0.06 * scale())
}

// ---------------------------------------------------------------------------------------
// Systems

#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    VistaMemory,
    VistaMsync,
    VistaMsyncWal,
    SqliteFull,
    SqliteNormal,
    Redb,
    Lmdb,
}

const SYSTEMS: [System; 7] = [
    System::VistaMemory,
    System::VistaMsync,
    System::VistaMsyncWal,
    System::SqliteFull,
    System::SqliteNormal,
    System::Redb,
    System::Lmdb,
];

impl System {
    fn name(self) -> &'static str {
        match self {
            System::VistaMemory => "Vista (file, Memory)",
            System::VistaMsync => "Vista (file, Msync)",
            System::VistaMsyncWal => "Vista (file, MsyncWal)",
            System::SqliteFull => "SQLite WAL, synchronous=FULL",
            System::SqliteNormal => "SQLite WAL, synchronous=NORMAL",
            System::Redb => "redb (Durability::Immediate)",
            System::Lmdb => "LMDB via heed (default sync)",
        }
    }

    fn open(self, dir: &Path, vista_len: usize) -> R<Box<dyn Kv>> {
        Ok(match self {
            System::VistaMemory => Box::new(VistaKv::file(dir, Durability::Memory, vista_len)?),
            System::VistaMsync => Box::new(VistaKv::file(dir, Durability::Msync, vista_len)?),
            System::VistaMsyncWal => Box::new(VistaKv::file(dir, Durability::MsyncWal, vista_len)?),
            System::SqliteFull => Box::new(SqliteKv::new(dir, "FULL")?),
            System::SqliteNormal => Box::new(SqliteKv::new(dir, "NORMAL")?),
            System::Redb => Box::new(RedbKv::new(dir)?),
            System::Lmdb => Box::new(HeedKv::new(dir)?),
        })
    }
}

fn selected(s: System) -> bool {
    match std::env::var("VISTA_BENCH_ONLY") {
        Ok(f) => f
            .split(',')
            .any(|p| s.name().to_lowercase().contains(&p.to_lowercase())),
        Err(_) => true,
    }
}

// ---------------------------------------------------------------------------------------
// Vista-only measurements (raw API)

/// `window`: bytes over which the random locations spread (64 KiB: in cache; 64 MiB: a
/// cache miss per transaction, as in the paper's 50 MB database).
fn vista_raw_small(dir: &Path, dur: Durability, size: usize, window: usize) -> R<f64> {
    let len = 64 << 20;
    let mut seg = Segment::create_file(
        dir.join("raw.seg"),
        vista_addr(),
        &SegmentConfig::new(len).heap(false).log_capacity(1 << 20),
        dur,
    )?;
    // SAFETY: pre-touching the whole data area outside any transaction.
    unsafe { std::ptr::write_bytes(seg.base(), 1, len) };
    let r = raw_small(&mut seg, size, window, round());
    drop(seg);
    std::fs::remove_file(dir.join("raw.seg"))?;
    Ok(r?)
}

/// (size, ns with transaction, ns without) for a range of sizes.
fn vista_per_kb(dir: &Path) -> R<Vec<(usize, f64, f64)>> {
    let len = 64 << 20;
    let mut seg = Segment::create_file(
        dir.join("kb.seg"),
        vista_addr(),
        &SegmentConfig::new(len).heap(false).log_capacity(2 << 20),
        Durability::Memory,
    )?;
    let base = seg.base() as usize;
    // SAFETY: pre-touching the whole data area outside any transaction.
    unsafe { std::ptr::write_bytes(base as *mut u8, 1, len) };
    let mut out = Vec::new();
    let mut rng = Rng::new(5);
    for size in [
        8usize,
        64,
        256,
        1024,
        4096,
        16 << 10,
        64 << 10,
        256 << 10,
        1 << 20,
    ] {
        let mut fill = 0u8;
        let with = measure(round(), || {
            let off = (rng.below((len - size) as u64) as usize) & !63;
            fill = fill.wrapping_add(1);
            let mut tx = seg.begin()?;
            tx.set_range((base + off) as *const u8, size)?;
            // SAFETY: inside the segment, logged just above.
            unsafe { std::ptr::write_bytes((base + off) as *mut u8, fill, size) };
            tx.commit()?;
            Ok(())
        })?;
        let without = measure(round(), || {
            let off = (rng.below((len - size) as u64) as usize) & !63;
            fill = fill.wrapping_add(1);
            // SAFETY: inside the segment (no transaction: the baseline).
            unsafe { std::ptr::write_bytes((base + off) as *mut u8, fill, size) };
            Ok(())
        })?;
        out.push((size, with, without));
    }
    drop(seg);
    std::fs::remove_file(dir.join("kb.seg"))?;
    Ok(out)
}

/// ns per transaction that writes 8 bytes into each of `pages` random pages, in `mode`.
fn vista_implicit(dir: &Path, mode: LogMode, pages: usize) -> R<f64> {
    let len = 64 << 20;
    let path = dir.join("imp.seg");
    let _ = std::fs::remove_file(&path);
    let b = Backing::create_file(
        &path,
        Segment::backing_len(&SegmentConfig::new(len).heap(false).log_capacity(8 << 20))?,
        Durability::Memory,
    )?;
    let mut seg = Segment::create(
        b,
        vista_addr(),
        &SegmentConfig::new(len).heap(false).log_capacity(8 << 20),
    )?;
    let base = seg.base() as usize;
    // SAFETY: pre-touching the whole data area outside any transaction.
    unsafe { std::ptr::write_bytes(base as *mut u8, 1, len) };
    seg.set_mode(mode)?;
    let mut rng = Rng::new(9);
    let n_pages = len / vista::PAGE;
    let r = measure(round(), || {
        let tx = seg.begin()?;
        for _ in 0..pages {
            let p = rng.below(n_pages as u64) as usize;
            // SAFETY: inside the segment; logged by the fault handler in implicit modes.
            unsafe { ((base + p * vista::PAGE) as *mut u64).write_volatile(p as u64) };
        }
        tx.commit()?;
        Ok(())
    });
    drop(seg);
    std::fs::remove_file(&path)?;
    Ok(r?)
}

// ---------------------------------------------------------------------------------------
// Driver and report

fn fresh_dir(root: &Path, name: &str) -> R<PathBuf> {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

type Workload = fn(&mut dyn Kv) -> R<f64>;

fn main() -> R<()> {
    // `cargo bench` passes `--bench`; ignore arguments.
    let dirs_env = std::env::var("VISTA_BENCH_DIRS")
        .unwrap_or_else(|_| "/var/tmp/vista-bench:/dev/shm/vista-bench".into());
    let dirs: Vec<PathBuf> = dirs_env.split(':').map(PathBuf::from).collect();
    let labels: Vec<String> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let kind = match i {
                0 => "disk",
                1 => "tmpfs",
                _ => "dir",
            };
            format!("{kind} ({})", d.display())
        })
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d)?;
    }
    let t0 = Instant::now();
    println!("# Vista benchmarks\n");
    println!(
        "Machine: {} cores; scale {}; medians of 7 rounds. Ratio = time per transaction / Vista (file, Memory) on the same directory.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        scale()
    );

    // Vista raw API.
    println!("## Vista raw API: small transaction latency (begin, set_range, store, commit)\n");
    println!("Random location within a 64 KiB window (hot in cache) or within 64 MiB (a cache miss to read the before-image, like the paper's 50 MB database).\n");
    println!("| durability | dir | 8 B, hot | 64 B, hot | 8 B, 64 MiB | 64 B, 64 MiB |\n|---|---|---:|---:|---:|---:|");
    for (d, label) in dirs.iter().zip(&labels) {
        for dur in [Durability::Memory, Durability::Msync, Durability::MsyncWal] {
            let w = fresh_dir(d, "raw")?;
            let mut cells = Vec::new();
            for window in [64 << 10, 64 << 20] {
                for size in [8, 64] {
                    cells.push(fmt_time(vista_raw_small(&w, dur, size, window)?));
                }
            }
            println!("| {dur:?} | {label} | {} |", cells.join(" | "));
            eprintln!("[{:.0}s] raw {dur:?} {label}", t0.elapsed().as_secs_f64());
        }
    }
    println!();

    println!(
        "## Vista cost per size logged (Memory policy, {})\n",
        labels[0]
    );
    println!("| bytes logged | transaction | plain stores | overhead |\n|---:|---:|---:|---:|");
    let kb = vista_per_kb(&fresh_dir(&dirs[0], "kb")?)?;
    for &(size, with, without) in &kb {
        println!(
            "| {size} | {} | {} | {} |",
            fmt_time(with),
            fmt_time(without),
            fmt_time(with - without)
        );
    }
    let pick = |s: usize| {
        kb.iter()
            .find(|x| x.0 == s)
            .map(|x| x.1 - x.2)
            .unwrap_or(0.0)
    };
    let slope = (pick(1 << 20) - pick(1024)) / ((1 << 20) as f64 / 1024.0 - 1.0);
    println!(
        "\nOverhead above 1 KB: **{:.3} µs per KB** (paper: 17.9 µs/KB on a 175 MHz Alpha).\n",
        slope / 1e3
    );
    eprintln!("[{:.0}s] per-KB", t0.elapsed().as_secs_f64());

    println!("## Implicit mode: transaction writing one word in each of N random pages\n");
    println!("| dir | mode | N=1 | N=64 | per page |\n|---|---|---:|---:|---:|");
    for (d, label) in dirs.iter().zip(&labels) {
        for mode in [LogMode::Explicit, LogMode::Implicit, LogMode::ImplicitUffd] {
            let w = fresh_dir(d, "imp")?;
            let one = vista_implicit(&w, mode, 1);
            let many = vista_implicit(&w, mode, 64);
            match (one, many) {
                (Ok(a), Ok(b)) => println!(
                    "| {label} | {mode:?} | {} | {} | {} |",
                    fmt_time(a),
                    fmt_time(b),
                    fmt_time((b - a) / 63.0)
                ),
                (Err(e), _) | (_, Err(e)) => {
                    println!("| {label} | {mode:?} | unavailable: {e} | | |")
                }
            }
        }
    }
    println!("\n(Explicit = the same stores without any logging: the baseline.)\n");
    eprintln!("[{:.0}s] implicit", t0.elapsed().as_secs_f64());

    let workloads: [(&str, &str, Workload); 4] = [
        ("Small update, 8 bytes", "latency", |kv| {
            Ok(small(kv, 8, round())?)
        }),
        ("Small update, 64 bytes", "latency", |kv| {
            Ok(small(kv, 64, round())?)
        }),
        ("Debit-credit (TPC-B-like)", "throughput", |kv| {
            Ok(debit_credit(kv, round())?)
        }),
        (
            "Order-entry (TPC-C-like: new-order, payment, delivery)",
            "throughput",
            |kv| Ok(order_entry(kv, round())?),
        ),
    ];
    for (title, kind, wl) in workloads {
        println!("## {title}\n");
        let mut header = String::from("| system |");
        let mut sep = String::from("|---|");
        for l in &labels {
            header += &format!(" {l} | ratio |");
            sep += "---:|---:|";
        }
        println!("{header}\n{sep}");
        let mut base: Vec<Option<f64>> = vec![None; dirs.len()];
        for sys in SYSTEMS {
            if !selected(sys) {
                continue;
            }
            let mut row = format!("| {} |", sys.name());
            for (i, d) in dirs.iter().enumerate() {
                let w = fresh_dir(d, "kv")?;
                let res = sys.open(&w, 64 << 20).and_then(|mut kv| wl(kv.as_mut()));
                let _ = std::fs::remove_dir_all(&w);
                match res {
                    Ok(ns) => {
                        if sys == System::VistaMemory {
                            base[i] = Some(ns);
                        }
                        let shown = if kind == "latency" {
                            fmt_time(ns)
                        } else {
                            format!("{:.0} tx/s", 1e9 / ns)
                        };
                        let ratio = base[i]
                            .map(|b| format!("{:.1}x", ns / b))
                            .unwrap_or_default();
                        row += &format!(" {shown} | {ratio} |");
                    }
                    Err(e) => row += &format!(" error: {e} | |"),
                }
                eprintln!(
                    "[{:.0}s] {title}: {} on {}",
                    t0.elapsed().as_secs_f64(),
                    sys.name(),
                    labels[i]
                );
            }
            println!("{row}");
        }
        println!();
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    println!("Total time: {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}
