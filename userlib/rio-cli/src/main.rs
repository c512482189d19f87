//! rio: the command-line tool for the Rio file cache.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rio_client::Rio;

/// Operate the Rio crash-surviving file cache (/dev/rio).
#[derive(Parser)]
#[command(name = "rio", version, about)]
struct Cli {
    /// The Rio device node.
    #[arg(long, global = true, default_value = rio_client::DEFAULT_DEVICE)]
    device: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what rio.ko was loaded with.
    Status,
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Status => {
            let rio = Rio::open_path(&cli.device)?;
            let info = rio.info().context("reading the module's status")?;
            println!("device:  {}", cli.device.display());
            println!("abi:     {}", info.abi_version);
            println!(
                "arena:   {:#x}..{:#x} ({} MiB)",
                info.arena_phys,
                info.arena_phys + info.arena_size,
                info.arena_size >> 20
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rio: {e:#}");
            ExitCode::FAILURE
        }
    }
}
