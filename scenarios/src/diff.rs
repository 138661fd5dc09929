//! Where two runs part: event-by-event comparison of two traces.
//!
//! Events are compared by their JSON Lines form (`docs/trace.md`: time and the whole
//! event, payloads included), which is what the trace hash covers, so two runs with
//! equal traces have equal hashes and the first differing event is the first place a
//! determinism break, another seed or another bug flag made a difference.
//!
//! A side is a fresh run of a scenario (its events carry the transcript's text) or a
//! recorded trace file (`run --trace`, `replay --trace`), whose events are shown as
//! their JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::ScenarioError;
use crate::runner::{RunOptions, RunReport, SharedBuffer, run};
use crate::scenario::Scenario;

/// One event of a side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffEvent {
    /// Position in the run (0-based).
    pub index: usize,
    /// Simulated time in microseconds.
    pub time: u64,
    /// The event kind (`send`, `deliver`, `crash`, ...).
    pub kind: String,
    /// What is shown: the transcript line of a fresh run, the JSON of a recorded one.
    pub text: String,
    /// What is compared: the event's JSON line.
    #[serde(skip)]
    pub key: String,
}

/// One of the two runs compared.
#[derive(Debug, Clone)]
pub struct Side {
    /// How the side was made (`seed 3 --bug raft.x`, `trace run.jsonl`).
    pub label: String,
    pub events: Vec<DiffEvent>,
    /// The trace hash, when the side is a fresh run.
    pub trace_hash: Option<u64>,
    /// The first violation per checker, as printed, when the side is a fresh run.
    pub verdict: Option<Vec<String>>,
}

/// Runs `scenario` for `seed` with `bugs` and captures every event.
pub fn fresh(
    scenario: &Scenario,
    seed: u64,
    bugs: &[String],
) -> Result<(Side, RunReport), ScenarioError> {
    let buffer = SharedBuffer::default();
    let options = RunOptions {
        seed,
        bugs: bugs.to_vec(),
        keep_trace_lines: true,
        jsonl: Some(Box::new(buffer.clone())),
        keep_history: false,
    };
    let report = run(scenario, options)?;
    if let Some(e) = &report.trace_error {
        return Err(ScenarioError::Options(format!(
            "capturing the trace failed: {e}"
        )));
    }
    let bytes = buffer.take()?;
    let text = String::from_utf8(bytes)
        .map_err(|e| ScenarioError::Options(format!("trace is not UTF-8: {e}")))?;
    let keys: Vec<&str> = text.lines().collect();
    if keys.len() != report.trace_lines.len() {
        return Err(ScenarioError::Options(format!(
            "trace has {} JSON lines but {} events",
            keys.len(),
            report.trace_lines.len()
        )));
    }
    let events = report
        .trace_lines
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(index, (line, key))| DiffEvent {
            index,
            time: line.time.0,
            kind: line.kind.to_string(),
            text: line.to_string(),
            key: key.to_string(),
        })
        .collect();
    let mut label = format!("seed {seed}");
    for b in bugs {
        label.push_str(&format!(" --bug {b}"));
    }
    let side = Side {
        label,
        events,
        trace_hash: Some(report.trace_hash),
        verdict: Some(report.violations.iter().map(ToString::to_string).collect()),
    };
    Ok((side, report))
}

/// Reads a recorded JSON Lines trace (`label` names it in the output).
pub fn recorded(label: &str, text: &str) -> Result<Side, String> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{label}:{}: not a trace event ({e})", i + 1))?;
        let time = value["time"]
            .as_u64()
            .ok_or_else(|| format!("{label}:{}: a trace event has a numeric `time`", i + 1))?;
        let kind = value["event"]
            .as_str()
            .ok_or_else(|| format!("{label}:{}: a trace event has an `event` kind", i + 1))?
            .to_string();
        events.push(DiffEvent {
            index: events.len(),
            time,
            kind,
            text: format!("{:>12} {line}", sim_core::SimTime(time).to_string()),
            key: line.to_string(),
        });
    }
    Ok(Side {
        label: format!("trace {label}"),
        events,
        trace_hash: None,
        verdict: None,
    })
}

/// Where two sides part.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    /// The index of the first event that differs (or that one side lacks).
    pub index: usize,
    /// The shared events just before it.
    pub context: Vec<DiffEvent>,
    /// The first differing event of each side (`None`: that side ended).
    pub a: Option<DiffEvent>,
    pub b: Option<DiffEvent>,
    /// Events from the divergence on, per side.
    pub rest_a: usize,
    pub rest_b: usize,
    /// From the divergence on: per event kind, the count on each side.
    pub rest_by_kind: BTreeMap<String, (usize, usize)>,
}

/// The first event where `a` and `b` differ, with `context` shared events before it;
/// `None` if the traces are equal.
pub fn first_divergence(a: &Side, b: &Side, context: usize) -> Option<Divergence> {
    let index = a
        .events
        .iter()
        .zip(&b.events)
        .position(|(x, y)| x.key != y.key)
        .or_else(|| {
            (a.events.len() != b.events.len()).then(|| a.events.len().min(b.events.len()))
        })?;
    let mut rest_by_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for e in &a.events[index..] {
        rest_by_kind.entry(e.kind.clone()).or_default().0 += 1;
    }
    for e in &b.events[index..] {
        rest_by_kind.entry(e.kind.clone()).or_default().1 += 1;
    }
    Some(Divergence {
        index,
        context: a.events[index.saturating_sub(context)..index].to_vec(),
        a: a.events.get(index).cloned(),
        b: b.events.get(index).cloned(),
        rest_a: a.events.len() - index,
        rest_b: b.events.len() - index,
        rest_by_kind,
    })
}

/// The comparison as text: the first divergent event with context, then the rest
/// summarised, then each side's verdict.
pub fn render(a: &Side, b: &Side, divergence: Option<&Divergence>) -> String {
    let mut out = String::new();
    out.push_str(&format!("A: {} ({} events)\n", a.label, a.events.len()));
    out.push_str(&format!("B: {} ({} events)\n", b.label, b.events.len()));
    match divergence {
        None => out.push_str("the traces are identical: every event equal\n"),
        Some(d) => {
            out.push_str(&format!(
                "first divergence at event #{} ({} shared events before it)\n",
                d.index, d.index
            ));
            if !d.context.is_empty() {
                out.push_str("  shared:\n");
                for e in &d.context {
                    out.push_str(&format!("    #{:<6} {}\n", e.index, e.text));
                }
            }
            let show = |side: &str, e: &Option<DiffEvent>| match e {
                Some(e) => format!("  {side}: #{:<6} {}\n", e.index, e.text),
                None => format!("  {side}: (the run ended)\n"),
            };
            out.push_str(&show("A", &d.a));
            out.push_str(&show("B", &d.b));
            out.push_str(&format!(
                "after it: A has {} events, B has {}; by kind (A/B): {}\n",
                d.rest_a,
                d.rest_b,
                d.rest_by_kind
                    .iter()
                    .map(|(k, (x, y))| format!("{k} {x}/{y}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for (name, side) in [("A", a), ("B", b)] {
        if let Some(verdict) = &side.verdict {
            let hash = side
                .trace_hash
                .map(sim_core::trace::format_hash)
                .unwrap_or_default();
            if verdict.is_empty() {
                out.push_str(&format!("{name}: ok, trace-hash {hash}\n"));
            } else {
                out.push_str(&format!(
                    "{name}: {} violation(s), trace-hash {hash}; first: {}\n",
                    verdict.len(),
                    verdict[0]
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(keys: &[&str]) -> Side {
        Side {
            label: "t".into(),
            events: keys
                .iter()
                .enumerate()
                .map(|(index, k)| DiffEvent {
                    index,
                    time: index as u64,
                    kind: k.split(':').next().unwrap().to_string(),
                    text: k.to_string(),
                    key: k.to_string(),
                })
                .collect(),
            trace_hash: None,
            verdict: None,
        }
    }

    #[test]
    fn finds_the_first_differing_event_and_summarises_the_rest() {
        let a = side(&["send:1", "deliver:1", "send:2", "timer:1"]);
        let b = side(&["send:1", "deliver:1", "send:3", "send:4", "timer:1"]);
        let d = first_divergence(&a, &b, 1).expect("they differ");
        assert_eq!(d.index, 2);
        assert_eq!(d.context.len(), 1);
        assert_eq!(d.context[0].key, "deliver:1");
        assert_eq!(d.a.as_ref().unwrap().key, "send:2");
        assert_eq!(d.b.as_ref().unwrap().key, "send:3");
        assert_eq!((d.rest_a, d.rest_b), (2, 3));
        assert_eq!(d.rest_by_kind["send"], (1, 2));
        assert_eq!(d.rest_by_kind["timer"], (1, 1));
    }

    #[test]
    fn a_prefix_diverges_where_it_ends_and_equal_traces_do_not() {
        let a = side(&["send:1", "deliver:1"]);
        let b = side(&["send:1", "deliver:1", "crash:0"]);
        let d = first_divergence(&a, &b, 5).expect("b is longer");
        assert_eq!(d.index, 2);
        assert!(d.a.is_none());
        assert_eq!(d.b.as_ref().unwrap().key, "crash:0");
        assert!(render(&a, &b, Some(&d)).contains("A: (the run ended)"));
        assert!(first_divergence(&a, &a.clone(), 3).is_none());
    }
}
