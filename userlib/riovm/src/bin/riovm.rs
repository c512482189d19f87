//! riovm: boot the Rio test guest by hand, run a command in it, or run the demo.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use riovm::{Artifacts, Disk, Vm, VmConfig};

/// Boot and drive the Rio test kernel under QEMU (TCG).
#[derive(Parser)]
#[command(name = "riovm", version, about)]
struct Cli {
    /// Guest RAM in MiB.
    #[arg(long, global = true, default_value_t = 512)]
    memory: u64,
    /// Virtual CPUs.
    #[arg(long, global = true, default_value_t = 2)]
    cpus: u32,
    /// Raw disk images to attach as /dev/vda, /dev/vdb, ...
    #[arg(long = "disk", global = true)]
    disks: Vec<PathBuf>,
    /// Reserve a persistent-memory region beside the arena (`memmap=256M!512M`, guest RAM at
    /// least 1 GiB): `/dev/pmem0`, for `pmem-dax setup` (ext4 -o dax on it) in the guest.
    #[arg(long, global = true)]
    pmem: bool,
    /// Directory for the RAM file, sockets and console logs (default: a fresh temporary one).
    /// Reusing a directory keeps guest RAM: the next boot is warm.
    #[arg(long, global = true)]
    workdir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot with a shell on this terminal (Ctrl-A X quits QEMU, Ctrl-A C is the monitor).
    Shell,
    /// Boot, run one shell command in the guest, print its output and exit with its status.
    Run {
        /// Seconds the command may take.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// The command (run by /bin/sh -c in the guest).
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Crash and recover: write data, crash the kernel with a wild store, warm-reboot,
    /// and show every byte back; then a Discount Checking program on Rio survives a
    /// kernel panic in the middle of its run.
    Demo,
}

struct Workdir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

fn workdir(cli: &Cli) -> Result<Workdir> {
    Ok(match &cli.workdir {
        Some(p) => Workdir {
            path: p.clone(),
            _temp: None,
        },
        None => {
            let t = tempfile::Builder::new()
                .prefix("riovm-")
                .tempdir()
                .context("creating a temporary work directory")?;
            Workdir {
                path: t.path().to_path_buf(),
                _temp: Some(t),
            }
        }
    })
}

fn config(cli: &Cli, wd: &Workdir) -> Result<VmConfig> {
    let mut cfg = VmConfig::new(Artifacts::locate()?, &wd.path);
    cfg.memory_mib = cli.memory;
    cfg.cpus = cli.cpus;
    cfg.disks = cli.disks.iter().map(|p| Disk { path: p.clone() }).collect();
    if cli.pmem {
        cfg = cfg.with_pmem();
    }
    Ok(cfg)
}

fn step(what: &str) {
    println!("\n==> {what}");
}

fn show(vm: &mut Vm, command: &str) -> Result<()> {
    println!("guest# {command}");
    let out = vm.run(command)?;
    print!("{}", out.stdout_str());
    eprint!("{}", out.stderr_str());
    if out.status != 0 {
        bail!("`{command}` exited with status {}", out.status);
    }
    Ok(())
}

fn demo(mut cfg: VmConfig, workdir: &std::path::Path) -> Result<()> {
    let disk = workdir.join("backing.img");
    riovm::create_disk(&disk, 80 << 20)?;
    cfg.disks.push(Disk { path: disk });
    step(
        "booting the Rio test kernel under QEMU (TCG), with an 80 MiB virtio disk as backing store",
    );
    let t = Instant::now();
    let mut vm = Vm::start(cfg)?;
    println!(
        "booted in {:.2} s (boot id {})",
        t.elapsed().as_secs_f64(),
        vm.boot_id()
    );
    show(&mut vm, "uname -r; grep -o 'memmap=[^ ]*' /proc/cmdline")?;
    step("the arena is reserved memory, outside System RAM");
    show(&mut vm, "grep -i -e reserved -e 'System RAM' /proc/iomem")?;
    step("loading rio.ko: the arena is mapped read-only; writes go through a one-page window");
    show(
        &mut vm,
        "rio-load backing=/dev/vda allow_wild_store=1 writeback_ms=0 && rio format && rio status",
    )?;
    step("writing 2 MiB with pwrite and 1 MiB with stores through mmap: no fsync, no msync");
    show(&mut vm, "rio-check write ledger --seed 42 --size 2097152")?;
    show(
        &mut vm,
        "rio-check write mapped --seed 43 --size 1048576 --mmap --no-unmap",
    )?;
    step("riofs: ordinary files in the arena, written by ordinary programs, never synced");
    show(
        &mut vm,
        "mount -t riofs -o size=16M files /mnt && echo 'written with plain echo, never synced' > /mnt/note && mkdir /mnt/bin && cp /bin/busybox /mnt/bin/ && ls -l /mnt /mnt/bin",
    )?;
    show(&mut vm, "rio ls -l")?;
    step("a buggy kernel store aimed at the arena: protection turns it into an oops, and oops=panic crashes the kernel");
    let off = 49 * 4096 + 100;
    println!("guest# rio wild-store {off}");
    vm.spawn(&format!("sleep 0.2; rio wild-store {off}"))?;
    vm.wait_console("Kernel panic", Duration::from_secs(60))?;
    for line in vm.console().lines().filter(|l| {
        l.contains("rio: debug")
            || l.contains("BUG: unable to handle")
            || l.contains("Kernel panic")
    }) {
        println!("console: {line}");
    }
    step("warm reboot: same RAM, new kernel");
    let t = Instant::now();
    vm.wait_reboot(Duration::from_secs(120))?;
    println!(
        "rebooted in {:.2} s (boot id {})",
        t.elapsed().as_secs_f64(),
        vm.boot_id()
    );
    step("reloading rio.ko: recovery finds the arena in use, validates it and writes dirty pages back");
    show(
        &mut vm,
        "rio-load backing=/dev/vda writeback_ms=0 && dmesg | grep 'rio: ' | tail -n 3",
    )?;
    step("every acknowledged byte is there");
    show(&mut vm, "rio-check verify ledger --seed 42 --size 2097152")?;
    show(&mut vm, "rio-check verify mapped --seed 43 --size 1048576")?;
    show(
        &mut vm,
        "rio stats | grep -e recoveries -e 'written back' -e 'dirty pages'",
    )?;
    step("riofs comes back: the mount recovers the file system (it undoes an operation a crash interrupted)");
    show(
        &mut vm,
        "mount -t riofs files /mnt && cat /mnt/note && md5sum /mnt/bin/busybox /bin/busybox && dmesg | grep 'riofs: mounted' | tail -n 1 && umount /mnt",
    )?;
    println!("\nthe data and the files survived a kernel crash without a single sync");
    dc_demo(&mut vm)?;
    vm.shutdown()?;
    println!("\ndemo complete: the data, and then a running program, survived kernel crashes");
    Ok(())
}

/// The Discount Checking program of the demo: a compute loop that prints a checksum
/// every few rounds, checkpointed into Rio objects before every line and every 250 ms.
const DC_CMD: &str = "dc-compute --rounds 500 --kib 256 --updates 5000 --print-every 5";
const DC_ENV: &str =
    "DC_STORE=rio:compute DC_DIR=/mnt/dc/compute.state DC_PROTOCOL=cpvs DC_INTERVAL_MS=250";

/// The guest command of a Discount Checking run with its output to `out`.
fn dc_run(env: &str, dir: &str, out: &str) -> String {
    format!("mkdir -p {dir} && cd {dir} && env {env} {DC_CMD} > {out} 2>> /mnt/dc/compute.err")
}

/// Checks the thesis's equivalence for a run cut by a crash (`first`) and the run that
/// recovered (`second`): `first` is a beginning of the failure-free output that stops
/// before its end; `second` is the rest, starting at or before where `first` stopped
/// (only repetition allowed) but after the beginning (it resumed, it did not start over).
/// Returns where `second` starts in the failure-free output.
fn dc_equivalent(first: &[u8], second: &[u8], reference: &[u8]) -> Result<usize> {
    if !reference.starts_with(first) {
        bail!("the output before the crash is not the beginning of the failure-free output");
    }
    if first.len() >= reference.len() {
        bail!("the program had finished before the crash");
    }
    if !reference.ends_with(second) {
        bail!("the output after recovery is not the rest of the failure-free output");
    }
    let start = reference.len() - second.len();
    if start > first.len() {
        bail!("output was lost: the recovered run starts after where the first stopped");
    }
    if start == 0 {
        bail!("the program started over: its checkpoint did not survive the crash");
    }
    Ok(start)
}

fn lines_in(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

fn dc_demo(vm: &mut Vm) -> Result<()> {
    step("Discount Checking on Rio: a running program survives a kernel crash");
    println!("A compute loop made recoverable by Discount Checking (one call at the start of");
    println!("main). Its checkpoint image is in Rio objects (DC_STORE=rio:compute); its files and");
    println!("output are on riofs (dc-fs): ordinary files in the protected arena.");
    show(vm, "dc-fs")?;
    step("the failure-free run, for comparison (DC_DISABLE=1: no checkpoints)");
    show(
        vm,
        &format!(
            "{} && tail -n 2 /mnt/dc/ref.out",
            dc_run("DC_DISABLE=1", "/mnt/dc/ref", "/mnt/dc/ref.out")
        ),
    )?;
    let reference = vm.run("cat /mnt/dc/ref.out")?.stdout;
    let total = lines_in(&reference);
    step("the same program under Discount Checking: a checkpoint before every line it prints (CPVS) and every 250 ms");
    println!("guest# {DC_ENV} {DC_CMD} > /mnt/dc/run1.out &");
    vm.spawn(&dc_run(DC_ENV, "/mnt/dc/compute", "/mnt/dc/run1.out"))?;
    // A fifth in: the rest takes a few seconds under TCG, time for the panic to land.
    let want = total / 5;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = vm.run("cat /mnt/dc/run1.out 2>/dev/null")?.stdout;
        if lines_in(&out) >= want {
            break;
        }
        if Instant::now() > deadline {
            bail!("the program printed {} lines in 300 s", lines_in(&out));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    show(vm, "tail -n 2 /mnt/dc/run1.out; rio ls | grep compute")?;
    step("kernel panic in the middle of the run (echo c > /proc/sysrq-trigger)");
    let panics = vm.console().matches("Kernel panic").count();
    vm.panic()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm.console().matches("Kernel panic").count() <= panics {
        if Instant::now() > deadline {
            bail!("no kernel panic on the console after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(l) = vm.console().lines().rfind(|l| l.contains("Kernel panic")) {
        println!("console: {l}");
    }
    step("warm reboot; rio.ko recovers the arena; the file system's journal replays");
    vm.wait_reboot(Duration::from_secs(120))?;
    show(vm, "rio-load && dc-fs && rio ls | grep compute")?;
    let first = vm.run("cat /mnt/dc/run1.out")?.stdout;
    println!(
        "before the crash the program had printed {} of {total} lines; the last:",
        lines_in(&first)
    );
    show(vm, "tail -n 1 /mnt/dc/run1.out")?;
    step("running the same command again: it resumes from its last checkpoint");
    println!("guest# {DC_ENV} {DC_CMD} > /mnt/dc/run2.out");
    let t = Instant::now();
    let r = vm.run_timeout(
        &dc_run(DC_ENV, "/mnt/dc/compute", "/mnt/dc/run2.out"),
        Duration::from_secs(300),
    )?;
    if r.status != 0 {
        let err = vm.run("cat /mnt/dc/compute.err")?.stdout_str();
        bail!("the second run exited with status {}: {err}", r.status);
    }
    println!(
        "finished in {:.1} s; its first lines:",
        t.elapsed().as_secs_f64()
    );
    show(vm, "head -n 2 /mnt/dc/run2.out")?;
    step("comparing with the failure-free run");
    let second = vm.run("cat /mnt/dc/run2.out")?.stdout;
    let start = dc_equivalent(&first, &second, &reference)?;
    let repeated = first.len() - start;
    println!(
        "run 1 printed lines 1..{} and was cut by the panic; run 2 resumed at line {} and printed",
        lines_in(&first),
        lines_in(&reference[..start]) + 1
    );
    println!(
        "the rest ({} lines, {repeated} bytes repeated). Together they equal the failure-free",
        lines_in(&second)
    );
    println!("output except that the last output before the crash may repeat: Discount Checking's");
    println!("equivalence. The program did not start over: its state survived the kernel crash.");
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    let wd = workdir(&cli)?;
    let cfg = config(&cli, &wd)?;
    match cli.command {
        Cmd::Shell => {
            let status = riovm::interactive_command(&cfg)?
                .status()
                .context("running qemu-system-x86_64")?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Run { timeout, command } => {
            let mut vm = Vm::start(cfg)?;
            let out = vm.run_timeout(&command.join(" "), Duration::from_secs(timeout))?;
            print!("{}", out.stdout_str());
            eprint!("{}", out.stderr_str());
            vm.shutdown()?;
            Ok(ExitCode::from(u8::try_from(out.status).unwrap_or(1)))
        }
        Cmd::Demo => demo(cfg, &wd.path).map(|()| ExitCode::SUCCESS),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("riovm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
