//! Where deliveries to an account go: its endpoint and signing secrets, and whether they
//! are stopped, cached.
//!
//! Every delivery attempt needs the subscriber's current endpoint and secret, and the same
//! subscribers are served again and again: rather than read and decode the account record
//! per attempt, the store keeps the pair in memory and drops it on every write to the
//! account. A generation number closes the race where a reader fetched the record just
//! before a write and would otherwise cache the old pair after the write dropped it.

use std::sync::{Arc, Mutex};

use foldhash::HashMap;
use uuid::Uuid;

use super::{Result, Store};

/// Accounts kept at most; the whole cache is dropped when it is full (a fan-out touches
/// the same subscribers again and again, so it refills with the ones in use).
const MAX_TARGETS: usize = 16_384;

/// The endpoint and secrets deliveries to one account use, and whether they are stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTarget {
    /// The account's endpoint.
    pub endpoint: String,
    /// The account's signing secret.
    pub secret_key: String,
    /// The secret the last reset replaced and until when (Unix µs) it signs too.
    pub previous_secret: Option<(String, u64)>,
    /// When the endpoint answered `410 Gone` (Unix µs), if deliveries to it are stopped.
    pub stopped_us: Option<u64>,
}

impl DeliveryTarget {
    /// The replaced secret, if it still signs at `now_us`.
    pub fn previous_secret_at(&self, now_us: u64) -> Option<&str> {
        self.previous_secret
            .as_ref()
            .filter(|(_, until)| now_us < *until)
            .map(|(secret, _)| secret.as_str())
    }
}

#[derive(Default)]
struct Entries {
    generation: u64,
    map: HashMap<Uuid, Arc<DeliveryTarget>>,
}

/// The cache; see the module documentation.
#[derive(Default)]
pub(super) struct TargetCache {
    entries: Mutex<Entries>,
}

impl TargetCache {
    /// The cached target, or the generation a fill must present.
    fn get(&self, id: &Uuid) -> std::result::Result<Arc<DeliveryTarget>, u64> {
        match self.entries.lock() {
            Ok(e) => e.map.get(id).cloned().ok_or(e.generation),
            Err(_) => Err(u64::MAX),
        }
    }

    /// Caches `target` unless the account was written since `generation` was read.
    fn fill(&self, id: Uuid, target: Arc<DeliveryTarget>, generation: u64) {
        if let Ok(mut e) = self.entries.lock() {
            if e.generation != generation {
                return;
            }
            if e.map.len() >= MAX_TARGETS {
                e.map.clear();
            }
            e.map.insert(id, target);
        }
    }

    /// Forgets `id`'s target; called after every write to the account.
    pub(super) fn invalidate(&self, id: &Uuid) {
        if let Ok(mut e) = self.entries.lock() {
            e.generation = e.generation.wrapping_add(1);
            e.map.remove(id);
        }
    }
}

impl Store {
    /// The cached target of account `id`, if any: memory only, for async code to try before
    /// [`Store::delivery_target`] on a storage thread.
    pub fn cached_delivery_target(&self, id: &Uuid) -> Option<Arc<DeliveryTarget>> {
        self.inner.targets.get(id).ok()
    }

    /// The endpoint and secret of the live account `id` (`None` once it is deleted or
    /// being deleted).
    pub fn delivery_target(&self, id: &Uuid) -> Result<Option<Arc<DeliveryTarget>>> {
        let generation = match self.inner.targets.get(id) {
            Ok(target) => return Ok(Some(target)),
            Err(generation) => generation,
        };
        let Some(account) = self.account(id)? else {
            return Ok(None);
        };
        let target = Arc::new(DeliveryTarget {
            endpoint: account.endpoint,
            secret_key: account.secret_key,
            previous_secret: account.previous_secret.map(|p| (p.secret_key, p.until_us)),
            stopped_us: account.deliveries_stopped_us,
        });
        self.inner.targets.fill(*id, target.clone(), generation);
        Ok(Some(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: &str) -> Arc<DeliveryTarget> {
        Arc::new(DeliveryTarget {
            endpoint: endpoint.into(),
            secret_key: "s".into(),
            previous_secret: None,
            stopped_us: None,
        })
    }

    #[test]
    fn a_fill_that_raced_with_a_write_is_dropped() {
        let cache = TargetCache::default();
        let id = Uuid::new_v4();
        let generation = cache.get(&id).unwrap_err();
        cache.invalidate(&id);
        cache.fill(id, target("old"), generation);
        let generation = cache.get(&id).unwrap_err();
        cache.fill(id, target("new"), generation);
        assert_eq!(cache.get(&id).unwrap().endpoint, "new");
        cache.invalidate(&id);
        assert!(cache.get(&id).is_err());
    }
}
