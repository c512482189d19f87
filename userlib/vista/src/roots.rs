//! Named roots: a small persistent table `name -> (offset, count, element size)` in the
//! segment's metadata, so a program finds its data again after a restart.
//!
//! # Format
//!
//! An array of 64-byte entries (little-endian):
//!
//! | offset | size | field                                                       |
//! |-------:|-----:|-------------------------------------------------------------|
//! | 0      | 40   | name, UTF-8, NUL-padded (1..=40 bytes, no NUL inside)       |
//! | 40     | 8    | offset of the value from the start of the data area         |
//! | 48     | 8    | count of elements (1 for a single value)                    |
//! | 56     | 4    | element size in bytes                                       |
//! | 60     | 4    | flags: bit 0 = entry in use                                 |
//!
//! Updates are logged like any other metadata (before-image of the 64-byte entry).

use crate::error::{Error, Result};
use crate::log::{LogCore, AREA_META};

/// Longest root name in bytes.
pub const NAME_MAX: usize = 40;
/// Bytes per entry.
pub const ENTRY: usize = 64;

/// What a root points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootEntry {
    /// Offset from the start of the segment's data area.
    pub offset: u64,
    /// Number of elements.
    pub count: u64,
    /// Size of one element in bytes.
    pub elem_size: u32,
}

/// The root table of one segment.
#[derive(Debug)]
pub(crate) struct Roots {
    base: *mut u8,
    meta_off: usize,
    cap: usize,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX || name.as_bytes().contains(&0) {
        return Err(Error::InvalidRootName(name.to_string()));
    }
    Ok(())
}

impl Roots {
    /// A table of `cap` entries at `base`, `meta_off` bytes into the metadata area.
    ///
    /// # Safety
    /// `base` must point to `cap * ENTRY` writable bytes, 8-aligned, of a mapping that
    /// outlives the table.
    pub(crate) unsafe fn new(base: *mut u8, meta_off: usize, cap: usize) -> Roots {
        Roots {
            base,
            meta_off,
            cap,
        }
    }

    fn entry(&self, i: usize) -> &[u8] {
        // SAFETY: i < cap, so the 64 bytes lie inside the table (constructor contract).
        unsafe { std::slice::from_raw_parts(self.base.add(i * ENTRY), ENTRY) }
    }

    fn in_use(&self, i: usize) -> bool {
        self.entry(i)[60] & 1 == 1
    }

    fn name_of(&self, i: usize) -> &[u8] {
        let e = &self.entry(i)[..NAME_MAX];
        let end = e.iter().position(|&b| b == 0).unwrap_or(NAME_MAX);
        &e[..end]
    }

    fn find(&self, name: &str) -> Option<usize> {
        (0..self.cap).find(|&i| self.in_use(i) && self.name_of(i) == name.as_bytes())
    }

    fn decode(&self, i: usize) -> RootEntry {
        let e = self.entry(i);
        let mut w = [0u8; 8];
        w.copy_from_slice(&e[40..48]);
        let offset = u64::from_le_bytes(w);
        w.copy_from_slice(&e[48..56]);
        let count = u64::from_le_bytes(w);
        let mut h = [0u8; 4];
        h.copy_from_slice(&e[56..60]);
        RootEntry {
            offset,
            count,
            elem_size: u32::from_le_bytes(h),
        }
    }

    /// Looks a root up.
    pub(crate) fn get(&self, name: &str) -> Result<Option<RootEntry>> {
        check_name(name)?;
        Ok(self.find(name).map(|i| self.decode(i)))
    }

    /// All roots, in table order.
    pub(crate) fn list(&self) -> Vec<(String, RootEntry)> {
        (0..self.cap)
            .filter(|&i| self.in_use(i))
            .map(|i| {
                (
                    String::from_utf8_lossy(self.name_of(i)).into_owned(),
                    self.decode(i),
                )
            })
            .collect()
    }

    fn write(&mut self, log: &LogCore, slot: u16, i: usize, bytes: &[u8; ENTRY]) -> Result<()> {
        // SAFETY: entry i is inside the table; the log is a different area.
        let p = unsafe { self.base.add(i * ENTRY) };
        // SAFETY: p is readable for ENTRY bytes.
        unsafe {
            log.append(
                slot,
                AREA_META,
                (self.meta_off + i * ENTRY) as u64,
                p,
                ENTRY,
            )?
        };
        // SAFETY: p is writable for ENTRY bytes; `&mut self` serializes writers.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, ENTRY) };
        Ok(())
    }

    /// Sets (or replaces) a root. Logged.
    pub(crate) fn set(&mut self, log: &LogCore, slot: u16, name: &str, e: RootEntry) -> Result<()> {
        check_name(name)?;
        let i = match self.find(name) {
            Some(i) => i,
            None => (0..self.cap)
                .find(|&i| !self.in_use(i))
                .ok_or(Error::RootsFull(self.cap))?,
        };
        let mut b = [0u8; ENTRY];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[40..48].copy_from_slice(&e.offset.to_le_bytes());
        b[48..56].copy_from_slice(&e.count.to_le_bytes());
        b[56..60].copy_from_slice(&e.elem_size.to_le_bytes());
        b[60..64].copy_from_slice(&1u32.to_le_bytes());
        self.write(log, slot, i, &b)
    }

    /// Removes a root; returns whether it existed. Logged.
    pub(crate) fn remove(&mut self, log: &LogCore, slot: u16, name: &str) -> Result<bool> {
        check_name(name)?;
        match self.find(name) {
            Some(i) => {
                self.write(log, slot, i, &[0u8; ENTRY])?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogInfo;

    #[test]
    fn set_get_remove_and_format() {
        let mut table = vec![0u64; 4 * ENTRY / 8];
        let mut logbuf = vec![0u64; (4096 + 4096) / 8];
        // SAFETY: buffers of the stated sizes outlive the table and log.
        let log = unsafe {
            LogCore::format(
                logbuf.as_mut_ptr().cast(),
                8192,
                &LogInfo {
                    log_id: 1,
                    capacity: 4096,
                    members: vec![1],
                },
                false,
            )
            .unwrap()
        };
        log.begin();
        // SAFETY: `table` is 4 * ENTRY writable, 8-aligned bytes (a Vec<u64>) and outlives
        // `r`, as Roots::new requires.
        let mut r = unsafe { Roots::new(table.as_mut_ptr().cast(), 0, 4) };
        let e = RootEntry {
            offset: 0x1000,
            count: 3,
            elem_size: 24,
        };
        assert_eq!(r.get("accounts").unwrap(), None);
        r.set(&log, 0, "accounts", e).unwrap();
        assert_eq!(r.get("accounts").unwrap(), Some(e));
        // Raw layout.
        let raw: &[u8] = bytemuck::cast_slice(&table);
        assert_eq!(&raw[..8], b"accounts");
        assert_eq!(raw[8], 0);
        assert_eq!(&raw[40..48], &0x1000u64.to_le_bytes());
        assert_eq!(&raw[48..56], &3u64.to_le_bytes());
        assert_eq!(&raw[56..60], &24u32.to_le_bytes());
        assert_eq!(raw[60], 1);
        for n in ["a", "b", "c"] {
            r.set(&log, 0, n, e).unwrap();
        }
        assert!(matches!(r.set(&log, 0, "d", e), Err(Error::RootsFull(4))));
        assert!(r.remove(&log, 0, "b").unwrap());
        assert!(!r.remove(&log, 0, "b").unwrap());
        r.set(&log, 0, "d", e).unwrap();
        assert_eq!(r.list().len(), 4);
        let long = "x".repeat(41);
        assert!(matches!(r.get(&long), Err(Error::InvalidRootName(_))));
        assert!(matches!(r.get(""), Err(Error::InvalidRootName(_))));
        assert!(r.get(&"y".repeat(40)).unwrap().is_none());
    }
}
