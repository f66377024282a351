//! Per-connection limits: a client that trickles its request header is cut off after
//! `http.header_read_timeout_secs`, one whose header and body together take longer than
//! `http.request_timeout_secs` is cut off too, and a keep-alive connection idle for
//! `http.keepalive_idle_secs` is closed.
//!
//! hyper's own header timer also runs while a keep-alive connection waits, so it cannot
//! tell a slow header from an idle connection; this watchdog can, because the IO wrapper
//! notes when the first byte of a new request arrives. hyper has no body timer at all: a
//! request stays "being received" until its handler has read the body to its end (or the
//! body is empty), so a client that sends a header and half a body cannot hold a
//! connection slot for longer than the request timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the watchdog knows of one connection.
pub struct Activity {
    started: Instant,
    /// Requests being answered.
    in_flight: AtomicUsize,
    /// ms (since `started`, +1 so 0 means "none") when the first byte of the request being
    /// received (header, then body) arrived.
    head_since: AtomicU64,
    /// ms since `started` of the last request's end (or the connection's start).
    last_done: AtomicU64,
}

impl Activity {
    /// A fresh connection.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A request's header was parsed: it is in flight. Its body, unless `body_complete`
    /// (there is none), is still being received.
    pub fn request_started(&self, body_complete: bool) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if body_complete {
            self.head_since.store(0, Ordering::Release);
        }
    }

    /// The request's body was read to its end (or its reading failed).
    pub fn body_read(&self) {
        self.head_since.store(0, Ordering::Release);
    }

    /// A request was answered.
    pub fn request_done(&self) {
        self.head_since.store(0, Ordering::Release);
        self.last_done.store(self.now_ms(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let now = self.now_ms() + 1;
            let _ = self
                .head_since
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Resolves when the connection must be closed: a header took longer than
    /// `timeouts.header`, a header and its body longer than `timeouts.request`, or the
    /// connection sat idle longer than `timeouts.idle`.
    pub async fn expired(&self, timeouts: Timeouts) {
        let shortest = timeouts.header.min(timeouts.request).min(timeouts.idle);
        let tick = (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let ms = |d: Duration| d.as_millis() as u64;
        let (header_ms, request_ms, idle_ms) =
            (ms(timeouts.header), ms(timeouts.request), ms(timeouts.idle));
        loop {
            tokio::time::sleep(tick).await;
            let now = self.now_ms();
            let head = self.head_since.load(Ordering::Acquire);
            if head != 0 {
                let receiving = now + 1 - head;
                let in_header = self.in_flight.load(Ordering::Acquire) == 0;
                if in_header && receiving > header_ms {
                    tracing::debug!("closing a connection: request header too slow");
                    return;
                }
                if receiving > request_ms {
                    tracing::debug!("closing a connection: request (header and body) too slow");
                    return;
                }
            }
            if head == 0
                && self.in_flight.load(Ordering::Acquire) == 0
                && now.saturating_sub(self.last_done.load(Ordering::Acquire)) > idle_ms
            {
                tracing::debug!("closing an idle keep-alive connection");
                return;
            }
        }
    }
}

/// The watchdog's time limits (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request's header must arrive within this time of its first byte.
    pub header: Duration,
    /// A request's header and body must arrive within this time of its first byte.
    pub request: Duration,
    /// An idle keep-alive connection is closed after this time.
    pub idle: Duration,
}

/// A socket that reports incoming bytes to its [`Activity`].
pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
