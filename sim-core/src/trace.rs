//! The simulation trace: every event of a run as a typed value.
//!
//! Each event is hashed as it happens (so the hash costs no memory), and may also be
//! kept in memory as compact text lines (for people, `replay` and snapshots) and written
//! as JSON Lines (for tools).
//!
//! **The trace hash.** Each event, with its time, is encoded canonically with `postcard`
//! (a stable, documented wire format driven by the types' `serde` derives) and folded
//! into a running XXH3-64: `h ← xxh3_64_with_seed(encoding, h)`, starting from 0. The
//! hash therefore depends only on the sequence of events and their contents, never on
//! memory addresses, platform or thread scheduling.

use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::disk::DiskEvent;
use crate::ids::{ClientId, MsgId, NodeId, OpId, TimerId};
use crate::network::DropReason;
use crate::process::{Completion, Process};
use crate::time::{SimDuration, SimTime};

/// One event of a run. Borrowed payloads keep recording cheap.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case", bound = "")]
pub enum TraceEvent<'a, P: Process> {
    /// A node booted or restarted (`on_start` ran).
    Start {
        node: NodeId,
        incarnation: u32,
    },
    Send {
        from: NodeId,
        to: NodeId,
        id: MsgId,
        msg: &'a P::Msg,
    },
    Deliver {
        from: NodeId,
        to: NodeId,
        id: MsgId,
        msg: &'a P::Msg,
    },
    Drop {
        from: NodeId,
        to: NodeId,
        id: MsgId,
        reason: DropReason,
    },
    /// The network will deliver this message a second time.
    Duplicate {
        from: NodeId,
        to: NodeId,
        id: MsgId,
    },
    Timer {
        node: NodeId,
        id: TimerId,
        timer: &'a P::Timer,
    },
    Crash {
        node: NodeId,
    },
    Restart {
        node: NodeId,
        incarnation: u32,
    },
    Pause {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    Partition {
        shape: &'a str,
        links: &'a [(NodeId, NodeId)],
    },
    Heal,
    Clog {
        from: NodeId,
        to: NodeId,
        extra: SimDuration,
        until: SimTime,
    },
    Unclog,
    Invoke {
        client: ClientId,
        op: OpId,
        node: NodeId,
        request: &'a P::Op,
    },
    Complete {
        client: ClientId,
        op: OpId,
        node: NodeId,
        completion: &'a Completion<P::Reply>,
    },
    Observe {
        node: NodeId,
        obs: &'a P::Obs,
    },
    Disk {
        node: NodeId,
        detail: &'a DiskEvent,
    },
    /// The fault phase ended: faults healed, nodes restarted, clients stopped.
    QuietPhase,
}

impl<P: Process> TraceEvent<'_, P> {
    /// The short name of the event kind, as used in filters and the JSON `event` field.
    pub fn kind(&self) -> &'static str {
        match self {
            TraceEvent::Start { .. } => "start",
            TraceEvent::Send { .. } => "send",
            TraceEvent::Deliver { .. } => "deliver",
            TraceEvent::Drop { .. } => "drop",
            TraceEvent::Duplicate { .. } => "duplicate",
            TraceEvent::Timer { .. } => "timer",
            TraceEvent::Crash { .. } => "crash",
            TraceEvent::Restart { .. } => "restart",
            TraceEvent::Pause { .. } => "pause",
            TraceEvent::Resume { .. } => "resume",
            TraceEvent::Partition { .. } => "partition",
            TraceEvent::Heal => "heal",
            TraceEvent::Clog { .. } => "clog",
            TraceEvent::Unclog => "unclog",
            TraceEvent::Invoke { .. } => "invoke",
            TraceEvent::Complete { .. } => "complete",
            TraceEvent::Observe { .. } => "observe",
            TraceEvent::Disk { .. } => "disk",
            TraceEvent::QuietPhase => "quiet_phase",
        }
    }

    /// The nodes this event concerns (for filtering by node).
    pub fn nodes(&self) -> [Option<NodeId>; 2] {
        match *self {
            TraceEvent::Send { from, to, .. }
            | TraceEvent::Deliver { from, to, .. }
            | TraceEvent::Drop { from, to, .. }
            | TraceEvent::Duplicate { from, to, .. }
            | TraceEvent::Clog { from, to, .. } => [Some(from), Some(to)],
            TraceEvent::Start { node, .. }
            | TraceEvent::Timer { node, .. }
            | TraceEvent::Crash { node }
            | TraceEvent::Restart { node, .. }
            | TraceEvent::Pause { node }
            | TraceEvent::Resume { node }
            | TraceEvent::Invoke { node, .. }
            | TraceEvent::Complete { node, .. }
            | TraceEvent::Observe { node, .. }
            | TraceEvent::Disk { node, .. } => [Some(node), None],
            TraceEvent::Partition { .. }
            | TraceEvent::Heal
            | TraceEvent::Unclog
            | TraceEvent::QuietPhase => [None, None],
        }
    }

    /// The compact one-line text form, without the time.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.render_into(&mut s);
        s
    }

    fn render_into(&self, s: &mut String) -> std::fmt::Result {
        match self {
            TraceEvent::Start { node, incarnation } => {
                write!(s, "{node} start (incarnation {incarnation})")
            }
            TraceEvent::Send { from, to, id, msg } => write!(s, "{from} -> {to} send {id} {msg:?}"),
            TraceEvent::Deliver { from, to, id, msg } => {
                write!(s, "{to} <- {from} deliver {id} {msg:?}")
            }
            TraceEvent::Drop {
                from,
                to,
                id,
                reason,
            } => write!(s, "{from} -> {to} drop {id} ({})", reason.as_str()),
            TraceEvent::Duplicate { from, to, id } => write!(s, "{from} -> {to} duplicate {id}"),
            TraceEvent::Timer { node, id, timer } => write!(s, "{node} timer {id} {timer:?}"),
            TraceEvent::Crash { node } => write!(s, "{node} CRASH"),
            TraceEvent::Restart { node, incarnation } => {
                write!(s, "{node} RESTART (incarnation {incarnation})")
            }
            TraceEvent::Pause { node } => write!(s, "{node} PAUSE"),
            TraceEvent::Resume { node } => write!(s, "{node} RESUME"),
            TraceEvent::Partition { shape, links } => {
                write!(s, "PARTITION {shape}:")?;
                for (from, to) in links.iter() {
                    write!(s, " {from}-x->{to}")?;
                }
                Ok(())
            }
            TraceEvent::Heal => write!(s, "HEAL"),
            TraceEvent::Clog {
                from,
                to,
                extra,
                until,
            } => write!(s, "CLOG {from} -> {to} +{extra} until {until}"),
            TraceEvent::Unclog => write!(s, "UNCLOG"),
            TraceEvent::Invoke {
                client,
                op,
                node,
                request,
            } => write!(s, "{client} invoke {op} at {node}: {request:?}"),
            TraceEvent::Complete {
                client,
                op,
                node,
                completion,
            } => match completion {
                Completion::Ok(reply) => write!(s, "{client} ok {op} from {node}: {reply:?}"),
                Completion::Fail(why) => write!(s, "{client} fail {op} from {node}: {why}"),
                Completion::Info(why) => write!(s, "{client} info {op} from {node}: {why}"),
            },
            TraceEvent::Observe { node, obs } => write!(s, "{node} observe {obs:?}"),
            TraceEvent::Disk { node, detail } => write!(s, "{node} disk {detail:?}"),
            TraceEvent::QuietPhase => write!(s, "QUIET PHASE (faults healed, nodes restarted)"),
        }
    }
}

/// A recorded event in text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// The position of the event in the run (0-based).
    pub index: u64,
    pub time: SimTime,
    pub kind: &'static str,
    pub nodes: [Option<NodeId>; 2],
    pub text: String,
}

impl std::fmt::Display for TraceLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>12} {}", self.time.to_string(), self.text)
    }
}

/// What a run records besides the hash.
#[derive(Default)]
pub struct TraceOptions {
    /// Keep every event as a [`TraceLine`].
    pub keep_lines: bool,
    /// Write every event as one JSON object per line.
    pub jsonl: Option<Box<dyn Write>>,
}

/// The trace of one run.
pub struct Trace {
    hash: u64,
    events: u64,
    scratch: Vec<u8>,
    lines: Option<Vec<TraceLine>>,
    jsonl: Option<Box<dyn Write>>,
    jsonl_error: Option<String>,
}

#[derive(Serialize)]
struct Stamped<'e, E> {
    time: SimTime,
    #[serde(flatten)]
    event: &'e E,
}

impl Trace {
    pub fn new(options: TraceOptions) -> Self {
        Trace {
            hash: 0,
            events: 0,
            scratch: Vec::with_capacity(256),
            lines: options.keep_lines.then(Vec::new),
            jsonl: options.jsonl,
            jsonl_error: None,
        }
    }

    /// Records one event at `time`.
    pub fn record<P: Process>(&mut self, time: SimTime, event: TraceEvent<'_, P>) {
        self.scratch.clear();
        self.scratch.extend_from_slice(&time.0.to_le_bytes());
        // postcard into a Vec cannot fail for these types (no maps with non-string
        // keys, no unsupported serde features); a failure would be a bug in a payload's
        // Serialize impl, which we surface loudly rather than hash inconsistently.
        if let Err(e) = postcard::to_io(&event, &mut self.scratch) {
            panic!("trace event {} is not serialisable: {e}", event.kind());
        }
        self.hash = xxh3_64_with_seed(&self.scratch, self.hash);
        if let Some(lines) = &mut self.lines {
            lines.push(TraceLine {
                index: self.events,
                time,
                kind: event.kind(),
                nodes: event.nodes(),
                text: event.render(),
            });
        }
        if let Some(out) = &mut self.jsonl
            && self.jsonl_error.is_none()
        {
            let stamped = Stamped {
                time,
                event: &event,
            };
            let result = serde_json::to_writer(&mut *out, &stamped)
                .map_err(|e| e.to_string())
                .and_then(|()| out.write_all(b"\n").map_err(|e| e.to_string()));
            if let Err(e) = result {
                self.jsonl_error = Some(e);
            }
        }
        self.events += 1;
    }

    /// The running hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The number of events recorded.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// Flushes the JSON Lines output; reports the first write error, if any.
    pub fn finish(&mut self) -> Result<(), String> {
        if let Some(e) = self.jsonl_error.take() {
            return Err(e);
        }
        if let Some(out) = &mut self.jsonl {
            out.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Takes the recorded text lines (empty unless `keep_lines` was set).
    pub fn take_lines(&mut self) -> Vec<TraceLine> {
        self.lines.take().unwrap_or_default()
    }
}

/// Formats a trace hash the way every command prints it: 16 lowercase hex digits.
pub fn format_hash(hash: u64) -> String {
    format!("{hash:016x}")
}
