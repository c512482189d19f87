//! Concurrent noise: threads of one process that pread into fresh (not yet faulted)
//! anonymous buffers while other threads of the same process mmap and munmap objects. The
//! old module deadlocked on exactly this: a pread holding the store lock faulted on the
//! buffer (taking the mmap lock) while an mmap, holding the mmap lock, waited for the store
//! lock. Each thread checks that what it reads back is what it wrote.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::actor::open_object;
use super::sys;
use crate::prng::Rng;

/// Names and size of the noise objects.
pub const NOISE_OBJECTS: [&str; 3] = ["noise0", "noise1", "noise2"];
/// Size of each noise object.
pub const NOISE_SIZE: u64 = 64 << 10;

/// Whether `name` is a noise object (ignored by `verify`).
pub fn is_noise(name: &str) -> bool {
    name.starts_with("noise")
}

struct Shared {
    stop: AtomicBool,
    rounds: AtomicU64,
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, msg: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn anon(len: usize) -> Result<*mut u8, i32> {
    sys::mmap(
        -1,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        0,
    )
}

/// Reads the whole object into a fresh anonymous mapping and returns a copy.
fn read_fresh(fd: &OwnedFd, len: usize) -> Result<Vec<u8>, String> {
    let buf = anon(len).map_err(|e| format!("mmap anon: errno {e}"))?;
    // SAFETY: `buf` is a fresh private mapping of `len` writable bytes.
    let r = unsafe { sys::pread_raw(sys::raw(fd), buf, len, 0) };
    // SAFETY: `buf` is a live private mapping of `len` bytes, readable and initialised
    // (anonymous pages read as zero where pread did not write); the slice is copied out
    // and dropped before the unmap below.
    let v = unsafe { std::slice::from_raw_parts(buf, len) }.to_vec();
    // SAFETY: `buf` is the mapping made above, referenced by nothing any more.
    let _ = unsafe { sys::munmap(buf, len) };
    match r {
        Ok(n) if n == len => Ok(v),
        Ok(n) => Err(format!("short pread: {n} of {len}")),
        Err(e) => Err(format!("pread into a fresh buffer: errno {e}")),
    }
}

/// Thread "reader": pwrite a pattern, pread it into a fresh buffer, compare.
fn reader(sh: &Shared, dev: &CString, name: &str, seed: u64) -> Result<(), String> {
    let fd = open_object(dev, name, true, false).map_err(|e| format!("open {name}: errno {e}"))?;
    let mut r = Rng::stream(seed, 77);
    let mut want = vec![0u8; NOISE_SIZE as usize];
    while !sh.stop.load(Ordering::Relaxed) {
        r.fill(&mut want);
        match sys::pwrite(sys::raw(&fd), &want, 0) {
            Ok(n) if n == want.len() => {}
            other => return Err(format!("{name}: pwrite: {other:?}")),
        }
        let got = read_fresh(&fd, want.len())?;
        if got != want {
            let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!(
                "{name}: read back differs from what this thread wrote, at byte {i}"
            ));
        }
        sh.rounds.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Thread "mapper": map the object shared, store a pattern through the mapping, unmap,
/// pread it back into a fresh buffer.
fn mapper(sh: &Shared, dev: &CString, name: &str, seed: u64) -> Result<(), String> {
    let fd = open_object(dev, name, true, false).map_err(|e| format!("open {name}: errno {e}"))?;
    let len = NOISE_SIZE as usize;
    let mut r = Rng::stream(seed, 78);
    let mut want = vec![0u8; len];
    while !sh.stop.load(Ordering::Relaxed) {
        r.fill(&mut want);
        let p = sys::mmap(
            sys::raw(&fd),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            0,
        )
        .map_err(|e| format!("{name}: mmap: errno {e}"))?;
        // SAFETY: `p` is a live shared writable mapping of `len` bytes, owned by this thread.
        unsafe { std::ptr::copy_nonoverlapping(want.as_ptr(), p, len) };
        // SAFETY: the mapping made above; nothing references it any more.
        unsafe { sys::munmap(p, len) }.map_err(|e| format!("{name}: munmap: errno {e}"))?;
        let got = read_fresh(&fd, len)?;
        if got != want {
            let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!(
                "{name}: stores through the mapping read back differently at byte {i}"
            ));
        }
        sh.rounds.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Thread "churn": map and unmap read-only, and pwrite from a fresh (zero, not faulted)
/// anonymous buffer, which the module must read through its slow path.
fn churn(sh: &Shared, dev: &CString, name: &str) -> Result<(), String> {
    let fd = open_object(dev, name, true, false).map_err(|e| format!("open {name}: errno {e}"))?;
    let len = NOISE_SIZE as usize;
    while !sh.stop.load(Ordering::Relaxed) {
        let p = sys::mmap(sys::raw(&fd), len, libc::PROT_READ, libc::MAP_SHARED, 0)
            .map_err(|e| format!("{name}: mmap ro: errno {e}"))?;
        // SAFETY: the mapping made above.
        unsafe { sys::munmap(p, len) }.map_err(|e| format!("{name}: munmap: errno {e}"))?;
        let src = anon(len).map_err(|e| format!("mmap anon: errno {e}"))?;
        // SAFETY: `src` is a fresh readable mapping of `len` bytes (reads as zero).
        let w = unsafe { libc::pwrite(sys::raw(&fd), src.cast(), len, 0) };
        // SAFETY: the mapping made above.
        let _ = unsafe { sys::munmap(src, len) };
        if w != len as isize {
            return Err(format!(
                "{name}: pwrite from a fresh buffer returned {w} (errno {})",
                sys::errno()
            ));
        }
        let got = read_fresh(&fd, len)?;
        if let Some(i) = got.iter().position(|&b| b != 0) {
            return Err(format!(
                "{name}: wrote zeros from a fresh buffer, byte {i} reads {:#04x}",
                got[i]
            ));
        }
        sh.rounds.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Thread "map churn": map, touch and unmap the other threads' objects read-only (no
/// data check: they change under it).
fn map_churn(sh: &Shared, dev: &CString) -> Result<(), String> {
    let fds: Vec<OwnedFd> = NOISE_OBJECTS[..2]
        .iter()
        .map(|n| open_object(dev, n, true, false).map_err(|e| format!("open {n}: errno {e}")))
        .collect::<Result<_, _>>()?;
    let len = NOISE_SIZE as usize;
    while !sh.stop.load(Ordering::Relaxed) {
        for fd in &fds {
            let p = sys::mmap(sys::raw(fd), len, libc::PROT_READ, libc::MAP_SHARED, 0)
                .map_err(|e| format!("mmap ro: errno {e}"))?;
            // SAFETY: `p` is a live readable mapping of `len` bytes.
            let _ = unsafe { std::ptr::read_volatile(p.add(len / 2)) };
            // SAFETY: the mapping made above; nothing references it any more.
            unsafe { sys::munmap(p, len) }.map_err(|e| format!("munmap: errno {e}"))?;
        }
    }
    Ok(())
}

/// The noise process: runs its threads until `stop` (a pipe) closes or `deadline` passes.
/// Returns the exit status: 0 all well, 1 a thread found bad data (reported on stderr).
pub fn noise_main(stop: OwnedFd, dev: CString, seed: u64, deadline: Duration) -> i32 {
    let sh = Arc::new(Shared {
        stop: AtomicBool::new(false),
        rounds: AtomicU64::new(0),
        failure: Mutex::new(None),
    });
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let sh = sh.clone();
        let dev = dev.clone();
        threads.push(std::thread::spawn(move || {
            let r = match t {
                0 => reader(&sh, &dev, NOISE_OBJECTS[0], seed),
                1 => mapper(&sh, &dev, NOISE_OBJECTS[1], seed),
                2 => churn(&sh, &dev, NOISE_OBJECTS[2]),
                _ => map_churn(&sh, &dev),
            };
            if let Err(e) = r {
                sh.fail(format!("noise thread {t}: {e}"));
            }
        }));
    }
    let start = Instant::now();
    // Wait for the coordinator to close the pipe (EOF), bounded by the deadline.
    let _ = sys::recv_frame(
        sys::raw(&stop),
        Some(deadline.saturating_sub(start.elapsed())),
    );
    sh.stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let failure = sh.failure.lock().ok().and_then(|f| f.clone());
    match failure {
        Some(f) => {
            eprintln!("rio-fuzz: NOISE FAILURE: {f}");
            1
        }
        None => {
            eprintln!(
                "rio-fuzz: noise: {} rounds",
                sh.rounds.load(Ordering::Relaxed)
            );
            0
        }
    }
}
