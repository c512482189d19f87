//! The rest of the process's state: `chdir` (recorded, restored on recovery), `mprotect`
//! (recorded, redone), `getpid` (a non-deterministic event: a new process has a new one).

use libc::{c_char, c_int, c_void, size_t};

use super::{active, cbytes, nondeterministic, Entry};
use crate::kstate;
use crate::sys::{libc_ret, sc};

#[cfg(feature = "global")]
mod exported {
    use super::*;

    #[no_mangle]
    pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
        // SAFETY: chdir to the caller's C string.
        let r = unsafe { sc(libc::SYS_chdir, path as usize, 0, 0) };
        if active() && r == 0 {
            let mut e = Entry::enter();
            let ks = e.cx().ks();
            // SAFETY: the caller passes a C string.
            let abs = kstate::absolutize(&ks.cwd, libc::AT_FDCWD, unsafe { cbytes(path) });
            ks.cwd = abs;
        }
        libc_ret(r) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: size_t, prot: c_int) -> c_int {
        // SAFETY: the program's own mprotect call, with its arguments.
        let r = unsafe { sc(libc::SYS_mprotect, addr as usize, len, prot as usize) };
        if active() && r == 0 {
            let mut e = Entry::enter();
            e.cx().ks().prots.push((addr as usize, len, prot));
        }
        libc_ret(r) as c_int
    }

    #[no_mangle]
    pub unsafe extern "C" fn getpid() -> libc::pid_t {
        // SAFETY: getpid has no arguments.
        let r = unsafe { sc(libc::SYS_getpid, 0, 0, 0) };
        if active() {
            let mut e = Entry::enter();
            nondeterministic(e.cx(), "getpid", usize::MAX);
        }
        r as libc::pid_t
    }
}
