//! One module per protocol, binding it to scenario files: its settings schema, workload
//! generator, checkers and registry entry.

pub mod broadcast;
pub mod bully;
pub mod dynamo;
pub mod gossip;
pub mod multi_leader;
pub mod paxos;
pub mod pbft;
pub mod raft;
pub mod two_pc;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ScenarioError;

/// Reads a scenario's `[settings]` table as the typed `S` (which rejects unknown keys),
/// from the original text so that errors carry the right line and column.
pub(crate) fn read_settings<S: DeserializeOwned + Default>(
    file: &str,
    text: &str,
) -> Result<S, ScenarioError> {
    #[derive(Deserialize)]
    struct SettingsOnly<S> {
        settings: Option<S>,
    }
    let parsed: SettingsOnly<S> =
        toml::from_str(text).map_err(|e| ScenarioError::from_toml(file, text, &e))?;
    Ok(parsed.settings.unwrap_or_default())
}
