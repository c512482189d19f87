//! Unit tests: a clean image built in memory (with format.rs's encoders), then one
//! corruption per problem class, each asserting exactly what is reported.

use super::*;
use rio_format::riofs::{Time, MAX_FILE_SIZE, S_IFDIR, S_IFIFO, S_IFREG};

const BLOCKS: u32 = 256;

/// An image under construction: mkfs's layout, then files added as the kernel would leave
/// them (bitmap bits, nlink, nblocks, sizes, dtypes).
struct Img {
    b: Vec<u8>,
    sb: Super,
    next_block: u32,
    next_ino: u32,
}

impl Img {
    fn new() -> Img {
        let sb = Super::for_blocks(BLOCKS, [3; 16], 1_700_000_000).expect("geometry");
        let mut img = Img {
            b: vec![0; BLOCKS as usize * BLOCK],
            sb,
            next_block: sb.data_start,
            next_ino: 2,
        };
        sb.encode(&mut img.b[..SUPER_SIZE]);
        let lp = sb.log_pos() as usize;
        img.b[lp + 8..lp + 16].copy_from_slice(&LOG_MAGIC.to_le_bytes());
        let bits = sb.bitmap_blocks as u64 * BLOCK as u64 * 8;
        for b in 0..bits {
            if b < u64::from(sb.data_start) || b >= u64::from(sb.blocks) {
                img.set_bit(b as u32, true);
            }
        }
        let root = Inode {
            mode: S_IFDIR | 0o755,
            nlink: 2,
            generation: 1,
            mtime: Time { sec: 5, nsec: 6 },
            ..Inode::default()
        };
        img.put(ROOT_INO, &root);
        img
    }

    fn set_bit(&mut self, b: u32, on: bool) {
        let at = self.sb.bitmap_start as usize * BLOCK + b as usize / 8;
        if on {
            self.b[at] |= 1 << (b % 8);
        } else {
            self.b[at] &= !(1 << (b % 8));
        }
    }

    fn ipos(&self, ino: u32) -> usize {
        self.sb.inode_pos(ino).expect("inode number") as usize
    }

    fn get(&self, ino: u32) -> Inode {
        let p = self.ipos(ino);
        Inode::decode(&self.b[p..p + INODE_SIZE]).expect("valid inode")
    }

    fn put(&mut self, ino: u32, i: &Inode) {
        let p = self.ipos(ino);
        i.encode(&mut self.b[p..p + INODE_SIZE]);
    }

    fn edit(&mut self, ino: u32, f: impl FnOnce(&mut Inode)) {
        let mut i = self.get(ino);
        f(&mut i);
        self.put(ino, &i);
    }

    fn alloc(&mut self) -> u32 {
        let b = self.next_block;
        assert!(b < self.sb.blocks, "test image full");
        self.next_block += 1;
        self.set_bit(b, true);
        b
    }

    fn ptr(&self, blk: u32, idx: usize) -> u32 {
        u32_at(&self.b, blk as usize * BLOCK + idx * 4)
    }

    fn set_ptr(&mut self, blk: u32, idx: usize, v: u32) {
        let at = blk as usize * BLOCK + idx * 4;
        self.b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Maps file block `f` of `i`, allocating it and any indirect blocks.
    fn map(&mut self, i: &mut Inode, f: usize) -> u32 {
        if f < NDIRECT {
            if i.direct[f] == 0 {
                i.direct[f] = self.alloc();
                i.nblocks += 1;
            }
            return i.direct[f];
        }
        let g = f - NDIRECT;
        let (parent, idx) = if g < PTRS {
            if i.ind == 0 {
                i.ind = self.alloc();
                i.nblocks += 1;
            }
            (i.ind, g)
        } else {
            let g = g - PTRS;
            if i.dind == 0 {
                i.dind = self.alloc();
                i.nblocks += 1;
            }
            let mut mid = self.ptr(i.dind, g / PTRS);
            if mid == 0 {
                mid = self.alloc();
                i.nblocks += 1;
                self.set_ptr(i.dind, g / PTRS, mid);
            }
            (mid, g % PTRS)
        };
        let mut b = self.ptr(parent, idx);
        if b == 0 {
            b = self.alloc();
            i.nblocks += 1;
            self.set_ptr(parent, idx, b);
        }
        b
    }

    fn new_ino(&mut self) -> u32 {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    /// Object byte offset of directory slot `slot` of `dir`.
    fn slot_pos(&self, dir: u32, slot: usize) -> usize {
        let d = self.get(dir);
        let b = d.direct[slot / DIRENTS_PER_BLOCK];
        b as usize * BLOCK + (slot % DIRENTS_PER_BLOCK) * DIRENT_SIZE
    }

    /// The first free slot of `dir` (growing it by a block if it is full).
    fn free_slot(&mut self, dir: u32) -> usize {
        let mut d = self.get(dir);
        let slots = (d.size / BLOCK as u64) as usize * DIRENTS_PER_BLOCK;
        for s in 0..slots {
            if u32_at(&self.b, self.slot_pos(dir, s)) == 0 {
                return s;
            }
        }
        let f = (d.size / BLOCK as u64) as usize;
        self.map(&mut d, f);
        d.size += BLOCK as u64;
        self.put(dir, &d);
        slots
    }

    fn write_entry(&mut self, dir: u32, slot: usize, raw: &[u8; DIRENT_SIZE]) {
        let p = self.slot_pos(dir, slot);
        self.b[p..p + DIRENT_SIZE].copy_from_slice(raw);
    }

    fn add_entry(&mut self, dir: u32, name: &str, ino: u32, dtype: u8) -> usize {
        let slot = self.free_slot(dir);
        let mut raw = [0u8; DIRENT_SIZE];
        Dirent::new(ino, name.as_bytes(), dtype)
            .expect("valid name")
            .encode(&mut raw);
        self.write_entry(dir, slot, &raw);
        slot
    }

    fn find(&self, dir: u32, name: &str) -> usize {
        let d = self.get(dir);
        let slots = (d.size / BLOCK as u64) as usize * DIRENTS_PER_BLOCK;
        (0..slots)
            .find(|&s| {
                let p = self.slot_pos(dir, s);
                matches!(Dirent::decode(&self.b[p..p + DIRENT_SIZE]), Ok(Some(e)) if e.name() == name.as_bytes())
            })
            .expect("entry exists")
    }

    fn mkdir(&mut self, parent: u32, name: &str) -> u32 {
        let ino = self.new_ino();
        let mode = S_IFDIR | 0o755;
        self.put(
            ino,
            &Inode {
                mode,
                nlink: 2,
                generation: 1,
                ..Inode::default()
            },
        );
        self.add_entry(parent, name, ino, dtype_of(mode));
        self.edit(parent, |p| p.nlink += 1);
        ino
    }

    /// A regular file of `size` bytes with file blocks `fblocks` mapped (and filled).
    fn file(&mut self, parent: u32, name: &str, size: u64, fblocks: &[usize]) -> u32 {
        let ino = self.new_ino();
        let mode = S_IFREG | 0o644;
        let mut i = Inode {
            mode,
            nlink: 1,
            size,
            generation: 3,
            uid: 1000,
            ..Inode::default()
        };
        for &f in fblocks {
            let b = self.map(&mut i, f);
            self.b[b as usize * BLOCK..(b as usize + 1) * BLOCK].fill(0xa5);
        }
        self.put(ino, &i);
        self.add_entry(parent, name, ino, dtype_of(mode));
        ino
    }

    fn link(&mut self, parent: u32, name: &str, ino: u32) {
        let i = self.get(ino);
        self.add_entry(parent, name, ino, dtype_of(i.mode));
        self.edit(ino, |i| i.nlink += 1);
    }

    fn symlink(&mut self, parent: u32, name: &str, target: &str) -> u32 {
        let ino = self.new_ino();
        let mode = S_IFLNK | 0o777;
        let mut i = Inode {
            mode,
            nlink: 1,
            size: target.len() as u64,
            ..Inode::default()
        };
        let b = self.map(&mut i, 0) as usize;
        self.b[b * BLOCK..b * BLOCK + target.len()].copy_from_slice(target.as_bytes());
        self.put(ino, &i);
        self.add_entry(parent, name, ino, dtype_of(mode));
        ino
    }

    fn special(&mut self, parent: u32, name: &str, mode: u32) -> u32 {
        let ino = self.new_ino();
        self.put(
            ino,
            &Inode {
                mode,
                nlink: 1,
                ..Inode::default()
            },
        );
        self.add_entry(parent, name, ino, dtype_of(mode));
        ino
    }
}

/// The inodes of the standard image.
struct Std {
    img: Img,
    a: u32,
    b: u32,
    f1: u32,
    sparse: u32,
    sym: u32,
    fifo: u32,
}

/// A clean image: `/a/b/` holding 20 empty files (two directory blocks), `/f1` (3 blocks,
/// hard-linked as `/a/hard`), `/sparse` (direct, indirect and double-indirect blocks with
/// holes), `/sym -> f1`, `/fifo`.
fn standard() -> Std {
    let mut img = Img::new();
    let a = img.mkdir(ROOT_INO, "a");
    let b = img.mkdir(a, "b");
    for k in 0..20 {
        img.file(b, &format!("e{k}"), 0, &[]);
    }
    let f1 = img.file(ROOT_INO, "f1", 10_000, &[0, 1, 2]);
    img.link(a, "hard", f1);
    let last = NDIRECT + PTRS + PTRS + 7;
    let sparse = img.file(
        ROOT_INO,
        "sparse",
        (last as u64 + 1) * BLOCK as u64 - 100,
        &[0, NDIRECT + 3, last],
    );
    let sym = img.symlink(ROOT_INO, "sym", "f1");
    let fifo = img.special(ROOT_INO, "fifo", S_IFIFO | 0o600);
    Std {
        img,
        a,
        b,
        f1,
        sparse,
        sym,
        fifo,
    }
}

/// The (kind, inode) of every error, and of every warning, of `r`.
fn errors(r: &Report) -> Vec<(Kind, Option<u32>)> {
    of(r, Severity::Error)
}

fn warnings(r: &Report) -> Vec<(Kind, Option<u32>)> {
    of(r, Severity::Warning)
}

fn of(r: &Report, s: Severity) -> Vec<(Kind, Option<u32>)> {
    r.problems
        .iter()
        .filter(|p| p.severity == s)
        .map(|p| (p.kind, p.ino))
        .collect()
}

fn show(r: &Report) -> String {
    r.problems.iter().map(|p| format!("{p}\n")).collect()
}

/// Asserts that `r` reports exactly `errs` as errors and `warns` as warnings.
#[track_caller]
fn expect(r: &Report, errs: &[(Kind, Option<u32>)], warns: &[(Kind, Option<u32>)]) {
    assert_eq!(errors(r), errs, "errors:\n{}", show(r));
    assert_eq!(warnings(r), warns, "warnings:\n{}", show(r));
}

#[test]
fn a_clean_image_is_clean() {
    let s = standard();
    let r = check(&s.img.b);
    expect(&r, &[], &[]);
    assert!(r.is_clean());
    assert_eq!(r.summary(), "clean");
    assert_eq!(r.sb, Some(s.img.sb));
    assert_eq!(r.stats.dirs, 3);
    // root, a, b, 20 files, f1, sparse, sym, fifo.
    assert_eq!(r.stats.used_inodes, 3 + 20 + 4);
    assert_eq!(r.stats.used_blocks, s.img.next_block - s.img.sb.data_start);
    assert_eq!(s.img.get(s.sparse).nblocks, 6, "data 3, ind, dind, mid");
    assert_eq!(
        s.img.get(s.b).size,
        2 * BLOCK as u64,
        "two directory blocks"
    );
}

#[test]
fn golden_superblock_bytes_decode_and_check() {
    // Written out by hand (CRC-32C computed by an independent bitwise implementation):
    // format version 2, blocks 256, inodes 128, log 1+16, itable 17, bitmap 21+1, data 22.
    #[rustfmt::skip]
    const GOLDEN: [u8; SUPER_SIZE] = [
        0x52, 0x49, 0x4f, 0x46, 0x53, 0x00, 0x76, 0x31, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x80, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00,
        0x15, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13,
        0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xf1, 0x53, 0x65, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5d, 0x42, 0x2b, 0xa3,
    ];
    let uuid: [u8; 16] = core::array::from_fn(|k| 0x10 + k as u8);
    let want = Super {
        blocks: 256,
        inodes: 128,
        log_start: 1,
        log_blocks: 16,
        itable_start: 17,
        bitmap_start: 21,
        bitmap_blocks: 1,
        data_start: 22,
        uuid,
        created: 1_700_000_000,
    };
    assert_eq!(Super::decode(&GOLDEN), Ok(want));
    assert_eq!(Super::for_blocks(256, uuid, 1_700_000_000), Some(want));
    let mut enc = [0u8; SUPER_SIZE];
    want.encode(&mut enc);
    assert_eq!(enc, GOLDEN, "the encoder writes the documented bytes");
    // An image with the golden superblock in place of the builder's is still clean.
    let mut s = standard();
    s.img.b[..SUPER_SIZE].copy_from_slice(&GOLDEN);
    expect(&check(&s.img.b), &[], &[]);
    // And one flipped bit of it is a superblock checksum error, the only thing reported.
    s.img.b[13] ^= 0x02;
    let r = check(&s.img.b);
    expect(&r, &[(Kind::Superblock, None)], &[]);
    assert!(r.problems[0].message.contains("checksum"), "{}", show(&r));
}

#[test]
fn superblock_problems() {
    let s = standard();
    let mut blank = s.img.b.clone();
    blank[..BLOCK].fill(0);
    let r = check(&blank);
    expect(&r, &[(Kind::Superblock, None)], &[]);
    assert!(r.problems[0].message.contains("blank"));
    let mut magic = s.img.b.clone();
    magic[0] ^= 1;
    assert!(check(&magic).problems[0].message.contains("magic"));
    assert_eq!(check(&[]).problems[0].kind, Kind::Superblock);
}

#[test]
fn a_crafted_superblock_with_huge_fields_is_refused_without_overflow() {
    // `log_blocks = u32::MAX` with a correct checksum: `Super::check` would compute
    // `log_start + log_blocks` in u32. riofs-fsck refuses it before.
    let s = standard();
    let mut b = s.img.b.clone();
    b[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc32c(&b[..SUPER_SIZE - 4]);
    b[SUPER_SIZE - 4..SUPER_SIZE].copy_from_slice(&crc.to_le_bytes());
    let r = check(&b);
    expect(&r, &[(Kind::Superblock, None)], &[]);
    assert!(r.problems[0].message.contains("geometry"), "{}", show(&r));
}

#[test]
fn image_size_must_match_the_superblock() {
    let s = standard();
    let short = &s.img.b[..s.img.b.len() - BLOCK];
    expect(&check(short), &[(Kind::ImageSize, None)], &[]);
    let mut long = s.img.b.clone();
    long.extend_from_slice(&[0; BLOCK]);
    expect(&check(&long), &[(Kind::ImageSize, None)], &[]);
    let odd = &s.img.b[..s.img.b.len() - 1];
    expect(
        &check(odd),
        &[(Kind::ImageSize, None), (Kind::ImageSize, None)],
        &[],
    );
}

/// Where the in-flight transaction's next record goes (a byte of the log).
fn log_end(img: &Img) -> usize {
    match read_log(&img.b, &img.sb) {
        Log::Records(_, bytes) => LOG_HDR + bytes,
        _ => LOG_HDR,
    }
}

/// Appends an undo record of the current bytes at `off..off + len` to the log as a record
/// of the transaction after the last committed one, as the kernel's `log_range` does.
fn log_range(img: &mut Img, off: usize, len: usize) {
    let lp = img.sb.log_pos() as usize;
    let seq = u64_at(&img.b, lp) + 1;
    let at = lp + rio_format::riofs::record_pos(log_end(img));
    let mut h = [0u8; REC_HDR];
    RecHdr {
        off: off as u64,
        len: len as u32,
        seq,
    }
    .encode(&mut h);
    img.b.copy_within(off..off + len, at + REC_HDR);
    img.b[at..at + REC_HDR].copy_from_slice(&h);
}

/// The standard image with a transaction in flight: `/new` (a one-block file) being
/// created, its inode, its entry, its bitmap word and `/`'s inode logged then changed.
fn in_flight() -> (Std, Vec<u8>) {
    let mut s = standard();
    let before = s.img.b.clone();
    let ino = s.img.next_ino;
    let blk = s.img.next_block;
    let ipos = s.img.ipos(ino);
    log_range(&mut s.img, ipos, INODE_SIZE);
    let wpos = s.img.sb.bitmap_word_pos(blk) as usize;
    log_range(&mut s.img, wpos, 8);
    let slot = s.img.free_slot(ROOT_INO);
    let spos = s.img.slot_pos(ROOT_INO, slot);
    log_range(&mut s.img, spos, DIRENT_SIZE);
    s.img.file(ROOT_INO, "new", 10, &[0]);
    // The new file's block was allocated by the transaction: written unlogged.
    let mut before = before;
    before[blk as usize * BLOCK..(blk as usize + 1) * BLOCK].fill(0xa5);
    // ... and then, half done, `/` gets a wrong link count (a torn update the undo fixes).
    let rpos = s.img.ipos(ROOT_INO);
    log_range(&mut s.img, rpos, INODE_SIZE);
    s.img.edit(ROOT_INO, |r| r.nlink = 9);
    (s, before)
}

#[test]
fn an_operation_in_flight_is_a_warning_and_is_checked_undone() {
    let (s, before) = in_flight();
    let r = check(&s.img.b);
    expect(&r, &[], &[(Kind::InFlight, None)]);
    assert_eq!(r.stats.undo_records, 4);
    assert!(
        r.problems[0].message.contains("mount will undo 4 records"),
        "{}",
        show(&r)
    );
    assert_eq!(r.summary(), "0 errors, 1 warning");
    // Undone in memory only: the input is unchanged, and undoing gives the old image.
    let mut copy = s.img.b.clone();
    let Log::Records(recs, _) = read_log(&copy, &s.img.sb) else {
        panic!("records")
    };
    apply_log(&mut copy, &s.img.sb, &recs);
    // Everything but the log (its records stay, stale once the undo is committed, as the
    // kernel's do; its header's committed number moved on).
    let lp = s.img.sb.log_pos() as usize;
    let records = lp..s.img.sb.itable_start as usize * BLOCK;
    let diff: Vec<usize> = (0..copy.len())
        .filter(|&k| copy[k] != before[k] && !records.contains(&k))
        .collect();
    assert!(diff.is_empty(), "undone image differs at {diff:?}");
}

#[test]
fn a_record_that_runs_past_the_log_is_an_error() {
    // Records of the transaction in flight up to the log's end, then a valid header whose
    // bytes would run past it: the mount refuses the whole log (the kernel never writes
    // one: its transactions stop short of the end).
    let mut s = standard();
    let lp = s.img.sb.log_pos() as usize;
    let end = s.img.sb.log_bytes();
    let victim = s.img.ipos(ROOT_INO);
    while rio_format::riofs::record_pos(log_end(&s.img)) + RecHdr::span(BLOCK) <= end {
        let n = BLOCK.min(s.img.b.len() - victim);
        log_range(&mut s.img, victim, n);
    }
    let at = rio_format::riofs::record_pos(log_end(&s.img));
    assert!(at + REC_HDR <= end);
    let mut h = [0u8; REC_HDR];
    RecHdr {
        off: victim as u64,
        len: BLOCK as u32,
        seq: u64_at(&s.img.b, lp) + 1,
    }
    .encode(&mut h);
    s.img.b[lp + at..lp + at + REC_HDR].copy_from_slice(&h);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::LogRecord, None)], &[]);
    assert!(
        r.problems[0].message.contains(&format!("byte {at}")),
        "{}",
        show(&r)
    );
    assert_eq!(repair(&mut s.img.b.clone()), Err(RepairError::BadLog));
}

#[test]
fn a_record_whose_header_did_not_land_is_not_undone() {
    // The fourth record of the in-flight transaction lost its header (the crash came
    // between its bytes and its header): the mount undoes the first three, and the fourth
    // change (the root's link count) was never made in a real crash; here it was, so the
    // checker sees it, as it would see any damage.
    let (mut s, _) = in_flight();
    let lp = s.img.sb.log_pos() as usize;
    let fourth = LOG_HDR + RecHdr::span(INODE_SIZE) + RecHdr::span(8) + RecHdr::span(DIRENT_SIZE);
    let fourth = rio_format::riofs::record_pos(fourth);
    s.img.b[lp + fourth + 16] ^= 1; // its transaction number
    let r = check(&s.img.b);
    assert_eq!(r.stats.undo_records, 3, "{}", show(&r));
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == Kind::LinkCount && p.ino == Some(ROOT_INO)),
        "{}",
        show(&r)
    );
}

#[test]
fn the_log_magic_is_checked() {
    let mut s = standard();
    let lp = s.img.sb.log_pos() as usize;
    s.img.b[lp + 9] ^= 0xff;
    expect(&check(&s.img.b), &[(Kind::LogHeader, None)], &[]);
}

#[test]
fn inode_checksum() {
    let mut s = standard();
    let p = s.img.ipos(s.fifo);
    s.img.b[p + 5] ^= 0x10;
    let r = check(&s.img.b);
    // The entry naming it is not counted against anything (the inode is unreadable).
    expect(&r, &[(Kind::InodeChecksum, Some(s.fifo))], &[]);
    assert_eq!(r.problems[0].path.as_deref(), Some("/fifo"));
    assert!(r.problems[0]
        .to_string()
        .starts_with(&format!("error: inode {} (/fifo): ", s.fifo)));
}

#[test]
fn inode_type() {
    let mut s = standard();
    s.img.edit(s.fifo, |i| i.mode = 0o170644);
    expect(&check(&s.img.b), &[(Kind::InodeType, Some(s.fifo))], &[]);
}

#[test]
fn inode_size_limits() {
    let mut s = standard();
    s.img.edit(s.f1, |i| i.size = MAX_FILE_SIZE + 1);
    let r = check(&s.img.b);
    // Its three blocks are then reached by nobody: leaked.
    expect(
        &r,
        &[(Kind::InodeSize, Some(s.f1))],
        &[(Kind::Leaked, None)],
    );
    let mut s = standard();
    s.img.edit(s.a, |i| i.size += 1);
    expect(&check(&s.img.b), &[(Kind::InodeSize, Some(s.a))], &[]);
}

#[test]
fn reserved_inode_zero() {
    let mut s = standard();
    let p = s.img.sb.itable_start as usize * BLOCK;
    s.img.b[p + 3] = 1;
    expect(&check(&s.img.b), &[], &[(Kind::ReservedInode, Some(0))]);
}

#[test]
fn pointers_into_metadata_or_past_the_end() {
    let mut s = standard();
    let old = s.img.get(s.f1).direct[1];
    let meta = s.img.sb.bitmap_start;
    s.img.edit(s.f1, |i| i.direct[1] = meta);
    let r = check(&s.img.b);
    expect(
        &r,
        &[(Kind::BadPointer, Some(s.f1))],
        &[(Kind::Leaked, None)],
    );
    assert_eq!(r.problems[0].block, Some(s.img.sb.bitmap_start));
    assert_eq!(r.of_kind(Kind::Leaked)[0].block, Some(old));
    // In an indirect block: past the end of the object.
    let mut s = standard();
    let ind = s.img.get(s.sparse).ind;
    let old = s.img.ptr(ind, 3);
    s.img.set_ptr(ind, 3, BLOCKS + 5);
    let r = check(&s.img.b);
    expect(
        &r,
        &[(Kind::BadPointer, Some(s.sparse))],
        &[(Kind::Leaked, None)],
    );
    assert!(r.problems[0]
        .message
        .contains(&format!("block {}", BLOCKS + 5)));
    assert_eq!(r.problems[0].path.as_deref(), Some("/sparse"));
    assert_eq!(r.problems[1].block, Some(old));
}

#[test]
fn a_block_reachable_twice() {
    let mut s = standard();
    let shared = s.img.get(s.f1).direct[0];
    let dind = s.img.get(s.sparse).dind;
    let mid = s.img.ptr(dind, 1);
    assert_ne!(mid, 0);
    let old = s.img.ptr(mid, 7);
    assert_ne!(old, 0);
    s.img.set_ptr(mid, 7, shared);
    let r = check(&s.img.b);
    expect(
        &r,
        &[(Kind::DoubleUse, Some(s.sparse))],
        &[(Kind::Leaked, None)],
    );
    assert_eq!(r.problems[0].block, Some(shared));
    assert!(r.problems[0].message.contains(&format!("inode {}", s.f1)));
    assert_eq!(r.problems[1].block, Some(old));
}

#[test]
fn block_count() {
    let mut s = standard();
    s.img.edit(s.sparse, |i| i.nblocks = 5);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::BlockCount, Some(s.sparse))], &[]);
    assert!(r.problems[0].message.contains("reaches 6 blocks"));
}

#[test]
fn blocks_past_the_end_of_a_file() {
    let mut s = standard();
    s.img.edit(s.f1, |i| i.size = 100);
    let r = check(&s.img.b);
    expect(
        &r,
        &[(Kind::PastEof, Some(s.f1)), (Kind::PastEof, Some(s.f1))],
        &[],
    );
    // An indirect block of a file that ends before the range it maps.
    let mut s = standard();
    s.img
        .edit(s.sparse, |i| i.size = (NDIRECT + 4) as u64 * BLOCK as u64);
    let r = check(&s.img.b);
    // The double indirect block, its middle block and the data block under them.
    expect(&r, &[(Kind::PastEof, Some(s.sparse)); 3], &[]);
}

#[test]
fn special_files_have_no_blocks() {
    let mut s = standard();
    let free = s.img.next_block;
    s.img.edit(s.fifo, |i| i.direct[0] = free);
    expect(
        &check(&s.img.b),
        &[(Kind::SpecialBlocks, Some(s.fifo))],
        &[],
    );
}

#[test]
fn symlinks() {
    let mut s = standard();
    s.img.edit(s.sym, |i| i.size = BLOCK as u64);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::Symlink, Some(s.sym))], &[]);
    assert_eq!(r.problems[0].path.as_deref(), Some("/sym"));
    let mut s = standard();
    let b = s.img.get(s.sym).direct[0];
    s.img.edit(s.sym, |i| {
        i.direct[0] = 0;
        i.nblocks = 0;
    });
    s.img.set_bit(b, false);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::Symlink, Some(s.sym))], &[]);
    assert!(r.problems[0].message.contains("without a data block"));
}

#[test]
fn directory_holes() {
    let mut s = standard();
    s.img.edit(s.a, |i| i.size += BLOCK as u64);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::DirHole, Some(s.a))], &[]);
    assert_eq!(r.problems[0].path.as_deref(), Some("/a"));
}

fn raw_entry(ino: u32, name: &[u8], dtype: u8) -> [u8; DIRENT_SIZE] {
    let mut raw = [0u8; DIRENT_SIZE];
    raw[..4].copy_from_slice(&ino.to_le_bytes());
    raw[4..6].copy_from_slice(&(name.len() as u16).to_le_bytes());
    raw[6] = dtype;
    raw[8..8 + name.len()].copy_from_slice(name);
    raw
}

#[test]
fn invalid_entries() {
    for name in [&b""[..], b"a/b", b".", b"..", b"x\0y"] {
        let mut s = standard();
        let slot = s.img.free_slot(s.a);
        s.img.write_entry(s.a, slot, &raw_entry(s.f1, name, 8));
        let r = check(&s.img.b);
        expect(&r, &[(Kind::BadEntry, Some(s.a))], &[]);
    }
    let mut s = standard();
    let slot = s.img.free_slot(s.a);
    let mut raw = raw_entry(s.f1, b"ok", 8);
    raw[4..6].copy_from_slice(&256u16.to_le_bytes());
    s.img.write_entry(s.a, slot, &raw);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::BadEntry, Some(s.a))], &[]);
    assert!(r.problems[0].message.contains("length 256"));
}

#[test]
fn duplicate_names() {
    let mut s = standard();
    // A second "e3" in /a/b naming /f1 (whose link count is raised to match).
    s.img.link(s.b, "e3", s.f1);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::DuplicateName, Some(s.b))], &[]);
    assert_eq!(r.problems[0].path.as_deref(), Some("/a/b"));
    assert!(r.problems[0].message.contains("\"e3\""));
}

#[test]
fn entries_naming_bad_or_free_inodes() {
    let mut s = standard();
    let n = s.img.sb.inodes;
    s.img.add_entry(s.a, "far", n + 3, 8);
    expect(&check(&s.img.b), &[(Kind::EntryBadIno, Some(s.a))], &[]);
    let mut s = standard();
    let free = s.img.next_ino + 1;
    s.img.add_entry(ROOT_INO, "ghost", free, 8);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::EntryFreeInode, Some(ROOT_INO))], &[]);
    assert!(
        r.problems[0].to_string().contains("(/): entry \"ghost\""),
        "{}",
        show(&r)
    );
}

#[test]
fn entry_type_mismatch() {
    let mut s = standard();
    let slot = s.img.find(ROOT_INO, "sym");
    let p = s.img.slot_pos(ROOT_INO, slot);
    s.img.b[p + 6] = dtype_of(S_IFREG);
    expect(&check(&s.img.b), &[(Kind::EntryType, Some(ROOT_INO))], &[]);
}

#[test]
fn a_hard_linked_directory() {
    let mut s = standard();
    // /bb names /a/b as well; / gains a subdirectory entry, so its count matches.
    s.img.add_entry(ROOT_INO, "bb", s.b, dtype_of(S_IFDIR));
    s.img.edit(ROOT_INO, |r| r.nlink += 1);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::DirLinkedTwice, Some(s.b))], &[]);
}

#[test]
fn a_directory_cycle() {
    let mut s = standard();
    // /a/b/up names /a: a cycle.
    s.img.add_entry(s.b, "up", s.a, dtype_of(S_IFDIR));
    s.img.edit(s.b, |d| d.nlink += 1);
    expect(&check(&s.img.b), &[(Kind::DirLinkedTwice, Some(s.a))], &[]);
    // An entry naming the root.
    let mut s = standard();
    s.img.add_entry(s.a, "root", ROOT_INO, dtype_of(S_IFDIR));
    s.img.edit(s.a, |d| d.nlink += 1);
    expect(
        &check(&s.img.b),
        &[(Kind::DirLinkedTwice, Some(ROOT_INO))],
        &[],
    );
}

#[test]
fn a_detached_cycle_is_unreachable() {
    let mut s = standard();
    // Two directories naming each other, named by nobody else.
    let x = s.img.new_ino();
    let y = s.img.new_ino();
    for d in [x, y] {
        s.img.put(
            d,
            &Inode {
                mode: S_IFDIR | 0o700,
                nlink: 3,
                ..Inode::default()
            },
        );
    }
    s.img.add_entry(x, "y", y, dtype_of(S_IFDIR));
    s.img.add_entry(y, "x", x, dtype_of(S_IFDIR));
    expect(
        &check(&s.img.b),
        &[(Kind::Unreachable, Some(x)), (Kind::Unreachable, Some(y))],
        &[],
    );
}

#[test]
fn link_counts() {
    let mut s = standard();
    s.img.edit(s.f1, |i| i.nlink = 1);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::LinkCount, Some(s.f1))], &[]);
    assert!(r.problems[0]
        .message
        .contains("link count is 1 but 2 entries"));
    let mut s = standard();
    s.img.edit(s.a, |i| i.nlink = 2);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::LinkCount, Some(s.a))], &[]);
    assert!(r.problems[0].message.contains("expected 3"));
    // nlink 0 but still named: not an orphan (the mount would free a named file).
    let mut s = standard();
    s.img.edit(s.fifo, |i| i.nlink = 0);
    expect(&check(&s.img.b), &[(Kind::LinkCount, Some(s.fifo))], &[]);
}

/// The standard image plus an orphan: a 2-block file, unlinked while open.
fn with_orphan() -> (Std, u32) {
    let mut s = standard();
    let o = s.img.file(ROOT_INO, "doomed", 5000, &[0, 1]);
    let slot = s.img.find(ROOT_INO, "doomed");
    let p = s.img.slot_pos(ROOT_INO, slot);
    s.img.b[p..p + 4].fill(0);
    s.img.edit(o, |i| i.nlink = 0);
    (s, o)
}

#[test]
fn orphans_are_warnings() {
    let (s, o) = with_orphan();
    let r = check(&s.img.b);
    expect(&r, &[], &[(Kind::Orphan, Some(o))]);
    assert!(r.problems[0].message.contains("will be freed at mount"));
}

#[test]
fn an_orphan_directory_with_entries() {
    let mut s = standard();
    let d = s.img.new_ino();
    s.img.put(
        d,
        &Inode {
            mode: S_IFDIR | 0o700,
            nlink: 0,
            ..Inode::default()
        },
    );
    let f = s.img.file(d, "inside", 0, &[]);
    let r = check(&s.img.b);
    expect(
        &r,
        &[
            (Kind::OrphanDirNotEmpty, Some(d)),
            (Kind::Unreachable, Some(f)),
        ],
        &[(Kind::Orphan, Some(d))],
    );
}

#[test]
fn unreachable_live_inodes() {
    let mut s = standard();
    let ino = s.img.new_ino();
    s.img.put(
        ino,
        &Inode {
            mode: S_IFREG | 0o600,
            nlink: 1,
            ..Inode::default()
        },
    );
    let r = check(&s.img.b);
    expect(
        &r,
        &[(Kind::LinkCount, Some(ino)), (Kind::Unreachable, Some(ino))],
        &[],
    );
}

#[test]
fn the_root_must_be_a_directory() {
    let mut s = standard();
    s.img.edit(ROOT_INO, |r| r.mode = S_IFREG | 0o644);
    let r = check(&s.img.b);
    assert_eq!(r.of_kind(Kind::Root).len(), 1, "{}", show(&r));
    let mut s = standard();
    let p = s.img.ipos(ROOT_INO);
    s.img.b[p..p + INODE_SIZE].fill(0);
    let r = check(&s.img.b);
    assert!(
        r.of_kind(Kind::Root)[0].message.contains("free"),
        "{}",
        show(&r)
    );
}

#[test]
fn used_blocks_marked_free() {
    let mut s = standard();
    let b = s.img.get(s.f1).direct[2];
    s.img.set_bit(b, false);
    let r = check(&s.img.b);
    expect(&r, &[(Kind::BitmapFree, Some(s.f1))], &[]);
    assert_eq!(r.problems[0].block, Some(b));
    assert_eq!(r.problems[0].path.as_deref(), Some("/f1"));
}

#[test]
fn metadata_bits_must_be_set() {
    let mut s = standard();
    s.img.set_bit(3, false);
    s.img.set_bit(4, false);
    s.img.set_bit(BLOCKS + 10, false);
    let r = check(&s.img.b);
    expect(
        &r,
        &[(Kind::BitmapMeta, None), (Kind::BitmapMeta, None)],
        &[],
    );
    assert!(
        r.problems[0].message.contains("blocks 3..=4"),
        "{}",
        show(&r)
    );
    assert!(
        r.problems[1].message.contains("past the end"),
        "{}",
        show(&r)
    );
}

#[test]
fn leaked_blocks_are_warnings_in_runs() {
    let mut s = standard();
    let n = s.img.next_block;
    for b in [n, n + 1, n + 2, n + 5] {
        s.img.set_bit(b, true);
    }
    let r = check(&s.img.b);
    expect(&r, &[], &[(Kind::Leaked, None), (Kind::Leaked, None)]);
    assert!(r.problems[0]
        .message
        .contains(&format!("blocks {n}..={} (3 blocks)", n + 2)));
    assert_eq!(r.problems[1].block, Some(n + 5));
    assert_eq!(r.summary(), "0 errors, 2 warnings");
}

#[test]
fn repair_does_what_the_mount_would() {
    // An operation in flight, an orphan, a leaked block and a used block marked free.
    let (mut s, o) = with_orphan();
    let orphan_blocks = [s.img.get(o).direct[0], s.img.get(o).direct[1]];
    let spare = s.img.sb.blocks - 1;
    s.img.set_bit(spare, true);
    let b = s.img.get(s.f1).direct[0];
    s.img.set_bit(b, false);
    let mut with_log = s.img.b.clone();
    {
        // The in-flight transaction of `in_flight`, on this image.
        let mut t = Img {
            b: std::mem::take(&mut with_log),
            sb: s.img.sb,
            next_block: s.img.next_block,
            next_ino: s.img.next_ino,
        };
        let rpos = t.ipos(ROOT_INO);
        log_range(&mut t, rpos, INODE_SIZE);
        t.edit(ROOT_INO, |r| r.nlink = 9);
        with_log = t.b;
    }
    let r = check(&with_log);
    expect(
        &r,
        &[(Kind::BitmapFree, Some(s.f1))],
        &[
            (Kind::InFlight, None),
            (Kind::Orphan, Some(o)),
            (Kind::Leaked, None),
        ],
    );
    let done = repair(&mut with_log).expect("repairable");
    assert_eq!(
        done,
        Repaired {
            undone: 1,
            orphans: 1,
            bits: 4
        }
    );
    let r = check(&with_log);
    expect(&r, &[], &[]);
    // The orphan is free (its generation kept), its blocks too, the root as before.
    let img = Img {
        b: with_log,
        ..s.img
    };
    let p = img.ipos(o);
    let freed = Inode::decode(&img.b[p..p + INODE_SIZE]).expect("valid");
    assert!(freed.is_free());
    assert_eq!(freed.generation, 3);
    assert_eq!(img.get(ROOT_INO).nlink, 3);
    let fs = Fs {
        img: &img.b,
        sb: img.sb,
    };
    for ob in orphan_blocks {
        assert!(!fs.bit(u64::from(ob)));
    }
    assert!(!fs.bit(u64::from(spare)));
    assert!(fs.bit(u64::from(b)));
    // Repairing a clean image changes nothing.
    let mut again = img.b.clone();
    assert_eq!(repair(&mut again), Ok(Repaired::default()));
    assert!(again == img.b, "a clean image is left alone");
}

#[test]
fn repair_refuses_what_it_does_not_fix() {
    let mut s = standard();
    s.img.edit(s.f1, |i| i.nlink = 7);
    let before = s.img.b.clone();
    assert_eq!(repair(&mut s.img.b), Err(RepairError::Unrepairable(1)));
    assert!(s.img.b == before, "nothing changed");
    let (mut s, _) = in_flight();
    let lp = s.img.sb.log_pos() as usize;
    s.img.b[lp + 9] ^= 0xff; // the log magic
    let before = s.img.b.clone();
    assert!(repair(&mut s.img.b).is_err());
    assert!(s.img.b == before, "nothing changed");
    let mut blank = vec![0u8; BLOCKS as usize * BLOCK];
    assert_eq!(repair(&mut blank), Err(RepairError::NotRiofs));
}

#[test]
fn every_single_byte_flip_in_the_metadata_is_handled() {
    // Robustness: no flip of any metadata byte panics, and every flip of an inode record
    // in use is reported as an error.
    let s = standard();
    let sb = s.img.sb;
    let end = sb.data_start as usize * BLOCK;
    let mut img = s.img.b.clone();
    for at in (0..end).step_by(13) {
        img[at] ^= 0x41;
        let r = check(&img);
        let itable = sb.itable_start as usize * BLOCK..sb.bitmap_start as usize * BLOCK;
        if itable.contains(&at) {
            let ino = ((at - itable.start) / INODE_SIZE) as u32;
            if ino != 0 && ino < s.img.next_ino {
                assert!(r.errors() > 0, "flip at {at} (inode {ino}) went unnoticed");
            }
        }
        img[at] ^= 0x41;
    }
}
