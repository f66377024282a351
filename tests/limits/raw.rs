//! A raw HTTP/1.1 client over a [`TcpStream`]: requests that must reach the server byte for
//! byte, and answers read with a deadline.

use super::*;

/// One parsed response.
#[derive(Debug)]
pub(super) struct RawResponse {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl RawResponse {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("body is not JSON: {self}"))
    }

    #[track_caller]
    pub(super) fn expect_error(&self, status: u16, message: &str) {
        assert_eq!(self.status, status, "{self}");
        assert_eq!(self.json(), json!({ "Error": message }), "{self}");
    }
}

impl std::fmt::Display for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} {}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A client connection; bytes read past one response stay buffered for the next.
pub(super) struct RawConn {
    pub(super) stream: TcpStream,
    pub(super) buf: Vec<u8>,
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl RawConn {
    pub(super) async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(IO_DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(IO_DEADLINE, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Reads more bytes into the buffer; `UnexpectedEof` when the peer closed.
    pub(super) async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads one whole response (unbounded: callers wrap it in a timeout). Cancel-safe: an
    /// interrupted read keeps what arrived in the buffer.
    pub(super) async fn read_response(&mut self) -> io::Result<RawResponse> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        assert!(
            header("transfer-encoding").is_none(),
            "this client does not decode chunked responses: {head}"
        );
        let body_len = match header("content-length") {
            Some(len) => len.parse::<usize>().expect("content-length"),
            // No length: the body runs to the end of the connection.
            None => loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        break self.buf.len() - head_end
                    }
                    Err(e) => return Err(e),
                }
            },
        };
        while self.buf.len() < head_end + body_len {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + body_len].to_vec();
        self.buf.drain(..head_end + body_len);
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// One response within [`IO_DEADLINE`] (panics otherwise).
    pub(super) async fn response(&mut self, what: &str) -> RawResponse {
        match tokio::time::timeout(IO_DEADLINE, self.read_response()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("{what}: reading the response failed: {e}"),
            Err(_) => panic!("{what}: no response within {IO_DEADLINE:?}"),
        }
    }

    /// Sends `request` and reads its response.
    pub(super) async fn exchange(&mut self, request: &[u8], what: &str) -> RawResponse {
        self.send(request).await;
        self.response(what).await
    }

    /// Waits until the server closes the connection (EOF or reset); how long that took, or
    /// `None` after `deadline`. Any bytes the server sends meanwhile are returned too.
    pub(super) async fn wait_closed(&mut self, deadline: Duration) -> (Option<Duration>, Vec<u8>) {
        let started = Instant::now();
        let mut extra = std::mem::take(&mut self.buf);
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await {
                Err(_) => return (None, extra),
                Ok(Ok(0)) | Ok(Err(_)) => return (Some(started.elapsed()), extra),
                Ok(Ok(n)) => extra.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// `GET <path>` with `headers`, keep-alive (HTTP/1.1 default).
pub(super) fn get_request(path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// `n` distinct small headers.
pub(super) fn numbered_headers(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("x-h{i}"), "v".to_string()))
        .collect()
}

/// A normal request on a fresh connection is answered (the node survived).
pub(super) async fn assert_node_serves(addr: SocketAddr) {
    let mut c = RawConn::connect(addr).await;
    let r = c
        .exchange(&get_request("/health", &[]), "GET /health")
        .await;
    assert_eq!(r.status, 200, "{r}");
}
