//! Storage engines for Faultline nodes, over a pluggable [`vfs::Vfs`].
//!
//! Architecture invariant: this crate does not depend on the simulator, reads no clock
//! and no global RNG. Everything it needs (the file system, time, randomness) is passed in.

#![forbid(unsafe_code)]

pub mod bitcask;
pub mod btree;
pub mod bugs;
mod codec;
pub mod coverage;
pub mod kv;
pub mod lsm;
pub mod vfs;
pub mod wal;
