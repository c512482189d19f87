//! Finding the process's writable memory: the `.data`/`.bss` of every loaded object (the
//! program and, in a dynamic build, libc, the dynamic linker and the other libraries) and
//! the main thread's stack.
//!
//! Writable static data is the part of each object's `PT_LOAD` segments with `PF_W`,
//! minus its `PT_GNU_RELRO` range (made read-only after relocation), rounded out to whole
//! pages. The stack is the `[stack]` mapping of `/proc/self/maps`. Discount Checking's own
//! volatile page ([`crate::vol`]) is cut out.

use crate::error::{Error, Result};

/// What a range holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// `.data`/`.bss` of a loaded object.
    Data = 1,
    /// The persistent heap.
    Heap = 2,
    /// The main thread's stack.
    Stack = 3,
}

impl Kind {
    /// Decodes the on-disk value.
    pub fn from_u32(v: u32) -> Option<Kind> {
        match v {
            1 => Some(Kind::Data),
            2 => Some(Kind::Heap),
            3 => Some(Kind::Stack),
            _ => None,
        }
    }
}

/// One page-aligned range of checkpointed working memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// What it is.
    pub kind: Kind,
    /// First byte (page aligned).
    pub start: usize,
    /// One past the last byte (page aligned).
    pub end: usize,
    /// Object name (diagnostics).
    pub name: String,
}

const PAGE: usize = 4096;

fn down(x: usize) -> usize {
    x & !(PAGE - 1)
}

fn up(x: usize) -> usize {
    (x + PAGE - 1) & !(PAGE - 1)
}

/// Subtracts `[cs, ce)` from `[s, e)`.
fn cut(s: usize, e: usize, cs: usize, ce: usize) -> Vec<(usize, usize)> {
    if ce <= s || cs >= e {
        return vec![(s, e)];
    }
    let mut out = Vec::new();
    if cs > s {
        out.push((s, cs));
    }
    if ce < e {
        out.push((ce, e));
    }
    out
}

struct Collect {
    out: Vec<Range>,
}

unsafe extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the call, and `data`
    // is the &mut Collect we passed in.
    let (info, col) = unsafe { (&*info, &mut *(data as *mut Collect)) };
    let bias = info.dlpi_addr as usize;
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let relro: Vec<(usize, usize)> = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_GNU_RELRO)
        .map(|p| {
            let s = bias + p.p_vaddr as usize;
            (down(s), down(s + p.p_memsz as usize))
        })
        .collect();
    for p in phdrs {
        if p.p_type != libc::PT_LOAD || p.p_flags & libc::PF_W == 0 || p.p_memsz == 0 {
            continue;
        }
        let s = down(bias + p.p_vaddr as usize);
        let e = up(bias + p.p_vaddr as usize + p.p_memsz as usize);
        let mut parts = vec![(s, e)];
        for &(rs, re) in &relro {
            parts = parts
                .into_iter()
                .flat_map(|(a, b)| cut(a, b, rs, re))
                .collect();
        }
        for (a, b) in parts {
            if b > a {
                col.out.push(Range {
                    kind: Kind::Data,
                    start: a,
                    end: b,
                    name: if name.is_empty() {
                        "<main>".into()
                    } else {
                        name.clone()
                    },
                });
            }
        }
    }
    0
}

/// The writable static data of every loaded object, minus the volatile page.
pub fn data_ranges() -> Vec<Range> {
    let mut col = Collect { out: Vec::new() };
    // SAFETY: the callback matches dl_iterate_phdr's contract and only reads `info`.
    unsafe { libc::dl_iterate_phdr(Some(each_object), &mut col as *mut Collect as *mut _) };
    let (vs, ve) = crate::vol::range();
    let mut out = Vec::new();
    for r in col.out {
        for (a, b) in cut(r.start, r.end, vs, ve) {
            out.push(Range {
                kind: r.kind,
                start: a,
                end: b,
                name: r.name.clone(),
            });
        }
    }
    out.sort_by_key(|r| r.start);
    // Merge overlaps (two PT_LOADs sharing a page).
    let mut merged: Vec<Range> = Vec::new();
    for r in out {
        if let Some(last) = merged.last_mut() {
            if r.start <= last.end && r.name == last.name {
                last.end = last.end.max(r.end);
                continue;
            }
        }
        merged.push(r);
    }
    merged
}

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone)]
pub struct MapLine {
    /// Start.
    pub start: usize,
    /// End.
    pub end: usize,
    /// Permissions, e.g. `rw-p`.
    pub perms: String,
    /// Path or pseudo-name.
    pub name: String,
}

/// Parses `/proc/self/maps`.
pub fn maps() -> Result<Vec<MapLine>> {
    let text = std::fs::read_to_string("/proc/self/maps").map_err(|e| Error::Io {
        what: "read /proc/self/maps",
        source: e,
    })?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(range), Some(perms)) = (it.next(), it.next()) else {
            continue;
        };
        let name = it.nth(3).unwrap_or("").to_string();
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        out.push(MapLine {
            start: a,
            end: b,
            perms: perms.to_string(),
            name,
        });
    }
    Ok(out)
}

/// `[start, top)` of the main thread's stack mapping.
pub fn stack_vma() -> Result<(usize, usize)> {
    maps()?
        .into_iter()
        .find(|m| m.name == "[stack]")
        .map(|m| (m.start, m.end))
        .ok_or(Error::Layout(
            "no [stack] mapping in /proc/self/maps".into(),
        ))
}

/// Checks that every range is mapped readable and writable.
pub fn check_mapped(ranges: &[Range]) -> Result<()> {
    let m = maps()?;
    for r in ranges {
        let mut at = r.start;
        while at < r.end {
            let Some(l) = m.iter().find(|l| l.start <= at && at < l.end) else {
                return Err(Error::Layout(format!(
                    "{} range {:#x}..{:#x} is not mapped at {at:#x}",
                    r.name, r.start, r.end
                )));
            };
            if !l.perms.starts_with("rw") {
                return Err(Error::Layout(format!(
                    "{} range {:#x}..{:#x} is {} at {at:#x}",
                    r.name, r.start, r.end, l.perms
                )));
            }
            at = l.end;
        }
    }
    Ok(())
}

/// Number of threads in this process (`/proc/self/status`).
pub fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_cases() {
        assert_eq!(cut(0, 10, 20, 30), vec![(0, 10)]);
        assert_eq!(cut(0, 10, 0, 10), vec![]);
        assert_eq!(cut(0, 10, 2, 4), vec![(0, 2), (4, 10)]);
        assert_eq!(cut(0, 10, 0, 4), vec![(4, 10)]);
    }

    #[test]
    fn finds_our_data_and_excludes_the_volatile_page() {
        static mut PROBE: u64 = 7;
        let probe = std::ptr::addr_of!(PROBE) as usize;
        let rs = data_ranges();
        assert!(rs.iter().any(|r| r.start <= probe && probe < r.end));
        let (vs, _) = crate::vol::range();
        assert!(!rs.iter().any(|r| r.start <= vs && vs < r.end));
        check_mapped(&rs).unwrap();
        let (s, e) = stack_vma().unwrap();
        let sp = crate::sys::stack_pointer();
        // Test threads run on their own stacks; the main one still exists.
        assert!(s < e);
        let _ = sp;
    }
}
