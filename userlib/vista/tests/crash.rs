//! Host crash tests: a child process (this test binary, re-executed) runs random
//! transactions against a group of two segments and is SIGKILLed at random points, either
//! by itself at a chosen step (crash points between any two library calls, including right
//! after `set_range` and right after `commit`) or by the parent after a random delay
//! (anywhere, including inside `commit` and `set_range`). The parent then reopens the group
//! (recovery) and checks atomicity and durability against an independent model:
//!
//! * the transactions are drawn from a seeded generator ([`run_tx`]) that the child runs
//!   against Vista and the parent runs against [`Model`], plain vectors in the parent's
//!   memory that share no code with Vista;
//! * before each commit the child appends `P` to a report file, after it `C`;
//! * after recovery the bytes read back from the group (all of segment B, and every
//!   allocated block through the slot table) must equal the model after the reported
//!   commits, or, if the report ends with a `P`, the model after that one more commit:
//!   never anything else. Vista's own digest plays no part in the verdict.
//!
//! `VISTA_CRASH_ITERS` sets the number of crashes (default 120).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vista::{Backing, Durability, Group, LogMode, PPtr, PSlice, Segment, SegmentConfig};

const A_ADDR: usize = 0x3a00_0000_0000;
const B_ADDR: usize = 0x3a10_0000_0000;
const B_LEN: usize = 256 << 10;
const SLOTS: usize = 64;

use rio_prng::Rng;

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join("a"), dir.join("b"), dir.join("log"))
}

fn open_group(dir: &Path) -> Group {
    let (a, b, l) = paths(dir);
    let o = |p: &Path| Backing::open_file(p, Durability::Memory).expect("open backing");
    Group::open(o(&l), vec![(o(&a), A_ADDR), (o(&b), B_ADDR)]).expect("open group")
}

fn create_group(dir: &Path) {
    let (a, b, l) = paths(dir);
    let sa = Segment::create_file(
        &a,
        A_ADDR,
        &SegmentConfig::new(1 << 20).log_capacity(4096),
        Durability::Memory,
    )
    .expect("create a");
    let sb = Segment::create_file(
        &b,
        B_ADDR,
        &SegmentConfig::new(B_LEN).heap(false).log_capacity(4096),
        Durability::Memory,
    )
    .expect("create b");
    let lb =
        Backing::create_file(&l, Group::log_backing_len(4 << 20), Durability::Memory).expect("log");
    let mut g = Group::create(lb, vec![sa, sb]).expect("group");
    let mut tx = g.begin().expect("begin");
    let table = tx
        .alloc_slice::<PPtr<[u8; 0]>>(SLOTS, PPtr::null())
        .expect("table");
    let sizes = tx.alloc_slice::<u64>(SLOTS, 0).expect("sizes");
    tx.set_root_slice("table", table).expect("root");
    tx.set_root_slice("sizes", sizes).expect("root");
    tx.commit().expect("commit");
}

fn report(f: &mut std::fs::File, line: String) {
    // One write(2) per line: it reaches the page cache before the next instruction.
    f.write_all(line.as_bytes()).expect("report");
}

/// One operation of a transaction.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `len` bytes of segment B at `off` set to `byte` (explicit mode: after `set_range`).
    Fill { off: usize, len: usize, byte: u8 },
    /// A new block of `size` bytes filled with `byte` into the empty slot `slot`.
    Alloc { slot: usize, size: usize, byte: u8 },
    /// The block in `slot` freed and the slot emptied.
    Free { slot: usize },
    /// Bytes `at..` of the block in `slot` set to `byte`.
    Update { slot: usize, at: usize, byte: u8 },
}

/// What a transaction runs against: Vista in the child, the model in the parent.
trait State {
    /// The size of the block in `slot`, or `None` if the slot is empty.
    fn slot_size(&mut self, slot: usize) -> Option<usize>;
    /// Carries out `op`.
    fn apply(&mut self, op: Op);
}

/// Draws one transaction from `rng` against `st` and carries it out; returns whether it
/// commits (`true`) or aborts. The child and the model both run this, so they see the
/// same operations as long as they agree on the state.
fn run_tx(rng: &mut Rng, st: &mut impl State) -> bool {
    let n_ops = 1 + rng.below(8);
    for _ in 0..n_ops {
        let op = match rng.below(4) {
            0 | 1 => {
                let len = 1 + rng.below(300) as usize;
                let off = rng.below((B_LEN - len) as u64) as usize;
                Op::Fill {
                    off,
                    len,
                    byte: rng.next_u64() as u8,
                }
            }
            _ => {
                let slot = rng.below(SLOTS as u64) as usize;
                match st.slot_size(slot) {
                    None => Op::Alloc {
                        slot,
                        size: 1 + rng.below(2000) as usize,
                        byte: rng.next_u64() as u8,
                    },
                    Some(_) if rng.below(2) == 0 => Op::Free { slot },
                    Some(size) => Op::Update {
                        slot,
                        at: rng.below(size as u64) as usize,
                        byte: rng.next_u64() as u8,
                    },
                }
            }
        };
        st.apply(op);
    }
    rng.below(8) != 0
}

/// The model: segment B's bytes and each slot's block, in ordinary memory.
#[derive(Clone, PartialEq, Eq)]
struct Model {
    b: Vec<u8>,
    slots: Vec<Option<Vec<u8>>>,
}

impl Model {
    fn new() -> Model {
        Model {
            b: vec![0; B_LEN],
            slots: vec![None; SLOTS],
        }
    }

    /// What the group holds now, read through the slot table (not through any digest).
    fn read(g: &Group) -> Model {
        let b = g.base(1).expect("base") as *const u8;
        // SAFETY: segment B is mapped readable for B_LEN bytes while `g` is open, and no
        // transaction is running (`g` is borrowed shared), so nothing writes it meanwhile.
        let b = unsafe { std::slice::from_raw_parts(b, B_LEN) }.to_vec();
        let table: PSlice<PPtr<[u8; 0]>> = g.root_slice(0, "table").expect("root").expect("table");
        let sizes: PSlice<u64> = g.root_slice(0, "sizes").expect("root").expect("sizes");
        let table = g.get_slice(table).expect("table");
        let sizes = g.get_slice(sizes).expect("sizes");
        let slots = table
            .iter()
            .zip(sizes)
            .map(|(p, &n)| {
                (!p.is_null()).then(|| {
                    let data = PSlice::<u8>::from_raw(p.addr(), n as usize);
                    g.get_slice(data).expect("a slot's block").to_vec()
                })
            })
            .collect();
        Model { b, slots }
    }

    /// Where `self` and `want` differ, for a failure message.
    fn diff(&self, want: &Model) -> String {
        let mut out = Vec::new();
        if let Some(i) = (0..B_LEN).find(|&i| self.b[i] != want.b[i]) {
            out.push(format!(
                "segment B first differs at {i}: {:#x}, model {:#x}",
                self.b[i], want.b[i]
            ));
        }
        for (s, (got, exp)) in self.slots.iter().zip(&want.slots).enumerate() {
            if got != exp {
                let d = |v: &Option<Vec<u8>>| match v {
                    None => "empty".to_string(),
                    Some(v) => format!(
                        "{} bytes of {:#x?}",
                        v.len(),
                        v.first().copied().unwrap_or(0)
                    ),
                };
                out.push(format!("slot {s}: {}, model {}", d(got), d(exp)));
            }
        }
        out.join("\n")
    }
}

impl State for Model {
    fn slot_size(&mut self, slot: usize) -> Option<usize> {
        self.slots[slot].as_ref().map(Vec::len)
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Fill { off, len, byte } => self.b[off..off + len].fill(byte),
            Op::Alloc { slot, size, byte } => self.slots[slot] = Some(vec![byte; size]),
            Op::Free { slot } => self.slots[slot] = None,
            Op::Update { slot, at, byte } => {
                if let Some(v) = self.slots[slot].as_mut() {
                    v[at..].fill(byte);
                }
            }
        }
    }
}

/// The model after the first `commits` committing transactions of a child run with
/// `seed` from `start`, and after one more.
fn replay(start: &Model, seed: u64, commits: u64) -> (Model, Model) {
    let mut rng = Rng::new(seed);
    let mut committed = start.clone();
    let mut n = 0;
    loop {
        let mut m = committed.clone();
        if run_tx(&mut rng, &mut m) {
            if n == commits {
                return (committed, m);
            }
            committed = m;
            n += 1;
        }
    }
}

/// The child's side of [`State`]: Vista, with a crash point after every library call.
struct InVista<'a, 'g> {
    tx: vista::Tx<'g>,
    table: PSlice<PPtr<[u8; 0]>>,
    sizes: PSlice<u64>,
    b: usize,
    implicit: bool,
    tick: &'a mut dyn FnMut(),
}

impl State for InVista<'_, '_> {
    fn slot_size(&mut self, slot: usize) -> Option<usize> {
        let p = *self
            .tx
            .get(self.table.at(slot).expect("slot"))
            .expect("get");
        (!p.is_null()).then(|| {
            *self
                .tx
                .get(self.sizes.at(slot).expect("size"))
                .expect("get") as usize
        })
    }

    fn apply(&mut self, op: Op) {
        let slot_p = |s: usize| self.table.at(s).expect("slot");
        let size_p = |s: usize| self.sizes.at(s).expect("size");
        match op {
            Op::Fill { off, len, byte } => {
                if !self.implicit {
                    self.tx
                        .set_range((self.b + off) as *const u8, len)
                        .expect("set_range");
                    (self.tick)();
                }
                for i in 0..len {
                    // SAFETY: inside segment B, logged; byte-wise so a kill can land
                    // in the middle of the update.
                    unsafe { ((self.b + off + i) as *mut u8).write_volatile(byte) };
                }
            }
            Op::Alloc { slot, size, byte } => {
                let p = self.tx.alloc_raw(size, 16).expect("alloc");
                // SAFETY: a fresh block of `size` bytes, owned by this transaction.
                unsafe { std::ptr::write_bytes(p.as_ptr(), byte, size) };
                self.tx
                    .write(slot_p(slot), PPtr::from_addr(p.as_ptr() as usize))
                    .expect("w");
                self.tx.write(size_p(slot), size as u64).expect("w");
            }
            Op::Free { slot } => {
                let cur = *self.tx.get(slot_p(slot)).expect("get");
                self.tx.free(cur).expect("free");
                self.tx.write(slot_p(slot), PPtr::null()).expect("w");
                self.tx.write(size_p(slot), 0).expect("w");
            }
            Op::Update { slot, at, byte } => {
                let cur = *self.tx.get(slot_p(slot)).expect("get");
                let size = *self.tx.get(size_p(slot)).expect("get") as usize;
                let data = PSlice::<u8>::from_raw(cur.addr(), size);
                self.tx
                    .update_slice(data, at..size, |x| x.fill(byte))
                    .expect("update");
            }
        }
        (self.tick)();
    }
}

/// The child: runs transactions until killed (or kills itself at step `kill_at`).
fn child(dir: &Path, seed: u64, implicit: bool, kill_at: Option<u64>) {
    let mut g = open_group(dir);
    if implicit {
        g.set_mode(1, LogMode::Implicit).expect("implicit");
    }
    let table: PSlice<PPtr<[u8; 0]>> = g.root_slice(0, "table").expect("root").expect("table");
    let sizes: PSlice<u64> = g.root_slice(0, "sizes").expect("root").expect("sizes");
    let mut rep = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("report"))
        .expect("report file");
    report(&mut rep, "R\n".into());
    let mut rng = Rng::new(seed);
    let mut step = 0u64;
    let mut tick = || {
        step += 1;
        if Some(step) == kill_at {
            // SAFETY: killing ourselves; no memory is involved.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    };
    let b = g.base(1).expect("base") as usize;
    loop {
        let tx = g.begin().expect("begin");
        tick();
        let mut st = InVista {
            tx,
            table,
            sizes,
            b,
            implicit,
            tick: &mut tick,
        };
        let commit = run_tx(&mut rng, &mut st);
        let tx = st.tx;
        if !commit {
            tx.abort().expect("abort");
            tick();
            continue;
        }
        report(&mut rep, "P\n".into());
        tick();
        tx.commit().expect("commit");
        tick();
        report(&mut rep, "C\n".into());
    }
}

/// The child half of [`crash_campaign`]: the parent re-executes this test binary with
/// `--exact crash_campaign` and `VISTA_CRASH_CHILD` set, and the test runs this instead.
/// (A separate `#[test]` for the child would pass, having done nothing, in every normal run.)
fn run_child(dir: &str) {
    let seed: u64 = std::env::var("VISTA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let implicit = std::env::var("VISTA_CRASH_IMPLICIT").is_ok();
    let kill_at = std::env::var("VISTA_CRASH_KILL_AT")
        .ok()
        .and_then(|s| s.parse().ok());
    child(Path::new(dir), seed, implicit, kill_at);
}

fn spawn(dir: &Path, seed: u64, implicit: bool, kill_at: Option<u64>) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut c = Command::new(exe);
    c.args([
        "--exact",
        "crash_campaign",
        "--test-threads=1",
        "--nocapture",
        "-q",
    ])
    .env("VISTA_CRASH_CHILD", dir)
    .env("VISTA_CRASH_SEED", seed.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if implicit {
        c.env("VISTA_CRASH_IMPLICIT", "1");
    }
    if let Some(k) = kill_at {
        c.env("VISTA_CRASH_KILL_AT", k.to_string());
    }
    c.spawn().expect("spawn child")
}

fn wait_for_ready(dir: &Path, child: &mut Child) {
    let t0 = Instant::now();
    let ready = || {
        std::fs::read_to_string(dir.join("report"))
            .map(|s| s.starts_with('R'))
            .unwrap_or(false)
    };
    loop {
        if ready() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            if ready() {
                return; // It got ready and then killed itself at an early step.
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("child exited before it was ready: {st}\n{err}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "child not ready after 20 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn wait_dead(child: &mut Child) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("child still running after 20 s (hang?)");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn crash_campaign() {
    if let Ok(dir) = std::env::var("VISTA_CRASH_CHILD") {
        return run_child(&dir);
    }
    let iters: u64 = std::env::var("VISTA_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let dir = tempfile::tempdir().expect("tempdir");
    create_group(dir.path());
    let mut model = Model::new();
    {
        let now = Model::read(&open_group(dir.path()));
        assert!(
            now == model,
            "a new group differs from the empty model:\n{}",
            now.diff(&model)
        );
    }
    let mut rng = Rng::new(0x5eed_1234_abcd_0001);
    let (mut commits_seen, mut in_flight_committed, mut in_flight_rolled_back) = (0u64, 0u64, 0u64);
    let t_start = Instant::now();
    for i in 0..iters {
        let _ = std::fs::remove_file(dir.path().join("report"));
        let seed = rng.next_u64();
        let implicit = i % 2 == 1;
        let self_kill = i % 3 != 0;
        let kill_at = self_kill.then(|| 1 + rng.below(60));
        let mut c = spawn(dir.path(), seed, implicit, kill_at);
        wait_for_ready(dir.path(), &mut c);
        if !self_kill {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        }
        let st = wait_dead(&mut c);
        use std::os::unix::process::ExitStatusExt;
        if st.signal() != Some(libc::SIGKILL) {
            let mut err = String::new();
            if let Some(mut e) = c.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("iteration {i}: child ended with {st}, not SIGKILL\n{err}");
        }
        let rep = std::fs::read_to_string(dir.path().join("report")).unwrap_or_default();
        let mut commits = 0u64;
        let mut prepared = false;
        for line in rep.lines() {
            match line {
                "P" => {
                    assert!(!prepared, "iteration {i}: two P lines without a C");
                    prepared = true;
                }
                "C" => {
                    assert!(prepared, "iteration {i}: a C line without its P");
                    prepared = false;
                    commits += 1;
                }
                _ => {}
            }
        }
        commits_seen += commits;
        let (committed, next) = replay(&model, seed, commits);
        let now = Model::read(&open_group(dir.path()));
        let what = format!("iteration {i} (seed {seed}, implicit {implicit}, kill_at {kill_at:?}, {commits} commits reported, in flight {prepared})");
        if now == committed {
            if prepared {
                in_flight_rolled_back += 1;
            }
        } else if prepared && now == next {
            in_flight_committed += 1;
        } else {
            panic!(
                "{what}: the recovered state is neither the model after the acknowledged commits nor, with one in flight, after that one:\n{}\nreport:\n{rep}",
                now.diff(&committed)
            );
        }
        model = now;
    }
    eprintln!(
        "crash campaign: {iters} crashes in {:.1} s, {commits_seen} commits acknowledged, in-flight commits kept {in_flight_committed}, rolled back {in_flight_rolled_back}",
        t_start.elapsed().as_secs_f64()
    );
    assert!(
        commits_seen > 0,
        "the children never committed: the test tested nothing"
    );
}
