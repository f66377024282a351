//! What sled 0.34 stores on disk per item, for write patterns like webhookd's, without
//! webhookd: the floor under the storage figures of `cargo bench --bench fanout`.
//!
//! Each pattern writes into a fresh database (the settings a node uses: 64 MiB of cache,
//! 512 KiB segments), flushes, and prints the data directory's growth per item (allocated
//! blocks, as `du` counts them) beside the bytes of keys and values it keeps (logical):
//!
//! - subscriptions as a node stores them: a record (16-byte key, 60-byte value) and three
//!   index entries (by epoch, by registration, by subscriber), 64 per transaction;
//! - the same record alone, in one tree;
//! - settled deliveries: per pending batch of N deliveries, the batch (40 bytes per
//!   delivery) written, settled rows (47 bytes per delivery) written per outcome batch of
//!   256, then the batch removed; and the settled rows alone.
//!
//! `cargo bench --bench sled_floor` (about 20 s).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use uuid::Uuid;

const SUBSCRIPTIONS: usize = 20_000;
const DELIVERIES: usize = 200_000;
const OUTCOME_BATCH: usize = 256;

/// Bytes allocated under `dir`.
fn disk(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    // A blob may be removed while the directory is read: it counts for nothing then.
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += match meta.is_dir() {
            true => disk(&entry.path()),
            false => meta.blocks() * 512,
        };
    }
    total
}

fn id() -> [u8; 16] {
    *Uuid::new_v4().as_bytes()
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Runs `write` on a fresh database; prints its growth per item against `logical` bytes.
fn measure(name: &str, items: usize, logical: usize, write: impl FnOnce(&sled::Db)) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 << 20)
        .open()
        .expect("sled opens");
    db.flush().expect("flush");
    let before = disk(dir.path());
    write(&db);
    db.flush().expect("flush");
    let grown = disk(dir.path()).saturating_sub(before) as f64 / items as f64;
    println!(
        "{name:<58} {grown:>6.0} bytes/item on disk, {logical:>3} logical ({:.1} ×)",
        grown / logical as f64
    );
}

fn subscriptions(db: &sled::Db, with_indexes: bool) {
    let trees: Vec<sled::Tree> = ["records", "by_epoch", "by_registration", "by_subscriber"]
        .iter()
        .map(|n| db.open_tree(n).expect("tree"))
        .collect();
    let (registration, record) = (id(), [7u8; 60]);
    let mut epoch: u64 = 1_700_000_000_000_000;
    for _ in 0..SUBSCRIPTIONS / 64 {
        let batch: Vec<([u8; 16], [u8; 16], [u8; 8])> = (0..64)
            .map(|_| {
                epoch += 37;
                (id(), id(), epoch.to_be_bytes())
            })
            .collect();
        (&trees[0], &trees[1], &trees[2], &trees[3])
            .transaction(|(records, by_epoch, by_reg, by_sub)| {
                for (subscription, account, epoch) in &batch {
                    records.insert(subscription, &record[..])?;
                    if with_indexes {
                        by_epoch.insert(key(&[epoch, subscription]), &[][..])?;
                        by_reg.insert(key(&[&registration, epoch, subscription]), &account[..])?;
                        by_sub.insert(key(&[account, epoch, subscription]), &registration[..])?;
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .expect("transaction");
    }
}

fn deliveries(db: &sled::Db, batch_size: usize, pending: bool) {
    let tree = db.open_tree("deliveries").expect("tree");
    let mut epoch: u64 = 1_700_000_000_000_000;
    for _ in 0..DELIVERIES / batch_size {
        epoch += 1_000;
        let batch = key(&[b"b", &id(), &epoch.to_be_bytes(), &id()]);
        if pending {
            tree.insert(&batch, vec![5u8; 40 * batch_size])
                .expect("insert");
        }
        for (n, chunk) in (0..batch_size).step_by(OUTCOME_BATCH).enumerate() {
            let settled = key(&[b"s", &batch[1..], &(n as u64).to_be_bytes()]);
            let rows: Vec<u8> = (0..OUTCOME_BATCH.min(batch_size - chunk))
                .flat_map(|_| [id(), id()].concat().into_iter().chain([3u8; 15]))
                .collect();
            tree.insert(settled, rows).expect("insert");
        }
        if pending {
            tree.remove(&batch).expect("remove");
        }
    }
}

fn main() {
    println!("sled 0.34 on this machine: disk growth per item after a flush");
    measure(
        "subscription: record + 3 indexes (4 trees)",
        SUBSCRIPTIONS,
        76 + 24 + 56 + 56,
        |db| subscriptions(db, true),
    );
    measure(
        "subscription: record only (1 tree)",
        SUBSCRIPTIONS,
        76,
        |db| subscriptions(db, false),
    );
    for batch in [1_000, 100] {
        measure(
            &format!("delivery: pending batch of {batch}, settled rows, batch removed"),
            DELIVERIES,
            47,
            |db| deliveries(db, batch, true),
        );
        measure(
            &format!("delivery: settled rows of a batch of {batch} only"),
            DELIVERIES,
            47,
            |db| deliveries(db, batch, false),
        );
    }
}
