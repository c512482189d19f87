//! Crash tests of a UDP server under Discount Checking (thesis 5.2.2: bound sockets are
//! bound again to the same name on recovery). `dc-udp` binds a port (a fixed one, or port
//! 0 so that the kernel chooses), answers numbered requests with the running sum of their
//! values and keeps the history of sums; the test is the client (not under Discount
//! Checking): it sends requests 1..=N one at a time, retransmits until the answer comes,
//! and checks every answer against its own model of the sums and that it came from the
//! port the server printed in its first run. The server is SIGKILLed at random points
//! (a few milliseconds after a random answer) and the same command is run again after
//! each kill. The oracle: every answer is the model's, from the same port (for port 0
//! too: the port the kernel chose is recorded and bound again); every run after a kill
//! resumed the last checkpoint and the output is a failure-free run's up to repetition
//! (`oracle::check_resumed` against the model's output); the trace satisfies the commit
//! invariant; as many recoveries as kills; the final sum is the model's. Every child runs
//! under a deadline.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::*;
use discount::oracle;

fn udp_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dc-udp"))
}

/// Request k's value.
fn value(k: u64) -> u64 {
    (k * k * 7 + 3) % 101 + 1
}

/// A port nobody holds now.
fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The failure-free output of `dc-udp --count n` on `port`.
fn model_output(port: u16, n: u64) -> (Vec<u8>, u64) {
    let mut out = format!("port {port}\n");
    let mut s = 0;
    for k in 1..=n {
        s += value(k);
        out.push_str(&format!("req {k} value {} sum {s}\n", value(k)));
    }
    out.push_str(&format!("done {s}\n"));
    (out.into_bytes(), s)
}

struct Udp<'a> {
    name: &'a str,
    protocol: &'a str,
    /// Bind a fixed port (else port 0).
    fixed: bool,
    seed: u64,
    kills: usize,
    count: u64,
}

/// Waits until the server has printed its `port N` line.
fn read_port(p: &mut Proc, end: Instant) -> Result<u16> {
    loop {
        p.pump();
        let out = lossy(p.output());
        if let Some(line) = out.lines().next().filter(|_| out.contains('\n')) {
            return line
                .strip_prefix("port ")
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("first line {line:?}"));
        }
        if p.try_done()? || Instant::now() > end {
            bail!("the server printed no port: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn udp_case(c: &Udp<'_>) -> Result<()> {
    let t = tempfile::tempdir()?;
    let (rund, dc, tr, err) = (
        t.path().join("run"),
        t.path().join("dc"),
        t.path().join("trace"),
        t.path().join("stderr"),
    );
    std::fs::create_dir_all(&rund)?;
    let want_port = if c.fixed { free_port()? } else { 0 };
    let port_arg = want_port.to_string();
    let count_arg = c.count.to_string();
    let args = ["--port", &port_arg, "--count", &count_arg];
    let env = env(&[
        ("DC_DIR", dc.to_str().unwrap_or("")),
        ("DC_TRACE", tr.to_str().unwrap_or("")),
        ("DC_PROTOCOL", c.protocol),
    ]);
    let stderr = || std::fs::read_to_string(&err).unwrap_or_default();
    let mut rng = plan_rng(c.seed);
    let mut plan: Vec<(u64, u64)> = Vec::new();
    while plan.len() < c.kills {
        let k = 1 + rng.below(c.count - 2);
        if !plan.iter().any(|&(x, _)| x == k) {
            plan.push((k, rng.below(4)));
        }
    }
    plan.sort();
    eprintln!("{}: kills a few ms after answers {plan:?}", c.name);
    let end = Instant::now() + Duration::from_secs(60);
    let client = UdpSocket::bind("127.0.0.1:0")?;
    client.set_read_timeout(Some(Duration::from_millis(20)))?;
    let (_, mut traced) = oracle::trace_since(&tr, u64::MAX)?;
    let mut runs: Vec<Run> = Vec::new();
    let mut p = Proc::spawn(udp_bin(), &args, &env, &rund, &err)?;
    p.close_stdin();
    let port = read_port(&mut p, end).with_context(|| format!("{}: {}", c.name, stderr()))?;
    if c.fixed {
        ensure!(port == want_port, "bound {port}, asked for {want_port}");
    }
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let mut sum = 0;
    let mut k = 1;
    let mut buf = [0u8; 512];
    'requests: while k <= c.count {
        client.send_to(format!("req {k} {}", value(k)).as_bytes(), server)?;
        let asked = Instant::now();
        loop {
            if Instant::now() > end {
                let _ = p.kill();
                bail!(
                    "{}: deadline exceeded at request {k}; stderr: {}",
                    c.name,
                    stderr()
                );
            }
            if asked.elapsed() > Duration::from_secs(5) {
                let _ = p.kill();
                bail!(
                    "{}: no answer to request {k} within 5 s from port {port} (the server \
                     is not bound there?); stderr: {}",
                    c.name,
                    stderr()
                );
            }
            match client.recv_from(&mut buf) {
                Ok((n, from)) => {
                    ensure!(
                        from == server,
                        "{}: answer from {from}, the server was on {server}",
                        c.name
                    );
                    let msg = lossy(&buf[..n]);
                    let mut w = msg.split_whitespace().skip(1);
                    let kk: u64 = w.next().and_then(|x| x.parse().ok()).context("answer")?;
                    let ss: u64 = w.next().and_then(|x| x.parse().ok()).context("answer")?;
                    if kk < k {
                        continue; // a stale answer to a retransmission
                    }
                    ensure!(kk == k, "{}: answer {msg:?} to request {k}", c.name);
                    ensure!(
                        ss == sum + value(k),
                        "{}: request {k}: sum {ss}, the model says {}",
                        c.name,
                        sum + value(k)
                    );
                    sum = ss;
                    if let Some(i) = plan.iter().position(|&(x, _)| x == k) {
                        let (_, delay) = plan.remove(i);
                        std::thread::sleep(Duration::from_millis(delay));
                        let mut r = p.kill()?;
                        (r.trace, traced) = oracle::trace_since(&tr, traced)?;
                        runs.push(r);
                        p = Proc::spawn(udp_bin(), &args, &env, &rund, &err)?;
                        p.close_stdin();
                    }
                    k += 1;
                    continue 'requests;
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if p.try_done()? {
                        // The last answer may be lost only if the server has finished.
                        ensure!(k == c.count, "{}: the server ended at request {k}", c.name);
                        break 'requests;
                    }
                    continue 'requests; // retransmit
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    // The server ends by itself after the last request.
    while !p.try_done()? {
        if Instant::now() > end {
            let _ = p.kill();
            bail!("{}: the server did not finish", c.name);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut r = p.finish()?;
    r.trace = oracle::trace_since(&tr, traced)?.0;
    runs.push(r);
    ensure!(plan.is_empty(), "{}: kills {plan:?} did not land", c.name);
    let (reference, model_sum) = model_output(port, c.count);
    ensure!(
        sum == model_sum,
        "{}: final sum {sum}, model {model_sum}",
        c.name
    );
    let records: Vec<oracle::RunRecord<'_>> = runs.iter().map(Run::record).collect();
    let m = oracle::check_resumed(&records, &reference, 1).map_err(|x| {
        anyhow::anyhow!(
            "{}: {x}\nstderr: {}\nruns:\n{}",
            c.name,
            stderr(),
            runs.iter()
                .map(|r| lossy(&r.out))
                .collect::<Vec<_>>()
                .join("--- crash ---\n")
        )
    })?;
    let trace = oracle::parse(&std::fs::read_to_string(&tr)?)?;
    let bad = oracle::check_one(&trace);
    ensure!(
        bad.is_empty(),
        "{}: commit invariant violated: {bad:?}",
        c.name
    );
    let counts = oracle::counts(&trace);
    ensure!(
        counts.recoveries == m.recoveries && m.recoveries == c.kills,
        "{}: {} recoveries in the trace, {} runs resumed, {} kills",
        c.name,
        counts.recoveries,
        m.recoveries,
        c.kills
    );
    let last = runs.last().map(|r| lossy(&r.out)).unwrap_or_default();
    ensure!(
        last.ends_with(&format!("done {model_sum}\n")),
        "{}: the last run ended {last:?}",
        c.name
    );
    eprintln!(
        "{}: {} runs, {} recoveries, port {port}, final sum {sum}, repeated {:?}",
        c.name,
        runs.len(),
        m.recoveries,
        m.output.repeated
    );
    Ok(())
}

fn case(name: &str, protocol: &str, fixed: bool, seed: u64) -> Result<()> {
    udp_case(&Udp {
        name,
        protocol,
        fixed,
        seed,
        kills: 4,
        count: 40,
    })
}

#[test]
fn udp_fixed_port_cpvs() -> Result<()> {
    case("udp fixed port CPVS", "cpvs", true, 11)
}

#[test]
fn udp_fixed_port_cand_log() -> Result<()> {
    case("udp fixed port CAND-LOG", "cand-log", true, 12)
}

#[test]
fn udp_port0_cand() -> Result<()> {
    case("udp port 0 CAND", "cand", false, 13)
}

#[test]
fn udp_port0_cpvs() -> Result<()> {
    case("udp port 0 CPVS", "cpvs", false, 14)
}

#[test]
fn udp_port0_cbndvs() -> Result<()> {
    case("udp port 0 CBNDVS", "cbndvs", false, 15)
}

#[test]
fn udp_port0_cbndvs_log() -> Result<()> {
    case("udp port 0 CBNDVS-LOG", "cbndvs-log", false, 16)
}

/// A TCP listener is made (stream sockets are recorded since issue 16); stream socket
/// pairs stay refused, with a message naming the call, and are not performed.
#[test]
fn stream_pairs_are_refused_and_tcp_listeners_made() -> Result<()> {
    let t = tempfile::tempdir()?;
    let err = t.path().join("stderr");
    let dc = t.path().join("dc");
    let env = env(&[
        ("DC_DIR", dc.to_str().unwrap_or("")),
        ("DC_PROTOCOL", "cpvs"),
    ]);
    let mut p = Proc::spawn(udp_bin(), &["--stream-probe"], &env, t.path(), &err)?;
    p.close_stdin();
    let end = Instant::now() + Duration::from_secs(30);
    while !p.try_done()? {
        if Instant::now() > end {
            let _ = p.kill();
            bail!("the probe did not finish");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let r = p.finish()?;
    let (out, msgs) = (lossy(&r.out), std::fs::read_to_string(&err)?);
    ensure!(r.code == Some(0), "exit {:?}: {msgs}", r.code);
    ensure!(
        out.contains("tcp listener on ") && out.contains("unix stream: "),
        "a stream pair was made, or the listener not: {out:?}"
    );
    ensure!(
        msgs.contains("socketpair other than AF_UNIX SOCK_DGRAM"),
        "messages: {msgs}"
    );
    eprintln!("{out}{msgs}");
    Ok(())
}
