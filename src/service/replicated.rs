//! What the service does through the replicated groups: routing each operation to its
//! shard group's leader, writing records through the group's log, the once-per-cluster
//! administrator account, and the groups' status.
//!
//! An operation on a shard is served by its group's leader, which confirms its lead under
//! its lease or with a read index ([`Replication::linearize`]) or, for a change of records,
//! by committing it ([`Service::serve_as_leader`]); a node that does not lead answers
//! [`ServiceError::NotServedHere`] having done nothing, and the asking node follows the
//! lead until `cluster.failover_wait_ms` has passed, then answers 503 with `Retry-After`.
//! An operation that reached a leader and then lost its answer (the leader stopped) is not
//! sent again: it may have been applied, so the client gets a 503 and decides.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group_writes::{GroupLogs, GroupWrites};
use super::{username_shard, Effect, Op, Service, ShardOp};
use crate::actors::{noting_log_commits, NodeState};
use crate::cluster::{Peer, ShardId};
use crate::crypto;
use crate::domain::{NewAccount, ServiceError, ADMIN_USERNAME};
use crate::replication::{
    Applied, Command, GroupId, GroupStatus, LeaderWork, NotLeader, Replication, ReplicationError,
};
use crate::store::{Account, PageRequest, RecordWrite, WriteOutcome};

/// How often a node looks for groups it newly leads.
const LEAD_CHECK: Duration = Duration::from_millis(200);
/// How often an operation waiting for its group's leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(25);
/// How long a request sent to a leader that lost its lead meanwhile still waits for its
/// answer: one that handed the lead over answers what it had taken within milliseconds,
/// one that died never does.
const DEPOSED_GRACE: Duration = Duration::from_millis(500);
/// How long a peer that refused without naming another leader (one handing its lead over,
/// or stopping) is not asked again, even when the followers still name it, as they do
/// until the handover ends: asking it every few milliseconds meant a request was often on
/// its way to a stopping node when it exited (a 503 that may or may not have been
/// applied).
const REFUSED_BACKOFF: Duration = Duration::from_millis(100);

impl From<NotLeader> for ServiceError {
    fn from(e: NotLeader) -> Self {
        match e {
            NotLeader::Elsewhere { leader, .. } => ServiceError::NotServedHere { leader },
            NotLeader::NoQuorum(group) => ServiceError::Unavailable {
                message: format!(
                    "Shard group {group} has no leader at the moment (an election, or a \
                     majority of its nodes down), try again later"
                ),
                retry_after_secs: 1,
            },
            stopped @ NotLeader::Stopped { .. } => ServiceError::Internal(stopped.to_string()),
        }
    }
}

/// Finishes, in each group this node takes the lead of, what its earlier leader may have
/// left unfinished (cascades, fan-outs, handoff batches, deliveries), until the node
/// stops. Taking the lead again in a later term counts too: the fan-outs stopped when it
/// was lost.
async fn resume_on_lead(ctx: Arc<NodeState>, replication: Arc<Replication>) {
    let mut led = BTreeSet::new();
    loop {
        tokio::time::sleep(LEAD_CHECK).await;
        let now: BTreeSet<(GroupId, u64)> = replication.led_groups().into_iter().collect();
        let taken: Vec<GroupId> = now.difference(&led).map(|(group, _)| *group).collect();
        if !taken.is_empty() {
            if let Err(e) = resume(&ctx, &replication, &taken).await {
                tracing::warn!(error = %e, "resuming the work of newly led groups failed; retrying");
                continue;
            }
        }
        led = now;
    }
}

/// [`resume_on_lead`] of the groups `taken`, once this node applied everything they
/// committed before (a fan-out's cursor may be in an entry not applied yet).
async fn resume(
    ctx: &Arc<NodeState>,
    replication: &Arc<Replication>,
    taken: &[GroupId],
) -> Result<(), ServiceError> {
    for group in taken {
        replication.fence_writes(*group).await?;
    }
    ctx.resume_cascades().await?;
    ctx.resume_replicated_fanouts().await?;
    ctx.resume_led_deliveries().await
}

/// The delivery engine's attempts, settled before this node hands a group's lead over
/// (see `actors::delivery::release`).
struct Deliveries(Arc<NodeState>);

impl LeaderWork for Deliveries {
    fn settle(
        &self,
        group: GroupId,
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.0.settle_deliveries(group.0, deadline))
    }

    fn resume(&self, group: GroupId, kept: bool) {
        self.0.end_release(group.0, kept);
    }
}

/// Proposes `command` until the group answers (through elections, and while it has no
/// majority): a proposal answered `NoLeader` may still commit, so the same one is sent
/// again rather than a new one.
async fn propose_until_answered(
    replication: &Replication,
    group: GroupId,
    command: Command,
) -> Result<Applied, ReplicationError> {
    loop {
        match replication.propose(group, command.clone()).await {
            Err(ReplicationError::NoLeader(_)) => continue,
            answer => return answer,
        }
    }
}

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
    /// Attaches the node's started Raft groups: from now on shards are served by their
    /// group's leader, and records are written through the groups' logs.
    pub fn attach_replication(&self, replication: Arc<Replication>) {
        self.ctx.cluster.set_shard_owners(replication.clone());
        self.ctx
            .records
            .replicate_through(Arc::new(GroupWrites(GroupLogs::new(replication.clone()))));
        replication.set_leader_work(Arc::new(Deliveries(self.ctx.clone())));
        let _ = self.replication.set(replication.clone());
        tokio::spawn(resume_on_lead(self.ctx.clone(), replication));
    }

    /// Serves `op` at the leader of `shard`'s group, following the lead while it moves
    /// (see the module doc).
    pub(super) async fn ask_leader<O, T>(
        &self,
        replication: &Arc<Replication>,
        shard: ShardId,
        op: O,
    ) -> Result<T, ServiceError>
    where
        O: ShardOp<Answer = Result<T, ServiceError>> + Clone,
        T: Send,
    {
        let cluster = &self.ctx.cluster;
        let group = replication.group_of(shard);
        let deadline = Instant::now() + replication.failover_wait();
        let mut hint = None;
        // Members asked that did not know the leader: while a group's replicas move, the
        // node this one takes for its leader may not be a member yet, so the others are
        // asked in turn (a member knows its leader).
        let mut asked: Vec<String> = Vec::new();
        // Peers that refused without naming another leader, and when.
        let mut refused: Vec<(String, Instant)> = Vec::new();
        loop {
            let leader = hint.take().or_else(|| {
                let believed = replication
                    .leader_of(group)
                    .filter(|id| !asked.contains(id));
                believed.or_else(|| {
                    cluster
                        .up_peers()
                        .iter()
                        .map(|p| p.member.id.clone())
                        .find(|id| !asked.contains(id))
                })
            });
            let Some(id) = leader else {
                // Nobody asked knew a leader (an election): look again shortly.
                if Instant::now() >= deadline {
                    return Err(NotLeader::NoQuorum(group).into());
                }
                asked.clear();
                tokio::time::sleep(LEADER_POLL).await;
                continue;
            };
            let backing_off = refused
                .iter()
                .any(|(peer, at)| *peer == id && at.elapsed() < REFUSED_BACKOFF);
            if backing_off && id != cluster.node_id() {
                if Instant::now() >= deadline {
                    return Err(NotLeader::NoQuorum(group).into());
                }
                tokio::time::sleep(LEADER_POLL).await;
                continue;
            }
            let answer = match cluster.peer(&id) {
                _ if id == cluster.node_id() => {
                    self.serve_as_leader(replication, shard, op.clone()).await
                }
                Some(peer) if peer.is_connected() => {
                    self.ask_peer(replication, group, &peer, &op).await
                }
                _ => Err(ServiceError::NotServedHere { leader: None }),
            };
            match answer {
                Err(ServiceError::NotServedHere { leader }) if Instant::now() < deadline => {
                    if leader.is_some() {
                        asked.clear();
                        tokio::time::sleep(LEADER_POLL / 5).await;
                    } else {
                        refused.retain(|(peer, _)| *peer != id);
                        refused.push((id.clone(), Instant::now()));
                        asked.push(id);
                    }
                    hint = leader;
                }
                Err(ServiceError::NotServedHere { .. }) => {
                    return Err(NotLeader::NoQuorum(group).into())
                }
                other => return other,
            }
        }
    }

    /// [`Service::ask_leaders`] with replicated groups.
    pub(super) async fn ask_up_leaders<O, T>(
        &self,
        replication: &Replication,
        op: O,
    ) -> Result<Vec<T>, ServiceError>
    where
        O: Op<Answer = Result<T, ServiceError>> + Clone,
    {
        let cluster = &self.ctx.cluster;
        let up = || {
            let mut members = vec![cluster.node_id().to_owned()];
            members.extend(cluster.up_peers().iter().map(|p| p.member.id.clone()));
            members
        };
        let deadline = Instant::now() + replication.failover_wait();
        while let Some(group) = replication.group_led_outside(&up()) {
            if Instant::now() >= deadline {
                return Err(NotLeader::NoQuorum(group).into());
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
        let mut answers = vec![op.clone().run(self.clone()).await?];
        for peer in cluster.up_peers() {
            answers.push(cluster.call(&peer, &op).await??);
        }
        Ok(answers)
    }

    /// Deletes the subscriptions of the groups this node leads (the admin's bulk delete):
    /// each shard's by a write of its group's log naming them; answers how many.
    pub(super) async fn delete_led_subscriptions(&self) -> Result<u64, ServiceError> {
        let all = PageRequest {
            start: 0,
            limit: u64::MAX,
        };
        let subs = self
            .ctx
            .store
            .run(move |s| s.list_subscriptions(all))
            .await?
            .items;
        self.ctx.delete_served_subscriptions(subs).await
    }

    /// Asks `peer`, which this node takes for `group`'s leader, to serve `op`. The answer
    /// is given up when the peer does not answer within the failover wait, or when the
    /// group elects another leader meanwhile: the peer is then as good as gone. A read is
    /// then sent to the new leader; a change may have been applied by the lost leader, so
    /// it is not sent again, and the client gets a 503 and decides.
    async fn ask_peer<O, T>(
        &self,
        replication: &Replication,
        group: GroupId,
        peer: &Peer,
        op: &O,
    ) -> Result<T, ServiceError>
    where
        O: ShardOp<Answer = Result<T, ServiceError>>,
    {
        let call = self
            .ctx
            .cluster
            .call_within(peer, op, replication.failover_wait());
        let deposed = async {
            while replication.leader_of(group).as_deref() == Some(peer.member.id.as_str()) {
                tokio::time::sleep(LEADER_POLL).await;
            }
        };
        tokio::pin!(call);
        let lost = tokio::select! {
            answer = &mut call => match answer {
                Ok(answer) => return answer,
                Err(e) => ServiceError::from(e),
            },
            () = deposed => {
                // A leader that handed its lead over still answers what it had taken.
                match tokio::time::timeout(DEPOSED_GRACE, &mut call).await {
                    Ok(Ok(answer)) => return answer,
                    _ => ServiceError::Unavailable {
                        message: format!(
                            "The leader of shard group {group} changed while the request was \
                             on its way: it may or may not have been applied, try again"
                        ),
                        retry_after_secs: 1,
                    },
                }
            }
        };
        match O::EFFECT {
            Effect::Nothing => Err(ServiceError::NotServedHere { leader: None }),
            Effect::Records | Effect::Deliveries => Err(lost),
        }
    }

    /// Serves `op` if this node leads `shard`'s group. A read, or a change of deliveries
    /// (not replicated), is served once the lead is confirmed (lease or read index). A
    /// change of records is fenced once per term and then proves the lead by committing;
    /// when it answers without having committed anything, the answer came from this
    /// node's state, so the lead is confirmed before it is given (see
    /// `replication/leadership.rs`).
    pub(super) async fn serve_as_leader<O, T>(
        &self,
        replication: &Arc<Replication>,
        shard: ShardId,
        op: O,
    ) -> Result<T, ServiceError>
    where
        O: ShardOp<Answer = Result<T, ServiceError>>,
        T: Send,
    {
        let group = replication.group_of(shard);
        if O::EFFECT != Effect::Records {
            replication.linearize(group).await?;
            return op.run(self.clone()).await;
        }
        replication.fence_writes(group).await?;
        let (answer, logged) = noting_log_commits(op.run(self.clone())).await;
        // Committed something: the commit proved the lead. Refused before proposing
        // anything (the lead is being handed over): nothing happened, and the asking node
        // follows the lead.
        if logged || matches!(answer, Err(ServiceError::NotServedHere { .. })) {
            return answer;
        }
        match replication.linearize(group).await {
            Ok(()) => answer,
            Err(e) => Err(ServiceError::Unavailable {
                message: format!(
                    "This node lost the lead of shard group {group} while serving the request \
                     ({e}): try again"
                ),
                retry_after_secs: 1,
            }),
        }
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
    /// own. Only the preferred leader of the admin's shard group asks, waiting for the
    /// metadata group to have a majority. The record is then written to the admin's group
    /// (a no-op when it is there already, so that a crash between the two steps is
    /// repaired by the next start). Returns the account with its key when this call
    /// created it.
    pub(super) async fn bootstrap_replicated_admin(
        &self,
        replication: &Replication,
    ) -> Result<Option<NewAccount>, ServiceError> {
        let group = replication.group_of(username_shard(self.ctx.cluster.map(), ADMIN_USERNAME));
        if replication.preferred_leader(group).as_deref() != Some(self.ctx.cluster.node_id()) {
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
        let applied = propose_until_answered(replication, GroupId::META, command).await?;
        let Applied::Admin(admin) = applied else {
            return Err(ServiceError::Internal(
                "bootstrap answered no account".into(),
            ));
        };
        if let Some(account) = local.as_ref().filter(|a| a.id != admin.id) {
            tracing::error!(
                local = %account.id,
                cluster = %admin.id,
                "this node's admin account is not the cluster's: keeping both"
            );
        }
        let write = Command::Records(Arc::new(vec![RecordWrite::InsertAccount((*admin).clone())]));
        let stored = propose_until_answered(replication, group, write).await?;
        match stored {
            Applied::Records(outcomes)
                if outcomes
                    .iter()
                    .all(|o| matches!(o, WriteOutcome::Done | WriteOutcome::UsernameTaken)) => {}
            other => {
                return Err(ServiceError::Internal(format!(
                    "storing the admin answered {other:?}"
                )))
            }
        }
        Ok(fresh.filter(|new| new.account.id == admin.id))
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
