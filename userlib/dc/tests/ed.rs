//! Debian's `ed` (GNU ed), unmodified, under `dc run`: a line editor editing its own data
//! file, with its buffer in a scratch file it makes with `tmpfile()` (an unlinked
//! `O_TMPFILE` in /tmp), its commands read from a pipe one byte at a time (stdin
//! unbuffered, glibc's internal `read`, which only Syscall User Dispatch sees) and its
//! output through stdio.
//!
//! Each test types a scripted editing session (append, substitute, delete, move, copy,
//! global commands, print, write, insert, change, join, undo, marks, write a second file
//! and read it back, write again, quit) into `ed -p 'ed> '` like a user who types the next
//! command when ed waits for one, SIGKILLs ed at seeded random points (also in the middle
//! of a command: ed commits byte by byte under CAND) and runs the same `dc run` command
//! again after each kill, the new run getting the rest of the command ed was reading
//! ([`common::drive_bytes`]). The oracle, against the same session in plain ed (no dc):
//! the files ed wrote equal the failure-free run's byte for byte;
//! `discount::oracle::check_resumed` (every run after a kill resumed the last
//! checkpoint, none started over, the output of all runs together is the failure-free
//! output with only repetition, for CPVS at most the last write); as many recoveries as
//! kills; every byte of input read is in the trace; no commit-invariant violation. A
//! negative control deletes the state directory after each kill, and the oracle must
//! report that the next run started over.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::apps::ED;
use common::*;
use discount::oracle;

struct Case<'a> {
    name: &'a str,
    protocol: &'a str,
    seed: u64,
    kills: usize,
    /// Kills to use instead of a seeded plan (input index, delay in ms).
    plan: Option<&'a [(usize, u64)]>,
    /// The negative control: delete the state directory after each kill.
    forget: bool,
}

/// Runs the case; returns the oracle's verdict (Ok: `check_resumed` held and so did every
/// other check) and the evidence. `None`: ed is not installed (recorded as skipped).
fn ed_case(
    c: &Case<'_>,
) -> Result<Option<(Result<oracle::Resumption, oracle::ResumeError>, String)>> {
    let Some(ed) = ED.path() else {
        vista::testing::record_skip(c.name, "ed is not installed (scripts/setup.sh installs it)")
            .expect("record the skip in RIO_SKIP_LOG");
        return Ok(None);
    };
    let t = tempfile::tempdir()?;
    let (refd, rund, state) = (
        t.path().join("ref"),
        t.path().join("run"),
        t.path().join("state"),
    );
    for d in [&refd, &rund] {
        std::fs::create_dir_all(d)?;
        (ED.setup)(d)?;
    }
    let err = t.path().join("stderr");
    // The trace lives outside the state directory, so that the negative control can
    // delete that and keep the evidence.
    let trace = t.path().join("trace");
    let inputs = ED.inputs();
    let deadline = Duration::from_secs(120);
    let env = (ED.env)(&refd);
    let ed_args: Vec<String> = ED.args.iter().map(|a| a.to_string()).collect();
    // The failure-free reference: ed itself, no dc.
    let reference = drive_bytes(
        &Target {
            argv: std::iter::once(ed.display().to_string())
                .chain(ed_args.iter().cloned())
                .collect(),
            env: env.clone(),
            cwd: &refd,
            stderr: &err,
            trace: None,
            after_kill: None,
        },
        &inputs,
        &[],
        deadline,
    )
    .context("the failure-free run")?;
    ensure!(reference.len() == 1 && reference[0].code == Some(0));
    let reference = reference[0].out.clone();
    let ref_files = files(&refd);
    ensure!(
        ref_files.len() == 2,
        "the failure-free run left {} files",
        ref_files.len()
    );

    let kills: Vec<(usize, u64)> = match c.plan {
        Some(p) => p.to_vec(),
        None => {
            let mut rng = plan_rng(c.seed);
            let mut kills: Vec<(usize, u64)> = Vec::new();
            // After any input but the last (`q`: ed would be gone before the kill).
            while kills.len() < c.kills {
                let k = rng.below(inputs.len() as u64 - 1) as usize;
                if !kills.iter().any(|&(x, _)| x == k) {
                    // Half the kills land at once, while ed is still reading or
                    // executing the command (under CPVS and CBNDVS the bytes it read
                    // since the last commit are then lost and sent again), the others
                    // up to 20 ms later, mostly while it waits for the next one.
                    let delay = if rng.below(2) == 0 { 0 } else { rng.below(20) };
                    kills.push((k, delay));
                }
            }
            kills.sort();
            kills
        }
    };
    eprintln!("{}: kills after inputs {kills:?}", c.name);
    let mut denv = env.clone();
    denv.extend(dc_env());
    denv.push(("DC_TRACE".to_string(), trace.display().to_string()));
    let options: Vec<String> = vec![
        "--protocol".into(),
        c.protocol.into(),
        "--dir".into(),
        state.display().to_string(),
    ];
    let argv = dc_run_argv(&options, ED.binary, ED.args);
    let forget =
        || -> Result<()> { std::fs::remove_dir_all(&state).context("delete the state directory") };
    let target = Target {
        argv,
        env: denv,
        cwd: &rund,
        stderr: &err,
        trace: Some(trace.clone()),
        after_kill: c.forget.then_some(&forget as &dyn Fn() -> Result<()>),
    };
    let stderr_text = || std::fs::read_to_string(&err).unwrap_or_default();
    let runs = drive_bytes(&target, &inputs, &kills, deadline)
        .map_err(|e| anyhow::anyhow!("{}: {e}; stderr: {}", c.name, stderr_text()))?;
    ensure!(
        runs.len() == kills.len() + 1,
        "{}: {} runs for {} kills",
        c.name,
        runs.len(),
        kills.len()
    );
    let show = format!(
        "stderr:\n{}\nreference:\n{}\nruns:\n{}",
        stderr_text(),
        lossy(&reference),
        runs.iter()
            .map(|r| lossy(&r.out))
            .collect::<Vec<_>>()
            .join("\n--- crash ---\n")
    );
    let records: Vec<oracle::RunRecord<'_>> = runs.iter().map(Run::record).collect();
    let verdict = oracle::check_resumed(&records, &reference, 1);
    if let Ok(m) = &verdict {
        // The files ed wrote (notes.txt twice, notes.bak once), byte for byte.
        let got = files(&rund);
        ensure!(
            got == ref_files,
            "{}: ed's files differ from the failure-free run's:\n{}\n--- failure-free:\n{}\n{show}",
            c.name,
            show_files(&got),
            show_files(&ref_files)
        );
        let all: Vec<oracle::Event> = runs.iter().flat_map(|r| r.trace.clone()).collect();
        // Every byte ed read was an input event the protocol saw (non-deterministic, or
        // logged under the -LOG protocols); a recovery re-reads what its checkpoint had
        // not yet read, so there are at least as many.
        let n = oracle::counts(&all);
        let bytes = inputs.concat().len();
        ensure!(
            n.nd + n.logged >= bytes,
            "{}: {} input events traced for {bytes} bytes of input\n{show}",
            c.name,
            n.nd + n.logged,
        );
        check_runs(c.name, c.protocol, &all, m, kills.len(), &state, &show)?;
        eprintln!(
            "{}: {} runs, resumed {:?} at bytes {:?}, repeated {:?}, {:?}",
            c.name,
            runs.len(),
            m.resumed,
            m.output.starts,
            m.output.repeated,
            n
        );
    }
    Ok(Some((verdict, show)))
}

fn show_files(f: &[(PathBuf, Vec<u8>)]) -> String {
    f.iter()
        .map(|(p, b)| format!("== {}\n{}", Path::new(p).display(), lossy(b)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn pass(mut c: Case<'_>) -> Result<()> {
    if let Some(k) = std::env::var("DC_TEST_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.kills = k;
    }
    if !sud_or_skip(c.name) {
        return Ok(());
    }
    let Some((v, show)) = ed_case(&c)? else {
        return Ok(());
    };
    v.map(|_| ())
        .map_err(|e| anyhow::anyhow!("{}: {e}\n{show}", c.name))
}

fn case(name: &'static str, protocol: &'static str, seed: u64) -> Case<'static> {
    Case {
        name,
        protocol,
        seed,
        kills: 4,
        plan: None,
        forget: false,
    }
}

#[test]
fn ed_cpvs_survives_sigkill() -> Result<()> {
    pass(case("ed_cpvs", "cpvs", 81))
}

#[test]
fn ed_cand_survives_sigkill() -> Result<()> {
    pass(case("ed_cand", "cand", 82))
}

#[test]
fn ed_cbndvs_survives_sigkill() -> Result<()> {
    pass(case("ed_cbndvs", "cbndvs", 83))
}

#[test]
fn ed_cand_log_survives_sigkill() -> Result<()> {
    pass(case("ed_cand_log", "cand-log", 84))
}

#[test]
fn ed_cbndvs_log_survives_sigkill() -> Result<()> {
    pass(case("ed_cbndvs_log", "cbndvs-log", 85))
}

/// The negative control: the state directory is deleted after each kill, so the next
/// `dc run` finds no checkpoint and starts ed over (the harness, reading the trace, types
/// the session again from its first command). The kills come before the first `w`, so
/// the data file is still the original and a fresh start repeats the failure-free output
/// exactly: only the resumption check can tell, and it must report "started over".
#[test]
fn ed_started_over_is_rejected() -> Result<()> {
    let name = "ed_started_over_is_rejected";
    if !sud_or_skip(name) {
        return Ok(());
    }
    let c = Case {
        name,
        protocol: "cpvs",
        seed: 0,
        kills: 2,
        plan: Some(&[(4, 0), (8, 5)]),
        forget: true,
    };
    let Some((v, show)) = ed_case(&c)? else {
        return Ok(());
    };
    match v {
        Err(e @ oracle::ResumeError::Restarted { .. }) => {
            eprintln!("{name}: rejected as it should be: {e}");
            Ok(())
        }
        Err(e) => anyhow::bail!("{name}: rejected, but not as started over: {e}\n{show}"),
        Ok(m) => {
            anyhow::bail!("{name}: the oracle accepted a run that started over: {m:?}\n{show}")
        }
    }
}
