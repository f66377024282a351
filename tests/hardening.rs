//! Hardening against hostile clients and endpoints, black-box against a real
//! `webhookd serve` on loopback:
//!
//! * `http.request_timeout_secs`: clients that send a header and half a body are cut off,
//!   so they cannot hold every connection slot, and `/health` stays answered;
//! * `http.max_connections_per_ip`: one client address cannot take every slot;
//! * `http_client.max_response_bytes`: an endpoint answering the echo challenge, a key reset
//!   or a delivery with an endless body does not grow the node's memory;
//! * a delivery answered `200` at once, its body then dripping, is one successful attempt;
//! * the "this host" addresses (`0.0.0.0`, `0`, `[::]`) are refused under a deny list that
//!   covers loopback, directly and as a redirect target.
//!
//! The misbehaving endpoints are a small raw HTTP/1.1 server of this file ([`Hostile`]);
//! every wait is bounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const ECHO_FAILED: &str = "Echo response failed";
/// Bound for one expected response or close.
const IO_DEADLINE: Duration = Duration::from_secs(10);
/// A second loopback address, used as another client address or another endpoint host.
const OTHER_LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

// ---------------------------------------------------------------------------------------------
// A hostile endpoint server
// ---------------------------------------------------------------------------------------------

/// One request a [`Hostile`] server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
}

/// A raw HTTP/1.1 endpoint server (one request per connection). The first path segment
/// selects its behaviour:
/// * `/echo/…`: answers the echo challenge, key resets and POSTs correctly;
/// * `/flood/…`: answers every GET `200` with an endless body;
/// * `/flood-reset/…`: passes the echo, answers key resets and POSTs with an endless body;
/// * `/drip/…`: passes the echo, answers POSTs `200` at once and then drips the body, one
///   byte every 100 ms;
/// * `/redirect/<host:port>/<rest>`: answers `302` to `http://<host:port>/<rest>` (the
///   query kept).
#[derive(Clone)]
struct Hostile {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Body bytes written by endless answers, all connections together.
    flooded: Arc<AtomicU64>,
}

impl Hostile {
    /// Listens on `ip` (port chosen by the system).
    async fn start(ip: IpAddr) -> Self {
        let listener = TcpListener::bind((ip, 0))
            .await
            .expect("bind hostile server");
        let server = Self {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            flooded: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(s.clone().serve(stream));
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn serve(self, mut stream: TcpStream) {
        let Some((method, target)) = read_request(&mut stream).await else {
            return;
        };
        self.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            target: target.clone(),
        });
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let echo = parse_query(query)
            .into_iter()
            .find(|(k, _)| k == "echo")
            .map(|(_, v)| v);
        let mode = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let _ = match (mode, method.as_str(), echo) {
            ("redirect", _, _) => {
                let rest = path.trim_start_matches("/redirect/");
                let location = match query {
                    "" => format!("http://{rest}"),
                    q => format!("http://{rest}?{q}"),
                };
                let head = format!(
                    "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\
                     connection: close\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await
            }
            ("flood", "GET", _) => self.flood(&mut stream).await,
            ("echo" | "flood-reset" | "drip", "GET", Some(value)) => {
                answer(&mut stream, &json!({ "echo": value }).to_string()).await
            }
            ("flood-reset", _, _) => self.flood(&mut stream).await,
            ("drip", "POST", _) => drip(&mut stream).await,
            _ => answer(&mut stream, "{}").await,
        };
    }

    /// `200` with a chunked body that never ends (until the client goes away).
    async fn flood(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                    transfer-encoding: chunked\r\n\r\n";
        stream.write_all(head.as_bytes()).await?;
        let mut chunk = b"10000\r\n".to_vec();
        chunk.extend_from_slice(b"{\"echo\": \"");
        chunk.resize(7 + 0x10000, b'x');
        chunk.extend_from_slice(b"\r\n");
        loop {
            stream.write_all(&chunk).await?;
            self.flooded.fetch_add(0x10000, Ordering::Relaxed);
        }
    }
}

/// Reads one request (head and `content-length` body); its method and target.
async fn read_request(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    // The body is read so that closing the socket afterwards never resets it.
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut words = head.split_whitespace();
    Some((words.next()?.to_string(), words.next()?.to_string()))
}

/// `200` with the JSON `body`, then close.
async fn answer(stream: &mut TcpStream, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await
}

/// `200` at once, then a 100,000-byte body one byte every 100 ms.
async fn drip(stream: &mut TcpStream) -> std::io::Result<()> {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    for _ in 0..100_000 {
        stream.write_all(b" ").await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Raw clients
// ---------------------------------------------------------------------------------------------

/// A connection from `from` to the node that sent `POST /v1/account` with a declared
/// 1,000-byte body, and only half of it (as far as the node let it: a connection it refused
/// may already be closed).
async fn half_body(node: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind client");
    let mut stream = tokio::time::timeout(IO_DEADLINE, socket.connect(node))
        .await
        .expect("connect timed out")
        .expect("connect");
    let head = "POST /v1/account HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                content-length: 1000\r\n\r\n";
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&[b' '; 500]).await;
    stream
}

/// Waits (up to `deadline`) for the peer to close `stream`; how long that took, and what
/// it said first.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut said = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let left = deadline.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), said)),
            Ok(Ok(n)) => said.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `GET /health` on a fresh connection from 127.0.0.1 (so it needs a free slot); how long
/// it took to be answered 200.
async fn health(node: &TestNode) -> Duration {
    let started = Instant::now();
    let exchange = async {
        let mut s = TcpStream::connect(node.addr).await?;
        s.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
            .await?;
        let mut said = Vec::new();
        s.read_to_end(&mut said).await?;
        std::io::Result::Ok(said)
    };
    let said = tokio::time::timeout(IO_DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("/health not answered within {IO_DEADLINE:?}"))
        .expect("GET /health");
    let said = String::from_utf8_lossy(&said);
    assert!(said.starts_with("HTTP/1.1 200"), "/health: {said}");
    started.elapsed()
}

// ---------------------------------------------------------------------------------------------
// http.request_timeout_secs and http.max_connections_per_ip
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_bodies_are_cut_off_and_health_stays_answered() {
    let node = TestNode::spawn_with(
        "[http]\nmax_connections = 8\nrequest_timeout_secs = 1.0\nmax_connections_per_ip = 100",
    )
    .await;
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // Control: a body sent in three pieces within 0.6 s is read and answered.
    let mut c = TcpStream::connect(node.addr).await.expect("connect");
    let body = br#"{"username": "slowpoke"}"#;
    let head = format!(
        "POST /v1/account HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    for piece in body.chunks(body.len().div_ceil(3)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.write_all(piece).await.unwrap();
    }
    let mut said = [0u8; 12];
    tokio::time::timeout(IO_DEADLINE, c.read_exact(&mut said))
        .await
        .expect("a body sent in 0.6 s was not answered")
        .expect("read");
    assert_eq!(&said, b"HTTP/1.1 400", "{}", String::from_utf8_lossy(&said));

    // Twice as many half-sent bodies as there are slots, kept up for 4 s: each is cut off
    // about 1 s after its first byte (the queued ones once they get a slot).
    let attack_until = Instant::now() + Duration::from_secs(4);
    let cut_offs = Arc::new(Mutex::new(Vec::new()));
    let addr = node.addr;
    let attackers: Vec<_> = (0..16)
        .map(|_| {
            let cut_offs = cut_offs.clone();
            tokio::spawn(async move {
                while Instant::now() < attack_until {
                    let mut s = half_body(addr, loopback).await;
                    let closed = closed_within(&mut s, IO_DEADLINE).await;
                    cut_offs.lock().unwrap().push(closed);
                }
            })
        })
        .collect();
    let mut answered = Vec::new();
    while Instant::now() < attack_until {
        answered.push(health(&node).await);
    }
    for a in attackers {
        a.await.expect("attacker");
    }
    println!("/health answered in {answered:?} during the attack");
    let worst = answered.iter().max().copied().unwrap_or_default();
    assert!(worst < Duration::from_secs(5), "/health took {worst:?}");

    let cut_offs = cut_offs.lock().unwrap().clone();
    assert!(cut_offs.len() >= 16, "{cut_offs:?}");
    for closed in &cut_offs {
        let (after, said) = closed
            .clone()
            .expect("a half-sent body held its connection");
        // Connected at once or queued behind one round of cut-offs, then ~1 s.
        assert!(after <= Duration::from_secs(4), "cut off after {after:?}");
        let said = String::from_utf8_lossy(&said);
        assert!(
            !said.starts_with("HTTP/1.1 2") && !said.starts_with("HTTP/1.1 5"),
            "{said}"
        );
    }
    health(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() {
    let node = TestNode::spawn_with(
        "[http]\nmax_connections = 8\nmax_connections_per_ip = 4\nrequest_timeout_secs = 60.0",
    )
    .await;
    let other = IpAddr::V4(OTHER_LOOPBACK);

    // Eight half-sent bodies from one address: four are held, four are closed at once.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let mut s = half_body(node.addr, other).await;
        match closed_within(&mut s, Duration::from_millis(500)).await {
            Some((_, said)) => {
                assert!(said.is_empty(), "{}", String::from_utf8_lossy(&said));
                refused += 1;
            }
            None => held.push(s),
        }
    }
    assert_eq!((held.len(), refused), (4, 4));

    // The other slots serve other addresses, again and again.
    for _ in 0..3 {
        let took = health(&node).await;
        assert!(took < Duration::from_secs(2), "/health took {took:?}");
    }

    // Once its connections end, the address is served again.
    drop(held);
    eventually("127.0.0.2 to be served again", IO_DEADLINE, || async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::new(other, 0)).ok()?;
        let mut s = socket.connect(node.addr).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut said = Vec::new();
        s.read_to_end(&mut said).await.ok()?;
        said.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// http_client.max_response_bytes
// ---------------------------------------------------------------------------------------------

/// The resident set size of process `pid`, bytes (Linux); `None` once it has ended.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_replies_do_not_grow_the_nodes_memory() {
    let hostile = Hostile::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let node = TestNode::spawn_with(
        "[http_client]\ntimeout_secs = 3.0\n[delivery]\nretry_delays_secs = []",
    )
    .await;
    let pid = node.pid();
    let baseline = rss_bytes(pid).expect("the node's VmRSS");
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            while let Some(rss) = rss_bytes(pid) {
                peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The echo answered with an endless body fails the challenge, promptly.
    let started = Instant::now();
    node.try_create_account("flooder", &hostile.url("flood/a"))
        .await
        .expect_error(400, ECHO_FAILED);
    let echo_took = started.elapsed();

    // A key reset answered 200 with an endless body succeeds: its status decides.
    let victim = node
        .create_account("victim", &hostile.url("flood-reset/b"))
        .await;
    let owner = node
        .create_account("owner", &hostile.url("echo/owner"))
        .await;
    let reg = id_of(&node.register(&owner, "flood.event").await);
    node.subscribe(&victim, &reg).await;
    let started = Instant::now();
    node.post("/v1/account/reset/apikey")
        .username(&victim.username)
        .send()
        .await
        .expect(200);
    let reset_took = started.elapsed();

    // A delivery answered 200 with an endless body succeeds too, in one attempt.
    let tid = id_of(&node.trigger(&owner, &reg).await);
    let rows = node
        .wait_deliveries(&owner, &tid, "the flooded delivery", IO_DEADLINE, |rows| {
            rows.len() == 1 && rows[0]["state"] != "pending"
        })
        .await;
    assert_eq!(rows[0]["state"], "succeeded", "{}", rows[0]);
    assert_eq!(rows[0]["attempts"].as_array().map(Vec::len), Some(1));

    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    let flooded = hostile.flooded.load(Ordering::Relaxed);
    println!(
        "echo failed after {echo_took:?}, reset took {reset_took:?}; the endpoint wrote \
         {} MiB; node RSS {} MiB at start, {} MiB at peak",
        flooded >> 20,
        baseline >> 20,
        peak >> 20
    );
    assert!(
        echo_took < Duration::from_secs(2),
        "echo took {echo_took:?}"
    );
    assert!(
        reset_took < Duration::from_secs(2),
        "reset took {reset_took:?}"
    );
    assert!(
        peak < baseline + (64 << 20),
        "node RSS grew from {} MiB to {} MiB",
        baseline >> 20,
        peak >> 20
    );
}

// ---------------------------------------------------------------------------------------------
// A 2xx in time is a success
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_whose_body_drips_is_one_successful_attempt() {
    let hostile = Hostile::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let node = TestNode::spawn_with(
        "[http_client]\ntimeout_secs = 1.0\n[delivery]\nretry_delays_secs = [0.05, 0.05, 0.05]",
    )
    .await;
    let owner = node
        .create_account("owner", &hostile.url("echo/owner"))
        .await;
    let dripper = node.create_account("dripper", &hostile.url("drip/d")).await;
    let reg = id_of(&node.register(&owner, "drip.event").await);
    node.subscribe(&dripper, &reg).await;
    let tid = id_of(&node.trigger(&owner, &reg).await);
    let rows = node
        .wait_deliveries(&owner, &tid, "the dripped delivery", IO_DEADLINE, |rows| {
            rows.len() == 1 && rows[0]["state"] != "pending"
        })
        .await;
    let row = &rows[0];
    assert_eq!(row["state"], "succeeded", "{row}");
    let attempts = row["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{row}");
    assert_eq!(attempts[0]["status_code"], 200, "{row}");
    assert!(attempts[0]["error"].is_null(), "{row}");
    let took = attempts[0]["duration_ms"].as_f64().expect("duration_ms");
    assert!(
        took < 1000.0,
        "the attempt took {took} ms: longer than the timeout"
    );
    let posts = hostile.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 1, "{:?}", hostile.seen());
    assert_eq!(node.failed_count(&dripper).await, 0);
}

// ---------------------------------------------------------------------------------------------
// "This host" addresses
// ---------------------------------------------------------------------------------------------

/// True when a connection to `addr` is accepted (this host routes it to a listener).
async fn reachable(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_host_addresses_are_refused_under_a_loopback_deny_list() {
    // The target listens on 127.0.0.1 and, where there is IPv6, on [::1] (same port): the
    // addresses "this host" reaches. The redirector is on 127.0.0.2, which is allowed.
    let target = Hostile::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let port = target.addr.port();
    let v6 = match TcpListener::bind(("::1", port)).await {
        Ok(listener) => {
            let t = target.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(t.clone().serve(stream));
                }
            });
            true
        }
        Err(_) => false,
    };
    let redirector = Hostile::start(IpAddr::V4(OTHER_LOOPBACK)).await;
    let node = TestNode::spawn_with(
        "[security]\nendpoint_deny_cidrs = [\"127.0.0.1/32\", \"::1/128\"]\n\
         endpoint_allow_cidrs = []",
    )
    .await;

    // Control: the redirector is allowed, and redirects are followed.
    node.create_account("direct", &redirector.url("echo/direct"))
        .await;
    let back = format!("{}/echo/back", redirector.addr);
    node.create_account("redirected", &redirector.url(&format!("redirect/{back}")))
        .await;

    // Each spelling of "this host", and the address it stands for.
    let zero = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let mut hosts = vec![
        (format!("0.0.0.0:{port}"), zero),
        (format!("0:{port}"), zero),
    ];
    if v6 {
        let any6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        hosts.push((format!("[::]:{port}"), any6));
    }
    for (i, (host, addr)) in hosts.iter().enumerate() {
        // What the node must not do: this host routes the address to the target.
        assert!(
            reachable(*addr).await,
            "{host} does not reach the target here"
        );
        node.try_create_account(&format!("direct{i}"), &format!("http://{host}/echo/d{i}"))
            .await
            .expect_error(400, ECHO_FAILED);
        let via = redirector.url(&format!("redirect/{host}/echo/r{i}"));
        node.try_create_account(&format!("redirect{i}"), &via)
            .await
            .expect_error(400, ECHO_FAILED);
    }
    let reached: Vec<Seen> = target.seen();
    assert!(
        reached.is_empty(),
        "the node reached this host: {reached:?}"
    );
    let redirects = redirector
        .seen()
        .iter()
        .filter(|s| s.target.starts_with("/redirect/"))
        .count();
    assert_eq!(redirects, 1 + hosts.len(), "{:?}", redirector.seen());
}
