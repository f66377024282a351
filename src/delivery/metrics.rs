//! Delivery counters: outcomes, attempt latency, in-flight attempts, due-queue depth, and
//! the endpoints' circuit breakers.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Attempt latency bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// The node's delivery metrics (lock-free: updated on the hot path).
#[derive(Default)]
pub struct DeliveryMetrics {
    succeeded: AtomicU64,
    failed_attempts: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    cancelled: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Attempts running now.
    pub in_flight: AtomicI64,
    /// Pending deliveries: waiting for their first attempt or a retry.
    pub due: AtomicI64,
    /// Endpoints whose circuit breaker is open now.
    pub breakers_open: AtomicI64,
    /// Times a breaker opened.
    pub breaker_trips: AtomicU64,
    /// Attempts deferred by an open breaker, without a POST.
    deferred: AtomicU64,
}

/// How an attempt or a delivery ended, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Delivered.
    Succeeded,
    /// An attempt failed, a retry is scheduled.
    Retrying,
    /// The last attempt failed.
    Failed,
    /// Not attempted: failed_count limit.
    Skipped,
    /// Ended by a deletion.
    Cancelled,
    /// Not attempted now: the endpoint's breaker is open.
    Deferred,
}

impl DeliveryMetrics {
    /// Counts an outcome.
    pub fn count(&self, outcome: Counted, n: u64) {
        let counter = match outcome {
            Counted::Succeeded => &self.succeeded,
            Counted::Retrying => &self.failed_attempts,
            Counted::Failed => &self.failed,
            Counted::Skipped => &self.skipped,
            Counted::Cancelled => &self.cancelled,
            Counted::Deferred => &self.deferred,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        if outcome == Counted::Failed {
            self.failed_attempts.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records one attempt's duration.
    pub fn observe_attempt(&self, duration_us: u64) {
        let secs = duration_us as f64 / 1e6;
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(duration_us, Ordering::Relaxed);
    }

    /// Deliveries that succeeded so far.
    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP webhookd_deliveries_total Deliveries by final outcome.\n");
        out.push_str("# TYPE webhookd_deliveries_total counter\n");
        for (name, v) in [
            ("succeeded", &self.succeeded),
            ("failed", &self.failed),
            ("skipped", &self.skipped),
            ("cancelled", &self.cancelled),
        ] {
            let _ = writeln!(
                out,
                "webhookd_deliveries_total{{outcome=\"{name}\"}} {}",
                load(v)
            );
        }
        out.push_str("# HELP webhookd_delivery_failed_attempts_total Attempts that failed.\n");
        out.push_str("# TYPE webhookd_delivery_failed_attempts_total counter\n");
        let _ = writeln!(
            out,
            "webhookd_delivery_failed_attempts_total {}",
            load(&self.failed_attempts)
        );
        out.push_str("# HELP webhookd_delivery_attempt_seconds Duration of delivery attempts.\n");
        out.push_str("# TYPE webhookd_delivery_attempt_seconds histogram\n");
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "webhookd_delivery_attempt_seconds_bucket{{le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(
            out,
            "webhookd_delivery_attempt_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "webhookd_delivery_attempt_seconds_sum {}",
            load(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "webhookd_delivery_attempt_seconds_count {count}");
        out.push_str("# HELP webhookd_delivery_in_flight Attempts running now.\n");
        out.push_str("# TYPE webhookd_delivery_in_flight gauge\n");
        let _ = writeln!(
            out,
            "webhookd_delivery_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out.push_str("# HELP webhookd_delivery_due Pending deliveries, waiting for their first attempt or a retry.\n");
        out.push_str("# TYPE webhookd_delivery_due gauge\n");
        let _ = writeln!(
            out,
            "webhookd_delivery_due {}",
            self.due.load(Ordering::Relaxed).max(0)
        );
        out.push_str(
            "# HELP webhookd_delivery_breakers_open Endpoints whose circuit breaker is open.\n",
        );
        out.push_str("# TYPE webhookd_delivery_breakers_open gauge\n");
        let _ = writeln!(
            out,
            "webhookd_delivery_breakers_open {}",
            self.breakers_open.load(Ordering::Relaxed).max(0)
        );
        out.push_str("# HELP webhookd_delivery_breaker_trips_total Times an endpoint's circuit breaker opened.\n");
        out.push_str("# TYPE webhookd_delivery_breaker_trips_total counter\n");
        let _ = writeln!(
            out,
            "webhookd_delivery_breaker_trips_total {}",
            load(&self.breaker_trips)
        );
        out.push_str("# HELP webhookd_delivery_deferred_total Attempts deferred by an open circuit breaker, without a POST.\n");
        out.push_str("# TYPE webhookd_delivery_deferred_total counter\n");
        let _ = writeln!(
            out,
            "webhookd_delivery_deferred_total {}",
            load(&self.deferred)
        );
        out
    }
}
