//! The member list as replicated state: which nodes belong to the cluster and in which
//! state, kept by the metadata group so that every node agrees on it.
//!
//! `cluster.members` only seeds it: the first node to find the metadata group without a
//! list proposes its configured one ([`MembersChange::Seed`], which changes nothing once
//! a list exists). Members admitted later ([`MembersChange::Admit`]) exist only here; a
//! joining node learns the whole list by replicating the metadata group. Each node turns
//! the list it applied into peers of its transport and into the placement its groups move
//! towards ([`super::rebalance`]).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{Applied, Command, GroupId};
use super::{Placement, Replication, ReplicationError};
use crate::config::Member;

/// How often a node whose metadata group has no member list yet proposes its seed list.
const SEED_RETRY: Duration = Duration::from_secs(1);

/// Where a member is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Admitted; groups move replicas to it until it holds its share.
    Active,
}

impl MemberState {
    /// The state's name as `/v1/cluster` shows it.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Active => "active",
        }
    }
}

/// One member and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Its id and addresses.
    pub member: Member,
    /// Its state.
    pub state: MemberState,
}

/// The cluster's members, in the order they were admitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// The members.
    pub members: Vec<ClusterMember>,
}

impl MemberList {
    /// The ids of the members that hold group replicas.
    pub fn active_ids(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .map(|m| m.member.id.clone())
            .collect()
    }

    /// The member whose id is `id`.
    pub fn get(&self, id: &str) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.member.id == id)
    }
}

/// A change of the member list, applied by the metadata group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MembersChange {
    /// The configured members, recorded when no list exists yet.
    Seed(Vec<Member>),
    /// A new member, active at once.
    Admit(Member),
}

/// Why a change was not applied (the list is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MembersRefused {
    /// No list was seeded yet: the cluster is still starting.
    #[error("the cluster's member list is not recorded yet: retry shortly")]
    NotSeeded,
    /// The id is taken by a member with other addresses.
    #[error("node id {0:?} is already a member, with other addresses")]
    IdTaken(String),
    /// An address is used by another member.
    #[error("address {0} is already used by member {1:?}")]
    AddressTaken(String, String),
}

impl MembersChange {
    /// The list after this change of `current` (`None`: not recorded yet). Admitting a
    /// member again with the same addresses changes nothing and is no error, so that a
    /// repeated admission (a client retrying) answers as the first did.
    pub fn apply(&self, current: Option<&MemberList>) -> Result<MemberList, MembersRefused> {
        match (self, current) {
            (MembersChange::Seed(_), Some(list)) => Ok(list.clone()),
            (MembersChange::Seed(members), None) => Ok(MemberList {
                members: members
                    .iter()
                    .map(|m| ClusterMember {
                        member: m.clone(),
                        state: MemberState::Active,
                    })
                    .collect(),
            }),
            (MembersChange::Admit(_), None) => Err(MembersRefused::NotSeeded),
            (MembersChange::Admit(new), Some(list)) => {
                if let Some(known) = list.get(&new.id) {
                    return match known.member == *new {
                        true => Ok(list.clone()),
                        false => Err(MembersRefused::IdTaken(new.id.clone())),
                    };
                }
                for m in &list.members {
                    for addr in [&new.cluster_addr, &new.http_addr] {
                        if *addr == m.member.cluster_addr || *addr == m.member.http_addr {
                            return Err(MembersRefused::AddressTaken(
                                addr.clone(),
                                m.member.id.clone(),
                            ));
                        }
                    }
                }
                let mut grown = list.clone();
                grown.members.push(ClusterMember {
                    member: new.clone(),
                    state: MemberState::Active,
                });
                Ok(grown)
            }
        }
    }
}

impl Replication {
    /// The member list this node applied last (`None`: not recorded yet).
    pub fn members(&self) -> Option<MemberList> {
        self.members.borrow().clone()
    }

    /// Admits `member`: records it in the member list, after which groups move replicas
    /// to it. Answers the list with it.
    pub async fn admit(&self, member: Member) -> Result<MemberList, ReplicationError> {
        self.change_members(MembersChange::Admit(member)).await
    }

    async fn change_members(&self, change: MembersChange) -> Result<MemberList, ReplicationError> {
        match self
            .propose(GroupId::META, Command::Members(change))
            .await?
        {
            Applied::Members(answer) => Ok(answer?),
            other => Err(ReplicationError::Start(format!(
                "the metadata group answered {other:?} to a member change"
            ))),
        }
    }

    /// Records the configured members as the cluster's list unless one is recorded (the
    /// first node to get there wins; the others' seeds change nothing).
    pub(super) async fn seed_members(self: Arc<Self>, seeds: Vec<Member>) {
        while self.members().is_none() && !self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            match self
                .change_members(MembersChange::Seed(seeds.clone()))
                .await
            {
                Ok(_) => return,
                Err(e) => tracing::debug!(error = %e, "recording the member list failed"),
            }
            tokio::time::sleep(SEED_RETRY).await;
        }
    }

    /// Follows the member list the metadata group applies: every member becomes a peer of
    /// the transport, and the active ones make the placement the groups move towards.
    pub(super) fn follow_members(self: &Arc<Self>) {
        let mut changes = self.members.subscribe();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let list = changes.borrow_and_update().clone();
                let Some(replication) = me.upgrade() else {
                    return;
                };
                if let Some(list) = list {
                    replication.take_members(&list);
                }
                drop(replication);
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    fn take_members(&self, list: &MemberList) {
        for m in &list.members {
            self.cluster.add_peer(m.member.clone());
        }
        let placement = Placement::new(&list.active_ids(), self.groups, self.replication_factor);
        *self
            .placement
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(placement);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, port: u16) -> Member {
        Member {
            id: id.into(),
            cluster_addr: format!("127.0.0.1:{port}"),
            http_addr: format!("127.0.0.1:{}", port + 1000),
        }
    }

    #[test]
    fn the_first_seed_wins_and_admissions_need_one() {
        let admit = MembersChange::Admit(member("d", 7084));
        assert_eq!(admit.apply(None), Err(MembersRefused::NotSeeded));
        let seeded = MembersChange::Seed(vec![member("a", 7081), member("b", 7082)])
            .apply(None)
            .unwrap();
        assert_eq!(seeded.active_ids(), ["a", "b"]);
        let again = MembersChange::Seed(vec![member("x", 7090)])
            .apply(Some(&seeded))
            .unwrap();
        assert_eq!(again, seeded);
        let grown = admit.apply(Some(&seeded)).unwrap();
        assert_eq!(grown.active_ids(), ["a", "b", "d"]);
        assert_eq!(
            admit.apply(Some(&grown)).unwrap(),
            grown,
            "a repeat is no error"
        );
    }

    #[test]
    fn an_admission_reusing_an_id_or_an_address_is_refused() {
        let list = MembersChange::Seed(vec![member("a", 7081)])
            .apply(None)
            .unwrap();
        assert_eq!(
            MembersChange::Admit(member("a", 7085)).apply(Some(&list)),
            Err(MembersRefused::IdTaken("a".into()))
        );
        assert_eq!(
            MembersChange::Admit(member("b", 7081)).apply(Some(&list)),
            Err(MembersRefused::AddressTaken(
                "127.0.0.1:7081".into(),
                "a".into()
            ))
        );
    }
}
