//! The deterministic pattern rio-check writes, shared with the host-side tests that check
//! disk images, plus the crash campaign's workload (`memtest`) and fault injection.

pub mod dax;
pub mod fault;
pub mod memtest;
pub mod pmem;

/// What can go wrong in the workload and the fault injection. Each variant's message says
/// what was being done; the OS or driver error is its `source()` (print the chain, as
/// anyhow's `{:#}` does).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or device operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// rio.ko refused or failed a request.
    #[error(transparent)]
    Rio(#[from] rio_client::Error),
    /// `rio-check inject` got a class riofault.ko does not know.
    #[error("unknown fault class {class:?}; one of {}", fault::CLASSES.join(", "))]
    UnknownClass {
        /// The class asked for.
        class: String,
    },
    /// A kernel file (`/proc/kallsyms`, `/proc/iomem`) lacks what injection needs.
    #[error("{0}")]
    KernelInfo(String),
    /// The arena size rio.ko reports has no valid geometry.
    #[error("arena of {0} bytes has no geometry")]
    Geometry(u64),
    /// `insmod riofault.ko` ran and failed.
    #[error("insmod riofault.ko failed ({0})")]
    Insmod(std::process::ExitStatus),
}

impl Error {
    /// For `map_err`: an I/O error while doing `what`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// The result of this library's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The pattern: xorshift64* bytes, a pure function of (seed, offset / 8).
pub fn pattern(seed: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let at = offset + i as u64;
        let mut x = (seed ^ 0x9e37_79b9_7f4a_7c15)
            .wrapping_add((at / 8).wrapping_mul(0xbf58_476d_1ce4_e5b9));
        x ^= x >> 31;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 29;
        *b = (x >> ((at % 8) * 8)) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_positional_and_seeded() {
        let mut whole = vec![0u8; 100];
        pattern(7, 0, &mut whole);
        let mut part = vec![0u8; 30];
        pattern(7, 50, &mut part);
        assert_eq!(&whole[50..80], &part[..]);
        let mut other = vec![0u8; 100];
        pattern(8, 0, &mut other);
        assert_ne!(whole, other);
    }
}
