//! Random put, get and range-scan throughput of the key-value engines on the real file
//! system (a temporary directory).
//!
//! Run with `cargo bench -p storage --bench kv` (`-- --quick` for a short run). For each
//! engine (Bitcask, B+tree, LSM with leveled and size-tiered compaction) and sync policy
//! (a sync after every write; explicit sync, once at the end), it puts `N` keys in a
//! random (seeded, deterministic) order with 100-byte values (the fill), then gets them
//! in another random order, then runs range scans of `SCAN_LEN` keys from random start
//! keys (ordered engines only), and prints operations (scan: entries) per second.

use std::sync::Arc;
use std::time::Instant;

use std::ops::Bound;
use storage::bitcask::{BitcaskOpener, BitcaskOptions};
use storage::btree::{BTreeOpener, BTreeOptions};

use storage::kv::{EngineOpener, EngineSyncPolicy};
use storage::lsm::{CompactionStrategy, LsmOpener, LsmOptions};
use storage::vfs::real::RealFs;

const VALUE_BYTES: usize = 100;
/// Entries per range scan.
const SCAN_LEN: usize = 100;

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:012}").into_bytes()
}

fn run(opener: &dyn EngineOpener, label: &str, n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let vfs = Arc::new(RealFs::new(dir.path().to_path_buf()));
    let mut engine = opener.open(vfs, "db")?;
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut order: Vec<u64> = (0..n).collect();
    rng.shuffle(&mut order);
    let value = vec![0xA5u8; VALUE_BYTES];
    let start = Instant::now();
    for &i in &order {
        engine.put(&key(i), &value)?;
    }
    engine.sync()?;
    let put_secs = start.elapsed().as_secs_f64();
    rng.shuffle(&mut order);
    let start = Instant::now();
    for &i in &order {
        let got = engine.get(&key(i))?;
        assert_eq!(got.as_deref(), Some(&value[..]));
    }
    let get_secs = start.elapsed().as_secs_f64();
    let scans = (n / 10).max(10);
    let start = Instant::now();
    let mut scanned = 0u64;
    let mut supported = true;
    for _ in 0..scans {
        let from = key(rng.next() % n);
        match engine.scan(Bound::Included(&from), Bound::Unbounded) {
            Ok(iter) => {
                for item in iter.take(SCAN_LEN) {
                    item?;
                    scanned += 1;
                }
            }
            Err(storage::kv::EngineError::Unsupported { .. }) => {
                supported = false;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let scan_secs = start.elapsed().as_secs_f64();
    let scan = if supported {
        format!("{:>10.0} entries/s", scanned as f64 / scan_secs)
    } else {
        format!("{:>10} entries/s", "n/a")
    };
    println!(
        "{:<8} {:<40} {:>8} keys   put {:>10.0} ops/s   get {:>10.0} ops/s   scan {scan}",
        opener.name(),
        label,
        n,
        n as f64 / put_secs,
        n as f64 / get_secs
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the sync-per-write runs short: each write is an fsync.
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_sync, n_nosync) = if quick {
        (200, 5_000)
    } else {
        (2_000, 100_000)
    };
    for (policy, label, n) in [
        (EngineSyncPolicy::EveryWrite, "sync every write", n_sync),
        (
            EngineSyncPolicy::Explicit,
            "explicit sync (at the end)",
            n_nosync,
        ),
    ] {
        let bitcask = BitcaskOpener {
            options: BitcaskOptions {
                sync_policy: policy,
                ..BitcaskOptions::default()
            },
        };
        run(&bitcask, label, n)?;
        let btree = BTreeOpener {
            options: BTreeOptions {
                sync_policy: policy,
                ..BTreeOptions::default()
            },
        };
        run(&btree, label, n)?;
        for compaction in [CompactionStrategy::Leveled, CompactionStrategy::SizeTiered] {
            let lsm = LsmOpener {
                options: LsmOptions {
                    sync_policy: policy,
                    compaction,
                    ..LsmOptions::default()
                },
            };
            run(&lsm, &format!("{label}, {compaction}"), n)?;
        }
    }
    Ok(())
}
