//! The reference's detector, kept as a baseline to compare false-positive rates with
//! SWIM: every round a member bumps its heartbeat counter and exchanges its *whole* table
//! with one random member, both ways (so each message is O(n)). A member whose heartbeat
//! has not risen for `suspect` rounds is suspected, after `dead` rounds declared dead,
//! and after `cleanup` rounds forgotten (a tombstone of its incarnation stays). A remote
//! entry is taken only if its (incarnation, heartbeat) is strictly higher, except that
//! DEAD is also taken at an equal one; a dead member is never revived except by a higher
//! incarnation.
//!
//! Two defects of the reference are fixed here too: the heartbeat counter is prefixed by
//! the durable incarnation, so a restarted member is not ignored (or confused with its
//! old self), and a member that hears itself declared dead raises its incarnation and
//! rejoins instead of staying dead in every other table.

use std::fmt;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use sim_core::{Ctx, NodeId, SimTime};

use super::store::Store;
use super::{Bugs, Incarnation, Msg, Node, Observation, Settings, Source, State, Timer};

/// One row of a heartbeat table, as exchanged.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub node: NodeId,
    pub incarnation: Incarnation,
    pub heartbeat: u64,
    /// `Alive` or `Dead` (suspicion is a local judgement) or `Left`.
    pub state: State,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{:?}@{}.{}",
            self.node, self.state, self.incarnation, self.heartbeat
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Row {
    incarnation: Incarnation,
    heartbeat: u64,
    state: State,
    /// When the heartbeat last rose, or the state last changed (local clock).
    since: SimTime,
}

/// The merge rule: the row a gossiped entry `e` leaves in place of `local` (`None`: the
/// table does not change). An unknown member is added only if the entry says it is
/// alive; a remote entry is taken if its (incarnation, heartbeat) is strictly higher; a
/// dead or left entry is also taken at an equal incarnation (keeping the higher
/// heartbeat); a member that is down is revived only by an alive entry with a higher
/// incarnation (or, under `gossip.stale_alive_resurrects`, an equal one).
fn merged_row(
    local: Option<&Row>,
    e: &Entry,
    now: SimTime,
    stale_alive_resurrects: bool,
) -> Option<Row> {
    let Some(r) = local else {
        return (e.state == State::Alive).then_some(Row {
            incarnation: e.incarnation,
            heartbeat: e.heartbeat,
            state: State::Alive,
            since: now,
        });
    };
    let remote = (e.incarnation, e.heartbeat);
    let ours = (r.incarnation, r.heartbeat);
    if r.state.is_down() {
        // Never revived, except by a rejoin at a higher incarnation.
        let revive = e.incarnation > r.incarnation
            || (stale_alive_resurrects && e.incarnation == r.incarnation);
        (revive && e.state == State::Alive).then_some(Row {
            incarnation: e.incarnation,
            heartbeat: e.heartbeat,
            state: State::Alive,
            since: now,
        })
    } else if remote > ours {
        Some(Row {
            incarnation: e.incarnation,
            heartbeat: e.heartbeat,
            state: e.state,
            since: now,
        })
    } else if e.state.is_down() && e.incarnation == r.incarnation {
        Some(Row {
            incarnation: e.incarnation,
            heartbeat: r.heartbeat.max(e.heartbeat),
            state: e.state,
            since: now,
        })
    } else {
        None
    }
}

/// A baseline member.
pub struct Member {
    settings: Settings,
    bugs: Bugs,
    me: NodeId,
    store: Option<Store>,
    incarnation: Incarnation,
    heartbeat: u64,
    left: bool,
    table: Vec<Option<Row>>,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("gossip::baseline::Member")
            .field("incarnation", &self.incarnation)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

impl Member {
    pub fn new(settings: Settings, bugs: Bugs) -> Self {
        Member {
            settings,
            bugs,
            me: NodeId(0),
            store: None,
            incarnation: 0,
            heartbeat: 0,
            left: false,
            table: Vec::new(),
        }
    }

    fn active(&self) -> bool {
        self.store.is_some() && !self.left
    }

    pub(super) fn on_start(&mut self, ctx: &mut Ctx<'_, Node>) {
        self.me = ctx.id();
        self.table = vec![None; ctx.node_count()];
        let Some((store, incarnation)) = super::start_incarnation(&self.settings, self.bugs, ctx)
        else {
            return;
        };
        self.store = Some(store);
        self.incarnation = incarnation;
        self.table[self.me.index()] = Some(Row {
            incarnation,
            heartbeat: 0,
            state: State::Alive,
            since: ctx.now(),
        });
        for seed in self.settings.config.seeds.clone() {
            if seed != self.me {
                self.exchange(ctx, seed, true);
            }
        }
        let period = self.settings.config.probe_interval;
        let first = sim_core::SimDuration(ctx.rng().random_range(0..period.0) + 1);
        ctx.set_timer(first, Timer::Round);
        if ctx.incarnation() == 1
            && let Some(at) = self.settings.leave_at
        {
            ctx.set_timer(at.saturating_since(ctx.now()), Timer::Leave);
        }
    }

    fn entries(&self) -> Vec<Entry> {
        self.table
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let r = r.as_ref()?;
                let state = match r.state {
                    State::Suspect => State::Alive,
                    State::Removed => return None,
                    s => s,
                };
                Some(Entry {
                    node: NodeId(i as u32),
                    incarnation: r.incarnation,
                    heartbeat: r.heartbeat,
                    state,
                })
            })
            .collect()
    }

    fn exchange(&mut self, ctx: &mut Ctx<'_, Node>, to: NodeId, reply: bool) {
        let entries = self.entries();
        ctx.send(to, Msg::Heartbeats { entries, reply });
    }

    pub(super) fn on_message(&mut self, ctx: &mut Ctx<'_, Node>, from: NodeId, msg: Msg) {
        if !self.active() {
            return;
        }
        match msg {
            Msg::Heartbeats { entries, reply } => {
                for e in entries {
                    self.merge(ctx, e);
                    if !self.active() {
                        return;
                    }
                }
                if reply {
                    self.exchange(ctx, from, false);
                }
            }
            Msg::Notify { update } => self.merge(
                ctx,
                Entry {
                    node: update.node,
                    incarnation: update.incarnation,
                    heartbeat: u64::MAX,
                    state: State::Left,
                },
            ),
            _ => {}
        }
    }

    fn observe(ctx: &mut Ctx<'_, Node>, member: NodeId, row: &Row, source: Source) {
        ctx.observe(Observation::View {
            member,
            state: row.state,
            incarnation: row.incarnation,
            source,
        });
    }

    fn merge(&mut self, ctx: &mut Ctx<'_, Node>, e: Entry) {
        if e.node.index() >= self.table.len() {
            return;
        }
        if e.node == self.me {
            if e.state != State::Alive && e.incarnation >= self.incarnation {
                self.rejoin(ctx, e.incarnation);
            }
            return;
        }
        let now = ctx.now();
        let slot = &mut self.table[e.node.index()];
        let new = merged_row(slot.as_ref(), &e, now, self.bugs.stale_alive_resurrects);
        if let Some(row) = new {
            let changed = slot
                .as_ref()
                .is_none_or(|r| r.state != row.state || r.incarnation != row.incarnation);
            *slot = Some(row);
            if changed {
                Self::observe(ctx, e.node, &row, Source::Gossip);
            }
        }
    }

    fn rejoin(&mut self, ctx: &mut Ctx<'_, Node>, accused: Incarnation) {
        let incarnation = accused.max(self.incarnation) + 1;
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if let Err(e) = store.set_incarnation(incarnation) {
            ctx.observe(Observation::Stopped {
                what: "persist incarnation".into(),
                error: e.to_string(),
            });
            self.store = None;
            return;
        }
        self.incarnation = incarnation;
        self.heartbeat = 0;
        ctx.observe(Observation::Incarnation {
            incarnation,
            refuted: true,
        });
    }

    pub(super) fn on_timer(&mut self, ctx: &mut Ctx<'_, Node>, timer: Timer) {
        if !self.active() {
            return;
        }
        match timer {
            Timer::Round => self.round(ctx),
            Timer::Leave => {
                let update = super::Update {
                    node: self.me,
                    state: State::Left,
                    incarnation: self.incarnation,
                    by: self.me,
                };
                for (i, r) in self.table.iter().enumerate() {
                    if i != self.me.index() && matches!(r, Some(r) if !r.state.is_down()) {
                        ctx.send(NodeId(i as u32), Msg::Notify { update });
                    }
                }
                ctx.observe(Observation::Left {
                    incarnation: self.incarnation,
                });
                self.left = true;
            }
            _ => {}
        }
    }

    fn round(&mut self, ctx: &mut Ctx<'_, Node>) {
        let config = self.settings.config.clone();
        let period = config.probe_interval;
        ctx.set_timer(period, Timer::Round);
        let now = ctx.now();
        self.heartbeat += 1;
        self.table[self.me.index()] = Some(Row {
            incarnation: self.incarnation,
            heartbeat: self.heartbeat,
            state: State::Alive,
            since: now,
        });
        let (suspect, dead, cleanup) = config.baseline_rounds;
        let mut peers = Vec::new();
        for i in 0..self.table.len() {
            if i == self.me.index() {
                continue;
            }
            let Some(r) = self.table[i].as_mut() else {
                continue;
            };
            let rounds = now.saturating_since(r.since).0 / period.0;
            let next = match r.state {
                State::Alive if rounds >= dead => Some(State::Dead),
                State::Alive if rounds >= suspect => Some(State::Suspect),
                State::Suspect if rounds >= dead => Some(State::Dead),
                State::Dead | State::Left if rounds >= cleanup - dead => Some(State::Removed),
                _ => None,
            };
            if let Some(state) = next {
                r.state = state;
                if state.is_down() {
                    r.since = now;
                }
                let row = *r;
                Self::observe(ctx, NodeId(i as u32), &row, Source::Local);
            }
            if matches!(self.table[i], Some(r) if !r.state.is_down()) {
                peers.push(NodeId(i as u32));
            }
        }
        let target = if peers.is_empty() {
            let seeds: Vec<NodeId> = config
                .seeds
                .iter()
                .copied()
                .filter(|&s| s != self.me)
                .collect();
            (!seeds.is_empty()).then(|| seeds[ctx.rng().random_range(0..seeds.len())])
        } else {
            Some(peers[ctx.rng().random_range(0..peers.len())])
        };
        if let Some(t) = target {
            self.exchange(ctx, t, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SimTime = SimTime(0);
    const T1: SimTime = SimTime(1_000);

    fn row(incarnation: Incarnation, heartbeat: u64, state: State) -> Row {
        Row {
            incarnation,
            heartbeat,
            state,
            since: T0,
        }
    }

    fn entry(incarnation: Incarnation, heartbeat: u64, state: State) -> Entry {
        Entry {
            node: NodeId(1),
            incarnation,
            heartbeat,
            state,
        }
    }

    /// (incarnation, heartbeat, state) of the merged row, if any.
    fn merge(local: Option<Row>, e: Entry, resurrect: bool) -> Option<(Incarnation, u64, State)> {
        merged_row(local.as_ref(), &e, T1, resurrect).map(|r| {
            assert_eq!(r.since, T1, "a changed row restarts its clock");
            (r.incarnation, r.heartbeat, r.state)
        })
    }

    #[test]
    fn an_unknown_member_is_added_only_when_alive() {
        assert_eq!(
            merge(None, entry(0, 5, State::Alive), false),
            Some((0, 5, State::Alive))
        );
        for state in [State::Dead, State::Left, State::Suspect] {
            assert_eq!(merge(None, entry(0, 5, state), false), None, "{state:?}");
        }
    }

    #[test]
    fn only_a_strictly_higher_heartbeat_or_incarnation_is_taken() {
        let local = row(1, 10, State::Alive);
        assert_eq!(merge(Some(local), entry(1, 10, State::Alive), false), None);
        assert_eq!(merge(Some(local), entry(1, 9, State::Alive), false), None);
        assert_eq!(merge(Some(local), entry(0, 99, State::Alive), false), None);
        assert_eq!(
            merge(Some(local), entry(1, 11, State::Alive), false),
            Some((1, 11, State::Alive))
        );
        assert_eq!(
            merge(Some(local), entry(2, 0, State::Alive), false),
            Some((2, 0, State::Alive))
        );
    }

    #[test]
    fn a_suspected_member_is_alive_again_on_a_higher_heartbeat() {
        let local = row(3, 7, State::Suspect);
        assert_eq!(merge(Some(local), entry(3, 7, State::Alive), false), None);
        assert_eq!(
            merge(Some(local), entry(3, 8, State::Alive), false),
            Some((3, 8, State::Alive))
        );
    }

    #[test]
    fn dead_is_taken_at_an_equal_incarnation_whatever_the_heartbeat() {
        let local = row(2, 40, State::Alive);
        assert_eq!(
            merge(Some(local), entry(2, 3, State::Dead), false),
            Some((2, 40, State::Dead)),
            "the higher heartbeat is kept"
        );
        assert_eq!(
            merge(Some(local), entry(2, 3, State::Left), false),
            Some((2, 40, State::Left))
        );
        assert_eq!(
            merge(Some(local), entry(1, 90, State::Dead), false),
            None,
            "an older life's death does not kill the new one"
        );
    }

    #[test]
    fn a_dead_member_is_revived_only_by_a_higher_incarnation() {
        let local = row(4, 12, State::Dead);
        assert_eq!(merge(Some(local), entry(4, 99, State::Alive), false), None);
        assert_eq!(merge(Some(local), entry(5, 0, State::Dead), false), None);
        assert_eq!(
            merge(Some(local), entry(5, 0, State::Alive), false),
            Some((5, 0, State::Alive))
        );
        // The reference's defect, behind its flag: a stale alive entry resurrects.
        assert_eq!(
            merge(Some(local), entry(4, 99, State::Alive), true),
            Some((4, 99, State::Alive))
        );
        let removed = row(4, 12, State::Removed);
        assert_eq!(
            merge(Some(removed), entry(4, 13, State::Alive), false),
            None
        );
    }
}
