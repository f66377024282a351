//! The cluster: how keys map to shards and shards to nodes.
//!
//! A single node is a cluster of one: the same shard map is computed and every shard is
//! local. Remote routing plugs in here without changing the callers.

pub mod shard;

pub use shard::{ShardId, ShardMap};
