//! The linearizability checker on hand-built histories: the classic anomalies, unknown
//! (`info`) operations, several keys, the budget, bad input, and the explanations.

use std::time::{Duration, Instant};

use sim_core::linearizability::{
    CheckError, CheckOptions, HistoryOp, KvOp, KvResult, Report, Verdict, check,
};

fn ok(id: u64, client: u64, span: (u64, u64), op: KvOp, result: KvResult) -> HistoryOp {
    HistoryOp::ok(id, client, span.0, span.1, op, result)
}

fn put(id: u64, client: u64, span: (u64, u64), key: &str, value: &str) -> HistoryOp {
    ok(id, client, span, KvOp::put(key, value), KvResult::Put)
}

fn get(id: u64, client: u64, span: (u64, u64), key: &str, read: Option<&str>) -> HistoryOp {
    ok(
        id,
        client,
        span,
        KvOp::get(key),
        KvResult::Get(read.map(str::to_string)),
    )
}

fn append(id: u64, client: u64, span: (u64, u64), key: &str, value: &str) -> HistoryOp {
    ok(id, client, span, KvOp::append(key, value), KvResult::Append)
}

fn cas(
    id: u64,
    client: u64,
    span: (u64, u64),
    key: &str,
    expected: Option<&str>,
    new: &str,
    swapped: bool,
) -> HistoryOp {
    ok(
        id,
        client,
        span,
        KvOp::cas(key, expected, new),
        KvResult::Cas(swapped),
    )
}

fn run(history: &[HistoryOp]) -> Report {
    check(history, &CheckOptions::default()).expect("a well-formed history")
}

fn assert_linearizable(history: &[HistoryOp]) {
    let report = run(history);
    assert_eq!(
        report.verdict,
        Verdict::Linearizable,
        "expected linearizable, got {report:#?}"
    );
}

/// Asserts a violation on `key` whose explanation is exactly the operations `core`, and
/// returns the explanation's text.
fn assert_violation(history: &[HistoryOp], key: &str, core: &[u64]) -> String {
    let report = run(history);
    let Verdict::NotLinearizable {
        key: bad,
        explanation,
    } = &report.verdict
    else {
        panic!("expected a violation, got {report:#?}");
    };
    assert_eq!(bad, key);
    assert_eq!(explanation.key, key);
    let ids: Vec<u64> = explanation.operations.iter().map(|o| o.id).collect();
    assert_eq!(ids, core, "explanation:\n{explanation}");
    assert!(explanation.minimal, "explanation:\n{explanation}");
    // Deterministic, to the letter.
    assert_eq!(run(history), report);
    explanation.to_string()
}

#[test]
fn a_sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(1, 0, (0, 5), "x", None),
        put(2, 0, (10, 20), "x", "1"),
        get(3, 1, (30, 40), "x", Some("1")),
        cas(4, 0, (50, 60), "x", Some("1"), "2", true),
        cas(5, 1, (70, 80), "x", Some("1"), "3", false),
        append(6, 0, (90, 100), "x", "a"),
        get(7, 1, (110, 120), "x", Some("2a")),
    ]);
    assert_linearizable(&[]);
}

#[test]
fn overlapping_operations_may_take_effect_in_either_order() {
    // The read overlaps both writes: it may see either.
    for read in ["1", "2"] {
        assert_linearizable(&[
            put(1, 0, (0, 100), "x", "1"),
            put(2, 1, (10, 110), "x", "2"),
            get(3, 2, (20, 120), "x", Some(read)),
        ]);
    }
    // ...but not nothing once a write has completed.
    assert_violation(
        &[
            put(1, 0, (0, 100), "x", "1"),
            put(2, 1, (10, 110), "x", "2"),
            get(3, 2, (105, 120), "x", None),
        ],
        "x",
        &[1, 3],
    );
}

#[test]
fn a_stale_read() {
    let text = assert_violation(
        &[
            put(1, 0, (0, 10), "x", "1"),
            put(2, 1, (20, 30), "x", "2"),
            get(3, 0, (40, 50), "x", Some("1")),
        ],
        "x",
        // The first write need not be kept: within its interval, it came before the second.
        &[2, 3],
    );
    assert!(
        text.contains(
            "stale read: the only write of 1, op 1 (put(x, 1)), completed at 10; op 2 (put(x, 2)) overwrote it between 20 and 30; yet op 3 (get(x)), invoked at 40, read 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("op 2  client 1  [20, 30]  put(x, 2) → ok"),
        "{text}"
    );
    assert!(
        text.contains("op 3  client 0  [40, 50]  get(x) → 1"),
        "{text}"
    );
    assert!(
        text.contains("real time: op 2 completed at 30, before op 3 was invoked at 40"),
        "{text}"
    );
}

#[test]
fn the_explanation_leaves_out_what_is_not_needed() {
    // Plenty of unrelated traffic around a stale read.
    let mut history = vec![
        put(1, 0, (0, 10), "x", "1"),
        get(2, 1, (12, 14), "x", Some("1")),
        put(3, 1, (20, 30), "x", "2"),
    ];
    let mut id = 4;
    for i in 0..30u64 {
        let t = 40 + 20 * i;
        history.push(put(id, 2, (t, t + 5), "x", &format!("w{i}")));
        history.push(get(id + 1, 3, (t + 6, t + 9), "x", Some(&format!("w{i}"))));
        id += 2;
    }
    history.push(get(id, 0, (35, 38), "x", Some("1")));
    let text = assert_violation(&history, "x", &[3, id]);
    assert!(
        text.contains("other completed writes made optional"),
        "{text}"
    );
}

#[test]
fn a_lost_update() {
    // Both appends completed before the read began; the read saw only the second.
    let text = assert_violation(
        &[
            append(1, 0, (0, 10), "x", "a"),
            append(2, 1, (20, 30), "x", "b"),
            get(3, 2, (40, 50), "x", Some("b")),
        ],
        "x",
        // The second append is not needed: whenever it happened, the read should start
        // with the first.
        &[1, 3],
    );
    assert!(
        text.contains("op 3 read b, which does not contain a, appended by op 1"),
        "{text}"
    );
    // Two clients that read-modify-write with put: the second put overwrote the first.
    assert_violation(
        &[
            put(1, 0, (0, 5), "n", "0"),
            get(2, 0, (10, 20), "n", Some("0")),
            get(3, 1, (12, 22), "n", Some("0")),
            cas(4, 0, (30, 40), "n", Some("0"), "1", true),
            cas(5, 1, (32, 42), "n", Some("0"), "1", true),
        ],
        "n",
        &[4, 5],
    );
}

#[test]
fn a_read_of_a_value_never_written() {
    let text = assert_violation(
        &[
            put(1, 0, (0, 10), "x", "1"),
            get(2, 1, (20, 30), "x", Some("7")),
            HistoryOp::fail(3, 2, 15, 25, KvOp::put("x", "7")),
        ],
        "x",
        &[2],
    );
    assert!(
        text.contains("op 2 read 7, but no operation writes 7 to x (op 3 failed"),
        "{text}"
    );
}

#[test]
fn a_read_from_the_future() {
    let text = assert_violation(
        &[
            get(1, 0, (0, 10), "x", Some("3")),
            put(2, 1, (50, 60), "x", "3"),
        ],
        "x",
        &[1],
    );
    assert!(
        text.contains(
            "get(x) → 3 (op 1) at [0, 10] must follow put(x, 3) (op 2), invoked at 50 > 10"
        ),
        "{text}"
    );
}

#[test]
fn two_compare_and_sets_from_the_same_value() {
    let base = [put(1, 0, (0, 10), "x", "0")];
    // One swaps, the other sees the new value: fine.
    let mut fine = base.to_vec();
    fine.push(cas(2, 1, (20, 40), "x", Some("0"), "1", true));
    fine.push(cas(3, 2, (25, 45), "x", Some("0"), "2", false));
    fine.push(get(4, 0, (50, 60), "x", Some("1")));
    assert_linearizable(&fine);
    // Both swap from 0: impossible, x holds 0 once.
    let mut both = base.to_vec();
    both.push(cas(2, 1, (20, 40), "x", Some("0"), "1", true));
    both.push(cas(3, 2, (25, 45), "x", Some("0"), "2", true));
    let text = assert_violation(&both, "x", &[2, 3]);
    assert!(
        text.contains("op 2 (cas(x, 0 → 1)) and op 3 (cas(x, 0 → 2)) both swapped from 0"),
        "{text}"
    );
    // Both create the key: impossible too.
    let text = assert_violation(
        &[
            cas(1, 0, (0, 10), "y", None, "a", true),
            cas(2, 1, (5, 15), "y", None, "b", true),
        ],
        "y",
        &[1, 2],
    );
    assert!(text.contains("both swapped from nil"), "{text}");
    // A cas that did not swap although the value matched throughout.
    assert_violation(
        &[
            put(1, 0, (0, 10), "z", "0"),
            cas(2, 1, (20, 30), "z", Some("0"), "1", false),
        ],
        "z",
        &[1, 2],
    );
}

#[test]
fn an_unknown_write_that_took_effect_late() {
    // The write timed out, but later reads see it: it took effect after the first read.
    assert_linearizable(&[
        put(1, 0, (0, 10), "x", "1"),
        HistoryOp::info(2, 1, 20, KvOp::put("x", "2")),
        get(3, 0, (30, 40), "x", Some("1")),
        get(4, 0, (100, 110), "x", Some("2")),
        get(5, 2, (200, 210), "x", Some("2")),
    ]);
    // An info with a completion time still counts as open forever.
    let mut timed_out = HistoryOp::info(2, 1, 20, KvOp::append("x", "b"));
    timed_out.completed_at = Some(25);
    assert_linearizable(&[
        append(1, 0, (0, 10), "x", "a"),
        timed_out,
        get(3, 0, (500, 510), "x", Some("ab")),
    ]);
}

#[test]
fn an_unknown_write_that_never_took_effect() {
    assert_linearizable(&[
        put(1, 0, (0, 10), "x", "1"),
        HistoryOp::info(2, 1, 20, KvOp::put("x", "2")),
        get(3, 0, (30, 40), "x", Some("1")),
        get(4, 0, (100, 110), "x", Some("1")),
        HistoryOp::info(5, 2, 105, KvOp::cas("x", Some("1"), "9")),
        HistoryOp::info(6, 3, 106, KvOp::get("x")),
        get(7, 0, (200, 210), "x", Some("1")),
    ]);
    // A failed write certainly did not take effect.
    assert_violation(
        &[
            put(1, 0, (0, 10), "x", "1"),
            HistoryOp::fail(2, 1, 20, 30, KvOp::put("x", "2")),
            get(3, 0, (100, 110), "x", Some("2")),
        ],
        "x",
        &[3],
    );
}

#[test]
fn an_unknown_write_explains_a_compare_and_set_that_failed() {
    // The cas found something other than 0: only the unknown write can explain it.
    let history = [
        put(1, 0, (0, 10), "x", "0"),
        HistoryOp::info(2, 1, 5, KvOp::put("x", "1")),
        cas(3, 0, (20, 30), "x", Some("0"), "2", false),
    ];
    assert_linearizable(&history);
    assert_violation(
        &history[..1]
            .iter()
            .chain(&history[2..])
            .cloned()
            .collect::<Vec<_>>(),
        "x",
        &[1, 3],
    );
    // Through an append: "pqr", not "pr".
    assert_linearizable(&[
        put(1, 0, (0, 10), "y", "p"),
        HistoryOp::info(2, 1, 5, KvOp::append("y", "q")),
        append(3, 0, (20, 30), "y", "r"),
        cas(4, 0, (40, 50), "y", Some("pr"), "z", false),
    ]);
    // An unknown append seen only through a later append.
    assert_linearizable(&[
        append(1, 0, (0, 10), "z", "a"),
        HistoryOp::info(2, 1, 5, KvOp::append("z", "b")),
        append(3, 0, (20, 30), "z", "c"),
        get(4, 0, (40, 50), "z", Some("abc")),
    ]);
    // A chain of unknown operations: a put, then a cas from its value.
    assert_linearizable(&[
        put(1, 0, (0, 10), "w", "0"),
        HistoryOp::info(2, 1, 5, KvOp::put("w", "1")),
        HistoryOp::info(3, 2, 6, KvOp::cas("w", Some("1"), "2")),
        get(4, 0, (40, 50), "w", Some("2")),
    ]);
}

#[test]
fn an_unknown_write_cannot_take_effect_before_it_was_invoked() {
    let text = assert_violation(
        &[
            put(1, 0, (0, 10), "x", "1"),
            get(2, 1, (20, 30), "x", Some("2")),
            HistoryOp::info(3, 2, 40, KvOp::put("x", "2")),
        ],
        "x",
        &[2],
    );
    assert!(
        text.contains("must follow put(x, 2) (op 3), invoked at 40 > 30"),
        "{text}"
    );
}

#[test]
fn appends_in_the_wrong_order() {
    // Concurrent appends may land in either order...
    for read in ["ab", "ba"] {
        assert_linearizable(&[
            append(1, 0, (0, 30), "l", "a"),
            append(2, 1, (5, 35), "l", "b"),
            get(3, 2, (40, 50), "l", Some(read)),
        ]);
    }
    // ...sequential ones may not.
    assert_violation(
        &[
            append(1, 0, (0, 10), "l", "a"),
            append(2, 1, (20, 30), "l", "b"),
            get(3, 2, (40, 50), "l", Some("ba")),
        ],
        "l",
        // Within their intervals, the appends can only make "ab".
        &[3],
    );
    // Two readers disagree on the order of concurrent appends.
    assert_violation(
        &[
            append(1, 0, (0, 30), "l", "a"),
            append(2, 1, (5, 35), "l", "b"),
            get(3, 2, (40, 50), "l", Some("ab")),
            get(4, 3, (60, 70), "l", Some("ba")),
        ],
        "l",
        &[3, 4],
    );
    // A read of something no appends (nor later ones) could build.
    let text = assert_violation(
        &[
            append(1, 0, (0, 10), "l", "a"),
            get(2, 1, (20, 30), "l", Some("ab")),
            append(3, 2, (40, 50), "l", "b"),
        ],
        "l",
        &[2],
    );
    assert!(
        text.contains(
            "op 2 read ab, which no writes and appends to l invoked before it returned (at 30) can build"
        ),
        "{text}"
    );
}

#[test]
fn only_the_bad_key_is_reported() {
    let mut history = Vec::new();
    let mut id = 0;
    for (k, key) in ["a", "b", "c"].iter().enumerate() {
        for i in 0..20u64 {
            let t = 100 * i + k as u64;
            id += 1;
            history.push(put(id, 0, (t, t + 10), key, &i.to_string()));
            id += 1;
            let read = if *key == "b" && i == 13 { 11 } else { i };
            history.push(get(id, 1, (t + 20, t + 30), key, Some(&read.to_string())));
        }
    }
    let report = run(&history);
    let verdicts: Vec<(&str, &str)> = report
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.verdict.label()))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("a", "linearizable"),
            ("b", "not linearizable"),
            ("c", "linearizable")
        ]
    );
    let Verdict::NotLinearizable { key, explanation } = &report.verdict else {
        panic!("{report:#?}");
    };
    assert_eq!(key, "b");
    // A put that overwrote 11 (written only long before), and the stale read.
    let ops: Vec<String> = explanation
        .operations
        .iter()
        .map(|o| o.op.to_string())
        .collect();
    assert_eq!(ops, ["put(b, 13)", "get(b)"]);
    assert!(
        explanation
            .to_string()
            .starts_with("key b: these 2 operations")
    );
    assert_eq!(report.keys[1].ok, 40);
}

#[test]
fn the_budget_turns_a_pathological_history_into_unknown() {
    // Twelve writes of "a" and twelve of "b", all concurrent with everything, and 25 reads
    // in a row alternating a, b, a, ...: thirteen a's are needed and only twelve written.
    // Proving it means trying (nearly) every set of writes before every read.
    let n = 12u64;
    let mut history: Vec<HistoryOp> = (0..2 * n)
        .map(|i| {
            let value = if i % 2 == 0 { "a" } else { "b" };
            put(i + 1, i + 1, (0, 100_000), "x", value)
        })
        .collect();
    for i in 0..=2 * n {
        let t = 100 * (i + 1);
        let value = if i % 2 == 0 { "a" } else { "b" };
        history.push(get(100 + i, 0, (t, t + 10), "x", Some(value)));
    }
    // Another key that is fine.
    history.push(put(300, 50, (2000, 2010), "y", "1"));
    let budget = 20_000;
    let start = Instant::now();
    let report = check(&history, &CheckOptions::with_budget(budget)).unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(
        report.verdict,
        Verdict::Unknown {
            key: "x".into(),
            reason: format!("budget exhausted after {budget} steps")
        }
    );
    assert_eq!(report.keys[0].steps, budget);
    assert_eq!(report.keys[1].verdict, Verdict::Linearizable);

    // A proven violation elsewhere outranks the unknown.
    history.push(get(301, 51, (3000, 3010), "y", Some("2")));
    let report = check(&history, &CheckOptions::with_budget(budget)).unwrap();
    assert!(
        matches!(&report.verdict, Verdict::NotLinearizable { key, .. } if key == "y"),
        "{report:#?}"
    );
}

#[test]
fn touching_intervals_are_concurrent() {
    // The read returned at 10, the write was invoked at 10: either may go first.
    assert_linearizable(&[
        get(1, 0, (0, 10), "x", Some("1")),
        put(2, 1, (10, 20), "x", "1"),
    ]);
    // One microsecond apart they are ordered.
    assert_violation(
        &[
            get(1, 0, (0, 9), "x", Some("1")),
            put(2, 1, (10, 20), "x", "1"),
        ],
        "x",
        &[1],
    );
}

#[test]
fn bad_histories_are_errors() {
    let dup = [put(1, 0, (0, 1), "x", "1"), put(1, 1, (2, 3), "x", "2")];
    assert_eq!(
        check(&dup, &CheckOptions::default()),
        Err(CheckError::DuplicateId { id: 1 })
    );
    let backwards = [put(1, 0, (10, 5), "x", "1")];
    assert_eq!(
        check(&backwards, &CheckOptions::default()),
        Err(CheckError::CompletedBeforeInvoked {
            id: 1,
            invoked_at: 10,
            completed_at: 5
        })
    );
    let mismatch = [ok(1, 0, (0, 1), KvOp::put("x", "1"), KvResult::Cas(true))];
    let err = check(&mismatch, &CheckOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "operation 1: put(x, 1) cannot return \"swapped\""
    );
    let mut open_ok = put(1, 0, (0, 1), "x", "1");
    open_ok.completed_at = None;
    assert!(matches!(
        check(&[open_ok], &CheckOptions::default()),
        Err(CheckError::MissingCompletion { id: 1, .. })
    ));
}

#[test]
fn a_long_sequential_key_is_cheap() {
    // 5,000 operations on one key, two clients overlapping: a few steps per operation.
    let mut history = Vec::new();
    for i in 0..2_500u64 {
        let t = 10 * i;
        history.push(put(2 * i + 1, 0, (t, t + 15), "k", &i.to_string()));
        history.push(get(
            2 * i + 2,
            1,
            (t + 12, t + 14),
            "k",
            Some(&i.to_string()),
        ));
    }
    let report = run(&history);
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert!(report.keys[0].steps < 30_000, "{}", report.keys[0].steps);
}

#[test]
fn an_explanation_in_full() {
    let history = [
        put(1, 0, (0, 10), "x", "1"),
        put(2, 1, (20, 30), "x", "2"),
        get(3, 0, (40, 50), "x", Some("1")),
        put(4, 2, (35, 60), "x", "3"),
        get(5, 1, (55, 65), "x", Some("3")),
    ];
    let report = run(&history);
    let Verdict::NotLinearizable { explanation, .. } = &report.verdict else {
        panic!("{report:#?}");
    };
    assert_eq!(
        explanation.lines(),
        [
            "key x: these 2 operations cannot be ordered:",
            "  op 2  client 1  [20, 30]  put(x, 2) → ok",
            "  op 3  client 0  [40, 50]  get(x) → 1",
            "  why: stale read: the only write of 1, op 1 (put(x, 1)), completed at 10; op 2 (put(x, 2)) overwrote it between 20 and 30; yet op 3 (get(x)), invoked at 40, read 1",
            "       real time: op 2 completed at 30, before op 3 was invoked at 40",
            "  other operations on x: 1 other completed write made optional (each may or may not have taken effect, within its interval); 1 other read left out; 1 operation that completed before 20 forgotten (x may have held whatever it could have left there)",
        ]
    );
}

/// A protocol that speaks the key-value model (its behaviour does not matter here).
struct Kv;

impl sim_core::Process for Kv {
    type Msg = ();
    type Timer = ();
    type Op = KvOp;
    type Reply = KvResult;
    type Obs = ();

    fn on_start(&mut self, _: &mut sim_core::Ctx<'_, Self>) {}
    fn on_message(&mut self, _: &mut sim_core::Ctx<'_, Self>, _: sim_core::NodeId, _: ()) {}
    fn on_timer(&mut self, _: &mut sim_core::Ctx<'_, Self>, _: sim_core::TimerId, _: ()) {}
    fn on_client(&mut self, _: &mut sim_core::Ctx<'_, Self>, _: sim_core::OpId, _: KvOp) {}
}

#[test]
fn a_simulated_history_converts() {
    use sim_core::history::{History, Operation};
    use sim_core::process::Completion;
    use sim_core::{ClientId, NodeId, OpId, SimTime};

    let operation = |id: u64, request: KvOp, invoked: u64, completion| Operation::<Kv> {
        id: OpId(id),
        client: ClientId(id as u32 % 2),
        node: NodeId(0),
        request,
        invoked_at: SimTime(invoked),
        completion,
    };
    let history = History::<Kv> {
        operations: vec![
            operation(
                1,
                KvOp::put("x", "1"),
                10,
                Some((SimTime(20), Completion::Ok(KvResult::Put))),
            ),
            operation(
                2,
                KvOp::get("x"),
                15,
                Some((SimTime(30), Completion::Info("timeout".into()))),
            ),
            operation(
                3,
                KvOp::put("x", "2"),
                25,
                Some((SimTime(26), Completion::Fail("not leader".into()))),
            ),
            operation(4, KvOp::append("x", "a"), 40, None),
        ],
    };
    let ops = HistoryOp::from_history(&history);
    let mut info = HistoryOp::info(2, 0, 15, KvOp::get("x"));
    info.completed_at = Some(30);
    assert_eq!(
        ops,
        [
            put(1, 1, (10, 20), "x", "1"),
            info,
            HistoryOp::fail(3, 1, 25, 26, KvOp::put("x", "2")),
            HistoryOp::info(4, 0, 40, KvOp::append("x", "a")),
        ]
    );
    assert!(run(&ops).is_linearizable());
}
