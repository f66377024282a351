//! The cluster's members: admitting a node into a replicated cluster and removing one,
//! and what `GET /v1/cluster` shows of the members and of the replicas still to move.

use serde::Serialize;

use super::Service;
use crate::cluster::Member;
use crate::domain::ServiceError;
use crate::replication::{GroupStatus, MemberList, MembersRefused, ReplicationError};

/// How `POST /v1/cluster/members` went.
pub enum Admitted {
    /// The node is a member now.
    New(MemberList),
    /// It was a member already, with the same addresses.
    Already(MemberList),
}

/// A member as `GET /v1/cluster` shows it.
#[derive(Debug, Serialize)]
pub struct MemberView {
    /// Its id.
    pub id: String,
    /// Its cluster listener.
    pub cluster_addr: String,
    /// Its `/v1` API.
    pub http_addr: String,
    /// `joining` while groups still move replicas to it, else `active`.
    pub state: &'static str,
}

impl Service {
    /// Admits `member` into the replicated cluster; its groups then move replicas to it.
    pub async fn admit_member(&self, member: Member) -> Result<Admitted, ServiceError> {
        let replication = self.replication().ok_or_else(not_replicated)?;
        if let Some(list) = replication.members() {
            if list.get(&member.id).is_some_and(|m| m.member == member) {
                return Ok(Admitted::Already(list));
            }
        }
        replication
            .admit(member)
            .await
            .map(Admitted::New)
            .map_err(member_error)
    }

    /// Starts removing member `id` from the replicated cluster: its groups move their
    /// replicas off it, then it is removed. Answers the member list.
    pub async fn drain_member(&self, id: &str) -> Result<MemberList, ServiceError> {
        let replication = self.replication().ok_or_else(not_replicated)?;
        replication.drain(id).await.map_err(member_error)
    }

    /// The replicated member list with each member's state, given the groups' status
    /// (`None` without replication, or before the list is recorded).
    pub fn member_views(&self, groups: &[GroupStatus]) -> Option<Vec<MemberView>> {
        let list = self.replication()?.members()?;
        Some(
            list.members
                .iter()
                .map(|m| {
                    let id = &m.member.id;
                    let joining = groups
                        .iter()
                        .any(|g| g.target.contains(id) && !g.voters.contains(id));
                    MemberView {
                        id: id.clone(),
                        cluster_addr: m.member.cluster_addr.clone(),
                        http_addr: m.member.http_addr.clone(),
                        state: match joining {
                            true => "joining",
                            false => m.state.name(),
                        },
                    }
                })
                .collect(),
        )
    }
}

fn not_replicated() -> ServiceError {
    ServiceError::BadRequest(
        "This node is not replicated: members can be admitted and removed only in a cluster \
         with cluster.replication_factor of 2 or more"
            .into(),
    )
}

/// A refused or failed member change as the API answers it.
fn member_error(e: ReplicationError) -> ServiceError {
    match e {
        ReplicationError::Members(refused @ MembersRefused::NotSeeded) => {
            ServiceError::Unavailable {
                message: refused.to_string(),
                retry_after_secs: 1,
            }
        }
        ReplicationError::Members(refused @ MembersRefused::NotMember(_)) => {
            ServiceError::NotFound(refused.to_string().into())
        }
        ReplicationError::Members(refused) => ServiceError::Conflict(refused.to_string()),
        e @ ReplicationError::NoLeader(_) => ServiceError::Unavailable {
            message: e.to_string(),
            retry_after_secs: 1,
        },
        e => ServiceError::Internal(e.to_string()),
    }
}
