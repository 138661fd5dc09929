//! The registry of storage engines a scenario can give its nodes (`[storage]`).

use std::sync::Arc;

use storage::bugs::EngineBugs;
use storage::kv::{EngineOpener, EngineSyncPolicy};

/// Per-scenario engine options (`[storage]`); `None` keeps the engine's simulation
/// default, so a scenario that sets nothing runs exactly as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineTuning {
    /// Bitcask's `max_file_bytes`.
    pub bitcask_max_file_bytes: Option<u64>,
    /// Bitcask's `merge_trigger_files`.
    pub bitcask_merge_trigger_files: Option<usize>,
    /// The B+tree's `max_dirty_pages`.
    pub btree_max_dirty_pages: Option<usize>,
    /// The B+tree's `page_size`.
    pub btree_page_size: Option<usize>,
    /// The LSM's `memtable_bytes`.
    pub lsm_memtable_bytes: Option<usize>,
    /// The LSM's `level_base_bytes`.
    pub lsm_level_base_bytes: Option<u64>,
}

/// A storage engine as listed by `faultline list`.
pub struct EngineEntry {
    pub name: &'static str,
    pub description: &'static str,
    /// Builds the engine's opener with its simulation options, the given sync policy,
    /// engine bug flags and the scenario's tuning.
    pub opener: fn(EngineSyncPolicy, EngineBugs, &EngineTuning) -> Arc<dyn EngineOpener>,
}

/// Every engine, by name. The first is the default.
pub static ENGINES: &[EngineEntry] = &[
    EngineEntry {
        name: "lsm",
        description: "LSM tree: WAL-backed memtable, SSTables with Bloom filters, a MANIFEST, leveled compaction",
        opener: |sync_policy, bugs, tuning| {
            let defaults = simulation_lsm_options();
            Arc::new(storage::lsm::LsmOpener {
                options: storage::lsm::LsmOptions {
                    sync_policy,
                    bugs,
                    memtable_bytes: tuning.lsm_memtable_bytes.unwrap_or(defaults.memtable_bytes),
                    level_base_bytes: tuning
                        .lsm_level_base_bytes
                        .unwrap_or(defaults.level_base_bytes),
                    ..defaults
                },
            })
        },
    },
    EngineEntry {
        name: "bitcask",
        description: "append-only data files with an in-memory keydir, hint files and crash-safe merge",
        opener: |sync_policy, bugs, tuning| {
            let defaults = storage::bitcask::BitcaskOptions::default();
            Arc::new(storage::bitcask::BitcaskOpener {
                options: storage::bitcask::BitcaskOptions {
                    sync_policy,
                    bugs,
                    max_file_bytes: tuning
                        .bitcask_max_file_bytes
                        .unwrap_or(defaults.max_file_bytes),
                    merge_trigger_files: tuning
                        .bitcask_merge_trigger_files
                        .unwrap_or(defaults.merge_trigger_files),
                    ..defaults
                },
            })
        },
    },
    EngineEntry {
        name: "btree",
        description: "B+tree of checksummed pages with a physical redo WAL and a crash-safe superblock",
        opener: |sync_policy, bugs, tuning| {
            let defaults = storage::btree::BTreeOptions::default();
            Arc::new(storage::btree::BTreeOpener {
                options: storage::btree::BTreeOptions {
                    sync_policy,
                    bugs,
                    max_dirty_pages: tuning
                        .btree_max_dirty_pages
                        .unwrap_or(defaults.max_dirty_pages),
                    page_size: tuning.btree_page_size.unwrap_or(defaults.page_size),
                },
            })
        },
    },
];

/// The LSM's options in simulations: small memtables, tables and level budgets, so that
/// the few kilobytes a node keeps in a run are flushed, compacted and moved down levels
/// (the library defaults are sized for real data and would never leave the memtable).
fn simulation_lsm_options() -> storage::lsm::LsmOptions {
    storage::lsm::LsmOptions {
        memtable_bytes: 8 << 10,
        block_bytes: 1 << 10,
        target_file_bytes: 16 << 10,
        level_base_bytes: 32 << 10,
        ..storage::lsm::LsmOptions::default()
    }
}

pub fn find(name: &str) -> Option<&'static EngineEntry> {
    ENGINES.iter().find(|e| e.name == name)
}

/// The opener of each node's engine, in node order, as the scenario's `[storage]` names
/// them, with the run's engine bug flags (`RunOptions::engine_bugs`).
pub fn openers(
    scenario: &crate::scenario::Scenario,
    bugs: EngineBugs,
) -> Result<Vec<Arc<dyn EngineOpener>>, crate::error::ScenarioError> {
    scenario
        .engines
        .iter()
        .map(|name| {
            opener_tuned(
                name,
                EngineSyncPolicy::EveryWrite,
                bugs,
                &scenario.engine_tuning,
            )
            .ok_or_else(|| {
                crate::error::ScenarioError::Options(format!("unknown storage engine {name}"))
            })
        })
        .collect()
}

pub fn names() -> Vec<&'static str> {
    ENGINES.iter().map(|e| e.name).collect()
}

/// The engine nodes use when a scenario names none.
pub fn default_engine() -> &'static str {
    ENGINES.first().map_or("none", |e| e.name)
}

/// The engine `name` with its simulation options, the given sync policy and engine bug
/// flags: protocols that sync explicitly, before they reveal, open their engines with
/// [`EngineSyncPolicy::Explicit`] so an unsynced write can be lost in a crash.
pub fn opener(
    name: &str,
    policy: EngineSyncPolicy,
    bugs: EngineBugs,
) -> Option<Arc<dyn EngineOpener>> {
    opener_tuned(name, policy, bugs, &EngineTuning::default())
}

/// [`opener`] with a scenario's `[storage]` tuning.
pub fn opener_tuned(
    name: &str,
    policy: EngineSyncPolicy,
    bugs: EngineBugs,
    tuning: &EngineTuning,
) -> Option<Arc<dyn EngineOpener>> {
    find(name).map(|e| (e.opener)(policy, bugs, tuning))
}
