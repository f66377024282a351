//! Running many indexed jobs with bounded concurrency.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::task::JoinSet;

use super::error::{BenchError, BenchResult};

/// Runs `job(0..n)` on at most `concurrency` tasks and returns the results in index
/// order. `done` is incremented after every finished job (for a progress bar). The first
/// error stops the remaining jobs and is returned.
pub async fn run_indexed<T, F, Fut>(
    n: usize,
    concurrency: usize,
    done: Arc<AtomicU64>,
    job: F,
) -> BenchResult<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BenchResult<T>> + Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1).min(n) {
        let (job, next, failed, done) = (job.clone(), next.clone(), failed.clone(), done.clone());
        workers.spawn(async move {
            let mut results = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match job(i).await {
                    Ok(value) => {
                        results.push((i, value));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(results)
        });
    }
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(results)) => {
                for (i, value) in results {
                    slots[i] = Some(value);
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(BenchError::Invalid(format!("a job panicked: {e}")));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| slot.ok_or_else(|| BenchError::Invalid(format!("job {i} did not run"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_come_back_in_order_and_errors_stop_the_run() {
        let done = Arc::new(AtomicU64::new(0));
        let out = run_indexed(100, 7, done.clone(), |i| async move { Ok(i * 2) })
            .await
            .unwrap();
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(done.load(Ordering::Relaxed), 100);

        let err = run_indexed(100, 4, Arc::new(AtomicU64::new(0)), |i| async move {
            if i == 10 {
                Err(BenchError::Invalid("boom".into()))
            } else {
                Ok(i)
            }
        })
        .await;
        assert!(matches!(err, Err(BenchError::Invalid(m)) if m == "boom"));
    }
}
