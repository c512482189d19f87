//! Discount Checking benchmarks (run by `scripts/bench-dc.sh`; build with `--release`).
//!
//! * `mech`: the raw mechanisms for learning which pages changed: copying 4 KB,
//!   mprotect + SIGSEGV per page, userfaultfd asynchronous write-protect per page,
//!   `PAGEMAP_SCAN` per call.
//! * `ckpt`: checkpoint latency in a recoverable process: the minimum (nothing written
//!   but the stack) and the cost per dirty page.
//! * `compute`: a compute program (`dc-compute`) with and without 1-second checkpoints.
//! * `kv`: the key-value shell under every protocol, driven command by command.
//! * `sud`: the cost of a system call that Syscall User Dispatch traps (SIGSYS, decode,
//!   the call's handler, `rt_sigreturn`) against the same call through the libc wrapper.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Discount Checking benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Raw dirty-page mechanisms (no Discount Checking).
    Mech {
        /// Pages per measurement.
        #[arg(long, default_value_t = 4096)]
        pages: usize,
    },
    /// Checkpoint latency (run with DC_DIR set; DC_TRACKER chooses the tracker).
    Ckpt {
        /// Checkpoints for the minimum.
        #[arg(long, default_value_t = 2000)]
        n: usize,
        /// Only the minimum (for profiling).
        #[arg(long)]
        min_only: bool,
    },
    /// Compute program with and without periodic checkpoints.
    Compute {
        /// dc-compute binary.
        #[arg(long)]
        bin: PathBuf,
        /// Checkpoint interval (ms).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Arguments for dc-compute.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Cost per trapped system call against a wrapped one (run with DC_DIR set).
    Sud {
        /// Calls per measurement.
        #[arg(long, default_value_t = 20000)]
        n: usize,
    },
    /// The key-value shell under each protocol.
    Kv {
        /// dc-kv binary.
        #[arg(long)]
        bin: PathBuf,
        /// Commands per run.
        #[arg(long, default_value_t = 400)]
        commands: usize,
        /// State directory root.
        #[arg(long, default_value = "/tmp/dc-bench")]
        dir: PathBuf,
    },
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

// ---------------------------------------------------------------------------------------

static mut FAULTS: usize = 0;

extern "C" fn on_segv(_s: libc::c_int, info: *mut libc::siginfo_t, _u: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; unprotecting the faulting page.
    unsafe {
        let a = (*info).si_addr() as usize & !4095;
        libc::mprotect(
            a as *mut libc::c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
        );
        FAULTS += 1;
    }
}

fn mmap(len: usize) -> Result<*mut u8> {
    // SAFETY: anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        bail!("mmap failed");
    }
    Ok(p as *mut u8)
}

fn mech(pages: usize) -> Result<()> {
    let len = pages * 4096;
    let a = mmap(len)?;
    let b = mmap(len)?;
    // SAFETY: both mappings are len bytes, ours.
    unsafe {
        std::ptr::write_bytes(a, 1, len);
        std::ptr::write_bytes(b, 2, len);
    }
    let mut copy = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for i in 0..pages {
            // SAFETY: page i of both mappings.
            unsafe { std::ptr::copy_nonoverlapping(a.add(i * 4096), b.add(i * 4096), 4096) };
        }
        copy.push(ns(t.elapsed()) / pages as f64);
    }
    println!(
        "| copy 4 KB (memcpy) | {:.2} µs |",
        median(&mut copy) / 1000.0
    );

    // mprotect + SIGSEGV
    // SAFETY: installing a SIGSEGV handler (SA_SIGINFO) for the measurement.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_segv as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
    }
    let mut seg = Vec::new();
    let mut prot = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        // SAFETY: our mapping.
        unsafe { libc::mprotect(a.cast(), len, libc::PROT_READ) };
        prot.push(ns(t.elapsed()));
        let t = Instant::now();
        for i in 0..pages {
            // SAFETY: page i of our mapping (faults once, handler unprotects).
            unsafe { a.add(i * 4096).write_volatile(3) };
        }
        seg.push(ns(t.elapsed()) / pages as f64);
    }
    println!(
        "| first write after mprotect (SIGSEGV + mprotect) | {:.2} µs / page (mprotect of {pages} pages: {:.0} µs) |",
        median(&mut seg) / 1000.0,
        median(&mut prot) / 1000.0
    );

    // userfaultfd async write-protect + PAGEMAP_SCAN, through discount's tracker.
    let mut t = match discount::track::Tracker::new(discount::TrackerKind::Uffd) {
        Ok(t) => t,
        Err(e) => {
            println!("| userfaultfd WP_ASYNC | unavailable: {e} |");
            return Ok(());
        }
    };
    let (s, e) = (b as usize, b as usize + len);
    t.register(s, e)?;
    t.reset(s, e)?;
    let mut fault = Vec::new();
    let mut scan_full = Vec::new();
    let mut scan_empty = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        for i in 0..pages {
            // SAFETY: page i of our mapping.
            unsafe { b.add(i * 4096).write_volatile(4) };
        }
        fault.push(ns(t0.elapsed()) / pages as f64);
        let t0 = Instant::now();
        let mut n = 0;
        t.scan(s, e, 0, &mut |x, y| {
            n += (y - x) / 4096;
            Ok(())
        })?;
        scan_full.push(ns(t0.elapsed()) / n.max(1) as f64);
        let t0 = Instant::now();
        t.scan(s, e, 0, &mut |_, _| Ok(()))?;
        scan_empty.push(ns(t0.elapsed()));
    }
    println!(
        "| first write under userfaultfd async write-protect | {:.2} µs / page |",
        median(&mut fault) / 1000.0
    );
    println!(
        "| PAGEMAP_SCAN + re-protect, all {pages} pages dirty | {:.3} µs / page |",
        median(&mut scan_full) / 1000.0
    );
    println!(
        "| PAGEMAP_SCAN of {} MiB, nothing dirty | {:.1} µs |",
        len >> 20,
        median(&mut scan_empty) / 1000.0
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn ckpt(n: usize, min_only: bool) -> Result<()> {
    discount::init(discount::Config::from_env()?)?;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        discount::checkpoint()?;
        lat.push(ns(t.elapsed()));
    }
    let min = lat.iter().cloned().fold(f64::MAX, f64::min);
    let med = median(&mut lat);
    let st = discount::stats();
    println!(
        "| minimum checkpoint | median {:.2} µs, best {:.2} µs ({} pages per checkpoint; mean {:.2} µs finding and copying pages, {:.2} µs in Vista, {:.2} µs total inside) |",
        med / 1000.0,
        min / 1000.0,
        st.last_pages,
        st.scan_copy_ns as f64 / st.checkpoints as f64 / 1000.0,
        st.vista_ns as f64 / st.checkpoints as f64 / 1000.0,
        st.ns as f64 / st.checkpoints as f64 / 1000.0,
    );
    if min_only {
        return Ok(());
    }
    let mut base = 0.0;
    for &pages in &[0usize, 16, 64, 256, 1024, 4096] {
        let buf = vec![0u8; pages.max(1) * 4096 + 4096];
        let p = ((buf.as_ptr() as usize + 4095) & !4095) as *mut u8;
        discount::checkpoint()?;
        let reps = 30;
        let (mut wr, mut ck) = (Vec::new(), Vec::new());
        for r in 0..reps {
            let t = Instant::now();
            for i in 0..pages {
                // SAFETY: page i of our buffer.
                unsafe { p.add(i * 4096).write_volatile(r as u8) };
            }
            wr.push(ns(t.elapsed()));
            let t = Instant::now();
            discount::checkpoint()?;
            ck.push(ns(t.elapsed()));
        }
        let (w, c) = (median(&mut wr), median(&mut ck));
        if pages == 0 {
            base = c;
            println!(
                "| checkpoint, 0 heap pages dirtied | {:.2} µs |",
                c / 1000.0
            );
        } else {
            println!(
                "| checkpoint, {pages} heap pages dirtied | {:.1} µs: {:.2} µs per page in the checkpoint + {:.2} µs per page of first-write faults = {:.2} µs per page |",
                c / 1000.0,
                (c - base) / pages as f64 / 1000.0,
                w / pages as f64 / 1000.0,
                (c - base + w) / pages as f64 / 1000.0
            );
        }
        drop(buf);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn child_cpu() -> f64 {
    // SAFETY: rusage is plain C data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for getrusage to fill.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn compute(bin: &PathBuf, interval_ms: u64, reps: usize, args: &[String]) -> Result<()> {
    let dir = tempdir_path("compute")?;
    let run = |env: &[(&str, String)]| -> Result<f64> {
        let _ = std::fs::remove_dir_all(&dir);
        let t = Instant::now();
        let st = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.clone())))
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("dc-compute failed");
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        off.push(run(&[("DC_DISABLE", "1".into())])?);
        on.push(run(&[
            ("DC_DIR", dir.display().to_string()),
            ("DC_INTERVAL_MS", interval_ms.to_string()),
        ])?);
    }
    let (a, b) = (median(&mut off), median(&mut on));
    println!(
        "| compute, checkpoint every {interval_ms} ms | {a:.2} s without, {b:.2} s with: {:+.1} % |",
        (b / a - 1.0) * 100.0
    );
    Ok(())
}

fn tempdir_path(name: &str) -> Result<PathBuf> {
    let root = std::env::var_os("DC_BENCH_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = root.join(format!("dc-bench-{}-{name}", std::process::id()));
    Ok(d)
}

fn kv_script(n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(match i % 10 {
            0 => format!("set k{} {}", i % 50, i),
            1 => format!("get k{}", (i * 7) % 50),
            2 => "count".into(),
            3 => format!("journal entry {i}"),
            4 => format!("set w{} {}", i % 20, i * 3),
            5 => "sum".into(),
            6 => format!("del k{}", (i * 3) % 50),
            7 => "time".into(),
            8 => format!("append notes.txt line {i}"),
            _ => format!("get w{}", i % 20),
        });
    }
    v.push("quit".into());
    v
}

/// Runs dc-kv through the script, one command at a time; returns (wall seconds, child
/// CPU seconds, checkpoints).
fn kv_run(
    bin: &PathBuf,
    cwd: &PathBuf,
    env: &[(&str, String)],
    script: &[String],
) -> Result<(f64, f64)> {
    std::fs::create_dir_all(cwd)?;
    let cpu0 = child_cpu();
    let mut child = Command::new(bin)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (*k, v.clone())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut wait_prompt =
        |buf: &mut Vec<u8>, stdout: &mut std::process::ChildStdout| -> Result<()> {
            loop {
                if buf.ends_with(b"]> ") {
                    buf.clear();
                    return Ok(());
                }
                let n = stdout.read(&mut chunk)?;
                if n == 0 {
                    bail!("dc-kv ended early: {}", String::from_utf8_lossy(buf));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
    let t = Instant::now();
    wait_prompt(&mut buf, &mut stdout)?;
    for (i, c) in script.iter().enumerate() {
        stdin.write_all(format!("{c}\n").as_bytes())?;
        if i + 1 < script.len() {
            wait_prompt(&mut buf, &mut stdout)?;
        }
    }
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest)?;
    let st = child.wait()?;
    if !st.success() {
        bail!("dc-kv failed");
    }
    Ok((t.elapsed().as_secs_f64(), child_cpu() - cpu0))
}

fn kv(bin: &PathBuf, n: usize, root: &PathBuf) -> Result<()> {
    let script = kv_script(n);
    let _ = std::fs::remove_dir_all(root);
    let (base_wall, base_cpu) = kv_run(
        bin,
        &root.join("base"),
        &[("DC_DISABLE", "1".into())],
        &script,
    )?;
    let per = |s: f64| s / (n as f64 + 1.0) * 1e6;
    println!(
        "| no checkpointing | - | {:.1} µs | {:.1} µs | - | - |",
        per(base_wall),
        per(base_cpu)
    );
    for p in discount::Protocol::ALL {
        let d = root.join(format!("dc-{}", p.name()));
        let cwd = root.join(format!("cwd-{}", p.name()));
        let env = [
            ("DC_DIR", d.display().to_string()),
            ("DC_PROTOCOL", p.name().to_string()),
            ("DC_TRACE", "1".to_string()),
            ("DC_HEAP_MB", "256".to_string()),
        ];
        let (wall, cpu) = kv_run(bin, &cwd, &env, &script)?;
        let trace = std::fs::read_to_string(d.join("trace")).unwrap_or_default();
        let ev = discount::oracle::parse(&trace)?;
        let c = discount::oracle::counts(&ev);
        let viol = discount::oracle::check_one(&ev).len();
        // Overhead for a user who thinks 1 s between commands (the thesis' interactive
        // programs), from the extra time per command.
        let extra = per(wall) - per(base_wall);
        println!(
            "| {} | {} | {:.1} µs | {:.1} µs | {:+.3} % | {} |",
            p.name(),
            c.commits,
            per(wall),
            per(cpu),
            extra / 1e6 * 100.0,
            viol
        );
    }
    let _ = std::fs::remove_dir_all(root);
    Ok(())
}

/// Median nanoseconds per call of `f`, over 15 batches of `n` calls.
fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            ns(t.elapsed()) / n as f64
        })
        .collect();
    median(&mut v)
}

fn sud(n: usize) -> Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
    let byte = [b'x'];
    // The same calls three ways: glibc's `syscall()` (never wrapped: trapped once
    // dispatch is on), the libc symbol (Discount Checking's wrapper once it is
    // initialized), and Discount Checking's own gate (never trapped).
    // SAFETY: lseek on our descriptor.
    let glibc_lseek = || unsafe {
        libc::syscall(libc::SYS_lseek, fd, 0, libc::SEEK_CUR);
    };
    // SAFETY: a write of one byte from a live buffer to our descriptor.
    let glibc_write = || unsafe {
        libc::syscall(libc::SYS_write, fd, byte.as_ptr(), 1);
    };
    // SAFETY: getuid has no arguments.
    let glibc_getuid = || unsafe {
        libc::syscall(libc::SYS_getuid);
    };
    let before = (
        per_call(n, glibc_lseek),
        per_call(n, glibc_write),
        per_call(n, glibc_getuid),
    );
    discount::init(discount::Config::from_env()?)?;
    if !discount::sud::on() {
        bail!("Syscall User Dispatch is not on (DC_SUD=0, or the kernel lacks it)");
    }
    // SAFETY: lseek on our descriptor.
    let wrapped_lseek = per_call(n, || unsafe {
        libc::lseek(fd, 0, libc::SEEK_CUR);
    });
    // SAFETY: write of one byte from a live buffer.
    let wrapped_write = per_call(n, || unsafe {
        libc::write(fd, byte.as_ptr().cast(), 1);
    });
    let trapped = (
        per_call(n, glibc_lseek),
        per_call(n, glibc_write),
        per_call(n, glibc_getuid),
    );
    // SAFETY: getuid has no arguments.
    let gate = per_call(n, || unsafe {
        discount::sys::syscall6(libc::SYS_getuid, [0; 6]);
    });
    println!("| call | no Discount Checking | wrapper | trapped (SIGSYS) | trap cost |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| lseek(fd, 0, SEEK_CUR) | {:.0} ns | {wrapped_lseek:.0} ns | {:.0} ns | +{:.0} ns |",
        before.0,
        trapped.0,
        trapped.0 - wrapped_lseek
    );
    println!(
        "| write 1 byte to /dev/null (a visible event) | {:.0} ns | {wrapped_write:.0} ns | {:.0} ns | +{:.0} ns |",
        before.1,
        trapped.1,
        trapped.1 - wrapped_write
    );
    println!(
        "| getuid (harmless list) | {:.0} ns | {gate:.0} ns (gate) | {:.0} ns | +{:.0} ns |",
        before.2,
        trapped.2,
        trapped.2 - gate
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Mech { pages } => mech(pages),
        Cmd::Ckpt { n, min_only } => ckpt(n, min_only),
        Cmd::Compute {
            bin,
            interval_ms,
            reps,
            args,
        } => compute(&bin, interval_ms, reps, &args),
        Cmd::Kv { bin, commands, dir } => kv(&bin, commands, &dir),
        Cmd::Sud { n } => sud(n),
    }
}
