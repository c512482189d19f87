//! rio-check: writes deterministic pseudo-random patterns into Rio objects and verifies
//! them, so that crash tests can tell exactly which acknowledged bytes survived.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use rio_check::pattern;
use rio_client::{Error as RioError, OpenMode, Rio};

/// Write and verify deterministic patterns in Rio objects.
#[derive(Parser)]
#[command(name = "rio-check", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fill `size` bytes of an object (created if missing) with the pattern of `seed`.
    Write {
        /// Object name.
        name: String,
        /// Pattern seed.
        #[arg(long)]
        seed: u64,
        /// Bytes to write.
        #[arg(long)]
        size: u64,
        /// Bytes per pwrite call.
        #[arg(long, default_value_t = 4096)]
        chunk: usize,
        /// Store through a shared mapping instead of pwrite.
        #[arg(long)]
        mmap: bool,
        /// With --mmap: exit at once after the last store, without munmap or any sync.
        #[arg(long)]
        no_unmap: bool,
    },
    /// Overwrite `len` bytes at `offset` with zeros taken from a fresh anonymous mapping
    /// that was never touched (its pages are not resident: this takes rio.ko's slow path).
    Zero {
        /// Object name.
        name: String,
        /// Where.
        #[arg(long)]
        offset: u64,
        /// How many bytes.
        #[arg(long)]
        len: usize,
    },
    /// Inject faults into the running kernel (riofault.ko; `arena` uses rio.ko).
    Inject {
        /// text, heap, stack, wild, pointer, panic, arena, hang-irq, hang or pmem.
        class: String,
        /// Seed: the same seed gives the same faults.
        #[arg(long)]
        seed: u64,
        /// How many faults of the class to inject (most single faults do not crash).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10000))]
        count: u32,
        /// Pause between faults, in milliseconds, so the kernel runs on each one.
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
    },
    /// The crash campaign's workload: overwrite random ranges of a few files forever,
    /// logging each write to a port.
    Memtest {
        /// `rio` for Rio objects, or a directory.
        #[arg(long)]
        target: String,
        /// fdatasync after each write (directory targets).
        #[arg(long)]
        fsync: bool,
        /// Write each file full of zeros (and sync it) before the workload, so that every
        /// write overwrites allocated blocks (directory targets; default: sparse files).
        #[arg(long)]
        prefill: bool,
        /// Where the log goes.
        #[arg(long, default_value = "/dev/ttyS2")]
        log: String,
        /// Number of files.
        #[arg(long, default_value_t = 8)]
        files: u64,
        /// Size of each file.
        #[arg(long, default_value_t = 65536)]
        file_size: u64,
        /// Pattern seed.
        #[arg(long)]
        seed: u64,
        /// Stop after this many writes.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Check that files are accessed through DAX (statx STATX_ATTR_DAX): exit 0 if every
    /// one is, 3 (and say which is not) otherwise.
    Dax {
        /// The files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Open an object and keep it open for `seconds` (to test busy and exclusive rules).
    Hold {
        /// Object name.
        name: String,
        /// Open exclusively (on a read-write descriptor, unless --read-only).
        #[arg(long)]
        exclusive: bool,
        /// Open the descriptor read-only (with --exclusive: a request the module must refuse).
        #[arg(long)]
        read_only: bool,
        /// Open for reading and writing.
        #[arg(long, conflicts_with = "read_only")]
        write: bool,
        /// Also map the whole object (MAP_SHARED; writable with --write).
        #[arg(long)]
        map: bool,
        /// Fork after opening (and mapping): the child holds, the parent exits at once.
        #[arg(long)]
        fork: bool,
        /// How long to hold it.
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
    },
    /// Tries one mmap(2) of an object (read and write, on a read-write descriptor) and
    /// unmaps it: fails, with the kernel's error, if the module refuses the mapping.
    Map {
        /// Object name.
        name: String,
        /// Bytes to map.
        #[arg(long)]
        len: usize,
        /// Byte offset in the object (a multiple of the page size).
        #[arg(long, default_value_t = 0)]
        offset: i64,
        /// MAP_PRIVATE (copy-on-write) instead of MAP_SHARED.
        #[arg(long)]
        private: bool,
    },
    /// Two threads of one process for `seconds`: one `pread`s an object into freshly mapped
    /// (never touched) anonymous buffers, the other maps and unmaps the object. A module that
    /// copies to user memory under a lock its `mmap` also takes deadlocks on this.
    RaceMmap {
        /// Object name (read-write, at least 64 KiB).
        name: String,
        /// How long to run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Check that the first `size` bytes of an object hold the pattern of `seed`.
    Verify {
        /// Object name.
        name: String,
        /// Pattern seed.
        #[arg(long)]
        seed: u64,
        /// Bytes to check.
        #[arg(long)]
        size: u64,
        /// A range OFFSET:LEN expected to hold zeros instead of the pattern.
        #[arg(long, value_parser = parse_range)]
        zeroed: Option<(u64, u64)>,
    },
}

fn parse_range(s: &str) -> std::result::Result<(u64, u64), String> {
    let (a, b) = s.split_once(':').ok_or("expected OFFSET:LEN")?;
    Ok((
        a.parse().map_err(|_| format!("bad offset {a:?}"))?,
        b.parse().map_err(|_| format!("bad length {b:?}"))?,
    ))
}

fn run(cli: Cli) -> Result<bool> {
    // Memtest on a directory and fault injection work without rio.ko.
    let rio = || Rio::open();
    match cli.command {
        Cmd::Write {
            name,
            seed,
            size,
            chunk,
            mmap,
            no_unmap,
        } => {
            let rio = rio()?;
            match rio.create(&name, size, 0o644) {
                Ok(()) | Err(RioError::Exists(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let obj = rio.open_object(&name, OpenMode::ReadWrite)?;
            if obj.size()? < size {
                obj.resize(size)?;
            }
            if mmap {
                let len = size.div_ceil(4096) * 4096;
                let mut m = obj.map(None, 0, len as usize, true)?;
                pattern(seed, 0, &mut m.as_mut_slice()[..size as usize]);
                println!("stored {size} bytes of pattern {seed} into {name} through mmap");
                if no_unmap {
                    std::process::exit(0);
                }
                return Ok(true);
            }
            let chunk = chunk.max(1);
            let mut buf = vec![0u8; chunk];
            let mut at = 0u64;
            while at < size {
                let n = (chunk as u64).min(size - at) as usize;
                pattern(seed, at, &mut buf[..n]);
                obj.write_all_at(&buf[..n], at)?;
                at += n as u64;
            }
            println!("wrote {size} bytes of pattern {seed} to {name}");
            Ok(true)
        }
        Cmd::Inject {
            class,
            seed,
            count,
            interval_ms,
        } => {
            for k in 0..count {
                if k > 0 && interval_ms > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(interval_ms));
                }
                println!("rio-check: fault {}/{count}", k + 1);
                rio_check::fault::inject(&class, rio_check::fault::nth_seed(seed, k))?;
            }
            let s = if count == 1 { "" } else { "s" };
            println!("survived: {count} fault{s} did not crash the kernel");
            Ok(true)
        }
        Cmd::Memtest {
            target,
            fsync,
            prefill,
            log,
            files,
            file_size,
            seed,
            count,
        } => {
            let t = if target == "rio" {
                rio_check::memtest::Target::Rio
            } else {
                rio_check::memtest::Target::Dir {
                    dir: target,
                    fsync,
                    prefill,
                }
            };
            rio_check::memtest::run(t, &log, files, file_size, seed, count)?;
            Ok(true)
        }
        Cmd::Dax { files } => {
            let mut all = true;
            for f in &files {
                if rio_check::dax::is_dax(f)? {
                    println!("{}: DAX", f.display());
                } else {
                    eprintln!(
                        "rio-check: {} is not a DAX file (statx reports no STATX_ATTR_DAX): its data goes through the page cache",
                        f.display()
                    );
                    all = false;
                }
            }
            Ok(all)
        }
        Cmd::Hold {
            name,
            exclusive,
            read_only,
            write,
            map,
            fork,
            seconds,
        } => {
            let writable = write || (exclusive && !read_only);
            let flags = if exclusive {
                rio_client::uapi::OPEN_EXCLUSIVE
            } else {
                0
            };
            let obj = rio()?.open_object_raw(&name, writable, flags)?;
            let _map = if map {
                let len = usize::try_from(obj.size()?)?.div_ceil(4096) * 4096;
                Some(obj.map(None, 0, len, writable)?)
            } else {
                None
            };
            if fork {
                // SAFETY: single-threaded here; the child only sleeps and exits.
                match unsafe { libc::fork() } {
                    -1 => anyhow::bail!("fork: {}", std::io::Error::last_os_error()),
                    0 => {}
                    _ => {
                        println!("holding {name} in a child");
                        return Ok(true);
                    }
                }
            }
            println!("holding {name}");
            std::thread::sleep(std::time::Duration::from_secs(seconds));
            Ok(true)
        }
        Cmd::RaceMmap { name, seconds } => race_mmap(&rio()?, &name, seconds),
        Cmd::Map {
            name,
            len,
            offset,
            private,
        } => {
            use std::os::fd::{AsFd, AsRawFd};
            let obj = rio()?.open_object(&name, OpenMode::ReadWrite)?;
            let kind = if private {
                libc::MAP_PRIVATE
            } else {
                libc::MAP_SHARED
            };
            // SAFETY: a new mapping at an address the kernel picks (no existing memory is
            // replaced) of a descriptor `obj` keeps open; it is unmapped below, unused.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    kind,
                    obj.as_fd().as_raw_fd(),
                    offset,
                )
            };
            if p == libc::MAP_FAILED {
                bail!("mmap: {}", std::io::Error::last_os_error());
            }
            // SAFETY: `p` is the `len`-byte mapping made above, which nothing references.
            unsafe { libc::munmap(p, len) };
            let what = if private { "MAP_PRIVATE" } else { "MAP_SHARED" };
            println!("mapped {len} bytes of {name} at offset {offset} ({what})");
            Ok(true)
        }
        Cmd::Zero { name, offset, len } => {
            let obj = rio()?.open_object(&name, OpenMode::ReadWrite)?;
            // SAFETY: a fresh private anonymous mapping; only read (by the kernel) below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len.max(1),
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                bail!("mmap: {}", std::io::Error::last_os_error());
            }
            // SAFETY: `p` is `len` readable bytes (zero pages on first touch).
            let src = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
            obj.write_all_at(src, offset)?;
            println!("zeroed {len} bytes at {offset} of {name} from an untouched mapping");
            Ok(true)
        }
        Cmd::Verify {
            name,
            seed,
            size,
            zeroed,
        } => {
            let obj = rio()?.open_object(&name, OpenMode::ReadOnly)?;
            let have = obj.size()?;
            if have < size {
                bail!("{name} is {have} bytes, expected at least {size}");
            }
            let mut buf = vec![0u8; 1 << 16];
            let mut want = vec![0u8; 1 << 16];
            let mut at = 0u64;
            let mut bad = 0u64;
            let mut first = None;
            while at < size {
                let n = ((1u64 << 16).min(size - at)) as usize;
                obj.read_exact_at(&mut buf[..n], at)?;
                pattern(seed, at, &mut want[..n]);
                if let Some((zo, zl)) = zeroed {
                    for (i, w) in want[..n].iter_mut().enumerate() {
                        let x = at + i as u64;
                        if x >= zo && x < zo + zl {
                            *w = 0;
                        }
                    }
                }
                for i in 0..n {
                    if buf[i] != want[i] {
                        bad += 1;
                        first.get_or_insert(at + i as u64);
                    }
                }
                at += n as u64;
            }
            match first {
                None => {
                    println!("verified {size} bytes of pattern {seed} in {name}");
                    Ok(true)
                }
                Some(f) => {
                    println!("MISMATCH in {name}: {bad} bad bytes, first at offset {f}");
                    Ok(false)
                }
            }
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("rio-check: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// See `Cmd::RaceMmap`.
fn race_mmap(rio: &Rio, name: &str, seconds: u64) -> Result<bool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let obj = rio.open_object(name, OpenMode::ReadWrite)?;
    let len = 64 * 1024;
    let stop = AtomicBool::new(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let (reads, maps) = std::thread::scope(|s| -> Result<(u64, u64)> {
        let mapper = s.spawn(|| -> Result<u64> {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = obj.map(None, 0, len, true)?;
                drop(m);
                n += 1;
            }
            Ok(n)
        });
        let mut reads = 0u64;
        while std::time::Instant::now() < deadline {
            // SAFETY: a fresh private anonymous mapping, unmapped below; the kernel writes
            // it through pread, which is what faults its pages in.
            let buf = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if buf == libc::MAP_FAILED {
                stop.store(true, Ordering::Relaxed);
                anyhow::bail!("mmap: {}", std::io::Error::last_os_error());
            }
            // SAFETY: `buf` is `len` writable bytes that nothing else uses.
            let slice = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
            let r = obj.read_at(slice, 0);
            // SAFETY: unmaps the buffer made above; `slice` is not used after this.
            unsafe { libc::munmap(buf, len) };
            r?;
            reads += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let maps = mapper
            .join()
            .map_err(|_| anyhow::anyhow!("the mapping thread panicked"))??;
        Ok((reads, maps))
    })?;
    println!("race-mmap: {reads} reads into fresh buffers, {maps} maps, no hang");
    Ok(true)
}
