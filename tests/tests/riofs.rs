//! riofs: a POSIX file system in the protected arena. Ordinary files written with ordinary
//! tools survive a kernel panic (warm reboot) exactly as they were when the calls returned.

use std::time::Duration;

use rio_qemu_tests::*;

fn load(vm: &mut Vm) {
    sh(vm, "rio-load");
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
}

/// A listing of the tree under /mnt that the kernel cannot fake: names, types, modes,
/// link counts, sizes and content hashes, from busybox's own tools.
fn tree(vm: &mut Vm) -> String {
    sh(
        vm,
        "cd /mnt && find . | sort | while read f; do \
           if [ -L \"$f\" ]; then echo \"L $f -> $(readlink \"$f\")\"; \
           elif [ -d \"$f\" ]; then echo \"D $f $(stat -c '%a %h %u:%g' \"$f\")\"; \
           else echo \"F $f $(stat -c '%a %h %s %u:%g' \"$f\") $(md5sum < \"$f\" | cut -c1-32)\"; fi; done",
    )
}

#[test]
fn plain_files_survive_a_kernel_panic() {
    let mut t = boot("riofs-panic");
    t.allow_crash();
    let vm = t.vm();
    load(vm);
    sh(vm, "mount -t riofs -o size=16M data /mnt");
    sh(
        vm,
        "echo hello riofs > /mnt/hello && mkdir -p /mnt/a/b/c && \
         dd if=/dev/urandom of=/mnt/a/big bs=4k count=600 2>/dev/null && \
         for i in 1 2 3 4 5 6 7 8 9 10; do echo $i > /mnt/a/b/f$i; done && \
         ln /mnt/a/b/f1 /mnt/a/hard && ln -s ../hello /mnt/a/sym && \
         mv /mnt/a/b/f2 /mnt/a/b/c/moved && rm /mnt/a/b/f3 && chmod 600 /mnt/a/b/f4 && \
         printf 'abcdefgh' > /mnt/trunc && truncate -s 3 /mnt/trunc && \
         echo x >> /mnt/hello",
    );
    let before = tree(vm);
    assert!(before.contains("F ./a/hard 644 2 2"), "{before}");
    vm.panic().unwrap();
    vm.wait_reboot(Duration::from_secs(90)).unwrap();
    load(vm);
    sh(vm, "mount -t riofs data /mnt");
    let after = tree(vm);
    assert_eq!(
        after, before,
        "the tree after the panic is the tree before it"
    );
    assert_eq!(sh(vm, "cat /mnt/hello"), "hello riofs\nx\n");
    assert_eq!(sh(vm, "cat /mnt/a/sym"), "hello riofs\nx\n");
    assert_eq!(sh(vm, "cat /mnt/trunc"), "abc");
}

/// Runs `cmd` as uid 1000 (user `rio`).
fn as_user(vm: &mut Vm, cmd: &str) -> CmdOutput {
    vm.run(&format!("su rio -c \"{}\"", cmd.replace('"', "\\\"")))
        .unwrap()
}

fn fails_with(out: &CmdOutput, msg: &str) {
    assert_ne!(out.status, 0, "expected failure: {}", out.stdout_str());
    assert!(
        out.stderr_str().contains(msg) || out.stdout_str().contains(msg),
        "expected '{msg}': {}{}",
        out.stdout_str(),
        out.stderr_str()
    );
}

#[test]
fn posix_semantics_permissions_and_limits() {
    let mut t = boot("riofs-posix");
    let vm = t.vm();
    load(vm);
    sh(vm, "mount -t riofs -o size=8M data /mnt");
    // Unlink while open: the open file keeps its data, and it is freed at close. (The
    // first name gives the root directory its first block, which stays.)
    sh(vm, "touch /mnt/first");
    let free0 = sh(vm, "stat -f -c %f /mnt");
    sh(
        vm,
        "dd if=/dev/urandom of=/mnt/gone bs=4k count=100 2>/dev/null && \
         exec 3</mnt/gone && rm /mnt/gone && md5sum <&3 > /tmp/open.md5 && \
         [ ! -e /mnt/gone ] && exec 3<&-",
    );
    assert_eq!(
        sh(vm, "stat -f -c %f /mnt"),
        free0,
        "the unlinked file's blocks came back at close"
    );
    // Rename replaces atomically; rmdir of a non-empty directory is refused.
    sh(
        vm,
        "echo a > /mnt/x && echo b > /mnt/y && mv /mnt/x /mnt/y && mkdir -p /mnt/d/e",
    );
    assert_eq!(sh(vm, "cat /mnt/y"), "a\n");
    assert!(vm.run("test -e /mnt/x").unwrap().status != 0);
    fails_with(&vm.run("rmdir /mnt/d").unwrap(), "not empty");
    sh(vm, "mv /mnt/d/e /mnt/e2 && rmdir /mnt/d");
    assert_eq!(
        sh(vm, "stat -c %h /mnt"),
        "3\n",
        "/mnt has one subdirectory (e2) left"
    );
    // Permissions: the VFS checks them against the arena's modes and owners.
    fails_with(&as_user(vm, "echo no > /mnt/rootonly"), "denied");
    sh(
        vm,
        "mkdir /mnt/home && chown rio /mnt/home && chmod 700 /mnt/home",
    );
    let out = as_user(vm, "echo mine > /mnt/home/f && stat -c '%u %a' /mnt/home/f");
    assert_eq!(out.status, 0, "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "1000 644\n");
    fails_with(&as_user(vm, "chown 0 /mnt/home/f"), "not permitted");
    fails_with(&as_user(vm, "cat /mnt/y > /mnt/home/../y"), "denied");
    // A file crossing the direct, single and double indirect blocks reads back.
    sh(
        vm,
        "dd if=/dev/urandom of=/mnt/big bs=64k count=80 2>/dev/null && md5sum /mnt/big > /tmp/big.md5",
    );
    // A clean unmount and mount keep everything.
    let before = tree(vm);
    sh(vm, "umount /mnt && mount -t riofs data /mnt");
    assert_eq!(tree(vm), before, "unmount and mount change nothing");
    sh(vm, "md5sum -c /tmp/big.md5");
    // Full: ENOSPC, cleanly; deleting gives the space back.
    fails_with(
        &vm.run("dd if=/dev/zero of=/mnt/fill bs=64k count=1000")
            .unwrap(),
        "No space left",
    );
    sh(vm, "rm /mnt/fill /mnt/big");
    sh(
        vm,
        "dd if=/dev/zero of=/mnt/again bs=64k count=16 2>/dev/null",
    );
    // One mount at a time, and the object is held while mounted.
    fails_with(&vm.run("mount -t riofs data /tmp").unwrap(), "busy");
    fails_with(&vm.run("rio rm data").unwrap(), "busy");
    // What is not a riofs is refused and left as it was.
    sh(
        vm,
        "rio create junk 1M && rio-check write junk --seed 5 --size 1048576",
    );
    fails_with(
        &vm.run("mount -t riofs junk /tmp").unwrap(),
        "Invalid argument",
    );
    assert!(sh(vm, "dmesg").contains("not a riofs object"));
    sh(vm, "rio-check verify junk --seed 5 --size 1048576");
    fails_with(
        &vm.run("mount -t riofs nosuch /tmp").unwrap(),
        "No such file",
    );
    // Only root mounts.
    fails_with(&as_user(vm, "mount -t riofs data /tmp"), "denied");
}

/// Arena byte offset of block `block` of the first object made in a fresh arena (its
/// pages are the first data pages, in order).
fn block_in_arena(block: u64) -> u64 {
    let g = rio_format::Geometry::for_size(ArenaReservation::DEFAULT.size).unwrap();
    (u64::from(g.data_start) + block) * rio_format::PAGE_SIZE as u64
}

// The geometry of a 16 MiB riofs (4096 blocks), worked out by hand from the rule in
// rio_mod/riofs/format.rs (not computed by it): a log of 4096/64 = 64 blocks from block 1,
// 2048 inodes in 64 blocks from block 65, one bitmap block (129), data from block 130. The
// root directory's first block is the first data block (130), so the first file's first
// block is 131.
const ROOT_INODE_BYTE: u64 = 65 * 4096 + 128;
const FIRST_FILE_BLOCK: u64 = 131;

fn victim(vm: &mut Vm) {
    sh(vm, "mount -t riofs -o size=16M data /mnt");
    sh(
        vm,
        "dd if=/dev/urandom of=/mnt/victim bs=4k count=4 2>/dev/null && mkdir /mnt/dir && \
         echo keep > /mnt/dir/keep",
    );
}

#[test]
fn protection_turns_wild_stores_at_riofs_into_oopses() {
    for (name, target) in [
        ("riofs-wild-meta", ROOT_INODE_BYTE + block_in_arena(0)),
        ("riofs-wild-data", block_in_arena(FIRST_FILE_BLOCK) + 100),
    ] {
        let mut t = boot(name);
        t.allow_crash();
        let vm = t.vm();
        sh(vm, "rio-load allow_wild_store=1");
        sh(vm, "rio format");
        victim(vm);
        let before = tree(vm);
        vm.spawn(&format!("sleep 0.2; rio wild-store {target}"))
            .unwrap();
        vm.wait_console("Kernel panic", Duration::from_secs(30))
            .unwrap();
        assert!(
            vm.console().contains("BUG: unable to handle page fault")
                || vm.console().contains("Oops"),
            "{name}: the store faulted:\n{}",
            vm.console_tail(40)
        );
        vm.wait_reboot(Duration::from_secs(90)).unwrap();
        sh(vm, "rio-load");
        sh(vm, "mount -t riofs data /mnt");
        assert_eq!(tree(vm), before, "{name}: nothing changed");
    }
}

/// The negative control: without protection the same stores land. A store into data
/// changes the file's bytes (nothing can notice); one into an inode is caught by its
/// checksum, and the mount refuses the file system with a clear message.
#[test]
fn without_protection_wild_stores_corrupt_riofs() {
    let mut t = boot("riofs-wild-off");
    let vm = t.vm();
    sh(vm, "rio-load protect=0 allow_wild_store=1");
    sh(vm, "rio format");
    victim(vm);
    let sum = sh(vm, "md5sum < /mnt/victim");
    sh(
        vm,
        &format!(
            "rio wild-store {} --value 0x5a && rio wild-store {} --value 0x5b",
            block_in_arena(FIRST_FILE_BLOCK) + 100,
            block_in_arena(FIRST_FILE_BLOCK) + 101
        ),
    );
    assert_ne!(sh(vm, "md5sum < /mnt/victim"), sum, "the data store landed");
    sh(vm, "umount /mnt");
    sh(
        vm,
        &format!(
            "rio wild-store {} --value 0x77",
            block_in_arena(0) + ROOT_INODE_BYTE + 20
        ),
    );
    let out = vm.run("mount -t riofs data /mnt").unwrap();
    assert_ne!(out.status, 0, "a corrupt root inode is refused");
    assert!(
        sh(vm, "dmesg").contains("corrupt metadata: inode 1"),
        "{}",
        sh(vm, "dmesg | tail -5")
    );
}

/// A power cut loses what was not written back, but never leaves a torn file system: the
/// background writeback copies a mounted riofs between two operations (under its lock)
/// into a fresh extent of the disk and moves the object's entry only after the data is
/// there, so the restored image is one whole earlier state. A workload runs while
/// writeback runs every 100 ms; the power goes at a different moment in each round; the
/// restored file system must mount, check clean with riofs-fsck, and hold only whole
/// files: every `fN` holds `N`, as the workload wrote it (through a rename).
#[test]
fn power_loss_leaves_a_whole_earlier_image() {
    let (cfg, _dir) = config_with_disk("riofs-power", 80);
    let mut vm = Vm::start(cfg).unwrap();
    sh(&mut vm, "rio-load backing=/dev/vda writeback_ms=100");
    sh(&mut vm, "rio format");
    sh(
        &mut vm,
        "mount -t riofs -o size=16M data /mnt && mkdir /mnt/w",
    );
    let mut restored_files = Vec::new();
    // 2 power cuts in make test, 3 in make test-long.
    let rounds = if std::env::var_os("RIO_TEST_LONG").is_some() {
        3
    } else {
        2
    };
    for round in 0..rounds {
        vm.spawn(&format!(
            "i={start}; while true; do i=$((i+1)); echo $i > /mnt/w/t$i && mv /mnt/w/t$i /mnt/w/f$i; \
             [ $((i % 7)) = 0 ] && rm -f /mnt/w/f$((i-5)); \
             dd if=/dev/urandom of=/mnt/w/blob bs=4k count=$((i % 16 + 1)) 2>/dev/null; done",
            start = round * 100_000
        ))
        .unwrap();
        std::thread::sleep(Duration::from_millis(1500 + 700 * round));
        let cfg = vm.kill().unwrap();
        riovm::discard_ram(&cfg).unwrap();
        vm = Vm::start(cfg).unwrap();
        sh(&mut vm, "rio-load backing=/dev/vda writeback_ms=100");
        assert!(
            sh(&mut vm, "dmesg").contains("restored 1 objects from backing device"),
            "round {round}: {}",
            sh(&mut vm, "dmesg | tail")
        );
        let out = vm.run("mount -t riofs data /mnt").unwrap();
        assert_eq!(
            out.status,
            0,
            "round {round}: the restored riofs mounts: {}{}",
            out.stderr_str(),
            sh(&mut vm, "dmesg | grep riofs")
        );
        let bad = sh(
            &mut vm,
            "cd /mnt/w && for f in f*; do [ -e \"$f\" ] || continue; [ \"$(cat $f)\" = \"${f#f}\" ] || echo \"$f: $(cat $f)\"; done; true",
        );
        assert_eq!(bad, "", "round {round}: every file whole");
        let n = sh(&mut vm, "ls /mnt/w | grep -c '^f' || true");
        restored_files.push(n.trim().to_string());
        sh(&mut vm, "umount /mnt && rio cat data > /tmp/img");
        let fsck = vm.run("riofs-fsck /tmp/img").unwrap();
        assert_eq!(
            fsck.status,
            0,
            "round {round}: riofs-fsck: {}{}",
            fsck.stdout_str(),
            fsck.stderr_str()
        );
        sh(&mut vm, "mount -t riofs data /mnt");
    }
    eprintln!("files restored per round: {restored_files:?}");
    vm.shutdown().unwrap();
}
