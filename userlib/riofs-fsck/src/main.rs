//! riofs-fsck: checks (and optionally repairs) a riofs image offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;

/// Check a riofs file system offline (changing nothing unless --repair is given).
///
/// The input is the raw bytes of the riofs object, for example dumped in the guest after
/// unmounting with `rio cat NAME > IMAGE`, or one object of a Rio backing-disk image
/// (`--disk DISK --object NAME`), or of an arena image (`--arena ARENA --object NAME`: the
/// reserved memory itself, for example cut out of a guest's RAM file, as a crash left it).
///
/// Every problem is one line, `error: ...` or `warning: ...`, with inode and block numbers
/// and paths where known; the last line is `clean` or `N errors, M warnings`. Warnings are
/// what the next mount repairs by itself: an operation in flight (the mount undoes its
/// log records; the rest is checked as the mount will leave it), orphans (freed at mount),
/// leaked blocks (the mount rebuilds the bitmap).
///
/// Exit status: 0 no errors (warnings allowed), 1 errors found, 2 usage or I/O error.
#[derive(Parser)]
#[command(name = "riofs-fsck", version, about, long_about)]
struct Cli {
    /// The riofs image (the object's raw bytes).
    #[arg(required_unless_present_any = ["disk", "arena"], conflicts_with_all = ["disk", "arena"])]
    image: Option<PathBuf>,
    /// A Rio backing-disk image to read the object from (with --object).
    #[arg(long, requires = "object", conflicts_with = "arena")]
    disk: Option<PathBuf>,
    /// A Rio arena image to read the object from (with --object).
    #[arg(long, requires = "object")]
    arena: Option<PathBuf>,
    /// The object's name on the backing disk or in the arena.
    #[arg(long)]
    object: Option<String>,
    /// Apply the undo log, free orphans and rebuild the bitmap, as a mount would, writing
    /// IMAGE in place (not with --disk or --arena). Refused if there are other errors.
    #[arg(long, conflicts_with_all = ["disk", "arena"])]
    repair: bool,
    /// Print only the problems and the summary (no description of the file system).
    #[arg(short, long)]
    quiet: bool,
}

fn load(cli: &Cli) -> Result<(Vec<u8>, String)> {
    if cli.object.is_some() && cli.disk.is_none() && cli.arena.is_none() {
        bail!("--object needs --disk or --arena");
    }
    if let (Some(arena), Some(name)) = (&cli.arena, &cli.object) {
        let bytes = std::fs::read(arena).with_context(|| format!("reading {}", arena.display()))?;
        let Some(obj) = rio_format::read_arena_object(&bytes, name) else {
            bail!(
                "{} is not a Rio arena, has no object {name:?}, or cannot account for all of its pages",
                arena.display()
            );
        };
        return Ok((obj, format!("{}:{name}", arena.display())));
    }
    if let (Some(disk), Some(name)) = (&cli.disk, &cli.object) {
        let bytes = std::fs::read(disk).with_context(|| format!("reading {}", disk.display()))?;
        let Some(obj) = rio_format::read_disk_object(&bytes, name) else {
            bail!(
                "{} is not a Rio backing disk, or has no object {name:?}",
                disk.display()
            );
        };
        return Ok((obj, format!("{}:{name}", disk.display())));
    }
    let Some(path) = &cli.image else {
        bail!("no image given");
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((bytes, path.display().to_string()))
}

fn print(report: &riofs_fsck::Report, what: &str, quiet: bool) {
    if !quiet {
        if let Some(sb) = &report.sb {
            let s = &report.stats;
            println!(
                "{what}: riofs of {} blocks ({} data, {} in use), {} inodes ({} in use, {} directories)",
                sb.blocks,
                s.data_blocks,
                s.used_blocks,
                sb.inodes.saturating_sub(1),
                s.used_inodes,
                s.dirs
            );
        }
    }
    for p in &report.problems {
        println!("{p}");
    }
    println!("{}", report.summary());
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let (mut image, what) = load(cli)?;
    let report = riofs_fsck::check(&image);
    if !cli.repair {
        print(&report, &what, cli.quiet);
        return Ok(if report.errors() > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    if report.is_clean() {
        print(&report, &what, cli.quiet);
        println!("nothing to repair");
        return Ok(ExitCode::SUCCESS);
    }
    println!("before repair:");
    print(&report, &what, cli.quiet);
    match riofs_fsck::repair(&mut image) {
        Ok(done) => {
            let Some(path) = &cli.image else {
                bail!("--repair needs an IMAGE");
            };
            std::fs::write(path, &image).with_context(|| format!("writing {}", path.display()))?;
            println!(
                "repaired: {} undo records applied, {} orphans freed, {} bitmap bits changed",
                done.undone, done.orphans, done.bits
            );
            let after = riofs_fsck::check(&image);
            println!("after repair:");
            print(&after, &what, cli.quiet);
            Ok(if after.errors() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(e) => {
            println!("not repaired: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("riofs-fsck: {e:#}");
            ExitCode::from(2)
        }
    }
}
