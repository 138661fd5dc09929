//! Per-node clocks with a fixed offset and a constant drift rate.
//!
//! A node at true time `t` reads `t + offset + t · drift_ppm / 10⁶` (never below zero).
//! Timers are set in the node's own time, so a fast clock fires its timers early in true
//! time; this is what breaks a leader lease that trusts its local clock too much.

use serde::{Deserialize, Serialize};

use crate::time::{SimDuration, SimTime};

/// The largest drift magnitude accepted, in parts per million (10%).
pub const MAX_DRIFT_PPM: i64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeClock {
    /// Added to the true time, in microseconds (may be negative).
    pub offset_us: i64,
    /// How much faster (positive) or slower (negative) than true time, in parts per million.
    pub drift_ppm: i64,
}

impl NodeClock {
    pub fn new(offset_us: i64, drift_ppm: i64) -> Self {
        assert!(
            drift_ppm.abs() <= MAX_DRIFT_PPM,
            "drift {drift_ppm} ppm is beyond ±{MAX_DRIFT_PPM}"
        );
        NodeClock {
            offset_us,
            drift_ppm,
        }
    }

    /// The node's reading of its clock at true time `now`.
    pub fn local(&self, now: SimTime) -> SimTime {
        let t = now.0 as i128;
        let local = t + self.offset_us as i128 + t * self.drift_ppm as i128 / 1_000_000;
        SimTime(local.clamp(0, u64::MAX as i128) as u64)
    }

    /// The true duration after which the node's clock has advanced by `local`
    /// (rounded up, so a timer never fires before its local deadline).
    pub fn true_duration(&self, local: SimDuration) -> SimDuration {
        let rate = 1_000_000i128 + self.drift_ppm as i128;
        let d = local.0 as i128 * 1_000_000;
        let real = (d + rate - 1) / rate;
        SimDuration(real.clamp(0, u64::MAX as i128) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_clock_is_identity() {
        let c = NodeClock::default();
        assert_eq!(c.local(SimTime(123_456)), SimTime(123_456));
        assert_eq!(c.true_duration(SimDuration(500)), SimDuration(500));
    }

    #[test]
    fn fast_clock_fires_timers_early_in_true_time() {
        let c = NodeClock::new(0, 100_000); // 10% fast
        assert_eq!(c.local(SimTime(1_000_000)), SimTime(1_100_000));
        assert_eq!(
            c.true_duration(SimDuration(1_100_000)),
            SimDuration(1_000_000)
        );
        let slow = NodeClock::new(-5_000, -100_000);
        assert_eq!(slow.local(SimTime(1_000_000)), SimTime(895_000));
        assert_eq!(slow.local(SimTime(0)), SimTime(0), "clamped at zero");
    }

    #[test]
    fn timer_never_fires_before_local_deadline() {
        for drift in [-100_000, -37, 0, 1, 999, 100_000] {
            let c = NodeClock::new(0, drift);
            for d in [1u64, 7, 1_000, 150_000, 3_000_001] {
                let start = SimTime(10_000_000);
                let fire = start + c.true_duration(SimDuration(d));
                assert!(
                    c.local(fire).0 - c.local(start).0 >= d - 1,
                    "drift {drift} d {d}"
                );
            }
        }
    }
}
