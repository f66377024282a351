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

use super::error::ApiError;
use super::metrics::Metrics;
use super::request::ApiRequest;
use super::router::route;
use crate::service::Node;

/// What every request handler shares.
pub struct App {
    /// The node's operations.
    pub node: Node,
    /// Request counters.
    pub metrics: Metrics,
    /// `http.max_body_bytes`.
    pub max_body: usize,
    /// This node's id (shown by `/ready`).
    pub node_id: String,
}

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
        latency_ms = took.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// Serves `listener` until `shutdown` completes, then waits up to `grace` for in-flight
/// requests to finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    tokio::pin!(shutdown);
    loop {
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
                let app = app.clone();
                let service = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(answer(req, &app).await) }
                });
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
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
