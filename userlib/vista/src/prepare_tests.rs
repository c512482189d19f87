//! Unit tests of prepared transactions (two-phase commit): `Tx::prepare`, the prepared
//! word's life cycle, and the opening variants with a resolver.
//!
//! A "crash" after `prepare` needs no hook: dropping a prepared transaction's handle and
//! then its segment or group leaves the log exactly as a process death would (neither
//! aborts a prepared transaction); the page cache keeps every store made so far.

use std::path::{Path, PathBuf};

use crate::*;

/// A distinct fixed address per test (apart from `tests.rs` and `model_tests.rs`).
fn addr(n: usize) -> usize {
    0x3b00_0000_0000 + (n << 32)
}

fn cfg() -> SegmentConfig {
    SegmentConfig::new(1 << 20).log_capacity(256 << 10)
}

fn store(base: *mut u8, off: usize, data: &[u8]) {
    // SAFETY: tests only store inside mapped segments, after set_range.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(off), data.len()) };
}

fn bytes(base: *const u8, off: usize, len: usize) -> Vec<u8> {
    // SAFETY: test reads inside a mapped data area.
    unsafe { std::slice::from_raw_parts(base.add(off), len).to_vec() }
}

/// A group of a heap segment and a raw one; paths (a, b, log).
struct Files {
    a: PathBuf,
    b: PathBuf,
    log: PathBuf,
    n: usize,
}

impl Files {
    fn create(dir: &Path, n: usize, dur: Durability) -> (Files, Group) {
        let f = Files {
            a: dir.join("a"),
            b: dir.join("b"),
            log: dir.join("log"),
            n,
        };
        let sa = Segment::create_file(&f.a, addr(n), &cfg(), dur).unwrap();
        let sb = Segment::create_file(&f.b, addr(n + 1), &cfg().heap(false), dur).unwrap();
        let lb = Backing::create_file(&f.log, Group::log_backing_len(1 << 20), dur).unwrap();
        let g = Group::create(lb, vec![sa, sb]).unwrap();
        (f, g)
    }

    fn backings(&self) -> (Backing, Vec<(Backing, usize)>) {
        let o = |p: &Path| Backing::open_file(p, Durability::Memory).unwrap();
        (
            o(&self.log),
            vec![(o(&self.a), addr(self.n)), (o(&self.b), addr(self.n + 1))],
        )
    }

    fn open(&self) -> Result<Group> {
        let (l, m) = self.backings();
        Group::open(l, m)
    }

    fn open_resolving(&self, r: &mut dyn FnMut(u64) -> Result<Resolution>) -> Result<Group> {
        let (l, m) = self.backings();
        Group::open_resolving(l, m, r)
    }

    fn prepared_tag(&self) -> Option<u64> {
        let l = Backing::open_file(&self.log, Durability::Memory).unwrap();
        Group::prepared_tag(&l).unwrap()
    }

    /// Every byte of the three files.
    fn snapshot(&self) -> Vec<Vec<u8>> {
        [&self.a, &self.b, &self.log]
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }
}

/// Commits a first state: "old!" at the start of both members and a root "x" = 5 in a
/// heap block of member 0. Returns the block.
fn first_state(g: &mut Group) -> PPtr<u64> {
    let (ba, bb) = (g.base(0).unwrap(), g.base(1).unwrap());
    let mut tx = g.begin().unwrap();
    let x = tx.alloc_in(0, 5u64).unwrap();
    tx.set_root("x", x).unwrap();
    tx.set_range(bb, 4).unwrap();
    store(bb, 0, b"old!");
    tx.commit().unwrap();
    // Member 0's data begins with the heap block; use a later offset for raw bytes.
    let mut tx = g.begin().unwrap();
    // SAFETY: inside member 0 (1 MiB).
    let p = unsafe { ba.add(512 << 10) };
    tx.set_range(p, 4).unwrap();
    store(p, 0, b"old!");
    tx.commit().unwrap();
    x
}

/// The second state, left prepared under `tag`: "new!" in both members, x = 6, a second
/// block allocated and rooted as "y", and x's old root entry replaced.
fn prepare_second(g: &mut Group, tag: u64) {
    let (ba, bb) = (g.base(0).unwrap(), g.base(1).unwrap());
    let x: PPtr<u64> = g.root(0, "x").unwrap().unwrap();
    let mut tx = g.begin().unwrap();
    // SAFETY: inside member 0.
    let p = unsafe { ba.add(512 << 10) };
    tx.set_range(p, 4).unwrap();
    store(p, 0, b"new!");
    tx.set_range(bb, 4).unwrap();
    store(bb, 0, b"new!");
    tx.update(x, |v| *v = 6).unwrap();
    let y = tx.alloc_in(0, 77u64).unwrap();
    tx.set_root("y", y).unwrap();
    tx.prepare(tag).unwrap();
    assert_eq!(tx.prepared_tag(), Some(tag));
    // Simulated crash: the handle is dropped undecided, then the group.
}

fn is_old(g: &Group) -> bool {
    let (ba, bb) = (g.base(0).unwrap(), g.base(1).unwrap());
    let x: PPtr<u64> = g.root(0, "x").unwrap().unwrap();
    bytes(ba, 512 << 10, 4) == b"old!"
        && bytes(bb, 0, 4) == b"old!"
        && *g.get(x).unwrap() == 5
        && g.root::<u64>(0, "y").unwrap().is_none()
}

fn is_new(g: &Group) -> bool {
    let (ba, bb) = (g.base(0).unwrap(), g.base(1).unwrap());
    let x: PPtr<u64> = g.root(0, "x").unwrap().unwrap();
    let y = g.root::<u64>(0, "y").unwrap();
    bytes(ba, 512 << 10, 4) == b"new!"
        && bytes(bb, 0, 4) == b"new!"
        && *g.get(x).unwrap() == 6
        && y.is_some_and(|y| *g.get(y).unwrap() == 77)
}

#[test]
fn prepare_then_commit() {
    let d = tempfile::tempdir().unwrap();
    let (f, mut g) = Files::create(d.path(), 0, Durability::Memory);
    let x = first_state(&mut g);
    let bb = g.base(1).unwrap();
    let mut tx = g.begin().unwrap();
    tx.set_range(bb, 4).unwrap();
    store(bb, 0, b"new!");
    tx.update(x, |v| *v = 6).unwrap();
    tx.prepare(0x2bc).unwrap();
    assert_eq!(tx.prepared_tag(), Some(0x2bc));
    // Nothing more may be logged, and it cannot be prepared twice.
    for r in [
        tx.set_range(bb, 4),
        tx.prepare(0x2bd),
        tx.set_root("z", x),
        tx.free(x),
        tx.alloc_in(0, 1u64).map(|_| ()),
        tx.write(x, 9),
    ] {
        assert!(matches!(r, Err(Error::Prepared { tag: 0x2bc })), "{r:?}");
    }
    tx.commit().unwrap();
    assert_eq!(bytes(bb, 0, 4), b"new!");
    assert_eq!(*g.get(x).unwrap(), 6);
    assert_eq!(g.in_doubt(), None);
    // The next transaction runs normally and the log is clean.
    let mut tx = g.begin().unwrap();
    tx.write(x, 7).unwrap();
    tx.commit().unwrap();
    drop(g);
    assert_eq!(f.prepared_tag(), None);
    let g = f.open().unwrap();
    assert_eq!(g.recovery(), Recovery::default());
    assert_eq!(*g.get(x).unwrap(), 7);
    assert_eq!(bytes(g.base(1).unwrap(), 0, 4), b"new!");
}

#[test]
fn prepare_then_abort() {
    let d = tempfile::tempdir().unwrap();
    let (f, mut g) = Files::create(d.path(), 2, Durability::Memory);
    first_state(&mut g);
    let before = g.digest();
    let bb = g.base(1).unwrap();
    let mut tx = g.begin().unwrap();
    tx.set_range(bb, 4).unwrap();
    store(bb, 0, b"new!");
    let y = tx.alloc_in(0, 77u64).unwrap();
    tx.set_root("y", y).unwrap();
    tx.prepare(9).unwrap();
    tx.abort().unwrap();
    assert!(is_old(&g));
    assert_eq!(g.digest(), before);
    drop(g);
    assert_eq!(f.prepared_tag(), None);
    let g = f.open().unwrap();
    assert_eq!(g.recovery(), Recovery::default());
    assert!(is_old(&g));
}

#[test]
fn zero_tag_is_refused_and_the_transaction_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let (_f, mut g) = Files::create(d.path(), 4, Durability::Memory);
    let x = first_state(&mut g);
    let mut tx = g.begin().unwrap();
    assert!(matches!(tx.prepare(0), Err(Error::InvalidConfig(_))));
    assert_eq!(tx.prepared_tag(), None);
    tx.write(x, 8).unwrap();
    tx.commit().unwrap();
    assert_eq!(*g.get(x).unwrap(), 8);
}

#[test]
fn crash_after_prepare_then_resolve_commit() {
    let d = tempfile::tempdir().unwrap();
    let (f, mut g) = Files::create(d.path(), 6, Durability::Memory);
    first_state(&mut g);
    prepare_second(&mut g, 0xe90c);
    // The handle is gone but the transaction is in doubt, not aborted.
    assert_eq!(g.in_doubt(), Some(0xe90c));
    assert!(matches!(g.begin(), Err(Error::Prepared { tag: 0xe90c })));
    assert!(matches!(
        g.set_mode(1, LogMode::Implicit),
        Err(Error::InTransaction(_))
    ));
    drop(g);
    assert_eq!(f.prepared_tag(), Some(0xe90c));

    // A plain open refuses, and changes nothing.
    let snap = f.snapshot();
    assert!(matches!(f.open(), Err(Error::Prepared { tag: 0xe90c })));
    assert_eq!(f.snapshot(), snap);
    // A resolver that fails (coordinator unreachable) changes nothing either.
    let r = f.open_resolving(&mut |_| Err(Error::InvalidConfig("no coordinator".into())));
    assert!(matches!(r, Err(Error::InvalidConfig(_))));
    assert_eq!(f.snapshot(), snap);
    // A standalone member cannot be asked: its group's log holds the answer.
    let b = Backing::open_file(&f.a, Durability::Memory).unwrap();
    assert!(matches!(
        Segment::prepared_tag(&b),
        Err(Error::BoundToGroup { .. })
    ));
    drop(b);

    let mut asked = Vec::new();
    let g = f
        .open_resolving(&mut |tag| {
            asked.push(tag);
            Ok(Resolution::Commit)
        })
        .unwrap();
    assert_eq!(asked, [0xe90c]);
    assert_eq!(
        g.recovery(),
        Recovery {
            records: 0,
            bytes: 0,
            resolved: Some((0xe90c, Resolution::Commit)),
        }
    );
    assert!(is_new(&g));
    drop(g);
    assert_eq!(f.prepared_tag(), None);
    let g = f.open().unwrap();
    assert_eq!(g.recovery(), Recovery::default());
    assert!(is_new(&g));
}

#[test]
fn crash_after_prepare_then_resolve_abort() {
    let d = tempfile::tempdir().unwrap();
    let (f, mut g) = Files::create(d.path(), 8, Durability::Memory);
    first_state(&mut g);
    let old = g.digest();
    prepare_second(&mut g, 41);
    drop(g);
    let g = f.open_resolving(&mut |_| Ok(Resolution::Abort)).unwrap();
    let rec = g.recovery();
    assert_eq!(rec.resolved, Some((41, Resolution::Abort)));
    assert!(rec.records > 0);
    assert!(is_old(&g));
    assert_eq!(g.digest(), old);
    drop(g);
    assert_eq!(f.prepared_tag(), None);
    let g = f.open().unwrap();
    assert_eq!(g.recovery(), Recovery::default());
    assert!(is_old(&g));
}

#[test]
fn in_doubt_transaction_resolved_in_process() {
    let d = tempfile::tempdir().unwrap();
    let (f, mut g) = Files::create(d.path(), 10, Durability::Memory);
    first_state(&mut g);
    assert!(matches!(
        g.resolve(Resolution::Commit),
        Err(Error::NotActive)
    ));
    prepare_second(&mut g, 3);
    g.resolve(Resolution::Commit).unwrap();
    assert!(is_new(&g));
    assert_eq!(g.in_doubt(), None);
    // And abort, on the next one.
    let x: PPtr<u64> = g.root(0, "x").unwrap().unwrap();
    let mut tx = g.begin().unwrap();
    tx.write(x, 100).unwrap();
    tx.prepare(4).unwrap();
    drop(tx);
    g.resolve(Resolution::Abort).unwrap();
    assert_eq!(*g.get(x).unwrap(), 6);
    drop(g);
    let g = f.open().unwrap();
    assert!(is_new(&g));
}

#[test]
fn deferred_free_is_applied_at_prepare() {
    let d = tempfile::tempdir().unwrap();
    let (f, mut g) = Files::create(d.path(), 12, Durability::Memory);
    let x = first_state(&mut g);
    let used = g.info(0).unwrap().heap.unwrap().used;
    let mut tx = g.begin().unwrap();
    tx.free(x).unwrap();
    tx.remove_root(0, "x").unwrap();
    tx.prepare(5).unwrap();
    drop(tx);
    drop(g);
    // Abort: the block is back.
    let g = f.open_resolving(&mut |_| Ok(Resolution::Abort)).unwrap();
    assert_eq!(g.info(0).unwrap().heap.unwrap().used, used);
    assert_eq!(*g.get(x).unwrap(), 5);
    let mut g = g;
    let mut tx = g.begin().unwrap();
    tx.free(x).unwrap();
    tx.remove_root(0, "x").unwrap();
    tx.prepare(6).unwrap();
    drop(tx);
    drop(g);
    // Commit: it is freed, with nothing left to do at commit.
    let g = f.open_resolving(&mut |_| Ok(Resolution::Commit)).unwrap();
    assert!(g.info(0).unwrap().heap.unwrap().used < used);
    assert!(g.root::<u64>(0, "x").unwrap().is_none());
}

#[test]
fn stale_prepared_word_means_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (f, mut g) = Files::create(d.path(), 14, Durability::Memory);
    first_state(&mut g);
    prepare_second(&mut g, 77);
    // A crash between the commit point (tail = 0) and `prepared = 0`.
    g.engine().log.clear();
    g.engine().forget_tx();
    drop(g);
    assert_eq!(f.prepared_tag(), None);
    let mut g = f.open().unwrap();
    assert_eq!(g.recovery(), Recovery::default());
    assert!(is_new(&g));
    assert_eq!(g.engine().log.prepared(), 0);

    // The same, found by `begin` instead of open.
    prepare_second(&mut g, 78);
    g.engine().log.clear();
    g.engine().forget_tx();
    assert_eq!(g.engine().log.prepared(), 78);
    let tx = g.begin().unwrap();
    tx.commit().unwrap();
    assert_eq!(g.engine().log.prepared(), 0);
}

#[test]
fn checkpoint_after_prepare() {
    let d = tempfile::tempdir().unwrap();
    let (f, mut g) = Files::create(d.path(), 16, Durability::Memory);
    let x = first_state(&mut g);
    let mut tx = g.begin().unwrap();
    tx.write(x, 11).unwrap();
    tx.prepare(1).unwrap();
    tx.checkpoint().unwrap();
    assert_eq!(tx.prepared_tag(), None);
    tx.write(x, 12).unwrap();
    drop(tx); // not prepared: aborted
    assert_eq!(*g.get(x).unwrap(), 11);
    drop(g);
    assert_eq!(*f.open().unwrap().get(x).unwrap(), 11);
}

#[test]
fn prepare_with_msync_policies() {
    for (i, dur) in [Durability::Msync, Durability::MsyncWal]
        .into_iter()
        .enumerate()
    {
        let d = tempfile::tempdir().unwrap();
        let (f, mut g) = Files::create(d.path(), 18 + 2 * i, dur);
        first_state(&mut g);
        prepare_second(&mut g, 12);
        drop(g);
        let o = |p: &Path| Backing::open_file(p, dur).unwrap();
        let members = vec![(o(&f.a), addr(f.n)), (o(&f.b), addr(f.n + 1))];
        let g = Group::open_resolving(o(&f.log), members, &mut |_| Ok(Resolution::Commit)).unwrap();
        assert!(is_new(&g), "{dur:?}");
    }
}

#[test]
fn standalone_segment_prepare() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("s");
    let mut s = Segment::create_file(&p, addr(24), &cfg(), Durability::Memory).unwrap();
    let b = s.base();
    let mut tx = s.begin().unwrap();
    tx.set_range(b, 4).unwrap();
    store(b, 0, b"new!");
    tx.prepare(0xabc).unwrap();
    drop(tx);
    assert_eq!(s.in_doubt(), Some(0xabc));
    drop(s);
    let bk = || Backing::open_file(&p, Durability::Memory).unwrap();
    assert_eq!(Segment::prepared_tag(&bk()).unwrap(), Some(0xabc));
    assert!(matches!(
        Segment::open(bk(), addr(24)),
        Err(Error::Prepared { tag: 0xabc })
    ));
    let s = Segment::open_resolving(bk(), addr(24), &mut |t| {
        assert_eq!(t, 0xabc);
        Ok(Resolution::Abort)
    })
    .unwrap();
    assert_eq!(s.recovery().resolved, Some((0xabc, Resolution::Abort)));
    assert_eq!(bytes(s.base(), 0, 4), [0; 4]);
    drop(s);
    assert_eq!(Segment::prepared_tag(&bk()).unwrap(), None);
}

#[test]
fn implicit_mode_prepare_and_commit() {
    crate::tests::with_timeout(60, || {
        let d = tempfile::tempdir().unwrap();
        let (f, mut g) = Files::create(d.path(), 26, Durability::Memory);
        first_state(&mut g);
        g.set_mode(1, LogMode::Implicit).unwrap();
        let bb = g.base(1).unwrap();
        let tx = g.begin().unwrap();
        store(bb, 8192, b"implicit");
        let mut tx = tx;
        tx.prepare(2).unwrap();
        drop(tx);
        drop(g);
        let g = f.open_resolving(&mut |_| Ok(Resolution::Commit)).unwrap();
        assert_eq!(bytes(g.base(1).unwrap(), 8192, 8), b"implicit");
        drop(g);
        let mut g = f.open().unwrap();
        g.set_mode(1, LogMode::Implicit).unwrap();
        let mut tx = g.begin().unwrap();
        store(bb, 8192, b"rollback");
        tx.prepare(3).unwrap();
        drop(tx);
        drop(g);
        let g = f.open_resolving(&mut |_| Ok(Resolution::Abort)).unwrap();
        assert_eq!(bytes(g.base(1).unwrap(), 8192, 8), b"implicit");
    });
}
