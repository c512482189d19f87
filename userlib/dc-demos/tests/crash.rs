//! Crash tests: the demo programs are killed with SIGKILL at random points and run again
//! until they finish; the visible output must equal a failure-free run's except for
//! repeated output (Definition 2), the files they leave must be the same, and their event
//! traces must satisfy the commit invariant (Theorem 2).

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use common::*;
use discount::oracle;

/// The programs under test (`DC_KV_BIN`, `DC_COMPUTE_BIN` override them, e.g. with
/// static builds).
fn bin(var: &str, built: &'static str) -> &'static Path {
    match std::env::var(var) {
        Ok(p) => Box::leak(std::path::PathBuf::from(p).into_boxed_path()),
        Err(_) => Path::new(built),
    }
}

fn kv_bin() -> &'static Path {
    bin("DC_KV_BIN", env!("CARGO_BIN_EXE_dc-kv"))
}

fn compute_bin() -> &'static Path {
    bin("DC_COMPUTE_BIN", env!("CARGO_BIN_EXE_dc-compute"))
}

fn kv_script() -> Vec<String> {
    let mut v: Vec<String> = vec![
        "set a 1",
        "set b 22",
        "get a",
        "journal first entry",
        "save snap.txt",
        "set c 333",
        "append notes.txt alpha",
        "time",
        "get b",
        "del a",
        "list",
        "append notes.txt beta",
        "cat notes.txt",
        "save snap.txt",
        "set d 4",
        "mv notes.txt notes2.txt",
        "cat notes2.txt",
        "rm snap.txt",
        "cat snap.txt",
        "load snap.txt",
        "journal second",
        "sum",
        "time",
        "set e 5",
        "save snap2.txt",
        "load snap2.txt",
        "burn 1",
        "count",
        "del b",
        "list",
        "append notes2.txt gamma",
        "cat notes2.txt",
        "time",
        "sum",
        "quit",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for i in 0..6 {
        v.insert(20 + i, format!("set k{i} {}", i * 7));
    }
    v
}

fn trace_of(dc: &Path) -> Result<Vec<oracle::Event>> {
    Ok(oracle::parse(&std::fs::read_to_string(dc.join("trace"))?)?)
}

fn kv_case(protocol: &str, seed: u64, nkills: usize) -> Result<()> {
    let t = tempfile::tempdir()?;
    let (refd, rund, dc) = (
        t.path().join("ref"),
        t.path().join("run"),
        t.path().join("dc"),
    );
    std::fs::create_dir_all(&refd)?;
    std::fs::create_dir_all(&rund)?;
    let err = t.path().join("stderr");
    let inputs = kv_script();
    let deadline = Duration::from_secs(60);
    let off = env(&[("DC_DISABLE", "1")]);
    let reference = drive_kv(
        &Target {
            bin: kv_bin(),
            args: &[],
            env: &off,
            cwd: &refd,
            stderr: &err,
        },
        &inputs,
        &[],
        deadline,
    )?;
    ensure!(reference.len() == 1);
    let mut rng = Rng::new(seed);
    let mut kills: Vec<(usize, u64)> = Vec::new();
    while kills.len() < nkills {
        let k = rng.below(inputs.len() as u64 - 1) as usize;
        if !kills.iter().any(|&(x, _)| x == k) {
            kills.push((k, rng.below(6)));
        }
    }
    // In input order: a kill planned at a command that a recovery re-executes from the
    // input log (without waiting for the user) would never fire.
    kills.sort();
    let e = env(&[
        ("DC_DIR", dc.to_str().unwrap_or("")),
        ("DC_PROTOCOL", protocol),
        ("DC_TRACE", "1"),
        ("DC_HEAP_MB", "256"),
        ("DC_LOG_MB", "64"),
    ]);
    let runs = drive_kv(
        &Target {
            bin: kv_bin(),
            args: &[],
            env: &e,
            cwd: &rund,
            stderr: &err,
        },
        &inputs,
        &kills,
        deadline,
    )
    .map_err(|x| {
        anyhow::anyhow!(
            "{x}; stderr: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    })?;
    ensure!(
        runs.len() == nkills + 1,
        "{} runs for {nkills} kills",
        runs.len()
    );
    let outs: Vec<&[u8]> = runs.iter().map(|r| r.out.as_slice()).collect();
    let m = oracle::check_output(&outs, &reference[0].out, true).map_err(|x| {
        anyhow::anyhow!(
            "{protocol}: {x}\nstderr:\n{}\nreference:\n{}\nruns:\n{}",
            std::fs::read_to_string(&err).unwrap_or_default(),
            lossy(&reference[0].out),
            runs.iter()
                .map(|r| lossy(&r.out))
                .collect::<Vec<_>>()
                .join("\n--- crash ---\n")
        )
    })?;
    ensure!(
        files(&rund) == files(&refd),
        "{protocol}: files differ:\n{:?}\n{:?}",
        files(&rund),
        files(&refd)
    );
    let trace = trace_of(&dc)?;
    let bad = oracle::check_one(&trace);
    ensure!(
        bad.is_empty(),
        "{protocol}: commit invariant violated: {bad:?}"
    );
    let c = oracle::counts(&trace);
    ensure!(
        c.recoveries == nkills,
        "{protocol}: {} recoveries in the trace, {nkills} kills",
        c.recoveries
    );
    if protocol == "cpvs" {
        // CPVS commits right before every visible event: only the last one before the
        // crash may be repeated. (The other protocols re-execute from an earlier commit
        // and may repeat several, which Definition 2 allows.)
        let maxv = trace
            .iter()
            .filter_map(|e| match e {
                oracle::Event::Visible { len, .. } => Some(*len),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        ensure!(
            m.repeated.iter().all(|&r| r <= maxv),
            "{protocol}: repeated {:?} > one write ({maxv})",
            m.repeated
        );
    }
    eprintln!(
        "{protocol}: kills {kills:?}, repeated bytes {:?}, {c:?}",
        m.repeated
    );
    Ok(())
}

#[test]
fn kv_cand() -> Result<()> {
    kv_case("cand", 11, 4)
}

#[test]
fn kv_cpvs() -> Result<()> {
    kv_case("cpvs", 12, 4)
}

#[test]
fn kv_cbndvs() -> Result<()> {
    kv_case("cbndvs", 13, 4)
}

#[test]
fn kv_cand_log() -> Result<()> {
    kv_case("cand-log", 14, 4)
}

#[test]
fn kv_cbndvs_log() -> Result<()> {
    kv_case("cbndvs-log", 15, 4)
}

/// Without a protocol the commit invariant is broken, and the oracle sees it on the real
/// trace (so the oracle can fail).
#[test]
fn kv_without_protocol_violates_save_work() -> Result<()> {
    let t = tempfile::tempdir()?;
    let dc = t.path().join("dc");
    let err = t.path().join("stderr");
    let e = env(&[
        ("DC_DIR", dc.to_str().unwrap_or("")),
        ("DC_PROTOCOL", "manual"),
        ("DC_TRACE", "1"),
        ("DC_HEAP_MB", "64"),
    ]);
    let inputs: Vec<String> = kv_script()[..8]
        .iter()
        .cloned()
        .chain(["quit".to_string()])
        .collect();
    drive_kv(
        &Target {
            bin: kv_bin(),
            args: &[],
            env: &e,
            cwd: t.path(),
            stderr: &err,
        },
        &inputs,
        &[],
        Duration::from_secs(30),
    )?;
    let bad = oracle::check_one(&trace_of(&dc)?);
    ensure!(!bad.is_empty(), "expected violations");
    Ok(())
}

fn compute_case(extra: &[(&str, &str)], args: &[&str], seed: u64, nkills: usize) -> Result<()> {
    let t = tempfile::tempdir()?;
    let dc = t.path().join("dc");
    let err = t.path().join("stderr");
    let off = env(&[("DC_DISABLE", "1")]);
    let reference = run_with_kills(
        &Target {
            bin: compute_bin(),
            args,
            env: &off,
            cwd: t.path(),
            stderr: &err,
        },
        &[],
        Duration::from_secs(60),
    )?;
    let mut pairs = vec![
        ("DC_DIR", dc.to_str().unwrap_or("")),
        ("DC_TRACE", "1"),
        ("DC_HEAP_MB", "256"),
        ("DC_LOG_MB", "128"),
    ];
    pairs.extend_from_slice(extra);
    let mut rng = Rng::new(seed);
    let kills: Vec<u64> = (0..nkills).map(|_| 80 + rng.below(500)).collect();
    let on = env(&pairs);
    let runs = run_with_kills(
        &Target {
            bin: compute_bin(),
            args,
            env: &on,
            cwd: t.path(),
            stderr: &err,
        },
        &kills,
        Duration::from_secs(90),
    )
    .map_err(|x| {
        anyhow::anyhow!(
            "{x}; stderr: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    })?;
    let outs: Vec<&[u8]> = runs.iter().map(|r| r.out.as_slice()).collect();
    let m = oracle::check_output(&outs, &reference[0].out, true).map_err(|x| {
        anyhow::anyhow!(
            "{x}\nreference:\n{}\nruns:\n{}",
            lossy(&reference[0].out),
            runs.iter()
                .map(|r| lossy(&r.out))
                .collect::<Vec<_>>()
                .join("\n--- crash ---\n")
        )
    })?;
    let trace = trace_of(&dc)?;
    let bad = oracle::check_one(&trace);
    ensure!(bad.is_empty(), "commit invariant violated: {bad:?}");
    eprintln!(
        "kills at {kills:?} ms: {} runs, repeated {:?}, {:?}",
        runs.len(),
        m.repeated,
        oracle::counts(&trace)
    );
    Ok(())
}

const COMPUTE_ARGS: &[&str] = &[
    "--rounds",
    "400",
    "--kib",
    "2048",
    "--updates",
    "30000",
    "--print-every",
    "20",
];

/// The core: a compute loop checkpointed by a timer, killed and resumed.
#[test]
fn compute_timer_checkpoints_survive_sigkill() -> Result<()> {
    compute_case(&[("DC_INTERVAL_MS", "25")], COMPUTE_ARGS, 21, 4)
}

/// Checkpoints (timer and manual) taken at the bottom of 1 to 40 nested calls of about
/// 2.4 KB of stack each: the stack must come back at whatever depth the checkpoint was.
#[test]
fn compute_checkpoints_at_varying_stack_depths_survive_sigkill() -> Result<()> {
    let mut a = COMPUTE_ARGS.to_vec();
    a.extend_from_slice(&["--max-depth", "40", "--checkpoint-every", "3"]);
    compute_case(&[("DC_INTERVAL_MS", "20")], &a, 24, 5)
}

#[test]
fn compute_cpvs_survives_sigkill() -> Result<()> {
    compute_case(&[("DC_PROTOCOL", "cpvs")], COMPUTE_ARGS, 22, 4)
}

#[test]
fn compute_manual_checkpoints_survive_sigkill() -> Result<()> {
    let mut a = COMPUTE_ARGS.to_vec();
    a.extend_from_slice(&["--checkpoint-every", "7"]);
    compute_case(&[], &a, 23, 4)
}

#[test]
fn compute_compare_tracker_survives_sigkill() -> Result<()> {
    compute_case(
        &[("DC_INTERVAL_MS", "40"), ("DC_TRACKER", "compare")],
        COMPUTE_ARGS,
        24,
        3,
    )
}

fn probe_bin() -> &'static Path {
    bin("DC_PROBE_BIN", env!("CARGO_BIN_EXE_dc-probe"))
}

/// Kernel state across crashes: open files and offsets, undone overwrites, a file
/// unlinked while open, O_APPEND, the working directory, handlers for a synchronous
/// signal and an interval timer's signal, an mprotected page.
fn probe_case(extra: &[(&str, &str)], seed: u64, nkills: usize) -> Result<()> {
    let t = tempfile::tempdir()?;
    let (refd, rund, dc) = (
        t.path().join("ref"),
        t.path().join("run"),
        t.path().join("dc"),
    );
    std::fs::create_dir_all(&refd)?;
    std::fs::create_dir_all(&rund)?;
    let err = t.path().join("stderr");
    let off = env(&[("DC_DISABLE", "1")]);
    let args: &[&str] = &["--steps", "150", "--burn", "400"];
    let reference = run_with_kills(
        &Target {
            bin: probe_bin(),
            args,
            env: &off,
            cwd: &refd,
            stderr: &err,
        },
        &[],
        Duration::from_secs(60),
    )?;
    let mut pairs = vec![
        ("DC_DIR", dc.to_str().unwrap_or("")),
        ("DC_TRACE", "1"),
        ("DC_HEAP_MB", "128"),
        ("DC_LOG_MB", "64"),
    ];
    pairs.extend_from_slice(extra);
    let on = env(&pairs);
    let mut rng = Rng::new(seed);
    let kills: Vec<u64> = (0..nkills).map(|_| 30 + rng.below(300)).collect();
    let runs = run_with_kills(
        &Target {
            bin: probe_bin(),
            args,
            env: &on,
            cwd: &rund,
            stderr: &err,
        },
        &kills,
        Duration::from_secs(90),
    )
    .map_err(|x| {
        anyhow::anyhow!(
            "{x}; stderr: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    })?;
    let outs: Vec<&[u8]> = runs.iter().map(|r| r.out.as_slice()).collect();
    oracle::check_output(&outs, &reference[0].out, true).map_err(|x| {
        anyhow::anyhow!(
            "{x}\nstderr:\n{}\nreference:\n{}\nruns:\n{}",
            std::fs::read_to_string(&err).unwrap_or_default(),
            lossy(&reference[0].out),
            runs.iter()
                .map(|r| lossy(&r.out))
                .collect::<Vec<_>>()
                .join("\n--- crash ---\n")
        )
    })?;
    ensure!(
        files(&rund.join("work")) == files(&refd.join("work")),
        "files differ: {:?} vs {:?}",
        files(&rund.join("work"))
            .iter()
            .map(|f| (f.0.clone(), f.1.len()))
            .collect::<Vec<_>>(),
        files(&refd.join("work"))
            .iter()
            .map(|f| (f.0.clone(), f.1.len()))
            .collect::<Vec<_>>()
    );
    let trace = trace_of(&dc)?;
    let bad = oracle::check_one(&trace);
    ensure!(bad.is_empty(), "commit invariant violated: {bad:?}");
    eprintln!(
        "probe {extra:?}: kills at {kills:?} ms, {} runs, {:?}",
        runs.len(),
        oracle::counts(&trace)
    );
    Ok(())
}

#[test]
fn probe_kernel_state_cpvs() -> Result<()> {
    probe_case(&[("DC_PROTOCOL", "cpvs")], 31, 4)
}

#[test]
fn probe_kernel_state_cand() -> Result<()> {
    probe_case(&[("DC_PROTOCOL", "cand")], 32, 4)
}

#[test]
fn probe_kernel_state_cbndvs_timer() -> Result<()> {
    probe_case(
        &[("DC_PROTOCOL", "cbndvs"), ("DC_INTERVAL_MS", "20")],
        33,
        4,
    )
}

/// Builds the C demo against `libdiscount.a` (next to this test's binary).
fn build_c_notes(dir: &Path) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or_else(|| anyhow::anyhow!("no target dir"))?;
    let lib = profile.join("libdiscount.a");
    ensure!(
        lib.exists(),
        "{} missing (cargo builds it with the discount crate)",
        lib.display()
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/notes.c");
    let inc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../discount/include");
    let out = dir.join("notes");
    let st = std::process::Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .arg("-I")
        .arg(&inc)
        .arg(&lib)
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .status()?;
    ensure!(st.success(), "cc failed");
    Ok(out)
}

fn c_case(protocol: &str, seed: u64, nkills: usize) -> Result<()> {
    let t = tempfile::tempdir()?;
    let notes = build_c_notes(t.path())?;
    let (refd, rund, dc) = (
        t.path().join("ref"),
        t.path().join("run"),
        t.path().join("dc"),
    );
    std::fs::create_dir_all(&refd)?;
    std::fs::create_dir_all(&rund)?;
    let err = t.path().join("stderr");
    let mut inputs: Vec<String> = Vec::new();
    for i in 0..12 {
        inputs.push(format!("add note number {i}"));
        if i % 3 == 2 {
            inputs.push(format!("upper {}", i / 2));
            inputs.push("count".into());
        }
        if i % 4 == 3 {
            inputs.push(format!("del {}", i / 3));
            inputs.push("save notes.txt".into());
            inputs.push("print".into());
        }
    }
    inputs.push("quit".into());
    let off = env(&[("DC_DISABLE", "1")]);
    let reference = drive_kv(
        &Target {
            bin: &notes,
            args: &[],
            env: &off,
            cwd: &refd,
            stderr: &err,
        },
        &inputs,
        &[],
        Duration::from_secs(60),
    )?;
    let mut rng = Rng::new(seed);
    let mut kills: Vec<(usize, u64)> = Vec::new();
    while kills.len() < nkills {
        let k = rng.below(inputs.len() as u64 - 1) as usize;
        if !kills.iter().any(|&(x, _)| x == k) {
            kills.push((k, rng.below(4)));
        }
    }
    kills.sort();
    let on = env(&[
        ("DC_DIR", dc.to_str().unwrap_or("")),
        ("DC_PROTOCOL", protocol),
        ("DC_TRACE", "1"),
        ("DC_HEAP_MB", "64"),
        ("DC_LOG_MB", "64"),
    ]);
    let runs = drive_kv(
        &Target {
            bin: &notes,
            args: &[],
            env: &on,
            cwd: &rund,
            stderr: &err,
        },
        &inputs,
        &kills,
        Duration::from_secs(60),
    )
    .map_err(|x| {
        anyhow::anyhow!(
            "{x}; stderr: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    })?;
    let outs: Vec<&[u8]> = runs.iter().map(|r| r.out.as_slice()).collect();
    oracle::check_output(&outs, &reference[0].out, true)
        .map_err(|x| anyhow::anyhow!("C notes {protocol}: {x}"))?;
    ensure!(
        files(&rund) == files(&refd),
        "C notes {protocol}: files differ"
    );
    let bad = oracle::check_one(&trace_of(&dc)?);
    ensure!(bad.is_empty(), "C notes {protocol}: {bad:?}");
    Ok(())
}

/// A C program: one `dc_init()`, malloc, read/write/open; killed and resumed.
#[test]
fn c_notes_cpvs() -> Result<()> {
    c_case("cpvs", 41, 4)
}

#[test]
fn c_notes_cand_log() -> Result<()> {
    c_case("cand-log", 42, 4)
}
