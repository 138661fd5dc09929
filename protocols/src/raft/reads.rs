//! Reads that bypass the log (§6.4 of Ongaro's thesis): ReadIndex, and the leader lease.
//!
//! A leader answers a read once (1) it has committed an entry of its own term, so its
//! commit index is at least that of every earlier leader — the read index — (2) a
//! majority acknowledged a heartbeat round it sent after the read arrived, or a lease
//! covers the moment of arrival, and (3) its state machine has applied the read index.
//! A follower asks the leader for a read index (`ReadIndex`), then answers from its own
//! state machine once it has applied that index.

use sim_core::{Ctx, NodeId, OpId};

use super::log::Index;
use super::{Awaiting, Leadership, Msg, Node, PendingRead, ReadMode, Role};

impl Leadership {
    /// The highest round acknowledged by a majority (this leader counts with its latest
    /// round).
    fn quorum_round(&self, me: NodeId, quorum: usize) -> u64 {
        let mut rounds: Vec<u64> = self
            .acked
            .iter()
            .enumerate()
            .map(|(i, &r)| if i == me.index() { self.round } else { r })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds.get(quorum - 1).copied().unwrap_or(0)
    }
}

impl Node {
    /// A read at this leader, for its own client (`request` is `Some`) or for a
    /// follower's (`origin`).
    pub(super) fn register_read(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        origin: NodeId,
        op: OpId,
        request: Option<sim_core::linearizability::model::KvOp>,
    ) {
        let now = ctx.now();
        let lease_mode = self.settings.features.reads == ReadMode::Lease;
        let Some(d) = self.durable.as_ref() else {
            return;
        };
        let term = d.log.term();
        let read_index = (d.log.term_at(self.commit) == Some(term)).then_some(self.commit);
        let Some(l) = self.leadership() else {
            return;
        };
        let leased =
            lease_mode && !l.lease_revoked && l.lease_until.is_some_and(|until| now < until);
        l.reads.push(PendingRead {
            origin,
            op,
            request,
            index: read_index,
            round: if leased { 0 } else { l.round + 1 },
        });
        if leased {
            self.serve_reads(ctx);
        } else {
            // A round that starts after the read arrived.
            self.replicate_all(ctx);
        }
    }

    /// Extends the lease from the latest round a majority acknowledged.
    pub(super) fn update_lease(&mut self, ctx: &mut Ctx<'_, Self>) {
        if self.settings.features.reads != ReadMode::Lease {
            return;
        }
        let me = ctx.id();
        let quorum = Self::quorum(ctx);
        let duration = self.settings.lease_duration();
        let Some(l) = self.leadership() else {
            return;
        };
        if l.lease_revoked {
            return;
        }
        let confirmed = l.quorum_round(me, quorum);
        if let Some(&sent) = l.round_sent.get(&confirmed) {
            let until = sent + duration;
            if l.lease_until.is_none_or(|u| u < until) {
                l.lease_until = Some(until);
            }
        }
        // Older rounds can no longer extend the lease.
        while l
            .round_sent
            .first_key_value()
            .is_some_and(|(&r, _)| r < confirmed)
        {
            l.round_sent.pop_first();
        }
    }

    /// Answers every read that is confirmed and whose index the state machine reached;
    /// a follower answers the reads the leader confirmed to it.
    pub(super) fn serve_reads(&mut self, ctx: &mut Ctx<'_, Self>) {
        let me = ctx.id();
        let quorum = Self::quorum(ctx);
        let Some(d) = self.durable.as_ref() else {
            return;
        };
        let applied = d.sm.applied();
        let term = d.log.term();
        let commit_in_term = d.log.term_at(self.commit) == Some(term);
        if let Role::Leader(l) = &mut self.role {
            let confirmed = l.quorum_round(me, quorum);
            let mut i = 0;
            while i < l.reads.len() {
                let read = &mut l.reads[i];
                if read.index.is_none() && commit_in_term {
                    read.index = Some(self.commit);
                }
                let ready = read.round <= confirmed
                    && read
                        .index
                        .is_some_and(|index| read.request.is_none() || applied >= index);
                if !ready {
                    i += 1;
                    continue;
                }
                let read = l.reads.remove(i);
                let index = read.index.unwrap_or(0);
                match read.request {
                    Some(request) => match d.sm.read(&request) {
                        Ok(result) => ctx.reply_ok(read.op, result),
                        Err(e) => ctx.reply_info(read.op, e.to_string()),
                    },
                    None => ctx.send(read.origin, Msg::ReadIndexOk { op: read.op, index }),
                }
            }
        }
        let ready: Vec<OpId> = self
            .awaiting
            .iter()
            .filter(|(_, a)| matches!(a, Awaiting::Ready { index, .. } if *index <= applied))
            .map(|(&op, _)| op)
            .collect();
        for op in ready {
            if let Some(Awaiting::Ready { request, .. }) = self.awaiting.remove(&op) {
                match d.sm.read(&request) {
                    Ok(result) => ctx.reply_ok(op, result),
                    Err(e) => ctx.reply_info(op, e.to_string()),
                }
            }
        }
    }

    /// A leader that loses its leadership fails its own clients' pending reads (a read
    /// has no effect, so `fail` is exact) and refuses its followers'.
    pub(super) fn abandon_reads(&mut self, ctx: &mut Ctx<'_, Self>, reason: &str) {
        let Some(l) = self.leadership() else {
            return;
        };
        let reads = std::mem::take(&mut l.reads);
        for read in reads {
            if read.request.is_some() {
                ctx.reply_fail(read.op, reason);
            } else {
                ctx.send(
                    read.origin,
                    Msg::Refused {
                        op: read.op,
                        reason: reason.to_string(),
                    },
                );
            }
        }
    }

    pub(super) fn on_read_index(&mut self, ctx: &mut Ctx<'_, Self>, from: NodeId, op: OpId) {
        match &self.role {
            Role::Leader(l) if l.transfer.is_none() => self.register_read(ctx, from, op, None),
            _ => ctx.send(
                from,
                Msg::Refused {
                    op,
                    reason: self.refusal().into(),
                },
            ),
        }
    }

    pub(super) fn on_read_index_ok(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, index: Index) {
        if let Some(Awaiting::ReadIndex { request }) = self.awaiting.remove(&op) {
            self.awaiting.insert(op, Awaiting::Ready { request, index });
            self.serve_reads(ctx);
        }
    }

    pub(super) fn on_refused(&mut self, ctx: &mut Ctx<'_, Self>, op: OpId, reason: String) {
        match self.awaiting.remove(&op) {
            // Not `fail`: the network may still hold a duplicate of the forwarded
            // request, which a node that becomes leader later would propose. Only a
            // request that never left this node certainly did not take effect.
            Some(Awaiting::Proposed) => {
                ctx.reply_info(
                    op,
                    format!("{reason}; a delayed copy may still be proposed"),
                );
            }
            // A read takes no effect: failing it is exact.
            Some(Awaiting::ReadIndex { .. }) => ctx.reply_fail(op, reason),
            Some(ready @ Awaiting::Ready { .. }) => {
                // Already confirmed; a refusal of a duplicate request changes nothing.
                self.awaiting.insert(op, ready);
            }
            None => {}
        }
    }
}
