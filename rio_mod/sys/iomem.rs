// SPDX-License-Identifier: GPL-2.0

//! Where physical memory is: System RAM and firmware-reserved ranges in the iomem
//! resource tree (the arena must be reserved, never RAM the kernel owns).

use kernel::bindings;

/// How a physical range relates to the resources of one kind in the iomem tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// No byte of the range is in such a resource.
    Disjoint,
    /// Every byte of the range is in such resources.
    Within,
    /// Some bytes are, some are not (or the range crosses a hole).
    Mixed,
}

fn region(start: u64, size: u64, flags: u64, desc: u64) -> Overlap {
    let Ok(size) = usize::try_from(size) else {
        return Overlap::Mixed;
    };
    // SAFETY: `region_intersects` only walks the iomem resource tree under its own read
    // lock; it accepts any start, size, flags and descriptor values and dereferences nothing
    // of ours.
    let r = unsafe { bindings::region_intersects(start, size, flags as usize, desc as usize) };
    if r == bindings::REGION_DISJOINT as i32 {
        Overlap::Disjoint
    } else if r == bindings::REGION_INTERSECTS as i32 {
        Overlap::Within
    } else {
        Overlap::Mixed
    }
}

/// How `[start, start + size)` overlaps System RAM.
pub(crate) fn system_ram_overlap(start: u64, size: u64) -> Overlap {
    region(
        start,
        size,
        u64::from(bindings::IORESOURCE_SYSTEM_RAM),
        u64::from(bindings::IORES_DESC_NONE),
    )
}

/// How `[start, start + size)` overlaps firmware-reserved memory (`memmap=SIZE$ADDR`).
pub(crate) fn reserved_overlap(start: u64, size: u64) -> Overlap {
    region(
        start,
        size,
        u64::from(bindings::IORESOURCE_MEM),
        u64::from(bindings::IORES_DESC_RESERVED),
    )
}
