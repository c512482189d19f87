//! The crash test of a full-screen program, shared by the programs that have one (nvi,
//! sc): a scripted session typed on a real pseudo-terminal (see [`super::pty`]) first
//! into the plain program (the failure-free reference), then into the same program under
//! `dc run`, SIGKILLed at seeded random points and started again by the same command on
//! a fresh terminal after each kill, while one emulated screen persists across the runs
//! like the user's window.
//!
//! The oracle, against the reference: every file the program left in its working
//! directory (and in the subdirectories the program names) equals the failure-free run's
//! byte for byte; the screen before the last input (after the redraw the session types
//! second to last: a repeated write, which Definition 2 allows, is not idempotent on a
//! terminal) and after the program's exit equal the failure-free run's;
//! `discount::oracle::check_resumed` on the traces (every run after a kill resumed the
//! last checkpoint, none started over, the output of all runs is the failure-free output
//! with repetition only, for CPVS at most the last write); as many recoveries as kills;
//! no commit-invariant violation (thesis Theorem 2).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use discount::oracle;

use super::pty::{self, Pacing, Target};
use super::{check_runs, dc_env, dc_run_argv, files, lossy, plan_rng, sud_or_skip, Run};

/// A program and the session typed into it.
pub struct Program<'a> {
    /// The executable, looked up in PATH (the test is skipped, and says why, without it).
    pub binary: &'a str,
    /// Its arguments.
    pub args: &'a [&'a str],
    /// The environment of both the reference and the runs under dc, given the working
    /// directory (which is also HOME).
    pub env: &'a dyn Fn(&Path) -> Vec<(String, String)>,
    /// Prepares a fresh working directory (the program's data files, its directories).
    pub setup: &'a dyn Fn(&Path) -> std::io::Result<()>,
    /// Subdirectories of the working directory whose files are compared too.
    pub dirs: &'a [&'a str],
    /// The session: each entry typed as one burst. The second-to-last is a redraw and
    /// the last ends the program; kills land before the redraw.
    pub session: &'a [&'a str],
    /// How the program reads its terminal.
    pub pacing: Pacing,
}

/// One crash test: a protocol, a seed for the kill plan, how many kills.
pub struct Case<'a> {
    pub name: &'a str,
    pub protocol: &'a str,
    pub seed: u64,
    pub kills: usize,
}

impl Case<'static> {
    /// `kills` kills (DC_TEST_KILLS overrides it).
    pub fn new(name: &'static str, protocol: &'static str, seed: u64, kills: usize) -> Self {
        let kills = std::env::var("DC_TEST_KILLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(kills);
        Case {
            name,
            protocol,
            seed,
            kills,
        }
    }
}

fn in_path(binary: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// Runs the case (or records why it cannot run here as a skip).
pub fn crash_case(p: &Program<'_>, c: &Case<'_>) -> Result<()> {
    if !sud_or_skip(c.name) {
        return Ok(());
    }
    let Some(bin) = in_path(p.binary) else {
        vista::testing::record_skip(
            c.name,
            &format!(
                "{} is not installed (scripts/setup.sh installs it)",
                p.binary
            ),
        )
        .expect("record the skip in RIO_SKIP_LOG");
        return Ok(());
    };
    let t = tempfile::tempdir()?;
    let (refd, rund, state) = (
        t.path().join("ref"),
        t.path().join("run"),
        t.path().join("state"),
    );
    for d in [&refd, &rund] {
        std::fs::create_dir_all(d)?;
        (p.setup)(d)?;
    }
    let inputs: Vec<String> = p.session.iter().map(|s| s.to_string()).collect();
    let deadline = Duration::from_secs(120);
    let mut argv = vec![bin.display().to_string()];
    argv.extend(p.args.iter().map(|a| a.to_string()));
    let reference = pty::drive(
        &Target {
            argv: argv.clone(),
            env: (p.env)(&refd),
            cwd: &refd,
            trace: None,
        },
        &inputs,
        p.pacing,
        &[],
        deadline,
    )
    .context("the failure-free run")?;
    ensure!(reference.runs.len() == 1);
    let ref_out = reference.runs[0].out.clone();

    let mut rng = plan_rng(c.seed);
    let mut kills: Vec<(usize, u64)> = Vec::new();
    // Kills land after any input before the redraw (the second-to-last): the redraw is
    // what a user does after the last crash, and a kill after it would leave the
    // repeated write Definition 2 allows on the screen with nothing to repaint it.
    ensure!(
        c.kills <= inputs.len() - 2,
        "{}: {} kills for {} inputs",
        c.name,
        c.kills,
        inputs.len()
    );
    while kills.len() < c.kills {
        let k = rng.below(inputs.len() as u64 - 2) as usize;
        if !kills.iter().any(|&(x, _)| x == k) {
            kills.push((k, rng.below(40)));
        }
    }
    kills.sort();
    eprintln!("{}: kills after inputs {kills:?}", c.name);
    let log = t.path().join("dc.log");
    let mut env = (p.env)(&rund);
    env.extend(dc_env());
    let options: Vec<String> = vec![
        "--protocol".into(),
        c.protocol.into(),
        "--trace".into(),
        "--log".into(),
        log.display().to_string(),
        "--dir".into(),
        state.display().to_string(),
    ];
    let dc_argv = dc_run_argv(&options, p.binary, p.args);
    let target = Target {
        argv: dc_argv,
        env,
        cwd: &rund,
        trace: Some(state.join("trace")),
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let s = pty::drive(&target, &inputs, p.pacing, &kills, deadline)
        .map_err(|e| anyhow::anyhow!("{}: {e}\ndc log:\n{}", c.name, log_text()))?;
    let show = format!(
        "dc log:\n{}\nreference screen before the last input:\n{}\nscreen before the last input:\n{}",
        log_text(),
        reference.before_last,
        s.before_last
    );
    ensure!(
        s.runs.len() == c.kills + 1,
        "{}: {} runs for {} kills",
        c.name,
        s.runs.len(),
        c.kills
    );
    // The files the program left: its data files, and (its temporary and recovery files
    // cleaned up, or left) whatever else, exactly as without crashes.
    for d in std::iter::once(".").chain(p.dirs.iter().copied()) {
        let (got, want) = (files(&rund.join(d)), files(&refd.join(d)));
        ensure!(
            !want.is_empty() || d != ".",
            "{}: the failure-free run left no file",
            c.name
        );
        if got != want {
            let render = |v: &[(PathBuf, Vec<u8>)]| {
                v.iter()
                    .map(|(n, b)| format!("== {}:\n{}", n.display(), lossy(b)))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            anyhow::bail!(
                "{}: the files in {d}/ differ from the failure-free run's:\n{}\n--- failure-free:\n{}\n{show}",
                c.name,
                render(&got),
                render(&want)
            );
        }
    }
    // The screens.
    ensure!(
        s.before_last == reference.before_last,
        "{}: the screen before the last input differs from the failure-free run's\n{show}",
        c.name
    );
    let (a, b) = (
        pty::show(s.screen.screen()),
        pty::show(reference.screen.screen()),
    );
    ensure!(
        a == b,
        "{}: the final screen differs:\n{a}\n--- failure-free:\n{b}\n{show}",
        c.name
    );
    // Resumed, not restarted; output with repetition only.
    let records: Vec<oracle::RunRecord<'_>> = s.runs.iter().map(Run::record).collect();
    let m = oracle::check_resumed(&records, &ref_out, 1)
        .map_err(|e| anyhow::anyhow!("{}: {e}\n{show}", c.name))?;
    let all: Vec<oracle::Event> = s.runs.iter().flat_map(|r| r.trace.clone()).collect();
    check_runs(c.name, c.protocol, &all, &m, c.kills, &state, &show)?;
    eprintln!(
        "{}: {} runs, resumed {:?} at bytes {:?}, repeated {:?}, {:?}",
        c.name,
        s.runs.len(),
        m.resumed,
        m.output.starts,
        m.output.repeated,
        oracle::counts(&all)
    );
    Ok(())
}
