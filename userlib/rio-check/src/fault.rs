//! `rio-check inject`: asks riofault.ko (or rio.ko, for the arena) for one fault.

use std::os::fd::AsRawFd;

use crate::{Error, Result};

/// The fault classes, as riofault.ko numbers them (`arena` is rio.ko's wild store; the
/// two hangs are a CPU spinning with interrupts or preemption off, for the lockup
/// detectors; `pmem` is a store into the persistent memory of the pmem-dax configuration,
/// aimed by [`crate::pmem`]).
pub const CLASSES: [&str; 10] = [
    "text", "heap", "stack", "wild", "pointer", "panic", "arena", "hang-irq", "hang", "pmem",
];

#[path = "../../../rio_mod/fault_abi.rs"]
mod fault_abi;
use fault_abi::FaultReq;

const RIOFAULT_INJECT: libc::c_ulong = fault_abi::RIOFAULT_INJECT as libc::c_ulong;

fn kallsyms(name: &str) -> Result<u64> {
    let text =
        std::fs::read_to_string("/proc/kallsyms").map_err(Error::io("reading /proc/kallsyms"))?;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(a), Some(_), Some(n)) = (it.next(), it.next(), it.next()) {
            if n == name {
                return u64::from_str_radix(a, 16).map_err(|e| {
                    Error::KernelInfo(format!("/proc/kallsyms: bad address {a:?} of {name}: {e}"))
                });
            }
        }
    }
    Err(Error::KernelInfo(format!("{name} not in /proc/kallsyms")))
}

fn ram_top() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/iomem").map_err(Error::io("reading /proc/iomem"))?;
    let mut top = 0;
    for line in text
        .lines()
        .filter(|l| l.trim_end().ends_with(": System RAM"))
    {
        if let Some((_, end)) = line
            .trim()
            .split(':')
            .next()
            .and_then(|r| r.trim().split_once('-'))
        {
            let end = u64::from_str_radix(end.trim(), 16).map_err(|e| {
                Error::KernelInfo(format!("/proc/iomem: bad address in {line:?}: {e}"))
            })?;
            top = top.max(end + 1);
        }
    }
    if top == 0 {
        return Err(Error::KernelInfo("no System RAM in /proc/iomem".into()));
    }
    Ok(top)
}

/// The seed of fault `k` of a run seeded with `seed`: the first is `seed` itself (so one
/// fault with a seed is the same as before), the others the `k`-th output of the seed's
/// splitmix64 stream ([`rio_prng::nth`]).
pub fn nth_seed(seed: u64, k: u32) -> u64 {
    if k == 0 {
        return seed;
    }
    rio_prng::nth(seed, u64::from(k))
}

/// Injects fault `class` with `seed`.
pub fn inject(class: &str, seed: u64) -> Result<()> {
    let num = CLASSES
        .iter()
        .position(|c| *c == class)
        .ok_or_else(|| Error::UnknownClass {
            class: class.into(),
        })?;
    if class == "arena" {
        let rio = rio_client::Rio::open()?;
        let info = rio.info()?;
        let stats = rio.stats()?;
        let g = rio_format::Geometry::for_size(info.arena_size)
            .ok_or(Error::Geometry(info.arena_size))?;
        let data = u64::from(g.data_start) * 4096;
        // Aimed, as in the Rio paper: half at the metadata (superblock, object table,
        // registry), half at the data pages in use.
        let off = if seed.is_multiple_of(2) {
            (seed >> 1) % data
        } else {
            data + (seed >> 1) % (stats.pages_in_use.max(1) * 4096)
        };
        println!("injecting: wild store into the arena at offset {off:#x}");
        rio.wild_store(off, (seed >> 32) as u8)?;
        return Ok(());
    }
    if !std::path::Path::new("/dev/riofault").exists() {
        load_riofault()?;
    }
    if class == "pmem" {
        // Aimed like `arena`: half at the file system's metadata, half at file data.
        let region = crate::pmem::region()?;
        let (phys, what) = crate::pmem::aim(&region, seed)?;
        println!("injecting: store into persistent memory ({what}) at phys {phys:#x}");
        return riofault(&FaultReq {
            class: num as u32,
            _pad: 0,
            seed,
            start: phys,
            end: phys + 1,
        });
    }
    // Looked up once per process: a run injects many faults, and reading /proc/kallsyms
    // takes a noticeable fraction of a second under emulation.
    static TEXT: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    static RAM: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    let (cell, text) = if class == "text" {
        (&TEXT, true)
    } else {
        (&RAM, false)
    };
    let (start, end) = match cell.get() {
        Some(&r) => r,
        None => {
            let r = if text {
                (kallsyms("_stext")?, kallsyms("_etext")?)
            } else {
                (0, ram_top()?)
            };
            *cell.get_or_init(|| r)
        }
    };
    println!("injecting: {class} (seed {seed})");
    riofault(&FaultReq {
        class: num as u32,
        _pad: 0,
        seed,
        start,
        end,
    })
}

fn load_riofault() -> Result<()> {
    let st = std::process::Command::new("insmod")
        .arg("/lib/modules/riofault.ko")
        .status()
        .map_err(Error::io("running insmod riofault.ko"))?;
    if !st.success() {
        return Err(Error::Insmod(st));
    }
    Ok(())
}

/// Hands one request to riofault.ko.
fn riofault(req: &FaultReq) -> Result<()> {
    let dev = std::fs::File::open("/dev/riofault").map_err(Error::io("opening /dev/riofault"))?;
    // SAFETY: RIOFAULT_INJECT reads exactly one FaultReq from the pointer.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), RIOFAULT_INJECT, req as *const FaultReq) };
    if r < 0 {
        return Err(Error::Io {
            what: format!(
                "RIOFAULT_INJECT ({}, seed {})",
                CLASSES.get(req.class as usize).unwrap_or(&"?"),
                req.seed
            ),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fault_keeps_the_seed_and_the_others_differ() {
        assert_eq!(nth_seed(42, 0), 42);
        let seeds: Vec<u64> = (0..64).map(|k| nth_seed(42, k)).collect();
        let mut sorted = seeds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), seeds.len(), "seeds repeat: {seeds:?}");
        assert_ne!(nth_seed(43, 1), nth_seed(42, 1));
    }

    #[test]
    fn fault_seeds_are_the_ones_campaigns_were_run_with() {
        // Outputs of nth_seed as it was when its mixer moved into rio-prng: a change here
        // changes which faults a multi-fault run injects.
        assert_eq!(nth_seed(42, 1), 0xbdd7_3226_2feb_6e95);
        assert_eq!(nth_seed(42, 2), 0x28ef_e333_b266_f103);
        assert_eq!(nth_seed(42, 63), 0x9c08_f817_bb9e_9346);
        assert_eq!(nth_seed(0, 1), 0xe220_a839_7b1d_cdaf);
        assert_eq!(nth_seed(u64::MAX, 7), 0xf14f_2cf8_0208_3fa5);
    }
}
