//! The backing store: dirty data is written back (after a crash, in the background, on
//! sync and on unload), a power loss keeps what was written back, and a bad backing device
//! is refused with a clear message.

use std::path::Path;
use std::time::Duration;

use rio_qemu_tests::*;

const MIB: u64 = 1 << 20;

fn with_disk(name: &str, disk_mib: u64) -> (VmConfig, TestDir) {
    config_with_disk(name, disk_mib)
}

fn load(vm: &mut Vm, params: &str) {
    sh(vm, &format!("rio-load backing=/dev/vda {params}"));
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
}

fn expected(seed: u64, size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    rio_check::pattern(seed, 0, &mut v);
    v
}

fn assert_on_disk(disk: &Path, name: &str, seed: u64, size: u64) {
    // Decoded by the test's own reading of the layout (`golden_disk`), not by `format.rs`.
    let got = golden_disk::disk_object(&std::fs::read(disk).unwrap(), name)
        .unwrap_or_else(|e| panic!("{name} is not on the backing disk: {e}"));
    assert!(
        got == expected(seed, size),
        "{name} on disk differs from what was written"
    );
}

#[test]
fn a_crash_is_followed_by_writeback_of_every_byte() {
    let (cfg, _dir) = with_disk("wb-crash", 80);
    let disk = cfg.disks[0].path.clone();
    let mut vm = Vm::start(cfg).unwrap();
    load(&mut vm, "writeback_ms=0");
    sh(
        &mut vm,
        &format!("rio-check write a --seed 1 --size {}", 2 * MIB + 17),
    );
    sh(
        &mut vm,
        "rio-check write b --seed 2 --size 4096 --mmap --no-unmap",
    );
    assert!(
        sh(&mut vm, "rio stats").contains("bytes written back  0"),
        "nothing written back yet"
    );
    vm.panic().unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    sh(&mut vm, "rio-load backing=/dev/vda writeback_ms=0");
    let dmesg = sh(&mut vm, "dmesg");
    assert!(dmesg.contains("dirty pages back to 254:0"), "{dmesg}");
    sh(
        &mut vm,
        &format!("rio-check verify a --seed 1 --size {}", 2 * MIB + 17),
    );
    let cfg = vm.kill().unwrap();
    assert_on_disk(&cfg.disks[0].path, "a", 1, 2 * MIB + 17);
    assert_on_disk(&disk, "b", 2, 4096);
}

#[test]
fn power_loss_keeps_what_was_written_back() {
    let (cfg, _dir) = with_disk("wb-power", 80);
    let mut vm = Vm::start(cfg).unwrap();
    load(&mut vm, "writeback_ms=0");
    sh(&mut vm, "rio-check write synced --seed 7 --size 300000");
    sh(&mut vm, "rio sync");
    // Written after the last writeback: only the arena has it.
    sh(&mut vm, "rio-check write late --seed 8 --size 5000");
    sh(&mut vm, "rio-check write synced --seed 9 --size 4096");
    let cfg = vm.kill().unwrap();
    riovm::discard_ram(&cfg).unwrap();
    let mut vm = Vm::start(cfg).unwrap();
    sh(&mut vm, "rio-load backing=/dev/vda");
    let dmesg = sh(&mut vm, "dmesg");
    assert!(
        dmesg.contains("restored 1 objects from backing device"),
        "{dmesg}"
    );
    sh(&mut vm, "rio-check verify synced --seed 7 --size 300000");
    assert_eq!(
        sh(&mut vm, "rio ls"),
        "synced\n",
        "the unsynced object is gone, as documented"
    );
    // Restored pages are clean: nothing left to write back.
    assert!(sh(&mut vm, "rio stats").contains("dirty pages         0"));
}

#[test]
fn background_writeback_and_clean_unload_reach_the_disk() {
    let (cfg, _dir) = with_disk("wb-bg", 80);
    let disk = cfg.disks[0].path.clone();
    let mut vm = Vm::start(cfg).unwrap();
    load(&mut vm, "writeback_ms=100");
    sh(&mut vm, "rio-check write bg --seed 3 --size 100000");
    sh(&mut vm, "for i in $(seq 100); do rio stats | grep -q 'dirty pages         0' && exit 0; sleep 0.1; done; exit 1");
    assert!(!sh(&mut vm, "rio stats").contains("bytes written back  0"));
    // Resize and rewrite, then unload: the clean unload writes the rest.
    sh(&mut vm, "rio-check write bg --seed 4 --size 200000");
    sh(&mut vm, "rmmod rio");
    let _ = vm.kill().unwrap();
    assert_on_disk(&disk, "bg", 4, 200000);
}

#[test]
fn a_backing_device_that_is_too_small_is_refused() {
    let (cfg, _dir) = with_disk("wb-small", 8);
    let mut vm = Vm::start(cfg).unwrap();
    // First store data without a backing device.
    sh(&mut vm, "rio-load && rio format");
    sh(
        &mut vm,
        "rio-check write keep --seed 5 --size 50000 && rmmod rio",
    );
    let out = vm.run("rio-load backing=/dev/vda").unwrap();
    assert_ne!(out.status, 0);
    let dmesg = sh(&mut vm, "dmesg");
    assert!(
        dmesg.contains("backing device 254:0 is too small: 8388608 bytes"),
        "{dmesg}"
    );
    assert_eq!(sh(&mut vm, "echo alive"), "alive\n");
    sh(&mut vm, "rio-load");
    sh(&mut vm, "rio-check verify keep --seed 5 --size 50000");
}

#[test]
fn a_foreign_backing_device_is_refused_and_not_overwritten() {
    let (cfg, _dir) = with_disk("wb-foreign", 80);
    let disk = cfg.disks[0].path.clone();
    let mut junk = std::fs::read(&disk).unwrap();
    junk[..4096]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i * 7) as u8);
    std::fs::write(&disk, &junk).unwrap();
    let mut vm = Vm::start(cfg).unwrap();
    let out = vm.run("rio-load backing=/dev/vda").unwrap();
    assert_ne!(out.status, 0);
    assert!(sh(&mut vm, "dmesg").contains("holds something other than a Rio disk"));
    let _ = vm.kill().unwrap();
    assert!(
        std::fs::read(&disk).unwrap()[..4096] == junk[..4096],
        "the disk is untouched"
    );
}

#[test]
fn a_disk_of_another_arena_is_refused() {
    let (cfg, _dir) = with_disk("wb-other", 80);
    let mut vm = Vm::start(cfg).unwrap();
    load(&mut vm, "");
    sh(&mut vm, "rmmod rio");
    // A new arena identity (format --force) without the disk, then the old disk again.
    sh(&mut vm, "rio-load && rio format --force && rmmod rio");
    let out = vm.run("rio-load backing=/dev/vda").unwrap();
    assert_ne!(out.status, 0);
    assert!(sh(&mut vm, "dmesg").contains("belongs to another arena"));
}
