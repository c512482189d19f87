//! The safe layer: typed persistent pointers and logged updates.
//!
//! Values stored in a segment must be [`Pod`] (any bit pattern is a valid value, no
//! padding, no references): after a crash the bytes are whatever recovery left, and the
//! type must accept them. Derive it with `#[derive(Clone, Copy, Pod, Zeroable)]` and
//! `#[repr(C)]` (re-exported from `bytemuck`).
//!
//! A [`PPtr<T>`] is a persistent pointer: an absolute address (segments live at fixed
//! addresses), itself `Pod`, so it can be stored inside other persistent values to build
//! linked structures. It carries no lifetime; every access checks that it points inside a
//! segment and is aligned.
//!
//! Writing goes through [`Tx::update`], [`Tx::write`] or [`Tx::update_slice`], each of
//! which logs exactly the bytes it hands out as `&mut`. Reading goes through
//! [`Segment::get`](crate::Segment::get) outside a transaction or [`Tx::get`] inside one.
//! Because the transaction mutably borrows the segment, no `&T` obtained from the segment
//! can be alive while an update runs, and an unlogged store needs `unsafe` code.
//!
//! ```
//! use vista::{Backing, Durability, PPtr, Pod, Segment, SegmentConfig, Zeroable};
//!
//! #[derive(Clone, Copy, Pod, Zeroable)]
//! #[repr(C)]
//! struct Account { id: u64, balance: i64 }
//!
//! # fn main() -> vista::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let cfg = SegmentConfig::new(1 << 20);
//! let addr = 0x3400_0000_0000;
//! let mut seg = Segment::create_file(dir.path().join("bank"), addr, &cfg, Durability::Memory)?;
//! let mut tx = seg.begin()?;
//! let acct: PPtr<Account> = tx.alloc(Account { id: 7, balance: 100 })?;
//! tx.set_root("account", acct)?;
//! tx.commit()?;
//!
//! let mut tx = seg.begin()?;
//! tx.update(acct, |a| a.balance -= 30)?;
//! tx.abort()?; // back to 100
//! assert_eq!(seg.get(acct)?.balance, 100);
//! drop(seg);
//!
//! let seg = Segment::open_file(dir.path().join("bank"), addr, Durability::Memory)?;
//! let acct = seg.root::<Account>("account")?.expect("root");
//! assert_eq!(seg.get(acct)?.balance, 100);
//! # Ok(()) }
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ops::Range;

pub use bytemuck::{Pod, Zeroable};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::roots::RootEntry;
use crate::tx::Tx;

/// A persistent pointer to a `T` in some segment.
#[repr(transparent)]
pub struct PPtr<T> {
    addr: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> PPtr<T> {
    /// The null pointer.
    pub const fn null() -> PPtr<T> {
        PPtr {
            addr: 0,
            _t: PhantomData,
        }
    }

    /// A pointer to `addr` (checked when used).
    pub const fn from_addr(addr: usize) -> PPtr<T> {
        PPtr {
            addr: addr as u64,
            _t: PhantomData,
        }
    }

    /// Whether it is null.
    pub const fn is_null(self) -> bool {
        self.addr == 0
    }

    /// The address.
    pub const fn addr(self) -> usize {
        self.addr as usize
    }

    /// The raw pointer (for the raw API; dereferencing it is up to you).
    pub const fn as_ptr(self) -> *mut T {
        self.addr as usize as *mut T
    }
}

impl<T> Clone for PPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PPtr<T> {}
impl<T> PartialEq for PPtr<T> {
    fn eq(&self, o: &Self) -> bool {
        self.addr == o.addr
    }
}
impl<T> Eq for PPtr<T> {}
impl<T> Hash for PPtr<T> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.addr.hash(h)
    }
}
impl<T> fmt::Debug for PPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PPtr({:#x})", self.addr)
    }
}
impl<T> Default for PPtr<T> {
    fn default() -> Self {
        PPtr::null()
    }
}
// SAFETY: PPtr is a transparent u64 (PhantomData is zero-sized): all-zero is valid.
unsafe impl<T: 'static> Zeroable for PPtr<T> {}
// SAFETY: a transparent u64: every bit pattern is valid, no padding, Copy and 'static.
unsafe impl<T: 'static> Pod for PPtr<T> {}

/// A persistent pointer to `len` consecutive `T`s.
#[repr(C)]
pub struct PSlice<T> {
    addr: u64,
    len: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> PSlice<T> {
    /// An empty slice.
    pub const fn empty() -> PSlice<T> {
        PSlice {
            addr: 0,
            len: 0,
            _t: PhantomData,
        }
    }

    /// A slice at `addr` of `len` elements (checked when used).
    pub const fn from_raw(addr: usize, len: usize) -> PSlice<T> {
        PSlice {
            addr: addr as u64,
            len: len as u64,
            _t: PhantomData,
        }
    }

    /// Number of elements.
    pub const fn len(self) -> usize {
        self.len as usize
    }

    /// Whether it has no elements.
    pub const fn is_empty(self) -> bool {
        self.len == 0
    }

    /// Address of the first element.
    pub const fn addr(self) -> usize {
        self.addr as usize
    }

    /// Pointer to element `i`, if `i < len`.
    pub fn at(self, i: usize) -> Option<PPtr<T>> {
        if i >= self.len() {
            return None;
        }
        let off = i.checked_mul(size_of::<T>())?;
        Some(PPtr::from_addr(self.addr().checked_add(off)?))
    }
}

impl<T> Clone for PSlice<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PSlice<T> {}
impl<T> PartialEq for PSlice<T> {
    fn eq(&self, o: &Self) -> bool {
        self.addr == o.addr && self.len == o.len
    }
}
impl<T> Eq for PSlice<T> {}
impl<T> fmt::Debug for PSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PSlice({:#x}; {})", self.addr, self.len)
    }
}
// SAFETY: two u64 fields in repr(C), no padding; all-zero is valid.
unsafe impl<T: 'static> Zeroable for PSlice<T> {}
// SAFETY: two u64 fields in repr(C) with no padding, so any bit pattern is a valid value;
// the type is Copy and (with T: 'static) 'static, as Pod requires.
unsafe impl<T: 'static> Pod for PSlice<T> {}

/// Checks that `n` values of `T` at `addr` lie in a segment of `eng` and are aligned.
pub(crate) fn check<T>(eng: &Engine, addr: usize, n: usize) -> Result<()> {
    let bytes = n.checked_mul(size_of::<T>()).ok_or(Error::OutOfRange {
        addr,
        len: usize::MAX,
    })?;
    if addr % align_of::<T>() != 0 {
        return Err(Error::Misaligned {
            addr,
            align: align_of::<T>(),
        });
    }
    if addr == 0 {
        return Err(Error::OutOfRange { addr, len: bytes });
    }
    eng.locate(addr, bytes).map(|_| ())
}

/// Reads through a checked pointer.
pub(crate) fn get<T: Pod>(eng: &Engine, p: PPtr<T>) -> Result<&T> {
    check::<T>(eng, p.addr(), 1)?;
    // SAFETY: the value lies inside a live, readable segment mapping and is aligned; T is
    // Pod so any bytes are a valid T; the returned reference borrows the engine, so no
    // mutation (which needs &mut Engine) can happen while it lives.
    Ok(unsafe { &*(p.addr() as *const T) })
}

/// Reads a slice through a checked pointer.
pub(crate) fn get_slice<T: Pod>(eng: &Engine, s: PSlice<T>) -> Result<&[T]> {
    if s.is_empty() {
        return Ok(&[]);
    }
    check::<T>(eng, s.addr(), s.len())?;
    // SAFETY: `check` proved the `len` values lie inside a live, readable segment mapping
    // and are aligned; T is Pod so any bytes are valid; the slice borrows the engine, so no
    // mutation (which needs &mut Engine) can happen while it lives.
    Ok(unsafe { std::slice::from_raw_parts(s.addr() as *const T, s.len()) })
}

fn root_entry<T>(eng: &Engine, seg: usize, name: &str) -> Result<Option<RootEntry>> {
    let Some(e) = eng.root(seg, name)? else {
        return Ok(None);
    };
    if e.elem_size as usize != size_of::<T>() {
        return Err(Error::RootTypeMismatch {
            name: name.to_string(),
            stored_size: e.elem_size as u64,
            asked_size: size_of::<T>() as u64,
        });
    }
    Ok(Some(e))
}

fn base_of(eng: &Engine, seg: usize) -> Result<usize> {
    eng.members
        .get(seg)
        .map(|m| m.layout.base)
        .ok_or(Error::NoSuchSegment(seg))
}

/// Looks up a typed root.
pub(crate) fn root<T: Pod>(eng: &Engine, seg: usize, name: &str) -> Result<Option<PPtr<T>>> {
    let base = base_of(eng, seg)?;
    Ok(root_entry::<T>(eng, seg, name)?.map(|e| PPtr::from_addr(base + e.offset as usize)))
}

/// Looks up a typed slice root.
pub(crate) fn root_slice<T: Pod>(
    eng: &Engine,
    seg: usize,
    name: &str,
) -> Result<Option<PSlice<T>>> {
    let base = base_of(eng, seg)?;
    Ok(root_entry::<T>(eng, seg, name)?
        .map(|e| PSlice::from_raw(base + e.offset as usize, e.count as usize)))
}

impl Tx<'_> {
    /// Reads a value.
    pub fn get<T: Pod>(&self, p: PPtr<T>) -> Result<&T> {
        get(self.eng, p)
    }

    /// Copies a value out.
    pub fn read<T: Pod>(&self, p: PPtr<T>) -> Result<T> {
        get(self.eng, p).copied()
    }

    /// Reads a slice.
    pub fn get_slice<T: Pod>(&self, s: PSlice<T>) -> Result<&[T]> {
        get_slice(self.eng, s)
    }

    /// Logs `*p`, then lets `f` change it in place.
    pub fn update<T: Pod, R>(&mut self, p: PPtr<T>, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        check::<T>(self.eng, p.addr(), 1)?;
        self.eng.set_range(p.addr(), size_of::<T>())?;
        // SAFETY: checked in-segment and aligned; logged just above; T is Pod. The &mut
        // lives only during `f`, which cannot reach the engine (we hold &mut self), and no
        // shared reference from the segment can exist while the transaction borrows it.
        Ok(f(unsafe { &mut *p.as_ptr() }))
    }

    /// Logs `*p` and stores `v`.
    pub fn write<T: Pod>(&mut self, p: PPtr<T>, v: T) -> Result<()> {
        self.update(p, |x| *x = v)
    }

    /// Logs elements `range` of `s`, then lets `f` change them in place.
    pub fn update_slice<T: Pod, R>(
        &mut self,
        s: PSlice<T>,
        range: Range<usize>,
        f: impl FnOnce(&mut [T]) -> R,
    ) -> Result<R> {
        if range.start > range.end || range.end > s.len() {
            return Err(Error::OutOfRange {
                addr: s.addr(),
                len: range.end.saturating_mul(size_of::<T>()),
            });
        }
        let n = range.end - range.start;
        let addr = range
            .start
            .checked_mul(size_of::<T>())
            .and_then(|off| s.addr().checked_add(off))
            .ok_or(Error::OutOfRange {
                addr: s.addr(),
                len: usize::MAX,
            })?;
        if n == 0 {
            return Ok(f(&mut []));
        }
        check::<T>(self.eng, addr, n)?;
        self.eng.set_range(addr, n * size_of::<T>())?;
        // SAFETY: `check` proved the n values in-segment and aligned, and `set_range` logged
        // them just above; T is Pod. The &mut slice lives only during `f`, which cannot
        // reach the engine (we hold &mut self), and no shared reference from the segment can
        // exist while the transaction borrows it.
        Ok(f(unsafe {
            std::slice::from_raw_parts_mut(addr as *mut T, n)
        }))
    }

    /// Allocates a `T` in segment 0's heap and initializes it with `v`.
    pub fn alloc<T: Pod>(&mut self, v: T) -> Result<PPtr<T>> {
        self.alloc_in(0, v)
    }

    /// Allocates a `T` in segment `seg`'s heap and initializes it with `v`.
    pub fn alloc_in<T: Pod>(&mut self, seg: usize, v: T) -> Result<PPtr<T>> {
        let p = self
            .eng
            .alloc(seg, size_of::<T>(), align_of::<T>().max(1))?;
        // SAFETY: the block was just allocated (free before this transaction, so an abort
        // discards it whatever it holds: no logging needed), is aligned and large enough.
        unsafe { (p as *mut T).write(v) };
        Ok(PPtr::from_addr(p))
    }

    /// Allocates `len` copies of `fill` in segment `seg`'s heap.
    pub fn alloc_slice_in<T: Pod>(&mut self, seg: usize, len: usize, fill: T) -> Result<PSlice<T>> {
        let bytes = len.checked_mul(size_of::<T>()).ok_or(Error::OutOfMemory {
            size: usize::MAX,
            align: align_of::<T>(),
        })?;
        let p = self.eng.alloc(seg, bytes, align_of::<T>().max(1))?;
        for i in 0..len {
            // SAFETY: inside the fresh block (see `alloc_in`).
            unsafe { (p as *mut T).add(i).write(fill) };
        }
        Ok(PSlice::from_raw(p, len))
    }

    /// Allocates `len` copies of `fill` in segment 0's heap.
    pub fn alloc_slice<T: Pod>(&mut self, len: usize, fill: T) -> Result<PSlice<T>> {
        self.alloc_slice_in(0, len, fill)
    }

    /// Frees a value allocated with [`Tx::alloc`] (deferred to commit unless allocated in
    /// this transaction).
    pub fn free<T>(&mut self, p: PPtr<T>) -> Result<()> {
        self.eng.free(p.addr())
    }

    /// Frees a slice allocated with [`Tx::alloc_slice`].
    pub fn free_slice<T>(&mut self, s: PSlice<T>) -> Result<()> {
        self.eng.free(s.addr())
    }

    /// Names `p` in the root table of the segment that holds it.
    pub fn set_root<T: Pod>(&mut self, name: &str, p: PPtr<T>) -> Result<()> {
        self.set_root_entry::<T>(name, p.addr(), 1)
    }

    /// Names a slice in the root table of the segment that holds it.
    pub fn set_root_slice<T: Pod>(&mut self, name: &str, s: PSlice<T>) -> Result<()> {
        self.set_root_entry::<T>(name, s.addr(), s.len())
    }

    fn set_root_entry<T>(&mut self, name: &str, addr: usize, count: usize) -> Result<()> {
        check::<T>(self.eng, addr, count)?;
        let (slot, off) = self.eng.locate(addr, count * size_of::<T>())?;
        self.eng.set_root(
            slot as usize,
            name,
            RootEntry {
                offset: off as u64,
                count: count as u64,
                elem_size: size_of::<T>() as u32,
            },
        )
    }

    /// Looks up a typed root of segment `seg`.
    pub fn root_in<T: Pod>(&self, seg: usize, name: &str) -> Result<Option<PPtr<T>>> {
        root(self.eng, seg, name)
    }

    /// Looks up a typed root of segment 0.
    pub fn root<T: Pod>(&self, name: &str) -> Result<Option<PPtr<T>>> {
        root(self.eng, 0, name)
    }

    /// Looks up a typed slice root of segment 0.
    pub fn root_slice<T: Pod>(&self, name: &str) -> Result<Option<PSlice<T>>> {
        root_slice(self.eng, 0, name)
    }
}
