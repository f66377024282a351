//! Virtual shards, the shard → node map and shard-aligned ids.
//!
//! `shard(key) = fnv1a64(key) % shards` uses a hash fixed by its definition, so every node of
//! every version computes the same shard for the same key. Shard → node is rendezvous
//! hashing over the member list, a pure function of the configuration.

use uuid::Uuid;

/// Index of a virtual shard.
pub type ShardId = u16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// Lower-case hex digits of two bytes, as a UUID's text spells them.
fn hex_lower(bytes: [u8; 2]) -> [u8; 4] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let nibble = |n: u8| DIGITS[usize::from(n & 0x0f)];
    [
        nibble(bytes[0] >> 4),
        nibble(bytes[0]),
        nibble(bytes[1] >> 4),
        nibble(bytes[1]),
    ]
}

/// SplitMix64 finaliser: spreads FNV's weak low bits before the modulo and rendezvous.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard space and which node owns each shard.
#[derive(Debug, Clone)]
pub struct ShardMap {
    shards: u16,
    members: Vec<String>,
    owners: Vec<usize>,
}

impl ShardMap {
    /// Builds the map for `shards` virtual shards over `members` (node ids).
    ///
    /// The member order does not matter: rendezvous weights depend only on the ids.
    pub fn new(shards: u16, members: Vec<String>) -> Self {
        let shards = shards.max(1);
        let owners = (0..shards)
            .map(|s| {
                members
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, node)| {
                        let mut key = s.to_be_bytes().to_vec();
                        key.extend_from_slice(node.as_bytes());
                        (mix(fnv1a64(&key)), node.as_str())
                    })
                    .map(|(i, _)| i)
                    .unwrap_or(0)
            })
            .collect();
        Self {
            shards,
            members,
            owners,
        }
    }

    /// Number of virtual shards.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The shard of an arbitrary key.
    pub fn shard_of(&self, key: &[u8]) -> ShardId {
        (mix(fnv1a64(key)) % u64::from(self.shards)) as ShardId
    }

    /// The shard an id lives on: the shard of its canonical hyphenated text.
    pub fn shard_of_id(&self, id: &Uuid) -> ShardId {
        let mut buf = Uuid::encode_buffer();
        self.shard_of(id.hyphenated().encode_lower(&mut buf).as_bytes())
    }

    /// Node id owning `shard`.
    pub fn owner(&self, shard: ShardId) -> Option<&str> {
        self.owners
            .get(usize::from(shard))
            .and_then(|i| self.members.get(*i))
            .map(String::as_str)
    }

    /// A fresh UUIDv4 that lives on `shard`.
    ///
    /// One random draw, then candidates that differ from it only in the id's last two
    /// bytes (the last four characters of its text), until one hashes to `shard`
    /// (expected `shards` tries). FNV-1a reads the text left to right, so the hash of the
    /// unchanged first 32 characters is computed once and each try hashes four more. The
    /// id stays unpredictable without paying a system call per candidate.
    pub fn new_id_in(&self, shard: ShardId) -> Uuid {
        loop {
            let base = *Uuid::new_v4().as_bytes();
            let mut text = Uuid::encode_buffer();
            let prefix = Uuid::from_bytes(base)
                .hyphenated()
                .encode_lower(&mut text)
                .len()
                - 4;
            let state = fnv1a64(&text[..prefix]);
            let tail = u16::from_be_bytes([base[14], base[15]]);
            for k in 0..=u16::MAX {
                let last = (tail ^ k).to_be_bytes();
                let digits = hex_lower(last);
                let hash = digits
                    .iter()
                    .fold(state, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME));
                if (mix(hash) % u64::from(self.shards)) as ShardId == shard {
                    let mut bytes = base;
                    bytes[14..].copy_from_slice(&last);
                    return Uuid::from_bytes(bytes);
                }
            }
        }
    }

    /// A digest of (shards, member list), compared by peers before they talk.
    pub fn digest(&self) -> u64 {
        let mut members = self.members.clone();
        members.sort();
        let mut bytes = self.shards.to_be_bytes().to_vec();
        for m in members {
            bytes.extend_from_slice(m.as_bytes());
            bytes.push(0);
        }
        fnv1a64(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shard_is_stable_and_in_range() {
        let map = ShardMap::new(256, vec!["n1".into()]);
        let s = map.shard_of(b"johndoe");
        assert!(s < 256);
        assert_eq!(
            s,
            ShardMap::new(256, vec!["other".into()]).shard_of(b"johndoe")
        );
    }

    #[test]
    fn new_ids_land_on_the_requested_shard() {
        for shards in [1u16, 7, 256, 4096] {
            let map = ShardMap::new(shards, vec!["n1".into()]);
            for shard in [0, shards / 3, shards - 1] {
                let a = map.new_id_in(shard);
                let b = map.new_id_in(shard);
                assert_eq!(map.shard_of_id(&a), shard);
                assert_eq!(a.get_version_num(), 4);
                assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn single_member_owns_everything() {
        let map = ShardMap::new(64, vec!["only".into()]);
        assert!((0..64).all(|s| map.owner(s) == Some("only")));
    }

    #[test]
    fn rendezvous_is_order_independent_and_balanced() {
        let a = ShardMap::new(256, vec!["a".into(), "b".into(), "c".into()]);
        let b = ShardMap::new(256, vec!["c".into(), "a".into(), "b".into()]);
        let mut counts = std::collections::HashMap::new();
        for s in 0..256 {
            assert_eq!(a.owner(s), b.owner(s));
            *counts.entry(a.owner(s).unwrap().to_string()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|c| *c > 50), "{counts:?}");
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn removing_a_member_only_moves_its_shards() {
        let three = ShardMap::new(256, vec!["a".into(), "b".into(), "c".into()]);
        let two = ShardMap::new(256, vec!["a".into(), "b".into()]);
        for s in 0..256 {
            if three.owner(s) != Some("c") {
                assert_eq!(three.owner(s), two.owner(s));
            }
        }
    }
}
