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
    /// Boot the guest, load rio.ko and show its status.
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

fn demo(cfg: VmConfig) -> Result<()> {
    step("booting the Rio test kernel under QEMU (TCG)");
    let t = Instant::now();
    let mut vm = Vm::start(cfg)?;
    println!(
        "booted in {:.2} s (boot id {})",
        t.elapsed().as_secs_f64(),
        vm.boot_id()
    );
    show(&mut vm, "uname -a; cat /proc/cmdline")?;
    step("the arena is reserved memory, outside System RAM");
    show(&mut vm, "grep -i -e reserved -e 'System RAM' /proc/iomem")?;
    step("loading rio.ko on the arena");
    show(&mut vm, "rio-load && dmesg | grep -w rio")?;
    show(&mut vm, "ls -l /dev/rio; rio status")?;
    step("a bad parameter is refused and the guest keeps running");
    let out =
        vm.run("rmmod rio; insmod /lib/modules/rio.ko arena_phys=0x1000 arena_size=0x100000")?;
    println!(
        "insmod exit status {}: {}",
        out.status,
        out.stderr_str().trim()
    );
    show(&mut vm, "dmesg | tail -n 1; echo guest still alive")?;
    vm.shutdown()?;
    println!("\ndemo complete");
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
        Cmd::Demo => demo(cfg).map(|()| ExitCode::SUCCESS),
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
