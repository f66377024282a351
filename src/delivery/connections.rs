//! The HTTP/1.1 connections of one delivery worker, owned and driven by the worker itself.
//!
//! A pooled client runs each connection as a task of its own: every delivery then crossed
//! tasks three times (the request to the connection task, the response head and the body
//! back), and took a lock to check a connection out of the shared pool and back in. Here a
//! worker keeps a few keep-alive connections and polls the one it uses together with the
//! exchange, in its own task: one wake-up per delivery, the socket's.
//!
//! A connection is only polled while the worker uses it, so before reusing one the worker
//! polls it once: a peer that closed it meanwhile is seen then (its end of stream is
//! already registered), and the delivery opens a fresh one.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::client::OutboundError;

/// Connections a worker keeps at most; the least recently used goes when a new one is
/// needed. Deliveries to many endpoints then open connections more often, while the
/// node's open sockets stay bounded by workers × this.
const MAX_CONNECTIONS: usize = 4;
/// An unused connection older than this is closed rather than reused: endpoint servers
/// close idle connections after a while, and a request written just as they do fails.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a response body read (and dropped) so the connection can be reused.
const RESPONSE_BODY_LIMIT: usize = 64 * 1024;

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

/// A worker's connections.
#[derive(Default)]
pub struct WorkerConnections {
    conns: Vec<Conn>,
}

impl WorkerConnections {
    /// Closes the connections unused for longer than [`IDLE_TIMEOUT`].
    pub fn prune(&mut self) {
        self.conns.retain(|c| c.last_used.elapsed() < IDLE_TIMEOUT);
    }

    /// A live connection to `authority` the worker holds, taken out of the set.
    async fn take_live(&mut self, authority: &str) -> Option<Conn> {
        self.prune();
        while let Some(i) = self.conns.iter().position(|c| c.authority == authority) {
            let mut conn = self.conns.swap_remove(i);
            if conn.is_reusable().await {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for later deliveries, closing the least recently used one if full.
    fn put_back(&mut self, mut conn: Conn) {
        if self.conns.len() >= MAX_CONNECTIONS {
            if let Some(oldest) = self
                .conns
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(i, _)| i)
            {
                self.conns.swap_remove(oldest);
            }
        }
        conn.last_used = Instant::now();
        self.conns.push(conn);
    }

    /// `POST`s `request` (its target and `Host` set from `target`) on a kept connection to
    /// the endpoint or a new one to `addrs()`'s addresses; returns the response status.
    /// The caller bounds the whole call in time.
    pub async fn post<A, F>(
        &mut self,
        target: &PlainTarget,
        mut request: hyper::Request<Full<Bytes>>,
        addrs: A,
    ) -> Result<hyper::StatusCode, OutboundError>
    where
        A: FnOnce() -> F,
        F: Future<Output = Result<Vec<SocketAddr>, OutboundError>>,
    {
        let mut conn = match self.take_live(&target.authority).await {
            Some(conn) => conn,
            None => Conn::open(target, addrs().await?).await?,
        };
        *request.uri_mut() = target.path.clone();
        request
            .headers_mut()
            .insert(hyper::header::HOST, target.host_header.clone());
        let status = conn.exchange(request).await?;
        if conn.wait_reusable().await {
            self.put_back(conn);
        }
        Ok(status)
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

    /// Sends `request` and reads the response (its body bounded and dropped), driving the
    /// connection meanwhile.
    async fn exchange(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::StatusCode, OutboundError> {
        let response = self.sender.send_request(request);
        let mut response = std::pin::pin!(async {
            let response = response.await.map_err(transport)?;
            let status = response.status();
            let _ = Limited::new(response.into_body(), RESPONSE_BODY_LIMIT)
                .collect()
                .await;
            Ok(status)
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

/// A hyper failure with its causes.
fn transport(e: impl std::error::Error) -> OutboundError {
    OutboundError::Transport(super::client::with_causes(&e))
}
