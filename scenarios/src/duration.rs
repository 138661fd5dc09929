//! Durations in scenario files: strings with a unit, such as `"150ms"`, `"2s"`, `"1.5s"`,
//! `"500us"`, `"1m"`. Stored in microseconds.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sim_core::SimDuration;

/// The form every duration error names.
pub const EXPECTED_DURATION: &str =
    "a duration string with a unit: \"500us\", \"150ms\", \"2s\", \"1.5s\" or \"1m\"";

/// A duration as written in a scenario file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub SimDuration);

/// Parses `"150ms"`-style text.
pub fn parse_duration(text: &str) -> Result<SimDuration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit; expected {EXPECTED_DURATION}"))?;
    let (number, unit) = text.split_at(split);
    let micros_per_unit: u64 = match unit.trim() {
        "us" | "µs" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" | "min" => 60_000_000,
        "h" => 3_600_000_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; expected {EXPECTED_DURATION}"
            ));
        }
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a number with a unit; expected {EXPECTED_DURATION}"
        ));
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a number with a unit; expected {EXPECTED_DURATION}"
        ));
    }
    let too_large = || format!("`{text}` is too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut micros = whole.checked_mul(micros_per_unit).ok_or_else(too_large)?;
    // The fractional part, exactly, down to a microsecond.
    let mut scale = micros_per_unit;
    for digit in fraction.bytes() {
        if !scale.is_multiple_of(10) {
            return Err(format!("`{text}` is more precise than a microsecond"));
        }
        scale /= 10;
        micros = micros
            .checked_add(u64::from(digit - b'0') * scale)
            .ok_or_else(too_large)?;
    }
    Ok(SimDuration(micros))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED_DURATION)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                parse_duration(text).map(Duration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_fractions() {
        assert_eq!(parse_duration("150ms"), Ok(SimDuration::from_millis(150)));
        assert_eq!(parse_duration("2s"), Ok(SimDuration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(SimDuration::from_millis(1_500)));
        assert_eq!(parse_duration("500us"), Ok(SimDuration(500)));
        assert_eq!(parse_duration("1m"), Ok(SimDuration::from_secs(60)));
        assert_eq!(parse_duration("0.001ms"), Ok(SimDuration(1)));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "150",
            "ms",
            "1.5.5s",
            "-1s",
            "1x",
            "1.0001ms",
            "99999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["150ms", "2s", "37us", "1.5s", "5.010991s", "2.5ms", "0us"] {
            assert_eq!(parse_duration(text).unwrap().to_string(), text);
        }
        for micros in [
            0u64,
            1,
            999,
            1_000,
            1_001,
            999_999,
            1_000_000,
            1_234_567,
            86_400_000_000,
        ] {
            let d = SimDuration(micros);
            assert_eq!(parse_duration(&d.to_string()), Ok(d), "{d}");
        }
    }
}
