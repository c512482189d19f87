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
    assert_eq!(after, before, "the tree after the panic is the tree before it");
    assert_eq!(sh(vm, "cat /mnt/hello"), "hello riofs\nx\n");
    assert_eq!(sh(vm, "cat /mnt/a/sym"), "hello riofs\nx\n");
    assert_eq!(sh(vm, "cat /mnt/trunc"), "abc");
}
