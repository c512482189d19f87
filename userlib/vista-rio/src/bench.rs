//! `vista-rio bench`: Vista on Rio against SQLite, redb and LMDB, in one guest run.
//!
//! The workloads are `vista_compare`'s (the same code as the host benchmark
//! `make bench-vista`): small updates of 8 and 64 bytes, debit-credit (TPC-B-like) and
//! order-entry (TPC-C-like), through one key-value interface. Vista on Rio runs them in a
//! segment in a Rio object (`Durability::Memory`: durable at every store, no system call
//! per transaction); the others run on a directory of a disk file system and on tmpfs,
//! and optionally on riofs and on ext4 `-o dax` over persistent memory (the pmem-dax peer,
//! where Vista's file backend maps the file with DAX: its stores go straight to the
//! persistent memory, with no protection against the kernel's).
//! Ratios are each system's time per transaction over Vista on Rio's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use rio_client::Rio;
use vista::{Durability, Segment, SegmentConfig};
use vista_compare::{
    debit_credit, fmt_time, order_entry, raw_small, small, vista_addr, HeedKv, Kv, RedbKv,
    SqliteKv, VistaKv,
};

/// Options of `vista-rio bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// A directory on a disk file system (created; its contents are deleted).
    #[arg(long, default_value = "/mnt/vista-bench")]
    disk_dir: PathBuf,
    /// What to call the disk in the table.
    #[arg(long, default_value = "ext4 on virtio disk")]
    disk_label: String,
    /// A directory on tmpfs (created; its contents are deleted).
    #[arg(long, default_value = "/tmp/vista-bench")]
    tmpfs_dir: PathBuf,
    /// Length of one timed round in milliseconds (each cell: a warm-up round, then the
    /// median of 7 rounds).
    #[arg(long, default_value_t = 60)]
    round_ms: u64,
    /// Only systems whose name contains one of these comma-separated words.
    #[arg(long)]
    only: Option<String>,
    /// Prefix of the Rio objects the benchmark creates (and deletes).
    #[arg(long, default_value = "vista-bench")]
    object: String,
    /// Also run the systems on riofs, mounted here (by the benchmark, after the Rio rows,
    /// so that the arena holds one at a time: a riofs of --riofs-size in object
    /// `<object>-riofs`, unmounted and deleted at the end).
    #[arg(long)]
    riofs_dir: Option<PathBuf>,
    /// Size of that riofs.
    #[arg(long, default_value = "48M")]
    riofs_size: String,
    /// Also run the systems on ext4 mounted `-o dax` on persistent memory, here (mounted
    /// beforehand: `pmem-dax setup DIR`).
    #[arg(long)]
    pmem_dir: Option<PathBuf>,
}

/// Where a system keeps its data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Rio,
    Disk,
    Tmpfs,
    /// Ordinary files on riofs (the Rio file cache as a file system).
    Riofs,
    /// Ordinary files on ext4 -o dax over persistent memory (pmem-dax).
    PmemDax,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    VistaRio,
    VistaFile(Durability),
    Sqlite(&'static str),
    Redb,
    Lmdb,
}

struct System {
    name: &'static str,
    kind: Kind,
    place: Place,
    /// Whether a committed transaction survives a kernel crash.
    survives: &'static str,
}

const SYSTEMS: [System; 19] = [
    System {
        name: "Vista on Rio (Memory)",
        kind: Kind::VistaRio,
        place: Place::Rio,
        survives: "yes",
    },
    System {
        name: "Vista (file, Memory)",
        kind: Kind::VistaFile(Durability::Memory),
        place: Place::Tmpfs,
        survives: "no",
    },
    System {
        name: "Vista (file, Msync)",
        kind: Kind::VistaFile(Durability::Msync),
        place: Place::Disk,
        survives: "yes",
    },
    System {
        name: "SQLite WAL, synchronous=FULL",
        kind: Kind::Sqlite("FULL"),
        place: Place::Disk,
        survives: "yes",
    },
    System {
        name: "SQLite WAL, synchronous=NORMAL",
        kind: Kind::Sqlite("NORMAL"),
        place: Place::Disk,
        survives: "last commits may be lost",
    },
    System {
        name: "redb (Durability::Immediate)",
        kind: Kind::Redb,
        place: Place::Disk,
        survives: "yes",
    },
    System {
        name: "LMDB via heed (default sync)",
        kind: Kind::Lmdb,
        place: Place::Disk,
        survives: "yes",
    },
    System {
        name: "SQLite WAL, synchronous=FULL",
        kind: Kind::Sqlite("FULL"),
        place: Place::Tmpfs,
        survives: "no",
    },
    System {
        name: "SQLite WAL, synchronous=NORMAL",
        kind: Kind::Sqlite("NORMAL"),
        place: Place::Tmpfs,
        survives: "no",
    },
    System {
        name: "redb (Durability::Immediate)",
        kind: Kind::Redb,
        place: Place::Tmpfs,
        survives: "no",
    },
    System {
        name: "LMDB via heed (default sync)",
        kind: Kind::Lmdb,
        place: Place::Tmpfs,
        survives: "no",
    },
    // On riofs, as a user would run them: ordinary files, no special VFS; every write and
    // every store through a mapping is in the protected arena when it returns.
    System {
        name: "Vista (file, Memory)",
        kind: Kind::VistaFile(Durability::Memory),
        place: Place::Riofs,
        survives: "yes",
    },
    System {
        name: "SQLite WAL, synchronous=FULL",
        kind: Kind::Sqlite("FULL"),
        place: Place::Riofs,
        survives: "yes",
    },
    System {
        name: "redb (Durability::Immediate)",
        kind: Kind::Redb,
        place: Place::Riofs,
        survives: "yes",
    },
    System {
        name: "LMDB via heed (default sync)",
        kind: Kind::Lmdb,
        place: Place::Riofs,
        survives: "yes",
    },
    // On ext4 -o dax over persistent memory: the file's data is the persistent memory, a
    // shared mapping of it maps the memory itself (no page cache), and the kernel's own
    // stores can reach it through its direct map (no protection). Vista's file backend
    // sizes its file sparse, so its pages are allocated at first touch and reachable
    // after a crash only once the journal has committed them (5 s), or after an msync.
    System {
        name: "Vista (file, Memory)",
        kind: Kind::VistaFile(Durability::Memory),
        place: Place::PmemDax,
        survives: "yes, once its blocks are committed (journal, 5 s)",
    },
    System {
        name: "SQLite WAL, synchronous=FULL",
        kind: Kind::Sqlite("FULL"),
        place: Place::PmemDax,
        survives: "yes",
    },
    System {
        name: "redb (Durability::Immediate)",
        kind: Kind::Redb,
        place: Place::PmemDax,
        survives: "yes",
    },
    System {
        name: "LMDB via heed (default sync)",
        kind: Kind::Lmdb,
        place: Place::PmemDax,
        survives: "yes",
    },
];

/// Data bytes of the key-value segments (the largest workload, order-entry, needs about
/// 15 MiB) and their log (one load transaction of 20,000 records of up to 528 bytes).
const KV_DATA: usize = 24 << 20;
const KV_LOG: usize = 8 << 20;
/// Data bytes of the raw-latency segment; the "cold" window spans all of it.
const RAW_DATA: usize = 16 << 20;

/// The Rio objects and directories of one run; removes what it made.
struct Env<'a> {
    args: &'a BenchArgs,
    rio: Rio,
}

impl Env<'_> {
    fn dir(&self, place: Place) -> &Path {
        match (place, &self.args.riofs_dir, &self.args.pmem_dir) {
            (Place::Disk, _, _) => &self.args.disk_dir,
            (Place::Riofs, Some(d), _) => d,
            (Place::PmemDax, _, Some(d)) => d,
            _ => &self.args.tmpfs_dir,
        }
    }

    /// Mounts the riofs for the riofs rows (a fresh object).
    fn mount_riofs(&self, dir: &Path) -> Result<()> {
        let name = self.fresh_object("riofs")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let st = std::process::Command::new("mount")
            .args(["-t", "riofs", "-o"])
            .arg(format!("size={}", self.args.riofs_size))
            .arg(&name)
            .arg(dir)
            .status()
            .context("running mount")?;
        anyhow::ensure!(
            st.success(),
            "mount -t riofs {name} {} failed",
            dir.display()
        );
        Ok(())
    }

    /// Unmounts it and deletes its object.
    fn unmount_riofs(&self, dir: &Path) -> Result<()> {
        let st = std::process::Command::new("umount")
            .arg(dir)
            .status()
            .context("running umount")?;
        anyhow::ensure!(st.success(), "umount {} failed", dir.display());
        let name = format!("{}-riofs", self.args.object);
        self.rio
            .delete(&name)
            .with_context(|| format!("deleting Rio object {name:?}"))
    }

    fn place_label(&self, place: Place) -> String {
        match place {
            Place::Rio => "Rio object".into(),
            Place::Disk => format!(
                "{} ({})",
                self.args.disk_label,
                self.args.disk_dir.display()
            ),
            Place::Tmpfs => format!("tmpfs ({})", self.args.tmpfs_dir.display()),
            Place::Riofs => format!("riofs ({})", self.dir(place).display()),
            Place::PmemDax => format!("pmem-dax, ext4 -o dax ({})", self.dir(place).display()),
        }
    }

    fn fresh_dir(&self, place: Place) -> Result<PathBuf> {
        let d = self.dir(place).join("kv");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    /// A fresh Rio object name (any leftover of an earlier run is deleted first).
    fn fresh_object(&self, what: &str) -> Result<String> {
        let name = format!("{}-{what}", self.args.object);
        match self.rio.delete(&name) {
            Ok(()) | Err(rio_client::Error::NotFound(_)) => Ok(name),
            Err(e) => Err(e).with_context(|| format!("deleting the old object {name:?}")),
        }
    }

    /// Runs `f` on a fresh Vista segment in a Rio object, then deletes the object.
    fn with_rio_segment<T>(
        &self,
        what: &str,
        cfg: &SegmentConfig,
        f: impl FnOnce(Segment) -> Result<(T, Option<Segment>)>,
    ) -> Result<T> {
        let name = self.fresh_object(what)?;
        let seg = Segment::create_rio(&self.rio, &name, vista_addr(), cfg)
            .with_context(|| format!("creating a segment in Rio object {name:?}"))?;
        // Drop the segment (unmap, close) before deleting the object; on an error `f`
        // dropped it already.
        let r = f(seg).map(|(t, seg)| {
            drop(seg);
            t
        });
        self.rio
            .delete(&name)
            .with_context(|| format!("deleting Rio object {name:?}"))?;
        r
    }

    fn run_workload(&self, sys: &System, wl: Workload, round: Duration) -> Result<f64> {
        match sys.kind {
            Kind::VistaRio => {
                let cfg = SegmentConfig::new(KV_DATA).log_capacity(KV_LOG);
                self.with_rio_segment("kv", &cfg, |seg| {
                    let mut kv = VistaKv::from_segment(seg);
                    let ns = wl.run(&mut kv, round)?;
                    Ok((ns, kv.into_segment()))
                })
            }
            kind => {
                let dir = self.fresh_dir(sys.place)?;
                let mut kv: Box<dyn Kv> = match kind {
                    Kind::VistaFile(d) => Box::new(VistaKv::file(&dir, d, KV_DATA)?),
                    Kind::Sqlite(sync) => Box::new(SqliteKv::new(&dir, sync)?),
                    Kind::Redb => Box::new(RedbKv::new(&dir)?),
                    Kind::Lmdb => Box::new(HeedKv::new(&dir)?),
                    Kind::VistaRio => anyhow::bail!("Vista on Rio has no directory"),
                };
                let r = wl.run(kv.as_mut(), round);
                drop(kv);
                let _ = std::fs::remove_dir_all(&dir);
                r
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Workload {
    Small8,
    Small64,
    DebitCredit,
    OrderEntry,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Small8,
        Workload::Small64,
        Workload::DebitCredit,
        Workload::OrderEntry,
    ];

    fn title(self) -> &'static str {
        match self {
            Workload::Small8 => "small update 8 B",
            Workload::Small64 => "small update 64 B",
            Workload::DebitCredit => "debit-credit",
            Workload::OrderEntry => "order-entry",
        }
    }

    fn is_latency(self) -> bool {
        matches!(self, Workload::Small8 | Workload::Small64)
    }

    fn run(self, kv: &mut dyn Kv, round: Duration) -> Result<f64> {
        Ok(match self {
            Workload::Small8 => small(kv, 8, round)?,
            Workload::Small64 => small(kv, 64, round)?,
            Workload::DebitCredit => debit_credit(kv, round)?,
            Workload::OrderEntry => order_entry(kv, round)?,
        })
    }

    fn show(self, ns: f64) -> String {
        if self.is_latency() {
            fmt_time(ns)
        } else {
            format!("{:.0} tx/s", 1e9 / ns)
        }
    }
}

fn selected(args: &BenchArgs, name: &str) -> bool {
    match &args.only {
        None => true,
        Some(f) => f
            .split(',')
            .any(|w| name.to_lowercase().contains(&w.trim().to_lowercase())),
    }
}

/// Raw small transactions on a segment without a heap: (8 B hot, 64 B hot, 8 B cold,
/// 64 B cold).
fn raw_cells(seg: &mut Segment, round: Duration) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for window in [64 << 10, RAW_DATA] {
        for size in [8, 64] {
            out.push(raw_small(seg, size, window, round)?);
        }
    }
    Ok(out)
}

/// Runs the benchmark and prints the tables.
pub fn run(args: &BenchArgs) -> Result<()> {
    let env = Env {
        args,
        rio: Rio::open()?,
    };
    for p in [Place::Disk, Place::Tmpfs] {
        std::fs::create_dir_all(env.dir(p))
            .with_context(|| format!("creating {}", env.dir(p).display()))?;
    }
    let round = Duration::from_millis(args.round_ms);
    let t0 = Instant::now();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("# Vista on Rio: benchmarks in the guest\n");
    println!(
        "{cpus} vCPUs; timed rounds of {} ms; every cell is the median of 7 rounds after a warm-up. \
         Ratio (x) = time per transaction / Vista on Rio's, so 10x means ten times slower.\n",
        args.round_ms
    );

    println!("## Small transactions, raw API (begin, set_range, store, commit)\n");
    println!(
        "Random 8-byte aligned location in a 64 KiB window (hot in cache) or anywhere in {} MiB.\n",
        RAW_DATA >> 20
    );
    println!(
        "| backing | 8 B, hot | 64 B, hot | 8 B, {0} MiB | 64 B, {0} MiB |\n|---|---:|---:|---:|---:|",
        RAW_DATA >> 20
    );
    let raw_cfg = SegmentConfig::new(RAW_DATA)
        .heap(false)
        .log_capacity(1 << 20);
    let rio_raw = env.with_rio_segment("raw", &raw_cfg, |mut seg| {
        let cells = raw_cells(&mut seg, round)?;
        Ok((cells, Some(seg)))
    });
    let show_raw = |label: &str, r: &Result<Vec<f64>>| match r {
        Ok(c) => println!(
            "| {label} | {} |",
            c.iter()
                .map(|&ns| fmt_time(ns))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        Err(e) => println!("| {label} | error: {e:#} | | | |"),
    };
    show_raw("Vista on Rio (Memory)", &rio_raw);
    eprintln!("[{:.0}s] raw: Rio", t0.elapsed().as_secs_f64());
    let tmp_raw = (|| {
        let dir = env.fresh_dir(Place::Tmpfs)?;
        let mut seg = Segment::create_file(
            dir.join("raw.seg"),
            vista_addr(),
            &raw_cfg,
            Durability::Memory,
        )?;
        let r = raw_cells(&mut seg, round);
        drop(seg);
        let _ = std::fs::remove_dir_all(&dir);
        r
    })();
    show_raw("Vista (file on tmpfs, Memory; not crash-proof)", &tmp_raw);
    eprintln!("[{:.0}s] raw: tmpfs", t0.elapsed().as_secs_f64());
    if args.pmem_dir.is_some() {
        let dax_raw = (|| {
            let dir = env.fresh_dir(Place::PmemDax)?;
            let mut seg = Segment::create_file(
                dir.join("raw.seg"),
                vista_addr(),
                &raw_cfg,
                Durability::Memory,
            )?;
            let r = raw_cells(&mut seg, round);
            drop(seg);
            let _ = std::fs::remove_dir_all(&dir);
            r
        })();
        show_raw("Vista (file on pmem-dax, ext4 -o dax, Memory)", &dax_raw);
        eprintln!("[{:.0}s] raw: pmem-dax", t0.elapsed().as_secs_f64());
    }
    println!();

    println!("## Workloads through the key-value interface\n");
    println!(
        "Small update: 100,000 records of 64 B, one random record rewritten per transaction \
         (latency). Debit-credit (TPC-B-like) and order-entry (TPC-C-like: new-order, \
         payment, delivery) run serially (throughput). Everything is the code of \
         `vista_compare`, as in the host benchmark.\n"
    );
    let mut header = String::from("| system | where | committed tx survives a kernel crash |");
    let mut sep = String::from("|---|---|---|");
    for wl in Workload::ALL {
        header += &format!(" {} | x |", wl.title());
        sep += "---:|---:|";
    }
    println!("{header}\n{sep}");
    let mut base: [Option<f64>; 4] = [None; 4];
    let mut riofs_mounted = false;
    for sys in &SYSTEMS {
        if sys.kind != Kind::VistaRio && !selected(args, sys.name) {
            continue;
        }
        if sys.place == Place::PmemDax && args.pmem_dir.is_none() {
            continue;
        }
        if sys.place == Place::Riofs {
            let Some(dir) = &args.riofs_dir else {
                continue;
            };
            if !riofs_mounted {
                env.mount_riofs(dir)?;
                riofs_mounted = true;
                eprintln!(
                    "[{:.0}s] riofs mounted on {}",
                    t0.elapsed().as_secs_f64(),
                    dir.display()
                );
            }
        }
        let mut row = format!(
            "| {} | {} | {} |",
            sys.name,
            env.place_label(sys.place),
            sys.survives
        );
        for (i, wl) in Workload::ALL.into_iter().enumerate() {
            match env.run_workload(sys, wl, round) {
                Ok(ns) => {
                    if sys.kind == Kind::VistaRio {
                        base[i] = Some(ns);
                    }
                    let ratio = base[i]
                        .map(|b| format!("{:.1}", ns / b))
                        .unwrap_or_default();
                    row += &format!(" {} | {ratio} |", wl.show(ns));
                }
                Err(e) => row += &format!(" error: {e:#} | |"),
            }
            eprintln!(
                "[{:.0}s] {} / {} on {}",
                t0.elapsed().as_secs_f64(),
                wl.title(),
                sys.name,
                env.place_label(sys.place)
            );
        }
        println!("{row}");
    }
    println!();
    for p in [Place::Disk, Place::Tmpfs, Place::Riofs, Place::PmemDax] {
        let _ = std::fs::remove_dir_all(env.dir(p).join("kv"));
    }
    if let (true, Some(dir)) = (riofs_mounted, &args.riofs_dir) {
        env.unmount_riofs(dir)?;
    }
    println!("Total time: {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}
