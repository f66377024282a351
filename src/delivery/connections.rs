//! The node's keep-alive HTTP/1.1 connections to `http://` endpoints, each driven by the
//! delivery worker using it.
//!
//! A pooled client runs each connection as a task of its own: every delivery then crossed
//! tasks three times (the request to the connection task, the response head and the body
//! back). Here a worker takes an idle connection (or opens one), polls it together with the
//! exchange in its own task — one wake-up per delivery, the socket's — and puts it back
//! for the next delivery to the same endpoint, whichever worker makes it.
//!
//! An idle connection is not polled, so before reusing one the worker polls it once: a peer
//! that closed it meanwhile is seen then (its end of stream is already registered), and the
//! delivery takes another or opens a fresh one.
//!
//! The outcome is the status line: a delivery is decided when the response head arrives
//! within the timeout. The body that follows is read so the connection can be reused, up
//! to `http_client.max_response_bytes` and for [`DRAIN_BOUND`] at most (a longer or slower
//! body just closes the connection); its first `delivery.response_capture_bytes` are kept
//! for the attempt log, the rest dropped.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::answer::{capture_into, Answer};
use super::error::{transport, OutboundError};

/// An idle connection older than this is closed rather than reused: endpoint servers
/// close idle connections after a while, and a request written just as they do fails.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the body of a response is read at most (within the attempt's timeout) so its
/// connection can be reused; a slower one closes the connection instead.
const DRAIN_BOUND: Duration = Duration::from_millis(500);

/// Where a plain `http://` delivery goes, prepared once per endpoint.
pub struct PlainTarget {
    /// `host:port`, which identifies the connection to use.
    pub authority: String,
    /// The `Host` header (the port left out when it is 80, as clients do).
    pub host_header: hyper::header::HeaderValue,
    /// The request target (path and query).
    pub path: hyper::Uri,
    /// The host to connect to: an address, or a name to resolve under the endpoint policy.
    pub host: url::Host<String>,
    /// The port to connect to.
    pub port: u16,
}

/// One keep-alive connection and when it was last used.
struct Conn {
    authority: String,
    sender: SendRequest<Full<Bytes>>,
    connection: Connection<TokioIo<TcpStream>, Full<Bytes>>,
    last_used: Instant,
}

/// The idle connections, by endpoint authority (most recently used last).
#[derive(Default)]
struct Idle {
    by_authority: HashMap<String, Vec<Conn>>,
    count: usize,
}

impl Idle {
    /// Takes out the least recently used idle connection, if any.
    fn evict_oldest(&mut self) -> Option<Conn> {
        let oldest = self
            .by_authority
            .iter()
            .filter_map(|(authority, conns)| conns.first().map(|c| (c.last_used, authority)))
            .min_by_key(|(used, _)| *used)
            .map(|(_, authority)| authority.clone())?;
        let conns = self.by_authority.get_mut(&oldest)?;
        let conn = conns.remove(0);
        self.count -= 1;
        Some(conn)
    }
}

/// The node's idle delivery connections, shared by the delivery workers.
pub struct DeliveryConnections {
    idle: Mutex<Idle>,
    /// Idle connections kept at most; one more is closed instead.
    max_idle: usize,
    /// Bytes of a response body read at most to reuse its connection.
    max_response: usize,
    /// Bytes of a response body kept for the attempt log.
    capture: usize,
}

impl DeliveryConnections {
    /// Keeps at most `max_idle` idle connections, reuses a connection only when the
    /// response body is at most `max_response` bytes, and keeps the first `capture` bytes
    /// of each body.
    pub fn new(max_idle: usize, max_response: usize, capture: usize) -> Self {
        Self {
            idle: Mutex::default(),
            max_idle,
            max_response,
            capture,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes the idle connections unused for longer than [`IDLE_TIMEOUT`].
    pub fn prune(&self) {
        let mut closing = Vec::new();
        {
            let mut idle = self.lock();
            idle.by_authority.retain(|_, conns| {
                let (stale, fresh): (Vec<Conn>, Vec<Conn>) = std::mem::take(conns)
                    .into_iter()
                    .partition(|c| c.last_used.elapsed() >= IDLE_TIMEOUT);
                closing.extend(stale);
                *conns = fresh;
                !conns.is_empty()
            });
            idle.count -= closing.len();
        }
        // Closed (dropped) outside the lock.
        drop(closing);
    }

    /// The most recently used idle connection to `authority`, taken out of the set. Its
    /// emptied list stays (for the connection coming back; [`Self::prune`] drops it).
    fn take(&self, authority: &str) -> Option<Conn> {
        let mut idle = self.lock();
        let conn = idle.by_authority.get_mut(authority)?.pop();
        if conn.is_some() {
            idle.count -= 1;
        }
        conn
    }

    /// Keeps `conn` for the next delivery to its endpoint. When the set is full, the least
    /// recently used idle connection makes room: connections to endpoints that went away
    /// (a restarted receiver) must not crowd out the live ones until they time out.
    fn put_back(&self, mut conn: Conn) {
        conn.last_used = Instant::now();
        let mut idle = self.lock();
        let evicted = match idle.count < self.max_idle {
            true => None,
            false => idle.evict_oldest(),
        };
        if idle.count < self.max_idle {
            idle.count += 1;
            // Looked up before inserting: the key is only copied for a new endpoint.
            match idle.by_authority.get_mut(&conn.authority) {
                Some(conns) => conns.push(conn),
                None => {
                    idle.by_authority.insert(conn.authority.clone(), vec![conn]);
                }
            }
        }
        // Closed (dropped) outside the lock: the evicted one, or `conn` if nothing could go.
        drop(idle);
        drop(evicted);
    }

    /// A live idle connection to `authority`; stale and closed ones are dropped on the way.
    async fn take_live(&self, authority: &str) -> Option<Conn> {
        while let Some(mut conn) = self.take(authority) {
            if conn.last_used.elapsed() < IDLE_TIMEOUT && conn.is_reusable().await {
                return Some(conn);
            }
        }
        None
    }

    /// `POST`s `request` (its target and `Host` set from `target`) on an idle connection to
    /// the endpoint or a new one to `addrs()`'s addresses; returns the answer, whose head
    /// must arrive by `deadline` (connecting included).
    pub async fn post<A, F>(
        &self,
        target: &PlainTarget,
        mut request: hyper::Request<Full<Bytes>>,
        addrs: A,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, OutboundError>
    where
        A: FnOnce() -> F,
        F: Future<Output = Result<Vec<SocketAddr>, OutboundError>>,
    {
        let mut conn = within(deadline, async {
            match self.take_live(&target.authority).await {
                Some(conn) => Ok(conn),
                None => Conn::open(target, addrs().await?).await,
            }
        })
        .await?;
        *request.uri_mut() = target.path.clone();
        request
            .headers_mut()
            .insert(hyper::header::HOST, target.host_header.clone());
        let (answer, drained) = conn
            .exchange(request, deadline, self.max_response, self.capture)
            .await?;
        if drained && conn.wait_reusable().await {
            self.put_back(conn);
        }
        Ok(answer)
    }
}

impl Conn {
    /// Connects to the first of `addrs` that accepts, and starts HTTP/1.1 on it.
    async fn open(target: &PlainTarget, addrs: Vec<SocketAddr>) -> Result<Conn, OutboundError> {
        let mut last_error = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Deliveries are one small write each: never wait to coalesce them.
                    stream.set_nodelay(true).map_err(transport)?;
                    let (sender, connection) = http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(transport)?;
                    return Ok(Conn {
                        authority: target.authority.clone(),
                        sender,
                        connection,
                        last_used: Instant::now(),
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(match last_error {
            Some(e) => OutboundError::Transport(format!("connecting failed: {e}")),
            None => OutboundError::Refused,
        })
    }

    /// Polls the idle connection once; true when it is still open and ready for a request.
    async fn is_reusable(&mut self) -> bool {
        poll_fn(|cx| {
            let ended = Pin::new(&mut self.connection).poll(cx).is_ready();
            Poll::Ready(!ended && self.sender.is_ready())
        })
        .await
    }

    /// Sends `request` and waits for the response head until `deadline`, driving the
    /// connection meanwhile; then reads the body for [`DRAIN_BOUND`] at most and up to
    /// `max_body` bytes, keeping its first `capture` bytes. Returns the answer and whether
    /// the body was read whole.
    async fn exchange(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
        deadline: tokio::time::Instant,
        max_body: usize,
        capture: usize,
    ) -> Result<(Answer, bool), OutboundError> {
        let response = self.sender.send_request(request);
        let mut response = std::pin::pin!(async {
            let response = within(deadline, async { response.await.map_err(transport) }).await?;
            let mut answer = Answer::from_head(response.status().as_u16(), response.headers());
            let drain_until = deadline.min(tokio::time::Instant::now() + DRAIN_BOUND);
            let mut captured = Vec::new();
            let drained = tokio::time::timeout_at(
                drain_until,
                drain(response.into_body(), max_body, &mut captured, capture),
            )
            .await
            .unwrap_or(false);
            answer.body = Bytes::from(captured);
            Ok((answer, drained))
        });
        let connection = &mut self.connection;
        let mut ended = false;
        poll_fn(|cx| {
            // Once the connection ended, the exchange ends too (with its answer or the
            // connection's error).
            if !ended {
                ended = Pin::new(&mut *connection).poll(cx).is_ready();
            }
            response.as_mut().poll(cx)
        })
        .await
    }

    /// Drives the connection until it can take the next request; false when it closed
    /// (the endpoint asked for it, or the exchange failed). After a whole response the
    /// connection takes at most a poll or two to be ready: it is given two, so a stuck one
    /// never delays the delivery's outcome.
    async fn wait_reusable(&mut self) -> bool {
        let mut polls = 0;
        poll_fn(|cx| {
            polls += 1;
            if Pin::new(&mut self.connection).poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            match self.sender.poll_ready(cx) {
                Poll::Ready(ready) => Poll::Ready(ready.is_ok()),
                Poll::Pending if polls >= 2 => Poll::Ready(false),
                Poll::Pending => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// `fut`'s result, or a timeout failure once `deadline` passed.
async fn within<T>(
    deadline: tokio::time::Instant,
    fut: impl Future<Output = Result<T, OutboundError>>,
) -> Result<T, OutboundError> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .unwrap_or_else(|_| Err(OutboundError::Transport("timed out".into())))
}

/// Reads `body` to its end, keeping its first `capture` bytes in `captured`; false when it
/// failed or ran past `max` bytes.
async fn drain(mut body: Incoming, max: usize, captured: &mut Vec<u8>, capture: usize) -> bool {
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Some(data) = frame.data_ref() {
            capture_into(captured, data, capture);
            read += data.len();
            if read > max {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A loopback HTTP/1.1 server answering 200 to everything; counts its connections.
    async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let ok = hyper::service::service_fn(|_| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("{}"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), ok)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn target(addr: SocketAddr) -> PlainTarget {
        PlainTarget {
            authority: addr.to_string(),
            host_header: addr.to_string().parse().unwrap(),
            path: "/hook".parse().unwrap(),
            host: url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST),
            port: addr.port(),
        }
    }

    async fn post(conns: &DeliveryConnections, addr: SocketAddr) -> u16 {
        let request = hyper::Request::new(Full::new(Bytes::from_static(b"{}")));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        conns
            .post(
                &target(addr),
                request,
                || async move { Ok(vec![addr]) },
                deadline,
            )
            .await
            .unwrap()
            .status
    }

    /// A loopback server answering every request with a 200 head declaring `len` body bytes,
    /// then writing them `chunk` at a time, `pause` apart; counts its connections.
    async fn raw_server(
        len: usize,
        chunk: usize,
        pause: Duration,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    loop {
                        // A request: a head and the 2-byte body `{}`.
                        while !request.ends_with(b"\r\n\r\n{}") {
                            let mut buf = [0u8; 1024];
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        request.clear();
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                        if stream.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let mut left = len;
                        while left > 0 {
                            let n = left.min(chunk);
                            if stream.write_all(&vec![b'x'; n]).await.is_err() {
                                return;
                            }
                            left -= n;
                            tokio::time::sleep(pause).await;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn the_status_decides_and_a_dripping_body_only_costs_the_connection() {
        // 1,000 bytes, one every 100 ms: the whole body would take 100 s.
        let (addr, opened) = raw_server(1000, 1, Duration::from_millis(100)).await;
        let conns = DeliveryConnections::new(4, 64 * 1024, 16);
        let started = Instant::now();
        assert_eq!(post(&conns, addr).await, 200);
        assert!(
            started.elapsed() < DRAIN_BOUND + Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // The unread body closed the connection: the next delivery opens another.
        assert_eq!(post(&conns, addr).await, 200);
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_not_read_to_its_end() {
        let (big, big_opened) = raw_server(100_000, 16 * 1024, Duration::ZERO).await;
        let (small, small_opened) = raw_server(1000, 1000, Duration::ZERO).await;
        let conns = DeliveryConnections::new(4, 1024, 0);
        for _ in 0..2 {
            assert_eq!(post(&conns, big).await, 200);
            assert_eq!(post(&conns, small).await, 200);
        }
        assert_eq!(big_opened.load(Ordering::SeqCst), 2);
        assert_eq!(small_opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn idle_connections_are_reused_and_the_least_recently_used_makes_room() {
        let ((a, a_opened), (b, b_opened)) = (server().await, server().await);
        // Room for one idle connection.
        let conns = DeliveryConnections::new(1, 64 * 1024, 1024);
        for _ in 0..3 {
            assert_eq!(post(&conns, a).await, 200);
        }
        assert_eq!(a_opened.load(Ordering::SeqCst), 1);
        // The newest connection stays; the older one makes room for it.
        for _ in 0..3 {
            assert_eq!(post(&conns, b).await, 200);
        }
        assert_eq!(b_opened.load(Ordering::SeqCst), 1);
        assert_eq!(post(&conns, a).await, 200);
        assert_eq!(a_opened.load(Ordering::SeqCst), 2);

        // Fresh connections survive a prune.
        conns.prune();
        assert_eq!(post(&conns, a).await, 200);
        assert_eq!(a_opened.load(Ordering::SeqCst), 2);
    }
}
