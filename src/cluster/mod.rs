//! The cluster as a transport: shards, membership, and typed requests between nodes.
//!
//! Every key maps to a virtual shard and every shard to one member node ([`shard`]). A
//! subsystem that needs a peer declares its operations as [`rpc::Rpc`] types, serves them
//! with [`Cluster::serve`] and asks with [`Cluster::call`]; the frames travel over one
//! cookie-authenticated `ractor_cluster` connection per peer to the peer's
//! [`gateway::Gateway`]. This module knows no domain type: it never imports the service,
//! the actors or the store. A single node is a cluster of one: every shard is local.

pub mod gateway;
pub mod layout;
pub mod membership;
mod peer;
pub mod rpc;
pub mod shard;

/// A member's id and addresses (configured, or admitted at run time).
pub use crate::config::Member;
pub use membership::{Cluster, Owner, Peer, PeerState, ShardOwners};
pub(crate) use rpc::rpc;
pub use rpc::{CallError, Rpc};
pub use shard::{ShardId, ShardMap};
