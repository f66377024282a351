//! The receiving side: Raft's messages, proposals forwarded to a leader, and status
//! questions, each handed to the group's instance on the transport's runtime. Raft's own
//! messages reach the instance even before this node knows it is a member of the group:
//! a node added to a group learns it from them. Snapshot
//! chunks are assembled per group ([`Assembler`]) and installed once complete.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::handover::{take_lead, GiveLeadRpc, TakeLeadRpc};
use super::network::{AppendRpc, NoGroup, VoteRpc};
use super::snapshot_transfer::{Assembler, ChunkAnswer, ChunkRefused, SnapshotChunkRpc};
use super::status::GroupStatus;
use super::types::{Applied, Command, GroupId};
use super::{Replication, ReplicationError, WriteHere};
use crate::cluster::rpc;

/// A proposal forwarded to the node believed to lead `group`.
#[derive(Serialize, Deserialize)]
pub struct ProposeRpc {
    /// The group.
    pub group: GroupId,
    /// The change.
    pub command: Command,
}
rpc!(ProposeRpc => Result<Applied, ReplicationError>, "raft/propose");

/// What a voter knows of `group` (the leader knows its followers' progress).
#[derive(Serialize, Deserialize)]
pub struct StatusRpc {
    /// The group.
    pub group: GroupId,
}
rpc!(StatusRpc => Option<GroupStatus>, "raft/status");

/// Registers every handler with the cluster transport.
pub fn serve(replication: &Arc<Replication>) {
    let cluster = replication.cluster.clone();
    let r = replication.clone();
    cluster.serve_on_transport(move |m: AppendRpc| {
        let raft = r.instance(m.group).cloned();
        async move {
            match raft {
                Some(raft) => Ok(raft.append_entries(m.request).await),
                None => Err(NoGroup(m.group.to_string())),
            }
        }
    });
    let r = replication.clone();
    cluster.serve_on_transport(move |m: VoteRpc| {
        let raft = r.instance(m.group).cloned();
        async move {
            match raft {
                Some(raft) => Ok(raft.vote(m.request).await),
                None => Err(NoGroup(m.group.to_string())),
            }
        }
    });
    let r = replication.clone();
    let assembler = Arc::new(Mutex::new(Assembler::default()));
    cluster.serve_on_transport(move |chunk: SnapshotChunkRpc| {
        let group = chunk.group;
        let taken = match r.instance(group) {
            Some(raft) => assembler
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .accept(chunk)
                .map(|done| done.map(|done| (raft.clone(), done))),
            None => Err(ChunkRefused::NoGroup(group.to_string())),
        };
        async move {
            let Some((raft, done)) = taken? else {
                return Ok(Ok(ChunkAnswer::Accepted));
            };
            tracing::info!(
                group = %group,
                snapshot = %done.snapshot.meta.snapshot_id,
                bytes = done.bytes,
                chunks = done.chunks,
                "installing a snapshot received from the leader"
            );
            let installed = raft.install_full_snapshot(done.vote, done.snapshot).await;
            Ok(installed.map(ChunkAnswer::Installed))
        }
    });
    // A forwarded proposal is served only by a leader: a node that lost the lead meanwhile
    // answers `NoLeader`, and the proposer looks again.
    let r = replication.clone();
    cluster.serve_on_transport(move |m: ProposeRpc| {
        let r = r.clone();
        async move {
            let Some(raft) = r.raft(m.group) else {
                return Err(ReplicationError::NoLeader(m.group.to_string()));
            };
            match r.write_here(m.group, raft, m.command).await {
                Ok(applied) => Ok(applied),
                Err(WriteHere::Forward(_)) => Err(ReplicationError::NoLeader(m.group.to_string())),
                Err(WriteHere::Fatal(e)) => Err(e),
            }
        }
    });
    let r = replication.clone();
    cluster.serve_on_transport(move |m: TakeLeadRpc| {
        let raft = r.raft(m.group).cloned();
        async move {
            match raft {
                Some(raft) => Ok(take_lead(raft, m.last_log_index).await),
                None => Err(NoGroup(m.group.to_string())),
            }
        }
    });
    let r = replication.clone();
    cluster.serve_on_transport(move |m: GiveLeadRpc| {
        let r = r.clone();
        async move { r.give_lead(m.group, &m.to).await }
    });
    let r = replication.clone();
    cluster.serve_on_transport(move |m: StatusRpc| {
        let status = r.local_status(m.group);
        async move { status }
    });
}
