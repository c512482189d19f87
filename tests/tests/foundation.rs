//! Foundation: the guest boots, the agent works, crashes and reboots behave, rio.ko loads
//! with good parameters, refuses bad ones, and unloads.

use std::time::Duration;

use rio_qemu_tests::*;

#[test]
fn guest_boots_and_runs_commands() {
    let mut t = boot("boot");
    let vm = t.vm();
    assert!(sh(vm, "uname -r").contains("rio"), "the test kernel runs");
    let out = vm.run("echo out; echo err >&2; exit 3").unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
    // Binary output survives the serial channel.
    let out = vm.run("printf '\\000\\001\\377\\n\\r'").unwrap();
    assert_eq!(out.stdout, b"\x00\x01\xff\n\r");
    // The kernel is the Rust-enabled one.
    assert!(sh(vm, "cat /proc/cmdline").contains("memmap="));
}

#[test]
fn a_hung_command_times_out() {
    let mut t = boot("timeout");
    let err = t
        .vm()
        .run_timeout("sleep 30", Duration::from_secs(2))
        .unwrap_err();
    assert!(matches!(err, VmError::Timeout { .. }), "{err}");
}

#[test]
fn arena_is_reserved_and_outside_system_ram() {
    let mut t = boot("iomem");
    let a = ArenaReservation::DEFAULT;
    let iomem = sh(t.vm(), "cat /proc/iomem");
    let want = format!("{:08x}-{:08x} : Reserved", a.phys, a.phys + a.size - 1);
    assert!(iomem.contains(&want), "{want} missing from:\n{iomem}");
}

#[test]
fn rio_loads_creates_dev_rio_and_unloads() {
    let mut t = boot("load");
    let vm = t.vm();
    load_rio(vm);
    assert!(sh(vm, "dmesg").contains("rio: arena 0x18000000..0x1c000000"));
    assert!(
        sh(vm, "ls -l /dev/rio").starts_with('c'),
        "/dev/rio is a char device"
    );
    let status = sh(vm, "rio status");
    assert!(
        status.contains("0x18000000..0x1c000000 (64.0 MiB)"),
        "{status}"
    );
    sh(vm, "rmmod rio");
    assert_ne!(
        vm.run("test -e /dev/rio").unwrap().status,
        0,
        "/dev/rio is gone"
    );
    assert!(sh(vm, "dmesg").contains("rio: unloaded"));
    // A second load works after the unload.
    load_rio(vm);
    sh(vm, "rio status && rmmod rio");
}

#[test]
fn bad_parameters_are_refused_and_the_guest_survives() {
    let mut t = boot("badparams");
    let vm = t.vm();
    let cases = [
        ("", "no arena given"),
        ("arena_phys=0x18000000", "arena_size is zero"),
        ("arena_size=0x4000000", "arena_phys is missing"),
        (
            "arena_phys=0x18000100 arena_size=0x4000000",
            "not page aligned",
        ),
        (
            "arena_phys=0x18000000 arena_size=0x4000100",
            "not page aligned",
        ),
        ("arena_phys=0x18000000 arena_size=0x1000", "too small"),
        (
            "arena_phys=0x1000000 arena_size=0x100000",
            "overlaps System RAM",
        ),
        (
            "arena_phys=0x17f00000 arena_size=0x4000000",
            "overlaps System RAM",
        ),
        (
            "arena_phys=0x100000000 arena_size=0x100000",
            "not entirely reserved",
        ),
        // Runs past the reservation into the RAM above it.
        (
            "arena_phys=0x18000000 arena_size=0x8000000",
            "overlaps System RAM",
        ),
        // Past the end of guest memory: nothing there at all.
        (
            "arena_phys=0x40000000 arena_size=0x100000",
            "not entirely reserved",
        ),
        (
            "arena_phys=0xfffffffffffff000 arena_size=0x100000",
            "wraps around",
        ),
    ];
    for (params, why) in cases {
        sh(vm, "dmesg -c >/dev/null");
        let out = vm
            .run(&format!("insmod /lib/modules/rio.ko {params}"))
            .unwrap();
        assert_ne!(out.status, 0, "insmod {params:?} must fail");
        assert!(
            out.stderr_str().to_lowercase().contains("invalid"),
            "insmod {params:?} fails with EINVAL: {}",
            out.stderr_str()
        );
        let dmesg = sh(vm, "dmesg");
        // busybox insmod retries init_module after finit_module fails, so the same line
        // can appear twice: count distinct messages (without timestamps).
        let mut rio_lines: Vec<&str> = dmesg
            .lines()
            .filter_map(|l| l.split_once("] ").map(|(_, m)| m))
            .filter(|m| m.starts_with("rio: ") && !m.contains("taints kernel"))
            .collect();
        rio_lines.dedup();
        assert_eq!(rio_lines.len(), 1, "one clear line for {params:?}: {dmesg}");
        assert!(
            rio_lines[0].contains(why),
            "{params:?}: want {why:?} in {dmesg}"
        );
        assert_ne!(vm.run("test -e /dev/rio").unwrap().status, 0);
        assert_eq!(sh(vm, "echo alive"), "alive\n");
    }
    // Still loads with the right parameters afterwards.
    load_rio(vm);
    sh(vm, "rio status");
}

#[test]
fn panic_then_warm_reboot_in_the_same_qemu() {
    let mut t = boot("panic");
    let vm = t.vm();
    let first = vm.boot_id().to_string();
    vm.panic().unwrap();
    vm.wait_console("Kernel panic", Duration::from_secs(30))
        .unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    assert_ne!(vm.boot_id(), first);
    assert_eq!(vm.boots(), 2);
    assert_eq!(sh(vm, "echo back"), "back\n");
}

#[test]
fn system_reset_restart_and_cold_boot() {
    let (cfg, dir) = config("reset");
    let mut vm = Vm::start(cfg).unwrap();
    let first = vm.boot_id().to_string();
    vm.system_reset().unwrap();
    assert_ne!(vm.boot_id(), first);
    // A new QEMU process on the same RAM file, then one on fresh RAM.
    let cfg = vm.kill().unwrap();
    assert!(cfg.ram_file.exists(), "the RAM file outlives QEMU");
    let mut vm = Vm::start(cfg).unwrap();
    assert_eq!(sh(&mut vm, "echo warm"), "warm\n");
    let cfg = vm.kill().unwrap();
    riovm::discard_ram(&cfg).unwrap();
    assert!(!cfg.ram_file.exists());
    let mut vm = Vm::start(cfg).unwrap();
    assert_eq!(sh(&mut vm, "echo cold"), "cold\n");
    drop(vm);
    drop(dir);
}

/// A runner that dies without dropping its `Vm` (killed by a timeout, say) leaves no QEMU
/// behind: QEMU dies with the thread that started it.
#[test]
fn a_guest_dies_with_the_thread_that_started_it() {
    let (cfg, dir) = config("orphan");
    let workdir = dir.path().to_string_lossy().into_owned();
    std::thread::spawn(move || std::mem::forget(Vm::start(cfg).unwrap()))
        .join()
        .unwrap();
    let running = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&workdir))
                .unwrap_or(false)
        })
    };
    let t = std::time::Instant::now();
    while running() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "QEMU outlived the thread that started it"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
