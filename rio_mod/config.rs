// SPDX-License-Identifier: GPL-2.0

//! The arena's module parameters and their validation.
//!
//! The arena must be a page-aligned physical range that the kernel was told to leave alone
//! with `memmap=SIZE$ADDR`: entirely inside e820-reserved memory and nowhere in System RAM,
//! so that the kernel's direct map has no alias of it and rio.ko's own mapping is the only
//! one. Anything else is refused with `EINVAL` and one `dmesg` line that says what to do.

use kernel::prelude::*;

use crate::sys::{self, Overlap};

/// The smallest arena worth having: superblock, registry and a few data pages.
pub(crate) const MIN_ARENA_SIZE: u64 = 1 << 20;

/// Page size the arena is aligned to.
pub(crate) const PAGE_SIZE: u64 = kernel::page::PAGE_SIZE as u64;

/// A validated arena range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArenaConfig {
    /// Physical start address.
    pub(crate) phys: u64,
    /// Size in bytes.
    pub(crate) size: u64,
}

impl ArenaConfig {
    /// The first physical address past the arena.
    pub(crate) fn end(&self) -> u64 {
        self.phys + self.size
    }

    /// Validates the `arena_phys` and `arena_size` parameters.
    pub(crate) fn from_params(phys: u64, size: u64) -> Result<Self> {
        if phys == 0 && size == 0 {
            pr_err!("no arena given: load with arena_phys=ADDR arena_size=BYTES, a range reserved at boot with memmap=SIZE$ADDR\n");
            return Err(EINVAL);
        }
        if size == 0 {
            pr_err!("arena_size is zero: give the size of the memmap= reservation\n");
            return Err(EINVAL);
        }
        if phys == 0 {
            pr_err!("arena_phys is missing or zero: give the start of the memmap= reservation\n");
            return Err(EINVAL);
        }
        if phys % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            pr_err!(
                "arena {:#x}+{:#x} is not page aligned ({} bytes)\n",
                phys,
                size,
                PAGE_SIZE
            );
            return Err(EINVAL);
        }
        if size < MIN_ARENA_SIZE {
            pr_err!(
                "arena_size {:#x} is too small: at least {:#x} bytes\n",
                size,
                MIN_ARENA_SIZE
            );
            return Err(EINVAL);
        }
        let Some(end) = phys.checked_add(size) else {
            pr_err!(
                "arena {:#x}+{:#x} wraps around the address space\n",
                phys,
                size
            );
            return Err(EINVAL);
        };
        if sys::system_ram_overlap(phys, size) != Overlap::Disjoint {
            pr_err!(
                "arena {:#x}..{:#x} overlaps System RAM: reserve it at boot with memmap=SIZE$ADDR\n",
                phys,
                end
            );
            return Err(EINVAL);
        }
        if sys::reserved_overlap(phys, size) != Overlap::Within {
            pr_err!(
                "arena {:#x}..{:#x} is not entirely reserved memory: boot with memmap={}K${:#x}\n",
                phys,
                end,
                size >> 10,
                phys
            );
            return Err(EINVAL);
        }
        Ok(Self { phys, size })
    }
}
