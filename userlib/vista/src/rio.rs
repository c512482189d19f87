//! Segments in Rio objects (feature `rio`).
//!
//! A segment lives in one Rio object: header, embedded undo log, roots, heap bitmaps and
//! data are all in the object (see [`segment`](crate::segment)), mapped `MAP_SHARED` from
//! `/dev/rio`. Every store through those mappings is durable the moment it executes, so
//! the segment uses [`Durability::Memory`]: no `msync`, no system call on the transaction
//! path, and a committed transaction survives a kernel crash. A [`Group`](crate::Group)'s
//! shared log can live in a second object via [`Backing::from_rio`].
//!
//! Exclusivity comes from rio.ko: objects are opened with [`OpenMode::Exclusive`], so a
//! second opener (this process or another) gets [`Error::Busy`].

use rio_client::{OpenMode, Rio};

use crate::backing::{Backing, Durability};
use crate::engine::Resolver;
use crate::error::{Error, Result};
use crate::map::PAGE;
use crate::segment::{SegmentConfig, SEG_MAGIC};
use crate::store::Segment;

/// Permission bits of the objects `create_rio` and `open_rio` create.
const OBJECT_MODE: u32 = 0o600;

fn open_exclusive(rio: &Rio, name: &str) -> Result<rio_client::Object> {
    rio.open_object(name, OpenMode::Exclusive)
        .map_err(|e| Error::rio("open object", e))
}

impl Segment {
    /// Creates the Rio object `name` (of [`Segment::backing_len`] bytes, mode 0600), opens
    /// it exclusively and formats a new segment in it, mapping its data at `addr`.
    /// Fails with [`Error::Rio`] (`Exists`) if the object exists.
    pub fn create_rio(rio: &Rio, name: &str, addr: usize, cfg: &SegmentConfig) -> Result<Segment> {
        let need = Segment::backing_len(cfg)?;
        rio.create(name, need, OBJECT_MODE)
            .map_err(|e| Error::rio("create object", e))?;
        let obj = open_exclusive(rio, name)?;
        Segment::create(Backing::from_rio(obj, Durability::Memory)?, addr, cfg)
    }

    /// Opens the segment in Rio object `name` at `addr` and runs recovery (an unfinished
    /// transaction is rolled back); creates the object and the segment (as
    /// [`Segment::create_rio`] with `cfg`) if the object does not exist. For an existing
    /// segment `cfg` is ignored: its layout is the one stored at creation.
    ///
    /// An object whose first 8 bytes (where the magic goes) are zero is taken to be a
    /// creation that a crash interrupted (the magic is written last, so nothing in it was
    /// ever committed): it is grown to the needed size if smaller and formatted afresh. Any
    /// other content that is not a segment is refused with [`Error::BadMagic`].
    ///
    /// [`Error::Busy`] if the object is open elsewhere. A prepared transaction is refused
    /// with [`Error::Prepared`] and left as it is (see [`Segment::open_rio_resolving`]).
    pub fn open_rio(rio: &Rio, name: &str, addr: usize, cfg: &SegmentConfig) -> Result<Segment> {
        Segment::open_rio_inner(rio, name, addr, cfg, None)
    }

    /// As [`Segment::open_rio`], but a prepared transaction is decided by `resolve`, as
    /// for [`Segment::open_resolving`].
    pub fn open_rio_resolving(
        rio: &Rio,
        name: &str,
        addr: usize,
        cfg: &SegmentConfig,
        resolve: Resolver<'_>,
    ) -> Result<Segment> {
        Segment::open_rio_inner(rio, name, addr, cfg, Some(resolve))
    }

    fn open_rio_inner(
        rio: &Rio,
        name: &str,
        addr: usize,
        cfg: &SegmentConfig,
        resolve: Option<Resolver<'_>>,
    ) -> Result<Segment> {
        let need = Segment::backing_len(cfg)?;
        let obj = match rio.open_object(name, OpenMode::Exclusive) {
            Ok(o) => o,
            Err(rio_client::Error::NotFound(_)) => {
                match rio.create(name, need, OBJECT_MODE) {
                    // Exists: someone else created it meanwhile; open decides below.
                    Ok(()) | Err(rio_client::Error::Exists(_)) => {}
                    Err(e) => return Err(Error::rio("create object", e)),
                }
                open_exclusive(rio, name)?
            }
            Err(e) => return Err(Error::rio("open object", e)),
        };
        let size = obj.size().map_err(|e| Error::rio("stat object", e))?;
        let mut magic = [0u8; 8];
        if size >= PAGE as u64 {
            obj.read_exact_at(&mut magic, 0)
                .map_err(|e| Error::rio("read object", e))?;
        }
        if magic == SEG_MAGIC {
            let b = Backing::from_rio(obj, Durability::Memory)?;
            return match resolve {
                Some(r) => Segment::open_resolving(b, addr, r),
                None => Segment::open(b, addr),
            };
        }
        if magic != [0u8; 8] {
            return Err(Error::BadMagic { what: "segment" });
        }
        // Fresh, or a creation interrupted before its magic was written.
        if size < need {
            obj.resize(need)
                .map_err(|e| Error::rio("resize object", e))?;
        }
        obj.write_all_at(&[0u8; PAGE], 0)
            .map_err(|e| Error::rio("write object", e))?;
        Segment::create(Backing::from_rio(obj, Durability::Memory)?, addr, cfg)
    }
}
