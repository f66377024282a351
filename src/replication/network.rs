//! Raft's messages between nodes, over the cluster transport.
//!
//! Each message is an [`Rpc`] tagged with its group, so one cookie-authenticated
//! connection per peer carries every group. The receiving node hands it to that group's
//! Raft instance on the transport's runtime. A peer that is down, silent, or does not
//! (yet) run the group counts as unreachable: Raft backs off and retries. A snapshot
//! travels in bounded chunks ([`super::snapshot_transfer`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory, Snapshot, Vote};
use serde::{Deserialize, Serialize};

use super::snapshot_transfer;
use super::types::{raft_id, GroupId, TypeConfig};
use crate::cluster::{rpc, CallError, Cluster, Rpc};

/// Why a peer could not hand a message to its group.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("node does not run group {0}")]
pub struct NoGroup(pub String);

/// `AppendEntries` (and heartbeats) for one group.
#[derive(Serialize, Deserialize)]
pub struct AppendRpc {
    /// The group.
    pub group: GroupId,
    /// Raft's request.
    pub request: AppendEntriesRequest<TypeConfig>,
}
rpc!(AppendRpc => Result<Result<AppendEntriesResponse<u64>, RaftError<u64>>, NoGroup>, "raft/append");

/// `RequestVote` for one group.
#[derive(Serialize, Deserialize)]
pub struct VoteRpc {
    /// The group.
    pub group: GroupId,
    /// Raft's request.
    pub request: VoteRequest<u64>,
}
rpc!(VoteRpc => Result<Result<VoteResponse<u64>, RaftError<u64>>, NoGroup>, "raft/vote");

/// Creates the clients of one group's Raft instance.
pub struct Network {
    cluster: Arc<Cluster>,
    group: GroupId,
}

impl Network {
    /// The network of `group`.
    pub fn new(cluster: Arc<Cluster>, group: GroupId) -> Self {
        Self { cluster, group }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> PeerClient {
        PeerClient {
            cluster: self.cluster.clone(),
            group: self.group,
            target,
        }
    }
}

/// Sends one group's messages to one peer.
pub struct PeerClient {
    cluster: Arc<Cluster>,
    group: GroupId,
    target: u64,
}

/// The transport failed to deliver or answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    NoGroup(#[from] NoGroup),
    #[error("no member has raft id {0}")]
    UnknownTarget(u64),
}

impl PeerClient {
    /// The group whose messages this client sends.
    pub(super) fn group(&self) -> GroupId {
        self.group
    }

    /// The peer's Raft id.
    pub(super) fn target(&self) -> u64 {
        self.target
    }

    /// Sends one request to the peer, waiting at most `ttl` for its answer.
    pub(super) async fn send<R: Rpc>(
        &self,
        request: R,
        ttl: Duration,
    ) -> Result<R::Answer, SendError> {
        // Looked up each time: a member admitted after this client was made is a peer by
        // the time its group's leader replicates to it.
        let peer = self
            .cluster
            .peers()
            .iter()
            .find(|p| raft_id(&p.member.id) == self.target)
            .cloned()
            .ok_or(SendError::UnknownTarget(self.target))?;
        Ok(self.cluster.call_within(&peer, &request, ttl).await?)
    }

    /// Sends a Raft request whose answer is Raft's own result, as openraft takes it.
    async fn ask<R, T>(
        &self,
        request: R,
        option: RPCOption,
    ) -> Result<T, RPCError<u64, BasicNode, RaftError<u64>>>
    where
        R: Rpc<Answer = Result<Result<T, RaftError<u64>>, NoGroup>>,
    {
        match self.send(request, option.hard_ttl()).await {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(Err(no_group)) => Err(unreachable(no_group.into())),
            Err(e) => Err(unreachable(e)),
        }
    }
}

/// The longest pause before trying an unreachable peer again.
const UNREACHABLE_BACKOFF_MAX: Duration = Duration::from_secs(1);

fn unreachable<E: std::error::Error>(e: SendError) -> RPCError<u64, BasicNode, E> {
    match e {
        SendError::Call(CallError::Protocol(_)) => RPCError::Network(NetworkError::new(&e)),
        _ => RPCError::Unreachable(Unreachable::new(&e)),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    /// A peer that cannot be reached is tried again after 100 ms, then ever less often, up
    /// to once a second: a restarted node is caught up promptly, and a node that stays
    /// down does not cost each group a send twice a second.
    fn backoff(&self) -> Backoff {
        Backoff::new(
            (0u32..)
                .map(|n| Duration::from_millis(100u64 << n.min(4)).min(UNREACHABLE_BACKOFF_MAX)),
        )
    }

    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let group = self.group;
        self.ask(AppendRpc { group, request }, option).await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let group = self.group;
        self.ask(VoteRpc { group, request }, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<u64>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        snapshot_transfer::send(self, vote, snapshot, cancel, option).await
    }
}
