//! Shared helpers for the black-box integration tests, one module per concern:
//!
//! * [`node`]: [`TestNode`], the real `webhookd serve` binary as a child process on a fresh
//!   temp dir ([`TestConfig`]); [`cli`]: other `webhookd` invocations run to completion.
//! * [`http`]: [`Req`] / [`Resp`], a small HTTP client (every request sends
//!   `content-type: application/json` unless told otherwise, and no answer may be a 5xx);
//!   [`api`]: the request helpers of one node ([`Api`], which a [`TestNode`] derefs to).
//! * [`endpoint`]: [`EndpointServer`], a real hyper server in the test process standing in
//!   for the account endpoints (echo challenge, key resets, deliveries).
//! * [`records`]: credentials and accounts; [`messages`]: the API's error messages;
//!   [`world`]: a node with two accounts, the starting point of the per-route tests.
//! * [`signatures`] and [`delivery`]: what a delivery must carry and what the engine reports.
//! * [`poll`]: [`eventually`], to poll with a deadline instead of sleeping; [`python`]: a
//!   pinned Python package (a reference implementation) in a virtual environment.
//! * [`cluster`]: several nodes on loopback joined into one cluster; [`scenario`]: the
//!   original service's functional scenario, run on one node and on a cluster.
//! * [`history`]: the linearizability checker of the cluster's history test.
//!
//! The suites import everything at once (`use crate::common::*`).

pub mod api;
pub mod cli;
pub mod cluster;
pub mod delivery;
pub mod endpoint;
pub mod history;
pub mod http;
pub mod messages;
pub mod node;
pub mod poll;
pub mod python;
pub mod records;
pub mod scenario;
pub mod signatures;
pub mod world;

pub use cli::*;
pub use delivery::*;
pub use endpoint::*;
pub use http::*;
pub use messages::*;
pub use node::config::*;
pub use node::TestNode;
pub use poll::*;
pub use records::*;
pub use signatures::*;
pub use world::*;
