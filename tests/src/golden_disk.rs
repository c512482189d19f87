//! The backing disk's layout written down here, byte by byte, from the format's description
//! (the comment block above `DISK_MAGIC` in `rio_mod/format.rs`), so that the tests that
//! judge what rio.ko wrote to its backing disk do not decode it with the code that
//! encoded it. If the format changes, this file must be changed on purpose.
//!
//! ```text
//! block 0 (4096 bytes)  superblock: "RIODISK1" at 0, version u32 = 1 at 8, uuid at 16..32,
//!                       disk size in blocks u64 at 32, CRC-32C of bytes 0..124 at 124
//! blocks 1 ..= 8        256 entries of 128 bytes (entry i = arena slot i); an all-zero
//!                       entry is unused; else: extent start (blocks after block 9) u64
//!                       at 0, flags u32 at 8 (bit 0: in use), name at 12..76 (NUL
//!                       padded), size u64 at 76, uid u32 at 84, gid u32 at 88, mode u32
//!                       at 92, extent length u64 at 96, CRC-32C of bytes 0..124 at 124
//! blocks 9 ..           data: each object contiguous at block 9 + its extent start
//! ```

const BLOCK: usize = 4096;
const ENTRY: usize = 128;
const ENTRIES: usize = 256;
const TABLE: usize = BLOCK;
const DATA: usize = 9 * BLOCK;

/// CRC-32C (Castagnoli), bit by bit: reflected polynomial 0x82F63B78, initial and final
/// value all ones.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A 128-byte record whose last four bytes are the CRC-32C of the rest.
fn checksummed(rec: &[u8]) -> bool {
    crc32c(&rec[..124]) == u32_at(rec, 124)
}

/// Object `name` on the backing-disk image `disk`, decoded by the layout above: `Err` says
/// what is wrong (not a Rio disk, a bad checksum, no such object, an extent past the end).
pub fn disk_object(disk: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let sb = disk
        .get(..128)
        .ok_or("the image is shorter than a superblock")?;
    if &sb[..8] != b"RIODISK1" {
        return Err(format!("no RIODISK1 magic at byte 0: {:02x?}", &sb[..8]));
    }
    if u32_at(sb, 8) != 1 {
        return Err(format!("format version {}, not 1", u32_at(sb, 8)));
    }
    if !checksummed(sb) {
        return Err("the disk superblock's CRC-32C does not match".into());
    }
    for i in 0..ENTRIES {
        let at = TABLE + i * ENTRY;
        let e = disk
            .get(at..at + ENTRY)
            .ok_or("the image ends inside the object table")?;
        if e.iter().all(|&b| b == 0) {
            continue;
        }
        if !checksummed(e) {
            return Err(format!("entry {i}: its CRC-32C does not match"));
        }
        let n = e[12..76].iter().position(|&c| c == 0).unwrap_or(64);
        if u32_at(e, 8) & 1 == 0 || &e[12..12 + n] != name.as_bytes() {
            continue;
        }
        let (start, size, blocks) = (u64_at(e, 0), u64_at(e, 76), u64_at(e, 96));
        if size.div_ceil(BLOCK as u64) > blocks {
            return Err(format!(
                "entry {i}: {size} bytes in an extent of {blocks} blocks"
            ));
        }
        let from = DATA + start as usize * BLOCK;
        return disk
            .get(from..from + size as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                format!(
                    "entry {i}: its extent at block {} is past the end",
                    9 + start
                )
            });
    }
    Err(format!("no object named {name:?} on the disk"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C (RFC 3720, B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    /// A disk image built here by hand, byte by byte.
    fn image(name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; DATA + 4 * BLOCK];
        d[..8].copy_from_slice(b"RIODISK1");
        d[8] = 1;
        d[32] = 13;
        let c = crc32c(&d[..124]);
        d[124..128].copy_from_slice(&c.to_le_bytes());
        let e = &mut d[TABLE + 3 * ENTRY..TABLE + 4 * ENTRY];
        e[0] = 2; // extent start
        e[8] = 1; // in use
        e[12..12 + name.len()].copy_from_slice(name);
        e[76..84].copy_from_slice(&(data.len() as u64).to_le_bytes());
        e[96] = 2; // extent blocks
        let c = crc32c(&e[..124]);
        e[124..128].copy_from_slice(&c.to_le_bytes());
        d[DATA + 2 * BLOCK..DATA + 2 * BLOCK + data.len()].copy_from_slice(data);
        d
    }

    #[test]
    fn reads_a_hand_made_image_and_refuses_damage() {
        let d = image(b"obj", b"hello, disk");
        assert_eq!(disk_object(&d, "obj").unwrap(), b"hello, disk");
        assert!(disk_object(&d, "other").unwrap_err().contains("no object"));
        let mut bad = d.clone();
        bad[TABLE + 3 * ENTRY + 80] ^= 1;
        assert!(disk_object(&bad, "obj").unwrap_err().contains("CRC-32C"));
        let mut bad = d;
        bad[0] = b'X';
        assert!(disk_object(&bad, "obj").unwrap_err().contains("magic"));
    }

    /// What rio.ko's own encoder writes, this reading decodes: the two descriptions agree.
    #[test]
    fn agrees_with_the_module_encoder() {
        use rio_format::{DiskEntry, DiskSuper, ObjectSlot, DISK_ENTRY_SIZE, OBJ_IN_USE};
        let mut d = vec![0u8; DATA + 8 * BLOCK];
        DiskSuper {
            uuid: [7; 16],
            blocks: 17,
        }
        .encode(&mut d[..BLOCK]);
        let mut slot = ObjectSlot::EMPTY;
        slot.flags = OBJ_IN_USE;
        slot.name[..4].copy_from_slice(b"data");
        slot.size = 5000;
        let e = DiskEntry {
            slot,
            start: 3,
            blocks: 2,
        };
        let at = TABLE + 200 * ENTRY;
        e.encode(&mut d[at..at + DISK_ENTRY_SIZE]);
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        d[DATA + 3 * BLOCK..DATA + 3 * BLOCK + 5000].copy_from_slice(&payload);
        assert_eq!(disk_object(&d, "data").unwrap(), payload);
    }
}
