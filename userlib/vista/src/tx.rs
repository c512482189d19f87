//! Transaction handles.
//!
//! A [`Tx`] mutably borrows its [`Segment`](crate::Segment) or [`Group`](crate::Group),
//! so a second `begin` while one is open, or any use after `commit`/`abort` (which consume
//! the handle), does not compile. Dropping a `Tx` without committing aborts it (unless it
//! is prepared: see [`Tx::prepare`]). What can
//! only be checked at run time (ranges outside the segments, double frees, a handle leaked
//! with `mem::forget`) returns an [`Error`].
//!
//! Use after commit does not compile:
//!
//! ```compile_fail
//! # fn f(seg: &mut vista::Segment, p: *const u8) -> vista::Result<()> {
//! let mut tx = seg.begin()?;
//! tx.commit()?;
//! tx.set_range(p, 8)?; // error: use of moved value `tx`
//! # Ok(()) }
//! ```
//!
//! Nor does a nested `begin`:
//!
//! ```compile_fail
//! # fn f(seg: &mut vista::Segment) -> vista::Result<()> {
//! let tx = seg.begin()?;
//! let tx2 = seg.begin()?; // error: `*seg` already mutably borrowed
//! tx.commit()?;
//! # Ok(()) }
//! ```
//!
//! Nor does reading through the segment while a transaction may write:
//!
//! ```compile_fail
//! # fn f(seg: &mut vista::Segment, p: vista::PPtr<u64>) -> vista::Result<()> {
//! let v: &u64 = seg.get(p)?;
//! let mut tx = seg.begin()?; // error: `*seg` is also borrowed as immutable
//! tx.write(p, 1)?;
//! println!("{v}");
//! # Ok(()) }
//! ```

use std::ptr::NonNull;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::roots::RootEntry;

/// An open transaction.
///
/// Raw protocol: call [`Tx::set_range`] on every range before storing into it, then
/// [`Tx::commit`]. The typed methods in [`typed`](crate::typed) do the `set_range` for you.
#[derive(Debug)]
pub struct Tx<'a> {
    pub(crate) eng: &'a mut Engine,
    done: bool,
}

impl<'a> Tx<'a> {
    pub(crate) fn begin(eng: &'a mut Engine) -> Result<Tx<'a>> {
        eng.begin()?;
        Ok(Tx { eng, done: false })
    }

    /// Logs the before-image of `[addr, addr + len)`; afterwards the caller may store into
    /// that range directly, and an abort or a crash before commit restores it.
    /// The range must lie inside one segment of this transaction ([`Error::OutOfRange`]).
    #[inline]
    pub fn set_range(&mut self, addr: *const u8, len: usize) -> Result<()> {
        self.eng.set_range(addr as usize, len)
    }

    /// Commits: all stores since `begin` become permanent atomically. If committing fails
    /// before the commit point (e.g. an `msync` error) the transaction is aborted and the
    /// error returned. A prepared transaction cannot fail before its commit point.
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        let r = self.eng.commit();
        if r.is_err() && self.eng.is_active() && self.eng.prepared().is_none() {
            let _ = self.eng.abort();
        }
        r
    }

    /// Phase one of two-phase commit: votes "yes" under `tag` (non-zero, e.g. the 2PC
    /// epoch). Every undo record and every store into the logged ranges is made as durable
    /// as a commit would make it (the same syncs as commit for the backings' durability),
    /// then `tag` is recorded durably in the log's `prepared` word.
    ///
    /// Afterwards the transaction can only [`commit`](Tx::commit) or
    /// [`abort`](Tx::abort), as the coordinator decides: `set_range`, heap and root changes
    /// and a second `prepare` fail with [`Error::Prepared`] (in implicit mode a store to a
    /// page not yet logged aborts the process). Stores into ranges logged before `prepare`
    /// must not happen either: abort would undo them, but nothing forces them to stable
    /// storage. Dropping the handle does **not** abort a prepared transaction: it stays in
    /// doubt in the log (and the segment or group refuses `begin`) until
    /// [`Group::resolve`](crate::Group::resolve) / [`Segment::resolve`](crate::Segment::resolve)
    /// in this process, or an opening variant with a resolver
    /// ([`Group::open_resolving`](crate::Group::open_resolving)) after a crash; a plain
    /// `open` refuses it with [`Error::Prepared`].
    ///
    /// A zero `tag` is refused ([`Error::InvalidConfig`]). On any `Err` the transaction
    /// is not prepared (it is still open; abort or drop it) and the vote must be "no".
    pub fn prepare(&mut self, tag: u64) -> Result<()> {
        self.eng.prepare(tag)
    }

    /// The tag this transaction was prepared with, if it was.
    pub fn prepared_tag(&self) -> Option<u64> {
        self.eng.prepared()
    }

    /// Aborts: every logged range (and the heap and roots) returns to its state at `begin`.
    pub fn abort(mut self) -> Result<()> {
        self.done = true;
        self.eng.abort()
    }

    /// Commits and immediately begins the next transaction on the same handle (a
    /// checkpoint, in Discount Checking's terms). Works on a prepared transaction too.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.eng.commit()?;
        self.eng.begin()
    }

    /// Allocates `size` bytes (alignment `align`, a power of two up to 4096) from the heap
    /// of segment 0. Undone by abort.
    pub fn alloc_raw(&mut self, size: usize, align: usize) -> Result<NonNull<u8>> {
        self.alloc_raw_in(0, size, align)
    }

    /// Allocates from the heap of segment `seg` of a group.
    pub fn alloc_raw_in(&mut self, seg: usize, size: usize, align: usize) -> Result<NonNull<u8>> {
        let a = self.eng.alloc(seg, size, align)?;
        NonNull::new(a as *mut u8).ok_or(Error::OutOfMemory { size, align })
    }

    /// Frees a heap block. A block allocated in this same transaction is freed at once;
    /// any other block stays allocated (and readable) until commit, so that an abort can
    /// give it back. [`Error::DoubleFree`] for a block that is not allocated or already
    /// freed in this transaction.
    pub fn free_raw(&mut self, ptr: *mut u8) -> Result<()> {
        self.eng.free(ptr as usize)
    }

    /// Size in bytes of the heap block starting at `ptr`.
    pub fn block_size(&self, ptr: *const u8) -> Option<usize> {
        self.eng.block_size(ptr as usize)
    }

    /// Sets a root of segment `seg` (logged).
    pub fn set_root_raw(&mut self, seg: usize, name: &str, entry: RootEntry) -> Result<()> {
        self.eng.set_root(seg, name, entry)
    }

    /// Removes a root of segment `seg` (logged); whether it existed.
    pub fn remove_root(&mut self, seg: usize, name: &str) -> Result<bool> {
        self.eng.remove_root(seg, name)
    }

    /// Reads a root of segment `seg`.
    pub fn root_raw(&self, seg: usize, name: &str) -> Result<Option<RootEntry>> {
        self.eng.root(seg, name)
    }

    /// The digest the segments will have once this transaction commits (crash checks).
    #[doc(hidden)]
    pub fn digest_if_committed(&self) -> u64 {
        self.eng.digest()
    }

    /// Bytes of undo log used so far.
    pub fn log_used(&self) -> usize {
        self.eng.log_used()
    }

    /// Bytes of undo log still free.
    pub fn log_free(&self) -> usize {
        self.eng.log_free()
    }

    /// Base address of segment `seg`'s data.
    pub fn segment_base(&self, seg: usize) -> Result<*mut u8> {
        self.eng
            .members
            .get(seg)
            .map(|m| m.data.ptr())
            .ok_or(Error::NoSuchSegment(seg))
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done && self.eng.is_active() && self.eng.prepared().is_none() {
            let _ = self.eng.abort();
        }
    }
}
