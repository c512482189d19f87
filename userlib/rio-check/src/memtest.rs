//! `rio-check memtest`: a memTest-like workload after the Rio paper. It overwrites random
//! ranges of a few files (or Rio objects) with a pattern that is a pure function of the
//! write's sequence number, forever, and reports each write to a log port:
//!
//! ```text
//! M <files> <file-size> <seed>          once, at start
//! B <seq> <file> <offset> <len>         before the write
//! A <seq>                               after it returned (acknowledged)
//! ```
//!
//! The host rebuilds what every file must hold from the acknowledged writes (see
//! `expected` below) and compares after the crash and recovery.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use rio_client::{OpenMode, Rio};

use crate::{pattern, Error, Result};

/// Where the workload writes.
pub enum Target {
    /// Rio objects `mt0`..: each write is durable when pwrite returns.
    Rio,
    /// Files `DIR/mt0`..; with `fsync`, each write is followed by fdatasync. With
    /// `prefill`, each file is written full of zeros and synced before the first write, so
    /// that the workload only overwrites allocated blocks (as a Rio object is allocated
    /// when it is created); without it the files start sparse.
    Dir {
        /// The directory.
        dir: String,
        /// fdatasync after each write.
        fsync: bool,
        /// Allocate every block before the workload starts.
        prefill: bool,
    },
}

/// The pattern seed of write `seq`.
pub fn write_seed(seed: u64, seq: u64) -> u64 {
    seed ^ seq.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// One write of the workload: deterministic from (seed, seq), drawn with xorshift64
/// ([`rio_prng::xorshift64`]) from the write's seed (made odd, so never zero).
pub fn plan(seed: u64, seq: u64, files: u64, file_size: u64) -> (u64, u64, u64) {
    let mut x = write_seed(seed, seq) | 1;
    let mut next = || {
        x = rio_prng::xorshift64(x);
        x
    };
    let f = next() % files;
    let len = 1 + next() % 8192;
    let off = next() % (file_size - len);
    (f, off, len)
}

/// Writes one log line and waits until the port has sent it (`tcdrain`): the host must know
/// of a write before it is issued (`B`), and an `A` it never received was never
/// acknowledged to it. Without the drain, a crash loses whatever the tty still buffers.
fn log_line(log: &mut File, line: std::fmt::Arguments<'_>) -> Result<()> {
    log.write_fmt(line)
        .and_then(|()| log.write_all(b"\n"))
        .map_err(Error::io("writing the workload log"))?;
    // SAFETY: tcdrain on an open fd; for a non-tty it fails with ENOTTY, which is fine
    // (a plain file needs no drain).
    unsafe { libc::tcdrain(log.as_raw_fd()) };
    Ok(())
}

/// Runs the workload until killed (or `count` writes).
pub fn run(
    target: Target,
    log: &str,
    files: u64,
    file_size: u64,
    seed: u64,
    count: Option<u64>,
) -> Result<()> {
    let mut log = OpenOptions::new()
        .write(true)
        .open(log)
        .map_err(Error::io(format!("opening {log}")))?;
    enum W {
        Rio(Vec<rio_client::Object>),
        Files(Vec<File>, bool),
    }
    let w = match &target {
        Target::Rio => {
            let rio = Rio::open()?;
            let mut objs = Vec::new();
            for i in 0..files {
                let name = format!("mt{i}");
                match rio.create(&name, file_size, 0o600) {
                    Ok(()) | Err(rio_client::Error::Exists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                objs.push(rio.open_object(&name, OpenMode::ReadWrite)?);
            }
            W::Rio(objs)
        }
        Target::Dir {
            dir,
            fsync,
            prefill,
        } => {
            let mut fs = Vec::new();
            for i in 0..files {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(format!("{dir}/mt{i}"))
                    .map_err(Error::io(format!("creating {dir}/mt{i}")))?;
                if *prefill {
                    f.write_all_at(&vec![0u8; file_size as usize], 0)
                        .map_err(Error::io(format!("filling {dir}/mt{i}")))?;
                }
                f.set_len(file_size)
                    .and_then(|()| f.sync_all())
                    .map_err(Error::io(format!("sizing {dir}/mt{i}")))?;
                fs.push(f);
            }
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(Error::io(format!("syncing {dir}")))?;
            W::Files(fs, *fsync)
        }
    };
    log_line(&mut log, format_args!("M {files} {file_size} {seed}"))?;
    // Acknowledgements carry the milliseconds since the start, so the host can tell how old
    // a lost write was when the machine died (power loss may lose only recent writes).
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 8192];
    let mut seq = 0u64;
    while count.is_none_or(|c| seq < c) {
        let (f, off, len) = plan(seed, seq, files, file_size);
        let data = &mut buf[..len as usize];
        pattern(write_seed(seed, seq), off, data);
        log_line(&mut log, format_args!("B {seq} {f} {off} {len}"))?;
        match &w {
            W::Rio(objs) => objs[f as usize].write_all_at(data, off)?,
            W::Files(fs, fsync) => {
                fs[f as usize]
                    .write_all_at(data, off)
                    .map_err(Error::io(format!("writing mt{f}")))?;
                if *fsync {
                    fs[f as usize]
                        .sync_data()
                        .map_err(Error::io(format!("fdatasync of mt{f}")))?;
                }
            }
        }
        log_line(
            &mut log,
            format_args!("A {seq} {}", start.elapsed().as_millis()),
        )?;
        seq += 1;
    }
    Ok(())
}

/// What the files must hold after a crash, from a log: for each file, its bytes and a mask
/// of bytes that are unknown (touched by a write that was begun but not acknowledged).
/// Also returns the acknowledged writes, for counting losses.
pub struct Expected {
    /// Per file: bytes.
    pub data: Vec<Vec<u8>>,
    /// Per file: true where the content is unknown.
    pub unknown: Vec<Vec<bool>>,
    /// Acknowledged writes: (seq, file, offset, len).
    pub acked: Vec<(u64, u64, u64, u64)>,
    /// When each acknowledged write returned, in ms since the workload started (same order
    /// as `acked`; `None` for logs without times).
    pub acked_ms: Vec<Option<u64>>,
    /// The latest time in the log: when the workload was last seen alive.
    pub last_ms: Option<u64>,
    /// The workload's seed (each write's pattern derives from it).
    pub seed: u64,
}

impl Expected {
    /// Per file and byte, as 1 + an index into `acked` (0: none): the latest acknowledged
    /// write whose byte the file holds (zeros that were never written match nothing), and
    /// the latest acknowledged write that covered the byte at all.
    fn byte_owners(&self, files: &[Vec<u8>]) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        let mut held: Vec<Vec<u32>> = self.data.iter().map(|d| vec![0; d.len()]).collect();
        let mut last = held.clone();
        let mut buf = Vec::new();
        for (i, &(seq, f, off, len)) in self.acked.iter().enumerate() {
            buf.resize(len as usize, 0);
            pattern(write_seed(self.seed, seq), off, &mut buf);
            let got = files.get(f as usize);
            let (held, last) = (&mut held[f as usize], &mut last[f as usize]);
            for (k, &v) in buf.iter().enumerate() {
                let b = off as usize + k;
                last[b] = i as u32 + 1;
                if got.and_then(|g| g.get(b)) == Some(&v) {
                    held[b] = i as u32 + 1;
                }
            }
        }
        (held, last)
    }

    /// The acknowledged writes (indices into `acked`) whose data is gone from `files`: a
    /// known byte of the write's range holds neither what it wrote nor what a later
    /// acknowledged write put there. A write overwritten by later writes that were lost
    /// themselves is not lost if its own bytes are there (a disk that kept an older, whole
    /// state loses only the newer writes).
    pub fn lost(&self, files: &[Vec<u8>]) -> Vec<usize> {
        let (newest, _) = self.byte_owners(files);
        self.acked
            .iter()
            .enumerate()
            .filter(|&(i, &(_, f, off, len))| {
                (off as usize..(off + len) as usize).any(|b| {
                    !self.unknown[f as usize][b] && (newest[f as usize][b] as usize) < i + 1
                })
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Where the lost writes went: for each page of each file that holds a stale byte (a
    /// known byte that is not what the latest acknowledged write put there), how many such
    /// bytes and the newest write the page still holds. A page that holds an old, whole
    /// state points at a write that never reached it or was undone; zeros point at a page
    /// that was never written or was replaced.
    pub fn stale_pages(&self, files: &[Vec<u8>], page: usize) -> Vec<StalePage> {
        let mut out = Vec::new();
        let (held, last) = self.byte_owners(files);
        for (f, want) in self.data.iter().enumerate() {
            let got = files.get(f).map(Vec::as_slice).unwrap_or(&[]);
            let (held, last) = (&held[f], &last[f]);
            for start in (0..want.len()).step_by(page) {
                let end = (start + page).min(want.len());
                let mut p = StalePage {
                    file: f,
                    page: start / page,
                    stale: 0,
                    zero: 0,
                    missing: 0,
                    holds: None,
                    should_hold: None,
                };
                for b in start..end {
                    if self.unknown[f][b] || last[b] == 0 || held[b] >= last[b] {
                        continue;
                    }
                    p.stale += 1;
                    match got.get(b) {
                        None => p.missing += 1,
                        Some(0) => p.zero += 1,
                        Some(_) => {}
                    }
                    let h = (held[b] as usize).checked_sub(1);
                    p.holds = p.holds.max(h);
                    p.should_hold = p.should_hold.max(Some(last[b] as usize - 1));
                }
                if p.stale > 0 {
                    out.push(p);
                }
            }
        }
        out
    }

    /// How long before the workload was last seen the acknowledged write `i` returned.
    pub fn age_ms(&self, i: usize) -> Option<u64> {
        Some(
            self.last_ms?
                .saturating_sub(self.acked_ms.get(i).copied().flatten()?),
        )
    }
}

/// A page of a workload file that lost acknowledged writes (see [`Expected::stale_pages`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalePage {
    /// File index.
    pub file: usize,
    /// Page index in the file.
    pub page: usize,
    /// Known bytes that are not what the latest acknowledged write put there.
    pub stale: usize,
    /// Of them, zero bytes.
    pub zero: usize,
    /// Of them, bytes past the end of what the guest gave back.
    pub missing: usize,
    /// The newest acknowledged write (index into `acked`) whose bytes the page's stale
    /// part still holds; `None`: none of them holds any write's bytes.
    pub holds: Option<usize>,
    /// The newest acknowledged write the stale bytes should hold.
    pub should_hold: Option<usize>,
}

/// Rebuilds the expected state from the log text.
///
/// Only whole lines count. A crash can cut the port off in the middle of a line: a cut
/// `A` line (`A 34` of `A 3486 2419`) is not an acknowledgement, and it must not end the
/// write in flight either, whose bytes stay unknown (the write may well have completed:
/// the workload logs `A` after it returns). An earlier parser dropped the pending write on
/// any `A` line, so a write that completed but whose `A` line was cut showed up as the
/// loss of every acknowledged write it had overwritten.
pub fn expected(log: &str) -> Option<Expected> {
    let mut lines = log
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| {
            let i = l.find(['M', 'B', 'A'])?;
            Some(&l[i..])
        });
    let (files, size, seed) = lines.by_ref().find_map(|l| {
        let v: Vec<&str> = l.split_whitespace().collect();
        (v.len() == 4 && v[0] == "M").then(|| {
            Some((
                v[1].parse::<u64>().ok()?,
                v[2].parse::<u64>().ok()?,
                v[3].parse::<u64>().ok()?,
            ))
        })?
    })?;
    let mut e = Expected {
        data: vec![vec![0u8; size as usize]; files as usize],
        unknown: vec![vec![false; size as usize]; files as usize],
        acked: Vec::new(),
        acked_ms: Vec::new(),
        last_ms: None,
        seed,
    };
    let mut pending: Option<(u64, u64, u64, u64)> = None;
    for l in lines {
        let v: Vec<&str> = l.split_whitespace().collect();
        match v.as_slice() {
            ["B", seq, f, off, len] => {
                let (Ok(seq), Ok(f), Ok(off), Ok(len)) =
                    (seq.parse(), f.parse(), off.parse(), len.parse())
                else {
                    continue;
                };
                pending = Some((seq, f, off, len));
            }
            ["A", seq, rest @ ..] if rest.len() <= 1 => {
                let Ok(seq) = seq.parse::<u64>() else {
                    continue;
                };
                // Only the acknowledgement of the write in flight ends it.
                if pending.is_none_or(|(s, ..)| s != seq) {
                    continue;
                }
                let ms = rest.first().and_then(|t| t.parse::<u64>().ok());
                if ms.is_some() {
                    e.last_ms = ms.max(e.last_ms);
                }
                if let Some((_, f, off, len)) = pending.take() {
                    if f < files && off + len <= size {
                        let r = off as usize..(off + len) as usize;
                        pattern(
                            write_seed(seed, seq),
                            off,
                            &mut e.data[f as usize][r.clone()],
                        );
                        e.unknown[f as usize][r].fill(false);
                        e.acked.push((seq, f, off, len));
                        e.acked_ms.push(ms);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some((_, f, off, len)) = pending {
        if f < files && off + len <= size {
            e.unknown[f as usize][off as usize..(off + len) as usize].fill(true);
        }
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_whose_bytes_are_gone_count_as_lost() {
        // Three writes to the same bytes of one file; the disk kept the state after the
        // first, so the second and third are lost and the first is not (although its
        // bytes differ from the latest state).
        let mut log = String::from("M 1 64 7\n");
        for seq in 0..3 {
            log += &format!("B {seq} 0 8 16\nA {seq} {}\n", 10 * seq);
        }
        let e = expected(&log).unwrap();
        let mut kept = vec![0u8; 64];
        pattern(write_seed(7, 0), 8, &mut kept[8..24]);
        assert_eq!(e.lost(&[kept.clone()]), [1, 2]);
        assert_eq!(
            e.lost(std::slice::from_ref(&e.data[0])),
            Vec::<usize>::new()
        );
        // A byte of the first write flipped: it is lost too. A missing file loses all.
        kept[9] ^= 1;
        assert_eq!(e.lost(&[kept]), [0, 1, 2]);
        assert_eq!(e.lost(&[Vec::new()]), [0, 1, 2]);
    }

    #[test]
    fn the_log_rebuilds_acknowledged_writes_and_marks_the_one_in_flight() {
        let (files, size, seed) = (2u64, 20_000u64, 9u64);
        let mut log = format!("noise\nM {files} {size} {seed}\n");
        let mut truth = vec![vec![0u8; size as usize]; files as usize];
        for seq in 0..5u64 {
            let (f, off, len) = plan(seed, seq, files, size);
            log += &format!("B {seq} {f} {off} {len}\n");
            if seq < 4 {
                pattern(
                    write_seed(seed, seq),
                    off,
                    &mut truth[f as usize][off as usize..(off + len) as usize],
                );
                if seq % 2 == 0 {
                    log += &format!("[  1.0] kernel noise\nA {seq}\n");
                } else {
                    log += &format!("A {seq} {}\n", 100 * seq);
                }
            }
        }
        let e = expected(&log).unwrap();
        assert_eq!(e.acked.len(), 4);
        assert_eq!(e.acked_ms, [None, Some(100), None, Some(300)]);
        assert_eq!(e.last_ms, Some(300));
        assert_eq!(
            (e.age_ms(0), e.age_ms(1), e.age_ms(3)),
            (None, Some(200), Some(0))
        );
        let (f, off, len) = plan(seed, 4, files, size);
        for (i, file) in truth.iter().enumerate() {
            for (b, &want) in file.iter().enumerate() {
                let in_flight = i as u64 == f && (b as u64) >= off && (b as u64) < off + len;
                assert_eq!(e.unknown[i][b], in_flight);
                if !in_flight {
                    assert_eq!(e.data[i][b], want, "file {i} byte {b}");
                }
            }
        }
    }

    #[test]
    fn a_cut_acknowledgement_leaves_the_write_in_flight_unknown() {
        // Write 1 completed, but the crash cut its `A` line after two digits of the
        // sequence number (the reset campaign's run that "lost" 67 writes).
        let seed = 11;
        let mut log = String::from("M 1 64 11\nB 0 0 0 32\nA 0 5\nB 1 0 16 32\nA 1");
        let e = expected(&log).unwrap();
        assert_eq!(e.acked.len(), 1);
        assert!(e.unknown[0][16..48].iter().all(|&u| u));
        // What the object holds: write 0, then write 1 over half of it.
        let mut got = vec![0u8; 64];
        pattern(write_seed(seed, 0), 0, &mut got[0..32]);
        pattern(write_seed(seed, 1), 16, &mut got[16..48]);
        assert!(e.lost(std::slice::from_ref(&got)).is_empty());
        // What is appended later continues the cut line (garbage), and a stray `A` line
        // for another write does not end the one in flight either.
        log += "A 7 9\nA 7 9\n";
        let e = expected(&log).unwrap();
        assert_eq!((e.acked.len(), e.last_ms), (1, Some(5)));
        assert!(e.lost(std::slice::from_ref(&got)).is_empty());
        // Once the whole line is there, the write is acknowledged.
        let e = expected("M 1 64 11\nB 0 0 0 32\nA 0 5\nB 1 0 16 32\nA 1 8\n").unwrap();
        assert_eq!((e.acked.len(), e.last_ms), (2, Some(8)));
        assert!(e.lost(std::slice::from_ref(&got)).is_empty());
    }

    #[test]
    fn stale_pages_say_which_page_kept_which_old_write() {
        // One file of two 16-byte pages; writes 0 and 1 cover page 0, write 2 page 1.
        let mut log = String::from("M 1 32 5\n");
        for (seq, off) in [(0u64, 0u64), (1, 4), (2, 16)] {
            log += &format!("B {seq} 0 {off} 8\nA {seq} {}\n", 10 * seq);
        }
        let e = expected(&log).unwrap();
        assert!(e
            .stale_pages(std::slice::from_ref(&e.data[0]), 16)
            .is_empty());
        // Page 0 went back to the state after write 0; page 1 is zero.
        let mut got = vec![0u8; 32];
        pattern(write_seed(5, 0), 0, &mut got[0..8]);
        let s = e.stale_pages(&[got], 16);
        assert_eq!(s.len(), 2, "{s:?}");
        // Bytes 4..8 hold write 0 instead of write 1; bytes 8..12 hold zeros instead.
        assert_eq!(
            (
                s[0].page,
                s[0].stale,
                s[0].zero,
                s[0].holds,
                s[0].should_hold
            ),
            (0, 8, 4, Some(0), Some(1))
        );
        assert_eq!(
            (s[1].page, s[1].stale, s[1].zero, s[1].holds),
            (1, 8, 8, None)
        );
        // A short read: the missing bytes are counted as such.
        let s = e.stale_pages(&[e.data[0][..20].to_vec()], 16);
        assert_eq!((s[0].page, s[0].missing), (1, 4));
    }

    #[test]
    fn plans_are_the_ones_campaigns_were_run_with() {
        // Outputs of the workload's plan as it was when its xorshift moved into rio-prng:
        // a change here changes every memtest workload, and the campaign results with it.
        assert_eq!(plan(0, 0, 4, 1 << 20), (1, 805_357, 5186));
        assert_eq!(plan(7, 1, 4, 1 << 20), (1, 351_147, 4710));
        assert_eq!(plan(3, 99, 8, 65536), (1, 4105, 1802));
        assert_eq!(plan(u64::MAX, 12345, 3, 9000), (2, 3929, 4988));
    }

    #[test]
    fn plans_stay_inside_the_files() {
        for seq in 0..10_000 {
            let (f, off, len) = plan(3, seq, 8, 65536);
            assert!(f < 8 && (1..=8192).contains(&len) && off + len <= 65536);
        }
    }
}
