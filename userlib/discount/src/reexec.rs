//! Making the address space the same in every run.
//!
//! Recovery copies the checkpointed `.data`, `.bss`, heap and stack back to the addresses
//! they had, and the restored memory is full of pointers to code, libraries, the stack
//! and the environment strings. So every run of a recoverable program must load
//! everything at the same addresses and build the same initial stack:
//!
//! * address-space randomization is switched off for the process with
//!   `personality(ADDR_NO_RANDOMIZE)` and a re-`execve` of itself (the personality only
//!   takes effect at exec), so the executable, the dynamic linker, libc, the vDSO and
//!   the stack land at fixed addresses;
//! * the initial stack holds the argument and environment strings and the auxiliary
//!   vector, so the re-exec always uses the *first* run's executable path, arguments,
//!   environment, working directory and stack limit (which decides where `mmap` puts
//!   the libraries), saved in the state directory's `exec` file. A restart after a crash
//!   thus re-executes the program exactly as it was first started, whatever the command
//!   line of the restart;
//! * `DC_EXEC_STAGE=1` marks the re-executed image (it is added in every run, so it is
//!   part of the identical layout, and removed from the environment at once).
//!
//! The executable's identity (device, inode, size, mtime) is recorded too, and a restart
//! with a different binary is refused.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable that marks the re-executed image.
pub const STAGE_VAR: &str = "DC_EXEC_STAGE";

/// How the program was first started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecInfo {
    /// Absolute path of the executable.
    pub exe: Vec<u8>,
    /// Working directory.
    pub cwd: Vec<u8>,
    /// Arguments.
    pub argv: Vec<Vec<u8>>,
    /// Environment (`DC_EXEC_STAGE` excluded).
    pub envp: Vec<Vec<u8>>,
    /// RLIMIT_STACK (cur, max).
    pub rlim: (u64, u64),
    /// Executable identity: dev, ino, size, mtime.
    pub ident: (u64, u64, u64, i64),
}

/// Splits NUL-terminated strings (empty strings are kept: they are arguments too).
fn split_nul(b: &[u8]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = b.split(|&c| c == 0).map(|s| s.to_vec()).collect();
    v.pop();
    v
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

fn ident_of(exe: &Path) -> Result<(u64, u64, u64, i64)> {
    let m = std::fs::metadata(exe).map_err(io("stat executable"))?;
    Ok((m.dev(), m.ino(), m.size(), m.mtime()))
}

impl ExecInfo {
    /// The current process's.
    pub fn current() -> Result<ExecInfo> {
        let exe = std::fs::read_link("/proc/self/exe").map_err(io("readlink /proc/self/exe"))?;
        let cwd = std::env::current_dir().map_err(io("getcwd"))?;
        let argv = split_nul(&std::fs::read("/proc/self/cmdline").map_err(io("read cmdline"))?);
        let envp: Vec<Vec<u8>> =
            split_nul(&std::fs::read("/proc/self/environ").map_err(io("read environ"))?)
                .into_iter()
                .filter(|e| !e.starts_with(format!("{STAGE_VAR}=").as_bytes()))
                .collect();
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: rl is a valid rlimit to fill.
        unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut rl) };
        let ident = ident_of(&exe)?;
        Ok(ExecInfo {
            exe: exe.as_os_str().as_bytes().to_vec(),
            cwd: cwd.as_os_str().as_bytes().to_vec(),
            argv,
            envp,
            rlim: (rl.rlim_cur, rl.rlim_max),
            ident,
        })
    }

    /// Serializes (NUL-separated fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = b"DCEXEC1\0".to_vec();
        let mut put = |b: &[u8]| {
            out.extend_from_slice(b);
            out.push(0);
        };
        put(&self.exe);
        put(&self.cwd);
        put(format!("{} {}", self.rlim.0, self.rlim.1).as_bytes());
        put(format!(
            "{} {} {} {}",
            self.ident.0, self.ident.1, self.ident.2, self.ident.3
        )
        .as_bytes());
        put(self.argv.len().to_string().as_bytes());
        for a in &self.argv {
            put(a);
        }
        put(self.envp.len().to_string().as_bytes());
        for e in &self.envp {
            put(e);
        }
        out
    }

    /// Parses [`ExecInfo::encode`]'s output.
    pub fn decode(b: &[u8]) -> Result<ExecInfo> {
        let bad = |w: &str| Error::Corrupt(format!("exec file: {w}"));
        let mut it = b.split(|&c| c == 0);
        if it.next() != Some(b"DCEXEC1") {
            return Err(bad("magic"));
        }
        let mut next = || it.next().map(|s| s.to_vec()).ok_or(bad("truncated"));
        let exe = next()?;
        let cwd = next()?;
        let nums = |v: Vec<u8>| -> Result<Vec<i128>> {
            String::from_utf8_lossy(&v)
                .split_whitespace()
                .map(|x| x.parse::<i128>().map_err(|_| bad("number")))
                .collect()
        };
        let rl = nums(next()?)?;
        let id = nums(next()?)?;
        if rl.len() != 2 || id.len() != 4 {
            return Err(bad("numbers"));
        }
        let argc = nums(next()?)?.first().copied().ok_or(bad("argc"))? as usize;
        let mut argv = Vec::new();
        for _ in 0..argc {
            argv.push(next()?);
        }
        let envc = nums(next()?)?.first().copied().ok_or(bad("envc"))? as usize;
        let mut envp = Vec::new();
        for _ in 0..envc {
            envp.push(next()?);
        }
        Ok(ExecInfo {
            exe,
            cwd,
            argv,
            envp,
            rlim: (rl[0] as u64, rl[1] as u64),
            ident: (id[0] as u64, id[1] as u64, id[2] as u64, id[3] as i64),
        })
    }

    /// Writes to `dir/exec` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join("exec.tmp");
        std::fs::write(&tmp, self.encode()).map_err(io("write exec file"))?;
        std::fs::rename(&tmp, dir.join("exec")).map_err(io("rename exec file"))
    }

    /// Reads `dir/exec`.
    pub fn load(dir: &Path) -> Result<ExecInfo> {
        ExecInfo::decode(&std::fs::read(dir.join("exec")).map_err(io("read exec file"))?)
    }

    /// Refuses a different executable.
    pub fn check_same_binary(&self) -> Result<()> {
        let now = ident_of(Path::new(OsStr::from_bytes(&self.exe)))?;
        if now != self.ident {
            return Err(Error::Mismatch(format!(
                "{} changed since the checkpoint was taken",
                String::from_utf8_lossy(&self.exe)
            )));
        }
        Ok(())
    }

    /// Re-executes the program as recorded, with ASLR off. Returns only on failure.
    pub fn exec(&self) -> Error {
        let cstr = |b: &[u8]| {
            CString::new(b.to_vec()).map_err(|_| Error::Corrupt("NUL in exec file".into()))
        };
        let run = || -> Result<Error> {
            let exe = cstr(&self.exe)?;
            let argv: Vec<CString> = self.argv.iter().map(|a| cstr(a)).collect::<Result<_>>()?;
            let mut envp: Vec<CString> =
                self.envp.iter().map(|e| cstr(e)).collect::<Result<_>>()?;
            envp.push(cstr(format!("{STAGE_VAR}=1").as_bytes())?);
            let mut av: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            av.push(std::ptr::null());
            let mut ev: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
            ev.push(std::ptr::null());
            std::env::set_current_dir(PathBuf::from(OsStr::from_bytes(&self.cwd)))
                .map_err(io("chdir to the first run's directory"))?;
            let rl = libc::rlimit {
                rlim_cur: self.rlim.0,
                rlim_max: self.rlim.1,
            };
            // SAFETY: setrlimit/personality take plain values; execve gets NUL-terminated
            // strings and NULL-terminated arrays that outlive the call.
            unsafe {
                libc::setrlimit(libc::RLIMIT_STACK, &rl);
                let cur = libc::personality(0xffff_ffff);
                if cur >= 0 {
                    libc::personality(
                        (cur as libc::c_ulong | libc::ADDR_NO_RANDOMIZE as libc::c_ulong) as _,
                    );
                }
                let r = crate::sys::sc(
                    libc::SYS_execve,
                    exe.as_ptr() as usize,
                    av.as_ptr() as usize,
                    ev.as_ptr() as usize,
                );
                Ok(Error::sys("execve", -(r as i32)))
            }
        };
        match run() {
            Ok(e) | Err(e) => e,
        }
    }
}

/// Whether this process is the re-executed image (and removes the marker).
pub fn is_stage1() -> bool {
    if std::env::var_os(STAGE_VAR).is_some() {
        // SAFETY: single-threaded at init (checked by the caller); removing our own
        // variable from the environment.
        unsafe { std::env::remove_var(STAGE_VAR) };
        true
    } else {
        false
    }
}

/// Whether address-space randomization is off for this process.
pub fn aslr_off() -> bool {
    // SAFETY: personality(0xffffffff) only queries.
    let p = unsafe { libc::personality(0xffff_ffff) };
    p >= 0 && (p as libc::c_ulong & libc::ADDR_NO_RANDOMIZE as libc::c_ulong) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let e = ExecInfo {
            exe: b"/bin/x".to_vec(),
            cwd: b"/tmp".to_vec(),
            argv: vec![b"x".to_vec(), b"a b".to_vec(), Vec::new()],
            envp: vec![b"A=1".to_vec(), b"B=".to_vec()],
            rlim: (8 << 20, u64::MAX),
            ident: (1, 2, 3, -4),
        };
        assert_eq!(ExecInfo::decode(&e.encode()).unwrap(), e);
        assert!(ExecInfo::decode(b"junk").is_err());
        assert_eq!(
            split_nul(b"a\0\0b\0"),
            vec![b"a".to_vec(), vec![], b"b".to_vec()]
        );
        assert!(split_nul(b"").is_empty());
        let cur = ExecInfo::current().unwrap();
        assert!(!cur.argv.is_empty());
        assert!(!cur.envp.iter().any(|v| v.starts_with(b"DC_EXEC_STAGE=")));
    }
}
