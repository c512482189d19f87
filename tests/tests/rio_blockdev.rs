//! A block device per object: ext4 on Rio memory survives kernel crashes; a crash right
//! after fsync returns loses nothing; devices come back with their objects; busy rules.

use std::time::Duration;

use rio_qemu_tests::*;

fn load(vm: &mut Vm) {
    sh(vm, "rio-load");
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
}

/// md5 sums of the files written by `fill`.
fn sums(vm: &mut Vm) -> String {
    sh(vm, "cd /mnt && md5sum small big dir/*")
}

fn fill(vm: &mut Vm) {
    sh(
        vm,
        "mkdir -p /mnt/dir && echo 'hello rio' > /mnt/small && \
         dd if=/dev/urandom of=/mnt/big bs=4k count=300 2>/dev/null && \
         for i in 1 2 3 4 5; do dd if=/dev/urandom of=/mnt/dir/f$i bs=1k count=$((i*7)) 2>/dev/null; done && \
         sync",
    );
}

#[test]
fn ext4_on_rio_survives_a_kernel_panic_and_fscks_clean() {
    let mut t = boot("blk-ext4");
    let vm = t.vm();
    load(vm);
    sh(vm, "rio create fs 32M");
    assert_eq!(sh(vm, "rio blkdev add fs"), "/dev/riob0\n");
    sh(vm, "mkfs.ext4 -q /dev/riob0 && mount /dev/riob0 /mnt");
    fill(vm);
    let before = sums(vm);
    // One more file, fsync'd, and the kernel dies right after fsync returns.
    sh(
        vm,
        "dd if=/dev/urandom of=/mnt/last bs=4k count=10 conv=fsync 2>/dev/null",
    );
    let last = sh(vm, "md5sum /mnt/last");
    vm.panic().unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    sh(vm, "rio-load");
    assert!(sh(vm, "dmesg").contains("block device /dev/riob0 is back"));
    let fsck = vm.run("fsck.ext4 -fn /dev/riob0").unwrap();
    assert_eq!(
        fsck.status,
        0,
        "fsck is clean: {}{}",
        fsck.stdout_str(),
        fsck.stderr_str()
    );
    sh(vm, "mount /dev/riob0 /mnt");
    assert_eq!(sums(vm), before, "every file is intact");
    assert_eq!(
        sh(vm, "md5sum /mnt/last"),
        last,
        "the fsync'd file is intact"
    );
}

#[test]
fn block_devices_follow_the_busy_rules() {
    let mut t = boot("blk-busy");
    let vm = t.vm();
    load(vm);
    sh(vm, "rio create fs 8M && rio create odd 10000");
    let out = vm.run("rio blkdev add odd").unwrap();
    assert!(
        out.stderr_str().contains("whole number of 4 KiB blocks"),
        "{}",
        out.stderr_str()
    );
    sh(
        vm,
        "rio blkdev add fs && mkfs.ext4 -q /dev/riob0 && mount /dev/riob0 /mnt",
    );
    let out = vm.run("rio blkdev add fs").unwrap();
    assert!(
        out.stderr_str().contains("already has a block device"),
        "{}",
        out.stderr_str()
    );
    let out = vm.run("rio blkdev rm fs").unwrap();
    assert!(
        out.stderr_str().contains("open or mounted"),
        "{}",
        out.stderr_str()
    );
    let out = vm.run("rio rm fs").unwrap();
    assert!(out.stderr_str().contains("busy"), "{}", out.stderr_str());
    let out = vm.run("rmmod rio").unwrap();
    assert_ne!(out.status, 0, "rio.ko stays while a block device exists");
    assert_eq!(sh(vm, "rio blkdev ls"), "/dev/riob0 fs 8388608\n");
    sh(
        vm,
        "umount /mnt && rio blkdev rm fs && rio rm fs && rmmod rio",
    );
    assert_ne!(vm.run("test -e /dev/riob0").unwrap().status, 0);
}

#[test]
fn a_block_device_gets_its_data_written_back() {
    let (mut cfg, dir) = config("blk-wb");
    let disk = dir.path().join("backing.img");
    riovm::create_disk(&disk, 80 << 20).unwrap();
    cfg.disks.push(riovm::Disk { path: disk.clone() });
    let mut vm = Vm::start(cfg).unwrap();
    sh(
        &mut vm,
        "rio-load backing=/dev/vda writeback_ms=0 && rio format",
    );
    sh(&mut vm, "rio create fs 8M && rio blkdev add fs");
    // 256 KiB of random data at block 100 of the device.
    sh(
        &mut vm,
        "dd if=/dev/urandom of=/tmp/r bs=4k count=64 2>/dev/null",
    );
    sh(
        &mut vm,
        "dd if=/tmp/r of=/dev/riob0 bs=4k seek=100 conv=fsync 2>/dev/null",
    );
    let data = vm.run("cat /tmp/r").unwrap().stdout;
    assert_eq!(data.len(), 64 * 4096);
    sh(&mut vm, "rio sync");
    let _ = vm.kill().unwrap();
    let image = std::fs::read(&disk).unwrap();
    let got = golden_disk::disk_object(&image, "fs").expect("the object is on the disk");
    assert_eq!(got.len(), 8 << 20);
    assert!(
        got[100 * 4096..164 * 4096] == data[..],
        "the device's bytes reached the disk"
    );
    assert!(
        got[..100 * 4096].iter().all(|&b| b == 0),
        "and nothing else changed"
    );
}
