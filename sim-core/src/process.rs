//! The sans-IO process model: the trait every protocol node implements, and the context
//! through which it acts.
//!
//! A handler never performs an effect itself. It *describes* effects through [`Ctx`]
//! (send, set a timer, reply to a client, emit an observation); the kernel applies them
//! after the handler returns, deciding delivery, delay and faults. A handler runs
//! atomically at one instant of simulated time.

use std::fmt::Debug;

use serde::Serialize;
use storage::vfs::VfsHandle;

use crate::ids::{NodeId, OpId, TimerId};
use crate::rng::SimRng;
use crate::time::{SimDuration, SimTime};

/// Bounds every protocol-defined payload type meets: cloneable (the network may
/// duplicate), printable (for the text trace) and serialisable (for the JSON trace and
/// the trace hash).
pub trait Payload: Clone + Debug + Serialize + 'static {}
impl<T: Clone + Debug + Serialize + 'static> Payload for T {}

/// A node of a simulated distributed system.
///
/// The kernel owns the value: a crash drops it (all volatile state is gone) and a restart
/// builds a fresh one from the node factory and calls [`Process::on_start`], which must
/// recover from the node's disk. Nothing else survives a crash.
pub trait Process: Sized + 'static {
    /// Messages between nodes.
    type Msg: Payload;
    /// The payload of a timer, handed back when it fires.
    type Timer: Payload;
    /// A client request.
    type Op: Payload;
    /// The value a successful client request returns.
    type Reply: Payload;
    /// An observation for the checkers (a commit, a vote, a delivery...).
    type Obs: Payload;

    /// Called at boot and after every restart.
    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>);
    /// A message from another node arrived.
    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, msg: Self::Msg);
    /// A timer set by this incarnation fired.
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, id: TimerId, timer: Self::Timer);
    /// A client invoked an operation on this node; answer it later with
    /// [`Ctx::reply_ok`] or [`Ctx::reply_fail`] (at most once).
    fn on_client(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, request: Self::Op);

    /// Whether this node currently believes it leads (for faults aimed at the leader,
    /// such as the `isolate_leader` partition). Protocols without leaders keep the default.
    fn is_leader(&self) -> bool {
        false
    }
}

/// How a client operation ended, in the Jepsen vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Completion<R> {
    /// It took effect, with this result.
    Ok(R),
    /// It certainly did not take effect.
    Fail(String),
    /// Unknown: it may or may not have taken effect (timeout, crash).
    Info(String),
}

/// An effect described by a handler, applied by the kernel after the handler returns.
#[derive(Debug, Clone)]
pub enum Effect<P: Process> {
    Send {
        to: NodeId,
        msg: P::Msg,
    },
    SetTimer {
        id: TimerId,
        after_local: SimDuration,
        timer: P::Timer,
    },
    CancelTimer {
        id: TimerId,
    },
    Reply {
        op: OpId,
        completion: Completion<P::Reply>,
    },
    Observe {
        obs: P::Obs,
    },
}

/// The context a handler acts through.
pub struct Ctx<'a, P: Process> {
    pub(crate) node: NodeId,
    pub(crate) node_count: usize,
    pub(crate) incarnation: u32,
    pub(crate) local_now: SimTime,
    pub(crate) rng: &'a mut SimRng,
    pub(crate) effects: &'a mut Vec<Effect<P>>,
    pub(crate) next_timer_id: &'a mut u64,
    pub(crate) disk: &'a VfsHandle,
    /// The node's disk when a crash inside an operation is armed on it: once the crash
    /// point is reached the process is dead, and nothing it does after that happens.
    pub(crate) crash_point: Option<&'a crate::disk::SimDisk>,
}

impl<'a, P: Process> Ctx<'a, P> {
    /// Records an effect, unless the process already died at an armed crash point (the
    /// effects before it stand: messages sent, replies given, observations made).
    fn emit(&mut self, effect: Effect<P>) {
        if self.crash_point.is_some_and(|d| d.crash_point_reached()) {
            return;
        }
        self.effects.push(effect);
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.node
    }

    /// The number of nodes in the cluster (ids `0..node_count`).
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// Every node except this one, in id order.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + use<P> {
        let me = self.node;
        (0..self.node_count as u32)
            .map(NodeId)
            .filter(move |&n| n != me)
    }

    /// How many times this node has been started (1 at boot, +1 per restart). Protocols
    /// must not use this in place of durable state; it exists for observations.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The node's own clock, which may be offset and drift from true time.
    pub fn now(&self) -> SimTime {
        self.local_now
    }

    /// This node's random stream (seeded; continues across restarts).
    pub fn rng(&mut self) -> &mut SimRng {
        self.rng
    }

    /// The node's disk. Engines opened in `on_start` keep a clone for the life of the
    /// process; a crash subjects unsynced writes to loss and tearing.
    pub fn disk(&self) -> VfsHandle {
        self.disk.clone()
    }

    /// Sends `msg` to `to`. Sending to oneself is delivered through the network like any
    /// other message (with the link's latency, but never cut by a partition).
    pub fn send(&mut self, to: NodeId, msg: P::Msg) {
        self.emit(Effect::Send { to, msg });
    }

    /// Sends `msg` to every other node.
    pub fn broadcast(&mut self, msg: P::Msg) {
        for to in self.peers() {
            self.emit(Effect::Send {
                to,
                msg: msg.clone(),
            });
        }
    }

    /// Sets a timer to fire after `after` has passed *on this node's clock*.
    pub fn set_timer(&mut self, after: SimDuration, timer: P::Timer) -> TimerId {
        *self.next_timer_id += 1;
        let id = TimerId(*self.next_timer_id);
        self.emit(Effect::SetTimer {
            id,
            after_local: after,
            timer,
        });
        id
    }

    /// Cancels a timer; cancelling one that already fired or was cancelled is harmless.
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.emit(Effect::CancelTimer { id });
    }

    /// Completes a client operation successfully.
    pub fn reply_ok(&mut self, op: OpId, reply: P::Reply) {
        self.emit(Effect::Reply {
            op,
            completion: Completion::Ok(reply),
        });
    }

    /// Completes a client operation as certainly not having taken effect.
    pub fn reply_fail(&mut self, op: OpId, reason: impl Into<String>) {
        self.emit(Effect::Reply {
            op,
            completion: Completion::Fail(reason.into()),
        });
    }

    /// Completes a client operation with an unknown outcome.
    pub fn reply_info(&mut self, op: OpId, reason: impl Into<String>) {
        self.emit(Effect::Reply {
            op,
            completion: Completion::Info(reason.into()),
        });
    }

    /// Emits an observation for the checkers.
    pub fn observe(&mut self, obs: P::Obs) {
        self.emit(Effect::Observe { obs });
    }

    /// Marks a rare path as reached (a sometimes-assertion): counted in the run's
    /// coverage, never in the trace, so marks change no trace hash. `name` is
    /// `<protocol>.<path>` and must be declared in the protocol's coverage points.
    /// A process that already died at an armed crash point reaches nothing.
    pub fn sometimes(&mut self, name: &'static str) {
        if self.crash_point.is_some_and(|d| d.crash_point_reached()) {
            return;
        }
        crate::coverage::hit(name);
    }
}

/// Embedding one process inside another.
///
/// A protocol may be built from components that are themselves processes: a storage
/// protocol that runs a gossip membership layer, or a Byzantine node that runs two
/// copies of one replica behind a single identity. The outer process hands a handler
/// call to the inner one through [`Ctx::nested`], which gives the inner process a
/// context on the same node (same id, clock, random stream, timer-id counter, disk and
/// armed crash point), and gets back the effects the inner handler described. The outer
/// process translates each with [`Effect::lift`] (wrapping messages and timers in its own
/// types) and emits it with [`Ctx::forward`]. Timer ids come from the node's one
/// counter, so a lifted timer keeps its id and the outer process can hand the inner one
/// the very id it set.
impl<'a, P: Process> Ctx<'a, P> {
    /// Runs `run` against an inner process's context on this node and returns its result
    /// with the effects it described, in order. Nothing is emitted for the outer process
    /// until the caller forwards the (lifted) effects.
    pub fn nested<Q: Process, R>(
        &mut self,
        run: impl FnOnce(&mut Ctx<'_, Q>) -> R,
    ) -> (R, Vec<Effect<Q>>) {
        let mut effects: Vec<Effect<Q>> = Vec::new();
        let result = {
            let mut inner = Ctx::<Q> {
                node: self.node,
                node_count: self.node_count,
                incarnation: self.incarnation,
                local_now: self.local_now,
                rng: &mut *self.rng,
                effects: &mut effects,
                next_timer_id: &mut *self.next_timer_id,
                disk: self.disk,
                crash_point: self.crash_point,
            };
            run(&mut inner)
        };
        (result, effects)
    }

    /// Emits an effect translated from a nested process (see [`Ctx::nested`]). Like every
    /// effect, it is dropped if the node already died at an armed crash point.
    pub fn forward(&mut self, effect: Effect<P>) {
        self.emit(effect);
    }
}

/// How an inner process's effect types map onto the outer process's (see [`Effect::lift`]).
pub struct Lift<'f, Q: Process, P: Process> {
    /// Wraps an inner message.
    pub msg: &'f dyn Fn(Q::Msg) -> P::Msg,
    /// Wraps an inner timer payload.
    pub timer: &'f dyn Fn(Q::Timer) -> P::Timer,
    /// Maps an inner observation, or drops it (`None`).
    pub obs: &'f dyn Fn(Q::Obs) -> Option<P::Obs>,
    /// Maps an inner client reply, or drops it (`None`): an embedded component usually
    /// serves no clients of its own.
    pub reply: &'f dyn Fn(Q::Reply) -> Option<P::Reply>,
}

impl<Q: Process> Effect<Q> {
    /// Translates an inner process's effect into the outer process's types; `None` when
    /// the mapping drops it (an observation or reply the outer process does not carry).
    /// Timer ids and destinations are kept.
    pub fn lift<P: Process>(self, lift: &Lift<'_, Q, P>) -> Option<Effect<P>> {
        Some(match self {
            Effect::Send { to, msg } => Effect::Send {
                to,
                msg: (lift.msg)(msg),
            },
            Effect::SetTimer {
                id,
                after_local,
                timer,
            } => Effect::SetTimer {
                id,
                after_local,
                timer: (lift.timer)(timer),
            },
            Effect::CancelTimer { id } => Effect::CancelTimer { id },
            Effect::Reply { op, completion } => Effect::Reply {
                op,
                completion: match completion {
                    Completion::Ok(r) => Completion::Ok((lift.reply)(r)?),
                    Completion::Fail(e) => Completion::Fail(e),
                    Completion::Info(e) => Completion::Info(e),
                },
            },
            Effect::Observe { obs } => Effect::Observe {
                obs: (lift.obs)(obs)?,
            },
        })
    }
}
