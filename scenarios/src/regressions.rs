//! Regression files: failing seeds found by `explore`, kept beside the scenario
//! (`<name>.regressions`, TOML) and re-checked by `run` and by the test suite.
//!
//! An entry without bug flags is a real failure: once fixed, its seed must pass forever.
//! An entry with bug flags records a detection: its seed must keep failing with the
//! same kind while the flags are on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ScenarioError;

/// One recorded failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regression {
    pub seed: u64,
    #[serde(default)]
    pub bugs: Vec<String>,
    /// The kind of the first violation.
    pub kind: String,
    /// The trace hash when it was recorded (16 hex digits).
    pub trace_hash: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegressionFile {
    #[serde(default)]
    failure: Vec<Regression>,
}

/// `scenarios/library/x.toml` → `scenarios/library/x.regressions`.
pub fn path_for(scenario: &Path) -> PathBuf {
    scenario.with_extension("regressions")
}

/// The recorded failures for a scenario (none if the file does not exist).
pub fn load(scenario: &Path) -> Result<Vec<Regression>, ScenarioError> {
    let path = path_for(scenario);
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ScenarioError::Io {
                file,
                message: e.to_string(),
            });
        }
    };
    let parsed: RegressionFile =
        toml::from_str(&text).map_err(|e| ScenarioError::from_toml(&file, &text, &e))?;
    Ok(parsed.failure)
}

/// Appends failures not already recorded (same seed and bug flags); returns how many
/// were new.
pub fn append(scenario: &Path, failures: &[Regression]) -> Result<usize, ScenarioError> {
    let existing = load(scenario)?;
    let path = path_for(scenario);
    let mut text = String::new();
    let mut added = 0;
    for failure in failures {
        let mut bugs = failure.bugs.clone();
        bugs.sort();
        let known = existing.iter().any(|r| {
            let mut theirs = r.bugs.clone();
            theirs.sort();
            r.seed == failure.seed && theirs == bugs
        });
        if known {
            continue;
        }
        let entry = RegressionFile {
            failure: vec![failure.clone()],
        };
        let rendered = toml::to_string(&entry).map_err(|e| ScenarioError::Io {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        text.push('\n');
        text.push_str(&rendered);
        added += 1;
    }
    if added > 0 {
        use std::io::Write;
        let header = if existing.is_empty() && !path.exists() {
            "# Failing seeds found by `faultline explore`; re-checked by `faultline run` and the tests.\n"
        } else {
            ""
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(header.as_bytes()).map(|()| f))
            .map_err(|e| ScenarioError::Io {
                file: path.display().to_string(),
                message: e.to_string(),
            })?;
        file.write_all(text.as_bytes())
            .map_err(|e| ScenarioError::Io {
                file: path.display().to_string(),
                message: e.to_string(),
            })?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_then_load_round_trips_and_skips_known_entries() {
        let dir = std::env::temp_dir().join(format!("faultline-regr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let scenario = dir.join("x.toml");
        let a = Regression {
            seed: 7,
            bugs: vec!["p.b".into()],
            kind: "k".into(),
            trace_hash: "0123456789abcdef".into(),
        };
        let b = Regression {
            seed: 9,
            bugs: vec![],
            ..a.clone()
        };
        assert_eq!(append(&scenario, std::slice::from_ref(&a)).unwrap(), 1);
        assert_eq!(append(&scenario, &[a.clone(), b.clone()]).unwrap(), 1);
        assert_eq!(load(&scenario).unwrap(), vec![a, b]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
