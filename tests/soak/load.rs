//! The client side: the shared state of the load (the node, the accounts and records it
//! created) and the tally of every answer.

use super::receiver::random_u32;
use super::*;

/// What the load saw: every status, every surprise.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) statuses: BTreeMap<u16, u64>,
    /// Per operation kind, requests sent.
    pub(super) ops: BTreeMap<&'static str, u64>,
    /// 5xx answers, transport errors and unexpected statuses (first few kept in full).
    pub(super) problems: Vec<String>,
    pub(super) problem_count: u64,
}

/// One trigger the load made.
#[derive(Clone)]
pub(super) struct Trigger {
    pub(super) id: String,
    pub(super) owner: usize,
    pub(super) registration: String,
}

/// Shared state of the load.
pub(super) struct Load {
    pub(super) client: reqwest::Client,
    pub(super) base: String,
    pub(super) admin: Creds,
    pub(super) receiver_url: String,
    pub(super) owners: Vec<Account>,
    /// (owner index, registration id)
    pub(super) registrations: Vec<(usize, String)>,
    pub(super) subscribers: Vec<Account>,
    /// Registration id → the stable subscription ids on it.
    pub(super) stable: HashMap<String, Vec<String>>,
    pub(super) triggers: Mutex<Vec<Trigger>>,
    /// Churn subscriptions: (subscriber index, subscription id), still alive.
    pub(super) churn_subs: Mutex<Vec<(usize, String)>>,
    /// Temporary accounts (each subscribed once), still alive, with their subscription.
    pub(super) temp_accounts: Mutex<Vec<(Account, String)>>,
    /// Subscriptions deleted during the run (directly or with their account).
    pub(super) deleted_subs: Mutex<HashSet<String>>,
    pub(super) tally: Mutex<Tally>,
    pub(super) seq: AtomicU64,
}

/// A request to send.
pub(super) struct Call<'a> {
    pub(super) op: &'static str,
    pub(super) method: reqwest::Method,
    pub(super) path: String,
    pub(super) auth: Option<(&'a str, &'a str)>,
    pub(super) content_type: Option<&'a str>,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Option<Vec<u8>>,
}

impl<'a> Call<'a> {
    pub(super) fn new(op: &'static str, method: &str, path: impl Into<String>) -> Self {
        Self {
            op,
            method: reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            path: path.into(),
            auth: None,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body: None,
        }
    }
    pub(super) fn auth(mut self, who: &'a impl AsCreds) -> Self {
        self.auth = Some((who.username(), who.api_key()));
        self
    }
    pub(super) fn json(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }
    pub(super) fn raw(mut self, body: &str) -> Self {
        self.body = Some(body.as_bytes().to_vec());
        self
    }
    pub(super) fn content_type(mut self, ct: Option<&'a str>) -> Self {
        self.content_type = ct;
        self
    }
    pub(super) fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl Load {
    /// Sends `call`; counts its status; records a problem when it is a 5xx, a transport
    /// error, or not one of `expected` (an empty `expected` means "any 4xx"). Returns the
    /// status and the JSON body (when there is one).
    pub(super) async fn send(&self, call: Call<'_>, expected: &[u16]) -> Option<(u16, Value)> {
        let what = format!("{} {} ({})", call.method, call.path, call.op);
        let mut rb = self
            .client
            .request(call.method, format!("{}{}", self.base, call.path));
        if let Some(ct) = call.content_type {
            rb = rb.header("content-type", ct);
        }
        if let Some((user, key)) = call.auth {
            rb = rb.header("username", user).header("api-key", key);
        }
        for (k, v) in call.headers {
            rb = rb.header(k, v);
        }
        if let Some(body) = call.body {
            rb = rb.body(body);
        }
        let result = match rb.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(body) => Ok((status, body)),
                    Err(e) => Err(format!("{what}: reading the body failed: {e:?}")),
                }
            }
            Err(e) => Err(format!("{what}: transport error: {e:?}")),
        };
        let mut tally = self.tally.lock().unwrap();
        *tally.ops.entry(call.op).or_default() += 1;
        let (status, body) = match result {
            Ok(ok) => ok,
            Err(problem) => {
                tally.problem(problem);
                return None;
            }
        };
        *tally.statuses.entry(status).or_default() += 1;
        let ok = if expected.is_empty() {
            (400..500).contains(&status)
        } else {
            expected.contains(&status)
        };
        if status >= 500 || !ok {
            tally.problem(format!(
                "{what}: got {status} (expected {}): {}",
                if expected.is_empty() {
                    "4xx".to_string()
                } else {
                    format!("{expected:?}")
                },
                String::from_utf8_lossy(&body)
            ));
        }
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Some((status, json))
    }

    pub(super) fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }
}

impl Tally {
    pub(super) fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }
}

/// xorshift64*: cheap per-worker randomness.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new() -> Self {
        Self(u64::from(random_u32()) << 32 | u64::from(random_u32()) | 1)
    }
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
