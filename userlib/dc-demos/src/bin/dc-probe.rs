//! Exercises the kernel state Discount Checking must rebuild after a crash: files kept
//! open (offsets, overwrites undone, a file unlinked while open), `O_APPEND`, the working
//! directory, signal handlers (SIGUSR1 raised synchronously, SIGALRM from an interval
//! timer) and an `mprotect`ed page. Its output is a pure function of `--steps`, so a run
//! that is killed and restarted must print what an undisturbed run prints (plus repeats)
//! and leave the same files.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Result};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Steps.
    #[arg(long, default_value_t = 120)]
    steps: u64,
    /// Busy work per step (thousands of iterations).
    #[arg(long, default_value_t = 300)]
    burn: u64,
}

static USR1: AtomicU64 = AtomicU64::new(0);
static ALRM: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    USR1.fetch_add(1, Ordering::Relaxed);
}
extern "C" fn on_alrm(_: libc::c_int) {
    ALRM.fetch_add(1, Ordering::Relaxed);
}

fn c(s: &str) -> Result<CString> {
    Ok(CString::new(s)?)
}

fn check(r: libc::c_int, what: &str) -> Result<libc::c_int> {
    if r < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(r)
}

fn handler(sig: libc::c_int, f: extern "C" fn(libc::c_int)) -> Result<()> {
    // SAFETY: a zeroed sigaction is valid; we set a plain handler with SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = f as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        check(libc::sigaction(sig, &sa, std::ptr::null_mut()), "sigaction")?;
    }
    Ok(())
}

fn perms_of(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for l in maps.lines() {
        let mut it = l.split_whitespace();
        let (Some(r), Some(p)) = (it.next(), it.next()) else {
            continue;
        };
        if let Some((a, b)) = r.split_once('-') {
            let (a, b) = (
                usize::from_str_radix(a, 16).unwrap_or(0),
                usize::from_str_radix(b, 16).unwrap_or(0),
            );
            if a <= addr && addr < b {
                return p.to_string();
            }
        }
    }
    "?".into()
}

fn main() -> Result<()> {
    discount::init(discount::Config::from_env()?)?;
    let a = Args::parse();
    std::fs::create_dir_all("work")?;
    // SAFETY: plain libc calls with valid C strings and buffers throughout.
    unsafe {
        check(libc::chdir(c("work")?.as_ptr()), "chdir")?;
        let data = check(
            libc::open(
                c("data.bin")?.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
                0o644,
            ),
            "open data",
        )?;
        let log = check(
            libc::open(
                c("log.txt")?.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND,
                0o644,
            ),
            "open log",
        )?;
        let doomed = check(
            libc::open(
                c("doomed.txt")?.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
                0o644,
            ),
            "open doomed",
        )?;
        let text = b"this file was unlinked while open\n";
        libc::write(doomed, text.as_ptr().cast(), text.len());
        check(libc::unlink(c("doomed.txt")?.as_ptr()), "unlink")?;
        handler(libc::SIGUSR1, on_usr1)?;
        handler(libc::SIGALRM, on_alrm)?;
        let it = libc::itimerval {
            it_interval: libc::timeval {
                tv_sec: 0,
                tv_usec: 3000,
            },
            it_value: libc::timeval {
                tv_sec: 0,
                tv_usec: 3000,
            },
        };
        check(
            libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()),
            "setitimer",
        )?;
        let page = libc::aligned_alloc(4096, 4096) as *mut u8;
        std::ptr::write_bytes(page, 0x5a, 4096);
        check(
            libc::mprotect(page.cast(), 4096, libc::PROT_READ),
            "mprotect",
        )?;
        let mut x = 7u64;
        for step in 0..a.steps {
            let mut blob = [0u8; 64];
            for b in blob.iter_mut() {
                *b = (dc_demos::rng(&mut x) % 26) as u8 + b'a';
            }
            let off = (step * 97 % 4000) as i64;
            libc::pwrite(data, blob.as_ptr().cast(), 16, off);
            libc::write(data, blob[16..].as_ptr().cast(), 8);
            let line = format!("step {step} {}\n", String::from_utf8_lossy(&blob[..8]));
            libc::write(log, line.as_ptr().cast(), line.len());
            if step % 10 == 0 {
                libc::raise(libc::SIGUSR1);
            }
            let mut k = x;
            for _ in 0..a.burn * 1000 {
                k = k.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(k);
            if step % 15 == 0 {
                let content = std::fs::read("data.bin")?;
                let mut d = [0u8; 64];
                let n = libc::pread(doomed, d.as_mut_ptr().cast(), 64, 0);
                println!(
                    "step {step}: data {} bytes sum {}, usr1 {}, doomed {n} bytes, page {} {}",
                    content.len(),
                    content.iter().map(|&b| b as u64).sum::<u64>(),
                    USR1.load(Ordering::Relaxed),
                    *page.add(100),
                    perms_of(page as usize),
                );
            }
        }
        let off = libc::lseek(data, 0, libc::SEEK_CUR);
        println!(
            "end: offset {off}, usr1 {}, alarms seen {}, cwd {}, doomed visible {}",
            USR1.load(Ordering::Relaxed),
            ALRM.load(Ordering::Relaxed) > 0,
            std::env::current_dir()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::path::Path::new("doomed.txt").exists(),
        );
        libc::close(data);
        libc::close(log);
        libc::close(doomed);
    }
    Ok(())
}
