//! The registry from protocol names to everything needed to run them: settings schema,
//! node factory, workload, checkers and bug flags.

use protocols::common::BugFlag;

use crate::bindings;
use crate::error::ScenarioError;
use crate::runner::{RunOptions, RunReport};
use crate::scenario::Scenario;

/// A checker as listed by `faultline list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckerInfo {
    pub name: &'static str,
    /// The properties it checks, in the words of the literature.
    pub properties: &'static str,
}

/// What kind of requests a protocol's clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Values to broadcast.
    Broadcast,
    /// Key-value operations (get, put, compare-and-set, append), shaped by `keys`/`mix`.
    KeyValue,
    /// Bank transactions (transfers between accounts, read-all), shaped by the
    /// protocol's `[settings]` (two-phase commit).
    Bank,
    /// CRDT operations (counter increments and decrements, register writes, set adds
    /// and removes), shaped by the protocol's `[settings]` (multi-leader replication).
    Crdt,
    /// No clients: the protocol makes its own load (the bully leader's writes to its
    /// fenced resource). A `[workload]` table is an error.
    None,
    /// Versioned key-value operations: reads return siblings and a context, writes carry
    /// the context of the client's last read (Dynamo), shaped by the protocol's `[settings]`.
    Versioned,
}

/// Everything the registry knows about one protocol.
#[derive(Debug)]
pub struct ProtocolEntry {
    pub name: &'static str,
    pub description: &'static str,
    pub checkers: &'static [CheckerInfo],
    pub bug_flags: &'static [BugFlag],
    pub workload: WorkloadKind,
    /// Whether nodes keep key-value data in a storage engine (`[storage]`).
    pub uses_engines: bool,
    /// Rejects cluster sizes the protocol cannot run with.
    pub check_node_count: fn(u32) -> Result<(), String>,
    /// Checks the `[settings]` table of a scenario's text against the protocol's schema.
    pub check_settings: fn(file: &str, text: &str) -> Result<(), ScenarioError>,
    /// Runs one seed.
    pub run: fn(&Scenario, RunOptions) -> Result<RunReport, ScenarioError>,
}

/// Every protocol, by name.
pub static PROTOCOLS: &[&ProtocolEntry] = &[
    &bindings::broadcast::ENTRY,
    &bindings::raft::ENTRY,
    &bindings::bully::ENTRY,
    &bindings::paxos::ENTRY,
    &bindings::two_pc::ENTRY,
    &bindings::gossip::ENTRY,
    &bindings::multi_leader::ENTRY,
    &bindings::dynamo::ENTRY,
    &bindings::pbft::ENTRY,
];

pub fn find(name: &str) -> Option<&'static ProtocolEntry> {
    PROTOCOLS.iter().copied().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    PROTOCOLS.iter().map(|p| p.name).collect()
}

/// Checks that `name` is a bug flag of `protocol`, or an engine bug flag
/// (`storage::bugs`) of a protocol whose nodes keep their state in the engines.
pub fn check_bug_flag(protocol: &ProtocolEntry, name: &str) -> Result<(), String> {
    if storage::bugs::is_engine_flag_name(name) {
        if storage::bugs::EngineBug::from_name(name).is_none() {
            let known: Vec<&str> = storage::bugs::ENGINE_BUGS.iter().map(|f| f.name).collect();
            return Err(format!(
                "unknown engine bug flag `{name}`; expected one of: {}",
                known.join(", ")
            ));
        }
        if !protocol.uses_engines {
            return Err(format!(
                "engine bug flag `{name}` has no effect on protocol {}: its nodes keep no state in a storage engine",
                protocol.name
            ));
        }
        return Ok(());
    }
    if protocol.bug_flags.iter().any(|f| f.name == name) {
        Ok(())
    } else {
        let known: Vec<&str> = protocol.bug_flags.iter().map(|f| f.name).collect();
        Err(format!(
            "unknown bug flag `{name}` for protocol {}; expected one of: {}",
            protocol.name,
            if known.is_empty() {
                "(none)".to_string()
            } else {
                known.join(", ")
            }
        ))
    }
}
