//! rio-bench: runs inside the test guest. Measures the latency of durable writes:
//! `pwrite` to a Rio object with protection on and off (reloading rio.ko in between),
//! `pwrite` to a tmpfs file (not durable: the speed limit), and `pwrite` + `fdatasync` to
//! a virtio disk; with `--pmem DIR`, also `pwrite` (with and without `fdatasync`) to a
//! file on ext4 mounted `-o dax` on persistent memory (the pmem-dax peer). Prints a
//! markdown table of medians and ratios.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rio_client::{OpenMode, Rio};

/// Benchmark durable writes in the guest.
#[derive(Parser)]
#[command(name = "rio-bench", version, about)]
struct Cli {
    /// Block device for the pwrite+fdatasync peer (its contents are overwritten).
    #[arg(long, default_value = "/dev/vda")]
    disk: String,
    /// Writes per Rio/tmpfs measurement.
    #[arg(long, default_value_t = 3000)]
    iters: usize,
    /// Writes per disk measurement (each one waits for the disk).
    #[arg(long, default_value_t = 300)]
    disk_iters: usize,
    /// Repetitions of each measurement; the table reports the median of their medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A directory on ext4 mounted `-o dax` on persistent memory (`pmem-dax setup DIR`):
    /// adds the pmem-dax rows.
    #[arg(long)]
    pmem: Option<String>,
}

const REGION: u64 = 8 << 20;

/// Per-write latencies in nanoseconds for `iters` writes of `size` bytes, cycling through
/// an 8 MiB region.
fn measure(
    iters: usize,
    size: usize,
    mut write: impl FnMut(&[u8], u64) -> Result<()>,
) -> Result<Vec<u64>> {
    let buf = vec![0x5au8; size];
    let slots = REGION / size as u64;
    let mut lat = Vec::with_capacity(iters);
    // Warm up: touch every slot once.
    for i in 0..slots.min(iters as u64) {
        write(&buf, i * size as u64)?;
    }
    for i in 0..iters {
        let off = (i as u64 % slots) * size as u64;
        let t = Instant::now();
        write(&buf, off)?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Ok(lat)
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn sh(cmd: &str) -> Result<()> {
    let st = Command::new("/bin/sh").arg("-c").arg(cmd).status()?;
    if !st.success() {
        bail!("`{cmd}` failed");
    }
    Ok(())
}

struct Row {
    name: String,
    durable: &'static str,
    lat_4k: u64,
    lat_64k: u64,
}

fn runs(n: usize, mut f: impl FnMut() -> Result<u64>) -> Result<u64> {
    let mut meds = Vec::new();
    for _ in 0..n {
        meds.push(f()?);
    }
    Ok(median(&mut meds))
}

fn rio_row(cli: &Cli, protect: bool) -> Result<Row> {
    sh(&format!(
        "rmmod rio 2>/dev/null; rio-load protect={}",
        u8::from(protect)
    ))?;
    let rio = Rio::open()?;
    if rio.info()?.state != rio_client::ArenaState::Ready {
        rio.format(false)?;
    }
    let _ = rio.delete("bench");
    rio.create("bench", REGION, 0o600)?;
    let obj = rio.open_object("bench", OpenMode::ReadWrite)?;
    let mut row = Row {
        name: format!("Rio, protection {}", if protect { "on" } else { "off" }),
        durable: "yes, at return",
        lat_4k: 0,
        lat_64k: 0,
    };
    for (size, slot) in [(4096usize, &mut row.lat_4k), (65536, &mut row.lat_64k)] {
        *slot = runs(cli.runs, || {
            let mut l = measure(cli.iters, size, |b, off| Ok(obj.write_all_at(b, off)?))?;
            Ok(median(&mut l))
        })?;
    }
    drop(obj);
    rio.delete("bench")?;
    Ok(row)
}

fn file_row(
    cli: &Cli,
    name: &str,
    path: &str,
    sync: bool,
    iters: usize,
    durable: &'static str,
) -> Result<Row> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        // The disk peer is a block device: nothing to truncate; the tmpfs file is rewritten.
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {path}"))?;
    let mut row = Row {
        name: name.to_string(),
        durable,
        lat_4k: 0,
        lat_64k: 0,
    };
    for (size, slot) in [(4096usize, &mut row.lat_4k), (65536, &mut row.lat_64k)] {
        *slot = runs(cli.runs, || {
            let mut l = measure(iters, size, |b, off| {
                f.write_all_at(b, off)?;
                if sync {
                    f.sync_data()?;
                }
                Ok(())
            })?;
            Ok(median(&mut l))
        })?;
    }
    Ok(row)
}

fn us(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1000.0)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut rows = vec![
        rio_row(&cli, true)?,
        rio_row(&cli, false)?,
        file_row(
            &cli,
            "tmpfs file, pwrite",
            "/tmp/rio-bench.dat",
            false,
            cli.iters,
            "no",
        )?,
        file_row(
            &cli,
            "virtio disk, pwrite + fdatasync",
            &cli.disk,
            true,
            cli.disk_iters,
            "yes, at return",
        )?,
    ];
    let _ = std::fs::remove_file("/tmp/rio-bench.dat");
    if let Some(dir) = &cli.pmem {
        // The warm-up writes every slot once, so the timed writes are overwrites of
        // allocated blocks: DAX copies them into the persistent memory before returning,
        // and the block allocations were committed by the journal (or the fdatasync).
        let path = format!("{dir}/rio-bench.dat");
        rows.push(file_row(
            &cli,
            "pmem-dax (ext4 -o dax), pwrite",
            &path,
            false,
            cli.iters,
            "overwrites at return; new blocks at the journal commit",
        )?);
        rows.push(file_row(
            &cli,
            "pmem-dax (ext4 -o dax), pwrite + fdatasync",
            &path,
            true,
            cli.iters,
            "yes, at return",
        )?);
        std::fs::remove_file(&path).with_context(|| format!("removing {path}"))?;
    }
    let prot = &rows[0];
    println!("| write path | durable | 4 KB median (µs) | 64 KB median (µs) | 4 KB MB/s | 64 KB MB/s | 4 KB vs Rio protected |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2}x |",
            r.name,
            r.durable,
            us(r.lat_4k),
            us(r.lat_64k),
            4096.0 / r.lat_4k as f64 * 1e3,
            65536.0 / r.lat_64k as f64 * 1e3,
            r.lat_4k as f64 / prot.lat_4k as f64
        );
    }
    let off = &rows[1];
    println!();
    println!(
        "protection overhead: {:+.1} % at 4 KB, {:+.1} % at 64 KB",
        (prot.lat_4k as f64 / off.lat_4k as f64 - 1.0) * 100.0,
        (prot.lat_64k as f64 / off.lat_64k as f64 - 1.0) * 100.0
    );
    println!(
        "Rio protected vs tmpfs at 4 KB: {:.2}x the latency; vs pwrite+fdatasync: {:.0}x faster",
        prot.lat_4k as f64 / rows[2].lat_4k as f64,
        rows[3].lat_4k as f64 / prot.lat_4k as f64
    );
    if let [.., dax, dax_sync] = &rows[..] {
        if cli.pmem.is_some() {
            println!(
                "Rio protected vs pmem-dax pwrite: {:.2}x the latency at 4 KB, {:.2}x at 64 KB; vs pmem-dax pwrite+fdatasync: {:.2}x, {:.2}x",
                prot.lat_4k as f64 / dax.lat_4k as f64,
                prot.lat_64k as f64 / dax.lat_64k as f64,
                prot.lat_4k as f64 / dax_sync.lat_4k as f64,
                prot.lat_64k as f64 / dax_sync.lat_64k as f64
            );
        }
    }
    Ok(())
}
