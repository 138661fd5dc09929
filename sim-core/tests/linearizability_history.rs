//! Histories as JSON Lines: the documented example, round trips, and errors that name the
//! line and what was expected.

use sim_core::linearizability::{
    CheckOptions, HistoryError, HistoryOp, KvOp, KvResult, Outcome, Verdict, check, parse_history,
    write_history,
};

const DOCS: &str = include_str!("../../docs/history.md");

/// The lines of the first fenced block of `docs/history.md` that starts with `fence`.
fn docs_block(fence: &str) -> Vec<&'static str> {
    let mut lines = DOCS.lines().skip_while(|l| *l != fence);
    lines.next();
    lines.take_while(|l| !l.starts_with("```")).collect()
}

#[test]
fn the_documented_example() {
    let text = docs_block("```jsonl").join("\n");
    let history = parse_history(&text).unwrap();
    assert_eq!(history.len(), 6);
    assert_eq!(
        history[2],
        HistoryOp::ok(3, 2, 5, 15, KvOp::cas("y", None, "a"), KvResult::Cas(true))
    );
    let mut info = HistoryOp::info(4, 3, 20, KvOp::append("y", "b"));
    info.completed_at = Some(90);
    assert_eq!(history[3], info);

    let report = check(&history, &CheckOptions::default()).unwrap();
    let Verdict::NotLinearizable { key, explanation } = &report.verdict else {
        panic!("{report:#?}");
    };
    assert_eq!(key, "x");
    assert_eq!(report.keys[1].verdict, Verdict::Linearizable);
    // The explanation is the one the documentation shows.
    let shown: Vec<&str> = docs_block("$ faultline check-history h.jsonl")
        .into_iter()
        .skip_while(|l| !l.starts_with("key x:"))
        .take_while(|l| !l.starts_with("verdict:"))
        .collect();
    assert_eq!(explanation.lines(), shown);
}

fn sample() -> Vec<HistoryOp> {
    let mut timed_out = HistoryOp::info(5, 3, 40, KvOp::put("k", "5"));
    timed_out.completed_at = Some(70);
    vec![
        HistoryOp::ok(1, 0, 0, 10, KvOp::get("k"), KvResult::Get(None)),
        HistoryOp::ok(2, 1, 5, 5, KvOp::put("k", "a b\n\"c\""), KvResult::Put),
        // The same client, starting the instant the last one ended, and instantaneous.
        HistoryOp::ok(3, 1, 5, 5, KvOp::append("k", ""), KvResult::Append),
        HistoryOp::ok(
            4,
            0,
            10,
            30,
            KvOp::cas("k", Some("x"), "y"),
            KvResult::Cas(false),
        ),
        timed_out,
        HistoryOp::info(6, 4, 50, KvOp::cas("other key", None, "1")),
        HistoryOp::fail(7, 0, 30, 31, KvOp::put("k", "no")),
        HistoryOp::ok(8, 1, 6, 60, KvOp::get("k"), KvResult::Get(Some("ü".into()))),
    ]
}

#[test]
fn write_then_parse_gives_the_same_operations() {
    let history = sample();
    let text = write_history(&history);
    let mut back = parse_history(&text).unwrap();
    back.sort_by_key(|o| o.id);
    assert_eq!(back, history);
    // And writing is deterministic, in time order.
    assert_eq!(write_history(&back), text);
    let times: Vec<u64> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["time"].as_u64().unwrap()
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{text}");
}

#[test]
fn the_written_form() {
    let history = [
        HistoryOp::ok(7, 3, 1200, 1350, KvOp::put("x", "5"), KvResult::Put),
        HistoryOp::ok(
            8,
            4,
            1300,
            1400,
            KvOp::cas("x", None, "6"),
            KvResult::Cas(false),
        ),
        HistoryOp::ok(9, 3, 1350, 1500, KvOp::get("x"), KvResult::Get(None)),
    ];
    assert_eq!(
        write_history(&history),
        concat!(
            r#"{"process": 3, "type": "invoke", "f": "put", "key": "x", "value": "5", "time": 1200, "index": 7}"#,
            "\n",
            r#"{"process": 4, "type": "invoke", "f": "cas", "key": "x", "value": [null, "6"], "time": 1300, "index": 8}"#,
            "\n",
            r#"{"process": 3, "type": "ok", "f": "put", "key": "x", "value": "5", "time": 1350}"#,
            "\n",
            r#"{"process": 3, "type": "invoke", "f": "get", "key": "x", "value": null, "time": 1350, "index": 9}"#,
            "\n",
            r#"{"process": 4, "type": "ok", "f": "cas", "key": "x", "value": [null, "6"], "swapped": false, "time": 1400}"#,
            "\n",
            r#"{"process": 3, "type": "ok", "f": "get", "key": "x", "value": null, "time": 1500}"#,
            "\n",
        )
    );
}

#[test]
fn jepsen_style_input() {
    // Register names, integer values, extra fields, nemesis lines, a cas that failed, an
    // invocation never completed.
    let text = r#"
{"process": 0, "type": "invoke", "f": "write", "key": "r", "value": 3, "time": 10, "node": "n1"}
{"process": "nemesis", "type": "info", "f": "start", "value": null, "time": 11}
{"process": 0, "type": "ok", "f": "write", "key": "r", "value": 3, "time": 20}
{"process": 1, "type": "invoke", "f": "cas", "key": "r", "value": [1, 2], "time": 21}
{"process": 1, "type": "fail", "f": "cas", "key": "r", "value": [1, 2], "time": 22, "error": "mismatch"}
{"process": 2, "type": "invoke", "f": "read", "key": "r", "value": null, "time": 30}
{"process": 2, "type": "ok", "f": "read", "key": "r", "value": 3, "time": 40}
{"process": 3, "type": "invoke", "f": "append", "key": "r", "value": "z", "time": 50}
"#;
    let history = parse_history(text).unwrap();
    let ids: Vec<u64> = history.iter().map(|o| o.id).collect();
    // Without "index", the id is the invocation's position among the events.
    assert_eq!(ids, [0, 3, 5, 7]);
    assert_eq!(history[0].op, KvOp::put("r", "3"));
    assert_eq!(history[1].outcome, Outcome::Fail);
    assert_eq!(
        history[2].outcome,
        Outcome::Ok(KvResult::Get(Some("3".into())))
    );
    assert_eq!(
        history[3],
        HistoryOp::info(7, 3, 50, KvOp::append("r", "z"))
    );
    assert!(
        check(&history, &CheckOptions::default())
            .unwrap()
            .is_linearizable()
    );
}

fn error(text: &str) -> HistoryError {
    parse_history(text).expect_err("a bad history")
}

#[test]
fn errors_name_the_line_and_what_was_expected() {
    let invoke =
        r#"{"process": 1, "type": "invoke", "f": "put", "key": "x", "value": "1", "time": 5}"#;
    let cases: Vec<(String, usize, &str)> = vec![
        (
            format!("{invoke}\n{invoke}"),
            2,
            "process 1 invokes an operation while its invocation on line 1 is still pending",
        ),
        (
            r#"{"process": 1, "type": "ok", "f": "put", "time": 5}"#.into(),
            1,
            "\"ok\" for process 1, which has no pending invocation",
        ),
        (
            format!("{invoke}\n\n{{\"process\": 1, \"type\": \"ok\", \"time\": 4}}"),
            3,
            "\"time\" 4 is before the invocation's time 5 (line 1)",
        ),
        (
            "{\"process\": 1, \"type\": \"invoke\"".into(),
            1,
            "expected a JSON object",
        ),
        ("[1, 2]".into(), 1, "expected a JSON object"),
        (
            r#"{"type": "invoke", "f": "get", "key": "x", "time": 1}"#.into(),
            1,
            "missing \"process\"",
        ),
        (
            r#"{"process": -1, "type": "invoke", "f": "get", "key": "x", "time": 1}"#.into(),
            1,
            "\"process\" must be a non-negative integer",
        ),
        (
            r#"{"process": 1, "type": "begin", "f": "get", "key": "x", "time": 1}"#.into(),
            1,
            "\"type\" must be one of \"invoke\", \"ok\", \"fail\", \"info\", found \"begin\"",
        ),
        (
            r#"{"process": 1, "type": "invoke", "f": "delete", "key": "x", "time": 1}"#.into(),
            1,
            "\"f\" must be one of \"get\", \"put\", \"cas\", \"append\"",
        ),
        (
            r#"{"process": 1, "type": "invoke", "f": "get", "time": 1}"#.into(),
            1,
            "missing \"key\"",
        ),
        (
            r#"{"process": 1, "type": "invoke", "f": "get", "key": "x"}"#.into(),
            1,
            "missing \"time\"",
        ),
        (
            r#"{"process": 1, "type": "invoke", "f": "put", "key": "x", "time": 1}"#.into(),
            1,
            "missing \"value\" (the value to put)",
        ),
        (
            r#"{"process": 1, "type": "invoke", "f": "cas", "key": "x", "value": "1", "time": 1}"#
                .into(),
            1,
            "a cas's \"value\" must be [expected, new]",
        ),
        (
            r#"{"process": 1, "type": "invoke", "f": "put", "key": "x", "value": true, "time": 1}"#
                .into(),
            1,
            "\"value\" must be a string (or an integer), found true",
        ),
        (
            format!(
                "{}\n{}",
                r#"{"process": 1, "type": "invoke", "f": "get", "key": "x", "time": 1}"#,
                r#"{"process": 1, "type": "ok", "f": "get", "key": "x", "time": 2}"#
            ),
            2,
            "missing \"value\" (the value read, or null if absent)",
        ),
        (
            format!(
                "{invoke}\n{}",
                r#"{"process": 1, "type": "ok", "f": "append", "time": 6}"#
            ),
            2,
            "\"f\" is \"append\", but the pending invocation on line 1 is a \"put\"",
        ),
        (
            format!(
                "{invoke}\n{}",
                r#"{"process": 1, "type": "ok", "key": "y", "time": 6}"#
            ),
            2,
            "\"key\" is \"y\", but the pending invocation on line 1 is on \"x\"",
        ),
        (
            format!(
                "{invoke}\n{}",
                r#"{"process": 1, "type": "ok", "value": "2", "time": 6}"#
            ),
            2,
            "\"value\" \"2\" differs from the invocation's on line 1",
        ),
        (
            format!(
                "{}\n{}",
                r#"{"process": 1, "type": "invoke", "f": "get", "key": "x", "time": 1, "index": 4}"#,
                r#"{"process": 2, "type": "invoke", "f": "get", "key": "x", "time": 1, "index": 4}"#
            ),
            2,
            "operation index 4 was already used by the invocation on line 1",
        ),
        (
            format!(
                "{}\n{}",
                r#"{"process": 1, "type": "invoke", "f": "cas", "key": "x", "value": [null, "1"], "time": 1}"#,
                r#"{"process": 1, "type": "ok", "swapped": "no", "time": 2}"#
            ),
            2,
            "\"swapped\" must be true or false",
        ),
    ];
    for (text, line, message) in cases {
        let e = error(&text);
        assert_eq!(e.line, line, "{text}\n{e}");
        assert!(e.message.contains(message), "{text}\n{e}");
        assert!(e.to_string().starts_with(&format!("line {line}: ")));
    }
}

#[test]
fn an_empty_file_is_an_empty_history() {
    assert_eq!(parse_history("").unwrap(), []);
    assert_eq!(parse_history("\n  \n").unwrap(), []);
    assert_eq!(write_history(&[]), "");
    assert!(
        check(&[], &CheckOptions::default())
            .unwrap()
            .is_linearizable()
    );
}
