//! Reliable broadcast: retransmit until acknowledged, de-duplicate on receipt, relay
//! what you deliver, and resynchronise after a restart.
//!
//! A client asks any node to broadcast a value. That node delivers it, replies `ok`, and
//! sends it to every peer, retransmitting each copy until the peer acknowledges it. A
//! node delivering a value for the first time relays it the same way (eager reliable
//! broadcast), so a value delivered by any node that stays up reaches everyone even if
//! its origin crashes. State is volatile in this protocol: a restarted node is a new
//! incarnation that knows nothing, so at start it asks every peer to resend everything
//! it knows (a sync), retrying until each peer confirms.
//!
//! The delivery rule for crash-recovery is **per incarnation**: an incarnation delivers
//! each value at most once; after the quiet period every incarnation alive at the end has
//! delivered every value that any of them delivered, and every value whose broadcast was
//! acknowledged by an incarnation still alive at the end. See [`checker`].

pub mod checker;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sim_core::{Ctx, NodeId, OpId, Process, SimDuration, TimerId};

use crate::common::{BugFlag, BugFlagError, unknown};

/// The id of a broadcast value: the id of the client operation that introduced it,
/// unique within a run.
pub type ValueId = u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// A value, first sent or relayed.
    Data { id: ValueId, value: u64 },
    /// The receiver has the value; stop retransmitting it.
    Ack { id: ValueId },
    /// The sender (re)started and knows nothing: send me everything you know.
    SyncRequest,
    /// Everything I knew has been queued for you (retransmitted until acknowledged).
    SyncDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    Retransmit,
}

/// A client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Broadcast { value: u64 },
}

/// What the checkers see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    Delivered { id: ValueId, value: u64 },
}

/// Protocol settings (from the scenario's `[settings]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// How often unacknowledged copies and unanswered sync requests are resent.
    pub retransmit_interval: SimDuration,
    /// At most this many copies are resent per retransmission tick (round-robin).
    pub max_resends_per_tick: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retransmit_interval: SimDuration::from_millis(50),
            max_resends_per_tick: 256,
        }
    }
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        if self.retransmit_interval == SimDuration::ZERO {
            return Err("retransmit_interval must be positive".into());
        }
        if self.max_resends_per_tick == 0 {
            return Err("max_resends_per_tick must be at least 1".into());
        }
        Ok(())
    }
}

/// The protocol's bug flags.
pub const BUG_FLAGS: &[BugFlag] = &[
    BugFlag {
        name: "broadcast.no_retransmit",
        description: "send each copy once and never retransmit, so a lost message is lost forever",
    },
    BugFlag {
        name: "broadcast.no_dedup",
        description: "deliver every received copy, so a duplicated or retransmitted message is delivered twice",
    },
    BugFlag {
        name: "broadcast.no_relay",
        description: "only the origin sends a value, so it is lost to nodes it had not reached when it crashed",
    },
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub no_retransmit: bool,
    pub no_dedup: bool,
    pub no_relay: bool,
}

impl Bugs {
    /// Switches on the named flags.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, BugFlagError> {
        let mut bugs = Bugs::default();
        for name in names {
            match name {
                "broadcast.no_retransmit" => bugs.no_retransmit = true,
                "broadcast.no_dedup" => bugs.no_dedup = true,
                "broadcast.no_relay" => bugs.no_relay = true,
                _ => return Err(unknown(name, BUG_FLAGS)),
            }
        }
        Ok(bugs)
    }
}

/// One node of the reliable broadcast.
#[derive(Debug)]
pub struct Node {
    settings: Settings,
    bugs: Bugs,
    /// Values delivered by this incarnation.
    delivered: BTreeMap<ValueId, u64>,
    /// Copies sent and not yet acknowledged: (peer, value).
    unacked: BTreeSet<(NodeId, ValueId)>,
    /// Where the last retransmission tick stopped, so every copy gets its turn.
    resend_cursor: Option<(NodeId, ValueId)>,
    /// Peers that have not yet confirmed our sync request.
    awaiting_sync: BTreeSet<NodeId>,
}

impl Node {
    pub fn new(settings: Settings, bugs: Bugs) -> Self {
        Node {
            settings,
            bugs,
            delivered: BTreeMap::new(),
            unacked: BTreeSet::new(),
            resend_cursor: None,
            awaiting_sync: BTreeSet::new(),
        }
    }

    fn deliver(&mut self, ctx: &mut Ctx<'_, Self>, id: ValueId, value: u64) {
        self.delivered.insert(id, value);
        ctx.observe(Observation::Delivered { id, value });
    }

    /// Sends `id` to each of `peers`, remembering it until acknowledged.
    fn send_to(&mut self, ctx: &mut Ctx<'_, Self>, id: ValueId, value: u64, peers: &[NodeId]) {
        for &peer in peers {
            if !self.bugs.no_retransmit {
                self.unacked.insert((peer, id));
            }
            ctx.send(peer, Msg::Data { id, value });
        }
    }

    fn resend(&mut self, ctx: &mut Ctx<'_, Self>) {
        for &peer in &self.awaiting_sync {
            ctx.send(peer, Msg::SyncRequest);
        }
        let budget = self.settings.max_resends_per_tick;
        let start = self.resend_cursor.take();
        let after_cursor = self
            .unacked
            .iter()
            .filter(|key| start.is_none_or(|cursor| **key > cursor));
        let wrapped = self
            .unacked
            .iter()
            .filter(|key| start.is_some_and(|cursor| **key <= cursor));
        let batch: Vec<(NodeId, ValueId)> =
            after_cursor.chain(wrapped).take(budget).copied().collect();
        if batch.len() == budget {
            self.resend_cursor = batch.last().copied();
        }
        for (peer, id) in batch {
            if let Some(&value) = self.delivered.get(&id) {
                ctx.send(peer, Msg::Data { id, value });
            }
        }
    }
}

impl Process for Node {
    type Msg = Msg;
    type Timer = Timer;
    type Op = Request;
    type Reply = ();
    type Obs = Observation;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.awaiting_sync = ctx.peers().collect();
        ctx.broadcast(Msg::SyncRequest);
        ctx.set_timer(self.settings.retransmit_interval, Timer::Retransmit);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Msg) {
        match msg {
            Msg::Data { id, value } => {
                ctx.send(from, Msg::Ack { id });
                let first_time = !self.delivered.contains_key(&id);
                if first_time || self.bugs.no_dedup {
                    self.deliver(ctx, id, value);
                }
                if first_time && !self.bugs.no_relay {
                    let me = ctx.id();
                    let others: Vec<NodeId> =
                        ctx.peers().filter(|&p| p != from && p != me).collect();
                    self.send_to(ctx, id, value, &others);
                }
            }
            Msg::Ack { id } => {
                self.unacked.remove(&(from, id));
            }
            Msg::SyncRequest => {
                let known: Vec<(ValueId, u64)> =
                    self.delivered.iter().map(|(&id, &v)| (id, v)).collect();
                for (id, value) in known {
                    self.send_to(ctx, id, value, &[from]);
                }
                ctx.send(from, Msg::SyncDone);
            }
            Msg::SyncDone => {
                self.awaiting_sync.remove(&from);
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _id: TimerId, timer: Timer) {
        match timer {
            Timer::Retransmit => {
                self.resend(ctx);
                ctx.set_timer(self.settings.retransmit_interval, Timer::Retransmit);
            }
        }
    }

    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: Request) {
        match request {
            Request::Broadcast { value } => {
                let id = op.0;
                self.deliver(ctx, id, value);
                let peers: Vec<NodeId> = ctx.peers().collect();
                self.send_to(ctx, id, value, &peers);
                ctx.reply_ok(op, ());
            }
        }
    }
}
