//! Where the actors' record writes go: to this node's storage, or through their shard
//! group's Raft log.
//!
//! Actors express each change as a [`RecordWrite`] and hand it here. With one copy of each
//! shard (`replication_factor = 1`) it is applied at once and its group commit is left to
//! whoever answers ([`Written`]). With replicated shards it is proposed to the shard's
//! group by this node, which must be the group's leader; the actor waits for the group to
//! commit and apply it, because it reads its record back from the applied state.
//! Subscribes still share their commits: the registration's queue hands a whole batch as
//! one write.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use super::Written;
use crate::cluster::{Cluster, ShardId};
use crate::domain::ServiceError;
use crate::store::{RecordWrite, Store, WriteOutcome};

/// A future answering the outcomes of replicated writes.
pub type Replicated<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<WriteOutcome>, ServiceError>> + Send + 'a>>;

/// A future answering once a group's records may be read to compute a write.
pub type Fenced<'a> = Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + 'a>>;

/// The shard groups' logs, as the actors see them.
pub trait ReplicatedRecords: Send + Sync {
    /// Answers once this node, which must lead the group of `shard`, has applied
    /// everything the group committed in earlier terms (503 when it does not lead it).
    fn fence(&self, shard: ShardId) -> Fenced<'_>;

    /// Proposes `writes` to the group of `shard` as its leader; answers their outcomes once
    /// the group committed and applied them (503 when this node does not lead it).
    fn write(&self, shard: ShardId, writes: Vec<RecordWrite>) -> Replicated<'_>;

    /// True when two shards belong to the same group (every voter holds both).
    fn same_group(&self, a: ShardId, b: ShardId) -> bool;

    /// The number of the group `shard` belongs to.
    fn group_number(&self, shard: ShardId) -> u16;
}

/// The actors' way to change records.
pub struct Records {
    store: Store,
    /// The configuration replicates shards: until the groups are attached, no write is
    /// made (this node's copy is written only through the log).
    replicate: bool,
    replicated: OnceLock<Arc<dyn ReplicatedRecords>>,
}

impl Records {
    /// Writes applied to `store`, or, when `replicate`, through the groups given to
    /// [`Records::replicate_through`] (and refused until then).
    pub fn new(store: Store, replicate: bool) -> Self {
        Self {
            store,
            replicate,
            replicated: OnceLock::new(),
        }
    }

    /// From now on, writes go through `groups` (once, at start-up, before serving).
    pub fn replicate_through(&self, groups: Arc<dyn ReplicatedRecords>) {
        let _ = self.replicated.set(groups);
    }

    /// True when writes are replicated (or will be, once the groups are attached).
    pub fn is_replicated(&self) -> bool {
        self.replicate
    }

    /// True while writes wait for the groups to be attached (a node starting).
    pub fn awaits_groups(&self) -> bool {
        self.replicate && self.replicated.get().is_none()
    }

    /// True when the records of shard `b` are stored wherever those of shard `a` are (so
    /// a write to `a` may check them): the same group, or, unreplicated, both owned here.
    pub fn stored_together(&self, cluster: &Cluster, a: ShardId, b: ShardId) -> bool {
        match self.replicated.get() {
            Some(groups) => groups.same_group(a, b),
            None if self.replicate => false,
            None => {
                let map = cluster.map();
                map.owner(a) == map.owner(b)
            }
        }
    }

    /// The number of the group whose log writes of `shard` go through (0 for all while
    /// unreplicated).
    pub fn group_number(&self, shard: ShardId) -> u16 {
        self.replicated.get().map_or(0, |g| g.group_number(shard))
    }

    /// Waits until this node's copy of the records of `shard` is current enough to compute
    /// a write from: replicated, a leader new in its term first applies what earlier terms
    /// committed (a write computed from a copy behind would redo or undo their work).
    pub async fn fence(&self, shard: ShardId) -> Result<(), ServiceError> {
        match self.replicated.get() {
            Some(groups) => groups.fence(shard).await,
            None if self.replicate => Err(ServiceError::NotServedHere { leader: None }),
            None => Ok(()),
        }
    }

    /// Applies `writes` to the records of `shard`, in order; answers their outcomes.
    /// `written` learns the commit the answer must wait for, if any.
    pub async fn write(
        &self,
        shard: ShardId,
        writes: Vec<RecordWrite>,
        written: &mut Written,
    ) -> Result<Vec<WriteOutcome>, ServiceError> {
        if let Some(groups) = self.replicated.get() {
            let outcomes = groups.write(shard, writes).await?;
            written.logged();
            return Ok(outcomes);
        }
        if self.replicate {
            return Err(ServiceError::NotServedHere { leader: None });
        }
        let outcomes = self
            .store
            .run(move |s| writes.iter().map(|w| s.apply_write(w)).collect())
            .await?;
        written.wrote(&self.store);
        Ok(outcomes)
    }

    /// [`Records::write_one`], answered once its commit is on disk (for callers that answer
    /// nobody through a [`Written`] of their own).
    pub async fn write_committed(
        &self,
        shard: ShardId,
        write: RecordWrite,
    ) -> Result<WriteOutcome, ServiceError> {
        let mut written = Written::default();
        let outcome = self.write_one(shard, write, &mut written).await?;
        if let Some(commit) = written.commit() {
            commit.wait().await?;
        }
        Ok(outcome)
    }

    /// [`Records::write`] of one write.
    pub async fn write_one(
        &self,
        shard: ShardId,
        write: RecordWrite,
        written: &mut Written,
    ) -> Result<WriteOutcome, ServiceError> {
        self.write(shard, vec![write], written)
            .await?
            .pop()
            .ok_or_else(|| ServiceError::Internal("a write answered no outcome".into()))
    }
}
