//! Endpoint isolation: one endpoint cannot take the node's delivery slots from the others.
//!
//! Two rules, per subscriber (each account has one endpoint):
//! - **a cap on attempts in flight** (`delivery.max_in_flight_per_endpoint`): the work
//!   queue parks an endpoint's further attempts, without a worker, until one of its
//!   attempts ends;
//! - **a circuit breaker**: after `delivery.breaker_failures` failed attempts in a row
//!   (errors, timeouts, non-2xx answers) the breaker opens, and the endpoint's due
//!   deliveries are deferred, without a POST, to the end of a cooldown
//!   (`delivery.breaker_cooldown_secs`). The first attempt after it is a probe: a success
//!   closes the breaker, a failure opens it for another cooldown. Deferred deliveries go
//!   back to the persisted due queue, so they hold neither a worker nor memory.
//!
//! The state lives in memory: a restart closes every breaker, and the next failures open
//! them again.

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use foldhash::HashMap;
use uuid::Uuid;

use crate::delivery::metrics::DeliveryMetrics;

/// What to do with an attempt to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Make it.
    Go,
    /// Its breaker is open: defer it, without a POST, until this time (Unix µs).
    Defer(u64),
}

/// One endpoint's state; endpoints with nothing to remember have none.
#[derive(Debug, Default, Clone, Copy)]
struct Endpoint {
    in_flight: usize,
    /// Failed attempts in a row.
    failures: u32,
    /// While open: no attempt before this time (Unix µs), but the probe.
    open_until: Option<u64>,
}

impl Endpoint {
    fn forgettable(&self) -> bool {
        self.in_flight == 0 && self.failures == 0 && self.open_until.is_none()
    }
}

/// The per-endpoint caps and breakers of the node.
pub struct Isolation {
    endpoints: Mutex<HashMap<Uuid, Endpoint>>,
    cap: usize,
    /// Failures in a row that open a breaker (0: never).
    threshold: u32,
    cooldown_us: u64,
}

impl Isolation {
    /// At most `cap` attempts at once per endpoint; `threshold` failures in a row open a
    /// breaker for `cooldown`.
    pub fn new(cap: usize, threshold: u32, cooldown: Duration) -> Self {
        Isolation {
            endpoints: Mutex::default(),
            cap: cap.max(1),
            threshold,
            cooldown_us: cooldown.as_micros() as u64,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Endpoint>> {
        // Plain counters: a panic elsewhere cannot leave them torn.
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts an attempt to `account` unless it has `cap` in flight already.
    pub fn try_start(&self, account: &Uuid) -> bool {
        let mut endpoints = self.lock();
        let e = endpoints.entry(*account).or_default();
        if e.in_flight >= self.cap {
            return false;
        }
        e.in_flight += 1;
        true
    }

    /// An attempt to `account` started with [`Self::try_start`] ended.
    pub fn end(&self, account: &Uuid) {
        let mut endpoints = self.lock();
        if let Some(e) = endpoints.get_mut(account) {
            e.in_flight = e.in_flight.saturating_sub(1);
            if e.forgettable() {
                endpoints.remove(account);
            }
        }
    }

    /// Whether an attempt to `account` may be made at `now_us`. Once the cooldown of an
    /// open breaker passed, one attempt goes (the probe) and the others wait for another
    /// cooldown, or until the probe closes the breaker.
    pub fn admit(&self, account: &Uuid, now_us: u64) -> Admit {
        let mut endpoints = self.lock();
        let Some(e) = endpoints.get_mut(account) else {
            return Admit::Go;
        };
        match e.open_until {
            None => Admit::Go,
            Some(until) if now_us < until => Admit::Defer(until),
            Some(_) => {
                e.open_until = Some(now_us.saturating_add(self.cooldown_us));
                Admit::Go
            }
        }
    }

    /// Records an attempt's result; opens or closes the breaker.
    pub fn record(&self, account: &Uuid, succeeded: bool, now_us: u64, metrics: &DeliveryMetrics) {
        if self.threshold == 0 {
            return;
        }
        let mut endpoints = self.lock();
        let e = endpoints.entry(*account).or_default();
        if succeeded {
            e.failures = 0;
            if e.open_until.take().is_some() {
                metrics.breakers_open.fetch_sub(1, Ordering::Relaxed);
            }
        } else {
            e.failures = e.failures.saturating_add(1);
            if e.failures >= self.threshold {
                let reopen = now_us.saturating_add(self.cooldown_us);
                if e.open_until.replace(reopen).is_none() {
                    metrics.breakers_open.fetch_add(1, Ordering::Relaxed);
                    metrics.breaker_trips.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(account = %account, failures = e.failures, "endpoint circuit breaker opened");
                }
            }
        }
        if e.forgettable() {
            endpoints.remove(account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_bounds_attempts_in_flight_per_endpoint() {
        let iso = Isolation::new(2, 0, Duration::from_secs(1));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(iso.try_start(&a) && iso.try_start(&a));
        assert!(!iso.try_start(&a), "a third one waits");
        assert!(iso.try_start(&b), "another endpoint is not affected");
        iso.end(&a);
        assert!(iso.try_start(&a));
    }

    #[test]
    fn failures_in_a_row_open_the_breaker_and_a_probe_closes_it() {
        let metrics = DeliveryMetrics::default();
        let iso = Isolation::new(8, 3, Duration::from_micros(100));
        let a = Uuid::new_v4();
        iso.record(&a, false, 0, &metrics);
        iso.record(&a, true, 0, &metrics);
        iso.record(&a, false, 0, &metrics);
        iso.record(&a, false, 0, &metrics);
        assert_eq!(iso.admit(&a, 1), Admit::Go, "a success reset the count");
        iso.record(&a, false, 10, &metrics);
        assert_eq!(metrics.breakers_open.load(Ordering::Relaxed), 1);
        assert_eq!(iso.admit(&a, 50), Admit::Defer(110));
        assert_eq!(iso.admit(&a, 110), Admit::Go, "the probe");
        assert_eq!(iso.admit(&a, 111), Admit::Defer(210), "one probe at a time");
        iso.record(&a, false, 120, &metrics);
        assert_eq!(
            iso.admit(&a, 130),
            Admit::Defer(220),
            "a failed probe reopens"
        );
        assert_eq!(metrics.breaker_trips.load(Ordering::Relaxed), 1);
        assert_eq!(iso.admit(&a, 220), Admit::Go);
        iso.record(&a, true, 225, &metrics);
        assert_eq!(iso.admit(&a, 226), Admit::Go);
        assert_eq!(metrics.breakers_open.load(Ordering::Relaxed), 0);
        assert!(
            iso.lock().is_empty(),
            "a healthy endpoint leaves nothing behind"
        );
    }
}
