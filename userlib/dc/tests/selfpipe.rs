//! A pipe within one process (issue 16: `pipe`/`pipe2`, a self-pipe as event loops use):
//! `progs/selfpipe.c` keeps three items in a pipe it both writes and reads, taking one
//! and putting the next at each step, so every checkpoint finds items in the pipe.
//! Under CPVS, CAND and CBNDVS with 3 seeded SIGKILLs each: the output equals the
//! failure-free run's with repetitions only (each recovery made the pipe again at its
//! descriptors with the bytes it held at the checkpoint: an item lost or repeated changes
//! every later line, an empty pipe stops the program), and every run after a kill
//! resumed.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::dist::{self, Member, Plan};

const STEPS: usize = 300;

fn selfpipe_bin(dir: &Path) -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/progs/selfpipe.c");
    let out = dir.join("selfpipe");
    let st = Command::new("cc")
        .args(["-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .context("run cc (the C compiler setup installs)")?;
    ensure!(st.success(), "cc failed on {}", src.display());
    Ok(out)
}

fn selfpipe(protocol: &str, seed: u64) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = selfpipe_bin(t.path())?;
    let member = || Member {
        argv: vec![bin.display().to_string(), STEPS.to_string()],
        stdin: None,
    };
    let reference = dist::run(&Plan::new(None, vec![member()]))?;
    let want: Vec<&str> = reference.outs[0].lines().collect();
    ensure!(
        want.len() == STEPS + 1 && want.last() == Some(&"done"),
        "the failure-free run printed {want:?}"
    );
    let o = dist::run(&Plan {
        kills: 3,
        seed,
        first_ms: 100,
        spread_ms: 250,
        deadline: Duration::from_secs(60),
        ..Plan::new(Some(protocol), vec![member()])
    })?;
    let rollbacks = dist::repetitions_only("selfpipe", &o.outs[0], &want)?;
    dist::resumed(&o)?;
    eprintln!(
        "selfpipe {protocol}: kills {:?}, {rollbacks} rollbacks seen in the output",
        o.killed
    );
    Ok(())
}

cases! {
    self_pipe_under_cpvs: selfpipe("cpvs", 700);
    self_pipe_under_cand: selfpipe("cand", 701);
    self_pipe_under_cbndvs: selfpipe("cbndvs", 702);
}
