//! Aiming `rio-check inject pmem`: the pmem-dax configuration's counterpart of the `arena`
//! class. As there (half at the arena's metadata, half at data pages in use), half of the
//! stores go to the ext4 metadata in use on the persistent memory (superblock, group
//! descriptors, group 0's bitmaps, the inodes of the root directory and of the files, the
//! root directory's blocks) and half to the blocks of the files (FIEMAP). riofault.ko then
//! stores the byte through the kernel's direct map of the region.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A byte range on the block device: `(offset, length)`.
pub type Range = (u64, u64);

/// The enabled fsdax namespace: its block device, the physical address of the device's
/// byte 0, and where it is mounted.
#[derive(Debug, Clone)]
pub struct Region {
    /// `/dev/pmemN`.
    pub device: PathBuf,
    /// Physical address of the device's first byte (the pfn device's `resource`).
    pub phys: u64,
    /// Bytes the device has.
    pub size: u64,
    /// Mount point of the device.
    pub mount: PathBuf,
}

fn kinfo(m: impl Into<String>) -> Error {
    Error::KernelInfo(m.into())
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(Error::io(format!("reading {}", p.display())))
}

fn parse_num(s: &str, what: &str) -> Result<u64> {
    let s = s.trim();
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| kinfo(format!("{what}: bad number {s:?}: {e}")))
}

/// Finds the enabled fsdax (pfn) device under /sys/bus/nd and its mount.
pub fn region() -> Result<Region> {
    let nd = Path::new("/sys/bus/nd/devices");
    let entries = std::fs::read_dir(nd).map_err(Error::io(format!("listing {}", nd.display())))?;
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("pfn") || !p.join("driver").exists() {
            continue;
        }
        let Some(block) = std::fs::read_dir(p.join("block"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|b| b.ok())
        else {
            continue;
        };
        let device = PathBuf::from("/dev").join(block.file_name());
        let phys = parse_num(&read(&p.join("resource"))?, "pfn resource")?;
        let size = parse_num(&read(&p.join("size"))?, "pfn size")?;
        let mounts = read(Path::new("/proc/mounts"))?;
        let dev = device.to_string_lossy();
        let mount = mounts
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (d, m) = (it.next()?, it.next()?);
                (d == dev).then(|| PathBuf::from(m))
            })
            .next()
            .ok_or_else(|| kinfo(format!("{dev} is not mounted")))?;
        return Ok(Region {
            device,
            phys,
            size,
            mount,
        });
    }
    Err(kinfo(
        "no enabled fsdax namespace under /sys/bus/nd/devices (run pmem-dax setup)",
    ))
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// The ext4 geometry the metadata ranges need, from the superblock (1024 bytes at 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4 {
    /// Block size in bytes.
    pub block: u64,
    /// Block of the first group descriptor table.
    pub gdt_block: u64,
    /// Inodes per group.
    pub inodes_per_group: u64,
    /// Bytes per inode.
    pub inode_size: u64,
    /// Bytes per group descriptor.
    pub desc_size: u64,
    /// Groups.
    pub groups: u64,
}

/// Parses an ext4 superblock (the 1024 bytes at device offset 1024).
pub fn parse_super(sb: &[u8]) -> Result<Ext4> {
    if sb.len() < 1024 || le16(sb, 0x38) != 0xef53 {
        return Err(kinfo("no ext4 superblock on the pmem device"));
    }
    let blocks = le32(sb, 0x4) | (le32(sb, 0x150) << 32);
    let first_data = le32(sb, 0x14);
    let block = 1024u64 << le32(sb, 0x18).min(6);
    let per_group = le32(sb, 0x20).max(1);
    let sixty_four = le32(sb, 0x60) & 0x80 != 0;
    let desc_size = if sixty_four {
        le16(sb, 0xfe).max(32)
    } else {
        32
    };
    Ok(Ext4 {
        block,
        gdt_block: first_data + 1,
        inodes_per_group: le32(sb, 0x28).max(1),
        inode_size: le16(sb, 0x58).max(128),
        desc_size,
        groups: blocks.saturating_sub(first_data).div_ceil(per_group),
    })
}

/// Group descriptor `g`'s block bitmap, inode bitmap and inode table blocks.
pub fn parse_desc(fs: &Ext4, gdt: &[u8], g: u64) -> Option<(u64, u64, u64)> {
    let at = (g * fs.desc_size) as usize;
    let d = gdt.get(at..at + fs.desc_size as usize)?;
    let hi = |o: usize| {
        if fs.desc_size >= 64 {
            le32(d, o) << 32
        } else {
            0
        }
    };
    Some((
        le32(d, 0) | hi(0x20),
        le32(d, 4) | hi(0x24),
        le32(d, 8) | hi(0x28),
    ))
}

/// Where inode `ino` lives on the device.
pub fn inode_range(fs: &Ext4, gdt: &[u8], ino: u64) -> Option<Range> {
    let g = (ino.checked_sub(1)?) / fs.inodes_per_group;
    let i = (ino - 1) % fs.inodes_per_group;
    let (_, _, table) = parse_desc(fs, gdt, g)?;
    Some((table * fs.block + i * fs.inode_size, fs.inode_size))
}

/// The extents of `path` on its device (FIEMAP), as byte ranges.
fn extents(path: &Path) -> Result<Vec<Range>> {
    const FS_IOC_FIEMAP: libc::c_ulong = 0xc020_660b;
    const MAX: usize = 64;
    let f = File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    // struct fiemap (32 bytes) and MAX struct fiemap_extent (56 bytes each), u64-aligned.
    let mut buf = vec![0u64; (32 + MAX * 56) / 8];
    buf[1] = u64::MAX; // fm_length: the whole file
    buf[3] = MAX as u64; // fm_extent_count (low half of the fourth word)
                         // SAFETY: FS_IOC_FIEMAP reads the header and writes at most fm_extent_count extents
                         // into the buffer, which is sized for them.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, buf.as_mut_ptr()) };
    if r < 0 {
        return Err(Error::Io {
            what: format!("FIEMAP of {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    let mapped = (buf[2] >> 32) as usize; // fm_mapped_extents
    let mut out = Vec::new();
    for k in 0..mapped.min(MAX) {
        let w = 4 + k * 7;
        let (physical, length, flags) = (buf[w + 1], buf[w + 2], buf[w + 5] as u32);
        // Not yet on the device (delayed allocation) or location unknown: no target.
        if flags & 0x6 == 0 && length > 0 {
            out.push((physical, length));
        }
    }
    Ok(out)
}

/// The metadata and data ranges in use of the file system on `r`.
pub fn targets(r: &Region) -> Result<(Vec<Range>, Vec<Range>)> {
    let dev =
        File::open(&r.device).map_err(Error::io(format!("opening {}", r.device.display())))?;
    let mut sb = vec![0u8; 1024];
    dev.read_exact_at(&mut sb, 1024)
        .map_err(Error::io("reading the ext4 superblock"))?;
    let fs = parse_super(&sb)?;
    let mut gdt = vec![0u8; (fs.groups * fs.desc_size) as usize];
    dev.read_exact_at(&mut gdt, fs.gdt_block * fs.block)
        .map_err(Error::io("reading the group descriptors"))?;
    let (bb, ib, _) = parse_desc(&fs, &gdt, 0).ok_or_else(|| kinfo("no group descriptor 0"))?;
    let mut meta = vec![
        (1024, 1024),
        (fs.gdt_block * fs.block, gdt.len() as u64),
        (bb * fs.block, fs.block),
        (ib * fs.block, fs.block),
    ];
    let mut data = Vec::new();
    let root = std::fs::metadata(&r.mount).map_err(Error::io("stat of the mount point"))?;
    meta.extend(inode_range(&fs, &gdt, root.ino()));
    meta.extend(extents(&r.mount).unwrap_or_default());
    let dir = std::fs::read_dir(&r.mount).map_err(Error::io("listing the mount point"))?;
    for e in dir.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_file() {
            meta.extend(inode_range(&fs, &gdt, m.ino()));
            data.extend(extents(&e.path())?);
        }
    }
    Ok((meta, data))
}

/// Picks a byte offset in `ranges`, uniformly over their bytes, from `x`.
pub fn pick(ranges: &[Range], x: u64) -> Option<u64> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    if total == 0 {
        return None;
    }
    let mut at = x % total;
    for &(off, len) in ranges {
        if at < len {
            return Some(off + at);
        }
        at -= len;
    }
    None
}

/// The physical address a `pmem` store with `seed` aims at, and what it hits: even seeds
/// the metadata, odd seeds the files' data (as the `arena` class aims).
pub fn aim(r: &Region, seed: u64) -> Result<(u64, &'static str)> {
    let (meta, data) = targets(r)?;
    let (ranges, what) = if seed.is_multiple_of(2) || data.is_empty() {
        (&meta, "ext4 metadata")
    } else {
        (&data, "file data")
    };
    let off = pick(ranges, seed >> 1).ok_or_else(|| kinfo("nothing to aim at"))?;
    if off >= r.size {
        return Err(kinfo(format!("offset {off:#x} beyond the pmem device")));
    }
    Ok((r.phys + off, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(sixty_four: bool) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        b[0x4..0x8].copy_from_slice(&64000u32.to_le_bytes()); // blocks
        b[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB
        b[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes()); // blocks per group
        b[0x28..0x2c].copy_from_slice(&8000u32.to_le_bytes()); // inodes per group
        b[0x58..0x5a].copy_from_slice(&256u16.to_le_bytes());
        if sixty_four {
            b[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
            b[0xfe..0x100].copy_from_slice(&64u16.to_le_bytes());
        }
        b
    }

    #[test]
    fn the_superblock_gives_the_geometry() {
        let fs = parse_super(&sb(true)).unwrap();
        assert_eq!(
            fs,
            Ext4 {
                block: 4096,
                gdt_block: 1,
                inodes_per_group: 8000,
                inode_size: 256,
                desc_size: 64,
                groups: 2,
            }
        );
        assert_eq!(parse_super(&sb(false)).unwrap().desc_size, 32);
        assert!(parse_super(&[0u8; 1024]).is_err());
    }

    #[test]
    fn inodes_are_found_through_their_group_descriptor() {
        let fs = parse_super(&sb(true)).unwrap();
        let mut gdt = vec![0u8; 128];
        gdt[8..12].copy_from_slice(&100u32.to_le_bytes()); // group 0's inode table
        gdt[64 + 8..64 + 12].copy_from_slice(&200u32.to_le_bytes()); // group 1's
        gdt[64 + 0x28..64 + 0x2c].copy_from_slice(&1u32.to_le_bytes()); // its high half
        assert_eq!(inode_range(&fs, &gdt, 2), Some((100 * 4096 + 256, 256)));
        assert_eq!(
            inode_range(&fs, &gdt, 8001),
            Some((((1u64 << 32) + 200) * 4096, 256))
        );
        assert_eq!(inode_range(&fs, &gdt, 0), None);
        assert_eq!(inode_range(&fs, &gdt, 16001), None);
    }

    #[test]
    fn picks_cover_every_range_byte_for_byte() {
        let r = [(1000, 10), (5000, 2)];
        let got: Vec<u64> = (0..12).map(|x| pick(&r, x).unwrap()).collect();
        assert_eq!(got[..3], [1000, 1001, 1002]);
        assert_eq!(got[10..], [5000, 5001]);
        assert_eq!(pick(&r, 12), Some(1000));
        assert_eq!(pick(&[], 5), None);
    }
}
