//! Stream sockets as recovered state (issue 16): `apps/stream.c`, a producer streaming
//! numbered records over TCP to a relay that forwards them over an `AF_UNIX` stream
//! socket to a consumer, which prints a running count and checksum every 100 records.
//! An ordinary socket program, nothing Discount-Checking-specific but the launch.
//!
//! * Under CPV-2PC and CBNDV-2PC with 3 seeded SIGKILLs of random members: the consumer's
//!   output equals the failure-free run's (run without Discount Checking) with
//!   repetitions only, so every record arrived exactly once and in order (a lost or
//!   repeated record changes every later sum); Save-work on the merged traces; no run
//!   started over.
//! * Negative control: the same with the drain of the round skipped
//!   (`DC_TEST_NO_DRAIN=1`): bytes in a socket at a commit are lost by the rollback, and
//!   the oracle must reject the run.
//! * Under a single-process protocol (CPVS) a stream is a connection to the outside
//!   world: a client killed and recovered finds its connection reset (ECONNRESET on the
//!   read, or EPIPE on the write) and says so.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use anyhow::{ensure, Result};
use common::dist::{self, Member, Plan};

const RECORDS: usize = 1500;
const EVERY: usize = 100;

fn pipeline(bin: &std::path::Path, dir: &std::path::Path, port: u16) -> Vec<Member> {
    let b = bin.display().to_string();
    let path = dir.join("pipe.sock").display().to_string();
    let m = |v: Vec<String>| Member {
        argv: v,
        stdin: None,
    };
    vec![
        m(vec![
            b.clone(),
            "consumer".into(),
            path.clone(),
            RECORDS.to_string(),
            EVERY.to_string(),
        ]),
        m(vec![b.clone(), "relay".into(), port.to_string(), path]),
        m(vec![
            b,
            "producer".into(),
            port.to_string(),
            RECORDS.to_string(),
        ]),
    ]
}

fn streams(protocol: &str, test: u16, no_drain: bool) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = dist::build_app("stream", t.path())?;
    let port = dist::port_base(test);
    let reference = dist::run(&Plan::new(None, pipeline(&bin, t.path(), port)))?;
    let want: Vec<&str> = reference.outs[0].lines().collect();
    ensure!(
        want.len() == RECORDS / EVERY + 1 && want.last() == Some(&"done"),
        "the failure-free run printed {want:?}"
    );
    let o = dist::run(&Plan {
        kills: 3,
        seed: 300 + test as u64,
        first_ms: 150,
        spread_ms: 400,
        deadline: Duration::from_secs(120),
        env: if no_drain {
            vec![("DC_TEST_NO_DRAIN".into(), "1".into())]
        } else {
            Vec::new()
        },
        ..Plan::new(Some(protocol), pipeline(&bin, t.path(), port + 1))
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
        "streams {protocol}: kills {:?}; wall {:?}; {}",
        o.killed,
        o.wall,
        o.coord_last.unwrap_or_default()
    );
    Ok(())
}

/// An echo server outside the computation (not under Discount Checking): answers every
/// line with "pong K".
fn echo_server(l: std::net::TcpListener) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            std::thread::spawn(move || {
                let mut w = match c.try_clone() {
                    Ok(w) => w,
                    Err(_) => return,
                };
                for line in BufReader::new(c).lines() {
                    let Ok(line) = line else { return };
                    let k = line.trim_start_matches("ping ");
                    if writeln!(w, "pong {k}").is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn outside_connection_is_reset(protocol: &str, test: u16) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = dist::build_app("stream", t.path())?;
    let l = std::net::TcpListener::bind(("127.0.0.1", dist::port_base(test)))?;
    let port = l.local_addr()?.port();
    echo_server(l);
    let client = Member {
        argv: vec![bin.display().to_string(), "client".into(), port.to_string()],
        stdin: None,
    };
    let o = dist::run(&Plan {
        kills: 1,
        seed: 400 + test as u64,
        first_ms: 200,
        spread_ms: 200,
        ..Plan::new(Some(protocol), vec![client])
    })?;
    let out = &o.outs[0];
    let last = out.lines().last().unwrap_or_default();
    ensure!(
        last == "error: read: ECONNRESET" || last == "error: write: EPIPE",
        "after the recovery the connection must be reset; output: {out:?}"
    );
    ensure!(out.contains("got pong 1\n"), "output: {out:?}");
    dist::resumed(&o)?;
    eprintln!("{protocol}: {last} after kills {:?}", o.killed);
    Ok(())
}

cases! {
    streams_cpv_2pc: streams("cpv-2pc", 0, false);
    streams_cbndv_2pc: streams("cbndv-2pc", 1, false);
    outside_stream_is_reset_under_cpvs: outside_connection_is_reset("cpvs", 2);
}

#[test]
fn streams_without_the_drain_are_caught_by_the_oracle() {
    if !common::sud_or_skip("streams_without_the_drain_are_caught_by_the_oracle") {
        return;
    }
    match streams("cpv-2pc", 3, true) {
        Ok(()) => panic!("a run without the drain passed the exactly-once oracle"),
        Err(e) => {
            let m = format!("{e:#}");
            eprintln!("as expected: {}", &m[..m.len().min(600)]);
        }
    }
}
