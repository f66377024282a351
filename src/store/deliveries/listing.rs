//! Listing and counting a trigger's deliveries.
//!
//! A delivery is in one of three places: its record (`r`), a settled row (`s`), or, before
//! its first outcome, only in its pending batch (`b`). All three are keyed by the record
//! key (or the key of a batch's first delivery), so a listing merges them in record-key
//! order, which is subscription order.

use uuid::Uuid;

use super::legacy::decode_delivery;
use super::types::{Delivery, DeliveryCounts, DeliveryState};
use crate::store::keys::{prefixed, RECORD};
use crate::store::pagination::{Page, PageRequest};
use crate::store::{Result, Store};

/// Collects one page of rows offered in order, decoding only the rows it keeps.
struct PageBuilder {
    skip: usize,
    take: usize,
    seen: usize,
    items: Vec<Delivery>,
}

impl PageBuilder {
    /// Offers the next row; true once the page is full.
    fn offer(&mut self, row: impl FnOnce() -> Result<Delivery>) -> Result<bool> {
        if self.items.len() < self.take && self.seen >= self.skip {
            self.items.push(row()?);
        }
        self.seen = self.seen.saturating_add(1);
        Ok(self.items.len() >= self.take)
    }
}

impl Store {
    /// `triggered`'s deliveries to the subscribers `mine` accepts without a record of
    /// their own, in record-key order: those settled by their first attempt and those
    /// waiting for it.
    fn unrecorded_of<'m>(
        &self,
        triggered: &Uuid,
        mine: &'m dyn Fn(&Uuid) -> bool,
    ) -> Result<impl Iterator<Item = Result<(Vec<u8>, Delivery)>> + 'm> {
        let mut settled = self
            .settled_in_order(triggered)
            .filter(move |s| s.as_ref().map_or(true, |(_, d)| mine(&d.account_id)))
            .peekable();
        let mut waiting = self.unattempted_of(triggered, mine)?.into_iter().peekable();
        // Both are sorted and never share a key: merge them.
        Ok(std::iter::from_fn(move || {
            let settled_first = match (settled.peek(), waiting.peek()) {
                (Some(Ok((s, _))), Some((w, _))) => s < w,
                (Some(_), _) => true,
                (None, _) => false,
            };
            if settled_first {
                settled.next()
            } else {
                waiting.next().map(Ok)
            }
        }))
    }

    /// A page of `triggered`'s deliveries to the subscribers `mine` accepts (replicated,
    /// those of the groups this node leads), in subscription order (those settled by or
    /// waiting for their first attempt included).
    pub fn list_deliveries(
        &self,
        triggered: &Uuid,
        req: PageRequest,
        mine: &dyn Fn(&Uuid) -> bool,
    ) -> Result<Page<Delivery>> {
        let mut page = PageBuilder {
            skip: usize::try_from(req.start).unwrap_or(usize::MAX),
            take: usize::try_from(req.limit).unwrap_or(usize::MAX),
            seen: 0,
            items: Vec::new(),
        };
        let mut unrecorded = self.unrecorded_of(triggered, mine)?.peekable();
        let records = self
            .t()
            .deliveries
            .scan_prefix(prefixed(RECORD, triggered.as_bytes()));
        // Records and the others never share a key: merge them in key order (an error
        // comes out first).
        'records: for record in records {
            let (key, value) = record?;
            while let Some(other) =
                unrecorded.next_if(|o| o.as_ref().map_or(true, |(k, _)| k.as_slice() < &*key))
            {
                let (_, d) = other?;
                if page.offer(|| Ok(d))? {
                    break 'records;
                }
            }
            let d = decode_delivery(&value)?;
            if mine(&d.account_id) && page.offer(|| Ok(d))? {
                break;
            }
        }
        if page.items.len() < page.take {
            for other in unrecorded {
                let (_, d) = other?;
                if page.offer(|| Ok(d))? {
                    break;
                }
            }
        }
        Ok(Page::new(req, page.items))
    }

    /// Counts by state of `triggered`'s deliveries to the subscribers `mine` accepts.
    pub fn delivery_counts(
        &self,
        triggered: &Uuid,
        mine: &dyn Fn(&Uuid) -> bool,
    ) -> Result<DeliveryCounts> {
        let mut counts = DeliveryCounts {
            pending: self.unattempted_of(triggered, mine)?.len() as u64,
            succeeded: self.settled_count(triggered, mine)?,
            ..DeliveryCounts::default()
        };
        for v in self
            .t()
            .deliveries
            .scan_prefix(prefixed(RECORD, triggered.as_bytes()))
            .values()
        {
            let d = decode_delivery(&v?)?;
            if !mine(&d.account_id) {
                continue;
            }
            match d.state {
                DeliveryState::Pending => counts.pending += 1,
                DeliveryState::Succeeded => counts.succeeded += 1,
                DeliveryState::Failed => counts.failed += 1,
                DeliveryState::Skipped => counts.skipped += 1,
                DeliveryState::Cancelled => counts.cancelled += 1,
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{in_a, item, item_in, page, settled};
    use super::super::types::Scheduled;
    use super::*;
    use crate::store::keys::BATCH;
    use crate::store::tests::temp_store;

    #[test]
    fn listings_merge_settled_rows_records_and_waiting_deliveries_in_order() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let first: Vec<_> = (1..=4).map(|n| (item(n), false)).collect();
        let second: Vec<_> = (5..=8).map(|n| (item(n), false)).collect();
        let mut entries = s.accept_handed_over(&t, &r, &first, 10).unwrap();
        entries.extend(s.accept_handed_over(&t, &r, &second, 10).unwrap());
        let outcome = |i: usize, status: u16| settled(&entries[i], status);
        // Several rows per batch, each out of order; one failure (a record); 3 waits.
        s.record_outcomes(&[outcome(6, 200), outcome(1, 200)], 20)
            .unwrap();
        s.record_outcomes(&[outcome(0, 200), outcome(4, 500), outcome(7, 200)], 21)
            .unwrap();
        let expected = [
            DeliveryState::Succeeded,
            DeliveryState::Succeeded,
            DeliveryState::Pending,
            DeliveryState::Pending,
            DeliveryState::Failed,
            DeliveryState::Pending,
            DeliveryState::Succeeded,
            DeliveryState::Succeeded,
        ];
        for limit in [1, 2, 3, 8] {
            let mut listed = Vec::new();
            for start in (0..8).step_by(limit) {
                listed.extend(page(&s, &t, start as u64, limit as u64));
            }
            let epochs: Vec<u64> = listed.iter().map(|d| d.subscription_epoch_us).collect();
            assert_eq!(epochs, (1..=8).collect::<Vec<_>>(), "pages of {limit}");
            let states: Vec<_> = listed.iter().map(|d| d.state).collect();
            assert_eq!(states, expected, "pages of {limit}");
        }
        let counts = s.delivery_counts(&t, &|_| true).unwrap();
        assert_eq!((counts.succeeded, counts.failed, counts.pending), (4, 1, 3));
        assert_eq!(s.resume_first_attempts(&|_| true).unwrap().len(), 3);
    }

    #[test]
    fn listings_counts_and_resumes_keep_to_the_subscribers_asked_for() {
        let (_d, s) = temp_store();
        let (t, r) = (Uuid::new_v4(), Uuid::new_v4());
        let batch = |a: bool, epochs: std::ops::RangeInclusive<u64>| -> Vec<_> {
            epochs.map(|n| (item_in(n, a), false)).collect()
        };
        let a = s
            .accept_handed_over(&t, &r, &batch(true, 1..=4), 10)
            .unwrap();
        let b = s
            .accept_handed_over(&t, &r, &batch(false, 5..=8), 10)
            .unwrap();
        // Group B's batch row outlives its outcomes, as on a node that did not open it.
        let Scheduled::Batch { key, .. } = &b[0].scheduled else {
            panic!("a first attempt");
        };
        s.inner.open_batches.forget([key.as_slice()]);
        let mut outcomes = vec![settled(&a[0], 200), settled(&a[1], 500)];
        outcomes.push(settled(&b[0], 200));
        outcomes.extend(b[1..].iter().map(|e| settled(e, 500)));
        s.record_outcomes(&outcomes, 20).unwrap();

        let in_b = |id: &Uuid| !in_a(id);
        let counts = s.delivery_counts(&t, &in_a).unwrap();
        let expected = (1, 1, 2);
        assert_eq!((counts.succeeded, counts.failed, counts.pending), expected);
        let counts = s.delivery_counts(&t, &in_b).unwrap();
        assert_eq!((counts.succeeded, counts.failed, counts.pending), (1, 3, 0));
        for (mine, epochs) in [(&in_a as &dyn Fn(&Uuid) -> bool, 1..=4), (&in_b, 5..=8)] {
            for limit in [1, 3, 10] {
                let mut listed = Vec::new();
                for start in (0..4).step_by(limit) {
                    let req = PageRequest {
                        start: start as u64,
                        limit: limit as u64,
                    };
                    listed.extend(s.list_deliveries(&t, req, mine).unwrap().items);
                }
                let got: Vec<u64> = listed.iter().map(|d| d.subscription_epoch_us).collect();
                assert_eq!(got, epochs.clone().collect::<Vec<_>>(), "pages of {limit}");
            }
        }

        let batches = || s.t().deliveries.scan_prefix([BATCH]).count();
        assert_eq!(batches(), 2);
        let resumed = s.resume_first_attempts(&in_a).unwrap();
        assert_eq!(resumed, a[2..].to_vec());
        assert_eq!(batches(), 2, "group B's done batch is left to its leader");
        assert!(s.resume_first_attempts(&in_b).unwrap().is_empty());
        assert_eq!(batches(), 1);
    }
}
