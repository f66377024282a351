//! Storage: one sled database per node, a tree per concern, indexes shaped for the queries.
//!
//! Numbers in keys are big-endian so byte order is numeric order. Listings walk an
//! `(epoch, id)` index instead of scanning records. Multi-key changes use sled transactions;
//! deletes that may touch many rows first tombstone their root record (so readers see it
//! gone at once and a restart can finish the job) and then remove the rows in chunks.
//!
//! Durability: callers that acknowledge a change wait for a group commit shared by every
//! writer that asked since the last flush ([`Store::flush`], or [`Store::commit`] to take
//! the ticket now and leave the wait to whoever answers). A flush that fails or stalls fails
//! the storage for the rest of the process ([`health`]): sled cannot recover in place.
//!
//! The methods are synchronous and may block; async code calls them on the storage threads
//! through [`Store::run`] (the `executor` module), never directly.
//!
//! Each module adds the methods of its trees to [`Store`]. Their imports go one way, so a
//! module can be read (and changed) without the ones above it: `keys` (every key
//! encoding), [`records`] and [`pagination`] use nothing but the error type; `deliveries`
//! (the delivery store, whose module doc draws its key layout) uses those; the record
//! trees (`accounts`, `registrations`, `subscriptions`, `triggered`) use those and the
//! delivery store's types, never each other; `group_records` (a shard group's records as
//! one snapshot) uses the key encodings, the records, the counts lock and the delivery
//! store's group rows, and reaches into every record tree.

mod accounts;
mod deliveries;
mod executor;
mod flusher;
mod group_records;
mod health;
mod keys;
pub mod pagination;
mod raft;
pub mod records;
mod registrations;
mod row_writes;
mod subscriptions;
mod targets;
mod triggered;
mod writes;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use accounts::NewAccountError;
pub use deliveries::{
    delivery_row_subscriber, Attempt, Delivery, DeliveryCounts, DeliveryRow, DeliveryState,
    DueEntry, FailedCountChange, FanoutCursor, FanoutStep, Handoff, NewDelivery, Outcome,
    PreparedDeliveries, PreparedOutcomes, Scheduled,
};
pub use executor::allow_sync_calls;
pub use flusher::Commit;
pub use group_records::RecordsDump;
pub use health::StorageState;
pub use pagination::{Page, PageRequest};
pub use raft::{machine_row, StateChange};
pub use records::{
    Account, KeyKind, PendingKey, PreviousSecret, Registration, Subscription, Triggered,
};
pub use subscriptions::{SubscribeError, SubscriptionBatch};
pub use targets::DeliveryTarget;
pub use writes::{RecordWrite, WriteOutcome};

use deliveries::OpenBatches;
use executor::Executor;
use flusher::Flusher;
use health::Health;
use keys::read_u64;

/// Rows removed per transaction by chunked cascades.
const CASCADE_CHUNK: usize = 512;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database.
    #[error("storage at {0} is locked by another process")]
    Locked(String),
    /// sled reported an error.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// The disk failed (full, I/O error, stuck): no write succeeds until a restart.
    #[error("storage failed: {0}")]
    Failed(String),
    /// A storage call ended without an answer (it panicked, or the storage threads are gone).
    #[error("storage call interrupted: {0}")]
    Interrupted(String),
    /// A record or key could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The database was created with another shard count.
    #[error("storage was created with cluster.shards = {stored}, configuration says {configured}")]
    ShardMismatch {
        /// Shard count recorded in the database.
        stored: u16,
        /// Shard count of the configuration.
        configured: u16,
    },
}

impl StoreError {
    /// True when the disk, not the data, is at fault: an I/O error (a full disk, EIO) or a
    /// failed storage.
    pub fn is_disk_fault(&self) -> bool {
        matches!(
            self,
            StoreError::Failed(_) | StoreError::Sled(sled::Error::Io(_))
        )
    }
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

struct Trees {
    meta: sled::Tree,
    accounts: sled::Tree,
    usernames: sled::Tree,
    accounts_by_epoch: sled::Tree,
    registrations: sled::Tree,
    registrations_by_epoch: sled::Tree,
    registrations_by_account: sled::Tree,
    subscriptions: sled::Tree,
    subscriptions_by_epoch: sled::Tree,
    subscriptions_by_registration: sled::Tree,
    subscriptions_by_subscriber: sled::Tree,
    triggered: sled::Tree,
    triggered_by_epoch: sled::Tree,
    idempotency: sled::Tree,
    /// Everything the delivery engine writes, by key prefix (see [`deliveries`]), so that
    /// each of its steps is one atomic batch.
    deliveries: sled::Tree,
    remote_triggers: sled::Tree,
    /// Every shard group's Raft log (see [`raft`]).
    raft_log: sled::Tree,
    /// Every shard group's Raft hard state and replicated state (see [`raft`]).
    raft_state: sled::Tree,
}

/// The node's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    t: Trees,
    flusher: Flusher,
    executor: Executor,
    health: Arc<Health>,
    targets: targets::TargetCache,
    /// Pending batches not completed yet.
    open_batches: OpenBatches,
    /// Subscription deletions since the process started (see
    /// [`Store::subscription_deletions`]).
    subscription_deletions: AtomicU64,
    last_epoch_us: AtomicU64,
    /// Serialises the read-modify-write of `failed_count`s (outcomes, admin changes).
    counts_lock: Mutex<()>,
    /// Serialises accepting handed-over batches (check-then-write of their records).
    accept_lock: Mutex<()>,
}

impl Store {
    /// Opens (creating if needed) the database under `path`, sized by `cache_bytes`.
    ///
    /// `shards` is recorded on first open and must match on every later one.
    pub fn open(path: &Path, cache_bytes: u64, shards: u16) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("lock") => {
                    StoreError::Locked(path.display().to_string())
                }
                other => StoreError::Sled(other),
            })?;
        let tree = |name: &str| db.open_tree(name);
        let t = Trees {
            meta: tree("meta")?,
            accounts: tree("accounts")?,
            usernames: tree("usernames")?,
            accounts_by_epoch: tree("accounts_by_epoch")?,
            registrations: tree("registrations")?,
            registrations_by_epoch: tree("registrations_by_epoch")?,
            registrations_by_account: tree("registrations_by_account")?,
            subscriptions: tree("subscriptions")?,
            subscriptions_by_epoch: tree("subscriptions_by_epoch")?,
            subscriptions_by_registration: tree("subscriptions_by_registration")?,
            subscriptions_by_subscriber: tree("subscriptions_by_subscriber")?,
            triggered: tree("triggered")?,
            triggered_by_epoch: tree("triggered_by_epoch")?,
            idempotency: tree("idempotency")?,
            deliveries: tree("deliveries")?,
            remote_triggers: tree("remote_triggers")?,
            raft_log: tree("raft_log")?,
            raft_state: tree("raft_state")?,
        };
        match t.meta.get(b"shards")? {
            Some(v) => {
                let stored = u16::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("meta.shards".into()))?,
                );
                if stored != shards {
                    return Err(StoreError::ShardMismatch {
                        stored,
                        configured: shards,
                    });
                }
            }
            None => {
                t.meta.insert(b"shards", &shards.to_be_bytes())?;
            }
        }
        deliveries::migrate_legacy_trees(&db, &t.deliveries)?;
        let mut last = 0;
        for index in [
            &t.accounts_by_epoch,
            &t.registrations_by_epoch,
            &t.subscriptions_by_epoch,
            &t.triggered_by_epoch,
        ] {
            if let Some((k, _)) = index.last()? {
                last = last.max(read_u64(&k, 0)?);
            }
        }
        let health = Health::new();
        let flusher = Flusher::new(db.clone(), health.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                t,
                flusher,
                executor: Executor::start()?,
                health,
                targets: targets::TargetCache::default(),
                open_batches: OpenBatches::default(),
                subscription_deletions: AtomicU64::new(0),
                counts_lock: Mutex::new(()),
                accept_lock: Mutex::new(()),
                last_epoch_us: AtomicU64::new(last),
            }),
        })
    }

    /// The trees: the one way in for the synchronous methods, so the one place that checks
    /// their thread may block (see [`executor`]).
    fn t(&self) -> &Trees {
        executor::check_sync_allowed();
        &self.inner.t
    }

    /// Waits until every write made before this call is on disk (group commit).
    pub async fn flush(&self) -> Result<()> {
        self.inner.flusher.commit().wait().await
    }

    /// The group commit covering every write made before this call, to be awaited by
    /// whoever answers for them (see [`Commit`]). Never blocks.
    pub fn commit(&self) -> Commit {
        self.inner.flusher.commit()
    }

    /// Flushes synchronously (offline commands).
    pub fn flush_blocking(&self) -> Result<()> {
        executor::check_sync_allowed();
        self.inner.db.flush()?;
        Ok(())
    }

    /// A creation time in Unix µs, strictly greater than every earlier one of this node.
    pub fn next_epoch_us(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut prev = self.inner.last_epoch_us.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self.inner.last_epoch_us.compare_exchange_weak(
                prev,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// Removes every record and index (the `init --reset` wipe); the shard count stays.
    pub fn wipe(&self) -> Result<()> {
        let t = self.t();
        let others = [
            &t.triggered,
            &t.triggered_by_epoch,
            &t.idempotency,
            &t.remote_triggers,
            &t.raft_log,
            &t.raft_state,
        ];
        for tree in self.record_trees().into_iter().chain(others) {
            tree.clear()?;
        }
        self.inner
            .subscription_deletions
            .fetch_add(1, Ordering::Relaxed);
        self.flush_blocking()
    }

    /// True when the database answers reads.
    pub fn is_healthy(&self) -> bool {
        self.t().meta.get(b"shards").is_ok()
    }

    /// Whether the storage takes writes. Cheap, and never touches sled.
    pub fn state(&self) -> StorageState {
        self.inner.health.state()
    }

    /// Starts the storage watchdog (an OS thread): a flush running for longer than `stall`
    /// fails the storage, and once the storage failed, for any cause, `on_failure` runs with
    /// the reason, once.
    pub fn watch(
        &self,
        stall: Duration,
        on_failure: impl FnOnce(String) + Send + 'static,
    ) -> Result<()> {
        health::watch(self.inner.health.clone(), stall, on_failure)
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
        allow_sync_calls();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 * 1024 * 1024, 16).unwrap();
        (dir, store)
    }

    #[test]
    fn epochs_strictly_increase() {
        let (_d, s) = temp_store();
        let a = s.next_epoch_us();
        let b = s.next_epoch_us();
        assert!(b > a);
    }

    #[test]
    fn shard_count_is_fixed_at_creation() {
        allow_sync_calls();
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), 1 << 20, 16).unwrap());
        // sled's I/O threads may still hold the files (and their lock) for a moment after
        // the store is dropped: poll, with a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let reopened = loop {
            match Store::open(dir.path(), 1 << 20, 32) {
                Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other,
            }
        };
        match reopened {
            Err(StoreError::ShardMismatch { stored: 16, .. }) => {}
            other => panic!("{:?}", other.err()),
        }
    }
}
