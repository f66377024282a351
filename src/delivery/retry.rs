//! The retry schedule: one attempt, then one retry per configured delay.
//!
//! Each delay is jittered (moved at random by up to `delivery.retry_jitter` of itself,
//! either way), so deliveries that failed together — an endpoint down for a minute fails
//! all of them at once — come back spread out rather than as one burst. A receiver that
//! answered 429 or 503 with `Retry-After` gets no retry before that time, clamped to
//! `delivery.max_retry_after_secs`; `Retry-After` never adds a retry the schedule does
//! not have.

use std::time::Duration;

/// Delays between a failed attempt and the next one.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    delays: Vec<Duration>,
    /// Fraction of a delay it may move either way.
    jitter: f64,
    /// Longest wait a `Retry-After` imposes.
    max_retry_after: Duration,
}

impl RetryPolicy {
    /// A policy from `delivery.retry_delays_secs`, `delivery.retry_jitter` and
    /// `delivery.max_retry_after_secs`.
    pub fn new(delays: &[f64], jitter: f64, max_retry_after_secs: f64) -> Self {
        Self {
            delays: delays
                .iter()
                .map(|d| Duration::from_secs_f64(d.max(0.0)))
                .collect(),
            jitter: jitter.clamp(0.0, 1.0),
            max_retry_after: Duration::from_secs_f64(max_retry_after_secs.max(0.0)),
        }
    }

    /// After `attempts_made` attempts (the last one failed at `now_us`), when the next one
    /// is due, or `None` when the schedule is exhausted. `retry_after` is what the endpoint
    /// asked for; `spread` in [-1, 1] picks where in the jitter range the delay falls.
    pub fn next_due_us(
        &self,
        attempts_made: usize,
        now_us: u64,
        retry_after: Option<Duration>,
        spread: f64,
    ) -> Option<u64> {
        let delay = self.delays.get(attempts_made.checked_sub(1)?)?;
        let factor = 1.0 + self.jitter * spread.clamp(-1.0, 1.0);
        let jittered = delay.mul_f64(factor.max(0.0));
        let wait = match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_retry_after)),
            None => jittered,
        };
        Some(now_us.saturating_add(wait.as_micros() as u64))
    }

    /// Total attempts the schedule allows.
    pub fn max_attempts(&self) -> usize {
        self.delays.len() + 1
    }
}

/// A uniform random number in [-1, 1] for [`RetryPolicy::next_due_us`] (0, no jitter, if
/// the system has no randomness to give).
pub fn random_spread() -> f64 {
    let bits = getrandom::u64().unwrap_or(1 << 63) >> 11;
    (bits as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_four_attempts() {
        let p = RetryPolicy::new(&[120.0, 120.0, 3600.0], 0.2, 3600.0);
        assert_eq!(p.max_attempts(), 4);
        assert_eq!(p.next_due_us(1, 0, None, 0.0), Some(120_000_000));
        assert_eq!(p.next_due_us(3, 10, None, 0.0), Some(3_600_000_010));
        assert_eq!(p.next_due_us(4, 0, None, 0.0), None);
        assert_eq!(p.next_due_us(0, 0, None, 0.0), None);
    }

    #[test]
    fn fractions_of_seconds_work() {
        let p = RetryPolicy::new(&[0.005], 0.0, 0.0);
        assert_eq!(p.next_due_us(1, 1, None, 1.0), Some(5_001));
    }

    #[test]
    fn jitter_moves_a_delay_within_its_fraction() {
        let p = RetryPolicy::new(&[100.0], 0.2, 3600.0);
        assert_eq!(p.next_due_us(1, 0, None, -1.0), Some(80_000_000));
        assert_eq!(p.next_due_us(1, 0, None, 1.0), Some(120_000_000));
        let spreads: Vec<f64> = (0..1000).map(|_| random_spread()).collect();
        assert!(spreads.iter().all(|s| (-1.0..=1.0).contains(s)));
        assert!(spreads.iter().any(|s| *s < -0.5) && spreads.iter().any(|s| *s > 0.5));
    }

    #[test]
    fn retry_after_delays_the_retry_within_the_clamp_but_adds_none() {
        let p = RetryPolicy::new(&[1.0], 0.0, 60.0);
        let asked = |secs| Some(Duration::from_secs(secs));
        assert_eq!(p.next_due_us(1, 0, asked(30), 0.0), Some(30_000_000));
        assert_eq!(p.next_due_us(1, 0, asked(7200), 0.0), Some(60_000_000));
        assert_eq!(p.next_due_us(1, 0, asked(0), 0.0), Some(1_000_000));
        assert_eq!(p.next_due_us(2, 0, asked(30), 0.0), None);
    }
}
