//! Host crash tests of prepared transactions (two-phase commit), in the style of
//! `crash.rs`: a child process (this test binary, re-executed) runs random transactions
//! against a group of two segments, most of them as a 2PC participant (`prepare`, then
//! the decision, `commit` or `abort`), some plainly, and is SIGKILLed at random points:
//! by itself at a chosen step (between any two library calls and report writes: before
//! and right after `prepare`, before and after the decision) or by the parent after a
//! random delay (anywhere, including inside `prepare`, `commit` and `abort`).
//!
//! The child writes one token to a report file before and after each step that matters
//! (`p` before `prepare`, `Y` after it returned: the vote was sent; `c`/`a` when it learned
//! the decision, before calling `commit`/`abort`; `C`/`A` after that returned). The
//! parent plays the coordinator: it reopens the group with a resolver that answers
//!
//! * the decision the child had already learned (`c`/`a` written), else
//! * a fresh random decision if the vote was sent (`Y` written: the coordinator may
//!   decide either way), else
//! * abort (the vote never reached the coordinator: presumed abort),
//!
//! and checks the bytes read back against a model (plain vectors in the parent, fed by the
//! same seeded generator): the state after the finished transactions, plus the one in
//! flight if and only if the decision was commit (a plain transaction in flight with its
//! commit started may be either). It also checks that the resolver is asked exactly when
//! `Group::prepared_tag` says the log holds a prepared transaction, that it always is once
//! `prepare` returned and before a decision, never before `prepare` was called, that the
//! tag is the one the child used, and that a plain `Group::open` refuses a prepared log.
//!
//! `VISTA_PREPARE_CRASH_ITERS` sets the number of crashes (default 300).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rio_prng::Rng;
use vista::{Backing, Durability, Error, Group, Resolution, Segment, SegmentConfig};

const A_ADDR: usize = 0x3c00_0000_0000;
const B_ADDR: usize = 0x3c10_0000_0000;
const SEG_LEN: usize = 64 << 10;

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join("a"), dir.join("b"), dir.join("log"))
}

fn backings(dir: &Path, dur: Durability) -> (Backing, Vec<(Backing, usize)>) {
    let (a, b, l) = paths(dir);
    let o = |p: &Path| Backing::open_file(p, dur).expect("open backing");
    (o(&l), vec![(o(&a), A_ADDR), (o(&b), B_ADDR)])
}

fn create_group(dir: &Path) {
    let (a, b, l) = paths(dir);
    let cfg = SegmentConfig::new(SEG_LEN).heap(false).log_capacity(4096);
    let sa = Segment::create_file(&a, A_ADDR, &cfg, Durability::Memory).expect("create a");
    let sb = Segment::create_file(&b, B_ADDR, &cfg, Durability::Memory).expect("create b");
    let lb = Backing::create_file(&l, Group::log_backing_len(64 << 10), Durability::Memory)
        .expect("log");
    Group::create(lb, vec![sa, sb]).expect("group");
}

/// `len` bytes of member `seg` at `off` set to `byte`.
#[derive(Debug, Clone, Copy)]
struct Fill {
    seg: usize,
    off: usize,
    len: usize,
    byte: u8,
}

/// One transaction of a child run: its stores, whether it goes through `prepare`, and
/// whether it (or the coordinator, for a 2PC one) decides to commit.
#[derive(Debug, Clone)]
struct Plan {
    fills: Vec<Fill>,
    two_pc: bool,
    commit: bool,
}

impl Plan {
    /// The report tokens of the whole transaction.
    fn tokens(&self) -> &'static [&'static str] {
        match (self.two_pc, self.commit) {
            (true, true) => &["p", "Y", "c", "C"],
            (true, false) => &["p", "Y", "a", "A"],
            (false, true) => &["c", "C"],
            (false, false) => &["a", "A"],
        }
    }
}

/// Draws the next transaction; the child and the parent both run this from the seed.
fn gen(rng: &mut Rng) -> Plan {
    let n = 1 + rng.below(6) as usize;
    let fills = (0..n)
        .map(|_| {
            let len = 1 + rng.below(300) as usize;
            Fill {
                seg: rng.below(2) as usize,
                off: rng.below((SEG_LEN - len) as u64) as usize,
                len,
                byte: rng.next_u64() as u8,
            }
        })
        .collect();
    Plan {
        fills,
        two_pc: rng.below(5) != 0,
        commit: rng.below(4) != 0,
    }
}

/// The prepare tag of transaction `j` of a child run with `seed` (never zero).
fn tag(seed: u64, j: usize) -> u64 {
    (seed & 0xffff_ffff) << 32 | (j as u64 + 1)
}

fn report(f: &mut std::fs::File, tok: &str) {
    // One write(2) per token: it reaches the page cache before the next instruction.
    f.write_all(format!("{tok}\n").as_bytes()).expect("report");
}

/// The child: runs transactions until killed (or kills itself at step `kill_at`).
fn child(dir: &Path, seed: u64, dur: Durability, kill_at: Option<u64>) {
    let (l, m) = backings(dir, dur);
    // The parent resolved whatever the last run left: nothing is prepared now.
    let mut g = Group::open(l, m).expect("open group");
    let bases = [
        g.base(0).expect("base") as usize,
        g.base(1).expect("base") as usize,
    ];
    let mut rep = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("report"))
        .expect("report file");
    report(&mut rep, "R");
    let mut rng = Rng::new(seed);
    let mut step = 0u64;
    let mut tick = || {
        step += 1;
        if Some(step) == kill_at {
            // SAFETY: killing ourselves; no memory is involved.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    };
    for j in 0.. {
        let plan = gen(&mut rng);
        let mut tx = g.begin().expect("begin");
        tick();
        for f in &plan.fills {
            let at = bases[f.seg] + f.off;
            tx.set_range(at as *const u8, f.len).expect("set_range");
            tick();
            for i in 0..f.len {
                // SAFETY: inside member `seg` (off + len <= SEG_LEN), logged just above;
                // byte-wise so that a kill can land in the middle of the update.
                unsafe { ((at + i) as *mut u8).write_volatile(f.byte) };
            }
            tick();
        }
        if plan.two_pc {
            report(&mut rep, "p");
            tick();
            tx.prepare(tag(seed, j)).expect("prepare");
            tick();
            report(&mut rep, "Y");
            tick();
        }
        if plan.commit {
            report(&mut rep, "c");
            tick();
            tx.commit().expect("commit");
            tick();
            report(&mut rep, "C");
        } else {
            report(&mut rep, "a");
            tick();
            tx.abort().expect("abort");
            tick();
            report(&mut rep, "A");
        }
        tick();
    }
}

/// The model: both members' bytes.
#[derive(Clone, PartialEq, Eq)]
struct Model([Vec<u8>; 2]);

impl Model {
    fn apply(&mut self, p: &Plan) {
        for f in &p.fills {
            self.0[f.seg][f.off..f.off + f.len].fill(f.byte);
        }
    }

    fn read(g: &Group) -> Model {
        let seg = |i: usize| {
            let b = g.base(i).expect("base") as *const u8;
            // SAFETY: member i is mapped readable for SEG_LEN bytes while `g` lives, and
            // no transaction runs (`g` is borrowed shared).
            unsafe { std::slice::from_raw_parts(b, SEG_LEN) }.to_vec()
        };
        Model([seg(0), seg(1)])
    }

    fn diff(&self, want: &Model) -> String {
        for s in 0..2 {
            if let Some(i) = (0..SEG_LEN).find(|&i| self.0[s][i] != want.0[s][i]) {
                return format!(
                    "member {s} first differs at {i}: {:#x}, model {:#x}",
                    self.0[s][i], want.0[s][i]
                );
            }
        }
        "no difference".into()
    }
}

/// Where the child got in the transaction that was in flight when it died.
struct InFlight {
    plan: Plan,
    /// Its index in the run (for its tag).
    j: usize,
    /// How many of its tokens were reported.
    got: usize,
}

/// Replays the report against the generator: the model after every finished transaction,
/// and the one in flight.
fn replay(start: &Model, seed: u64, rep: &str, what: &str) -> (Model, InFlight) {
    let toks: Vec<&str> = rep.lines().filter(|l| *l != "R").collect();
    let mut rng = Rng::new(seed);
    let mut model = start.clone();
    let mut at = 0;
    for j in 0.. {
        let plan = gen(&mut rng);
        let want = plan.tokens();
        let got = toks[at..].len().min(want.len());
        assert_eq!(
            &toks[at..at + got],
            &want[..got],
            "{what}: report does not follow transaction {j}'s plan"
        );
        if got < want.len() {
            assert_eq!(
                at + got,
                toks.len(),
                "{what}: tokens after an unfinished tx"
            );
            return (model, InFlight { plan, j, got });
        }
        if plan.commit {
            model.apply(&plan);
        }
        at += got;
    }
    unreachable!()
}

fn spawn(dir: &Path, seed: u64, msync: bool, kill_at: Option<u64>) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut c = Command::new(exe);
    c.args([
        "--exact",
        "prepare_crash_campaign",
        "--test-threads=1",
        "--nocapture",
        "-q",
    ])
    .env("VISTA_PREPARE_CHILD", dir)
    .env("VISTA_PREPARE_SEED", seed.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if msync {
        c.env("VISTA_PREPARE_MSYNC", "1");
    }
    if let Some(k) = kill_at {
        c.env("VISTA_PREPARE_KILL_AT", k.to_string());
    }
    c.spawn().expect("spawn child")
}

fn child_stderr(c: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = c.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    err
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
                return;
            }
            panic!(
                "child exited before it was ready: {st}\n{}",
                child_stderr(child)
            );
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

/// Counts of what the campaign saw, to show it tested something.
#[derive(Default, Debug)]
struct Seen {
    finished: u64,
    asked: u64,
    must_ask: u64,
    resolved_commit: u64,
    resolved_abort: u64,
    in_doubt_committed: u64,
}

#[test]
fn prepare_crash_campaign() {
    if let Ok(dir) = std::env::var("VISTA_PREPARE_CHILD") {
        let seed = std::env::var("VISTA_PREPARE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let dur = if std::env::var("VISTA_PREPARE_MSYNC").is_ok() {
            Durability::Msync
        } else {
            Durability::Memory
        };
        let kill_at = std::env::var("VISTA_PREPARE_KILL_AT")
            .ok()
            .and_then(|s| s.parse().ok());
        return child(Path::new(&dir), seed, dur, kill_at);
    }
    let iters: u64 = std::env::var("VISTA_PREPARE_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().expect("tempdir");
    create_group(dir.path());
    let mut model = Model([vec![0; SEG_LEN], vec![0; SEG_LEN]]);
    let mut rng = Rng::new(0x2bc0_5eed_0000_0001);
    let mut seen = Seen::default();
    let t_start = Instant::now();
    for i in 0..iters {
        let _ = std::fs::remove_file(dir.path().join("report"));
        let seed = rng.next_u64();
        let msync = i % 4 == 3;
        let self_kill = i % 3 != 0;
        let kill_at = self_kill.then(|| 1 + rng.below(60));
        let mut c = spawn(dir.path(), seed, msync, kill_at);
        wait_for_ready(dir.path(), &mut c);
        if !self_kill {
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        }
        let st = wait_dead(&mut c);
        use std::os::unix::process::ExitStatusExt;
        if st.signal() != Some(libc::SIGKILL) {
            panic!(
                "iteration {i}: child ended with {st}, not SIGKILL\n{}",
                child_stderr(&mut c)
            );
        }
        let rep = std::fs::read_to_string(dir.path().join("report")).unwrap_or_default();
        let what = format!("iteration {i} (seed {seed}, kill_at {kill_at:?})");
        let (committed, fl) = replay(&model, seed, &rep, &what);
        seen.finished += fl.j as u64;
        let expect_tag = tag(seed, fl.j);
        let tokens = fl.plan.tokens();
        let done = &tokens[..fl.got];
        // The coordinator: what it answers if asked, and whether it must be asked.
        let vote_sent = done.contains(&"Y");
        let learned = done.iter().find_map(|t| match *t {
            "c" => Some(Resolution::Commit),
            "a" => Some(Resolution::Abort),
            _ => None,
        });
        let fresh = if rng.below(2) == 0 {
            Resolution::Commit
        } else {
            Resolution::Abort
        };
        let answer = match (learned, vote_sent) {
            (Some(d), _) => d,
            (None, true) => fresh,
            (None, false) => Resolution::Abort,
        };
        let must_ask = fl.plan.two_pc && vote_sent && learned.is_none();
        let may_ask = fl.plan.two_pc && done.contains(&"p");

        let peek = {
            let (l, _) = backings(dir.path(), Durability::Memory);
            Group::prepared_tag(&l).expect("prepared_tag")
        };
        if let Some(t) = peek {
            let (l, m) = backings(dir.path(), Durability::Memory);
            match Group::open(l, m) {
                Err(Error::Prepared { tag }) => assert_eq!(tag, t, "{what}"),
                Err(e) => panic!("{what}: plain open of a prepared log failed with {e}"),
                Ok(_) => panic!("{what}: plain open of a prepared log (tag {t:#x}) succeeded"),
            }
        }
        let mut asked = None;
        let g = {
            let (l, m) = backings(dir.path(), Durability::Memory);
            Group::open_resolving(l, m, &mut |t| {
                asked = Some(t);
                Ok(answer)
            })
            .expect("open_resolving")
        };
        let status = format!(
            "{what}: in flight: tx {} ({:?}), reported {done:?}; prepared_tag {peek:?}, resolver asked {asked:?}, answer {answer:?}\nreport:\n{rep}",
            fl.j, fl.plan.tokens()
        );
        assert_eq!(asked, peek, "{status}: asked iff prepared_tag said so");
        if must_ask {
            seen.must_ask += 1;
            assert_eq!(
                asked,
                Some(expect_tag),
                "{status}: a voted, undecided tx not asked"
            );
        }
        if let Some(t) = asked {
            assert!(may_ask, "{status}: asked before prepare was called");
            assert_eq!(t, expect_tag, "{status}: wrong tag");
            seen.asked += 1;
            assert_eq!(
                g.recovery().resolved,
                Some((t, answer)),
                "{status}: recovery report"
            );
            match answer {
                Resolution::Commit => seen.resolved_commit += 1,
                Resolution::Abort => seen.resolved_abort += 1,
            }
        }
        let mut next = committed.clone();
        next.apply(&fl.plan);
        let now = Model::read(&g);
        let ok = if fl.plan.two_pc {
            let want = if answer == Resolution::Commit {
                &next
            } else {
                &committed
            };
            if now == *want && answer == Resolution::Commit && learned.is_none() {
                seen.in_doubt_committed += 1;
            }
            now == *want
        } else if learned == Some(Resolution::Commit) {
            now == committed || now == next
        } else {
            now == committed
        };
        assert!(
            ok,
            "{status}\nthe recovered state is not what the decision says: {} (against the state without tx {})",
            now.diff(&committed),
            fl.j
        );
        drop(g);
        model = now;
    }
    eprintln!(
        "prepare crash campaign: {iters} crashes in {:.1} s: {seen:?}",
        t_start.elapsed().as_secs_f64()
    );
    assert!(seen.finished > 0, "no transaction ever finished");
    assert!(
        seen.must_ask > 0 && seen.resolved_commit > 0 && seen.resolved_abort > 0,
        "the campaign never crashed a prepared transaction both ways: {seen:?}"
    );
}
