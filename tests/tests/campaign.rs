//! Smoke version of the crash campaign (`make campaign` runs the full one): a few crashes
//! per class on the configurations whose guarantees we assert.

use rio_campaign::{run_one_with_budget, Config};

/// Faults a random-fault run may inject before it must have crashed: five times the
/// campaign's 200 (in its runs every class crashed within 200, but stack and text took up
/// to all of them), so that a run that does not crash means a broken injector, not bad luck.
const SMOKE_FAULTS: u32 = 1000;

fn crash(config: Config, class: &str, index: u64) -> rio_campaign::Outcome {
    let (cfg, dir) = rio_qemu_tests::config(&format!("campaign-{}-{class}", config.name()));
    // Random kernel faults: any splat may follow; the outcome is judged below.
    dir.expect_splats();
    let faults = match class {
        "wild" | "pointer" | "stack" | "text" | "heap" => SMOKE_FAULTS,
        _ => rio_campaign::faults_for(class),
    };
    let o =
        run_one_with_budget(&cfg, dir.path(), config, class, index, faults).unwrap_or_else(|e| {
            // The error and its sources.
            let chain: Vec<String> =
                std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(|e| e.to_string())
                    .collect();
            panic!("{}", chain.join(": "))
        });
    assert!(
        // pmem-dax's runs add what e2fsck said after them.
        o.note.is_empty() || o.note.starts_with("no crash") || o.note == rio_campaign::HUNG,
        "{o:?}"
    );
    o
}

/// With protection, panics, oopses from stores aimed at the arena, and hard resets lose
/// no acknowledged write and corrupt no file.
#[test]
fn rio_protected_loses_nothing_to_panics_arena_stores_and_resets() {
    for (i, class) in ["panic", "arena", "reset"].into_iter().enumerate() {
        let o = crash(Config::RioProtected, class, i as u64);
        assert!(o.crashed, "{class} crashes the guest: {o:?}");
        assert!(o.acked_writes > 0);
        assert_eq!((o.lost_writes, o.corrupted_files), (0, 0), "{class}: {o:?}");
    }
}

/// Random faults, injected until the guest crashes: every class crashes it, and protected
/// Rio loses no acknowledged write and corrupts no file. (A run that does not crash would
/// be scored for silent corruption; here it fails the test, since the injector must crash
/// the kernel within [`SMOKE_FAULTS`].)
#[test]
fn random_faults_on_protected_rio() {
    for (i, class) in ["wild", "pointer", "stack", "text", "heap"]
        .into_iter()
        .enumerate()
    {
        let o = crash(Config::RioProtected, class, 100 + i as u64);
        assert_eq!((o.lost_writes, o.corrupted_files), (0, 0), "{class}: {o:?}");
        assert!(
            o.crashed,
            "{class}: {SMOKE_FAULTS} faults did not crash the guest (a broken injector?): {o:?}"
        );
        assert!(o.faults >= 1, "the console shows the faults: {o:?}");
        assert!(o.acked_writes > 0, "{class}: {o:?}");
    }
}

/// Write-through ext4 loses nothing to a panic either (the baseline of the comparison).
#[test]
fn write_through_ext4_survives_a_panic() {
    let o = crash(Config::Ext4Sync, "panic", 0);
    assert!(o.crashed && o.acked_writes > 0, "{o:?}");
    assert_eq!((o.lost_writes, o.corrupted_files), (0, 0), "{o:?}");
}

/// Power loss costs protected Rio only the writes since the last writeback
/// (`writeback_ms=1000` in the campaign), never older ones.
#[test]
fn rio_power_loss_loses_only_writes_newer_than_the_last_writeback() {
    let o = crash(Config::RioProtected, "power", 0);
    assert!(o.crashed && o.acked_writes > 0, "{o:?}");
    // One interval, plus one writeback pass under emulation.
    let age = o.oldest_loss_ms.unwrap_or(0);
    assert!(age <= 2000, "lost a write {age} ms old: {o:?}");
}

/// Safe sync alone: with no background writeback and the RAM lost right after the crash
/// kernel has run, everything acknowledged comes back from the disk the crash kernel wrote.
#[test]
fn the_crash_kernel_saves_every_acknowledged_write_of_a_panic() {
    let o = crash(Config::RioSafeSync, "panic", 0);
    assert!(o.crashed && o.acked_writes > 0, "{o:?}");
    assert_eq!(o.recovery, "crash kernel, then backing disk", "{o:?}");
    assert_eq!((o.lost_writes, o.corrupted_files), (0, 0), "{o:?}");
}

/// riofs in a protected object under random POSIX operations, judged by the riofs crash
/// model: a panic and wild stores lose no acknowledged operation and leave a tree that
/// `riofs-fsck` finds clean; a power cut leaves the state after some operation (a prefix
/// of the log: riofs goes to the backing disk whole), losing only the operations after it.
#[test]
fn riofs_loses_nothing_to_crashes_and_keeps_a_prefix_through_power_loss() {
    for (i, class) in ["panic", "wild"].into_iter().enumerate() {
        let o = crash(Config::Riofs, class, 200 + i as u64);
        eprintln!("riofs / {class}: {o:?}");
        assert!(o.crashed, "{class} crashes the guest: {o:?}");
        assert!(o.acked_writes > 0, "{class}: {o:?}");
        assert_eq!((o.lost_writes, o.corrupted_files), (0, 0), "{class}: {o:?}");
    }
    let o = crash(Config::Riofs, "power", 210);
    eprintln!("riofs / power: {o:?}");
    assert!(o.crashed && o.acked_writes > 0, "{o:?}");
    assert_eq!(o.recovery, "backing disk", "{o:?}");
    // A prefix state (the note would say otherwise), clean by riofs-fsck.
    assert_eq!(o.corrupted_files, 0, "{o:?}");
    assert!(o.lost_writes <= o.acked_writes, "{o:?}");
}

/// The pmem-dax peer has no protection: the campaign's stores aimed at its persistent
/// memory (through the kernel's direct map, half at ext4's metadata, half at the files'
/// blocks) all land without a fault, where protected Rio oopses at the first store into
/// its arena (above). Whether they corrupt a file depends on what the workload overwrites
/// afterwards; `rio-campaign --configs pmem-dax` counts that.
#[test]
fn pmem_dax_takes_stores_into_its_region_without_a_fault() {
    let o = crash(Config::PmemDax, "arena", 1);
    assert!(!o.crashed, "nothing stops a store into the region: {o:?}");
    assert_eq!(o.faults, rio_campaign::FAULTS_PER_RUN, "{o:?}");
    assert!(o.acked_writes > 0, "{o:?}");
}
