//! A group's Raft log and vote, in the node's sled database (see `store/raft.rs`).
//!
//! Raft counts a vote or an appended entry only once it is durable, so both wait for the
//! store's group commit: one flush covers every group that wrote meanwhile. sled is
//! called on the storage threads, never on the runtime that drives Raft's timers.
//!
//! sled recovers what a completed flush covered, but promises nothing about the order in
//! which it recovers later writes, so the log never relies on it: a truncation and a
//! purge point are flushed before anything that depends on them is written, and a log
//! recovered with a gap is cut at the gap (what follows was never flushed, so never
//! counted).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogId, RaftLogReader, StorageIOError, Vote};

use super::types::{Entry, GroupId, LogId, StorageError, TypeConfig};
use crate::store::{Store, StoreError};

const VOTE: &[u8] = b"vote";
const PURGED: &[u8] = b"purged";
/// Entries [`LogStore`] keeps in memory after appending them.
const RECENT_ENTRIES: usize = 64;

/// The log of one group.
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    group: GroupId,
    /// The entries appended last, by index (shared by the clones that read the log). Most
    /// reads come right after the append — applying an entry, sending it to followers —
    /// and are answered from here, without a storage call or a decode.
    recent: Arc<Mutex<BTreeMap<u64, Entry>>>,
}

/// Runs `f` with the store on the storage threads.
pub(super) async fn blocking<T, F>(store: &Store, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    store.run(f).await
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl LogStore {
    /// The log of `group` in `store`, cut at its first gap if it was recovered with one:
    /// entries after a gap were never flushed, so never counted.
    pub async fn open(store: Store, group: GroupId) -> Result<Self, StoreError> {
        let log = Self {
            store,
            group,
            recent: Arc::default(),
        };
        let purged: Option<LogId> = log.read_state(PURGED).await?;
        let group = group.0;
        blocking(&log.store, move |s| {
            if let Some(gap) = s.raft_first_gap(group, purged.map(|p| p.index))? {
                tracing::warn!(group, gap, "log recovered with a gap: cut there");
                s.raft_truncate(group, gap)?;
                s.flush_blocking()?;
            }
            Ok(())
        })
        .await?;
        Ok(log)
    }

    fn recent(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        // A copy of stored entries: a panic cannot leave it disagreeing with them.
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entries `from..to` when every one of them is recent.
    fn recent_range(&self, from: u64, to: u64) -> Option<Vec<Entry>> {
        let recent = self.recent();
        let first = *recent.keys().next()?;
        let last = *recent.keys().next_back()?;
        if from < first || to > last.saturating_add(1) || from >= to {
            return None;
        }
        let entries: Vec<Entry> = recent.range(from..to).map(|(_, e)| e.clone()).collect();
        // Appends extend the log without gaps, but a gap must never pass for the range.
        (entries.len() as u64 == to - from).then_some(entries)
    }

    async fn read_state<T>(&self, name: &'static [u8]) -> Result<Option<T>, StoreError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let group = self.group.0;
        blocking(&self.store, move |s| {
            s.raft_state(group, name)?.map(|b| decode(&b)).transpose()
        })
        .await
    }

    async fn write_state<T: serde::Serialize>(
        &self,
        name: &'static [u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let group = self.group.0;
        let bytes = encode(value)?;
        blocking(&self.store, move |s| {
            s.raft_change_state(group, &[(name.to_vec(), Some(bytes))])
        })
        .await
    }
}

fn log_err(e: StoreError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn read_err(e: StoreError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(entries) = self.recent_range(from, to) {
            return Ok(entries);
        }
        let group = self.group.0;
        blocking(&self.store, move |s| {
            s.raft_entries(group, from, to)?
                .iter()
                .map(|b| decode(b))
                .collect()
        })
        .await
        .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.read_state(PURGED).await.map_err(read_err)?;
        let group = self.group.0;
        let last: Option<Entry> = blocking(&self.store, move |s| {
            s.raft_last_entry(group)?.map(|b| decode(&b)).transpose()
        })
        .await
        .map_err(read_err)?;
        let last_log_id = last.map(|e| *e.get_log_id()).or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let durable = async {
            self.write_state(VOTE, vote).await?;
            self.store.flush().await
        };
        durable
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    /// The vote, never as a committed one: openraft restores the leader of a committed
    /// vote at start-up, in its old term, and such a leader may lack entries it proposed
    /// that its followers hold (its own copy was not flushed yet), so a new entry of its
    /// at their index would share their log id; and it knows the commit index only as far
    /// as its applied position, so its read index could be older than writes already
    /// answered. Read back uncommitted, the same vote (this node granted it in that
    /// term) makes the node a follower, and a leader is elected in a new term.
    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        let vote: Option<Vote<u64>> = self
            .read_state(VOTE)
            .await
            .map_err(|e| StorageIOError::read_vote(&e))?;
        Ok(vote.map(|mut vote| {
            vote.committed = false;
            vote
        }))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let rows = entries
            .iter()
            .map(|e| Ok((e.get_log_id().index, encode(e)?)))
            .collect::<Result<Vec<_>, StoreError>>()
            .map_err(log_err)?;
        let group = self.group.0;
        blocking(&self.store, move |s| s.raft_append(group, &rows))
            .await
            .map_err(log_err)?;
        {
            let mut recent = self.recent();
            for entry in entries {
                recent.insert(entry.get_log_id().index, entry);
            }
            while recent.len() > RECENT_ENTRIES {
                recent.pop_first();
            }
        }
        // Durable later, for every group at once: Raft goes on meanwhile and counts the
        // entries only when the callback says so.
        let store = self.store.clone();
        tokio::spawn(async move {
            let flushed = store.flush().await.map_err(io::Error::other);
            callback.log_io_completed(flushed);
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.recent().retain(|index, _| *index < log_id.index);
        let group = self.group.0;
        blocking(&self.store, move |s| s.raft_truncate(group, log_id.index))
            .await
            .map_err(log_err)?;
        // Entries appended after this must never be recovered without it.
        self.store.flush().await.map_err(log_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.recent().retain(|index, _| *index > log_id.index);
        self.write_state(PURGED, &log_id).await.map_err(log_err)?;
        // The purge point is durable before the entries go: recovered without it, the
        // log would start with a gap.
        self.store.flush().await.map_err(log_err)?;
        let group = self.group.0;
        blocking(&self.store, move |s| s.raft_purge(group, log_id.index))
            .await
            .map_err(log_err)
    }
}
