//! The guest program: actors, the coordinator, the noise threads, verify.

pub mod actor;
pub mod coord;
pub mod fs;
pub mod noise;
pub mod sys;
