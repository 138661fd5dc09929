//! Integration tests of the `faultline` binary: exit statuses, output, and error
//! messages for bad files and bad arguments.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{faultline, stderr, stdout, workspace};

fn trace_hash(o: &Output) -> String {
    let out = stdout(o);
    let line = out.lines().last().expect("some output").to_string();
    assert!(
        line.starts_with("trace-hash: "),
        "last line is the hash: {out}"
    );
    let hash = line["trace-hash: ".len()..].to_string();
    assert_eq!(hash.len(), 16);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    hash
}

const STEADY: &str = "scenarios/library/broadcast-steady.toml";
const LOSSY: &str = "scenarios/library/broadcast-lossy-partitions.toml";

#[test]
fn run_passes_prints_seed_first_and_hash_last_and_is_repeatable() {
    let a = faultline(&["run", STEADY, "--seed", "11"]);
    assert_eq!(a.status.code(), Some(0), "{}{}", stdout(&a), stderr(&a));
    assert!(stdout(&a).starts_with("seed: 11\n"));
    assert!(stdout(&a).contains("result: ok"));
    assert!(stdout(&a).contains("faults: none"));
    let b = faultline(&["run", STEADY, "--seed", "11"]);
    assert_eq!(trace_hash(&a), trace_hash(&b));
    let c = faultline(&["run", STEADY, "--seed", "12"]);
    assert_ne!(trace_hash(&a), trace_hash(&c));
}

#[test]
fn every_canonical_scenario_checks_and_runs_clean() {
    let dir = workspace().join("scenarios/library");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("library exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = path.to_str().expect("utf-8 path");
            let check = faultline(&["check", p]);
            assert_eq!(check.status.code(), Some(0), "{p}: {}", stderr(&check));
            let run = faultline(&["run", p]);
            assert_eq!(run.status.code(), Some(0), "{p}: {}", stdout(&run));
            count += 1;
        }
    }
    assert!(count >= 3, "the library holds the canonical scenarios");
}

#[test]
fn a_bug_flag_is_found_and_exits_1_with_a_replay_command() {
    let o = faultline(&[
        "run",
        LOSSY,
        "--seed",
        "1",
        "--bug",
        "broadcast.no_retransmit",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("agreement violated"), "{out}");
    assert!(out.contains(&format!(
        "replay: faultline replay {LOSSY} --seed 1 --bug broadcast.no_retransmit"
    )));
    trace_hash(&o);
}

#[test]
fn trace_file_is_json_lines_matching_the_printed_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.jsonl");
    let o = faultline(&[
        "run",
        STEADY,
        "--seed",
        "3",
        "--trace",
        path.to_str().unwrap(),
        "--print-trace",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let text = std::fs::read_to_string(&path).expect("trace written");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(lines.iter().any(|l| l["event"] == "send"));
    assert!(lines.iter().any(|l| l["event"] == "deliver"));
    assert!(lines.iter().all(|l| l["time"].is_u64()));
    let out = stdout(&o);
    let printed = out
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(printed, lines.len(), "one text line per JSON event");
}

#[test]
fn bad_files_name_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "unknown-key.toml",
            "protocol = \"broadcast\"\nnodes = 3\nduration = \"1s\"\nspeed = 9\n",
            ":4:1:",
            "unknown field `speed`",
        ),
        (
            "wrong-type.toml",
            "protocol = \"broadcast\"\nnodes = \"three\"\nduration = \"1s\"\n",
            ":2:9:",
            "invalid type",
        ),
        (
            "bad-duration.toml",
            "protocol = \"broadcast\"\nnodes = 3\nduration = \"10 parsecs\"\n",
            ":3:12:",
            "unknown unit",
        ),
        (
            "range.toml",
            "protocol = \"broadcast\"\nnodes = 3\nduration = \"1s\"\n[network]\ndrop = 1.5\n",
            ":5:8:",
            "expected a probability",
        ),
        (
            "protocol.toml",
            "protocol = \"zab\"\nnodes = 3\nduration = \"1s\"\n",
            ":1:12:",
            "unknown protocol `zab`",
        ),
        (
            "settings.toml",
            "protocol = \"broadcast\"\nnodes = 3\nduration = \"1s\"\n[settings]\nretransmit = \"5ms\"\n",
            ":5:1:",
            "unknown field `retransmit`",
        ),
        (
            "node.toml",
            "protocol = \"broadcast\"\nnodes = 3\nduration = \"1s\"\n[[schedule]]\nat = \"1s\"\nfault = \"crash\"\nnode = 7\n",
            ":4:1:",
            "node 7 is outside 0..3",
        ),
        (
            "syntax.toml",
            "protocol = \"broadcast\"\nnodes = 3\nduration = \n",
            ":3:",
            "",
        ),
        (
            "storage.toml",
            "protocol = \"broadcast\"\nnodes = 3\nduration = \"1s\"\n[storage]\nengine = \"bitcask\"\n",
            ":4:1:",
            "keeps no key-value data",
        ),
        (
            "engine.toml",
            "protocol = \"raft\"\nnodes = 3\nduration = \"1s\"\n[storage]\nengine = \"rocksdb\"\n",
            ":5:10:",
            "unknown storage engine `rocksdb`",
        ),
        (
            "keys.toml",
            "protocol = \"broadcast\"\nnodes = 3\nduration = \"1s\"\n[workload]\nkeys = 4\n",
            ":5:8:",
            "apply to key-value protocols",
        ),
        (
            "mix.toml",
            "protocol = \"raft\"\nnodes = 3\nduration = \"1s\"\n[workload]\nmix = { get = 0.0 }\n",
            ":5:7:",
            "at least one operation weight must be positive",
        ),
        (
            "raft-settings.toml",
            "protocol = \"raft\"\nnodes = 3\nduration = \"1s\"\n[settings]\nheartbeat = \"5ms\"\n",
            ":5:1:",
            "unknown field `heartbeat`",
        ),
    ];
    for (name, text, position, message) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        for command in ["check", "run"] {
            let o = faultline(&[command, path.to_str().unwrap()]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{name} {command}: {err}");
            assert!(
                err.contains(&format!("{name}{position}")),
                "{name}: wanted {position} in: {err}"
            );
            assert!(
                err.contains(message),
                "{name}: wanted `{message}` in: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        vec!["run"],
        vec!["run", STEADY, "--seed", "banana"],
        vec!["run", STEADY, "--bug", "broadcast.no_such_bug"],
        vec!["run", "does/not/exist.toml"],
        vec!["frobnicate"],
        vec!["explore", STEADY, "--seeds", "5..2"],
        vec!["explore", STEADY, "--seeds", "0..2", "--shard", "3/2"],
        vec!["explore", STEADY, "--seeds", "0..2", "--jobs", "0"],
        vec!["replay", STEADY],
        vec!["replay", STEADY, "--seed", "1", "--node", "99"],
        vec!["shrink", STEADY],
    ] {
        let o = faultline(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let o = faultline(&["run", STEADY, "--bug", "broadcast.no_such_bug"]);
    assert!(
        stderr(&o).contains("unknown bug flag `broadcast.no_such_bug`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn list_names_protocols_checkers_and_bug_flags() {
    let o = faultline(&["list"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for needle in [
        "broadcast",
        "broadcast_delivery",
        "broadcast.no_dedup",
        "partition",
    ] {
        assert!(out.contains(needle), "{needle} in {out}");
    }
    let j = faultline(&["list", "--json"]);
    let value: serde_json::Value = serde_json::from_str(stdout(&j).trim()).expect("JSON");
    assert_eq!(value["protocols"][0]["name"], "broadcast");
    assert!(value["protocols"][0]["bug_flags"].as_array().unwrap().len() >= 3);
}

/// Copies a library scenario into a temporary directory (so regression files written
/// next to it stay out of the repository).
fn scratch_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let to = dir.path().join(name);
    std::fs::copy(workspace().join("scenarios/library").join(name), &to).expect("copy");
    (dir, to)
}

#[test]
fn explore_finds_a_bug_flag_records_it_and_run_rechecks_it() {
    let (_dir, file) = scratch_copy("broadcast-lossy-partitions.toml");
    let f = file.to_str().unwrap();
    let o = faultline(&[
        "explore",
        f,
        "--seeds",
        "0..6",
        "--jobs",
        "2",
        "--bug",
        "broadcast.no_dedup",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "replay: faultline replay {f} --seed 0 --bug broadcast.no_dedup"
        )),
        "{out}"
    );
    let last: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap()).expect("JSON last line");
    assert_eq!(last["seeds_run"], 6);
    assert_eq!(last["failures"].as_array().unwrap().len(), 6);
    assert_eq!(last["failures"][0]["kind"], "duplicate_delivery");
    assert!(last["seeds_per_sec"].as_f64().unwrap() > 0.0);
    assert!(last["events_per_sec"].as_f64().unwrap() > 0.0);
    let recorded = std::fs::read_to_string(file.with_extension("regressions")).expect("recorded");
    assert_eq!(recorded.matches("[[failure]]").count(), 6);

    // Exploring again records nothing new.
    let again = faultline(&[
        "explore",
        f,
        "--seeds",
        "0..6",
        "--bug",
        "broadcast.no_dedup",
    ]);
    assert!(stdout(&again).contains("regressions: 0 new seed(s)"));

    // `run` without --seed re-checks them: still failing with the flag on, as recorded.
    let run = faultline(&["run", f]);
    assert_eq!(run.status.code(), Some(0), "{}", stdout(&run));
    assert!(stdout(&run).contains("regressions: 6 recorded seed(s)"));
    assert!(!stdout(&run).contains("CHANGED"));

    // Replay knows the recorded hash.
    let replay = faultline(&["replay", f, "--seed", "3", "--bug", "broadcast.no_dedup"]);
    assert_eq!(replay.status.code(), Some(1));
    assert!(
        stdout(&replay).contains("determinism: the trace hash matches"),
        "{}",
        stdout(&replay)
    );
}

#[test]
fn explore_results_do_not_depend_on_jobs_or_sharding() {
    let (_dir, file) = scratch_copy("broadcast-lossy-partitions.toml");
    let f = file.to_str().unwrap();
    let failures = |args: &[&str]| -> Vec<(u64, String)> {
        let mut all = vec![
            "explore",
            f,
            "--bug",
            "broadcast.no_relay",
            "--json",
            "--no-record",
        ];
        all.extend_from_slice(args);
        let o = faultline(&all);
        let out = stdout(&o);
        let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        v["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["seed"].as_u64().unwrap(),
                    f["trace_hash"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let one = failures(&["--seeds", "0..8", "--jobs", "1"]);
    assert!(!one.is_empty());
    assert_eq!(one, failures(&["--seeds", "0..8", "--jobs", "2"]));
    let mut sharded = failures(&["--seeds", "0..8", "--shard", "1/2"]);
    sharded.extend(failures(&["--seeds", "0..8", "--shard", "2/2"]));
    sharded.sort();
    assert_eq!(one, sharded, "shards concatenate to the whole sweep");
}

#[test]
fn explore_stops_on_first_failure() {
    let o = faultline(&[
        "explore",
        LOSSY,
        "--seeds",
        "0..40",
        "--jobs",
        "1",
        "--bug",
        "broadcast.no_dedup",
        "--stop-on-first",
        "--no-record",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(v["seeds_run"], 1);
}

#[test]
fn replay_explains_the_violation_and_honours_the_window() {
    let o = faultline(&[
        "replay",
        LOSSY,
        "--seed",
        "1",
        "--bug",
        "broadcast.no_retransmit",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("violations:"), "{out}");
    assert!(out.contains("property \"agreement\""), "{out}");
    assert!(out.lines().last().unwrap().starts_with("trace-hash: "));
    let run = faultline(&[
        "run",
        LOSSY,
        "--seed",
        "1",
        "--bug",
        "broadcast.no_retransmit",
    ]);
    assert_eq!(trace_hash(&o), trace_hash(&run), "replay is the same run");

    let w = faultline(&[
        "replay", LOSSY, "--seed", "1", "--from", "2s", "--to", "2.01s", "--node", "3",
    ]);
    assert_eq!(w.status.code(), Some(0), "{}", stderr(&w));
    for line in stdout(&w)
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
    {
        let time: f64 = line
            .trim_start()
            .split('s')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((2.0..=2.01).contains(&time), "{line}");
        assert!(line.contains("n3") || !line.contains(" n"), "{line}");
    }
    let bad = faultline(&["replay", LOSSY, "--seed", "1", "--from", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn shrink_output_is_smaller_and_fails_the_same_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("small.toml");
    let o = faultline(&[
        "shrink",
        LOSSY,
        "--seed",
        "1",
        "--bug",
        "broadcast.no_retransmit",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("verified: fails with missing_delivery"),
        "{out}"
    );
    let size = |prefix: &str| -> (u64, f64) {
        let line = out.lines().find(|l| l.starts_with(prefix)).expect(prefix);
        let faults: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let duration = line
            .split(", ")
            .nth(1)
            .unwrap()
            .trim_end_matches(" duration");
        let secs = scenarios::duration::parse_duration(duration).unwrap().0 as f64 / 1e6;
        (faults, secs)
    };
    let (before_faults, before_secs) = size("before:");
    let (after_faults, after_secs) = size("after:");
    assert!(after_faults <= before_faults && after_secs <= before_secs);
    assert!(
        after_faults < before_faults || after_secs < before_secs,
        "{out}"
    );
    // The written scenario stands alone: its own seed and bug flags reproduce the failure.
    let run = faultline(&["run", out_path.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "{}", stdout(&run));
    assert!(stdout(&run).contains("missing_delivery"));
    let nothing = faultline(&["shrink", STEADY, "--seed", "1"]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(stderr(&nothing).contains("does not fail"));
}

#[test]
fn a_key_value_run_saves_its_history_and_check_history_judges_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("run.jsonl");
    let good = faultline(&[
        "run",
        "scenarios/library/raft-isolate-leader.toml",
        "--seed",
        "2",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(good.status.code(), Some(0), "{}", stdout(&good));
    let history = dir.path().join("run.history.jsonl");
    assert!(history.exists(), "{}", stdout(&good));
    let check = faultline(&["check-history", history.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    assert!(stdout(&check).contains("verdict: linearizable"));

    // A leader answering reads locally under a partition gives a stale read, at the seed
    // recorded for that flag.
    let recorded = std::fs::read_to_string(
        workspace().join("scenarios/library/raft-isolate-leader.regressions"),
    )
    .expect("regression file");
    let seed = recorded
        .split("[[failure]]")
        .find(|f| f.contains("raft.local_read_without_quorum"))
        .and_then(|f| f.lines().find_map(|l| l.strip_prefix("seed = ")))
        .expect("a recorded seed")
        .trim()
        .to_string();
    let bad_trace = dir.path().join("bad.jsonl");
    let bad = faultline(&[
        "run",
        "scenarios/library/raft-isolate-leader.toml",
        "--seed",
        &seed,
        "--bug",
        "raft.local_read_without_quorum",
        "--trace",
        bad_trace.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", stdout(&bad));
    let bad_history = dir.path().join("bad.history.jsonl");
    let check = faultline(&["check-history", bad_history.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1), "{}", stdout(&check));

    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "{\"process\": 1, \"type\": \"ok\"}\nnot json\n").unwrap();
    let check = faultline(&["check-history", garbage.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2));
    assert!(stderr(&check).contains("line 1"), "{}", stderr(&check));
}

#[test]
fn bully_reports_its_metrics_and_other_protocols_report_none() {
    let bully = "scenarios/library/bully-partitions.toml";
    let run = faultline(&["run", bully, "--seed", "2"]);
    assert_eq!(run.status.code(), Some(0), "{}", stdout(&run));
    let line = stdout(&run)
        .lines()
        .find(|l| l.starts_with("metrics: "))
        .map(str::to_string)
        .expect("a metrics line");
    assert!(
        line.contains("split_brain_us ") && line.contains("leaderships "),
        "{line}"
    );
    let o = faultline(&["explore", bully, "--seeds", "0..4", "--jobs", "2", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let split = &v["metrics"]["split_brain_us"];
    assert!(split["max"].as_u64().unwrap() >= split["median"].as_u64().unwrap());
    assert!(split["total"].as_u64().unwrap() >= split["max"].as_u64().unwrap());
    assert!(out.contains("split_brain_us: median "), "{out}");
    // Protocols that measure nothing print and emit what they did before.
    let run = faultline(&["run", STEADY, "--seed", "3"]);
    assert!(!stdout(&run).contains("metrics"));
    let o = faultline(&["explore", STEADY, "--seeds", "0..2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert!(v.get("metrics").is_none(), "{v}");
}
