//! Group commit: one `sled::Db::flush` serves every writer that asked since the last one.
//!
//! A flush costs ~0.1 ms regardless of how many writes it covers, so concurrent writers
//! share one instead of paying for their own. Each caller takes a ticket; a background task
//! flushes and publishes the highest ticket its flush covered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

use tokio::sync::{watch, Notify};

use super::{Result, StoreError};

/// Highest ticket flushed, and the highest ticket whose flush failed.
#[derive(Clone, Copy, Default)]
struct Progress {
    flushed: u64,
    failed: u64,
}

struct Shared {
    db: sled::Db,
    next_ticket: AtomicU64,
    wake: Notify,
    progress: watch::Sender<Progress>,
}

pub(super) struct Flusher {
    shared: Arc<Shared>,
    started: Once,
}

impl Flusher {
    pub(super) fn new(db: sled::Db) -> Self {
        Self {
            shared: Arc::new(Shared {
                db,
                next_ticket: AtomicU64::new(0),
                wake: Notify::new(),
                progress: watch::channel(Progress::default()).0,
            }),
            started: Once::new(),
        }
    }

    /// Waits until every write made before the call is flushed.
    pub(super) async fn flush(&self) -> Result<()> {
        self.started
            .call_once(|| drop(tokio::spawn(run(self.shared.clone()))));
        let mut rx = self.shared.progress.subscribe();
        let ticket = self.shared.next_ticket.fetch_add(1, Ordering::AcqRel) + 1;
        self.shared.wake.notify_one();
        let seen = *rx
            .wait_for(|p| p.flushed >= ticket || p.failed >= ticket)
            .await
            .map_err(|_| StoreError::Corrupt("the flusher stopped".into()))?;
        if seen.flushed >= ticket {
            Ok(())
        } else {
            Err(StoreError::Corrupt("flushing to disk failed".into()))
        }
    }
}

async fn run(shared: Arc<Shared>) {
    loop {
        shared.wake.notified().await;
        // Every ticket up to `target` was taken before this flush starts, so it covers them.
        let target = shared.next_ticket.load(Ordering::Acquire);
        if target <= shared.progress.borrow().flushed {
            continue;
        }
        let db = shared.db.clone();
        let ok = matches!(
            tokio::task::spawn_blocking(move || db.flush()).await,
            Ok(Ok(_))
        );
        if !ok {
            tracing::error!("flushing storage to disk failed");
        }
        shared.progress.send_modify(|p| {
            if ok {
                p.flushed = target;
            } else {
                p.failed = target;
            }
        });
    }
}
