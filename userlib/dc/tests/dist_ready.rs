//! Readiness calls after a round drained a descriptor (issue 16): under CPV-2PC a
//! round's quiesce step reads what a FIFO or a stream socket holds into the reader's
//! checkpoint, where the kernel cannot see it any more; `select`, `pselect`,
//! `epoll_wait` and `ppoll` must still report the descriptor readable, as `poll` does.
//!
//! `progs/ready.c` (ordinary code): a writer member writes one line into a FIFO (or a
//! TCP connection) and stays; the reader member waits until the bytes are there
//! (`FIONREAD`), prints "ready" (a visible event: the round that drains them), then waits
//! for input with the readiness call (at most 1 s) and prints "got hello", or "timeout"
//! if the call reported nothing readable, which is what each of these calls did before
//! they looked at the drained bytes.
//!
//! A member blocked in one of these calls must also serve the coordinator: the reader
//! waits without a timeout (`fifo-waiter`) while its writer (`fifo-late-writer`) prints a
//! line before writing, a visible event whose round needs the reader; a reader that does
//! not serve it never gets the line (its writer waits for the round), and the run misses
//! its deadline, which is what `select`, `pselect6` and `ppoll` did before they served.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::dist::{self, Member, Plan};

fn ready_bin(dir: &Path) -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/progs/ready.c");
    let out = dir.join("ready");
    let st = Command::new("cc")
        .args(["-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .context("run cc (the C compiler setup installs)")?;
    ensure!(st.success(), "cc failed on {}", src.display());
    Ok(out)
}

/// The reader (member 0) and the writer (member 1) over a FIFO (`channel` "fifo") or a
/// TCP connection ("tcp"), the reader waiting with `call`.
fn ready(channel: &str, call: &str, test: u16) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = ready_bin(t.path())?.display().to_string();
    let at = match channel {
        "fifo" => t.path().join("f").display().to_string(),
        _ => dist::port_base(test).to_string(),
    };
    let m = |role: &str, extra: Option<&str>| Member {
        argv: [bin.as_str(), &format!("{channel}-{role}"), &at]
            .into_iter()
            .chain(extra)
            .map(str::to_string)
            .collect(),
        stdin: None,
    };
    let o = dist::run(&Plan::new(
        Some("cpv-2pc"),
        vec![m("reader", Some(call)), m("writer", None)],
    ))?;
    ensure!(
        o.outs[0] == "ready\ngot hello\n",
        "{call} on a {channel} whose bytes a round drained: the reader printed {:?}",
        o.outs[0]
    );
    dist::save_work(&o)?;
    eprintln!("{channel} {call}: {:?}", o.outs[0]);
    Ok(())
}

/// The reader waits with `call` without a timeout while the writer asks for a round.
fn waiting(call: &str) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = ready_bin(t.path())?.display().to_string();
    let path = t.path().join("f").display().to_string();
    let m = |v: &[&str]| Member {
        argv: v.iter().map(|s| s.to_string()).collect(),
        stdin: None,
    };
    let o = dist::run(&Plan {
        deadline: Duration::from_secs(20),
        ..Plan::new(
            Some("cpv-2pc"),
            vec![
                m(&[&bin, "fifo-waiter", &path, call]),
                m(&[&bin, "fifo-late-writer", &path]),
            ],
        )
    })?;
    ensure!(
        o.outs == ["got hello\n", "writing\n"],
        "{call} waiting without a timeout: the members printed {:?}",
        o.outs
    );
    dist::save_work(&o)?;
    eprintln!("waiting in {call}: {:?} in {:?}", o.outs, o.wall);
    Ok(())
}

/// A member that waits for bytes by polling `FIONREAD` with sleeps between (no readiness
/// call, `fifo-reader ... none`) while its writer prints a line before it writes: the
/// visible line's round needs the sleeping reader, which serves the coordinator in its
/// sleeps. Before they served, the writer waited for the round for ever, so wrote
/// nothing, and the reader polled for ever (seen in a CI run of the ppoll test below,
/// whose reader polls the same way first).
#[test]
fn a_member_polling_with_sleeps_serves_the_coordinator() {
    if !common::sud_or_skip("a_member_polling_with_sleeps_serves_the_coordinator") {
        return;
    }
    let r = (|| -> Result<()> {
        let t = tempfile::tempdir()?;
        let bin = ready_bin(t.path())?.display().to_string();
        let path = t.path().join("f").display().to_string();
        let m = |v: &[&str]| Member {
            argv: v.iter().map(|s| s.to_string()).collect(),
            stdin: None,
        };
        let o = dist::run(&Plan {
            deadline: Duration::from_secs(20),
            ..Plan::new(
                Some("cpv-2pc"),
                vec![
                    m(&[&bin, "fifo-reader", &path, "none"]),
                    m(&[&bin, "fifo-late-writer", &path]),
                ],
            )
        })?;
        ensure!(
            o.outs == ["ready\ngot hello\n", "writing\n"],
            "the members printed {:?}",
            o.outs
        );
        dist::save_work(&o)?;
        eprintln!("polling with sleeps: {:?} in {:?}", o.outs, o.wall);
        Ok(())
    })();
    if let Err(e) = r {
        panic!("{e:#}");
    }
}

#[test]
fn blocked_readiness_calls_serve_the_coordinator() {
    if !common::sud_or_skip("blocked_readiness_calls_serve_the_coordinator") {
        return;
    }
    for call in ["select", "pselect", "ppoll", "epoll"] {
        if let Err(e) = waiting(call) {
            panic!("{e:#}");
        }
    }
}

macro_rules! cases {
    ($($name:ident: $channel:literal $call:literal $test:literal;)*) => {
        $(
            #[test]
            fn $name() {
                if !common::sud_or_skip(stringify!($name)) {
                    return;
                }
                if let Err(e) = ready($channel, $call, $test) {
                    panic!("{e:#}");
                }
            }
        )*
    };
}

cases! {
    select_sees_drained_fifo_bytes: "fifo" "select" 0;
    pselect_sees_drained_fifo_bytes: "fifo" "pselect" 1;
    epoll_sees_drained_fifo_bytes: "fifo" "epoll" 2;
    ppoll_sees_drained_fifo_bytes: "fifo" "ppoll" 3;
    select_sees_drained_stream_bytes: "tcp" "select" 4;
    epoll_sees_drained_stream_bytes: "tcp" "epoll" 5;
}
