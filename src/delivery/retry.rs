//! The retry schedule: one attempt, then one retry per configured delay.

use std::time::Duration;

/// Delays between a failed attempt and the next one.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    delays: Vec<Duration>,
}

impl RetryPolicy {
    /// A policy from `delivery.retry_delays_secs`.
    pub fn from_secs(delays: &[f64]) -> Self {
        Self {
            delays: delays
                .iter()
                .map(|d| Duration::from_secs_f64(d.max(0.0)))
                .collect(),
        }
    }

    /// After `attempts_made` attempts (the last one failed at `now_us`), when the next one is
    /// due, or `None` when the schedule is exhausted.
    pub fn next_due_us(&self, attempts_made: usize, now_us: u64) -> Option<u64> {
        let delay = self.delays.get(attempts_made.checked_sub(1)?)?;
        Some(now_us + delay.as_micros() as u64)
    }

    /// Total attempts the schedule allows.
    pub fn max_attempts(&self) -> usize {
        self.delays.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_four_attempts() {
        let p = RetryPolicy::from_secs(&[120.0, 120.0, 3600.0]);
        assert_eq!(p.max_attempts(), 4);
        assert_eq!(p.next_due_us(1, 0), Some(120_000_000));
        assert_eq!(p.next_due_us(3, 10), Some(3_600_000_010));
        assert_eq!(p.next_due_us(4, 0), None);
        assert_eq!(p.next_due_us(0, 0), None);
    }

    #[test]
    fn fractions_of_seconds_work() {
        let p = RetryPolicy::from_secs(&[0.005]);
        assert_eq!(p.next_due_us(1, 1), Some(5_001));
    }
}
