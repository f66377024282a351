//! Where each group lives: its voters and its preferred leader, a pure function of the
//! configuration, so every node computes the same placement without asking.
//!
//! Voters are the `replication_factor` members with the highest rendezvous weight for the
//! group (adding a member later moves only the groups it wins). Preferred leaders are then
//! dealt out group by group to the voter that prefers the fewest groups so far, so that
//! leaders spread evenly (within one group) over the members; the preferred voter takes
//! the lead whenever it is healthy and caught up (see [`super::balance`]).

use crate::cluster::shard::{fnv1a64, mix, ShardId};

use super::types::GroupId;

/// One group's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlace {
    /// The group.
    pub group: GroupId,
    /// Member ids of its voters; the preferred leader first.
    pub voters: Vec<String>,
}

/// Every group's place.
#[derive(Debug, Clone)]
pub struct Placement {
    groups: u16,
    places: Vec<GroupPlace>,
    meta: GroupPlace,
}

fn weight(group: GroupId, member: &str) -> u64 {
    let mut key = group.0.to_be_bytes().to_vec();
    key.extend_from_slice(member.as_bytes());
    mix(fnv1a64(&key))
}

impl Placement {
    /// The placement of `groups` groups with `replication_factor` voters over `members`.
    pub fn new(members: &[String], groups: u16, replication_factor: usize) -> Self {
        let groups = groups.max(1);
        let rf = replication_factor.clamp(1, members.len().max(1));
        let mut preferred_count: Vec<usize> = vec![0; members.len()];
        let mut places = Vec::with_capacity(usize::from(groups));
        for g in 0..groups {
            let group = GroupId(g);
            let mut ranked: Vec<usize> = (0..members.len()).collect();
            ranked.sort_by_key(|&i| (std::cmp::Reverse(weight(group, &members[i])), i));
            ranked.truncate(rf);
            // The voter preferring the fewest groups so far leads; ties go by rank.
            if let Some(pos) = (0..ranked.len()).min_by_key(|&p| (preferred_count[ranked[p]], p)) {
                let leader = ranked.remove(pos);
                preferred_count[leader] += 1;
                ranked.insert(0, leader);
            }
            places.push(GroupPlace {
                group,
                voters: ranked.into_iter().map(|i| members[i].clone()).collect(),
            });
        }
        let mut everyone: Vec<String> = members.to_vec();
        everyone.sort_by_key(|m| std::cmp::Reverse(weight(GroupId::META, m)));
        Self {
            groups,
            places,
            meta: GroupPlace {
                group: GroupId::META,
                voters: everyone,
            },
        }
    }

    /// The group of a virtual shard.
    pub fn group_of(&self, shard: ShardId) -> GroupId {
        Self::group_of_shard(shard, self.groups)
    }

    /// The group of a virtual shard among `groups` groups: it never depends on the
    /// members, so records stay in their group whatever nodes come and go.
    pub fn group_of_shard(shard: ShardId, groups: u16) -> GroupId {
        GroupId(shard % groups.max(1))
    }

    /// The place of `group` (the metadata group included).
    pub fn place(&self, group: GroupId) -> Option<&GroupPlace> {
        if group.is_meta() {
            return Some(&self.meta);
        }
        self.places.get(usize::from(group.0))
    }

    /// Every group, the metadata group first.
    pub fn all(&self) -> impl Iterator<Item = &GroupPlace> {
        std::iter::once(&self.meta).chain(self.places.iter())
    }

    /// The groups in which `member` votes.
    pub fn groups_of<'a>(&'a self, member: &'a str) -> impl Iterator<Item = &'a GroupPlace> {
        self.all()
            .filter(move |p| p.voters.iter().any(|v| v == member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node{i}")).collect()
    }

    #[test]
    fn every_group_gets_distinct_voters_and_leaders_spread_within_one() {
        for (n, rf, groups) in [(3, 3, 12), (5, 3, 16), (4, 2, 7), (2, 2, 5)] {
            let m = members(n);
            let p = Placement::new(&m, groups, rf);
            let mut leads = vec![0usize; n];
            for g in 0..groups {
                let place = p.place(GroupId(g)).unwrap();
                let mut voters = place.voters.clone();
                voters.sort();
                voters.dedup();
                assert_eq!(voters.len(), rf, "group {g} of {n} nodes");
                let leader = m.iter().position(|x| *x == place.voters[0]).unwrap();
                leads[leader] += 1;
            }
            let (min, max) = (leads.iter().min().unwrap(), leads.iter().max().unwrap());
            assert!(max - min <= 1, "{leads:?} for {n} nodes, rf {rf}");
        }
    }

    #[test]
    fn placement_depends_on_ids_not_on_list_order() {
        let m = members(5);
        let mut reversed = m.clone();
        reversed.reverse();
        let (a, b) = (Placement::new(&m, 8, 3), Placement::new(&reversed, 8, 3));
        for g in 0..8 {
            let (mut va, mut vb) = (
                a.place(GroupId(g)).unwrap().voters.clone(),
                b.place(GroupId(g)).unwrap().voters.clone(),
            );
            va.sort();
            vb.sort();
            assert_eq!(va, vb);
        }
        assert_eq!(a.place(GroupId::META).unwrap().voters.len(), 5);
    }

    #[test]
    fn shards_map_onto_groups() {
        let p = Placement::new(&members(3), 12, 3);
        assert_eq!(p.group_of(0), GroupId(0));
        assert_eq!(p.group_of(25), GroupId(1));
        assert_eq!(p.groups_of("node1").count(), 13);
    }
}
