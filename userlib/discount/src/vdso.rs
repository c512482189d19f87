//! The real time functions. `clock_gettime`, `gettimeofday` and `time` are answered by
//! the vDSO without entering the kernel, so they cannot be caught as system calls; we
//! define the libc symbols ourselves (see `intercept`) and call the vDSO's entry points,
//! found in its ELF dynamic symbol table, or the system call if there is no vDSO.

use std::sync::atomic::{AtomicUsize, Ordering};

static CLOCK_GETTIME: AtomicUsize = AtomicUsize::new(0);
static GETTIMEOFDAY: AtomicUsize = AtomicUsize::new(0);
/// 1 once looked up (0 unknown).
static LOOKED: AtomicUsize = AtomicUsize::new(0);

fn lookup() {
    if LOOKED.load(Ordering::Acquire) != 0 {
        return;
    }
    // SAFETY: getauxval is always safe; the vDSO image it points to is mapped read-only
    // for the life of the process and is a well-formed ELF64 object.
    unsafe {
        let base = libc::getauxval(libc::AT_SYSINFO_EHDR) as usize;
        if base != 0 {
            let eh = &*(base as *const libc::Elf64_Ehdr);
            let ph = std::slice::from_raw_parts(
                (base + eh.e_phoff as usize) as *const libc::Elf64_Phdr,
                eh.e_phnum as usize,
            );
            let bias = ph
                .iter()
                .find(|p| p.p_type == libc::PT_LOAD)
                .map(|p| base + p.p_offset as usize - p.p_vaddr as usize)
                .unwrap_or(base);
            let sh = std::slice::from_raw_parts(
                (base + eh.e_shoff as usize) as *const libc::Elf64_Shdr,
                eh.e_shnum as usize,
            );
            if let Some(dynsym) = sh.iter().find(|s| s.sh_type == 11 /* SHT_DYNSYM */) {
                let strtab = &sh[dynsym.sh_link as usize];
                let syms = std::slice::from_raw_parts(
                    (base + dynsym.sh_offset as usize) as *const libc::Elf64_Sym,
                    dynsym.sh_size as usize / std::mem::size_of::<libc::Elf64_Sym>(),
                );
                for s in syms {
                    if s.st_value == 0 {
                        continue;
                    }
                    let name = std::ffi::CStr::from_ptr(
                        (base + strtab.sh_offset as usize + s.st_name as usize)
                            as *const libc::c_char,
                    )
                    .to_bytes();
                    let addr = bias + s.st_value as usize;
                    match name {
                        b"__vdso_clock_gettime" => CLOCK_GETTIME.store(addr, Ordering::Relaxed),
                        b"__vdso_gettimeofday" => GETTIMEOFDAY.store(addr, Ordering::Relaxed),
                        _ => {}
                    }
                }
            }
        }
    }
    LOOKED.store(1, Ordering::Release);
}

type ClockFn = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;
type TodFn = unsafe extern "C" fn(*mut libc::timeval, *mut libc::c_void) -> libc::c_int;

/// The real `clock_gettime` (raw result: 0 or -errno).
///
/// # Safety
/// `ts` must be writable.
pub unsafe fn clock_gettime(clk: libc::clockid_t, ts: *mut libc::timespec) -> isize {
    lookup();
    let f = CLOCK_GETTIME.load(Ordering::Relaxed);
    if f != 0 {
        // SAFETY: f is the vDSO's clock_gettime, which returns 0 or -errno.
        let r = unsafe { std::mem::transmute::<usize, ClockFn>(f)(clk, ts) };
        return r as isize;
    }
    // SAFETY: forwarded contract.
    unsafe { crate::sys::sc(libc::SYS_clock_gettime, clk as usize, ts as usize, 0) }
}

/// The real `gettimeofday` (raw result).
///
/// # Safety
/// `tv` null or writable; `tz` null or writable.
pub unsafe fn gettimeofday(tv: *mut libc::timeval, tz: *mut libc::c_void) -> isize {
    lookup();
    let f = GETTIMEOFDAY.load(Ordering::Relaxed);
    if f != 0 {
        // SAFETY: f is the vDSO's gettimeofday.
        return unsafe { std::mem::transmute::<usize, TodFn>(f)(tv, tz) } as isize;
    }
    // SAFETY: forwarded contract.
    unsafe { crate::sys::sc(libc::SYS_gettimeofday, tv as usize, tz as usize, 0) }
}

/// CLOCK_MONOTONIC in nanoseconds through the vDSO.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is writable.
    unsafe { clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn vdso_clock_works() {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is writable.
        let r = unsafe { super::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        assert_eq!(r, 0);
        assert!(ts.tv_sec > 1_600_000_000);
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: tv writable.
        let r = unsafe { super::gettimeofday(&mut tv, std::ptr::null_mut()) };
        assert_eq!(r, 0);
        assert!((tv.tv_sec - ts.tv_sec).abs() < 5);
    }
}
