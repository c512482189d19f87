//! The readiness calls under the -LOG protocols (thesis 6.2.2: CAND-LOG and CBNDVS-LOG
//! log the results of `select` with those of the reads): a small C program linked with
//! `libdiscount.a` waits for each input line with `poll` (timeout 0), `select` (whose
//! time left it prints), `ppoll` and `epoll_wait`, then reads it. Under CAND-LOG and
//! CBNDVS-LOG each of those calls must be a logged event (`L` in the trace, no `N`, no
//! commit after the first checkpoint); after a SIGKILL the next run recovers that
//! checkpoint and re-executes through the log: every readiness result and read comes
//! back as the first run saw it, byte for byte (the time `select` left, the `0` that the
//! `poll` with timeout 0 returned although the new run's input is already waiting), and
//! only then does the program see the new input. Under CAND the same calls stay
//! non-deterministic events, each followed by a commit.
//!
//! `libdiscount.a` comes from building the discount crate (cargo builds it for this
//! test's dependency, in `deps/`, and for `cargo build -p discount`, beside it); the
//! newest one is used.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use discount::oracle::{self, Event};

const PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "dc.h"

static void out(const char *s) { write(1, s, strlen(s)); }

int main(void) {
    if (dc_init() != 0) return 1;
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 77 };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) != 0) { out("epoll_ctl failed\n"); return 1; }
    char buf[256], line[512];
    for (int i = 0;; i++) {
        struct pollfd p = { .fd = 0, .events = POLLIN };
        int r = poll(&p, 1, 0);
        snprintf(line, sizeof line, "%d poll0 %d %x\n", i, r, p.revents);
        out(line);
        fd_set rf;
        FD_ZERO(&rf);
        FD_SET(0, &rf);
        struct timeval tv = { 30, 0 };
        r = select(1, &rf, NULL, NULL, &tv);
        snprintf(line, sizeof line, "%d select %d %d %ld.%06ld\n", i, r, FD_ISSET(0, &rf),
                 (long)tv.tv_sec, (long)tv.tv_usec);
        out(line);
        struct timespec ts = { 30, 0 };
        p.revents = 0;
        r = ppoll(&p, 1, &ts, NULL);
        snprintf(line, sizeof line, "%d ppoll %d %x\n", i, r, p.revents);
        out(line);
        struct epoll_event got[4];
        memset(got, 0, sizeof got);
        r = epoll_wait(ep, got, 4, 30000);
        snprintf(line, sizeof line, "%d epoll %d %llu\n", i, r,
                 r > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
        out(line);
        ssize_t n = read(0, buf, sizeof buf);
        if (n <= 0) { out("eof\n"); break; }
        snprintf(line, sizeof line, "%d read %.*s", i, (int)n, buf);
        out(line);
    }
    return 0;
}
"#;

/// The newest `libdiscount.a` of this test's profile (`target/<profile>/` or its
/// `deps/`).
fn libdiscount() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    let mut consider = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p).and_then(|m| m.modified()) {
            found.push((m, p));
        }
    };
    consider(profile.join("libdiscount.a"));
    if let Ok(rd) = std::fs::read_dir(profile.join("deps")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("libdiscount-") && n.ends_with(".a") {
                consider(e.path());
            }
        }
    }
    found.sort();
    found
        .pop()
        .map(|f| f.1)
        .expect("libdiscount.a missing: `cargo build -p discount` builds it")
}

fn build(dir: &Path) -> PathBuf {
    let src = dir.join("ready.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let inc = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let out = dir.join("ready");
    let st = Command::new("cc")
        .args(["-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-I")
        .arg(&inc)
        .arg(libdiscount())
        .args(discount::C_LINK_LIBS)
        .status()
        .expect("cc");
    assert!(st.success(), "cc failed");
    out
}

/// One run of the program: its stdin, and its stdout as it comes.
struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Run {
    fn start(bin: &Path, env: &[(&str, &Path)], protocol: &str) -> Run {
        let mut cmd = Command::new(bin);
        cmd.env("DC_PROTOCOL", protocol)
            .env("DC_HEAP_MB", "16")
            .env("DC_LOG_MB", "16")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut b) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&b[..n]);
            }
        });
        Run { child, stdin, out }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `what`.
    fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.text().contains(what) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what:?}; output so far:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn send(&mut self, line: &str) {
        let w = self.stdin.as_mut().expect("stdin open");
        w.write_all(line.as_bytes()).unwrap();
        w.flush().unwrap();
    }
}

fn trace(path: &Path, from: u64) -> (Vec<Event>, u64) {
    oracle::trace_since(path, from).expect("trace")
}

fn logged(t: &[Event], what: &[&str]) -> usize {
    t.iter()
        .filter(|e| matches!(e, Event::Logged(w) if what.contains(&w.as_str())))
        .count()
}

const SELECT: &[&str] = &["select", "pselect6"];
const EPOLL: &[&str] = &["epoll_wait", "epoll_pwait"];
const LINES: usize = 3;

/// The first run: `LINES` lines typed one at a time (each only after the program's
/// `poll` with timeout 0 has looked, so that poll returns 0), then a SIGKILL while the
/// program waits in `select` for the next.
fn first_run(bin: &Path, env: &[(&str, &Path)], protocol: &str) -> String {
    let mut r = Run::start(bin, env, protocol);
    for i in 0..LINES {
        r.wait_for(&format!("{i} poll0 "));
        r.send(&format!("line{i}\n"));
        r.wait_for(&format!("{i} read line{i}\n"));
    }
    r.wait_for(&format!("{LINES} poll0 "));
    // Let it block in select.
    std::thread::sleep(Duration::from_millis(100));
    r.child.kill().unwrap();
    r.child.wait().unwrap();
    // The reader drains what was written before the kill.
    std::thread::sleep(Duration::from_millis(50));
    r.text()
}

fn log_case(protocol: &str) {
    let t = tempfile::tempdir().unwrap();
    let bin = build(t.path());
    let (dir, tr) = (t.path().join("dc"), t.path().join("trace"));
    let env = [("DC_DIR", dir.as_path()), ("DC_TRACE", tr.as_path())];

    let out1 = first_run(&bin, &env, protocol);
    let (t1, len1) = trace(&tr, 0);
    for i in 0..LINES {
        assert!(
            out1.contains(&format!("{i} poll0 0 0\n")),
            "{protocol}: the poll with timeout 0 did not return 0 in the first run:\n{out1}"
        );
    }
    let c1 = oracle::counts(&t1);
    eprintln!("{protocol}: first run {c1:?}\n{out1}");
    // Every readiness call and read was logged, none was non-deterministic, and nothing
    // was committed after the first checkpoint.
    for (what, n) in [
        (&["poll"][..], LINES + 1),
        (SELECT, LINES),
        (&["ppoll"], LINES),
        (EPOLL, LINES),
        (&["read"], LINES),
    ] {
        assert_eq!(logged(&t1, what), n, "{protocol}: 'L {what:?}': {t1:?}");
    }
    assert_eq!(c1.nd, 0, "{protocol}: non-deterministic events: {t1:?}");
    assert_eq!(c1.commits, 1, "{protocol}: commits after the first: {t1:?}");

    // The second run recovers the first checkpoint with the next line already waiting:
    // a live poll with timeout 0 would now return 1, a live select would return at once
    // with another time left. Through the log the re-execution sees what the first run
    // saw, then the new line.
    let mut r = Run::start(&bin, &env, protocol);
    r.send(&format!("line{LINES}\n"));
    r.wait_for(&format!("{LINES} read line{LINES}\n"));
    r.stdin = None;
    r.wait_for("eof\n");
    assert!(r.child.wait().unwrap().success());
    let out2 = r.text();
    eprintln!("{protocol}: second run\n{out2}");
    assert!(
        out2.starts_with(&out1),
        "{protocol}: the re-execution did not replay the first run:\nfirst:\n{out1}\nsecond:\n{out2}"
    );
    let rest = &out2[out1.len()..];
    assert!(
        rest.starts_with(&format!("{LINES} select 1 1 ")),
        "{protocol}: after the replay, select should see the new line:\n{rest}"
    );
    let (t2, _) = trace(&tr, len1);
    assert!(
        matches!(t2.first(), Some(Event::Recover(1))),
        "{protocol}: the second run did not recover checkpoint 1: {t2:?}"
    );
    // Replayed (LINES + 1 polls, LINES of the others), then live and logged: the rest of
    // iteration LINES (the new line) and all of the next (end of file).
    assert_eq!(logged(&t2, &["poll"]), LINES + 2, "{protocol}: {t2:?}");
    assert_eq!(logged(&t2, SELECT), LINES + 2, "{protocol}: {t2:?}");
    assert_eq!(logged(&t2, &["read"]), LINES + 2, "{protocol}: {t2:?}");
    assert_eq!(oracle::counts(&t2).nd, 0, "{protocol}: {t2:?}");
    let bad = oracle::check_one(&oracle::trace_since(&tr, 0).unwrap().0);
    assert!(bad.is_empty(), "{protocol}: commit invariant: {bad:?}");
}

#[test]
fn readiness_calls_are_logged_and_replayed_under_cand_log() {
    log_case("cand-log");
}

#[test]
fn readiness_calls_are_logged_and_replayed_under_cbndvs_log() {
    log_case("cbndvs-log");
}

/// Under CAND (no log) the same calls are non-deterministic events, each committed.
#[test]
fn readiness_calls_stay_non_deterministic_under_cand() {
    let t = tempfile::tempdir().unwrap();
    let bin = build(t.path());
    let (dir, tr) = (t.path().join("dc"), t.path().join("trace"));
    let env = [("DC_DIR", dir.as_path()), ("DC_TRACE", tr.as_path())];
    first_run(&bin, &env, "cand");
    let (t1, _) = trace(&tr, 0);
    let nd = |what: &[&str]| {
        t1.iter()
            .filter(|e| matches!(e, Event::Nd(w) if what.contains(&w.as_str())))
            .count()
    };
    assert_eq!(nd(&["poll"]), LINES + 1, "{t1:?}");
    assert_eq!(nd(SELECT), LINES, "{t1:?}");
    assert_eq!(nd(&["ppoll"]), LINES, "{t1:?}");
    assert_eq!(nd(EPOLL), LINES, "{t1:?}");
    let c = oracle::counts(&t1);
    assert_eq!(c.logged, 0, "{t1:?}");
    // One commit after each of the 5 events of each line, and after the last poll.
    assert!(c.commits > 5 * LINES, "{c:?}");
}
