//! vista-rio: runs inside the test guest. Vista segments in Rio objects:
//!
//! * `crash-run`: random small transactions (cell updates, heap allocations and frees,
//!   some aborted), printing `COMMITTED <txno> <checksum> <digest>` after every commit;
//!   the host crashes the kernel under it.
//! * `check`: reopens the segment (recovery), checks the recovered state against the
//!   deterministic model and the heap accounting, and against the durable journal of
//!   reported commits if there is one.
//! * `bench`: Vista on Rio against SQLite, redb and LMDB on a disk file system and tmpfs.

mod bench;
mod workload;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rio_client::Rio;

use workload::{Finish, Journal, Model, Store};

/// Vista segments in Rio objects: crash workload, recovery check, benchmark.
#[derive(Parser)]
#[command(name = "vista-rio", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run random transactions on segment NAME (created if missing), printing
    /// `COMMITTED <txno> <checksum> <digest>` after each commit.
    CrashRun(CrashRun),
    /// Reopen segment NAME (running recovery) and check the recovered state: prints
    /// `RECOVERED <txno> <checksum> <digest>`; exits 1 if the state is not the model's.
    Check(Check),
    /// Benchmark Vista on Rio against SQLite, redb and LMDB (markdown on stdout).
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct CrashRun {
    /// The segment's Rio object.
    #[arg(long)]
    name: String,
    /// Seed of the deterministic workload (fixed for the life of the segment).
    #[arg(long)]
    seed: u64,
    /// Commit this many transactions, then exit (default: run forever).
    #[arg(long)]
    iters: Option<u64>,
    /// After the last of --iters commits, begin the next transaction, make all its
    /// changes, print `HOLDING <txno>` and sleep inside it forever.
    #[arg(long, requires = "iters")]
    hold: bool,
    /// Sleep this long inside half of the transactions (at a varying point), so that a
    /// crash is likely to find one in flight.
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
    /// Also record every commit in the Rio object NAME.journal (durable at once), for
    /// `check` to compare with after a crash.
    #[arg(long)]
    journal: bool,
    /// Keep the segment in this file (for example on riofs) instead of Rio object NAME
    /// (the journal, if any, stays in Rio object NAME.journal).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct Check {
    /// The segment's Rio object.
    #[arg(long)]
    name: String,
    /// The seed it was run with.
    #[arg(long)]
    seed: u64,
    /// Also check durability against the journal NAME.journal that `crash-run --journal`
    /// kept: the recovered transaction must be the last one journaled (same checksum and
    /// digest) or the one after it. Only meaningful if the last run kept the journal.
    #[arg(long)]
    journal: bool,
    /// The segment is in this file, not in Rio object NAME (see `crash-run --file`).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
}

fn crash_run(a: &CrashRun) -> Result<()> {
    let rio = Rio::open()?;
    let (mut store, rec) = match &a.file {
        Some(path) => Store::open_file(path, a.seed, true)?,
        None => Store::open(&rio, &a.name, a.seed, true)?,
    };
    let journal = if a.journal {
        Some(Journal::open(&rio, &a.name, a.seed)?)
    } else {
        None
    };
    let start = store.header()?.txno;
    let mut model = Model::replay(a.seed, start);
    let sum = store.checksum()?;
    if sum != model.checksum() {
        bail!(
            "the segment at transaction {start} does not match the model ({sum:016x} != {:016x})",
            model.checksum()
        );
    }
    eprintln!(
        "vista-rio: {} at transaction {start} (recovery replayed {} records, {} bytes)",
        a.name, rec.records, rec.bytes
    );
    let pause = Duration::from_micros(a.pause_us);
    let mut out = std::io::stdout().lock();
    let mut done = 0u64;
    loop {
        let n = model.txno + 1;
        if a.iters.is_some_and(|k| done >= k) {
            if !a.hold {
                return Ok(());
            }
            let ops = workload::plan(a.seed, n, &model, false);
            // Never returns: holds the transaction open until the process dies.
            store.run(n, &ops, None, Finish::Hold)?;
        }
        if workload::has_aborted_attempt(a.seed, n) {
            let ops = workload::plan(a.seed, n, &model, true);
            store.run(n, &ops, None, Finish::Abort)?;
            let sum = store.checksum()?;
            if sum != model.checksum() {
                bail!("an aborted attempt before transaction {n} left a trace");
            }
        }
        let ops = workload::plan(a.seed, n, &model, false);
        let at = (a.pause_us > 0)
            .then(|| workload::pause_point(a.seed, n, ops.len()))
            .flatten()
            .map(|at| (at, pause));
        store.run(n, &ops, at, Finish::Commit)?;
        model.apply(n, &ops);
        let sum = store.checksum()?;
        let digest = store.digest();
        if sum != model.checksum() {
            bail!(
                "after transaction {n} the segment does not match the model ({sum:016x} != {:016x})",
                model.checksum()
            );
        }
        if let Some(j) = &journal {
            j.record(n, sum, digest)?;
        }
        writeln!(out, "COMMITTED {n} {sum:016x} {digest:016x}")?;
        out.flush()?;
        done += 1;
    }
}

fn check(a: &Check) -> Result<bool> {
    let rio = Rio::open()?;
    let (mut store, rec) = match &a.file {
        Some(path) => Store::open_file(path, a.seed, false)?,
        None => Store::open(&rio, &a.name, a.seed, false)?,
    };
    let txno = store.header()?.txno;
    let sum = store.checksum()?;
    let digest = store.digest();
    let mut ok = true;
    println!("RECOVERY records={} bytes={}", rec.records, rec.bytes);
    println!("RECOVERED {txno} {sum:016x} {digest:016x}");
    let expect = Model::replay(a.seed, txno).checksum();
    if sum == expect {
        println!("MODEL ok");
    } else {
        println!("MODEL MISMATCH expected {expect:016x}");
        ok = false;
    }
    let (used, referenced) = store.heap_usage()?;
    if used == referenced {
        println!("HEAP ok used={used}");
    } else {
        println!("HEAP MISMATCH used={used} referenced={referenced}");
        ok = false;
    }
    if !a.journal {
        return Ok(ok);
    }
    match Journal::open_existing(&rio, &a.name, a.seed)?
        .map(|j| j.last())
        .transpose()?
        .flatten()
    {
        None => {
            println!("JOURNAL none");
            ok = false;
        }
        Some((j, jsum, jdigest)) => {
            println!("JOURNAL {j} {jsum:016x} {jdigest:016x}");
            // Durable: every reported commit survived. Atomic: nothing beyond the one
            // commit that may have completed without being reported.
            let durable = if txno == j {
                sum == jsum && digest == jdigest
            } else {
                txno == j + 1
            };
            if durable {
                println!("DURABLE ok");
            } else {
                println!("DURABLE MISMATCH");
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.command {
        Cmd::CrashRun(a) => crash_run(a).map(|()| true),
        Cmd::Check(a) => check(a),
        Cmd::Bench(a) => bench::run(a).map(|()| true),
    };
    match r.context("vista-rio") {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
