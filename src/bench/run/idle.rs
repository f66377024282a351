//! Trigger-to-delivery latency on an otherwise idle node: triggers fired one after another,
//! each waiting for all its deliveries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{event_data, next_seq};
use crate::bench::client::{Account, ApiClient};
use crate::bench::error::BenchResult;
use crate::bench::sink::Sink;
use crate::bench::stats::Latency;

/// Trigger-to-delivery latency on an otherwise idle node.
#[derive(Debug, Clone, Serialize)]
pub struct IdleLatency {
    /// Triggers fired, one after another.
    pub triggers: usize,
    /// Subscriptions of the registration.
    pub subscribers: usize,
    /// Trigger sent → its first delivery.
    pub first_delivery: Latency,
    /// Trigger sent → its last delivery.
    pub all_delivered: Latency,
    /// Round trip of the trigger request.
    pub trigger_response: Latency,
    /// Deliveries that did not arrive within the per-trigger deadline.
    pub missing: u64,
}

/// How the idle-latency run is shaped.
#[derive(Debug, Clone, Copy)]
pub struct IdleSpec {
    /// Triggers fired, one after another.
    pub triggers: usize,
    /// How long one trigger's deliveries may take to arrive.
    pub deadline: Duration,
    /// Quiet time before each trigger.
    pub pause: Duration,
}

/// Fires `spec.triggers` triggers at `registration` one after another; each waits until
/// all `subscribers` deliveries arrived (or `spec.deadline`), after `spec.pause` of quiet.
pub async fn idle_latency(
    api: &Arc<ApiClient>,
    sink: &Sink,
    owner: &Account,
    registration: &str,
    subscribers: usize,
    spec: IdleSpec,
) -> BenchResult<IdleLatency> {
    let clock = sink.clock();
    let (mut firsts, mut lasts, mut responses) = (Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0;
    for _ in 0..spec.triggers {
        tokio::time::sleep(spec.pause).await;
        sink.take();
        let base = sink.posts();
        let seq = next_seq();
        let sent_us = clock.now_us();
        api.trigger(owner, registration, &event_data(seq)).await?;
        responses.push(clock.now_us() - sent_us);
        sink.wait_for_posts(base + subscribers as u64, Instant::now() + spec.deadline)
            .await;
        let mine: Vec<u64> = sink
            .take()
            .iter()
            .filter(|a| a.seq == seq)
            .map(|a| u64::from(a.at_us).saturating_sub(sent_us))
            .collect();
        missing += (subscribers as u64).saturating_sub(mine.len() as u64);
        if let (Some(first), Some(last)) = (mine.iter().min(), mine.iter().max()) {
            firsts.push(*first);
            lasts.push(*last);
        }
    }
    Ok(IdleLatency {
        triggers: spec.triggers,
        subscribers,
        first_delivery: Latency::from_samples(&mut firsts),
        all_delivered: Latency::from_samples(&mut lasts),
        trigger_response: Latency::from_samples(&mut responses),
        missing,
    })
}
