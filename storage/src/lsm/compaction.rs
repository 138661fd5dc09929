//! Compaction strategies and the choice of what to compact (pure functions of the
//! version; the engine runs the plan, see `Lsm::run_compaction`).
//!
//! - **Leveled**: L0 (flush output, overlapping) is compacted when it holds
//!   `l0_compaction_trigger` tables: all of L0 and the overlapping L1 tables merge into
//!   L1. A level `n ≥ 1` over its budget `level_base_bytes × fanout^(n−1)` (the fullest
//!   level relative to its budget first) gives up the table whose overlap with level
//!   `n+1` is smallest relative to its own size (least write amplification; the
//!   reference picked the most), merged with the overlapping `n+1` tables. Output is
//!   split at `target_file_bytes`, so levels ≥ 1 stay non-overlapping. A table with no
//!   overlap below and no tombstones moves down by a manifest edit alone. The last level
//!   is never compacted further.
//! - **Size-tiered**: all tables stay in L0, newest first. A run of tables adjacent in
//!   age whose sizes are within a factor of the run's average (`[avg/2, 3·avg/2]`, or all
//!   below `size_tiered_min_bytes`) merges once it holds `size_tiered_min_threshold`
//!   tables (at most `size_tiered_max_threshold`) into one table in its place. Only
//!   adjacent tables merge, so the tables' sequence ranges stay disjoint and newest-first
//!   reads stay correct.

use std::fmt;
use std::str::FromStr;

use crate::lsm::manifest::{MAX_LEVELS, VersionState};
use crate::lsm::sstable::TableMeta;

/// How tables are compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompactionStrategy {
    SizeTiered,
    #[default]
    Leveled,
}

impl fmt::Display for CompactionStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompactionStrategy::SizeTiered => "size_tiered",
            CompactionStrategy::Leveled => "leveled",
        })
    }
}

/// An unknown strategy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compaction strategy {0:?}: expected \"leveled\" or \"size_tiered\"")]
pub struct UnknownStrategy(pub String);

impl FromStr for CompactionStrategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leveled" => Ok(CompactionStrategy::Leveled),
            "size_tiered" | "size-tiered" => Ok(CompactionStrategy::SizeTiered),
            other => Err(UnknownStrategy(other.to_string())),
        }
    }
}

/// The parameters the choice depends on (from `LsmOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub strategy: CompactionStrategy,
    pub l0_compaction_trigger: usize,
    pub level_base_bytes: u64,
    pub level_fanout: u64,
    pub max_levels: usize,
    pub size_tiered_min_threshold: usize,
    pub size_tiered_max_threshold: usize,
    pub size_tiered_min_bytes: u64,
}

/// One compaction to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `(level, table number)` of every input.
    pub inputs: Vec<(usize, u64)>,
    pub output_level: usize,
    /// Move the single input down by a manifest edit, without rewriting it.
    pub trivial_move: bool,
    /// Split the output at the target file size (levels ≥ 1).
    pub split_output: bool,
    /// Tables outside the compaction that may hold older versions of its keys: a
    /// tombstone is dropped only if none of them may hold its key.
    pub older: Vec<u64>,
}

/// The byte budget of level `n ≥ 1`: `base × fanout^(n−1)`.
pub fn level_budget(p: &Params, n: usize) -> u64 {
    let mut budget = p.level_base_bytes;
    for _ in 1..n {
        budget = budget.saturating_mul(p.level_fanout);
    }
    budget
}

fn level_bytes(level: &[TableMeta]) -> u64 {
    level.iter().map(|t| t.size_bytes).sum()
}

/// The next compaction, if any is due.
pub fn pick(v: &VersionState, p: &Params) -> Option<Plan> {
    match p.strategy {
        CompactionStrategy::Leveled => pick_leveled(v, p),
        CompactionStrategy::SizeTiered => pick_size_tiered(v, p),
    }
}

fn key_span<'a>(tables: impl Iterator<Item = &'a TableMeta>) -> Option<(&'a [u8], &'a [u8])> {
    tables.fold(None, |acc, t| match acc {
        None => Some((t.smallest.as_slice(), t.largest.as_slice())),
        Some((lo, hi)) => Some((lo.min(t.smallest.as_slice()), hi.max(t.largest.as_slice()))),
    })
}

/// Tables at `level` and deeper, except `inputs`.
fn older_than(v: &VersionState, level: usize, inputs: &[(usize, u64)]) -> Vec<u64> {
    v.levels
        .iter()
        .enumerate()
        .skip(level)
        .flat_map(|(_, l)| l.iter().map(|t| t.number))
        .filter(|n| !inputs.iter().any(|(_, i)| i == n))
        .collect()
}

fn pick_leveled(v: &VersionState, p: &Params) -> Option<Plan> {
    let last = p.max_levels.min(MAX_LEVELS) - 1;
    if v.levels[0].len() >= p.l0_compaction_trigger && last >= 1 {
        let (lo, hi) = key_span(v.levels[0].iter())?;
        let mut inputs: Vec<(usize, u64)> = v.levels[0].iter().map(|t| (0, t.number)).collect();
        inputs.extend(
            v.levels[1]
                .iter()
                .filter(|t| t.overlaps(lo, hi))
                .map(|t| (1, t.number)),
        );
        let older = older_than(v, 1, &inputs);
        return Some(Plan {
            inputs,
            output_level: 1,
            trivial_move: false,
            split_output: true,
            older,
        });
    }
    // The level most over its budget.
    let (n, _) = (1..last)
        .filter_map(|n| {
            let bytes = level_bytes(&v.levels[n]);
            let budget = level_budget(p, n).max(1);
            (bytes > budget).then_some((n, bytes as f64 / budget as f64))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
    // The table with the least overlap with the next level, relative to its size.
    let next = &v.levels[n + 1];
    let overlap = |t: &TableMeta| -> u64 {
        next.iter()
            .filter(|u| u.overlaps(&t.smallest, &t.largest))
            .map(|u| u.size_bytes)
            .sum()
    };
    let chosen = v.levels[n].iter().min_by(|a, b| {
        let ra = overlap(a) as f64 / a.size_bytes.max(1) as f64;
        let rb = overlap(b) as f64 / b.size_bytes.max(1) as f64;
        ra.total_cmp(&rb).then(a.number.cmp(&b.number))
    })?;
    let mut inputs = vec![(n, chosen.number)];
    inputs.extend(
        next.iter()
            .filter(|u| u.overlaps(&chosen.smallest, &chosen.largest))
            .map(|u| (n + 1, u.number)),
    );
    let trivial_move = inputs.len() == 1 && chosen.tombstones == 0;
    let older = older_than(v, n + 1, &inputs);
    Some(Plan {
        inputs,
        output_level: n + 1,
        trivial_move,
        split_output: true,
        older,
    })
}

fn pick_size_tiered(v: &VersionState, p: &Params) -> Option<Plan> {
    let l0 = &v.levels[0];
    let similar = |run: &[TableMeta], t: &TableMeta| {
        let total: u64 = run.iter().map(|r| r.size_bytes).sum();
        let avg = total / run.len() as u64;
        let small = |s: u64| s < p.size_tiered_min_bytes;
        (small(t.size_bytes) && small(avg))
            || (t.size_bytes >= avg / 2 && t.size_bytes <= avg.saturating_mul(3) / 2)
    };
    // Runs of similar tables, adjacent in age; the one with the smallest tables wins.
    let mut best: Option<(usize, usize, u64)> = None;
    let mut start = 0;
    while start < l0.len() {
        let mut end = start + 1;
        while end < l0.len() && end - start < p.size_tiered_max_threshold {
            if !similar(&l0[start..end], &l0[end]) {
                break;
            }
            end += 1;
        }
        if end - start >= p.size_tiered_min_threshold {
            let avg = level_bytes(&l0[start..end]) / (end - start) as u64;
            if best.is_none_or(|(_, _, b)| avg < b) {
                best = Some((start, end, avg));
            }
        }
        start += 1;
    }
    let (start, end, _) = best?;
    let inputs: Vec<(usize, u64)> = l0[start..end].iter().map(|t| (0, t.number)).collect();
    // Older: the L0 tables after the run, and every deeper table.
    let mut older: Vec<u64> = l0[end..].iter().map(|t| t.number).collect();
    older.extend(older_than(v, 1, &inputs));
    Some(Plan {
        inputs,
        output_level: 0,
        trivial_move: false,
        split_output: false,
        older,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_parses_and_rejects_unknown_names() {
        assert_eq!("leveled".parse(), Ok(CompactionStrategy::Leveled));
        assert_eq!("size_tiered".parse(), Ok(CompactionStrategy::SizeTiered));
        assert!("tiered".parse::<CompactionStrategy>().is_err());
        assert!("".parse::<CompactionStrategy>().is_err());
        for s in [CompactionStrategy::Leveled, CompactionStrategy::SizeTiered] {
            assert_eq!(s.to_string().parse(), Ok(s));
        }
    }

    fn params(strategy: CompactionStrategy) -> Params {
        Params {
            strategy,
            l0_compaction_trigger: 4,
            level_base_bytes: 100,
            level_fanout: 10,
            max_levels: 7,
            size_tiered_min_threshold: 3,
            size_tiered_max_threshold: 32,
            size_tiered_min_bytes: 0,
        }
    }

    fn table(number: u64, lo: &str, hi: &str, size_bytes: u64, seq: u64) -> TableMeta {
        TableMeta {
            number,
            size_bytes,
            entries: 1,
            tombstones: 0,
            min_seq: seq,
            max_seq: seq,
            smallest: lo.as_bytes().to_vec(),
            largest: hi.as_bytes().to_vec(),
        }
    }

    /// Reference defect: leveled compaction picked the source table with the *most*
    /// overlap with the next level. The pick is the least overlap (relative to size).
    #[test]
    fn leveled_picks_the_table_with_least_overlap() {
        let mut v = VersionState {
            next_file: 100,
            last_seq: 100,
            ..VersionState::default()
        };
        v.levels[1] = vec![table(1, "a", "c", 80, 1), table(2, "d", "f", 80, 2)];
        v.levels[2] = vec![
            table(3, "a", "a", 500, 3),
            table(4, "b", "b", 500, 4),
            table(5, "e", "e", 100, 5),
        ];
        let plan = pick(&v, &params(CompactionStrategy::Leveled)).unwrap();
        assert_eq!(plan.inputs, vec![(1, 2), (2, 5)]);
        assert_eq!(plan.output_level, 2);
        assert!(!plan.trivial_move);
    }

    /// Size-tiered merges only runs of tables adjacent in age (so sequence ranges stay
    /// disjoint) and never a small table with a much larger one.
    #[test]
    fn size_tiered_merges_adjacent_similar_tables() {
        let mut v = VersionState {
            next_file: 100,
            last_seq: 100,
            ..VersionState::default()
        };
        // Newest first: three small, one big, one small.
        v.levels[0] = vec![
            table(5, "a", "z", 100, 50),
            table(4, "a", "z", 110, 40),
            table(3, "a", "z", 90, 30),
            table(2, "a", "z", 5000, 20),
            table(1, "a", "z", 100, 10),
        ];
        let plan = pick(&v, &params(CompactionStrategy::SizeTiered)).unwrap();
        assert_eq!(plan.inputs, vec![(0, 5), (0, 4), (0, 3)]);
        assert_eq!(plan.older, vec![2, 1]);
        v.levels[0].remove(1);
        assert_eq!(pick(&v, &params(CompactionStrategy::SizeTiered)), None);
    }

    #[test]
    fn budgets_grow_by_the_fanout() {
        let p = Params {
            strategy: CompactionStrategy::Leveled,
            l0_compaction_trigger: 4,
            level_base_bytes: 100,
            level_fanout: 10,
            max_levels: 7,
            size_tiered_min_threshold: 4,
            size_tiered_max_threshold: 32,
            size_tiered_min_bytes: 0,
        };
        assert_eq!(level_budget(&p, 1), 100);
        assert_eq!(level_budget(&p, 3), 10_000);
    }
}
