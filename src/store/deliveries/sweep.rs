//! The retention sweep: removes finished deliveries older than the retention period, from
//! records and settled rows. Pending deliveries stay, however old.

use super::legacy::{decode_deliveries, decode_delivery};
use super::types::DeliveryState;
use crate::store::keys::{RECORD, SETTLED};
use crate::store::{Result, Store};

impl Store {
    /// Removes finished deliveries that ended before `cutoff_us`; pending ones are kept.
    pub fn sweep_deliveries(&self, cutoff_us: u64) -> Result<u64> {
        let mut removed = self.sweep_settled(cutoff_us)?;
        let mut batch = sled::Batch::default();
        for item in self.t().deliveries.scan_prefix([RECORD]) {
            let (k, v) = item?;
            let d = decode_delivery(&v)?;
            if d.state != DeliveryState::Pending && d.finished_us.is_some_and(|f| f < cutoff_us) {
                batch.remove(k);
                removed += 1;
            }
        }
        self.t().deliveries.apply_batch(batch)?;
        Ok(removed)
    }

    /// Removes the settled rows whose deliveries all finished before `cutoff_us`; returns
    /// how many deliveries went.
    fn sweep_settled(&self, cutoff_us: u64) -> Result<u64> {
        let mut removed = 0;
        let mut batch = sled::Batch::default();
        for row in self.t().deliveries.scan_prefix([SETTLED]) {
            let (key, value) = row?;
            let records = decode_deliveries(&value)?;
            if records
                .iter()
                .all(|d| d.finished_us.is_some_and(|f| f < cutoff_us))
            {
                batch.remove(key);
                removed += records.len() as u64;
            }
        }
        self.t().deliveries.apply_batch(batch)?;
        Ok(removed)
    }
}
