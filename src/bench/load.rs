//! Closed-loop load generators (a fixed number of requests always in flight) and the
//! reference servers they are compared with.
//!
//! * [`get_rate`]: GET requests/s against any URL (an authenticated API read, or the
//!   [`HelloServer`] for reference).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::client::{http_client, HttpClient};
use super::error::{BenchError, BenchResult};
use super::stats::{rate, Latency};

/// Timeout of one request of a load run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a closed-loop run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests answered 2xx in the measured window.
    pub requests: u64,
    /// Requests failed (transport error, timeout or non-2xx) in the measured window.
    pub errors: u64,
    /// Length of the measured window, µs.
    pub duration_us: u64,
    /// Successful requests per second.
    pub per_second: f64,
    /// Round-trip latency of the successful requests.
    pub latency: Latency,
}

/// How a load run is shaped.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Unmeasured run first (connections opened, caches warm).
    pub warmup: Duration,
    /// Measured run.
    pub measure: Duration,
}

/// One request of a load run: the same method, URL, headers and body every time.
#[derive(Clone)]
pub struct Template {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (empty for a GET).
    pub body: Bytes,
}

impl Template {
    fn build(&self) -> BenchResult<Request<Full<Bytes>>> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.url.as_str())
            .body(Full::new(self.body.clone()))
            .map_err(|e| BenchError::Invalid(format!("bad load request {}: {e}", self.url)))?;
        *request.headers_mut() = self.headers.clone();
        Ok(request)
    }
}

/// Runs `template` closed-loop: `shape.concurrency` tasks each keep one request in flight
/// over a shared keep-alive pool, first for `shape.warmup` (not counted), then for
/// `shape.measure`.
pub async fn closed_loop(template: &Template, shape: LoadShape) -> BenchResult<LoadReport> {
    template.build()?;
    let http = http_client();
    if !shape.warmup.is_zero() {
        drive(&http, template, shape.concurrency, shape.warmup).await?;
    }
    let (ok, errors, mut latencies, took) =
        drive(&http, template, shape.concurrency, shape.measure).await?;
    let duration_us = took.as_micros() as u64;
    Ok(LoadReport {
        concurrency: shape.concurrency,
        requests: ok,
        errors,
        duration_us,
        per_second: rate(ok, duration_us),
        latency: Latency::from_samples(&mut latencies),
    })
}

/// One window of closed-loop load: (successes, failures, success latencies µs, elapsed).
async fn drive(
    http: &HttpClient,
    template: &Template,
    concurrency: usize,
    window: Duration,
) -> BenchResult<(u64, u64, Vec<u64>, Duration)> {
    let started = Instant::now();
    let end = started + window;
    let template = Arc::new(template.clone());
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (http, template) = (http.clone(), template.clone());
        workers.spawn(async move {
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < end {
                let request = template.build()?;
                let sent = Instant::now();
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    let response = http.request(request).await.ok()?;
                    let status = response.status();
                    response.into_body().collect().await.ok()?;
                    Some(status)
                })
                .await;
                match outcome {
                    Ok(Some(status)) if status.is_success() => {
                        ok += 1;
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                    _ => failed += 1,
                }
            }
            Ok::<_, BenchError>((ok, failed, latencies))
        });
    }
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    while let Some(joined) = workers.join_next().await {
        let (o, f, l) =
            joined.map_err(|e| BenchError::Invalid(format!("a load task panicked: {e}")))??;
        ok += o;
        failed += f;
        latencies.extend(l);
    }
    Ok((ok, failed, latencies, started.elapsed()))
}

/// GET requests/s against `url` with `headers`.
pub async fn get_rate(url: &str, headers: HeaderMap, shape: LoadShape) -> BenchResult<LoadReport> {
    let template = Template {
        method: Method::GET,
        url: url.to_string(),
        headers,
        body: Bytes::new(),
    };
    closed_loop(&template, shape).await
}

/// The headers of an authenticated `/v1` request.
pub fn api_headers(username: &str, api_key: &str) -> BenchResult<HeaderMap> {
    let mut headers = HeaderMap::new();
    let value = |v: &str| {
        HeaderValue::from_str(v).map_err(|e| BenchError::Invalid(format!("bad header value: {e}")))
    };
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(HeaderName::from_static("username"), value(username)?);
    headers.insert(HeaderName::from_static("api-key"), value(api_key)?);
    Ok(headers)
}

/// A plain hyper hello-world server (`200 Hello, world!` to everything), the reference
/// for the API read rate.
pub struct HelloServer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl HelloServer {
    /// Binds `listen` and serves.
    pub async fn start(listen: SocketAddr) -> BenchResult<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| BenchError::io(format!("hello-world: cannot listen on {listen}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::io("hello-world: local address", e))?;
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                connections.spawn(async move {
                    let service = service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"Hello, world!",
                        ))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, accept })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HelloServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
