//! riovm: boot, drive, crash and warm-reboot the Rio test kernel under QEMU (TCG).
//!
//! A [`Vm`] is one QEMU process. Guest RAM is backed by a file, so it survives a guest
//! reboot, a QMP `system_reset` and even a new QEMU process ([`Vm::kill`] then
//! [`Vm::start`] on the same [`VmConfig`]); [`discard_ram`] turns the next start into a cold
//! boot, which is how tests model power loss. Commands run in the guest through an agent on
//! the second serial port (see the `rio-agent` crate); the first serial port is the kernel
//! console, logged to a file in the VM's work directory. Every wait has a timeout, and
//! dropping a [`Vm`] kills its QEMU.

pub mod config;
pub mod error;
pub mod net;
pub mod qmp;
pub mod vm;

pub use config::{
    repo_root, ArenaReservation, Artifacts, Disk, Flavour, PmemReservation, VmConfig,
};
pub use error::{Result, VmError};
pub use net::{HubStats, NetConfig, NetHub};
pub use vm::{create_disk, discard_ram, interactive_command, workload_log_path, CmdOutput, Vm};
