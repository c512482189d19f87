//! Host crash tests: a child process (this test binary, re-executed) runs random
//! transactions against a group of two segments and is SIGKILLed at random points, either
//! by itself at a chosen step (crash points between any two library calls, including right
//! after `set_range` and right after `commit`) or by the parent after a random delay
//! (anywhere, including inside `commit` and `set_range`). The parent then reopens the group
//! (recovery) and checks atomicity and durability against what the child reported:
//!
//! * before each commit the child appends `P <digest>` to a report file (the digest the
//!   state will have if the commit happens), after it `C <digest>`;
//! * after recovery the state's digest must equal the last `C` (or the state at the start of
//!   the round), or, if the report ends with a `P`, that `P`'s digest: never anything else.
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

/// A small xorshift generator (deterministic per seed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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
    let mut rng = Rng(seed | 1);
    let mut step = 0u64;
    let tick = |step: &mut u64| {
        *step += 1;
        if Some(*step) == kill_at {
            // SAFETY: killing ourselves; no memory is involved.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    };
    let b = g.base(1).expect("base") as usize;
    loop {
        let mut tx = g.begin().expect("begin");
        tick(&mut step);
        let n_ops = 1 + rng.below(8);
        for _ in 0..n_ops {
            match rng.below(4) {
                0 | 1 => {
                    let len = 1 + rng.below(300) as usize;
                    let off = rng.below((B_LEN - len) as u64) as usize;
                    if !implicit {
                        tx.set_range((b + off) as *const u8, len)
                            .expect("set_range");
                        tick(&mut step);
                    }
                    let byte = rng.next() as u8;
                    for i in 0..len {
                        // SAFETY: inside segment B, logged; byte-wise so a kill can land
                        // in the middle of the update.
                        unsafe { ((b + off + i) as *mut u8).write_volatile(byte) };
                    }
                    tick(&mut step);
                }
                _ => {
                    let s = rng.below(SLOTS as u64) as usize;
                    let slot = table.at(s).expect("slot");
                    let size_p = sizes.at(s).expect("size");
                    let cur = *tx.get(slot).expect("get");
                    if cur.is_null() {
                        let size = 1 + rng.below(2000) as usize;
                        let p = tx.alloc_raw(size, 16).expect("alloc");
                        // SAFETY: fresh block of `size` bytes.
                        unsafe { std::ptr::write_bytes(p.as_ptr(), rng.next() as u8, size) };
                        tx.write(slot, PPtr::from_addr(p.as_ptr() as usize))
                            .expect("w");
                        tx.write(size_p, size as u64).expect("w");
                    } else if rng.below(2) == 0 {
                        tx.free(cur).expect("free");
                        tx.write(slot, PPtr::null()).expect("w");
                        tx.write(size_p, 0).expect("w");
                    } else {
                        let size = *tx.get(size_p).expect("get") as usize;
                        let data = PSlice::<u8>::from_raw(cur.addr(), size);
                        let at = rng.below(size as u64) as usize;
                        let v = rng.next() as u8;
                        tx.update_slice(data, at..size, |x| x.fill(v))
                            .expect("update");
                    }
                    tick(&mut step);
                }
            }
        }
        if rng.below(8) == 0 {
            tx.abort().expect("abort");
            tick(&mut step);
            continue;
        }
        let d = tx.digest_if_committed();
        report(&mut rep, format!("P {d:x}\n"));
        tick(&mut step);
        tx.commit().expect("commit");
        tick(&mut step);
        report(&mut rep, format!("C {d:x}\n"));
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
    let mut state = open_group(dir.path()).digest();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut commits_seen, mut in_flight_committed, mut in_flight_rolled_back) = (0u64, 0u64, 0u64);
    let t_start = Instant::now();
    for i in 0..iters {
        let _ = std::fs::remove_file(dir.path().join("report"));
        let seed = rng.next();
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
        let mut last_committed = state;
        let mut prepared: Option<u64> = None;
        for line in rep.lines() {
            let mut it = line.split(' ');
            match (
                it.next(),
                it.next().and_then(|h| u64::from_str_radix(h, 16).ok()),
            ) {
                (Some("P"), Some(d)) => prepared = Some(d),
                (Some("C"), Some(d)) => {
                    assert_eq!(Some(d), prepared, "iteration {i}: report out of order");
                    last_committed = d;
                    prepared = None;
                    commits_seen += 1;
                }
                _ => {}
            }
        }
        let g = open_group(dir.path());
        let now = g.digest();
        drop(g);
        if now == last_committed {
            if prepared.is_some() {
                in_flight_rolled_back += 1;
            }
        } else if Some(now) == prepared {
            in_flight_committed += 1;
        } else {
            panic!(
                "iteration {i} (seed {seed}, implicit {implicit}, kill_at {kill_at:?}): recovered state {now:x} is neither the last committed {last_committed:x} nor the prepared {prepared:x?}\nreport:\n{rep}"
            );
        }
        state = now;
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
