//! The configurable limits, each with a small configured value, against a
//! real `webhookd serve` on loopback. Requests that must reach the server byte for byte (huge
//! or many headers, chunked bodies, trickled headers, held connections) go over a raw
//! [`TcpStream`]; every wait is bounded.
//!
//! * `http.max_body_bytes` → 413 at the exact boundary and for a chunked body (the plain case
//!   is also in `errors::misc::body_over_the_limit_is_413`);
//! * `http.max_header_bytes` / `http.max_headers` → 431 (hyper's answer);
//! * `http.header_read_timeout_secs` → a client trickling its header is cut off;
//! * `http.keepalive_idle_secs` → an idle keep-alive connection is closed;
//! * `http.max_connections` → further clients wait until a slot frees;
//! * `security.max_event_data_bytes` → 413 at registration and at trigger.
//!
//! `security.key_resets_per_hour` (429 with `Retry-After`) is covered by
//! `admin_rules::api_key_resets_are_rate_limited` and its neighbours, not repeated here.

mod raw;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use raw::{assert_node_serves, get_request, numbered_headers, RawConn};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for connecting, writing, or reading one expected response.
const IO_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// http.max_body_bytes
// ---------------------------------------------------------------------------------------------

const MAX_BODY: usize = 2048;

/// A registration body of exactly `len` bytes (JSON, padded in `description`).
fn registration_body(len: usize) -> String {
    let frame = |pad: &str| format!(r#"{{"event":"e","description":"{pad}","event_data":null}}"#);
    let overhead = frame("").len();
    assert!(len >= overhead);
    let body = frame(&"d".repeat(len - overhead));
    assert_eq!(body.len(), len);
    body
}

/// A chunked POST /v1/webhook/registration carrying `body` in chunks of 700 bytes.
fn chunked_registration(who: &Account, body: &str) -> Vec<u8> {
    let mut req = format!(
        "POST /v1/webhook/registration HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         content-type: application/json\r\nusername: {}\r\napi-key: {}\r\n\
         transfer-encoding: chunked\r\n\r\n",
        who.username, who.api_key
    )
    .into_bytes();
    for chunk in body.as_bytes().chunks(700) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_size_limit_is_exact_and_covers_chunked_bodies() {
    let w = World::with_config(&format!("[http]\nmax_body_bytes = {MAX_BODY}")).await;
    let post = || w.node.post("/v1/webhook/registration").auth(&w.john);

    // Content-Length exactly at the limit is accepted, one byte more is refused.
    post()
        .body(registration_body(MAX_BODY))
        .send()
        .await
        .expect(201);
    post()
        .body(registration_body(MAX_BODY + 1))
        .send()
        .await
        .expect_error(413, "Request body too large");

    // Chunked (no Content-Length): the limit applies to the bytes actually received.
    let mut c = RawConn::connect(w.node.addr).await;
    let r = c
        .exchange(
            &chunked_registration(&w.john, &registration_body(MAX_BODY)),
            "chunked at the limit",
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let mut c = RawConn::connect(w.node.addr).await;
    let r = c
        .exchange(
            &chunked_registration(&w.john, &registration_body(MAX_BODY * 2)),
            "chunked over the limit",
        )
        .await;
    r.expect_error(413, "Request body too large");

    // Only the two accepted bodies were stored, and the node still serves.
    assert_eq!(w.node.all_registrations().await.len(), 2);
    assert_node_serves(w.node.addr).await;
}

// ---------------------------------------------------------------------------------------------
// http.max_header_bytes / http.max_headers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_huge_header_is_431() {
    // 1024 is the smallest allowed value.
    let node = TestNode::spawn_with("[http]\nmax_header_bytes = 1024").await;

    // A header section well under the limit is served.
    let small = vec![("x-pad".to_string(), "p".repeat(600))];
    let mut c = RawConn::connect(node.addr).await;
    let r = c
        .exchange(&get_request("/health", &small), "600-byte header")
        .await;
    assert_eq!(r.status, 200, "{r}");

    // Just over the limit, within hyper's read buffer, and far beyond that buffer.
    for size in [1100, 4 * 1024, 32 * 1024] {
        let huge = vec![("x-pad".to_string(), "p".repeat(size))];
        let mut c = RawConn::connect(node.addr).await;
        let r = c
            .exchange(
                &get_request("/health", &huge),
                &format!("{size}-byte header"),
            )
            .await;
        assert_eq!(r.status, 431, "a {size}-byte header should be refused: {r}");
    }
    // The same through an ordinary client, on an API route.
    let r = node
        .get("/v1/accounts?start=0&limit=10")
        .auth(&node.admin())
        .header("x-pad", &"p".repeat(4096))
        .send()
        .await;
    assert_eq!(r.status, 431, "{r}");
    assert_node_serves(node.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_431() {
    // 8 is the smallest allowed value; `Host` counts as one.
    let node = TestNode::spawn_with("[http]\nmax_headers = 8").await;
    let mut c = RawConn::connect(node.addr).await;
    let r = c
        .exchange(&get_request("/health", &numbered_headers(6)), "7 headers")
        .await;
    assert_eq!(r.status, 200, "{r}");

    for n in [8, 20, 100] {
        let mut c = RawConn::connect(node.addr).await;
        let r = c
            .exchange(
                &get_request("/health", &numbered_headers(n)),
                &format!("{} headers", n + 1),
            )
            .await;
        assert_eq!(r.status, 431, "{} headers should be refused: {r}", n + 1);
    }
    assert_node_serves(node.addr).await;
}

// ---------------------------------------------------------------------------------------------
// http.header_read_timeout_secs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_header_is_cut_off() {
    let node = TestNode::spawn_with("[http]\nheader_read_timeout_secs = 1.0").await;

    // Control: a header that arrives in three pieces within 0.6 s is served.
    let request = get_request("/health", &[]);
    let mut c = RawConn::connect(node.addr).await;
    for piece in request.chunks(request.len().div_ceil(3)) {
        c.send(piece).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c.response("header sent in 0.6 s").await;
    assert_eq!(r.status, 200, "{r}");

    // One byte every 200 ms: the ~100-byte header would take ~20 s.
    let request = get_request("/health", &[("x-slow".into(), "s".repeat(50))]);
    let stream = TcpStream::connect(node.addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut sent = 0;
    let mut received = Vec::new();
    let closed_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the server still had the connection open after {:?} ({sent} bytes sent, \
             received {:?})",
            started.elapsed(),
            String::from_utf8_lossy(&received)
        );
        let mut chunk = [0u8; 1024];
        tokio::select! {
            _ = tick.tick() => {
                assert!(sent < request.len(), "the whole header was sent without a cut-off");
                if wr.write_all(&request[sent..sent + 1]).await.is_err() {
                    break started.elapsed();
                }
                sent += 1;
            }
            read = rd.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break started.elapsed(),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            },
        }
    };
    println!(
        "trickling client cut off after {closed_after:?}, {sent} of {} bytes sent",
        request.len()
    );
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after <= Duration::from_secs(3),
        "expected a cut-off ~1 s after the first byte, got {closed_after:?}"
    );
    // Whatever the server said before closing (if anything) is not a 5xx and not a 200.
    let said = String::from_utf8_lossy(&received);
    assert!(
        !said.starts_with("HTTP/1.1 5") && !said.starts_with("HTTP/1.1 2"),
        "{said}"
    );

    // A normal request on a new connection still works.
    assert_node_serves(node.addr).await;
}

// ---------------------------------------------------------------------------------------------
// http.keepalive_idle_secs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let node = TestNode::spawn_with("[http]\nkeepalive_idle_secs = 1.0").await;
    let mut c = RawConn::connect(node.addr).await;
    let request = get_request("/health", &[]);
    let r = c.exchange(&request, "first request").await;
    assert_eq!(r.status, 200, "{r}");
    // Within the idle time the connection is reused (and the idle clock restarts).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c.exchange(&request, "second request after 0.5 s").await;
    assert_eq!(r.status, 200, "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c.exchange(&request, "third request after 0.5 s").await;
    assert_eq!(r.status, 200, "{r}");

    let (closed, extra) = c.wait_closed(Duration::from_secs(5)).await;
    let closed = closed.unwrap_or_else(|| {
        panic!("an idle keep-alive connection was still open after 5 s (keepalive_idle_secs = 1)")
    });
    println!("idle keep-alive connection closed after {closed:?}");
    assert!(
        closed >= Duration::from_millis(900) && closed <= Duration::from_secs(3),
        "expected the close ~1 s after the last response, got {closed:?}"
    );
    assert!(
        extra.is_empty(),
        "nothing is sent on an idle connection: {:?}",
        String::from_utf8_lossy(&extra)
    );
    assert_node_serves(node.addr).await;
}

// ---------------------------------------------------------------------------------------------
// http.max_connections
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_until_a_slot_frees() {
    let node = TestNode::spawn_with("[http]\nmax_connections = 2").await;
    let request = get_request("/health", &[]);

    // Two connections that completed a request each and stay open (keep-alive).
    let mut first = RawConn::connect(node.addr).await;
    assert_eq!(first.exchange(&request, "first").await.status, 200);
    let mut second = RawConn::connect(node.addr).await;
    assert_eq!(second.exchange(&request, "second").await.status, 200);

    // A third client connects (the kernel's backlog) but is not served while both are held.
    let mut third = RawConn::connect(node.addr).await;
    third.send(&request).await;
    let waited = tokio::time::timeout(Duration::from_millis(800), third.read_response()).await;
    assert!(
        waited.is_err(),
        "the third connection was answered while two were held: {waited:?}"
    );
    // The held connections are still served meanwhile.
    assert_eq!(second.exchange(&request, "second, again").await.status, 200);

    // One held connection closes: the waiting client is answered.
    let released = Instant::now();
    drop(first);
    let r = tokio::time::timeout(Duration::from_secs(5), third.read_response())
        .await
        .expect("the waiting client was not answered within 5 s of a slot freeing")
        .expect("reading the third response");
    assert_eq!(r.status, 200, "{r}");
    println!(
        "third connection answered {:?} after a slot freed",
        released.elapsed()
    );
    drop(second);
    drop(third);
    // With the slots free again, new clients are served at once.
    assert_node_serves(node.addr).await;
    assert_node_serves(node.addr).await;
}

// ---------------------------------------------------------------------------------------------
// security.max_event_data_bytes
// ---------------------------------------------------------------------------------------------

const MAX_EVENT_DATA: usize = 64;

/// A JSON string whose compact form is `len` bytes: quotes plus `len - 2` bytes of `unit`.
fn json_string_of(len: usize, unit: &str) -> Value {
    let content = len - 2;
    assert_eq!(
        content % unit.len(),
        0,
        "{len} is not reachable with {unit:?}"
    );
    Value::String(unit.repeat(content / unit.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_data_size_is_limited_at_registration_and_trigger() {
    let w = World::with_config(&format!(
        "[security]\nmax_event_data_bytes = {MAX_EVENT_DATA}"
    ))
    .await;
    let register = |event_data: Value| {
        w.node
            .post("/v1/webhook/registration")
            .auth(&w.john)
            .json(&json!({"event": "sized", "description": "d", "event_data": event_data}))
    };

    // Registration: the compact JSON text of event_data counts, in bytes.
    let at_limit = json_string_of(MAX_EVENT_DATA, "x");
    let reg = id_of(register(at_limit.clone()).send().await.expect(201).json());
    register(json_string_of(MAX_EVENT_DATA + 1, "x"))
        .send()
        .await
        .expect_error(413, "event_data too large");
    // 31 two-byte characters: 31 characters but 64 bytes → accepted; 32 → 66 bytes → refused.
    register(json_string_of(MAX_EVENT_DATA, "é"))
        .send()
        .await
        .expect(201);
    register(json_string_of(MAX_EVENT_DATA + 2, "é"))
        .send()
        .await
        .expect_error(413, "event_data too large");
    // Whitespace in the request does not count (compact form `{"a":[1,2,3]}`).
    let spaced = format!(
        r#"{{"event": "sized", "description": "d", "event_data": {{"a"{pad}:{pad}[1,{pad}2,{pad}3]}}}}"#,
        pad = " ".repeat(100)
    );
    w.node
        .post("/v1/webhook/registration")
        .auth(&w.john)
        .body(spaced)
        .send()
        .await
        .expect(201);
    // An object over the limit.
    let big_object = json!({"items": (0..20).collect::<Vec<_>>(), "more": "x".repeat(20)});
    assert!(big_object.to_string().len() > MAX_EVENT_DATA);
    register(big_object)
        .send()
        .await
        .expect_error(413, "event_data too large");
    assert_eq!(
        w.node.all_registrations().await.len(),
        3,
        "refused registrations are not stored"
    );

    // Trigger with a body {"event_data": ...}: the same limit.
    let trigger = |body: Value| {
        w.node
            .post(&format!("/v1/webhook/triggered/{reg}"))
            .auth(&w.john)
            .json(&body)
    };
    trigger(json!({"event_data": json_string_of(MAX_EVENT_DATA + 1, "x")}))
        .send()
        .await
        .expect_error(413, "event_data too large");
    trigger(json!({"event_data": json_string_of(MAX_EVENT_DATA + 2, "é")}))
        .send()
        .await
        .expect_error(413, "event_data too large");
    assert!(
        w.node.all_triggered().await.is_empty(),
        "a refused trigger leaves no triggered record"
    );
    trigger(json!({"event_data": at_limit}))
        .send()
        .await
        .expect(201);
    // Without a body the registered event_data is used (no size question).
    w.node.trigger(&w.john, &reg).await;
    assert_eq!(w.node.all_triggered().await.len(), 2);
}
