//! Communication with the outside world from a computation (issue 16): `apps/report.c`, a
//! source streaming numbered records over TCP to a reporter (both members under CPV-2PC
//! or CBNDV-2PC), which prints a running count and checksum and, for every read that
//! completes records, sends one line `J FIRST LAST` to a peer *outside* the computation
//! that this test runs (not under Discount Checking), then `J end N SUM`. Which records
//! one read completes depends on timing: the lines are output that depends on
//! non-deterministic input, which is what the commit before a visible event protects
//! (thesis 2.2.5 and 6.2.2). The outside peer is named with `DC_OUTSIDE` (`dc run
//! --outside`'s environment form, which `dc run` checks and passes on).
//!
//! * `tcp_server_*` (3 seeded SIGKILLs of random members): the reporter connects to a
//!   TCP server of this test. Oracles: the lines the server received are a failure-free
//!   run's lines with repetitions only (Definition 2 for a program whose output depends
//!   on its input: every line continues the output, or repeats it from an earlier point
//!   with the same text, never skips or changes a line; the lines' records, 1 to N once
//!   each in order, and the end line's count and checksum are the failure-free run's,
//!   which ran without Discount Checking); every line received was traced as a visible
//!   event (`V`) of the reporter and none as a message (`M`), and the source's records
//!   (internal sends) are messages, not visible events; Save-work on the merged traces;
//!   no run started over; both members' own output equals the failure-free run's with
//!   repetitions only.
//! * `accepted_client_cpv_2pc`: the same with the reporter listening for an outside
//!   client (this test, connecting from 127.0.0.2, named `127.0.0.2:0`: any port of that
//!   host) and writing the lines to the connection it accepts; after a rollback the
//!   client connects again and the reporter, whose old connection is gone, accepts it.
//! * `unix_peer_is_not_waited_for`: the outside peer is an `AF_UNIX` stream server that
//!   reads nothing until the computation has finished; no quiesce step waits for the
//!   reporter's send queue to it (no "quiesce:" diagnostic, and the run takes less than
//!   one 5 s quiesce wait), and the lines arrive complete.
//! * Negative control, `outside_treated_as_internal_is_caught`: `tcp_server_cpv_2pc`
//!   with `DC_TEST_OUTSIDE_INTERNAL=1` (the outside server treated as a member, as before
//!   the distinction: no commit before its sends, its connection made again at
//!   recovery): the server sees lines from states that a rollback undid, and the
//!   re-executed reporter sends other lines under the same numbers; the oracles must
//!   reject the run.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::dist::{self, Member, Outcome, Plan};
use discount::oracle::Event;

const RECORDS: usize = 800;
const EVERY: usize = 100;
/// The source's and the reporter's member indices.
const SOURCE: usize = 0;
const REPORTER: usize = 1;

fn members(bin: &Path, port: u16, out: &str, records: usize, every: usize) -> Vec<Member> {
    let b = bin.display().to_string();
    let m = |v: Vec<String>| Member {
        argv: v,
        stdin: None,
    };
    vec![
        m(vec![
            b.clone(),
            "source".into(),
            port.to_string(),
            records.to_string(),
        ]),
        m(vec![
            b,
            "reporter".into(),
            port.to_string(),
            out.into(),
            records.to_string(),
            every.to_string(),
        ]),
    ]
}

/// Lines read from connections one after the other (a partial last line of a connection
/// is kept as `PARTIAL <text>`, which no oracle accepts).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn get(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Reads `c` to its end (or, once `stop` is set, to its first pause), appending its
    /// lines.
    fn collect(&self, mut c: impl Read, stop: &AtomicBool) {
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        let text = String::from_utf8_lossy(&line[..i]).into_owned();
                        self.0.lock().unwrap().push(text);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break, // reset: the peer is gone
            }
        }
        if !pending.is_empty() {
            let text = String::from_utf8_lossy(&pending).into_owned();
            self.0.lock().unwrap().push(format!("PARTIAL {text}"));
        }
    }
}

/// A thread of this test outside the computation; `finish` stops it and returns what it
/// received.
struct Outside {
    lines: Lines,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Outside {
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.lines.get()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// A TCP server outside the computation: accepts one connection after the other and
/// collects their lines. Returns it and its port.
fn tcp_server() -> Result<(Outside, u16)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    l.set_nonblocking(true)?;
    let (lines, stop) = (Lines::default(), Arc::new(AtomicBool::new(false)));
    let (ls, st) = (lines.clone(), stop.clone());
    let thread = std::thread::spawn(move || loop {
        match l.accept() {
            Ok((c, _)) => {
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                ls.collect(c, &st);
            }
            Err(_) if st.load(Ordering::Acquire) => return,
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    });
    Ok((
        Outside {
            lines,
            stop,
            thread: Some(thread),
        },
        port,
    ))
}

/// A TCP connection from 127.0.0.2 (an outside client's host) to 127.0.0.1:`port`.
fn connect_from_127_0_0_2(port: u16) -> std::io::Result<TcpStream> {
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket takes numbers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is the socket just made, owned by the stream from here on (closed when
    // it drops, also on the error paths below).
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    let (from, to) = (sin([127, 0, 0, 2], 0), sin([127, 0, 0, 1], port));
    // SAFETY: bind and connect read a sockaddr_in of `len` bytes from live locals.
    unsafe {
        if libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(s)
}

/// A client outside the computation: connects from 127.0.0.2 to the reporter's port,
/// collects the lines, and connects again whenever its connection ends (a rollback or
/// crash of the reporter), until stopped.
fn client(port: u16) -> Outside {
    let (lines, stop) = (Lines::default(), Arc::new(AtomicBool::new(false)));
    let (ls, st) = (lines.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        while !st.load(Ordering::Acquire) {
            match connect_from_127_0_0_2(port) {
                Ok(c) => {
                    c.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    ls.collect(c, &st);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Outside {
        lines,
        stop,
        thread: Some(thread),
    }
}

/// An `AF_UNIX` stream server at `path` that accepts one connection and reads nothing
/// until stopped, then everything.
fn lazy_unix_server(path: &Path) -> Result<Outside> {
    let l = std::os::unix::net::UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    let (lines, stop) = (Lines::default(), Arc::new(AtomicBool::new(false)));
    let (ls, st) = (lines.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        let c = loop {
            match l.accept() {
                Ok((c, _)) => break c,
                Err(_) if st.load(Ordering::Acquire) || Instant::now() > until => return,
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        c.set_nonblocking(false).unwrap();
        while !st.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ls.collect(c, &st);
    });
    Ok(Outside {
        lines,
        stop,
        thread: Some(thread),
    })
}

/// What the outside peer received, as lines `(J, text)`, checked (Definition 2 for a
/// program whose output depends on its input): each line is the next one (`J` one more
/// than the line before it) or repeats the output from an earlier point (`J` not more
/// than that), and a number already received always comes with the same text (a rollback
/// may repeat output, never change it). The distinct lines must then be a failure-free
/// run's: chunks `J FIRST LAST` covering records 1 to `records` once each, in order,
/// then `J end N SUM` with the failure-free run's `end` (`N SUM`). Returns the distinct
/// lines and how often the output went back.
fn check_outside(
    got: &[String],
    records: usize,
    end: Option<&str>,
) -> Result<(Vec<String>, usize)> {
    let mut known: Vec<String> = Vec::new();
    let (mut cur, mut back) = (0usize, 0usize);
    for (n, l) in got.iter().enumerate() {
        let (j, text) = l
            .split_once(' ')
            .and_then(|(j, t)| Some((j.parse::<usize>().ok()?, t)))
            .with_context(|| format!("outside line {}: {l:?} is no numbered line", n + 1))?;
        ensure!(
            j >= 1 && j <= cur + 1,
            "outside line {}: {l:?} skips output (the line before was number {cur})",
            n + 1
        );
        if j <= cur {
            back += 1;
        }
        match known.get(j - 1) {
            Some(k) => ensure!(
                k == text,
                "outside line {}: number {j} was {k:?} and is now {text:?} (output from a \
                 state a rollback undid)",
                n + 1
            ),
            None => known.push(text.to_string()),
        }
        cur = j;
    }
    let mut next = 1usize;
    for (i, t) in known.iter().enumerate() {
        let f: Vec<&str> = t.split(' ').collect();
        match f[..] {
            [a, b] => {
                let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
                ensure!(
                    a == next && b >= a && b <= records,
                    "line {} covers records {a} to {b}, the next record is {next}",
                    i + 1
                );
                next = b + 1;
            }
            ["end", ref rest @ ..] => {
                ensure!(i + 1 == known.len(), "line {} ends early: {t:?}", i + 1);
                ensure!(
                    next == records + 1,
                    "the end after record {} of {records}",
                    next - 1
                );
                let e = rest.join(" ");
                if let Some(want) = end {
                    ensure!(
                        e == want,
                        "the end line says {e:?}, the failure-free run's {want:?}"
                    );
                }
            }
            _ => bail!("line {}: {t:?}", i + 1),
        }
    }
    ensure!(
        known.last().is_some_and(|t| t.starts_with("end ")),
        "the outside peer got no end line (last {:?})",
        known.last()
    );
    Ok((known, back))
}

/// The end line's `N SUM` of checked distinct lines.
fn end_of(known: &[String]) -> String {
    known
        .last()
        .and_then(|t| t.strip_prefix("end "))
        .unwrap_or_default()
        .to_string()
}

/// Every line the outside peer got (`lines`: the distinct lines' texts, numbered from 1)
/// was traced by the reporter as a visible event and not as a message; the source's records (13 bytes each, sent inside the computation) are
/// messages and not visible events.
fn traced_as_visible(o: &Outcome, lines: &[String]) -> Result<()> {
    let fnv = |b: &[u8]| discount::trace::fnv(b);
    let rep = &o.traces[REPORTER];
    let visible: HashSet<(usize, u64)> = rep
        .iter()
        .filter_map(|e| match e {
            Event::Visible { len, hash, .. } => Some((*len, *hash)),
            _ => None,
        })
        .collect();
    let sends: HashSet<u64> = rep
        .iter()
        .filter_map(|e| match e {
            Event::Send(m) => Some(*m),
            _ => None,
        })
        .collect();
    for (j, l) in lines.iter().enumerate() {
        let b = format!("{} {l}\n", j + 1);
        let (len, hash) = (b.len(), fnv(b.as_bytes()));
        ensure!(
            visible.contains(&(len, hash)),
            "the line {l:?} the outside peer received is no visible event in the reporter's \
             trace"
        );
        ensure!(
            !sends.contains(&(hash ^ (len as u64).rotate_left(48))),
            "the line {l:?} the outside peer received was traced as a message inside the \
             computation"
        );
    }
    let src = &o.traces[SOURCE];
    let rec_visible = src
        .iter()
        .filter(|e| matches!(e, Event::Visible { len: 13, .. }))
        .count();
    let rec_sent = src.iter().filter(|e| matches!(e, Event::Send(_))).count();
    ensure!(
        rec_visible == 0 && rec_sent > 0,
        "the source's records: {rec_visible} traced as visible, {rec_sent} as messages"
    );
    Ok(())
}

/// Both members' own output (their terminals) against the failure-free run's.
fn own_output(o: &Outcome, reference: &Outcome) -> Result<()> {
    for (who, i) in [("source", SOURCE), ("reporter", REPORTER)] {
        let want: Vec<&str> = reference.outs[i].lines().collect();
        dist::repetitions_only(who, &o.outs[i], &want)?;
    }
    Ok(())
}

/// The failure-free run (without Discount Checking) of the TCP-server computation: its
/// members' output and the end line its server got.
fn reference(bin: &Path, port: u16, every: usize) -> Result<(Outcome, String)> {
    let (srv, oport) = tcp_server()?;
    let r = dist::run(&Plan::new(
        None,
        members(bin, port, &format!("tcp:127.0.0.1:{oport}"), RECORDS, every),
    ))?;
    let (known, back) = check_outside(&srv.finish(), RECORDS, None)?;
    ensure!(back == 0, "the failure-free run's server saw repetitions");
    ensure!(
        r.outs[REPORTER].lines().last() == Some("done"),
        "the failure-free reporter printed {:?}",
        r.outs[REPORTER]
    );
    Ok((r, end_of(&known)))
}

fn kill_plan<'a>(protocol: &'a str, members: Vec<Member>, seed: u64) -> Plan<'a> {
    Plan {
        kills: 3,
        seed,
        first_ms: 100,
        spread_ms: 250,
        deadline: Duration::from_secs(120),
        ..Plan::new(Some(protocol), members)
    }
}

fn tcp_server_case(protocol: &str, test: u16, internal: bool) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = dist::build_app("report", t.path())?;
    let port = dist::port_base(test);
    // The negative control prints only at the end: nothing but the start commits before
    // that, so each rollback goes back to it, and re-executes many lines.
    let every = if internal { RECORDS } else { EVERY };
    let (refr, end) = reference(&bin, port, every)?;
    let (srv, oport) = tcp_server()?;
    let mut env = vec![("DC_OUTSIDE".to_string(), format!("127.0.0.1:{oport}"))];
    if internal {
        env.push(("DC_TEST_OUTSIDE_INTERNAL".into(), "1".into()));
    }
    let plan = kill_plan(
        protocol,
        members(
            &bin,
            port + 1,
            &format!("tcp:127.0.0.1:{oport}"),
            RECORDS,
            every,
        ),
        600 + test as u64,
    );
    let o = dist::run(&Plan {
        env,
        // Without the commits before the outside sends the run is over in about a
        // second: the kills come sooner, so that all of them land.
        first_ms: if internal { 80 } else { plan.first_ms },
        spread_ms: if internal { 120 } else { plan.spread_ms },
        ..plan
    })?;
    let got = srv.finish();
    let (known, back) =
        check_outside(&got, RECORDS, Some(&end)).context("what the outside server received")?;
    own_output(&o, &refr)?;
    dist::resumed(&o)?;
    traced_as_visible(&o, &known)?;
    dist::save_work(&o)?;
    eprintln!(
        "outside tcp server {protocol}: kills {:?}; {} lines received, {} distinct, the \
         output went back {back} times; wall {:?}; {}",
        o.killed,
        got.len(),
        known.len(),
        o.wall,
        o.coord_last.unwrap_or_default()
    );
    Ok(())
}

fn accepted_client_case(protocol: &str, test: u16) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = dist::build_app("report", t.path())?;
    let port = dist::port_base(test);
    let (refr, end) = reference(&bin, port, EVERY)?;
    let public = port + 2;
    let cl = client(public);
    let o = dist::run(&Plan {
        env: vec![("DC_OUTSIDE".into(), "127.0.0.2:0".into())],
        ..kill_plan(
            protocol,
            members(&bin, port + 1, &format!("listen:{public}"), RECORDS, EVERY),
            700 + test as u64,
        )
    })?;
    let got = cl.finish();
    let (known, back) = check_outside(&got, RECORDS, Some(&end))?;
    own_output(&o, &refr)?;
    dist::resumed(&o)?;
    traced_as_visible(&o, &known)?;
    dist::save_work(&o)?;
    eprintln!(
        "outside client {protocol}: kills {:?}; {} lines received, {} distinct, the output \
         went back {back} times; wall {:?}",
        o.killed,
        got.len(),
        known.len(),
        o.wall
    );
    Ok(())
}

fn unix_peer_case(protocol: &str, test: u16) -> Result<()> {
    let t = tempfile::tempdir()?;
    let bin = dist::build_app("report", t.path())?;
    let port = dist::port_base(test);
    let path = t.path().join("outside.sock");
    let records = 200;
    let srv = lazy_unix_server(&path)?;
    let out = format!("unix:{}", path.display());
    let o = dist::run(&Plan {
        env: vec![("DC_OUTSIDE".into(), out.clone())],
        ..Plan::new(Some(protocol), members(&bin, port, &out, records, EVERY))
    })?;
    let wall = o.wall;
    let err = std::fs::read_to_string(o.dir.path().join(format!("err{REPORTER}")))?;
    let got = srv.finish();
    ensure!(
        !err.contains("quiesce:"),
        "a round waited for the outside peer's send queue: {err}"
    );
    ensure!(
        wall < Duration::from_secs(5),
        "the run took {wall:?}, more than one quiesce wait"
    );
    let (known, _) = check_outside(&got, records, None)?;
    traced_as_visible(&o, &known)?;
    dist::save_work(&o)?;
    eprintln!(
        "outside unix peer that does not read {protocol}: wall {wall:?}, {} lines; {}",
        known.len(),
        o.coord_last.unwrap_or_default()
    );
    Ok(())
}

cases! {
    tcp_server_cpv_2pc: tcp_server_case("cpv-2pc", 0, false);
    tcp_server_cbndv_2pc: tcp_server_case("cbndv-2pc", 1, false);
    accepted_client_cpv_2pc: accepted_client_case("cpv-2pc", 2);
    unix_peer_is_not_waited_for: unix_peer_case("cpv-2pc", 3);
}

#[test]
fn outside_treated_as_internal_is_caught() {
    if !common::sud_or_skip("outside_treated_as_internal_is_caught") {
        return;
    }
    match tcp_server_case("cpv-2pc", 4, true) {
        Ok(()) => panic!("a run with the outside server treated as a member passed the oracles"),
        Err(e) => {
            let m = format!("{e:#}");
            eprintln!("as expected: {}", &m[..m.len().min(600)]);
            // The outside peer's own oracle must be the one that rejects it (the traces'
            // checks come after it and judge Discount Checking's own classification).
            assert!(
                m.contains("what the outside server received"),
                "rejected, but not by what the outside server received: {m}"
            );
        }
    }
}
