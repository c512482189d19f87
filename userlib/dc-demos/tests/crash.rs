//! Crash tests: the demo programs are killed with SIGKILL at random points and run again
//! until they finish. Every case goes through one harness, [`crash_case`], whose oracle
//! is: every planned kill landed (each run but the last was killed before it finished);
//! every run after a crash resumed from the last checkpoint instead of starting over
//! (its trace begins with a recovery of that checkpoint and its output begins where that
//! checkpoint left the output, `oracle::check_resumed`); the visible output is a
//! failure-free run's except for repeated output (Definition 2); the files they leave are
//! the same; and their event traces satisfy the commit invariant (Theorem 2). A negative
//! control throws the image away between runs and checks that the oracle rejects it.

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

fn trace_of(path: &Path) -> Result<Vec<oracle::Event>> {
    Ok(oracle::parse(&std::fs::read_to_string(path)?)?)
}

/// How a case is driven and killed.
enum Drive {
    /// An interactive program (the key-value shell, the C notes), fed `inputs` like a
    /// user; each kill comes `0..max_delay_ms` after sending a random input.
    Interactive {
        inputs: Vec<String>,
        max_delay_ms: u64,
    },
    /// A program that runs by itself; each run is killed after a random part of the
    /// output (up to `bytes_share` of the failure-free output, sometimes none: then the
    /// kill may land in start-up or recovery) plus `0..max_delay_ms`.
    Timed {
        bytes_share: usize,
        max_delay_ms: u64,
    },
    /// A program that runs by itself, killed as planned.
    Planned(Vec<Kill>),
}

/// One crash test.
struct Case<'a> {
    name: &'a str,
    bin: &'a Path,
    args: &'a [&'a str],
    /// `DC_*` settings besides the state directory and the trace.
    env: &'a [(&'a str, &'a str)],
    drive: Drive,
    seed: u64,
    kills: usize,
    /// Subdirectory of the working directory whose files must equal the failure-free
    /// run's ("" for the directory itself).
    files: &'a str,
    /// CPVS: a resumed run repeats at most the last write.
    one_write_repeated: bool,
    /// The negative control: delete the checkpoint image after every kill.
    lose_image: bool,
}

/// What a case found.
struct Outcome {
    reference: Vec<u8>,
    runs: Vec<Run>,
    trace: Vec<oracle::Event>,
}

impl Outcome {
    fn show(&self, err: &Path) -> String {
        format!(
            "stderr:\n{}\nreference:\n{}\nruns:\n{}",
            std::fs::read_to_string(err).unwrap_or_default(),
            lossy(&self.reference),
            self.runs
                .iter()
                .map(|r| lossy(&r.out))
                .collect::<Vec<_>>()
                .join("\n--- crash ---\n")
        )
    }
}

fn target<'a>(
    c: &'a Case<'_>,
    env: &'a [(String, String)],
    cwd: &'a Path,
    stderr: &'a Path,
) -> Target<'a> {
    Target {
        bin: c.bin,
        args: c.args,
        env,
        cwd,
        stderr,
        trace: None,
        after_kill: None,
    }
}

/// Runs `c` failure-free and with crashes, and applies the oracle. With `lose_image`
/// it returns the oracle's verdict on the runs (see `check_resumed`) instead of failing.
fn crash_case(
    c: &Case<'_>,
) -> Result<std::result::Result<oracle::Resumption, oracle::ResumeError>> {
    let t = tempfile::tempdir()?;
    let (refd, rund, dc, tr) = (
        t.path().join("ref"),
        t.path().join("run"),
        t.path().join("dc"),
        t.path().join("trace"),
    );
    std::fs::create_dir_all(&refd)?;
    std::fs::create_dir_all(&rund)?;
    let err = t.path().join("stderr");
    let deadline = Duration::from_secs(60);
    let off = env(&[("DC_DISABLE", "1")]);
    let off_target = |cwd| target(c, &off, cwd, &err);
    let reference = match &c.drive {
        Drive::Interactive { inputs, .. } => drive_kv(&off_target(&refd), inputs, &[], deadline)?,
        Drive::Timed { .. } | Drive::Planned(_) => {
            run_with_kills(&off_target(&refd), &[], deadline)?
        }
    };
    ensure!(reference.len() == 1);
    let reference = reference[0].out.clone();
    let mut pairs = vec![
        ("DC_DIR", dc.to_str().unwrap_or("")),
        ("DC_TRACE", tr.to_str().unwrap_or("")),
    ];
    pairs.extend_from_slice(c.env);
    let on = env(&pairs);
    let lose = || -> Result<()> {
        if dc.exists() {
            std::fs::remove_dir_all(&dc)?;
        }
        Ok(())
    };
    let mut target_on = target(c, &on, &rund, &err);
    target_on.trace = Some(&tr);
    if c.lose_image {
        target_on.after_kill = Some(&lose);
    }
    let mut rng = plan_rng(c.seed);
    let runs = match &c.drive {
        Drive::Interactive {
            inputs,
            max_delay_ms,
        } => {
            let mut kills: Vec<(usize, u64)> = Vec::new();
            while kills.len() < c.kills {
                let k = rng.below(inputs.len() as u64 - 1) as usize;
                if !kills.iter().any(|&(x, _)| x == k) {
                    kills.push((k, rng.below(*max_delay_ms)));
                }
            }
            // In input order: a kill planned at a command that a recovery re-executes
            // from the input log (without waiting for the user) would never fire.
            kills.sort();
            eprintln!("{}: kills after inputs {kills:?}", c.name);
            drive_kv(&target_on, inputs, &kills, deadline)
        }
        Drive::Timed {
            bytes_share,
            max_delay_ms,
        } => {
            let most = (reference.len() / bytes_share.max(&1)) as u64;
            let kills: Vec<Kill> = (0..c.kills)
                .map(|_| Kill {
                    after_bytes: match rng.below(4) {
                        0 => 0,
                        _ => rng.below(most) as usize,
                    },
                    delay_ms: rng.below(*max_delay_ms),
                })
                .collect();
            eprintln!("{}: kills {kills:?}", c.name);
            run_with_kills(&target_on, &kills, Duration::from_secs(90))
        }
        Drive::Planned(kills) => run_with_kills(&target_on, kills, Duration::from_secs(90)),
    }
    .map_err(|x| {
        anyhow::anyhow!(
            "{}: {x}; stderr: {}",
            c.name,
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    })?;
    let outcome = Outcome {
        trace: trace_of(&tr)?,
        reference,
        runs,
    };
    let o = &outcome;
    ensure!(
        o.runs.len() == c.kills + 1,
        "{}: {} runs for {} kills",
        c.name,
        o.runs.len(),
        c.kills
    );
    let records: Vec<oracle::RunRecord<'_>> = o.runs.iter().map(Run::record).collect();
    let verdict = oracle::check_resumed(&records, &o.reference, 1);
    if c.lose_image {
        return Ok(verdict);
    }
    let m = verdict.map_err(|x| anyhow::anyhow!("{}: {x}\n{}", c.name, o.show(&err)))?;
    ensure!(
        files(&rund.join(c.files)) == files(&refd.join(c.files)),
        "{}: files differ: {:?} vs {:?}",
        c.name,
        files(&rund.join(c.files))
            .iter()
            .map(|f| (f.0.clone(), f.1.len()))
            .collect::<Vec<_>>(),
        files(&refd.join(c.files))
            .iter()
            .map(|f| (f.0.clone(), f.1.len()))
            .collect::<Vec<_>>()
    );
    let bad = oracle::check_one(&o.trace);
    ensure!(
        bad.is_empty(),
        "{}: commit invariant violated: {bad:?}",
        c.name
    );
    let counts = oracle::counts(&o.trace);
    ensure!(
        counts.recoveries == m.recoveries,
        "{}: {} recoveries in the trace, {} runs resumed",
        c.name,
        counts.recoveries,
        m.recoveries
    );
    if matches!(c.drive, Drive::Interactive { .. }) {
        // Every kill comes after the shell's first prompt, so after its first checkpoint:
        // every run after a kill must have recovered.
        ensure!(
            m.recoveries == c.kills,
            "{}: {} recoveries for {} kills",
            c.name,
            m.recoveries,
            c.kills
        );
    }
    if c.one_write_repeated {
        // CPVS commits right before every visible event: only the last one before the
        // crash may be repeated. (The other protocols re-execute from an earlier commit
        // and may repeat several, which Definition 2 allows.)
        let maxv = o
            .trace
            .iter()
            .filter_map(|e| match e {
                oracle::Event::Visible { len, .. } => Some(*len),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        ensure!(
            m.output.repeated.iter().all(|&r| r <= maxv),
            "{}: repeated {:?} > one write ({maxv})",
            c.name,
            m.output.repeated
        );
    }
    eprintln!(
        "{}: {} runs, resumed {:?} at bytes {:?}, repeated {:?}, {counts:?}",
        c.name,
        o.runs.len(),
        m.resumed,
        m.output.starts,
        m.output.repeated
    );
    Ok(Ok(m))
}

/// [`crash_case`] for a case that must pass.
fn pass(c: Case<'_>) -> Result<()> {
    crash_case(&c)?
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{}: {e}", c.name))
}

fn kv(protocol: &'static str, seed: u64) -> Case<'static> {
    let env: &'static [(&str, &str)] = Box::leak(
        vec![
            ("DC_PROTOCOL", protocol),
            ("DC_HEAP_MB", "256"),
            ("DC_LOG_MB", "64"),
        ]
        .into_boxed_slice(),
    );
    Case {
        name: protocol,
        bin: kv_bin(),
        args: &[],
        env,
        drive: Drive::Interactive {
            inputs: kv_script(),
            max_delay_ms: 6,
        },
        seed,
        kills: 4,
        files: "",
        one_write_repeated: protocol == "cpvs",
        lose_image: false,
    }
}

#[test]
fn kv_cand() -> Result<()> {
    pass(kv("cand", 11))
}

#[test]
fn kv_cpvs() -> Result<()> {
    pass(kv("cpvs", 12))
}

#[test]
fn kv_cbndvs() -> Result<()> {
    pass(kv("cbndvs", 13))
}

#[test]
fn kv_cand_log() -> Result<()> {
    pass(kv("cand-log", 14))
}

#[test]
fn kv_cbndvs_log() -> Result<()> {
    pass(kv("cbndvs-log", 15))
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
            trace: None,
            after_kill: None,
        },
        &inputs,
        &[],
        Duration::from_secs(30),
    )?;
    let bad = oracle::check_one(&trace_of(&dc.join("trace"))?);
    ensure!(!bad.is_empty(), "expected violations");
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

fn compute<'a>(
    name: &'a str,
    env: &'a [(&'a str, &'a str)],
    args: &'a [&'a str],
    seed: u64,
    kills: usize,
) -> Case<'a> {
    Case {
        name,
        bin: compute_bin(),
        args,
        env,
        drive: Drive::Timed {
            bytes_share: 2 * (kills + 1),
            max_delay_ms: 30,
        },
        seed,
        kills,
        files: "",
        one_write_repeated: false,
        lose_image: false,
    }
}

const COMPUTE_ENV: [(&str, &str); 2] = [("DC_HEAP_MB", "256"), ("DC_LOG_MB", "128")];

/// The core: a compute loop checkpointed by a timer, killed and resumed.
#[test]
fn compute_timer_checkpoints_survive_sigkill() -> Result<()> {
    let e = [COMPUTE_ENV[0], COMPUTE_ENV[1], ("DC_INTERVAL_MS", "25")];
    pass(compute("compute timer", &e, COMPUTE_ARGS, 21, 4))
}

/// Checkpoints (timer and manual) taken at the bottom of 1 to 40 nested calls of about
/// 2.4 KB of stack each: the stack must come back at whatever depth the checkpoint was.
#[test]
fn compute_checkpoints_at_varying_stack_depths_survive_sigkill() -> Result<()> {
    let mut a = COMPUTE_ARGS.to_vec();
    a.extend_from_slice(&["--max-depth", "40", "--checkpoint-every", "3"]);
    let e = [COMPUTE_ENV[0], COMPUTE_ENV[1], ("DC_INTERVAL_MS", "20")];
    pass(compute("compute depths", &e, &a, 24, 5))
}

#[test]
fn compute_cpvs_survives_sigkill() -> Result<()> {
    let e = [COMPUTE_ENV[0], COMPUTE_ENV[1], ("DC_PROTOCOL", "cpvs")];
    pass(compute("compute cpvs", &e, COMPUTE_ARGS, 22, 4))
}

#[test]
fn compute_manual_checkpoints_survive_sigkill() -> Result<()> {
    let mut a = COMPUTE_ARGS.to_vec();
    a.extend_from_slice(&["--checkpoint-every", "7"]);
    pass(compute("compute manual", &COMPUTE_ENV, &a, 23, 4))
}

#[test]
fn compute_compare_tracker_survives_sigkill() -> Result<()> {
    let e = [
        COMPUTE_ENV[0],
        COMPUTE_ENV[1],
        ("DC_INTERVAL_MS", "40"),
        ("DC_TRACKER", "compare"),
    ];
    pass(compute("compute compare", &e, COMPUTE_ARGS, 24, 3))
}

/// The negative control: the checkpoint image is thrown away after every kill, so every
/// run starts over. Definition 2 alone accepts that (starting over only repeats output);
/// the oracle must not.
#[test]
fn oracle_rejects_a_run_that_restarted() -> Result<()> {
    let e = [COMPUTE_ENV[0], COMPUTE_ENV[1], ("DC_INTERVAL_MS", "25")];
    let mut c = compute("compute, image lost", &e, COMPUTE_ARGS, 25, 2);
    c.lose_image = true;
    // Kill each run once it has printed (so after its first checkpoint, taken in
    // `init`) and before it finishes.
    let kill = Kill {
        after_bytes: 100,
        delay_ms: 0,
    };
    c.drive = Drive::Planned(vec![kill; 2]);
    // `check_resumed` checks Definition 2 first (an `Output` error otherwise): a
    // `Restarted` verdict means the outputs passed it and only the new check caught the
    // restart.
    match crash_case(&c)? {
        Ok(m) => anyhow::bail!("the oracle accepted runs that started over: {m:?}"),
        Err(oracle::ResumeError::Restarted { run: 1, .. }) => Ok(()),
        Err(e) => anyhow::bail!("rejected, but not as a restart: {e}"),
    }
}

fn probe_bin() -> &'static Path {
    bin("DC_PROBE_BIN", env!("CARGO_BIN_EXE_dc-probe"))
}

/// Kernel state across crashes: open files and offsets, undone overwrites, a file
/// unlinked while open, O_APPEND, the working directory, handlers for a synchronous
/// signal and an interval timer's signal, an mprotected page.
fn probe<'a>(name: &'a str, env: &'a [(&'a str, &'a str)], seed: u64) -> Case<'a> {
    Case {
        name,
        bin: probe_bin(),
        args: &["--steps", "150", "--burn", "400"],
        env,
        drive: Drive::Timed {
            bytes_share: 10,
            max_delay_ms: 30,
        },
        seed,
        kills: 4,
        files: "work",
        one_write_repeated: false,
        lose_image: false,
    }
}

const PROBE_ENV: [(&str, &str); 2] = [("DC_HEAP_MB", "128"), ("DC_LOG_MB", "64")];

#[test]
fn probe_kernel_state_cpvs() -> Result<()> {
    let e = [PROBE_ENV[0], PROBE_ENV[1], ("DC_PROTOCOL", "cpvs")];
    pass(probe("probe cpvs", &e, 31))
}

#[test]
fn probe_kernel_state_cand() -> Result<()> {
    let e = [PROBE_ENV[0], PROBE_ENV[1], ("DC_PROTOCOL", "cand")];
    pass(probe("probe cand", &e, 32))
}

#[test]
fn probe_kernel_state_cbndvs_timer() -> Result<()> {
    let e = [
        PROBE_ENV[0],
        PROBE_ENV[1],
        ("DC_PROTOCOL", "cbndvs"),
        ("DC_INTERVAL_MS", "20"),
    ];
    pass(probe("probe cbndvs timer", &e, 33))
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
        .args(discount::C_LINK_LIBS)
        .status()?;
    ensure!(st.success(), "cc failed");
    Ok(out)
}

fn c_inputs() -> Vec<String> {
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
    inputs
}

fn c_case(protocol: &str, seed: u64) -> Result<()> {
    let t = tempfile::tempdir()?;
    let notes = build_c_notes(t.path())?;
    let name = format!("C notes {protocol}");
    let env = [
        ("DC_PROTOCOL", protocol),
        ("DC_HEAP_MB", "64"),
        ("DC_LOG_MB", "64"),
    ];
    pass(Case {
        name: &name,
        bin: &notes,
        args: &[],
        env: &env,
        drive: Drive::Interactive {
            inputs: c_inputs(),
            max_delay_ms: 4,
        },
        seed,
        kills: 4,
        files: "",
        one_write_repeated: false,
        lose_image: false,
    })
}

/// A C program: one `dc_init()`, malloc, read/write/open; killed and resumed.
#[test]
fn c_notes_cpvs() -> Result<()> {
    c_case("cpvs", 41)
}

#[test]
fn c_notes_cand_log() -> Result<()> {
    c_case("cand-log", 42)
}
