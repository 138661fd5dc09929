//! Exploration power, end to end through the binary: coverage and `expect_reached`,
//! sharded sweeps merged back into one, run diffs, and the bug zoo.

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

fn last_json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let line = out.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is JSON ({e}): {out}"))
}

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
