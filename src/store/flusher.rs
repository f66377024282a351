//! Group commit: one `sled::Db::flush` serves every writer that asked since the last one.
//!
//! A flush costs ~0.1 ms regardless of how many writes it covers, so concurrent writers
//! share one instead of paying for their own. Each caller takes a ticket; a dedicated
//! thread flushes and publishes the highest ticket its flush covered. Its own thread, not
//! the runtime's blocking pool: every acknowledged write waits for it, so it must never
//! queue behind key hashing or fan-out steps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::{Result, StoreError};

/// Highest ticket flushed, and the highest ticket whose flush failed.
#[derive(Clone, Copy, Default)]
struct Progress {
    flushed: u64,
    failed: u64,
}

pub(super) struct Flusher {
    next_ticket: Arc<AtomicU64>,
    /// Wakes the flush thread; dropping it ends the thread.
    wake: Option<mpsc::Sender<()>>,
    progress: watch::Receiver<Progress>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flush thread for `db`.
    pub(super) fn new(db: sled::Db) -> Result<Self> {
        let next_ticket = Arc::new(AtomicU64::new(0));
        let (wake, woken) = mpsc::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let tickets = next_ticket.clone();
        let thread = std::thread::Builder::new()
            .name("webhookd-flush".into())
            .spawn(move || run(&db, &tickets, &woken, &progress_tx))
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        Ok(Self {
            next_ticket,
            wake: Some(wake),
            progress,
            thread: Some(thread),
        })
    }

    /// Waits until every write made before the call is flushed.
    pub(super) async fn flush(&self) -> Result<()> {
        let mut rx = self.progress.clone();
        let ticket = self.next_ticket.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake
            .as_ref()
            .and_then(|w| w.send(()).ok())
            .ok_or_else(|| StoreError::Corrupt("the flusher stopped".into()))?;
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

impl Drop for Flusher {
    /// Ends the thread and waits for it, so the database is closed (and its lock released)
    /// when the store is dropped.
    fn drop(&mut self) {
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flush thread: runs until the flusher is dropped.
fn run(
    db: &sled::Db,
    tickets: &AtomicU64,
    woken: &mpsc::Receiver<()>,
    progress: &watch::Sender<Progress>,
) {
    while woken.recv().is_ok() {
        // Wakes that arrived meanwhile are covered by this flush.
        while woken.try_recv().is_ok() {}
        // Every ticket up to `target` was taken before this flush starts, so it covers them.
        let target = tickets.load(Ordering::Acquire);
        if target <= progress.borrow().flushed {
            continue;
        }
        let ok = db.flush().is_ok();
        if !ok {
            tracing::error!("flushing storage to disk failed");
        }
        progress.send_modify(|p| {
            if ok {
                p.flushed = target;
            } else {
                p.failed = target;
            }
        });
    }
}
