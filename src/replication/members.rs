//! The member list as replicated state: which nodes belong to the cluster and in which
//! state, kept by the metadata group so that every node agrees on it.
//!
//! `cluster.members` only seeds it: the first node to find the metadata group without a
//! list proposes its configured one ([`MembersChange::Seed`], which changes nothing once
//! a list exists). Members admitted later ([`MembersChange::Admit`]) exist only here; a
//! joining node learns the whole list by replicating the metadata group. A member to
//! remove is first drained ([`MembersChange::Drain`]): placement leaves it out, so the
//! groups move their replicas off it; once it holds none, the metadata group's leader
//! removes it ([`MembersChange::Remove`]). Each node turns the list it applied into peers
//! of its transport and into the placement its groups move towards
//! ([`super::rebalance`]).

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
    /// Being removed: groups move their replicas off it; it still votes in the metadata
    /// group until it holds none.
    Draining,
    /// Removed: it holds nothing, and its process can be stopped and its data deleted.
    Removed,
}

impl MemberState {
    /// The state's name as `/v1/cluster` shows it.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Active => "active",
            MemberState::Draining => "draining",
            MemberState::Removed => "removed",
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

    /// The ids of the members in `state`.
    pub fn ids_in(&self, state: MemberState) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.state == state)
            .map(|m| m.member.id.clone())
            .collect()
    }

    /// The member whose id is `id`.
    pub fn get(&self, id: &str) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.member.id == id)
    }

    /// This list with member `id` in `state`.
    fn with_state(&self, id: &str, state: MemberState) -> Self {
        let mut changed = self.clone();
        for m in changed.members.iter_mut().filter(|m| m.member.id == id) {
            m.state = state;
        }
        changed
    }
}

/// A change of the member list, applied by the metadata group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MembersChange {
    /// The configured members, recorded when no list exists yet.
    Seed(Vec<Member>),
    /// A new member, active at once (a removed one may come back).
    Admit(Member),
    /// Starts removing a member, unless that would leave fewer than `min_active` active.
    Drain {
        /// The member.
        id: String,
        /// Active members that must remain.
        min_active: u16,
    },
    /// Ends removing a drained member (which holds no replica any more).
    Remove(String),
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
    /// No member has this id (or it was removed already).
    #[error("node {0:?} is not a member")]
    NotMember(String),
    /// Removing it would leave fewer active members than each group has voters.
    #[error(
        "removing node {id:?} would leave {left} active members, fewer than \
         cluster.replication_factor ({min}): admit another node first"
    )]
    TooFew {
        /// The member.
        id: String,
        /// Active members that would be left.
        left: usize,
        /// Active members needed.
        min: u16,
    },
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
            (_, None) => Err(MembersRefused::NotSeeded),
            (MembersChange::Drain { id, min_active }, Some(list)) => {
                match list.get(id).map(|m| m.state) {
                    None | Some(MemberState::Removed) => Err(MembersRefused::NotMember(id.clone())),
                    Some(MemberState::Draining) => Ok(list.clone()),
                    Some(MemberState::Active) => {
                        let left = list.ids_in(MemberState::Active).len() - 1;
                        match left >= usize::from(*min_active).max(1) {
                            true => Ok(list.with_state(id, MemberState::Draining)),
                            false => Err(MembersRefused::TooFew {
                                id: id.clone(),
                                left,
                                min: *min_active,
                            }),
                        }
                    }
                }
            }
            (MembersChange::Remove(id), Some(list)) => match list.get(id).map(|m| m.state) {
                Some(MemberState::Draining) => Ok(list.with_state(id, MemberState::Removed)),
                Some(MemberState::Removed) => Ok(list.clone()),
                _ => Err(MembersRefused::NotMember(id.clone())),
            },
            (MembersChange::Admit(new), Some(list)) => {
                match list.get(&new.id) {
                    Some(known) if known.state == MemberState::Removed => {}
                    Some(known) if known.member == *new => return Ok(list.clone()),
                    Some(_) => return Err(MembersRefused::IdTaken(new.id.clone())),
                    None => {}
                }
                let others = list
                    .members
                    .iter()
                    .filter(|m| m.member.id != new.id && m.state != MemberState::Removed);
                for m in others {
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
                grown.members.retain(|m| m.member.id != new.id);
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

    /// Starts removing member `id`: groups move their replicas off it, then it is removed.
    /// Refused when it would leave fewer active members than `cluster.replication_factor`.
    pub async fn drain(&self, id: &str) -> Result<MemberList, ReplicationError> {
        let min_active = u16::try_from(self.replication_factor).unwrap_or(u16::MAX);
        let change = MembersChange::Drain {
            id: id.to_string(),
            min_active,
        };
        self.change_members(change).await
    }

    /// Ends removing the drained member `id`.
    pub(super) async fn remove_drained(&self, id: &str) -> Result<MemberList, ReplicationError> {
        self.change_members(MembersChange::Remove(id.to_string()))
            .await
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
            match m.state {
                MemberState::Removed => self.cluster.remove_peer(&m.member.id),
                _ => {
                    self.cluster.add_peer(m.member.clone());
                }
            }
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
    fn a_member_is_drained_then_removed_and_never_below_the_minimum() {
        let list = MembersChange::Seed(vec![
            member("a", 7081),
            member("b", 7082),
            member("c", 7083),
        ])
        .apply(None)
        .unwrap();
        let drain = |id: &str, min_active| MembersChange::Drain {
            id: id.into(),
            min_active,
        };
        assert_eq!(
            drain("a", 3).apply(Some(&list)),
            Err(MembersRefused::TooFew {
                id: "a".into(),
                left: 2,
                min: 3
            })
        );
        let draining = drain("a", 2).apply(Some(&list)).unwrap();
        assert_eq!(draining.ids_in(MemberState::Draining), ["a"]);
        assert_eq!(draining.active_ids(), ["b", "c"]);
        assert_eq!(drain("a", 2).apply(Some(&draining)).unwrap(), draining);
        assert_eq!(
            MembersChange::Remove("b".into()).apply(Some(&draining)),
            Err(MembersRefused::NotMember("b".into())),
            "only a drained member is removed"
        );
        let removed = MembersChange::Remove("a".into())
            .apply(Some(&draining))
            .unwrap();
        assert_eq!(removed.ids_in(MemberState::Removed), ["a"]);
        assert_eq!(
            drain("a", 1).apply(Some(&removed)),
            Err(MembersRefused::NotMember("a".into()))
        );
        // Its addresses are free again, and it may come back.
        let back = MembersChange::Admit(member("a", 7081))
            .apply(Some(&removed))
            .unwrap();
        assert_eq!(back.active_ids(), ["b", "c", "a"]);
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
