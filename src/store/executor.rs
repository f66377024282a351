//! The async boundary of storage: async code hands store work to the storage threads and
//! awaits the answer ([`Store::run`]); it never calls the synchronous methods itself.
//!
//! sled blocks: a transaction waits for its locks, an iterator for pages, and once the disk
//! fails a call can block for good (a flush stuck making the log stable). On one of tokio's
//! async workers such a call stalls every task of that worker, and a few of them the whole
//! runtime: the HTTP server, `/health`, the delivery engine. On a storage thread it stalls
//! that thread only; the caller waits on a channel, so it stays cancellable (a request's
//! deadline still answers, and a call whose caller gave up before it started is skipped),
//! and the storage watchdog ends the process once a flush stalls.
//!
//! The storage threads are a small pool of OS threads of their own ([`THREADS`]), not
//! tokio's blocking pool: a stuck disk then pins a bounded number of threads instead of
//! growing the blocking pool by one stuck thread per call until it is full, and storage
//! calls never queue behind key hashing or DNS lookups, which use that pool.
//!
//! The rule is checked: every synchronous method reaches its trees through one accessor,
//! which asserts (debug builds) that its thread may block — a storage thread, or a thread
//! marked with [`allow_sync_calls`] (offline commands, unit tests). A violation aborts the
//! process with a backtrace, so any test that reaches one fails, whatever task made it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::{Result, Store, StoreError};

/// Storage threads. Enough for the node's concurrent storage work on a few cores (fan-out
/// step runners, the outcome writer, actors, reads of the API) with room for a long call
/// (a retention sweep, a cascade) to run beside them.
const THREADS: usize = 8;

thread_local! {
    /// True on threads that may call the synchronous store methods.
    static SYNC_ALLOWED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as one that may call the synchronous store methods: a thread
/// that runs no async tasks (an offline command's, a unit test's).
pub fn allow_sync_calls() {
    SYNC_ALLOWED.set(true);
}

/// Aborts (debug builds) when the current thread may not block on storage.
pub(super) fn check_sync_allowed() {
    if cfg!(debug_assertions) && !SYNC_ALLOWED.get() {
        eprintln!(
            "a synchronous storage call on a thread that must not block (an async worker?): \
             async code goes through Store::run\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        std::process::abort();
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The jobs waiting for a storage thread.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Set when the store is dropped: the threads end once the queue is empty.
    closed: bool,
}

/// The queue and the signal that wakes one idle thread per job.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The storage threads and their queue.
pub(super) struct Executor {
    shared: Arc<Shared>,
}

impl Executor {
    /// Starts the storage threads.
    pub(super) fn start() -> Result<Self> {
        let shared = Arc::new(Shared::default());
        for n in 0..THREADS {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("webhookd-store-{n}"))
                .spawn(move || work(&shared))
                .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        }
        Ok(Self { shared })
    }

    fn submit(&self, job: Job) -> Result<()> {
        let mut queue = self.shared.lock();
        if queue.closed {
            return Err(StoreError::Interrupted(
                "the storage threads stopped".into(),
            ));
        }
        queue.jobs.push_back(job);
        drop(queue);
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl Drop for Executor {
    /// Ends the threads once they ran what is queued; not waited for (one may be stuck in
    /// sled for good, or be the thread dropping the store).
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// A storage thread: runs jobs until the executor is dropped and the queue is empty.
fn work(shared: &Shared) {
    allow_sync_calls();
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        // A panicking call drops its answer's sender (its caller sees the call interrupted);
        // the thread lives on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

impl Store {
    /// Runs `f` on a storage thread and waits for its answer: the only way async code
    /// reaches the store (why: the `store::executor` module).
    ///
    /// Dropping the future abandons the wait; `f` is then skipped unless it already
    /// started. Batch the work of one step into one call: each call is a round trip
    /// between threads.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Store) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let store = self.clone();
        self.inner.executor.submit(Box::new(move || {
            if !answer.is_closed() {
                let _ = answer.send(f(&store));
            }
        }))?;
        answered.await.map_err(|_| {
            E::from(StoreError::Interrupted(
                "a storage call ended without an answer".into(),
            ))
        })?
    }

    /// Runs `f` on a storage thread without waiting for it (background work that reports
    /// its own outcome).
    pub fn spawn(&self, f: impl FnOnce(&Store) + Send + 'static) -> Result<()> {
        let store = self.clone();
        self.inner.executor.submit(Box::new(move || f(&store)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_run_on_the_storage_threads() {
        let (_d, store) = crate::store::tests::temp_store();
        let name = store
            .run(|s| {
                s.is_healthy();
                Ok::<_, StoreError>(std::thread::current().name().map(str::to_string))
            })
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("webhookd-store-"));
    }

    #[tokio::test]
    async fn a_panicking_call_is_interrupted_and_the_threads_live_on() {
        let (_d, store) = crate::store::tests::temp_store();
        let panicked = store.run(|_| -> Result<()> { panic!("boom") }).await;
        assert!(matches!(panicked, Err(StoreError::Interrupted(_))));
        for _ in 0..2 * THREADS {
            assert!(store
                .run(|s| Ok::<_, StoreError>(s.is_healthy()))
                .await
                .unwrap());
        }
    }

    #[tokio::test]
    async fn an_abandoned_call_does_not_hold_its_caller() {
        let (_d, store) = crate::store::tests::temp_store();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let blocked = Arc::new(Mutex::new(blocked));
        // Every storage thread stuck, as on a hung disk.
        for _ in 0..THREADS {
            let blocked = blocked.clone();
            store
                .spawn(move |_| {
                    let _ = blocked.lock().map(|b| b.recv());
                })
                .unwrap();
        }
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            store.run(|s| Ok::<_, StoreError>(s.is_healthy())),
        )
        .await;
        assert!(waited.is_err(), "the call waits for a free storage thread");
        for _ in 0..THREADS {
            let _ = release.send(());
        }
        assert!(store
            .run(|s| Ok::<_, StoreError>(s.is_healthy()))
            .await
            .unwrap());
    }
}
