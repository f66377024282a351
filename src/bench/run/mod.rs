//! The scenarios: setting up accounts, registrations and subscriptions through the API
//! ([`setup`]), firing triggers at a fan-out ([`fanout`]) or one by one on an idle node
//! ([`idle`]), and turning the sink's arrivals into figures.
//!
//! Every trigger carries its own payload (`{"event_data": {..., "seq": N}}`, made here), so
//! each delivery the sink receives names the trigger it belongs to. Latencies are measured
//! on one clock (the sink's): trigger request sent → delivery body received.

pub mod fanout;
pub mod idle;
pub mod setup;

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use hyper::header::HeaderMap;
use serde_json::{json, Value};

pub use fanout::{run_fanout, FanoutReport, FanoutSpec, Persisted};
pub use idle::{idle_latency, IdleLatency, IdleSpec};
pub use setup::{
    create_accounts, create_registrations, delete_accounts, subscribe_all, warm_auth, SetupOptions,
    StepFigure,
};

/// The event name of every bench registration.
pub const EVENT: &str = "bench.fanout";
/// Padding that brings a delivery body to 132 bytes (the size of the ceiling's body).
const PAD: usize = 84;
/// First sequence number handed out (7 digits, so every body has the same size).
const FIRST_SEQ: u32 = 1_000_000;

static NEXT_SEQ: AtomicU32 = AtomicU32::new(FIRST_SEQ);

/// A fresh trigger sequence number (unique in this process).
pub fn next_seq() -> u32 {
    NEXT_SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The payload of trigger `seq`; delivered as `{"bench": "webhookd", "seq": N, "pad": ...}`.
pub fn event_data(seq: u32) -> Value {
    json!({ "bench": "webhookd", "seq": seq, "pad": "x".repeat(PAD) })
}

/// The exact body and headers the node sends for a bench delivery (signatures over a
/// dummy key), for the ceiling measurement.
pub fn delivery_like_request() -> (Bytes, HeaderMap) {
    let body = Bytes::from(crate::delivery::pyjson::to_python_json(&event_data(
        FIRST_SEQ,
    )));
    let request = crate::delivery::attempt::Request {
        endpoint: "http://127.0.0.1/",
        secret_key: "0123456789abcdef0123456789abcdef01234567",
        previous_secret_key: None,
        event: EVENT,
        body: body.clone(),
        delivery_id: uuid::Uuid::new_v4(),
        timestamp: 1_700_000_000,
    };
    (body, crate::delivery::attempt::headers(&request))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_ceiling_size_and_carry_their_seq() {
        let (body, headers) = delivery_like_request();
        assert_eq!(body.len(), 132);
        assert_eq!(crate::bench::sink::seq_of(&body), Some(FIRST_SEQ));
        assert!(headers.contains_key("pywebhooks-signature"));
        let later = crate::delivery::pyjson::to_python_json(&event_data(9_999_999));
        assert_eq!(later.len(), 132);
    }
}
