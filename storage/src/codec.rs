//! Small helpers shared by the engines' on-disk formats.

use crate::kv::EngineError;

/// Little-endian readers. Callers check that `b` holds `at + size` bytes first (every
/// decoder validates lengths before reading fields), so these index directly.
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Why an engine is unusable until it is reopened, if it is: the first failure that left
/// its files and its memory possibly out of step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Poison(Option<String>);

impl Poison {
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Records `reason` unless an earlier one is recorded.
    pub(crate) fn set(&mut self, reason: impl FnOnce() -> String) {
        self.0.get_or_insert_with(reason);
    }

    /// `Err(Poisoned)` once set.
    pub(crate) fn check(&self) -> Result<(), EngineError> {
        match &self.0 {
            Some(reason) => Err(EngineError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Poisons on an error result; passes the result through.
    pub(crate) fn on_error<T>(&mut self, result: Result<T, EngineError>) -> Result<T, EngineError> {
        if let Err(e) = &result {
            self.set(|| e.to_string());
        }
        result
    }
}
