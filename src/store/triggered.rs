//! The `triggered` tree and its `triggered_by_epoch` index.

use sled::Transactional;
use uuid::Uuid;

use super::pagination::{Page, PageRequest};
use super::records::{decode, encode, Triggered};
use super::{epoch_key, Result, Store, StoreError};

impl Store {
    /// Records a trigger.
    pub fn insert_triggered(&self, tr: &Triggered) -> Result<()> {
        let t = self.t();
        let record = encode(tr)?;
        (&t.triggered, &t.triggered_by_epoch)
            .transaction(|(records, by_epoch)| {
                records.insert(tr.id.as_bytes(), record.as_slice())?;
                by_epoch.insert(&epoch_key(tr.epoch_us, &tr.id), &[])?;
                Ok(())
            })
            .map_err(StoreError::from)
    }

    /// The triggered record with `id`.
    pub fn triggered(&self, id: &Uuid) -> Result<Option<Triggered>> {
        self.t()
            .triggered
            .get(id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// A page of every triggered record, oldest first.
    pub fn list_triggered(&self, req: PageRequest) -> Result<Page<Triggered>> {
        let ids = self.page_index(&self.t().triggered_by_epoch, &[], req)?;
        Ok(Page::new(req, self.load_all(ids, |id| self.triggered(id))?))
    }
}
