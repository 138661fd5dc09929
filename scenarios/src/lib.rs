//! Scenario files and the registry of runnable protocols.
//!
//! A scenario (TOML) names a protocol, the cluster, its faults, the client workload and
//! the checkers. [`Scenario::load`] parses it strictly — an unknown key, a wrong type or an
//! out-of-range value is an error naming the file, line and column — and [`runner::run`]
//! runs it for one seed.
//!
//! Architecture invariant: no protocol logic lives here; only schemas and bindings.

#![forbid(unsafe_code)]

mod bindings;
pub mod coverage;
pub mod diff;
pub mod duration;
pub mod engines;
pub mod error;
pub mod explore;
pub mod registry;
pub mod regressions;
pub mod runner;
pub mod scenario;
pub mod schema;
pub mod shrink;
pub mod zoo;

pub use error::ScenarioError;
pub use runner::{Metric, RunOptions, RunReport, TraceFilter, run, transcript};
pub use scenario::Scenario;
