//! Crash tests with real processes: the demo binaries on file-backed segments in a
//! temporary directory, talking UDP over 127.0.0.1, killed with SIGKILL at random moments
//! and restarted. The oracle is a model computed here from the seeds alone.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rio_prng::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_vistagram-demo");
const INITIAL: i64 = 1_000_000;

/// A restartable process: its arguments, and the child while it runs. Dropping it kills it.
struct Proc {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    dir: PathBuf,
    starts: u32,
}

impl Proc {
    fn new(dir: &Path, name: &str, args: Vec<String>, env: &[(&str, &str)]) -> Proc {
        let mut p = Proc {
            name: name.into(),
            args,
            env: env
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            child: None,
            dir: dir.into(),
            starts: 0,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        self.starts += 1;
        let out =
            std::fs::File::create(self.dir.join(format!("{}.{}.out", self.name, self.starts)))
                .unwrap();
        let err =
            std::fs::File::create(self.dir.join(format!("{}.{}.err", self.name, self.starts)))
                .unwrap();
        let mut c = Command::new(BIN);
        c.args(&self.args)
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.child = Some(c.spawn().unwrap());
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// `Some(true)`: exited successfully; `Some(false)`: failed; `None`: running / killed.
    fn poll(&mut self) -> Option<bool> {
        let c = self.child.as_mut()?;
        let st = c.try_wait().unwrap()?;
        self.child = None;
        Some(st.success())
    }

    fn last(&self, what: &str) -> String {
        std::fs::read_to_string(
            self.dir
                .join(format!("{}.{}.{what}", self.name, self.starts)),
        )
        .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

/// The model: transfer `k` of the client with `seed`, recomputed independently of the
/// binary (same definition as the demo's `transfer_params`, from rio-prng).
fn transfer(
    seed: u64,
    k: u64,
    servers: u64,
    accounts: u64,
    max: u64,
) -> (usize, usize, usize, usize, i64) {
    let mut r = Rng::stream(seed, k);
    let fs = r.below(servers);
    let fa = r.below(accounts);
    let ts = r.below(servers);
    let mut ta = r.below(accounts);
    if fs == ts && fa == ta {
        ta = (ta + 1) % accounts;
    }
    let amt = 1 + r.below(max) as i64;
    (fs as usize, fa as usize, ts as usize, ta as usize, amt)
}

struct BankRun {
    model: Vec<Vec<i64>>,
    actual: Vec<Vec<i64>>,
    responses_used: Vec<usize>,
    kills: u32,
    elapsed: Duration,
}

/// Runs the bank: `servers` servers with `accounts` accounts each, `clients` clients doing
/// `transfers` transfers each, `kills` SIGKILLs of random processes at random moments.
fn run_bank(seed: u64, transfers: u64, kills: u32, drop: f64, no_dedup: bool) -> BankRun {
    let (servers, accounts, clients, max) = (3usize, 4u64, 2usize, 100u64);
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(40);
    let addrs: Vec<String> = (0..servers)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let env: Vec<(&str, &str)> = if no_dedup {
        vec![("VISTAGRAMS_TEST_NO_DEDUP", "1")]
    } else {
        vec![]
    };
    let common = |name: &str, i: usize| {
        vec![
            s("--segment"),
            s(dir.path().join(format!("{name}.seg")).display()),
            s("--drop"),
            s(drop),
            s("--seed"),
            s(seed.wrapping_add(i as u64)),
        ]
    };
    let mut procs: Vec<Proc> = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let mut args = vec![s("bank-server")];
        args.extend(common(&format!("server{i}"), i));
        args.extend([
            s("--addr"),
            a.clone(),
            s("--accounts"),
            s(accounts),
            s("--initial"),
            s(INITIAL),
        ]);
        procs.push(Proc::new(dir.path(), &format!("server{i}"), args, &env));
    }
    let seeds: Vec<u64> = (0..clients)
        .map(|c| rio_prng::nth(seed, 100 + c as u64))
        .collect();
    for (c, sd) in seeds.iter().enumerate() {
        let mut args = vec![s("bank-client")];
        args.extend(common(&format!("client{c}"), 10 + c));
        args.extend([
            s("--servers"),
            addrs.join(","),
            s("--accounts"),
            s(accounts),
            s("--transfers"),
            s(transfers),
            s("--transfer-seed"),
            s(sd),
            s("--max-amount"),
            s(max),
            s("--pause-ms"),
            s(2),
        ]);
        procs.push(Proc::new(dir.path(), &format!("client{c}"), args, &[]));
    }
    let mut rng = Rng::new(seed);
    let mut done = vec![false; clients];
    let mut killed = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(rng.range(10, 100));
    while done.iter().any(|d| !d) {
        assert!(
            Instant::now() < deadline,
            "bank did not finish in time (seed {seed}); see {:?}",
            dir.keep()
        );
        for c in 0..clients {
            let p = &mut procs[servers + c];
            match p.poll() {
                Some(true) => {
                    let out = p.last("out");
                    assert!(out.contains("rejected 0"), "client {c}: {out}");
                    done[c] = true;
                }
                Some(false) => panic!("client {c} failed: {}", p.last("err")),
                None => {}
            }
        }
        for (i, p) in procs.iter_mut().enumerate().take(servers) {
            if let Some(ok) = p.poll() {
                panic!("server {i} exited ({ok}): {}", p.last("err"));
            }
        }
        if killed < kills && Instant::now() >= next_kill {
            let alive: Vec<usize> = (0..procs.len())
                .filter(|&i| procs[i].child.is_some())
                .collect();
            if let Some(&i) = rng.pick(&alive) {
                procs[i].kill();
                killed += 1;
                std::thread::sleep(Duration::from_millis(rng.below(60)));
                procs[i].start();
            }
            next_kill = Instant::now() + Duration::from_millis(rng.range(10, 100));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the servers apply the final acks, then stop them and read their segments.
    std::thread::sleep(Duration::from_millis(600));
    let mut actual = Vec::new();
    let mut responses_used = Vec::new();
    for (i, p) in procs.iter_mut().enumerate().take(servers) {
        p.kill();
        let out = Command::new(BIN)
            .args(["bank-dump", "--segment"])
            .arg(dir.path().join(format!("server{i}.seg")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut b = vec![0i64; accounts as usize];
        for l in text.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["balance", a, v] => b[a.parse::<usize>().unwrap()] = v.parse().unwrap(),
                ["responses_used", n] => responses_used.push(n.parse().unwrap()),
                _ => panic!("dump line {l:?}"),
            }
        }
        actual.push(b);
    }
    let mut model = vec![vec![INITIAL; accounts as usize]; servers];
    for sd in &seeds {
        for k in 0..transfers {
            let (fs, fa, ts, ta, amt) = transfer(*sd, k, servers as u64, accounts, max);
            model[fs][fa] -= amt;
            model[ts][ta] += amt;
        }
    }
    BankRun {
        model,
        actual,
        responses_used,
        kills: killed,
        elapsed: t0.elapsed(),
    }
}

fn total(b: &[Vec<i64>]) -> i64 {
    b.iter().flatten().sum()
}

fn check_bank(r: &BankRun, what: &str) {
    eprintln!(
        "{what}: {} kills, {:.1} s, response-table entries left {:?}",
        r.kills,
        r.elapsed.as_secs_f64(),
        r.responses_used
    );
    assert_eq!(
        total(&r.actual),
        total(&r.model),
        "{what}: money not conserved"
    );
    assert_eq!(r.actual, r.model, "{what}: balances differ from the model");
}

#[test]
fn bank_exactly_once_under_kills() {
    let seed = rio_prng::seed_from_env("VISTAGRAMS_SEED", 11);
    let r = run_bank(seed, 300, 12, 0.0, false);
    check_bank(&r, "bank with kills");
    assert_eq!(r.kills, 12);
    // Garbage collection: acknowledged entries are freed (a killed client's last ack
    // may be lost with it, so allow a few).
    assert!(
        r.responses_used.iter().all(|&n| n <= 4),
        "{:?}",
        r.responses_used
    );
}

#[test]
fn bank_exactly_once_with_packet_loss_and_kills() {
    let seed = rio_prng::seed_from_env("VISTAGRAMS_SEED", 23);
    let r = run_bank(seed, 100, 6, 0.15, false);
    check_bank(&r, "bank with 15% loss and kills");
}

/// Negative control: the same run with the servers' duplicate filter disabled must break
/// exactly-once (retransmitted withdrawals and deposits are applied twice).
#[test]
fn bank_without_dedup_fails() {
    let seed = rio_prng::seed_from_env("VISTAGRAMS_SEED", 23);
    let r = run_bank(seed, 100, 6, 0.15, true);
    eprintln!(
        "no-dedup control: model total {} actual total {}",
        total(&r.model),
        total(&r.actual)
    );
    assert_ne!(
        r.actual, r.model,
        "the negative control did not detect duplicates"
    );
}

#[test]
fn lock_never_has_two_holders() {
    let seed = rio_prng::seed_from_env("VISTAGRAMS_SEED", 5);
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(40);
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("visible.log");
    let (clients, rounds) = (3u64, 60u64);
    let seg = |n: &str| s(dir.path().join(format!("{n}.seg")).display());
    let mut procs = vec![Proc::new(
        dir.path(),
        "server",
        vec![
            s("lock-server"),
            s("--segment"),
            seg("server"),
            s("--addr"),
            addr.clone(),
        ],
        &[],
    )];
    for c in 1..=clients {
        procs.push(Proc::new(
            dir.path(),
            &format!("client{c}"),
            vec![
                s("lock-client"),
                s("--segment"),
                seg(&format!("client{c}")),
                s("--server"),
                addr.clone(),
                s("--name"),
                s(c),
                s("--rounds"),
                s(rounds),
                s("--log"),
                s(log.display()),
                s("--hold-ms"),
                s(4),
            ],
            &[],
        ));
    }
    let mut rng = Rng::new(seed);
    let mut done = vec![false; clients as usize];
    let (mut killed, kills) = (0, 12);
    let mut next_kill = Instant::now() + Duration::from_millis(rng.range(5, 50));
    while done.iter().any(|d| !d) {
        assert!(
            Instant::now() < deadline,
            "lock test did not finish; see {:?}",
            dir.keep()
        );
        for c in 0..clients as usize {
            match procs[1 + c].poll() {
                Some(true) => done[c] = true,
                Some(false) => panic!("client {c} failed: {}", procs[1 + c].last("err")),
                None => {}
            }
        }
        if let Some(ok) = procs[0].poll() {
            panic!("server exited ({ok}): {}", procs[0].last("err"));
        }
        if killed < kills && Instant::now() >= next_kill {
            let alive: Vec<usize> = (0..procs.len())
                .filter(|&i| procs[i].child.is_some())
                .collect();
            if let Some(&i) = rng.pick(&alive) {
                procs[i].kill();
                killed += 1;
                std::thread::sleep(Duration::from_millis(rng.below(40)));
                procs[i].start();
            }
            next_kill = Instant::now() + Duration::from_millis(rng.range(5, 50));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    procs.clear();
    // The log: an ACQ of (c, r) only while nobody else holds the lock. A crash may repeat
    // a holder's own events (same c and r), never interleave another's.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut holder: Option<(u64, u64)> = None;
    let mut held: HashMap<u64, u64> = HashMap::new();
    for (n, l) in text.lines().enumerate() {
        let w: Vec<u64> = l
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        let cr = (w[0], w[1]);
        if l.starts_with("ACQ") {
            assert!(
                holder.is_none() || holder == Some(cr),
                "line {n}: {cr:?} acquired while {holder:?} holds the lock (seed {seed})\n{text}"
            );
            holder = Some(cr);
            held.insert(cr.0, cr.1);
        } else {
            assert!(l.starts_with("REL"), "line {n}: {l}");
            assert!(
                holder == Some(cr) || holder.is_none(),
                "line {n}: release by non-holder {cr:?}"
            );
            holder = None;
        }
    }
    for c in 1..=clients {
        assert_eq!(
            held.get(&c),
            Some(&(rounds - 1)),
            "client {c} did not finish its rounds"
        );
    }
    assert_eq!(
        killed, kills,
        "the clients finished before all kills happened"
    );
    eprintln!(
        "lock: {killed} kills, {} log lines, {:.1} s",
        text.lines().count(),
        t0.elapsed().as_secs_f64()
    );
}
