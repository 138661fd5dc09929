//! Histories as JSON Lines, in the Jepsen/Porcupine vocabulary (see `docs/history.md`).
//!
//! One event per line: an `invoke`, then (for the same `process`) its completion, `ok`,
//! `fail` or `info`:
//!
//! ```text
//! {"process": 3, "type": "invoke", "f": "put", "key": "x", "value": "5", "time": 1200, "index": 7}
//! {"process": 3, "type": "ok", "f": "put", "key": "x", "value": "5", "time": 1350}
//! ```
//!
//! A `get`'s `ok` carries the value read in `value` (`null`: absent); a `cas` carries
//! `[expected, new]` (`expected` may be `null`) and its `ok` means it swapped, unless the
//! line says `"swapped": false`. An invocation with no completion by the end of the file
//! is `info`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use thiserror::Error;

use super::model::{KvOp, KvResult};
use super::{HistoryOp, Outcome};

/// A history file that cannot be read: the line and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct HistoryError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> HistoryError {
    HistoryError {
        line,
        message: message.into(),
    }
}

/// An invocation waiting for its completion.
struct Pending {
    line: usize,
    /// Into the operations read so far.
    op: usize,
}

/// Reads a history from JSON Lines. Operations come out in the order of their
/// invocations; an operation's id is its invocation's `index` (or, without one, the
/// 0-based position of the invocation among the file's events).
pub fn parse_history(text: &str) -> Result<Vec<HistoryOp>, HistoryError> {
    let mut ops: Vec<HistoryOp> = Vec::new();
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut ids: BTreeMap<u64, usize> = BTreeMap::new();
    let mut event = 0u64;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(raw)
            .map_err(|e| error(line, format!("expected a JSON object: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(error(line, "expected a JSON object, one event per line"));
        };
        let event_index = event;
        event += 1;
        let process = match fields.get("process") {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                error(
                    line,
                    format!("\"process\" must be a non-negative integer, found {n}"),
                )
            })?,
            // Jepsen's nemesis events are not client operations.
            Some(Value::String(s)) if s == "nemesis" => continue,
            Some(other) => {
                return Err(error(
                    line,
                    format!(
                        "\"process\" must be a non-negative integer (or \"nemesis\"), found {other}"
                    ),
                ));
            }
            None => {
                return Err(error(
                    line,
                    "missing \"process\" (the client's number, a non-negative integer)",
                ));
            }
        };
        let kind = string_field(&fields, "type", line)?.ok_or_else(|| {
            error(
                line,
                "missing \"type\" (one of \"invoke\", \"ok\", \"fail\", \"info\")",
            )
        })?;
        let f = string_field(&fields, "f", line)?;
        let time = match fields.get("time") {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                error(
                    line,
                    format!("\"time\" must be a non-negative integer, found {n}"),
                )
            })?,
            Some(other) => {
                return Err(error(
                    line,
                    format!("\"time\" must be a non-negative integer, found {other}"),
                ));
            }
            None => {
                return Err(error(
                    line,
                    "missing \"time\" (a non-negative integer, e.g. microseconds)",
                ));
            }
        };
        match kind {
            "invoke" => {
                if let Some(p) = pending.get(&process) {
                    return Err(error(
                        line,
                        format!(
                            "process {process} invokes an operation while its invocation on line {} is still pending (expected its \"ok\", \"fail\" or \"info\" first)",
                            p.line
                        ),
                    ));
                }
                let f = f.ok_or_else(|| {
                    error(
                        line,
                        "missing \"f\" (one of \"get\", \"put\", \"cas\", \"append\")",
                    )
                })?;
                let key = text_field(&fields, "key", line)?.ok_or_else(|| {
                    error(line, "missing \"key\" (the key the operation touches)")
                })?;
                let op = invocation(f, key, fields.get("value"), line)?;
                let id = match fields.get("index") {
                    None | Some(Value::Null) => event_index,
                    Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                        error(
                            line,
                            format!("\"index\" must be a non-negative integer, found {n}"),
                        )
                    })?,
                    Some(other) => {
                        return Err(error(
                            line,
                            format!("\"index\" must be a non-negative integer, found {other}"),
                        ));
                    }
                };
                if let Some(first) = ids.insert(id, line) {
                    return Err(error(
                        line,
                        format!(
                            "operation index {id} was already used by the invocation on line {first}"
                        ),
                    ));
                }
                pending.insert(
                    process,
                    Pending {
                        line,
                        op: ops.len(),
                    },
                );
                ops.push(HistoryOp {
                    id,
                    client: process,
                    invoked_at: time,
                    completed_at: None,
                    op,
                    outcome: Outcome::Info,
                });
            }
            "ok" | "fail" | "info" => {
                let Some(p) = pending.remove(&process) else {
                    return Err(error(
                        line,
                        format!(
                            "\"{kind}\" for process {process}, which has no pending invocation (expected an \"invoke\" first)"
                        ),
                    ));
                };
                let op = &mut ops[p.op];
                if let Some(f) = f
                    && canonical_f(f) != Some(op.op.name())
                {
                    return Err(error(
                        line,
                        format!(
                            "\"f\" is \"{f}\", but the pending invocation on line {} is a \"{}\"",
                            p.line,
                            op.op.name()
                        ),
                    ));
                }
                if let Some(key) = text_field(&fields, "key", line)?
                    && key != op.op.key()
                {
                    return Err(error(
                        line,
                        format!(
                            "\"key\" is {key:?}, but the pending invocation on line {} is on {:?}",
                            p.line,
                            op.op.key()
                        ),
                    ));
                }
                if time < op.invoked_at {
                    return Err(error(
                        line,
                        format!(
                            "\"time\" {time} is before the invocation's time {} (line {})",
                            op.invoked_at, p.line
                        ),
                    ));
                }
                op.completed_at = Some(time);
                op.outcome = match kind {
                    "ok" => Outcome::Ok(result(&op.op, &fields, p.line, line)?),
                    "fail" => Outcome::Fail,
                    _ => Outcome::Info,
                };
            }
            other => {
                return Err(error(
                    line,
                    format!(
                        "\"type\" must be one of \"invoke\", \"ok\", \"fail\", \"info\", found \"{other}\""
                    ),
                ));
            }
        }
    }
    Ok(ops)
}

/// The operation's name, accepting Jepsen's register names (`read`, `write`).
fn canonical_f(f: &str) -> Option<&'static str> {
    match f {
        "get" | "read" => Some("get"),
        "put" | "write" => Some("put"),
        "cas" => Some("cas"),
        "append" => Some("append"),
        _ => None,
    }
}

fn string_field<'v>(
    fields: &'v Map<String, Value>,
    name: &str,
    line: usize,
) -> Result<Option<&'v str>, HistoryError> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(error(
            line,
            format!("\"{name}\" must be a string, found {other}"),
        )),
    }
}

/// A key or value: a string, or an integer read as its decimal text.
fn text(value: &Value, what: &str, line: usize) -> Result<String, HistoryError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        other => Err(error(
            line,
            format!("{what} must be a string (or an integer), found {other}"),
        )),
    }
}

/// A key or value that may be `null` (absent).
fn maybe_text(value: &Value, what: &str, line: usize) -> Result<Option<String>, HistoryError> {
    match value {
        Value::Null => Ok(None),
        other => text(other, what, line).map(Some),
    }
}

fn text_field(
    fields: &Map<String, Value>,
    name: &str,
    line: usize,
) -> Result<Option<String>, HistoryError> {
    match fields.get(name) {
        None => Ok(None),
        Some(v) => text(v, &format!("\"{name}\""), line).map(Some),
    }
}

/// `[expected, new]` of a `cas`.
fn cas_pair(value: &Value, line: usize) -> Result<(Option<String>, String), HistoryError> {
    match value {
        Value::Array(pair) if pair.len() == 2 => Ok((
            maybe_text(&pair[0], "the expected value of a cas", line)?,
            text(&pair[1], "the new value of a cas", line)?,
        )),
        other => Err(error(
            line,
            format!(
                "a cas's \"value\" must be [expected, new] (expected may be null), found {other}"
            ),
        )),
    }
}

fn invocation(
    f: &str,
    key: String,
    value: Option<&Value>,
    line: usize,
) -> Result<KvOp, HistoryError> {
    let needs_value =
        |what: &str| value.ok_or_else(|| error(line, format!("missing \"value\" ({what})")));
    match canonical_f(f) {
        Some("get") => Ok(KvOp::Get { key }),
        Some("put") => Ok(KvOp::Put {
            key,
            value: text(needs_value("the value to put")?, "\"value\"", line)?,
        }),
        Some("append") => Ok(KvOp::Append {
            key,
            value: text(needs_value("the text to append")?, "\"value\"", line)?,
        }),
        Some(_) => {
            let (expected, new) = cas_pair(needs_value("[expected, new]")?, line)?;
            Ok(KvOp::Cas { key, expected, new })
        }
        None => Err(error(
            line,
            format!(
                "\"f\" must be one of \"get\", \"put\", \"cas\", \"append\" (or \"read\", \"write\"), found \"{f}\""
            ),
        )),
    }
}

/// The result on an `ok` line for `op` (invoked on line `invoked`).
fn result(
    op: &KvOp,
    fields: &Map<String, Value>,
    invoked: usize,
    line: usize,
) -> Result<KvResult, HistoryError> {
    let value = fields.get("value");
    let echo_mismatch = |found: &Value| {
        error(
            line,
            format!(
                "\"value\" {found} differs from the invocation's on line {invoked} (expected the same value, or none)"
            ),
        )
    };
    match op {
        KvOp::Get { .. } => {
            let value = value.ok_or_else(|| {
                error(
                    line,
                    "missing \"value\" (the value read, or null if absent)",
                )
            })?;
            Ok(KvResult::Get(maybe_text(value, "the value read", line)?))
        }
        KvOp::Put { value: v, .. } | KvOp::Append { value: v, .. } => {
            if let Some(found) = value
                && !found.is_null()
                && text(found, "\"value\"", line)? != *v
            {
                return Err(echo_mismatch(found));
            }
            Ok(if matches!(op, KvOp::Put { .. }) {
                KvResult::Put
            } else {
                KvResult::Append
            })
        }
        KvOp::Cas { expected, new, .. } => {
            if let Some(found) = value
                && !found.is_null()
                && cas_pair(found, line)? != (expected.clone(), new.clone())
            {
                return Err(echo_mismatch(found));
            }
            match fields.get("swapped") {
                None => Ok(KvResult::Cas(true)),
                Some(Value::Bool(b)) => Ok(KvResult::Cas(*b)),
                Some(other) => Err(error(
                    line,
                    format!("\"swapped\" must be true or false, found {other}"),
                )),
            }
        }
    }
}

/// A string as a JSON string literal.
fn json_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn json_maybe(s: Option<&str>) -> String {
    s.map_or_else(|| "null".to_string(), json_str)
}

/// The invocation's `value`: `null` for a get, the value for a put or append,
/// `[expected, new]` for a cas.
fn invocation_value(op: &KvOp) -> String {
    match op {
        KvOp::Get { .. } => "null".to_string(),
        KvOp::Put { value, .. } | KvOp::Append { value, .. } => json_str(value),
        KvOp::Cas { expected, new, .. } => {
            format!("[{}, {}]", json_maybe(expected.as_deref()), json_str(new))
        }
    }
}

/// Writes a history as JSON Lines, events in time order. Reading it back with
/// [`parse_history`] gives the same operations (in invocation order) when each client's
/// operations do not overlap, every `ok` and `fail` has a completion time, and ids are
/// unique. An `info` with no completion time is written as an invocation alone.
pub fn write_history(ops: &[HistoryOp]) -> String {
    // Rank operations so that, at equal times, a client's earlier operation comes first.
    let mut order: Vec<&HistoryOp> = ops.iter().collect();
    order.sort_by_key(|o| (o.invoked_at, o.completed_at.unwrap_or(u64::MAX), o.id));
    // (time, class, rank, phase): completions of operations that took time come before
    // invocations at the same instant; an instantaneous operation's completion right
    // after its own invocation.
    let mut events: Vec<((u64, u8, usize, u8), String)> = Vec::with_capacity(2 * ops.len());
    for (rank, op) in order.iter().enumerate() {
        let f = json_str(op.op.name());
        let key = json_str(op.op.key());
        events.push((
            (op.invoked_at, 1, rank, 0),
            format!(
                "{{\"process\": {}, \"type\": \"invoke\", \"f\": {f}, \"key\": {key}, \"value\": {}, \"time\": {}, \"index\": {}}}",
                op.client,
                invocation_value(&op.op),
                op.invoked_at,
                op.id
            ),
        ));
        let time = match (&op.outcome, op.completed_at) {
            (Outcome::Info, None) => continue,
            (_, t) => t.unwrap_or(op.invoked_at).max(op.invoked_at),
        };
        let (kind, value, extra) = match &op.outcome {
            Outcome::Ok(KvResult::Get(read)) => ("ok", json_maybe(read.as_deref()), ""),
            Outcome::Ok(KvResult::Cas(false)) => {
                ("ok", invocation_value(&op.op), ", \"swapped\": false")
            }
            Outcome::Ok(_) => ("ok", invocation_value(&op.op), ""),
            Outcome::Fail => ("fail", invocation_value(&op.op), ""),
            Outcome::Info => ("info", invocation_value(&op.op), ""),
        };
        let sort = if time == op.invoked_at {
            (time, 1, rank, 1)
        } else {
            (time, 0, rank, 0)
        };
        events.push((
            sort,
            format!(
                "{{\"process\": {}, \"type\": \"{kind}\", \"f\": {f}, \"key\": {key}, \"value\": {value}{extra}, \"time\": {time}}}",
                op.client
            ),
        ));
    }
    events.sort_by_key(|a| a.0);
    let mut out = String::new();
    for (_, line) in events {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_history() {
        let text = r#"
{"process": 3, "type": "invoke", "f": "put", "key": "x", "value": "5", "time": 1200, "index": 70}
{"process": 4, "type": "invoke", "f": "read", "key": "x", "value": null, "time": 1210}
{"process": 3, "type": "ok", "f": "put", "key": "x", "value": "5", "time": 1350}
{"process": "nemesis", "type": "info", "f": "partition", "time": 1360}
{"process": 4, "type": "ok", "f": "read", "key": "x", "value": 5, "time": 1400}
{"process": 3, "type": "invoke", "f": "cas", "key": "x", "value": [null, "1"], "time": 1500}
{"process": 3, "type": "ok", "f": "cas", "key": "x", "swapped": false, "time": 1600}
{"process": 4, "type": "invoke", "f": "append", "key": "y", "value": "a", "time": 1700}
"#;
        let ops = parse_history(text).unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(
            ops[0],
            HistoryOp::ok(70, 3, 1200, 1350, KvOp::put("x", "5"), KvResult::Put)
        );
        // No index: the event's position (the blank first line is not an event).
        assert_eq!(
            ops[1],
            HistoryOp::ok(
                1,
                4,
                1210,
                1400,
                KvOp::get("x"),
                KvResult::Get(Some("5".into()))
            )
        );
        assert_eq!(ops[2].outcome, Outcome::Ok(KvResult::Cas(false)));
        assert_eq!(ops[3], HistoryOp::info(7, 4, 1700, KvOp::append("y", "a")));
    }
}
