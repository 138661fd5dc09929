//! Faultline's LSM engine (`storage::lsm`) side by side with redb, an established
//! embedded Rust key-value store, on the same workload on the real file system.
//!
//! Run: `cargo run --release -- [keys]` in this directory (default 200,000 keys). Not part
//! of the main workspace (its `Cargo.toml` has its own `[workspace]`, and the root one
//! excludes it), so CI never builds it.
//!
//! Workload (deterministic): the fill puts every key once in a random order with
//! 100-byte values, in batches of `BATCH` writes, each batch made durable before the next
//! (LSM: one `WriteBatch` then `sync`; redb: one write transaction committed with its
//! default, immediate durability). Then every key is read once in another random order,
//! then `keys / 10` range scans read `SCAN_LEN` entries each from random start keys.

use std::error::Error;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use redb::{Database, TableDefinition};
use storage::kv::{EngineOpener, EngineSyncPolicy, WriteBatch};
use storage::lsm::{CompactionStrategy, LsmOpener, LsmOptions};
use storage::vfs::real::RealFs;

const VALUE_BYTES: usize = 100;
const BATCH: usize = 1000;
const SCAN_LEN: usize = 100;
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// xorshift64*: a small deterministic generator, so runs are comparable.
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

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0xA5u8; VALUE_BYTES];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

/// Operations per second of each phase.
#[derive(Debug, Clone, Copy)]
struct Figures {
    fill: f64,
    read: f64,
    scan: f64,
}

struct Workload {
    n: u64,
    fill_order: Vec<u64>,
    read_order: Vec<u64>,
    scan_starts: Vec<u64>,
}

impl Workload {
    fn new(n: u64) -> Workload {
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        let mut fill_order: Vec<u64> = (0..n).collect();
        rng.shuffle(&mut fill_order);
        let mut read_order = fill_order.clone();
        rng.shuffle(&mut read_order);
        let scan_starts = (0..(n / 10).max(10)).map(|_| rng.next() % n).collect();
        Workload {
            n,
            fill_order,
            read_order,
            scan_starts,
        }
    }
}

fn run_lsm(w: &Workload, compaction: CompactionStrategy) -> Result<Figures, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let vfs = Arc::new(RealFs::new(dir.path().to_path_buf()));
    let opener = LsmOpener {
        options: LsmOptions {
            sync_policy: EngineSyncPolicy::Explicit,
            compaction,
            ..LsmOptions::default()
        },
    };
    let mut db = opener.open(vfs, "db")?;
    let start = Instant::now();
    for chunk in w.fill_order.chunks(BATCH) {
        let mut b = WriteBatch::new();
        for &i in chunk {
            b.put(key(i), value(i));
        }
        db.write_batch(&b)?;
        db.sync()?;
    }
    let fill = w.n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for &i in &w.read_order {
        let got = db.get(&key(i))?;
        assert_eq!(got, Some(value(i)));
    }
    let read = w.n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut entries = 0u64;
    for &s in &w.scan_starts {
        let from = key(s);
        for item in db
            .scan(Bound::Included(&from), Bound::Unbounded)?
            .take(SCAN_LEN)
        {
            item?;
            entries += 1;
        }
    }
    let scan = entries as f64 / start.elapsed().as_secs_f64();
    Ok(Figures { fill, read, scan })
}

fn run_redb(w: &Workload) -> Result<Figures, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let db = Database::create(dir.path().join("redb.db"))?;
    let start = Instant::now();
    for chunk in w.fill_order.chunks(BATCH) {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for &i in chunk {
                table.insert(key(i).as_slice(), value(i).as_slice())?;
            }
        }
        txn.commit()?;
    }
    let fill = w.n as f64 / start.elapsed().as_secs_f64();
    let txn = db.begin_read()?;
    let table = txn.open_table(TABLE)?;
    let start = Instant::now();
    for &i in &w.read_order {
        let got = table.get(key(i).as_slice())?.map(|v| v.value().to_vec());
        assert_eq!(got, Some(value(i)));
    }
    let read = w.n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut entries = 0u64;
    for &s in &w.scan_starts {
        let from = key(s);
        for item in table.range(from.as_slice()..)?.take(SCAN_LEN) {
            let (k, v) = item?;
            std::hint::black_box((k.value().len(), v.value().len()));
            entries += 1;
        }
    }
    let scan = entries as f64 / start.elapsed().as_secs_f64();
    Ok(Figures { fill, read, scan })
}

fn main() -> Result<(), Box<dyn Error>> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 200_000,
    };
    let w = Workload::new(n);
    println!(
        "{n} keys, {VALUE_BYTES}-byte values, fill in durable batches of {BATCH}, \
         {} random reads, {} scans of {SCAN_LEN} entries",
        n,
        w.scan_starts.len()
    );
    let redb = run_redb(&w)?;
    let row = |name: &str, f: &Figures| {
        println!(
            "{name:<20} fill {:>10.0} ops/s   read {:>10.0} ops/s   scan {:>11.0} entries/s",
            f.fill, f.read, f.scan
        );
    };
    row("redb 2", &redb);
    for strategy in [CompactionStrategy::Leveled, CompactionStrategy::SizeTiered] {
        let lsm = run_lsm(&w, strategy)?;
        row(&format!("lsm ({strategy})"), &lsm);
        println!(
            "{:<20} fill {:>10.2}×        read {:>10.2}×        scan {:>11.2}×",
            "  ratio lsm/redb",
            lsm.fill / redb.fill,
            lsm.read / redb.read,
            lsm.scan / redb.scan
        );
    }
    Ok(())
}
