//! Unit tests of the engine through the public API, plus crash simulation hooks.
//!
//! A "crash" here is: leak the transaction handle, mark the engine idle so that dropping it
//! does not abort, and drop it. The mappings go away exactly as at process death, while
//! the page cache (the "durable" memory of a file backing) keeps every store made so far.

use std::path::{Path, PathBuf};

use crate::*;

/// A distinct fixed address per test (tests run in parallel threads of one process).
fn addr(n: usize) -> usize {
    0x3000_0000_0000 + (n << 32)
}

fn skipped(test: &str, reason: &str) {
    crate::testing::record_skip(test, reason).expect("record the skip in RIO_SKIP_LOG");
}

fn cfg() -> SegmentConfig {
    SegmentConfig::new(1 << 20).log_capacity(256 << 10)
}

fn new_seg(dir: &Path, name: &str, n: usize, cfg: &SegmentConfig) -> (PathBuf, Segment) {
    let p = dir.join(name);
    let s = Segment::create_file(&p, addr(n), cfg, Durability::Memory).unwrap();
    (p, s)
}

/// Runs `f` on its own thread and fails the test if it takes longer than `secs` (tests
/// that take page faults could otherwise hang on a handler bug).
pub(crate) fn with_timeout<T: Send + 'static>(
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("test timed out after {secs} s"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("test thread ended without a result"),
        },
    }
}

fn crash(mut seg: Segment) {
    seg.engine().forget_tx();
    drop(seg);
}

fn crash_group(mut g: Group) {
    g.engine().forget_tx();
    drop(g);
}

fn bytes(seg: &Segment, off: usize, len: usize) -> Vec<u8> {
    // SAFETY: test reads inside the mapped data area.
    unsafe { std::slice::from_raw_parts(seg.base().add(off), len).to_vec() }
}

fn store(base: *mut u8, off: usize, data: &[u8]) {
    // SAFETY: tests only store inside mapped segments, after set_range (or in implicit mode).
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(off), data.len()) };
}

#[test]
fn commit_and_abort_raw() {
    let d = tempfile::tempdir().unwrap();
    let (_, mut s) = new_seg(d.path(), "s", 1, &cfg());
    let b = s.base();
    let mut tx = s.begin().unwrap();
    // SAFETY: in range (b is the segment base).
    tx.set_range(unsafe { b.add(100) }, 8).unwrap();
    store(b, 100, b"ABCDEFGH");
    tx.commit().unwrap();
    assert_eq!(bytes(&s, 100, 8), b"ABCDEFGH");

    let mut tx = s.begin().unwrap();
    // SAFETY: in range.
    tx.set_range(unsafe { b.add(100) }, 8).unwrap();
    store(b, 100, b"xxxxxxxx");
    // Same range logged again after a change: the oldest image must win.
    // SAFETY: in range.
    tx.set_range(unsafe { b.add(96) }, 16).unwrap();
    store(b, 96, b"yyyyyyyyyyyyyyyy");
    tx.abort().unwrap();
    assert_eq!(bytes(&s, 100, 8), b"ABCDEFGH");
    assert_eq!(bytes(&s, 96, 4), [0, 0, 0, 0]);

    // Dropping an uncommitted transaction aborts it.
    {
        let mut tx = s.begin().unwrap();
        // SAFETY: in range.
        tx.set_range(unsafe { b.add(100) }, 8).unwrap();
        store(b, 100, b"zzzzzzzz");
    }
    assert_eq!(bytes(&s, 100, 8), b"ABCDEFGH");
}

#[test]
fn recovery_after_crash_and_commit_durability() {
    let d = tempfile::tempdir().unwrap();
    let (p, mut s) = new_seg(d.path(), "s", 2, &cfg());
    let b = s.base();
    let mut tx = s.begin().unwrap();
    // SAFETY: in range.
    tx.set_range(unsafe { b.add(4096) }, 4).unwrap();
    store(b, 4096, b"keep");
    tx.commit().unwrap();
    let mut tx = s.begin().unwrap();
    for i in 0..10 {
        // SAFETY: in range.
        tx.set_range(unsafe { b.add(4096 + i * 2) }, 4).unwrap();
        store(b, 4096 + i * 2, b"LOST");
    }
    std::mem::forget(tx);
    crash(s);
    let s = Segment::open_file(&p, addr(2), Durability::Memory).unwrap();
    assert_eq!(s.recovery().records, 10);
    assert_eq!(bytes(&s, 4096, 4), b"keep");
    assert_eq!(bytes(&s, 4100, 20), [0u8; 20]);
    drop(s);
    // A clean reopen replays nothing.
    let s = Segment::open_file(&p, addr(2), Durability::Memory).unwrap();
    assert_eq!(s.recovery(), Recovery::default());
}

#[test]
fn recovery_is_idempotent() {
    let d = tempfile::tempdir().unwrap();
    let (p, mut s) = new_seg(d.path(), "s", 3, &cfg());
    let b = s.base();
    let before = s.digest();
    let mut tx = s.begin().unwrap();
    for i in 0..20usize {
        let off = (i * 37) % 200;
        // SAFETY: in range.
        tx.set_range(unsafe { b.add(off) }, 50).unwrap();
        store(b, off, &[i as u8 + 1; 50]);
    }
    let x = tx.alloc(7u64).unwrap();
    tx.set_root("x", x).unwrap();
    std::mem::forget(tx);
    crash(s);
    // Crash during recovery, after replaying k of the newest records, for several k.
    for k in [1usize, 5, 13] {
        let b2 = Backing::open_file(&p, Durability::Memory).unwrap();
        let mut s = Segment::open_without_recovery(b2, addr(3)).unwrap();
        s.engine().partial_rollback(k).unwrap();
        drop(s);
    }
    let s = Segment::open_file(&p, addr(3), Durability::Memory).unwrap();
    assert_eq!(s.recovery().records, 22); // 20 ranges, 1 heap, 1 root
    assert_eq!(s.digest(), before);
}

#[test]
fn heap_abort_leaves_heap_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let (_, mut s) = new_seg(d.path(), "s", 4, &cfg());
    let mut tx = s.begin().unwrap();
    let a = tx.alloc([1u64; 4]).unwrap();
    let b = tx.alloc([2u64; 4]).unwrap();
    tx.commit().unwrap();
    let before = s.digest();
    let used = s.info().heap.unwrap().used;

    let mut tx = s.begin().unwrap();
    let c = tx.alloc(3u32).unwrap();
    tx.free(a).unwrap();
    tx.free(c).unwrap(); // allocated here: freed at once
    assert_eq!(tx.block_size(c.as_ptr().cast()), None, "freed at once");
    assert_eq!(
        tx.block_size(a.as_ptr().cast()),
        Some(32),
        "deferred to commit"
    );
    // `a` is freed only at commit: not reusable yet, still readable.
    let e = tx.alloc([9u64; 4]).unwrap();
    assert_ne!(e.addr(), a.addr());
    assert_eq!(tx.get(a).unwrap()[0], 1);
    assert!(matches!(tx.free(a), Err(Error::DoubleFree { .. })));
    tx.abort().unwrap();
    assert_eq!(s.digest(), before);
    assert_eq!(s.info().heap.unwrap().used, used);

    let mut tx = s.begin().unwrap();
    tx.free(a).unwrap();
    tx.commit().unwrap();
    assert_eq!(s.info().heap.unwrap().used, used - 32);
    let mut tx = s.begin().unwrap();
    assert!(matches!(tx.free(a), Err(Error::DoubleFree { .. })));
    // SAFETY: pointer arithmetic only, for an invalid-free check.
    let inside = unsafe { b.as_ptr().cast::<u8>().add(16) };
    assert!(matches!(
        tx.free_raw(inside),
        Err(Error::InvalidFree { .. })
    ));
    assert!(matches!(
        tx.free_raw(8 as *mut u8),
        Err(Error::InvalidFree { .. })
    ));
    let f = tx.alloc([5u64; 4]).unwrap();
    assert_eq!(f.addr(), a.addr(), "freed block reused after commit");
    tx.commit().unwrap();
}

#[test]
fn heap_crash_consistency() {
    let d = tempfile::tempdir().unwrap();
    let (p, mut s) = new_seg(d.path(), "s", 5, &cfg());
    let mut tx = s.begin().unwrap();
    let v: Vec<PPtr<u64>> = (0..50).map(|i| tx.alloc(i as u64).unwrap()).collect();
    tx.commit().unwrap();
    let before = s.digest();
    let mut tx = s.begin().unwrap();
    for (i, q) in v.iter().enumerate() {
        if i % 3 == 0 {
            tx.free(*q).unwrap();
        }
    }
    for _ in 0..30 {
        tx.alloc([0u8; 100]).unwrap();
    }
    std::mem::forget(tx);
    crash(s);
    let s = Segment::open_file(&p, addr(5), Durability::Memory).unwrap();
    assert_eq!(s.digest(), before);
}

#[test]
fn roots_persist_and_abort() {
    let d = tempfile::tempdir().unwrap();
    let (p, mut s) = new_seg(d.path(), "s", 6, &cfg());
    let mut tx = s.begin().unwrap();
    let arr = tx.alloc_slice(10, 3u32).unwrap();
    tx.set_root_slice("arr", arr).unwrap();
    tx.commit().unwrap();
    let mut tx = s.begin().unwrap();
    assert!(tx.remove_root(0, "arr").unwrap());
    let q = tx.alloc(1u8).unwrap();
    tx.set_root("q", q).unwrap();
    tx.abort().unwrap();
    assert_eq!(s.root_slice::<u32>("arr").unwrap(), Some(arr));
    assert_eq!(s.root::<u8>("q").unwrap(), None);
    assert!(matches!(
        s.root::<u64>("arr"),
        Err(Error::RootTypeMismatch { .. })
    ));
    drop(s);
    let mut s = Segment::open_file(&p, addr(6), Durability::Memory).unwrap();
    let arr = s.root_slice::<u32>("arr").unwrap().unwrap();
    assert_eq!(s.get_slice(arr).unwrap(), &[3u32; 10]);
    let mut tx = s.begin().unwrap();
    tx.update_slice(arr, 2..4, |x| x.fill(8)).unwrap();
    assert!(tx.update_slice(arr, 9..11, |_| ()).is_err());
    tx.commit().unwrap();
    assert_eq!(s.get_slice(arr).unwrap()[1..5], [3, 8, 8, 3]);
}

#[test]
fn bad_input_errors() {
    let d = tempfile::tempdir().unwrap();
    let (p, mut s) = new_seg(d.path(), "s", 7, &cfg());
    // Out of range.
    let mut tx = s.begin().unwrap();
    let end = addr(7) + s_len(&tx);
    assert!(matches!(
        tx.set_range(end as *const u8, 1),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        tx.set_range((end - 4) as *const u8, 8),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        tx.set_range(std::ptr::null(), 1),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        tx.update(PPtr::<u64>::from_addr(addr(7) + 3), |_| ()),
        Err(Error::Misaligned { .. })
    ));
    tx.commit().unwrap();
    // Opened twice (the lock), or at another address.
    assert!(matches!(
        Segment::open_file(&p, addr(7), Durability::Memory),
        Err(Error::Busy)
    ));
    drop(s);
    assert!(matches!(
        Segment::open_file(&p, addr(8), Durability::Memory),
        Err(Error::AddressMismatch { .. })
    ));
    // Misaligned address, address in use.
    let c = cfg();
    assert!(matches!(
        Segment::create_file(d.path().join("m"), addr(7) + 100, &c, Durability::Memory),
        Err(Error::MisalignedAddress { .. })
    ));
    let s = Segment::open_file(&p, addr(7), Durability::Memory).unwrap();
    assert!(matches!(
        Segment::create_file(d.path().join("u"), addr(7), &c, Durability::Memory),
        Err(Error::AddressInUse { .. })
    ));
    drop(s);
    // Create over existing data; open of garbage.
    let b = Backing::open_file(&p, Durability::Memory).unwrap();
    assert!(matches!(
        Segment::create(b, addr(9), &c),
        Err(Error::NotEmpty)
    ));
    let g = d.path().join("garbage");
    std::fs::write(&g, vec![0x5au8; 1 << 20]).unwrap();
    assert!(matches!(
        Segment::open_file(&g, addr(9), Durability::Memory),
        Err(Error::BadMagic { .. })
    ));
    // Truncated backing.
    let t = d.path().join("trunc");
    std::fs::copy(&p, &t).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&t).unwrap();
    f.set_len(100 << 10).unwrap();
    assert!(matches!(
        Segment::open_file(&t, addr(7), Durability::Memory),
        Err(Error::BackingTooSmall { .. })
    ));
    // Nested begin at run time (a leaked handle).
    let mut s = Segment::open_file(&p, addr(7), Durability::Memory).unwrap();
    std::mem::forget(s.begin().unwrap());
    assert!(matches!(s.begin(), Err(Error::TransactionActive)));
}

fn s_len(tx: &Tx<'_>) -> usize {
    tx.eng.members[0].data.len()
}

#[test]
fn corrupt_log_is_refused_and_data_untouched() {
    let d = tempfile::tempdir().unwrap();
    let (p, mut s) = new_seg(d.path(), "s", 10, &cfg());
    let b = s.base();
    let mut tx = s.begin().unwrap();
    // SAFETY: in range.
    tx.set_range(unsafe { b.add(64) }, 8).unwrap();
    store(b, 64, b"12345678");
    tx.commit().unwrap();
    let mut tx = s.begin().unwrap();
    for i in 0..3 {
        // SAFETY: in range.
        tx.set_range(unsafe { b.add(64 + i * 8) }, 8).unwrap();
        store(b, 64 + i * 8, b"badbadba");
    }
    let second = crate::log::record_size(8);
    tx.eng.log.smash_record(second);
    std::mem::forget(tx);
    crash(s);
    let snapshot = std::fs::read(&p).unwrap();
    let r = Segment::open_file(&p, addr(10), Durability::Memory);
    assert!(
        matches!(r, Err(Error::CorruptLog { at, .. }) if at == second as u64),
        "{r:?}"
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        snapshot,
        "nothing replayed, nothing written"
    );
}

#[test]
fn log_full_keeps_transaction_usable() {
    let d = tempfile::tempdir().unwrap();
    let c = cfg().log_capacity(8192);
    let (_, mut s) = new_seg(d.path(), "s", 11, &c);
    let b = s.base();
    let mut tx = s.begin().unwrap();
    // SAFETY: in range.
    tx.set_range(unsafe { b.add(0) }, 4000).unwrap();
    store(b, 0, &[1u8; 4000]);
    // SAFETY: in range.
    let r = tx.set_range(unsafe { b.add(8192) }, 8192);
    assert!(matches!(r, Err(Error::LogFull { .. })), "{r:?}");
    tx.commit().unwrap();
    assert_eq!(bytes(&s, 0, 4), [1, 1, 1, 1]);
}

#[test]
fn group_commits_and_recovers_atomically() {
    let d = tempfile::tempdir().unwrap();
    let (pa, a) = new_seg(d.path(), "a", 12, &cfg());
    let (pb, b) = new_seg(d.path(), "b", 13, &cfg().heap(false));
    let pl = d.path().join("log");
    let lb =
        Backing::create_file(&pl, Group::log_backing_len(1 << 20), Durability::Memory).unwrap();
    let mut g = Group::create(lb, vec![a, b]).unwrap();
    let (ba, bb) = (g.base(0).unwrap(), g.base(1).unwrap());
    let mut tx = g.begin().unwrap();
    tx.set_range(ba, 4).unwrap();
    tx.set_range(bb, 4).unwrap();
    store(ba, 0, b"AAAA");
    store(bb, 0, b"BBBB");
    let x = tx.alloc_in(0, 5u64).unwrap();
    tx.set_root("x", x).unwrap();
    assert!(matches!(
        tx.alloc_in(1, 5u64),
        Err(Error::NoHeap { segment: 1 })
    ));
    tx.commit().unwrap();
    let committed = g.digest();
    let mut tx = g.begin().unwrap();
    tx.set_range(ba, 4).unwrap();
    tx.set_range(bb, 4).unwrap();
    store(ba, 0, b"aaaa");
    store(bb, 0, b"bbbb");
    tx.update(x, |v| *v = 6).unwrap();
    std::mem::forget(tx);
    crash_group(g);
    // A member cannot be opened on its own while bound.
    assert!(matches!(
        Segment::open_file(&pa, addr(12), Durability::Memory),
        Err(Error::BoundToGroup { .. })
    ));
    let open = |with_b: bool| {
        let mut m = vec![(
            Backing::open_file(&pa, Durability::Memory).unwrap(),
            addr(12),
        )];
        if with_b {
            // Given in reverse order: indices follow creation order anyway.
            m.insert(
                0,
                (
                    Backing::open_file(&pb, Durability::Memory).unwrap(),
                    addr(13),
                ),
            );
        }
        Group::open(Backing::open_file(&pl, Durability::Memory).unwrap(), m)
    };
    assert!(matches!(open(false), Err(Error::MissingSegment { .. })));
    let g = open(true).unwrap();
    assert_eq!(g.recovery().records, 3);
    assert_eq!(g.digest(), committed);
    assert_eq!(*g.get(g.root::<u64>(0, "x").unwrap().unwrap()).unwrap(), 5);
    // Dissolve: members open alone again.
    let v = g.into_segments().unwrap();
    assert_eq!(v.len(), 2);
    drop(v);
    let s = Segment::open_file(&pb, addr(13), Durability::Memory).unwrap();
    assert_eq!(bytes(&s, 0, 4), b"BBBB");
}

#[test]
fn implicit_mode_logs_pages_on_first_write() {
    with_timeout(60, implicit_mode_logs_pages_on_first_write_body);
}

fn implicit_mode_logs_pages_on_first_write_body() {
    let d = tempfile::tempdir().unwrap();
    let (p, mut s) = new_seg(d.path(), "s", 14, &cfg());
    s.set_mode(LogMode::Implicit).unwrap();
    let b = s.base();
    let tx = s.begin().unwrap();
    for pg in 0..8 {
        store(b, pg * PAGE + 10, b"committed");
    }
    let used = tx.log_used();
    assert_eq!(used, 8 * crate::log::record_size(PAGE));
    store(b, 7 * PAGE + 100, b"again"); // same page: no new record
    assert_eq!(tx.log_used(), used);
    tx.commit().unwrap();
    // Outside a transaction, stores just work (stray read-only pages are unprotected).
    let tx = s.begin().unwrap();
    store(b, 3 * PAGE + 10, b"abortedXX");
    store(b, 200 * PAGE, b"far");
    tx.abort().unwrap();
    assert_eq!(bytes(&s, 3 * PAGE + 10, 9), b"committed");
    assert_eq!(bytes(&s, 200 * PAGE, 3), [0, 0, 0]);
    // Explicit set_range in implicit mode is harmless.
    let mut tx = s.begin().unwrap();
    // SAFETY: in range.
    tx.set_range(unsafe { b.add(5 * PAGE) }, 16).unwrap();
    store(b, 5 * PAGE, b"crashed!");
    store(b, 9 * PAGE, b"crashed!");
    std::mem::forget(tx);
    crash(s);
    let s = Segment::open_file(&p, addr(14), Durability::Memory).unwrap();
    assert_eq!(s.recovery().records, 3);
    assert_eq!(bytes(&s, 5 * PAGE + 10, 9), b"committed");
    assert_eq!(bytes(&s, 9 * PAGE, 8), [0u8; 8]);
}

#[test]
fn implicit_and_explicit_members_in_one_group() {
    with_timeout(60, implicit_and_explicit_members_in_one_group_body);
}

fn implicit_and_explicit_members_in_one_group_body() {
    // Discount Checking's shape: a page-logged segment plus a bookkeeping segment whose
    // stores are never rolled back unless logged explicitly.
    let d = tempfile::tempdir().unwrap();
    let (_, a) = new_seg(d.path(), "a", 15, &cfg());
    let (_, b) = new_seg(d.path(), "b", 16, &cfg().heap(false));
    let lb = Backing::create_file(
        d.path().join("log"),
        Group::log_backing_len(1 << 20),
        Durability::Memory,
    )
    .unwrap();
    let mut g = Group::create(lb, vec![a, b]).unwrap();
    g.set_mode(0, LogMode::Implicit).unwrap();
    let (ba, bb) = (g.base(0).unwrap(), g.base(1).unwrap());
    let mut tx = g.begin().unwrap();
    store(ba, 0, b"p1");
    store(bb, 0, b"counter1");
    tx.checkpoint().unwrap();
    store(ba, 0, b"p2");
    store(bb, 0, b"counter2");
    tx.abort().unwrap();
    // SAFETY: reads inside the mapped segments.
    let (x, y) = unsafe {
        (
            std::slice::from_raw_parts(ba, 2),
            std::slice::from_raw_parts(bb, 8),
        )
    };
    assert_eq!(x, b"p1");
    assert_eq!(y, b"counter2", "unlogged bookkeeping survives the abort");
}

#[test]
fn in_place_segment_keeps_existing_data() {
    with_timeout(60, in_place_segment_keeps_existing_data_body);
}

fn in_place_segment_keeps_existing_data_body() {
    let d = tempfile::tempdir().unwrap();
    let a = addr(17);
    let len = 4 * PAGE;
    // SAFETY: a private anonymous mapping at a fixed address reserved for this test.
    let p = unsafe {
        libc::mmap(
            a as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(p as usize, a);
    store(a as *mut u8, 0, b"program data");
    store(a as *mut u8, 3 * PAGE, b"bss");
    let path = d.path().join("inplace");
    let c = SegmentConfig::new(len).heap(false).log_capacity(64 << 10);
    let bk =
        Backing::create_file(&path, Segment::backing_len(&c).unwrap(), Durability::Memory).unwrap();
    // SAFETY: we own the mapping at `a` and no other thread uses it.
    let mut s = unsafe { Segment::create_in_place(bk, a, &c) }.unwrap();
    assert_eq!(bytes(&s, 0, 12), b"program data");
    s.set_mode(LogMode::Implicit).unwrap();
    let tx = s.begin().unwrap();
    store(a as *mut u8, 0, b"PROGRAM");
    tx.commit().unwrap();
    drop(s);
    // After drop the memory is still there with its last contents.
    assert_eq!(
        // SAFETY: restored anonymous memory at `a`.
        unsafe { std::slice::from_raw_parts(a as *const u8, 12) },
        b"PROGRAM data"
    );
    // A "restarted program" has fresh contents; opening in place brings back the saved ones.
    store(a as *mut u8, 0, b"fresh fresh ");
    let bk = Backing::open_file(&path, Durability::Memory).unwrap();
    // SAFETY: the anonymous mapping at `a` is still ours (the dropped segment left it
    // mapped) and no other thread uses it; replacing its contents is the point.
    let s = unsafe { Segment::open_in_place(bk, a) }.unwrap();
    assert_eq!(bytes(&s, 0, 12), b"PROGRAM data");
    assert_eq!(bytes(&s, 3 * PAGE, 3), b"bss");
    drop(s);
    // SAFETY: unmapping the test's own range.
    unsafe { libc::munmap(a as *mut libc::c_void, len) };
}

#[test]
fn msync_policies_work() {
    let d = tempfile::tempdir().unwrap();
    for (i, dur) in [Durability::Msync, Durability::MsyncWal]
        .into_iter()
        .enumerate()
    {
        let p = d.path().join(format!("m{i}"));
        let mut s = Segment::create_file(&p, addr(18 + i), &cfg(), dur).unwrap();
        let mut tx = s.begin().unwrap();
        let x = tx.alloc(1u64).unwrap();
        tx.set_root("x", x).unwrap();
        tx.commit().unwrap();
        let mut tx = s.begin().unwrap();
        tx.update(x, |v| *v = 2).unwrap();
        tx.commit().unwrap();
        let mut tx = s.begin().unwrap();
        tx.update(x, |v| *v = 3).unwrap();
        tx.abort().unwrap();
        assert_eq!(*s.get(x).unwrap(), 2);
    }
}

#[test]
fn uffd_mode_where_available() {
    with_timeout(60, uffd_mode_where_available_body);
}

fn uffd_mode_where_available_body() {
    // On a disk file: write-protect faults are not supported for regular files.
    let d = tempfile::tempdir().unwrap();
    let (_, mut s) = new_seg(d.path(), "s", 20, &cfg());
    if let Err(e) = s.set_mode(LogMode::ImplicitUffd) {
        assert!(matches!(e, Error::UffdUnavailable(_)), "{e}");
    }
    drop(s);
    // On tmpfs (shmem) it may work.
    let shm = match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(e) => return skipped("uffd_mode_where_available", &format!("no /dev/shm: {e}")),
    };
    let (p, mut s) = new_seg(shm.path(), "s", 21, &cfg());
    match s.set_mode(LogMode::ImplicitUffd) {
        Err(Error::UffdUnavailable(why)) => {
            return skipped(
                "uffd_mode_where_available",
                &format!("userfaultfd unavailable: {why}"),
            );
        }
        Err(e) => panic!("{e}"),
        Ok(()) => {}
    }
    let b = s.base();
    let tx = s.begin().unwrap();
    store(b, 0, b"one");
    store(b, 5 * PAGE, b"two");
    assert_eq!(tx.log_used(), 2 * crate::log::record_size(PAGE));
    tx.commit().unwrap();
    let tx = s.begin().unwrap();
    store(b, 0, b"XXX");
    tx.abort().unwrap();
    assert_eq!(bytes(&s, 0, 3), b"one");
    let tx = s.begin().unwrap();
    store(b, 5 * PAGE, b"XXX");
    std::mem::forget(tx);
    crash(s);
    let s = Segment::open_file(&p, addr(21), Durability::Memory).unwrap();
    assert_eq!(bytes(&s, 5 * PAGE, 3), b"two");
}

#[test]
fn corrupt_log_header_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (p, s) = new_seg(d.path(), "s", 22, &cfg());
    drop(s);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[PAGE + 30] ^= 1; // inside the embedded log's header (capacity field)
    std::fs::write(&p, &bytes).unwrap();
    let r = Segment::open_file(&p, addr(22), Durability::Memory);
    assert!(
        matches!(r, Err(Error::CorruptHeader { what: "log", .. })),
        "{r:?}"
    );
    bytes[PAGE + 30] ^= 1;
    bytes[40] ^= 1; // segment header (data_len)
    std::fs::write(&p, &bytes).unwrap();
    let r = Segment::open_file(&p, addr(22), Durability::Memory);
    assert!(
        matches!(
            r,
            Err(Error::CorruptHeader {
                what: "segment",
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(std::fs::read(&p).unwrap(), bytes, "nothing written");
}
