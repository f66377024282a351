//! The endpoint server: a real hyper server in the test process standing in for the account
//! endpoints the daemon calls out to (echo challenge, key resets, deliveries). It records
//! every request, so tests can assert what the daemon sent.

mod handler;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::header::HeaderMap;
use tokio::task::AbortHandle;

use crate::common::poll::eventually;
pub use handler::parse_query;
use handler::{endpoint_handle, EndpointState, PostScript};

/// A GET the endpoint server received.
#[derive(Clone, Debug)]
pub struct RecordedGet {
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl RecordedGet {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A POST the endpoint server received.
#[derive(Clone, Debug)]
pub struct RecordedPost {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request (headers and body) had arrived.
    pub at: Instant,
    /// The status this server answered (or will answer, for a held POST).
    pub answered: u16,
}

impl RecordedPost {
    /// A header's value as text (`None` when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// How the endpoint server answers one POST to a scripted path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostAnswer {
    /// The status code.
    pub status: u16,
    /// How long to hold the request before answering (bounded; `ZERO` answers at once).
    pub hold: Duration,
    /// A `Retry-After` header to send.
    pub retry_after: Option<String>,
    /// The body (`{}` when `None`).
    pub body: Option<String>,
}

impl PostAnswer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            hold: Duration::ZERO,
            retry_after: None,
            body: None,
        }
    }

    /// Adds `Retry-After: <value>`.
    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_string());
        self
    }

    /// Answers with `body`.
    pub fn body(mut self, body: &str) -> Self {
        self.body = Some(body.to_string());
        self
    }
}

/// Answers like the README's sample endpoint:
/// * `GET <path>?echo=V` → 200 `{"echo": V}`;
/// * `GET <path>?api_key=K` / `?secret_key=K` → 200 `{}` (K is recorded per path);
/// * `POST <path>` → recorded (path, headers, raw body), 200 `{}`.
///
/// Path prefixes select misbehaviour (they can be combined, outermost first):
/// * `/slow/<ms>/...` waits that long before answering (after recording the request);
/// * `/status/<code>/...` answers `<code>` to everything (so the echo fails too);
/// * `/bad-echo/...` answers the echo with a wrong value;
/// * `/redirect/<code>/<rest>` answers POSTs `<code>` with `Location: /<rest>`, and
///   everything else like `/<rest>`;
/// * `/reset-status/<code>/...` passes the echo but answers key-reset GETs with `<code>` and
///   a non-JSON body;
/// * `/conn-close/...` answers like `/...` with `Connection: close` (no keep-alive).
pub struct EndpointServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<EndpointState>>,
    accept: AbortHandle,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
}

/// Counts a connection as open while it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EndpointServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind endpoint server");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(EndpointState::default()));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (st, conns) = (state.clone(), connections.clone());
        let (acc, opened) = (accepted.clone(), open.clone());
        let accept = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let st = st.clone();
                acc.fetch_add(1, Ordering::SeqCst);
                opened.fetch_add(1, Ordering::SeqCst);
                let guard = OpenConnection(opened.clone());
                let task = tokio::spawn(async move {
                    let _guard = guard;
                    let svc = service_fn(move |req| endpoint_handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            state,
            accept: accept.abort_handle(),
            connections,
            accepted,
            open,
        }
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection (as a server closing idle keep-alive connections
    /// does) and waits (bounded) until they are gone; new connections are still accepted.
    pub async fn close_connections(&self) {
        self.abort_connections();
        eventually(
            "the endpoint's connections to close",
            Duration::from_secs(5),
            || async { (self.open.load(Ordering::SeqCst) == 0).then_some(()) },
        )
        .await
    }

    /// `http://127.0.0.1:<port>/<name>`.
    pub fn endpoint_url(&self, name: &str) -> String {
        format!("http://{}/{}", self.addr, name.trim_start_matches('/'))
    }
    /// An endpoint whose echo answer is wrong.
    pub fn bad_echo_url(&self, name: &str) -> String {
        self.endpoint_url(&format!("bad-echo/{}", name.trim_start_matches('/')))
    }
    /// An endpoint answering `code` to everything.
    pub fn status_url(&self, code: u16, name: &str) -> String {
        self.endpoint_url(&format!("status/{code}/{}", name.trim_start_matches('/')))
    }
    /// An endpoint that passes the echo but answers key resets with `code`.
    pub fn reset_status_url(&self, code: u16, name: &str) -> String {
        self.endpoint_url(&format!(
            "reset-status/{code}/{}",
            name.trim_start_matches('/')
        ))
    }
    /// An endpoint that answers POSTs with `code` and `Location: /<name>` (a redirect to
    /// the endpoint `name` on this server) and everything else like `name`.
    pub fn redirect_url(&self, code: u16, name: &str) -> String {
        self.endpoint_url(&format!("redirect/{code}/{}", name.trim_start_matches('/')))
    }
    /// An endpoint that answers correctly, with `Connection: close`.
    pub fn conn_close_url(&self, name: &str) -> String {
        self.endpoint_url(&format!("conn-close/{}", name.trim_start_matches('/')))
    }
    /// An endpoint that answers correctly after `ms` milliseconds.
    pub fn slow_url(&self, ms: u64, name: &str) -> String {
        self.endpoint_url(&format!("slow/{ms}/{}", name.trim_start_matches('/')))
    }

    /// Path on this server of an endpoint URL (or of a bare name).
    pub fn path_of(&self, url_or_name: &str) -> String {
        let base = format!("http://{}", self.addr);
        match url_or_name.strip_prefix(&base) {
            Some(path) => path.to_string(),
            None => format!("/{}", url_or_name.trim_start_matches('/')),
        }
    }

    pub fn gets(&self) -> Vec<RecordedGet> {
        self.state.lock().unwrap().gets.clone()
    }
    pub fn posts(&self) -> Vec<RecordedPost> {
        self.state.lock().unwrap().posts.clone()
    }

    /// GETs to this endpoint that carried `param`.
    pub fn gets_with(&self, url_or_name: &str, param: &str) -> Vec<RecordedGet> {
        let path = self.path_of(url_or_name);
        self.gets()
            .into_iter()
            .filter(|g| g.path == path && g.param(param).is_some())
            .collect()
    }

    /// Echo challenges received by this endpoint.
    pub fn echo_requests(&self, url_or_name: &str) -> Vec<RecordedGet> {
        self.gets_with(url_or_name, "echo")
    }

    /// Every key value delivered to this endpoint through `?<kind>=K`, oldest first
    /// (`kind` is `api_key` or `secret_key`).
    pub fn keys(&self, url_or_name: &str, kind: &str) -> Vec<String> {
        self.gets_with(url_or_name, kind)
            .iter()
            .filter_map(|g| g.param(kind).map(str::to_string))
            .collect()
    }

    pub fn last_key(&self, url_or_name: &str, kind: &str) -> Option<String> {
        self.keys(url_or_name, kind).pop()
    }

    pub fn posts_to(&self, url_or_name: &str) -> Vec<RecordedPost> {
        let path = self.path_of(url_or_name);
        self.posts()
            .into_iter()
            .filter(|p| p.path == path)
            .collect()
    }

    /// Waits (bounded) until at least `n` POSTs reached this endpoint.
    pub async fn wait_for_posts(
        &self,
        url_or_name: &str,
        n: usize,
        deadline: Duration,
    ) -> Vec<RecordedPost> {
        eventually(&format!("{n} POSTs to {url_or_name}"), deadline, || async {
            let posts = self.posts_to(url_or_name);
            (posts.len() >= n).then_some(posts)
        })
        .await
    }

    /// Programs the POSTs to this endpoint: the next ones get `first` (in order), every later
    /// one `then`. GETs (echo, key resets) keep their normal answers, so an account can be
    /// created on a path whose deliveries fail. Replaces any earlier program of the path.
    pub fn script_posts(&self, url_or_name: &str, first: &[u16], then: u16) {
        self.script_post_answers(
            url_or_name,
            first.iter().map(|s| PostAnswer::status(*s)).collect(),
            PostAnswer::status(then),
        );
    }

    /// Every later POST to this endpoint is answered `code` at once.
    pub fn set_post_status(&self, url_or_name: &str, code: u16) {
        self.script_posts(url_or_name, &[], code);
    }

    /// Every later POST to this endpoint is held for `hold` (the connection stays open,
    /// nothing is sent), then answered 200. Bounded: the hold ends, or the server stops.
    pub fn hold_posts(&self, url_or_name: &str, hold: Duration) {
        self.script_post_answers(
            url_or_name,
            VecDeque::new(),
            PostAnswer {
                hold,
                ..PostAnswer::status(200)
            },
        );
    }

    /// The general form of [`Self::script_posts`].
    pub fn script_post_answers(
        &self,
        url_or_name: &str,
        first: VecDeque<PostAnswer>,
        then: PostAnswer,
    ) {
        let path = self.path_of(url_or_name);
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(path, PostScript { queue: first, then });
    }

    /// Number of POSTs received so far (all paths).
    pub fn post_count(&self) -> usize {
        self.state.lock().unwrap().posts.len()
    }

    /// Stops accepting and drops every open connection (the endpoint becomes unreachable).
    pub fn shutdown(&self) {
        self.accept.abort();
        self.abort_connections();
    }

    /// Drops every open connection.
    fn abort_connections(&self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for EndpointServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
