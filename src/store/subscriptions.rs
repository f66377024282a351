//! The `subscriptions` tree and its indexes: by epoch, by registration (the fan-out list,
//! read a batch at a time by fan-out steps) and by subscriber ("my subscriptions" and
//! account cascades).

use std::sync::atomic::Ordering;

use sled::Transactional;
use uuid::Uuid;

use super::deliveries::NewDelivery;
use super::keys::{epoch_key, owned_key, read_u64, read_uuid, trailing_id};
use super::pagination::{Page, PageRequest};
use super::records::{decode, encode_compact, tx_decode, Account, Registration, Subscription};
use super::{Result, Store, StoreError, CASCADE_CHUNK};

/// Why a subscription could not be inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SubscribeError {
    /// No live registration with that id.
    NoRegistration,
    /// The subscriber is not a live account.
    NoSubscriber,
}

/// The next subscriptions a fan-out step serves.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionBatch {
    /// The subscriptions, with their `subscriptions_by_registration` keys.
    pub items: Vec<(Vec<u8>, NewDelivery)>,
    /// True when the registration has more after them.
    pub more: bool,
}

impl Store {
    /// Inserts the subscriptions of `batch`, in order, in one transaction; answers the
    /// outcome of each. A subscription is inserted if its registration is live, and — when
    /// the subscriber's account is stored here too (the flag beside it) — the subscriber as
    /// well. One transaction for the batch, not one each: a popular registration's
    /// subscribes arrive together, and a transaction's fixed cost is much of a subscribe's.
    pub fn insert_subscriptions(
        &self,
        batch: &[(Subscription, bool)],
    ) -> Result<Vec<Result<(), SubscribeError>>> {
        let t = self.t();
        let records = batch
            .iter()
            .map(|(s, _)| encode_compact(s))
            .collect::<Result<Vec<_>>>()?;
        let outcome = (
            &t.accounts,
            &t.registrations,
            &t.subscriptions,
            &t.subscriptions_by_epoch,
            &t.subscriptions_by_registration,
            &t.subscriptions_by_subscriber,
        )
            .transaction(|(accounts, regs, subs, by_epoch, by_reg, by_sub)| {
                let mut outcomes = Vec::with_capacity(batch.len());
                let mut live_registrations: Vec<Uuid> = Vec::new();
                for ((s, subscriber_local), record) in batch.iter().zip(&records) {
                    if !live_registrations.contains(&s.registration_id) {
                        match regs.get(s.registration_id.as_bytes())? {
                            Some(r) if !tx_decode::<Registration>(&r)?.deleting => {
                                live_registrations.push(s.registration_id);
                            }
                            _ => {
                                outcomes.push(Err(SubscribeError::NoRegistration));
                                continue;
                            }
                        }
                    }
                    if *subscriber_local {
                        match accounts.get(s.account_id.as_bytes())? {
                            Some(a) if !tx_decode::<Account>(&a)?.deleting => {}
                            _ => {
                                outcomes.push(Err(SubscribeError::NoSubscriber));
                                continue;
                            }
                        }
                    }
                    subs.insert(s.id.as_bytes(), record.as_slice())?;
                    by_epoch.insert(&epoch_key(s.epoch_us, &s.id), &[])?;
                    by_reg.insert(
                        owned_key(&s.registration_id, s.epoch_us, &s.id),
                        s.account_id.as_bytes(),
                    )?;
                    by_sub.insert(
                        owned_key(&s.account_id, s.epoch_us, &s.id),
                        s.registration_id.as_bytes(),
                    )?;
                    outcomes.push(Ok(()));
                }
                Ok(outcomes)
            })
            .map_err(StoreError::from)?;
        Ok(outcome)
    }

    /// The subscription with `id`.
    pub fn subscription(&self, id: &Uuid) -> Result<Option<Subscription>> {
        self.t()
            .subscriptions
            .get(id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Whether the subscription `id` exists (without decoding it).
    pub fn subscription_exists(&self, id: &Uuid) -> Result<bool> {
        Ok(self.t().subscriptions.contains_key(id.as_bytes())?)
    }

    /// How many times subscriptions were deleted since the process started. A subscription
    /// read while this was `n` still exists while it is `n`, so a first attempt whose
    /// fan-out step read its subscription skips the existence check (a read per attempt).
    pub fn subscription_deletions(&self) -> u64 {
        self.inner.subscription_deletions.load(Ordering::Acquire)
    }

    /// Removes subscriptions and all their index entries, atomically.
    pub fn delete_subscriptions(&self, subs: &[Subscription]) -> Result<()> {
        let t = self.t();
        (
            &t.subscriptions,
            &t.subscriptions_by_epoch,
            &t.subscriptions_by_registration,
            &t.subscriptions_by_subscriber,
        )
            .transaction(|(records, by_epoch, by_reg, by_sub)| {
                for s in subs {
                    records.remove(s.id.as_bytes())?;
                    by_epoch.remove(&epoch_key(s.epoch_us, &s.id))?;
                    by_reg.remove(owned_key(&s.registration_id, s.epoch_us, &s.id))?;
                    by_sub.remove(owned_key(&s.account_id, s.epoch_us, &s.id))?;
                }
                Ok(())
            })
            .map_err(StoreError::from)?;
        self.inner
            .subscription_deletions
            .fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Removes every subscription listed under `prefix` of `index`, in chunks.
    fn delete_subscriptions_under(&self, index: &sled::Tree, prefix: &[u8]) -> Result<u64> {
        let mut removed = 0;
        loop {
            let mut chunk = Vec::with_capacity(CASCADE_CHUNK);
            for key in index.scan_prefix(prefix).keys().take(CASCADE_CHUNK) {
                let key = key?;
                match self.subscription(&trailing_id(&key)?)? {
                    Some(s) => chunk.push(s),
                    // An index entry without its record: drop the stray entry.
                    None => drop(index.remove(key)?),
                }
            }
            if chunk.is_empty() {
                return Ok(removed);
            }
            self.delete_subscriptions(&chunk)?;
            removed += chunk.len() as u64;
        }
    }

    /// Removes every subscription to `registration`; returns how many.
    pub fn delete_subscriptions_of_registration(&self, registration: &Uuid) -> Result<u64> {
        self.delete_subscriptions_under(
            &self.t().subscriptions_by_registration,
            registration.as_bytes(),
        )
    }

    /// Removes every subscription held by `account`; returns how many.
    pub fn delete_subscriptions_of_subscriber(&self, account: &Uuid) -> Result<u64> {
        self.delete_subscriptions_under(&self.t().subscriptions_by_subscriber, account.as_bytes())
    }

    /// Every subscription held by `account`.
    pub fn subscriptions_of_subscriber(&self, account: &Uuid) -> Result<Vec<Subscription>> {
        let mut out = Vec::new();
        for key in self
            .t()
            .subscriptions_by_subscriber
            .scan_prefix(account.as_bytes())
            .keys()
        {
            if let Some(s) = self.subscription(&trailing_id(&key?)?)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Removes every subscription; returns how many.
    pub fn delete_all_subscriptions(&self) -> Result<u64> {
        self.delete_subscriptions_under(&self.t().subscriptions_by_epoch, &[])
    }

    /// A page of every subscription, oldest first.
    pub fn list_subscriptions(&self, req: PageRequest) -> Result<Page<Subscription>> {
        let ids = self.page_index(&self.t().subscriptions_by_epoch, &[], req)?;
        Ok(Page::new(
            req,
            self.load_all(ids, |id| self.subscription(id))?,
        ))
    }

    /// A page of `account`'s subscriptions, oldest first.
    pub fn list_subscriber_subscriptions(
        &self,
        account: &Uuid,
        req: PageRequest,
    ) -> Result<Page<Subscription>> {
        let ids = self.page_index(
            &self.t().subscriptions_by_subscriber,
            account.as_bytes(),
            req,
        )?;
        Ok(Page::new(
            req,
            self.load_all(ids, |id| self.subscription(id))?,
        ))
    }

    /// `(subscription id, subscriber id)` of the subscriptions to `registration`, oldest first.
    pub fn subscribers_of(&self, registration: &Uuid) -> Result<Vec<(Uuid, Uuid)>> {
        self.t()
            .subscriptions_by_registration
            .scan_prefix(registration.as_bytes())
            .map(|item| {
                let (k, v) = item?;
                Ok((trailing_id(&k)?, read_uuid(&v, 0)?))
            })
            .collect()
    }

    /// The next `limit` subscriptions of `registration` after `after` (index keys included),
    /// and whether more follow.
    pub fn subscription_batch(
        &self,
        registration: &Uuid,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<SubscriptionBatch> {
        let prefix = registration.as_bytes().to_vec();
        let index = &self.t().subscriptions_by_registration;
        let range = match after {
            Some(after) => {
                let mut start = after.to_vec();
                start.push(0);
                index.range(start..)
            }
            None => index.range(prefix.clone()..),
        };
        let mut out = Vec::with_capacity(limit);
        for item in range {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                return Ok(SubscriptionBatch {
                    items: out,
                    more: false,
                });
            }
            if out.len() == limit {
                return Ok(SubscriptionBatch {
                    items: out,
                    more: true,
                });
            }
            out.push((
                k.to_vec(),
                NewDelivery {
                    subscription_epoch_us: read_u64(&k, 16)?,
                    subscription_id: read_uuid(&k, 24)?,
                    account_id: read_uuid(&v, 0)?,
                },
            ));
        }
        Ok(SubscriptionBatch {
            items: out,
            more: false,
        })
    }
}
