//! The protocol study of Lowell's thesis (section 6.2.4, Figures 6.3-6.5) on the four real
//! programs the crash tests drive (`tests/common/apps.rs`: bc, ed, nvi, sc): each
//! program's session, with no kills, run by the unmodified program (the baseline) and
//! under `dc run --protocol P` for the five protocols, with the state directory on tmpfs
//! (/dev/shm: reliable memory, standing for Rio, "Discount Checking") and on a disk file
//! system (/var/tmp) with `DC_DURABILITY=msync`, each commit durable on disk ("Discount
//! Checking-disk").
//!
//! Per run: the session's wall time (the driver's pacing included: it types the next
//! input when the program waits for it, as the thesis's scripted typist did), the
//! program's CPU time (user + system, `getrusage(RUSAGE_CHILDREN)` around the session:
//! the driver reaps the program, and `dc run` executes it in its own process) and, under
//! dc, the number of commits (`dc status`: the checkpoint's sequence number). Every
//! configuration runs `DC_APPS_REPS` times (default 5), the configurations in a new
//! seeded order in each repetition so that load drift hits all alike; medians are
//! reported. Every run's files (and output: stdout, or the screens) must equal a
//! failure-free baseline run's, or the benchmark stops.
//!
//! Output: a markdown table on stdout, progress on stderr, and in the output directory
//! (`--out DIR`, or `DC_APPS_OUT`, default `results/bench-dc-apps/` under the repository)
//! `apps.json` (every measurement, the medians and ratios) and one SVG per program, the
//! five protocols placed in the thesis's protocol space with their commits and run-time
//! ratios. `--apps bc,ed` (or `DC_APPS`) runs some of the programs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::apps::{App, Driver, ALL, DC_ENV};
use common::{dc_bin, files, lossy, pty};
use serde_json::json;

/// The five protocols of Figures 6.3-6.5, in the thesis's order.
const PROTOCOLS: [&str; 5] = ["cpvs", "cand", "cbndvs", "cand-log", "cbndvs-log"];

/// Where a protocol sits in the protocol space (Section 2.3.1.7, Figure 6.1): x, the
/// effort to identify and convert non-deterministic events (CPVS treats every event as
/// possibly non-deterministic; CAND and CBNDVS identify the non-deterministic ones; the
/// -LOG protocols also convert input into deterministic events by logging it); y, the
/// effort to identify visible events (CAND and CAND-LOG commit after every
/// non-deterministic event as if each were followed by a visible one; CPVS, CBNDVS and
/// CBNDVS-LOG identify the visible events and sends).
fn position(protocol: &str) -> (f64, f64) {
    match protocol {
        "cpvs" => (0.0, 1.0),
        "cand" => (1.0, 0.0),
        "cbndvs" => (1.0, 1.0),
        "cand-log" => (2.0, 0.0),
        _ => (2.0, 1.0),
    }
}

/// The legend of Figures 6.3-6.5.
const LEGEND: [(&str, &str); 5] = [
    ("CPVS", "commit prior to visible or send"),
    ("CAND", "commit after non-deterministic"),
    (
        "CBNDVS",
        "commit between non-deterministic and visible event or send",
    ),
    (
        "CAND-LOG",
        "commit after non-deterministic with keyboard input logged",
    ),
    (
        "CBNDVS-LOG",
        "commit between non-deterministic and visible or send, with keyboard input logged",
    ),
];

/// Where the state directory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Store {
    /// tmpfs: reliable memory, standing for Rio.
    Memory,
    /// A disk file system, each commit `msync`ed.
    Disk,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Disk => "disk",
        }
    }
    fn root(self) -> &'static Path {
        match self {
            Store::Memory => Path::new("/dev/shm"),
            Store::Disk => Path::new("/var/tmp"),
        }
    }
    fn durability(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Disk => "msync",
        }
    }
}

/// One configuration: the baseline (None) or a protocol with a store.
type Conf = Option<(&'static str, Store)>;

fn conf_name(c: Conf) -> String {
    match c {
        None => "baseline".into(),
        Some((p, s)) => format!("{p}/{}", s.name()),
    }
}

/// The regular files of one directory (name, contents).
type Files = Vec<(PathBuf, Vec<u8>)>;

/// What a run left that must equal the baseline's.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The files in the working directory and in the subdirectories the program names.
    files: Vec<(String, Files)>,
    /// Stdout (pipes), or the screen before the last input and at the end (terminal).
    out: Vec<String>,
}

/// One measured run.
struct Measure {
    wall: f64,
    user: f64,
    sys: f64,
    /// `dc status`'s checkpoint number (None: the baseline).
    commits: Option<u64>,
}

/// CPU time (user, system) of the children this process has reaped so far.
fn children_cpu() -> Result<(f64, f64)> {
    // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one `struct rusage` into the local we pass.
    let r = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ensure!(r == 0, "getrusage: {}", std::io::Error::last_os_error());
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    Ok((t(ru.ru_utime), t(ru.ru_stime)))
}

/// The checkpoint number `dc status` reports (`checkpoint: #N ...`): the commits the run
/// made. The run must have finished (`finished`): a checkpoint left valid would mean the
/// program did not exit through Discount Checking.
fn commits(state: &Path) -> Result<u64> {
    let out = Command::new(dc_bin())
        .args(["status", "--dir"])
        .arg(state)
        .output()
        .context("dc status")?;
    let text = lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "dc status failed: {text}{}",
        lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint: #"))
        .with_context(|| format!("no checkpoint line in dc status: {text}"))?;
    ensure!(
        line.contains("finished"),
        "the run did not finish under dc: {line}"
    );
    let n = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("dc status: {line}"))?;
    Ok(n)
}

/// Runs `app`'s session once, with no kills, in a fresh working directory under
/// `work_root`: the program itself (`conf` None) or under `dc run`.
fn run_once(app: &App, bin: &Path, conf: Conf, work_root: &Path) -> Result<(Measure, Outcome)> {
    let t = tempfile::Builder::new()
        .prefix("dc-apps.")
        .tempdir_in(work_root)?;
    let cwd = t.path().join("work");
    std::fs::create_dir_all(&cwd)?;
    (app.setup)(&cwd)?;
    let err = t.path().join("stderr");
    let log = t.path().join("dc.log");
    let state_root = match conf {
        Some((_, s)) => Some(
            tempfile::Builder::new()
                .prefix("dc-apps-state.")
                .tempdir_in(s.root())
                .with_context(|| format!("a state directory in {}", s.root().display()))?,
        ),
        None => None,
    };
    let mut env = (app.env)(&cwd);
    let mut argv: Vec<String> = Vec::new();
    let state = state_root.as_ref().map(|d| d.path().join("state"));
    match (conf, &state) {
        (Some((protocol, store)), Some(state)) => {
            argv.extend([
                dc_bin().display().to_string(),
                "run".into(),
                "--protocol".into(),
                protocol.into(),
                "--log".into(),
                log.display().to_string(),
                "--dir".into(),
                state.display().to_string(),
                "--".into(),
                app.binary.into(),
            ]);
            env.extend(DC_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            env.push(("DC_DURABILITY".into(), store.durability().into()));
        }
        _ => argv.push(bin.display().to_string()),
    }
    argv.extend(app.args.iter().map(|a| a.to_string()));
    let inputs = app.inputs();
    let deadline = Duration::from_secs(300);
    let why = || {
        format!(
            "{} {}: stderr: {}\ndc log: {}",
            app.name,
            conf_name(conf),
            std::fs::read_to_string(&err).unwrap_or_default(),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };

    let (u0, s0) = children_cpu()?;
    let start = Instant::now();
    let out = match app.driver {
        Driver::Prompts(_) | Driver::Bytes => {
            let target = common::Target {
                argv,
                env,
                cwd: &cwd,
                stderr: &err,
                trace: None,
                after_kill: None,
            };
            let runs = match app.driver {
                Driver::Prompts(name) => common::drive(&target, name, &inputs, &[], deadline),
                _ => common::drive_bytes(&target, &inputs, &[], deadline),
            }
            .with_context(why)?;
            ensure!(
                runs.len() == 1 && runs[0].code == Some(0),
                "{}: {} runs, exit {:?}",
                why(),
                runs.len(),
                runs.last().and_then(|r| r.code)
            );
            vec![lossy(&runs[0].out)]
        }
        Driver::Screen(pacing) => {
            let target = pty::Target {
                argv,
                env,
                cwd: &cwd,
                trace: None,
            };
            let s = pty::drive(&target, &inputs, pacing, &[], deadline).with_context(why)?;
            ensure!(s.runs.len() == 1, "{}: {} runs", why(), s.runs.len());
            vec![s.before_last, pty::show(s.screen.screen())]
        }
    };
    let wall = start.elapsed().as_secs_f64();
    let (u1, s1) = children_cpu()?;
    let commits = match &state {
        Some(st) => Some(commits(st).with_context(why)?),
        None => None,
    };
    let files = std::iter::once(".")
        .chain(app.dirs.iter().copied())
        .map(|d| (d.to_string(), files(&cwd.join(d))))
        .collect();
    Ok((
        Measure {
            wall,
            user: u1 - u0,
            sys: s1 - s0,
            commits,
        },
        Outcome { files, out },
    ))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The medians of one (app, configuration).
#[derive(Debug, Clone, Copy)]
struct Medians {
    wall: f64,
    cpu: f64,
    commits: Option<f64>,
}

/// What the summary says about one protocol of one app.
struct Row {
    protocol: &'static str,
    commits: [Option<f64>; 2],
    wall: [f64; 2],
    cpu: [f64; 2],
}

fn fmt_commits(c: [Option<f64>; 2]) -> String {
    let f = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.0}"));
    if c[0] == c[1] {
        f(c[0])
    } else {
        format!("{} / {}", f(c[0]), f(c[1]))
    }
}

/// The app's plot: the five protocols in the protocol space (Figures 6.3-6.5).
fn plot(path: &Path, app: &App, rows: &[Row], base: Medians, reps: usize) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let root = SVGBackend::new(path, (1000, 780)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(590);
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            format!("Performance of recovery protocols for {}", app.name),
            ("sans-serif", 24),
        )
        .margin(20)
        .build_cartesian_2d(-0.8f64..3.0f64, -0.45f64..1.6f64)?;
    let axis = ShapeStyle::from(&BLACK).stroke_width(2);
    // The axes, from the origin (a protocol that commits every event).
    chart.draw_series(LineSeries::new([(0.0, 0.0), (2.9, 0.0)], axis))?;
    chart.draw_series(LineSeries::new([(0.0, 0.0), (0.0, 1.5)], axis))?;
    let arrow = |tip: (f64, f64), a: (f64, f64), b: (f64, f64)| {
        Polygon::new(vec![tip, a, b], BLACK.filled())
    };
    chart.draw_series([
        arrow((2.9, 0.0), (2.84, 0.03), (2.84, -0.03)),
        arrow((0.0, 1.5), (-0.018, 1.44), (0.018, 1.44)),
    ])?;
    let small = ("sans-serif", 14).into_font().color(&BLACK);
    let centred = small.clone().pos(Pos::new(HPos::Center, VPos::Top));
    let right = small.clone().pos(Pos::new(HPos::Right, VPos::Center));
    let label = ("sans-serif", 17).into_font().color(&BLACK);
    let bold = ("sans-serif", 17)
        .into_font()
        .style(FontStyle::Bold)
        .color(&BLACK);
    chart.draw_series([
        Text::new(
            "Effort made to identify/convert non-deterministic events",
            (1.1, -0.22),
            label.clone().pos(Pos::new(HPos::Center, VPos::Top)),
        ),
        Text::new("origin: commits", (-0.05, -0.05), right.clone()),
        Text::new("every event", (-0.05, -0.11), right.clone()),
    ])?;
    // The vertical axis's title, turned.
    chart.draw_series([Text::new(
        "Effort made to identify/convert visible events",
        (-0.7, 0.75),
        label
            .clone()
            .pos(Pos::new(HPos::Center, VPos::Center))
            .transform(FontTransform::Rotate270),
    )])?;
    // Ticks: what each step of the axes means.
    for (x, s) in [
        (1.0, "identify non-deterministic events"),
        (2.0, "... and log input"),
    ] {
        chart.draw_series([EmptyElement::at((x, 0.0))
            + PathElement::new(vec![(0, -5), (0, 5)], axis)
            + Text::new(s, (0, 12), centred.clone())])?;
    }
    chart.draw_series([EmptyElement::at((0.0, 1.0))
        + PathElement::new(vec![(-5, 0), (5, 0)], axis)
        + Text::new("identify", (-10, -9), right.clone())
        + Text::new("visible events", (-10, 9), right.clone())])?;
    // Each protocol: its point, and above it its name, commits and ratios.
    for r in rows {
        let (x, y) = position(r.protocol);
        let lines = [
            format!("commits: {}", fmt_commits(r.commits)),
            format!(
                "run-time ratio: Rio {:.2}, disk {:.2}",
                r.wall[0], r.wall[1]
            ),
            format!("CPU-time ratio: Rio {:.2}, disk {:.2}", r.cpu[0], r.cpu[1]),
        ];
        chart.draw_series([EmptyElement::at((x, y))
            + Circle::new((0, 0), 6, BLUE.filled())
            + Text::new(r.protocol.to_uppercase(), (8, -86), bold.clone())])?;
        chart.draw_series(lines.iter().enumerate().map(|(i, l)| {
            EmptyElement::at((x, y)) + Text::new(l.clone(), (8, -62 + 19 * i as i32), small.clone())
        }))?;
    }
    // The legend and the conditions, under the plot.
    let mut y = 10;
    for (name, what) in LEGEND {
        lower.draw(&Text::new(
            format!("{name}: {what}"),
            (40, y),
            small.clone(),
        ))?;
        y += 20;
    }
    y += 10;
    for l in [
        format!(
            "Run-time ratio: the session's wall time under dc run / the unmodified {}'s ({:.2} s); \
             CPU-time ratio likewise ({:.3} s user + system).",
            app.name, base.wall, base.cpu
        ),
        "Rio: the state directory on tmpfs (/dev/shm), standing for Rio's reliable memory; \
         disk: on /var/tmp with DC_DURABILITY=msync."
            .to_string(),
        format!(
            "Median of {reps} runs; the session: {} inputs, typed when the program waits for the next.",
            app.session.len()
        ),
    ] {
        lower.draw(&Text::new(l, (40, y), small.clone()))?;
        y += 20;
    }
    root.present()?;
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Args {
    out: PathBuf,
    apps: Vec<&'static App>,
    reps: usize,
}

/// The command line (`cargo bench -p dc --bench apps -- [OPTIONS]`); each option's default
/// comes from the environment variable named in its help, which scripts/bench-dc-apps.sh
/// documents.
#[derive(clap::Parser, Debug)]
#[command(
    name = "apps",
    about = "The thesis's protocol study (6.2.4) on real programs: commits and run-time ratios per protocol, memory and disk stores, with plots"
)]
struct Cli {
    /// Where the table, apps.json and the plots go [default: $DC_APPS_OUT, else
    /// results/bench-dc-apps].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Some of the programs, comma-separated (bc, ed, nvi, sc) [default: $DC_APPS, else all].
    #[arg(long, value_name = "LIST")]
    apps: Option<String>,
    /// Repetitions per configuration [default: $DC_APPS_REPS, else 5].
    #[arg(long)]
    reps: Option<usize>,
    /// What `cargo bench` passes to a bench without the test harness (ignored).
    #[arg(long, hide = true)]
    bench: bool,
}

fn args() -> Result<Args> {
    let cli = <Cli as clap::Parser>::parse();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let out = cli
        .out
        .or_else(|| std::env::var_os("DC_APPS_OUT").map(PathBuf::from))
        .unwrap_or_else(|| repo.join("results/bench-dc-apps"));
    let apps: Vec<&'static App> = match cli.apps.or_else(|| std::env::var("DC_APPS").ok()) {
        None => ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|n| {
                ALL.iter()
                    .copied()
                    .find(|a| a.name == n.trim())
                    .with_context(|| format!("no app {n:?} (bc, ed, nvi, sc)"))
            })
            .collect::<Result<_>>()?,
    };
    let reps = match cli.reps {
        Some(n) => n,
        None => match std::env::var("DC_APPS_REPS") {
            Ok(v) => v
                .parse()
                .with_context(|| format!("DC_APPS_REPS={v:?}: a positive number"))?,
            Err(_) => 5,
        },
    };
    ensure!(reps > 0, "the repetitions must be at least 1 (got {reps})");
    Ok(Args { out, apps, reps })
}

fn main() -> Result<()> {
    let a = args()?;
    ensure!(
        discount::sud::available(),
        "Syscall User Dispatch is not available on this kernel (Linux 5.11+): dc run cannot work"
    );
    let mut bins = Vec::new();
    for app in &a.apps {
        let bin = app
            .path()
            .with_context(|| format!("{} is not installed (make setup installs it)", app.binary))?;
        bins.push(bin);
    }
    for s in [Store::Memory, Store::Disk] {
        ensure!(s.root().is_dir(), "{} does not exist", s.root().display());
    }
    let work = tempfile::Builder::new().prefix("dc-apps.").tempdir()?;
    let load_start = loadavg();
    let began = Instant::now();

    // The configurations of one repetition.
    let mut confs: Vec<(usize, Conf)> = Vec::new();
    for i in 0..a.apps.len() {
        confs.push((i, None));
        for p in PROTOCOLS {
            for s in [Store::Memory, Store::Disk] {
                confs.push((i, Some((p, s))));
            }
        }
    }

    // The reference of each app: a failure-free baseline run, and one run under dc to
    // warm up (neither measured; both checked).
    let mut reference: Vec<Outcome> = Vec::new();
    for (app, bin) in a.apps.iter().zip(&bins) {
        eprintln!("{}: reference run and warm-up", app.name);
        let (_, want) = run_once(app, bin, None, work.path())?;
        let (_, got) = run_once(app, bin, Some(("cpvs", Store::Memory)), work.path())?;
        check(app, None, &got, &want)?;
        reference.push(want);
    }

    let total = confs.len() * a.reps;
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")?
            .progress_chars("=> "),
    );
    let mut runs: Vec<serde_json::Value> = Vec::new();
    let mut by_conf: BTreeMap<(usize, String), Vec<Measure>> = BTreeMap::new();
    let mut rng = rio_prng::Rng::new(0x6_2_4);
    let mut done = 0;
    for rep in 0..a.reps {
        // A new order in each repetition (Fisher-Yates).
        let mut order = confs.clone();
        for i in (1..order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        for (pos, &(i, conf)) in order.iter().enumerate() {
            let app = a.apps[i];
            let what = format!(
                "rep {}/{}: {} {}",
                rep + 1,
                a.reps,
                app.name,
                conf_name(conf)
            );
            bar.set_message(what.clone());
            let (m, got) = run_once(app, &bins[i], conf, work.path())?;
            check(app, conf, &got, &reference[i])?;
            done += 1;
            if bar.is_hidden() {
                eprintln!(
                    "[{done}/{total}] {what}: {:.3} s wall, {:.3} s CPU{}",
                    m.wall,
                    m.user + m.sys,
                    m.commits
                        .map_or(String::new(), |c| format!(", {c} commits"))
                );
            }
            bar.inc(1);
            let (protocol, store) = match conf {
                None => ("baseline", "none"),
                Some((p, s)) => (p, s.name()),
            };
            runs.push(json!({
                "app": app.name,
                "protocol": protocol,
                "store": store,
                "rep": rep,
                "order": pos,
                "wall_s": m.wall,
                "user_s": m.user,
                "sys_s": m.sys,
                "cpu_s": m.user + m.sys,
                "commits": m.commits,
            }));
            by_conf.entry((i, conf_name(conf))).or_default().push(m);
        }
    }
    bar.finish_and_clear();
    let elapsed = began.elapsed().as_secs_f64();

    let med = |i: usize, c: Conf| -> Result<Medians> {
        let v = by_conf
            .get(&(i, conf_name(c)))
            .context("a configuration without runs")?;
        let wall: Vec<f64> = v.iter().map(|m| m.wall).collect();
        let cpu: Vec<f64> = v.iter().map(|m| m.user + m.sys).collect();
        let commits: Vec<f64> = v
            .iter()
            .filter_map(|m| m.commits)
            .map(|c| c as f64)
            .collect();
        Ok(Medians {
            wall: median(&wall),
            cpu: median(&cpu),
            commits: (!commits.is_empty()).then(|| median(&commits)),
        })
    };

    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;
    println!(
        "## Discount Checking on real programs: the protocol study (thesis 6.2.4), median of {} runs",
        a.reps
    );
    println!();
    println!(
        "Ratios: the median under `dc run --protocol P` over the unmodified program's median. \
         Memory: state on tmpfs (/dev/shm), standing for Rio; disk: state on /var/tmp, \
         `DC_DURABILITY=msync`. Wall: the whole session, typed when the program waits \
         for input; CPU: the program's user + system time. Commits: `dc status` (memory / \
         disk when they differ)."
    );
    println!();
    println!("| app | protocol | commits | wall ratio, memory | wall ratio, disk | CPU ratio, memory | CPU ratio, disk |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut summary = Vec::new();
    let mut baselines = Vec::new();
    for (i, app) in a.apps.iter().enumerate() {
        let base = med(i, None)?;
        let mut rows = Vec::new();
        for p in PROTOCOLS {
            let m = med(i, Some((p, Store::Memory)))?;
            let d = med(i, Some((p, Store::Disk)))?;
            let r = Row {
                protocol: p,
                commits: [m.commits, d.commits],
                wall: [m.wall / base.wall, d.wall / base.wall],
                cpu: [m.cpu / base.cpu, d.cpu / base.cpu],
            };
            println!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                app.name,
                p.to_uppercase(),
                fmt_commits(r.commits),
                r.wall[0],
                r.wall[1],
                r.cpu[0],
                r.cpu[1]
            );
            summary.push(json!({
                "app": app.name,
                "protocol": p,
                "memory": {"wall_s": m.wall, "cpu_s": m.cpu, "commits": m.commits,
                           "wall_ratio": r.wall[0], "cpu_ratio": r.cpu[0]},
                "disk": {"wall_s": d.wall, "cpu_s": d.cpu, "commits": d.commits,
                         "wall_ratio": r.wall[1], "cpu_ratio": r.cpu[1]},
            }));
            rows.push(r);
        }
        baselines.push((app, base));
        let svg = a.out.join(format!("{}.svg", app.name));
        plot(&svg, app, &rows, base, a.reps).with_context(|| format!("plot {}", svg.display()))?;
    }
    println!();
    println!("Baselines (the unmodified programs, median):");
    println!();
    println!("| app | inputs | wall | CPU |");
    println!("|---|---:|---:|---:|");
    for (app, b) in &baselines {
        println!(
            "| {} | {} | {:.3} s | {:.3} s |",
            app.name,
            app.session.len(),
            b.wall,
            b.cpu
        );
    }
    let load_end = loadavg();
    println!();
    println!(
        "{} runs in {elapsed:.0} s; load average {load_start} at the start, {load_end} at the end.",
        runs.len()
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let doc = json!({
        "what": "dc run on bc, ed, nvi, sc: the protocol study of Lowell's thesis 6.2.4",
        "reps": a.reps,
        "stores": {"memory": "/dev/shm, DC_DURABILITY=memory", "disk": "/var/tmp, DC_DURABILITY=msync"},
        "dc_env": DC_ENV.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "kernel": kernel.trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "elapsed_s": elapsed,
        "loadavg": {"start": load_start, "end": load_end},
        "baselines": baselines.iter().map(|(app, b)| json!({
            "app": app.name, "inputs": app.session.len(), "wall_s": b.wall, "cpu_s": b.cpu,
        })).collect::<Vec<_>>(),
        "summary": summary,
        "runs": runs,
    });
    let json_path = a.out.join("apps.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    eprintln!(
        "wrote {} and {}",
        json_path.display(),
        a.apps
            .iter()
            .map(|app| a
                .out
                .join(format!("{}.svg", app.name))
                .display()
                .to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// A run must leave what the failure-free baseline run left: its files byte for byte,
/// and its output (stdout, or the screens).
fn check(app: &App, conf: Conf, got: &Outcome, want: &Outcome) -> Result<()> {
    for ((d, g), (_, w)) in got.files.iter().zip(&want.files) {
        if g != w {
            let names = |v: &[(PathBuf, Vec<u8>)]| {
                v.iter()
                    .map(|(n, b)| format!("{} ({} bytes)", n.display(), b.len()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            bail!(
                "{} {}: the files in {d}/ differ from the baseline's: [{}] vs [{}]",
                app.name,
                conf_name(conf),
                names(g),
                names(w)
            );
        }
    }
    ensure!(
        got.files.len() == want.files.len(),
        "{} {}: directories differ",
        app.name,
        conf_name(conf)
    );
    for (k, (g, w)) in got.out.iter().zip(&want.out).enumerate() {
        ensure!(
            g == w,
            "{} {}: output {k} differs from the baseline's:\n{g}\n--- baseline:\n{w}",
            app.name,
            conf_name(conf)
        );
    }
    Ok(())
}
