//! What a VM is made of: kernel, initramfs, RAM file, arena reservation, disks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, VmError};

/// The physical range that the kernel command line reserves with `memmap=SIZE$ADDR` for the
/// Rio arena. The kernel leaves it out of its direct map; rio.ko maps it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaReservation {
    /// Guest-physical start address.
    pub phys: u64,
    /// Size in bytes.
    pub size: u64,
}

impl ArenaReservation {
    /// The default: 64 MiB at 384 MiB, inside the default 512 MiB guest.
    pub const DEFAULT: ArenaReservation = ArenaReservation {
        phys: 384 << 20,
        size: 64 << 20,
    };

    /// The `memmap=` kernel parameter for this range.
    pub fn kernel_param(&self) -> String {
        format!("memmap={}K${:#x}", self.size >> 10, self.phys)
    }

    /// The rio.ko module parameters for this range.
    pub fn module_params(&self) -> String {
        format!("arena_phys={:#x} arena_size={:#x}", self.phys, self.size)
    }
}

/// Where the build put the kernel and the initramfs.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The gzipped cpio initramfs.
    pub initramfs: PathBuf,
}

/// Which test kernel: the fast one, or the debug one (lockdep, KASAN, Rust debug checks:
/// `qemu/kernel-debug.config`), each with the initramfs whose rio.ko was built for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `$RIO_CACHE/kbuild-current`, `build/initramfs.cpio.gz`.
    Fast,
    /// `$RIO_CACHE/kbuild-debug-current`, `build/initramfs-debug.cpio.gz`.
    Debug,
}

impl Flavour {
    /// `RIO_KERNEL_FLAVOUR` (`fast` or `debug`), defaulting to `fast`.
    pub fn from_env() -> Result<Flavour> {
        match std::env::var("RIO_KERNEL_FLAVOUR").as_deref() {
            Err(_) | Ok("") | Ok("fast") => Ok(Flavour::Fast),
            Ok("debug") => Ok(Flavour::Debug),
            Ok(other) => Err(VmError::Config(format!(
                "RIO_KERNEL_FLAVOUR={other:?}: expected 'fast' or 'debug'"
            ))),
        }
    }
}

impl Artifacts {
    /// Finds the artifacts: `RIO_KERNEL` and `RIO_INITRAMFS` if set, else those of the
    /// flavour `RIO_KERNEL_FLAVOUR` names (see [`Artifacts::locate_flavour`]).
    pub fn locate() -> Result<Artifacts> {
        Self::locate_flavour(Flavour::from_env()?)
    }

    /// Finds the artifacts of `flavour`: `RIO_KERNEL` and `RIO_INITRAMFS` if set, else the
    /// kernel cache (`$RIO_CACHE/kbuild-current` or `kbuild-debug-current`, default cache
    /// `/var/cache/rio-build`) and `<repo>/build/initramfs.cpio.gz` (or
    /// `initramfs-debug.cpio.gz`), where the repo is `RIO_ROOT` or found above the current
    /// directory.
    pub fn locate_flavour(flavour: Flavour) -> Result<Artifacts> {
        let cache = std::env::var_os("RIO_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/rio-build"));
        let (kdir, ramfs) = match flavour {
            Flavour::Fast => ("kbuild-current", "build/initramfs.cpio.gz"),
            Flavour::Debug => ("kbuild-debug-current", "build/initramfs-debug.cpio.gz"),
        };
        let kernel = std::env::var_os("RIO_KERNEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache.join(kdir).join("arch/x86/boot/bzImage"));
        let initramfs = match std::env::var_os("RIO_INITRAMFS") {
            Some(p) => PathBuf::from(p),
            None => repo_root()?.join(ramfs),
        };
        let a = Artifacts { kernel, initramfs };
        a.check()?;
        Ok(a)
    }

    fn check(&self) -> Result<()> {
        if !self.kernel.is_file() {
            return Err(VmError::MissingArtifact {
                what: "kernel image",
                path: self.kernel.clone(),
                hint: "run 'make kernel'",
            });
        }
        if !self.initramfs.is_file() {
            return Err(VmError::MissingArtifact {
                what: "initramfs",
                path: self.initramfs.clone(),
                hint: "run 'make initramfs'",
            });
        }
        Ok(())
    }
}

/// The repository root: `RIO_ROOT`, or the nearest directory above the current one that
/// holds `qemu/kernel.config`.
pub fn repo_root() -> Result<PathBuf> {
    if let Some(r) = std::env::var_os("RIO_ROOT") {
        return Ok(PathBuf::from(r));
    }
    let cwd = std::env::current_dir().map_err(VmError::io("current directory"))?;
    let mut dir: &Path = &cwd;
    loop {
        if dir.join("qemu/kernel.config").is_file() {
            return Ok(dir.to_path_buf());
        }
        dir = dir.parent().ok_or_else(|| {
            VmError::Config(format!(
                "cannot find the repository (qemu/kernel.config) above {}; set RIO_ROOT",
                cwd.display()
            ))
        })?;
    }
}

/// A virtio disk attached to the guest. They appear in order as /dev/vda, /dev/vdb, ...
#[derive(Debug, Clone)]
pub struct Disk {
    /// Raw image file on the host.
    pub path: PathBuf,
}

/// Everything needed to start a guest.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Kernel and initramfs.
    pub artifacts: Artifacts,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub cpus: u32,
    /// The file backing guest RAM. It persists across QEMU processes: starting a VM on an
    /// existing file is a warm boot; deleting it first is a cold boot (power loss).
    pub ram_file: PathBuf,
    /// The arena reservation, if any.
    pub arena: Option<ArenaReservation>,
    /// Virtio disks.
    pub disks: Vec<Disk>,
    /// Extra kernel command-line words.
    pub append: Vec<String>,
    /// Directory for sockets and console logs.
    pub workdir: PathBuf,
    /// How long a boot may take before the runner gives up.
    pub boot_timeout: Duration,
    /// Exit QEMU instead of rebooting (after a panic or `reboot`).
    pub no_reboot: bool,
    /// Make every write to disk `.0` (an index into `disks`) that touches 512-byte sector
    /// `.1` fail with EIO, through QEMU's blkdebug driver: a disk that breaks on purpose.
    pub fail_writes_at: Option<(usize, u64)>,
}

impl VmConfig {
    /// A configuration with the defaults (512 MiB, 2 CPUs, the default arena), keeping its
    /// sockets, logs and RAM file in `workdir`.
    pub fn new(artifacts: Artifacts, workdir: impl Into<PathBuf>) -> VmConfig {
        let workdir = workdir.into();
        VmConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            artifacts,
            memory_mib: 512,
            cpus: 2,
            ram_file: workdir.join("guest-ram"),
            arena: Some(ArenaReservation::DEFAULT),
            disks: Vec::new(),
            append: Vec::new(),
            workdir,
            boot_timeout: Duration::from_secs(60),
            no_reboot: false,
            fail_writes_at: None,
        }
    }

    /// Checks that the pieces fit together.
    pub fn validate(&self) -> Result<()> {
        self.artifacts.check()?;
        if self.memory_mib < 128 {
            return Err(VmError::Config(format!(
                "{} MiB of guest RAM is too little (at least 128)",
                self.memory_mib
            )));
        }
        if let Some(a) = self.arena {
            let ram = self.memory_mib << 20;
            if a.size == 0 || a.phys % 4096 != 0 || a.size % 4096 != 0 {
                return Err(VmError::Config(format!(
                    "arena {:#x}+{:#x} must be non-empty and page aligned",
                    a.phys, a.size
                )));
            }
            // Keep the arena inside low RAM (below the 3 GiB PCI hole) so that its file
            // offset equals its physical address.
            if a.phys
                .checked_add(a.size)
                .is_none_or(|end| end > ram.min(3 << 30))
            {
                return Err(VmError::Config(format!(
                    "arena {:#x}+{:#x} does not fit in {} MiB of guest RAM",
                    a.phys, a.size, self.memory_mib
                )));
            }
        }
        Ok(())
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> String {
        let mut words = vec![
            "console=ttyS0".to_string(),
            "rdinit=/init".to_string(),
            "panic=1".to_string(),
            "oops=panic".to_string(),
            "nokaslr".to_string(),
            "no_hash_pointers".to_string(),
            "tsc=unstable".to_string(),
            // The lockup detectors panic (hangs become crashes safe sync can save); under
            // TCG on a loaded host a vCPU can stall for seconds, so give them margin: a
            // hard lockup after 20 s, a soft lockup after 40 s.
            "watchdog_thresh=20".to_string(),
            // Room for a crash kernel (safe sync at panic time: `rio crashkernel load`).
            "crashkernel=96M".to_string(),
        ];
        if let Some(a) = self.arena {
            words.push(a.kernel_param());
            words.push(format!("rio_arena={:#x},{:#x}", a.phys, a.size));
        }
        words.extend(self.append.iter().cloned());
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig::new(
            Artifacts {
                kernel: PathBuf::from("/nonexistent/bzImage"),
                initramfs: PathBuf::from("/nonexistent/initramfs"),
            },
            "/tmp/riovm-unit",
        )
    }

    #[test]
    fn cmdline_reserves_the_arena() {
        let line = cfg().cmdline();
        assert!(line.contains("memmap=65536K$0x18000000"), "{line}");
        assert!(line.contains("rio_arena=0x18000000,0x4000000"), "{line}");
        assert!(line.contains("console=ttyS0"));
    }

    #[test]
    fn arena_must_fit_and_be_aligned() {
        let mut c = cfg();
        c.arena = Some(ArenaReservation {
            phys: 500 << 20,
            size: 64 << 20,
        });
        assert!(matches!(
            c.validate(),
            Err(VmError::MissingArtifact { .. }) | Err(VmError::Config(_))
        ));
        // Artifacts are checked first; check the arena rules on their own.
        c.artifacts = Artifacts {
            kernel: "/bin/sh".into(),
            initramfs: "/bin/sh".into(),
        };
        assert!(matches!(c.validate(), Err(VmError::Config(m)) if m.contains("does not fit")));
        c.arena = Some(ArenaReservation {
            phys: (384 << 20) + 12,
            size: 64 << 20,
        });
        assert!(matches!(c.validate(), Err(VmError::Config(m)) if m.contains("page aligned")));
        c.arena = Some(ArenaReservation::DEFAULT);
        assert!(c.validate().is_ok());
        c.memory_mib = 64;
        assert!(matches!(c.validate(), Err(VmError::Config(m)) if m.contains("too little")));
    }
}
