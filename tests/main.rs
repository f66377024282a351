//! The black-box integration tests, built as one test binary (`cargo test --test it`).
//!
//! One binary instead of one per suite: the helpers in [`common`] are compiled and linked
//! once, and each helper counts as used when any suite uses it. The suites share one process,
//! so no test may change process-global state (environment variables, the current
//! directory): every node gets its settings through its own config file and command.
//!
//! The soak test is `#[ignore]`d; run it with `cargo test --test it -- --ignored soak::`
//! (`SOAK_SECS` sets its length).

mod common;

mod admin_rules;
mod architecture;
mod auth_flood;
mod cli;
mod cluster;
mod concurrent_subscribes;
mod config_and_logs;
mod delivery;
mod delivery_crash;
mod docs_config;
mod docs_tour;
mod endpoint_policy;
mod errors;
mod functional;
mod hardening;
mod limits;
mod local_cluster_script;
mod pagination;
mod pyjson_differential;
mod restart;
mod schemathesis;
mod soak;
mod storage_full;
