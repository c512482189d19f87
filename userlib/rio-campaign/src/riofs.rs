//! The riofs configuration: a riofs file system in one protected Rio object (backing disk,
//! `writeback_ms=1000`), `riofs-torture run` as the workload, and the crash model of
//! `riofs_torture::model` (the one `tests/tests/riofs_crash.rs` uses) as the judge.
//!
//! After recovery the tree (`riofs-torture dump`) is compared with every state of the
//! log's replay at an operation boundary: after a crash that keeps the RAM it must be the
//! state after the last acknowledged operation or after the one in flight; after a power
//! cut, the state after *some* operation (a prefix: riofs goes to the backing disk whole,
//! quiesced), and the acknowledged operations after it are lost. The file system then
//! goes through `riofs-fsck` (unmounted, the object's bytes from `rio cat`).
//!
//! In the outcome, `acked_writes` counts the acknowledged operations that changed the tree
//! (they succeeded and are not `fsync`), `lost_writes` those of them after the prefix the
//! tree is, and `corrupted_files` is 1 when the tree is no prefix state, the mount fails,
//! or `riofs-fsck` reports errors (one file system: at most 1).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use riofs_torture::log::{parse_log, Dump};
use riofs_torture::model::prefix_states;
use riovm::Vm;

use crate::{Outcome, Result, HANG_TIMEOUT};

/// The Rio object holding the file system.
pub const NAME: &str = "tort";
/// Where it is mounted in the guest.
const MNT: &str = "/mnt";
/// rio.ko's parameters, at setup and again at every load after the crash.
pub const LOAD: &str = "rio-load backing=/dev/vda protect=1 allow_wild_store=1 writeback_ms=1000";
/// The longest a dump, an unmount or a check of the 16 MiB file system may take.
const FS_TIMEOUT: Duration = Duration::from_secs(120);

/// The guest command that loads rio.ko, formats the arena and mounts a fresh riofs.
pub fn setup_command() -> String {
    format!("{LOAD} && rio format && mount -t riofs -o size=16M {NAME} {MNT}")
}

/// The workload: operations without end (the crash ends it), logged to the workload port.
pub fn workload_command(seed: u64) -> String {
    format!(
        "riofs-torture run --dir {MNT} --seed {seed} --ops 1000000000 --log /dev/ttyS2 \
         > /tmp/torture.out 2>&1"
    )
}

/// Acknowledgements the workload log shows so far.
pub fn acks(log: &str) -> usize {
    log.matches("\nACK ").count()
}

/// The tree under the mount point, as `riofs-torture dump` prints it.
fn dump(vm: &mut Vm) -> std::result::Result<String, String> {
    let out = vm
        .run_timeout(&format!("riofs-torture dump --dir {MNT}"), FS_TIMEOUT)
        .map_err(|e| format!("dump: {e}"))?;
    if out.status != 0 {
        return Err(format!(
            "dump failed (status {}): {}",
            out.status,
            out.stderr_str().trim()
        ));
    }
    Ok(out.stdout_str())
}

/// The mode of the fresh file system's root (the model's initial state).
pub fn root_mode(vm: &mut Vm) -> Result<u32, String> {
    let d = dump(vm)?;
    Dump::parse(&d)
        .and_then(|d| d.root_mode())
        .map_err(|e| e.to_string())
}

/// What the guest gave back after the crash.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The dump of the mounted tree, or why there is none (the mount or the dump failed).
    pub dump: Option<std::result::Result<String, String>>,
    /// `riofs-fsck`'s complaint (errors found, or it could not run); `None`: clean.
    pub fsck: Option<String>,
}

/// Mounts (unless `mounted`), dumps, unmounts and checks the object with `riofs-fsck`.
/// A guest that does not answer is an error (the caller treats it as a hang).
pub fn check(vm: &mut Vm, mounted: bool) -> Result<Recovered> {
    let mut r = Recovered::default();
    if !mounted {
        let m = vm.run_timeout(&format!("mount -t riofs {NAME} {MNT}"), FS_TIMEOUT)?;
        if m.status != 0 {
            r.dump = Some(Err(format!(
                "mount failed (status {}): {}",
                m.status,
                m.stderr_str().trim()
            )));
            return Ok(r);
        }
    }
    r.dump = Some(dump(vm));
    let out = vm.run_timeout(
        &format!(
            "umount {MNT} && rio cat {NAME} > /tmp/img && riofs-fsck -q /tmp/img; s=$?; rm -f /tmp/img; exit $s"
        ),
        FS_TIMEOUT,
    )?;
    if out.status != 0 {
        let text = format!("{}{}", out.stdout_str(), out.stderr_str());
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let first: Vec<&str> = lines.iter().take(6).copied().collect();
        r.fsck = Some(format!(
            "riofs-fsck (status {}): {}{}",
            out.status,
            first.join("; "),
            if lines.len() > first.len() {
                "; ..."
            } else {
                ""
            }
        ));
    }
    Ok(r)
}

/// Scores a recovered riofs against the model (see the module's documentation), and
/// leaves the dump and the model's verdict next to the workload log (`riofs-dump.jsonl`,
/// `riofs-verdict.txt`), where `--keep-failures` finds them.
pub fn score(
    out: &mut Outcome,
    log_path: &Path,
    root_mode: u32,
    rec: &Recovered,
    ack_times: &[(u64, Instant)],
) -> Result<()> {
    let text =
        std::fs::read_to_string(log_path).map_err(crate::Error::io("reading the workload log"))?;
    let mut verdict = String::new();
    let mut note: Vec<String> = Vec::new();
    let log = match parse_log(&text) {
        Ok(l) => l,
        Err(e) => {
            out.note = format!("harness error: the workload log: {e}");
            return Ok(());
        }
    };
    let last_ack = log
        .ops
        .iter()
        .rev()
        .find(|o| o.result.is_some())
        .map(|o| o.n);
    verdict.push_str(&format!(
        "{} ops logged, {} acknowledged (last {last_ack:?}), in flight: {:?}\n",
        log.ops.len(),
        log.acked(),
        log.in_flight().map(|o| o.json.as_str())
    ));
    match &rec.dump {
        None | Some(Err(_)) => {
            let why = match &rec.dump {
                Some(Err(e)) => e.clone(),
                _ => "no dump".into(),
            };
            // Nothing can be checked: count every acknowledged change as lost.
            out.acked_writes = log
                .ops
                .iter()
                .filter(|o| o.op.is_change() && o.result == Some(Ok(())))
                .count() as u32;
            out.lost_writes = out.acked_writes;
            out.corrupted_files = 1;
            note.push(why.clone());
            verdict.push_str(&format!("{why}\n"));
        }
        Some(Ok(d)) => {
            let _ = std::fs::write(log_path.with_file_name("riofs-dump.jsonl"), d);
            let p = Dump::parse(d).and_then(|dump| prefix_states(root_mode, MNT, &log, &dump));
            match p {
                Err(e) => {
                    out.corrupted_files = 1;
                    note.push(format!("model: {e}"));
                    verdict.push_str(&format!("model: {e}\n"));
                }
                Ok(p) => {
                    out.acked_writes = p.acked_changes as u32;
                    out.lost_writes = p.lost as u32;
                    let acked = log.acked();
                    match p.matched {
                        Some(k) => {
                            verdict.push_str(&format!(
                                "the tree is the state after {k} of {acked} acknowledged ops{}; {} acknowledged changes lost: {:?}\n",
                                if k > acked { " (and the one in flight)" } else { "" },
                                p.lost,
                                p.lost_ops
                            ));
                            if p.lost > 0 && out.class != "power" {
                                note.push(format!(
                                    "the tree is the state after op {k} of {acked} acked: {} acked ops lost (oldest: op {:?})",
                                    p.lost,
                                    p.lost_ops.first()
                                ));
                            }
                        }
                        None => {
                            out.corrupted_files = 1;
                            note.push(format!(
                                "the tree is no prefix state of the log (closest: after {} ops, {} lines differ)",
                                p.closest.0, p.closest.1
                            ));
                            verdict.push_str(&format!(
                                "the tree is no prefix state (closest: after {} ops, {} lines differ); against the last acknowledged state:\n{}",
                                p.closest.0, p.closest.1, p.diff_last
                            ));
                        }
                    }
                    // The age of the oldest loss, by the host's clock: from its ACK line's
                    // arrival to the last ACK line's.
                    let seen = |n: u64| ack_times.iter().find(|t| t.0 == n).map(|t| t.1);
                    let last = ack_times.last().map(|t| t.1);
                    out.oldest_loss_ms = p
                        .lost_ops
                        .first()
                        .and_then(|&n| Some(last?.duration_since(seen(n)?).as_millis() as u64));
                }
            }
        }
    }
    if let Some(f) = &rec.fsck {
        out.corrupted_files = 1;
        note.push(f.clone());
        verdict.push_str(&format!("{f}\n"));
    }
    let _ = std::fs::write(log_path.with_file_name("riofs-verdict.txt"), &verdict);
    if !note.is_empty() {
        let n = note.join("; ");
        out.note = if out.note.is_empty() {
            n
        } else {
            format!("{}; {n}", out.note)
        };
    }
    Ok(())
}

/// Watches the workload log from the host and notes when each `ACK` line arrived (the
/// log itself carries no times): the age of a lost operation.
pub struct AckClock {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(u64, Instant)>>>,
    thread: Option<JoinHandle<()>>,
}

/// How often the clock reads the log.
const CLOCK_POLL: Duration = Duration::from_millis(20);
/// The clock stops by itself after this long (a run takes a few minutes at most).
const CLOCK_LIMIT: Duration = Duration::from_secs(1800);

impl AckClock {
    /// Starts watching `log` (read from its start).
    pub fn start(log: PathBuf) -> AckClock {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut pos = 0u64;
            let mut partial = Vec::new();
            while !s.load(Ordering::Relaxed) && start.elapsed() < CLOCK_LIMIT {
                let mut buf = Vec::new();
                if let Ok(mut f) = std::fs::File::open(&log) {
                    if f.seek(SeekFrom::Start(pos)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                        pos += buf.len() as u64;
                    }
                }
                let now = Instant::now();
                partial.extend_from_slice(&buf);
                if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
                    let whole: Vec<u8> = partial.drain(..=end).collect();
                    if let Ok(mut g) = v.lock() {
                        for l in String::from_utf8_lossy(&whole).lines() {
                            if let Some(n) = l
                                .strip_prefix("ACK ")
                                .and_then(|r| r.split(' ').next())
                                .and_then(|n| n.parse().ok())
                            {
                                g.push((n, now));
                            }
                        }
                    }
                }
                std::thread::sleep(CLOCK_POLL);
            }
        });
        AckClock {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Stops the clock (the guest crashed: no more acknowledgements) and returns what it
    /// saw; calling it again returns the same.
    pub fn stop(&mut self) -> Vec<(u64, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

impl Drop for AckClock {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The no-crash path's first step: stop the workload (the guest must still answer).
pub fn stop_workload(vm: &mut Vm) -> Result<()> {
    vm.run_timeout("killall riofs-torture rio-check; sleep 0.5", HANG_TIMEOUT)?;
    Ok(())
}
