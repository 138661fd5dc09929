//! The registry of storage engines a scenario can give its nodes (`[storage]`).

use std::sync::Arc;

use storage::kv::EngineOpener;

/// A storage engine as listed by `faultline list`.
pub struct EngineEntry {
    pub name: &'static str,
    pub description: &'static str,
    /// Builds the engine's opener with its default options.
    pub opener: fn() -> Arc<dyn EngineOpener>,
}

/// Every engine, by name. The first is the default.
pub static ENGINES: &[EngineEntry] = &[
    EngineEntry {
        name: "bitcask",
        description: "append-only data files with an in-memory keydir, hint files and crash-safe merge",
        opener: || Arc::new(storage::bitcask::BitcaskOpener::default()),
    },
    EngineEntry {
        name: "btree",
        description: "B+tree of checksummed pages with a physical redo WAL and a crash-safe superblock",
        opener: || Arc::new(storage::btree::BTreeOpener::default()),
    },
];

pub fn find(name: &str) -> Option<&'static EngineEntry> {
    ENGINES.iter().find(|e| e.name == name)
}

pub fn names() -> Vec<&'static str> {
    ENGINES.iter().map(|e| e.name).collect()
}

/// The engine nodes use when a scenario names none.
pub fn default_engine() -> &'static str {
    ENGINES.first().map_or("none", |e| e.name)
}
