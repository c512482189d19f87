//! The crash workload: a deterministic sequence of small transactions over a Vista segment
//! in a Rio object, whose state after transaction `n` is a pure function of `(seed, n)`.
//!
//! The segment holds a [`Header`] (root `"crash"`: magic, seed, the number `txno` of the
//! last committed transaction, and pointers to the next two), an array of [`NCELLS`] `u64`
//! cells and a table of [`NSLOTS`] slots, each empty or pointing to a heap block of 1 to
//! [`MAX_BLOCK`] bytes. Transaction `n` ([`plan`]) overwrites 1 to 6 random runs of cells
//! with random values, then may free a slot's block, allocate a new one, or both, and
//! stores `txno = n`. Its choices depend only on the seed, `n` and the state after `n - 1`,
//! so a [`Model`] in ordinary memory replayed from 0 gives the exact expected state for
//! any `n`. Some transactions are preceded by an attempt that makes other random changes
//! and aborts: it must leave no trace.
//!
//! [`state_checksum`] covers `txno`, the cells and every slot's contents (not addresses),
//! so the segment and the model can be compared.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytemuck::{Pod, Zeroable};
use rio_client::{OpenMode, Rio};
use vista::{PPtr, PSlice, Segment, SegmentConfig};
use vista_compare::Rng;

/// Where the crash segment's data is mapped.
pub const ADDR: usize = 0x5a00_0000_0000;
/// Cells in the array.
pub const NCELLS: usize = 2048;
/// Slots in the block table.
pub const NSLOTS: usize = 32;
/// Largest heap block.
pub const MAX_BLOCK: usize = 2048;
/// The root naming the header.
pub const ROOT: &str = "crash";
const HDR_MAGIC: u64 = u64::from_le_bytes(*b"VRCRASH1");

const SALT_COMMIT: u64 = 0x436f_6d6d_6974;
const SALT_ABORT: u64 = 0x0041_626f_7274;
const SALT_DECIDE: u64 = 0x4465_6369_6465;

/// The crash segment's layout: 256 KiB of heap, 64 KiB of log.
pub fn config() -> SegmentConfig {
    SegmentConfig::new(256 << 10).log_capacity(64 << 10)
}

/// The persistent header.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
pub struct Header {
    magic: u64,
    seed: u64,
    /// The last committed transaction.
    pub txno: u64,
    cells: PSlice<u64>,
    slots: PSlice<Slot>,
}

/// One slot: a heap block, or `addr == 0`.
#[derive(Clone, Copy, Pod, Zeroable, Default)]
#[repr(C)]
pub struct Slot {
    addr: u64,
    len: u64,
}

/// One change inside a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    /// Overwrite cells `start..start + values.len()`.
    Cells {
        /// First cell.
        start: usize,
        /// New values.
        values: Vec<u64>,
    },
    /// Free the block in a slot (which is occupied).
    Free {
        /// The slot.
        slot: usize,
    },
    /// Allocate a block holding `bytes` into a slot (which is empty).
    Alloc {
        /// The slot.
        slot: usize,
        /// The block's contents.
        bytes: Vec<u8>,
    },
}

/// splitmix64 finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rng_for(seed: u64, n: u64, salt: u64) -> Rng {
    Rng::new(mix(seed ^ mix(n ^ mix(salt))))
}

fn block(r: &mut Rng) -> Vec<u8> {
    let len = 1 + r.below(MAX_BLOCK as u64) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The changes of transaction `n` (or of the aborted attempt before it, `abort`), given
/// the state after `n - 1`.
pub fn plan(seed: u64, n: u64, before: &Model, abort: bool) -> Vec<Op> {
    let mut r = rng_for(seed, n, if abort { SALT_ABORT } else { SALT_COMMIT });
    let mut ops = Vec::new();
    for _ in 0..1 + r.below(6) {
        let start = r.below((NCELLS - 8) as u64) as usize;
        let len = 1 + r.below(8) as usize;
        let values = (0..len).map(|_| r.next_u64()).collect();
        ops.push(Op::Cells { start, values });
    }
    let slot = r.below(NSLOTS as u64) as usize;
    let occupied = before.slots[slot].is_some();
    match (occupied, r.below(4)) {
        (true, 0 | 1) => ops.push(Op::Free { slot }),
        (true, 2) => {
            ops.push(Op::Free { slot });
            ops.push(Op::Alloc {
                slot,
                bytes: block(&mut r),
            });
        }
        (false, 0..=2) => ops.push(Op::Alloc {
            slot,
            bytes: block(&mut r),
        }),
        _ => {}
    }
    ops
}

/// Whether transaction `n` is preceded by an aborted attempt (one in eight).
pub fn has_aborted_attempt(seed: u64, n: u64) -> bool {
    rng_for(seed, n, SALT_DECIDE).below(8) == 0
}

/// Where transaction `n` pauses (inside the transaction, before op `at`), if `pause` is
/// on: half of the transactions, at a varying op.
pub fn pause_point(seed: u64, n: u64, ops: usize) -> Option<usize> {
    let mut r = rng_for(seed, n, SALT_DECIDE ^ 1);
    (r.below(2) == 0).then(|| r.below(ops as u64 + 1) as usize)
}

/// A 64-bit hash over words (not cryptographic).
struct Hasher(u64);

impl Hasher {
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }

    fn bytes(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let mut w = [0u8; 8];
        w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(w));
    }

    fn finish(self) -> u64 {
        mix(self.0)
    }
}

/// The logical checksum of a state: `txno`, cells, and each slot's contents.
pub fn state_checksum<'a>(
    txno: u64,
    cells: &[u64],
    slots: impl Iterator<Item = Option<&'a [u8]>>,
) -> u64 {
    let mut h = Hasher(0x5649_5354_4152_494f);
    h.word(txno);
    for &c in cells {
        h.word(c);
    }
    for (i, s) in slots.enumerate() {
        match s {
            None => h.word(!(i as u64)),
            Some(b) => {
                h.word(i as u64);
                h.word(b.len() as u64);
                h.bytes(b);
            }
        }
    }
    h.finish()
}

/// The expected state, in ordinary memory.
#[derive(Debug, Clone)]
pub struct Model {
    /// Last committed transaction.
    pub txno: u64,
    cells: Vec<u64>,
    slots: Vec<Option<Vec<u8>>>,
}

impl Model {
    /// The state right after initialization (transaction 0).
    pub fn new() -> Model {
        Model {
            txno: 0,
            cells: vec![0; NCELLS],
            slots: vec![None; NSLOTS],
        }
    }

    /// Applies committed transaction `n`.
    pub fn apply(&mut self, n: u64, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Cells { start, values } => {
                    self.cells[*start..*start + values.len()].copy_from_slice(values)
                }
                Op::Free { slot } => self.slots[*slot] = None,
                Op::Alloc { slot, bytes } => self.slots[*slot] = Some(bytes.clone()),
            }
        }
        self.txno = n;
    }

    /// The state after transaction `n`.
    pub fn replay(seed: u64, n: u64) -> Model {
        let mut m = Model::new();
        for i in 1..=n {
            let ops = plan(seed, i, &m, false);
            m.apply(i, &ops);
        }
        m
    }

    /// Its checksum.
    pub fn checksum(&self) -> u64 {
        state_checksum(
            self.txno,
            &self.cells,
            self.slots.iter().map(|s| s.as_deref()),
        )
    }
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Commit.
    Commit,
    /// Abort.
    Abort,
    /// Print `HOLDING n` and sleep forever inside the transaction, all changes made (for a
    /// crash or a kill at a known point).
    Hold,
}

/// The crash segment, open.
pub struct Store {
    seg: Segment,
    hdr: PPtr<Header>,
}

impl Store {
    /// Opens the segment in Rio object `name` and runs recovery. With `create`, a missing
    /// object is created and an empty segment initialized as transaction 0 for `seed`;
    /// without, both are errors.
    pub fn open(
        rio: &Rio,
        name: &str,
        seed: u64,
        create: bool,
    ) -> Result<(Store, vista::Recovery)> {
        if !create && !rio.list()?.iter().any(|o| o.name == name) {
            bail!("there is no Rio object {name:?}");
        }
        let seg = Segment::open_rio(rio, name, ADDR, &config())
            .with_context(|| format!("opening the Vista segment in Rio object {name:?}"))?;
        let rec = seg.recovery();
        Ok((Store::new(seg, seed, create)?, rec))
    }

    /// Opens the segment in the file at `path` (for example on riofs, where every store
    /// through the mapping is durable as it executes, so Vista needs no `msync`) and runs
    /// recovery; with `create`, a missing file is created and initialized as for
    /// [`Store::open`].
    pub fn open_file(
        path: &std::path::Path,
        seed: u64,
        create: bool,
    ) -> Result<(Store, vista::Recovery)> {
        let exists = path.exists();
        if !create && !exists {
            bail!("there is no segment file {}", path.display());
        }
        let seg = if exists {
            Segment::open_file(path, ADDR, vista::Durability::Memory)
        } else {
            Segment::create_file(path, ADDR, &config(), vista::Durability::Memory)
        }
        .with_context(|| format!("opening the Vista segment in {}", path.display()))?;
        let rec = seg.recovery();
        Ok((Store::new(seg, seed, !exists)?, rec))
    }

    /// Wraps an open segment (any backing); with `init`, an empty one is initialized.
    pub fn new(mut seg: Segment, seed: u64, init: bool) -> Result<Store> {
        let hdr = match seg.root::<Header>(ROOT)? {
            Some(h) => h,
            None if !init => bail!("the segment holds no crash-workload state (root {ROOT:?})"),
            None => {
                let mut tx = seg.begin()?;
                let cells = tx.alloc_slice::<u64>(NCELLS, 0)?;
                let slots = tx.alloc_slice::<Slot>(NSLOTS, Slot::default())?;
                let h = tx.alloc(Header {
                    magic: HDR_MAGIC,
                    seed,
                    txno: 0,
                    cells,
                    slots,
                })?;
                tx.set_root(ROOT, h)?;
                tx.commit()?;
                h
            }
        };
        let s = Store { seg, hdr };
        let h = s.header()?;
        if h.magic != HDR_MAGIC {
            bail!("root {ROOT:?} does not hold a crash-workload header");
        }
        if h.seed != seed {
            bail!(
                "the segment was made with seed {}, not {seed}: use the same seed",
                h.seed
            );
        }
        Ok(s)
    }

    /// The header.
    pub fn header(&self) -> Result<Header> {
        Ok(*self.seg.get(self.hdr)?)
    }

    fn slot_bytes(&self, s: Slot) -> Result<Option<&[u8]>> {
        if s.addr == 0 {
            return Ok(None);
        }
        Ok(Some(self.seg.get_slice(PSlice::<u8>::from_raw(
            s.addr as usize,
            s.len as usize,
        ))?))
    }

    /// The logical checksum of the committed state.
    pub fn checksum(&self) -> Result<u64> {
        let h = self.header()?;
        let cells = self.seg.get_slice(h.cells)?;
        let mut blocks = Vec::with_capacity(NSLOTS);
        for &s in self.seg.get_slice(h.slots)? {
            blocks.push(self.slot_bytes(s)?);
        }
        Ok(state_checksum(h.txno, cells, blocks.into_iter()))
    }

    /// Vista's own digest (roots, allocated blocks and their placement and contents).
    pub fn digest(&self) -> u64 {
        self.seg.digest()
    }

    /// Heap accounting: (bytes the heap counts as used, bytes of the blocks the state
    /// references). Equal unless an allocation or free leaked across a crash or abort.
    pub fn heap_usage(&mut self) -> Result<(usize, usize)> {
        let h = self.header()?;
        let slots: Vec<Slot> = self.seg.get_slice(h.slots)?.to_vec();
        let used = self
            .seg
            .info()
            .heap
            .map(|s| s.used)
            .context("the crash segment has no heap")?;
        let hdr = self.hdr;
        let tx = self.seg.begin()?;
        let mut referenced = 0usize;
        let mut ptrs = vec![hdr.addr(), h.cells.addr(), h.slots.addr()];
        ptrs.extend(
            slots
                .iter()
                .filter(|s| s.addr != 0)
                .map(|s| s.addr as usize),
        );
        for p in ptrs {
            referenced += tx
                .block_size(p as *const u8)
                .with_context(|| format!("{p:#x} is referenced but is not an allocated block"))?;
        }
        tx.abort()?;
        Ok((used, referenced))
    }

    /// Runs transaction `n` with `ops`, pausing for `pause` before op `pause_at`, and ends
    /// it as `finish` says.
    pub fn run(
        &mut self,
        n: u64,
        ops: &[Op],
        pause: Option<(usize, Duration)>,
        finish: Finish,
    ) -> Result<()> {
        let h = self.header()?;
        let hdr = self.hdr;
        let mut tx = self.seg.begin()?;
        for (i, op) in ops.iter().enumerate() {
            if let Some((at, d)) = pause {
                if at == i {
                    std::thread::sleep(d);
                }
            }
            match op {
                Op::Cells { start, values } => {
                    tx.update_slice(h.cells, *start..*start + values.len(), |x| {
                        x.copy_from_slice(values)
                    })?;
                }
                Op::Free { slot } => {
                    let sp = h.slots.at(*slot).context("slot index")?;
                    let s = tx.read(sp)?;
                    if s.addr == 0 {
                        bail!("transaction {n}: slot {slot} should hold a block but is empty");
                    }
                    tx.free_slice(PSlice::<u8>::from_raw(s.addr as usize, s.len as usize))?;
                    tx.write(sp, Slot::default())?;
                }
                Op::Alloc { slot, bytes } => {
                    let sp = h.slots.at(*slot).context("slot index")?;
                    if tx.read(sp)?.addr != 0 {
                        bail!("transaction {n}: slot {slot} should be empty but holds a block");
                    }
                    let b = tx.alloc_slice::<u8>(bytes.len(), 0)?;
                    tx.update_slice(b, 0..bytes.len(), |x| x.copy_from_slice(bytes))?;
                    tx.write(
                        sp,
                        Slot {
                            addr: b.addr() as u64,
                            len: bytes.len() as u64,
                        },
                    )?;
                }
            }
        }
        if let Some((at, d)) = pause {
            if at == ops.len() {
                std::thread::sleep(d);
            }
        }
        tx.update(hdr, |h| h.txno = n)?;
        match finish {
            Finish::Commit => tx.commit()?,
            Finish::Abort => tx.abort()?,
            Finish::Hold => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "HOLDING {n}")?;
                out.flush()?;
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
        Ok(())
    }
}

/// A durable record of the COMMITTED lines (Rio object `NAME.journal`), so that a check
/// after a crash knows the last commit the program reported even if its output was lost.
/// A ring of 32-byte records `(n, checksum, digest, tag)`, record `n` at slot `n % 2048`;
/// `tag` binds the other fields and the seed, so torn or stale-seed records are ignored.
pub struct Journal {
    obj: rio_client::Object,
    seed: u64,
}

const JOURNAL_RECORDS: u64 = 2048;
const JOURNAL_RECORD: u64 = 32;

fn journal_tag(seed: u64, n: u64, sum: u64, digest: u64) -> u64 {
    mix(seed ^ mix(n ^ mix(sum ^ mix(digest ^ 0x004a_6f75_726e_616c))))
}

impl Journal {
    /// The journal object's name for segment `name`.
    pub fn object_name(name: &str) -> String {
        format!("{name}.journal")
    }

    /// Opens (creating if needed) the journal of segment `name`.
    pub fn open(rio: &Rio, name: &str, seed: u64) -> Result<Journal> {
        let jname = Journal::object_name(name);
        match rio.create(&jname, JOURNAL_RECORDS * JOURNAL_RECORD, 0o600) {
            Ok(()) | Err(rio_client::Error::Exists(_)) => {}
            Err(e) => return Err(e).context("creating the journal object"),
        }
        let obj = rio
            .open_object(&jname, OpenMode::ReadWrite)
            .context("opening the journal object")?;
        Ok(Journal { obj, seed })
    }

    /// Opens the journal of segment `name` if it exists.
    pub fn open_existing(rio: &Rio, name: &str, seed: u64) -> Result<Option<Journal>> {
        match rio.open_object(&Journal::object_name(name), OpenMode::ReadOnly) {
            Ok(obj) => Ok(Some(Journal { obj, seed })),
            Err(rio_client::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e).context("opening the journal object"),
        }
    }

    /// Records that transaction `n` committed with these sums (durable on return).
    pub fn record(&self, n: u64, sum: u64, digest: u64) -> Result<()> {
        let mut rec = [0u8; JOURNAL_RECORD as usize];
        for (i, w) in [n, sum, digest, journal_tag(self.seed, n, sum, digest)]
            .into_iter()
            .enumerate()
        {
            rec[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        self.obj
            .write_all_at(&rec, (n % JOURNAL_RECORDS) * JOURNAL_RECORD)
            .context("writing the journal")
    }

    /// The newest valid record: `(n, checksum, digest)`.
    pub fn last(&self) -> Result<Option<(u64, u64, u64)>> {
        let mut buf = vec![0u8; (JOURNAL_RECORDS * JOURNAL_RECORD) as usize];
        self.obj
            .read_exact_at(&mut buf, 0)
            .context("reading the journal")?;
        let mut best: Option<(u64, u64, u64)> = None;
        for rec in buf.chunks_exact(JOURNAL_RECORD as usize) {
            let w = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rec[i * 8..i * 8 + 8]);
                u64::from_le_bytes(b)
            };
            let (n, sum, digest, tag) = (w(0), w(1), w(2), w(3));
            if tag == journal_tag(self.seed, n, sum, digest) && best.is_none_or(|b| n > b.0) {
                best = Some((n, sum, digest));
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_a_function_of_seed_and_n() {
        let a = Model::replay(7, 300);
        let b = Model::replay(7, 300);
        assert_eq!(a.checksum(), b.checksum());
        assert_ne!(a.checksum(), Model::replay(7, 299).checksum());
        assert_ne!(a.checksum(), Model::replay(8, 300).checksum());
        // The workload exercises every kind of change.
        let mut m = Model::new();
        let (mut frees, mut allocs, mut aborts) = (0, 0, 0);
        for n in 1..=300 {
            let ops = plan(7, n, &m, false);
            frees += ops.iter().filter(|o| matches!(o, Op::Free { .. })).count();
            allocs += ops.iter().filter(|o| matches!(o, Op::Alloc { .. })).count();
            aborts += usize::from(has_aborted_attempt(7, n));
            m.apply(n, &ops);
        }
        assert!(
            frees > 20 && allocs > 40 && aborts > 10,
            "{frees} {allocs} {aborts}"
        );
        assert_eq!(m.checksum(), a.checksum());
    }

    /// The workload on a file-backed segment: commits match the model, aborted attempts
    /// leave no trace, the heap accounting balances, and a reopened segment continues.
    #[test]
    fn the_segment_follows_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let seed = 11;
        let seg = Segment::create_file(&path, ADDR, &config(), vista::Durability::Memory).unwrap();
        let mut store = Store::new(seg, seed, true).unwrap();
        let mut model = Model::new();
        assert_eq!(store.checksum().unwrap(), model.checksum());
        for n in 1..=400 {
            if has_aborted_attempt(seed, n) {
                let ops = plan(seed, n, &model, true);
                store.run(n, &ops, None, Finish::Abort).unwrap();
                assert_eq!(store.checksum().unwrap(), model.checksum(), "abort {n}");
            }
            let ops = plan(seed, n, &model, false);
            store
                .run(n, &ops, Some((1, Duration::ZERO)), Finish::Commit)
                .unwrap();
            model.apply(n, &ops);
            assert_eq!(store.checksum().unwrap(), model.checksum(), "commit {n}");
        }
        let (used, referenced) = store.heap_usage().unwrap();
        assert_eq!(used, referenced);
        let digest = store.digest();
        drop(store);
        let seg = Segment::open_file(&path, ADDR, vista::Durability::Memory).unwrap();
        let store = Store::new(seg, seed, false).unwrap();
        assert_eq!(store.header().unwrap().txno, 400);
        assert_eq!(
            store.checksum().unwrap(),
            Model::replay(seed, 400).checksum()
        );
        assert_eq!(store.digest(), digest);
        drop(store);
        let seg = Segment::open_file(&path, ADDR, vista::Durability::Memory).unwrap();
        assert!(
            Store::new(seg, seed + 1, false).is_err(),
            "another seed is refused"
        );
    }

    #[test]
    fn the_checksum_sees_every_part_of_the_state() {
        let m = Model::replay(3, 50);
        let base = m.checksum();
        let mut c = m.clone();
        c.cells[5] ^= 1;
        assert_ne!(c.checksum(), base);
        let mut t = m.clone();
        t.txno += 1;
        assert_ne!(t.checksum(), base);
        let mut s = m.clone();
        let i = s.slots.iter().position(|x| x.is_some()).unwrap();
        s.slots[i].as_mut().unwrap()[0] ^= 1;
        assert_ne!(s.checksum(), base);
        let mut e = m.clone();
        e.slots[i] = None;
        assert_ne!(e.checksum(), base);
    }
}
