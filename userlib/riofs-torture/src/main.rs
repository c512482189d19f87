//! riofs-torture: a crash-consistency workload for riofs (or any POSIX file system).
//!
//! `run` performs random operations under a directory. Each operation is exactly one
//! state-changing system call (opening an existing file without `O_TRUNC` and closing it
//! change nothing a model of the tree sees), so that a crash leaves it wholly done or not at
//! all. Before the call it logs one line that describes it completely; after the call it
//! logs the result:
//!
//! ```text
//! START <seed>                       once
//! OP <n> <json>                      before operation n; json has "op" and its arguments
//! ACK <n> ok | ACK <n> err <errno>   after the call returned
//! DONE <n>                           after the last one
//! ```
//!
//! Every line is flushed, and on a tty (the guest's `/dev/ttyS2`) drained (`tcdrain`)
//! before the program goes on: the host knows of an operation before it starts, and an
//! `ACK` the host did not receive was never acknowledged. The host replays the log on its
//! own model, so the program picks its operations from the real tree (a walk, reused for a
//! random 1 to 10 operations, so that most of the time goes to the operations rather than
//! to walking) and keeps no model of its own. Some operations fail on purpose (removing a
//! non-empty directory, renaming a directory into itself, linking a directory, creating a
//! name that exists), others because the walk is stale (ENOENT, ENOTDIR, EISDIR, and ELOOP:
//! paths are opened with `O_NOFOLLOW`, though symlinks in the middle of a path are
//! followed), and the model must predict the same errno.
//!
//! Data written is `data(seed, len)` below: the bytes of a splitmix64 stream started at
//! `seed`. Every write is at most 8 KiB, well under riofs's atomic limit, so a write in
//! flight at a crash is all or nothing. The mmap store is one aligned 8-byte store.
//!
//! `--panic-at N` makes the program crash the kernel itself, from a second thread, a chosen
//! number of microseconds into operation N: the host's own trigger (a command started
//! through the agent) lands mostly between operations, this one mostly inside one.
//!
//! `dump` prints the tree as JSON lines sorted by path (see [`dump`]).

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

/// Random POSIX operations with a replayable log, and a stable dump of a tree.
#[derive(Parser)]
#[command(name = "riofs-torture", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Perform random operations under DIR, logging each before and after.
    Run {
        /// The directory to work in (the root of the file system under test).
        #[arg(long)]
        dir: PathBuf,
        /// Seed of the operation sequence.
        #[arg(long)]
        seed: u64,
        /// Number of operations.
        #[arg(long)]
        ops: u64,
        /// Where the log goes (e.g. /dev/ttyS2); standard output if absent.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Keep the tree at about this many entries.
        #[arg(long, default_value_t = 80)]
        max_entries: usize,
        /// Crash the kernel during operation N: a thread writes `c` to
        /// /proc/sysrq-trigger `--panic-delay-us` after the operation starts (with two
        /// CPUs the panic then lands inside the call, or just after it).
        #[arg(long)]
        panic_at: Option<u64>,
        /// See `--panic-at`.
        #[arg(long, default_value_t = 0)]
        panic_delay_us: u64,
    },
    /// Print the tree under DIR as sorted JSON lines.
    Dump {
        /// The directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Largest single write (riofs makes a write atomic up to a quarter of its log).
const MAX_WRITE: u64 = 8192;
/// Files stay below this size (direct, single and double indirect blocks all get used).
const MAX_FILE: u64 = 256 * 1024;
/// All file data together stays below this (the test's file systems are 16 MiB).
const MAX_DATA: u64 = 4 << 20;
/// Most descriptors of unlinked files held open at once.
const MAX_OPEN: usize = 4;
/// Deepest directory.
const MAX_DEPTH: usize = 4;

/// The bytes of a splitmix64 stream from `seed`, 8 little-endian bytes per step
/// ([`rio_prng::bytes`]; the host's model writes the same specification out on its own).
fn data(seed: u64, len: usize) -> Vec<u8> {
    rio_prng::bytes(seed, len)
}

/// FNV-1a, 64 bits: the content hash of the dump.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The generator that chooses operations (shared with every seeded workload).
use rio_prng::Rng;

/// The log: one line at a time, flushed and (on a tty) drained.
struct Log {
    out: Box<dyn Write>,
    fd: Option<i32>,
    /// Keeps the log file open (its fd is `fd`).
    _file: Option<File>,
}

impl Log {
    fn open(path: Option<&Path>) -> Result<Log> {
        match path {
            None => Ok(Log {
                out: Box::new(std::io::stdout()),
                fd: None,
                _file: None,
            }),
            Some(p) => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(p)
                    .with_context(|| format!("opening the log {}", p.display()))?;
                let w = f.try_clone().context("duplicating the log")?;
                Ok(Log {
                    fd: Some(f.as_raw_fd()),
                    out: Box::new(w),
                    _file: Some(f),
                })
            }
        }
    }

    fn line(&mut self, s: &str) -> Result<()> {
        self.out
            .write_all(s.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush())
            .context("writing the log")?;
        if let Some(fd) = self.fd {
            // SAFETY: tcdrain on an fd this struct keeps open; on a non-tty it fails with
            // ENOTTY, which is fine (a file needs no drain).
            unsafe { libc::tcdrain(fd) };
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    File,
    Dir,
    Symlink,
}

/// An entry of the walk: path relative to the root ("" is the root).
#[derive(Clone, Debug)]
struct Entry {
    path: String,
    kind: Kind,
    size: u64,
    depth: usize,
}

fn walk(root: &Path) -> Result<Vec<Entry>> {
    fn go(root: &Path, rel: &str, depth: usize, out: &mut Vec<Entry>) -> Result<()> {
        let full = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mut names: Vec<String> = Vec::new();
        for e in fs::read_dir(&full).with_context(|| format!("reading {}", full.display()))? {
            let e = e.with_context(|| format!("reading {}", full.display()))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        for n in names {
            let p = if rel.is_empty() {
                n
            } else {
                format!("{rel}/{n}")
            };
            let m = fs::symlink_metadata(root.join(&p)).with_context(|| format!("lstat {p}"))?;
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                Kind::File
            };
            out.push(Entry {
                path: p.clone(),
                kind,
                size: m.len(),
                depth: depth + 1,
            });
            if kind == Kind::Dir {
                go(root, &p, depth + 1, out)?;
            }
        }
        Ok(())
    }
    let mut out = vec![Entry {
        path: String::new(),
        kind: Kind::Dir,
        size: 0,
        depth: 0,
    }];
    go(root, "", 0, &mut out)?;
    Ok(out)
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).context("a path with a NUL byte")
}

/// The state of a run: the root, the log, the descriptors of unlinked files kept open.
struct Run {
    root: PathBuf,
    rng: Rng,
    log: Log,
    open: HashMap<u64, File>,
    next_fd: u64,
    max_entries: usize,
    /// The last walk, and how many more operations may choose from it.
    tree: Vec<Entry>,
    fresh_for: u64,
}

/// Opens an existing path for the given access, not following a final symlink (ELOOP).
fn open_nofollow(p: &Path, write: bool, read: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(read || !write)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
}

/// `renameat2(a, b, RENAME_EXCHANGE)`.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let (ca, cb) = (
        cpath(a).map_err(std::io::Error::other)?,
        cpath(b).map_err(std::io::Error::other)?,
    );
    // SAFETY: two valid NUL-terminated paths, relative to the current directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How to perform an operation (its one state-changing call).
type Act = Box<dyn FnOnce(&mut Run) -> std::io::Result<()>>;

/// One operation, as logged, and how to perform it.
struct Op {
    desc: Value,
    act: Act,
}

impl Run {
    fn full(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn new_name(&mut self) -> String {
        if self.rng.chance(4, 100) {
            // Long names: a directory block holds 15 entries of up to 255 bytes.
            let len = 100 + self.rng.below(156) as usize;
            let c = char::from(b'a' + self.rng.below(3) as u8);
            std::iter::repeat_n(c, len).collect()
        } else {
            let prefix = ["f", "d", "x"][self.rng.below(3) as usize];
            format!("{prefix}{}", self.rng.below(24))
        }
    }

    fn new_path(&mut self, dirs: &[&Entry]) -> String {
        let parent = self
            .rng
            .pick(dirs)
            .map(|e| e.path.clone())
            .unwrap_or_default();
        let n = self.new_name();
        if parent.is_empty() {
            n
        } else {
            format!("{parent}/{n}")
        }
    }

    /// Offset and length of a write to a file of `size` bytes.
    fn write_range(&mut self, size: u64) -> (u64, u64) {
        let len = if self.rng.chance(30, 100) {
            1 + self.rng.below(64)
        } else {
            1 + self.rng.below(MAX_WRITE)
        };
        let off = match self.rng.below(10) {
            0..=3 => self.rng.below(size.max(1)),
            4..=6 => size,
            7 => size + self.rng.below(20000),
            _ => self.rng.below(64 * 1024),
        };
        let off = if off + len > MAX_FILE {
            self.rng.below(MAX_FILE - len)
        } else {
            off
        };
        (off, len)
    }

    /// Chooses the next operation from the tree as it is now.
    fn choose(&mut self) -> Result<Op> {
        // A walk costs far more than an operation: reuse it for a few (random) operations,
        // so that a crash more often lands inside one. Stale entries make some operations
        // fail (ENOENT, ENOTDIR, EISDIR, ELOOP), which the host's model predicts.
        if self.fresh_for == 0 {
            self.tree = walk(&self.root)?;
            self.fresh_for = 1 + self.rng.below(10);
        }
        self.fresh_for -= 1;
        let tree = self.tree.clone();
        let total: u64 = tree
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum();
        let dirs: Vec<&Entry> = tree
            .iter()
            .filter(|e| e.kind == Kind::Dir && e.depth < MAX_DEPTH)
            .collect();
        let files: Vec<&Entry> = tree.iter().filter(|e| e.kind == Kind::File).collect();
        let nonroot: Vec<&Entry> = tree.iter().filter(|e| !e.path.is_empty()).collect();
        let subdirs: Vec<&Entry> = nonroot
            .iter()
            .copied()
            .filter(|e| e.kind == Kind::Dir)
            .collect();
        let full = tree.len() > self.max_entries;
        let fat = total > MAX_DATA;
        loop {
            let w = self.rng.below(100);
            let op = match w {
                0..=9 if !full => {
                    let path = self.new_path(&dirs);
                    let mode = [0o644, 0o600, 0o755, 0o640][self.rng.below(4) as usize];
                    let p = self.full(&path);
                    Some(Op {
                        desc: json!({"op": "create", "path": path, "mode": mode}),
                        act: Box::new(move |_| {
                            OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .mode(mode)
                                .open(p)
                                .map(drop)
                        }),
                    })
                }
                10..=29 if !fat => self.rng.pick(&files).map(|f| {
                    let (off, len) = self.write_range(f.size);
                    let seed = self.rng.next_u64();
                    let p = self.full(&f.path);
                    Op {
                        desc: json!({"op": "write", "path": f.path, "off": off, "len": len, "seed": seed}),
                        act: Box::new(move |_| {
                            let file = open_nofollow(&p, true, false)?;
                            let buf = data(seed, len as usize);
                            let n = file.write_at(&buf, off)?;
                            if n != buf.len() {
                                return Err(std::io::Error::other(format!("short write {n}")));
                            }
                            Ok(())
                        }),
                    }
                }),
                30..=35 => self.rng.pick(&files).map(|f| {
                    let size = match self.rng.below(3) {
                        0 => 0,
                        1 => self.rng.below(f.size.max(1)),
                        _ => (f.size + self.rng.below(20000)).min(MAX_FILE),
                    };
                    let p = self.full(&f.path);
                    Op {
                        desc: json!({"op": "truncate", "path": f.path, "size": size}),
                        act: Box::new(move |_| {
                            open_nofollow(&p, true, false)?.set_len(size)
                        }),
                    }
                }),
                36..=45 => self.rng.pick(&nonroot).map(|e| e.path.clone()).map(|from| {
                    let existing = self.rng.chance(45, 100);
                    let to = if existing {
                        self.rng
                            .pick(&nonroot)
                            .map(|e| e.path.clone())
                            .unwrap_or_default()
                    } else {
                        self.new_path(&dirs)
                    };
                    let (a, b) = (self.full(&from), self.full(&to));
                    if existing && self.rng.chance(30, 100) {
                        // renameat2(RENAME_EXCHANGE): the two names swap inodes.
                        return Op {
                            desc: json!({"op": "exchange", "path": from, "to": to}),
                            act: Box::new(move |_| exchange(&a, &b)),
                        };
                    }
                    Op {
                        desc: json!({"op": "rename", "path": from, "to": to}),
                        act: Box::new(move |_| fs::rename(a, b)),
                    }
                }),
                46..=51 => {
                    let pool: Vec<&Entry> = if self.rng.chance(90, 100) {
                        nonroot
                            .iter()
                            .copied()
                            .filter(|e| e.kind != Kind::Dir)
                            .collect()
                    } else {
                        nonroot.clone()
                    };
                    self.rng.pick(&pool).map(|e| {
                        let p = self.full(&e.path);
                        Op {
                            desc: json!({"op": "unlink", "path": e.path}),
                            act: Box::new(move |_| fs::remove_file(p)),
                        }
                    })
                }
                52..=54 if self.open.len() < MAX_OPEN => self.rng.pick(&files).map(|f| {
                    let id = self.next_fd;
                    self.next_fd += 1;
                    let p = self.full(&f.path);
                    Op {
                        desc: json!({"op": "unlink_open", "path": f.path, "fd": id}),
                        act: Box::new(move |run| {
                            let file = open_nofollow(&p, true, true)?;
                            fs::remove_file(&p)?;
                            run.open.insert(id, file);
                            Ok(())
                        }),
                    }
                }),
                55..=60 if !self.open.is_empty() => {
                    let mut ids: Vec<u64> = self.open.keys().copied().collect();
                    ids.sort_unstable();
                    let id = ids[self.rng.below(ids.len() as u64) as usize];
                    let size = self
                        .open
                        .get(&id)
                        .and_then(|f| f.metadata().ok())
                        .map_or(0, |m| m.len());
                    let (off, len) = self.write_range(size);
                    let seed = self.rng.next_u64();
                    Some(Op {
                        desc: json!({"op": "fdwrite", "fd": id, "off": off, "len": len, "seed": seed}),
                        act: Box::new(move |run| {
                            let f = run
                                .open
                                .get(&id)
                                .ok_or_else(|| std::io::Error::other("no such descriptor"))?;
                            let buf = data(seed, len as usize);
                            let n = f.write_at(&buf, off)?;
                            if n != buf.len() {
                                return Err(std::io::Error::other(format!("short write {n}")));
                            }
                            Ok(())
                        }),
                    })
                }
                61..=62 if !self.open.is_empty() => {
                    let mut ids: Vec<u64> = self.open.keys().copied().collect();
                    ids.sort_unstable();
                    let id = ids[self.rng.below(ids.len() as u64) as usize];
                    Some(Op {
                        desc: json!({"op": "fdclose", "fd": id}),
                        act: Box::new(move |run| {
                            drop(run.open.remove(&id));
                            Ok(())
                        }),
                    })
                }
                63..=67 if !full => {
                    let pool: Vec<&Entry> = if self.rng.chance(92, 100) {
                        nonroot
                            .iter()
                            .copied()
                            .filter(|e| e.kind != Kind::Dir)
                            .collect()
                    } else {
                        subdirs.clone()
                    };
                    self.rng.pick(&pool).map(|e| e.path.clone()).map(|from| {
                        let to = if self.rng.chance(15, 100) {
                            self.rng
                                .pick(&nonroot)
                                .map(|e| e.path.clone())
                                .unwrap_or_default()
                        } else {
                            self.new_path(&dirs)
                        };
                        let (a, b) = (self.full(&from), self.full(&to));
                        Op {
                            desc: json!({"op": "link", "path": from, "to": to}),
                            act: Box::new(move |_| fs::hard_link(a, b)),
                        }
                    })
                }
                68..=71 if !full => {
                    let path = self.new_path(&dirs);
                    let target = match self.rng.below(4) {
                        0 => "nowhere/at/all".to_string(),
                        1 => {
                            // Longer than an inode holds, in components of 50 bytes.
                            let n = 2 + self.rng.below(10) as usize;
                            vec!["t".repeat(50); n].join("/")
                        }
                        _ => {
                            let root = self.root.display().to_string();
                            self.rng
                                .pick(&nonroot)
                                .map_or_else(|| "x".to_string(), |e| format!("{root}/{}", e.path))
                        }
                    };
                    let p = self.full(&path);
                    let t = target.clone();
                    Some(Op {
                        desc: json!({"op": "symlink", "path": path, "target": target}),
                        act: Box::new(move |_| symlink(t, p)),
                    })
                }
                72..=76 if !full => {
                    let path = self.new_path(&dirs);
                    let mode = self.rng.below(0o1000) as u32;
                    let p = self.full(&path);
                    Some(Op {
                        desc: json!({"op": "mkdir", "path": path, "mode": mode}),
                        act: Box::new(move |_| {
                            let c = cpath(&p).map_err(std::io::Error::other)?;
                            // SAFETY: a valid NUL-terminated path.
                            if unsafe { libc::mkdir(c.as_ptr(), mode) } != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        }),
                    })
                }
                77..=82 => {
                    let pool = if self.rng.chance(90, 100) || subdirs.is_empty() {
                        subdirs.clone()
                    } else {
                        nonroot.clone()
                    };
                    self.rng.pick(&pool).map(|e| {
                        let p = self.full(&e.path);
                        Op {
                            desc: json!({"op": "rmdir", "path": e.path}),
                            act: Box::new(move |_| fs::remove_dir(p)),
                        }
                    })
                }
                83..=86 => {
                    let pool: Vec<&Entry> = nonroot
                        .iter()
                        .copied()
                        .filter(|e| e.kind != Kind::Symlink)
                        .collect();
                    self.rng.pick(&pool).map(|e| {
                        // No set-group-ID on directories: mkdir in one would inherit it.
                        let mask = if e.kind == Kind::Dir { 0o1777 } else { 0o7777 };
                        let mode = (self.rng.below(0o10000) as u32) & mask;
                        let p = self.full(&e.path);
                        Op {
                            desc: json!({"op": "chmod", "path": e.path, "mode": mode}),
                            act: Box::new(move |_| {
                                let f = open_nofollow(&p, false, true)?;
                                // SAFETY: fchmod on an open descriptor.
                                if unsafe { libc::fchmod(f.as_raw_fd(), mode) } != 0 {
                                    return Err(std::io::Error::last_os_error());
                                }
                                Ok(())
                            }),
                        }
                    })
                }
                87..=89 => self.rng.pick(&files).map(|f| {
                    let atime = 1_000_000_000 + self.rng.below(1_000_000_000) as i64;
                    let mtime = 1_000_000_000 + self.rng.below(1_000_000_000) as i64;
                    let ans = self.rng.below(1_000_000_000) as i64;
                    let mns = self.rng.below(1_000_000_000) as i64;
                    let p = self.full(&f.path);
                    Op {
                        desc: json!({"op": "utimes", "path": f.path, "atime": atime, "ans": ans, "mtime": mtime, "mns": mns}),
                        act: Box::new(move |_| {
                            let c = cpath(&p).map_err(std::io::Error::other)?;
                            let t = [
                                libc::timespec {
                                    tv_sec: atime,
                                    tv_nsec: ans,
                                },
                                libc::timespec {
                                    tv_sec: mtime,
                                    tv_nsec: mns,
                                },
                            ];
                            // SAFETY: a valid path and two timespecs.
                            if unsafe {
                                libc::utimensat(
                                    libc::AT_FDCWD,
                                    c.as_ptr(),
                                    t.as_ptr(),
                                    libc::AT_SYMLINK_NOFOLLOW,
                                )
                            }
                                != 0
                            {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        }),
                    }
                }),
                90..=95 => {
                    let pool: Vec<&Entry> =
                        files.iter().copied().filter(|f| f.size >= 8).collect();
                    let fresh = self.rng.pick(&pool).and_then(|f| {
                        // The size now (the walk may be stale): an lstat changes nothing.
                        let m = fs::symlink_metadata(self.full(&f.path)).ok()?;
                        (m.file_type().is_file() && m.len() >= 8).then_some((f, m.len()))
                    });
                    fresh.map(|(f, size)| {
                        let off = self.rng.below(size - 7) & !7;
                        let seed = self.rng.next_u64();
                        let p = self.full(&f.path);
                        Op {
                            desc: json!({"op": "mmap", "path": f.path, "off": off, "seed": seed}),
                            act: Box::new(move |_| mmap_store(&p, size, off, seed)),
                        }
                    })
                }
                96..=99 => self.rng.pick(&files).map(|f| {
                    let p = self.full(&f.path);
                    Op {
                        desc: json!({"op": "fsync", "path": f.path}),
                        act: Box::new(move |_| open_nofollow(&p, true, false)?.sync_all()),
                    }
                }),
                _ => None,
            };
            if let Some(op) = op {
                return Ok(op);
            }
        }
    }
}

/// Stores 8 bytes of `data(seed, 8)` at `off` of the file through a shared mapping.
fn mmap_store(p: &Path, size: u64, off: u64, seed: u64) -> std::io::Result<()> {
    let f = open_nofollow(p, true, true)?;
    let len = f.metadata()?.len() as usize;
    if (off + 8) as usize > len || len as u64 != size {
        return Err(std::io::Error::other("the file changed size"));
    }
    // SAFETY: a fresh shared mapping of an open file; checked for MAP_FAILED.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if m == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&data(seed, 8));
    // SAFETY: `off + 8 <= size <= len` and `off` is 8-aligned in a page-aligned mapping:
    // one aligned 8-byte store inside the mapping.
    unsafe {
        std::ptr::write_volatile(
            m.cast::<u8>().add(off as usize).cast::<u64>(),
            u64::from_le_bytes(word),
        );
        libc::munmap(m, len);
    }
    Ok(())
}

/// Starts a thread that panics the kernel `delay_us` from now (spinning, not sleeping, so
/// that it is on its CPU when the time comes).
fn panic_later(delay_us: u64) -> Result<()> {
    let mut trigger = OpenOptions::new()
        .write(true)
        .open("/proc/sysrq-trigger")
        .context("opening /proc/sysrq-trigger")?;
    let start = std::time::Instant::now();
    std::thread::spawn(move || {
        while start.elapsed() < std::time::Duration::from_micros(delay_us) {
            std::hint::spin_loop();
        }
        let _ = trigger.write_all(b"c");
    });
    Ok(())
}

fn run(
    dir: PathBuf,
    seed: u64,
    ops: u64,
    log: Option<PathBuf>,
    max_entries: usize,
    panic_at: Option<(u64, u64)>,
) -> Result<()> {
    // SAFETY: umask has no failure mode; modes of created files are then exact.
    unsafe { libc::umask(0) };
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut r = Run {
        root: dir,
        rng: Rng::new(seed),
        log: Log::open(log.as_deref())?,
        open: HashMap::new(),
        next_fd: 0,
        max_entries,
        tree: Vec::new(),
        fresh_for: 0,
    };
    r.log.line(&format!("START {seed}"))?;
    for n in 0..ops {
        let op = r.choose()?;
        r.log.line(&format!("OP {n} {}", op.desc))?;
        if let Some((_, delay_us)) = panic_at.filter(|p| p.0 == n) {
            panic_later(delay_us)?;
        }
        let res = (op.act)(&mut r);
        match res {
            Ok(()) => r.log.line(&format!("ACK {n} ok"))?,
            Err(e) => r.log.line(&format!("ACK {n} err {} {e}", errno_of(&e)))?,
        }
    }
    r.log.line(&format!("DONE {ops}"))?;
    Ok(())
}

/// Prints every entry under `dir` (itself as "."), sorted by path, one JSON object a line:
/// `path`, `type` (file, dir, symlink), `mode` (& 0o7777), `nlink`, and for non-directories
/// `size` and `group` (the first path, in this order, of the same inode: hard links share
/// it), for files `hash` (FNV-1a of the contents, hex) and `mtime` ("sec.nsec"), for
/// symlinks `target`.
fn dump(dir: &Path) -> Result<()> {
    let tree = walk(dir)?;
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    let mut out = std::io::stdout().lock();
    for e in tree {
        let p = if e.path.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&e.path)
        };
        let m = fs::symlink_metadata(&p).with_context(|| format!("lstat {}", p.display()))?;
        let name = if e.path.is_empty() {
            ".".to_string()
        } else {
            e.path.clone()
        };
        let mut v = json!({
            "path": name,
            "mode": m.mode() & 0o7777,
            "nlink": m.nlink(),
        });
        let group = first.entry((m.dev(), m.ino())).or_insert(name).clone();
        match e.kind {
            Kind::Dir => v["type"] = json!("dir"),
            Kind::File => {
                let bytes = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                if bytes.len() as u64 != m.len() {
                    bail!("{}: read {} bytes of {}", p.display(), bytes.len(), m.len());
                }
                v["type"] = json!("file");
                v["size"] = json!(m.len());
                v["hash"] = json!(format!("{:016x}", fnv(&bytes)));
                v["mtime"] = json!(format!("{}.{:09}", m.mtime(), m.mtime_nsec()));
                v["group"] = json!(group);
            }
            Kind::Symlink => {
                let t = fs::read_link(&p).with_context(|| format!("readlink {}", p.display()))?;
                v["type"] = json!("symlink");
                v["size"] = json!(m.len());
                v["target"] = json!(t.to_string_lossy());
                v["group"] = json!(group);
            }
        }
        writeln!(out, "{v}").context("writing the dump")?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run {
            dir,
            seed,
            ops,
            log,
            max_entries,
            panic_at,
            panic_delay_us,
        } => run(
            dir,
            seed,
            ops,
            log,
            max_entries,
            panic_at.map(|n| (n, panic_delay_us)),
        ),
        Cmd::Dump { dir } => dump(&dir),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("riofs-torture: {e:#}");
            println!("FATAL {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_the_splitmix_stream() {
        assert_eq!(data(0, 8), 0xe220_a839_7b1d_cdafu64.to_le_bytes());
        assert_eq!(data(7, 13), data(7, 20)[..13]);
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        // Outputs of data() as it was when it moved into rio-prng.
        assert_eq!(
            data(7, 13),
            [0xd7, 0x0d, 0x32, 0x59, 0xe4, 0xe1, 0xcb, 0x63, 0x1c, 0x66, 0x3c, 0xf4, 0xd7]
        );
        assert_eq!(
            data(0xdead_beef, 20),
            [
                0x9b, 0xeb, 0xc9, 0x68, 0x0f, 0xb9, 0xdf, 0x4a, 0x22, 0x09, 0xa1, 0x41, 0x31, 0x6a,
                0x58, 0xde, 0x1d, 0xfc, 0x1c, 0x8e
            ]
        );
    }

    #[test]
    fn runs_and_dumps_in_a_temporary_directory() {
        let d = std::env::temp_dir().join(format!("riofs-torture-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir(&d).unwrap();
        let log = d.with_extension("log");
        fs::write(&log, b"").unwrap();
        run(d.clone(), 3, 300, Some(log.clone()), 60, None).unwrap();
        let text = fs::read_to_string(&log).unwrap();
        assert_eq!(text.matches("\nACK ").count(), 300);
        assert!(text.contains("DONE 300"));
        dump(&d).unwrap();
        let _ = fs::remove_dir_all(&d);
        let _ = fs::remove_file(&log);
    }
}
