//! A group's applied position, recorded only once the effects it covers are on disk.
//!
//! On restart openraft re-applies the log from the recorded position, so a position
//! recovered ahead of its entries' effects would skip them for good: a stale read, or a
//! delivery made again because its outcome is missing. sled recovers what a completed
//! flush covered, but makes no promise about the order in which it recovers writes made
//! after the last flush, so the position is written only after a flush (the store's group
//! commit) that covers every effect it stands for. A crash before that leaves an older
//! position, and the entries after it are applied again, which every write survives (see
//! `store::writes`).
//!
//! Most entries only change records: their position is recorded by a background task,
//! at most one write per [`RECORD_INTERVAL`] however many entries it covers (a position
//! that lags costs only entries applied again after a crash; one write per entry cost a
//! storage call each). An entry with state rows of
//! its own (membership, member list, administrator) is rare: the state machine makes every
//! earlier effect durable first and writes the rows with the position in one batch
//! ([`AppliedPosition::record_with`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::log_store::{blocking, encode};
use super::types::LogId;
use crate::store::{StateChange, Store, StoreError};

/// How long the recording task waits after recording a position before it records the
/// next one.
const RECORD_INTERVAL: Duration = Duration::from_millis(10);

/// The `raft_state` name of the applied position.
pub(super) const APPLIED: &[u8] = b"applied";

/// Records one group's applied position. Cheap to clone.
#[derive(Clone)]
pub(super) struct AppliedPosition {
    store: Store,
    group: u16,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// The position last written.
    recorded: Option<LogId>,
    /// The last position applied and not yet handed to the recording task.
    latest: Option<LogId>,
    /// Whether the recording task runs.
    running: bool,
}

impl AppliedPosition {
    /// The position of `group` in `store`.
    pub(super) fn new(store: Store, group: u16) -> Self {
        Self {
            store,
            group,
            inner: Arc::default(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain values, each consistent on its own: a panic cannot leave them torn.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every entry up to `log_id` is applied (its effects written, maybe not flushed):
    /// records the position once a flush covers them. Needs a Tokio runtime.
    pub(super) fn applied(&self, log_id: LogId) {
        let mut inner = self.inner();
        inner.latest = Some(log_id);
        if inner.running {
            return;
        }
        inner.running = true;
        drop(inner);
        tokio::spawn(self.clone().record_durable());
    }

    /// The recording task: takes the latest position, waits for a flush covering its
    /// effects (they were written before it was handed over), records it, and goes on
    /// until nothing is left.
    async fn record_durable(self) {
        loop {
            let Some(log_id) = self.take_latest() else {
                return;
            };
            let written = async {
                self.store.commit().wait().await?;
                let this = self.clone();
                blocking(&self.store, move |_| this.record_with(log_id, Vec::new())).await
            };
            if let Err(e) = written.await {
                // The position stays older, which only costs entries applied again.
                tracing::warn!(group = self.group, error = %e, "applied position not recorded");
                self.inner().running = false;
                return;
            }
            tokio::time::sleep(RECORD_INTERVAL).await;
        }
    }

    fn take_latest(&self) -> Option<LogId> {
        let mut inner = self.inner();
        let latest = inner.latest.take();
        inner.running = latest.is_some();
        latest
    }

    /// Writes `rows` and the position `log_id` in one batch, now, on the storage threads.
    /// The caller made every effect up to `log_id` durable first. A position older than
    /// the one recorded is not written back (rows are, if any).
    pub(super) fn record_with(
        &self,
        log_id: LogId,
        mut rows: Vec<StateChange>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner();
        let newer = inner.recorded.is_none_or(|recorded| recorded < log_id);
        if newer {
            rows.push((APPLIED.to_vec(), Some(encode(&log_id)?)));
        }
        if !rows.is_empty() {
            self.store.raft_change_state(self.group, &rows)?;
        }
        if newer {
            inner.recorded = Some(log_id);
        }
        Ok(())
    }

    /// Sets the position to a snapshot's (`None`: no entry applied), with the state rows
    /// `write` writes in the same batch; the snapshot's records are durable already.
    pub(super) fn install(
        &self,
        log_id: Option<LogId>,
        write: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner();
        write()?;
        inner.recorded = log_id;
        inner.latest = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::replication::log_store::decode;

    fn log_id(index: u64) -> LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(1, 0), index)
    }

    fn recorded(store: &Store, group: u16) -> Option<LogId> {
        store
            .raft_state(group, APPLIED)
            .unwrap()
            .map(|b| decode(&b).unwrap())
    }

    #[tokio::test]
    async fn the_position_is_recorded_after_a_flush_and_never_moves_back() {
        crate::store::allow_sync_calls();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20, 16).unwrap();
        let position = AppliedPosition::new(store.clone(), 2);
        for index in 1..=3 {
            position.applied(log_id(index));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while recorded(&store, 2) != Some(log_id(3)) {
            assert!(Instant::now() < deadline, "{:?}", recorded(&store, 2));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // An older position is not written back; rows given with it are.
        let row = (b"sm/x".to_vec(), Some(b"1".to_vec()));
        position.record_with(log_id(2), vec![row]).unwrap();
        assert_eq!(recorded(&store, 2), Some(log_id(3)));
        assert_eq!(store.raft_state(2, b"sm/x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(recorded(&store, 3), None, "another group's is its own");

        // A snapshot sets it, older or not, with the rows written alongside.
        let install = || store.raft_change_state(2, &[(APPLIED.to_vec(), None)]);
        position.install(None, install).unwrap();
        assert_eq!(recorded(&store, 2), None);
        position.record_with(log_id(1), Vec::new()).unwrap();
        assert_eq!(recorded(&store, 2), Some(log_id(1)));
    }
}
