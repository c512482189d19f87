//! Shared helpers for the QEMU tests: one fresh VM per test, cleaned up on drop.
//!
//! The kernel is the one `RIO_KERNEL_FLAVOUR` names (`fast` by default; `make test` runs
//! the rio.ko suites with `debug`: lockdep, KASAN, Rust debug checks). Whatever the kernel,
//! a [`TestVm`] fails its test when the guest console shows a kernel splat (lockdep,
//! KASAN, `BUG:`, `WARNING:`, a hung task, ...) that the test did not cause on purpose.

use std::path::Path;
use std::time::Duration;

pub mod golden_disk;

pub use riovm::{
    ArenaReservation, Artifacts, CmdOutput, Flavour, PmemReservation, Vm, VmConfig, VmError,
};

/// What on a console line means the kernel found a bug in itself.
pub const SPLATS: &[&str] = &[
    "BUG:",
    "WARNING:",
    "KASAN",
    "UBSAN",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "suspicious RCU usage",
    "sleeping function called from invalid context",
    "INFO: task",
    "soft lockup",
    "hard LOCKUP",
    "Oops",
    "general protection fault",
    "list_add corruption",
    "list_del corruption",
    "refcount_t:",
];

/// Lines a test that crashes the kernel on purpose expects: the fault of a wild store into
/// the protected arena (or a riofault injection) and the oops and panic it leads to.
pub const DELIBERATE_CRASH: &[&str] = &[
    "BUG: unable to handle page fault",
    "BUG: kernel NULL pointer dereference",
    "Oops",
    "general protection fault",
];

/// What the guest agent prints when the boot is over and the test's commands can start.
pub const AGENT_UP: &str = "rio-guest: up";

/// The splat lines of `console`, except those containing one of `allowed`, and except
/// those of a boot before the guest agent came up: those are the kernel's own early boot
/// (seen once on the debug kernel: a KASAN wild-memory-access in an interrupt 4 ms into a
/// warm reboot, before any test command or rio.ko), not something the test produced. They
/// are printed as a warning instead.
pub fn splats(console: &str, allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut booted = false;
    for l in console.lines() {
        if l.contains("Linux version ") {
            booted = false;
        }
        if l.contains(AGENT_UP) {
            booted = true;
        }
        if !SPLATS.iter().any(|s| l.contains(s)) || allowed.iter().any(|a| l.contains(a)) {
            continue;
        }
        if booted {
            found.push(l.to_string());
        } else {
            eprintln!("warning: a kernel splat during boot, before any test command: {l}");
        }
    }
    found
}

/// Every console log in `dir` (one per QEMU process), concatenated.
pub fn consoles(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("console") && n.ends_with(".log"))
    });
    names.sort();
    names
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Panics with the splat (and its context) if any console in `dir` shows one not allowed.
pub fn assert_no_splat(dir: &Path, allowed: &[&str]) {
    let all = consoles(dir);
    let found = splats(&all, allowed);
    if let Some(first) = found.first() {
        let at = all.find(first.as_str()).unwrap_or(0);
        let from = all[..at].rfind("\n[").map_or(0, |i| i + 1);
        let context: String = all[from..].lines().take(40).collect::<Vec<_>>().join("\n");
        panic!(
            "the guest kernel reported a bug ({} splat lines); first:\n{context}",
            found.len()
        );
    }
}

/// A test's work directory (RAM file, sockets, console logs). When it is dropped, after
/// the test, its consoles are checked for splats (unless the test is failing already), and
/// then it is deleted.
pub struct TestDir {
    dir: tempfile::TempDir,
    allowed: std::cell::RefCell<Vec<&'static str>>,
    check: std::cell::Cell<bool>,
}

impl TestDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// This test crashes the kernel on purpose: its oops lines are not splats.
    pub fn allow_crash(&self) {
        self.allowed
            .borrow_mut()
            .extend_from_slice(DELIBERATE_CRASH);
    }

    /// This test causes console lines containing one of `lines` on purpose.
    pub fn allow(&self, lines: &[&'static str]) {
        self.allowed.borrow_mut().extend_from_slice(lines);
    }

    /// This test injects random kernel faults (the campaign): any splat may follow, and
    /// the test judges the outcome itself.
    pub fn expect_splats(&self) {
        self.check.set(false);
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if self.check.get() && !std::thread::panicking() {
            assert_no_splat(self.dir.path(), &self.allowed.borrow());
        }
    }
}

/// A VM with its own work directory; both go away when this is dropped (the VM first, then
/// the directory, whose consoles are checked for splats).
pub struct TestVm {
    /// The running VM. `None` after the test stopped it on purpose.
    pub vm: Option<Vm>,
    /// The work directory.
    pub dir: TestDir,
}

impl TestVm {
    /// The running VM.
    pub fn vm(&mut self) -> &mut Vm {
        self.vm.as_mut().expect("VM is running")
    }

    /// This test crashes the kernel on purpose (see [`TestDir::allow_crash`]).
    pub fn allow_crash(&self) {
        self.dir.allow_crash();
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        // Stop QEMU before the directory (and its console logs) is checked and removed.
        drop(self.vm.take());
    }
}

/// The kernel flavour of this run (`RIO_KERNEL_FLAVOUR`).
pub fn flavour() -> Flavour {
    Flavour::from_env().expect("RIO_KERNEL_FLAVOUR is fast or debug")
}

/// A default configuration (512 MiB, default arena) in a fresh temporary directory, on
/// the kernel of this run's flavour.
pub fn config(name: &str) -> (VmConfig, TestDir) {
    let artifacts = Artifacts::locate()
        .expect("kernel and initramfs are built (make initramfs initramfs-debug)");
    let dir = tempfile::Builder::new()
        .prefix(&format!("rio-test-{name}-"))
        .tempdir()
        .expect("temporary directory");
    let mut cfg = VmConfig::new(artifacts, dir.path());
    // The debug kernel (KASAN, lockdep) boots and runs several times slower under TCG.
    cfg.boot_timeout = Duration::from_secs(if flavour() == Flavour::Debug { 180 } else { 90 });
    let dir = TestDir {
        dir,
        allowed: std::cell::RefCell::new(Vec::new()),
        check: std::cell::Cell::new(true),
    };
    (cfg, dir)
}

/// A default configuration with one fresh, zeroed virtio disk of `mib` MiB (`/dev/vda` in
/// the guest), kept in the test's directory as `backing.img`.
pub fn config_with_disk(name: &str, mib: u64) -> (VmConfig, TestDir) {
    let (mut cfg, dir) = config(name);
    let disk = dir.path().join("backing.img");
    riovm::create_disk(&disk, mib << 20).expect("create the disk image");
    cfg.disks.push(riovm::Disk { path: disk });
    (cfg, dir)
}

/// Appends the add-on archive `initramfs-<addon>.cpio.gz` built beside `cfg`'s initramfs
/// (for the debug kernel `initramfs-<addon>-debug.cpio.gz`; qemu/mkinitramfs.sh builds them)
/// to that initramfs, in a copy in the test's directory: concatenated cpio archives, plain
/// or gzipped, make one initramfs. Panics naming the missing archive and what builds it (`how`).
pub fn with_addon(cfg: &mut VmConfig, dir: &TestDir, addon: &str, how: &str) {
    let initramfs = cfg.artifacts.initramfs.clone();
    let suffix = initramfs
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("initramfs"))
        .and_then(|s| s.strip_suffix(".cpio"))
        .unwrap_or_default();
    let overlay = initramfs.with_file_name(format!("initramfs-{addon}{suffix}.cpio.gz"));
    assert!(overlay.is_file(), "{} is missing: {how}", overlay.display());
    let both = dir.path().join(format!("initramfs-with-{addon}.cpio"));
    let mut bytes = std::fs::read(&initramfs).expect("read the initramfs");
    bytes.extend(std::fs::read(&overlay).expect("read the add-on archive"));
    std::fs::write(&both, bytes).expect("write the combined initramfs");
    cfg.artifacts.initramfs = both;
}

/// Wraps a started VM and its directory (checked for splats on drop).
pub fn test_vm(vm: Vm, dir: TestDir) -> TestVm {
    TestVm { vm: Some(vm), dir }
}

/// Boots a default VM for a test.
pub fn boot(name: &str) -> TestVm {
    let (cfg, dir) = config(name);
    let vm = Vm::start(cfg).unwrap_or_else(|e| panic!("boot failed: {e}"));
    test_vm(vm, dir)
}

/// Boots guest `index` on `hub`'s network (riovm's `NetConfig`: 10.77.0.`index`/24) for a
/// test named `name`.
pub fn net_guest(hub: &riovm::NetHub, index: u8, name: &str) -> TestVm {
    let (mut cfg, dir) = config(name);
    cfg.net = Some(riovm::NetConfig::new(index, hub.port()));
    let vm = Vm::start(cfg).unwrap_or_else(|e| panic!("guest {index} did not boot: {e}"));
    test_vm(vm, dir)
}

/// For Discount Checking in the guest: loads rio.ko (recovery after a crash), formats a
/// blank arena, and mounts riofs with `dc-fs DC_FS_ARGS` (its size, or "" for the default).
pub fn load_rio_and_dc_fs(vm: &mut Vm, dc_fs_args: &str) {
    sh(vm, "rio-load");
    if sh(vm, "rio status").contains("blank") {
        sh(vm, "rio format");
    }
    sh(vm, format!("dc-fs {dc_fs_args}").trim_end());
}

/// Runs `cmd`, asserting that it succeeds; returns its standard output.
pub fn sh(vm: &mut Vm, cmd: &str) -> String {
    vm.sh(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// The bytes of guest file `path`, asserting that it can be read.
pub fn fetch(vm: &mut Vm, path: &str) -> Vec<u8> {
    let r = vm
        .run(&format!("cat {path}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 0, "cat {path}: {}", r.stderr_str());
    r.stdout
}

/// Loads rio.ko on the reserved arena, asserting success.
pub fn load_rio(vm: &mut Vm) {
    sh(vm, "rio-load");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lockdep_and_kasan_splats_but_not_allowed_lines() {
        let console = "[ 0.1] BUG: KASAN: during early boot\nrio-guest: up, kernel x\n[ 1.0] rio: loaded\n[ 2.0] WARNING: possible circular locking dependency detected\n[ 3.0] BUG: unable to handle page fault for address: ffff\n[ 4.0] ==================\n[ 4.1] BUG: KASAN: slab-use-after-free in foo\n";
        let all = splats(console, &[]);
        assert_eq!(all.len(), 3, "{all:?}");
        let some = splats(console, DELIBERATE_CRASH);
        assert_eq!(some.len(), 2, "{some:?}");
        assert!(some[1].contains("KASAN"));
        assert!(splats("rio-guest: up\n[ 1.0] rio: arena blank\n", &[]).is_empty());
        // A new boot starts a new before-the-agent stretch.
        let reboot = format!("{console}[ 0.0] Linux version 7.3\n[ 0.1] BUG: early\nrio-guest: up\n[ 5.0] BUG: late\n");
        let all = splats(&reboot, &[]);
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(all[3].contains("late"));
    }
}
