//! Raw system calls and the few instructions Rust cannot express: saving and restoring the
//! callee-saved registers at a checkpoint, running a function on another stack, and the
//! thread control block words glibc keeps at `%fs:0x28` (stack protector) and `%fs:0x30`
//! (pointer guard).
//!
//! Discount Checking defines `write`, `read`, `open`, ... itself (see `intercept`), so it
//! cannot reach the kernel through those libc symbols: every call it makes for itself goes
//! through [`syscall6`], whose one `syscall` instruction (in `dc_syscall`) lies in the
//! code range Syscall User Dispatch exempts (see [`crate::sud`]). Results follow the
//! kernel's convention: a negative value is `-errno`.

use std::arch::{asm, global_asm};

/// A raw system call with up to six arguments. Returns the kernel's result (`-errno` on
/// failure).
///
/// Every system call Discount Checking makes for itself goes through here, and so through
/// the one `syscall` instruction in `dc_syscall`, which lies in the code range that
/// Syscall User Dispatch never traps (see [`crate::sud`]): Discount Checking's own calls
/// pass whatever the selector says, even from the allocator or a signal handler.
///
/// # Safety
/// The caller must pass arguments that are valid for system call `nr` (pointers to memory
/// of the right size and mutability).
#[inline(always)]
pub unsafe fn syscall6(nr: i64, a: [usize; 6]) -> isize {
    // SAFETY: `dc_syscall` moves its arguments into the system call registers and issues
    // the call; the caller vouches for the arguments.
    unsafe { dc_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) }
}

/// [`syscall6`] with fewer arguments.
///
/// # Safety
/// As for [`syscall6`].
#[inline(always)]
pub unsafe fn sc(nr: i64, a0: usize, a1: usize, a2: usize) -> isize {
    // SAFETY: forwarded contract.
    unsafe { syscall6(nr, [a0, a1, a2, 0, 0, 0]) }
}

/// [`syscall6`] with four arguments.
///
/// # Safety
/// As for [`syscall6`].
#[inline(always)]
pub unsafe fn sc4(nr: i64, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
    // SAFETY: forwarded contract.
    unsafe { syscall6(nr, [a0, a1, a2, a3, 0, 0]) }
}

/// Turns a raw result into `Result<usize, errno>`.
#[inline(always)]
pub fn check(r: isize) -> Result<usize, i32> {
    if r < 0 && r > -4096 {
        Err((-r) as i32)
    } else {
        Ok(r as usize)
    }
}

/// Sets the calling thread's `errno`.
#[inline]
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// Converts a raw result into the libc convention: the value, or -1 with `errno` set.
#[inline]
pub fn libc_ret(r: isize) -> isize {
    match check(r) {
        Ok(v) => v as isize,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// Lowest descriptor number Discount Checking uses for itself.
pub const FD_FLOOR: i32 = 800;

/// Moves `fd` to the lowest free number (as a new descriptor the kernel hands out would
/// be), close-on-exec if `cloexec`; returns the new number (`fd` if the move fails).
pub fn move_to_lowest(fd: i32, cloexec: bool) -> i32 {
    let cmd = if cloexec {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    // SAFETY: fcntl(F_DUPFD*) and close on a descriptor we own.
    unsafe {
        match check(sc(libc::SYS_fcntl, fd as usize, cmd as usize, 0)) {
            Ok(n) => {
                sc(libc::SYS_close, fd as usize, 0, 0);
                n as i32
            }
            Err(_) => fd,
        }
    }
}

/// Moves `fd` to a number >= [`FD_FLOOR`] (close-on-exec); returns the new number.
pub fn move_high(fd: i32) -> i32 {
    if fd >= FD_FLOOR {
        return fd;
    }
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) and close on a descriptor we own.
    unsafe {
        let r = sc(
            libc::SYS_fcntl,
            fd as usize,
            libc::F_DUPFD_CLOEXEC as usize,
            FD_FLOOR as usize,
        );
        match check(r) {
            Ok(n) => {
                sc(libc::SYS_close, fd as usize, 0, 0);
                n as i32
            }
            Err(_) => fd,
        }
    }
}

/// Receives into `buf` from socket `fd` without blocking (raw `recvfrom`, no address,
/// `MSG_DONTWAIT`): the bytes received, 0 at the end of a stream, or `-errno`
/// (`-EAGAIN` when nothing is waiting).
pub fn recv_nowait(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: recvfrom writes at most buf.len() bytes into buf, which this exclusive
    // borrow keeps alive and unaliased for the call; no address is asked for.
    unsafe {
        sc4(
            libc::SYS_recvfrom,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            libc::MSG_DONTWAIT as usize,
        )
    }
}

/// Writes all of `buf` to `fd` with raw `write` calls (diagnostics; ignores errors).
pub fn write_all_raw(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is a valid readable buffer of buf.len() bytes.
        let r = unsafe {
            sc(
                libc::SYS_write,
                fd as usize,
                buf.as_ptr() as usize,
                buf.len(),
            )
        };
        match check(r) {
            Ok(0) => return,
            Ok(n) => buf = &buf[n..],
            Err(libc::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Prints a diagnostic line (`discount: ` and `msg`) on descriptor `fd` with a raw write
/// (safe in any state, including the middle of recovery). [`crate::diag`] picks the
/// descriptor (`DC_LOG` or stderr).
pub fn diag_to(fd: i32, msg: &str) {
    let mut b = [0u8; 512];
    let prefix = b"discount: ";
    let mut n = 0;
    for &c in prefix.iter().chain(msg.as_bytes()).take(b.len() - 1) {
        b[n] = c;
        n += 1;
    }
    b[n] = b'\n';
    write_all_raw(fd, &b[..=n]);
}

/// The symbolic name of an errno value, without asking libc (`strerror` goes through
/// glibc's message catalogue and its locale lock, which the interrupted program may hold:
/// a refusal met inside `setlocale` would deadlock).
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM (operation not permitted)",
        libc::ENOENT => "ENOENT (no such file or directory)",
        libc::EINTR => "EINTR (interrupted)",
        libc::EIO => "EIO (input/output error)",
        libc::EBADF => "EBADF (bad file descriptor)",
        libc::EAGAIN => "EAGAIN (resource temporarily unavailable)",
        libc::ENOMEM => "ENOMEM (out of memory)",
        libc::EACCES => "EACCES (permission denied)",
        libc::EFAULT => "EFAULT (bad address)",
        libc::EEXIST => "EEXIST (file exists)",
        libc::EXDEV => "EXDEV (cross-device link)",
        libc::ENOTDIR => "ENOTDIR (not a directory)",
        libc::EISDIR => "EISDIR (is a directory)",
        libc::EINVAL => "EINVAL (invalid argument)",
        libc::ENOTTY => "ENOTTY (not a terminal)",
        libc::ENOSPC => "ENOSPC (no space left)",
        libc::ENOSYS => "ENOSYS (function not implemented)",
        libc::ENOLCK => "ENOLCK (no locks available)",
        libc::EOPNOTSUPP => "EOPNOTSUPP (operation not supported)",
        libc::EDEADLK => "EDEADLK (deadlock avoided)",
        libc::EADDRINUSE => "EADDRINUSE (address already in use)",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL (address not available)",
        libc::ECONNREFUSED => "ECONNREFUSED (connection refused)",
        libc::ENOTCONN => "ENOTCONN (not connected)",
        libc::ENOTSOCK => "ENOTSOCK (not a socket)",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT (address family not supported)",
        _ => "errno",
    }
}

/// Prints a diagnostic on descriptor `fd` and ends the process (`abort`). For code below
/// the volatile page (the allocator arena); everything else uses [`crate::diag::fatal`].
pub fn fatal_to(fd: i32, msg: &str) -> ! {
    diag_to(fd, msg);
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// Reads `%fs:0x28` (glibc's stack-protector canary) and `%fs:0x30` (pointer guard).
#[inline]
pub fn tcb_guards() -> (u64, u64) {
    let (a, b): (u64, u64);
    // SAFETY: on x86-64 glibc, %fs points at the thread control block, whose words at
    // 0x28 and 0x30 are the canary and pointer guard; reading them has no side effect.
    unsafe {
        asm!("mov {a}, qword ptr fs:[0x28]", "mov {b}, qword ptr fs:[0x30]",
             a = out(reg) a, b = out(reg) b, options(nostack, readonly, preserves_flags));
    }
    (a, b)
}

/// Writes `%fs:0x28` and `%fs:0x30`.
///
/// # Safety
/// Only sound when every live value derived from the old guards is about to be replaced
/// (recovery: the restored memory was produced with the guards being installed).
#[inline]
pub unsafe fn set_tcb_guards(canary: u64, guard: u64) {
    // SAFETY: see the function contract; the words are plain data in the TCB.
    unsafe {
        asm!("mov qword ptr fs:[0x28], {a}", "mov qword ptr fs:[0x30], {b}",
             a = in(reg) canary, b = in(reg) guard, options(nostack, preserves_flags));
    }
}

/// The current stack pointer.
#[inline(always)]
pub fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads rsp only.
    unsafe { asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

// dc_ckpt_enter(f, arg): pushes the callee-saved registers (rbp, rbx, r12-r15), the SSE
// control/status register and the x87 control word onto the current stack, then calls
// f(arg, sp) where sp points at that save area. When f returns normally, the registers
// are popped and f's return value is returned. The save area, together with the return
// address just above it, is everything needed to resume the caller later:
// dc_ckpt_resume(sp) reloads it on a restored stack and returns 1 from dc_ckpt_enter.
//
// Layout at sp (24 bytes keep the call below 16-byte aligned):
//   sp+0  mxcsr (4)   sp+4 x87 cw (2)   sp+24 r15  +32 r14  +40 r13  +48 r12  +56 rbx
//   +64 rbp  +72 return address into the caller.
global_asm!(
    ".text",
    ".globl dc_ckpt_enter",
    ".type dc_ckpt_enter,@function",
    "dc_ckpt_enter:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 24",
    "stmxcsr [rsp]",
    "fnstcw [rsp+4]",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rsp",
    "call rax",
    "add rsp, 24",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size dc_ckpt_enter, .-dc_ckpt_enter",
    "",
    ".globl dc_ckpt_resume",
    ".type dc_ckpt_resume,@function",
    "dc_ckpt_resume:",
    "mov rsp, rdi",
    "ldmxcsr [rsp]",
    "fldcw [rsp+4]",
    "add rsp, 24",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "mov eax, 1",
    "ret",
    ".size dc_ckpt_resume, .-dc_ckpt_resume",
    "",
    ".globl dc_on_stack",
    ".type dc_on_stack,@function",
    "dc_on_stack:",
    "push rbp",
    "mov rbp, rsp",
    "mov rsp, rdi",
    "mov rdi, rdx",
    "call rsi",
    "mov rsp, rbp",
    "pop rbp",
    "ret",
    ".size dc_on_stack, .-dc_on_stack",
);

// The code range Syscall User Dispatch exempts (`dc_sud_begin`..`dc_sud_end`, see
// `crate::sud`): the system call gate every raw call of Discount Checking goes through,
// and the signal return trampoline of every handler it installs (so `rt_sigreturn` is
// never trapped, whatever the selector says when a handler returns; glibc's own
// `__restore_rt` is not in the vDSO, and the kernel exempts only the vDSO's).
//
// dc_syscall(nr, a0, a1, a2, a3, a4, a5): SysV arguments in rdi, rsi, rdx, rcx, r8, r9
// and the sixth on the stack; the kernel wants rax, rdi, rsi, rdx, r10, r8, r9.
global_asm!(
    ".text",
    ".p2align 4",
    ".globl dc_sud_begin",
    ".hidden dc_sud_begin",
    "dc_sud_begin:",
    ".globl dc_syscall",
    ".hidden dc_syscall",
    ".type dc_syscall,@function",
    "dc_syscall:",
    "mov rax, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov r10, r8",
    "mov r8, r9",
    "mov r9, [rsp+8]",
    "syscall",
    "ret",
    ".size dc_syscall, .-dc_syscall",
    "",
    ".globl dc_restore_rt",
    ".hidden dc_restore_rt",
    ".type dc_restore_rt,@function",
    "dc_restore_rt:",
    "mov eax, 15",
    "syscall",
    "hlt",
    ".size dc_restore_rt, .-dc_restore_rt",
    ".globl dc_sud_end",
    ".hidden dc_sud_end",
    "dc_sud_end:",
);

/// Bytes of the save area [`dc_ckpt_enter`] pushes below the caller's return address.
pub const SAVE_AREA: usize = 72;

extern "C" {
    /// See the `global_asm!` above. Returns `f`'s result, or 1 when resumed by
    /// [`dc_ckpt_resume`].
    pub fn dc_ckpt_enter(f: extern "C" fn(usize, usize) -> usize, arg: usize) -> usize;
    /// Resumes a context saved by [`dc_ckpt_enter`] whose save area is at `sp`.
    pub fn dc_ckpt_resume(sp: usize) -> !;
    /// Calls `f(arg)` with the stack pointer set to `top` (16-byte aligned), then switches
    /// back and returns `f`'s result.
    pub fn dc_on_stack(top: usize, f: extern "C" fn(usize) -> usize, arg: usize) -> usize;
    /// Signal return trampoline (`rt_sigreturn`) for handlers installed with raw
    /// `rt_sigaction` (what glibc's `__restore_rt` does).
    pub fn dc_restore_rt();
    /// The system call gate (see [`syscall6`]).
    fn dc_syscall(
        nr: i64,
        a0: usize,
        a1: usize,
        a2: usize,
        a3: usize,
        a4: usize,
        a5: usize,
    ) -> isize;
    /// Start of the code range Syscall User Dispatch exempts (a label, not a function).
    pub fn dc_sud_begin();
    /// End of that range (a label).
    pub fn dc_sud_end();
}

/// `SA_RESTORER` (x86-64).
pub const SA_RESTORER: i32 = 0x0400_0000;

/// The kernel's `struct sigaction` on x86-64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KSigaction {
    /// Handler address (or SIG_DFL/SIG_IGN).
    pub handler: usize,
    /// SA_* flags.
    pub flags: u64,
    /// Return trampoline.
    pub restorer: usize,
    /// Blocked during the handler.
    pub mask: u64,
}

/// Raw `rt_sigaction` (our restorer is filled in when `SA_RESTORER` is not set).
pub fn rt_sigaction(
    sig: i32,
    new: Option<&KSigaction>,
    old: Option<&mut KSigaction>,
) -> Result<(), i32> {
    let mut n = new.copied();
    if let Some(n) = n.as_mut() {
        if n.flags & crate::sys::SA_RESTORER as u64 == 0 {
            n.flags |= crate::sys::SA_RESTORER as u64;
            n.restorer = dc_restore_rt as *const () as usize;
        }
    }
    let np = n.as_ref().map_or(0, |n| n as *const KSigaction as usize);
    let op = old.map_or(0, |o| o as *mut KSigaction as usize);
    // SAFETY: both pointers are null or point at valid KSigaction structs (8-byte mask).
    check(unsafe { sc4(libc::SYS_rt_sigaction, sig as usize, np, op, 8) }).map(|_| ())
}

/// Sleeps `ms` milliseconds (raw `nanosleep`).
pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads a timespec from a live local; no remainder is asked for.
    unsafe {
        sc(
            libc::SYS_nanosleep,
            &ts as *const libc::timespec as usize,
            0,
            0,
        )
    };
}

/// Monotonic clock in nanoseconds, read with a raw system call (never intercepted).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write.
    unsafe {
        sc(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC as usize,
            &mut ts as *mut _ as usize,
            0,
        )
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Maps anonymous memory (raw `mmap`). `addr` 0 lets the kernel choose.
pub fn mmap_anon(addr: usize, len: usize, fixed_noreplace: bool) -> Result<usize, i32> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    if fixed_noreplace {
        flags |= libc::MAP_FIXED_NOREPLACE;
    }
    // SAFETY: an anonymous mapping request; with MAP_FIXED_NOREPLACE the kernel refuses to
    // replace anything, so no existing memory is affected.
    let r = unsafe {
        syscall6(
            libc::SYS_mmap,
            [
                addr,
                len,
                (libc::PROT_READ | libc::PROT_WRITE) as usize,
                flags as usize,
                usize::MAX,
                0,
            ],
        )
    };
    let p = check(r)?;
    if fixed_noreplace && p != addr {
        // Old kernels ignore MAP_FIXED_NOREPLACE and treat it as a hint.
        // SAFETY: unmapping the mapping we just created.
        unsafe { sc(libc::SYS_munmap, p, len, 0) };
        return Err(libc::EEXIST);
    }
    Ok(p)
}

/// A `fmt::Write` into a fixed buffer on the stack (formatting without allocating).
pub struct StackWriter {
    buf: [u8; 480],
    len: usize,
}

impl StackWriter {
    /// An empty writer.
    pub fn new() -> StackWriter {
        StackWriter {
            buf: [0; 480],
            len: 0,
        }
    }

    /// What was written (cut at the buffer size, on a character boundary).
    pub fn as_str(&self) -> &str {
        match std::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl Default for StackWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Write for StackWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
