//! Stopped endpoints (prefix `g`): a subscriber whose endpoint answered `410 Gone` gets no
//! more delivery POSTs until its owner changes or re-verifies the endpoint
//! (`PATCH /v1/account`, which calls [`Store::resume_deliveries`]).
//!
//! The mark is written with the outcome that saw the 410, in the same batch; the delivery
//! targets cache is told, so the next attempt sees it.

use uuid::Uuid;

use crate::store::keys::{failed_count_key, gone_key, read_u64};
use crate::store::{Result, Store};

impl Store {
    /// When the account's endpoint answered `410 Gone` (Unix µs), if deliveries to it are
    /// stopped.
    pub fn deliveries_stopped_us(&self, account: &Uuid) -> Result<Option<u64>> {
        match self.t().deliveries.get(gone_key(account))? {
            Some(v) => Ok(Some(read_u64(&v, 0)?)),
            None => Ok(None),
        }
    }

    /// Starts delivering to the account again after its endpoint was changed or
    /// re-verified: its `failed_count` goes back to 0 and a `410 Gone` stop is lifted.
    pub fn resume_deliveries(&self, account: &Uuid) -> Result<()> {
        let _counts = self.lock_counts();
        let mut batch = sled::Batch::default();
        batch.remove(&failed_count_key(account));
        batch.remove(&gone_key(account));
        self.t().deliveries.apply_batch(batch)?;
        self.inner.targets.invalidate(account);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{attempt, item};
    use super::super::types::{DeliveryState, FailedCountChange, Outcome};
    use crate::store::tests::temp_store;
    use uuid::Uuid;

    #[test]
    fn a_gone_outcome_stops_the_account_until_resumed() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let it = item(1);
        let due = s
            .accept_handed_over(&t, &r, &[(it.clone(), false)], 5)
            .unwrap()
            .remove(0);
        assert_eq!(s.deliveries_stopped_us(&it.account_id).unwrap(), None);
        s.record_outcomes(
            &[Outcome {
                due,
                attempt: Some(attempt(410)),
                state: DeliveryState::Failed,
                next_due_us: None,
                failed_count: FailedCountChange::Increment,
                gone: true,
            }],
            7,
        )
        .unwrap();
        assert_eq!(s.deliveries_stopped_us(&it.account_id).unwrap(), Some(7));
        assert_eq!(s.failed_count(&it.account_id).unwrap(), 1);
        s.resume_deliveries(&it.account_id).unwrap();
        assert_eq!(s.deliveries_stopped_us(&it.account_id).unwrap(), None);
        assert_eq!(s.failed_count(&it.account_id).unwrap(), 0);
    }
}
