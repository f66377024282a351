//! The `registrations` tree and its `registrations_by_epoch` / `registrations_by_account`
//! indexes.

use sled::Transactional;
use uuid::Uuid;

use super::keys::{epoch_key, owned_key, trailing_id};
use super::pagination::{Page, PageRequest};
use super::records::{decode, encode, tx_decode, tx_encode, Account, Registration};
use super::{Result, Store, StoreError};

impl Store {
    /// Inserts a registration if its owner is a live account; returns false otherwise.
    pub fn insert_registration(&self, r: &Registration) -> Result<bool> {
        let t = self.t();
        let record = encode(r)?;
        let inserted = (
            &t.accounts,
            &t.registrations,
            &t.registrations_by_epoch,
            &t.registrations_by_account,
        )
            .transaction(|(accounts, regs, by_epoch, by_account)| {
                let Some(owner) = accounts.get(r.account_id.as_bytes())? else {
                    return Ok(false);
                };
                let owner: Account = tx_decode(&owner)?;
                if owner.deleting {
                    return Ok(false);
                }
                regs.insert(r.id.as_bytes(), record.as_slice())?;
                by_epoch.insert(&epoch_key(r.epoch_us, &r.id), &[])?;
                by_account.insert(owned_key(&r.account_id, r.epoch_us, &r.id), &[])?;
                Ok(true)
            })
            .map_err(StoreError::from)?;
        Ok(inserted)
    }

    /// The live registration with `id`.
    pub fn registration(&self, id: &Uuid) -> Result<Option<Registration>> {
        Ok(self
            .t()
            .registrations
            .get(id.as_bytes())?
            .map(|v| decode::<Registration>(&v))
            .transpose()?
            .filter(|r| !r.deleting))
    }

    /// Rewrites an existing registration record.
    pub fn update_registration(&self, r: &Registration) -> Result<()> {
        self.t().registrations.insert(r.id.as_bytes(), encode(r)?)?;
        Ok(())
    }

    /// Tombstones the registration: gone from reads and listings; `None` if not live.
    pub fn begin_registration_delete(&self, id: &Uuid) -> Result<Option<Registration>> {
        let t = self.t();
        let found = (
            &t.registrations,
            &t.registrations_by_epoch,
            &t.registrations_by_account,
        )
            .transaction(|(regs, by_epoch, by_account)| {
                let Some(bytes) = regs.get(id.as_bytes())? else {
                    return Ok(None);
                };
                let mut r: Registration = tx_decode(&bytes)?;
                if r.deleting {
                    return Ok(None);
                }
                r.deleting = true;
                regs.insert(id.as_bytes(), tx_encode(&r)?)?;
                by_epoch.remove(&epoch_key(r.epoch_us, id))?;
                by_account.remove(owned_key(&r.account_id, r.epoch_us, id))?;
                Ok(Some(r))
            })
            .map_err(StoreError::from)?;
        Ok(found)
    }

    /// Removes a tombstoned registration's subscriptions, then its record.
    pub fn finish_registration_delete(&self, r: &Registration) -> Result<u64> {
        let removed = self.delete_subscriptions_of_registration(&r.id)?;
        self.t().registrations.remove(r.id.as_bytes())?;
        Ok(removed)
    }

    /// Registrations whose cascade delete was interrupted.
    pub fn registrations_being_deleted(&self) -> Result<Vec<Registration>> {
        let mut out = Vec::new();
        for item in self.t().registrations.iter() {
            let (_, v) = item?;
            let r: Registration = decode(&v)?;
            if r.deleting {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// A page of every live registration, oldest first.
    pub fn list_registrations(&self, req: PageRequest) -> Result<Page<Registration>> {
        let ids = self.page_index(&self.t().registrations_by_epoch, &[], req)?;
        Ok(Page::new(
            req,
            self.load_all(ids, |id| self.registration(id))?,
        ))
    }

    /// A page of `account`'s live registrations, oldest first.
    pub fn list_account_registrations(
        &self,
        account: &Uuid,
        req: PageRequest,
    ) -> Result<Page<Registration>> {
        let ids = self.page_index(&self.t().registrations_by_account, account.as_bytes(), req)?;
        Ok(Page::new(
            req,
            self.load_all(ids, |id| self.registration(id))?,
        ))
    }

    /// Ids of `account`'s live registrations.
    pub fn registration_ids_of(&self, account: &Uuid) -> Result<Vec<Uuid>> {
        self.t()
            .registrations_by_account
            .scan_prefix(account.as_bytes())
            .keys()
            .map(|k| trailing_id(&k?))
            .collect()
    }

    /// Ids of every live registration.
    pub fn registration_ids(&self) -> Result<Vec<Uuid>> {
        self.t()
            .registrations_by_epoch
            .iter()
            .keys()
            .map(|k| trailing_id(&k?))
            .collect()
    }
}
