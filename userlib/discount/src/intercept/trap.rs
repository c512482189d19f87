//! The SIGSYS handler of Syscall User Dispatch ([`crate::sud`]): every system call the
//! program makes without going through a wrapper (glibc's internal ones: stdio's `write`
//! and `read`, `fopen`'s `openat`, `opendir`'s `getdents64`, ...) lands here.
//!
//! The kernel has rolled the call back: `rax` holds its number and `rdi`, `rsi`, `rdx`,
//! `r10`, `r8`, `r9` its arguments. The handler runs the very handler the wrapper of that
//! call runs (`sys_*` in the sibling modules: one function per system call, so both paths
//! classify an event the same way, thesis 5.2.2-5.2.3), and writes the result into `rax`
//! of the interrupted context; `rt_sigreturn` (through Discount Checking's own restorer,
//! which dispatch never traps) resumes the program after its `syscall` instruction.
//!
//! A call that is neither handled nor on the list of harmless ones ([`harmless`]: queries
//! and calls that change nothing Discount Checking would have to rebuild) is refused
//! with `ENOSYS` and a message on stderr naming it: never performed unrecorded.

use std::sync::atomic::{AtomicU64, Ordering};

use libc::{c_char, c_int, c_uint, c_void};

use super::{files, io, net, process, signals, sysnames, time};
use crate::sud::{self, Allow};
use crate::sys::{self, syscall6, KSigaction};
use crate::vol;

/// Calls already reported as refused (one message per call per run).
static REFUSED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// Refuses system call `nr` (`what` names it, or how it was called): a message on stderr
/// (once per call) and `-ENOSYS` for the program.
pub(super) fn refuse_named(what: &str, nr: i64) -> isize {
    refuse_with(what, nr, libc::ENOSYS)
}

/// [`refuse_named`] with `errno` for the program.
pub(super) fn refuse_with(what: &str, nr: i64, errno: i32) -> isize {
    let i = (nr as usize) % 512;
    let bit = 1u64 << (i % 64);
    if REFUSED[i / 64].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        let mut w = sys::StackWriter::new();
        let _ = std::fmt::Write::write_fmt(
            &mut w,
            format_args!(
                "system call {what} ({nr}) is not supported under Discount Checking \
                 (its effect would not be recovered): refused with {} ({errno})",
                sys::errno_name(errno)
            ),
        );
        crate::diag::diag(w.as_str());
    }
    -(errno as isize)
}

fn refuse(nr: i64) -> isize {
    refuse_named(sysnames::name(nr), nr)
}

/// Calls that change nothing Discount Checking records or would have to rebuild, and
/// whose results are not non-deterministic in a way a protocol must see: performed as
/// they are. (Queries of the file system and of the process; waiting; `futex`, which a
/// single-threaded process only uses on itself; `fsync`.)
pub(super) fn harmless(nr: i64, a: &[usize; 6]) -> bool {
    match nr {
        libc::SYS_fstat
        | libc::SYS_stat
        | libc::SYS_lstat
        | libc::SYS_newfstatat
        | libc::SYS_statx
        | libc::SYS_access
        | libc::SYS_faccessat
        | libc::SYS_faccessat2
        | libc::SYS_readlink
        | libc::SYS_readlinkat
        | libc::SYS_getcwd
        | libc::SYS_getdents
        | libc::SYS_getdents64
        | libc::SYS_statfs
        | libc::SYS_fstatfs
        | libc::SYS_getxattr
        | libc::SYS_lgetxattr
        | libc::SYS_fgetxattr
        | libc::SYS_listxattr
        | libc::SYS_llistxattr
        | libc::SYS_flistxattr
        | libc::SYS_uname
        | libc::SYS_getuid
        | libc::SYS_getgid
        | libc::SYS_geteuid
        | libc::SYS_getegid
        | libc::SYS_getresuid
        | libc::SYS_getresgid
        | libc::SYS_getgroups
        | libc::SYS_getpgrp
        | libc::SYS_getpgid
        | libc::SYS_getsid
        | libc::SYS_getrlimit
        | libc::SYS_getpriority
        | libc::SYS_sched_getaffinity
        | libc::SYS_getcpu
        | libc::SYS_clock_getres
        | libc::SYS_sched_yield
        | libc::SYS_nanosleep
        | libc::SYS_clock_nanosleep
        | libc::SYS_pause
        | libc::SYS_rt_sigsuspend
        | libc::SYS_rt_sigpending
        | libc::SYS_futex
        | libc::SYS_fsync
        | libc::SYS_fdatasync
        | libc::SYS_fadvise64
        | libc::SYS_msync
        | libc::SYS_wait4
        | libc::SYS_waitid
        // Socket queries.
        | libc::SYS_getsockname
        | libc::SYS_getpeername
        | libc::SYS_getsockopt => true,
        // Queries only.
        libc::SYS_prlimit64 => a[2] == 0,
        libc::SYS_brk => a[0] == 0,
        libc::SYS_sigaltstack => a[0] == 0,
        libc::SYS_getitimer => true,
        // Advice that does not change memory contents.
        libc::SYS_madvise => matches!(
            a[2] as c_int,
            libc::MADV_NORMAL
                | libc::MADV_RANDOM
                | libc::MADV_SEQUENTIAL
                | libc::MADV_WILLNEED
                | libc::MADV_DONTDUMP
                | libc::MADV_DODUMP
                | libc::MADV_HUGEPAGE
                | libc::MADV_NOHUGEPAGE
        ),
        // Terminal queries (isatty, the window size, the foreground group), waiting for
        // output to drain (`tcdrain`), discarding what is queued (`tcflush`: nothing to
        // rebuild).
        libc::SYS_ioctl => {
            matches!(
                a[1] as u64,
                0x5401 /* TCGETS */
                | 0x5413 /* TIOCGWINSZ */
                | 0x540f /* TIOCGPGRP */
                | 0x5429 /* TIOCGSID */
                | 0x540b /* TCFLSH */
            ) || (a[1] as u64 == 0x5409 /* TCSBRK */ && a[2] != 0)
        }
        _ => false,
    }
}

/// Handles trapped system call `nr` with arguments `a`; returns the raw result.
///
/// # Safety
/// `a` are the arguments the program passed to `nr` (the kernel checks them when the
/// call is performed; the handlers trust pointers exactly as the kernel's contract for
/// that call says).
unsafe fn dispatch(nr: i64, a: [usize; 6]) -> isize {
    let (i0, i1, i2) = (a[0] as c_int, a[1] as c_int, a[2] as c_int);
    // SAFETY: in every arm, the program's own arguments for the call the arm handles,
    // forwarded to that call's handler, whose contract is that call's.
    unsafe {
        match nr {
            // Input and output (`io`).
            libc::SYS_read => io::sys_read(i0, a[1] as *mut c_void, a[2]),
            libc::SYS_write => io::sys_write(i0, a[1] as *const c_void, a[2]),
            libc::SYS_pread64 => io::sys_pread(i0, a[1] as *mut c_void, a[2], a[3] as i64),
            libc::SYS_pwrite64 => io::sys_pwrite(i0, a[1] as *const c_void, a[2], a[3] as i64),
            libc::SYS_readv => io::sys_readv(i0, a[1] as *const libc::iovec, i2),
            libc::SYS_writev => io::sys_writev(i0, a[1] as *const libc::iovec, i2),
            libc::SYS_recvfrom => {
                net::sys_recvfrom(i0, a[1] as *mut c_void, a[2], a[3] as c_int, a[4], a[5])
            }
            libc::SYS_sendto => {
                net::sys_sendto(i0, a[1] as *const c_void, a[2], a[3] as c_int, a[4], a[5])
            }
            libc::SYS_recvmsg => net::sys_recvmsg(i0, a[1] as *mut libc::msghdr, i2),
            libc::SYS_sendmsg => net::sys_sendmsg(i0, a[1] as *const libc::msghdr, i2),
            // Sockets (`net`): datagram sockets are recorded, stream sockets refused.
            libc::SYS_socket => net::sys_socket(i0, i1, i2),
            libc::SYS_socketpair => net::sys_socketpair(i0, i1, i2, a[3] as *mut c_int),
            libc::SYS_bind => {
                net::sys_bind(i0, a[1] as *const libc::sockaddr, a[2] as libc::socklen_t)
            }
            libc::SYS_connect => {
                net::sys_connect(i0, a[1] as *const libc::sockaddr, a[2] as libc::socklen_t)
            }
            libc::SYS_setsockopt => {
                net::sys_setsockopt(i0, i1, i2, a[3] as *const c_void, a[4] as libc::socklen_t)
            }
            libc::SYS_shutdown => net::sys_shutdown(i0, i1),
            libc::SYS_listen => net::sys_listen(i0, i1),
            libc::SYS_accept => net::sys_accept4(i0, a[1], a[2], 0),
            libc::SYS_accept4 => net::sys_accept4(i0, a[1], a[2], a[3] as c_int),
            libc::SYS_ioctl if a[1] as u64 == libc::FIONBIO => net::sys_fionbio(i0, a[2]),
            libc::SYS_poll | libc::SYS_ppoll | libc::SYS_select | libc::SYS_pselect6 => {
                io::sys_nd(nr, a, sysnames::name(nr))
            }
            libc::SYS_ioctl => io::sys_ioctl(i0, a[1] as u64, a[2]),
            libc::SYS_epoll_wait | libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => {
                io::sys_nd(nr, a, sysnames::name(nr))
            }
            libc::SYS_epoll_create => files::sys_epoll_create1(0),
            libc::SYS_epoll_create1 => files::sys_epoll_create1(i0),
            libc::SYS_epoll_ctl => files::sys_epoll_ctl(i0, i1, i2, a[3] as *mut libc::epoll_event),
            libc::SYS_flock => files::sys_flock(i0, i1),
            // Pipes and FIFOs (`files`, `kstate::pipe`).
            libc::SYS_pipe => files::sys_pipe2(a[0] as *mut c_int, 0),
            libc::SYS_pipe2 => files::sys_pipe2(a[0] as *mut c_int, i1),
            libc::SYS_mknod => files::sys_mknodat(
                libc::AT_FDCWD,
                a[0] as *const c_char,
                a[1] as c_uint,
                a[2] as u64,
            ),
            libc::SYS_mknodat => {
                files::sys_mknodat(i0, a[1] as *const c_char, a[2] as c_uint, a[3] as u64)
            }
            libc::SYS_umask => files::sys_umask(a[0] as c_uint),
            libc::SYS_chmod => {
                files::sys_fchmodat(libc::AT_FDCWD, a[0] as *const c_char, a[1] as c_uint)
            }
            libc::SYS_fchmod => files::sys_fchmodat(i0, std::ptr::null(), a[1] as c_uint),
            libc::SYS_fchmodat => files::sys_fchmodat(i0, a[1] as *const c_char, a[2] as c_uint),
            // Child processes and replacing the program: not recoverable (a child's
            // state is not checkpointed, and recovery cannot wait for it again).
            libc::SYS_clone | libc::SYS_clone3 | libc::SYS_fork | libc::SYS_vfork => refuse_named(
                "clone (a child process: fork, system(), popen(), posix_spawn)",
                nr,
            ),
            libc::SYS_execve | libc::SYS_execveat => refuse_named(
                "execve (replacing the program: exec, system(), popen())",
                nr,
            ),
            // Descriptors and files (`files`).
            libc::SYS_open => {
                files::sys_openat(libc::AT_FDCWD, a[0] as *const c_char, i1, a[2] as c_uint)
            }
            libc::SYS_creat => files::sys_openat(
                libc::AT_FDCWD,
                a[0] as *const c_char,
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
                a[1] as c_uint,
            ),
            libc::SYS_openat => files::sys_openat(i0, a[1] as *const c_char, i2, a[3] as c_uint),
            libc::SYS_close => files::sys_close(i0),
            libc::SYS_lseek => files::sys_lseek(i0, a[1] as i64, i2),
            libc::SYS_ftruncate => files::sys_ftruncate(i0, a[1] as i64),
            libc::SYS_dup => files::sys_dup(i0),
            libc::SYS_dup2 => files::sys_dup2(i0, i1),
            libc::SYS_dup3 => files::sys_dup3(i0, i1, i2),
            libc::SYS_fcntl => files::sys_fcntl(i0, i1, a[2]),
            libc::SYS_unlink => files::sys_unlinkat(libc::AT_FDCWD, a[0] as *const c_char, 0),
            libc::SYS_rmdir => {
                files::sys_unlinkat(libc::AT_FDCWD, a[0] as *const c_char, libc::AT_REMOVEDIR)
            }
            libc::SYS_mkdir => {
                files::sys_mkdirat(libc::AT_FDCWD, a[0] as *const c_char, a[1] as c_uint)
            }
            libc::SYS_mkdirat => files::sys_mkdirat(i0, a[1] as *const c_char, a[2] as c_uint),
            libc::SYS_unlinkat => files::sys_unlinkat(i0, a[1] as *const c_char, i2),
            libc::SYS_rename => files::sys_renameat2(
                libc::AT_FDCWD,
                a[0] as *const c_char,
                libc::AT_FDCWD,
                a[1] as *const c_char,
                0,
            ),
            libc::SYS_renameat => {
                files::sys_renameat2(i0, a[1] as *const c_char, i2, a[3] as *const c_char, 0)
            }
            libc::SYS_renameat2 => files::sys_renameat2(
                i0,
                a[1] as *const c_char,
                i2,
                a[3] as *const c_char,
                a[4] as c_uint,
            ),
            // Signals and timers (`signals`).
            libc::SYS_rt_sigaction => rt_sigaction(a),
            libc::SYS_rt_sigprocmask => rt_sigprocmask(a),
            libc::SYS_setitimer => signals::sys_setitimer(
                i0,
                a[1] as *const libc::itimerval,
                a[2] as *mut libc::itimerval,
            ),
            libc::SYS_alarm => signals::sys_alarm(a[0] as c_uint),
            // Time and randomness (`time`).
            libc::SYS_clock_gettime => {
                time::sys_clock_gettime(i0 as libc::clockid_t, a[1] as *mut libc::timespec)
            }
            libc::SYS_gettimeofday => {
                time::sys_gettimeofday(a[0] as *mut libc::timeval, a[1] as *mut c_void)
            }
            libc::SYS_time => time::sys_time(a[0] as *mut libc::time_t),
            libc::SYS_getrandom => time::sys_getrandom(a[0] as *mut c_void, a[1], a[2] as c_uint),
            // The process (`process`).
            libc::SYS_chdir => process::sys_chdir(a[0] as *const c_char),
            libc::SYS_mprotect => process::sys_mprotect(a[0] as *mut c_void, a[1], i2),
            libc::SYS_getpid | libc::SYS_gettid => process::sys_getpid(nr),
            libc::SYS_getppid | libc::SYS_times | libc::SYS_sysinfo | libc::SYS_getrusage => {
                io::sys_nd(nr, a, sysnames::name(nr))
            }
            // Signals to itself (raise, abort) only.
            libc::SYS_kill | libc::SYS_tkill | libc::SYS_tgkill => {
                let me = syscall6(libc::SYS_getpid, [0; 6]) as usize;
                let own = match nr {
                    libc::SYS_kill => a[0] == me || a[0] == 0,
                    libc::SYS_tkill => a[0] == me,
                    _ => a[0] == me && a[1] == me,
                };
                if own {
                    syscall6(nr, a)
                } else {
                    refuse_named("kill of another process", nr)
                }
            }
            libc::SYS_exit_group | libc::SYS_exit => {
                // The end: mark the image finished once everything the program wrote on
                // its way out (stdio's final flush, after every atexit handler) has gone
                // through the protocol.
                crate::ckpt::finish();
                syscall6(nr, a)
            }
            libc::SYS_munmap => munmap(a),
            libc::SYS_sigaltstack => sigaltstack(a),
            libc::SYS_rt_sigreturn => crate::diag::fatal(
                "rt_sigreturn from a signal restorer Discount Checking did not install \
                 (a handler installed behind its back): cannot resume the program",
            ),
            // A member of a computation sleeps serving the coordinator (`time`).
            libc::SYS_nanosleep | libc::SYS_clock_nanosleep => time::sys_sleep(nr, a),
            _ if harmless(nr, &a) => syscall6(nr, a),
            _ => refuse(nr),
        }
    }
}

/// `munmap(2)`: memory Discount Checking does not checkpoint (mapped before `init`, e.g.
/// Rust's own alternate signal stack) may go; checkpointed memory may not (it would come
/// back on recovery).
///
/// # Safety
/// The program's own call.
unsafe fn munmap(a: [usize; 6]) -> isize {
    let (lo, hi) = (a[0], a[0].saturating_add(a[1]));
    let overlaps = {
        let mut e = super::Entry::enter();
        e.cx().rt().is_some_and(|rt| {
            rt.ranges.iter().any(|r| lo < r.end && hi > r.start)
                || rt
                    .image
                    .members
                    .iter()
                    .any(|m| lo < m.addr + m.len && hi > m.addr)
        }) || {
            let (s, e) = vol::range();
            lo < e && hi > s
        }
    };
    if overlaps {
        return refuse_named("munmap of checkpointed memory", libc::SYS_munmap);
    }
    // SAFETY: the program's own arguments, for memory Discount Checking does not use.
    unsafe { syscall6(libc::SYS_munmap, a) }
}

/// `sigaltstack(2)`: Discount Checking's handlers need its persistent alternate stack, so
/// the program may ask (the answer is that stack) and switch its own off (a no-op: Rust's
/// runtime does this at exit), but not install another.
///
/// # Safety
/// `a[0]` and `a[1]` are null or point at a `stack_t`.
unsafe fn sigaltstack(a: [usize; 6]) -> isize {
    if a[0] != 0 {
        // SAFETY: a non-null a[0] is a stack_t (the call's contract).
        let ss = unsafe { &*(a[0] as *const libc::stack_t) };
        if ss.ss_flags & libc::SS_DISABLE == 0 {
            return refuse_named("sigaltstack installing a stack", libc::SYS_sigaltstack);
        }
    }
    // SAFETY: a query only (a[1] null or a writable stack_t).
    unsafe { syscall6(libc::SYS_sigaltstack, [0, a[1], 0, 0, 0, 0]) }
}

/// `rt_sigaction(2)` with the kernel's structures in the program's memory.
///
/// # Safety
/// `a[1]` and `a[2]` are null or point at a kernel `struct sigaction`.
unsafe fn rt_sigaction(a: [usize; 6]) -> isize {
    if a[3] != 8 {
        return -(libc::EINVAL as isize);
    }
    // SAFETY: a non-null a[1] is a kernel sigaction (the call's contract).
    let act = (a[1] != 0).then(|| unsafe { *(a[1] as *const KSigaction) });
    let mut old = KSigaction::default();
    let r = signals::sys_rt_sigaction(a[0] as c_int, act.as_ref(), Some(&mut old));
    if r == 0 && a[2] != 0 {
        // SAFETY: a non-null a[2] is a writable kernel sigaction (the call's contract).
        unsafe { *(a[2] as *mut KSigaction) = old };
    }
    r
}

/// `rt_sigprocmask(2)`: performed with SIGSYS left unblocked (a blocked SIGSYS would
/// make the next trapped call kill the process).
///
/// # Safety
/// `a[1]` and `a[2]` are null or point at `a[3]` bytes of signal set.
unsafe fn rt_sigprocmask(a: [usize; 6]) -> isize {
    let how = a[0] as c_int;
    if a[1] == 0 || a[3] != 8 || how == libc::SIG_UNBLOCK {
        // SAFETY: the program's arguments (the call's contract).
        return unsafe { syscall6(libc::SYS_rt_sigprocmask, a) };
    }
    // SAFETY: a[1] points at an 8-byte set (checked size; the call's contract).
    let set = unsafe { *(a[1] as *const u64) } & !(1u64 << (libc::SIGSYS - 1));
    let mut b = a;
    b[1] = &set as *const u64 as usize;
    // SAFETY: the program's arguments with the set replaced by a live local copy.
    unsafe { syscall6(libc::SYS_rt_sigprocmask, b) }
}

/// The SIGSYS handler (`SA_SIGINFO | SA_ONSTACK | SA_NODEFER`, installed by
/// [`crate::sud::enable`] through [`crate::ckpt::Hooks`]).
pub(crate) extern "C" fn on_sigsys(_sig: c_int, info: *mut libc::siginfo_t, uc: *mut c_void) {
    // Discount Checking's code runs now: its system calls (and glibc's on its behalf)
    // pass; the program's resume trapped again when this is dropped.
    let allow = Allow::new();
    // SAFETY: installed with SA_SIGINFO: info is the signal's siginfo.
    let code = unsafe { (*info).si_code };
    if code != sud::SYS_USER_DISPATCH || allow.found() != sud::BLOCK {
        crate::diag::fatal(
            "SIGSYS that Syscall User Dispatch did not raise (sent by kill or seccomp?)",
        );
    }
    // SAFETY: __errno_location is this thread's errno slot, always valid.
    let saved = unsafe { *libc::__errno_location() };
    // SAFETY: installed with SA_SIGINFO: uc is the interrupted context, on the
    // (checkpointed) alternate stack, valid until this handler returns, also when a
    // checkpoint taken below resumes this frame in a new process.
    let g = unsafe { &mut (*(uc as *mut libc::ucontext_t)).uc_mcontext.gregs };
    use libc::{REG_R10, REG_R8, REG_R9, REG_RAX, REG_RDI, REG_RDX, REG_RSI, REG_RSP};
    let nr = g[REG_RAX as usize];
    let a = [
        g[REG_RDI as usize] as usize,
        g[REG_RSI as usize] as usize,
        g[REG_RDX as usize] as usize,
        g[REG_R10 as usize] as usize,
        g[REG_R8 as usize] as usize,
        g[REG_R9 as usize] as usize,
    ];
    // Where the live main stack ends, for a checkpoint taken below (we run on the
    // alternate stack).
    vol::handler_low_hint(g[REG_RSP as usize] as usize);
    // SAFETY: the program's own arguments for its own call.
    let r = unsafe { dispatch(nr, a) };
    // SAFETY: as above (the context outlives the handler's body).
    let g = unsafe { &mut (*(uc as *mut libc::ucontext_t)).uc_mcontext.gregs };
    g[REG_RAX as usize] = r as i64;
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = saved };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmless_list_is_what_it_says() {
        let z = [0usize; 6];
        assert!(harmless(libc::SYS_fstat, &z));
        assert!(harmless(libc::SYS_getdents64, &z));
        assert!(harmless(libc::SYS_ioctl, &[0, 0x5401, 0, 0, 0, 0]));
        assert!(!harmless(
            libc::SYS_ioctl,
            &[0, 0x5402 /* TCSETS */, 0, 0, 0, 0]
        ));
        assert!(harmless(libc::SYS_brk, &z));
        assert!(!harmless(libc::SYS_brk, &[0x1000, 0, 0, 0, 0, 0]));
        assert!(!harmless(libc::SYS_mmap, &z));
        assert!(!harmless(libc::SYS_clone, &z));
        assert!(!harmless(libc::SYS_execve, &z));
        assert!(!harmless(
            libc::SYS_madvise,
            &[0, 0, libc::MADV_DONTNEED as usize, 0, 0, 0]
        ));
        assert_eq!(sysnames::name(libc::SYS_openat), "openat");
        assert_eq!(sysnames::name(100_000), "?");
    }
}
