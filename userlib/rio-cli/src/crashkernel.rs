//! Safe sync at panic time: load a crash kernel (kexec on panic) whose only job is to load
//! rio.ko on the arena the dead kernel left, which writes every dirty page to the backing
//! disk, and to reboot.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// `KEXEC_FILE_ON_CRASH` from include/uapi/linux/kexec.h.
const KEXEC_FILE_ON_CRASH: libc::c_ulong = 0x2;

/// The crash kernel's command line for the arena `phys`/`size` and backing device
/// `major:minor`, with the running kernel's interrupt-routing choices (`acpi=`, `pci=`
/// words of `running`, its command line): the crash kernel boots on the same machine, and
/// its disk must get its interrupts the way the running kernel's did.
pub fn cmdline(phys: u64, size: u64, major: u32, minor: u32, running: &str) -> String {
    let mut c = format!(
        "console=ttyS0 rdinit=/init panic=1 nokaslr maxcpus=1 reset_devices \
         rio_arena={phys:#x},{size:#x} rio_backing={major}:{minor}"
    );
    for w in running
        .split_ascii_whitespace()
        .filter(|w| w.starts_with("acpi=") || w.starts_with("pci="))
    {
        c.push(' ');
        c.push_str(w);
    }
    c
}

/// `major:minor` of a block device node.
pub fn device_numbers(dev: &Path) -> Result<(u32, u32)> {
    let md = std::fs::metadata(dev).with_context(|| format!("stat {}", dev.display()))?;
    if !std::os::unix::fs::FileTypeExt::is_block_device(&md.file_type()) {
        bail!("{} is not a block device", dev.display());
    }
    let rdev = md.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

/// Loads `kernel` and `initrd` as the crash kernel with `cmdline`.
pub fn load(kernel: &Path, initrd: &Path, cmdline: &str) -> Result<()> {
    let k = File::open(kernel).with_context(|| format!("opening {}", kernel.display()))?;
    let i = File::open(initrd).with_context(|| format!("opening {}", initrd.display()))?;
    let c = CString::new(cmdline).context("the command line has a NUL byte")?;
    // SAFETY: both fds are open for the duration of the call; `c` is NUL terminated and its
    // length passed includes the NUL, as kexec_file_load(2) requires.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            k.as_raw_fd(),
            i.as_raw_fd(),
            c.as_bytes_with_nul().len() as libc::c_ulong,
            c.as_ptr(),
            KEXEC_FILE_ON_CRASH,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOMEM) => {
                " (is memory reserved for it? boot with crashkernel=96M)"
            }
            Some(libc::EPERM) => " (needs root)",
            _ => "",
        };
        bail!("kexec_file_load failed: {e}{hint}");
    }
    Ok(())
}

/// Whether a crash kernel is loaded.
pub fn loaded() -> Result<bool> {
    let s = std::fs::read_to_string("/sys/kernel/kexec_crash_loaded")
        .context("reading /sys/kernel/kexec_crash_loaded")?;
    Ok(s.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_cmdline_names_arena_and_backing() {
        let c = cmdline(0x1800_0000, 0x400_0000, 254, 0, "");
        assert!(c.contains("rio_arena=0x18000000,0x4000000"));
        assert!(c.contains("rio_backing=254:0"));
        assert!(c.contains("maxcpus=1"));
    }

    #[test]
    fn crash_cmdline_keeps_the_running_kernels_interrupt_routing() {
        let c = cmdline(
            0x1800_0000,
            0x400_0000,
            254,
            0,
            "console=ttyS0 acpi=noirq quiet pci=nomsi\n",
        );
        assert!(c.ends_with(" acpi=noirq pci=nomsi"), "{c}");
        assert!(!c.contains("quiet"));
        assert_eq!(
            cmdline(1, 1, 1, 1, "console=ttyS0 quiet")
                .matches("console=")
                .count(),
            1
        );
    }

    #[test]
    fn a_regular_file_is_not_a_block_device() {
        assert!(
            device_numbers(Path::new("/etc/hostname")).is_err()
                || !Path::new("/etc/hostname").exists()
        );
    }
}
