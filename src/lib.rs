//! webhookd: a clustered, PyWebhooks-compatible webhooks daemon.
//!
//! The path of a request: [`http`] (hyper server, route matching, guards, error mapping) →
//! [`api`] (the route table; one module per resource: parse → authorise → ask → respond) →
//! [`service`] (one type per operation, served by the node that owns its shard, here or
//! through [`cluster`]) → [`actors`] (per-account and per-registration actors that order
//! every mutation) → [`store`] (sled trees and indexes). [`domain`] holds the vocabulary
//! they share; [`delivery`] the outbound HTTP of deliveries and echo challenges.
//! `docs/architecture.md` draws both paths and the rules between the layers.

pub mod actors;
pub mod api;
pub mod auth_throttle;
pub mod bench;
pub mod byte_strings;
pub mod cluster;
pub mod cluster_cli;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod replication;
pub mod service;
pub mod store;
