//! `[delivery]`: fan-out, retries and the policy that keeps one endpoint from hurting the
//! others (receivers' signals, per-endpoint caps, the circuit breaker). Its own file
//! because it is the largest section, with its own range checks.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[delivery]`: fan-out, retries and the per-endpoint policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Subscribers whose `failed_count` reached this value are skipped at trigger time.
    pub max_failed_count: u64,
    /// Delay before each retry after a failed attempt (fractions allowed).
    pub retry_delays_secs: Vec<f64>,
    /// Each retry delay is moved by up to this fraction of itself, at random, either way
    /// (0.2: ±20 %), so deliveries that failed together do not retry together.
    pub retry_jitter: f64,
    /// Longest wait a receiver's `Retry-After` (on 429 or 503) can impose on a retry.
    pub max_retry_after_secs: f64,
    /// Delivery attempts running at once at most (the size of the worker pool).
    pub max_in_flight: usize,
    /// Attempts running at once to one subscriber endpoint at most; the others wait
    /// without holding a worker.
    pub max_in_flight_per_endpoint: usize,
    /// Consecutive failed attempts (errors, timeouts, non-2xx) that open an endpoint's
    /// circuit breaker; 0 disables the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker defers its endpoint's deliveries before one probe attempt.
    pub breaker_cooldown_secs: f64,
    /// Outcomes that may await their commit at once; an attempt does not start while
    /// this many are waiting. With `max_in_flight` it bounds the deliveries a crash makes
    /// the node send again: at most `max_in_flight + commit_window`.
    pub commit_window: usize,
    /// Bytes of each attempt's response body kept in the attempt log (0: none).
    pub response_capture_bytes: usize,
    /// Finished deliveries and their attempt logs are removed after this many hours.
    pub log_retention_hours: f64,
    /// How often the retention sweep runs.
    pub sweep_interval_secs: f64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_failed_count: 250,
            retry_delays_secs: vec![120.0, 120.0, 3600.0],
            retry_jitter: 0.2,
            max_retry_after_secs: 3600.0,
            max_in_flight: 256,
            max_in_flight_per_endpoint: 32,
            breaker_failures: 10,
            breaker_cooldown_secs: 30.0,
            commit_window: 1024,
            response_capture_bytes: 1024,
            log_retention_hours: 72.0,
            sweep_interval_secs: 300.0,
        }
    }
}

impl DeliveryConfig {
    /// Range checks; `max_response_bytes` (`http_client`) bounds the captured body.
    pub(super) fn validate(&self, max_response_bytes: usize) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        for (key, v) in [
            ("delivery.log_retention_hours", self.log_retention_hours),
            ("delivery.sweep_interval_secs", self.sweep_interval_secs),
            ("delivery.breaker_cooldown_secs", self.breaker_cooldown_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return invalid(
                    key,
                    format!("must be a positive number of seconds, got {v}"),
                );
            }
        }
        if !(self.max_retry_after_secs.is_finite() && self.max_retry_after_secs >= 0.0) {
            let reason = "must be zero or a positive number of seconds".into();
            return invalid("delivery.max_retry_after_secs", reason);
        }
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            let reason = format!("must be between 0.0 and 1.0, got {}", self.retry_jitter);
            return invalid("delivery.retry_jitter", reason);
        }
        for (key, value) in [
            ("delivery.max_in_flight", self.max_in_flight),
            ("delivery.commit_window", self.commit_window),
            (
                "delivery.max_in_flight_per_endpoint",
                self.max_in_flight_per_endpoint,
            ),
        ] {
            if !(1..=100_000).contains(&value) {
                return invalid(key, "must be between 1 and 100000".into());
            }
        }
        if self.response_capture_bytes > max_response_bytes {
            let reason =
                format!("must be at most http_client.max_response_bytes ({max_response_bytes})");
            return invalid("delivery.response_capture_bytes", reason);
        }
        if let Some(bad) = self
            .retry_delays_secs
            .iter()
            .find(|d| !d.is_finite() || **d < 0.0)
        {
            let reason = format!("delays must be zero or positive seconds, got {bad}");
            return invalid("delivery.retry_delays_secs", reason);
        }
        Ok(())
    }
}
