//! The receiving sink: a lean HTTP/1.1 server on loopback that stands in for every
//! subscriber's endpoint. It runs on a thread of its own ([`OwnThread`]), so the bench
//! reports what it costs per POST beside the node's CPU per delivery, and it reads no more
//! of a request than it must ([`super::wire`]): the head, the body by its length, the path
//! and the body's `"seq"`. Each read's answers go out in one write.
//!
//! * `GET ?echo=V` answers 200 `{"echo": "V"}` (the account-creation challenge);
//!   `?api_key=` / `?secret_key=` answer 200 `{}` (key resets).
//! * Every `POST` is counted and recorded as an [`Arrival`]: its time (µs since the sink's
//!   [`Clock`] epoch), the bench sequence number found in its body (`"seq": N`) and the
//!   subscriber index taken from its path (`/s/<n>`). Records are 12 bytes each, so a
//!   fan-out of hundreds of thousands of deliveries costs a few MB.
//!
//! The sink answers every POST with an empty 200 and never looks at the signatures, but
//! for a `POST /hang/<n>`: that one is never answered nor recorded (an endpoint that
//! accepts connections and then says nothing, for the isolation scenario).
//!
//! Its listen backlog is [`BACKLOG`], not the usual 128: a node opens up to
//! `delivery.max_in_flight` (256 by default) connections at once when a fan-out starts, and
//! keeps up to four times that many idle. A connection that does not fit in the backlog has
//! its SYN dropped and retried a second later, so a small backlog turns into a one-second
//! straggler and a deliveries/s figure that varies fourfold between identical runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::error::{BenchError, BenchResult};
use super::own_thread::{OwnThread, ThreadCpu};
use super::wire::{self, Framed};

/// Tag of a POST whose body carries no `"seq"` number.
pub const NO_SEQ: u32 = u32::MAX;
/// Subscriber index of a POST whose path is not `/s/<n>`.
pub const NO_SUBSCRIBER: u32 = u32::MAX;

/// Connections the sink's listener queues before it accepts them: Linux's cap
/// (`net.core.somaxconn`, 4096 on current kernels), four times the idle connections a node
/// with the default `delivery.max_in_flight` keeps.
pub const BACKLOG: u32 = 4096;

/// Binds `listen` with a backlog of [`BACKLOG`].
pub fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(BACKLOG)
}

/// A monotonic clock shared by the sink and the runner, in µs since its epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// µs since the epoch.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// One POST received by the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When its body was complete, µs since the [`Clock`] epoch (saturates after ~71 min).
    pub at_us: u32,
    /// The `"seq"` number of its body, or [`NO_SEQ`].
    pub seq: u32,
    /// The `<n>` of its `/s/<n>` path, or [`NO_SUBSCRIBER`].
    pub subscriber: u32,
}

/// Counters and records shared by the sink's connections.
struct SinkState {
    clock: Clock,
    posts: AtomicU64,
    echoes: AtomicU64,
    arrivals: Mutex<Vec<Arrival>>,
    /// When `posts` reaches this value, `reached` is notified (u64::MAX: nobody waits).
    target: AtomicU64,
    reached: Notify,
}

/// A running sink; it stops when dropped.
pub struct Sink {
    addr: SocketAddr,
    state: Arc<SinkState>,
    thread: OwnThread,
}

impl Sink {
    /// Binds `listen` (use port 0 for a free port) and starts serving.
    pub async fn start(listen: SocketAddr) -> BenchResult<Self> {
        let state = Arc::new(SinkState {
            clock: Clock::new(),
            posts: AtomicU64::new(0),
            echoes: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::with_capacity(1 << 16)),
            target: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
        });
        let serving = state.clone();
        let (thread, addr) = OwnThread::start("bench-sink", move || {
            let listener = bind(listen)
                .map_err(|e| BenchError::io(format!("sink: cannot listen on {listen}"), e))?;
            let addr = listener
                .local_addr()
                .map_err(|e| BenchError::io("sink: local address", e))?;
            Ok((addr, accept_loop(listener, serving)))
        })
        .await?;
        Ok(Self {
            addr,
            state,
            thread,
        })
    }

    /// The CPU clock of the sink's thread: what it spent serving.
    pub fn cpu(&self) -> ThreadCpu {
        self.thread.cpu()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address clients should call: the bound one, with an unspecified IP (0.0.0.0,
    /// ::) replaced by 127.0.0.1.
    pub fn connect_addr(&self) -> SocketAddr {
        let ip = if self.addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.addr.ip()
        };
        SocketAddr::new(ip, self.addr.port())
    }

    /// The endpoint URL of subscriber `n`: `http://<addr>/s/<n>`.
    pub fn endpoint(&self, n: usize) -> String {
        format!("http://{}/s/{n}", self.connect_addr())
    }

    /// An endpoint that passes the echo challenge but never answers a POST.
    pub fn hanging_endpoint(&self, n: usize) -> String {
        format!("http://{}/hang/{n}", self.connect_addr())
    }

    /// The clock arrival times are measured with.
    pub fn clock(&self) -> Clock {
        self.state.clock
    }

    /// POSTs received since the start.
    pub fn posts(&self) -> u64 {
        self.state.posts.load(Ordering::Relaxed)
    }

    /// A counter of the POSTs received since the count was `base`, for a progress bar.
    pub fn post_counter(&self, base: u64) -> super::progress::Counter {
        let state = self.state.clone();
        Arc::new(move || state.posts.load(Ordering::Relaxed).saturating_sub(base))
    }

    /// Echo challenges answered since the start.
    pub fn echoes(&self) -> u64 {
        self.state.echoes.load(Ordering::Relaxed)
    }

    /// Takes every recorded arrival, leaving the record empty (the POST count keeps going).
    pub fn take(&self) -> Vec<Arrival> {
        let mut arrivals = match self.state.arrivals.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::take(&mut *arrivals)
    }

    /// Waits until at least `count` POSTs were received since the start, or `deadline`.
    /// Returns whether the count was reached. One waiter at a time.
    pub async fn wait_for_posts(&self, count: u64, deadline: Instant) -> bool {
        let state = &self.state;
        state.target.store(count, Ordering::SeqCst);
        let reached = loop {
            if state.posts.load(Ordering::SeqCst) >= count {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            // The notification is the fast path; the short sleep covers a notification
            // that fired between the check above and the registration below.
            let nap = (deadline - now).min(Duration::from_millis(20));
            tokio::select! {
                () = state.reached.notified() => {}
                () = tokio::time::sleep(nap) => {}
            }
        };
        state.target.store(u64::MAX, Ordering::SeqCst);
        reached
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<SinkState>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve(stream, state.clone()));
    }
}

/// What the sink did with one request.
enum Served {
    /// Answered; `close` when the connection ends after the answer.
    Answered { close: bool },
    /// A `POST /hang/<n>`: never answered.
    Hang,
}

/// Serves one connection: every whole request in the buffer is answered, and the answers
/// to one read are written together. A request the sink does not read gets a 400 and the
/// connection is closed.
async fn serve(mut stream: TcpStream, state: Arc<SinkState>) {
    let mut input = BytesMut::with_capacity(8 << 10);
    let mut output = Vec::with_capacity(512);
    loop {
        let mut close = false;
        loop {
            let served = match wire::request(&input) {
                Framed::Partial => break,
                Framed::Invalid(why) => {
                    reply(&mut output, "400 Bad Request", "text/plain", why.as_bytes());
                    close = true;
                    break;
                }
                Framed::Complete(request) => {
                    let len = request.len;
                    let served = handle(&state, &request, &mut output);
                    input.advance(len);
                    served
                }
            };
            match served {
                Served::Answered { close: false } => {}
                Served::Answered { close: true } => {
                    close = true;
                    break;
                }
                Served::Hang => {
                    let _ = stream.write_all(&output).await;
                    // Held until the node gives up (or the sink stops).
                    return std::future::pending().await;
                }
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        if close {
            return;
        }
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Appends an answer with `body` to `output`.
fn reply(output: &mut Vec<u8>, status: &str, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    output.extend_from_slice(head.as_bytes());
    output.extend_from_slice(body);
}

/// The answer to a delivery: fixed bytes, nothing formatted.
const POST_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

fn handle(state: &SinkState, request: &wire::Request<'_>, output: &mut Vec<u8>) -> Served {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target, ""));
    let close = request.close;
    match request.method {
        "POST" if path.starts_with("/hang/") => return Served::Hang,
        "POST" => {
            let at_us = u32::try_from(state.clock.now_us()).unwrap_or(u32::MAX);
            let arrival = Arrival {
                at_us,
                seq: seq_of(request.body).unwrap_or(NO_SEQ),
                subscriber: subscriber_of(path),
            };
            match state.arrivals.lock() {
                Ok(mut arrivals) => arrivals.push(arrival),
                Err(poisoned) => poisoned.into_inner().push(arrival),
            }
            let n = state.posts.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= state.target.load(Ordering::SeqCst) {
                state.reached.notify_one();
            }
            output.extend_from_slice(POST_ANSWER);
            return Served::Answered { close };
        }
        "GET" => {
            for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
                match key.as_ref() {
                    "echo" => {
                        state.echoes.fetch_add(1, Ordering::Relaxed);
                        let body = serde_json::json!({ "echo": value }).to_string();
                        reply(output, "200 OK", "application/json", body.as_bytes());
                        return Served::Answered { close };
                    }
                    "api_key" | "secret_key" => {
                        reply(output, "200 OK", "application/json", b"{}");
                        return Served::Answered { close };
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    reply(output, "400 Bad Request", "text/plain", b"");
    Served::Answered { close }
}

/// The `<n>` of a `/s/<n>` path.
pub fn subscriber_of(path: &str) -> u32 {
    path.strip_prefix("/s/")
        .and_then(|n| n.parse().ok())
        .unwrap_or(NO_SUBSCRIBER)
}

/// The number after the first `"seq":` in a JSON body (any spacing), if any.
pub fn seq_of(body: &[u8]) -> Option<u32> {
    const KEY: &[u8] = b"\"seq\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)?;
    let rest = &body[at + KEY.len()..];
    let start = rest.iter().position(|b| *b != b' ')?;
    let digits = rest[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 10 {
        return None;
    }
    std::str::from_utf8(&rest[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::Request;

    use super::*;

    #[test]
    fn seq_is_found_with_either_spacing() {
        assert_eq!(seq_of(br#"{"bench": "x", "seq": 17, "pad": ""}"#), Some(17));
        assert_eq!(seq_of(br#"{"seq":4294967294}"#), Some(4_294_967_294));
        assert_eq!(seq_of(br#"{"seq": "1"}"#), None);
        assert_eq!(seq_of(br#"{"seq": 99999999999}"#), None);
        assert_eq!(seq_of(b"{}"), None);
    }

    async fn request(method: &str, url: String, body: &'static str) -> (u16, Bytes) {
        let http = crate::bench::client::http_client();
        let request = Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let (status, body) = crate::bench::client::send(&http, request, Duration::from_secs(5))
            .await
            .unwrap();
        (status.as_u16(), body)
    }

    #[tokio::test]
    async fn answers_echoes_and_records_posts() {
        let sink = Sink::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (status, body) = request("GET", format!("{}?echo=abc", sink.endpoint(3)), "").await;
        assert_eq!(status, 200);
        assert_eq!(&body[..], br#"{"echo":"abc"}"#);
        assert_eq!(sink.echoes(), 1);

        let before = sink.clock().now_us();
        let (status, _) = request("POST", sink.endpoint(3), r#"{"seq": 12}"#).await;
        assert_eq!(status, 200);
        request(
            "POST",
            format!("http://{}/other", sink.connect_addr()),
            "{}",
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(sink.wait_for_posts(2, deadline).await);
        let arrivals = sink.take();
        assert_eq!(arrivals.len(), 2);
        assert_eq!((arrivals[0].seq, arrivals[0].subscriber), (12, 3));
        assert!(u64::from(arrivals[0].at_us) >= before);
        assert_eq!(
            (arrivals[1].seq, arrivals[1].subscriber),
            (NO_SEQ, NO_SUBSCRIBER)
        );
        assert!(sink.take().is_empty());
        assert_eq!(sink.posts(), 2);
        // A count never reached gives up at the deadline.
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(!sink.wait_for_posts(3, soon).await);
    }

    /// Every connection a node may open at once completes its handshake while the sink is
    /// not accepting yet: none waits for a SYN retry (one second on Linux).
    #[tokio::test]
    async fn backlog_holds_a_node_worth_of_connections() {
        // The idle connections a node keeps: 4 per attempt in flight (`daemon::build_node`).
        let node_connections = 4 * crate::config::Config::default().delivery.max_in_flight;
        assert!(BACKLOG as usize >= node_connections);
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connects = JoinSet::new();
        for _ in 0..node_connections {
            connects.spawn(tokio::time::timeout(
                Duration::from_millis(700),
                tokio::net::TcpStream::connect(addr),
            ));
        }
        let mut open = Vec::new();
        while let Some(done) = connects.join_next().await {
            let stream = done.unwrap().expect("a connection waited for a SYN retry");
            open.push(stream.unwrap());
        }
        assert_eq!(open.len(), node_connections);
        drop(listener);
    }

    #[test]
    fn subscriber_comes_from_the_path() {
        assert_eq!(subscriber_of("/s/42"), 42);
        assert_eq!(subscriber_of("/s/"), NO_SUBSCRIBER);
        assert_eq!(subscriber_of("/ceiling"), NO_SUBSCRIBER);
    }
}
