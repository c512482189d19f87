//! A computation of several processes under `dc run` (a coordinator `dc coord` for the
//! 2PC protocols, none for the single-process protocols, under which each member commits
//! on its own with sends as visible events), SIGKILLs of seeded random members at random
//! moments, each killed member's command run again; or the same computation without
//! Discount Checking (the failure-free reference). What the tests check is theirs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use dc_drive::dist;
use discount::oracle::{self, Event};

/// One process of the computation.
#[derive(Debug, Clone)]
pub struct Member {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// A file for its standard input (each run opens it again; Discount Checking puts the
    /// offset back), or nothing.
    pub stdin: Option<PathBuf>,
}

/// How to run it.
pub struct Plan<'a> {
    /// `None`: plain, without Discount Checking (the reference run).
    pub protocol: Option<&'a str>,
    pub members: Vec<Member>,
    pub kills: usize,
    pub seed: u64,
    /// The first kill after this many milliseconds (a random part of `spread_ms` added),
    /// and the next ones as far apart.
    pub first_ms: u64,
    pub spread_ms: u64,
    pub deadline: Duration,
    /// Negative control: the coordinator does not roll the others back.
    pub no_rollback: bool,
    /// Extra `DC_*` settings for the members.
    pub env: Vec<(String, String)>,
    /// Record each member's event trace (`dc run --trace`; the tests' oracles need it,
    /// the benchmark does without).
    pub trace: bool,
    /// Where the run's directory (state directories included) is made (default: the
    /// system's temporary directory).
    pub root: Option<PathBuf>,
}

impl<'a> Plan<'a> {
    /// A run of `members` under `protocol` (`None`: plain) with no kill, traces on, a
    /// 60 s deadline and no extra settings; the tests change what they need with
    /// `Plan { kills: 3, ..Plan::new(..) }`.
    pub fn new(protocol: Option<&'a str>, members: Vec<Member>) -> Plan<'a> {
        Plan {
            protocol,
            members,
            kills: 0,
            seed: 0,
            first_ms: 0,
            spread_ms: 0,
            deadline: Duration::from_secs(60),
            no_rollback: false,
            env: Vec::new(),
            trace: true,
            root: None,
        }
    }
}

/// The seven protocols of the thesis's study (Figures 6.3 to 6.7), by the names `dc run
/// --protocol` takes, in the order the tests and the benchmark list them.
pub const PROTOCOLS: [&str; 7] = [
    "cpvs",
    "cand",
    "cbndvs",
    "cand-log",
    "cbndvs-log",
    "cpv-2pc",
    "cbndv-2pc",
];

/// What happened.
pub struct Outcome {
    /// Each member's standard output, all its runs appended.
    pub outs: Vec<String>,
    /// Each member's trace (empty for the plain run).
    pub traces: Vec<Vec<Event>>,
    /// The member killed by each kill, in order.
    pub killed: Vec<usize>,
    /// The coordinator's last line (2PC protocols).
    pub coord_last: Option<String>,
    /// From the first member's start to the last member's exit.
    pub wall: Duration,
    pub dir: tempfile::TempDir,
}

struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(dir: &Path, plan: &Plan<'_>, coord: Option<&str>, id: usize) -> Result<Child> {
    let m = &plan.members[id];
    let append = |name: String| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
    };
    let mut cmd = match plan.protocol {
        Some(p) => {
            let mut c = Command::new(super::dc_bin());
            let state = dir.join(format!("m{id}"));
            c.args(dist::dc_run_args(
                p,
                &state.to_string_lossy(),
                None,
                plan.trace,
                coord,
                id,
            ));
            c.arg("--").args(&m.argv);
            c.envs(super::dc_env())
                .envs(plan.env.iter().cloned())
                .env("DC_PRELOAD", super::preload());
            c
        }
        None => {
            let mut c = Command::new(&m.argv[0]);
            c.args(&m.argv[1..]);
            c
        }
    };
    cmd.stdin(match &m.stdin {
        Some(p) => Stdio::from(std::fs::File::open(p)?),
        None => Stdio::null(),
    })
    .stdout(append(format!("out{id}"))?)
    .stderr(append(format!("err{id}"))?);
    Ok(cmd.spawn()?)
}

/// Runs `plan`.
pub fn run(plan: &Plan<'_>) -> Result<Outcome> {
    let t = match &plan.root {
        Some(r) => tempfile::tempdir_in(r)?,
        None => tempfile::tempdir()?,
    };
    let dir = t.path().to_path_buf();
    let n = plan.members.len();
    let twopc = plan.protocol.is_some_and(|p| p.contains("2pc"));
    let mut coord = Reap(None);
    let mut addr = None;
    if twopc {
        let mut c = Command::new(super::dc_bin())
            .args([
                "coord",
                "--members",
                &n.to_string(),
                "--exit-when-done",
                "-v",
            ])
            .arg("--state")
            .arg(dir.join("coord.state"))
            .env_remove("DC_COORD_TEST_NO_ROLLBACK")
            .envs(
                plan.no_rollback
                    .then_some(("DC_COORD_TEST_NO_ROLLBACK", "1")),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("coord.err"))?)
            .spawn()?;
        let mut line = String::new();
        BufReader::new(c.stdout.take().context("coordinator stdout")?).read_line(&mut line)?;
        addr = Some(line.trim().to_string());
        coord.0 = Some(c);
    }
    let mut members: Vec<Reap> = (0..n)
        .map(|i| spawn(&dir, plan, addr.as_deref(), i).map(|c| Reap(Some(c))))
        .collect::<Result<_>>()?;
    // A plan without kills draws nothing worth reproducing: no seed line for it.
    let mut rng = if plan.kills > 0 {
        super::plan_rng(plan.seed)
    } else {
        rio_prng::Rng::new(plan.seed)
    };
    let start = Instant::now();
    let mut killed = Vec::new();
    let mut next_kill =
        start + Duration::from_millis(plan.first_ms + rng.below(plan.spread_ms.max(1)));
    loop {
        if start.elapsed() >= plan.deadline {
            // Where the members that still run are (for the report).
            for (i, m) in members.iter().enumerate() {
                if let Some(c) = m.0.as_ref() {
                    let pid = c.id();
                    let rd = |f: &str| {
                        std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default()
                    };
                    eprintln!(
                        "member {i} (pid {pid}) still runs: syscall {} wchan {}",
                        rd("syscall").trim(),
                        rd("wchan").trim()
                    );
                }
            }
        }
        if start.elapsed() >= plan.deadline && std::env::var_os("DIST_KEEP").is_some() {
            eprintln!("kept {}", dir.display());
            let _ = t.keep();
            anyhow::bail!("DIST_KEEP: deadline, kept {}", dir.display());
        }
        ensure!(
            start.elapsed() < plan.deadline,
            "the computation did not finish in {:?} (kills so far: {killed:?}); member errors: {}",
            plan.deadline,
            (0..n)
                .map(|i| std::fs::read_to_string(dir.join(format!("err{i}"))).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let mut running = 0;
        for (i, m) in members.iter_mut().enumerate() {
            if let Some(c) = m.0.as_mut() {
                match c.try_wait()? {
                    Some(st) => {
                        let err = std::fs::read_to_string(dir.join(format!("err{i}")))
                            .unwrap_or_default();
                        ensure!(st.success(), "member {i} exited with {st}: {err}");
                        m.0 = None;
                    }
                    None => running += 1,
                }
            }
        }
        if running == 0 {
            break;
        }
        if killed.len() < plan.kills && Instant::now() >= next_kill {
            let id = rng.below(n as u64) as usize;
            if let Some(mut c) = members[id].0.take() {
                c.kill()?;
                c.wait()?;
                killed.push(id);
                std::thread::sleep(Duration::from_millis(20));
                members[id].0 = Some(spawn(&dir, plan, addr.as_deref(), id)?);
            }
            next_kill = Instant::now()
                + Duration::from_millis(plan.first_ms + rng.below(plan.spread_ms.max(1)));
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    let wall = start.elapsed();
    ensure!(
        killed.len() == plan.kills,
        "only {} of {} kills landed before the end",
        killed.len(),
        plan.kills
    );
    let mut coord_last = None;
    if let Some(mut c) = coord.0.take() {
        let st = c.wait()?;
        let log = std::fs::read_to_string(dir.join("coord.err"))?;
        ensure!(st.success(), "dc coord failed: {log}");
        coord_last = log.lines().last().map(str::to_string);
    }
    let mut outs = Vec::new();
    let mut traces = Vec::new();
    for i in 0..n {
        outs.push(std::fs::read_to_string(dir.join(format!("out{i}")))?);
        traces.push(if plan.protocol.is_some() && plan.trace {
            oracle::trace_since(&dir.join(format!("m{i}/trace")), 0)?.0
        } else {
            Vec::new()
        });
    }
    if std::env::var_os("DIST_KEEP").is_some() && plan.protocol.is_some() {
        eprintln!("kept {}", dir.display());
        let _ = t.keep();
        return Err(anyhow::anyhow!("DIST_KEEP: kept {}", dir.display()));
    }
    Ok(Outcome {
        outs,
        traces,
        killed,
        coord_last,
        wall,
        dir: t,
    })
}

/// Definition 2 for one member's whole output: [`dist::repetitions_only`].
pub fn repetitions_only(who: &str, out: &str, want: &[&str]) -> Result<usize> {
    dist::repetitions_only(who, out, want)
}

/// Save-work on the merged traces: [`dist::save_work`].
pub fn save_work(o: &Outcome) -> Result<()> {
    dist::save_work(&o.traces)
}

/// No run started over after a kill: [`dist::resumed`].
pub fn resumed(o: &Outcome) -> Result<()> {
    dist::resumed(&o.traces)
}

/// A port base for a test's members: distinct for each test of this process and for
/// concurrent test processes.
pub fn port_base(test: u16) -> u16 {
    20000 + ((std::process::id() % 400) as u16) * 100 + test * 8
}

/// Compiles `apps/<name>.c` into `dir`: [`dist::build_app`].
pub fn build_app(name: &str, dir: &Path) -> Result<PathBuf> {
    dist::build_app(name, dir)
}

// Each test binary uses its own of these.
#[allow(unused_imports)]
pub use dist::{CHAT_CLIENTS, CHAT_LINES, HEAT_WORKERS};

/// The heat computation on this machine: [`HEAT_WORKERS`] workers on ports `base`..,
/// `steps` steps, worker 0 printing [`dist::HEAT_LINES`] lines ([`dist::heat_argv`]).
pub fn heat_members(bin: &Path, base: u16, steps: usize) -> Vec<Member> {
    let peers: Vec<String> = (0..HEAT_WORKERS)
        .map(|i| format!("127.0.0.1:{}", base + i as u16))
        .collect();
    (0..HEAT_WORKERS)
        .map(|i| Member {
            argv: dist::heat_argv(
                &bin.display().to_string(),
                i,
                steps,
                dist::HEAT_LINES,
                &peers,
            ),
            stdin: None,
        })
        .collect()
}

/// The chat computation: a server on `port` and [`CHAT_CLIENTS`] clients, each typing
/// [`CHAT_LINES`] lines ([`dist::chat_input`]) from a file written into `dir`. Also
/// returns every line as the conversation shows it (`c<N>: <text>`).
pub fn chat_members(bin: &Path, port: u16, dir: &Path) -> Result<(Vec<Member>, Vec<String>)> {
    let bin = bin.display().to_string();
    let mut members = vec![Member {
        argv: dist::chat_server_argv(&bin, port),
        stdin: None,
    }];
    for c in 0..CHAT_CLIENTS {
        let f = dir.join(format!("in{c}"));
        std::fs::write(&f, dist::chat_input(c).join("\n") + "\n")?;
        members.push(Member {
            argv: dist::chat_client_argv(&bin, c, &format!("127.0.0.1:{port}")),
            stdin: Some(f),
        });
    }
    Ok((members, dist::chat_conversation_inputs()))
}
