//! `faultline viz` without a browser: exit statuses, the page written, bad arguments.
//! (The page in a real browser: `viz_browser.rs`.)

mod common;

use std::path::Path;
use std::process::Output;

use common::faultline;
use serde_json::Value;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The JSON inside `<script type="application/json" id="ID">`.
fn embedded(page: &str, id: &str) -> Value {
    let open = format!("id=\"{id}\">");
    let start = page.find(&open).expect("the block") + open.len();
    let end = start + page[start..].find("</script>").expect("its end");
    serde_json::from_str(&page[start..end]).expect("JSON")
}

const STEADY: &str = "scenarios/library/broadcast-steady.toml";

#[test]
fn a_clean_run_and_its_saved_trace_make_the_same_deterministic_page() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    let from_run = dir.path().join("a.html");
    let again = dir.path().join("b.html");
    let from_trace = dir.path().join("c.html");
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let run = faultline(&["run", STEADY, "--seed", "3", "--trace", &p(&trace)]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let a = faultline(&["viz", STEADY, "--seed", "3", "-o", &p(&from_run)]);
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert!(text(&a).starts_with("seed: 3\n"), "{}", text(&a));
    let b = faultline(&["viz", STEADY, "--seed", "3", "-o", &p(&again)]);
    assert_eq!(b.status.code(), Some(0));
    let page = std::fs::read_to_string(&from_run).unwrap();
    assert_eq!(
        page,
        std::fs::read_to_string(&again).unwrap(),
        "same seed, same page"
    );
    let lines = std::fs::read_to_string(&trace).unwrap().lines().count();
    let meta = embedded(&page, "viz-meta");
    assert_eq!(meta["embedded_events"], lines);
    assert_eq!(meta["trace_events"], lines);
    assert_eq!(meta["nodes"], 5);
    assert_eq!(meta["violations"], Value::Array(Vec::new()));
    assert_eq!(embedded(&page, "viz-data").as_array().unwrap().len(), lines);
    // Self-contained: nothing to fetch.
    for needle in ["http://", "https://", "src=", "<link", "@import"] {
        assert!(!page.contains(needle), "the page holds {needle}");
    }

    let c = faultline(&["viz", "--trace", &p(&trace), "-o", &p(&from_trace)]);
    assert_eq!(c.status.code(), Some(0), "{}", text(&c));
    let saved = std::fs::read_to_string(&from_trace).unwrap();
    assert_eq!(
        embedded(&saved, "viz-data"),
        embedded(&page, "viz-data"),
        "a saved trace draws the same events"
    );
    assert_eq!(embedded(&saved, "viz-meta")["nodes"], 5);
}

#[test]
fn a_window_keeps_only_its_events_and_a_failing_seed_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("w.html");
    let o = faultline(&[
        "viz",
        "scenarios/library/raft-figure8.toml",
        "--seed",
        "12",
        "--bug",
        "raft.ack_before_fsync",
        "--from",
        "2.8s",
        "--to",
        "2.9s",
        "--node",
        "1",
        "-o",
        page.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("leader_completeness"));
    let page = std::fs::read_to_string(&page).unwrap();
    let data = embedded(&page, "viz-data");
    let records = data.as_array().unwrap();
    assert!(!records.is_empty());
    for r in records {
        let t = r["t"].as_u64().unwrap();
        assert!((2_800_000..=2_900_000).contains(&t), "{r}");
        let nodes: Vec<u64> = ["n", "a", "b"]
            .iter()
            .filter_map(|k| r[*k].as_u64())
            .collect();
        assert!(nodes.is_empty() || nodes.contains(&1), "{r}");
    }
    let meta = embedded(&page, "viz-meta");
    let v = &meta["violations"][0];
    assert_eq!(v["kind"], "leader_completeness");
    // The cited application at 1.068364s is outside the window. n0's election (an
    // observation of n0) is filtered out by --node 1, so what is marked is what n0 did
    // at that instant and concerns n1: the delivery of n1's vote that elected it.
    assert_eq!(v["cites"][0]["time"], 1_068_364);
    let cited = v["cited"].as_array().expect("positions");
    assert!(!cited.is_empty(), "{v}");
    for c in cited {
        let r = &records[c.as_u64().unwrap() as usize];
        assert_eq!(r["t"], 2_855_164, "{r}");
        assert_eq!(r["k"], "deliver", "{r}");
        assert_eq!(
            (r["a"].as_u64(), r["b"].as_u64()),
            (Some(1), Some(0)),
            "{r}"
        );
    }
}

#[test]
fn a_linearizability_violation_cites_the_operations_that_cannot_be_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("l.html");
    let o = faultline(&[
        "viz",
        "scenarios/library/raft-isolate-leader.toml",
        "--seed",
        "2",
        "--bug",
        "raft.local_read_without_quorum",
        "-o",
        page.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let page = std::fs::read_to_string(&page).unwrap();
    let meta = embedded(&page, "viz-meta");
    let data = embedded(&page, "viz-data");
    let v = meta["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["kind"] == "not_linearizable")
        .expect("a linearizability violation");
    let cites = v["cites"].as_array().unwrap();
    assert!(cites.len() >= 2, "{v}");
    // Every cited operation is marked by its own invocation or completion event.
    for c in cites {
        let marked = v["cited"].as_array().unwrap().iter().any(|p| {
            let r = &data[p.as_u64().unwrap() as usize];
            (r["k"] == "invoke" || r["k"] == "complete")
                && r["o"] == c["op"]
                && r["t"] == c["time"]
                && r["n"] == c["node"]
        });
        assert!(marked, "{c} is marked: {v}");
    }
}

#[test]
fn bad_arguments_exit_2_and_say_what_was_expected() {
    let cases: &[(&[&str], &str)] = &[
        (&["viz", STEADY], "--seed"),
        (&["viz"], "<FILE>"),
        (
            &["viz", "--trace", "x.jsonl", "--seed", "1"],
            "cannot be used with",
        ),
        (&["viz", "--trace", "/nonexistent/t.jsonl"], "cannot open"),
        (
            &["viz", STEADY, "--seed", "1", "--from", "2s", "--to", "1s"],
            "is after",
        ),
        (&["viz", STEADY, "--seed", "1", "--node", "9"], "outside"),
        (&["viz", STEADY, "--seed", "1", "--bug", "nope"], "nope"),
    ];
    for (args, expected) in cases {
        let o = faultline(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(expected), "{args:?}: {}", text(&o));
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"time\":1,\"event\":\"heal\"}\n{oops\n").unwrap();
    let o = faultline(&[
        "viz",
        "--trace",
        bad.to_str().unwrap(),
        "-o",
        dir.path().join("b.html").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("trace line 2"), "{}", text(&o));
}

#[test]
fn help_states_the_page_limits() {
    let o = faultline(&["viz", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o);
    assert!(help.contains("at most 250000 events"), "{help}");
    assert!(help.contains("at most 3000 elements of one kind"), "{help}");
}
