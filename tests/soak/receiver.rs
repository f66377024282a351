//! The receiver: an endpoint server that fails a share of the delivery attempts at random
//! and counts what it received.

use super::*;

#[derive(Default)]
pub(super) struct ReceiverState {
    /// Per `webhook-id`, the statuses answered, in order.
    pub(super) by_id: HashMap<String, Vec<u16>>,
    pub(super) posts: u64,
    pub(super) failed: u64,
    pub(super) echoes: u64,
    /// POSTs without a `webhook-id` (must stay 0).
    pub(super) anonymous: u64,
}

/// Answers echo challenges and key deliveries like a well-behaved endpoint, and delivery
/// POSTs with 500 (20%, at random) or 200.
pub(super) struct Receiver {
    pub(super) addr: SocketAddr,
    pub(super) state: Arc<Mutex<ReceiverState>>,
    pub(super) accept: AbortHandle,
}

impl Receiver {
    pub(super) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| receive(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            accept: accept.abort_handle(),
        }
    }

    pub(super) fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

pub(super) fn random_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub(super) async fn receive(
    state: Arc<Mutex<ReceiverState>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let webhook_id = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = req.into_body().collect().await;
    let (status, body) = if method == hyper::Method::POST {
        let status = if random_u32() % 65_536 < FAIL_PER_65536 {
            500
        } else {
            200
        };
        let mut st = state.lock().unwrap();
        st.posts += 1;
        if status != 200 {
            st.failed += 1;
        }
        match webhook_id {
            Some(id) => st.by_id.entry(id).or_default().push(status),
            None => st.anonymous += 1,
        }
        (status, "{}".to_string())
    } else {
        let echo = crate::common::parse_query(&query)
            .into_iter()
            .find(|(k, _)| k == "echo")
            .map(|(_, v)| v);
        match echo {
            Some(v) => {
                state.lock().unwrap().echoes += 1;
                (200, json!({ "echo": v }).to_string())
            }
            None => (200, "{}".to_string()),
        }
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}
