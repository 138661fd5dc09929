//! The scenario file schema, as it is written (TOML). Every table rejects unknown keys;
//! values are range-checked as they are read, so an error points at the offending value.
//! `docs/scenarios.md` documents every key.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

use crate::duration::Duration;

/// A probability in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Probability(pub f64);

impl<'de> Deserialize<'de> for Probability {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Probability;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a probability: a number from 0.0 to 1.0")
            }
            fn visit_f64<E: de::Error>(self, p: f64) -> Result<Probability, E> {
                if (0.0..=1.0).contains(&p) {
                    Ok(Probability(p))
                } else {
                    Err(E::custom(format!(
                        "{p} is out of range; expected a probability from 0.0 to 1.0"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, p: i64) -> Result<Probability, E> {
                self.visit_f64(p as f64)
            }
            fn visit_u64<E: de::Error>(self, p: u64) -> Result<Probability, E> {
                self.visit_f64(p as f64)
            }
        }
        deserializer.deserialize_f64(V)
    }
}

/// A `{ min = "…", max = "…" }` range of durations.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationRange {
    pub min: Duration,
    pub max: Duration,
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Defaults to the file name without `.toml`.
    pub name: Option<String>,
    pub description: Option<String>,
    pub protocol: Spanned<String>,
    pub nodes: Spanned<u32>,
    /// The seed `run` uses when `--seed` is not given.
    pub seed: Option<u64>,
    pub duration: Spanned<Duration>,
    pub quiet_period: Option<Spanned<Duration>>,
    pub checkers: Option<Spanned<Vec<Spanned<String>>>>,
    pub bugs: Option<Spanned<Vec<Spanned<String>>>>,
    /// Coverage points (faults and rare paths) a sweep must reach; `explore` fails with
    /// the kind `coverage` otherwise.
    pub expect_reached: Option<Spanned<Vec<Spanned<String>>>>,
    /// Protocol settings; checked against the protocol's own schema in a second pass.
    pub settings: Option<toml::Table>,
    pub network: Option<NetworkFile>,
    pub clock: Option<ClockFile>,
    pub disk: Option<DiskFile>,
    pub storage: Option<Spanned<StorageFile>>,
    pub workload: Option<Spanned<WorkloadFile>>,
    pub nemesis: Option<Spanned<NemesisFile>>,
    #[serde(default)]
    pub schedule: Vec<Spanned<ScheduleEntry>>,
    /// A safety bound on the number of kernel events in one run.
    pub max_events: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkProfile {
    /// 1–5 ms, no loss (the default).
    Lan,
    /// Zero latency, no loss, no duplication: the reference's synchronous delivery.
    Instant,
    /// 20–100 ms with a long tail to 1 s.
    Wan,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    pub profile: Option<NetworkProfile>,
    pub latency: Option<Spanned<LatencyFile>>,
    pub drop: Option<Probability>,
    pub duplicate: Option<Probability>,
    #[serde(default, rename = "link")]
    pub links: Vec<Spanned<LinkFile>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    Constant,
    Uniform,
    LongTail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyFile {
    pub distribution: Distribution,
    /// For `constant`.
    pub delay: Option<Duration>,
    /// For `uniform` and `long_tail`.
    pub min: Option<Duration>,
    pub max: Option<Duration>,
    /// For `long_tail`.
    pub tail_probability: Option<Probability>,
    pub tail_max: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkFile {
    pub from: u32,
    pub to: u32,
    /// Also apply to `to → from`.
    #[serde(default)]
    pub both_directions: bool,
    pub latency: Option<Spanned<LatencyFile>>,
    pub drop: Option<Probability>,
    pub duplicate: Option<Probability>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockFile {
    pub max_offset: Option<Duration>,
    pub max_drift_ppm: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskFile {
    pub sector_size: Option<Spanned<u32>>,
    /// On a crash, each unsynced sector is kept with this probability, torn with
    /// `crash_torn`, and otherwise lost.
    pub crash_keep: Option<Spanned<Probability>>,
    pub crash_torn: Option<Spanned<Probability>>,
    /// Probability that an un-synced directory operation survives a crash.
    pub crash_keep_dir_op: Option<Probability>,
    pub fsync_fail: Option<Probability>,
    pub read_bit_flip: Option<Probability>,
    pub latent_sector_error: Option<Probability>,
    pub misdirected_write: Option<Probability>,
    /// Capacity in bytes; writes beyond it fail with "no space".
    pub capacity_bytes: Option<u64>,
    /// Path prefixes (on each node's disk) the per-call faults are confined to.
    pub fault_paths: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadFile {
    pub clients: Option<Spanned<u32>>,
    pub think: Option<Spanned<DurationRange>>,
    pub timeout: Option<Spanned<Duration>>,
    pub max_operations: Option<u64>,
    pub retries: Option<Spanned<u32>>,
    /// Key-value protocols: how many keys (`k0`, `k1`, ...).
    pub keys: Option<Spanned<u32>>,
    /// Key-value protocols: relative weights of the operations.
    pub mix: Option<Spanned<MixFile>>,
    /// Key-value protocols: literal values a put may write instead of a unique one.
    pub literal_values: Option<Spanned<Vec<String>>>,
    /// Key-value protocols: the chance that a put writes one of `literal_values`.
    pub literal_value_rate: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixFile {
    #[serde(default)]
    pub get: f64,
    #[serde(default)]
    pub put: f64,
    #[serde(default)]
    pub cas: f64,
    #[serde(default)]
    pub append: f64,
}

/// Which storage engine each node keeps its key-value data in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    /// One engine for every node.
    pub engine: Option<Spanned<String>>,
    /// Node `i` uses `engines[i % len]`.
    pub engines: Option<Spanned<Vec<Spanned<String>>>>,
    /// Bitcask's data-file size (default 64 MiB): small files rotate, merge and write
    /// hint files within a run.
    pub bitcask_max_file_bytes: Option<Spanned<u64>>,
    /// Bitcask merges when this many frozen log files accumulate (default 8; 0 never).
    pub bitcask_merge_trigger_files: Option<Spanned<u32>>,
    /// The B+tree checkpoints when more logged pages than this are not yet in its data
    /// file (default 1024): small values checkpoint (write pages in place) often.
    pub btree_max_dirty_pages: Option<Spanned<u32>>,
    /// The B+tree's page size (default 4096; a power of two from 1024 to 32768): smaller
    /// pages make more of them, so a checkpoint rewrites a smaller share of the tree.
    pub btree_page_size: Option<Spanned<u32>>,
    /// The LSM's memtable size (simulation default 8 KiB): smaller flushes more often.
    pub lsm_memtable_bytes: Option<Spanned<u32>>,
    /// The LSM's level-1 budget (simulation default 32 KiB; level n holds this times
    /// 10^(n−1)): smaller pushes a run's data into deeper levels.
    pub lsm_level_base_bytes: Option<Spanned<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKindName {
    Crash,
    Pause,
    Partition,
    Clog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeName {
    Isolate,
    IsolateLeader,
    RandomHalves,
    MajoritiesRing,
    Bridge,
    OneWay,
    Links,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NemesisFile {
    pub interval: DurationRange,
    pub fault_duration: Option<DurationRange>,
    pub kinds: Option<Vec<FaultKindName>>,
    #[serde(default)]
    pub swarm: bool,
    pub max_down: Option<u32>,
    pub clog_delay: Option<Duration>,
    pub partition_shapes: Option<Vec<ShapeName>>,
    #[serde(default)]
    pub aim_at_leader: bool,
    /// The probability that a crash strikes inside an operation (a crash point after a
    /// few more disk mutations) rather than between handlers.
    pub crash_inside_operation: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultName {
    Crash,
    Restart,
    Pause,
    Resume,
    Partition,
    Heal,
    Clog,
    Unclog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    pub at: Duration,
    pub fault: FaultName,
    /// For crash, restart, pause, resume, and the `isolate` shape.
    pub node: Option<u32>,
    /// For partition.
    pub shape: Option<ShapeName>,
    /// For the `one_way` shape and for clog.
    pub from: Option<NodeList>,
    pub to: Option<NodeList>,
    /// For the `links` shape: `[[0, 1], [1, 0]]`.
    pub links: Option<Vec<[u32; 2]>>,
    /// For clog: the added delay and how long it lasts.
    pub extra: Option<Duration>,
    pub duration: Option<Duration>,
    /// For crash: strike inside an operation, after this many more disk mutations.
    pub after_mutations: Option<u32>,
}

/// One node (`0`) or several (`[0, 1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeList(pub Vec<u32>);

impl<'de> Deserialize<'de> for NodeList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a node number or a list of node numbers")]
        enum OneOrMany {
            One(u32),
            Many(Vec<u32>),
        }
        Ok(match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(n) => NodeList(vec![n]),
            OneOrMany::Many(v) => NodeList(v),
        })
    }
}
