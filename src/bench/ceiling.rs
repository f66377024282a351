//! The HTTP ceiling: the POSTs a delivery sends (its body and header set) sent straight to
//! the sink, as leanly as a sending path can: one request serialised once and written as
//! it is over `concurrency` keep-alive connections, each answer framed by its length and
//! nothing else read. The client runs on a thread of its own, so the report gives the CPU
//! it and the sink spent per POST: the yardstick's own cost beside the node's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{HeaderMap, CONTENT_LENGTH, HOST};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::error::{BenchError, BenchResult};
use super::load::{LoadReport, LoadShape};
use super::own_thread::{OwnThread, ThreadCpu};
use super::sink::Sink;
use super::stats::{rate, Latency};
use super::wire::{self, Framed};

/// Timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before a connection that failed is opened again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// CPU spent per request by each end of a load run, µs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuPerRequest {
    /// The client's thread.
    pub client_us: f64,
    /// The server's thread (the sink).
    pub server_us: f64,
}

/// A ceiling run: its load report and what each end spent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ceiling {
    /// Rate, errors and latency.
    pub load: LoadReport,
    /// CPU per POST of the client and of the sink, over the measured window.
    pub cpu: CpuPerRequest,
}

/// Measures the ceiling against `sink`: a warm-up window, then the measured one, with
/// `shape.concurrency` requests in flight.
pub async fn post_ceiling(
    sink: &Sink,
    body: Bytes,
    headers: &HeaderMap,
    shape: LoadShape,
) -> BenchResult<Ceiling> {
    let addr = sink.connect_addr();
    let request = Arc::new(serialise(addr, headers, &body)?);
    let sink_cpu = sink.cpu();
    let (done_tx, done_rx) = oneshot::channel();
    let (_thread, ()) = OwnThread::start("bench-ceiling", move || {
        let run = async move {
            let _ = done_tx.send(drive(addr, request, shape, sink_cpu).await);
        };
        Ok(((), run))
    })
    .await?;
    done_rx
        .await
        .map_err(|_| BenchError::Invalid("the ceiling's thread ended early".into()))?
}

/// The bytes of one POST to `/ceiling` with `headers` and `body`.
fn serialise(addr: SocketAddr, headers: &HeaderMap, body: &[u8]) -> BenchResult<Vec<u8>> {
    let mut out = format!("POST /ceiling HTTP/1.1\r\nhost: {addr}\r\n").into_bytes();
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == HOST {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    match wire::request(&out) {
        Framed::Complete(r) if r.len == out.len() => Ok(out),
        _ => Err(BenchError::Invalid(
            "the ceiling's request does not frame".into(),
        )),
    }
}

/// One keep-alive connection and what it read past the last answer.
struct Connection {
    stream: TcpStream,
    input: BytesMut,
}

/// What one connection counted in a window.
#[derive(Default)]
struct Counts {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u64>,
}

/// Both windows on this (the client's) thread; CPU read around the measured one.
async fn drive(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    shape: LoadShape,
    sink_cpu: ThreadCpu,
) -> BenchResult<Ceiling> {
    let me = ThreadCpu::current()?;
    let mut connections: Vec<Option<Connection>> =
        (0..shape.concurrency.max(1)).map(|_| None).collect();
    if !shape.warmup.is_zero() {
        window(addr, &request, &mut connections, shape.warmup).await?;
    }
    let (client_before, sink_before) = (me.now()?, sink_cpu.now()?);
    let started = Instant::now();
    let counts = window(addr, &request, &mut connections, shape.measure).await?;
    let took = started.elapsed();
    let (client_after, sink_after) = (me.now()?, sink_cpu.now()?);
    let (mut ok, mut errors, mut latencies) = (0, 0, Vec::new());
    for c in counts {
        ok += c.ok;
        errors += c.failed;
        latencies.extend(c.latencies_us);
    }
    let per_post = |d: Duration| d.as_micros() as f64 / ok.max(1) as f64;
    let duration_us = took.as_micros() as u64;
    Ok(Ceiling {
        load: LoadReport {
            concurrency: connections.len(),
            requests: ok,
            errors,
            duration_us,
            per_second: rate(ok, duration_us),
            latency: Latency::from_samples(&mut latencies),
        },
        cpu: CpuPerRequest {
            client_us: per_post(client_after.saturating_sub(client_before)),
            server_us: per_post(sink_after.saturating_sub(sink_before)),
        },
    })
}

/// Keeps one request in flight on every connection for `length`; the connections are
/// kept for the next window.
async fn window(
    addr: SocketAddr,
    request: &Arc<Vec<u8>>,
    connections: &mut [Option<Connection>],
    length: Duration,
) -> BenchResult<Vec<Counts>> {
    let end = Instant::now() + length;
    let mut tasks = JoinSet::new();
    for (slot, connection) in connections.iter_mut().enumerate() {
        let (connection, request) = (connection.take(), request.clone());
        tasks.spawn(async move {
            let (connection, counts) = keep_sending(addr, connection, &request, end).await;
            (slot, connection, counts)
        });
    }
    let mut all = Vec::with_capacity(connections.len());
    while let Some(done) = tasks.join_next().await {
        let (slot, connection, counts) =
            done.map_err(|e| BenchError::Invalid(format!("a ceiling task panicked: {e}")))?;
        connections[slot] = connection;
        all.push(counts);
    }
    Ok(all)
}

async fn keep_sending(
    addr: SocketAddr,
    mut connection: Option<Connection>,
    request: &[u8],
    end: Instant,
) -> (Option<Connection>, Counts) {
    let mut counts = Counts::default();
    while Instant::now() < end {
        let mut open = match connection.take() {
            Some(open) => open,
            None => match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    Connection {
                        stream,
                        input: BytesMut::with_capacity(4 << 10),
                    }
                }
                Err(_) => {
                    counts.failed += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut open, request)).await {
            Ok(Some(status)) => {
                if (200..300).contains(&status) {
                    counts.ok += 1;
                    counts.latencies_us.push(sent.elapsed().as_micros() as u64);
                } else {
                    counts.failed += 1;
                }
                connection = Some(open);
            }
            // The connection is dropped and opened again.
            Ok(None) | Err(_) => counts.failed += 1,
        }
    }
    (connection, counts)
}

/// Writes `request` and reads its answer; its status, or `None` when the connection
/// failed.
async fn exchange(connection: &mut Connection, request: &[u8]) -> Option<u16> {
    connection.stream.write_all(request).await.ok()?;
    loop {
        match wire::response(&connection.input) {
            Framed::Complete(response) => {
                connection.input.advance(response.len);
                return Some(response.status);
            }
            Framed::Invalid(_) => return None,
            Framed::Partial => match connection.stream.read_buf(&mut connection.input).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::{HeaderValue, CONTENT_TYPE};

    use super::*;

    #[tokio::test]
    async fn the_ceiling_posts_to_the_sink_and_reports_both_ends_cpu() {
        let sink = Sink::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        let shape = LoadShape {
            concurrency: 4,
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(300),
        };
        let body = Bytes::from_static(br#"{"seq": 5}"#);
        let ceiling = post_ceiling(&sink, body, &headers, shape).await.unwrap();
        assert!(ceiling.load.requests > 0, "{ceiling:?}");
        assert_eq!(ceiling.load.errors, 0, "{ceiling:?}");
        assert!(ceiling.cpu.client_us >= 0.0 && ceiling.cpu.server_us >= 0.0);
        // Every POST the client counted reached the sink, with its body's seq.
        let arrivals = sink.take();
        assert!(arrivals.len() as u64 >= ceiling.load.requests);
        assert!(arrivals.iter().all(|a| a.seq == 5));
    }

    #[test]
    fn the_request_is_serialised_once_with_its_own_length() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("1"));
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let bytes = serialise(addr, &headers, b"abc").unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("POST /ceiling HTTP/1.1\r\nhost: 127.0.0.1:9\r\n"));
        assert!(text.ends_with("content-length: 3\r\n\r\nabc"), "{text}");
        assert_eq!(text.matches("content-length").count(), 1);
    }
}
