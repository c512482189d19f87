//! rio.ko core: data written with pwrite survives kernel panics, hard resets and new QEMU
//! processes (warm reboot with the same RAM); protection turns wild stores into oopses;
//! bad input gets clear errors and loses nothing.

use std::time::Duration;

use rio_qemu_tests::*;

const MIB: u64 = 1 << 20;

/// Loads rio.ko (with extra parameters) and formats the arena if it is blank.
fn load(vm: &mut Vm, params: &str) {
    sh(vm, &format!("rio-load {params}"));
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
}

fn write(vm: &mut Vm, name: &str, seed: u64, size: u64) {
    sh(
        vm,
        &format!("rio-check write {name} --seed {seed} --size {size}"),
    );
}

fn verify(vm: &mut Vm, name: &str, seed: u64, size: u64) -> CmdOutput {
    vm.run(&format!(
        "rio-check verify {name} --seed {seed} --size {size}"
    ))
    .unwrap()
}

fn assert_intact(vm: &mut Vm, name: &str, seed: u64, size: u64) {
    let out = verify(vm, name, seed, size);
    assert_eq!(
        out.status,
        0,
        "{name}: {}{}",
        out.stdout_str(),
        out.stderr_str()
    );
}

/// Byte offset of the first data page in the default arena.
fn first_data_byte() -> u64 {
    let g = rio_format::Geometry::for_size(ArenaReservation::DEFAULT.size).unwrap();
    u64::from(g.data_start) * rio_format::PAGE_SIZE as u64
}

#[test]
fn pwrite_survives_a_kernel_panic_and_warm_reboot() {
    let mut t = boot("panic-data");
    let vm = t.vm();
    load(vm, "");
    write(vm, "big", 1, 3 * MIB + 123);
    write(vm, "small", 2, 10);
    // No sync, no fsync: the write returned, so it must survive.
    vm.panic().unwrap();
    vm.wait_console("Kernel panic", Duration::from_secs(30))
        .unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    sh(vm, "rio-load");
    let dmesg = sh(vm, "dmesg");
    assert!(dmesg.contains("recovered arena after a crash"), "{dmesg}");
    assert_intact(vm, "big", 1, 3 * MIB + 123);
    assert_intact(vm, "small", 2, 10);
    assert!(sh(vm, "rio stats").contains("crash recoveries    1"));
    // Recovery is idempotent: crash again right away, recover again, same result.
    vm.panic().unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    sh(vm, "rio-load");
    assert_intact(vm, "big", 1, 3 * MIB + 123);
    assert!(sh(vm, "rio stats").contains("crash recoveries    2"));
}

#[test]
fn mmap_stores_survive_a_kernel_panic() {
    let mut t = boot("mmap-data");
    let vm = t.vm();
    load(vm, "");
    // Stores through a shared mapping; the process exits without munmap or msync.
    sh(
        vm,
        &format!(
            "rio-check write mapped --seed 21 --size {} --mmap --no-unmap",
            2 * MIB + 5
        ),
    );
    let ls = sh(vm, "rio ls -l");
    assert!(
        ls.contains("mapped"),
        "a writable mapping marks the object: {ls}"
    );
    vm.panic().unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    sh(vm, "rio-load");
    assert_intact(vm, "mapped", 21, 2 * MIB + 5);
    // A shared mapping of a one-page object works and, once unmapped, leaves it resizable.
    let out = vm
        .run("rio-check write small --seed 1 --size 4096 --mmap && rio resize small 4096")
        .unwrap();
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    sh(vm, "rio-check map small --len 4096");
    // A private (copy-on-write) mapping is refused (EINVAL), and so is one that reaches past
    // the object's last page (ENXIO).
    for (cmd, want) in [
        (
            "rio-check map small --len 4096 --private",
            "Invalid argument",
        ),
        (
            "rio-check map small --len 8192",
            "No such device or address",
        ),
        (
            "rio-check map small --len 4096 --offset 4096",
            "No such device or address",
        ),
    ] {
        let out = vm.run(cmd).unwrap();
        assert_ne!(out.status, 0, "{cmd} must fail: {}", out.stdout_str());
        assert!(
            out.stderr_str().contains(want),
            "{cmd}: want {want:?}, got {:?}",
            out.stderr_str()
        );
    }
    assert_intact(vm, "small", 1, 4096);
}

/// `slow-path writes` of `rio stats`: pieces of pwrite copied through a bounce page.
fn slow_path_writes(vm: &mut Vm) -> u64 {
    let stats = sh(vm, "rio stats");
    stats
        .lines()
        .find_map(|l| l.strip_prefix("slow-path writes"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no slow-path writes counter in rio stats:\n{stats}"))
}

#[test]
fn writes_from_non_resident_user_pages_take_the_slow_path_correctly() {
    let mut t = boot("slow-path");
    let vm = t.vm();
    load(vm, "");
    write(vm, "z", 13, 200_000);
    // The source pages are not resident, so the no-sleep copy into the window fails and
    // the write goes through a bounce page (rio.ko counts each such piece); the result
    // must be the same.
    let before = slow_path_writes(vm);
    sh(vm, "rio-check zero z --offset 5000 --len 70000");
    let after = slow_path_writes(vm);
    assert!(
        after > before,
        "the write from an untouched mapping did not take the slow path ({before} -> {after} slow-path writes)"
    );
    sh(
        vm,
        "rio-check verify z --seed 13 --size 200000 --zeroed 5000:70000",
    );
    vm.panic().unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    sh(vm, "rio-load");
    sh(
        vm,
        "rio-check verify z --seed 13 --size 200000 --zeroed 5000:70000",
    );
}

#[test]
fn fsync_returns_at_once() {
    let mut t = boot("fsync");
    let vm = t.vm();
    load(vm, "");
    sh(vm, "rio create f 4096");
    // busybox `sync FILE` calls fsync(2) on it; a misc device without fsync gives EINVAL.
    let out = vm.run("sync /dev/rio").unwrap();
    assert_eq!(
        out.status,
        0,
        "fsync on /dev/rio succeeds: {}",
        out.stderr_str()
    );
}

#[test]
fn pwrite_survives_a_hard_reset_and_a_new_qemu_process() {
    let (cfg, _dir) = config("reset-data");
    let mut vm = Vm::start(cfg).unwrap();
    load(&mut vm, "");
    write(&mut vm, "obj", 5, MIB);
    vm.system_reset().unwrap();
    sh(&mut vm, "rio-load");
    assert_intact(&mut vm, "obj", 5, MIB);
    write(&mut vm, "obj2", 6, 64 << 10);
    // QEMU dies outright; a new process boots on the same RAM file.
    let cfg = vm.kill().unwrap();
    let mut vm = Vm::start(cfg).unwrap();
    sh(&mut vm, "rio-load");
    assert_intact(&mut vm, "obj", 5, MIB);
    assert_intact(&mut vm, "obj2", 6, 64 << 10);
}

#[test]
fn clean_unload_and_reload_keeps_data() {
    let mut t = boot("reload");
    let vm = t.vm();
    load(vm, "");
    write(vm, "keep", 9, 100_000);
    sh(vm, "rmmod rio");
    assert!(sh(vm, "dmesg").contains("rio: arena marked clean"));
    sh(vm, "rio-load");
    assert!(sh(vm, "dmesg").contains("arena was shut down cleanly"));
    assert_intact(vm, "keep", 9, 100_000);
}

#[test]
fn protection_turns_a_wild_store_into_an_oops_and_data_survives() {
    let mut t = boot("wild-on");
    t.allow_crash();
    let vm = t.vm();
    load(vm, "allow_wild_store=1");
    write(vm, "victim", 3, 256 << 10);
    // Without the parameter the debug ioctl is refused.
    let target = first_data_byte() + 100;
    vm.spawn(&format!("sleep 0.2; rio wild-store {target}"))
        .unwrap();
    vm.wait_console("Kernel panic", Duration::from_secs(30))
        .unwrap();
    let console = vm.console();
    assert!(
        console.contains("rio: debug: wild store"),
        "the store was attempted"
    );
    assert!(
        console.contains("BUG: unable to handle page fault") || console.contains("Oops"),
        "the store faulted:\n{}",
        vm.console_tail(40)
    );
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    sh(vm, "rio-load");
    assert_intact(vm, "victim", 3, 256 << 10);
}

#[test]
fn without_protection_the_same_wild_store_corrupts_data() {
    let mut t = boot("wild-off");
    let vm = t.vm();
    load(vm, "protect=0 allow_wild_store=1");
    assert!(sh(vm, "rio status").contains("protection: off"));
    write(vm, "victim", 3, 256 << 10);
    let target = first_data_byte() + 100;
    let out = vm
        .run(&format!("rio wild-store {target} --value 0x5a"))
        .unwrap();
    assert_eq!(
        out.status,
        0,
        "no fault without protection: {}",
        out.stderr_str()
    );
    let out = verify(vm, "victim", 3, 256 << 10);
    assert_eq!(
        out.status,
        3,
        "the store corrupted the object: {}",
        out.stdout_str()
    );
    assert!(
        out.stdout_str().contains("first at offset 100"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn wild_store_ioctl_is_refused_unless_enabled() {
    let mut t = boot("wild-refused");
    let vm = t.vm();
    load(vm, "");
    let out = vm.run("rio wild-store 0x40000").unwrap();
    assert_ne!(out.status, 0);
    assert!(
        out.stderr_str().contains("allow_wild_store=1"),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn bad_input_gets_clear_errors_and_loses_nothing() {
    let mut t = boot("bad-input");
    let vm = t.vm();
    load(vm, "");
    write(vm, "precious", 11, 200_000);
    let cases: &[(&str, &str)] = &[
        ("rio cat nosuch", "no object named \"nosuch\""),
        ("rio create precious 10", "already exists"),
        ("rio create 'a/b' 10", "invalid object name"),
        ("rio create huge 1G", "larger than the whole arena"),
        ("rio create x 10 --mode 999", "not an octal mode"),
        ("rio resize nosuch 10", "no object named"),
        ("rio rm nosuch", "no object named"),
        ("echo hi | rio put precious --offset 200000", "do not fit"),
        ("rio format", "needs --force"),
    ];
    for (cmd, want) in cases {
        let out = vm.run(cmd).unwrap();
        assert_ne!(out.status, 0, "{cmd} must fail");
        assert!(
            out.stderr_str().contains(want),
            "{cmd}: want {want:?}, got {:?}",
            out.stderr_str()
        );
    }
    // A full arena: two objects of 40 MiB do not fit in 64 MiB.
    sh(vm, "rio create first 40M");
    let out = vm.run("rio create second 40M").unwrap();
    assert!(
        out.stderr_str().contains("arena is full"),
        "{}",
        out.stderr_str()
    );
    let out = vm.run("rio resize precious 40M").unwrap();
    assert!(
        out.stderr_str().contains("arena is full"),
        "{}",
        out.stderr_str()
    );
    // A busy (open) object cannot be deleted; once closed, it can.
    vm.spawn("rio-check hold first").unwrap();
    sh(
        vm,
        "until rio ls -l | grep -q ' 1 open'; do sleep 0.1; done",
    );
    let out = vm.run("rio rm first").unwrap();
    assert_ne!(out.status, 0, "rio rm of an open object must fail");
    assert!(out.stderr_str().contains("busy"), "{}", out.stderr_str());
    sh(
        vm,
        "killall rio-check; while rio ls -l | grep -q ' 1 open'; do sleep 0.1; done",
    );
    sh(vm, "rio rm first");
    // Nothing was lost.
    assert_intact(vm, "precious", 11, 200_000);
    assert_eq!(sh(vm, "rio ls"), "precious\n");
}

#[test]
fn permissions_are_enforced() {
    let mut t = boot("perms");
    let vm = t.vm();
    load(vm, "");
    sh(
        vm,
        "rio create private 4096 --mode 600 && rio create public 4096 --mode 644",
    );
    let out = vm.run("su rio -c 'rio cat private'").unwrap();
    assert_ne!(out.status, 0);
    assert!(
        out.stderr_str().contains("permission denied"),
        "{}",
        out.stderr_str()
    );
    // Readable by others, but not writable.
    assert_eq!(
        vm.run("su rio -c 'rio cat public >/dev/null'")
            .unwrap()
            .status,
        0
    );
    let out = vm.run("su rio -c 'echo x | rio put public'").unwrap();
    assert!(
        out.stderr_str().contains("permission denied"),
        "{}",
        out.stderr_str()
    );
    let out = vm.run("su rio -c 'rio rm public'").unwrap();
    assert!(
        out.stderr_str().contains("permission denied"),
        "{}",
        out.stderr_str()
    );
    // A user's own objects are theirs.
    sh(
        vm,
        "su rio -c 'rio create mine 100 && echo ok | rio put mine && rio rm mine'",
    );
}

#[test]
fn a_corrupt_superblock_is_refused_and_left_untouched() {
    let (cfg, _dir) = config("corrupt-sb");
    let mut vm = Vm::start(cfg).unwrap();
    load(&mut vm, "");
    write(&mut vm, "data", 4, 100_000);
    sh(&mut vm, "rmmod rio");
    let cfg = vm.kill().unwrap();
    // The host corrupts both superblock copies in the RAM file (offset = physical address).
    let arena = ArenaReservation::DEFAULT.phys;
    let mut ram = std::fs::read(&cfg.ram_file).unwrap();
    for copy in [0usize, rio_format::SB_COPY_B] {
        ram[arena as usize + copy + 40] ^= 0xff;
    }
    std::fs::write(&cfg.ram_file, &ram).unwrap();
    let before = ram[arena as usize..(arena + ArenaReservation::DEFAULT.size) as usize].to_vec();
    let mut vm = Vm::start(cfg).unwrap();
    sh(&mut vm, "rio-load");
    let dmesg = sh(&mut vm, "dmesg");
    assert!(
        dmesg.contains("refusing arena at 0x18000000: corrupt superblock"),
        "{dmesg}"
    );
    assert!(sh(&mut vm, "rio status").contains("refused"));
    let out = vm.run("rio ls").unwrap();
    assert!(
        out.stderr_str().contains("not in service"),
        "{}",
        out.stderr_str()
    );
    let out = vm.run("rio format").unwrap();
    assert!(out.stderr_str().contains("--force"), "{}", out.stderr_str());
    sh(&mut vm, "rmmod rio");
    let cfg = vm.kill().unwrap();
    let after = std::fs::read(&cfg.ram_file).unwrap();
    assert!(
        after[arena as usize..(arena + ArenaReservation::DEFAULT.size) as usize] == before[..],
        "a refused arena is left exactly as it was"
    );
}

#[test]
fn open_objects_are_busy_and_exclusive_opens_exclude() {
    let mut t = boot("exclusive");
    let vm = t.vm();
    load(vm, "");
    sh(vm, "rio create shared 4096 --mode 644");
    // A plain open blocks deletion and an exclusive open, not other readers.
    vm.spawn("rio-check hold shared").unwrap();
    sh(
        vm,
        "until rio ls -l | grep -q ' 1 open'; do sleep 0.1; done",
    );
    sh(vm, "rio cat shared >/dev/null");
    let out = vm.run("rio rm shared").unwrap();
    assert!(out.stderr_str().contains("busy"), "{}", out.stderr_str());
    let out = vm
        .run("rio-check hold shared --exclusive --seconds 0")
        .unwrap();
    assert!(out.stderr_str().contains("busy"), "{}", out.stderr_str());
    sh(
        vm,
        "killall rio-check; while rio ls -l | grep -q ' 1 open'; do sleep 0.1; done",
    );
    // An exclusive open keeps everyone else out.
    vm.spawn("rio-check hold shared --exclusive").unwrap();
    sh(
        vm,
        "until rio ls -l | grep -q ' 1 open'; do sleep 0.1; done",
    );
    let out = vm.run("rio cat shared").unwrap();
    assert!(out.stderr_str().contains("busy"), "{}", out.stderr_str());
    sh(
        vm,
        "killall rio-check; while rio ls -l | grep -q ' 1 open'; do sleep 0.1; done",
    );
    sh(vm, "rio rm shared");
}
