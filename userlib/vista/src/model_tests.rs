//! Property tests: random transactions against an in-memory model.
//!
//! A group of two segments: A has a heap (blocks are allocated, written, freed), B is a
//! raw area without heap, written anywhere, in explicit or implicit mode. Each generated
//! transaction ends in commit, abort or a simulated crash (then the group is reopened and
//! recovered). After every operation the working state must match the model, and after
//! every transaction end the segments must equal the committed model.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use crate::*;

const B_LEN: usize = 64 << 10;

#[derive(Debug, Clone)]
enum Op {
    WriteB {
        off: usize,
        len: usize,
        byte: u8,
    },
    WriteBlock {
        idx: usize,
        at: usize,
        len: usize,
        byte: u8,
    },
    Alloc {
        size: usize,
    },
    Free {
        idx: usize,
    },
    FreeAgain {
        idx: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum End {
    Commit,
    Abort,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..B_LEN, 1usize..200, any::<u8>()).prop_map(|(off, len, byte)| Op::WriteB { off, len, byte }),
        3 => (any::<usize>(), any::<usize>(), 1usize..64, any::<u8>())
            .prop_map(|(idx, at, len, byte)| Op::WriteBlock { idx, at, len, byte }),
        2 => (1usize..300).prop_map(|size| Op::Alloc { size }),
        2 => any::<usize>().prop_map(|idx| Op::Free { idx }),
        1 => any::<usize>().prop_map(|idx| Op::FreeAgain { idx }),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![3 => Just(End::Commit), 2 => Just(End::Abort), 1 => Just(End::Crash)]
}

fn txs() -> impl Strategy<Value = Vec<(Vec<Op>, End)>> {
    prop::collection::vec((prop::collection::vec(op(), 0..12), end()), 1..16)
}

#[derive(Debug, Clone, Default)]
struct Model {
    b: Vec<u8>,
    /// Live blocks: address -> contents.
    blocks: BTreeMap<usize, Vec<u8>>,
}

struct Harness {
    dir: tempfile::TempDir,
    base: usize,
    mode: LogMode,
}

impl Harness {
    fn paths(&self) -> [std::path::PathBuf; 3] {
        let d: &Path = self.dir.path();
        [d.join("a"), d.join("b"), d.join("log")]
    }

    fn addrs(&self) -> (usize, usize) {
        (self.base, self.base + (1 << 30))
    }

    fn create(&self) -> Group {
        let [pa, pb, pl] = self.paths();
        let (aa, ab) = self.addrs();
        let a = Segment::create_file(
            &pa,
            aa,
            &SegmentConfig::new(256 << 10).log_capacity(4096),
            Durability::Memory,
        )
        .unwrap();
        let b = Segment::create_file(
            &pb,
            ab,
            &SegmentConfig::new(B_LEN).heap(false).log_capacity(4096),
            Durability::Memory,
        )
        .unwrap();
        let lb =
            Backing::create_file(&pl, Group::log_backing_len(4 << 20), Durability::Memory).unwrap();
        let mut g = Group::create(lb, vec![a, b]).unwrap();
        g.set_mode(1, self.mode).unwrap();
        g
    }

    fn reopen(&self) -> Group {
        let [pa, pb, pl] = self.paths();
        let (aa, ab) = self.addrs();
        let open = |p: &Path| Backing::open_file(p, Durability::Memory).unwrap();
        let mut g = Group::open(open(&pl), vec![(open(&pa), aa), (open(&pb), ab)]).unwrap();
        g.set_mode(1, self.mode).unwrap();
        g
    }
}

fn read(addr: usize, len: usize) -> Vec<u8> {
    // SAFETY: callers pass ranges inside mapped segments.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len).to_vec() }
}

fn check(g: &Group, m: &Model) -> std::result::Result<(), TestCaseError> {
    let b = g.base(1).unwrap() as usize;
    prop_assert!(read(b, B_LEN) == m.b, "segment B differs from the model");
    let heap = g.info(0).unwrap().heap.unwrap();
    let mut used = 0;
    for (&addr, contents) in &m.blocks {
        prop_assert_eq!(&read(addr, contents.len()), contents, "block {:#x}", addr);
        used += contents.len().div_ceil(16) * 16;
    }
    prop_assert_eq!(heap.used, used);
    Ok(())
}

fn run(h: &Harness, plan: Vec<(Vec<Op>, End)>) -> std::result::Result<(), TestCaseError> {
    let mut g = h.create();
    let mut committed = Model {
        b: vec![0; B_LEN],
        blocks: BTreeMap::new(),
    };
    let implicit = h.mode != LogMode::Explicit;
    for (ops, end) in plan {
        let mut work = committed.clone();
        let mut fresh: Vec<usize> = Vec::new(); // allocated in this transaction
        let mut pending: Vec<usize> = Vec::new(); // freed, deferred to commit
        let b_base = g.base(1).unwrap() as usize;
        let mut tx = g.begin().unwrap();
        for op in ops {
            match op {
                Op::WriteB { off, len, byte } => {
                    let len = len.min(B_LEN - off);
                    if !implicit {
                        tx.set_range((b_base + off) as *const u8, len).unwrap();
                    }
                    // SAFETY: inside segment B, logged (explicitly or by the fault handler).
                    unsafe { std::ptr::write_bytes((b_base + off) as *mut u8, byte, len) };
                    work.b[off..off + len].fill(byte);
                }
                Op::WriteBlock { idx, at, len, byte } => {
                    let live: Vec<usize> = work.blocks.keys().copied().collect();
                    if live.is_empty() {
                        continue;
                    }
                    let addr = live[idx % live.len()];
                    let c = work.blocks.get_mut(&addr).unwrap();
                    let at = at % c.len();
                    let len = len.min(c.len() - at);
                    tx.set_range((addr + at) as *const u8, len).unwrap();
                    // SAFETY: inside a live block, logged just above.
                    unsafe { std::ptr::write_bytes((addr + at) as *mut u8, byte, len) };
                    c[at..at + len].fill(byte);
                }
                Op::Alloc { size } => match tx.alloc_raw(size, 16) {
                    Ok(p) => {
                        let a = p.as_ptr() as usize;
                        for (&o, c) in &work.blocks {
                            prop_assert!(
                                a + size <= o || o + c.len() <= a,
                                "overlap {:#x} {:#x}",
                                a,
                                o
                            );
                        }
                        for &o in &pending {
                            prop_assert!(a != o, "reused a block whose free is deferred");
                        }
                        prop_assert_eq!(tx.block_size(p.as_ptr()), Some(size.div_ceil(16) * 16));
                        work.blocks.insert(a, read(a, size));
                        fresh.push(a);
                    }
                    Err(Error::OutOfMemory { .. }) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("alloc: {e}"))),
                },
                Op::Free { idx } => {
                    let live: Vec<usize> = work.blocks.keys().copied().collect();
                    if live.is_empty() {
                        continue;
                    }
                    let a = live[idx % live.len()];
                    tx.free_raw(a as *mut u8).unwrap();
                    work.blocks.remove(&a);
                    if let Some(i) = fresh.iter().position(|&x| x == a) {
                        fresh.swap_remove(i);
                        prop_assert_eq!(tx.block_size(a as *const u8), None);
                    } else {
                        pending.push(a);
                        prop_assert!(tx.block_size(a as *const u8).is_some());
                    }
                }
                Op::FreeAgain { idx } => {
                    if pending.is_empty() {
                        continue;
                    }
                    let a = pending[idx % pending.len()];
                    let r = tx.free_raw(a as *mut u8);
                    prop_assert!(matches!(r, Err(Error::DoubleFree { .. })), "{:?}", r);
                }
            }
        }
        match end {
            End::Commit => {
                tx.commit().unwrap();
                committed = work;
            }
            End::Abort => tx.abort().unwrap(),
            End::Crash => {
                std::mem::forget(tx);
                g.engine().forget_tx();
                drop(g);
                g = h.reopen();
            }
        }
        check(&g, &committed)?;
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn model_explicit(plan in txs()) {
        let h = Harness { dir: tempfile::tempdir().unwrap(), base: 0x3800_0000_0000, mode: LogMode::Explicit };
        crate::tests::with_timeout(60, move || run(&h, plan))?;
    }

    #[test]
    fn model_implicit(plan in txs()) {
        let h = Harness { dir: tempfile::tempdir().unwrap(), base: 0x3900_0000_0000, mode: LogMode::Implicit };
        crate::tests::with_timeout(60, move || run(&h, plan))?;
    }
}
