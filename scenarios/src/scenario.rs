//! Loading a scenario: parse the file strictly, validate every value against the cluster
//! and the protocol, and build the kernel's configuration.

use std::path::Path;

use sim_core::disk::DiskConfig;
use sim_core::fault::{Fault, FaultKind, NemesisConfig, PartitionShapeKind, ScheduledFault};
use sim_core::kv_workload::KvMix;
use sim_core::network::{Latency, LinkConfig, NetworkConfig, PartitionShape};
use sim_core::workload::ClientConfig;
use sim_core::{ClockConfig, NodeId, SimConfig, SimDuration, SimTime};
use toml::Spanned;

use crate::duration::Duration;
use crate::engines;
use crate::error::ScenarioError;
use crate::registry::{self, ProtocolEntry, WorkloadKind};
use crate::schema::*;

/// The most nodes a scenario may ask for.
pub const MAX_NODES: u32 = 1024;

/// A validated scenario, ready to run with any seed.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The path it was loaded from (or a label), for messages.
    pub file: String,
    /// The source text (protocol settings are read from it in a second, typed pass).
    pub text: String,
    pub name: String,
    pub description: Option<String>,
    pub protocol: &'static ProtocolEntry,
    /// The seed `run` uses without `--seed`.
    pub default_seed: u64,
    /// The kernel configuration; `seed` is set per run.
    pub sim: SimConfig,
    /// The checkers to run (by default all of the protocol's).
    pub checkers: Vec<String>,
    /// Bug flags switched on by the file itself.
    pub bugs: Vec<String>,
    /// Coverage points a sweep must reach (`expect_reached`; see `docs/coverage.md`).
    pub expect_reached: Vec<String>,
    /// The storage engine of each node (empty for protocols that keep no key-value data).
    pub engines: Vec<&'static str>,
    /// For key-value protocols: the number of keys and the operation mix.
    pub kv_workload: Option<(u32, KvMix)>,
    /// For key-value protocols: `[workload] literal_values` and `literal_value_rate`
    /// (empty and 0 when not set), see `KvWorkload::with_literal_values`.
    pub kv_literal_values: (Vec<String>, f64),
    /// Engine options set by `[storage]` (none by default).
    pub engine_tuning: engines::EngineTuning,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Io {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let default_name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".into());
        Scenario::parse(&file, &text, &default_name)
    }

    /// Parses and validates scenario text; `file` labels error messages.
    pub fn parse(file: &str, text: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
        let raw: ScenarioFile =
            toml::from_str(text).map_err(|e| ScenarioError::from_toml(file, text, &e))?;
        Builder { file, text }.build(raw, default_name)
    }

    /// The kernel configuration for one seed.
    pub fn sim_config(&self, seed: u64) -> SimConfig {
        let mut sim = self.sim.clone();
        sim.seed = seed;
        sim
    }
}

struct Builder<'a> {
    file: &'a str,
    text: &'a str,
}

impl Builder<'_> {
    fn error<T>(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, ScenarioError> {
        Err(ScenarioError::at(self.file, self.text, Some(span), message))
    }

    fn build(&self, raw: ScenarioFile, default_name: &str) -> Result<Scenario, ScenarioError> {
        let protocol = match registry::find(raw.protocol.get_ref()) {
            Some(p) => p,
            None => {
                return self.error(
                    raw.protocol.span(),
                    format!(
                        "unknown protocol `{}`; expected one of: {}",
                        raw.protocol.get_ref(),
                        registry::names().join(", ")
                    ),
                );
            }
        };
        let nodes = *raw.nodes.get_ref();
        if nodes == 0 || nodes > MAX_NODES {
            return self.error(
                raw.nodes.span(),
                format!("{nodes} nodes is out of range; expected 1 to {MAX_NODES}"),
            );
        }
        if let Err(message) = (protocol.check_node_count)(nodes) {
            return self.error(raw.nodes.span(), message);
        }
        let n = nodes as usize;
        let mut sim = SimConfig::new(raw.seed.unwrap_or(1), n);
        let duration = raw.duration.get_ref().0;
        if duration == SimDuration::ZERO {
            return self.error(raw.duration.span(), "duration must be positive");
        }
        sim.duration = duration;
        sim.quiet_period = match &raw.quiet_period {
            Some(q) if q.get_ref().0 > duration => {
                return self.error(
                    q.span(),
                    format!(
                        "quiet_period {} is longer than duration {duration}",
                        q.get_ref().0
                    ),
                );
            }
            Some(q) => q.get_ref().0,
            None => SimDuration((duration.0 / 4).min(SimDuration::from_secs(5).0)),
        };
        if let Some(max_events) = raw.max_events {
            sim.max_events = max_events;
        }
        if let Some(network) = raw.network {
            sim.network = self.network(network, n)?;
        }
        if let Some(clock) = raw.clock {
            sim.clock = self.clock(clock)?;
        }
        if let Some(disk) = raw.disk {
            sim.disk = self.disk(disk)?;
        }
        let kv_workload = self.kv_workload(protocol, raw.workload.as_ref())?;
        let kv_literal_values = self.kv_literal_values(protocol, raw.workload.as_ref())?;
        if protocol.workload == WorkloadKind::None {
            if let Some(workload) = &raw.workload {
                return self.error(
                    workload.span(),
                    format!(
                        "protocol {} takes no client requests, so `[workload]` does not apply",
                        protocol.name
                    ),
                );
            }
            sim.clients = None;
        } else {
            sim.clients = Some(self.workload(raw.workload.map(Spanned::into_inner))?);
        }
        let engines = self.engines(protocol, raw.storage.as_ref(), n)?;
        let engine_tuning = self.engine_tuning(raw.storage.as_ref())?;
        if let Some(nemesis) = raw.nemesis {
            sim.nemesis = Some(self.nemesis(nemesis, n)?);
        }
        for entry in &raw.schedule {
            let fault = self.fault(entry, n)?;
            sim.schedule.push(ScheduledFault {
                at: SimTime::ZERO + entry.get_ref().at.0,
                fault,
            });
        }
        sim.schedule.sort_by_key(|s| s.at);

        let checkers = match &raw.checkers {
            None => protocol
                .checkers
                .iter()
                .map(|c| c.name.to_string())
                .collect(),
            Some(list) => {
                let mut names = Vec::new();
                for name in list.get_ref() {
                    if !protocol.checkers.iter().any(|c| c.name == name.get_ref()) {
                        return self.error(
                            name.span(),
                            format!(
                                "unknown checker `{}` for protocol {}; expected one of: {}",
                                name.get_ref(),
                                protocol.name,
                                protocol
                                    .checkers
                                    .iter()
                                    .map(|c| c.name)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    }
                    names.push(name.get_ref().clone());
                }
                names
            }
        };
        let mut bugs = Vec::new();
        if let Some(list) = &raw.bugs {
            for name in list.get_ref() {
                if let Err(message) = registry::check_bug_flag(protocol, name.get_ref()) {
                    return self.error(name.span(), message);
                }
                bugs.push(name.get_ref().clone());
            }
        }

        let mut expect_reached = Vec::new();
        if let Some(list) = &raw.expect_reached {
            for name in list.get_ref() {
                if let Err(message) = crate::coverage::check_point(protocol, name.get_ref()) {
                    return self.error(name.span(), message);
                }
                if !expect_reached.contains(name.get_ref()) {
                    expect_reached.push(name.get_ref().clone());
                }
            }
        }

        // Protocol settings: a second, typed pass over the same text, so that errors
        // point into the `[settings]` table.
        (protocol.check_settings)(self.file, self.text)?;

        let scenario = Scenario {
            file: self.file.to_string(),
            text: self.text.to_string(),
            name: raw.name.unwrap_or_else(|| default_name.to_string()),
            description: raw.description,
            protocol,
            default_seed: sim.seed,
            sim,
            checkers,
            bugs,
            expect_reached,
            engines,
            kv_workload,
            kv_literal_values,
            engine_tuning,
        };
        if let Err(message) = scenario.sim.validate() {
            return Err(ScenarioError::at(self.file, self.text, None, message));
        }
        Ok(scenario)
    }

    fn latency(&self, spanned: &Spanned<LatencyFile>) -> Result<Latency, ScenarioError> {
        let l = spanned.get_ref();
        let need = |value: Option<Duration>, key: &str| {
            value.map(|d| d.0).ok_or_else(|| {
                ScenarioError::at(
                    self.file,
                    self.text,
                    Some(spanned.span()),
                    format!("a {:?} latency needs `{key}`", l.distribution).to_lowercase(),
                )
            })
        };
        let latency = match l.distribution {
            Distribution::Constant => Latency::Constant {
                delay: need(l.delay, "delay")?,
            },
            Distribution::Uniform => Latency::Uniform {
                min: need(l.min, "min")?,
                max: need(l.max, "max")?,
            },
            Distribution::LongTail => Latency::LongTail {
                min: need(l.min, "min")?,
                max: need(l.max, "max")?,
                tail_probability: l.tail_probability.map_or(0.01, |p| p.0),
                tail_max: need(l.tail_max, "tail_max")?,
            },
        };
        let unused = match l.distribution {
            Distribution::Constant => [
                ("min", l.min.is_some()),
                ("max", l.max.is_some()),
                ("tail_max", l.tail_max.is_some()),
            ],
            Distribution::Uniform => [
                ("delay", l.delay.is_some()),
                ("tail_max", l.tail_max.is_some()),
                ("tail_probability", l.tail_probability.is_some()),
            ],
            Distribution::LongTail => [
                ("delay", l.delay.is_some()),
                ("delay", false),
                ("delay", false),
            ],
        };
        if let Some((key, _)) = unused.iter().find(|(_, present)| *present) {
            return self.error(
                spanned.span(),
                format!(
                    "`{key}` does not apply to a {} latency",
                    distribution_name(l.distribution)
                ),
            );
        }
        if let Err(message) = latency.validate() {
            return self.error(spanned.span(), message);
        }
        Ok(latency)
    }

    fn network(&self, file: NetworkFile, n: usize) -> Result<NetworkConfig, ScenarioError> {
        let mut default_link = match file.profile.unwrap_or(NetworkProfile::Lan) {
            NetworkProfile::Lan => LinkConfig::default(),
            NetworkProfile::Instant => LinkConfig::instant(),
            NetworkProfile::Wan => LinkConfig {
                latency: Latency::LongTail {
                    min: SimDuration::from_millis(20),
                    max: SimDuration::from_millis(100),
                    tail_probability: 0.01,
                    tail_max: SimDuration::from_secs(1),
                },
                drop_probability: 0.0,
                duplicate_probability: 0.0,
            },
        };
        if let Some(latency) = &file.latency {
            default_link.latency = self.latency(latency)?;
        }
        if let Some(p) = file.drop {
            default_link.drop_probability = p.0;
        }
        if let Some(p) = file.duplicate {
            default_link.duplicate_probability = p.0;
        }
        let mut config = NetworkConfig {
            default_link: default_link.clone(),
            links: Default::default(),
        };
        for spanned in &file.links {
            let link = spanned.get_ref();
            for node in [link.from, link.to] {
                if node as usize >= n {
                    return self.error(spanned.span(), format!("node {node} is outside 0..{n}"));
                }
            }
            if link.from == link.to {
                return self.error(spanned.span(), "a link needs two different nodes");
            }
            let mut cfg = default_link.clone();
            if let Some(latency) = &link.latency {
                cfg.latency = self.latency(latency)?;
            }
            if let Some(p) = link.drop {
                cfg.drop_probability = p.0;
            }
            if let Some(p) = link.duplicate {
                cfg.duplicate_probability = p.0;
            }
            let (a, b) = (NodeId(link.from), NodeId(link.to));
            config.links.insert((a, b), cfg.clone());
            if link.both_directions {
                config.links.insert((b, a), cfg);
            }
        }
        Ok(config)
    }

    fn clock(&self, file: ClockFile) -> Result<ClockConfig, ScenarioError> {
        let max_drift_ppm = match file.max_drift_ppm {
            Some(d) if i64::from(*d.get_ref()) > sim_core::clock::MAX_DRIFT_PPM => {
                return self.error(
                    d.span(),
                    format!(
                        "{} ppm is out of range; expected 0 to {}",
                        d.get_ref(),
                        sim_core::clock::MAX_DRIFT_PPM
                    ),
                );
            }
            Some(d) => *d.get_ref(),
            None => 0,
        };
        Ok(ClockConfig {
            max_offset: file.max_offset.map_or(SimDuration::ZERO, |d| d.0),
            max_drift_ppm,
        })
    }

    fn disk(&self, file: DiskFile) -> Result<DiskConfig, ScenarioError> {
        let mut disk = DiskConfig::default();
        if let Some(size) = &file.sector_size {
            let s = *size.get_ref();
            if !(512..=65536).contains(&s) || !s.is_power_of_two() {
                return self.error(
                    size.span(),
                    format!(
                        "sector_size {s} is invalid; expected a power of two from 512 to 65536"
                    ),
                );
            }
            disk.sector_size = s as usize;
        }
        if let Some(p) = &file.crash_keep {
            disk.crash_keep_probability = p.get_ref().0;
        }
        if let Some(p) = &file.crash_torn {
            disk.crash_torn_probability = p.get_ref().0;
        }
        if disk.crash_keep_probability + disk.crash_torn_probability > 1.0 + 1e-9 {
            let span = file
                .crash_torn
                .as_ref()
                .or(file.crash_keep.as_ref())
                .map(|p| p.span());
            return Err(ScenarioError::at(
                self.file,
                self.text,
                span,
                "crash_keep + crash_torn must not exceed 1.0",
            ));
        }
        if let Some(p) = file.crash_keep_dir_op {
            disk.crash_keep_dir_op_probability = p.0;
        }
        if let Some(p) = file.fsync_fail {
            disk.fsync_fail_probability = p.0;
        }
        if let Some(p) = file.read_bit_flip {
            disk.read_bit_flip_probability = p.0;
        }
        if let Some(p) = file.latent_sector_error {
            disk.latent_sector_error_probability = p.0;
        }
        if let Some(p) = file.misdirected_write {
            disk.misdirected_write_probability = p.0;
        }
        if let Some(capacity) = file.capacity_bytes {
            disk.capacity_bytes = Some(capacity);
        }
        if let Some(paths) = &file.fault_paths {
            let list = paths.get_ref();
            if list.is_empty() || list.len() > 16 {
                return self.error(
                    paths.span(),
                    format!(
                        "fault_paths has {} entries; expected 1 to 16 path prefixes (leave it out to aim faults at every file)",
                        list.len()
                    ),
                );
            }
            // A prefix no file path can start with would silently aim the faults at
            // nothing: paths are relative, `/`-separated, with no `.`, `..` or empty
            // component (a trailing `/` is allowed).
            let malformed = |p: &str| {
                let body = p.strip_suffix('/').unwrap_or(p);
                p.len() > 256
                    || body.is_empty()
                    || body
                        .split('/')
                        .any(|c| c.is_empty() || c == "." || c == "..")
            };
            if let Some(bad) = list.iter().find(|p| malformed(p)) {
                return self.error(
                    paths.span(),
                    format!(
                        "fault_paths entry {bad:?} is invalid; expected a relative path prefix with no empty, `.` or `..` component, such as \"raft/state/btree.db\""
                    ),
                );
            }
            disk.fault_paths = list.clone();
        }
        Ok(disk)
    }

    /// `[workload] literal_values` and `literal_value_rate`: both or neither, key-value
    /// protocols only, 1 to 16 values of at most 256 bytes, a rate from 0 to 1.
    fn kv_literal_values(
        &self,
        protocol: &ProtocolEntry,
        file: Option<&Spanned<WorkloadFile>>,
    ) -> Result<(Vec<String>, f64), ScenarioError> {
        let Some(f) = file.map(|f| f.get_ref()) else {
            return Ok((Vec::new(), 0.0));
        };
        match (&f.literal_values, &f.literal_value_rate) {
            (None, None) => Ok((Vec::new(), 0.0)),
            (Some(values), _) if protocol.workload != WorkloadKind::KeyValue => self.error(
                values.span(),
                format!(
                    "`literal_values` applies to key-value protocols, not {}",
                    protocol.name
                ),
            ),
            (_, Some(rate)) if protocol.workload != WorkloadKind::KeyValue => self.error(
                rate.span(),
                format!(
                    "`literal_value_rate` applies to key-value protocols, not {}",
                    protocol.name
                ),
            ),
            (Some(values), None) => self.error(
                values.span(),
                "`literal_values` needs `literal_value_rate` (the chance that a put writes one)",
            ),
            (None, Some(rate)) => self.error(
                rate.span(),
                "`literal_value_rate` needs `literal_values` (the values a put may write)",
            ),
            (Some(values), Some(rate)) => {
                let list = values.get_ref();
                if list.is_empty() || list.len() > 16 {
                    return self.error(
                        values.span(),
                        format!(
                            "`literal_values` has {} values: expected 1 to 16",
                            list.len()
                        ),
                    );
                }
                if let Some(long) = list.iter().find(|v| v.len() > 256) {
                    return self.error(
                        values.span(),
                        format!(
                            "a literal value of {} bytes: expected at most 256",
                            long.len()
                        ),
                    );
                }
                let r = *rate.get_ref();
                if !(0.0..=1.0).contains(&r) {
                    return self.error(
                        rate.span(),
                        format!("`literal_value_rate` {r} is out of range: expected 0 to 1"),
                    );
                }
                Ok((list.clone(), r))
            }
        }
    }

    fn kv_workload(
        &self,
        protocol: &ProtocolEntry,
        file: Option<&Spanned<WorkloadFile>>,
    ) -> Result<Option<(u32, KvMix)>, ScenarioError> {
        let (keys, mix) = match file {
            Some(f) => (f.get_ref().keys.as_ref(), f.get_ref().mix.as_ref()),
            None => (None, None),
        };
        if protocol.workload != WorkloadKind::KeyValue {
            if let Some(span) = keys.map(|k| k.span()).or(mix.map(|m| m.span())) {
                return self.error(
                    span,
                    format!(
                        "`keys` and `mix` apply to key-value protocols, not {}",
                        protocol.name
                    ),
                );
            }
            return Ok(None);
        }
        let key_count = match keys {
            Some(k) if *k.get_ref() == 0 || *k.get_ref() > 100_000 => {
                return self.error(
                    k.span(),
                    format!("{} keys is out of range; expected 1 to 100000", k.get_ref()),
                );
            }
            Some(k) => *k.get_ref(),
            None => 5,
        };
        let mix = match mix {
            Some(m) => {
                let f = m.get_ref();
                let mix = KvMix {
                    get: f.get,
                    put: f.put,
                    cas: f.cas,
                    append: f.append,
                };
                if let Err(message) = mix.validate() {
                    return self.error(m.span(), message);
                }
                mix
            }
            None => KvMix::default(),
        };
        Ok(Some((key_count, mix)))
    }

    fn engines(
        &self,
        protocol: &ProtocolEntry,
        file: Option<&Spanned<StorageFile>>,
        n: usize,
    ) -> Result<Vec<&'static str>, ScenarioError> {
        let Some(file) = file else {
            return Ok(if protocol.uses_engines {
                vec![engines::default_engine(); n]
            } else {
                Vec::new()
            });
        };
        if !protocol.uses_engines {
            return self.error(
                file.span(),
                format!(
                    "protocol {} keeps no key-value data, so `[storage]` does not apply",
                    protocol.name
                ),
            );
        }
        let lookup = |name: &Spanned<String>| -> Result<&'static str, ScenarioError> {
            engines::find(name.get_ref())
                .map(|e| e.name)
                .ok_or_else(|| {
                    ScenarioError::at(
                        self.file,
                        self.text,
                        Some(name.span()),
                        format!(
                            "unknown storage engine `{}`; expected one of: {}",
                            name.get_ref(),
                            engines::names().join(", ")
                        ),
                    )
                })
        };
        let f = file.get_ref();
        match (&f.engine, &f.engines) {
            (Some(one), None) => Ok(vec![lookup(one)?; n]),
            (None, Some(list)) if !list.get_ref().is_empty() => {
                let names = list.get_ref().iter().map(lookup).collect::<Result<Vec<_>, _>>()?;
                Ok((0..n).map(|i| names[i % names.len()]).collect())
            }
            _ => self.error(
                file.span(),
                "`[storage]` needs exactly one of `engine = \"name\"` or a non-empty `engines = [...]`",
            ),
        }
    }

    /// `[storage]`'s engine options, range-checked.
    fn engine_tuning(
        &self,
        file: Option<&Spanned<StorageFile>>,
    ) -> Result<engines::EngineTuning, ScenarioError> {
        let mut tuning = engines::EngineTuning::default();
        let Some(file) = file else {
            return Ok(tuning);
        };
        let f = file.get_ref();
        if let Some(bytes) = &f.bitcask_max_file_bytes {
            let range = storage::bitcask::MIN_FILE_BYTES..=(1u64 << 40);
            if !range.contains(bytes.get_ref()) {
                return self.error(
                    bytes.span(),
                    format!(
                        "`[storage]` bitcask_max_file_bytes {} is out of range: expected {} to {}",
                        bytes.get_ref(),
                        range.start(),
                        range.end()
                    ),
                );
            }
            tuning.bitcask_max_file_bytes = Some(*bytes.get_ref());
        }
        if let Some(files) = &f.bitcask_merge_trigger_files {
            if *files.get_ref() > 1_000_000 {
                return self.error(
                    files.span(),
                    "`[storage]` bitcask_merge_trigger_files is out of range: expected 0 to 1000000",
                );
            }
            tuning.bitcask_merge_trigger_files = Some(*files.get_ref() as usize);
        }
        if let Some(pages) = &f.btree_max_dirty_pages {
            if !(1..=1 << 20).contains(pages.get_ref()) {
                return self.error(
                    pages.span(),
                    format!(
                        "`[storage]` btree_max_dirty_pages {} is out of range: expected 1 to {}",
                        pages.get_ref(),
                        1 << 20
                    ),
                );
            }
            tuning.btree_max_dirty_pages = Some(*pages.get_ref() as usize);
        }
        if let Some(size) = &f.btree_page_size {
            let s = *size.get_ref() as usize;
            let range = storage::btree::MIN_PAGE_SIZE..=storage::btree::MAX_PAGE_SIZE;
            if !s.is_power_of_two() || !range.contains(&s) {
                return self.error(
                    size.span(),
                    format!(
                        "`[storage]` btree_page_size {s} is invalid: expected a power of two from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
            }
            tuning.btree_page_size = Some(s);
        }
        if let Some(bytes) = &f.lsm_memtable_bytes {
            if !(256..=1 << 30).contains(bytes.get_ref()) {
                return self.error(
                    bytes.span(),
                    format!(
                        "`[storage]` lsm_memtable_bytes {} is out of range: expected 256 to {}",
                        bytes.get_ref(),
                        1 << 30
                    ),
                );
            }
            tuning.lsm_memtable_bytes = Some(*bytes.get_ref() as usize);
        }
        if let Some(bytes) = &f.lsm_level_base_bytes {
            if !(256..=1 << 30).contains(bytes.get_ref()) {
                return self.error(
                    bytes.span(),
                    format!(
                        "`[storage]` lsm_level_base_bytes {} is out of range: expected 256 to {}",
                        bytes.get_ref(),
                        1 << 30
                    ),
                );
            }
            tuning.lsm_level_base_bytes = Some(u64::from(*bytes.get_ref()));
        }
        Ok(tuning)
    }

    fn workload(&self, file: Option<WorkloadFile>) -> Result<ClientConfig, ScenarioError> {
        let mut config = ClientConfig::default();
        let Some(file) = file else {
            return Ok(config);
        };
        if let Some(clients) = &file.clients {
            if *clients.get_ref() > 10_000 {
                return self.error(clients.span(), "at most 10000 clients are supported");
            }
            config.clients = *clients.get_ref();
        }
        if let Some(think) = &file.think {
            let range = think.get_ref();
            if range.min > range.max {
                return self.error(think.span(), "think min is greater than max");
            }
            config.think_min = range.min.0;
            config.think_max = range.max.0;
        }
        if let Some(timeout) = &file.timeout {
            if timeout.get_ref().0 == SimDuration::ZERO {
                return self.error(timeout.span(), "timeout must be positive");
            }
            config.timeout = timeout.get_ref().0;
        }
        config.max_operations = file.max_operations;
        if let Some(retries) = &file.retries {
            if *retries.get_ref() > 100 {
                return self.error(retries.span(), "at most 100 retries are supported");
            }
            config.max_retries = *retries.get_ref();
        }
        Ok(config)
    }

    fn nemesis(
        &self,
        spanned: Spanned<NemesisFile>,
        n: usize,
    ) -> Result<NemesisConfig, ScenarioError> {
        let span = spanned.span();
        let file = spanned.into_inner();
        let mut config = NemesisConfig {
            interval_min: file.interval.min.0,
            interval_max: file.interval.max.0,
            swarm: file.swarm,
            ..NemesisConfig::default()
        };
        if let Some(range) = file.fault_duration {
            config.fault_duration_min = range.min.0;
            config.fault_duration_max = range.max.0;
        }
        if let Some(kinds) = file.kinds {
            config.kinds = kinds
                .into_iter()
                .map(|k| match k {
                    FaultKindName::Crash => FaultKind::Crash,
                    FaultKindName::Pause => FaultKind::Pause,
                    FaultKindName::Partition => FaultKind::Partition,
                    FaultKindName::Clog => FaultKind::Clog,
                })
                .collect();
        }
        if let Some(max_down) = file.max_down {
            if max_down as usize >= n {
                return Err(ScenarioError::at(
                    self.file,
                    self.text,
                    Some(span),
                    format!("max_down {max_down} must be less than the {n} nodes"),
                ));
            }
            config.max_down = Some(max_down as usize);
        }
        if let Some(delay) = file.clog_delay {
            config.clog_delay = delay.0;
        }
        if let Some(shapes) = file.partition_shapes {
            let mut kinds = Vec::new();
            for shape in shapes {
                kinds.push(match shape {
                    ShapeName::Isolate => PartitionShapeKind::Isolate,
                    ShapeName::IsolateLeader => PartitionShapeKind::IsolateLeader,
                    ShapeName::RandomHalves => PartitionShapeKind::RandomHalves,
                    ShapeName::MajoritiesRing => PartitionShapeKind::MajoritiesRing,
                    ShapeName::Bridge => PartitionShapeKind::Bridge,
                    ShapeName::OneWay => PartitionShapeKind::OneWay,
                    ShapeName::Links => {
                        return Err(ScenarioError::at(
                            self.file,
                            self.text,
                            Some(span),
                            "the `links` shape needs explicit links and cannot be used by the nemesis",
                        ));
                    }
                });
            }
            config.partition_shapes = kinds;
        }
        config.aim_at_leader = file.aim_at_leader;
        if let Some(p) = file.crash_inside_operation {
            config.crash_inside_operation = p;
        }
        if let Err(message) = config.validate() {
            return Err(ScenarioError::at(self.file, self.text, Some(span), message));
        }
        Ok(config)
    }

    fn fault(&self, spanned: &Spanned<ScheduleEntry>, n: usize) -> Result<Fault, ScenarioError> {
        let entry = spanned.get_ref();
        let span = spanned.span();
        let fail = |message: String| {
            Err(ScenarioError::at(
                self.file,
                self.text,
                Some(span.clone()),
                message,
            ))
        };
        let node = |key: &str| -> Result<NodeId, ScenarioError> {
            match entry.node {
                Some(x) if (x as usize) < n => Ok(NodeId(x)),
                Some(x) => Err(ScenarioError::at(
                    self.file,
                    self.text,
                    Some(span.clone()),
                    format!("node {x} is outside 0..{n}"),
                )),
                None => Err(ScenarioError::at(
                    self.file,
                    self.text,
                    Some(span.clone()),
                    format!("`{key}` needs `node`"),
                )),
            }
        };
        let nodes = |list: &Option<NodeList>, key: &str| -> Result<Vec<NodeId>, ScenarioError> {
            let Some(list) = list else {
                return Err(ScenarioError::at(
                    self.file,
                    self.text,
                    Some(span.clone()),
                    format!("this fault needs `{key}`"),
                ));
            };
            list.0
                .iter()
                .map(|&x| {
                    if (x as usize) < n {
                        Ok(NodeId(x))
                    } else {
                        Err(ScenarioError::at(
                            self.file,
                            self.text,
                            Some(span.clone()),
                            format!("node {x} is outside 0..{n}"),
                        ))
                    }
                })
                .collect()
        };
        let fault = match entry.fault {
            FaultName::Crash => match entry.after_mutations {
                None => Fault::Crash {
                    node: node("crash")?,
                },
                Some(after_mutations) => Fault::CrashInside {
                    node: node("crash")?,
                    after_mutations,
                },
            },
            FaultName::Restart => Fault::Restart {
                node: node("restart")?,
            },
            FaultName::Pause => Fault::Pause {
                node: node("pause")?,
            },
            FaultName::Resume => Fault::Resume {
                node: node("resume")?,
            },
            FaultName::Heal => Fault::Heal,
            FaultName::Unclog => Fault::Unclog,
            FaultName::Partition => {
                let Some(shape) = entry.shape else {
                    return fail("a partition needs `shape` (isolate, isolate_leader, random_halves, majorities_ring, bridge, one_way or links)".into());
                };
                let shape = match shape {
                    ShapeName::Isolate => PartitionShape::Isolate {
                        node: node("isolate")?,
                    },
                    ShapeName::IsolateLeader => PartitionShape::IsolateLeader,
                    ShapeName::RandomHalves => PartitionShape::RandomHalves,
                    ShapeName::MajoritiesRing => PartitionShape::MajoritiesRing,
                    ShapeName::Bridge => PartitionShape::Bridge,
                    ShapeName::OneWay => PartitionShape::OneWay {
                        from: nodes(&entry.from, "from")?,
                        to: nodes(&entry.to, "to")?,
                    },
                    ShapeName::Links => {
                        let Some(links) = &entry.links else {
                            return fail(
                                "the `links` shape needs `links = [[from, to], ...]`".into(),
                            );
                        };
                        let mut resolved = Vec::new();
                        for &[a, b] in links {
                            if a as usize >= n || b as usize >= n {
                                return fail(format!(
                                    "link [{a}, {b}] names a node outside 0..{n}"
                                ));
                            }
                            resolved.push((NodeId(a), NodeId(b)));
                        }
                        PartitionShape::Links { links: resolved }
                    }
                };
                Fault::Partition { shape }
            }
            FaultName::Clog => {
                let from = nodes(&entry.from, "from")?;
                let to = nodes(&entry.to, "to")?;
                if from.len() != 1 || to.len() != 1 {
                    return fail("a clog takes one `from` node and one `to` node".into());
                }
                let (Some(extra), Some(duration)) = (entry.extra, entry.duration) else {
                    return fail("a clog needs `extra` (added delay) and `duration`".into());
                };
                Fault::Clog {
                    from: from[0],
                    to: to[0],
                    extra: extra.0,
                    duration: duration.0,
                }
            }
        };
        Ok(fault)
    }
}

fn distribution_name(d: Distribution) -> &'static str {
    match d {
        Distribution::Constant => "constant",
        Distribution::Uniform => "uniform",
        Distribution::LongTail => "long_tail",
    }
}
