//! What the service does through the replicated groups: the once-per-cluster
//! administrator account, and the groups' status.

use std::sync::Arc;

use super::{username_shard, Service};
use crate::crypto;
use crate::domain::{NewAccount, ServiceError, ADMIN_USERNAME};
use crate::replication::{Applied, Command, GroupId, GroupStatus, Replication, ReplicationError};
use crate::store::{Account, NewAccountError, StoreError};

impl From<ReplicationError> for ServiceError {
    fn from(e: ReplicationError) -> Self {
        match e {
            ReplicationError::NoLeader(_) => ServiceError::Unavailable {
                message: e.to_string(),
                retry_after_secs: 1,
            },
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl Service {
    /// Attaches the node's started Raft groups.
    pub fn attach_replication(&self, replication: Arc<Replication>) {
        let _ = self.replication.set(replication);
    }

    /// The node's Raft groups, when shards are replicated.
    pub fn replication(&self) -> Option<&Arc<Replication>> {
        self.replication.get()
    }

    /// Every group's status, when shards are replicated.
    pub async fn replication_status(&self) -> Option<Vec<GroupStatus>> {
        Some(self.replication()?.status().await)
    }

    /// The administrator account of a replicated cluster: created once per cluster, by
    /// the first proposal the metadata group commits; every later one (another node, or
    /// this node after losing its disk) gets that account back instead of minting its
    /// own. Only the owner of the admin username's shard, which keeps the record, asks;
    /// it waits for the metadata group to have a majority. Returns the account with its key
    /// when this call created it.
    pub(super) async fn bootstrap_replicated_admin(
        &self,
        replication: &Replication,
    ) -> Result<Option<NewAccount>, ServiceError> {
        let shard = username_shard(self.ctx.cluster.map(), ADMIN_USERNAME);
        if self.ctx.cluster.remote_owner(shard).is_some() {
            return Ok(None);
        }
        // An admin made before replication was turned on is the one to keep.
        let local = self
            .ctx
            .store
            .run(|s| s.account_by_username(ADMIN_USERNAME))
            .await?;
        let fresh = match &local {
            Some(_) => None,
            None => Some(
                self.new_account(ADMIN_USERNAME.into(), String::new(), true)
                    .await?,
            ),
        };
        let candidate = match (&local, &fresh) {
            (Some(account), _) => account.clone(),
            (None, Some(new)) => new.account.clone(),
            (None, None) => return Ok(None),
        };
        // Until the metadata group has a majority, the same candidate is proposed again: a
        // proposal answered `NoLeader` may still commit, and must then be recognised as ours.
        let command = Command::BootstrapAdmin(Box::new(candidate.clone()));
        let applied = loop {
            match replication.propose(GroupId::META, command.clone()).await {
                Err(ReplicationError::NoLeader(_)) => continue,
                answer => break answer?,
            }
        };
        let Applied::Admin(admin) = applied else {
            return Err(ServiceError::Internal(
                "bootstrap answered no account".into(),
            ));
        };
        match &local {
            Some(account) if account.id != admin.id => tracing::error!(
                local = %account.id,
                cluster = %admin.id,
                "this node's admin account is not the cluster's: keeping both"
            ),
            Some(_) => {}
            None => self.adopt(&admin).await?,
        }
        Ok(fresh.filter(|new| new.account.id == admin.id))
    }

    /// Stores the cluster's admin account here (its record was lost with a disk, or it
    /// was created by this node just now).
    async fn adopt(&self, admin: &Account) -> Result<(), ServiceError> {
        let record = admin.clone();
        let inserted = self
            .ctx
            .store
            .run(move |s| Ok::<_, StoreError>(s.insert_account(&record)))
            .await?;
        match inserted {
            Ok(()) | Err(NewAccountError::UsernameTaken) => {}
            Err(NewAccountError::Store(e)) => return Err(e.into()),
        }
        self.ctx.store.flush().await?;
        Ok(())
    }

    /// A new account record and its key, not stored.
    pub(super) async fn new_account(
        &self,
        username: String,
        endpoint: String,
        is_admin: bool,
    ) -> Result<NewAccount, ServiceError> {
        let api_key = crypto::generate_key()?;
        let shards = self.ctx.cluster.map();
        let account = Account {
            id: shards.new_id_in(shards.shard_of(username.as_bytes())),
            epoch_us: self.ctx.store.next_epoch_us(),
            username,
            endpoint,
            is_admin,
            failed_count: 0,
            api_key_hash: self.ctx.hash_key(api_key.clone()).await?,
            secret_key: crypto::generate_key()?,
            pending_key: None,
            key_resets_us: Vec::new(),
            deleting: false,
            deliveries_stopped_us: None,
            previous_secret: None,
        };
        Ok(NewAccount { account, api_key })
    }
}
