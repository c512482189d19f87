//! Debian's `bc`, unmodified, under `dc run`: a language REPL doing all its input and
//! output through stdio (glibc's internal `read` and `write`, which only Syscall User
//! Dispatch sees), and opening its program file with `fopen`.
//!
//! Each test drives a scripted session through a pipe like a user who types the next line
//! when bc waits for it (the session prints its own prompts, `bc[N]> `, with bc's `print`),
//! SIGKILLs bc at random points (seeded) and runs the same `dc run` command again until
//! the session ends. The oracle (`discount::oracle::check_resumed`): the output of all
//! runs together is a failure-free run's (plain bc, no dc) with only repetition (for CPVS
//! at most the last write), every run after a kill resumed the last checkpoint instead of
//! starting over, what each run wrote is what its trace says, the final output equals,
//! and the trace keeps the commit invariant. A negative control runs the same case with
//! the trap switched off (`DC_SUD=0`) and checks that the oracle rejects it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::apps::BC;
use common::*;
use discount::oracle;

fn bc_path() -> Result<PathBuf> {
    BC.path()
        .context("bc is not installed (scripts/setup.sh installs it)")
}

struct Case<'a> {
    name: &'a str,
    protocol: &'a str,
    seed: u64,
    kills: usize,
    /// Extra environment for `dc run` (the negative control's `DC_SUD=0`).
    env: &'a [(&'a str, &'a str)],
}

/// Runs the case; returns the oracle's verdict (and the runs, for messages).
fn bc_case(c: &Case<'_>) -> Result<(Result<oracle::Resumption, oracle::ResumeError>, String)> {
    let bc = bc_path()?;
    let t = tempfile::tempdir()?;
    let (refd, rund, state) = (
        t.path().join("ref"),
        t.path().join("run"),
        t.path().join("state"),
    );
    for d in [&refd, &rund] {
        std::fs::create_dir_all(d)?;
        (BC.setup)(d)?;
    }
    let err = t.path().join("stderr");
    let inputs = BC.inputs();
    let deadline = Duration::from_secs(60);
    // The failure-free reference: bc itself, no dc.
    let reference = drive(
        &Target {
            argv: std::iter::once(bc.display().to_string())
                .chain(BC.args.iter().map(|a| a.to_string()))
                .collect(),
            env: (BC.env)(&refd),
            cwd: &refd,
            stderr: &err,
            trace: None,
            after_kill: None,
        },
        "bc",
        &inputs,
        &[],
        deadline,
    )?;
    ensure!(reference.len() == 1 && reference[0].code == Some(0));
    let reference = reference[0].out.clone();
    let mut rng = plan_rng(c.seed);
    let mut kills: Vec<(usize, u64)> = Vec::new();
    while kills.len() < c.kills {
        let k = rng.below(inputs.len() as u64 - 1) as usize;
        if !kills.iter().any(|&(x, _)| x == k) {
            kills.push((k, rng.below(6)));
        }
    }
    // In input order: a kill planned at an input that a recovery replays from the input
    // log (without waiting) would never fire.
    kills.sort();
    eprintln!("{}: kills after inputs {kills:?}", c.name);
    let mut env = (BC.env)(&rund);
    env.extend(dc_env());
    env.extend(c.env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let options: Vec<String> = vec![
        "--protocol".into(),
        c.protocol.into(),
        "--trace".into(),
        "--dir".into(),
        state.display().to_string(),
    ];
    let argv = dc_run_argv(&options, BC.binary, BC.args);
    let target = Target {
        argv,
        env,
        cwd: &rund,
        stderr: &err,
        trace: Some(state.join("trace")),
        after_kill: None,
    };
    let runs = drive(&target, "bc", &inputs, &kills, deadline).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; stderr: {}",
            c.name,
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    })?;
    ensure!(
        runs.len() == c.kills + 1,
        "{}: {} runs for {} kills",
        c.name,
        runs.len(),
        c.kills
    );
    let show = format!(
        "stderr:\n{}\nreference:\n{}\nruns:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default(),
        lossy(&reference),
        runs.iter()
            .map(|r| lossy(&r.out))
            .collect::<Vec<_>>()
            .join("\n--- crash ---\n")
    );
    let records: Vec<oracle::RunRecord<'_>> = runs.iter().map(Run::record).collect();
    let verdict = oracle::check_resumed(&records, &reference, 1);
    if let Ok(m) = &verdict {
        let all: Vec<oracle::Event> = runs.iter().flat_map(|r| r.trace.clone()).collect();
        // Every line bc read (stdio's internal `read`) was an input event the protocol
        // saw: non-deterministic, or logged under the -LOG protocols.
        let n = oracle::counts(&all);
        ensure!(
            n.nd + n.logged >= inputs.len(),
            "{}: {} input events traced for {} lines of input\n{show}",
            c.name,
            n.nd + n.logged,
            inputs.len()
        );
        // Every kill came after bc's first prompt, so after its first checkpoint.
        check_runs(c.name, c.protocol, &all, m, c.kills, &state, &show)?;
        ensure!(
            files(&rund) == files(&refd),
            "{}: bc's directory differs from the failure-free run's",
            c.name
        );
        ensure!(
            !state.join("trace").exists() || runs.last().is_some_and(|r| r.code == Some(0)),
            "{}: the last run did not finish",
            c.name
        );
        eprintln!(
            "{}: {} runs, resumed {:?} at bytes {:?}, repeated {:?}, {:?}",
            c.name,
            runs.len(),
            m.resumed,
            m.output.starts,
            m.output.repeated,
            oracle::counts(&all)
        );
    }
    Ok((verdict, show))
}

fn pass(c: Case<'_>) -> Result<()> {
    if !sud_or_skip(c.name) {
        return Ok(());
    }
    let (v, show) = bc_case(&c)?;
    v.map(|_| ())
        .map_err(|e| anyhow::anyhow!("{}: {e}\n{show}", c.name))
}

fn case(name: &'static str, protocol: &'static str, seed: u64) -> Case<'static> {
    Case {
        name,
        protocol,
        seed,
        kills: 4,
        env: &[],
    }
}

#[test]
fn bc_cpvs_survives_sigkill() -> Result<()> {
    pass(case("bc_cpvs", "cpvs", 41))
}

#[test]
fn bc_cand_survives_sigkill() -> Result<()> {
    pass(case("bc_cand", "cand", 42))
}

#[test]
fn bc_cbndvs_survives_sigkill() -> Result<()> {
    pass(case("bc_cbndvs", "cbndvs", 43))
}

#[test]
fn bc_cand_log_survives_sigkill() -> Result<()> {
    pass(case("bc_cand_log", "cand-log", 44))
}

#[test]
fn bc_cbndvs_log_survives_sigkill() -> Result<()> {
    pass(case("bc_cbndvs_log", "cbndvs-log", 45))
}

/// The negative control: with the trap off (`DC_SUD=0`) only the libc wrappers intercept,
/// and bc's stdio bypasses them: its output is not traced and no commit follows its
/// input, so every run after a kill goes back to the first checkpoint and repeats the
/// session from the start. The oracle must reject that.
#[test]
fn bc_without_the_trap_is_rejected() -> Result<()> {
    let name = "bc_without_the_trap_is_rejected";
    if !sud_or_skip(name) {
        return Ok(());
    }
    let c = Case {
        name,
        protocol: "cpvs",
        seed: 41,
        kills: 2,
        env: &[("DC_SUD", "0")],
    };
    let (v, show) = bc_case(&c)?;
    match v {
        Err(e) => {
            eprintln!("{name}: rejected as it should be: {e}");
            Ok(())
        }
        Ok(m) => anyhow::bail!("{name}: the oracle accepted runs without the trap: {m:?}\n{show}"),
    }
}

/// `dc status`, `dc check` and `dc discard` on the state a killed `dc run` left.
#[test]
fn status_check_and_discard() -> Result<()> {
    let name = "status_check_and_discard";
    if !sud_or_skip(name) {
        return Ok(());
    }
    let t = tempfile::tempdir()?;
    let state = t.path().join("state");
    (BC.setup)(t.path())?;
    let err = t.path().join("stderr");
    let inputs = BC.inputs();
    let options: Vec<String> = vec![
        "--trace".into(),
        "--dir".into(),
        state.display().to_string(),
    ];
    let argv = dc_run_argv(&options, BC.binary, BC.args);
    let target = Target {
        argv,
        env: vec![("DC_HEAP_MB".into(), "64".into())],
        cwd: t.path(),
        stderr: &err,
        trace: Some(state.join("trace")),
        after_kill: None,
    };
    // Kill it after input 3, then stop: the state directory holds a valid checkpoint.
    let stop = || -> Result<()> { anyhow::bail!("stop here") };
    let once = Target {
        after_kill: Some(&stop),
        ..target
    };
    let e = drive(&once, "bc", &inputs, &[(3, 0)], Duration::from_secs(30)).unwrap_err();
    ensure!(e.to_string().contains("stop here"), "{e}");
    let dc = |args: &[&str], stdin: Option<&str>| -> Result<std::process::Output> {
        let mut cmd = std::process::Command::new(dc_bin());
        cmd.args(args)
            .current_dir(t.path())
            .env("DC_PRELOAD", preload());
        cmd.stdin(std::process::Stdio::piped());
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let (Some(s), Some(mut i)) = (stdin, child.stdin.take()) {
            std::io::Write::write_all(&mut i, s.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    };
    let d = state.display().to_string();
    let out = dc(&["status", "--dir", &d], None)?;
    let s = lossy(&out.stdout);
    ensure!(out.status.success(), "status: {s}{}", lossy(&out.stderr));
    ensure!(s.contains("valid") && s.contains("/bc"), "status: {s}");
    let out = dc(&["check", "--dir", &d], None)?;
    ensure!(
        out.status.success() && lossy(&out.stdout).contains("holds"),
        "check: {}{}",
        lossy(&out.stdout),
        lossy(&out.stderr)
    );
    // Another program cannot take this checkpoint over.
    let out = dc(&["run", "--dir", &d, "--", "cat"], None)?;
    ensure!(
        !out.status.success() && lossy(&out.stderr).contains("not of"),
        "run of another program: {}",
        lossy(&out.stderr)
    );
    // Without an answer (stdin closed), discard refuses; "n" keeps it; --yes forgets.
    let out = dc(&["discard", "--dir", &d], None)?;
    ensure!(
        !out.status.success() && state.exists(),
        "discard without an answer"
    );
    let out = dc(&["discard", "--dir", &d], Some("n\n"))?;
    ensure!(
        !out.status.success() && state.exists(),
        "discard answered n"
    );
    let out = dc(&["discard", "--dir", &d, "--yes"], None)?;
    ensure!(
        out.status.success() && !state.exists(),
        "discard --yes: {}",
        lossy(&out.stderr)
    );
    // A statically linked or non-ELF program is refused with a clear message.
    let script = t.path().join("s.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n")?;
    let out = dc(&["run", "--", script.to_str().unwrap_or("")], None)?;
    ensure!(
        !out.status.success() && lossy(&out.stderr).contains("not an ELF"),
        "script: {}",
        lossy(&out.stderr)
    );
    Ok(())
}
