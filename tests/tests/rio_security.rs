//! rio.ko under attack by local users: one regression test per point of the hardening
//! issue (README, "Security model"). Each failed on the module before the hardening (the
//! commit that added this file says how); all run on the debug kernel in `make test`, where
//! any lockdep or KASAN report fails them too.

use std::time::Duration;

use rio_format::{
    DiskEntry, ObjectSlot, DISK_ENTRY_SIZE, DISK_TABLE_START, PAGE_SIZE, SLOT_COPY_SIZE,
};
use rio_qemu_tests::*;

const MIB: u64 = 1 << 20;

fn load(vm: &mut Vm, params: &str) {
    sh(vm, &format!("rio-load {params}"));
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
}

/// Runs `cmd` as uid 1000 (user `rio`), returning its output (success or not).
fn as_user(vm: &mut Vm, cmd: &str) -> CmdOutput {
    vm.run(&format!("su rio -c \"{}\"", cmd.replace('"', "\\\"")))
        .unwrap()
}

fn assert_refused(out: &CmdOutput, needle: &str) {
    assert_ne!(out.status, 0, "must be refused: {}", out.stdout_str());
    assert!(
        out.stderr_str().contains(needle),
        "expected {needle:?} in: {}",
        out.stderr_str()
    );
}

fn verify(vm: &mut Vm, name: &str, seed: u64, size: u64) {
    sh(
        vm,
        &format!("rio-check verify {name} --seed {seed} --size {size}"),
    );
}

fn with_disk(name: &str, disk_mib: u64) -> (VmConfig, TestDir) {
    config_with_disk(name, disk_mib)
}

/// Point 1. One thread `pread`s into freshly mapped (not yet faulted) buffers while
/// another maps and unmaps the object. The old module copied to user memory under the
/// store's mutex, which `mmap` takes under `mmap_lock`: an ABBA deadlock within seconds.
#[test]
fn pread_into_fresh_buffers_races_mmap_without_deadlock() {
    let mut t = boot("sec-deadlock");
    let vm = t.vm();
    load(vm, "");
    sh(vm, "rio-check write r --seed 5 --size 131072");
    let out = vm
        .run_timeout(
            "rio-check race-mmap r --seconds 8",
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("the race hung the module: {e}"));
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    assert!(out.stdout_str().contains("no hang"), "{}", out.stdout_str());
    // And the data is untouched, the module still serves everyone.
    verify(vm, "r", 5, 131072);
    // The slow path ran and its counter says so: pread into non-resident pages bounces.
    let stats = sh(vm, "rio stats");
    let slow_reads: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("slow-path reads"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no slow-path read counter: {stats}"));
    assert!(
        slow_reads > 0,
        "the race must have taken the bounce path: {stats}"
    );
}

/// Point 2. Inside `unshare -Ur` an ordinary user is uid 0 to itself but must stay uid
/// 1000 to rio.ko: no access to others' objects, no format, and what it creates is 1000's.
#[test]
fn uid_0_in_a_user_namespace_is_not_root_to_rio() {
    let mut t = boot("sec-userns");
    let vm = t.vm();
    load(vm, "");
    sh(vm, "rio create private 4096 --mode 600");
    let ns = |vm: &mut Vm, cmd: &str| as_user(vm, &format!("unshare -Ur sh -c 'id -u; {cmd}'"));
    let out = ns(vm, "true");
    assert_eq!(
        out.stdout_str().trim(),
        "0",
        "the namespace makes the user uid 0: {}",
        out.stderr_str()
    );
    assert_refused(&ns(vm, "rio cat private"), "permission denied");
    assert_refused(&ns(vm, "rio rm private"), "permission denied");
    assert_refused(&ns(vm, "rio format --force"), "CAP_SYS_ADMIN");
    // Its own objects belong to uid 1000 outside, and to its uid 0 inside.
    let out = ns(vm, "rio create mine 4096 && rio ls -l");
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    let inside = out.stdout_str();
    let line = inside
        .lines()
        .find(|l| l.ends_with(" mine"))
        .unwrap_or_else(|| panic!("{inside}"));
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{inside}");
    let line = inside
        .lines()
        .find(|l| l.ends_with(" private"))
        .unwrap_or_else(|| panic!("{inside}"));
    assert_eq!(
        line.split_whitespace().nth(1),
        Some("65534"),
        "unmapped owners show as the overflow uid: {inside}"
    );
    let outside = sh(vm, "rio ls -l");
    let line = outside
        .lines()
        .find(|l| l.ends_with(" mine"))
        .unwrap_or_else(|| panic!("{outside}"));
    assert_eq!(line.split_whitespace().nth(1), Some("1000"), "{outside}");
    assert!(sh(vm, "rio ls").contains("private"));
}

/// Point 3. The privileged operations: the debug wild store (with allow_wild_store=1 the
/// old module let uid 1000 panic the kernel), block devices (their contents are parsed by
/// root's tools), an exclusive open with mere read permission (it locked the owner out),
/// and sync (a non-administrator writes back only its own objects).
#[test]
fn privileged_operations_need_cap_sys_admin() {
    let (cfg, dir) = with_disk("sec-priv", 80);
    let vm = Vm::start(cfg).unwrap();
    let mut t = test_vm(vm, dir);
    let vm = t.vm();
    load(vm, "backing=/dev/vda allow_wild_store=1 writeback_ms=0");
    let first_data = {
        let g = rio_format::Geometry::for_size(ArenaReservation::DEFAULT.size).unwrap();
        u64::from(g.data_start) * PAGE_SIZE as u64
    };
    let out = vm
        .run_timeout(
            &format!("su rio -c 'rio wild-store {first_data}'"),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("a user's wild store crashed the guest: {e}"));
    assert_refused(&out, "CAP_SYS_ADMIN");
    assert_eq!(sh(vm, "echo alive"), "alive\n");
    // Block devices.
    assert_refused(
        &as_user(vm, "rio create fs 1M && rio blkdev add fs"),
        "CAP_SYS_ADMIN",
    );
    assert_eq!(sh(vm, "ls /dev | grep -c riob || true").trim(), "0");
    sh(
        vm,
        "rio create rootfs 1M --mode 644 && rio blkdev add rootfs",
    );
    assert_refused(&as_user(vm, "rio blkdev rm rootfs"), "CAP_SYS_ADMIN");
    sh(vm, "rio blkdev rm rootfs");
    // Exclusive open needs the right to write.
    sh(vm, "rio create shared 4096 --mode 644");
    assert_refused(
        &as_user(
            vm,
            "rio-check hold shared --exclusive --read-only --seconds 0",
        ),
        "permission denied",
    );
    sh(vm, "echo owner | rio put shared");
    // Sync by a user writes back that user's objects only.
    sh(vm, "rio-check write rootdata --seed 3 --size 50000");
    let out = as_user(
        vm,
        "rio-check write userdata --seed 4 --size 50000 && rio sync",
    );
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    let ls = sh(vm, "rio ls -l");
    let dirty = |name: &str| -> u64 {
        let line = ls
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{ls}"));
        let w: Vec<&str> = line.split_whitespace().collect();
        let i = w
            .iter()
            .position(|x| *x == "dirty")
            .unwrap_or_else(|| panic!("{line}"));
        w[i - 1].parse().unwrap()
    };
    assert_eq!(
        dirty("userdata"),
        0,
        "the user's own object was written back: {ls}"
    );
    assert!(
        dirty("rootdata") > 0,
        "root's object was not the user's to sync: {ls}"
    );
}

/// Point 4. Per-user limits: a user cannot take every slot or the whole arena; root can
/// still work when a user has hit the limit.
#[test]
fn per_user_limits_keep_one_user_from_taking_the_arena() {
    let mut t = boot("sec-limits");
    let vm = t.vm();
    load(vm, "max_user_objects=3");
    let out = as_user(
        vm,
        "rio create u1 4096 && rio create u2 4096 && rio create u3 4096",
    );
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    assert_refused(&as_user(vm, "rio create u4 4096"), "quota");
    assert_refused(&as_user(vm, "rio rm u3 && rio create big 40M"), "quota");
    // 40 MiB is over the default share (half of the 64 MiB arena) of one user, not over
    // what root may do.
    sh(vm, "rio create big 40M && rio create r1 4096");
    // Growing counts too.
    assert_refused(
        &as_user(vm, "rio create grow 4096 && rio resize grow 33M"),
        "quota",
    );
    let dmesg = sh(vm, "dmesg");
    assert!(!dmesg.contains("Call Trace"), "{dmesg}");
}

/// Point 5. After a power loss the arena is restored from the disk; when the restore
/// cannot finish (here: the objects no longer fit a smaller arena), the disk must stay as
/// it was and the arena blank. The old module left a valid arena with the disk's identity,
/// and the next load's writeback wrote empty entries over every object not restored.
#[test]
fn a_failed_restore_leaves_the_disk_as_it_was() {
    let (mut cfg, dir) = with_disk("sec-restore", 80);
    let mut vm = Vm::start(cfg.clone()).unwrap();
    load(&mut vm, "backing=/dev/vda");
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        sh(
            &mut vm,
            &format!(
                "rio-check write {name} --seed {} --size {}",
                20 + i,
                12 * MIB
            ),
        );
    }
    sh(&mut vm, "rmmod rio");
    drop(vm.kill().unwrap());
    let disk_before = std::fs::read(&cfg.disks[0].path).unwrap();
    // Power loss, then a boot with half the arena: the three objects no longer fit.
    riovm::discard_ram(&cfg).unwrap();
    cfg.arena = Some(ArenaReservation {
        size: 32 * MIB,
        ..ArenaReservation::DEFAULT
    });
    let mut vm = Vm::start(cfg.clone()).unwrap();
    for attempt in 0..2 {
        let out = vm.run("rio-load backing=/dev/vda").unwrap();
        assert_ne!(out.status, 0, "attempt {attempt}: the restore cannot fit");
        let dmesg = sh(&mut vm, "dmesg");
        assert!(
            dmesg.contains("the disk is unchanged and the arena is blank again"),
            "{dmesg}"
        );
    }
    drop(vm.kill().unwrap());
    assert!(
        std::fs::read(&cfg.disks[0].path).unwrap() == disk_before,
        "a failed restore must not write to the disk"
    );
    // Power loss again, the right arena size: everything comes back.
    riovm::discard_ram(&cfg).unwrap();
    cfg.arena = Some(ArenaReservation::DEFAULT);
    let vm = Vm::start(cfg).unwrap();
    let mut t = test_vm(vm, dir);
    let vm = t.vm();
    sh(vm, "rio-load backing=/dev/vda");
    assert!(sh(vm, "dmesg").contains("restored 3 objects"));
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        verify(vm, name, 20 + i as u64, 12 * MIB);
    }
}

fn disk_entry_at(disk: &[u8], idx: usize) -> DiskEntry {
    let at = DISK_TABLE_START as usize * PAGE_SIZE + idx * DISK_ENTRY_SIZE;
    DiskEntry::decode(&disk[at..at + DISK_ENTRY_SIZE]).unwrap()
}

fn put_disk_entry(disk: &mut [u8], idx: usize, e: &DiskEntry) {
    let at = DISK_TABLE_START as usize * PAGE_SIZE + idx * DISK_ENTRY_SIZE;
    e.encode(&mut disk[at..at + DISK_ENTRY_SIZE]);
}

/// Point 6, the disk: entries read back after a power loss are untrusted. An extent that
/// overlaps another, one whose start overflows the block arithmetic (a panic under the
/// kernel's Rust overflow checks in the old module) are each quarantined with one dmesg
/// line, left on the disk as found, and everything else is restored.
#[test]
fn bad_disk_entries_are_quarantined_and_the_rest_restored() {
    let (cfg, dir) = with_disk("sec-disk", 80);
    let disk_path = cfg.disks[0].path.clone();
    let mut vm = Vm::start(cfg.clone()).unwrap();
    load(&mut vm, "backing=/dev/vda");
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        sh(
            &mut vm,
            &format!("rio-check write {name} --seed {} --size 100000", 30 + i),
        );
    }
    sh(&mut vm, "rmmod rio");
    drop(vm.kill().unwrap());
    let mut disk = std::fs::read(&disk_path).unwrap();
    let a = disk_entry_at(&disk, 0);
    let mut b = disk_entry_at(&disk, 1);
    let mut c = disk_entry_at(&disk, 2);
    assert!(
        a.in_use() && b.in_use() && c.in_use(),
        "slots 0..3 hold a, b, c"
    );
    b.start = a.start + 1; // overlaps a
    c.start = u64::MAX - 3; // start + i overflows
    put_disk_entry(&mut disk, 1, &b);
    put_disk_entry(&mut disk, 2, &c);
    std::fs::write(&disk_path, &disk).unwrap();
    let table = |d: &[u8]| {
        let at = DISK_TABLE_START as usize * PAGE_SIZE;
        d[at..at + 4 * DISK_ENTRY_SIZE].to_vec()
    };
    let table_before = table(&disk);
    riovm::discard_ram(&cfg).unwrap();
    let vm = Vm::start(cfg.clone()).unwrap();
    let mut t = test_vm(vm, dir);
    let vm = t.vm();
    sh(vm, "rio-load backing=/dev/vda");
    let dmesg = sh(vm, "dmesg");
    assert!(dmesg.contains("object entry 0 overlaps"), "{dmesg}");
    assert!(dmesg.contains("object entry 1 overlaps"), "{dmesg}");
    assert!(
        dmesg.contains("object entry 2 points past the end of the disk"),
        "{dmesg}"
    );
    assert!(dmesg.contains("restored 1 objects"), "{dmesg}");
    verify(vm, "d", 33, 100000);
    // New objects do not take the quarantined slots, and writeback leaves their entries.
    sh(
        vm,
        "rio create x 8192 && rio create y 8192 && rio sync && rmmod rio",
    );
    drop(t.vm.take().map(|v| v.kill()));
    let disk_after = std::fs::read(&disk_path).unwrap();
    assert!(
        table(&disk_after)[..3 * DISK_ENTRY_SIZE] == table_before[..3 * DISK_ENTRY_SIZE],
        "quarantined entries are left as found"
    );
}

/// Reads, edits and writes back the current copy of object slot `idx` in a guest RAM file.
fn edit_slot(ram: &mut [u8], idx: usize, f: impl FnOnce(&mut ObjectSlot)) {
    let arena = ArenaReservation::DEFAULT.phys as usize;
    let at = arena + PAGE_SIZE + idx * 2 * SLOT_COPY_SIZE;
    let (a, b) = (
        ObjectSlot::decode(&ram[at..at + SLOT_COPY_SIZE]).unwrap(),
        ObjectSlot::decode(&ram[at + SLOT_COPY_SIZE..at + 2 * SLOT_COPY_SIZE]).unwrap(),
    );
    let (mut s, off) = if b.seq > a.seq {
        (b, SLOT_COPY_SIZE)
    } else {
        (a, 0)
    };
    f(&mut s);
    s.encode(&mut ram[at + off..at + off + SLOT_COPY_SIZE]);
}

/// Point 6, the arena: a slot whose size is larger than the arena (with a valid checksum:
/// a wild store that happened to write a consistent slot) made the old module refuse the
/// whole arena; a second slot with the same name was accepted. Each is quarantined now,
/// and the other objects are served.
#[test]
fn a_bad_arena_slot_is_quarantined_and_the_rest_served() {
    let (cfg, dir) = config("sec-slot");
    let mut vm = Vm::start(cfg.clone()).unwrap();
    load(&mut vm, "");
    sh(&mut vm, "rio-check write good --seed 41 --size 50000");
    sh(&mut vm, "rio-check write huge --seed 42 --size 50000");
    sh(&mut vm, "rio-check write twin --seed 43 --size 50000");
    let cfg = vm.kill().unwrap();
    let mut ram = std::fs::read(&cfg.ram_file).unwrap();
    edit_slot(&mut ram, 1, |s| s.size = 1 << 40);
    edit_slot(&mut ram, 2, |s| {
        s.name = rio_format::encode_name(b"good").unwrap()
    });
    std::fs::write(&cfg.ram_file, &ram).unwrap();
    let vm = Vm::start(cfg).unwrap();
    let mut t = test_vm(vm, dir);
    let vm = t.vm();
    sh(vm, "rio-load");
    let dmesg = sh(vm, "dmesg");
    assert!(
        dmesg.contains("object slot 1: size 1099511627776 is larger than the arena"),
        "{dmesg}"
    );
    assert!(
        dmesg.contains("object slot 2: a second object of the same name"),
        "{dmesg}"
    );
    assert_eq!(sh(vm, "rio ls"), "good\n");
    verify(vm, "good", 41, 50000);
}

/// Point 7. A FORMAT whose disk cannot be written (QEMU's blkdebug fails every write
/// to the disk's first sector) must be all or nothing: refused with a clear message, the
/// arena and its objects untouched and still served, and the disk still accepted by the
/// next load. The old module formatted the arena first, then failed on the disk: the data
/// was gone, every call failed until a reload (the state was left empty), and the next
/// load refused the half-initialised disk.
#[test]
fn a_format_whose_disk_fails_changes_nothing() {
    let (mut cfg, dir) = with_disk("sec-format", 80);
    let mut vm = Vm::start(cfg.clone()).unwrap();
    load(&mut vm, "backing=/dev/vda");
    sh(&mut vm, "rio-check write kept --seed 51 --size 20000");
    sh(&mut vm, "rmmod rio");
    drop(vm.kill().unwrap());
    // The same disk, now failing writes to its superblock's sector.
    cfg.fail_writes_at = Some((0, 0));
    let mut vm = Vm::start(cfg.clone()).unwrap();
    sh(&mut vm, "rio-load backing=/dev/vda writeback_ms=0");
    let out = vm.run("rio format --force").unwrap();
    assert_ne!(out.status, 0, "the format must be refused");
    let dmesg = sh(&mut vm, "dmesg");
    assert!(
        dmesg.contains("format refused: cannot write the backing device"),
        "{dmesg}"
    );
    // Nothing changed, and the service is not stranded.
    verify(&mut vm, "kept", 51, 20000);
    sh(&mut vm, "rio-check write more --seed 52 --size 8192");
    drop(vm.kill().unwrap());
    // A healthy disk again: the next load accepts it, and the data is there.
    cfg.fail_writes_at = None;
    let vm = Vm::start(cfg).unwrap();
    let mut t = test_vm(vm, dir);
    let vm = t.vm();
    sh(vm, "rio-load backing=/dev/vda");
    assert!(!sh(vm, "dmesg").contains("belongs to another arena"));
    verify(vm, "kept", 51, 20000);
    verify(vm, "more", 52, 8192);
}

/// Point 8. Mappings are counted: a read-only user may map read-only (refused before),
/// a shrink is refused while any mapping lives (a read-only one in another process did
/// not stop the old module, which then handed the freed frames to the next object), and
/// the state clears when the last mapping goes (the old sticky flag kept refusing).
#[test]
fn mappings_are_counted_and_guard_shrinking() {
    let mut t = boot("sec-maps");
    let vm = t.vm();
    load(vm, "");
    sh(vm, "rio-check write m --seed 61 --size 65536");
    let out = as_user(vm, "rio-check hold m --read-only --map --seconds 0");
    assert_eq!(
        out.status,
        0,
        "a read-only user maps read-only: {}",
        out.stderr_str()
    );
    // A read-only mapping held by another user's process blocks shrinking.
    vm.spawn("su rio -c 'rio-check hold m --read-only --map --seconds 600'")
        .unwrap();
    sh(
        vm,
        "until rio ls -l | grep -q ' 1 open m'; do sleep 0.1; done",
    );
    assert_refused(&vm.run("rio resize m 4096").unwrap(), "busy");
    sh(
        vm,
        "killall rio-check; until rio ls -l | grep -q ' 0 open m'; do sleep 0.1; done",
    );
    // A writable mapping inherited by a child: the parent is gone, the child's copy counts.
    // (The child keeps its output open: detach it, or the agent waits for it.)
    sh(
        vm,
        "rio-check hold m --write --map --fork --seconds 600 </dev/null >/dev/null 2>&1",
    );
    assert!(sh(vm, "rio ls -l").contains("mapped"));
    assert_refused(&vm.run("rio resize m 4096").unwrap(), "busy");
    sh(
        vm,
        "killall rio-check; until rio ls -l | grep -q ' 0 open m'; do sleep 0.1; done",
    );
    // The last mapping went: no mark, and shrinking works.
    assert!(
        !sh(vm, "rio ls -l").contains("mapped"),
        "the mapped state clears with the last mapping"
    );
    sh(vm, "rio resize m 4096");
    sh(vm, "rio-check verify m --seed 61 --size 4096");
}

/// The disk-entry test edits entries written by the module: check the host's reading of
/// the format agrees with golden bytes first, so a format change cannot make it vacuous.
#[test]
fn disk_entry_golden_bytes() {
    let e = DiskEntry {
        slot: ObjectSlot {
            seq: 0,
            flags: 1,
            name: rio_format::encode_name(b"a").unwrap(),
            size: 4096,
            uid: 0,
            gid: 0,
            mode: 0o644,
        },
        start: 7,
        blocks: 1,
    };
    let mut b = [0u8; DISK_ENTRY_SIZE];
    e.encode(&mut b);
    assert_eq!(
        &b[0..8],
        &7u64.to_le_bytes(),
        "the extent start rides in the slot's sequence field"
    );
    assert_eq!(b[12], b'a');
    assert_eq!(&b[76..84], &4096u64.to_le_bytes());
    assert_eq!(&b[96..104], &1u64.to_le_bytes());
    assert_eq!(DiskEntry::decode(&b).unwrap(), e);
}
