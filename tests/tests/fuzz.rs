//! rio-fuzz smoke: two seeded, model-checked histories of 300 ops from four identities
//! (root, two users, a user-namespace root) with noise threads; the second crashes the
//! kernel mid-run, recovers and verifies the arena against the model. Verify must also
//! reject the recovered arena when told a wrong point of the history.
//!
//! The same with riofs (`--riofs`): about half the ops are riofs system calls on a fresh
//! riofs (open/create, pread/pwrite, truncate, unlink, rename, mkdir/rmdir, link, symlink,
//! chmod, chown, stat, and `mmap` of riofs files: map, store, load, msync, munmap, with
//! SIGBUS past the end and SIGSEGV through a read-only mapping as answers the model
//! predicts) in a world-writable sticky directory, private directories and a root-only
//! one; after the crash the recovered tree must be the model's.

use std::time::Duration;

use rio_fuzz::host::{FuzzConfig, RunSpec, Session, Verdict};

fn session(name: &str, fuzz_flags: &str) -> (Session, tempfile::TempDir, FuzzConfig) {
    let artifacts =
        riovm::Artifacts::locate().expect("kernel and initramfs are built (make initramfs)");
    let dir = tempfile::Builder::new()
        .prefix(&format!("rio-test-{name}-"))
        .tempdir()
        .expect("temporary directory");
    let fc = FuzzConfig {
        ops: 300,
        noise: true,
        run_timeout: Duration::from_secs(240),
        fuzz_flags: fuzz_flags.to_string(),
        ..FuzzConfig::default()
    };
    (Session::new(artifacts, dir.path(), fc.clone()), dir, fc)
}

#[test]
fn fuzz_two_seeds_one_crashing_mid_run_then_verify() {
    let (mut s, _dir, fc) = session("fuzz", "");
    // Seed 1: no crash, noise on, no backing disk.
    let mut a = RunSpec::for_seed(1, &fc, 0);
    a.backing = false;
    let r = s.run(&a).expect("run seed 1");
    assert_eq!(r.verdict, Verdict::Pass, "seed 1: {:?}", r.verdict);
    assert!(r.acked > 200, "seed 1 acknowledged only {} ops", r.acked);

    // Seed 2: a backing disk, and a kernel panic 0.15 to 1.65 s into the run. The panic is
    // timed, so on a slow machine it may come after an op or two, when op 0 is no wrong
    // point of the history (seen: 1 op acknowledged, op 1 an open in flight): then the same
    // seed runs again with the panic twice as late, up to twice more.
    let mut b = RunSpec::for_seed(2, &fc, 1);
    b.backing = true;
    assert!(b.panic_after.is_some());
    let mut tries = 0;
    let r = loop {
        let r = s.run(&b).expect("run seed 2");
        assert_eq!(r.verdict, Verdict::Pass, "seed 2: {:?}", r.verdict);
        assert!(r.crashed, "seed 2 did not crash");
        tries += 1;
        if r.acked >= 20 || tries == 3 {
            break r;
        }
        eprintln!(
            "seed 2 crashed after {} acknowledged ops: again with the panic after {:?} ms",
            r.acked,
            b.panic_after.map(|p| p * 2)
        );
        b.panic_after = b.panic_after.map(|p| p * 2);
    };
    assert!(
        r.acked >= 20,
        "seed 2 crashed after {} acknowledged ops even with the panic after {:?} ms: too early \
         for the wrong-point check",
        r.acked,
        b.panic_after
    );

    // The recovered arena holds the history up to the crash: verify must refuse to match it
    // against the model of an earlier point (op 0 acknowledged, op 1 at most in flight).
    let flags = b.flags(&fc);
    let vm = s.guest().expect("the guest is up after a passing run");
    let out = vm
        .run_timeout(
            &format!("rio-fuzz verify {flags} --last-acked 0"),
            Duration::from_secs(120),
        )
        .expect("verify runs");
    assert_eq!(
        out.status,
        1,
        "verify accepted a wrong point of the history: {}",
        out.stdout_str()
    );
    assert!(out.stdout_str().contains("verify:"), "{}", out.stdout_str());
}

#[test]
fn fuzz_riofs_two_seeds_one_crashing_mid_run_then_verify_the_tree() {
    let (mut s, _dir, fc) = session("fuzz-riofs", "--riofs");
    // Seed 15: a backing disk and a kernel panic 4 s in, in the middle of the history (after
    // the setup); the recovered arena and riofs tree must be the model's.
    let mut b = RunSpec::for_seed(15, &fc, 1);
    b.backing = true;
    b.panic_after = Some(4000);
    let r = s.run(&b).expect("run seed 15");
    eprintln!(
        "riofs seed 15: {:?}, {} ops acked before the crash, in {:?}",
        r.verdict, r.acked, r.took
    );
    assert_eq!(r.verdict, Verdict::Pass, "seed 15: {:?}", r.verdict);
    assert!(r.crashed, "seed 15 did not crash");
    assert!(r.acked > 0, "seed 15 crashed before the first op");

    // Verify must refuse the recovered tree against an earlier point of the history.
    let flags = b.flags(&fc);
    let vm = s.guest().expect("the guest is up after a passing run");
    let out = vm
        .run_timeout(
            &format!("rio-fuzz verify {flags} --last-acked 0"),
            Duration::from_secs(120),
        )
        .expect("verify runs");
    assert_eq!(
        out.status,
        1,
        "verify accepted a wrong point of the history: {}",
        out.stdout_str()
    );
    assert!(
        out.stdout_str().contains("riofs tree differs"),
        "{}",
        out.stdout_str()
    );

    // Seed 11, in the same guest: no crash; every answer and, at the end, the whole tree
    // must match.
    let mut a = RunSpec::for_seed(11, &fc, 0);
    a.backing = true;
    let r = s.run(&a).expect("run seed 11");
    eprintln!(
        "riofs seed 11: {:?}, {} ops acked in {:?}",
        r.verdict, r.acked, r.took
    );
    assert_eq!(r.verdict, Verdict::Pass, "seed 11: {:?}", r.verdict);
    assert!(r.acked > 200, "seed 11 acknowledged only {} ops", r.acked);
}
