//! Shards, recomputed here independently of the daemon's definition, and a small seeded
//! PRNG for the randomised tests (no `rand` in the dev-dependencies).

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64 finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard of a key (a username, or an id's hyphenated lowercase text).
pub fn shard_of(key: &str, shards: u16) -> usize {
    (mix(fnv1a64(key.as_bytes())) % u64::from(shards)) as usize
}

/// SplitMix64: deterministic for a seed, good enough to pick nodes.
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The seed of a randomised test: `CLUSTER_TEST_SEED` when set, else the clock. Printed, so
/// a failing run can be repeated.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var("CLUSTER_TEST_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER_TEST_SEED is not a u64: {v:?}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    };
    println!("{test}: PRNG seed {seed} (repeat with CLUSTER_TEST_SEED={seed})");
    seed
}
