//! Outcomes: how an attempt's result becomes an [`Outcome`], and the outcome writer that
//! records them in batches.
//!
//! The writer commits whenever outcomes wait, at most every [`OUTCOME_COMMIT_GAP`], so an
//! outcome reaches the disk within that gap plus one write and flush. Each outcome holds
//! its attempt's place in the commit window until then (see `queue`): what a crash can
//! re-send stays bounded, however far the writer falls behind.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::mpsc;

use super::messages::DeliveryMsg;
use super::queue::Uncommitted;
use super::replicated::write_outcomes_replicated;
use crate::actors::{now_us, NodeState};
use crate::delivery::attempt::Signal;
use crate::delivery::metrics::Counted;
use crate::delivery::retry::random_spread;
use crate::store::{Attempt, DeliveryState, DueEntry, FailedCountChange, Outcome, StoreError};

/// Outcomes written per transaction at most.
const OUTCOME_BATCH: usize = 512;
/// Time between the starts of two outcome commits at least. Each commit is a log write
/// and a disk sync, so fewer, larger commits cost less; attempts never wait for it, only
/// the bookkeeping of their outcomes does.
const OUTCOME_COMMIT_GAP: Duration = Duration::from_millis(4);

/// The outcome of a delivery whose subscription, subscriber or trigger is gone.
pub(super) fn cancelled(due: DueEntry) -> Outcome {
    Outcome {
        due,
        attempt: None,
        state: DeliveryState::Cancelled,
        next_due_us: None,
        failed_count: FailedCountChange::Keep,
        gone: false,
    }
}

/// The outcome of an attempt deferred by its endpoint's open breaker: no POST, the
/// delivery waits (persisted) until `until_us`.
pub(super) fn deferred(due: DueEntry, until_us: u64) -> (Outcome, Counted) {
    let outcome = Outcome {
        due,
        attempt: None,
        state: DeliveryState::Pending,
        next_due_us: Some(until_us),
        failed_count: FailedCountChange::Keep,
        gone: false,
    };
    (outcome, Counted::Deferred)
}

/// The outcome of a delivery not sent because its endpoint answered `410 Gone` at
/// `since_us`: it fails at once, with a log entry that says why and how to resume.
pub(super) fn stopped(due: DueEntry, since_us: u64) -> (Outcome, Counted) {
    let error = format!(
        "not sent: the endpoint answered 410 Gone at {}; deliveries to it resume once its \
         owner changes or re-verifies it (PATCH /v1/account)",
        since_us as f64 / 1e6
    );
    let attempt = Attempt {
        at_us: now_us(),
        status: None,
        error: Some(error),
        duration_us: 0,
        response_body: None,
    };
    let outcome = Outcome {
        due,
        attempt: Some(attempt),
        state: DeliveryState::Failed,
        next_due_us: None,
        failed_count: FailedCountChange::Keep,
        gone: false,
    };
    (outcome, Counted::Failed)
}

/// The outcome of a failed attempt: retry when the schedule allows (jittered, and not
/// before a `Retry-After`), else give up; a `410 Gone` gives up at once and stops the
/// endpoint.
pub(super) fn failure(
    ctx: &NodeState,
    due: DueEntry,
    attempt: Attempt,
    attempts_made: usize,
    signal: Signal,
) -> (Outcome, Counted) {
    let retry = &ctx.delivery.retry;
    let next = match signal {
        Signal::Gone => None,
        Signal::RetryAfter(wait) => {
            retry.next_due_us(attempts_made, now_us(), Some(wait), random_spread())
        }
        Signal::None => retry.next_due_us(attempts_made, now_us(), None, random_spread()),
    };
    let (state, counted) = match next {
        Some(_) => (DeliveryState::Pending, Counted::Retrying),
        None => (DeliveryState::Failed, Counted::Failed),
    };
    (
        Outcome {
            due,
            attempt: Some(attempt),
            state,
            next_due_us: next,
            failed_count: FailedCountChange::Increment,
            gone: signal == Signal::Gone,
        },
        counted,
    )
}

/// The outcome writer: writes outcomes in batches (record, due queue and `failed_count`
/// in one transaction), flushes each batch (one group commit) and reports it to the
/// supervisor. Off the supervisor, so dispatch never waits for storage; outcomes that
/// arrive during a write, a flush or the [`OUTCOME_COMMIT_GAP`] make the next batch
/// bigger. Their places in the commit window are given back once the batch is flushed
/// (or its write failed).
pub(super) async fn write_outcomes(
    ctx: Arc<NodeState>,
    mut outcomes: mpsc::UnboundedReceiver<Uncommitted>,
    supervisor: ActorRef<DeliveryMsg>,
) {
    let mut batch = Vec::with_capacity(OUTCOME_BATCH);
    let mut last_commit = tokio::time::Instant::now();
    while outcomes.recv_many(&mut batch, OUTCOME_BATCH).await > 0 {
        // Outcomes that arrive until the commit gap has passed join this batch.
        tokio::time::sleep_until(last_commit + OUTCOME_COMMIT_GAP).await;
        while batch.len() < OUTCOME_BATCH {
            let Ok(outcome) = outcomes.try_recv() else {
                break;
            };
            batch.push(outcome);
        }
        last_commit = tokio::time::Instant::now();
        let (taken, places): (Vec<Outcome>, Vec<_>) =
            batch.drain(..).map(|u| (u.outcome, u.permit)).unzip();
        let keys: Vec<Vec<u8>> = taken.iter().map(|o| o.due.record_key.clone()).collect();
        let finished = taken.iter().filter(|o| o.next_due_us.is_none()).count();
        // First attempts out of their pending batch leave the fan-out backlog, deferred ones
        // too (a dead endpoint's must not hold fan-outs back); a deferred one made later,
        // from the due queue, is not counted twice.
        let first = taken.iter().filter(|o| o.due.is_first_attempt()).count();
        let (finished, again) = if ctx.records.is_replicated() {
            // Through the subscribers' groups: durable once committed, no flush of ours.
            let again = write_outcomes_replicated(&ctx, taken).await;
            first_attempts_recorded(&ctx, first);
            (finished, again)
        } else {
            write_here(&ctx, taken, first, finished).await
        };
        // Committed (or not written): room for as many new attempts.
        drop(places);
        // A stopped supervisor means the node is stopping: nothing left to free.
        let _ = supervisor.cast(DeliveryMsg::Flushed {
            keys,
            finished,
            again,
        });
    }
}

/// Notes that `first` first attempts left the fan-out backlog (their outcomes are written,
/// or they were left to another node).
pub(super) fn first_attempts_recorded(ctx: &NodeState, first: usize) {
    let delivery = &ctx.delivery;
    delivery
        .unattempted
        .fetch_sub(first as i64, std::sync::atomic::Ordering::Relaxed);
    delivery.drained.notify_waiters();
}

/// Writes a batch of outcomes to this node's storage and flushes it (unreplicated);
/// answers how many deliveries finished, and the first attempts to make again.
async fn write_here(
    ctx: &NodeState,
    taken: Vec<Outcome>,
    first: usize,
    finished: usize,
) -> (usize, Vec<DueEntry>) {
    let written = ctx
        .store
        .run(move |store| {
            let result = store.record_outcomes(&taken, now_us());
            Ok::<_, StoreError>((result, taken))
        })
        .await;
    match written {
        Ok((Ok(()), _)) => {
            first_attempts_recorded(ctx, first);
            if let Err(e) = ctx.store.flush().await {
                tracing::error!(error = %e, "flushing delivery outcomes failed");
            }
            (finished, Vec::new())
        }
        // Nothing was written: retries stay due, first attempts are made again
        // (at-least-once, never lost).
        Ok((Err(e), taken)) => {
            tracing::error!(error = %e, "recording delivery outcomes failed");
            let again = taken
                .into_iter()
                .filter(|o| o.due.due_key().is_none())
                .map(|o| o.due)
                .collect();
            (0, again)
        }
        // The outcomes are lost with the panic; their pending batches resume the first
        // attempts at the next start.
        Err(e) => {
            tracing::error!(error = %e, "recording delivery outcomes crashed");
            (0, Vec::new())
        }
    }
}
