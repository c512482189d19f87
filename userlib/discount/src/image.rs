//! The checkpoint image: one Vista [`Group`] in the state directory.
//!
//! Members (each a Vista segment in its own backing, sharing one undo log):
//!
//! * member 0, the *control* segment at [`CTL_ADDR`]: the [`CtlHeader`] (saved stack
//!   pointer, signal mask, ...), the file-data undo log and the input log. It is never
//!   rolled back except for the header ranges a checkpoint logs with `set_range`, so the
//!   two logs survive a crash while the header commits atomically with the memory.
//! * one member per checkpointed range (`.data`/`.bss` of each object, heap, stack): the
//!   committed copy of that range's pages, at an *image address* of its own.
//!
//! A checkpoint is one Vista transaction: `set_range` + copy for every page written since
//! the last checkpoint, then the header, then commit (one 8-byte store). A crash at any
//! point leaves the image at the last committed checkpoint after Vista's recovery (which
//! runs when the group is opened).
//!
//! Backings in the [`Store`]: `log.vista` (the shared undo log) and `m<N>.vista`
//! (members): files in the state directory ([`FileStore`]) or Rio objects
//! ([`crate::rio_store::RioStore`]). Plain files in the state directory (both stores):
//! `members` (index, address and length of each member, written before the first commit),
//! `exec` (how to re-execute the program, see `reexec`), `grave/` (files the program
//! unlinked since the last checkpoint, see `kstate`) and optionally `trace`.

use std::path::{Path, PathBuf};

use vista::{Backing, Durability, Group, Segment, SegmentConfig};

use crate::error::{Error, Result};
use crate::layout::{Kind, Range};

/// Where the control segment is mapped.
pub const CTL_ADDR: usize = 0x2f00_0000_0000;
/// Where the heap's image is mapped.
pub const HEAP_IMAGE: usize = 0x3000_0000_0000;
/// Where the other images start.
pub const OTHER_IMAGES: usize = 0x3800_0000_0000;

const MAGIC: [u8; 8] = *b"DCCTL001";
/// Most ranges a checkpoint can hold (Vista groups have at most 16 members).
pub const MAX_RANGES: usize = 15;
const PAGE: usize = 4096;

/// State of the image.
pub const STATE_EMPTY: u64 = 0;
/// At least one checkpoint committed: a restart recovers.
pub const STATE_VALID: u64 = 1;
/// The program exited: a restart starts afresh.
pub const STATE_FINISHED: u64 = 2;

/// One range as recorded in the header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeRec {
    /// [`Kind`] as u32.
    pub kind: u32,
    /// Member index in the group.
    pub member: u32,
    /// Working start.
    pub start: u64,
    /// Working end.
    pub end: u64,
    /// Image address of `start`.
    pub image: u64,
}

/// The control header (first page of member 0). Fields up to `fundo_end` are logged and
/// committed with each checkpoint; `fundo_end` and `input_end` also advance outside
/// checkpoints (appends to the logs, never rolled back by themselves).
#[repr(C)]
#[derive(Debug)]
pub struct CtlHeader {
    /// `DCCTL001`.
    pub magic: [u8; 8],
    /// [`STATE_EMPTY`], [`STATE_VALID`] or [`STATE_FINISHED`].
    pub state: u64,
    /// Checkpoints committed.
    pub seq: u64,
    /// Stack pointer of the save area of the last checkpoint.
    pub saved_sp: u64,
    /// Lowest live stack address at the last checkpoint.
    pub stack_low: u64,
    /// Heap high-water mark at the last checkpoint.
    pub heap_hwm: u64,
    /// Blocked signals at the last checkpoint.
    pub sigmask: u64,
    /// `%fs:0x28` at the last checkpoint.
    pub canary: u64,
    /// `%fs:0x30` at the last checkpoint.
    pub guard: u64,
    /// First unconsumed byte of the input log.
    pub input_start: u64,
    /// Nanoseconds (CLOCK_MONOTONIC) of the last commit.
    pub commit_ns: u64,
    /// Number of ranges.
    pub nranges: u64,
    /// The ranges.
    pub ranges: [RangeRec; MAX_RANGES],
    /// Bytes used in the file-undo log area.
    pub fundo_end: u64,
    /// Bytes used in the input log area.
    pub input_end: u64,
}

/// Bytes of the header that a checkpoint logs (everything before `fundo_end`).
pub fn header_logged_len() -> usize {
    std::mem::offset_of!(CtlHeader, fundo_end)
}

/// Sizes of the control segment's areas.
#[derive(Debug, Clone, Copy)]
pub struct CtlLayout {
    /// Offset of the file-undo log.
    pub fundo_off: usize,
    /// Its capacity.
    pub fundo_cap: usize,
    /// Offset of the input log.
    pub input_off: usize,
    /// Its capacity.
    pub input_cap: usize,
}

impl CtlLayout {
    /// The layout for the given capacities.
    pub fn new(fundo_cap: usize, input_cap: usize) -> CtlLayout {
        let fundo_cap = fundo_cap.div_ceil(PAGE) * PAGE;
        let input_cap = input_cap.div_ceil(PAGE) * PAGE;
        CtlLayout {
            fundo_off: PAGE,
            fundo_cap,
            input_off: PAGE + fundo_cap,
            input_cap,
        }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.input_off + self.input_cap
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Where persistent state goes: the image's backings (segments and undo log) and a
/// directory for the plain files. [`FileStore`]: a directory of plain files (durable
/// across process crashes; with [`Durability::Msync`], across power loss at one
/// `fdatasync` per member per checkpoint). [`crate::rio_store::RioStore`] (feature `rio`):
/// Rio objects, durable across kernel crashes.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates a backing `name` of `len` bytes (zero), replacing any old one.
    fn create(&self, name: &str, len: u64) -> Result<Backing>;
    /// Opens backing `name`.
    fn open(&self, name: &str) -> Result<Backing>;
    /// The directory for the plain files (`exec`, `members`, `grave/`, `trace`).
    fn dir(&self) -> &Path;
    /// Whether backing `name` exists.
    fn exists(&self, name: &str) -> bool {
        self.dir().join(name).exists()
    }
    /// Removes the backings of an old image before a new one is created (a store whose
    /// space is scarce must not keep members the new image does not replace).
    fn clear(&self) -> Result<()> {
        Ok(())
    }
    /// Opens backing `name`, which must be `expected` bytes long
    /// ([`Error::WrongSize`] otherwise).
    fn open_len(&self, name: &str, expected: u64) -> Result<Backing> {
        let b = self.open(name)?;
        if b.len() != expected {
            return Err(Error::WrongSize {
                name: name.to_string(),
                actual: b.len(),
                expected,
            });
        }
        Ok(b)
    }
}

/// Plain files in a directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    durability: Durability,
}

impl FileStore {
    /// A store in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>, durability: Durability) -> Result<FileStore> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            what: "create state directory",
            source: e,
        })?;
        Ok(FileStore { dir, durability })
    }
}

impl Store for FileStore {
    fn create(&self, name: &str, len: u64) -> Result<Backing> {
        let p = self.dir.join(name);
        let _ = std::fs::remove_file(&p);
        Ok(Backing::create_file(p, len, self.durability)?)
    }
    fn open(&self, name: &str) -> Result<Backing> {
        Ok(Backing::open_file(self.dir.join(name), self.durability)?)
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
}

/// One member of the image.
#[derive(Debug, Clone, Copy)]
pub struct MemberRec {
    /// Address of its data mapping.
    pub addr: usize,
    /// Bytes.
    pub len: usize,
}

fn member_cfg(len: usize) -> SegmentConfig {
    SegmentConfig::new(len)
        .heap(false)
        .roots(1)
        .log_capacity(PAGE)
}

fn write_members(store: &dyn Store, ms: &[MemberRec]) -> Result<()> {
    let mut s = String::new();
    for (i, m) in ms.iter().enumerate() {
        s.push_str(&format!("{i} {:#x} {:#x}\n", m.addr, m.len));
    }
    let tmp = store.dir().join("members.tmp");
    std::fs::write(&tmp, s).map_err(|e| Error::Io {
        what: "write members",
        source: e,
    })?;
    std::fs::rename(&tmp, store.dir().join("members")).map_err(|e| Error::Io {
        what: "rename members",
        source: e,
    })
}

fn read_members(store: &dyn Store) -> Result<Vec<MemberRec>> {
    let s = std::fs::read_to_string(store.dir().join("members")).map_err(|e| Error::Io {
        what: "read members",
        source: e,
    })?;
    let mut out = Vec::new();
    for (n, line) in s.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |x: &str| usize::from_str_radix(x.trim_start_matches("0x"), 16);
        match (f.len(), f.first().map(|x| x.parse::<usize>())) {
            (3, Some(Ok(i))) if i == n => {}
            _ => return Err(Error::Corrupt(format!("members line {n}: {line:?}"))),
        }
        let (Ok(addr), Ok(len)) = (hex(f[1]), hex(f[2])) else {
            return Err(Error::Corrupt(format!("members line {n}: {line:?}")));
        };
        out.push(MemberRec { addr, len });
    }
    if out.is_empty() || out.len() > MAX_RANGES + 1 {
        return Err(Error::Corrupt("members: wrong count".into()));
    }
    Ok(out)
}

/// Whether the store holds an image (it may still be empty or finished).
pub fn exists(store: &dyn Store) -> bool {
    store.dir().join("members").exists() && store.exists("log.vista")
}

/// The opened image.
#[derive(Debug)]
pub struct Image {
    /// The Vista group (member 0 = control).
    pub group: Group,
    /// Members.
    pub members: Vec<MemberRec>,
    /// Control layout.
    pub ctl: CtlLayout,
}

/// Plans image addresses for `ranges` (in order): the heap at [`HEAP_IMAGE`], the rest
/// packed from [`OTHER_IMAGES`] at 2 MiB boundaries. Returns member records (member 0 is
/// the control segment) and the range records.
pub fn plan(ranges: &[(Range, usize)], ctl: &CtlLayout) -> Result<(Vec<MemberRec>, Vec<RangeRec>)> {
    if ranges.len() > MAX_RANGES {
        return Err(Error::Layout(format!(
            "{} ranges to checkpoint, at most {MAX_RANGES}",
            ranges.len()
        )));
    }
    let mut members = vec![MemberRec {
        addr: CTL_ADDR,
        len: ctl.len(),
    }];
    let mut recs = Vec::new();
    let mut next = OTHER_IMAGES;
    for (r, image_len) in ranges {
        let addr = if r.kind == Kind::Heap {
            HEAP_IMAGE
        } else {
            let a = next;
            next += image_len.div_ceil(2 << 20) * (2 << 20) + (2 << 20);
            a
        };
        // The stack's image covers [top - image_len, top).
        let image_start = if r.kind == Kind::Stack {
            addr + image_len - (r.end - r.start)
        } else {
            addr
        };
        recs.push(RangeRec {
            kind: r.kind as u32,
            member: members.len() as u32,
            start: r.start as u64,
            end: r.end as u64,
            image: image_start as u64,
        });
        members.push(MemberRec {
            addr,
            len: *image_len,
        });
    }
    Ok((members, recs))
}

impl Image {
    /// Creates a new image (replacing any old one) with these members, its control
    /// header formatted for the checkpointed ranges `recs`. The `members` file, which
    /// makes the image exist ([`exists`]), is written last: a crash before it leaves no
    /// image, never one with an unformatted header.
    pub fn create(
        store: &dyn Store,
        members: &[MemberRec],
        ctl: CtlLayout,
        log_capacity: usize,
        recs: &[RangeRec],
    ) -> Result<Image> {
        let _ = std::fs::remove_file(store.dir().join("members"));
        store.clear()?;
        let made = (|| -> Result<Group> {
            let mut segs = Vec::new();
            for (i, m) in members.iter().enumerate() {
                let cfg = member_cfg(m.len);
                let b = store.create(&format!("m{i}.vista"), Segment::backing_len(&cfg)?)?;
                segs.push(Segment::create(b, m.addr, &cfg)?);
            }
            let log = store.create("log.vista", Group::log_backing_len(log_capacity))?;
            Ok(Group::create(log, segs)?)
        })();
        let group = match made {
            Ok(g) => g,
            Err(e) => {
                // Do not leave a half-made image taking space (a Rio arena's).
                let _ = store.clear();
                return Err(e);
            }
        };
        let mut img = Image {
            group,
            members: members.to_vec(),
            ctl,
        };
        img.format_header(recs);
        write_members(store, members)?;
        Ok(img)
    }

    /// Opens an existing image (Vista recovery runs: a checkpoint that was being written
    /// when the process died is rolled back).
    pub fn open(store: &dyn Store, ctl: CtlLayout) -> Result<Image> {
        let members = read_members(store)?;
        if members[0].addr != CTL_ADDR || members[0].len != ctl.len() {
            return Err(Error::Mismatch(format!(
                "control segment is {:#x} bytes, this configuration wants {:#x}",
                members[0].len,
                ctl.len()
            )));
        }
        let mut v = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let len = Segment::backing_len(&member_cfg(m.len))?;
            v.push((store.open_len(&format!("m{i}.vista"), len)?, m.addr));
        }
        // A checkpoint prepared for a distributed commit (`twopc`) is finished or rolled
        // back as the coordinator decided, never by this process alone; without a
        // coordinator to ask, opening fails with `vista::Error::Prepared`.
        let mut resolve = |tag: u64| -> vista::Result<vista::Resolution> {
            if crate::twopc::configured() {
                Ok(if crate::twopc::resolve(tag) {
                    vista::Resolution::Commit
                } else {
                    vista::Resolution::Abort
                })
            } else {
                Err(vista::Error::Prepared { tag })
            }
        };
        let group = Group::open_resolving(store.open("log.vista")?, v, &mut resolve)?;
        Ok(Image {
            group,
            members,
            ctl,
        })
    }

    /// The control header.
    pub fn header(&self) -> *mut CtlHeader {
        CTL_ADDR as *mut CtlHeader
    }

    /// Initializes the header of a fresh image (outside any transaction).
    pub fn format_header(&mut self, recs: &[RangeRec]) {
        let h = self.header();
        // SAFETY: the control member is mapped at CTL_ADDR, at least one page, zero; no
        // transaction is active and nobody else uses it yet.
        unsafe {
            (*h).state = STATE_EMPTY;
            (*h).nranges = recs.len() as u64;
            for (i, r) in recs.iter().enumerate() {
                (*h).ranges[i] = *r;
            }
            (*h).magic = MAGIC;
        }
    }

    /// Checks the header's magic.
    pub fn check_header(&self) -> Result<()> {
        // SAFETY: the control member is mapped at CTL_ADDR.
        let h = unsafe { &*self.header() };
        if h.magic != MAGIC {
            return Err(Error::Corrupt("control header has a bad magic".into()));
        }
        if h.nranges as usize > MAX_RANGES {
            return Err(Error::Corrupt("control header: too many ranges".into()));
        }
        Ok(())
    }

    /// The recorded ranges.
    pub fn ranges(&self) -> Vec<RangeRec> {
        // SAFETY: the control member is mapped at CTL_ADDR.
        let h = unsafe { &*self.header() };
        h.ranges[..(h.nranges as usize).min(MAX_RANGES)].to_vec()
    }

    /// Start of the control segment's file-undo area.
    pub fn fundo_area(&self) -> (*mut u8, usize) {
        (
            (CTL_ADDR + self.ctl.fundo_off) as *mut u8,
            self.ctl.fundo_cap,
        )
    }

    /// Start of the control segment's input-log area.
    pub fn input_area(&self) -> (*mut u8, usize) {
        (
            (CTL_ADDR + self.ctl.input_off) as *mut u8,
            self.ctl.input_cap,
        )
    }
}

/// Marks a finished run so the next start is fresh (best effort).
///
/// # Safety
/// `h` must be the mapped control header.
pub unsafe fn mark_finished(h: *mut CtlHeader) {
    // SAFETY: caller contract; a single aligned store.
    unsafe { std::ptr::write_volatile(&mut (*h).state, STATE_FINISHED) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fits_a_page_and_logged_part_is_prefix() {
        assert!(std::mem::size_of::<CtlHeader>() <= PAGE);
        assert!(header_logged_len() < std::mem::size_of::<CtlHeader>());
        assert_eq!(
            std::mem::offset_of!(CtlHeader, input_end),
            header_logged_len() + 8
        );
    }

    #[test]
    fn plan_places_heap_and_stack() {
        let ctl = CtlLayout::new(1 << 20, 1 << 20);
        let rs = vec![
            (
                Range {
                    kind: Kind::Data,
                    start: 0x1000,
                    end: 0x5000,
                    name: "a".into(),
                },
                0x4000,
            ),
            (
                Range {
                    kind: Kind::Heap,
                    start: 0x2000_0000_0000,
                    end: 0x2001_0000_0000,
                    name: "heap".into(),
                },
                0x1_0000_0000,
            ),
            (
                Range {
                    kind: Kind::Stack,
                    start: 0x7fff_0000_0000,
                    end: 0x7fff_0010_0000,
                    name: "stack".into(),
                },
                0x80_0000,
            ),
        ];
        let (m, r) = plan(&rs, &ctl).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].addr, CTL_ADDR);
        assert_eq!(r[1].image as usize, HEAP_IMAGE);
        // Stack image ends where its member ends.
        assert_eq!(r[2].image as usize + (0x10_0000), m[3].addr + m[3].len);
        assert_eq!(r[0].member, 1);
    }
}
