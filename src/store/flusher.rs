//! Group commit: one `sled::Db::flush` serves every writer that asked since the last one.
//!
//! A flush costs ~0.1 ms regardless of how many writes it covers, so concurrent writers
//! share one instead of paying for their own. Each caller takes a ticket; a dedicated
//! thread flushes and publishes the highest ticket its flush covered. Its own thread, not
//! the runtime's blocking pool: every acknowledged write waits for it, so it must never
//! queue behind key hashing or fan-out steps.
//!
//! A failed flush fails the storage for good (see [`super::health`]): the waiting writers get
//! the error, and later ones get it at once instead of queueing behind a broken disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::health::Health;
use super::{Result, StoreError};

/// How long the flush thread waits for a request before it flushes anyway.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

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
    health: Arc<Health>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the flush thread for `db`.
    pub(super) fn new(db: sled::Db, health: Arc<Health>) -> Result<Self> {
        let next_ticket = Arc::new(AtomicU64::new(0));
        let (wake, woken) = mpsc::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let tickets = next_ticket.clone();
        let thread_health = health.clone();
        let thread = std::thread::Builder::new()
            .name("webhookd-flush".into())
            .spawn(move || run(&db, &tickets, &woken, &progress_tx, &thread_health))
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        Ok(Self {
            next_ticket,
            wake: Some(wake),
            progress,
            health,
            thread: Some(thread),
        })
    }

    /// A ticket for the group commit covering every write made before this call; the
    /// flush starts at once, whether or not anyone waits for it.
    pub(super) fn commit(&self) -> Commit {
        let ticket = match self.health.failure() {
            Some(reason) => Err(reason),
            None => {
                let ticket = self.next_ticket.fetch_add(1, Ordering::AcqRel) + 1;
                self.wake
                    .as_ref()
                    .and_then(|w| w.send(()).ok())
                    .map(|()| ticket)
                    .ok_or_else(|| "the flush thread stopped".to_string())
            }
        };
        Commit {
            ticket,
            progress: self.progress.clone(),
            health: self.health.clone(),
        }
    }
}

/// A group commit covering some writes: [`Commit::wait`] resolves once they are on disk.
///
/// Taking it is cheap and never blocks, so a writer can order its writes, take the
/// ticket, and leave the wait to whoever answers for them.
#[derive(Clone)]
pub struct Commit {
    /// The ticket, or why none could be taken (the storage failed).
    ticket: Result<u64, String>,
    progress: watch::Receiver<Progress>,
    health: Arc<Health>,
}

impl Commit {
    /// Waits until the writes made before the ticket was taken are flushed.
    pub async fn wait(self) -> Result<()> {
        let ticket = self.ticket.map_err(StoreError::Failed)?;
        let mut rx = self.progress;
        // A failure ends the wait even when the flush thread is stuck in sled for good.
        let seen = tokio::select! {
            seen = rx.wait_for(|p| p.flushed >= ticket || p.failed >= ticket) => *seen
                .map_err(|_| StoreError::Failed("the flush thread stopped".into()))?,
            () = self.health.failed() => return check(&self.health),
        };
        if seen.flushed >= ticket {
            Ok(())
        } else {
            check(&self.health)?;
            Err(StoreError::Failed("flushing to disk failed".into()))
        }
    }
}

/// The storage's failure, as an error.
fn check(health: &Health) -> Result<()> {
    match health.failure() {
        Some(reason) => Err(StoreError::Failed(reason)),
        None => Ok(()),
    }
}

impl Drop for Flusher {
    /// Ends the thread and waits for it, so the database is closed (and its lock released)
    /// when the store is dropped. Not after a failure: the thread may be stuck in sled for
    /// good, and the process is about to end anyway.
    fn drop(&mut self) {
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            if self.health.failure().is_none() {
                let _ = thread.join();
            }
        }
    }
}

/// The flush thread: runs until the flusher is dropped.
///
/// It also flushes when nobody asked for [`PROBE_INTERVAL`]: a write whose I/O failed in
/// sled's background (writes that are not acknowledged do not ask for a flush) leaves an
/// error that only a flush reports, and the storage must be known failed all the same.
/// With nothing to write, such a flush costs next to nothing.
fn run(
    db: &sled::Db,
    tickets: &AtomicU64,
    woken: &mpsc::Receiver<()>,
    progress: &watch::Sender<Progress>,
    health: &Health,
) {
    loop {
        let probe = match woken.recv_timeout(PROBE_INTERVAL) {
            Ok(()) => false,
            Err(mpsc::RecvTimeoutError::Timeout) => true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // Wakes that arrived meanwhile are covered by this flush.
        while woken.try_recv().is_ok() {}
        // Every ticket up to `target` was taken before this flush starts, so it covers them.
        let target = tickets.load(Ordering::Acquire);
        let asked = target > progress.borrow().flushed;
        if !asked && (!probe || health.failure().is_some()) {
            continue;
        }
        health.flush_started();
        let flushed = db.flush();
        health.flush_ended();
        let ok = flushed.is_ok();
        if let Err(e) = flushed {
            health.fail(format!("flushing to disk failed: {e}"));
        }
        if asked {
            progress.send_modify(|p| {
                if ok {
                    p.flushed = target;
                } else {
                    p.failed = target;
                }
            });
        }
    }
}
