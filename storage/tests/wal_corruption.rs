//! Corrupt WAL files never panic and never yield a wrong record.
//!
//! 1. Exhaustive: every byte of every file of a small WAL (three segments, a batch, a
//!    checkpoint, a truncation point in `wal.meta`), XORed with three patterns, opened in
//!    both recovery modes.
//! 2. Random: a disk that misdirects writes, flips bits on read and grows latent sector
//!    errors, with crashes; whatever recovery returns must have been written.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Env, RealEnv, SimEnv, payload, write_file};
use proptest::prelude::*;
use sim_core::disk::DiskConfig;
use storage::bugs::{EngineBug, EngineBugs};
use storage::vfs::{VfsHandle, join};
use storage::wal::{Record, RecordKind, RecoveryMode, SyncPolicy, Wal, WalError, WalOptions};

const DIR: &str = "wal";

fn options(recovery: RecoveryMode) -> WalOptions {
    WalOptions {
        max_segment_bytes: 128,
        recovery,
        ..WalOptions::default()
    }
}

/// The reference WAL: its files, and every record (all kinds) above the truncation
/// point, by sequence number.
struct Reference {
    files: Vec<(String, Vec<u8>)>,
    records: BTreeMap<u64, Record>,
    /// For each batch record and commit: the batch's (first, commit) sequence numbers.
    batches: BTreeMap<u64, (u64, u64)>,
    low: u64,
    /// The first sequence number of the last segment: damage before it is never a torn
    /// tail.
    last_segment_first: u64,
}

fn build_reference() -> Reference {
    let env = SimEnv::new(DiskConfig::reliable(), 1);
    let vfs = env.vfs();
    let mut wal = Wal::open(vfs.clone(), DIR, options(RecoveryMode::Strict)).unwrap();
    wal.append(&payload(1, 10)).unwrap(); // 1
    wal.append(&payload(2, 10)).unwrap(); // 2
    wal.truncate(1).unwrap();
    wal.append(&payload(3, 30)).unwrap(); // 3
    let b = wal
        .append_batch(&[payload(4, 5), payload(5, 5), payload(6, 5)])
        .unwrap(); // 4, 5, 6, commit 7
    wal.checkpoint().unwrap(); // 8
    wal.append(&payload(9, 0)).unwrap(); // 9
    wal.append_many(&[payload(10, 3), payload(11, 40)]).unwrap(); // 10, 11
    assert!(wal.segment_numbers().len() >= 3);
    let records: BTreeMap<u64, Record> = wal
        .records(0)
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, r))
        .collect();
    assert_eq!(records.len(), 10);
    let batches = (b.first..=b.commit)
        .map(|s| (s, (b.first, b.commit)))
        .collect();
    wal.close().unwrap();
    let files: Vec<(String, Vec<u8>)> = vfs
        .list(DIR)
        .unwrap()
        .into_iter()
        .map(|name| {
            let path = join(DIR, &name);
            let bytes = common::read_file(&vfs, &path);
            (path, bytes)
        })
        .collect();
    let last_segment_first = files
        .iter()
        .filter(|(path, _)| path.ends_with(".wal"))
        .max_by(|a, b| a.0.cmp(&b.0))
        .and_then(|(_, bytes)| bytes.get(24..32))
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .expect("a segment");
    Reference {
        files,
        records,
        batches,
        low: 1,
        last_segment_first,
    }
}

/// Checks what recovery made of a corrupted copy of the reference: `Err` says what is
/// wrong with it.
fn check(
    reference: &Reference,
    mode: RecoveryMode,
    result: Result<Wal, WalError>,
    what: &str,
) -> Result<(), String> {
    let wal = match result {
        Err(
            WalError::Corruption { .. }
            | WalError::SequenceGap { .. }
            | WalError::BadMeta { .. }
            | WalError::UnstableRead { .. },
        ) => return Ok(()),
        Err(e) => return Err(format!("{what}: unexpected error {e:?}")),
        Ok(wal) => wal,
    };
    let records = wal
        .records(0)
        .map_err(|e| format!("{what}: reading a recovered WAL failed: {e}"))?;
    let mut seqs = Vec::new();
    for r in &records {
        if reference.records.get(&r.seq) != Some(r) {
            return Err(format!("{what}: a wrong record at {}", r.seq));
        }
        seqs.push(r.seq);
    }
    let present: BTreeSet<u64> = seqs.iter().copied().collect();
    for r in &records {
        if let Some(&(first, commit)) = reference.batches.get(&r.seq)
            && !(first.max(wal.first_seq())..=commit).all(|s| present.contains(&s))
        {
            return Err(format!("{what}: a partial batch"));
        }
    }
    if !seqs.windows(2).all(|w| w[0] < w[1]) {
        return Err(format!("{what}: out of order"));
    }
    if mode == RecoveryMode::Strict {
        // Strict recovery returns a prefix, and says so when it is shorter.
        let expected: Vec<u64> = reference
            .records
            .keys()
            .copied()
            .filter(|&s| s > reference.low)
            .take(seqs.len())
            .collect();
        if seqs != expected {
            return Err(format!("{what}: not a prefix"));
        }
        if seqs.len() < reference.records.len() && wal.recovery().torn_tail.is_none() {
            return Err(format!("{what}: silent loss"));
        }
        // Every record of the reference was synced (acknowledged): losing one is only
        // acceptable where the damage could be a torn tail, the last segment's end.
        if let Some(&lost) = reference
            .records
            .keys()
            .find(|&&s| s > reference.low && !present.contains(&s))
            && lost < reference.last_segment_first
        {
            return Err(format!(
                "{what}: acknowledged record {lost} outside the last segment dropped as a torn tail"
            ));
        }
    }
    let replay = wal
        .replay(0)
        .map_err(|e| format!("{what}: replay failed: {e}"))?;
    if !replay
        .iter()
        .all(|r| matches!(r.kind, RecordKind::Data | RecordKind::Batch))
    {
        return Err(format!("{what}: replay returned a commit or checkpoint"));
    }
    Ok(())
}

fn install(vfs: &VfsHandle, files: &[(String, Vec<u8>)]) {
    vfs.create_dir_all(DIR).unwrap();
    vfs.sync_dir("").unwrap();
    for (path, bytes) in files {
        write_file(vfs, path, bytes);
    }
}

/// Opens a corrupted copy of the reference for every byte (every `step`-th) of every file
/// and every XOR pattern, in both recovery modes, with `bugs` on; returns the number of
/// trials and what went wrong in them.
fn corrupt_every_byte(
    make_env: impl Fn() -> Box<dyn Env>,
    step: usize,
    xors: &[u8],
    bugs: EngineBugs,
) -> (usize, Vec<String>) {
    let reference = build_reference();
    let mut trials = 0;
    let mut failures = Vec::new();
    for (i, (path, bytes)) in reference.files.iter().enumerate() {
        for offset in (0..bytes.len()).step_by(step) {
            for &xor in xors {
                let mut files = reference.files.clone();
                files[i].1[offset] ^= xor;
                for mode in [RecoveryMode::Strict, RecoveryMode::SkipCorrupted] {
                    let env = make_env();
                    let vfs = env.vfs();
                    install(&vfs, &files);
                    let result = Wal::open(
                        vfs.clone(),
                        DIR,
                        WalOptions {
                            bugs,
                            ..options(mode)
                        },
                    );
                    let what = format!("{path} byte {offset} ^ {xor:#04x} ({mode:?})");
                    if let Err(e) = check(&reference, mode, result, &what) {
                        failures.push(e);
                    }
                    trials += 1;
                }
            }
        }
    }
    (trials, failures)
}

#[test]
fn every_single_byte_corruption_is_caught_on_simdisk() {
    let (trials, failures) = corrupt_every_byte(
        || Box::new(SimEnv::new(DiskConfig::reliable(), 1)),
        1,
        &[0x01, 0x80, 0xFF],
        EngineBugs::NONE,
    );
    assert!(trials > 3000, "{trials}");
    assert_eq!(failures, Vec::<String>::new());
}

#[test]
fn single_byte_corruption_is_caught_on_the_real_file_system() {
    let (trials, failures) =
        corrupt_every_byte(|| Box::new(RealEnv::new()), 13, &[0x5A], EngineBugs::NONE);
    assert!(trials > 50, "{trials}");
    assert_eq!(failures, Vec::<String>::new());
}

#[test]
fn the_uncorrupted_reference_recovers_fully() {
    let reference = build_reference();
    let env = SimEnv::new(DiskConfig::reliable(), 1);
    let vfs = env.vfs();
    install(&vfs, &reference.files);
    let wal = Wal::open(vfs, DIR, options(RecoveryMode::Strict)).unwrap();
    assert_eq!(wal.records(0).unwrap().len(), 10);
    assert_eq!(wal.recovery().torn_tail, None);
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Batch(u8),
    Sync,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..100).prop_map(Op::Append),
        2 => (1u8..5).prop_map(Op::Batch),
        2 => Just(Op::Sync),
        1 => Just(Op::Crash),
    ]
}

/// Whatever recovery returns from a faulty disk was written at that sequence number,
/// and batches come whole.
fn check_adversarial(
    wal: &Wal,
    written: &BTreeMap<u64, BTreeSet<Vec<u8>>>,
    batch_of: &BTreeMap<u64, (u64, u64)>,
) -> Result<(), TestCaseError> {
    let records = match wal.records(0) {
        Ok(r) => r,
        Err(_) => return Ok(()),
    };
    let present: BTreeSet<u64> = records.iter().map(|r| r.seq).collect();
    for r in &records {
        if r.kind == RecordKind::Data || r.kind == RecordKind::Batch {
            let ok = written
                .get(&r.seq)
                .is_some_and(|set| set.contains(&r.payload));
            prop_assert!(ok, "record {} was never written", r.seq);
        }
        if r.kind == RecordKind::Batch
            && let Some(&(first, commit)) = batch_of.get(&r.seq)
        {
            prop_assert!(
                (first..=commit).all(|s| present.contains(&s)),
                "partial batch"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases(2000)))]

    #[test]
    fn a_faulty_disk_never_yields_a_wrong_record(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..50),
        skip in any::<bool>(),
    ) {
        let env = SimEnv::new(
            DiskConfig {
                sector_size: 64,
                misdirected_write_probability: 0.03,
                read_bit_flip_probability: 0.03,
                latent_sector_error_probability: 0.002,
                ..DiskConfig::default()
            },
            seed,
        );
        let vfs = env.vfs();
        let mode = if skip { RecoveryMode::SkipCorrupted } else { RecoveryMode::Strict };
        let opts = WalOptions {
            sync_policy: SyncPolicy::Never,
            max_segment_bytes: 400,
            recovery: mode,
            ..WalOptions::default()
        };
        let mut written: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
        // A batch can be rewritten at the same sequence numbers after a loss, so only the
        // batch geometry of the latest write is kept: it is the same for any rewrite
        // whose records have the same payloads (payloads are unique per write).
        let mut batch_of: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut id = 0u64;
        let Ok(mut wal) = Wal::open(vfs.clone(), "wal", opts.clone()) else { return Ok(()); };
        for op in ops {
            match op {
                Op::Append(len) => {
                    id += 1;
                    let p = payload(id, len);
                    let seq = wal.current_seq() + 1;
                    if wal.append(&p).is_ok() {
                        written.entry(seq).or_default().insert(p);
                        batch_of.remove(&seq);
                    }
                }
                Op::Batch(n) => {
                    let ps: Vec<Vec<u8>> = (0..n).map(|i| { id += 1; payload(id, i as usize) }).collect();
                    let first = wal.current_seq() + 1;
                    if let Ok(b) = wal.append_batch(&ps) {
                        for (i, p) in ps.into_iter().enumerate() {
                            written.entry(first + i as u64).or_default().insert(p);
                            batch_of.insert(first + i as u64, (b.first, b.commit));
                        }
                    }
                }
                Op::Sync => {
                    let _ = wal.sync();
                }
                Op::Crash => {
                    drop(wal);
                    env.crash();
                    match Wal::open(vfs.clone(), "wal", opts.clone()) {
                        Ok(w) => {
                            check_adversarial(&w, &written, &batch_of)?;
                            wal = w;
                        }
                        Err(_) => return Ok(()),
                    }
                }
            }
            if wal.is_poisoned() {
                return Ok(());
            }
        }
        drop(wal);
        env.crash();
        if let Ok(w) = Wal::open(vfs.clone(), "wal", opts.clone()) {
            check_adversarial(&w, &written, &batch_of)?;
        }
    }
}

/// The engine bug flags this suite must catch, each found by the byte-corruption sweep
/// (and nothing found with the flag off: `every_single_byte_corruption_is_caught_on_simdisk`).
fn corruption_sweep_finds(bug: EngineBug) -> Vec<String> {
    let (_, failures) = corrupt_every_byte(
        || Box::new(SimEnv::new(DiskConfig::reliable(), 1)),
        1,
        &[0x01, 0x80, 0xFF],
        bug.into(),
    );
    failures
}

#[test]
fn bug_flag_wal_truncate_at_corruption_is_caught() {
    let failures = corruption_sweep_finds(EngineBug::WalTruncateAtCorruption);
    assert!(
        failures
            .iter()
            .any(|f| f.contains("dropped as a torn tail")),
        "{failures:?}"
    );
}

#[test]
fn bug_flag_wal_crc_excludes_header_is_caught() {
    let failures = corruption_sweep_finds(EngineBug::WalCrcExcludesHeader);
    // Measured: 94 of 100 failures are a damaged record returned as valid.
    assert!(
        failures.iter().any(|f| f.contains("a wrong record")),
        "{failures:?}"
    );
}
