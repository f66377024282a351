//! The `accounts` tree and its `usernames` and `accounts_by_epoch` indexes.

use sled::Transactional;
use uuid::Uuid;

use super::keys::{epoch_key, failed_count_key, gone_key, trailing_id};
use super::pagination::{Page, PageRequest};
use super::records::{decode, encode, tx_decode, tx_encode, Account};
use super::{Result, Store, StoreError};

/// Why an account could not be inserted.
#[derive(Debug, thiserror::Error)]
pub enum NewAccountError {
    /// The username belongs to another account.
    #[error("Username already exists")]
    UsernameTaken,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Inserts a new account unless its username is taken (checked atomically).
    pub fn insert_account(&self, account: &Account) -> Result<(), NewAccountError> {
        let t = self.t();
        let record = encode(account)?;
        let inserted = (&t.accounts, &t.usernames, &t.accounts_by_epoch)
            .transaction(|(accounts, usernames, by_epoch)| {
                if usernames.get(account.username.as_bytes())?.is_some() {
                    return Ok(false);
                }
                usernames.insert(account.username.as_bytes(), account.id.as_bytes())?;
                accounts.insert(account.id.as_bytes(), record.as_slice())?;
                by_epoch.insert(&epoch_key(account.epoch_us, &account.id), &[])?;
                Ok(true)
            })
            .map_err(StoreError::from)?;
        if inserted {
            Ok(())
        } else {
            Err(NewAccountError::UsernameTaken)
        }
    }

    /// The live account with `id` (an account being deleted is already gone).
    pub fn account(&self, id: &Uuid) -> Result<Option<Account>> {
        Ok(self.account_any(id)?.filter(|a| !a.deleting))
    }

    /// The account with `id`, tombstoned or not.
    pub(super) fn account_any(&self, id: &Uuid) -> Result<Option<Account>> {
        let Some(bytes) = self.t().accounts.get(id.as_bytes())? else {
            return Ok(None);
        };
        let mut account: Account = decode(&bytes)?;
        account.failed_count = self.failed_count(id)?;
        account.deliveries_stopped_us = self.deliveries_stopped_us(id)?;
        Ok(Some(account))
    }

    /// The live account named `username`.
    pub fn account_by_username(&self, username: &str) -> Result<Option<Account>> {
        match self.t().usernames.get(username.as_bytes())? {
            Some(id) => {
                let id = Uuid::from_slice(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                self.account(&id)
            }
            None => Ok(None),
        }
    }

    /// True when `username` belongs to an account (including one being deleted).
    pub fn username_taken(&self, username: &str) -> Result<bool> {
        Ok(self.t().usernames.contains_key(username.as_bytes())?)
    }

    /// Rewrites an existing account record (the username never changes).
    pub fn update_account(&self, account: &Account) -> Result<()> {
        self.t()
            .accounts
            .insert(account.id.as_bytes(), encode(account)?)?;
        self.inner.targets.invalidate(&account.id);
        Ok(())
    }

    /// Tombstones the account: it disappears from reads and listings at once.
    ///
    /// Returns the account, or `None` when there is no live account with `id`.
    pub fn begin_account_delete(&self, id: &Uuid) -> Result<Option<Account>> {
        let t = self.t();
        let found = (&t.accounts, &t.accounts_by_epoch)
            .transaction(|(accounts, by_epoch)| {
                let Some(bytes) = accounts.get(id.as_bytes())? else {
                    return Ok(None);
                };
                let mut account: Account = tx_decode(&bytes)?;
                if account.deleting {
                    return Ok(None);
                }
                account.deleting = true;
                accounts.insert(id.as_bytes(), tx_encode(&account)?)?;
                by_epoch.remove(&epoch_key(account.epoch_us, id))?;
                Ok(Some(account))
            })
            .map_err(StoreError::from)?;
        self.inner.targets.invalidate(id);
        Ok(found)
    }

    /// Removes a tombstoned account's record and username (the last step of its cascade).
    pub fn finish_account_delete(&self, account: &Account) -> Result<()> {
        let t = self.t();
        let _counts = self.lock_counts();
        (
            &t.accounts,
            &t.usernames,
            &t.accounts_by_epoch,
            &t.deliveries,
        )
            .transaction(|(accounts, usernames, by_epoch, deliveries)| {
                accounts.remove(account.id.as_bytes())?;
                deliveries.remove(&failed_count_key(&account.id))?;
                deliveries.remove(&gone_key(&account.id))?;
                if usernames.get(account.username.as_bytes())?.as_deref()
                    == Some(account.id.as_bytes().as_slice())
                {
                    usernames.remove(account.username.as_bytes())?;
                }
                by_epoch.remove(&epoch_key(account.epoch_us, &account.id))?;
                Ok(())
            })
            .map_err(StoreError::from)?;
        self.inner.targets.invalidate(&account.id);
        Ok(())
    }

    /// Accounts whose cascade delete was interrupted (to be finished at start-up).
    pub fn accounts_being_deleted(&self) -> Result<Vec<Account>> {
        let mut out = Vec::new();
        for item in self.t().accounts.iter() {
            let (_, v) = item?;
            let account: Account = decode(&v)?;
            if account.deleting {
                out.push(account);
            }
        }
        Ok(out)
    }

    /// A page of live accounts, oldest first.
    pub fn list_accounts(&self, req: PageRequest) -> Result<Page<Account>> {
        let ids = self.page_index(&self.t().accounts_by_epoch, &[], req)?;
        let accounts = self.load_all(ids, |id| self.account(id))?;
        Ok(Page::new(req, accounts))
    }

    /// Ids of every live account, oldest first, with their admin flag.
    pub fn account_ids(&self) -> Result<Vec<(Uuid, bool)>> {
        let mut out = Vec::new();
        for key in self.t().accounts_by_epoch.iter().keys() {
            let id = trailing_id(&key?)?;
            if let Some(a) = self.account(&id)? {
                out.push((id, a.is_admin));
            }
        }
        Ok(out)
    }

    /// How many live admin accounts exist.
    pub fn admin_count(&self) -> Result<usize> {
        Ok(self
            .account_ids()?
            .iter()
            .filter(|(_, admin)| *admin)
            .count())
    }

    /// Walks `start..start+limit` of an index (optionally under `prefix`) and returns the ids.
    pub(super) fn page_index(
        &self,
        index: &sled::Tree,
        prefix: &[u8],
        req: PageRequest,
    ) -> Result<Vec<Uuid>> {
        // usize is 64-bit on every supported target; saturate rather than wrap elsewhere.
        let skip = usize::try_from(req.start).unwrap_or(usize::MAX);
        let take = usize::try_from(req.limit).unwrap_or(usize::MAX);
        index
            .scan_prefix(prefix)
            .keys()
            .skip(skip)
            .take(take)
            .map(|k| trailing_id(&k?))
            .collect()
    }

    /// Loads the records of `ids`, skipping those deleted meanwhile.
    pub(super) fn load_all<T>(
        &self,
        ids: Vec<Uuid>,
        load: impl Fn(&Uuid) -> Result<Option<T>>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(r) = load(id)? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::tests::temp_store;
    use super::*;

    pub(crate) fn account(store: &Store, name: &str) -> Account {
        Account {
            id: Uuid::new_v4(),
            epoch_us: store.next_epoch_us(),
            username: name.into(),
            endpoint: "http://127.0.0.1:1/".into(),
            is_admin: false,
            failed_count: 0,
            api_key_hash: "h".into(),
            secret_key: "s".into(),
            pending_key: None,
            key_resets_us: vec![],
            deleting: false,
            deliveries_stopped_us: None,
            previous_secret: None,
        }
    }

    #[test]
    fn usernames_are_unique() {
        let (_d, s) = temp_store();
        s.insert_account(&account(&s, "a")).unwrap();
        assert!(matches!(
            s.insert_account(&account(&s, "a")),
            Err(NewAccountError::UsernameTaken)
        ));
    }

    #[test]
    fn tombstoned_account_vanishes_from_reads_and_pages() {
        let (_d, s) = temp_store();
        let a = account(&s, "a");
        let b = account(&s, "b");
        s.insert_account(&a).unwrap();
        s.insert_account(&b).unwrap();
        let req = PageRequest {
            start: 0,
            limit: 10,
        };
        assert_eq!(s.list_accounts(req).unwrap().items.len(), 2);
        assert!(s.begin_account_delete(&a.id).unwrap().is_some());
        assert!(s.begin_account_delete(&a.id).unwrap().is_none());
        assert!(s.account(&a.id).unwrap().is_none());
        assert!(s.account_by_username("a").unwrap().is_none());
        assert_eq!(s.list_accounts(req).unwrap().items, vec![b.clone()]);
        assert_eq!(s.accounts_being_deleted().unwrap().len(), 1);
        s.finish_account_delete(&a).unwrap();
        assert!(!s.username_taken("a").unwrap());
        assert!(s.accounts_being_deleted().unwrap().is_empty());
    }

    #[test]
    fn pages_follow_epoch_order() {
        let (_d, s) = temp_store();
        let names = ["a", "b", "c", "d", "e"];
        for n in names {
            s.insert_account(&account(&s, n)).unwrap();
        }
        let page = |start, limit| s.list_accounts(PageRequest { start, limit }).unwrap();
        let p = page(0, 2);
        assert_eq!(p.next_start, Some(2));
        assert_eq!(p.items[1].username, "b");
        let p = page(4, 2);
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.next_start, None);
        assert!(page(5, 1).items.is_empty());
    }
}
