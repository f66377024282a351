//! The benchmark harness, shared by `webhookd bench` (a running node, from the outside)
//! and `cargo bench --bench fanout` (a node started for the run).
//!
//! * [`sink`]: the receiving server every subscriber's endpoint points at; it records
//!   each delivery's arrival time and trigger.
//! * [`client`]: the `/v1` API client for setup calls and triggers.
//! * [`pool`]: bounded-concurrency job runner.
//! * [`run`]: the scenarios (setup, fan-out, idle latency) and their figures.
//! * [`load`]: closed-loop load (the API read rate) and a hello-world server.
//! * [`ceiling`]: the HTTP ceiling, a lean client sending delivery-like POSTs to the sink.
//! * [`wire`]: the HTTP/1.1 framing of the sink and the ceiling's client.
//! * [`own_thread`]: a thread of its own for each, so that its CPU is read apart.
//! * [`node`]: a node run as a child process, and its `/proc` figures.
//! * [`cluster`]: a local cluster of such nodes on `127.0.0.1`, `127.0.0.2`, ...
//! * [`groups`]: its replicated groups as `GET /v1/cluster` shows them.
//! * [`stats`]: percentiles, rates, time buckets.
//! * [`progress`]: the progress bar on stderr.
//! * [`report`]: summary table, JSON and SVG output.
//! * [`cli`]: the `webhookd bench` subcommand.

pub mod ceiling;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod error;
pub mod groups;
pub mod load;
pub mod node;
pub mod own_thread;
pub mod pool;
pub mod progress;
pub mod report;
pub mod run;
pub mod sink;
pub mod stats;
pub mod wire;

pub use error::{BenchError, BenchResult};
