//! The pure core: data types and protocol logic with no I/O.
//!
//! Nothing in here touches tokio, sockets, RocksDB, the clock or randomness;
//! callers pass time and random values in. That keeps every rule of the
//! system (causality, placement, quorum accounting) testable as plain
//! functions, and `tests/core_is_pure.rs` fails if an import sneaks in.

pub mod bucket;
pub mod context;
pub mod counter;
pub mod coverage;
pub mod digest;
pub mod duplicate;
pub mod index;
pub mod key;
pub mod membership;
pub mod object;
pub mod quorum;
pub mod rate;
pub mod ring;
pub mod security;
pub mod tictac;
pub mod vclock;
pub mod x509;
