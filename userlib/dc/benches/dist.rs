//! `make bench-dc-dist`: the protocol study of the thesis's Figures 6.6 and 6.7 for
//! computations of several processes (issue 16), on the two applications of
//! `tests/dist_apps.rs`: `apps/heat.c` (3 workers exchanging boundary cells over UDP every
//! step (`DC_DIST_STEPS`, default 10,000), 100 visible lines: TreadMarks Barnes-Hut's role) and `apps/chat.c` (a server and
//! 3 clients, every conversation line visible on every client: xpilot's role).
//!
//! Each configuration runs the whole computation with no crash: the plain programs (the
//! baseline), and under `dc run` for the seven protocols (the five single-process ones on
//! each member, sends visible; CPV-2PC and CBNDV-2PC with `dc coord`), with the state
//! directories on tmpfs (/dev/shm: reliable memory, standing for Rio) and on a disk file
//! system (/var/tmp, `DC_DURABILITY=msync`: every commit durable on disk, "Discount
//! Checking-disk"). Measured: the computation's wall time (first start to last exit) and
//! the commits (each member's checkpoint number from `dc status`, summed; for the 2PC
//! protocols also the coordinator's rounds). `DC_DIST_REPS` repetitions (default 3), the
//! configurations in a new seeded order each time, medians reported. Every run's output
//! must equal the baseline's (heat) or show the whole conversation on every client
//! (chat), or the benchmark stops.
//!
//! Output: a markdown table on stdout (progress on stderr), and in `--out DIR` (default
//! `results/bench-dc-dist/`) `dist.json` and one SVG per application: the protocols in
//! the protocol space with their commits and run-time ratios.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use common::dist::{self, Member, Plan, PROTOCOLS};
use serde_json::json;

/// Where a protocol sits in the protocol space (thesis Figure 6.1): x, the effort to
/// identify and convert non-deterministic events; y, the effort to identify visible
/// events (the 2PC protocols, above, also treat sends as not visible).
fn position(protocol: &str) -> (f64, f64) {
    match protocol {
        "cpvs" => (0.0, 1.0),
        "cand" => (1.0, 0.0),
        "cbndvs" => (1.0, 1.0),
        "cand-log" => (2.0, 0.0),
        "cbndvs-log" => (2.0, 1.0),
        "cpv-2pc" => (0.0, 2.0),
        _ => (1.0, 2.0),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Store {
    Memory,
    Disk,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Disk => "disk",
        }
    }
}

struct App {
    name: &'static str,
    src: &'static str,
    members: fn(&Path, u16) -> Result<Vec<Member>>,
    check: fn(&[String], &[String]) -> Result<()>,
}

/// Heat's steps, unless `DC_DIST_STEPS` says otherwise: long enough that a run on the Rio
/// store takes a second or more (process start-up does not decide the ratio).
const STEPS: usize = 10_000;

fn steps() -> usize {
    std::env::var("DC_DIST_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n >= 100)
        .unwrap_or(STEPS)
}
/// Longest one run may take; a configuration that takes longer is reported as "more than
/// this" (a disk store that commits every receive cannot keep up, as the thesis found).
const RUN_LIMIT: Duration = Duration::from_secs(120);
use dist::{CHAT_CLIENTS as CLIENTS, CHAT_LINES as LINES};

fn heat_members(bin: &Path, base: u16) -> Result<Vec<Member>> {
    Ok(dist::heat_members(bin, base, steps()))
}

fn chat_members(bin: &Path, port: u16) -> Result<Vec<Member>> {
    let dir = bin.parent().unwrap_or(Path::new("."));
    Ok(dist::chat_members(bin, port, dir)?.0)
}

fn heat_check(got: &[String], base: &[String]) -> Result<()> {
    ensure!(got == base, "heat's output differs from the baseline's");
    Ok(())
}

fn chat_check(got: &[String], _base: &[String]) -> Result<()> {
    for (i, o) in got.iter().enumerate().skip(1) {
        let n = o.lines().filter(|l| l.starts_with('[')).count();
        ensure!(
            n == CLIENTS * LINES,
            "client {} showed {n} lines, not {}",
            i - 1,
            CLIENTS * LINES
        );
    }
    Ok(())
}

const APPS: [App; 2] = [
    App {
        name: "heat",
        src: "heat",
        members: heat_members,
        check: heat_check,
    },
    App {
        name: "chat",
        src: "chat",
        members: chat_members,
        check: chat_check,
    },
];

/// Commits of one run: each member's checkpoint number, summed.
fn commits(dir: &Path, n: usize) -> Result<u64> {
    let mut sum = 0;
    for i in 0..n {
        let d = dir.join(format!("m{i}"));
        let out = Command::new(common::dc_bin())
            .args(["status", "--dir"])
            .arg(&d)
            .output()?;
        let s = String::from_utf8_lossy(&out.stdout);
        let seq = s
            .lines()
            .find_map(|l| l.strip_prefix("checkpoint: #"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|x| x.parse::<u64>().ok())
            .with_context(|| format!("dc status of member {i}: {s}"))?;
        sum += seq;
    }
    Ok(sum)
}

fn rounds(last: &Option<String>) -> Option<u64> {
    let l = last.as_ref()?;
    let (_, rest) = l.split_once("left: ")?;
    rest.split_whitespace().next()?.parse().ok()
}

fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.0}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r < 0.0 {
        format!("> {:.0}", -r)
    } else {
        format!("{r:.2}")
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

type Conf = Option<(&'static str, Store)>;

fn conf_name(c: Conf) -> String {
    match c {
        None => "baseline".into(),
        Some((p, s)) => format!("{p}/{}", s.name()),
    }
}

/// A protocol's medians: name, commits (Rio, disk), run-time ratios (Rio, disk), rounds.
type Row = (String, [f64; 2], [f64; 2], Option<f64>);

#[derive(Default, Clone)]
struct Samples {
    /// A run took longer than [`RUN_LIMIT`]: not run again, reported as "more than".
    timed_out: bool,
    wall: Vec<f64>,
    commits: Vec<f64>,
    rounds: Vec<f64>,
}

fn plot(path: &Path, app: &str, rows: &[Row], base: f64, reps: usize) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(620);
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            format!("Performance of recovery protocols for {app}"),
            ("sans-serif", 24),
        )
        .margin(20)
        .build_cartesian_2d(-0.8f64..3.0f64, -0.45f64..2.7f64)?;
    let axis = ShapeStyle::from(&BLACK).stroke_width(2);
    chart.draw_series(LineSeries::new([(0.0, 0.0), (2.9, 0.0)], axis))?;
    chart.draw_series(LineSeries::new([(0.0, 0.0), (0.0, 2.6)], axis))?;
    let small = ("sans-serif", 14).into_font().color(&BLACK);
    let label = ("sans-serif", 17).into_font().color(&BLACK);
    let bold = ("sans-serif", 17)
        .into_font()
        .style(FontStyle::Bold)
        .color(&BLACK);
    let centred = small.clone().pos(Pos::new(HPos::Center, VPos::Top));
    let right = small.clone().pos(Pos::new(HPos::Right, VPos::Center));
    chart.draw_series([Text::new(
        "Effort made to identify/convert non-deterministic events",
        (1.1, -0.22),
        label.clone().pos(Pos::new(HPos::Center, VPos::Top)),
    )])?;
    chart.draw_series([Text::new(
        "Effort made to identify/convert visible events",
        (-0.7, 1.3),
        label
            .clone()
            .pos(Pos::new(HPos::Center, VPos::Center))
            .transform(FontTransform::Rotate270),
    )])?;
    for (x, s) in [
        (1.0, "identify non-deterministic events"),
        (2.0, "... and log input"),
    ] {
        chart.draw_series([EmptyElement::at((x, 0.0))
            + PathElement::new(vec![(0, -5), (0, 5)], axis)
            + Text::new(s, (0, 12), centred.clone())])?;
    }
    for (y, a, b) in [
        (1.0, "identify", "visible events"),
        (2.0, "sends not visible", "(two-phase commit)"),
    ] {
        chart.draw_series([EmptyElement::at((0.0, y))
            + PathElement::new(vec![(-5, 0), (5, 0)], axis)
            + Text::new(a, (-10, -9), right.clone())
            + Text::new(b, (-10, 9), right.clone())])?;
    }
    for (p, commits, wall, rounds) in rows {
        let (x, y) = position(p);
        let c = if commits[0] == commits[1] {
            fmt_num(commits[0])
        } else {
            format!("{} / {}", fmt_num(commits[0]), fmt_num(commits[1]))
        };
        let mut lines = vec![
            format!("commits: {c}"),
            format!(
                "run-time ratio: Rio {}, disk {}",
                fmt_ratio(wall[0]),
                fmt_ratio(wall[1])
            ),
        ];
        if let Some(r) = rounds {
            lines.push(format!("distributed checkpoints: {r:.0}"));
        }
        chart.draw_series([EmptyElement::at((x, y))
            + Circle::new((0, 0), 6, BLUE.filled())
            + Text::new(p.to_uppercase(), (8, -72), bold.clone())])?;
        chart.draw_series(lines.iter().enumerate().map(|(i, l)| {
            EmptyElement::at((x, y)) + Text::new(l.clone(), (8, -50 + 18 * i as i32), small.clone())
        }))?;
    }
    let mut y = 10;
    for l in [
        format!(
            "Run-time ratio: the computation's wall time under dc run / the plain programs' ({base:.3} s). Commits: summed over the members."
        ),
        "Rio: state directories on tmpfs (/dev/shm), standing for Rio's reliable memory; disk: on /var/tmp with DC_DURABILITY=msync.".into(),
        format!("Median of {reps} runs. Single-process protocols: each member on its own, sends visible; 2PC: dc coord, sends not visible."),
    ] {
        lower.draw(&Text::new(l, (40, y), small.clone()))?;
        y += 20;
    }
    root.present()?;
    Ok(())
}

fn main() -> Result<()> {
    let mut out = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../results/bench-dc-dist"
    ));
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = PathBuf::from(it.next().context("--out DIR")?),
            "--bench" => {}
            "--help" | "-h" => {
                println!("bench-dc-dist [--out DIR]   (DC_DIST_REPS: repetitions, default 3; DC_DIST_STEPS: heat's steps, default {STEPS})");
                return Ok(());
            }
            _ => bail!("unknown argument {a:?} (--out DIR)"),
        }
    }
    std::fs::create_dir_all(&out)?;
    let reps: usize = std::env::var("DC_DIST_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let work = tempfile::tempdir()?;
    let mut confs: Vec<Conf> = vec![None];
    for p in PROTOCOLS {
        for s in [Store::Memory, Store::Disk] {
            confs.push(Some((p, s)));
        }
    }
    let mut report = serde_json::Map::new();
    let mut md = String::new();
    md.push_str("| application | protocol | commits (Rio / disk) | distributed checkpoints | run-time ratio, Rio | run-time ratio, disk |\n|---|---|---:|---:|---:|---:|\n");
    let total = APPS.len() * reps * confs.len();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    for (ai, app) in APPS.iter().enumerate() {
        let bin = dist::build_app(app.src, work.path())?;
        let mut samples: BTreeMap<String, Samples> = BTreeMap::new();
        let mut base_out: Option<Vec<String>> = None;
        let mut rng = rio_prng::Rng::new(0xd157 + ai as u64);
        for rep in 0..reps {
            let mut order = confs.clone();
            for i in (1..order.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
            // The baseline first in the first repetition: every run is checked against it.
            if rep == 0 {
                let b = order.iter().position(|c| c.is_none()).unwrap_or(0);
                order.swap(0, b);
            }
            for c in order {
                bar.set_message(format!("{} {}", app.name, conf_name(c)));
                let (protocol, store) = match c {
                    None => (None, Store::Memory),
                    Some((p, s)) => (Some(p), s),
                };
                let root = match store {
                    Store::Memory => PathBuf::from("/dev/shm"),
                    Store::Disk => PathBuf::from("/var/tmp"),
                };
                let port = dist::port_base(30 + ai as u16);
                let env = vec![(
                    "DC_DURABILITY".to_string(),
                    if store == Store::Disk {
                        "msync"
                    } else {
                        "memory"
                    }
                    .to_string(),
                )];
                if samples.get(&conf_name(c)).is_some_and(|s| s.timed_out) {
                    bar.inc(1);
                    continue;
                }
                let r = dist::run(&Plan {
                    deadline: RUN_LIMIT,
                    env,
                    trace: false,
                    root: Some(root),
                    ..Plan::new(protocol, (app.members)(&bin, port)?)
                });
                let o = match r {
                    Err(e) if format!("{e:#}").contains("did not finish") && c.is_some() => {
                        eprintln!("{} {}: longer than {:?}", app.name, conf_name(c), RUN_LIMIT);
                        samples.entry(conf_name(c)).or_default().timed_out = true;
                        bar.inc(1);
                        continue;
                    }
                    r => r.with_context(|| format!("{} {}", app.name, conf_name(c)))?,
                };
                match &base_out {
                    None => base_out = Some(o.outs.clone()),
                    Some(b) => (app.check)(&o.outs, b)
                        .with_context(|| format!("{} {}", app.name, conf_name(c)))?,
                }
                let s = samples.entry(conf_name(c)).or_default();
                s.wall.push(o.wall.as_secs_f64());
                if protocol.is_some() {
                    s.commits.push(commits(o.dir.path(), o.outs.len())? as f64);
                    if let Some(r) = rounds(&o.coord_last) {
                        s.rounds.push(r as f64);
                    }
                }
                bar.inc(1);
            }
        }
        let base = median(&samples["baseline"].wall);
        let mut rows = Vec::new();
        let mut japp = serde_json::Map::new();
        japp.insert("baseline_wall_s".into(), json!(base));
        for p in PROTOCOLS {
            let empty = Samples::default();
            let m = samples.get(&format!("{p}/memory")).unwrap_or(&empty);
            let d = samples.get(&format!("{p}/disk")).unwrap_or(&empty);
            let commits = [median(&m.commits), median(&d.commits)];
            // A timed-out configuration: its ratio is at least the limit's (shown as
            // "> N"); encoded as a negative number for the table and plot.
            let ratio = |s: &Samples| {
                if s.timed_out {
                    -(RUN_LIMIT.as_secs_f64() / base)
                } else {
                    median(&s.wall) / base
                }
            };
            let wall = [ratio(m), ratio(d)];
            let rounds = (!m.rounds.is_empty()).then(|| median(&m.rounds));
            md.push_str(&format!(
                "| {} | {} | {} / {} | {} | {} | {} |\n",
                app.name,
                p.to_uppercase(),
                fmt_num(commits[0]),
                fmt_num(commits[1]),
                rounds.map_or("-".into(), |r| format!("{r:.0}")),
                fmt_ratio(wall[0]),
                fmt_ratio(wall[1])
            ));
            japp.insert(
                p.into(),
                json!({"memory": {"wall_s": m.wall, "commits": m.commits, "rounds": m.rounds},
                       "disk": {"wall_s": d.wall, "commits": d.commits, "rounds": d.rounds},
                       "ratio_memory": wall[0], "ratio_disk": wall[1]}),
            );
            rows.push((p.to_string(), commits, wall, rounds));
        }
        md.push_str(&format!(
            "| {} | baseline (plain programs) | | | {:.3} s | |\n",
            app.name, base
        ));
        report.insert(app.name.into(), serde_json::Value::Object(japp));
        let svg = out.join(format!("{}.svg", app.name));
        plot(&svg, app.name, &rows, base, reps)
            .with_context(|| format!("plot {}", svg.display()))?;
    }
    bar.finish_and_clear();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    report.insert("reps".into(), json!(reps));
    report.insert("loadavg_after".into(), json!(load.trim()));
    std::fs::write(
        out.join("dist.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{md}");
    println!("heat: {} steps; {reps} repetitions", steps());
    println!("load average after the run: {}", load.trim());
    eprintln!("wrote {}", out.display());
    Ok(())
}
