//! webhookd: a clustered, PyWebhooks-compatible webhooks daemon.
//!
//! The path of a request: [`http`] (hyper server, routing, guards, error mapping) →
//! [`api`] (one module per resource: parse → authorise → ask → respond) → [`service`]
//! (the node's façade: shard routing, authentication) → [`actors`] (per-account and
//! per-registration actors that own every mutation) → [`store`] (sled trees and indexes).

pub mod actors;
pub mod api;
pub mod auth_throttle;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod delivery;
pub mod http;
pub mod service;
pub mod store;
