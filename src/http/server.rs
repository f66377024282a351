//! The hyper server: accept loop, per-request dispatch, access log, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::connection::{Activity, TrackedIo};

use super::error::ApiError;
use super::metrics::Metrics;
use super::request::ApiRequest;

/// Connection-level limits (`[http]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A request header must arrive completely within this time.
    pub header_read_timeout: Duration,
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
async fn answer<H: Handler>(
    req: Request<Incoming>,
    handler: Arc<H>,
    metrics: &Metrics,
    max_body: usize,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = req.method().clone();
    let request = ApiRequest::new(req, max_body);
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
        latency_ms = took.as_secs_f64() * 1000.0,
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
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let activity = Activity::new();
                let (handler, metrics) = (handler.clone(), metrics.clone());
                let max_body = limits.max_body;
                let tracker = activity.clone();
                let service = service_fn(move |req| {
                    let (handler, metrics) = (handler.clone(), metrics.clone());
                    let tracker = tracker.clone();
                    async move {
                        tracker.request_started();
                        let response = answer(req, handler, &metrics, max_body).await;
                        tracker.request_done();
                        Ok::<_, Infallible>(response)
                    }
                });
                let io = TokioIo::new(TrackedIo::new(stream, activity.clone()));
                let conn = graceful.watch(builder.serve_connection(io, service));
                let (header_timeout, idle) = (limits.header_read_timeout, limits.keepalive_idle);
                tokio::spawn(async move {
                    tokio::select! {
                        result = conn => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        }
                        // Dropping the connection closes the socket.
                        () = activity.expired(header_timeout, idle) => {}
                    }
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
