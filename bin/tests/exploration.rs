//! Exploration power, end to end through the binary: coverage and `expect_reached`,
//! sharded sweeps merged back into one, run diffs, and the bug zoo.

mod common;

use std::path::{Path, PathBuf};

use common::{faultline, last_json, stderr, stdout, workspace};

/// A small broadcast scenario; `faults` says whether the nemesis and the lossy network
/// are on. Either way it expects crashes and lost messages to happen.
fn broadcast_scenario(dir: &Path, faults: bool) -> PathBuf {
    let (drop, nemesis) = if faults {
        (
            "0.05",
            "[nemesis]\ninterval = { min = \"200ms\", max = \"600ms\" }\n\
             fault_duration = { min = \"100ms\", max = \"400ms\" }\nkinds = [\"crash\", \"partition\"]\n",
        )
    } else {
        ("0.0", "")
    };
    let text = format!(
        "protocol = \"broadcast\"\nnodes = 3\nduration = \"3s\"\nquiet_period = \"1s\"\n\
         expect_reached = [\"fault.crash\", \"net.loss\"]\n\n\
         [network]\ndrop = {drop}\n\n[workload]\nclients = 2\n\
         think = {{ min = \"20ms\", max = \"80ms\" }}\ntimeout = \"500ms\"\n\n{nemesis}"
    );
    let path = dir.join(if faults { "on.toml" } else { "off.toml" });
    std::fs::write(&path, text).expect("write scenario");
    path
}

#[test]
fn a_sweep_whose_fault_injection_is_off_fails_with_the_coverage_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let off = broadcast_scenario(dir.path(), false);
    let o = faultline(&[
        "explore",
        off.to_str().unwrap(),
        "--seeds",
        "0..8",
        "--jobs",
        "2",
        "--no-record",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let v = last_json(&o);
    assert_eq!(v["failures"].as_array().unwrap().len(), 0, "no seed fails");
    assert_eq!(v["coverage_failure"]["kind"], "coverage");
    assert_eq!(
        v["coverage_failure"]["expected_not_reached"],
        serde_json::json!(["fault.crash", "net.loss"])
    );
    assert!(
        stdout(&o).contains(
            "FAIL coverage: expected but never reached in 8 seeds: fault.crash, net.loss"
        ),
        "{}",
        stdout(&o)
    );

    // The same scenario with its faults on reaches both, and passes.
    let on = broadcast_scenario(dir.path(), true);
    let o = faultline(&[
        "explore",
        on.to_str().unwrap(),
        "--seeds",
        "0..8",
        "--jobs",
        "2",
        "--no-record",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v = last_json(&o);
    assert!(v["coverage_failure"].is_null());
    let coverage = &v["report"]["coverage"];
    assert!(coverage["fault.crash"]["seeds"].as_u64().unwrap() > 0);
    assert!(coverage["net.loss"]["hits"].as_u64().unwrap() > 0);
}

#[test]
fn an_unknown_expected_point_is_a_scenario_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("typo.toml");
    std::fs::write(
        &path,
        "protocol = \"raft\"\nnodes = 3\nduration = \"1s\"\nexpect_reached = [\"raft.leader_steped_down\"]\n",
    )
    .unwrap();
    let o = faultline(&["check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("typo.toml:4:19"), "{err}");
    assert!(
        err.contains("unknown coverage point `raft.leader_steped_down`"),
        "{err}"
    );
    assert!(err.contains("raft.leader_stepped_down"), "{err}");
}

/// Four shards run as separate processes, merged, give exactly the report of the same
/// sweep run at once: failures, coverage, metrics and counts.
#[test]
fn four_shards_merged_equal_the_unsharded_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A flag that fails some seeds and not others, so failures are merged too.
    let file = "scenarios/library/broadcast-lossy-partitions.toml";
    let common = [
        "explore",
        file,
        "--seeds",
        "3..23",
        "--jobs",
        "1",
        "--no-record",
        "--bug",
        "broadcast.no_dedup",
    ];
    let mut shards = Vec::new();
    for k in 1..=4 {
        let out = dir.path().join(format!("shard{k}.json"));
        let shard = format!("{k}/4");
        let mut args: Vec<&str> = common.to_vec();
        args.extend(["--shard", &shard, "--out", out.to_str().unwrap()]);
        let o = faultline(&args);
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{}{}",
            stdout(&o),
            stderr(&o)
        );
        shards.push(out);
    }
    let whole_path = dir.path().join("whole.json");
    let mut args: Vec<&str> = common.to_vec();
    args.extend(["--out", whole_path.to_str().unwrap()]);
    let whole = faultline(&args);
    let merged_path = dir.path().join("merged.json");
    // Shard order on the command line does not matter.
    let merge = faultline(&[
        "merge",
        shards[2].to_str().unwrap(),
        shards[0].to_str().unwrap(),
        shards[3].to_str().unwrap(),
        shards[1].to_str().unwrap(),
        "--out",
        merged_path.to_str().unwrap(),
    ]);
    assert_eq!(
        merge.status.code(),
        whole.status.code(),
        "{}{}",
        stdout(&merge),
        stderr(&merge)
    );
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let whole = read(&whole_path)["report"].clone();
    let merged = read(&merged_path)["report"].clone();
    assert_eq!(merged, whole);
    assert_eq!(whole["seeds_run"], 20);
    assert!(
        !whole["failures"].as_array().unwrap().is_empty(),
        "the flag fails some seeds: {whole}"
    );
    assert!(whole["coverage"].as_object().unwrap().len() > 3);

    // A missing shard is refused, naming it.
    let o = faultline(&[
        "merge",
        shards[0].to_str().unwrap(),
        shards[1].to_str().unwrap(),
        shards[3].to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("shards missing: 3/4"), "{}", stderr(&o));
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Two seeds part at the first event whose recorded traces differ: `diff` finds that
/// very event (its index, time and kind on each side) and prints it.
#[test]
fn diff_of_two_seeds_prints_the_event_where_they_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = "scenarios/library/raft-steady.toml";
    let mut traces = Vec::new();
    for seed in ["3", "4"] {
        let path = dir.path().join(format!("{seed}.jsonl"));
        let o = faultline(&[
            "run",
            file,
            "--seed",
            seed,
            "--trace",
            path.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        traces.push(jsonl(&path));
    }
    let (a, b) = (&traces[0], &traces[1]);
    let known = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .expect("two seeds part somewhere");
    let o = faultline(&["diff", file, "--seed", "3", "--seed-b", "4", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("first divergence at event #{known} ")),
        "{out}"
    );
    let v = last_json(&o);
    let d = &v["divergence"];
    assert_eq!(d["index"], known);
    assert_eq!(d["a"]["time"], a[known]["time"]);
    assert_eq!(d["b"]["time"], b[known]["time"]);
    assert_eq!(d["a"]["kind"], a[known]["event"]);
    assert_eq!(d["b"]["kind"], b[known]["event"]);
    assert_eq!(v["events_a"], a.len());
    assert_eq!(v["events_b"], b.len());
    // The printed lines are the two events' transcript lines.
    let a_line = d["a"]["text"].as_str().unwrap();
    assert!(out.contains(&format!("A: #{known:<6} {a_line}")), "{out}");

    // A run against its own recorded trace: identical, exit 0.
    let o = faultline(&[
        "diff",
        file,
        "--seed",
        "3",
        "--trace-b",
        dir.path().join("3.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("the traces are identical"));

    // Replaying seed 3 against seed 4's trace points at the same event.
    let o = faultline(&[
        "replay",
        file,
        "--seed",
        "3",
        "--against",
        dir.path().join("4.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("first divergence at event #{known} ")),
        "{}",
        stdout(&o)
    );
}

/// Two bug-flag sets on one seed: the runs agree until the flag first matters.
#[test]
fn diff_of_two_flag_sets_parts_after_a_shared_prefix() {
    let file = "scenarios/library/broadcast-lossy-partitions.toml";
    let o = faultline(&[
        "diff",
        file,
        "--seed",
        "5",
        "--bug-b",
        "broadcast.no_dedup",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let v = last_json(&o);
    assert!(v["divergence"]["index"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["b"]
            .as_str()
            .unwrap()
            .contains("--bug broadcast.no_dedup")
    );
}

/// A recorded hash that no longer matches makes `replay` check determinism by running
/// the seed twice and comparing event by event.
#[test]
fn replay_explains_a_recorded_hash_that_no_longer_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("s.toml");
    std::fs::copy(
        workspace().join("scenarios/library/broadcast-steady.toml"),
        &scenario,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("s.regressions"),
        "[[failure]]\nseed = 7\nbugs = []\nkind = \"missing_delivery\"\n\
         trace_hash = \"0123456789abcdef\"\n",
    )
    .unwrap();
    let o = faultline(&["replay", scenario.to_str().unwrap(), "--seed", "7"]);
    let out = stdout(&o);
    assert!(
        out.contains("recorded with trace-hash 0123456789abcdef"),
        "{out}{}",
        stderr(&o)
    );
    assert!(
        out.contains("determinism holds (two runs of this seed agree event by event)"),
        "{out}"
    );
}

/// A reduced zoo, as CI can afford: flags with known fast detections, each found, and
/// the page written with its command line.
#[test]
fn a_reduced_zoo_finds_its_flags_and_writes_the_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("zoo.md");
    let o = faultline(&[
        "zoo",
        "--only",
        "broadcast.no_dedup",
        "--only",
        "raft.truncate_without_term_check",
        "--only",
        "bitcask.delete_before_rename",
        "--seeds",
        "30",
        "--offsets",
        "2",
        "--max-scenarios",
        "1",
        "--jobs",
        "2",
        "-o",
        page.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v = last_json(&o);
    let flags = v["flags"].as_array().unwrap();
    let names: Vec<&str> = flags.iter().map(|f| f["flag"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "broadcast.no_dedup",
            "raft.truncate_without_term_check",
            "bitcask.delete_before_rename"
        ]
    );
    for f in flags {
        assert_eq!(f["found"], true, "{f}");
        assert_eq!(f["windows"].as_array().unwrap().len(), 2, "{f}");
        assert!(f["median_seeds_to_failure"].as_u64().unwrap() >= 1, "{f}");
        assert!(!f["property"].as_str().unwrap().is_empty(), "{f}");
    }
    let md = std::fs::read_to_string(&page).unwrap();
    assert!(md.contains("faultline zoo --seeds 30 --offsets 2"), "{md}");
    assert!(md.contains("**3 of 3 flags found.**"), "{md}");
    assert!(md.contains("| `bitcask.delete_before_rename` |"), "{md}");
}

/// A flag the library's scenarios cannot reach is reported as not found, and the zoo
/// fails.
#[test]
fn the_zoo_reports_a_flag_it_cannot_find() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = dir.path().join("library");
    std::fs::create_dir(&library).unwrap();
    // No loss, no faults: a copy sent once always arrives, so never retransmitting
    // breaks nothing here.
    std::fs::write(
        library.join("broadcast-calm.toml"),
        "protocol = \"broadcast\"\nnodes = 3\nduration = \"1s\"\nquiet_period = \"500ms\"\n\n\
         [network]\ndrop = 0.0\n\n[workload]\nclients = 1\nthink = { min = \"50ms\", max = \"100ms\" }\n",
    )
    .unwrap();
    let page = dir.path().join("zoo.md");
    let o = faultline(&[
        "zoo",
        "--only",
        "broadcast.no_retransmit",
        "--seeds",
        "4",
        "--offsets",
        "1",
        "--library",
        library.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("broadcast.no_retransmit: NOT FOUND (tried broadcast-calm)"),
        "{}",
        stdout(&o)
    );
    let md = std::fs::read_to_string(&page).unwrap();
    assert!(md.contains("Not found: `broadcast.no_retransmit`"), "{md}");
}
