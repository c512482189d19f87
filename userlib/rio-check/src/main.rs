//! rio-check: writes deterministic pseudo-random patterns into Rio objects and verifies
//! them, so that crash tests can tell exactly which acknowledged bytes survived.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
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
    /// Open an object and keep it open for `seconds` (to test busy and exclusive rules).
    Hold {
        /// Object name.
        name: String,
        /// Open exclusively.
        #[arg(long)]
        exclusive: bool,
        /// How long to hold it.
        #[arg(long, default_value_t = 3600)]
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
    },
}

/// The pattern: xorshift64* bytes, a pure function of (seed, offset / 8).
fn pattern(seed: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let at = offset + i as u64;
        let mut x = (seed ^ 0x9e37_79b9_7f4a_7c15)
            .wrapping_add((at / 8).wrapping_mul(0xbf58_476d_1ce4_e5b9));
        x ^= x >> 31;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 29;
        *b = (x >> ((at % 8) * 8)) as u8;
    }
}

fn run(cli: Cli) -> Result<bool> {
    let rio = Rio::open()?;
    match cli.command {
        Cmd::Write {
            name,
            seed,
            size,
            chunk,
            mmap,
            no_unmap,
        } => {
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
        Cmd::Hold {
            name,
            exclusive,
            seconds,
        } => {
            let mode = if exclusive {
                OpenMode::Exclusive
            } else {
                OpenMode::ReadOnly
            };
            let _obj = rio.open_object(&name, mode)?;
            println!("holding {name}");
            std::thread::sleep(std::time::Duration::from_secs(seconds));
            Ok(true)
        }
        Cmd::Verify { name, seed, size } => {
            let obj = rio.open_object(&name, OpenMode::ReadOnly)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_positional_and_seeded() {
        let mut whole = vec![0u8; 100];
        pattern(7, 0, &mut whole);
        let mut part = vec![0u8; 30];
        pattern(7, 50, &mut part);
        assert_eq!(&whole[50..80], &part[..]);
        let mut other = vec![0u8; 100];
        pattern(8, 0, &mut other);
        assert_ne!(whole, other);
    }
}
