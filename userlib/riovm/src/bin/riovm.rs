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
    /// and show every byte back.
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
    vm.shutdown()?;
    println!("\ndemo complete: the data survived a kernel crash without a single sync");
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
