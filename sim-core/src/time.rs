//! Simulated time: integer microseconds since the start of a run.
//!
//! The kernel's clock ([`SimTime`]) is the true time; each node sees its own drifting
//! clock (see [`crate::clock::NodeClock`]). Nothing here reads a wall clock.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

use serde::{Deserialize, Serialize};

/// A point in simulated time, in microseconds since the run started.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SimTime(pub u64);

/// A span of simulated time, in microseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SimDuration(pub u64);

impl SimTime {
    pub const ZERO: SimTime = SimTime(0);

    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// The time elapsed since `earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: SimTime) -> SimDuration {
        SimDuration(self.0.saturating_sub(earlier.0))
    }
}

impl SimDuration {
    pub const ZERO: SimDuration = SimDuration(0);

    pub const fn from_micros(micros: u64) -> Self {
        SimDuration(micros)
    }

    pub const fn from_millis(millis: u64) -> Self {
        SimDuration(millis * 1_000)
    }

    pub const fn from_secs(secs: u64) -> Self {
        SimDuration(secs * 1_000_000)
    }

    pub fn as_micros(self) -> u64 {
        self.0
    }

    pub fn as_millis(self) -> u64 {
        self.0 / 1_000
    }
}

impl Add<SimDuration> for SimTime {
    type Output = SimTime;
    fn add(self, rhs: SimDuration) -> SimTime {
        SimTime(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign<SimDuration> for SimTime {
    fn add_assign(&mut self, rhs: SimDuration) {
        self.0 = self.0.saturating_add(rhs.0);
    }
}

impl Sub<SimTime> for SimTime {
    type Output = SimDuration;
    fn sub(self, rhs: SimTime) -> SimDuration {
        self.saturating_since(rhs)
    }
}

impl Add for SimDuration {
    type Output = SimDuration;
    fn add(self, rhs: SimDuration) -> SimDuration {
        SimDuration(self.0.saturating_add(rhs.0))
    }
}

impl fmt::Display for SimTime {
    /// Seconds with microsecond precision, e.g. `12.000450s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl fmt::Display for SimDuration {
    /// Exact, in the largest unit that reads well: `150ms`, `2s`, `1.5s`, `5.010991s`,
    /// `2.5ms`, `37us`. The scenario-file duration parser reads every form back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        let (unit, per_unit) = if us >= 1_000_000 {
            ("s", 1_000_000)
        } else if us >= 1_000 {
            ("ms", 1_000)
        } else {
            return write!(f, "{us}us");
        };
        let whole = us / per_unit;
        let fraction = us % per_unit;
        if fraction == 0 {
            return write!(f, "{whole}{unit}");
        }
        let digits = if per_unit == 1_000_000 { 6 } else { 3 };
        let text = format!("{fraction:0digits$}");
        write!(f, "{whole}.{}{unit}", text.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        assert_eq!(SimTime(12_000_450).to_string(), "12.000450s");
        assert_eq!(SimDuration::from_millis(150).to_string(), "150ms");
        assert_eq!(SimDuration::from_secs(30).to_string(), "30s");
        assert_eq!(SimDuration(37).to_string(), "37us");
        assert_eq!(SimDuration(0).to_string(), "0us");
        assert_eq!(SimDuration(1_500_000).to_string(), "1.5s");
        assert_eq!(SimDuration(5_010_991).to_string(), "5.010991s");
        assert_eq!(SimDuration(2_500).to_string(), "2.5ms");
        assert_eq!(SimDuration(1_000_001).to_string(), "1.000001s");
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(SimTime(5) - SimTime(9), SimDuration::ZERO);
        assert_eq!(SimTime(u64::MAX) + SimDuration(1), SimTime(u64::MAX));
    }
}
