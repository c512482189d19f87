//! FIFOs as recovered state (issue 16): `apps/fifo.c`, a producer writing numbered
//! records into a FIFO that a relay reads and forwards into a second FIFO, read by a
//! consumer, which prints a running count and checksum every 100 records. Each reader
//! makes its FIFO with `mkfifo`, each writer opens it by path. An ordinary FIFO program,
//! nothing Discount-Checking-specific but the launch.
//!
//! * Under CPV-2PC and CBNDV-2PC with 3 seeded SIGKILLs of random members: the consumer's
//!   output equals the failure-free run's (run without Discount Checking) with
//!   repetitions only, so every record arrived exactly once and in order (a lost or
//!   repeated record changes every later sum); Save-work on the merged traces; no run
//!   started over.
//! * Negative control: the same with the drain of the round skipped
//!   (`DC_TEST_NO_DRAIN=1`): bytes in a FIFO at a commit are lost by the rollback (the
//!   FIFOs are opened again only after every old process is gone, so the pipe the
//!   kernel makes then is a new, empty one), and the oracle must reject the run.
//! * Under a single-process protocol (CPVS) a FIFO is the outside world: a reader whose
//!   writer (this test) keeps the FIFO open is killed twice and recovered; each recovery
//!   opens the FIFO again at its descriptor, the reader goes on with the lines written
//!   since, and it sees the end of the stream when the writer closes.

#[macro_use]
mod common;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::dist::{self, Member, Plan};

const RECORDS: usize = 1500;
const EVERY: usize = 100;

/// consumer <- b <- relay <- a <- producer, the FIFOs named `a{tag}` and `b{tag}` in
/// `dir`.
fn pipeline(bin: &Path, dir: &Path, tag: &str) -> Vec<Member> {
    let b = bin.display().to_string();
    let fifo = |n: &str| dir.join(format!("{n}{tag}")).display().to_string();
    let m = |v: Vec<String>| Member {
        argv: v,
        stdin: None,
    };
    vec![
        m(vec![
            b.clone(),
            "consumer".into(),
            fifo("b"),
            RECORDS.to_string(),
            EVERY.to_string(),
        ]),
        m(vec![b.clone(), "relay".into(), fifo("a"), fifo("b")]),
        m(vec![b, "producer".into(), fifo("a"), RECORDS.to_string()]),
    ]
}

fn fifos(protocol: &str, test: u64, no_drain: bool) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = dist::build_app("fifo", t.path())?;
    let reference = dist::run(&Plan::new(None, pipeline(&bin, t.path(), "0")))?;
    let want: Vec<&str> = reference.outs[0].lines().collect();
    ensure!(
        want.len() == RECORDS / EVERY + 1 && want.last() == Some(&"done"),
        "the failure-free run printed {want:?}"
    );
    let o = dist::run(&Plan {
        kills: 3,
        seed: 500 + test,
        first_ms: 150,
        spread_ms: 400,
        deadline: Duration::from_secs(120),
        env: if no_drain {
            vec![("DC_TEST_NO_DRAIN".into(), "1".into())]
        } else {
            Vec::new()
        },
        ..Plan::new(Some(protocol), pipeline(&bin, t.path(), "1"))
    })?;
    dist::repetitions_only("consumer", &o.outs[0], &want)?;
    ensure!(
        o.outs[0].lines().last() == Some("done"),
        "the consumer did not finish: {:?}",
        o.outs[0]
    );
    dist::resumed(&o)?;
    dist::save_work(&o)?;
    eprintln!(
        "fifos {protocol}: kills {:?}; wall {:?}; {}",
        o.killed,
        o.wall,
        o.coord_last.unwrap_or_default()
    );
    Ok(())
}

const LINES: usize = 60;

/// `fifo lines PATH` under `protocol` (a single-process one), this test writing into the
/// FIFO: it holds the FIFO open (`O_RDWR`, so its writes never fail while the reader is
/// down: the kernel keeps the pipe and its bytes as long as one process has it open)
/// and writes a line every 20 ms, then closes it.
fn outside_fifo(protocol: &str, test: u64) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = dist::build_app("fifo", t.path())?;
    let path = t.path().join("in");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: mkfifo reads a NUL-terminated path.
    ensure!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0, "mkfifo");
    let mut w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .context("open the FIFO")?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        std::thread::sleep(Duration::from_millis(100));
        for i in 1..=LINES {
            w.write_all(format!("line {i}\n").as_bytes())?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(()) // dropped: the end of the stream
    });
    let reader = Member {
        argv: vec![
            bin.display().to_string(),
            "lines".into(),
            path.display().to_string(),
        ],
        stdin: None,
    };
    let o = dist::run(&Plan {
        kills: 2,
        seed: 600 + test,
        first_ms: 250,
        spread_ms: 300,
        ..Plan::new(Some(protocol), vec![reader])
    })?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let out = &o.outs[0];
    // Increasing line numbers with repetitions (a rollback prints the last line again)
    // and, as the outside world's input, lines the crashed run had read but not yet
    // printed may be missing; the end of the stream last.
    let mut last = 0usize;
    let mut got = 0usize;
    for l in out.lines().filter(|l| *l != "eof") {
        let k: usize = l
            .strip_prefix("got line ")
            .and_then(|k| k.parse().ok())
            .with_context(|| format!("unexpected output line {l:?} in {out:?}"))?;
        ensure!(
            k + 1 >= last && k <= LINES,
            "line {k} after {last}: {out:?}"
        );
        if k > last {
            got += 1;
        }
        last = last.max(k);
    }
    ensure!(
        out.lines().last() == Some("eof") && out.matches("eof").count() == 1,
        "the recovered reader must see the end of the stream once: {out:?}"
    );
    ensure!(
        got + 2 >= LINES && last == LINES,
        "the reader went on with the FIFO after each recovery: {got} of {LINES} lines, last \
         {last}: {out:?}"
    );
    dist::resumed(&o)?;
    eprintln!(
        "{protocol}: {got} of {LINES} lines after kills {:?}",
        o.killed
    );
    Ok(())
}

cases! {
    fifos_cpv_2pc: fifos("cpv-2pc", 0, false);
    fifos_cbndv_2pc: fifos("cbndv-2pc", 1, false);
    outside_fifo_is_reopened_under_cpvs: outside_fifo("cpvs", 2);
}

#[test]
fn fifos_without_the_drain_are_caught_by_the_oracle() {
    if !common::sud_or_skip("fifos_without_the_drain_are_caught_by_the_oracle") {
        return;
    }
    match fifos("cpv-2pc", 3, true) {
        Ok(()) => panic!("a run without the drain passed the exactly-once oracle"),
        Err(e) => {
            let m = format!("{e:#}");
            eprintln!("as expected: {}", &m[..m.len().min(600)]);
        }
    }
}
