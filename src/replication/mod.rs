//! Replicated shard groups on Raft (openraft).
//!
//! The virtual shards are partitioned into `cluster.groups` groups; each is one Raft group
//! whose `cluster.replication_factor` voters are placed by [`placement`]. A metadata group,
//! in which every member votes, holds what exists once per cluster (the administrator
//! account). Each node runs one Raft instance per group it votes in; every group's log
//! and state machine live in the node's sled database ([`log_store`], [`state_machine`]),
//! and Raft's messages travel over the cluster transport ([`network`]). Raft's timers run
//! on the transport's own runtime, so a node busy delivering still answers heartbeats.
//!
//! A change is proposed with [`Replication::propose`]: the group's leader appends it,
//! and it is answered once a majority of the group has it durable and it is applied. A
//! proposal made meanwhile waits up to `cluster.failover_wait_ms` for a leader.
//!
//! With `replication_factor = 1` none of this runs: shards live on one node each, as
//! before. What the groups replicate so far, and what comes next, is in
//! `docs/architecture.md` ("Replication").

mod applied_position;
mod balance;
mod handover;
mod leadership;
mod lease;
mod log_store;
pub mod members;
pub mod network;
pub mod placement;
mod quiet_start;
mod read_rounds;
mod rebalance;
mod serve;
mod snapshot_transfer;
mod state_machine;
pub mod status;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;

use crate::cluster::{CallError, Cluster};
use crate::config::ClusterConfig;
use crate::store::Store;

pub use handover::LeaderWork;
pub use leadership::NotLeader;
pub use members::{ClusterMember, MemberList, MemberState, MembersRefused};
pub use placement::{GroupPlace, Placement};
pub use status::GroupStatus;
pub use types::{Applied, Command, GroupId};

use log_store::LogStore;
use state_machine::StateMachine;
use types::{raft_id, GroupRaft};

/// How often a proposal that found no leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(25);
/// How long a new group's preferred voter waits for its peers before it initialises the
/// group without having heard from them.
const PEER_WAIT: Duration = Duration::from_secs(3);

/// Why a change was not replicated.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ReplicationError {
    /// No leader answered within `cluster.failover_wait_ms` (an election, or quorum lost).
    #[error("group {0} has no leader reachable: retry shortly")]
    NoLeader(String),
    /// Raft stopped (storage failure); the node must restart.
    #[error("replication of group {group} stopped: {reason}")]
    Stopped {
        /// The group.
        group: String,
        /// openraft's reason.
        reason: String,
    },
    /// Starting the groups failed.
    #[error("starting replication: {0}")]
    Start(String),
    /// The member list was not changed.
    #[error(transparent)]
    Members(#[from] MembersRefused),
}

/// The node's Raft groups.
pub struct Replication {
    node_id: String,
    cluster: Arc<Cluster>,
    /// Where the groups' voters belong, from the member list (see `rebalance.rs`).
    placement: RwLock<Arc<Placement>>,
    /// The member list this node applied last (`None`: not recorded yet).
    members: tokio::sync::watch::Sender<Option<MemberList>>,
    /// An instance of every group, whether or not this node is one of its members: a
    /// node can be added to any group at run time (see [`Replication::raft`]).
    rafts: HashMap<GroupId, GroupRaft>,
    /// Per group, what confirms this node's lead (see `leadership.rs`).
    leads: HashMap<GroupId, leadership::GroupLead>,
    failover_wait: Duration,
    /// Set once the node has begun to stop: it hands its leads over and takes none back.
    stopping: AtomicBool,
    /// Per group, set while this node hands the group's lead over (see `handover.rs`).
    handing_over: HashMap<GroupId, AtomicBool>,
    election_timeout: Duration,
    replication_factor: usize,
    groups: u16,
    max_concurrent_moves: usize,
    /// What settles before this node hands a lead over (see `handover.rs`).
    leader_work: OnceLock<Arc<dyn LeaderWork>>,
}

impl Replication {
    /// Starts this node's groups on the cluster transport's runtime (the cluster must be
    /// started), serves Raft's messages, initialises the groups this node is the preferred
    /// leader of (once per cluster: a group that has a log is never initialised again;
    /// never on a joining node), and keeps replicas and leaders where placement wants them.
    ///
    /// The groups start one lease after the call: had this node acknowledged a leader just
    /// before it last stopped, it must not vote for another one inside that leader's lease.
    pub async fn start(
        config: &ClusterConfig,
        cluster: Arc<Cluster>,
        store: Store,
    ) -> Result<Arc<Self>, ReplicationError> {
        let runtime = cluster.transport_runtime().ok_or_else(|| {
            ReplicationError::Start("the cluster transport is not running".into())
        })?;
        let recorded = store
            .run(state_machine::recorded_members)
            .await
            .map_err(|e| ReplicationError::Start(format!("reading the member list: {e}")))?;
        let rf = usize::from(config.replication_factor.max(1));
        let seed_placement = Placement::new(&config.member_ids(), config.groups, rf);
        let placement = match &recorded {
            Some(list) => Placement::new(&list.active_ids(), config.groups, rf),
            None => seed_placement.clone(),
        };
        let (members, _) = tokio::sync::watch::channel(recorded);
        let (preferred_config, other_config) = (
            Arc::new(raft_config(config, true)?),
            Arc::new(raft_config(config, false)?),
        );
        let lease_length = lease::duration(Duration::from_millis(config.election_timeout_ms));
        tokio::time::sleep(lease_length).await;
        let me = raft_id(&config.node_id);
        let mut rafts = HashMap::new();
        for place in placement.all() {
            let group = place.group;
            let sm = StateMachine::new(
                store.clone(),
                group,
                records_of(&cluster, &placement, group),
                group.is_meta().then(|| members.clone()),
            );
            let network = network::Network::new(cluster.clone(), group);
            let log = LogStore::open(store.clone(), group)
                .await
                .map_err(|e| ReplicationError::Start(format!("group {group}: {e}")))?;
            let raft_config = match place.voters.first() == Some(&config.node_id) {
                true => preferred_config.clone(),
                false => other_config.clone(),
            };
            // openraft spawns its core where it is created: on the transport's runtime.
            let raft = runtime
                .spawn(async move { GroupRaft::new(me, raft_config, network, log, sm).await })
                .await
                .map_err(|e| ReplicationError::Start(e.to_string()))?
                .map_err(|e| ReplicationError::Start(format!("group {group}: {e}")))?;
            let election_timeout = Duration::from_millis(config.election_timeout_ms);
            quiet_start::hold_elections(&raft, me, election_timeout);
            rafts.insert(group, raft);
        }
        let rafts_groups: Vec<GroupId> = rafts.keys().copied().collect();
        let mut leads = HashMap::new();
        for (group, raft) in &rafts {
            let lead = leadership::GroupLead::new(*group);
            runtime.spawn(lease::watch(raft.clone(), lead.lease(), lease_length));
            leads.insert(*group, lead);
        }
        let replication = Arc::new(Self {
            node_id: config.node_id.clone(),
            cluster: cluster.clone(),
            placement: RwLock::new(Arc::new(placement)),
            members,
            rafts,
            leads,
            failover_wait: Duration::from_millis(config.failover_wait_ms),
            stopping: AtomicBool::new(false),
            handing_over: rafts_groups
                .into_iter()
                .map(|g| (g, AtomicBool::new(false)))
                .collect(),
            election_timeout: Duration::from_millis(config.election_timeout_ms),
            replication_factor: rf,
            groups: config.groups,
            max_concurrent_moves: usize::from(config.max_concurrent_moves.max(1)),
            leader_work: OnceLock::new(),
        });
        serve::serve(&replication);
        replication.follow_members();
        if !config.join {
            for place in seed_placement.all() {
                if place.voters.first() == Some(&config.node_id) {
                    let voters = place
                        .voters
                        .iter()
                        .map(|id| {
                            let addr = config
                                .members
                                .iter()
                                .find(|m| &m.id == id)
                                .map(|m| m.cluster_addr.clone())
                                .unwrap_or_default();
                            (raft_id(id), BasicNode { addr })
                        })
                        .collect();
                    tokio::spawn(replication.clone().initialize_if_new(place.clone(), voters));
                }
            }
            tokio::spawn(replication.clone().seed_members(config.members.clone()));
        }
        balance::start(&replication, &runtime);
        rebalance::start(&replication, &runtime);
        Ok(replication)
    }

    /// Initialises `place`'s group if it is new to the whole cluster: this node's log is
    /// empty and no other voter has one. A voter that has a log means this node lost its
    /// disk: it then waits to catch up from the group instead. Peers that do not answer
    /// within [`PEER_WAIT`] are taken to be new too (a cluster whose nodes start one by
    /// one).
    async fn initialize_if_new(
        self: Arc<Self>,
        place: GroupPlace,
        voters: BTreeMap<u64, BasicNode>,
    ) {
        let Some(raft) = self.rafts.get(&place.group) else {
            return;
        };
        let deadline = Instant::now() + PEER_WAIT;
        loop {
            if raft.is_initialized().await.unwrap_or(true) {
                return;
            }
            let mut fresh = 0;
            for member in place.voters.iter().filter(|m| **m != self.node_id) {
                let Some(peer) = self.cluster.peer(member) else {
                    continue;
                };
                let question = serve::StatusRpc { group: place.group };
                match self
                    .cluster
                    .call_within(&peer, &question, LEADER_POLL * 20)
                    .await
                {
                    Ok(Some(status)) if status.last_log_index.is_some() => return,
                    Ok(_) => fresh += 1,
                    Err(_) => {}
                }
            }
            if fresh + 1 == place.voters.len() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(LEADER_POLL * 4).await;
        }
        match raft.initialize(voters).await {
            Ok(()) => tracing::info!(group = %place.group, "group initialised"),
            // A peer's leader reached this node meanwhile.
            Err(RaftError::APIError(_)) => {}
            Err(e) => {
                tracing::error!(group = %place.group, error = %e, "initialising the group failed")
            }
        }
    }

    /// This node's Raft instance of `group`, when it is one of the group's members: a
    /// voter, or a learner placement wants as a voter (catching up). A learner that is
    /// not wanted was removed from the group (see `rebalance.rs`); its view is stale.
    fn raft(&self, group: GroupId) -> Option<&GroupRaft> {
        let raft = self.rafts.get(&group)?;
        let me = raft_id(&self.node_id);
        let (voter, learner) = {
            let m = raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let voter = membership.voter_ids().any(|v| v == me);
            (voter, !voter && membership.get_node(&me).is_some())
        };
        let wanted = || {
            self.placement()
                .place(group)
                .is_some_and(|p| p.voters.contains(&self.node_id))
        };
        (voter || (learner && wanted())).then_some(raft)
    }

    /// This node's Raft instance of `group`, member or not: Raft's messages go to it,
    /// since a node added to the group learns it is a member from them.
    fn instance(&self, group: GroupId) -> Option<&GroupRaft> {
        self.rafts.get(&group)
    }

    /// Where the groups' voters belong now.
    fn placement(&self) -> Arc<Placement> {
        self.placement
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The member whose Raft id is `id` (any member: every member is a peer).
    fn member_of(&self, id: u64) -> Option<String> {
        if raft_id(&self.node_id) == id {
            return Some(self.node_id.clone());
        }
        self.cluster
            .peers()
            .iter()
            .find(|p| raft_id(&p.member.id) == id)
            .map(|p| p.member.id.clone())
    }

    /// Replicates `command` in `group` and answers what applying it answered: once a
    /// majority of the group's voters have it durable. Waits up to
    /// `cluster.failover_wait_ms` for a leader.
    pub async fn propose(
        &self,
        group: GroupId,
        command: Command,
    ) -> Result<Applied, ReplicationError> {
        let deadline = Instant::now() + self.failover_wait;
        loop {
            match self.propose_once(group, command.clone()).await {
                Ok(applied) => return Ok(applied),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry) if Instant::now() + LEADER_POLL < deadline => {
                    tokio::time::sleep(LEADER_POLL).await;
                }
                Err(Attempt::Retry) => return Err(ReplicationError::NoLeader(group.to_string())),
            }
        }
    }

    /// One try: locally when this node leads, else at the leader it knows (or at each
    /// voter, when it does not vote in the group).
    async fn propose_once(&self, group: GroupId, command: Command) -> Result<Applied, Attempt> {
        let leader = match self.raft(group) {
            Some(raft) => match self.write_here(group, raft, command.clone()).await {
                Ok(applied) => return Ok(applied),
                Err(WriteHere::Forward(Some(leader))) => self.member_of(leader),
                Err(WriteHere::Forward(None)) => return Err(Attempt::Retry),
                Err(WriteHere::Fatal(e)) => return Err(Attempt::Fatal(e)),
            },
            None => None,
        };
        let candidates: Vec<String> = match leader {
            Some(leader) => vec![leader],
            None => self
                .placement()
                .place(group)
                .map(|p| p.voters.clone())
                .unwrap_or_default(),
        };
        for member in candidates.iter().filter(|m| **m != self.node_id) {
            let Some(peer) = self.cluster.peer(member) else {
                continue;
            };
            let request = serve::ProposeRpc {
                group,
                command: command.clone(),
            };
            match self
                .cluster
                .call_within(&peer, &request, self.failover_wait)
                .await
            {
                Ok(Ok(applied)) => return Ok(applied),
                Ok(Err(ReplicationError::NoLeader(_))) | Err(CallError::Unavailable(_)) => {}
                Ok(Err(e)) => return Err(Attempt::Fatal(e)),
                Err(e) => {
                    tracing::debug!(group = %group, peer = %member, error = %e, "propose failed")
                }
            }
        }
        Err(Attempt::Retry)
    }

    /// Proposes on this node's instance; the leader's id when another node leads. A
    /// leader that is stopping takes no proposal: it waits for its successor.
    async fn write_here(
        &self,
        group: GroupId,
        raft: &GroupRaft,
        command: Command,
    ) -> Result<Applied, WriteHere> {
        if self.is_handing_over(group, raft) {
            return Err(WriteHere::Forward(None));
        }
        match raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(
                WriteHere::Forward(f.leader_id.filter(|l| *l != raft_id(&self.node_id))),
            ),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(WriteHere::Fatal(ReplicationError::Stopped {
                    group: group.to_string(),
                    reason: e.to_string(),
                }))
            }
            Err(RaftError::Fatal(e)) => Err(WriteHere::Fatal(ReplicationError::Stopped {
                group: group.to_string(),
                reason: e.to_string(),
            })),
        }
    }
}

/// Which record ids belong to `group` (none to the metadata group).
fn records_of(cluster: &Cluster, placement: &Placement, group: GroupId) -> state_machine::InGroup {
    let map = cluster.map().clone();
    let placement = placement.clone();
    Arc::new(move |id| !group.is_meta() && placement.group_of(map.shard_of_id(id)) == group)
}

/// The outcome of one proposal try.
enum Attempt {
    /// No leader known or reachable yet.
    Retry,
    /// Will not succeed by waiting.
    Fatal(ReplicationError),
}

/// Why this node's instance did not take a proposal.
enum WriteHere {
    /// Another node leads (`None`: nobody known yet).
    Forward(Option<u64>),
    Fatal(ReplicationError),
}

/// Log entries sent to a follower in one AppendEntries at most. openraft gives each one
/// a heartbeat interval to be answered: a follower catching up on a busy node stored 300
/// (openraft's default) of fan-out and delivery entries too slowly, timed out, and was
/// sent the same 300 again, never catching up.
const MAX_PAYLOAD_ENTRIES: u64 = 32;

/// openraft's settings from `[cluster]`: a follower calls an election after a random
/// silence between half and all of `election_timeout_ms` (a quarter and half for the
/// group's preferred leader, so that it usually wins); leaders beat six times per timeout.
///
/// A snapshot keeps the `snapshot_entries` entries before it in the log: a node back from a
/// restart then usually catches up from the log. Sending it a snapshot instead reads the
/// group's state in openraft's state machine task, which applies nothing meanwhile, so
/// the group's writes wait: with a tenth kept, a rolling restart under load stalled a
/// group for 3 s (its writes answered 503) while the restarted node's snapshot was read.
fn raft_config(
    config: &ClusterConfig,
    preferred: bool,
) -> Result<openraft::Config, ReplicationError> {
    let timeout = config.election_timeout_ms;
    let (min, max) = match preferred {
        true => (timeout / 4, timeout / 2),
        false => (timeout / 2, timeout),
    };
    openraft::Config {
        cluster_name: "webhookd".into(),
        election_timeout_min: min,
        election_timeout_max: max,
        heartbeat_interval: (timeout / 6).max(5),
        install_snapshot_timeout: config.rpc_timeout_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
        max_in_snapshot_log_to_keep: config.snapshot_entries,
        snapshot_max_chunk_size: config.snapshot_chunk_bytes,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ReplicationError::Start(format!("raft settings: {e}")))
}
