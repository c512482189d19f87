//! Shared helpers for the QEMU tests: one fresh VM per test, cleaned up on drop.

use std::time::Duration;

pub use riovm::{ArenaReservation, Artifacts, CmdOutput, Vm, VmConfig, VmError};

/// A VM with its own work directory; both go away when this is dropped.
pub struct TestVm {
    /// The running VM. `None` after the test stopped it on purpose.
    pub vm: Option<Vm>,
    /// The work directory (RAM file, sockets, console logs).
    pub dir: tempfile::TempDir,
}

impl TestVm {
    /// The running VM.
    pub fn vm(&mut self) -> &mut Vm {
        self.vm.as_mut().expect("VM is running")
    }
}

/// A default configuration (512 MiB, default arena) in a fresh temporary directory.
pub fn config(name: &str) -> (VmConfig, tempfile::TempDir) {
    let artifacts = Artifacts::locate().expect("kernel and initramfs are built (make initramfs)");
    let dir = tempfile::Builder::new()
        .prefix(&format!("rio-test-{name}-"))
        .tempdir()
        .expect("temporary directory");
    let mut cfg = VmConfig::new(artifacts, dir.path());
    cfg.boot_timeout = Duration::from_secs(90);
    (cfg, dir)
}

/// Boots a default VM for a test.
pub fn boot(name: &str) -> TestVm {
    let (cfg, dir) = config(name);
    let vm = Vm::start(cfg).unwrap_or_else(|e| panic!("boot failed: {e}"));
    TestVm { vm: Some(vm), dir }
}

/// Runs `cmd`, asserting that it succeeds; returns its standard output.
pub fn sh(vm: &mut Vm, cmd: &str) -> String {
    vm.sh(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Loads rio.ko on the reserved arena, asserting success.
pub fn load_rio(vm: &mut Vm) {
    sh(vm, "rio-load");
}
