//! The model: what `/dev/rio` must answer, exactly, for a sequential history of ops.
//!
//! The security rules live in [`Rules`] (the `rule_*` methods), one method per ioctl or
//! file operation, each checking its conditions in the order the module must report them.
//! Change a rule there and the generator, the checker and `verify` all follow.

use std::collections::{BTreeMap, BTreeSet};

use crate::fsmodel::{self, Answer, FileStat, Fs};
use crate::ops::{Handle, MapId, Op, OpKind, OpenHow, ProcId, BASE_ACTORS, CHILD_BASE, NAMES};
use crate::prng::payload;

/// Page size of the arena.
pub const PAGE: u64 = 4096;

/// Child slots per base actor (at most this many live children each).
pub const CHILD_SLOTS: u32 = 2;

/// The uid an unmapped id shows as inside a user namespace (`overflowuid`).
pub const OVERFLOW_UID: u32 = 65534;

/// Pages an object of `size` bytes takes.
pub fn pages_for(size: u64) -> u64 {
    size.div_ceil(PAGE)
}

/// Who a process is, to rio.ko.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The euid in the initial user namespace.
    pub kuid: u32,
    /// `CAP_SYS_ADMIN` in the initial user namespace.
    pub admin: bool,
    /// In its own user namespace mapping `0` to this kuid (`uid_map "0 kuid 1"`).
    pub ns_root_of: Option<u32>,
}

impl Identity {
    /// How `kuid` shows to this process (STAT and LIST report ids in the caller's
    /// namespace).
    pub fn view_uid(&self, kuid: u32) -> u32 {
        match self.ns_root_of {
            Some(outside) if kuid == outside => 0,
            Some(_) => OVERFLOW_UID,
            None => kuid,
        }
    }
}

/// The identities of the base actors, by [`ProcId`].
pub const ACTORS: [Identity; BASE_ACTORS as usize] = [
    Identity {
        kuid: 0,
        admin: true,
        ns_root_of: None,
    },
    Identity {
        kuid: 1000,
        admin: false,
        ns_root_of: None,
    },
    Identity {
        kuid: 1001,
        admin: false,
        ns_root_of: None,
    },
    Identity {
        kuid: 1002,
        admin: false,
        ns_root_of: Some(1002),
    },
];

/// What the module was loaded with, as far as the model needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `max_user_objects` (objects per non-admin owner).
    pub max_user_objects: u64,
    /// `max_user_pages` (pages per non-admin owner).
    pub max_user_pages: u64,
    /// Data pages of the arena (STATS).
    pub data_pages: u64,
    /// Object-table slots (INFO).
    pub max_objects: u64,
    /// A backing disk is attached (SYNC succeeds).
    pub backing: bool,
    /// `allow_wild_store=1` (then wild stores are never generated).
    pub wild_store_allowed: bool,
    /// Objects of the noise threads: root's, mode 0600, contents not modelled.
    pub noise: Vec<(String, u64)>,
    /// A riofs is mounted (its object is like a noise object) and riofs ops are fuzzed.
    pub riofs: bool,
}

impl Config {
    /// The module's defaults for an arena of `data_pages`.
    pub fn defaults(data_pages: u64) -> Config {
        Config {
            max_user_objects: 64,
            max_user_pages: data_pages / 2,
            data_pages,
            max_objects: 256,
            backing: false,
            wild_store_allowed: false,
            noise: Vec::new(),
            riofs: false,
        }
    }
}

/// An object, as seen by one caller (STAT, LIST).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjView {
    /// Name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Owner, in the caller's user namespace.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Arena pages.
    pub pages: u64,
    /// Bound files plus one for a block device; [`ANY`] when not modelled (noise objects).
    pub open_count: u32,
    /// Has a block device.
    pub blockdev: bool,
    /// Damaged.
    pub damaged: bool,
}

/// "Any value" for fields the model does not know.
pub const ANY: u32 = u32::MAX;

/// What the module must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Success with this value (bytes moved, or 0).
    Ok(u64),
    /// Success with any non-negative value (the block device's number, a child's pid).
    AnyOk,
    /// Failure with this errno.
    Err(i32),
    /// These bytes (pread, loads from a mapping).
    Data(Vec<u8>),
    /// Exactly these objects, by name.
    Objs(Vec<ObjView>),
    /// These counters (STATS: objects, pages in use).
    Stats { objects: u64, pages_in_use: u64 },
    /// INFO: this ABI version and the ready state.
    Info { abi: u32, state: u32 },
    /// A riofs `stat`.
    FStat(FileStat),
    /// The access through a mapping dies of this signal (`SIGBUS` past the end of the file,
    /// `SIGSEGV` for a store into a mapping without `PROT_WRITE`).
    Signal(i32),
}

/// What an actor answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Success with a value.
    Ok(u64),
    /// Failure with an errno.
    Err(i32),
    /// Bytes.
    Data(Vec<u8>),
    /// Objects (LIST; STAT gives one).
    Objs(Vec<ObjView>),
    /// STATS.
    Stats { objects: u64, pages_in_use: u64 },
    /// INFO.
    Info { abi: u32, state: u32 },
    /// A riofs `stat`.
    FStat(FileStat),
    /// The access died of this signal.
    Signal(i32),
}

/// `arg` of a planned load or store through a riofs mapping: the model expects it to die
/// of a signal, so the actor does it in a child process (whose death is the answer).
pub const ARG_PROBE: u32 = 1;

/// An object in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obj {
    /// Size in bytes.
    pub size: u64,
    /// Owner (kuid).
    pub owner: u32,
    /// Permission bits.
    pub mode: u32,
    /// Contents (`None`: not modelled, the noise threads' objects).
    pub data: Option<Vec<u8>>,
    /// Has a block device.
    pub blockdev: bool,
}

/// A bound open file description.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ofd {
    obj: String,
    writable: bool,
    exclusive: bool,
    /// Descriptors (over all processes) plus mappings that hold it.
    refs: u32,
}

/// A mapping in one process.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mapping {
    ofd: Handle,
    obj: String,
    page_off: u64,
    pages: u64,
    writable: bool,
}

/// A mapping of a riofs file in one process.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FMap {
    /// The open file description it holds (its `RFile` in [`Fs::files`]).
    h: Handle,
    page_off: u64,
    pages: u64,
    write: bool,
    shared: bool,
}

/// A riofs mapping as the generator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FMapView {
    /// Its id.
    pub id: MapId,
    /// The open file description it holds.
    pub h: Handle,
    /// The file's byte where it starts.
    pub first: u64,
    /// Its length in bytes.
    pub len: u64,
    /// `PROT_WRITE`.
    pub write: bool,
    /// `MAP_SHARED`.
    pub shared: bool,
    /// The inode it maps.
    pub ino: u32,
}

/// A process in the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    /// Index into [`ACTORS`].
    pub actor: usize,
    /// The base actor that forked it (children only).
    pub parent: Option<ProcId>,
    /// Its child slot in the parent (children only).
    pub slot: u32,
    fds: BTreeSet<Handle>,
    maps: BTreeMap<MapId, Mapping>,
    rfds: BTreeSet<Handle>,
    fmaps: BTreeMap<MapId, FMap>,
}

/// Where the coordinator sends an op and with which argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// What the module must answer.
    pub expect: Expect,
    /// The process that carries it out.
    pub target: ProcId,
    /// Extra argument: the child slot for `fork` and `exit`.
    pub arg: u32,
}

/// The model's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    /// Configuration.
    pub cfg: Config,
    /// The seed (for payloads).
    pub seed: u64,
    /// Objects by name.
    pub objs: BTreeMap<String, Obj>,
    ofds: BTreeMap<Handle, Ofd>,
    /// Processes.
    pub procs: BTreeMap<ProcId, Proc>,
    /// The riofs (with `cfg.riofs`).
    pub fs: Option<Fs>,
}

/// The ABI version the fuzzer speaks.
pub const ABI: u32 = rio_client::uapi::RIO_ABI_VERSION;
/// INFO's state of an arena in service.
pub const STATE_READY: u32 = rio_client::uapi::STATE_READY;

type Rule = Result<(), i32>;

/// The security model of rio.ko, one method per operation. Conditions are checked in the
/// order listed; the first that fails gives the errno.
pub trait Rules {
    /// CREATE.
    fn rule_create(&self, who: &Identity, name: &str, size: u64) -> Rule;
    /// OPEN on a fresh fd.
    fn rule_open(&self, who: &Identity, name: &str, how: OpenHow) -> Rule;
    /// OPEN on an fd that is already bound.
    fn rule_rebind(&self) -> Rule {
        Err(libc::EBUSY)
    }
    /// pwrite of `len` bytes at `off` on a binding.
    fn rule_pwrite(&self, writable: bool, size: u64, off: u64, len: u32) -> Rule;
    /// mmap of a binding.
    fn rule_mmap(
        &self,
        writable_binding: bool,
        obj: &str,
        page_off: u64,
        pages: u64,
        write: bool,
        private: bool,
    ) -> Rule;
    /// RESIZE on a binding.
    fn rule_resize(&self, who: &Identity, writable: bool, obj: &str, size: u64) -> Rule;
    /// DELETE.
    fn rule_delete(&self, who: &Identity, name: &str) -> Rule;
    /// SYNC.
    fn rule_sync(&self, who: &Identity) -> Rule;
    /// BLKDEV_ADD on a binding.
    fn rule_blkdev_add(&self, who: &Identity, writable: bool, obj: &str) -> Rule;
    /// BLKDEV_REMOVE on a binding.
    fn rule_blkdev_remove(&self, who: &Identity, obj: &str) -> Rule;
    /// FORMAT (without force).
    fn rule_format(&self, who: &Identity) -> Rule;
    /// WILD_STORE.
    fn rule_wild_store(&self, who: &Identity) -> Rule;
}

impl Rules for Model {
    fn rule_create(&self, who: &Identity, name: &str, size: u64) -> Rule {
        if self.objs.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let pages = pages_for(size);
        self.quota(who, who.kuid, 1, pages)?;
        if self.objs.len() as u64 >= self.cfg.max_objects {
            return Err(libc::ENFILE);
        }
        if pages > self.cfg.data_pages {
            return Err(libc::EFBIG);
        }
        if self.pages_in_use() + pages > self.cfg.data_pages {
            return Err(libc::ENOSPC);
        }
        Ok(())
    }

    fn rule_open(&self, who: &Identity, name: &str, how: OpenHow) -> Rule {
        // OPEN_EXCLUSIVE needs an fd opened for writing: a property of the request, checked
        // before the name is looked up (the module does it in this order; the spec did not say).
        if how.exclusive() && !how.fd_writable() {
            return Err(libc::EACCES);
        }
        let o = self.objs.get(name).ok_or(libc::ENOENT)?;
        if !permitted(who, o, how.fd_writable()) {
            return Err(libc::EACCES);
        }
        if self.exclusively_open(name) || (how.exclusive() && self.open_count(name) > 0) {
            return Err(libc::EBUSY);
        }
        Ok(())
    }

    fn rule_pwrite(&self, writable: bool, size: u64, off: u64, len: u32) -> Rule {
        if !writable {
            return Err(libc::EBADF);
        }
        if off >= size && len > 0 {
            return Err(libc::EFBIG);
        }
        Ok(())
    }

    fn rule_mmap(
        &self,
        writable_binding: bool,
        obj: &str,
        page_off: u64,
        pages: u64,
        write: bool,
        private: bool,
    ) -> Rule {
        if private {
            return Err(libc::EINVAL);
        }
        if write && !writable_binding {
            return Err(libc::EACCES);
        }
        let have = self.objs.get(obj).map_or(0, |o| pages_for(o.size));
        if page_off + pages > have {
            return Err(libc::ENXIO);
        }
        Ok(())
    }

    fn rule_resize(&self, who: &Identity, writable: bool, obj: &str, size: u64) -> Rule {
        if !writable {
            return Err(libc::EBADF);
        }
        let o = self.objs.get(obj).ok_or(libc::ENOENT)?;
        // A block device covers every byte: no shrinking. (Growing: see the report.)
        if o.blockdev && size < o.size {
            return Err(libc::EBUSY);
        }
        // Shrinking to fewer pages while any mapping of the object lives (of anyone, read or
        // write, whatever range it covers) is refused: the module keeps no per-range count.
        if pages_for(size) < pages_for(o.size) && self.mapped_end(obj) > 0 {
            return Err(libc::EBUSY);
        }
        let (old, new) = (pages_for(o.size), pages_for(size));
        if new > old {
            // Charged to the object's owner; admins are not limited.
            self.quota(who, o.owner, 0, new - old)?;
            if new > self.cfg.data_pages {
                return Err(libc::EFBIG);
            }
            if self.pages_in_use() + (new - old) > self.cfg.data_pages {
                return Err(libc::ENOSPC);
            }
        }
        Ok(())
    }

    fn rule_delete(&self, who: &Identity, name: &str) -> Rule {
        let o = self.objs.get(name).ok_or(libc::ENOENT)?;
        if !who.admin && who.kuid != o.owner {
            return Err(libc::EACCES);
        }
        if self.open_count(name) > 0 {
            return Err(libc::EBUSY);
        }
        Ok(())
    }

    fn rule_sync(&self, _who: &Identity) -> Rule {
        // Admin writes back everything, others their own objects: both succeed.
        if self.cfg.backing {
            Ok(())
        } else {
            Err(libc::ENODEV)
        }
    }

    fn rule_blkdev_add(&self, who: &Identity, writable: bool, obj: &str) -> Rule {
        if !who.admin {
            return Err(libc::EPERM);
        }
        if !writable {
            return Err(libc::EBADF);
        }
        let o = self.objs.get(obj).ok_or(libc::ENOENT)?;
        if o.blockdev {
            return Err(libc::EEXIST);
        }
        if o.size == 0 || o.size % PAGE != 0 {
            return Err(libc::EINVAL);
        }
        Ok(())
    }

    fn rule_blkdev_remove(&self, who: &Identity, obj: &str) -> Rule {
        if !who.admin {
            return Err(libc::EPERM);
        }
        let o = self.objs.get(obj).ok_or(libc::ENOENT)?;
        if !o.blockdev {
            return Err(libc::ENODEV);
        }
        // (EBUSY if the block device is open: the fuzzer never opens it.)
        Ok(())
    }

    fn rule_format(&self, who: &Identity) -> Rule {
        if !who.admin {
            return Err(libc::EPERM);
        }
        // An admin's FORMAT without force on a formatted arena.
        Err(libc::ENOTEMPTY)
    }

    fn rule_wild_store(&self, who: &Identity) -> Rule {
        if !who.admin || !self.cfg.wild_store_allowed {
            return Err(libc::EPERM);
        }
        Ok(())
    }
}

/// Owner bits for the owner, "other" bits for everyone else (group bits unused); admins
/// may open anything. A writable fd needs read and write permission, a read-only fd read.
pub fn permitted(who: &Identity, o: &Obj, fd_writable: bool) -> bool {
    if who.admin {
        return true;
    }
    let bits = if who.kuid == o.owner {
        (o.mode >> 6) & 7
    } else {
        o.mode & 7
    };
    let need = if fd_writable { 0o6 } else { 0o4 };
    bits & need == need
}

fn result(r: Rule, ok: Expect) -> Expect {
    match r {
        Ok(()) => ok,
        Err(e) => Expect::Err(e),
    }
}

impl Model {
    /// A fresh model: the four base actors, no objects but the noise objects.
    pub fn new(cfg: Config, seed: u64) -> Model {
        let mut objs = BTreeMap::new();
        let fs_object = cfg
            .riofs
            .then(|| (fsmodel::FS_OBJECT.to_string(), fsmodel::FS_SIZE));
        for (name, size) in cfg.noise.iter().chain(fs_object.iter()) {
            objs.insert(
                name.clone(),
                Obj {
                    size: *size,
                    owner: 0,
                    mode: 0o600,
                    data: None,
                    blockdev: false,
                },
            );
        }
        let procs = (0..BASE_ACTORS)
            .map(|p| {
                (
                    p,
                    Proc {
                        actor: p as usize,
                        parent: None,
                        slot: 0,
                        fds: BTreeSet::new(),
                        maps: BTreeMap::new(),
                        rfds: BTreeSet::new(),
                        fmaps: BTreeMap::new(),
                    },
                )
            })
            .collect();
        let fs = cfg.riofs.then(Fs::new);
        Model {
            cfg,
            seed,
            objs,
            ofds: BTreeMap::new(),
            procs,
            fs,
        }
    }

    /// Objects of `kuid` and their pages.
    pub fn usage(&self, kuid: u32) -> (u64, u64) {
        self.objs
            .values()
            .filter(|o| o.owner == kuid)
            .fold((0, 0), |(n, p), o| (n + 1, p + pages_for(o.size)))
    }

    /// The per-user limits: non-admin callers may not take `owner` past them.
    fn quota(&self, who: &Identity, owner: u32, objects: u64, pages: u64) -> Rule {
        if who.admin {
            return Ok(());
        }
        let (n, p) = self.usage(owner);
        if n + objects > self.cfg.max_user_objects || p + pages > self.cfg.max_user_pages {
            return Err(libc::EDQUOT);
        }
        Ok(())
    }

    /// Pages in use by all objects.
    pub fn pages_in_use(&self) -> u64 {
        self.objs.values().map(|o| pages_for(o.size)).sum()
    }

    /// Bound files of `name`, plus one for its block device.
    pub fn open_count(&self, name: &str) -> u32 {
        let files = self.ofds.values().filter(|o| o.obj == name).count() as u32;
        files + u32::from(self.objs.get(name).is_some_and(|o| o.blockdev))
    }

    fn exclusively_open(&self, name: &str) -> bool {
        self.ofds.values().any(|o| o.obj == name && o.exclusive)
    }

    /// The end (in pages) of the furthest live mapping of `name`.
    fn mapped_end(&self, name: &str) -> u64 {
        self.procs
            .values()
            .flat_map(|p| p.maps.values())
            .filter(|m| m.obj == name)
            .map(|m| m.page_off + m.pages)
            .max()
            .unwrap_or(0)
    }

    /// The identity of process `p`.
    pub fn identity(&self, p: ProcId) -> Option<Identity> {
        self.procs.get(&p).map(|p| ACTORS[p.actor])
    }

    /// Live children of base actor `p`.
    pub fn children(&self, p: ProcId) -> Vec<ProcId> {
        self.procs
            .iter()
            .filter(|(_, c)| c.parent == Some(p))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Handles of process `p`.
    pub fn fds(&self, p: ProcId) -> Vec<Handle> {
        self.procs
            .get(&p)
            .map(|p| p.fds.iter().copied().collect())
            .unwrap_or_default()
    }

    /// riofs handles of process `p`.
    pub fn rfds(&self, p: ProcId) -> Vec<Handle> {
        self.procs
            .get(&p)
            .map(|p| p.rfds.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Mappings of process `p`: (id, object, bytes mapped, writable).
    pub fn maps(&self, p: ProcId) -> Vec<(MapId, String, u64, bool)> {
        self.procs
            .get(&p)
            .map(|p| {
                p.maps
                    .iter()
                    .map(|(&id, m)| (id, m.obj.clone(), m.pages * PAGE, m.writable))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// riofs mappings of process `p`.
    pub fn fmaps(&self, p: ProcId) -> Vec<FMapView> {
        let (Some(proc), Some(fs)) = (self.procs.get(&p), self.fs.as_ref()) else {
            return Vec::new();
        };
        proc.fmaps
            .iter()
            .filter_map(|(&id, m)| {
                Some(FMapView {
                    id,
                    h: m.h,
                    first: m.page_off * PAGE,
                    len: m.pages * PAGE,
                    write: m.write,
                    shared: m.shared,
                    ino: fs.files.get(&m.h)?.ino,
                })
            })
            .collect()
    }

    /// The object handle `h` is bound to, and whether the binding is writable.
    pub fn binding(&self, h: Handle) -> Option<(&str, bool)> {
        self.ofds.get(&h).map(|o| (o.obj.as_str(), o.writable))
    }

    /// The first byte of mapping `m` of process `p` in its object, and its length.
    pub fn map_range(&self, p: ProcId, m: MapId) -> Option<(String, u64, u64, bool)> {
        let m = self.procs.get(&p)?.maps.get(&m)?;
        Some((m.obj.clone(), m.page_off * PAGE, m.pages * PAGE, m.writable))
    }

    /// How object `o` shows to `who`.
    pub fn view(&self, who: &Identity, name: &str, o: &Obj) -> ObjView {
        ObjView {
            name: name.to_string(),
            size: o.size,
            uid: who.view_uid(o.owner),
            mode: o.mode,
            pages: pages_for(o.size),
            open_count: if o.data.is_some() {
                self.open_count(name)
            } else {
                ANY
            },
            blockdev: o.blockdev,
            damaged: false,
        }
    }

    fn unref(&mut self, h: Handle) {
        if let Some(o) = self.ofds.get_mut(&h) {
            o.refs -= 1;
            if o.refs == 0 {
                self.ofds.remove(&h);
            }
        }
    }

    fn has_fd(&self, p: ProcId, h: Handle) -> bool {
        self.procs.get(&p).is_some_and(|p| p.fds.contains(&h))
    }

    /// Applies op `index` to the model and says what the module must answer. `None`: the op
    /// does not apply here (its handle, mapping or process does not exist; or it is never
    /// sent in this configuration): the run skips it.
    pub fn step(&mut self, index: u32, op: &Op) -> Option<Planned> {
        let p = op.proc;
        let who = self.identity(p)?;
        let plain = |expect| {
            Some(Planned {
                expect,
                target: p,
                arg: 0,
            })
        };
        match &op.kind {
            OpKind::Create { name, size, mode } => {
                let name = NAMES.get(usize::from(*name))?.to_string();
                let r = self.rule_create(&who, &name, *size);
                if r.is_ok() {
                    self.objs.insert(
                        name,
                        Obj {
                            size: *size,
                            owner: who.kuid,
                            mode: mode & 0o777,
                            data: Some(vec![0; *size as usize]),
                            blockdev: false,
                        },
                    );
                }
                plain(result(r, Expect::Ok(0)))
            }
            OpKind::Open { name, how } => {
                let name = NAMES.get(usize::from(*name))?.to_string();
                let r = self.rule_open(&who, &name, *how);
                if r.is_ok() {
                    let ofd = Ofd {
                        obj: name,
                        writable: how.fd_writable(),
                        exclusive: how.exclusive(),
                        refs: 1,
                    };
                    self.ofds.insert(index, ofd);
                    self.procs.get_mut(&p)?.fds.insert(index);
                }
                plain(result(r, Expect::Ok(0)))
            }
            OpKind::Rebind { h, .. } => {
                if !self.has_fd(p, *h) {
                    return None;
                }
                plain(result(self.rule_rebind(), Expect::Ok(0)))
            }
            OpKind::Close { h } => {
                if !self.procs.get_mut(&p)?.fds.remove(h) {
                    return None;
                }
                self.unref(*h);
                plain(Expect::Ok(0))
            }
            OpKind::Pread { h, off, len } => {
                if !self.has_fd(p, *h) {
                    return None;
                }
                let (name, _) = self.binding(*h)?;
                let data = self.objs.get(name)?.data.as_ref()?;
                let start = (*off).min(data.len() as u64) as usize;
                let end = (start + *len as usize).min(data.len());
                plain(Expect::Data(data[start..end].to_vec()))
            }
            OpKind::Pwrite { h, off, len } => {
                if !self.has_fd(p, *h) {
                    return None;
                }
                let (name, writable) = self.binding(*h)?;
                let name = name.to_string();
                let size = self.objs.get(&name)?.size;
                let r = self.rule_pwrite(writable, size, *off, *len);
                if r.is_err() {
                    return plain(result(r, Expect::Ok(0)));
                }
                let n = (size.saturating_sub(*off)).min(u64::from(*len)) as usize;
                let bytes = payload(self.seed, index, n);
                let data = self.objs.get_mut(&name)?.data.as_mut()?;
                data[*off as usize..*off as usize + n].copy_from_slice(&bytes);
                plain(Expect::Ok(n as u64))
            }
            OpKind::Mmap {
                h,
                page_off,
                pages,
                write,
                private,
            } => {
                if !self.has_fd(p, *h) || *pages == 0 {
                    return None;
                }
                let (name, writable) = self.binding(*h)?;
                let name = name.to_string();
                let (po, n) = (u64::from(*page_off), u64::from(*pages));
                let r = self.rule_mmap(writable, &name, po, n, *write, *private);
                if r.is_ok() {
                    let m = Mapping {
                        ofd: *h,
                        obj: name,
                        page_off: po,
                        pages: n,
                        writable: *write,
                    };
                    self.procs.get_mut(&p)?.maps.insert(index, m);
                    self.ofds.get_mut(h)?.refs += 1;
                }
                plain(result(r, Expect::Ok(0)))
            }
            OpKind::Store { m, off, len } | OpKind::MapRead { m, off, len } => {
                let (name, first, bytes, writable) = self.map_range(p, *m)?;
                let store = matches!(op.kind, OpKind::Store { .. });
                let (off, len) = (u64::from(*off), u64::from(*len));
                let size = self.objs.get(&name)?.size;
                // Only within the mapping and the object (a store past the end would be
                // into the last page's tail, which the model does not track).
                if (store && !writable) || len == 0 || off + len > bytes || first + off + len > size
                {
                    return None;
                }
                let at = (first + off) as usize;
                let data = self.objs.get_mut(&name)?.data.as_mut()?;
                if store {
                    let bytes = payload(self.seed, index, len as usize);
                    data[at..at + len as usize].copy_from_slice(&bytes);
                    plain(Expect::Ok(0))
                } else {
                    plain(Expect::Data(data[at..at + len as usize].to_vec()))
                }
            }
            OpKind::Munmap { m } => {
                let map = self.procs.get_mut(&p)?.maps.remove(m)?;
                self.unref(map.ofd);
                plain(Expect::Ok(0))
            }
            OpKind::Resize { h, size } => {
                if !self.has_fd(p, *h) {
                    return None;
                }
                let (name, writable) = self.binding(*h)?;
                let name = name.to_string();
                let r = self.rule_resize(&who, writable, &name, *size);
                if r.is_ok() {
                    let o = self.objs.get_mut(&name)?;
                    o.size = *size;
                    if let Some(d) = o.data.as_mut() {
                        d.resize(*size as usize, 0);
                    }
                }
                plain(result(r, Expect::Ok(0)))
            }
            OpKind::Delete { name } => {
                let name = NAMES.get(usize::from(*name))?.to_string();
                let r = self.rule_delete(&who, &name);
                if r.is_ok() {
                    self.objs.remove(&name);
                }
                plain(result(r, Expect::Ok(0)))
            }
            OpKind::List => {
                let v = self
                    .objs
                    .iter()
                    .map(|(n, o)| self.view(&who, n, o))
                    .collect();
                plain(Expect::Objs(v))
            }
            OpKind::Stat { h } => {
                if !self.has_fd(p, *h) {
                    return None;
                }
                let (name, _) = self.binding(*h)?;
                let o = self.objs.get(name)?;
                plain(Expect::Objs(vec![self.view(&who, name, o)]))
            }
            OpKind::Stats => plain(Expect::Stats {
                objects: self.objs.len() as u64,
                pages_in_use: self.pages_in_use(),
            }),
            OpKind::Info => plain(Expect::Info {
                abi: ABI,
                state: STATE_READY,
            }),
            OpKind::Sync => plain(result(self.rule_sync(&who), Expect::Ok(0))),
            OpKind::BlkAdd { h } | OpKind::BlkRemove { h } => {
                if !self.has_fd(p, *h) {
                    return None;
                }
                let (name, writable) = self.binding(*h)?;
                let name = name.to_string();
                let add = matches!(op.kind, OpKind::BlkAdd { .. });
                let r = if add {
                    self.rule_blkdev_add(&who, writable, &name)
                } else {
                    self.rule_blkdev_remove(&who, &name)
                };
                if r.is_ok() {
                    self.objs.get_mut(&name)?.blockdev = add;
                }
                plain(result(r, if add { Expect::AnyOk } else { Expect::Ok(0) }))
            }
            OpKind::Fork => {
                let parent = self.procs.get(&p)?.clone();
                if parent.parent.is_some() {
                    return None;
                }
                let used: Vec<u32> = self
                    .children(p)
                    .iter()
                    .filter_map(|c| self.procs.get(c))
                    .map(|c| c.slot)
                    .collect();
                let slot = (0..CHILD_SLOTS).find(|s| !used.contains(s))?;
                for h in &parent.fds {
                    self.ofds.get_mut(h)?.refs += 1;
                }
                for m in parent.maps.values() {
                    self.ofds.get_mut(&m.ofd)?.refs += 1;
                }
                if let Some(fs) = self.fs.as_mut() {
                    // The child's descriptors and mappings hold the same descriptions.
                    let held = parent
                        .rfds
                        .iter()
                        .chain(parent.fmaps.values().map(|m| &m.h));
                    for h in held {
                        fs.files.get_mut(h)?.refs += 1;
                    }
                }
                let child = Proc {
                    actor: parent.actor,
                    parent: Some(p),
                    slot,
                    fds: parent.fds,
                    maps: parent.maps,
                    rfds: parent.rfds,
                    fmaps: parent.fmaps,
                };
                self.procs.insert(CHILD_BASE + index, child);
                Some(Planned {
                    expect: Expect::AnyOk,
                    target: p,
                    arg: slot,
                })
            }
            OpKind::Exit { child } => {
                let c = self.procs.get(child)?;
                if c.parent != Some(p) {
                    return None;
                }
                let c = self.procs.remove(child)?;
                for h in c.fds {
                    self.unref(h);
                }
                for m in c.maps.values() {
                    self.unref(m.ofd);
                }
                if let Some(fs) = self.fs.as_mut() {
                    for h in c.rfds.iter().chain(c.fmaps.values().map(|m| &m.h)) {
                        fs.unref(*h);
                    }
                }
                Some(Planned {
                    expect: Expect::Ok(0),
                    target: p,
                    arg: c.slot,
                })
            }
            OpKind::Format => {
                if who.admin {
                    return None;
                }
                plain(result(self.rule_format(&who), Expect::Ok(0)))
            }
            OpKind::WildStore => {
                if self.cfg.wild_store_allowed {
                    return None;
                }
                plain(result(self.rule_wild_store(&who), Expect::Ok(0)))
            }
            OpKind::FMmap { .. }
            | OpKind::FStore { .. }
            | OpKind::FLoad { .. }
            | OpKind::FMsync { .. }
            | OpKind::FMunmap { .. } => self.fs_map_step(index, p, &op.kind),
            k => plain(self.fs_step(index, p, &who, k)?),
        }
    }

    /// A riofs mapping op. What the kernel must do: `mmap` by [`Fs::mmap`]; a load or store
    /// touches the file's page image ([`Fs::image`]) at once; a byte at or past the image's
    /// end (the file's end rounded up to a page) is `SIGBUS` (a store has stored the bytes
    /// before it); a store into a mapping without `PROT_WRITE` is `SIGSEGV` and stores
    /// nothing (both are done in a probe child: [`ARG_PROBE`]); `msync` checks
    /// its flags and alignment (`EINVAL`) and otherwise succeeds (riofs has nothing to
    /// write back); `munmap` succeeds. A mapping holds its open file description, so it
    /// outlives `close` and `unlink` of its file.
    fn fs_map_step(&mut self, index: u32, p: ProcId, k: &OpKind) -> Option<Planned> {
        let seed = self.seed;
        let proc = self.procs.get_mut(&p)?;
        let fs = self.fs.as_mut()?;
        let plan = |expect, arg| {
            Some(Planned {
                expect,
                target: p,
                arg,
            })
        };
        match k {
            OpKind::FMmap {
                h,
                page_off,
                pages,
                write,
                shared,
            } => {
                if !proc.rfds.contains(h) || *pages == 0 {
                    return None;
                }
                let f = fs.files.get(h)?;
                let r = fs.mmap(f, *write, *shared);
                if r.is_ok() {
                    fs.files.get_mut(h)?.refs += 1;
                    let m = FMap {
                        h: *h,
                        page_off: u64::from(*page_off),
                        pages: u64::from(*pages),
                        write: *write,
                        shared: *shared,
                    };
                    proc.fmaps.insert(index, m);
                }
                plan(result(r, Expect::Ok(0)), 0)
            }
            OpKind::FStore { m, off, len } | OpKind::FLoad { m, off, len } => {
                let map = proc.fmaps.get(m)?;
                let store = matches!(k, OpKind::FStore { .. });
                let (off, len) = (u64::from(*off), u64::from(*len));
                // Only within the mapping (past it is another mapping or nothing); no
                // stores into private writable mappings (their copies are not modelled).
                if len == 0 || off + len > map.pages * PAGE || (store && map.write && !map.shared) {
                    return None;
                }
                let ino = fs.files.get(&map.h)?.ino;
                let at = map.page_off * PAGE + off;
                if store && !map.write {
                    return plan(Expect::Signal(libc::SIGSEGV), ARG_PROBE);
                }
                // The page image ends at the end of the file rounded up to a page: a byte
                // past it is SIGBUS.
                let img = fs.image(ino)?;
                let window = img.get(at as usize..(at + len) as usize);
                if store {
                    fs.store(ino, at, &payload(seed, index, len as usize));
                } else if let Some(w) = window {
                    return plan(Expect::Data(w.to_vec()), 0);
                }
                if window.is_none() {
                    plan(Expect::Signal(libc::SIGBUS), ARG_PROBE)
                } else {
                    plan(Expect::Ok(0), 0)
                }
            }
            OpKind::FMsync { m, off, len, flags } => {
                let map = proc.fmaps.get(m)?;
                if *len == 0 || u64::from(*off) + u64::from(*len) > map.pages * PAGE {
                    return None;
                }
                let fl = crate::ops::msync_flags(*flags);
                let known = libc::MS_ASYNC | libc::MS_INVALIDATE | libc::MS_SYNC;
                let bad = fl & !known != 0
                    || u64::from(*off) % PAGE != 0
                    || (fl & libc::MS_ASYNC != 0 && fl & libc::MS_SYNC != 0);
                plan(
                    if bad {
                        Expect::Err(libc::EINVAL)
                    } else {
                        Expect::Ok(0)
                    },
                    0,
                )
            }
            OpKind::FMunmap { m } => {
                let map = proc.fmaps.remove(m)?;
                fs.unref(map.h);
                plan(Expect::Ok(0), 0)
            }
            _ => None,
        }
    }

    /// A riofs op (see [`Fs`] for the rules).
    fn fs_step(&mut self, index: u32, p: ProcId, who: &Identity, k: &OpKind) -> Option<Expect> {
        let seed = self.seed;
        let proc = self.procs.get_mut(&p)?;
        let fs = self.fs.as_mut()?;
        // The open file description of a handle op (which does not apply without one).
        let f = match k {
            OpKind::FClose { h }
            | OpKind::FRead { h, .. }
            | OpKind::FWrite { h, .. }
            | OpKind::FTruncate { h, .. }
            | OpKind::FStat { h } => {
                if !proc.rfds.contains(h) {
                    return None;
                }
                Some(fs.files.get(h)?.clone())
            }
            _ => None,
        };
        let file = |_: &Handle| f.clone();
        let r = match k {
            OpKind::FOpen { path, flags, mode } => fs.open(who, path, *flags, *mode),
            OpKind::FClose { h } => {
                file(h)?;
                proc.rfds.remove(h);
                fs.unref(*h);
                Ok(Answer::Ok(0))
            }
            OpKind::FRead { h, off, len } => fs.pread(&file(h)?, *off, *len),
            OpKind::FWrite { h, off, len } => {
                let f = file(h)?;
                fs.pwrite(&f, *off, &payload(seed, index, *len as usize))
            }
            OpKind::FTruncate { h, size } => {
                let f = file(h)?;
                fs.ftruncate(&f, *size)
            }
            OpKind::FStat { h } => fs.fstat(who, &file(h)?),
            OpKind::Truncate { path, size } => fs.truncate(who, path, *size),
            OpKind::Unlink { path } => fs.unlink(who, path),
            OpKind::Mkdir { path, mode } => fs.mkdir(who, path, *mode),
            OpKind::Rmdir { path } => fs.rmdir(who, path),
            OpKind::Rename { from, to } => fs.rename(who, from, to),
            OpKind::Link { from, to } => fs.link(who, from, to),
            OpKind::Symlink { path, target } => {
                let t = fsmodel::LINK_TARGETS.get(usize::from(*target))?;
                fs.symlink(who, path, t)
            }
            OpKind::Chmod { path, mode } => fs.chmod(who, path, *mode),
            OpKind::Chown { path, uid } => fs.chown(who, path, *uid),
            OpKind::PStat { path, follow } => fs.stat(who, path, *follow),
            _ => return None,
        };
        Some(match r {
            Err(e) => Expect::Err(e),
            Ok(Answer::Ok(v)) => Expect::Ok(v),
            Ok(Answer::Data(d)) => Expect::Data(d),
            Ok(Answer::Stat(s)) => Expect::FStat(s),
            Ok(Answer::Opened(f)) => {
                fs.files.insert(index, f);
                proc.rfds.insert(index);
                Expect::Ok(0)
            }
        })
    }
}

/// Compares an answer with the expectation; `Err` says how they differ.
pub fn check(expect: &Expect, reply: &Reply) -> Result<(), String> {
    match (expect, reply) {
        (Expect::Ok(a), Reply::Ok(b)) if a == b => Ok(()),
        (Expect::AnyOk, Reply::Ok(_)) => Ok(()),
        (Expect::Err(a), Reply::Err(b)) if a == b => Ok(()),
        (Expect::Data(a), Reply::Data(b)) => {
            if a == b {
                return Ok(());
            }
            let first = a.iter().zip(b).position(|(x, y)| x != y);
            Err(format!(
                "data differs: expected {} bytes, got {}; first difference at byte {}{}",
                a.len(),
                b.len(),
                first.map_or("(none: lengths differ)".to_string(), |i| i.to_string()),
                first.map_or(String::new(), |i| format!(
                    " (expected {:#04x}, got {:#04x})",
                    a[i], b[i]
                )),
            ))
        }
        (Expect::Objs(a), Reply::Objs(b)) => {
            let mut b = b.clone();
            b.sort_by(|x, y| x.name.cmp(&y.name));
            let mut diffs = Vec::new();
            for x in a {
                match b.iter().find(|y| y.name == x.name) {
                    None => diffs.push(format!("{} missing", x.name)),
                    Some(y) => {
                        let mut y = y.clone();
                        if x.open_count == ANY {
                            y.open_count = ANY;
                        }
                        if *x != y {
                            diffs.push(format!("{}: expected {x:?}, got {y:?}", x.name));
                        }
                    }
                }
            }
            for y in &b {
                if !a.iter().any(|x| x.name == y.name) {
                    diffs.push(format!("unexpected object {y:?}"));
                }
            }
            if diffs.is_empty() {
                Ok(())
            } else {
                Err(diffs.join("; "))
            }
        }
        (
            Expect::Stats {
                objects: a,
                pages_in_use: p,
            },
            Reply::Stats {
                objects: b,
                pages_in_use: q,
            },
        ) if a == b && p == q => Ok(()),
        (Expect::Info { abi: a, state: s }, Reply::Info { abi: b, state: t })
            if a == b && s == t =>
        {
            Ok(())
        }
        (Expect::Signal(a), Reply::Signal(b)) if a == b => Ok(()),
        (Expect::FStat(a), Reply::FStat(b)) => {
            let mut b = b.clone();
            if b.mode & 0o170000 == fsmodel::S_IFDIR {
                b.size = 0;
            }
            if *a == b {
                Ok(())
            } else {
                Err(format!("stat: expected {a:?}, got {b:?}"))
            }
        }
        (e, r) => Err(format!(
            "expected {}, got {}",
            describe_expect(e),
            describe_reply(r)
        )),
    }
}

/// An errno's name.
pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EBADFD => "EBADFD",
        libc::EUCLEAN => "EUCLEAN",
        libc::EDQUOT => "EDQUOT",
        libc::ETIMEDOUT => "ETIMEDOUT (no answer)",
        libc::ENOMEM => "ENOMEM",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ELOOP => "ELOOP",
        libc::EXDEV => "EXDEV",
        libc::EMLINK => "EMLINK",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

/// A signal's name.
pub fn signal_name(s: i32) -> String {
    match s {
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGABRT => "SIGABRT".into(),
        s => format!("signal {s}"),
    }
}

/// Short text of an expectation.
pub fn describe_expect(e: &Expect) -> String {
    match e {
        Expect::Ok(v) => format!("Ok({v})"),
        Expect::AnyOk => "Ok(any)".into(),
        Expect::Err(e) => errno_name(*e),
        Expect::Data(d) => format!("{} bytes", d.len()),
        Expect::Objs(v) => format!("{} objects", v.len()),
        Expect::Stats {
            objects,
            pages_in_use,
        } => format!("stats objects={objects} pages_in_use={pages_in_use}"),
        Expect::Info { abi, state } => format!("info abi={abi} state={state}"),
        Expect::FStat(s) => format!("{s:?}"),
        Expect::Signal(s) => signal_name(*s),
    }
}

/// Short text of an answer.
pub fn describe_reply(r: &Reply) -> String {
    match r {
        Reply::Ok(v) => format!("Ok({v})"),
        Reply::Err(e) => errno_name(*e),
        Reply::Data(d) => format!("{} bytes", d.len()),
        Reply::Objs(v) => format!("{} objects", v.len()),
        Reply::Stats {
            objects,
            pages_in_use,
        } => format!("stats objects={objects} pages_in_use={pages_in_use}"),
        Reply::Info { abi, state } => format!("info abi={abi} state={state}"),
        Reply::FStat(s) => format!("{s:?}"),
        Reply::Signal(s) => signal_name(*s),
    }
}

/// The outcome class of an expectation or answer (for failure signatures): `ok`, an errno
/// name, or `data`.
pub fn outcome_class_expect(e: &Expect) -> String {
    match e {
        Expect::Err(e) => errno_name(*e),
        Expect::Signal(s) => signal_name(*s),
        Expect::Ok(_) | Expect::AnyOk => "ok".into(),
        _ => "value".into(),
    }
}

/// See [`outcome_class_expect`].
pub fn outcome_class_reply(r: &Reply) -> String {
    match r {
        Reply::Err(e) => errno_name(*e),
        Reply::Signal(s) => signal_name(*s),
        Reply::Ok(_) => "ok".into(),
        _ => "value".into(),
    }
}
