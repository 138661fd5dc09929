//! The client workload driver's configuration and the request generator a protocol
//! supplies.
//!
//! Clients are closed-loop, as in Jepsen: each has at most one operation outstanding.
//! A client picks a node at random, invokes, and waits for the completion or its timeout
//! (an `info`: the outcome is unknown); after a think time it invokes the next operation.
//! A request that failed or timed out is retried on another node, as a new operation, up
//! to `max_retries` times; then the client moves on to a new request.

use serde::{Deserialize, Serialize};

use crate::ids::ClientId;
use crate::process::{Completion, Process};
use crate::rng::SimRng;
use crate::time::SimDuration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// The number of concurrent clients.
    pub clients: u32,
    /// Pause between one operation's completion and the next invocation, uniform in
    /// `[think_min, think_max]`.
    pub think_min: SimDuration,
    pub think_max: SimDuration,
    /// An operation not completed within this long is recorded as `info` (unknown).
    pub timeout: SimDuration,
    /// Stop invoking after this many operations in total (unbounded if `None`).
    pub max_operations: Option<u64>,
    /// How many times a failed or timed-out request is retried on another node.
    pub max_retries: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            clients: 3,
            think_min: SimDuration::from_millis(10),
            think_max: SimDuration::from_millis(100),
            timeout: SimDuration::from_secs(1),
            max_operations: None,
            max_retries: 2,
        }
    }
}

impl ClientConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.think_min > self.think_max {
            return Err("client think_min is greater than think_max".into());
        }
        if self.timeout == SimDuration::ZERO {
            return Err("client timeout must be positive".into());
        }
        Ok(())
    }
}

/// Generates client requests for a protocol.
pub trait Workload<P: Process> {
    /// The next request of `client`.
    fn next_request(&mut self, client: ClientId, rng: &mut SimRng) -> P::Op;

    /// An operation of `client` completed (ok, fail or info). Workloads whose next
    /// request depends on an earlier answer (a read's context carried by the next write)
    /// learn it here; the default ignores it.
    fn on_completion(
        &mut self,
        _client: ClientId,
        _request: &P::Op,
        _completion: &Completion<P::Reply>,
    ) {
    }
}

impl<P: Process, F: FnMut(ClientId, &mut SimRng) -> P::Op> Workload<P> for F {
    fn next_request(&mut self, client: ClientId, rng: &mut SimRng) -> P::Op {
        self(client, rng)
    }
}
