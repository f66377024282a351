//! Storage health: whether the disk still takes writes, and a watchdog for flushes that never
//! return.
//!
//! sled cannot recover from an I/O error in place: after one (a full disk, EIO) it keeps a
//! global error and every later write fails, and a flush caught in the failing write can
//! wait forever. So a failure here is final for the process: the store records the first
//! reason, refuses further flushes at once (writers answer instead of waiting), and tells
//! the owner of the process through the watchdog's callback, which decides what to do
//! (the daemon exits so that its supervisor restarts it on a fresh sled instance).
//!
//! The watchdog is an OS thread, not a task: when the disk hangs, sled calls can block the
//! async workers too, and the watchdog must still run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How often the watchdog looks at the state.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Whether the storage takes writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageState {
    /// Writes are flushed normally.
    Ok,
    /// A flush failed or stalled; no write will succeed until the process restarts.
    Failed(String),
}

/// Shared between the store, its flush thread and the watchdog.
pub(super) struct Health {
    /// The first failure's reason.
    failure: Mutex<Option<String>>,
    /// Becomes true with the first failure: wakes the writers waiting for a flush that may
    /// never end.
    failed: watch::Sender<bool>,
    /// When the flush in progress started, in ms since `origin` plus one; 0 when none runs.
    flush_started: AtomicU64,
    origin: Instant,
}

impl Health {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            failure: Mutex::new(None),
            failed: watch::Sender::new(false),
            flush_started: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    /// Records a failure; the first reason is kept.
    pub(super) fn fail(&self, reason: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            tracing::error!(%reason, "storage failed: no write can succeed until a restart");
            *failure = Some(reason);
            self.failed.send_replace(true);
        }
    }

    /// Resolves when the storage has failed.
    pub(super) async fn failed(&self) {
        let mut failed = self.failed.subscribe();
        // The sender lives as long as `self`, so this cannot fail while it is borrowed.
        let _ = failed.wait_for(|f| *f).await;
    }

    /// The failure's reason, if storage failed.
    pub(super) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn state(&self) -> StorageState {
        match self.failure() {
            Some(reason) => StorageState::Failed(reason),
            None => StorageState::Ok,
        }
    }

    /// Marks the start of a flush (the flush thread only: one at a time).
    pub(super) fn flush_started(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.flush_started.store(ms + 1, Ordering::Release);
    }

    /// Marks the end of the flush in progress.
    pub(super) fn flush_ended(&self) {
        self.flush_started.store(0, Ordering::Release);
    }

    /// How long the flush in progress has been running.
    fn flush_running_for(&self) -> Option<Duration> {
        match self.flush_started.load(Ordering::Acquire) {
            0 => None,
            started => {
                let now = self.origin.elapsed().as_millis() as u64;
                Some(Duration::from_millis(now.saturating_sub(started - 1)))
            }
        }
    }
}

/// Starts the watchdog thread: it declares the storage failed when a flush has run for
/// longer than `stall`, and calls `on_failure` with the reason once the storage failed
/// (for any cause), then ends.
pub(super) fn watch(
    health: Arc<Health>,
    stall: Duration,
    on_failure: impl FnOnce(String) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("webhookd-storage-watchdog".into())
        .spawn(move || loop {
            if let Some(running) = health.flush_running_for().filter(|r| *r > stall) {
                health.fail(format!(
                    "a flush to disk has not finished after {:.1} s (storage.flush_stall_secs = \
                     {:.1}): the disk is stuck",
                    running.as_secs_f64(),
                    stall.as_secs_f64()
                ));
            }
            if let Some(reason) = health.failure() {
                on_failure(reason);
                return;
            }
            std::thread::sleep(WATCH_INTERVAL);
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept() {
        let health = Health::new();
        assert_eq!(health.state(), StorageState::Ok);
        health.fail("disk full".into());
        health.fail("later".into());
        assert_eq!(health.state(), StorageState::Failed("disk full".into()));
    }

    #[test]
    fn a_stalled_flush_fails_the_storage() {
        let health = Health::new();
        let (tx, rx) = std::sync::mpsc::channel();
        watch(health.clone(), Duration::from_millis(100), move |reason| {
            let _ = tx.send(reason);
        })
        .unwrap();
        health.flush_started();
        let reason = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(reason.contains("has not finished"), "{reason}");
        assert!(matches!(health.state(), StorageState::Failed(_)));
    }

    #[test]
    fn finished_flushes_are_not_stalls() {
        let health = Health::new();
        health.flush_started();
        health.flush_ended();
        assert_eq!(health.flush_running_for(), None);
    }
}
