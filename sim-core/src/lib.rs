//! Faultline's deterministic simulation kernel.
//!
//! One seed decides everything: simulated time ([`time`]), the event queue and node
//! lifecycle ([`sim`]), the network ([`network`]), the disks ([`disk`]), clocks
//! ([`clock`]), the nemesis ([`fault`]), clients ([`workload`], [`history`]) and the
//! trace ([`trace`]). Protocols implement [`process::Process`] and act only through
//! [`process::Ctx`].
//!
//! Architecture invariant: this crate knows no protocol by name. It uses no wall clock,
//! no threads, no unseeded randomness and no hash-ordered collections.

#![forbid(unsafe_code)]

pub mod checker;
pub mod clock;
pub mod coverage;
pub mod crash_consistency;
pub mod disk;
pub mod fault;
pub mod history;
pub mod ids;
pub mod kv_workload;
pub mod linearizability;
pub mod network;
pub mod process;
pub mod rng;
pub mod run;
pub mod sim;
pub mod time;
pub mod trace;
pub mod workload;

pub use checker::{Checker, Citation, Violation};
pub use ids::{ClientId, MsgId, NodeId, OpId, TimerId};
pub use process::{Completion, Ctx, Process};
pub use run::{NodeStatus, Observed, RunOutput, RunStats};
pub use sim::{ClockConfig, SimConfig, SimError, Simulation};
pub use time::{SimDuration, SimTime};
