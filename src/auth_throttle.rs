//! Failed-authentication throttling.
//!
//! A wrong API key for an existing username costs the node a full PBKDF2 (tens of
//! milliseconds of CPU), and usernames are not secret, so without a limit anyone could pin a
//! node's CPU with wrong keys. Failed key checks are therefore counted per username and per
//! client address, each over fixed one-minute windows. Once either has spent its budget
//! (`security.auth_failures_per_minute`), further key checks for it are refused — 429 with
//! `Retry-After` — *before* any hashing, until that window ends.
//!
//! The price is that someone else's failures can refuse a correct key; never for longer than
//! the rest of the window in which the budget ran out (at most one minute after the failures
//! stop), and a key verified recently is answered from the authentication cache, which this
//! throttle does not gate. IPv6 clients are counted per /64 (one host usually holds a whole
//! /64); IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
//!
//! Memory is bounded: each table holds at most [`MAX_TRACKED`] keys; when it is full, ended
//! windows are dropped first, and a new key that still finds no room is not counted.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt::Write;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The length of one counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Keys (usernames, client addresses) tracked at most per table.
pub const MAX_TRACKED: usize = 100_000;

/// A refused key check: the client may try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header (at least 1).
    pub fn secs(self) -> u64 {
        let d = self.0;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// One key's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The windows of one kind of key.
struct Windows<K> {
    map: HashMap<K, Window>,
}

impl<K: Hash + Eq> Windows<K> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
        }
    }

    /// How long `key` is still refused at `now`, when it spent `budget` in its window.
    fn refused_for<Q>(&self, key: &Q, budget: u32, now: Instant) -> Option<Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let w = self.map.get(key)?;
        let ends = w.started + WINDOW;
        (w.failures >= budget && now < ends).then(|| ends - now)
    }

    /// Counts one failure of `key` at `now`.
    fn record(&mut self, key: K, now: Instant) {
        if let Some(w) = self.map.get_mut(&key) {
            if now.saturating_duration_since(w.started) >= WINDOW {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures = w.failures.saturating_add(1);
            return;
        }
        if self.map.len() >= MAX_TRACKED {
            self.map
                .retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
            if self.map.len() >= MAX_TRACKED {
                return;
            }
        }
        self.map.insert(
            key,
            Window {
                started: now,
                failures: 1,
            },
        );
    }
}

/// The node's failed-authentication throttle.
pub struct AuthThrottle {
    /// Failures allowed per key and window; 0 turns the throttle off.
    budget: u32,
    by_username: Mutex<Windows<String>>,
    by_address: Mutex<Windows<IpAddr>>,
    failures: AtomicU64,
    refused: AtomicU64,
}

impl AuthThrottle {
    /// A throttle allowing `failures_per_minute` failed key checks per username and per
    /// client address (0: no limit).
    pub fn new(failures_per_minute: u32) -> Self {
        Self {
            budget: failures_per_minute,
            by_username: Mutex::new(Windows::new()),
            by_address: Mutex::new(Windows::new()),
            failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Whether a key check for `username` from `address` may run now; call it before
    /// hashing (after a cache hit it is not needed).
    pub fn check(&self, username: &str, address: Option<IpAddr>) -> Result<(), RetryAfter> {
        self.check_at(username, address, Instant::now())
    }

    /// Counts a failed key check for `username` from `address`.
    pub fn record_failure(&self, username: &str, address: Option<IpAddr>) {
        self.record_failure_at(username, address, Instant::now());
    }

    fn check_at(
        &self,
        username: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), RetryAfter> {
        if self.budget == 0 {
            return Ok(());
        }
        let by_user = lock(&self.by_username).refused_for(username, self.budget, now);
        let by_addr = address
            .and_then(|ip| lock(&self.by_address).refused_for(&client_group(ip), self.budget, now));
        match by_user.max(by_addr) {
            Some(wait) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(RetryAfter(wait))
            }
            None => Ok(()),
        }
    }

    fn record_failure_at(&self, username: &str, address: Option<IpAddr>, now: Instant) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if self.budget == 0 {
            return;
        }
        lock(&self.by_username).record(username.to_string(), now);
        if let Some(ip) = address {
            lock(&self.by_address).record(client_group(ip), now);
        }
    }

    /// The budget and its effect, as Prometheus text (for `GET /metrics`).
    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP webhookd_auth_failures_budget_per_minute Failed key checks allowed per \
             username and per client address per minute (0: no limit).\n\
             # TYPE webhookd_auth_failures_budget_per_minute gauge\n\
             webhookd_auth_failures_budget_per_minute {}\n\
             # HELP webhookd_auth_failures_total Failed key checks.\n\
             # TYPE webhookd_auth_failures_total counter\n\
             webhookd_auth_failures_total {}\n\
             # HELP webhookd_auth_throttled_total Key checks refused with 429 before hashing.\n\
             # TYPE webhookd_auth_throttled_total counter\n\
             webhookd_auth_throttled_total {}",
            self.budget,
            self.failures.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        );
    }
}

/// The address a client is counted under (failures here, connections by the HTTP server):
/// IPv4 as is (an IPv4-mapped IPv6 address as the IPv4 address it carries), IPv6 by its
/// /64, since one host usually holds a whole /64.
pub fn client_group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_username_over_its_budget_is_refused_until_its_window_ends() {
        let t = AuthThrottle::new(3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(t.check_at("alice", ip("10.0.0.1"), t0).is_ok());
            t.record_failure_at("alice", ip(&format!("10.0.0.{}", i + 1)), t0);
        }
        // From another address too: the username's budget is spent.
        let later = t0 + Duration::from_secs(20);
        let refused = t.check_at("alice", ip("10.9.9.9"), later).unwrap_err();
        assert_eq!(refused, RetryAfter(Duration::from_secs(40)));
        assert_eq!(refused.secs(), 40);
        // Other usernames are unaffected.
        assert!(t.check_at("bob", ip("10.9.9.9"), later).is_ok());
        // The window ends: alice may try again, with a fresh budget.
        let next = t0 + WINDOW;
        assert!(t.check_at("alice", ip("10.9.9.9"), next).is_ok());
        t.record_failure_at("alice", ip("10.9.9.9"), next);
        assert!(t.check_at("alice", ip("10.9.9.9"), next).is_ok());
    }

    #[test]
    fn an_address_over_its_budget_is_refused_for_every_username() {
        let t = AuthThrottle::new(2);
        let t0 = Instant::now();
        t.record_failure_at("a", ip("192.0.2.7"), t0);
        t.record_failure_at("b", ip("::ffff:192.0.2.7"), t0);
        assert!(t.check_at("c", ip("192.0.2.7"), t0).is_err());
        assert!(t.check_at("c", ip("192.0.2.8"), t0).is_ok());
        assert!(t.check_at("c", None, t0).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let t = AuthThrottle::new(2);
        let t0 = Instant::now();
        t.record_failure_at("a", ip("2001:db8:1:2::1"), t0);
        t.record_failure_at("b", ip("2001:db8:1:2:ffff::9"), t0);
        assert!(t.check_at("c", ip("2001:db8:1:2::77"), t0).is_err());
        assert!(t.check_at("c", ip("2001:db8:1:3::1"), t0).is_ok());
    }

    #[test]
    fn a_zero_budget_never_refuses_and_metrics_show_the_effect() {
        let off = AuthThrottle::new(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            off.record_failure_at("a", ip("10.0.0.1"), t0);
        }
        assert!(off.check_at("a", ip("10.0.0.1"), t0).is_ok());

        let on = AuthThrottle::new(1);
        on.record_failure_at("a", None, t0);
        assert!(on.check_at("a", None, t0).is_err());
        let mut text = String::new();
        on.render_metrics(&mut text);
        assert!(
            text.contains("webhookd_auth_failures_budget_per_minute 1\n"),
            "{text}"
        );
        assert!(text.contains("webhookd_auth_failures_total 1\n"), "{text}");
        assert!(text.contains("webhookd_auth_throttled_total 1\n"), "{text}");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(RetryAfter(Duration::from_millis(1)).secs(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1500)).secs(), 2);
        assert_eq!(RetryAfter(Duration::ZERO).secs(), 1);
    }

    #[test]
    fn a_full_table_drops_ended_windows_first() {
        let mut w: Windows<u32> = Windows::new();
        let t0 = Instant::now();
        for k in 0..MAX_TRACKED as u32 {
            w.record(k, t0);
        }
        // Full, nothing ended: a new key is not counted.
        w.record(u32::MAX, t0);
        assert!(w.refused_for(&u32::MAX, 1, t0).is_none());
        // Once the windows ended, room is made.
        let later = t0 + WINDOW;
        w.record(u32::MAX, later);
        assert_eq!(w.map.len(), 1);
        assert!(w.refused_for(&u32::MAX, 1, later).is_some());
    }
}
