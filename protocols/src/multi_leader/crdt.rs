//! State-based CRDTs (convergent replicated data types) as plain values.
//!
//! Every type is a join-semilattice: [`merge`](GCounter::merge) is the least upper
//! bound, so it is commutative, associative, idempotent and inflationary
//! (`protocols/tests/multi_leader.rs` checks all four laws for every type). A merge
//! borrows both sides and returns a new value: it never mutates an argument.
//!
//! Replicas are named by a stable [`ReplicaId`] (the node id). The causal types
//! (MV-Register, OR-Set) are *dotted*: every write is tagged with a unique dot
//! `(replica, n)` and carries a [`CausalContext`], the set of dots it has seen, kept as
//! a version vector plus a "dot cloud" of the dots seen out of order. The cloud empties
//! as the gaps fill, so a removal leaves no tombstone: a removed element is simply a dot
//! in the context with no entry in the store.
//!
//! Each type can also produce a *delta*: a small value of the same type which, merged
//! into any replica that has seen the operation's causal past, has the effect of the
//! operation (delta-state CRDTs, Almeida, Shoker and Baquero 2018).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::hlc::Hlc;

/// A replica's stable identity: the node id.
pub type ReplicaId = u32;

/// A unique event: the `counter`-th event of `replica` (from 1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub replica: ReplicaId,
    pub counter: u64,
}

impl Dot {
    pub fn new(replica: ReplicaId, counter: u64) -> Dot {
        Dot { replica, counter }
    }
}

impl std::fmt::Display for Dot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({},{})", self.replica, self.counter)
    }
}

/// A set of dots: a version vector (every dot up to `vv[r]` of replica `r`) plus the
/// dots seen beyond a gap. Canonical: the cloud never holds a dot the vector covers or
/// the one right after it (compaction moves those in), and the vector holds no zeros.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalContext {
    vv: BTreeMap<ReplicaId, u64>,
    cloud: BTreeSet<Dot>,
}

impl CausalContext {
    pub fn new() -> Self {
        CausalContext::default()
    }

    pub fn contains(&self, dot: Dot) -> bool {
        self.vv.get(&dot.replica).is_some_and(|&n| dot.counter <= n) || self.cloud.contains(&dot)
    }

    /// The highest contiguous counter seen of `replica` (0 if none).
    pub fn max_contiguous(&self, replica: ReplicaId) -> u64 {
        self.vv.get(&replica).copied().unwrap_or(0)
    }

    /// The highest counter seen of `replica`, contiguous or not.
    pub fn max_seen(&self, replica: ReplicaId) -> u64 {
        let cloud_max = self
            .cloud
            .range(Dot::new(replica, 0)..=Dot::new(replica, u64::MAX))
            .next_back()
            .map_or(0, |d| d.counter);
        self.max_contiguous(replica).max(cloud_max)
    }

    /// Entries kept: version-vector entries plus dots beyond it.
    pub fn size(&self) -> usize {
        self.vv.len() + self.cloud.len()
    }

    /// The number of dots kept beyond the version vector (garbage not yet collected).
    pub fn cloud_len(&self) -> usize {
        self.cloud.len()
    }

    /// Returns a copy with `dot` added.
    pub fn with(&self, dot: Dot) -> Self {
        let mut out = self.clone();
        out.insert(dot);
        out
    }

    fn insert(&mut self, dot: Dot) {
        if dot.counter == 0 || self.contains(dot) {
            return;
        }
        self.cloud.insert(dot);
        self.compact();
    }

    /// Moves cloud dots that extend the version vector into it. The cloud is ordered by
    /// (replica, counter), so one pass suffices.
    fn compact(&mut self) {
        let cloud = std::mem::take(&mut self.cloud);
        for dot in cloud {
            let seen = self.vv.get(&dot.replica).copied().unwrap_or(0);
            if dot.counter <= seen {
                continue;
            }
            if dot.counter == seen + 1 {
                self.vv.insert(dot.replica, dot.counter);
            } else {
                self.cloud.insert(dot);
            }
        }
    }

    pub fn merge(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for (&r, &n) in &other.vv {
            let e = out.vv.entry(r).or_insert(0);
            *e = (*e).max(n);
        }
        out.cloud.extend(other.cloud.iter().copied());
        out.compact();
        out
    }

    /// Every dot in a set of dots, as a context.
    pub fn from_dots(dots: impl IntoIterator<Item = Dot>) -> Self {
        let mut out = CausalContext::new();
        for d in dots {
            out.insert(d);
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------------

/// A grow-only counter: one non-decreasing entry per replica; the value is their sum,
/// the merge their pointwise maximum.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GCounter {
    entries: BTreeMap<ReplicaId, u64>,
}

impl GCounter {
    pub fn new() -> Self {
        GCounter::default()
    }

    pub fn value(&self) -> u64 {
        self.entries
            .values()
            .fold(0u64, |sum, &n| sum.saturating_add(n))
    }

    /// This replica's entry.
    pub fn entry(&self, replica: ReplicaId) -> u64 {
        self.entries.get(&replica).copied().unwrap_or(0)
    }

    /// The delta of `replica` incrementing by `by`: its entry alone, raised.
    pub fn increment_delta(&self, replica: ReplicaId, by: u64) -> GCounter {
        let mut entries = BTreeMap::new();
        if by > 0 {
            entries.insert(replica, self.entry(replica).saturating_add(by));
        }
        GCounter { entries }
    }

    pub fn merge(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for (&r, &n) in &other.entries {
            let e = out.entries.entry(r).or_insert(0);
            *e = (*e).max(n);
        }
        out
    }

    /// The defect `gcounter_merge_sums`: entries are added, not joined.
    fn merge_summing(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for (&r, &n) in &other.entries {
            let e = out.entries.entry(r).or_insert(0);
            *e = e.saturating_add(n);
        }
        out
    }
}

/// A counter that also decrements: two grow-only counters, increments `p` and
/// decrements `n`; the value is `p - n`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnCounter {
    p: GCounter,
    n: GCounter,
}

impl PnCounter {
    pub fn new() -> Self {
        PnCounter::default()
    }

    pub fn value(&self) -> i64 {
        let v = i128::from(self.p.value()) - i128::from(self.n.value());
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    pub fn increment_delta(&self, replica: ReplicaId, by: u64) -> PnCounter {
        PnCounter {
            p: self.p.increment_delta(replica, by),
            n: GCounter::new(),
        }
    }

    pub fn decrement_delta(&self, replica: ReplicaId, by: u64) -> PnCounter {
        PnCounter {
            p: GCounter::new(),
            n: self.n.increment_delta(replica, by),
        }
    }

    pub fn merge(&self, other: &Self) -> Self {
        PnCounter {
            p: self.p.merge(&other.p),
            n: self.n.merge(&other.n),
        }
    }

    fn merge_summing(&self, other: &Self) -> Self {
        PnCounter {
            p: self.p.merge_summing(&other.p),
            n: self.n.merge_summing(&other.n),
        }
    }
}

// ---------------------------------------------------------------------------------
// Registers
// ---------------------------------------------------------------------------------

/// A last-writer-wins timestamp: a hybrid logical clock reading, ties broken by the
/// writer's replica id. Ordered by clock, then replica; unique per write because a
/// node's clock strictly increases.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub hlc: Hlc,
    pub replica: ReplicaId,
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.hlc, self.replica)
    }
}

/// A last-writer-wins register: the value with the greatest [`Stamp`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister {
    current: Option<(Stamp, String)>,
}

impl LwwRegister {
    pub fn new() -> Self {
        LwwRegister::default()
    }

    pub fn value(&self) -> Option<&str> {
        self.current.as_ref().map(|(_, v)| v.as_str())
    }

    pub fn stamp(&self) -> Option<Stamp> {
        self.current.as_ref().map(|(s, _)| *s)
    }

    /// The delta of writing `value` at `stamp`.
    pub fn assign_delta(stamp: Stamp, value: impl Into<String>) -> LwwRegister {
        LwwRegister {
            current: Some((stamp, value.into())),
        }
    }

    pub fn merge(&self, other: &Self) -> Self {
        match (&self.current, &other.current) {
            (Some((a, _)), Some((b, _))) if b > a => other.clone(),
            (None, _) => other.clone(),
            _ => self.clone(),
        }
    }

    /// The defect `lww_no_tiebreak`: equal clocks are resolved by arrival order (the
    /// value already here stays), not by replica id.
    fn merge_no_tiebreak(&self, other: &Self) -> Self {
        match (&self.current, &other.current) {
            (Some((a, _)), Some((b, _))) if b.hlc > a.hlc => other.clone(),
            (None, _) => other.clone(),
            _ => self.clone(),
        }
    }
}

/// Joins two dot stores keyed by dot: an entry survives if both sides have it, or if the
/// side without it has not seen its dot (so it is new, not removed).
fn join_dots<V: Clone>(
    a: &BTreeMap<Dot, V>,
    a_ctx: &CausalContext,
    b: &BTreeMap<Dot, V>,
    b_ctx: &CausalContext,
) -> BTreeMap<Dot, V> {
    let mut out = BTreeMap::new();
    for (d, v) in a {
        if b.contains_key(d) || !b_ctx.contains(*d) {
            out.insert(*d, v.clone());
        }
    }
    for (d, v) in b {
        if !a.contains_key(d) && !a_ctx.contains(*d) {
            out.insert(*d, v.clone());
        }
    }
    out
}

/// A multi-value register: a write replaces every value it has seen; concurrent writes
/// are all kept (the maximal antichain of writes under causality).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MvRegister {
    entries: BTreeMap<Dot, String>,
    context: CausalContext,
}

impl MvRegister {
    pub fn new() -> Self {
        MvRegister::default()
    }

    /// The concurrent values, in dot order.
    pub fn values(&self) -> Vec<&str> {
        self.entries.values().map(String::as_str).collect()
    }

    pub fn entries(&self) -> &BTreeMap<Dot, String> {
        &self.entries
    }

    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// The dots a write here would supersede.
    pub fn current_dots(&self) -> Vec<Dot> {
        self.entries.keys().copied().collect()
    }

    /// The delta of writing `value` with the fresh dot `dot`: the new entry, with a
    /// context covering every value it replaces.
    pub fn assign_delta(&self, dot: Dot, value: impl Into<String>) -> MvRegister {
        let mut entries = BTreeMap::new();
        entries.insert(dot, value.into());
        MvRegister {
            entries,
            context: CausalContext::from_dots(self.entries.keys().copied().chain([dot])),
        }
    }

    pub fn merge(&self, other: &Self) -> Self {
        MvRegister {
            entries: join_dots(&self.entries, &self.context, &other.entries, &other.context),
            context: self.context.merge(&other.context),
        }
    }

    /// The defect `mvreg_collapse`: after the join only the entry with the greatest
    /// dot survives, so concurrent writes collapse to one value.
    fn merge_collapsing(&self, other: &Self) -> Self {
        let mut joined = self.merge(other);
        if let Some((&d, v)) = joined.entries.iter().next_back() {
            let v = v.clone();
            joined.entries = BTreeMap::from([(d, v)]);
        }
        joined
    }
}

// ---------------------------------------------------------------------------------
// Sets
// ---------------------------------------------------------------------------------

/// An observed-remove, add-wins set: each add tags its element with a fresh dot; a
/// remove deletes the dots it has observed (and only those), so a concurrent add
/// survives it. Removed dots live on only in the causal context, which compacts to a
/// version vector: no tombstones.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet {
    entries: BTreeMap<Dot, String>,
    context: CausalContext,
}

impl OrSet {
    pub fn new() -> Self {
        OrSet::default()
    }

    /// The elements, sorted, without repetition.
    pub fn elements(&self) -> BTreeSet<&str> {
        self.entries.values().map(String::as_str).collect()
    }

    pub fn contains(&self, element: &str) -> bool {
        self.entries.values().any(|e| e == element)
    }

    pub fn entries(&self) -> &BTreeMap<Dot, String> {
        &self.entries
    }

    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// The dots of `element` here.
    pub fn dots_of(&self, element: &str) -> Vec<Dot> {
        self.entries
            .iter()
            .filter(|(_, e)| *e == element)
            .map(|(d, _)| *d)
            .collect()
    }

    /// The delta of adding `element` with the fresh dot `dot`: the new dot, and in the
    /// context the element's dots observed here as well, so the add replaces them (the
    /// optimized add-wins set). An element re-added without a remove therefore keeps one
    /// dot per concurrent add, not one per add ever made; an add this replica has not
    /// observed keeps its dot, so a concurrent add still survives a remove.
    pub fn add_delta(&self, dot: Dot, element: impl Into<String>) -> OrSet {
        let element = element.into();
        let observed = self.dots_of(&element);
        OrSet {
            entries: BTreeMap::from([(dot, element)]),
            context: CausalContext::from_dots(observed.into_iter().chain([dot])),
        }
    }

    /// The delta of removing `element` as observed here: no entries, the observed dots
    /// in the context.
    pub fn remove_delta(&self, element: &str) -> OrSet {
        OrSet {
            entries: BTreeMap::new(),
            context: CausalContext::from_dots(self.dots_of(element)),
        }
    }

    pub fn merge(&self, other: &Self) -> Self {
        OrSet {
            entries: join_dots(&self.entries, &self.context, &other.entries, &other.context),
            context: self.context.merge(&other.context),
        }
    }

    /// The defect `orset_remove_unobserved`: an element `other` has removed (it has
    /// seen one of our dots for it and kept no entry for it) loses *all* its dots here,
    /// including adds `other` never observed.
    fn merge_remove_unobserved(&self, other: &Self) -> Self {
        let mut joined = self.merge(other);
        let other_elements: BTreeSet<&String> = other.entries.values().collect();
        let removed: BTreeSet<String> = self
            .entries
            .iter()
            .filter(|(d, e)| other.context.contains(**d) && !other_elements.contains(e))
            .map(|(_, e)| e.clone())
            .collect();
        joined.entries.retain(|_, e| !removed.contains(e));
        joined
    }
}

// ---------------------------------------------------------------------------------
// Custom merge
// ---------------------------------------------------------------------------------

/// The type of the values a custom-merge key space holds; a write whose value does not
/// parse as this type is refused at the node that takes it, so a merge never meets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A signed 64-bit integer in decimal.
    Int,
    /// Any text.
    Text,
    /// A set of elements, written as comma-separated text (`"a,b"`; `""` is empty).
    Set,
}

impl ValueType {
    pub const ALL: [ValueType; 3] = [ValueType::Int, ValueType::Text, ValueType::Set];

    pub fn name(self) -> &'static str {
        match self {
            ValueType::Int => "int",
            ValueType::Text => "text",
            ValueType::Set => "set",
        }
    }

    pub fn from_name(name: &str) -> Option<ValueType> {
        ValueType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether `value` is a value of this type.
    pub fn admits(self, value: &str) -> Result<(), String> {
        match self {
            ValueType::Int => value
                .parse::<i64>()
                .map(|_| ())
                .map_err(|_| format!("{value:?} is not an int")),
            ValueType::Text => Ok(()),
            ValueType::Set => {
                if value.split(',').any(|e| e.is_empty()) && !value.is_empty() {
                    Err(format!(
                        "{value:?} is not a set (comma-separated, no empty element)"
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// A named merge function for concurrent values. Each is commutative, associative and
/// idempotent over its value type (a semilattice join on values), so folding any
/// antichain of concurrent values in any order gives one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeFn {
    /// The greatest value (numerically for ints, by bytes for text).
    Max,
    /// The least value.
    Min,
    /// The longest text, ties to the greatest by bytes.
    Longest,
    /// The union of sets.
    Union,
    /// The intersection of sets.
    Intersection,
}

impl MergeFn {
    pub const ALL: [MergeFn; 5] = [
        MergeFn::Max,
        MergeFn::Min,
        MergeFn::Longest,
        MergeFn::Union,
        MergeFn::Intersection,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MergeFn::Max => "max",
            MergeFn::Min => "min",
            MergeFn::Longest => "longest",
            MergeFn::Union => "union",
            MergeFn::Intersection => "intersection",
        }
    }

    pub fn from_name(name: &str) -> Option<MergeFn> {
        MergeFn::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The functions that merge values of `ty`.
    pub fn for_type(ty: ValueType) -> &'static [MergeFn] {
        match ty {
            ValueType::Int => &[MergeFn::Max, MergeFn::Min],
            ValueType::Text => &[MergeFn::Max, MergeFn::Min, MergeFn::Longest],
            ValueType::Set => &[MergeFn::Union, MergeFn::Intersection],
        }
    }
}

/// A custom-merge key space's strategy: a value type and a merge function valid for it.
/// Built only by [`CustomMerge::new`], which refuses a function that does not fit the type,
/// so no configuration can fail at its first conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CustomMerge {
    ty: ValueType,
    function: MergeFn,
}

/// A merge function named for a value type it cannot merge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("merge function {function} does not apply to {ty} values; expected one of: {expected}")]
pub struct MergeMismatch {
    pub function: &'static str,
    pub ty: &'static str,
    pub expected: String,
}

impl CustomMerge {
    pub fn new(ty: ValueType, function: MergeFn) -> Result<CustomMerge, MergeMismatch> {
        let valid = MergeFn::for_type(ty);
        if valid.contains(&function) {
            Ok(CustomMerge { ty, function })
        } else {
            Err(MergeMismatch {
                function: function.name(),
                ty: ty.name(),
                expected: valid
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }

    pub fn value_type(self) -> ValueType {
        self.ty
    }

    pub fn function(self) -> MergeFn {
        self.function
    }

    /// Two values merged. Values of the wrong type (never written: writes are checked)
    /// are ordered as text, so the function stays total.
    pub fn merge_two(self, a: &str, b: &str) -> String {
        let by_int = |pick_greater: bool| match (a.parse::<i64>(), b.parse::<i64>()) {
            (Ok(x), Ok(y)) => {
                if (x >= y) == pick_greater {
                    a.to_string()
                } else {
                    b.to_string()
                }
            }
            _ => if (a >= b) == pick_greater { a } else { b }.to_string(),
        };
        let elements = |s: &str| -> BTreeSet<String> {
            s.split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect()
        };
        match (self.ty, self.function) {
            (ValueType::Int, MergeFn::Max) => by_int(true),
            (ValueType::Int, MergeFn::Min) => by_int(false),
            (_, MergeFn::Max) => a.max(b).to_string(),
            (_, MergeFn::Min) => a.min(b).to_string(),
            (_, MergeFn::Longest) => if (a.len(), a) >= (b.len(), b) { a } else { b }.to_string(),
            (_, MergeFn::Union) => {
                let all: Vec<String> = elements(a).union(&elements(b)).cloned().collect();
                all.join(",")
            }
            (_, MergeFn::Intersection) => {
                let both: Vec<String> = elements(a).intersection(&elements(b)).cloned().collect();
                both.join(",")
            }
        }
    }

    /// The resolution of concurrent values: the function folded over them in order
    /// (any order gives the same answer); `None` for no value.
    pub fn resolve<'a>(self, values: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let mut out: Option<String> = None;
        for v in values {
            out = Some(match out {
                None => self.merge_two(v, v),
                Some(acc) => self.merge_two(&acc, v),
            });
        }
        out
    }
}

/// A custom-merge register: a multi-value register (a write replaces every value it has
/// seen; concurrent writes are all kept) whose concurrent values read as their merge
/// by the key space's function.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedRegister {
    merge: CustomMerge,
    register: MvRegister,
}

impl MergedRegister {
    pub fn new(merge: CustomMerge) -> Self {
        MergedRegister {
            merge,
            register: MvRegister::new(),
        }
    }

    pub fn strategy(&self) -> CustomMerge {
        self.merge
    }

    pub fn register(&self) -> &MvRegister {
        &self.register
    }

    /// The value a reader sees: the concurrent values merged.
    pub fn resolved(&self) -> Option<String> {
        self.merge.resolve(self.register.values())
    }

    pub fn assign_delta(&self, dot: Dot, value: impl Into<String>) -> MergedRegister {
        MergedRegister {
            merge: self.merge,
            register: self.register.assign_delta(dot, value),
        }
    }

    fn with_register(&self, register: MvRegister) -> MergedRegister {
        MergedRegister {
            merge: self.merge,
            register,
        }
    }
}

// ---------------------------------------------------------------------------------
// Typed values
// ---------------------------------------------------------------------------------

/// The kind of data a key space holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    GCounter,
    PnCounter,
    /// Last-writer-wins by hybrid logical clock and node id.
    Lww,
    MvRegister,
    OrSet,
    /// A multi-value register read through a named merge function (a custom key space).
    Custom(CustomMerge),
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::GCounter,
        Kind::PnCounter,
        Kind::Lww,
        Kind::MvRegister,
        Kind::OrSet,
    ];

    /// The key prefix of this kind's key space (`g.k0`, `pn.k0`, ...); custom key spaces
    /// are named by the scenario ([`KeySpaces`]).
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::GCounter => "g",
            Kind::PnCounter => "pn",
            Kind::Lww => "lww",
            Kind::MvRegister => "mv",
            Kind::OrSet => "set",
            Kind::Custom(_) => "custom",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::GCounter => "gcounter",
            Kind::PnCounter => "pncounter",
            Kind::Lww => "lww",
            Kind::MvRegister => "mvregister",
            Kind::OrSet => "orset",
            Kind::Custom(_) => "custom merge register",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind of a key, from its key space (the text before the first `.`).
    pub fn of_key(key: &str) -> Option<Kind> {
        let prefix = key.split_once('.')?.0;
        Kind::ALL.into_iter().find(|k| k.prefix() == prefix)
    }

    pub fn bottom(self) -> Value {
        match self {
            Kind::GCounter => Value::GCounter(GCounter::new()),
            Kind::PnCounter => Value::PnCounter(PnCounter::new()),
            Kind::Lww => Value::Lww(LwwRegister::new()),
            Kind::MvRegister => Value::MvRegister(MvRegister::new()),
            Kind::OrSet => Value::OrSet(OrSet::new()),
            Kind::Custom(m) => Value::Custom(MergedRegister::new(m)),
        }
    }
}

/// The key spaces of a run: the built-in ones (`g.`, `pn.`, `lww.`, `mv.`, `set.`) and
/// the custom-merge ones the scenario names, each with its strategy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpaces {
    custom: BTreeMap<String, CustomMerge>,
}

impl KeySpaces {
    /// Built-in key spaces only.
    pub fn builtin() -> Self {
        KeySpaces::default()
    }

    /// Adds a custom key space; refuses a name that is empty, holds a `.`, or is taken.
    pub fn with_custom(mut self, name: &str, merge: CustomMerge) -> Result<Self, String> {
        if name.is_empty() || name.contains('.') {
            return Err(format!(
                "custom key space {name:?}: expected a non-empty name without a dot"
            ));
        }
        if Kind::ALL.iter().any(|k| k.prefix() == name) || self.custom.contains_key(name) {
            return Err(format!("custom key space {name:?} is already a key space"));
        }
        self.custom.insert(name.to_string(), merge);
        Ok(self)
    }

    pub fn custom(&self) -> &BTreeMap<String, CustomMerge> {
        &self.custom
    }

    /// The kind of `key`, from its key space (the text before its first `.`).
    pub fn kind_of(&self, key: &str) -> Option<Kind> {
        Kind::of_key(key).or_else(|| {
            let prefix = key.split_once('.')?.0;
            self.custom.get(prefix).map(|&m| Kind::Custom(m))
        })
    }

    /// The key space names, for messages.
    pub fn names(&self) -> Vec<String> {
        Kind::ALL
            .iter()
            .map(|k| format!("{}.", k.prefix()))
            .chain(self.custom.keys().map(|k| format!("{k}.")))
            .collect()
    }
}

/// A key's replicated value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    GCounter(GCounter),
    PnCounter(PnCounter),
    Lww(LwwRegister),
    MvRegister(MvRegister),
    OrSet(OrSet),
    Custom(MergedRegister),
}

/// Merging two values of different kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot merge a {left} with a {right}")]
pub struct KindMismatch {
    pub left: &'static str,
    pub right: &'static str,
}

/// Defects a merge can be asked to re-introduce (the protocol's bug flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeFlaws {
    pub counters_sum: bool,
    pub lww_no_tiebreak: bool,
    pub mv_collapse: bool,
    pub orset_remove_unobserved: bool,
}

impl Value {
    pub fn kind(&self) -> Kind {
        match self {
            Value::GCounter(_) => Kind::GCounter,
            Value::PnCounter(_) => Kind::PnCounter,
            Value::Lww(_) => Kind::Lww,
            Value::MvRegister(_) => Kind::MvRegister,
            Value::OrSet(_) => Kind::OrSet,
            Value::Custom(r) => Kind::Custom(r.merge),
        }
    }

    /// The join of two values of one kind.
    pub fn merge(&self, other: &Value) -> Result<Value, KindMismatch> {
        self.merge_with(other, MergeFlaws::default())
    }

    /// The join, or with `flaws` a deliberately broken merge.
    pub fn merge_with(&self, other: &Value, flaws: MergeFlaws) -> Result<Value, KindMismatch> {
        Ok(match (self, other) {
            (Value::GCounter(a), Value::GCounter(b)) if flaws.counters_sum => {
                Value::GCounter(a.merge_summing(b))
            }
            (Value::GCounter(a), Value::GCounter(b)) => Value::GCounter(a.merge(b)),
            (Value::PnCounter(a), Value::PnCounter(b)) if flaws.counters_sum => {
                Value::PnCounter(a.merge_summing(b))
            }
            (Value::PnCounter(a), Value::PnCounter(b)) => Value::PnCounter(a.merge(b)),
            (Value::Lww(a), Value::Lww(b)) if flaws.lww_no_tiebreak => {
                Value::Lww(a.merge_no_tiebreak(b))
            }
            (Value::Lww(a), Value::Lww(b)) => Value::Lww(a.merge(b)),
            (Value::MvRegister(a), Value::MvRegister(b)) if flaws.mv_collapse => {
                Value::MvRegister(a.merge_collapsing(b))
            }
            (Value::MvRegister(a), Value::MvRegister(b)) => Value::MvRegister(a.merge(b)),
            (Value::OrSet(a), Value::OrSet(b)) if flaws.orset_remove_unobserved => {
                Value::OrSet(a.merge_remove_unobserved(b))
            }
            (Value::OrSet(a), Value::OrSet(b)) => Value::OrSet(a.merge(b)),
            (Value::Custom(a), Value::Custom(b)) if a.merge == b.merge => {
                let register = if flaws.mv_collapse {
                    a.register.merge_collapsing(&b.register)
                } else {
                    a.register.merge(&b.register)
                };
                Value::Custom(a.with_register(register))
            }
            (a, b) => {
                return Err(KindMismatch {
                    left: a.kind().name(),
                    right: b.kind().name(),
                });
            }
        })
    }

    /// The causal metadata the value keeps: dots of its entries plus its context's
    /// entries (counters and LWW keep none beyond their values).
    pub fn metadata_size(&self) -> usize {
        match self {
            Value::GCounter(_) | Value::PnCounter(_) | Value::Lww(_) => 0,
            Value::MvRegister(r) => r.entries.len() + r.context.size(),
            Value::OrSet(s) => s.entries.len() + s.context.size(),
            Value::Custom(r) => r.register.entries.len() + r.register.context.size(),
        }
    }

    /// A short rendering of the value a reader sees (no metadata), for transcripts.
    pub fn render(&self) -> String {
        match self {
            Value::GCounter(c) => c.value().to_string(),
            Value::PnCounter(c) => c.value().to_string(),
            Value::Lww(r) => r.value().unwrap_or("-").to_string(),
            Value::MvRegister(r) => format!("{{{}}}", r.values().join(",")),
            Value::OrSet(s) => {
                format!(
                    "{{{}}}",
                    s.elements().into_iter().collect::<Vec<_>>().join(",")
                )
            }
            Value::Custom(r) => r.resolved().unwrap_or_else(|| "-".into()),
        }
    }
}

// ---------------------------------------------------------------------------------
// Compact renderings for traces and violation messages
// ---------------------------------------------------------------------------------

impl std::fmt::Debug for Dot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Debug for CausalContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vv: Vec<String> = self.vv.iter().map(|(r, n)| format!("{r}:{n}")).collect();
        write!(f, "[{}]", vv.join(" "))?;
        if !self.cloud.is_empty() {
            let cloud: Vec<String> = self.cloud.iter().map(Dot::to_string).collect();
            write!(f, "+{}", cloud.join(""))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for GCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e: Vec<String> = self
            .entries
            .iter()
            .map(|(r, n)| format!("{r}:{n}"))
            .collect();
        write!(f, "G{{{}}}", e.join(" "))
    }
}

impl std::fmt::Debug for PnCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PN{{+{:?} -{:?}}}", self.p, self.n)
    }
}

impl std::fmt::Debug for LwwRegister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.current {
            None => f.write_str("Lww{}"),
            Some((stamp, v)) => write!(f, "Lww{{{v:?} at {stamp}}}"),
        }
    }
}

fn fmt_dotted(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    entries: &BTreeMap<Dot, String>,
    context: &CausalContext,
) -> std::fmt::Result {
    let e: Vec<String> = entries.iter().map(|(d, v)| format!("{d}{v:?}")).collect();
    write!(f, "{name}{{{} ctx {context:?}}}", e.join(" "))
}

impl std::fmt::Debug for MvRegister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_dotted(f, "Mv", &self.entries, &self.context)
    }
}

impl std::fmt::Debug for MergedRegister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = format!("{}:{}", self.merge.ty.name(), self.merge.function.name());
        fmt_dotted(f, &name, &self.register.entries, &self.register.context)
    }
}

impl std::fmt::Debug for OrSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_dotted(f, "Set", &self.entries, &self.context)
    }
}
