//! The pmem-dax peer (issue 18): legacy persistent memory (`memmap=SIZE!ADDR`, in the same
//! RAM file as the arena), turned into fsdax mode in the guest, ext4 mounted `-o dax` on
//! it. Files written before a kernel panic come back after the warm reboot, byte for byte
//! as the host wrote them; a cold boot (the RAM file discarded: power loss) takes them
//! with it, and the same check says so (the negative control).

use std::time::Duration;

use rio_qemu_tests::*;

const MNT: &str = "/mnt/pmem";
/// The host's bytes, handed to the guest as a virtio disk (/dev/vda).
const SRC_LEN: usize = 1 << 20;

/// The host's own bytes (a 64-bit LCG, nothing the guest runs).
fn host_bytes(seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..SRC_LEN)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

/// What each file must hold, from the source bytes and the `dd` commands of [`write`].
struct Expected {
    files: Vec<(&'static str, Vec<u8>)>,
}

fn pmem_config(name: &str, src: &[u8]) -> (VmConfig, TestDir) {
    let (cfg, dir) = config(name);
    let mut cfg = cfg.with_pmem();
    let disk = dir.path().join("src.img");
    std::fs::write(&disk, src).expect("write the source image");
    cfg.disks.push(riovm::Disk { path: disk });
    (cfg, dir)
}

/// Sets up fsdax + ext4 -o dax and writes three files from /dev/vda: two with fsync,
/// and an in-place overwrite of the first one without any sync (DAX stores go straight to
/// the persistent memory; the blocks were allocated and committed by the fsync).
fn write(vm: &mut Vm, src: &[u8]) -> Expected {
    let out = sh(vm, &format!("pmem-dax setup {MNT}"));
    assert!(out.contains("mounted -o dax"), "{out}");
    let status = sh(vm, "pmem-dax status");
    assert!(status.contains("mode fsdax"), "{status}");
    sh(
        vm,
        &format!("dd if=/dev/vda of={MNT}/a bs=64k count=4 conv=fsync 2>&1 >/dev/null"),
    );
    sh(
        vm,
        &format!(
            "mkdir {MNT}/d && dd if=/dev/vda of={MNT}/d/b bs=4k skip=64 count=17 conv=fsync 2>&1 >/dev/null"
        ),
    );
    sh(
        vm,
        &format!(
            "dd if=/dev/vda of={MNT}/a bs=4k skip=128 seek=3 count=2 conv=notrunc 2>&1 >/dev/null"
        ),
    );
    // Both are DAX files (statx STATX_ATTR_DAX).
    sh(vm, &format!("rio-check dax {MNT}/a {MNT}/d/b"));
    let mut a = src[..4 * 65536].to_vec();
    a[3 * 4096..5 * 4096].copy_from_slice(&src[128 * 4096..130 * 4096]);
    let b = src[64 * 4096..81 * 4096].to_vec();
    let exp = Expected {
        files: vec![("a", a), ("d/b", b)],
    };
    // Before the crash the guest reads back what the host expects (the check itself works).
    check(vm, &exp).unwrap_or_else(|e| panic!("before the crash: {e}"));
    exp
}

/// Every file's bytes as the guest reads them, against the host's expectation.
fn check(vm: &mut Vm, exp: &Expected) -> Result<(), String> {
    for (name, want) in &exp.files {
        let out = vm
            .run_timeout(&format!("cat {MNT}/{name}"), Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        if out.status != 0 {
            return Err(format!("cat {name}: {}", out.stderr_str().trim()));
        }
        if out.stdout.len() != want.len() {
            return Err(format!(
                "{name}: {} bytes, expected {}",
                out.stdout.len(),
                want.len()
            ));
        }
        if let Some(at) = out.stdout.iter().zip(want).position(|(g, w)| g != w) {
            return Err(format!("{name}: differs from byte {at}"));
        }
    }
    Ok(())
}

/// After a (re)boot: mount the file system again, then check every file.
fn remount_and_check(vm: &mut Vm, exp: &Expected) -> Result<(), String> {
    let out = vm
        .run_timeout(&format!("pmem-dax mount {MNT}"), Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(format!("pmem-dax mount: {}", out.stderr_str().trim()));
    }
    check(vm, exp)
}

fn dmesg_has(vm: &mut Vm, what: &str) -> bool {
    sh(vm, "dmesg").contains(what)
}

#[test]
fn ext4_dax_files_survive_a_kernel_panic_and_warm_reboot() {
    let src = host_bytes(18);
    let (cfg, dir) = pmem_config("pmem-dax-panic", &src);
    dir.allow_crash();
    let mut vm = Vm::start(cfg).expect("boot with pmem");
    // The region is legacy persistent memory, outside System RAM.
    let iomem = sh(&mut vm, "cat /proc/iomem");
    assert!(
        iomem.contains("20000000-2fffffff : Persistent Memory (legacy)"),
        "{iomem}"
    );
    let exp = write(&mut vm, &src);
    let boot = vm.boot_id().to_string();
    vm.panic().expect("panic");
    vm.wait_reboot(Duration::from_secs(120))
        .expect("warm reboot after the panic");
    assert_ne!(vm.boot_id(), boot, "a new boot");
    assert!(vm.console().contains("sysrq: Trigger a crash"));
    remount_and_check(&mut vm, &exp).unwrap_or_else(|e| panic!("after the warm reboot: {e}"));
    // The comparison is byte for byte: one byte the host did not write, and it fails.
    let mut wrong = Expected {
        files: exp.files.clone(),
    };
    wrong.files[1].1[4321] ^= 0x40;
    let err = check(&mut vm, &wrong).expect_err("a changed byte is found");
    assert_eq!(err, "d/b: differs from byte 4321");
    // The kernel found the info block by itself (the namespace came up in fsdax mode), and
    // ext4 replayed its journal.
    let status = sh(&mut vm, "pmem-dax status");
    assert!(status.contains("mode fsdax"), "{status}");
    assert!(dmesg_has(&mut vm, "recovery complete"), "no journal replay");
}

/// The negative control: the same files, then the power fails (the RAM file is discarded
/// and the guest cold-boots). The region comes back blank, in raw mode, and the check
/// that passes after a warm reboot must fail.
#[test]
fn a_cold_boot_loses_them_and_the_check_says_so() {
    let src = host_bytes(19);
    let (cfg, _dir) = pmem_config("pmem-dax-power", &src);
    let mut vm = Vm::start(cfg).expect("boot with pmem");
    let exp = write(&mut vm, &src);
    let cfg = vm.kill().expect("power cut");
    riovm::discard_ram(&cfg).expect("discard the RAM file");
    let mut vm = Vm::start(cfg).expect("cold boot");
    let err = remount_and_check(&mut vm, &exp).expect_err("the data cannot survive power loss");
    assert!(err.contains("no fsdax info block"), "{err}");
    assert_eq!(
        sh(&mut vm, "pmem-dax status").trim(),
        "namespace namespace0.0 mode raw"
    );
    // The raw device holds zeros where the file system was.
    let head = sh(
        &mut vm,
        "od -A n -t x1 -N 4096 -v /dev/pmem0 | tr -d ' \\n'",
    );
    assert!(head.chars().all(|c| c == '0') && !head.is_empty(), "{head}");
}

/// `rio-check dax`, which `pmem-dax` relies on, tells a page-cache file from a DAX one.
#[test]
fn the_dax_check_fails_off_dax() {
    let (cfg, _dir) = config("pmem-dax-check");
    let mut vm = Vm::start(cfg.with_pmem()).expect("boot with pmem");
    sh(&mut vm, &format!("pmem-dax setup {MNT}"));
    sh(&mut vm, &format!("echo x > {MNT}/f; rio-check dax {MNT}/f"));
    let tmp = vm.run("echo x > /tmp/f; rio-check dax /tmp/f").unwrap();
    assert_eq!(tmp.status, 3, "tmpfs is no DAX: {}", tmp.stderr_str());
    assert!(tmp.stderr_str().contains("not a DAX file"));
    // The same pmem file system mounted without -o dax: page cache, and the check says so.
    sh(
        &mut vm,
        &format!("umount {MNT} && mount -t ext4 -o dax=never /dev/pmem0 {MNT}"),
    );
    let off = vm.run(&format!("rio-check dax {MNT}/f")).unwrap();
    assert_eq!(off.status, 3, "{}", off.stderr_str());
    // ... and so does pmem-dax's own check, which its setup and mount run.
    let check = vm.run(&format!("pmem-dax check {MNT}")).unwrap();
    assert_ne!(check.status, 0, "{}", check.stdout_str());
    assert!(
        check.stderr_str().contains("is not mounted with dax"),
        "{}",
        check.stderr_str()
    );
}

/// The crash campaign's pmem-dax configuration, once (`rio-campaign --configs pmem-dax`
/// runs it in full): memtest on ext4 -o dax, a kernel panic, the warm reboot, the mount
/// again; every acknowledged overwrite is there.
#[test]
fn the_campaign_configuration_loses_nothing_to_a_panic() {
    let (cfg, dir) = config("pmem-dax-campaign");
    dir.allow_crash();
    let o = rio_campaign::run_one(&cfg, dir.path(), rio_campaign::Config::PmemDax, "panic", 0)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.crashed, "{o:?}");
    assert!(o.acked_writes > 20, "{o:?}");
    assert_eq!(o.recovery, "ext4 journal (pmem)", "{o:?}");
    assert_eq!((o.lost_writes, o.corrupted_files), (0, 0), "{o:?}");
}
