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
use super::router::route;
use crate::service::Node;

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
}

/// What every request handler shares.
pub struct App {
    /// The node's operations.
    pub node: Node,
    /// Request counters.
    pub metrics: Metrics,
    /// `http.max_body_bytes`.
    pub max_body: usize,
    /// `security.max_event_data_bytes`.
    pub max_event_data: usize,
    /// This node's id (shown by `/ready`).
    pub node_id: String,
}

/// hyper's smallest allowed read buffer.
const MIN_BUF: usize = 8192;

/// Answers one request and logs it (method, route template, status, latency; never keys).
async fn answer(req: Request<Incoming>, app: &App) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = req.method().clone();
    let routed = route(&method, req.uri().path());
    let request = ApiRequest::new(req, app.max_body);
    let (response, template) = match routed {
        _ if request.declared_too_large() => (ApiError::PayloadTooLarge.into_response(), "any"),
        Ok(endpoint) => {
            let template = endpoint.template();
            let response = crate::api::handle(endpoint, request, app)
                .await
                .unwrap_or_else(ApiError::into_response);
            (response, template)
        }
        Err(miss) => {
            let gate = if miss.gated {
                request.require_json_content_type().err()
            } else {
                None
            };
            (gate.unwrap_or(miss.error).into_response(), miss.template)
        }
    };
    let took = started.elapsed();
    let status = response.status().as_u16();
    app.metrics.record(method.as_str(), template, status, took);
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
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
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
                let app = app.clone();
                let tracker = activity.clone();
                let service = service_fn(move |req| {
                    let app = app.clone();
                    let tracker = tracker.clone();
                    async move {
                        tracker.request_started();
                        let response = answer(req, &app).await;
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
