//! The op generator: a random history from a seed, steered by the model so that most ops
//! touch live handles, mappings and objects.

use crate::fsmodel::{page_end, LEAVES, LINK_TARGETS, MAX_FILE, MAX_WRITE, TOPS};
use crate::model::{Config, FMapView, Model, PAGE};
use crate::ops::{OFlags, Op, OpKind, OpenHow, ProcId, BASE_ACTORS, MSYNC_FLAGS, NAMES};
use crate::prng::Rng;

/// Modes that `create` uses.
pub const MODES: [u32; 5] = [0o600, 0o644, 0o666, 0o640, 0o604];

/// Largest object the ops create or resize to.
pub const MAX_SIZE: u64 = 256 << 10;

fn gen_size(r: &mut Rng) -> u64 {
    match r.below(10) {
        0 => 0,
        1 => r.range(1, 100),
        2..=5 => PAGE * r.range(1, MAX_SIZE / PAGE),
        _ => r.range(1, MAX_SIZE),
    }
}

fn pick<T: Clone>(r: &mut Rng, v: &[T]) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[r.below(v.len() as u64) as usize].clone())
    }
}

/// Generates `n` ops for `seed` under `cfg` (the same arguments give the same ops).
pub fn generate(seed: u64, n: u32, cfg: &Config) -> Vec<Op> {
    let mut r = Rng::stream(seed, 1);
    let mut m = Model::new(cfg.clone(), seed);
    let mut ops = Vec::with_capacity(n as usize);
    for i in 0..n {
        let op = choose(&mut r, &m, cfg);
        // Keep the model in step (ops that do not apply are skipped here as in a run).
        let _ = m.step(i, &op);
        ops.push(op);
    }
    ops
}

fn choose(r: &mut Rng, m: &Model, cfg: &Config) -> Op {
    let procs: Vec<ProcId> = m.procs.keys().copied().collect();
    let weights: Vec<u64> = procs
        .iter()
        .map(|&p| if p < BASE_ACTORS { 4 } else { 2 })
        .collect();
    let p = procs[r.weighted(&weights).unwrap_or(0)];
    let fds = m.fds(p);
    let maps = m.maps(p);
    let existing: Vec<u8> = NAMES
        .iter()
        .enumerate()
        .filter(|(_, n)| m.objs.contains_key(**n))
        .map(|(i, _)| i as u8)
        .collect();
    let any_name = |r: &mut Rng| -> u8 {
        if !existing.is_empty() && r.chance(4, 5) {
            pick(r, &existing).unwrap_or(0)
        } else {
            r.below(NAMES.len() as u64) as u8
        }
    };
    let admin = m.identity(p).is_some_and(|i| i.admin);
    let is_base = p < BASE_ACTORS;
    if cfg.riofs && r.chance(1, 2) {
        if let Some(kind) = choose_fs(r, m, p) {
            return Op { proc: p, kind };
        }
    }
    // Too many descriptors or mappings: close or unmap first.
    if fds.len() > 6 && r.chance(1, 2) {
        return Op {
            proc: p,
            kind: OpKind::Close {
                h: pick(r, &fds).unwrap_or(0),
            },
        };
    }
    if maps.len() > 4 && r.chance(1, 2) {
        return Op {
            proc: p,
            kind: OpKind::Munmap {
                m: pick(r, &maps).map_or(0, |x| x.0),
            },
        };
    }
    #[rustfmt::skip]
    let table: [(u64, u8); 23] = [
        (7, 0),   // create
        (12, 1),  // open
        (5, 2),   // close
        (12, 3),  // pread
        (12, 4),  // pwrite
        (6, 5),   // mmap
        (8, 6),   // store
        (4, 7),   // load
        (4, 8),   // munmap
        (5, 9),   // resize
        (5, 10),  // delete
        (2, 11),  // list
        (2, 12),  // stat
        (1, 13),  // stats
        (1, 14),  // info
        (1, 15),  // sync
        (if admin { 3 } else { 1 }, 16), // blkdev add
        (if admin { 3 } else { 1 }, 17), // blkdev remove
        (if is_base { 2 } else { 0 }, 18), // fork
        (if is_base && !m.children(p).is_empty() { 3 } else { 0 }, 19), // exit
        (1, 20),  // rebind
        (if admin { 0 } else { 1 }, 21), // format
        (if cfg.wild_store_allowed { 0 } else { 1 }, 22), // wild store
    ];
    let w: Vec<u64> = table.iter().map(|t| t.0).collect();
    let what = table[r.weighted(&w).unwrap_or(1)].1;
    let h = pick(r, &fds);
    let mp = pick(r, &maps);
    let size_of = |h: u32| {
        m.binding(h)
            .and_then(|(n, _)| m.objs.get(n))
            .map_or(0, |o| o.size)
    };
    let kind = match (what, h, mp) {
        (0, _, _) => OpKind::Create {
            name: r.below(NAMES.len() as u64) as u8,
            size: gen_size(r),
            mode: pick(r, &MODES).unwrap_or(0o600),
        },
        (2, Some(h), _) => OpKind::Close { h },
        (3, Some(h), _) => {
            let size = size_of(h);
            let off = if r.chance(1, 8) {
                size + r.below(3 * PAGE)
            } else {
                r.below(size + 1)
            };
            OpKind::Pread {
                h,
                off,
                len: r.range(1, 3 * PAGE + 100) as u32,
            }
        }
        (4, Some(h), _) => {
            let size = size_of(h);
            let len = r.range(1, 4 * PAGE) as u32;
            let off = match r.below(10) {
                0 => size + r.below(PAGE),                    // past the end
                1 => size.saturating_sub(u64::from(len) / 2), // across the end
                _ => r.below(size.saturating_sub(u64::from(len)) + 1),
            };
            OpKind::Pwrite { h, off, len }
        }
        (5, Some(h), _) => {
            let pages = size_of(h).div_ceil(PAGE) as u32;
            let (page_off, n) = if r.chance(1, 8) || pages == 0 {
                (
                    r.below(u64::from(pages) + 1) as u32,
                    r.range(1, u64::from(pages) + 2) as u32,
                )
            } else {
                let off = r.below(u64::from(pages)) as u32;
                (off, r.range(1, u64::from(pages - off)) as u32)
            };
            let writable = m.binding(h).is_some_and(|(_, w)| w);
            let write = if writable {
                r.chance(3, 4)
            } else {
                r.chance(1, 6)
            };
            OpKind::Mmap {
                h,
                page_off,
                pages: n,
                write,
                private: r.chance(1, 15),
            }
        }
        (6 | 7, _, Some((id, obj, bytes, _))) => {
            let first = m.map_range(p, id).map_or(0, |x| x.1);
            let size = m.objs.get(&obj).map_or(0, |o| o.size);
            let room = bytes.min(size.saturating_sub(first));
            let len = r.range(1, room.clamp(1, 2 * PAGE));
            let off = r.below(room.saturating_sub(len) + 1);
            if what == 6 {
                OpKind::Store {
                    m: id,
                    off: off as u32,
                    len: len as u32,
                }
            } else {
                OpKind::MapRead {
                    m: id,
                    off: off as u32,
                    len: len as u32,
                }
            }
        }
        (8, _, Some((id, ..))) => OpKind::Munmap { m: id },
        (9, Some(h), _) => {
            let size = size_of(h);
            let new = match r.below(4) {
                0 => size + r.range(1, 3 * PAGE),
                1 => size.saturating_sub(r.range(1, 3 * PAGE)),
                _ => gen_size(r),
            };
            OpKind::Resize {
                h,
                size: new.min(MAX_SIZE + 8 * PAGE),
            }
        }
        (10, _, _) => OpKind::Delete { name: any_name(r) },
        (11, _, _) => OpKind::List,
        (12, Some(h), _) => OpKind::Stat { h },
        (13, _, _) => OpKind::Stats,
        (14, _, _) => OpKind::Info,
        (15, _, _) => OpKind::Sync,
        (16, Some(h), _) => OpKind::BlkAdd { h },
        (17, Some(h), _) => OpKind::BlkRemove { h },
        (18, _, _) => OpKind::Fork,
        (19, _, _) => OpKind::Exit {
            child: pick(r, &m.children(p)).unwrap_or(0),
        },
        (20, Some(h), _) => OpKind::Rebind {
            h,
            name: any_name(r),
        },
        (21, _, _) => OpKind::Format,
        (22, _, _) => OpKind::WildStore,
        // Needs a handle or mapping this process does not have: open something instead.
        _ => {
            let how = match r.below(10) {
                0..=3 => OpenHow::ReadOnly,
                4..=7 => OpenHow::ReadWrite,
                8 => OpenHow::Exclusive,
                _ => {
                    if r.chance(1, 2) {
                        OpenHow::ExclusiveReadOnly
                    } else {
                        OpenHow::Exclusive
                    }
                }
            };
            OpKind::Open {
                name: any_name(r),
                how,
            }
        }
    };
    Op { proc: p, kind }
}

/// Modes of files that riofs ops create or set.
pub const FILE_MODES: [u32; 9] = [
    0o644, 0o600, 0o666, 0o640, 0o604, 0o400, 0o200, 0o000, 0o660,
];
/// Modes of directories that riofs ops make or set.
pub const DIR_MODES: [u32; 7] = [0o755, 0o700, 0o777, 0o1777, 0o555, 0o750, 0o1770];

fn random_path(r: &mut Rng) -> String {
    let mut c: Vec<&str> = Vec::new();
    if r.chance(7, 8) {
        c.push(TOPS[r.below(TOPS.len() as u64) as usize].0);
    }
    for _ in 0..r.below(3) {
        c.push(if r.chance(1, 2) { "d0" } else { "d1" });
    }
    c.push(LEAVES[r.below(LEAVES.len() as u64) as usize]);
    c.join("/")
}

/// Mappings of riofs files stay this short (pages).
pub const MAX_MAP_PAGES: u64 = 16;

/// Where in riofs mapping `v` of a file of `size` bytes a load or store goes: mostly
/// within the file's bytes; sometimes in the tail of its last page (past the end, still
/// mapped); sometimes across or past the end of that page (`SIGBUS`).
fn map_access(r: &mut Rng, size: u64, v: &FMapView) -> (u32, u32) {
    // Bytes of the mapping that may be touched, and those that hold the file's bytes.
    let valid = page_end(size).saturating_sub(v.first).min(v.len);
    let data = size.saturating_sub(v.first).min(v.len);
    let (lo, hi) = match r.below(20) {
        0..=6 if valid < v.len => (valid.saturating_sub(r.below(64)), v.len),
        7 | 8 if data < valid => (data, valid),
        _ if data > 0 => (0, data),
        _ => (0, v.len),
    };
    let room = hi - lo;
    let len = r.range(1, room.clamp(1, 2 * PAGE));
    let off = lo + r.below(room.saturating_sub(len) + 1);
    (off as u32, len as u32)
}

/// A riofs op for process `p` (`None`: none fits, do something else).
fn choose_fs(r: &mut Rng, m: &Model, p: ProcId) -> Option<OpKind> {
    let fs = m.fs.as_ref()?;
    let who = m.identity(p)?;
    let rfds = m.rfds(p);
    if rfds.len() > 5 && r.chance(1, 2) {
        return Some(OpKind::FClose { h: pick(r, &rfds)? });
    }
    let fmaps = m.fmaps(p);
    if fmaps.len() > 4 && r.chance(1, 2) {
        return Some(OpKind::FMunmap {
            m: pick(r, &fmaps)?.id,
        });
    }
    // The names of the files this process maps (to truncate or unlink them while mapped),
    // with their sizes.
    let mapped: Vec<(String, u64)> = fmaps
        .iter()
        .flat_map(|v| {
            let size = fs.size_of(v.h);
            fs.names_of(v.ino).into_iter().map(move |n| (n, size))
        })
        .collect();
    let paths = fs.paths();
    let dirs: Vec<String> = std::iter::once(String::new())
        .chain(paths.iter().filter(|x| x.1).map(|x| x.0.clone()))
        .collect();
    // Mostly paths that exist; the top directories less often (so that the tree keeps
    // its shape for a while).
    let deep: Vec<&String> = paths
        .iter()
        .map(|x| &x.0)
        .filter(|x| x.contains('/'))
        .collect();
    // Half the time, only what the actor can reach or create in (more successes).
    let mine: Vec<&String> = deep
        .iter()
        .copied()
        .filter(|x| fs.reachable(&who, x))
        .collect();
    let my_files: Vec<String> = paths
        .iter()
        .filter(|x| !x.1 && fs.reachable(&who, &x.0))
        .map(|x| x.0.clone())
        .collect();
    let my_dirs: Vec<&String> = dirs.iter().filter(|d| fs.can_create_in(&who, d)).collect();
    let any_path = |r: &mut Rng| -> String {
        if !mine.is_empty() && r.chance(1, 2) {
            mine[r.below(mine.len() as u64) as usize].clone()
        } else if !deep.is_empty() && r.chance(2, 3) {
            deep[r.below(deep.len() as u64) as usize].clone()
        } else if !paths.is_empty() && r.chance(1, 2) {
            paths[r.below(paths.len() as u64) as usize].0.clone()
        } else {
            random_path(r)
        }
    };
    let new_path = |r: &mut Rng, leaves: &[&str]| -> String {
        if r.chance(1, 8) {
            return random_path(r);
        }
        let d = if !my_dirs.is_empty() && r.chance(2, 3) {
            my_dirs[r.below(my_dirs.len() as u64) as usize]
        } else {
            &dirs[r.below(dirs.len() as u64) as usize]
        };
        let leaf = leaves[r.below(leaves.len() as u64) as usize];
        if d.is_empty() {
            leaf.to_string()
        } else {
            format!("{d}/{leaf}")
        }
    };
    let file_mode = |r: &mut Rng| FILE_MODES[r.below(FILE_MODES.len() as u64) as usize];
    let dir_mode = |r: &mut Rng| DIR_MODES[r.below(DIR_MODES.len() as u64) as usize];
    let has = !rfds.is_empty();
    let hm = !fmaps.is_empty();
    #[rustfmt::skip]
    let table: [(u64, u8); 21] = [
        (14, 0),  // open
        (if has { 4 } else { 0 }, 1),   // close
        (if has { 10 } else { 0 }, 2),  // pread
        (if has { 16 } else { 0 }, 3),  // pwrite
        (if has { 3 } else { 0 }, 4),   // ftruncate
        (if has { 2 } else { 0 }, 5),   // fstat
        (if mapped.is_empty() { 3 } else { 6 }, 6), // truncate
        (6, 7),   // unlink
        (5, 8),   // mkdir
        (4, 9),   // rmdir
        (8, 10),  // rename
        (4, 11),  // link
        (3, 12),  // symlink
        (4, 13),  // chmod
        (3, 14),  // chown
        (5, 15),  // stat
        (if has { 24 } else { 0 }, 16), // mmap
        (if hm { 30 } else { 0 }, 17),  // store
        (if hm { 20 } else { 0 }, 18),  // load
        (if hm { 6 } else { 0 }, 19),   // msync
        (if hm { 3 } else { 0 }, 20),   // munmap
    ];
    let w: Vec<u64> = table.iter().map(|t| t.0).collect();
    let what = table[r.weighted(&w)?].1;
    let h = pick(r, &rfds);
    let size_of = |h: u32| fs.size_of(h);
    // A path for truncate and unlink: now and then one of a mapped file (with its size;
    // 0 for other paths).
    let victim = |r: &mut Rng, den: u64| -> (String, u64) {
        if !mapped.is_empty() && r.chance(1, den) {
            pick(r, &mapped).unwrap_or_default()
        } else {
            (any_path(r), 0)
        }
    };
    // A new size for a file of `cur` bytes: now and then at or next to a page boundary,
    // or smaller than it is (pages go from under its mappings).
    let new_size = |r: &mut Rng, cur: u64| -> u64 {
        match r.below(6) {
            0 | 1 => {
                let at = PAGE * r.below(MAX_FILE / 2 / PAGE);
                match r.below(3) {
                    0 => at,
                    1 => at + 1,
                    _ => at.saturating_sub(1),
                }
            }
            2 | 3 if cur > 0 => r.below(cur),
            _ => r.below(MAX_FILE / 2),
        }
    };
    Some(match (what, h) {
        (1, Some(h)) => OpKind::FClose { h },
        (2, Some(h)) => {
            let size = size_of(h);
            OpKind::FRead {
                h,
                off: if r.chance(1, 8) {
                    size + r.below(100)
                } else {
                    r.below(size + 1)
                },
                len: r.range(1, u64::from(MAX_WRITE) + 100) as u32,
            }
        }
        (3, Some(h)) => {
            let size = size_of(h);
            let len = r.range(1, u64::from(MAX_WRITE)) as u32;
            let off = match r.below(6) {
                0 => size + r.below(5000), // past the end: a hole
                1 => size,
                _ => r.below(size + 1),
            };
            OpKind::FWrite {
                h,
                off: off.min(MAX_FILE),
                len,
            }
        }
        (4, Some(h)) => OpKind::FTruncate {
            h,
            size: new_size(r, size_of(h)),
        },
        (5, Some(h)) => OpKind::FStat { h },
        (6, _) => {
            let (path, cur) = victim(r, 2);
            OpKind::Truncate {
                path,
                size: new_size(r, cur),
            }
        }
        (7, _) => OpKind::Unlink {
            path: victim(r, 4).0,
        },
        (8, _) => OpKind::Mkdir {
            path: new_path(r, &["d0", "d1"]),
            mode: dir_mode(r),
        },
        (9, _) => OpKind::Rmdir {
            path: if r.chance(2, 3) {
                let d: Vec<&String> = dirs.iter().filter(|d| !d.is_empty()).collect();
                pick(r, &d).cloned().unwrap_or_else(|| random_path(r))
            } else {
                any_path(r)
            },
        },
        (10, _) => OpKind::Rename {
            from: any_path(r),
            to: if r.chance(1, 2) {
                any_path(r)
            } else {
                new_path(r, &LEAVES)
            },
        },
        (11, _) => OpKind::Link {
            from: any_path(r),
            to: new_path(r, &["f0", "f1", "f2", "l0"]),
        },
        (12, _) => OpKind::Symlink {
            path: new_path(r, &["l0", "f2"]),
            target: r.below(LINK_TARGETS.len() as u64) as u8,
        },
        (13, _) => OpKind::Chmod {
            path: any_path(r),
            mode: if r.chance(1, 2) {
                file_mode(r)
            } else {
                dir_mode(r)
            },
        },
        (14, _) => {
            // The namespaced actor can name only its own uid (others are not mapped).
            let uids: &[u32] = if who.ns_root_of.is_some() {
                &[1000, 1001, 1002]
            } else {
                &[0, 1000, 1001, 1002]
            };
            OpKind::Chown {
                path: any_path(r),
                uid: uids[r.below(uids.len() as u64) as usize],
            }
        }
        (15, _) => OpKind::PStat {
            path: any_path(r),
            follow: r.chance(1, 4),
        },
        (16, Some(h)) => {
            // Mostly a file open for reading and writing, or one with bytes in it.
            let file = |h: &u32| {
                fs.files
                    .get(h)
                    .is_some_and(|f| f.read && fs.image(f.ino).is_some())
            };
            let full: Vec<u32> = rfds
                .iter()
                .copied()
                .filter(|h| size_of(*h) > 0 && file(h))
                .collect();
            let rw: Vec<u32> = rfds
                .iter()
                .copied()
                .filter(|h| file(h) && fs.files.get(h).is_some_and(|f| f.write))
                .collect();
            let h = if !rw.is_empty() && r.chance(1, 2) {
                pick(r, &rw).unwrap_or(h)
            } else if !full.is_empty() && r.chance(3, 4) {
                pick(r, &full).unwrap_or(h)
            } else {
                h
            };
            let fpages = size_of(h).div_ceil(PAGE);
            let (page_off, pages) = match r.below(8) {
                // At or past the end of the file.
                0 => (r.below(fpages + 2), r.range(1, 3)),
                // The whole file and pages past its end (which it may grow into).
                1 | 2 => (0, fpages + r.range(1, 3)),
                _ if fpages == 0 => (0, r.range(1, 3)),
                _ => {
                    let off = r.below(fpages);
                    (off, r.range(1, fpages - off))
                }
            };
            let f = fs.files.get(&h);
            let write = if f.is_some_and(|f| f.write) {
                r.chance(7, 8)
            } else {
                r.chance(1, 5)
            };
            OpKind::FMmap {
                h,
                page_off: page_off as u32,
                pages: pages.min(MAX_MAP_PAGES) as u32,
                write,
                shared: r.chance(9, 10),
            }
        }
        (17 | 18, _) if hm => {
            // A shared writable mapping wholly past the end of its file, whose description
            // this process can grow the file through: grow it under the mapping.
            let dead_rw: Vec<FMapView> = fmaps
                .iter()
                .filter(|v| v.shared && v.write && page_end(fs.size_of(v.h)) <= v.first)
                .filter(|v| rfds.contains(&v.h) && fs.files.get(&v.h).is_some_and(|f| f.write))
                .copied()
                .collect();
            if !dead_rw.is_empty() && r.chance(1, 2) {
                let v = pick(r, &dead_rw)?;
                return Some(OpKind::FTruncate {
                    h: v.h,
                    size: (v.first + r.range(1, v.len)).min(MAX_FILE),
                });
            }
            // Stores mostly through shared writable mappings; now and then one without
            // PROT_WRITE (SIGSEGV); never through a private writable one (a load instead).
            // Mostly mappings with pages that may be touched.
            let any = r.chance(1, 4);
            let live = |v: &&FMapView| any || page_end(fs.size_of(v.h)) > v.first;
            let rw: Vec<FMapView> = fmaps
                .iter()
                .filter(|v| v.shared && v.write)
                .filter(live)
                .copied()
                .collect();
            let store = what == 17 && (!rw.is_empty() || r.chance(1, 4));
            let some: Vec<FMapView> = fmaps.iter().filter(live).copied().collect();
            let v = if store && !rw.is_empty() && r.chance(9, 10) {
                pick(r, &rw)?
            } else if !some.is_empty() {
                pick(r, &some)?
            } else if r.chance(1, 4) {
                // Only mappings past the end of their files: drop one now and then.
                return Some(OpKind::FMunmap {
                    m: pick(r, &fmaps)?.id,
                });
            } else {
                pick(r, &fmaps)?
            };
            let (off, len) = map_access(r, fs.size_of(v.h), &v);
            if store && (v.shared || !v.write) {
                OpKind::FStore { m: v.id, off, len }
            } else {
                OpKind::FLoad { m: v.id, off, len }
            }
        }
        (19, _) if hm => {
            let v = pick(r, &fmaps)?;
            let pages = v.len / PAGE;
            let off = PAGE * r.below(pages) + if r.chance(1, 8) { r.range(1, 100) } else { 0 };
            let n = MSYNC_FLAGS.len() as u64;
            OpKind::FMsync {
                m: v.id,
                off: off as u32,
                len: r.range(1, v.len - off) as u32,
                flags: if r.chance(1, 6) {
                    (n - 2 + r.below(2)) as u8
                } else {
                    r.below(n - 2) as u8
                },
            }
        }
        (20, _) if hm => OpKind::FMunmap {
            m: pick(r, &fmaps)?.id,
        },
        _ => {
            let (read, write) = match r.below(10) {
                0..=3 => (true, false),
                4..=5 => (false, true),
                _ => (true, true),
            };
            let creat = r.chance(1, 2);
            let flags = OFlags {
                read,
                write,
                creat,
                excl: creat && r.chance(1, 4),
                trunc: write && r.chance(1, 6),
                append: write && r.chance(1, 6),
            };
            OpKind::FOpen {
                path: if creat && r.chance(1, 2) {
                    new_path(r, &["f0", "f1", "f2"])
                } else if !my_files.is_empty() && r.chance(1, 2) {
                    pick(r, &my_files).unwrap_or_default()
                } else {
                    any_path(r)
                },
                flags,
                mode: file_mode(r),
            }
        }
    })
}
