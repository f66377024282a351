//! A part of the bench (the sink, the ceiling's client) run on an OS thread of its own
//! under a single-threaded tokio runtime, so that the CPU it spends can be read apart from
//! the runner's and the node's, from `/proc/self/task/<tid>/stat`.

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::{BenchError, BenchResult};
use super::node::stat_cpu_time;

/// The CPU clock of one thread of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCpu {
    tid: u32,
}

impl ThreadCpu {
    /// The calling thread's clock.
    pub fn current() -> BenchResult<Self> {
        // `/proc/thread-self` links to `<pid>/task/<tid>`.
        let link = std::fs::read_link("/proc/thread-self")
            .map_err(|e| BenchError::io("/proc/thread-self", e))?;
        link.file_name()
            .and_then(|tid| tid.to_str())
            .and_then(|tid| tid.parse().ok())
            .map(|tid| Self { tid })
            .ok_or_else(|| BenchError::Invalid(format!("no thread id in {}", link.display())))
    }

    /// User + system CPU time the thread consumed so far (10 ms resolution).
    pub fn now(&self) -> BenchResult<Duration> {
        stat_cpu_time(&format!("/proc/self/task/{}/stat", self.tid))
    }
}

/// A thread running one future; the future is dropped, with every task it spawned, when
/// this handle is.
pub struct OwnThread {
    cpu: ThreadCpu,
    _stop: oneshot::Sender<()>,
}

impl OwnThread {
    /// Starts thread `name` and calls `setup` on it, inside its runtime (sockets made
    /// there belong to its reactor); then runs the future `setup` made. Answers what
    /// `setup` answered beside the future, or its error.
    pub async fn start<T, S, F>(name: &str, setup: S) -> BenchResult<(Self, T)>
    where
        S: FnOnce() -> BenchResult<(T, F)> + Send + 'static,
        F: Future<Output = ()> + 'static,
        T: Send + 'static,
    {
        let (ready_tx, ready_rx) = oneshot::channel::<BenchResult<(ThreadCpu, T)>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(BenchError::io("a thread's runtime", e)));
                        return;
                    }
                };
                let started = {
                    let _entered = runtime.enter();
                    ThreadCpu::current().and_then(|cpu| setup().map(|(v, run)| (cpu, v, run)))
                };
                let run = match started {
                    Ok((cpu, value, run)) => {
                        let _ = ready_tx.send(Ok((cpu, value)));
                        run
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    tokio::select! {
                        () = run => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .map_err(|e| BenchError::io(format!("cannot start thread {name}"), e))?;
        let (cpu, value) = ready_rx
            .await
            .map_err(|_| BenchError::Invalid(format!("thread {name} ended before it started")))??;
        Ok((
            Self {
                cpu,
                _stop: stop_tx,
            },
            value,
        ))
    }

    /// The thread's CPU clock.
    pub fn cpu(&self) -> ThreadCpu {
        self.cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_thread_shows_its_cpu_and_stops_when_dropped() {
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (thread, answer) = OwnThread::start("bench-test", move || {
            let run = async move {
                // Spins until about 50 ms of CPU is spent, then parks forever.
                let me = ThreadCpu::current().unwrap();
                while me.now().unwrap() < Duration::from_millis(50) {
                    std::hint::black_box((0..10_000u64).sum::<u64>());
                }
                let _ = done_tx.send(());
                std::future::pending::<()>().await;
            };
            Ok((42, run))
        })
        .await
        .unwrap();
        assert_eq!(answer, 42);
        done_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(thread.cpu().now().unwrap() >= Duration::from_millis(50));
        assert_ne!(thread.cpu(), ThreadCpu::current().unwrap());
        drop(thread);
    }

    #[tokio::test]
    async fn a_failed_setup_is_answered() {
        let failed = OwnThread::start("bench-test", || {
            Err::<((), std::future::Ready<()>), _>(BenchError::Invalid("no".into()))
        })
        .await;
        assert!(matches!(failed, Err(BenchError::Invalid(_))));
    }
}
