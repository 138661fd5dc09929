//! WAL append throughput on the real file system (a temporary directory).
//!
//! Run with `cargo bench -p storage --bench wal`. Prints records/s and MB/s (payload
//! bytes) for: a sync after every record, group commit (64 records per sync, both as 64
//! appends + `sync()` and as one `append_many` of 64), and no sync at all.

use std::sync::Arc;
use std::time::Instant;

use storage::vfs::real::RealFs;
use storage::wal::{SyncPolicy, Wal, WalOptions};

const PAYLOAD: usize = 100;
const GROUP: usize = 64;

enum Mode {
    EveryRecord,
    GroupSync,
    GroupAppendMany,
    NoSync,
}

fn run(name: &str, mode: Mode, records: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let vfs = Arc::new(RealFs::new(dir.path().to_path_buf()));
    let sync_policy = match mode {
        Mode::EveryRecord | Mode::GroupAppendMany => SyncPolicy::EveryWrite,
        Mode::GroupSync | Mode::NoSync => SyncPolicy::Never,
    };
    let mut wal = Wal::open(
        vfs,
        "wal",
        WalOptions {
            sync_policy,
            ..WalOptions::default()
        },
    )?;
    let payload = vec![0xABu8; PAYLOAD];
    let group: Vec<&[u8]> = vec![&payload[..]; GROUP];
    let start = Instant::now();
    match mode {
        Mode::EveryRecord | Mode::NoSync => {
            for _ in 0..records {
                wal.append(&payload)?;
            }
        }
        Mode::GroupSync => {
            for i in 0..records {
                wal.append(&payload)?;
                if (i + 1) % GROUP == 0 {
                    wal.sync()?;
                }
            }
        }
        Mode::GroupAppendMany => {
            for _ in 0..records / GROUP {
                wal.append_many(&group)?;
            }
        }
    }
    let appended = wal.current_seq() as usize;
    let elapsed = start.elapsed().as_secs_f64();
    wal.close()?;
    let per_sec = appended as f64 / elapsed;
    let mb_per_sec = (appended * PAYLOAD) as f64 / elapsed / 1e6;
    println!(
        "{name:<36} {appended:>8} records in {elapsed:>7.3} s  {per_sec:>11.0} records/s  {mb_per_sec:>8.2} MB/s"
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("WAL append throughput, {PAYLOAD}-byte payloads, real file system");
    run("sync every record", Mode::EveryRecord, 2_000)?;
    run(
        "group commit: 64 appends + sync()",
        Mode::GroupSync,
        64 * 1_000,
    )?;
    run(
        "group commit: append_many(64)",
        Mode::GroupAppendMany,
        64 * 1_000,
    )?;
    run("no sync", Mode::NoSync, 500_000)?;
    Ok(())
}
