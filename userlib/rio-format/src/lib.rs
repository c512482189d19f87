//! The on-arena format of rio.ko, compiled from the module's own `rio_mod/format.rs` so that
//! the host can test it and tools can read an arena image (for example a guest RAM file).

#[path = "../../../rio_mod/format.rs"]
mod format;

pub use format::*;

/// The riofs format (a POSIX file system inside one Rio object), compiled from the module's
/// own `rio_mod/riofs/format.rs`: one definition serves rio.ko and host tools such as
/// `riofs-fsck`, and its unit tests run here.
// The kernel's lint set, not the host's: the file is shared and stays as the kernel wants it.
#[allow(clippy::manual_is_multiple_of, clippy::result_unit_err)]
#[path = "../../../rio_mod/riofs/format.rs"]
pub mod riofs;

/// Reads object `name` out of a backing-disk image, as the host sees it after a run:
/// `None` if the image is not a Rio disk or has no such object.
pub fn read_disk_object(disk: &[u8], name: &str) -> Option<Vec<u8>> {
    DiskSuper::decode(disk.get(..SB_SIZE)?).ok()?;
    let table = DISK_TABLE_START as usize * PAGE_SIZE;
    (0..MAX_OBJECTS).find_map(|i| {
        let at = table + i * DISK_ENTRY_SIZE;
        let e = DiskEntry::decode(disk.get(at..at + DISK_ENTRY_SIZE)?).ok()?;
        if !e.in_use() || e.slot.name() != name.as_bytes() {
            return None;
        }
        let start = (DISK_DATA_START + e.start) as usize * PAGE_SIZE;
        disk.get(start..start + e.slot.size as usize)
            .map(<[u8]>::to_vec)
    })
}

/// Reads object `name` out of an arena image (the reserved memory, for example a slice
/// of a guest RAM file): the object table's newest valid slot of that name, and its pages
/// found through the registry. `None` if the image is not a Rio arena, has no such
/// object, or cannot account for all of its pages.
pub fn read_arena_object(arena: &[u8], name: &str) -> Option<Vec<u8>> {
    let (sb, _) = Superblock::pick(arena.get(..PAGE_SIZE)?).ok()?;
    let g = sb.geometry;
    let table = g.table_start as usize * PAGE_SIZE;
    let (idx, slot) = (0..MAX_OBJECTS).find_map(|i| {
        let at = table + i * 2 * SLOT_COPY_SIZE;
        let (s, _) = ObjectSlot::pick(arena.get(at..at + 2 * SLOT_COPY_SIZE)?).ok()?;
        (s.in_use() && s.name() == name.as_bytes()).then_some((i, s))
    })?;
    let pages = slot.pages() as usize;
    let mut out = vec![0u8; pages * PAGE_SIZE];
    let mut found = vec![false; pages];
    let reg = g.registry_start as usize * PAGE_SIZE;
    for p in 0..g.data_pages {
        let at = reg + p as usize * 8;
        let raw = u64::from_le_bytes(arena.get(at..at + 8)?.try_into().ok()?);
        let Ok(e) = RegEntry::decode(raw, p) else {
            continue;
        };
        if e.owner != Some(idx as u16) || e.index as usize >= pages || found[e.index as usize] {
            continue;
        }
        let src = (g.data_start + p) as usize * PAGE_SIZE;
        let i = e.index as usize;
        out[i * PAGE_SIZE..(i + 1) * PAGE_SIZE].copy_from_slice(arena.get(src..src + PAGE_SIZE)?);
        found[i] = true;
    }
    if found.iter().any(|f| !f) {
        return None;
    }
    out.truncate(slot.size as usize);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(seq: u64) -> Superblock {
        Superblock {
            seq,
            state: STATE_ACTIVE,
            uuid: [7; 16],
            epoch: 3,
            arena_size: 64 << 20,
            geometry: Geometry::for_size(64 << 20).unwrap(),
            recoveries: 1,
            saved_by: SAVED_BY_CRASH_KERNEL,
        }
    }

    #[test]
    fn crc32c_known_answer() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn geometry_accounts_for_every_page() {
        for mib in [1u64, 2, 64, 1024] {
            let g = Geometry::for_size(mib << 20).unwrap();
            assert_eq!(g.data_start + g.data_pages, g.total_pages, "{mib} MiB");
            assert!(g.registry_pages as usize * PAGE_SIZE / 8 >= g.data_pages as usize);
            assert_eq!(g.registry_start, g.table_start + g.table_pages);
        }
        assert_eq!(
            Geometry::for_size(16 << 10),
            None,
            "too small for the table"
        );
    }

    #[test]
    fn superblock_round_trips_and_detects_damage() {
        let mut page = vec![0u8; PAGE_SIZE];
        assert_eq!(Superblock::pick(&page), Err(FormatError::Blank));
        sb(5).encode(&mut page[..SB_SIZE]);
        assert_eq!(Superblock::pick(&page), Ok((sb(5), 0)));
        // A newer copy B wins; a torn (corrupt) copy B falls back to A.
        sb(6).encode(&mut page[SB_COPY_B..]);
        assert_eq!(Superblock::pick(&page).unwrap(), (sb(6), 1));
        page[SB_COPY_B + 30] ^= 1;
        assert_eq!(Superblock::pick(&page).unwrap(), (sb(5), 0));
        // Both bad: the error of copy A.
        page[40] ^= 1;
        assert_eq!(Superblock::pick(&page), Err(FormatError::BadChecksum));
        let mut foreign = vec![0xabu8; PAGE_SIZE];
        assert_eq!(Superblock::pick(&foreign), Err(FormatError::BadMagic));
        sb(1).encode(&mut foreign);
        foreign[8] = 9; // version
        assert_eq!(
            Superblock::decode(&foreign),
            Err(FormatError::BadVersion(9))
        );
    }

    #[test]
    fn superblock_geometry_must_match_size() {
        let mut s = sb(1);
        s.geometry.data_pages += 1;
        let mut b = [0u8; SB_SIZE];
        s.encode(&mut b);
        assert_eq!(Superblock::decode(&b), Err(FormatError::BadGeometry));
    }

    #[test]
    fn slots_round_trip_and_pick_newest() {
        let mut s = ObjectSlot::EMPTY;
        s.seq = 2;
        s.flags = OBJ_IN_USE;
        s.name = encode_name(b"db.main").unwrap();
        s.size = 10_000;
        s.uid = 1000;
        s.mode = 0o600;
        let mut both = [0u8; 2 * SLOT_COPY_SIZE];
        assert_eq!(ObjectSlot::pick(&both).unwrap().0, ObjectSlot::EMPTY);
        s.encode(&mut both[SLOT_COPY_SIZE..]);
        let (got, copy) = ObjectSlot::pick(&both).unwrap();
        assert_eq!((got, copy), (s, 1));
        assert_eq!(got.name(), b"db.main");
        assert_eq!(got.pages(), 3);
        both[SLOT_COPY_SIZE + 90] ^= 0x10;
        // Copy B is torn: the empty copy A stands.
        assert_eq!(ObjectSlot::pick(&both).unwrap(), (ObjectSlot::EMPTY, 0));
    }

    #[test]
    fn names_are_checked() {
        assert!(encode_name(b"a").is_some());
        assert!(encode_name(&[b'x'; NAME_MAX]).is_some());
        assert!(encode_name(&[b'x'; NAME_MAX + 1]).is_none());
        assert!(encode_name(b"").is_none());
        assert!(encode_name(b"a/b").is_none());
        assert!(encode_name(b"a b").is_none());
        assert!(encode_name(b"caf\xc3\xa9").is_none());
    }

    #[test]
    fn registry_entries_round_trip_and_catch_wild_stores() {
        assert_eq!(RegEntry::FREE.encode(5), 0);
        assert_eq!(RegEntry::decode(0, 5), Ok(RegEntry::FREE));
        let e = RegEntry {
            owner: Some(255),
            index: 0x00ab_cdef,
            dirty: true,
        };
        let raw = e.encode(77);
        assert_eq!(RegEntry::decode(raw, 77), Ok(e));
        // The same bits at another page are rejected: entries cannot be moved.
        assert_eq!(RegEntry::decode(raw, 78), Err(BadEntry));
        // Every single-bit flip is caught.
        for bit in 0..64 {
            let flipped = raw ^ (1 << bit);
            assert_ne!(RegEntry::decode(flipped, 77), Ok(e), "bit {bit}");
            if flipped != 0 {
                assert!(
                    RegEntry::decode(flipped, 77).is_err() || bit >= 48,
                    "bit {bit}"
                );
            }
        }
        // Random garbage is caught with high probability (16-bit check).
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut accepted = 0;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if RegEntry::decode(x, 3).is_ok() {
                accepted += 1;
            }
        }
        assert!(accepted < 20, "{accepted} random words passed the check");
    }

    #[test]
    fn disk_superblock_round_trips() {
        let d = DiskSuper {
            uuid: [3; 16],
            blocks: 5000,
        };
        let mut b = [0u8; SB_SIZE];
        assert_eq!(DiskSuper::decode(&b), Err(FormatError::Blank));
        d.encode(&mut b);
        assert_eq!(DiskSuper::decode(&b), Ok(d));
        b[20] ^= 1;
        assert_eq!(DiskSuper::decode(&b), Err(FormatError::BadChecksum));
        let mut arena_sb = [0u8; SB_SIZE];
        let g = Geometry::for_size(1 << 20).unwrap();
        Superblock {
            seq: 1,
            state: STATE_CLEAN,
            uuid: [0; 16],
            epoch: 0,
            arena_size: 1 << 20,
            geometry: g,
            recoveries: 0,
            saved_by: SAVED_BY_UNLOAD,
        }
        .encode(&mut arena_sb);
        assert_eq!(
            DiskSuper::decode(&arena_sb),
            Err(FormatError::BadMagic),
            "an arena is not a disk"
        );
    }

    #[test]
    fn disk_entries_round_trip() {
        let mut slot = ObjectSlot::EMPTY;
        slot.flags = OBJ_IN_USE;
        slot.name = encode_name(b"obj").unwrap();
        slot.size = 3 * PAGE_SIZE as u64;
        let e = DiskEntry {
            slot,
            start: 77,
            blocks: 3,
        };
        let mut b = [0u8; DISK_ENTRY_SIZE];
        e.encode(&mut b);
        assert_eq!(DiskEntry::decode(&b), Ok(e));
        // An extent smaller than the object is rejected.
        let small = DiskEntry { blocks: 2, ..e };
        small.encode(&mut b);
        assert_eq!(DiskEntry::decode(&b), Err(FormatError::BadGeometry));
        DiskEntry::EMPTY.encode(&mut b);
        assert_eq!(b, [0u8; DISK_ENTRY_SIZE]);
        assert_eq!(DiskEntry::decode(&b), Ok(DiskEntry::EMPTY));
    }

    #[test]
    fn first_fit_finds_holes() {
        assert_eq!(first_fit(&mut [], 10, 100), Some(0));
        assert_eq!(first_fit(&mut [(0, 10)], 5, 100), Some(10));
        assert_eq!(first_fit(&mut [(20, 10), (0, 10)], 10, 100), Some(10));
        assert_eq!(first_fit(&mut [(0, 10), (15, 10)], 6, 30), None);
        assert_eq!(first_fit(&mut [(0, 10), (15, 10)], 5, 30), Some(10));
        assert_eq!(first_fit(&mut [(0, 95)], 5, 100), Some(95));
        assert_eq!(first_fit(&mut [(0, 95)], 6, 100), None);
    }

    #[test]
    fn a_disk_sized_by_disk_bytes_needed_holds_every_data_page() {
        let g = Geometry::for_size(64 << 20).unwrap();
        let need = disk_bytes_needed(&g);
        assert_eq!(
            need / PAGE_SIZE as u64 - DISK_DATA_START,
            u64::from(g.data_pages)
        );
    }
}
