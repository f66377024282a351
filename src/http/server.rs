//! The hyper server: accept loop, per-request dispatch, access log, graceful shutdown.
//!
//! Slots are shared fairly enough that no one client address can take them all: at most
//! `http.max_connections` connections are served at once, and at most
//! `http.max_connections_per_ip` of them from one address (an IPv6 /64 counting as one
//! address); a connection over that is closed as soon as it is accepted, so it never waits
//! for — or holds — a slot.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::connection::{Activity, Timeouts, TrackedIo};

use super::error::ApiError;
use super::metrics::Metrics;
use super::request::ApiRequest;
use crate::auth_throttle::client_group;

/// Connection-level limits (`[http]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Connections from one client address served at once; further ones are closed.
    pub max_connections_per_ip: usize,
    /// A request header must arrive completely within this time.
    pub header_read_timeout: Duration,
    /// A request's header and body must arrive completely within this time.
    pub request_timeout: Duration,
    /// An idle keep-alive connection is closed after this time.
    pub keepalive_idle: Duration,
    /// Largest request header section, bytes (431 above).
    pub max_header_bytes: usize,
    /// Most header fields in a request (431 above).
    pub max_headers: usize,
    /// Largest request body, bytes (413 above).
    pub max_body: usize,
}

/// What answers the requests (routing, gates, handlers): the layer above this one.
pub trait Handler: Send + Sync + 'static {
    /// Answers a request; also names its route template for logs and metrics.
    fn answer(
        self: Arc<Self>,
        request: ApiRequest,
    ) -> impl Future<Output = (Response<Full<Bytes>>, &'static str)> + Send;
}

/// hyper's smallest allowed read buffer.
const MIN_BUF: usize = 8192;

/// Answers one request and logs it (method, route template, status, latency; never keys).
/// `activity` learns when the request's body has been read; `client` is the TCP peer.
async fn answer<H: Handler>(
    req: Request<Incoming>,
    handler: Arc<H>,
    metrics: &Metrics,
    max_body: usize,
    activity: Arc<Activity>,
    client: IpAddr,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = req.method().clone();
    let request = ApiRequest::new(req, max_body)
        .on_body_read(move || activity.body_read())
        .with_client_ip(client);
    let (response, template) = if request.declared_too_large() {
        (ApiError::PayloadTooLarge.into_response(), "any")
    } else {
        handler.answer(request).await
    };
    let took = started.elapsed();
    let status = response.status().as_u16();
    metrics.record(method.as_str(), template, status, took);
    tracing::info!(
        method = %method,
        route = template,
        status,
        // Whole microseconds over 1000: prints as `0.649`, not `0.6490000000000001`.
        latency_ms = took.as_micros() as f64 / 1000.0,
        "request"
    );
    response
}

/// Serves `listener` until `shutdown` completes, then waits up to `grace` for in-flight
/// requests to finish.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::new(limits.max_connections_per_ip));
    let timeouts = Timeouts {
        header: limits.header_read_timeout,
        request: limits.request_timeout,
        idle: limits.keepalive_idle,
    };
    tokio::pin!(shutdown);
    loop {
        // At the connection limit, stop accepting: new clients wait in the backlog.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(address_slot) = per_address.admit(peer.ip()) else {
                    // Dropping the stream closes it; its permit is free again at once.
                    tracing::debug!(peer = %peer.ip(), "closing a connection: too many from its address");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let activity = Activity::new();
                let (handler, metrics) = (handler.clone(), metrics.clone());
                let max_body = limits.max_body;
                let tracker = activity.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let (handler, metrics) = (handler.clone(), metrics.clone());
                    let tracker = tracker.clone();
                    async move {
                        tracker.request_started(req.body().is_end_stream());
                        let response =
                            answer(req, handler, &metrics, max_body, tracker.clone(), peer.ip())
                                .await;
                        tracker.request_done();
                        Ok::<_, Infallible>(response)
                    }
                });
                let io = TokioIo::new(TrackedIo::new(stream, activity.clone()));
                let conn = graceful.watch(builder.serve_connection(io, service));
                tokio::spawn(async move {
                    tokio::select! {
                        result = conn => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        }
                        // Dropping the connection closes the socket.
                        () = activity.expired(timeouts) => {}
                    }
                    drop(address_slot);
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace expired with requests in flight"),
    }
}

/// The connections open per client address.
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Connections from one address served at once.
    max: usize,
}

impl PerAddress {
    fn new(max: usize) -> Self {
        Self {
            open: Mutex::default(),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more connection from `ip`, or `None` when it has all it may have.
    /// Addresses are counted as [`client_group`] groups them (IPv6 by /64).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let ip = client_group(ip);
        let mut open = self.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One connection's place in its address's count, given back when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_share() {
        let table = Arc::new(PerAddress::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let (v6, same_64) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let v6_slots = (table.admit(v6).unwrap(), table.admit(same_64).unwrap());
        assert!(table.admit("2001:db8::3".parse().unwrap()).is_none());
        drop(v6_slots);
        let first = table.admit(a).unwrap();
        let second = table.admit(mapped).unwrap();
        assert!(table.admit(a).is_none());
        let other = table.admit(b).unwrap();
        drop(first);
        let again = table.admit(a).unwrap();
        drop((second, other, again));
        assert!(table.lock().is_empty());
    }
}
