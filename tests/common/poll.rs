//! Polling with a deadline: tests never sleep to synchronise, they poll until a condition
//! holds or the deadline passes.

use std::future::Future;
use std::time::{Duration, Instant};

/// Default deadline for [`eventually`].
pub const POLL_DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` every 20 ms until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`], but returns `None` at the deadline instead of panicking (so the
/// caller can report what it last saw).
pub async fn eventually_quiet<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
