//! Integration tests of the `faultline` binary: exit statuses, output, and error
//! messages for bad files and bad arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn faultline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("the binary runs")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

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
        "replay: faultline run {LOSSY} --seed 1 --bug broadcast.no_retransmit"
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
