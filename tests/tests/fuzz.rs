//! rio-fuzz smoke: two seeded, model-checked histories of 300 ops from four identities
//! (root, two users, a user-namespace root) with noise threads; the second crashes the
//! kernel mid-run, recovers and verifies the arena against the model. Verify must also
//! reject the recovered arena when told a wrong point of the history.

use std::time::Duration;

use rio_fuzz::host::{FuzzConfig, RunSpec, Session, Verdict};

fn session(name: &str) -> (Session, tempfile::TempDir, FuzzConfig) {
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
        ..FuzzConfig::default()
    };
    (Session::new(artifacts, dir.path(), fc.clone()), dir, fc)
}

#[test]
fn fuzz_two_seeds_one_crashing_mid_run_then_verify() {
    let (mut s, _dir, fc) = session("fuzz");
    // Seed 1: no crash, noise on, no backing disk.
    let mut a = RunSpec::for_seed(1, &fc, 0);
    a.backing = false;
    let r = s.run(&a).expect("run seed 1");
    assert_eq!(r.verdict, Verdict::Pass, "seed 1: {:?}", r.verdict);
    assert!(r.acked > 200, "seed 1 acknowledged only {} ops", r.acked);

    // Seed 2: a backing disk, and a kernel panic 0.15 to 1.65 s into the run.
    let mut b = RunSpec::for_seed(2, &fc, 1);
    b.backing = true;
    assert!(b.panic_after.is_some());
    let r = s.run(&b).expect("run seed 2");
    assert_eq!(r.verdict, Verdict::Pass, "seed 2: {:?}", r.verdict);
    assert!(r.crashed, "seed 2 did not crash");

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
