//! Protocols run by the Faultline simulator. Each is a sans-IO state machine implementing
//! [`sim_core::Process`]: it acts only through its context, persists durable state only
//! through `storage` engines on the node's disk, emits observations for its checkers,
//! and carries opt-in bug flags that re-introduce classic defects.

#![forbid(unsafe_code)]

pub mod broadcast;
pub mod bully;
pub mod common;
pub mod dynamo;
pub mod gossip;
pub mod multi_leader;
pub mod paxos;
pub mod pbft;
pub mod raft;
pub mod two_pc;
