//! riofs-fsck in the guest: a riofs the kernel wrote (dumped with `rio cat` after unmounting)
//! checks clean, one byte of an inode flipped in a copy of the dump is an error, and the
//! object as a kernel panic left it checks without errors.

use std::time::Duration;

use rio_format::riofs::{Super, BLOCK, INODE_SIZE};
use rio_qemu_tests::*;

fn load(vm: &mut Vm) {
    sh(vm, "rio-load");
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
}

/// A workload touching every structure: direct, indirect and double-indirect blocks, a
/// sparse file, a directory of more than one block, hard and symbolic links, renames,
/// removals, truncation, a FIFO.
const WORKLOAD: &str = "echo hello > /mnt/hello && mkdir -p /mnt/a/b/c && \
     dd if=/dev/urandom of=/mnt/a/big bs=4k count=1200 2>/dev/null && \
     dd if=/dev/zero of=/mnt/sparse bs=4k count=1 seek=3000 2>/dev/null && \
     for i in $(seq 1 40); do echo $i > /mnt/a/b/f$i; done && \
     ln /mnt/a/b/f1 /mnt/a/hard && ln -s ../hello /mnt/a/sym && mkfifo /mnt/fifo && \
     mv /mnt/a/b/f2 /mnt/a/b/c/moved && mv /mnt/a/b/c /mnt/c2 && rm /mnt/a/b/f3 && \
     printf 'abcdefgh' > /mnt/trunc && truncate -s 3 /mnt/trunc && \
     dd if=/dev/urandom of=/mnt/a/big bs=4k count=3 seek=5 conv=notrunc 2>/dev/null && \
     echo x >> /mnt/hello";

/// Object byte offset of inode `ino`'s record in a riofs of `bytes` bytes.
fn inode_offset(bytes: u64, ino: u32) -> u64 {
    let sb = Super::for_blocks((bytes / BLOCK as u64) as u32, [0; 16], 0).expect("geometry");
    u64::from(sb.itable_start) * BLOCK as u64 + u64::from(ino) * INODE_SIZE as u64
}

#[test]
fn a_riofs_the_kernel_wrote_checks_clean_and_a_flipped_inode_byte_does_not() {
    let mut t = boot("riofs-fsck");
    let vm = t.vm();
    load(vm);
    sh(vm, "mount -t riofs -o size=16M data /mnt");
    sh(vm, WORKLOAD);
    sh(vm, "umount /mnt");
    sh(vm, "rio cat data > /tmp/img");
    assert_eq!(sh(vm, "wc -c < /tmp/img").trim(), (16u64 << 20).to_string());
    let out = vm.run("riofs-fsck /tmp/img").unwrap();
    let text = format!("{}{}", out.stdout_str(), out.stderr_str());
    eprintln!("riofs-fsck of the unmounted object:\n{text}");
    assert_eq!(out.status, 0, "riofs-fsck: {text}");
    assert_eq!(text.lines().last(), Some("clean"), "{text}");
    assert!(text.contains("riofs of 4096 blocks"), "{text}");

    // Negative control: inode 2 is /hello (the first file created). Flip the second byte
    // of its size in a copy of the dump.
    let at = inode_offset(16 << 20, 2) + 17;
    sh(
        vm,
        &format!(
            "cp /tmp/img /tmp/bad && printf '\\252' | dd of=/tmp/bad bs=1 seek={at} conv=notrunc 2>/dev/null"
        ),
    );
    let out = vm.run("riofs-fsck /tmp/bad").unwrap();
    let text = out.stdout_str();
    assert_eq!(out.status, 1, "riofs-fsck: {text}{}", out.stderr_str());
    assert!(
        text.contains("error: inode 2 (/hello): record checksum mismatch"),
        "{text}"
    );
    // Its one data block is then reached by nothing: leaked, a warning.
    assert_eq!(text.lines().last(), Some("1 error, 1 warning"), "{text}");

    // The unchanged object mounts again and still checks clean after more changes.
    sh(
        vm,
        "mount -t riofs data /mnt && rm -r /mnt/a && umount /mnt",
    );
    sh(vm, "rio cat data > /tmp/img2");
    let out = vm.run("riofs-fsck -q /tmp/img2").unwrap();
    assert_eq!((out.status, out.stdout_str()), (0, "clean\n".to_string()));
}

#[test]
fn the_object_a_kernel_panic_left_has_no_errors() {
    let mut t = boot("riofs-fsck-panic");
    t.allow_crash();
    let vm = t.vm();
    load(vm);
    sh(vm, "mount -t riofs -o size=16M data /mnt");
    sh(vm, WORKLOAD);
    vm.panic().unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    load(vm);
    // Not mounted: the object as the crash left it (warnings allowed, no errors).
    sh(vm, "rio cat data > /tmp/img");
    let out = vm.run("riofs-fsck /tmp/img").unwrap();
    let text = out.stdout_str();
    eprintln!("riofs-fsck after the panic:\n{text}");
    assert_eq!(out.status, 0, "riofs-fsck: {text}{}", out.stderr_str());
    assert!(!text.contains("error:"), "{text}");
    // After a mount's recovery it is clean.
    sh(
        vm,
        "mount -t riofs data /mnt && umount /mnt && rio cat data > /tmp/img2",
    );
    let out = vm.run("riofs-fsck -q /tmp/img2").unwrap();
    assert_eq!((out.status, out.stdout_str()), (0, "clean\n".to_string()));
}

#[test]
fn the_object_written_back_to_the_backing_disk_checks_clean() {
    let (cfg, dir) = config_with_disk("riofs-fsck-disk", 80);
    let vm = Vm::start(cfg).unwrap_or_else(|e| panic!("boot failed: {e}"));
    let mut t = test_vm(vm, dir);
    let vm = t.vm();
    sh(vm, "rio-load backing=/dev/vda writeback_ms=0");
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
    sh(vm, "mount -t riofs -o size=16M data /mnt");
    sh(vm, WORKLOAD);
    sh(vm, "umount /mnt && rio sync");
    // --disk reads the backing disk's object table (here the device itself).
    let out = vm.run("riofs-fsck --disk /dev/vda --object data").unwrap();
    let text = format!("{}{}", out.stdout_str(), out.stderr_str());
    eprintln!("riofs-fsck of the backing disk's copy:\n{text}");
    assert_eq!(out.status, 0, "riofs-fsck: {text}");
    assert_eq!(text.lines().last(), Some("clean"), "{text}");
    let out = vm
        .run("riofs-fsck --disk /dev/vda --object nosuch")
        .unwrap();
    assert_eq!(out.status, 2, "{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("no object \"nosuch\""),
        "{}",
        out.stderr_str()
    );
}

/// The arena exactly as a kernel panic in the middle of a busy workload left it, read by
/// the host out of the guest's RAM file before anything recovers it (`riofs-fsck --arena`,
/// the guest build of the checker run on the host): no errors, in three panics at
/// different moments (an operation in flight is a warning: the mount undoes it).
#[test]
fn the_arena_a_panic_left_mid_workload_has_no_errors() {
    let fsck = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../userlib/target/x86_64-unknown-linux-gnu/release/riofs-fsck");
    assert!(fsck.exists(), "{} is built by make guest", fsck.display());
    let (cfg, dir) = config("riofs-fsck-arena");
    dir.allow_crash();
    let mut cfg = Some(cfg);
    let mut in_flight = 0;
    // 1 round in make test, 3 in make test-long (RIOFS_FSCK_ROUNDS).
    let rounds: u64 = std::env::var("RIOFS_FSCK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        let mut vm = Vm::start(cfg.take().unwrap()).unwrap();
        load(&mut vm);
        sh(
            &mut vm,
            "mkdir -p /mnt && mount -t riofs -o size=16M data /mnt && mkdir -p /mnt/w",
        );
        vm.spawn(
            "i=0; while true; do i=$((i+1)); echo $i > /mnt/w/t$i && mv /mnt/w/t$i /mnt/w/f$((i % 50)); \
             mkdir -p /mnt/w/d$((i % 9)); rmdir /mnt/w/d$(((i + 4) % 9)) 2>/dev/null; \
             dd if=/dev/urandom of=/mnt/w/big bs=4k count=$((i % 40 + 1)) 2>/dev/null; \
             truncate -s $((i * 1000 % 70000)) /mnt/w/big; done",
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(700 + 500 * round));
        vm.panic().unwrap();
        vm.wait_reboot(Duration::from_secs(90)).unwrap();
        let c = vm.kill().unwrap();
        let ram = std::fs::read(&c.ram_file).unwrap();
        let a = ArenaReservation::DEFAULT;
        let image = dir.path().join("arena.img");
        std::fs::write(&image, &ram[a.phys as usize..(a.phys + a.size) as usize]).unwrap();
        let out = std::process::Command::new(&fsck)
            .args([
                "--arena".as_ref(),
                image.as_os_str(),
                "--object".as_ref(),
                "data".as_ref(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        eprintln!("round {round}: {}", text.lines().last().unwrap_or(""));
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("riofs of 4096 blocks"),
            "round {round}: the object was found in the arena and is the riofs: {text}"
        );
        if text.contains("will undo") {
            in_flight += 1;
        }
        // The next round boots on the same RAM: the mount recovers it, then a new workload.
        let mut vm = Vm::start(c).unwrap();
        load(&mut vm);
        sh(
            &mut vm,
            "mount -t riofs data /mnt && rm -rf /mnt/w && umount /mnt",
        );
        cfg = Some(vm.kill().unwrap());
    }
    eprintln!("rounds with an operation in flight: {in_flight} of {rounds}");
}
