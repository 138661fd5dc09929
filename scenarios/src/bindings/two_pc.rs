//! Two-phase commit, bound to scenario files.

use protocols::two_pc::{
    BUG_FLAGS, Bank, Bugs, Node, Observation, Outcome, Request, Settings, Timing, checker,
};
use rand::RngExt;
use serde::Deserialize;
use sim_core::rng::SimRng;
use sim_core::{Checker, ClientId, Completion, NodeId, RunOutput};
use storage::kv::EngineSyncPolicy;
use toml::Spanned;

use crate::duration::Duration;
use crate::engines;
use crate::error::ScenarioError;
use crate::registry::{CheckerInfo, ProtocolEntry, WorkloadKind};
use crate::runner::{Metric, RunOptions, RunReport, run_protocol_measured};
use crate::scenario::Scenario;
use crate::schema::Probability;

pub static ENTRY: ProtocolEntry = ProtocolEntry {
    name: "two_pc",
    description: "two-phase commit across shards: presumed abort, timeouts, cooperative termination, read-only optimisation, a bank workload",
    checkers: &[
        CheckerInfo {
            name: checker::ATOMIC_COMMITMENT,
            properties: "AC1 agreement, AC2 irrevocability (across restarts), AC3 commit only if all voted yes, AC4 no abort without failure (failure-free runs), AC5 every participant decides in the quiet phase, strict two-phase locking (every lock released by the end of the quiet phase)",
        },
        CheckerInfo {
            name: checker::BANK,
            properties: "bank invariant (every read-all sees the same total, no account overdrawn), no transaction's writes visible in part, no lost update",
        },
    ],
    bug_flags: BUG_FLAGS,
    workload: WorkloadKind::Bank,
    uses_engines: true,
    check_node_count: |n| {
        if n >= 1 {
            Ok(())
        } else {
            Err("two_pc needs at least 1 node".into())
        }
    },
    check_settings: |file, text| settings(file, text).map(|_| ()),
    run,
};

/// `[settings]` for `protocol = "two_pc"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    accounts: Option<Spanned<u32>>,
    initial_balance: Option<Spanned<i64>>,
    read_all_fraction: Option<Probability>,
    max_transfer: Option<Spanned<i64>>,
    vote_timeout: Option<Duration>,
    active_timeout: Option<Duration>,
    decision_timeout: Option<Duration>,
    resend_interval: Option<Duration>,
    resend_max: Option<Duration>,
    decision_send_delay: Option<Duration>,
}

#[derive(Deserialize)]
struct WithSettings {
    #[serde(default)]
    settings: Option<Spanned<SettingsFile>>,
}

/// The 2PC settings of a scenario, minus the engine (chosen per node).
#[derive(Debug, Clone)]
struct TwoPcSettings {
    timing: Timing,
    bank: Bank,
    read_all_fraction: f64,
    max_transfer: i64,
}

fn settings(file: &str, text: &str) -> Result<TwoPcSettings, ScenarioError> {
    let parsed: WithSettings =
        toml::from_str(text).map_err(|e| ScenarioError::from_toml(file, text, &e))?;
    let (span, raw) = match parsed.settings {
        Some(s) => (Some(s.span()), s.into_inner()),
        None => (None, SettingsFile::default()),
    };
    let error = |span, message: String| ScenarioError::at(file, text, span, message);
    let mut bank = Bank::default();
    if let Some(a) = raw.accounts {
        if !(2..=10_000).contains(a.get_ref()) {
            return Err(error(
                Some(a.span()),
                format!(
                    "{} accounts is out of range; expected 2 to 10000",
                    a.get_ref()
                ),
            ));
        }
        bank.accounts = *a.get_ref();
    }
    if let Some(b) = raw.initial_balance {
        if !(0..=1_000_000_000).contains(b.get_ref()) {
            return Err(error(
                Some(b.span()),
                format!(
                    "initial_balance {} is out of range; expected 0 to 1000000000",
                    b.get_ref()
                ),
            ));
        }
        bank.initial_balance = *b.get_ref();
    }
    let max_transfer = match raw.max_transfer {
        Some(m) if !(1..=1_000_000_000).contains(m.get_ref()) => {
            return Err(error(
                Some(m.span()),
                format!(
                    "max_transfer {} is out of range; expected 1 to 1000000000",
                    m.get_ref()
                ),
            ));
        }
        Some(m) => *m.get_ref(),
        None => 20,
    };
    let mut timing = Timing::default();
    for (field, value) in [
        (&mut timing.vote_timeout, raw.vote_timeout),
        (&mut timing.active_timeout, raw.active_timeout),
        (&mut timing.decision_timeout, raw.decision_timeout),
        (&mut timing.resend_interval, raw.resend_interval),
        (&mut timing.resend_max, raw.resend_max),
        (&mut timing.decision_send_delay, raw.decision_send_delay),
    ] {
        if let Some(d) = value {
            *field = d.0;
        }
    }
    timing
        .validate()
        .map_err(|message| error(span.clone(), format!("[settings]: {message}")))?;
    Ok(TwoPcSettings {
        timing,
        bank,
        read_all_fraction: raw.read_all_fraction.map_or(0.2, |p| p.0),
        max_transfer,
    })
}

fn ok_outcomes(run: &RunOutput<Node>) -> (u64, u64) {
    let mut committed = 0;
    let mut aborted = 0;
    for op in &run.history.operations {
        match &op.completion {
            Some((_, Completion::Ok(Outcome::Committed { .. }))) => committed += 1,
            Some((_, Completion::Ok(Outcome::Aborted { .. }))) => aborted += 1,
            _ => {}
        }
    }
    (committed, aborted)
}

/// The run's measurements: throughput, abort rate, lock hold times, blocking.
fn measure(run: &RunOutput<Node>) -> Vec<Metric> {
    let (committed, aborted) = ok_outcomes(run);
    let load_us = run.quiet_from.as_micros().max(1);
    // Lock hold times: from `Locked` to `Unlocked` in one incarnation of a node.
    let mut open = std::collections::BTreeMap::new();
    let mut holds: Vec<u64> = Vec::new();
    let mut conflicts = 0u64;
    let mut blocked = std::collections::BTreeSet::new();
    let mut sent = std::collections::BTreeSet::new();
    for o in &run.observations {
        match &o.obs {
            Observation::Locked { txn, .. } => {
                open.insert((o.node, o.incarnation, *txn), o.time);
            }
            Observation::Unlocked { txn } => {
                if let Some(t) = open.remove(&(o.node, o.incarnation, *txn)) {
                    holds.push(o.time.saturating_since(t).as_micros());
                }
            }
            Observation::Conflict { .. } => conflicts += 1,
            Observation::InDoubt { txn } => {
                blocked.insert(*txn);
            }
            Observation::DecisionSent { txn } => {
                sent.insert((o.node, o.incarnation, *txn));
            }
            _ => {}
        }
    }
    // Commit records forced whose decision was never sent by that incarnation: the
    // coordinator crashed between its decision record and the first send.
    let window_crashes = run
        .observations
        .iter()
        .filter(|o| match &o.obs {
            Observation::CoordinatorDecided {
                txn,
                commit: true,
                writers,
            } => {
                !writers.is_empty()
                    && !sent.contains(&(o.node, o.incarnation, *txn))
                    && run.final_incarnation[o.node.index()] > o.incarnation
            }
            _ => false,
        })
        .count() as u64;
    let decided = committed + aborted;
    vec![
        Metric {
            name: "committed",
            value: committed,
        },
        Metric {
            name: "aborted",
            value: aborted,
        },
        Metric {
            name: "commits_per_sim_s",
            value: committed * 1_000_000 / load_us,
        },
        Metric {
            name: "abort_rate_permille",
            value: (aborted * 1000).checked_div(decided).unwrap_or(0),
        },
        Metric {
            name: "lock_hold_mean_us",
            value: holds
                .iter()
                .sum::<u64>()
                .checked_div(holds.len() as u64)
                .unwrap_or(0),
        },
        Metric {
            name: "lock_hold_max_us",
            value: holds.iter().copied().max().unwrap_or(0),
        },
        Metric {
            name: "lock_conflicts",
            value: conflicts,
        },
        Metric {
            name: "blocked_in_doubt",
            value: blocked.len() as u64,
        },
        Metric {
            name: "crashed_in_decision_window",
            value: window_crashes,
        },
        Metric {
            name: "failure_free",
            value: u64::from(checker::failure_free(run)),
        },
    ]
}

fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, ScenarioError> {
    let s = settings(&scenario.file, &scenario.text)?;
    let bugs = Bugs::from_names(options.bug_names(scenario))
        .map_err(|e| ScenarioError::Options(e.to_string()))?;
    let mut per_node = Vec::new();
    for name in &scenario.engines {
        // The protocol syncs explicitly before it reveals anything, so its engines do
        // not sync every write: an unsynced write can be lost in a crash.
        let engine = engines::opener_tuned(
            name,
            EngineSyncPolicy::Explicit,
            options.engine_bugs(scenario),
            &scenario.engine_tuning,
        )
        .ok_or_else(|| ScenarioError::Options(format!("unknown storage engine {name}")))?;
        per_node.push(Settings {
            timing: s.timing.clone(),
            bank: s.bank,
            engine,
        });
    }
    let factory = move |node: NodeId| Node::new(node, per_node[node.index()].clone(), bugs);
    let (accounts, read_all, max_transfer) = (s.bank.accounts, s.read_all_fraction, s.max_transfer);
    let workload = move |_client: ClientId, rng: &mut SimRng| {
        if rng.random_bool(read_all) {
            Request::ReadAll
        } else {
            let from = rng.random_range(0..accounts);
            let to = (from + rng.random_range(1..accounts)) % accounts;
            Request::Transfer {
                from,
                to,
                amount: rng.random_range(1..=max_transfer),
            }
        }
    };
    let checkers: Vec<Box<dyn Checker<Node>>> = vec![
        Box::new(checker::AtomicCommitmentChecker),
        Box::new(checker::BankChecker { bank: s.bank }),
    ];
    run_protocol_measured(
        scenario,
        options,
        factory,
        Box::new(workload),
        checkers,
        None,
        Some(Box::new(measure)),
    )
}

#[cfg(test)]
mod tests {
    use crate::Scenario;

    fn parse(settings: &str) -> Result<Scenario, String> {
        let text = format!(
            "protocol = \"two_pc\"\nnodes = 3\nduration = \"2s\"\n\n[settings]\n{settings}\n"
        );
        Scenario::parse("t.toml", &text, "t").map_err(|e| e.to_string())
    }

    #[test]
    fn good_settings_load() {
        parse("accounts = 6\ninitial_balance = 50\nvote_timeout = \"300ms\"\ndecision_send_delay = \"20ms\"").unwrap();
        parse("").unwrap();
    }

    #[test]
    fn bad_settings_are_errors_with_a_location() {
        assert_eq!(
            parse("accounts = 1").unwrap_err(),
            "t.toml:6:12: 1 accounts is out of range; expected 2 to 10000"
        );
        let e = parse("resend_interval = \"250ms\"").unwrap_err();
        assert!(
            e.contains("resend_interval must be shorter than vote_timeout"),
            "{e}"
        );
        let e = parse("coordinator = 0").unwrap_err();
        assert!(
            e.starts_with("t.toml:6:1:") && e.contains("unknown field"),
            "{e}"
        );
    }

    #[test]
    fn key_value_workload_fields_are_errors() {
        let text = "protocol = \"two_pc\"\nnodes = 3\nduration = \"1s\"\n[workload]\nkeys = 4\n";
        let e = Scenario::parse("w.toml", text, "w")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("w.toml:5:"), "{e}");
    }
}
