//! Model-checked crash consistency of riofs: a guest program (`riofs-torture run`) performs
//! random POSIX operations and logs each one before it starts and after it returns (to the
//! guest's third serial port, which the host reads as `workload.log`); the kernel is
//! panicked at a random point; after the warm reboot and recovery the tree
//! (`riofs-torture dump`) must be exactly what an independent in-memory model of the tree
//! says after the last acknowledged operation, or after the one in flight.
//!
//! The model (`riofs_torture::model`, which the crash campaign's riofs configuration shares)
//! knows POSIX (Linux) semantics, including the errno of each failure the workload provokes
//! on purpose, and nothing of riofs or of the torture program's state: it only replays the
//! logged operations. Data is `data(seed, len)`, the splitmix64
//! stream the log names; every write is at most 8 KiB (riofs makes a write atomic up to a
//! quarter of its log, which is far larger), so a write in flight is all or nothing.
//!
//! Negative control: `RIOFS_CRASH_BREAK_MODEL=1` makes the model drop the last acknowledged
//! operation that changed the tree; the comparison must then fail.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rio_qemu_tests::*;
use riofs_torture::log::{diff, Dump, Log};
use riofs_torture::model::Model;

fn parse_log(text: &str) -> Log {
    riofs_torture::log::parse_log(text).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_dump(text: &str) -> Dump {
    Dump::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// Replays the acknowledged operations (checking each result against the model's), and
/// returns the models before and after the one in flight (`None` after: there is none,
/// or the model says it fails).
fn replay(
    root_mode: u32,
    prefix: &str,
    log: &Log,
    break_model: bool,
) -> (Model, Option<Model>, usize) {
    let r = riofs_torture::model::replay(root_mode, prefix, log, break_model)
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(n) = r.dropped {
        let op = log.ops.iter().find(|o| o.n == n).map(|o| o.json.as_str());
        eprintln!("negative control: the model drops acked op {n}: {op:?}");
    }
    (r.before, r.after, r.acked)
}

// ---- the guest -------------------------------------------------------------------------

fn load(vm: &mut Vm) {
    sh(vm, "rio-load");
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
}

/// The numbers of the newest `riofs: mounted:` console line after `from`: inodes in use,
/// records undone, orphans freed, leaked blocks.
fn mount_report(vm: &Vm, from: usize) -> (u64, u64, u64, u64) {
    // The console can lag the command's exit: wait (bounded) for the whole line.
    let t = Instant::now();
    let l = loop {
        let c = vm.console();
        let l = c
            .get(from..)
            .unwrap_or_default()
            .lines()
            .rfind(|l| l.contains("riofs: mounted:"))
            .map(String::from);
        match l {
            Some(l) if l.contains("leaked blocks") => break l,
            _ if t.elapsed() > Duration::from_secs(10) => {
                panic!("no mount report on the console:\n{}", vm.console_tail(20))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let num = |after: &str| -> u64 {
        let i = l.find(after).unwrap_or_else(|| panic!("{after:?} in {l}"));
        l[..i]
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("a number before {after:?} in {l}"))
    };
    let after_word = |w: &str| -> u64 {
        let i = l.find(w).unwrap_or_else(|| panic!("{w:?} in {l}")) + w.len();
        l[i..]
            .split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("a number after {w:?} in {l}"))
    };
    (
        num(" inodes in use"),
        after_word("recovery undid "),
        after_word("freed "),
        num(" leaked blocks"),
    )
}

fn dump(vm: &mut Vm) -> String {
    let out = vm
        .run_timeout("riofs-torture dump --dir /mnt", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("dump: {e}"));
    assert_eq!(
        out.status,
        0,
        "dump failed: {}{}",
        out.stdout_str(),
        out.stderr_str()
    );
    out.stdout_str()
}

fn root_mode(dump: &str) -> u32 {
    parse_dump(dump)
        .root_mode()
        .unwrap_or_else(|e| panic!("root mode: {e}"))
}

/// Where a failing round's evidence goes (kept after the test).
fn evidence_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/riofs-crash");
    let _ = std::fs::create_dir_all(&d);
    d
}

struct Round {
    seed: u64,
    /// Acknowledged operations to wait for before the panic.
    acks: usize,
    /// `Some(us)`: the workload panics the kernel itself, `us` microseconds into operation
    /// `acks` (lands inside an operation far more often than the host's trigger, which
    /// lands mostly while the workload walks the tree or writes its log).
    self_panic: Option<u64>,
}

/// One round: a fresh file system, the workload, a panic, recovery, the comparison.
fn round(
    vm: &mut Vm,
    workdir: &Path,
    k: usize,
    r: &Round,
    break_model: bool,
) -> Result<String, String> {
    let name = format!("tort{k}");
    sh(vm, &format!("mount -t riofs -o size=16M {name} /mnt"));
    let initial = dump(vm);
    let mode = root_mode(&initial);
    let logf = riovm::workload_log_path(workdir);
    let log0 = std::fs::metadata(&logf).map_or(0, |m| m.len() as usize);
    let trigger = match r.self_panic {
        Some(us) => format!("--panic-at {} --panic-delay-us {us}", r.acks),
        None => String::new(),
    };
    vm.spawn(&format!(
        "riofs-torture run --dir /mnt --seed {} --ops 1000000 --log /dev/ttyS2 {trigger} > /tmp/torture.out 2>&1",
        r.seed
    ))
    .unwrap_or_else(|e| panic!("spawn: {e}"));
    let read_log = || {
        let all = std::fs::read(&logf).unwrap_or_default();
        String::from_utf8_lossy(all.get(log0..).unwrap_or_default()).into_owned()
    };
    let t = Instant::now();
    while r.self_panic.is_none() {
        let text = read_log();
        if text.matches("\nACK ").count() >= r.acks {
            break;
        }
        if text.contains("DONE") || t.elapsed() > Duration::from_secs(60) {
            let out = vm
                .run("cat /tmp/torture.out")
                .map(|o| o.stdout_str())
                .unwrap_or_default();
            panic!("the workload did not reach {} acks: {out}\n{text}", r.acks);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if r.self_panic.is_none() {
        vm.panic().unwrap_or_else(|e| panic!("panic: {e}"));
    }
    vm.wait_reboot(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("reboot: {e}"));
    let text = read_log();
    let log = parse_log(&text);
    assert!(!log.done, "the workload finished before the panic");
    load(vm);
    let con = vm.console().len();
    sh(vm, &format!("mount -t riofs {name} /mnt"));
    let rep1 = mount_report(vm, con);
    let after_crash = dump(vm);
    sh(vm, "umount /mnt");
    let con = vm.console().len();
    sh(vm, &format!("mount -t riofs {name} /mnt"));
    let rep2 = mount_report(vm, con);
    let again = dump(vm);
    sh(vm, "umount /mnt");
    sh(vm, &format!("rio rm {name}"));

    let (before, after, acked) = replay(mode, "/mnt", &log, break_model);
    let in_flight = log.in_flight().map(|o| o.json.clone());
    let mut report = format!(
        "seed {} (panic by {}): {} ops logged, {acked} acked, in flight: {in_flight:?}; mount after the crash: \
         {} inodes, undid {} records, freed {} orphans, {} leaked blocks",
        r.seed,
        r.self_panic
            .map_or("the host".to_string(), |us| format!("the workload {us} us into op {}", r.acks)),
        log.ops.len(),
        rep1.0,
        rep1.1,
        rep1.2,
        rep1.3
    );
    let mut matched = None;
    let mut diffs = String::new();
    for (which, m) in [
        ("after the last acked op", Some(&before)),
        ("after the op in flight", after.as_ref()),
    ] {
        let Some(m) = m else { continue };
        let (want, known) = m.render();
        let got = parse_dump(&after_crash).render(&known);
        if got == want {
            matched = Some((which, m));
            break;
        }
        diffs.push_str(&format!(
            "--- against the model {which}:\n{}",
            diff(&want, &got)
        ));
    }
    let fail = |why: String| -> Result<String, String> {
        let d = evidence_dir().join(format!("seed-{}", r.seed));
        let _ = std::fs::create_dir_all(&d);
        let _ = std::fs::write(d.join("workload.log"), &text);
        let _ = std::fs::write(d.join("dump-after-crash.jsonl"), &after_crash);
        let _ = std::fs::write(d.join("dump-remount.jsonl"), &again);
        let _ = std::fs::write(d.join("why.txt"), &why);
        Err(format!("{why}\n(evidence in {})", d.display()))
    };
    let Some((which, m)) = matched else {
        return fail(format!(
            "{report}\nthe tree after recovery is no model state:\n{diffs}"
        ));
    };
    report.push_str(&format!("; the tree is the model {which}"));
    if again != after_crash {
        return fail(format!(
            "{report}\nrecovery is not idempotent: remounting changed the tree:\n{}",
            diff(
                &after_crash.lines().map(String::from).collect::<Vec<_>>(),
                &again.lines().map(String::from).collect::<Vec<_>>()
            )
        ));
    }
    if rep2.1 != 0 || rep2.2 != 0 || rep2.3 != 0 {
        return fail(format!(
            "{report}\nthe second mount still recovered something: {rep2:?}"
        ));
    }
    if rep1.0 != m.inodes() as u64 || rep2.0 != rep1.0 {
        return fail(format!(
            "{report}\nthe model has {} inodes (open orphans are freed at mount), the file system {} then {}",
            m.inodes(),
            rep1.0,
            rep2.0
        ));
    }
    // Unlinked-while-open files are freed; one more may be the in-flight unlink's inode
    // (unlinked, not yet evicted), and one fewer the in-flight close's (the last close of
    // an unlinked file frees it before the call returns, while the tree, which does not
    // show orphans, matches the model before the close as well as after it).
    let orphans = m.orphans() as u64;
    let closing = log
        .in_flight()
        .is_some_and(|o| matches!(o.op, riofs_torture::log::Op::FdClose { .. }));
    let fewest = orphans.saturating_sub(u64::from(closing));
    if rep1.2 < fewest || rep1.2 > orphans + u64::from(in_flight.is_some()) {
        return fail(format!(
            "{report}\nthe model had {orphans} open unlinked files at the crash; recovery freed {}",
            rep1.2
        ));
    }
    Ok(report)
}

#[test]
fn riofs_recovers_exactly_the_acknowledged_operations() {
    let break_model = std::env::var_os("RIOFS_CRASH_BREAK_MODEL").is_some();
    let rounds: usize = std::env::var("RIOFS_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let base: u64 = std::env::var("RIOFS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7057_0000);
    let mut t = boot("riofs-crash");
    t.allow_crash();
    let workdir = t.dir.path().to_path_buf();
    let vm = t.vm();
    load(vm);
    let started = Instant::now();
    let mut failures = Vec::new();
    for k in 0..rounds {
        let seed = base + k as u64;
        // A seeded spread of crash points: early (few files) to later (a full tree).
        let acks = 20 + (seed.wrapping_mul(0x9e37_79b9) >> 7) as usize % 400;
        // Every other round the workload panics the kernel itself, 0 to 0.8 ms into an op.
        let self_panic = (k % 2 == 1).then_some((seed.wrapping_mul(0x2545_f491) >> 9) % 800);
        let r = Round {
            seed,
            acks,
            self_panic,
        };
        match round(vm, &workdir, k, &r, break_model) {
            Ok(rep) => eprintln!("round {k}: {rep} ({:?} so far)", started.elapsed()),
            Err(e) => {
                eprintln!("round {k} FAILED: {e}");
                failures.push(e);
            }
        }
    }
    if break_model {
        assert!(
            failures.len() == rounds,
            "negative control: the broken model passed {} of {rounds} rounds",
            rounds - failures.len()
        );
        eprintln!("negative control: every round failed, as it must");
        return;
    }
    assert!(
        failures.is_empty(),
        "{} of {rounds} rounds failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The model against a real file system (the host's, no VM): the whole log of a run that
/// is not interrupted must replay to exactly the dump. Needs the guest build of
/// riofs-torture (a static binary, `make guest`, which make test builds first); without it
/// the test fails with that reason rather than passing unrun.
#[test]
fn the_model_agrees_with_the_host_file_system() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../userlib/target/x86_64-unknown-linux-gnu/release/riofs-torture");
    assert!(
        bin.exists(),
        "{} is not built: run make guest (make test does)",
        bin.display()
    );
    let mut mtimes_checked = 0;
    for seed in [1u64, 2, 3] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        let logf = dir.path().join("log");
        std::fs::write(&logf, b"").expect("log file");
        let st = std::process::Command::new(&bin)
            .args(["run", "--dir"])
            .arg(&root)
            .args(["--seed", &seed.to_string(), "--ops", "3000", "--log"])
            .arg(&logf)
            .status()
            .expect("run riofs-torture");
        assert!(st.success());
        let out = std::process::Command::new(&bin)
            .args(["dump", "--dir"])
            .arg(&root)
            .output()
            .expect("dump");
        assert!(out.status.success());
        let dump = String::from_utf8_lossy(&out.stdout).into_owned();
        let text = std::fs::read_to_string(&logf).expect("the log");
        let log = parse_log(&text);
        assert!(log.done);
        let (m, after, acked) = replay(root_mode(&dump), &root.display().to_string(), &log, false);
        assert_eq!(acked, 3000);
        assert!(after.is_none());
        let (want, known) = m.render();
        let got = parse_dump(&dump).render(&known);
        assert_eq!(got, want, "seed {seed}:\n{}", diff(&want, &got));
        mtimes_checked += known.len();
    }
    // Only files whose mtime the model can know are compared on it (few per run).
    assert!(mtimes_checked > 0, "no run compared an mtime");
}
