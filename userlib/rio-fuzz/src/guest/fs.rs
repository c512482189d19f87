//! riofs in the guest: mounting, the starting tree, the system calls of the riofs ops, and
//! reading the whole tree back (as root) for verify.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::sys::errno;
use crate::fsmodel::{Entry, FileStat, FS_OBJECT, FS_SIZE, MOUNT, S_IFDIR, S_IFLNK, TOPS};

fn cpath(rel: &str) -> CString {
    let p = if rel.is_empty() {
        MOUNT.to_string()
    } else {
        format!("{MOUNT}/{rel}")
    };
    CString::new(p).unwrap_or_default()
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn check(r: libc::c_int) -> Result<(), i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// `open` of a path below the mount point.
pub fn open(rel: &str, flags: i32, mode: u32) -> Result<OwnedFd, i32> {
    let p = cpath(rel);
    // SAFETY: `p` is a valid NUL-terminated string for the call.
    let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ftruncate`.
pub fn ftruncate(fd: RawFd, size: u64) -> Result<(), i32> {
    // SAFETY: ftruncate takes a descriptor and a length.
    check(unsafe { libc::ftruncate(fd, size as libc::off_t) })
}

fn stat_of(st: &libc::stat) -> FileStat {
    FileStat {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink as u32,
        size: st.st_size as u64,
    }
}

/// `fstat`.
pub fn fstat(fd: RawFd) -> Result<FileStat, i32> {
    // SAFETY: an all-zero `stat` is a valid value of the plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid `stat` to write into.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(stat_of(&st))
}

/// `stat` or `lstat`.
pub fn stat(rel: &str, follow: bool) -> Result<FileStat, i32> {
    let p = cpath(rel);
    // SAFETY: an all-zero `stat` is a valid value of the plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a valid string and `st` a valid `stat` to write into.
    let r = unsafe {
        if follow {
            libc::stat(p.as_ptr(), &mut st)
        } else {
            libc::lstat(p.as_ptr(), &mut st)
        }
    };
    check(r)?;
    Ok(stat_of(&st))
}

/// `truncate`.
pub fn truncate(rel: &str, size: u64) -> Result<(), i32> {
    let p = cpath(rel);
    // SAFETY: `p` is a valid NUL-terminated string.
    check(unsafe { libc::truncate(p.as_ptr(), size as libc::off_t) })
}

/// `unlink`.
pub fn unlink(rel: &str) -> Result<(), i32> {
    let p = cpath(rel);
    // SAFETY: `p` is a valid NUL-terminated string.
    check(unsafe { libc::unlink(p.as_ptr()) })
}

/// `rmdir`.
pub fn rmdir(rel: &str) -> Result<(), i32> {
    let p = cpath(rel);
    // SAFETY: `p` is a valid NUL-terminated string.
    check(unsafe { libc::rmdir(p.as_ptr()) })
}

/// `mkdir`.
pub fn mkdir(rel: &str, mode: u32) -> Result<(), i32> {
    let p = cpath(rel);
    // SAFETY: `p` is a valid NUL-terminated string.
    check(unsafe { libc::mkdir(p.as_ptr(), mode as libc::mode_t) })
}

/// `rename`.
pub fn rename(from: &str, to: &str) -> Result<(), i32> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: both are valid NUL-terminated strings.
    check(unsafe { libc::rename(a.as_ptr(), b.as_ptr()) })
}

/// `link` (`linkat` without `AT_SYMLINK_FOLLOW`).
pub fn link(from: &str, to: &str) -> Result<(), i32> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: both are valid NUL-terminated strings.
    check(unsafe { libc::linkat(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), 0) })
}

/// `symlink(target, rel)`.
pub fn symlink(target: &str, rel: &str) -> Result<(), i32> {
    let (t, p) = (cstr(target), cpath(rel));
    // SAFETY: both are valid NUL-terminated strings.
    check(unsafe { libc::symlink(t.as_ptr(), p.as_ptr()) })
}

/// `chmod`.
pub fn chmod(rel: &str, mode: u32) -> Result<(), i32> {
    let p = cpath(rel);
    // SAFETY: `p` is a valid NUL-terminated string.
    check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })
}

/// `chown(rel, uid, gid)` (`u32::MAX`: unchanged).
pub fn chown(rel: &str, uid: u32, gid: u32) -> Result<(), i32> {
    let p = cpath(rel);
    // SAFETY: `p` is a valid NUL-terminated string.
    check(unsafe { libc::chown(p.as_ptr(), uid, gid) })
}

/// Whether the riofs is mounted.
pub fn mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(MOUNT)))
        .unwrap_or(false)
}

/// Unmounts the riofs (if mounted), waiting for descriptors of exiting processes to go.
pub fn unmount() -> Result<(), String> {
    let p = cstr(MOUNT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while mounted() {
        // SAFETY: `p` is a valid NUL-terminated string.
        if unsafe { libc::umount2(p.as_ptr(), 0) } == 0 {
            continue;
        }
        let e = errno();
        if Instant::now() >= deadline {
            return Err(format!("umount {MOUNT}: errno {e}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Mounts the riofs (`create`: with `size=`, which creates and formats the object).
pub fn mount(create: bool) -> Result<(), String> {
    std::fs::create_dir_all(MOUNT).map_err(|e| format!("mkdir {MOUNT}: {e}"))?;
    let (src, dst, ty) = (cstr(FS_OBJECT), cstr(MOUNT), cstr("riofs"));
    let opts = cstr(&format!("size={FS_SIZE}"));
    // SAFETY: all strings are valid and NUL-terminated; the data is a mount option string.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            ty.as_ptr(),
            0,
            if create {
                opts.as_ptr().cast()
            } else {
                std::ptr::null()
            },
        )
    };
    if r != 0 {
        return Err(format!(
            "mount -t riofs {FS_OBJECT} {MOUNT}: errno {}",
            errno()
        ));
    }
    Ok(())
}

/// The starting tree ([`TOPS`]) and the sysctls the model assumes (`fs.protected_*` off).
pub fn setup() -> Result<(), String> {
    for s in [
        "protected_symlinks",
        "protected_hardlinks",
        "protected_regular",
        "protected_fifos",
    ] {
        let p = format!("/proc/sys/fs/{s}");
        if std::path::Path::new(&p).exists() {
            std::fs::write(&p, "0").map_err(|e| format!("write {p}: {e}"))?;
        }
    }
    for (name, mode, owner) in TOPS {
        let e = |what: &str, e: i32| format!("{what} {name}: errno {e}");
        mkdir(name, 0o700).map_err(|x| e("mkdir", x))?;
        chown(name, owner, owner).map_err(|x| e("chown", x))?;
        chmod(name, mode).map_err(|x| e("chmod", x))?;
    }
    Ok(())
}

/// The whole tree as root sees it, sorted by path (directory sizes as 0).
pub fn listing() -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    let root = stat("", false).map_err(|e| format!("lstat {MOUNT}: errno {e}"))?;
    out.push(Entry {
        path: String::new(),
        st: FileStat { size: 0, ..root },
        data: Vec::new(),
    });
    while let Some(dir) = stack.pop() {
        let full = if dir.is_empty() {
            MOUNT.to_string()
        } else {
            format!("{MOUNT}/{dir}")
        };
        let rd = std::fs::read_dir(&full).map_err(|e| format!("readdir {full}: {e}"))?;
        for ent in rd {
            let ent = ent.map_err(|e| format!("readdir {full}: {e}"))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let mut st = stat(&rel, false).map_err(|e| format!("lstat {rel}: errno {e}"))?;
            let path = format!("{MOUNT}/{rel}");
            let data = match st.mode & 0o170000 {
                S_IFDIR => {
                    st.size = 0;
                    stack.push(rel.clone());
                    Vec::new()
                }
                S_IFLNK => std::fs::read_link(&path)
                    .map_err(|e| format!("readlink {path}: {e}"))?
                    .into_os_string()
                    .into_encoded_bytes(),
                _ => std::fs::read(&path).map_err(|e| format!("read {path}: {e}"))?,
            };
            out.push(Entry {
                path: rel,
                st,
                data,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
