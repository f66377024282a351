//! The cluster: shards, membership, the node-to-node protocol and its gateway.
//!
//! Every key maps to a virtual shard and every shard to one member node. A request is
//! served by its shard's owner: locally, or through the owner's [`gateway::NodeGateway`].
//! A single node is a cluster of one: the same code path, every shard local.

pub mod gateway;
pub mod membership;
pub mod protocol;
pub mod shard;

pub use membership::{Cluster, Owner, Peer, PeerState};
pub use shard::{ShardId, ShardMap};
