//! What every protocol shares: opt-in bug flags, each re-introducing one classic defect
//! so that the simulator can prove it finds it.

/// A bug flag as listed by `faultline list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BugFlag {
    /// `<protocol>.<defect>`, snake_case.
    pub name: &'static str,
    /// What the defect is, in one sentence.
    pub description: &'static str,
}

/// Errors applying bug flags to a protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BugFlagError {
    #[error("unknown bug flag `{name}` for this protocol (known: {known})")]
    Unknown { name: String, known: String },
}

/// Looks `name` up in `flags`, for the error message listing the known ones.
pub fn unknown(name: &str, flags: &[BugFlag]) -> BugFlagError {
    BugFlagError::Unknown {
        name: name.to_string(),
        known: flags.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
    }
}
