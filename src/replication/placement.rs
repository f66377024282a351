//! Where each group lives: its voters and its preferred leader, a pure function of the
//! configuration, so every node computes the same placement without asking.
//!
//! Voters are the `replication_factor` members with the highest rendezvous weight for the
//! group (adding a member later moves mostly the groups it wins), repaired so that every
//! member holds as many groups as any other, within one. Preferred leaders are then
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

/// Each group's `rf` voters (indexes into `members`): the members of highest rendezvous
/// weight, then repaired until every member holds as many groups as any other, within
/// one: while two members differ by more, the fuller one gives the emptier one the group
/// it weighs least against it. A member added or removed moves about its share of groups,
/// plus the few the repair moves.
fn balanced_voters(members: &[String], groups: u16, rf: usize) -> Vec<Vec<usize>> {
    let n = members.len();
    let mut voters: Vec<Vec<usize>> = (0..groups)
        .map(|g| {
            let mut ranked: Vec<usize> = (0..n).collect();
            ranked.sort_by_key(|&i| (std::cmp::Reverse(weight(GroupId(g), &members[i])), i));
            ranked.truncate(rf);
            ranked
        })
        .collect();
    let mut count = vec![0usize; n];
    for v in voters.iter().flatten() {
        count[*v] += 1;
    }
    // Ties go by id, never by list position: every node computes the same placement.
    let fullest =
        |count: &[usize]| (0..n).max_by_key(|&i| (count[i], std::cmp::Reverse(&members[i])));
    let emptiest = |count: &[usize]| (0..n).min_by_key(|&i| (count[i], &members[i]));
    while let (Some(over), Some(under)) = (fullest(&count), emptiest(&count)) {
        if count[over] <= count[under] + 1 {
            break;
        }
        // The fuller member holds a group the emptier one does not: give it the one where
        // the emptier member weighs most against the fuller one.
        let gain = |g: usize| {
            let group = GroupId(u16::try_from(g).unwrap_or(u16::MAX));
            i128::from(weight(group, &members[under])) - i128::from(weight(group, &members[over]))
        };
        let Some(g) = (0..voters.len())
            .filter(|&g| voters[g].contains(&over) && !voters[g].contains(&under))
            .max_by_key(|&g| (gain(g), std::cmp::Reverse(g)))
        else {
            break;
        };
        for v in voters[g].iter_mut().filter(|v| **v == over) {
            *v = under;
        }
        count[over] -= 1;
        count[under] += 1;
    }
    voters
}

impl Placement {
    /// The placement of `groups` groups with `replication_factor` voters over `members`.
    pub fn new(members: &[String], groups: u16, replication_factor: usize) -> Self {
        let groups = groups.max(1);
        let rf = replication_factor.clamp(1, members.len().max(1));
        let voters = balanced_voters(members, groups, rf);
        let mut preferred_count: Vec<usize> = vec![0; members.len()];
        let mut places = Vec::with_capacity(usize::from(groups));
        for (g, mut ranked) in (0..groups).zip(voters) {
            let group = GroupId(g);
            ranked.sort_by_key(|&i| (std::cmp::Reverse(weight(group, &members[i])), i));
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
        for (n, rf, groups) in [
            (3, 3, 12),
            (4, 3, 12),
            (5, 3, 12),
            (5, 3, 16),
            (7, 3, 12),
            (4, 2, 7),
            (2, 2, 5),
        ] {
            let m = members(n);
            let p = Placement::new(&m, groups, rf);
            let (mut leads, mut replicas) = (vec![0usize; n], vec![0usize; n]);
            for g in 0..groups {
                let place = p.place(GroupId(g)).unwrap();
                let mut voters = place.voters.clone();
                voters.sort();
                voters.dedup();
                assert_eq!(voters.len(), rf, "group {g} of {n} nodes");
                let leader = m.iter().position(|x| *x == place.voters[0]).unwrap();
                leads[leader] += 1;
                for v in &voters {
                    replicas[m.iter().position(|x| x == v).unwrap()] += 1;
                }
            }
            let (min, max) = (leads.iter().min().unwrap(), leads.iter().max().unwrap());
            assert!(max - min <= 1, "{leads:?} for {n} nodes, rf {rf}");
            let (min, max) = (
                replicas.iter().min().unwrap(),
                replicas.iter().max().unwrap(),
            );
            assert!(
                max - min <= 1,
                "replicas {replicas:?} for {n} nodes, rf {rf}"
            );
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
