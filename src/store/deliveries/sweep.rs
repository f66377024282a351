//! The retention sweep: removes finished deliveries older than the retention period, from
//! records and settled rows. Pending deliveries stay, however old.
//!
//! Replicated, a group's leader prepares the removals of its subscribers' rows
//! ([`Store::prepare_sweep_deliveries`]) and its log writes them on every voter.

use uuid::Uuid;

use super::legacy::decode_delivery;
use super::settled_codec::decode_settled;
use super::types::DeliveryState;
use super::DeliveryRow;
use crate::store::keys::{RECORD, SETTLED};
use crate::store::{Result, Store};

impl Store {
    /// Removes finished deliveries that ended before `cutoff_us`; pending ones are kept.
    pub fn sweep_deliveries(&self, cutoff_us: u64) -> Result<u64> {
        let (rows, removed) = self.prepare_sweep_deliveries(cutoff_us, &|_| true)?;
        self.apply_delivery_rows(&rows)?;
        Ok(removed)
    }

    /// The removals of [`Self::sweep_deliveries`] among the rows of the subscribers `mine`
    /// accepts (a settled row by its first delivery's; an empty one is no group's and
    /// goes), unwritten, and how many deliveries they remove.
    pub fn prepare_sweep_deliveries(
        &self,
        cutoff_us: u64,
        mine: &dyn Fn(&Uuid) -> bool,
    ) -> Result<(Vec<DeliveryRow>, u64)> {
        let mut rows = Vec::new();
        let mut removed = 0;
        for row in self.t().deliveries.scan_prefix([SETTLED]) {
            let (key, value) = row?;
            let records = decode_settled(&value)?;
            let all_old = records
                .iter()
                .all(|d| d.finished_us.is_some_and(|f| f < cutoff_us));
            if all_old && records.first().is_none_or(|d| mine(&d.account_id)) {
                rows.push((key.to_vec(), None));
                removed += records.len() as u64;
            }
        }
        for item in self.t().deliveries.scan_prefix([RECORD]) {
            let (k, v) = item?;
            let d = decode_delivery(&v)?;
            let old =
                d.state != DeliveryState::Pending && d.finished_us.is_some_and(|f| f < cutoff_us);
            if old && mine(&d.account_id) {
                rows.push((k.to_vec(), None));
                removed += 1;
            }
        }
        Ok((rows, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{in_a, item_in, settled};
    use super::*;
    use crate::store::tests::temp_store;

    #[test]
    fn a_prepared_sweep_removes_only_the_rows_of_the_subscribers_asked_for() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let mut entries = Vec::new();
        for (a, epochs) in [(true, 1..=2), (false, 3..=4)] {
            let items: Vec<_> = epochs.map(|n| (item_in(n, a), false)).collect();
            entries.extend(s.accept_handed_over(&t, &r, &items, 1).unwrap());
        }
        let outcomes: Vec<_> = (entries.iter().zip([200, 500, 200, 500]))
            .map(|(e, status)| settled(e, status))
            .collect();
        s.record_outcomes(&outcomes, 10).unwrap();
        let (rows, removed) = s.prepare_sweep_deliveries(11, &in_a).unwrap();
        assert_eq!((rows.len(), removed), (2, 2), "a settled row and a record");
        assert!(rows.iter().all(|(_, v)| v.is_none()));
        s.apply_delivery_rows(&rows).unwrap();
        assert_eq!(s.delivery_counts(&t, &in_a).unwrap().succeeded, 0);
        let counts = s.delivery_counts(&t, &|id| !in_a(id)).unwrap();
        assert_eq!((counts.succeeded, counts.failed), (1, 1));
        assert_eq!(s.sweep_deliveries(11).unwrap(), 2);
    }
}
