//! The page `faultline viz` writes: a space-time diagram of one run as a single,
//! self-contained HTML file (styles, script and data inline; no network request; opens
//! from `file://`).
//!
//! The generator reads the trace in its JSON Lines form (`sim_core::trace`), keeps the
//! events of the chosen window, and embeds three things in the page:
//! - `viz-meta` (JSON): the run's identity, the lanes, the window, the limits, and the
//!   violations with the positions of the events they cite;
//! - `viz-data` (JSON): one compact record per kept event — time, kind, nodes, message
//!   id, a short label, and for deliveries and drops the time the message was sent;
//! - `viz-raw` (a `text/plain` script element): the kept events' JSON lines verbatim
//!   (with `<` written as U+0001), which the details panel shows exactly as the trace
//!   wrote them (no number is rounded by JSON parsing in the browser).
//!
//! The page's script (`viz.js`) draws the window from the compact records; it never
//! draws more than [`MAX_DRAWN_PER_LAYER`] elements of one layer (message arrows, client
//! operations, observations, ...) at once: beyond that the layer is aggregated into
//! per-lane density bands until the view is zoomed in.

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::Context;
use serde_json::{Map, Value, json};
use sim_core::{Citation, Violation};

/// At most this many events are embedded in one page; a longer window is cut at this
/// many events (the page says so) and a narrower `--from/--to/--node` shows the rest.
pub const MAX_EMBEDDED_EVENTS: usize = 250_000;

/// At most this many elements of one layer are drawn in the current view; a layer with
/// more is drawn as per-lane density until the view is zoomed in.
pub const MAX_DRAWN_PER_LAYER: usize = 3_000;

const PAGE: &str = include_str!("page.html");
const STYLE: &str = include_str!("viz.css");
const SCRIPT: &str = include_str!("viz.js");

/// What the page says about the run it shows.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// A title: the scenario's name, or the trace file's.
    pub title: String,
    pub protocol: Option<String>,
    pub seed: Option<u64>,
    pub bugs: Vec<String>,
    /// The number of lanes (nodes); for a saved trace, one more than the highest node
    /// the trace names.
    pub node_count: Option<usize>,
    /// The command that would make the same page, for the page's header.
    pub command: String,
    pub violations: Vec<Violation>,
    /// Said in the page when there is no violation data (a saved trace).
    pub note: Option<String>,
}

/// Which events the page keeps: a time window and a set of nodes (empty: all).
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub nodes: Vec<u32>,
}

impl Window {
    fn keeps(&self, time: u64, nodes: [Option<u64>; 2]) -> bool {
        if self.from.is_some_and(|f| time < f) || self.to.is_some_and(|t| time > t) {
            return false;
        }
        if self.nodes.is_empty() || nodes.iter().all(Option::is_none) {
            return true;
        }
        nodes
            .iter()
            .flatten()
            .any(|n| self.nodes.iter().any(|&m| u64::from(m) == *n))
    }
}

/// What went into a page, for the command's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageStats {
    pub trace_events: usize,
    pub embedded_events: usize,
    pub cut: bool,
    pub bytes: usize,
}

/// A short label for a payload: a unit variant's name, a newtype or struct variant's
/// name, or the value of a `type`/`f`/`kind` tag.
fn label(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(map) => {
            if map.len() == 1
                && let Some((key, _)) = map.iter().next()
            {
                return key.clone();
            }
            for tag in ["type", "f", "kind", "op"] {
                if let Some(Value::String(s)) = map.get(tag) {
                    return s.clone();
                }
            }
            map.keys().next().cloned().unwrap_or_default()
        }
        Value::Null => String::new(),
        other => {
            let mut s = other.to_string();
            s.truncate(40);
            s
        }
    }
}

fn node_of(event: &Map<String, Value>, key: &str) -> Option<u64> {
    event.get(key).and_then(Value::as_u64)
}

/// The nodes an event concerns, as `sim_core::trace::TraceEvent::nodes` says.
fn event_nodes(event: &Map<String, Value>) -> [Option<u64>; 2] {
    if let Some(n) = node_of(event, "node") {
        return [Some(n), None];
    }
    [node_of(event, "from"), node_of(event, "to")]
}

/// Builds the page from a JSON Lines trace.
pub fn render(
    trace: impl BufRead,
    run: &RunInfo,
    window: &Window,
) -> anyhow::Result<(String, PageStats)> {
    let mut records: Vec<Value> = Vec::new();
    let mut raw = String::new();
    // Message id -> (send time, label, position of the kept send event, if kept).
    let mut sent: BTreeMap<u64, (u64, String, Option<usize>)> = BTreeMap::new();
    // (time, node) -> positions of kept events there, for citations.
    let mut at: BTreeMap<(u64, u64), Vec<usize>> = BTreeMap::new();
    let mut highest_node: Option<u64> = None;
    let mut trace_events = 0usize;
    let mut cut = false;
    let (mut first_time, mut last_time) = (None::<u64>, None::<u64>);
    for (index, line) in trace.lines().enumerate() {
        let line = line.context("reading the trace")?;
        if line.trim().is_empty() {
            continue;
        }
        trace_events += 1;
        let value: Value = serde_json::from_str(&line)
            .with_context(|| format!("trace line {}: not JSON", index + 1))?;
        let Value::Object(event) = value else {
            anyhow::bail!("trace line {}: expected a JSON object", index + 1);
        };
        let time = event.get("time").and_then(Value::as_u64).with_context(|| {
            format!(
                "trace line {}: expected a `time` in microseconds",
                index + 1
            )
        })?;
        let kind = event
            .get("event")
            .and_then(Value::as_str)
            .with_context(|| format!("trace line {}: expected an `event` kind", index + 1))?
            .to_string();
        let nodes = event_nodes(&event);
        highest_node = highest_node.max(nodes[0]).max(nodes[1]);
        if let Some(Value::Array(links)) = event.get("links") {
            for link in links {
                for n in link.as_array().into_iter().flatten() {
                    highest_node = highest_node.max(n.as_u64());
                }
            }
        }
        let id = event.get("id").and_then(Value::as_u64);
        let keep = window.keeps(time, nodes) && !cut;
        if keep && records.len() >= MAX_EMBEDDED_EVENTS {
            cut = true;
        }
        let keep = keep && !cut;
        if kind == "send"
            && let Some(id) = id
        {
            let l = event.get("msg").map(label).unwrap_or_default();
            sent.insert(id, (time, l, keep.then_some(records.len())));
        }
        if !keep {
            continue;
        }
        first_time = Some(first_time.map_or(time, |f| f.min(time)));
        last_time = Some(last_time.map_or(time, |l| l.max(time)));
        let position = records.len();
        let mut r = Map::new();
        r.insert("i".into(), json!(index));
        r.insert("t".into(), json!(time));
        r.insert("k".into(), json!(kind));
        if let Some(n) = node_of(&event, "node") {
            r.insert("n".into(), json!(n));
            if kind != "timer" {
                at.entry((time, n)).or_default().push(position);
            }
        }
        if let (Some(a), Some(b)) = (node_of(&event, "from"), node_of(&event, "to")) {
            r.insert("a".into(), json!(a));
            r.insert("b".into(), json!(b));
        }
        if let Some(id) = id {
            r.insert("m".into(), json!(id));
        }
        match kind.as_str() {
            "send" => {
                r.insert("l".into(), json!(event.get("msg").map(label)));
            }
            "deliver" | "drop" | "duplicate" => {
                let known = id.and_then(|id| sent.get(&id));
                let l = match event.get("msg") {
                    Some(msg) => label(msg),
                    None => known.map(|k| k.1.clone()).unwrap_or_default(),
                };
                r.insert("l".into(), json!(l));
                if let Some((s, _, send_position)) = known {
                    r.insert("s".into(), json!(s));
                    if let Some(p) = send_position {
                        r.insert("sp".into(), json!(p));
                    }
                }
                if let Some(reason) = event.get("reason") {
                    r.insert("r".into(), reason.clone());
                }
                // Deliveries and drops are cited by the receiving node.
                if let Some(to) = node_of(&event, "to") {
                    at.entry((time, to)).or_default().push(position);
                }
            }
            "timer" => {
                r.insert("l".into(), json!(event.get("timer").map(label)));
            }
            "observe" => {
                r.insert("l".into(), json!(event.get("obs").map(label)));
            }
            "disk" => {
                r.insert("l".into(), json!(event.get("detail").map(label)));
            }
            "invoke" => {
                r.insert("c".into(), json!(event.get("client")));
                r.insert("o".into(), json!(event.get("op")));
                r.insert("l".into(), json!(event.get("request").map(label)));
            }
            "complete" => {
                r.insert("c".into(), json!(event.get("client")));
                r.insert("o".into(), json!(event.get("op")));
                let outcome = event
                    .get("completion")
                    .and_then(|c| c.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("info");
                r.insert("l".into(), json!(outcome));
            }
            "partition" => {
                r.insert("l".into(), json!(event.get("shape")));
                r.insert("c".into(), event.get("links").cloned().unwrap_or(json!([])));
            }
            "clog" => {
                r.insert("u".into(), json!(event.get("until")));
            }
            _ => {}
        }
        records.push(Value::Object(r));
        raw.push_str(&line);
        raw.push('\n');
    }
    let node_count = run
        .node_count
        .unwrap_or_else(|| highest_node.map_or(0, |n| n as usize + 1));
    let violations: Vec<Value> = run
        .violations
        .iter()
        .map(|v| violation_json(v, &at, &records))
        .collect();
    let meta = json!({
        "title": run.title,
        "protocol": run.protocol,
        "seed": run.seed,
        "bugs": run.bugs,
        "nodes": node_count,
        "command": run.command,
        "note": run.note,
        "window": {
            "from": window.from,
            "to": window.to,
            "nodes": window.nodes,
            "first": first_time,
            "last": last_time,
        },
        "trace_events": trace_events,
        "embedded_events": records.len(),
        "cut": cut,
        "max_embedded_events": MAX_EMBEDDED_EVENTS,
        "max_drawn_per_layer": MAX_DRAWN_PER_LAYER,
        "violations": violations,
    });
    let page = assemble(&meta, &records, &raw)?;
    let stats = PageStats {
        trace_events,
        embedded_events: records.len(),
        cut,
        bytes: page.len(),
    };
    Ok((page, stats))
}

/// A violation for the page, with the positions of the events it rests on: the
/// breaking event (at its time, on its nodes) and every citation.
fn violation_json(
    v: &Violation,
    at: &BTreeMap<(u64, u64), Vec<usize>>,
    records: &[Value],
) -> Value {
    let mut cited: Vec<usize> = Vec::new();
    let mut wanted: Vec<Citation> = v.cites.clone();
    if let Some(time) = v.time {
        wanted.extend(v.nodes.iter().map(|&node| Citation {
            time,
            node,
            op: None,
        }));
    }
    for c in &wanted {
        let Some(positions) = at.get(&(c.time.0, u64::from(c.node.0))) else {
            continue;
        };
        let kind_of = |p: usize| records[p].get("k").and_then(Value::as_str);
        if let Some(op) = c.op {
            // A client operation's invocation or completion.
            cited.extend(positions.iter().copied().filter(|&p| {
                matches!(kind_of(p), Some("invoke" | "complete"))
                    && records[p].get("o").and_then(Value::as_u64) == Some(op.0)
            }));
            continue;
        }
        // Prefer observations (what checkers judge); else every event there.
        let observations: Vec<usize> = positions
            .iter()
            .copied()
            .filter(|&p| kind_of(p) == Some("observe"))
            .collect();
        cited.extend(if observations.is_empty() {
            positions.clone()
        } else {
            observations
        });
    }
    cited.sort_unstable();
    cited.dedup();
    json!({
        "checker": v.checker,
        "kind": v.kind,
        "property": v.property,
        "message": v.message,
        "time": v.time.map(|t| t.0),
        "nodes": v.nodes.iter().map(|n| n.0).collect::<Vec<_>>(),
        "cites": v.cites.iter().map(|c| json!({"time": c.time.0, "node": c.node.0, "op": c.op.map(|o| o.0)})).collect::<Vec<_>>(),
        "cited": cited,
    })
}

/// JSON that is safe inside a `<script>` element: `<` appears only inside JSON strings,
/// where `\u003c` means the same.
fn script_json(value: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string(value)?.replace('<', "\\u003c"))
}

/// Text that is safe inside a `<script>` element and comes back exactly: `<` (the only
/// character that can end the element or start `<!--`) becomes U+0001, which JSON text
/// never holds unescaped, and the page turns it back. (A `<textarea>` would also do, but
/// Chromium parses a large one in quadratic time.)
fn escape_script_text(text: &str) -> String {
    text.replace('<', "\u{1}")
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn assemble(meta: &Value, records: &[Value], raw: &str) -> anyhow::Result<String> {
    let title = meta.get("title").and_then(Value::as_str).unwrap_or("run");
    let mut data = String::with_capacity(records.len() * 80);
    data.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            data.push_str(",\n");
        }
        data.push_str(&script_json(r)?);
    }
    data.push(']');
    let mut page = String::with_capacity(PAGE.len() + data.len() + raw.len() + SCRIPT.len());
    // The template's placeholders are replaced in order, each once.
    let mut rest = PAGE;
    for (placeholder, value) in [
        ("{{TITLE}}", escape_html(title)),
        ("{{STYLE}}", STYLE.to_string()),
        ("{{META}}", script_json(meta)?),
        ("{{DATA}}", data),
        ("{{RAW}}", escape_script_text(raw)),
        ("{{SCRIPT}}", SCRIPT.to_string()),
    ] {
        let Some(at) = rest.find(placeholder) else {
            anyhow::bail!("the page template lacks {placeholder}");
        };
        page.push_str(&rest[..at]);
        page.push_str(&value);
        rest = &rest[at + placeholder.len()..];
    }
    page.push_str(rest);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = r#"{"time":0,"event":"start","node":0,"incarnation":1}
{"time":0,"event":"start","node":1,"incarnation":1}
{"time":10,"event":"send","from":0,"to":1,"id":1,"msg":{"Ping":{"note":"</script><!--"}}}
{"time":20,"event":"deliver","from":0,"to":1,"id":1,"msg":{"Ping":{"note":"</script><!--"}}}
{"time":30,"event":"send","from":1,"to":0,"id":2,"msg":"Pong"}
{"time":30,"event":"drop","from":1,"to":0,"id":2,"reason":"loss"}
{"time":40,"event":"crash","node":1}
{"time":50,"event":"observe","node":0,"obs":{"Decided":{"value":18446744073709551615}}}
"#;

    fn page(window: &Window) -> (String, PageStats) {
        let run = RunInfo {
            title: "t<1>".into(),
            violations: vec![
                Violation {
                    checker: "c",
                    kind: "k".into(),
                    property: "p",
                    message: "m".into(),
                    time: Some(sim_core::SimTime(50)),
                    nodes: vec![sim_core::NodeId(0)],
                    cites: Vec::new(),
                }
                .citing(sim_core::SimTime(20), sim_core::NodeId(1)),
            ],
            ..RunInfo::default()
        };
        render(TRACE.as_bytes(), &run, window).expect("renders")
    }

    fn section<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
        let start = page.find(open).expect("section") + open.len();
        let len = page[start..].find(close).expect("end");
        &page[start..start + len]
    }

    #[test]
    fn embeds_every_event_with_pairing_and_citations_and_no_script_breakout() {
        let (page, stats) = page(&Window::default());
        assert_eq!(stats.trace_events, 8);
        assert_eq!(stats.embedded_events, 8);
        // Exactly one closing script tag per script element (meta, data, raw, code).
        assert_eq!(page.matches("</script>").count(), 4);
        assert!(!page.contains("<!--"));
        assert!(!page.contains("http://") && !page.contains("https://"));
        let data = section(&page, "id=\"viz-data\">", "</script>");
        let records: Vec<Value> = serde_json::from_str(data).expect("data is JSON");
        assert_eq!(records[3]["k"], "deliver");
        assert_eq!(records[3]["s"], 10);
        assert_eq!(records[3]["sp"], 2);
        assert_eq!(records[3]["l"], "Ping");
        assert_eq!(records[5]["l"], "Pong");
        assert_eq!(records[5]["r"], "loss");
        let meta: Value =
            serde_json::from_str(section(&page, "id=\"viz-meta\">", "</script>")).unwrap();
        assert_eq!(meta["nodes"], 2);
        assert_eq!(meta["title"], "t<1>");
        // The breaking observation (node 0 at 50) and the cited delivery (node 1 at 20).
        assert_eq!(meta["violations"][0]["cited"], json!([3, 7]));
        // The raw lines survive exactly (big numbers included) once the HTML is decoded.
        let raw = section(&page, "id=\"viz-raw\">", "</script>").replace('\u{1}', "<");
        assert_eq!(raw, TRACE);
    }

    #[test]
    fn a_window_keeps_its_events_and_the_send_times_before_it() {
        let (page, stats) = page(&Window {
            from: Some(15),
            to: Some(45),
            nodes: vec![1],
        });
        assert_eq!(stats.embedded_events, 4, "deliver, send, drop, crash");
        let data = section(&page, "id=\"viz-data\">", "</script>");
        let records: Vec<Value> = serde_json::from_str(data).unwrap();
        assert_eq!(records[0]["k"], "deliver");
        assert_eq!(records[0]["s"], 10);
        assert!(records[0].get("sp").is_none(), "the send is outside");
    }

    #[test]
    fn a_cited_operation_marks_its_invocation_and_completion_only() {
        let trace = r#"{"time":5,"event":"invoke","client":0,"op":7,"node":1,"request":{"f":"get","key":"k"}}
{"time":5,"event":"invoke","client":1,"op":8,"node":1,"request":{"f":"get","key":"k"}}
{"time":5,"event":"observe","node":1,"obs":"Tick"}
{"time":9,"event":"complete","client":0,"op":7,"node":1,"completion":{"type":"ok","value":null}}
"#;
        let op = sim_core::OpId(7);
        let run = RunInfo {
            violations: vec![
                Violation {
                    checker: "linearizability",
                    kind: "not_linearizable".into(),
                    property: "linearizability",
                    message: "m".into(),
                    time: None,
                    nodes: vec![sim_core::NodeId(1)],
                    cites: Vec::new(),
                }
                .citing_op(sim_core::SimTime(5), sim_core::NodeId(1), op)
                .citing_op(sim_core::SimTime(9), sim_core::NodeId(1), op),
            ],
            ..RunInfo::default()
        };
        let (page, _) = render(trace.as_bytes(), &run, &Window::default()).unwrap();
        let meta: Value =
            serde_json::from_str(section(&page, "id=\"viz-meta\">", "</script>")).unwrap();
        assert_eq!(meta["violations"][0]["cited"], json!([0, 3]));
        let data: Value =
            serde_json::from_str(section(&page, "id=\"viz-data\">", "</script>")).unwrap();
        assert_eq!(data[3]["l"], "ok");
        assert_eq!(data[0]["l"], "get");
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let e = render(
            "{\"time\":1,\"event\":\"heal\"}\nnot json\n".as_bytes(),
            &RunInfo::default(),
            &Window::default(),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("trace line 2"), "{e:#}");
        let e = render(
            "{\"event\":\"heal\"}\n".as_bytes(),
            &RunInfo::default(),
            &Window::default(),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("time"), "{e:#}");
    }
}
