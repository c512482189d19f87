//! rio: the command-line tool for the Rio file cache.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod crashkernel;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rio_client::{ArenaState, OpenMode, Rio};

/// Operate the Rio crash-surviving file cache (/dev/rio).
///
/// Every write to an object is durable when it returns: it lives in write-protected memory
/// that survives kernel crashes and is written back to the backing disk.
#[derive(Parser)]
#[command(name = "rio", version, about, long_about = None)]
struct Cli {
    /// The Rio device node.
    #[arg(long, global = true, default_value = rio_client::DEFAULT_DEVICE)]
    device: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Format the arena (a blank one; --force erases one that holds data).
    Format {
        /// Erase an arena that is not blank, corrupt or not: every object is lost.
        #[arg(long)]
        force: bool,
    },
    /// Show the module's parameters and the arena's state.
    Status,
    /// Create an object.
    Create {
        /// Object name (1 to 63 printable ASCII characters, no '/').
        name: String,
        /// Size, in bytes or with a K, M or G suffix.
        #[arg(value_parser = parse_size)]
        size: u64,
        /// Permission bits, octal.
        #[arg(long, default_value = "600", value_parser = parse_mode)]
        mode: u32,
    },
    /// List objects.
    Ls {
        /// Show owner, mode, pages and dirty pages.
        #[arg(short, long)]
        long: bool,
    },
    /// Delete objects.
    Rm {
        /// Object names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Change an object's size.
    Resize {
        /// Object name.
        name: String,
        /// New size, in bytes or with a K, M or G suffix.
        #[arg(value_parser = parse_size)]
        size: u64,
    },
    /// Write an object's contents to standard output.
    Cat {
        /// Object name.
        name: String,
        /// Start at this byte.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many bytes.
        #[arg(long)]
        length: Option<u64>,
    },
    /// Write a file (or standard input) into an object; durable when this returns.
    Put {
        /// Object name.
        name: String,
        /// Input file; standard input if absent.
        file: Option<PathBuf>,
        /// Write at this byte.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Create the object if missing, and grow it to fit.
        #[arg(long)]
        create: bool,
    },
    /// Block devices over objects (/dev/riobN), for file systems on Rio.
    Blkdev {
        #[command(subcommand)]
        action: BlkdevCmd,
    },
    /// Safe sync at panic time: a crash kernel that writes the arena back if this kernel
    /// dies (kexec on panic; the kernel must have been booted with crashkernel=SIZE).
    Crashkernel {
        #[command(subcommand)]
        action: CrashCmd,
    },
    /// Show counters.
    Stats,
    /// Write every dirty page back to the backing store now.
    Sync,
    /// Crash tool: a wild kernel store into the arena (needs allow_wild_store=1). With
    /// protection on, the store faults and the kernel oopses.
    WildStore {
        /// Byte offset in the arena.
        #[arg(value_parser = parse_size)]
        offset: u64,
        /// The byte to store (decimal or 0x hex).
        #[arg(long, default_value = "0xff", value_parser = parse_byte)]
        value: u8,
    },
}

#[derive(Subcommand)]
enum CrashCmd {
    /// Load the crash kernel for the loaded arena and a backing device.
    Load {
        /// The backing block device the crash kernel writes to.
        #[arg(long)]
        backing: PathBuf,
        /// Kernel image.
        #[arg(long, default_value = "/boot/bzImage")]
        kernel: PathBuf,
        /// The crash kernel's initramfs.
        #[arg(long, default_value = "/boot/crash-initramfs.cpio.gz")]
        initrd: PathBuf,
    },
    /// Whether a crash kernel is loaded.
    Status,
}

#[derive(Subcommand)]
enum BlkdevCmd {
    /// Create a block device over an object (size: whole 4 KiB blocks) and print its path.
    Add {
        /// Object name.
        name: String,
    },
    /// Remove an object's block device (unmount it first).
    Rm {
        /// Object name.
        name: String,
    },
    /// List objects that have block devices.
    Ls,
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&s[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&s[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n = if let Some(hex) = num.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else {
        num.parse()
    }
    .map_err(|_| format!("{s:?} is not a size (examples: 4096, 64K, 0x1000, 1M)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_byte(s: &str) -> std::result::Result<u8, String> {
    parse_size(s)?
        .try_into()
        .map_err(|_| format!("{s:?} is not a byte (0 to 255)"))
}

fn parse_mode(s: &str) -> std::result::Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 600 or 644"))
}

fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn run(cli: Cli) -> Result<()> {
    let rio = Rio::open_path(&cli.device)?;
    match cli.command {
        Command::Format { force } => {
            rio.format(force)?;
            let info = rio.info()?;
            println!(
                "formatted the {} arena at {:#x}",
                human(info.arena_size),
                info.arena_phys
            );
        }
        Command::Status => {
            let info = rio.info()?;
            println!("device:     {}", cli.device.display());
            println!("abi:        {}", info.abi_version);
            println!(
                "arena:      {:#x}..{:#x} ({})",
                info.arena_phys,
                info.arena_phys + info.arena_size,
                human(info.arena_size)
            );
            println!(
                "state:      {}",
                match info.state {
                    ArenaState::Ready => "ready",
                    ArenaState::Unformatted => "blank (run 'rio format')",
                    ArenaState::Corrupt =>
                        "refused: corrupt or foreign (see dmesg; 'rio format --force' erases it)",
                }
            );
            println!("protection: {}", if info.protect { "on" } else { "off" });
            if info.state == ArenaState::Ready {
                let uuid: String = info.uuid.iter().map(|b| format!("{b:02x}")).collect();
                println!("uuid:       {uuid}");
                let s = rio.stats()?;
                println!(
                    "objects:    {} ({} of {} pages in use, {} dirty)",
                    s.objects, s.pages_in_use, s.data_pages, s.dirty_pages
                );
                println!(
                    "epoch:      {} ({} crash recoveries)",
                    s.epoch, s.recoveries
                );
            }
        }
        Command::Create { name, size, mode } => {
            rio.create(&name, size, mode)?;
        }
        Command::Ls { long } => {
            for o in rio.list()? {
                if long {
                    println!(
                        "{:04o} {:>5} {:>12} {:>6} pages {:>6} dirty {:>2} open{}{}{} {}",
                        o.mode,
                        o.uid,
                        o.size,
                        o.pages,
                        o.dirty_pages,
                        o.open_count,
                        if o.mapped { " mapped" } else { "" },
                        if o.damaged { " DAMAGED" } else { "" },
                        o.blockdev
                            .as_deref()
                            .map(|d| format!(" {d}"))
                            .unwrap_or_default(),
                        o.name
                    );
                } else {
                    println!("{}", o.name);
                }
            }
        }
        Command::Rm { names } => {
            for n in names {
                rio.delete(&n)?;
            }
        }
        Command::Resize { name, size } => {
            rio.open_object(&name, OpenMode::ReadWrite)?.resize(size)?;
        }
        Command::Cat {
            name,
            offset,
            length,
        } => {
            let obj = rio.open_object(&name, OpenMode::ReadOnly)?;
            let end = obj
                .size()?
                .min(offset.saturating_add(length.unwrap_or(u64::MAX)));
            let mut out = std::io::stdout().lock();
            let mut buf = vec![0u8; 1 << 16];
            let mut at = offset;
            while at < end {
                let want = ((end - at) as usize).min(buf.len());
                let n = obj.read_at(&mut buf[..want], at)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])
                    .context("writing to standard output")?;
                at += n as u64;
            }
        }
        Command::Put {
            name,
            file,
            offset,
            create,
        } => {
            let mut data = Vec::new();
            match &file {
                Some(p) => {
                    data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                }
                None => {
                    std::io::stdin()
                        .read_to_end(&mut data)
                        .context("reading standard input")?;
                }
            }
            let end = offset + data.len() as u64;
            if create && !rio.list()?.iter().any(|o| o.name == name) {
                rio.create(&name, end, 0o600)?;
            }
            let obj = rio.open_object(&name, OpenMode::ReadWrite)?;
            let size = obj.size()?;
            if end > size {
                if !create {
                    bail!(
                        "{} bytes at offset {offset} do not fit in {name:?} ({size} bytes); use --create to grow it",
                        data.len()
                    );
                }
                obj.resize(end)?;
            }
            obj.write_all_at(&data, offset)?;
        }
        Command::Blkdev { action } => match action {
            BlkdevCmd::Add { name } => {
                println!(
                    "{}",
                    rio.open_object(&name, OpenMode::ReadWrite)?
                        .add_blockdev()?
                );
            }
            BlkdevCmd::Rm { name } => rio
                .open_object(&name, OpenMode::ReadOnly)?
                .remove_blockdev()?,
            BlkdevCmd::Ls => {
                for o in rio.list()? {
                    if let Some(dev) = o.blockdev {
                        println!("{dev} {} {}", o.name, o.size);
                    }
                }
            }
        },
        Command::Crashkernel { action } => match action {
            CrashCmd::Load {
                backing,
                kernel,
                initrd,
            } => {
                let info = rio.info()?;
                let (major, minor) = crashkernel::device_numbers(&backing)?;
                let running =
                    std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
                let cmdline =
                    crashkernel::cmdline(info.arena_phys, info.arena_size, major, minor, &running);
                crashkernel::load(&kernel, &initrd, &cmdline)?;
                println!(
                    "crash kernel loaded: on a panic it writes the arena back to {}",
                    backing.display()
                );
            }
            CrashCmd::Status => {
                println!(
                    "{}",
                    if crashkernel::loaded()? {
                        "loaded"
                    } else {
                        "not loaded"
                    }
                );
            }
        },
        Command::Stats => {
            let s = rio.stats()?;
            println!("objects             {}", s.objects);
            println!("data pages          {}", s.data_pages);
            println!("pages in use        {}", s.pages_in_use);
            println!("dirty pages         {}", s.dirty_pages);
            println!("protection windows  {}", s.windows_opened);
            println!("bytes written       {}", s.bytes_written);
            println!("bytes written back  {}", s.bytes_written_back);
            println!("writebacks          {}", s.writebacks);
            println!("crash recoveries    {}", s.recoveries);
            println!("epoch               {}", s.epoch);
            println!("quarantined pages   {}", s.quarantined_pages);
            println!("reclaimed pages     {}", s.reclaimed_pages);
            println!("slow-path writes    {}", s.slow_writes);
            println!("slow-path reads     {}", s.slow_reads);
        }
        Command::Sync => rio.sync()?,
        Command::WildStore { offset, value } => {
            rio.wild_store(offset, value)?;
            println!("wild store done: the arena was not protected");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert_eq!(parse_byte("0x5a"), Ok(0x5a));
        assert!(parse_byte("256").is_err());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("1777").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
