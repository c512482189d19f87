//! rio-fuzz: a model-checking fuzzer for `/dev/rio`.
//!
//! - [`prng`]: the deterministic generator every choice derives from;
//! - [`ops`]: the operations and op-index lists;
//! - [`model`]: the exact model of what rio.ko must answer, with the security rules in one
//!   place ([`model::Rules`]), and the checker ([`model::check`]);
//! - [`fsmodel`]: the model of riofs (a POSIX tree, the VFS's permission rules, and what
//!   `mmap(MAP_SHARED)` of its files sees: [`fsmodel::Fs::image`]);
//! - [`gen`]: the op generator;
//! - [`verify`]: what a recovered arena must hold after a crash;
//! - [`guest`]: the guest program (actors under four identities, the coordinator, noise);
//! - [`host`]: the host driver (boot, load, fuzz, crash, recover, verify, shrink).

pub mod fsmodel;
pub mod gen;
pub mod guest;
pub mod host;
pub mod model;
pub mod ops;
pub mod prng;
pub mod verify;
pub mod wire;

#[cfg(test)]
mod tests;
