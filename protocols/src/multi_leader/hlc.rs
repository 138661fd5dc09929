//! A hybrid logical clock (Kulkarni et al., 2014): a physical part that follows the
//! highest physical time seen (the node's own clock in milliseconds, or a peer's), and a
//! logical counter that orders events within one millisecond. It never goes backwards:
//! not when the node's clock is behind a peer's, and — because the protocol persists every
//! reading it reveals — not across restarts either.

use serde::{Deserialize, Serialize};

/// A clock reading, ordered by physical part, then logical counter.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds.
    pub physical: u64,
    pub logical: u32,
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.physical, self.logical)
    }
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Hlc {
    pub fn new(physical: u64, logical: u32) -> Hlc {
        Hlc { physical, logical }
    }

    /// The reading for a local event at physical time `now_ms`: strictly above `self`.
    pub fn tick(self, now_ms: u64) -> Hlc {
        if now_ms > self.physical {
            Hlc::new(now_ms, 0)
        } else {
            self.bump()
        }
    }

    /// The reading after receiving `remote` at physical time `now_ms`: strictly above
    /// both `self` and `remote`.
    pub fn receive(self, remote: Hlc, now_ms: u64) -> Hlc {
        let physical = now_ms.max(self.physical).max(remote.physical);
        if physical == now_ms && now_ms > self.physical && now_ms > remote.physical {
            return Hlc::new(now_ms, 0);
        }
        let logical = match (physical == self.physical, physical == remote.physical) {
            (true, true) => self.logical.max(remote.logical),
            (true, false) => self.logical,
            (false, true) => remote.logical,
            (false, false) => return Hlc::new(physical, 0),
        };
        match logical.checked_add(1) {
            Some(l) => Hlc::new(physical, l),
            None => Hlc::new(physical + 1, 0),
        }
    }

    fn bump(self) -> Hlc {
        match self.logical.checked_add(1) {
            Some(l) => Hlc::new(self.physical, l),
            None => Hlc::new(self.physical + 1, 0),
        }
    }

    pub fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.physical.to_le_bytes());
        out[8..].copy_from_slice(&self.logical.to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Hlc> {
        let physical = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let logical = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
        (bytes.len() == 12).then_some(Hlc::new(physical, logical))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_strictly_increase_even_when_the_clock_stands_still_or_goes_back() {
        let a = Hlc::default().tick(10);
        assert_eq!(a, Hlc::new(10, 0));
        let b = a.tick(10);
        assert_eq!(b, Hlc::new(10, 1));
        let c = b.tick(5);
        assert_eq!(c, Hlc::new(10, 2));
        assert_eq!(c.tick(11), Hlc::new(11, 0));
    }

    #[test]
    fn receive_is_above_both_sides() {
        let local = Hlc::new(10, 3);
        for remote in [
            Hlc::new(12, 7),
            Hlc::new(10, 9),
            Hlc::new(3, 1),
            Hlc::new(10, 1),
        ] {
            for now in [0, 10, 11, 12, 20] {
                let r = local.receive(remote, now);
                assert!(r > local && r > remote, "{local} {remote} {now} -> {r}");
                assert!(r.physical >= now);
            }
        }
        assert_eq!(Hlc::from_bytes(&local.to_bytes()), Some(local));
        assert_eq!(Hlc::from_bytes(&[1, 2, 3]), None);
    }
}
