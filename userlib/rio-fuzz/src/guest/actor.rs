//! An actor: a process with one identity that carries out the coordinator's ops on its own
//! descriptors and mappings and answers with what the kernel said.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use rio_client::uapi::*;

use super::{fs, sys};
use crate::fsmodel::LINK_TARGETS;
use crate::model::{Identity, ObjView, Reply, ARG_PROBE};
use crate::ops::{msync_flags, Op, OpKind, OpenHow, NAMES};
use crate::prng::payload;
use crate::wire;

/// An actor's pipes: commands in, answers out.
#[derive(Clone, Copy, Debug)]
pub struct Pipes {
    /// Where commands arrive.
    pub cmd: RawFd,
    /// Where answers go.
    pub reply: RawFd,
}

/// An actor's state.
pub struct Actor<'a> {
    /// The ops of the run (every process has the same list).
    pub ops: &'a [Op],
    /// The run's seed (payloads).
    pub seed: u64,
    /// The device path.
    pub dev: CString,
    /// Its own pipes.
    pub pipes: Pipes,
    /// The pipes of its child slots (for children it forks).
    pub slots: Vec<Pipes>,
    /// Who it is.
    pub who: Identity,
    fds: HashMap<u32, OwnedFd>,
    maps: HashMap<u32, (usize, usize)>,
    children: Vec<Option<libc::pid_t>>,
}

fn name_field(n: &str) -> [u8; 64] {
    let mut f = [0u8; 64];
    let b = n.as_bytes();
    f[..b.len().min(63)].copy_from_slice(&b[..b.len().min(63)]);
    f
}

/// A kernel object record as the model's view.
pub fn view_of(o: &RioObjInfo) -> ObjView {
    let n = o.name.iter().position(|&c| c == 0).unwrap_or(64);
    ObjView {
        name: String::from_utf8_lossy(&o.name[..n]).into_owned(),
        size: o.size,
        uid: o.uid,
        mode: o.mode,
        pages: u64::from(o.pages),
        open_count: o.open_count,
        blockdev: o.flags & OBJ_BLKDEV != 0,
        damaged: o.flags & OBJ_DAMAGED != 0,
    }
}

/// LIST on `fd`.
pub fn list(fd: RawFd) -> Result<Vec<ObjView>, i32> {
    let mut buf = vec![RioObjInfo::default(); 512];
    let mut l = RioList {
        buf: buf.as_mut_ptr() as u64,
        capacity: buf.len() as u32,
        count: 0,
    };
    sys::ioctl(fd, RIO_IOC_LIST, &mut l)?;
    buf.truncate((l.count as usize).min(512));
    Ok(buf.iter().map(view_of).collect())
}

/// STATS on `fd`.
pub fn stats(fd: RawFd) -> Result<RioStats, i32> {
    let mut s = RioStats::default();
    sys::ioctl(fd, RIO_IOC_STATS, &mut s)?;
    Ok(s)
}

/// INFO on `fd`.
pub fn info(fd: RawFd) -> Result<RioInfo, i32> {
    let mut i = RioInfo::default();
    sys::ioctl(fd, RIO_IOC_INFO, &mut i)?;
    Ok(i)
}

/// CREATE on `fd`.
pub fn create(fd: RawFd, name: &str, size: u64, mode: u32) -> Result<(), i32> {
    let mut c = RioCreate {
        name: name_field(name),
        size,
        mode,
        _pad: 0,
    };
    sys::ioctl(fd, RIO_IOC_CREATE, &mut c).map(|_| ())
}

/// DELETE on `fd`.
pub fn delete(fd: RawFd, name: &str) -> Result<(), i32> {
    let mut n = RioName {
        name: name_field(name),
    };
    sys::ioctl(fd, RIO_IOC_DELETE, &mut n).map(|_| ())
}

/// A new fd bound to `name`.
pub fn open_object(
    dev: &CString,
    name: &str,
    write: bool,
    exclusive: bool,
) -> Result<OwnedFd, i32> {
    let fd = sys::open_dev(dev, write)?;
    let mut o = RioOpen {
        name: name_field(name),
        flags: if exclusive { OPEN_EXCLUSIVE } else { 0 },
        _pad: 0,
    };
    sys::ioctl(sys::raw(&fd), RIO_IOC_OPEN, &mut o)?;
    Ok(fd)
}

/// Stores `data` at byte `off` of the mapping at `base`: volatile, one byte at a time
/// upwards (so a store that runs into a page that faults has stored the bytes before it).
///
/// # Safety
/// `base + off .. base + off + data.len()` must lie inside a live mapping of this process
/// that no Rust reference points into (it is shared memory). A page that is not writable
/// faults: the caller arranges that the fault ends the process (a probe child, or the
/// actor's fault handler).
unsafe fn store_bytes(base: usize, off: usize, data: &[u8]) {
    let dst = (base + off) as *mut u8;
    for (i, b) in data.iter().enumerate() {
        // SAFETY: inside the mapping, by the function's contract.
        unsafe { std::ptr::write_volatile(dst.add(i), *b) };
    }
}

/// Loads `len` bytes at byte `off` of the mapping at `base` (volatile, upwards).
///
/// # Safety
/// `base + off .. base + off + len` must lie inside a live readable mapping of this process.
unsafe fn load_bytes(base: usize, off: usize, len: usize) -> Vec<u8> {
    let src = (base + off) as *const u8;
    (0..len)
        // SAFETY: inside the mapping, by the function's contract.
        .map(|i| unsafe { std::ptr::read_volatile(src.add(i)) })
        .collect()
}

/// How long an access in a probe child may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

fn ok<T>(r: Result<T, i32>, f: impl FnOnce(T) -> Reply) -> Reply {
    match r {
        Ok(v) => f(v),
        Err(e) => Reply::Err(e),
    }
}

impl<'a> Actor<'a> {
    /// An actor with no descriptors yet.
    pub fn new(
        ops: &'a [Op],
        seed: u64,
        dev: CString,
        pipes: Pipes,
        slots: Vec<Pipes>,
        who: Identity,
    ) -> Actor<'a> {
        let n = slots.len();
        Actor {
            ops,
            seed,
            dev,
            pipes,
            slots,
            who,
            fds: HashMap::new(),
            maps: HashMap::new(),
            children: vec![None; n],
        }
    }

    /// Serves commands until told to quit (or killed).
    pub fn serve(mut self) -> ! {
        if let Err(e) = sys::report_faults_to(self.pipes.reply) {
            eprintln!("rio-fuzz: actor: sigaction: errno {e}");
            sys::exit_now(7);
        }
        loop {
            let frame = match sys::recv_frame(self.pipes.cmd, None) {
                Ok(f) => f,
                Err(_) => sys::exit_now(0),
            };
            let Some((index, arg)) = wire::decode_cmd(&frame) else {
                sys::exit_now(4)
            };
            if index == wire::QUIT {
                for pid in self.children.iter().flatten() {
                    sys::kill(*pid);
                    let _ = sys::wait_timeout(*pid, Duration::from_secs(10));
                }
                sys::exit_now(0);
            }
            let reply = match self.ops.get(index as usize) {
                Some(op) => {
                    let op = op.clone();
                    match self.exec(index, arg, &op) {
                        Some(r) => r,
                        // The child of a fork: it answers nothing; it now serves its slot.
                        None => continue,
                    }
                }
                None => Reply::Err(libc::EINVAL),
            };
            if sys::send_frame(self.pipes.reply, &wire::encode_reply(&reply)).is_err() {
                sys::exit_now(0);
            }
        }
    }

    fn fd(&self, h: u32) -> Result<RawFd, i32> {
        self.fds.get(&h).map(sys::raw).ok_or(libc::EBADF)
    }

    fn exec(&mut self, index: u32, arg: u32, op: &Op) -> Option<Reply> {
        Some(match &op.kind {
            OpKind::Create { name, size, mode } => {
                let name = NAMES.get(usize::from(*name)).copied().unwrap_or("?");
                ok(
                    sys::open_dev(&self.dev, false)
                        .and_then(|fd| create(sys::raw(&fd), name, *size, *mode)),
                    |_| Reply::Ok(0),
                )
            }
            OpKind::Open { name, how } => {
                let name = NAMES.get(usize::from(*name)).copied().unwrap_or("?");
                let fd = open_object(
                    &self.dev,
                    name,
                    how.fd_writable(),
                    how.exclusive() || *how == OpenHow::ExclusiveReadOnly,
                );
                ok(fd, |fd| {
                    self.fds.insert(index, fd);
                    Reply::Ok(0)
                })
            }
            OpKind::Rebind { h, name } => {
                let name = NAMES.get(usize::from(*name)).copied().unwrap_or("?");
                let mut o = RioOpen {
                    name: name_field(name),
                    flags: 0,
                    _pad: 0,
                };
                ok(
                    self.fd(*h)
                        .and_then(|fd| sys::ioctl(fd, RIO_IOC_OPEN, &mut o)),
                    |_| Reply::Ok(0),
                )
            }
            OpKind::Close { h } => {
                self.fds.remove(h);
                Reply::Ok(0)
            }
            OpKind::Pread { h, off, len } => {
                let mut buf = vec![0u8; *len as usize];
                ok(
                    self.fd(*h).and_then(|fd| sys::pread(fd, &mut buf, *off)),
                    |n| {
                        buf.truncate(n);
                        Reply::Data(buf)
                    },
                )
            }
            OpKind::Pwrite { h, off, len } => {
                let data = payload(self.seed, index, *len as usize);
                ok(
                    self.fd(*h).and_then(|fd| sys::pwrite(fd, &data, *off)),
                    |n| Reply::Ok(n as u64),
                )
            }
            OpKind::Mmap {
                h,
                page_off,
                pages,
                write,
                private,
            } => {
                let len = *pages as usize * 4096;
                let prot = libc::PROT_READ | if *write { libc::PROT_WRITE } else { 0 };
                let flags = if *private {
                    libc::MAP_PRIVATE
                } else {
                    libc::MAP_SHARED
                };
                let r = self
                    .fd(*h)
                    .and_then(|fd| sys::mmap(fd, len, prot, flags, u64::from(*page_off) * 4096));
                ok(r, |p| {
                    self.maps.insert(index, (p as usize, len));
                    Reply::Ok(0)
                })
            }
            OpKind::Store { m, off, len } => match self.maps.get(m) {
                Some(&(p, l)) if (*off as usize + *len as usize) <= l => {
                    let data = payload(self.seed, index, *len as usize);
                    // SAFETY: the range lies inside a live shared writable mapping of this
                    // process (the model sends stores only to writable mappings, within
                    // their length and the object's size); volatile stores, as the object
                    // is shared memory.
                    unsafe { store_bytes(p, *off as usize, &data) };
                    Reply::Ok(0)
                }
                _ => Reply::Err(libc::EFAULT),
            },
            OpKind::MapRead { m, off, len } => match self.maps.get(m) {
                Some(&(p, l)) if (*off as usize + *len as usize) <= l => {
                    // SAFETY: the range lies inside a live readable mapping of this process.
                    Reply::Data(unsafe { load_bytes(p, *off as usize, *len as usize) })
                }
                _ => Reply::Err(libc::EFAULT),
            },
            OpKind::Munmap { m } => match self.maps.remove(m) {
                // SAFETY: the mapping was made by this process (or inherited) and no
                // reference into it survives this call.
                Some((p, l)) => ok(unsafe { sys::munmap(p as *mut u8, l) }, |_| Reply::Ok(0)),
                None => Reply::Err(libc::EINVAL),
            },
            OpKind::Resize { h, size } => {
                let mut r = RioResize { size: *size };
                ok(
                    self.fd(*h)
                        .and_then(|fd| sys::ioctl(fd, RIO_IOC_RESIZE, &mut r)),
                    |_| Reply::Ok(0),
                )
            }
            OpKind::Delete { name } => {
                let name = NAMES.get(usize::from(*name)).copied().unwrap_or("?");
                ok(
                    sys::open_dev(&self.dev, false).and_then(|fd| delete(sys::raw(&fd), name)),
                    |_| Reply::Ok(0),
                )
            }
            OpKind::List => ok(
                sys::open_dev(&self.dev, false).and_then(|fd| list(sys::raw(&fd))),
                Reply::Objs,
            ),
            OpKind::Stat { h } => {
                let mut o = RioObjInfo::default();
                ok(
                    self.fd(*h)
                        .and_then(|fd| sys::ioctl(fd, RIO_IOC_STAT, &mut o)),
                    |_| Reply::Objs(vec![view_of(&o)]),
                )
            }
            OpKind::Stats => ok(
                sys::open_dev(&self.dev, false).and_then(|fd| stats(sys::raw(&fd))),
                |s| Reply::Stats {
                    objects: s.objects,
                    pages_in_use: s.pages_in_use,
                },
            ),
            OpKind::Info => ok(
                sys::open_dev(&self.dev, false).and_then(|fd| info(sys::raw(&fd))),
                |i| Reply::Info {
                    abi: i.abi_version,
                    state: i.state,
                },
            ),
            OpKind::Sync => ok(
                sys::open_dev(&self.dev, false)
                    .and_then(|fd| sys::ioctl_none(sys::raw(&fd), RIO_IOC_SYNC)),
                |_| Reply::Ok(0),
            ),
            OpKind::BlkAdd { h } => ok(
                self.fd(*h)
                    .and_then(|fd| sys::ioctl_none(fd, RIO_IOC_BLKDEV_ADD)),
                |n| Reply::Ok(n as u64),
            ),
            OpKind::BlkRemove { h } => ok(
                self.fd(*h)
                    .and_then(|fd| sys::ioctl_none(fd, RIO_IOC_BLKDEV_REMOVE)),
                |_| Reply::Ok(0),
            ),
            OpKind::Format => {
                let mut f = RioFormat { flags: 0, _pad: 0 };
                ok(
                    sys::open_dev(&self.dev, false)
                        .and_then(|fd| sys::ioctl(sys::raw(&fd), RIO_IOC_FORMAT, &mut f)),
                    |_| Reply::Ok(0),
                )
            }
            OpKind::WildStore => {
                let mut w = RioWildStore {
                    offset: 0,
                    value: 0,
                    _pad: 0,
                };
                ok(
                    sys::open_dev(&self.dev, false)
                        .and_then(|fd| sys::ioctl(sys::raw(&fd), RIO_IOC_WILD_STORE, &mut w)),
                    |_| Reply::Ok(0),
                )
            }
            OpKind::Fork => {
                let slot = arg as usize;
                let Some(pipes) = self.slots.get(slot).copied() else {
                    return Some(Reply::Err(libc::EINVAL));
                };
                // SAFETY: getpid cannot fail.
                let me = unsafe { libc::getpid() };
                match sys::fork() {
                    Ok(0) => {
                        sys::die_with_parent(me);
                        self.pipes = pipes;
                        self.slots.clear();
                        self.children.clear();
                        if let Err(e) = sys::report_faults_to(pipes.reply) {
                            eprintln!("rio-fuzz: child actor: sigaction: errno {e}");
                            sys::exit_now(7);
                        }
                        return None;
                    }
                    Ok(pid) => {
                        self.children[slot] = Some(pid);
                        Reply::Ok(pid as u64)
                    }
                    Err(e) => Reply::Err(e),
                }
            }
            OpKind::FOpen { path, flags, mode } => ok(fs::open(path, flags.bits(), *mode), |fd| {
                self.fds.insert(index, fd);
                Reply::Ok(0)
            }),
            OpKind::FClose { h } => {
                self.fds.remove(h);
                Reply::Ok(0)
            }
            OpKind::FRead { h, off, len } => {
                let mut buf = vec![0u8; *len as usize];
                ok(
                    self.fd(*h).and_then(|fd| sys::pread(fd, &mut buf, *off)),
                    |n| {
                        buf.truncate(n);
                        Reply::Data(buf)
                    },
                )
            }
            OpKind::FWrite { h, off, len } => {
                let data = payload(self.seed, index, *len as usize);
                ok(
                    self.fd(*h).and_then(|fd| sys::pwrite(fd, &data, *off)),
                    |n| Reply::Ok(n as u64),
                )
            }
            OpKind::FTruncate { h, size } => {
                ok(self.fd(*h).and_then(|fd| fs::ftruncate(fd, *size)), |_| {
                    Reply::Ok(0)
                })
            }
            OpKind::FStat { h } => ok(self.fd(*h).and_then(fs::fstat), Reply::FStat),
            OpKind::Truncate { path, size } => ok(fs::truncate(path, *size), |_| Reply::Ok(0)),
            OpKind::Unlink { path } => ok(fs::unlink(path), |_| Reply::Ok(0)),
            OpKind::Mkdir { path, mode } => ok(fs::mkdir(path, *mode), |_| Reply::Ok(0)),
            OpKind::Rmdir { path } => ok(fs::rmdir(path), |_| Reply::Ok(0)),
            OpKind::Rename { from, to } => ok(fs::rename(from, to), |_| Reply::Ok(0)),
            OpKind::Link { from, to } => ok(fs::link(from, to), |_| Reply::Ok(0)),
            OpKind::Symlink { path, target } => {
                let t = LINK_TARGETS[usize::from(*target) % LINK_TARGETS.len()];
                ok(fs::symlink(t, path), |_| Reply::Ok(0))
            }
            OpKind::Chmod { path, mode } => ok(fs::chmod(path, *mode), |_| Reply::Ok(0)),
            OpKind::Chown { path, uid } => {
                // The namespaced actor names its own uid as 0; other kuids it passes as they
                // are (unmapped in its namespace).
                let id = if self.who.ns_root_of == Some(*uid) {
                    0
                } else {
                    *uid
                };
                ok(fs::chown(path, id, u32::MAX), |_| Reply::Ok(0))
            }
            OpKind::PStat { path, follow } => ok(fs::stat(path, *follow), Reply::FStat),
            OpKind::FMmap {
                h,
                page_off,
                pages,
                write,
                shared,
            } => {
                let len = *pages as usize * 4096;
                let prot = libc::PROT_READ | if *write { libc::PROT_WRITE } else { 0 };
                let flags = if *shared {
                    libc::MAP_SHARED
                } else {
                    libc::MAP_PRIVATE
                };
                let r = self
                    .fd(*h)
                    .and_then(|fd| sys::mmap(fd, len, prot, flags, u64::from(*page_off) * 4096));
                ok(r, |p| {
                    self.maps.insert(index, (p as usize, len));
                    Reply::Ok(0)
                })
            }
            OpKind::FStore { m, off, len } | OpKind::FLoad { m, off, len } => {
                let store = matches!(op.kind, OpKind::FStore { .. });
                let (off, len) = (*off as usize, *len as usize);
                let Some(&(p, _)) = self.maps.get(m).filter(|(_, l)| off + len <= *l) else {
                    return Some(Reply::Err(libc::EFAULT));
                };
                let data = if store {
                    payload(self.seed, index, len)
                } else {
                    Vec::new()
                };
                let access = || {
                    if store {
                        // SAFETY: the range lies inside a live mapping of this process
                        // (checked against its length above). A store into a mapping
                        // without PROT_WRITE or into a page past the end of the file
                        // faults: in a probe child that death is the answer; here the fault
                        // handler answers and ends the process. No Rust reference points
                        // into the mapping.
                        unsafe { store_bytes(p, off, &data) };
                        None
                    } else {
                        // SAFETY: the range lies inside a live readable mapping of this
                        // process (checked against its length above); a page past the end
                        // of the file faults, which ends the process (here or in a probe
                        // child) before any byte of it is used.
                        Some(unsafe { load_bytes(p, off, len) })
                    }
                };
                if arg == ARG_PROBE {
                    // The model expects a fault: do it in a child, whose death is the answer.
                    match sys::in_child(
                        || {
                            let _ = access();
                        },
                        PROBE_TIMEOUT,
                    ) {
                        Ok(Some(sig)) => Reply::Signal(sig),
                        Ok(None) => Reply::Ok(0),
                        Err(e) => Reply::Err(e),
                    }
                } else {
                    match access() {
                        Some(v) => Reply::Data(v),
                        None => Reply::Ok(0),
                    }
                }
            }
            OpKind::FMsync { m, off, len, flags } => match self.maps.get(m) {
                Some(&(p, l)) if (*off as usize + *len as usize) <= l => ok(
                    sys::msync(p + *off as usize, *len as usize, msync_flags(*flags)),
                    |_| Reply::Ok(0),
                ),
                _ => Reply::Err(libc::EFAULT),
            },
            OpKind::FMunmap { m } => match self.maps.remove(m) {
                // SAFETY: the mapping was made by this process (or inherited) and no
                // reference into it survives this call.
                Some((p, l)) => ok(unsafe { sys::munmap(p as *mut u8, l) }, |_| Reply::Ok(0)),
                None => Reply::Err(libc::EINVAL),
            },
            OpKind::Exit { .. } => match self.children.get_mut(arg as usize).and_then(Option::take)
            {
                Some(pid) => {
                    sys::kill(pid);
                    match sys::wait_timeout(pid, Duration::from_secs(20)) {
                        Some(_) => Reply::Ok(0),
                        None => Reply::Err(libc::ETIMEDOUT),
                    }
                }
                None => Reply::Err(libc::ECHILD),
            },
        })
    }
}
