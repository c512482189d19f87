//! Safe sync at panic time: a kexec crash kernel loads rio.ko on the dead kernel's arena,
//! which writes every dirty page to the backing disk, then reboots.

use std::time::Duration;

use rio_qemu_tests::*;

fn with_disk(name: &str) -> (VmConfig, TestDir) {
    config_with_disk(name, 80)
}

fn arm(vm: &mut Vm) {
    // No background writeback: whatever reaches the disk after the crash, the crash
    // kernel wrote.
    sh(vm, "rio-load backing=/dev/vda writeback_ms=0 && rio format");
    sh(vm, "rio crashkernel load --backing /dev/vda");
    assert_eq!(sh(vm, "rio crashkernel status"), "loaded\n");
    sh(vm, "rio-check write a --seed 31 --size 1500000");
    sh(
        vm,
        "rio-check write m --seed 32 --size 300000 --mmap --no-unmap",
    );
    assert!(sh(vm, "rio stats").contains("bytes written back  0"));
}

#[test]
fn the_crash_kernel_writes_everything_back_before_power_is_lost() {
    let (cfg, _dir) = with_disk("safe-sync-power");
    let mut vm = Vm::start(cfg).unwrap();
    arm(&mut vm);
    vm.panic().unwrap();
    vm.wait_console("rio-crash: saved", Duration::from_secs(120))
        .unwrap();
    let console = vm.console();
    assert!(
        console.contains("rio-crash: crash kernel up"),
        "{}",
        vm.console_tail(40)
    );
    // Power fails the moment the crash kernel is done: the arena is gone, the disk stays.
    power_cut_then_everything_is_on_the_disk(vm);
}

/// Cuts the power (the RAM file is discarded), cold-boots, and checks that both objects
/// `arm` wrote come back from the backing disk alone.
fn power_cut_then_everything_is_on_the_disk(vm: Vm) {
    let cfg = vm.kill().unwrap();
    riovm::discard_ram(&cfg).unwrap();
    let mut vm = Vm::start(cfg).unwrap();
    sh(&mut vm, "rio-load backing=/dev/vda");
    assert!(sh(&mut vm, "dmesg").contains("restored 2 objects from backing device"));
    sh(&mut vm, "rio-check verify a --seed 31 --size 1500000");
    sh(&mut vm, "rio-check verify m --seed 32 --size 300000");
}

#[test]
fn after_a_safe_sync_the_next_boot_says_so() {
    let (cfg, _dir) = with_disk("safe-sync-report");
    let mut vm = Vm::start(cfg).unwrap();
    arm(&mut vm);
    vm.panic().unwrap();
    // The crash kernel runs no agent: the next agent is the normal kernel's, after the
    // crash kernel has rebooted the machine (warm: RAM kept).
    vm.wait_reboot(Duration::from_secs(180)).unwrap();
    assert!(
        vm.console().contains("rio-crash: saved"),
        "{}",
        vm.console_tail(40)
    );
    sh(&mut vm, "rio-load backing=/dev/vda");
    let dmesg = sh(&mut vm, "dmesg");
    assert!(
        dmesg.contains("the last crash was saved by the crash kernel"),
        "{dmesg}"
    );
    sh(&mut vm, "rio-check verify a --seed 31 --size 1500000");
    sh(&mut vm, "rio-check verify m --seed 32 --size 300000");
}

/// A hang is a crash too: a CPU spinning with preemption off (a soft lockup, reported after
/// 2 x `watchdog_thresh` = 40 s) or with interrupts off (a hard lockup, which the buddy CPU
/// reports after 20 s) panics the kernel (`qemu/kernel.config`), the panic boots the crash
/// kernel, and it writes every dirty page back: a power cut right after loses nothing.
/// Before the detectors were configured, such a guest hung until the harness reset it, and
/// with the RAM gone every write since the last writeback was lost.
///
/// Only `make test-long` runs it (scripts/test.sh, LONG_ONLY), with preemption off and
/// with interrupts off; run by hand without `RIO_TEST_LONG` it does the first only (each
/// takes a minute or more under TCG).
#[test]
fn a_hung_cpu_becomes_a_panic_that_the_crash_kernel_saves() {
    let classes: &[(&str, &str)] = if std::env::var_os("RIO_TEST_LONG").is_some() {
        &[("hang", "soft lockup"), ("hang-irq", "hard LOCKUP")]
    } else {
        &[("hang", "soft lockup")]
    };
    for &(class, report) in classes {
        let (cfg, dir) = with_disk(&format!("safe-sync-{class}"));
        // The lockup report, and what the hung CPU makes others print while it lasts.
        dir.allow(&[
            report,
            "Kernel panic",
            "INFO: task",
            "blocked for more than",
        ]);
        let mut vm = Vm::start(cfg).unwrap();
        arm(&mut vm);
        vm.spawn(&format!("rio-check inject {class} --seed 1"))
            .unwrap();
        vm.wait_console("rio-crash: saved", Duration::from_secs(240))
            .unwrap_or_else(|e| panic!("{class}: the hang did not end in safe sync: {e}"));
        let console = vm.console();
        // Whichever detector fires first: the lockup detector (40 s soft, 20 s hard, as
        // the hung CPU's own timer or its buddy sees it) or the hung-task detector (30 s),
        // for the CPU's kworker that can no longer run. Under TCG both land 60 to 70 s in,
        // in either order. Either way the hang became a panic.
        assert!(
            console.contains(report) || console.contains("hung_task: blocked tasks"),
            "{class}: no lockup or hung-task panic: {}",
            vm.console_tail(60)
        );
        power_cut_then_everything_is_on_the_disk(vm);
    }
}
