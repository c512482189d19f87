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

/// A legacy persistent-memory region, reserved on the kernel command line with
/// `memmap=SIZE!ADDR`: the kernel marks it e820 type 12 and the nvdimm drivers turn it into
/// `/dev/pmem0` (the pmem-dax peer of Rio: ext4 `-o dax` on it). Like the arena, it lives in
/// the RAM file, so a warm reboot keeps it and discarding the file (power loss) wipes it.
/// Unlike the arena it is in the kernel's direct map (writable) once the pmem driver binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmemReservation {
    /// Guest-physical start address.
    pub phys: u64,
    /// Size in bytes.
    pub size: u64,
}

impl PmemReservation {
    /// The default: 256 MiB at 512 MiB, above the arena (384 MiB + 64 MiB), in a guest of
    /// [`PmemReservation::GUEST_MIB`]. The kernel reserves the crash kernel
    /// (`crashkernel=96M`) in usable RAM only, never in an e820 type-12 range: in this
    /// guest it lands at the top of the RAM above the region (896 MiB to 992 MiB, seen in
    /// `/proc/iomem`), below the firmware's tables, which SeaBIOS puts at the top of RAM.
    pub const DEFAULT: PmemReservation = PmemReservation {
        phys: 512 << 20,
        size: 256 << 20,
    };

    /// Guest RAM in MiB for the default reservation.
    pub const GUEST_MIB: u64 = 1024;

    /// Alignment of start and size: 2 MiB, the kernel's memory-hotplug subsection (fsdax
    /// maps the region with `memremap_pages`) and the fsdax namespace's page-table size.
    pub const ALIGN: u64 = 2 << 20;

    /// RAM the firmware needs above the region (its tables at the top of RAM).
    pub const TOP_MARGIN: u64 = 16 << 20;

    /// The `memmap=` kernel parameter for this range (`!`: persistent memory).
    pub fn kernel_param(&self) -> String {
        format!("memmap={}K!{:#x}", self.size >> 10, self.phys)
    }

    /// The guest's copy of the range (`rio_pmem=PHYS,SIZE`), for its scripts.
    pub fn guest_param(&self) -> String {
        format!("rio_pmem={:#x},{:#x}", self.phys, self.size)
    }

    /// Whether this range and `[phys, phys + size)` share a byte.
    pub fn overlaps(&self, phys: u64, size: u64) -> bool {
        self.phys < phys.saturating_add(size) && phys < self.phys.saturating_add(self.size)
    }
}

/// Where the build put the kernel and the initramfs.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The cpio initramfs (plain or compressed, or several concatenated).
    pub initramfs: PathBuf,
}

/// Which test kernel: the fast one, or the debug one (lockdep, KASAN, Rust debug checks:
/// `qemu/kernel-debug.config`), each with the initramfs whose rio.ko was built for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `$RIO_CACHE/kbuild-current`, `build/initramfs.cpio`.
    Fast,
    /// `$RIO_CACHE/kbuild-debug-current`, `build/initramfs-debug.cpio`.
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
    /// `/var/cache/rio-build`) and `<repo>/build/initramfs.cpio` (or
    /// `initramfs-debug.cpio`), where the repo is `RIO_ROOT` or found above the current
    /// directory.
    pub fn locate_flavour(flavour: Flavour) -> Result<Artifacts> {
        let cache = std::env::var_os("RIO_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/rio-build"));
        let (kdir, ramfs) = match flavour {
            Flavour::Fast => ("kbuild-current", "build/initramfs.cpio"),
            Flavour::Debug => ("kbuild-debug-current", "build/initramfs-debug.cpio"),
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
    /// A persistent-memory region (`memmap=SIZE!ADDR`), if any: see [`VmConfig::with_pmem`].
    pub pmem: Option<PmemReservation>,
    /// Virtio disks.
    pub disks: Vec<Disk>,
    /// A virtio-net NIC on a [`crate::NetHub`]'s network, if any.
    pub net: Option<crate::net::NetConfig>,
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
            pmem: None,
            disks: Vec::new(),
            net: None,
            append: Vec::new(),
            workdir,
            boot_timeout: Duration::from_secs(60),
            no_reboot: false,
            fail_writes_at: None,
        }
    }

    /// This configuration with the default persistent-memory region
    /// ([`PmemReservation::DEFAULT`]), and guest RAM grown to hold it
    /// ([`PmemReservation::GUEST_MIB`]) if it is smaller.
    pub fn with_pmem(mut self) -> VmConfig {
        self.pmem = Some(PmemReservation::DEFAULT);
        self.memory_mib = self.memory_mib.max(PmemReservation::GUEST_MIB);
        self
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
        if let Some(n) = self.net {
            n.validate()?;
        }
        if let Some(p) = self.pmem {
            let ram = self.memory_mib << 20;
            if p.size == 0
                || p.phys % PmemReservation::ALIGN != 0
                || p.size % PmemReservation::ALIGN != 0
            {
                return Err(VmError::Config(format!(
                    "pmem {:#x}+{:#x} must be non-empty and 2 MiB aligned",
                    p.phys, p.size
                )));
            }
            // Low RAM only (file offset = physical address), and below the firmware's
            // tables at the top of RAM.
            if p.phys
                .checked_add(p.size)
                .and_then(|end| end.checked_add(PmemReservation::TOP_MARGIN))
                .is_none_or(|end| end > ram.min(3 << 30))
            {
                return Err(VmError::Config(format!(
                    "pmem {:#x}+{:#x} does not fit in {} MiB of guest RAM with {} MiB above it for the firmware",
                    p.phys,
                    p.size,
                    self.memory_mib,
                    PmemReservation::TOP_MARGIN >> 20
                )));
            }
            if p.phys < (128 << 20) {
                return Err(VmError::Config(format!(
                    "pmem at {:#x} would take the low 128 MiB the kernel boots in",
                    p.phys
                )));
            }
            if let Some(a) = self.arena {
                if p.overlaps(a.phys, a.size) {
                    return Err(VmError::Config(format!(
                        "pmem {:#x}+{:#x} overlaps the arena {:#x}+{:#x}",
                        p.phys, p.size, a.phys, a.size
                    )));
                }
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
            // PCI interrupts routed by the PIIX router, not ACPI's interrupt links: on the
            // debug kernel (lockdep, KASAN) under TCG, evaluating the links took 5 to 10 s
            // of every boot with a virtio device (fast kernel: no difference).
            "acpi=noirq".to_string(),
            // The initramfs is unpacked uncompressed, and the archive stays in memory until
            // it is unpacked: with the fio add-on (90 MiB of programs and libraries) the
            // default rootfs limit (half of what is free then) was too small.
            "initramfs_options=size=75%".to_string(),
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
        if let Some(p) = self.pmem {
            words.push(p.kernel_param());
            words.push(p.guest_param());
        }
        if let Some(n) = self.net {
            words.push(n.kernel_param());
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

    #[test]
    fn no_pmem_unless_asked() {
        let c = cfg();
        assert_eq!(c.pmem, None);
        assert!(!c.cmdline().contains('!'), "{}", c.cmdline());
        assert!(!c.cmdline().contains("rio_pmem"));
    }

    #[test]
    fn cmdline_reserves_pmem_beside_the_arena() {
        let c = cfg().with_pmem();
        assert_eq!(c.memory_mib, 1024);
        let line = c.cmdline();
        // 256 MiB of e820 type 12 at 512 MiB, and the arena as before.
        assert!(line.contains(" memmap=262144K!0x20000000"), "{line}");
        assert!(line.contains(" rio_pmem=0x20000000,0x10000000"), "{line}");
        assert!(line.contains("memmap=65536K$0x18000000"), "{line}");
        assert!(line.contains("crashkernel=96M"), "{line}");
        // A bigger guest stays as big.
        let mut big = cfg();
        big.memory_mib = 2048;
        assert_eq!(big.with_pmem().memory_mib, 2048);
    }

    #[test]
    fn pmem_must_fit_be_aligned_and_miss_the_arena() {
        let mut c = cfg().with_pmem();
        c.artifacts = Artifacts {
            kernel: "/bin/sh".into(),
            initramfs: "/bin/sh".into(),
        };
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        let bad = |c: &VmConfig, what: &str| {
            assert!(
                matches!(c.validate(), Err(VmError::Config(ref m)) if m.contains(what)),
                "{:?} should say {what:?}",
                c.validate()
            );
        };
        let mut d = c.clone();
        d.memory_mib = 512;
        bad(&d, "does not fit");
        // Flush with the top of RAM: no room for the firmware's tables.
        d.memory_mib = 768;
        bad(&d, "for the firmware");
        d.memory_mib = 1024;
        d.pmem = Some(PmemReservation {
            phys: (512 << 20) + 4096,
            size: 256 << 20,
        });
        bad(&d, "2 MiB aligned");
        d.pmem = Some(PmemReservation {
            phys: 512 << 20,
            size: 0,
        });
        bad(&d, "non-empty");
        d.pmem = Some(PmemReservation {
            phys: 416 << 20,
            size: 64 << 20,
        });
        bad(&d, "overlaps the arena");
        d.pmem = Some(PmemReservation {
            phys: 320 << 20,
            size: 66 << 20,
        });
        bad(&d, "overlaps the arena");
        d.pmem = Some(PmemReservation {
            phys: 64 << 20,
            size: 64 << 20,
        });
        bad(&d, "low 128 MiB");
        // Right below the arena is fine.
        d.pmem = Some(PmemReservation {
            phys: 256 << 20,
            size: 128 << 20,
        });
        assert!(d.validate().is_ok(), "{:?}", d.validate());
        assert!(PmemReservation::DEFAULT.overlaps(767 << 20, 1));
        assert!(!PmemReservation::DEFAULT.overlaps(768 << 20, 1));
        assert!(!PmemReservation::DEFAULT.overlaps(0, 512 << 20));
    }
}
