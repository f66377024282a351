//! Outbound HTTP to account endpoints: the echo challenge, key delivery and deliveries.
//!
//! reqwest's pooled client serves everything (TLS, redirects) but deliveries to `http://`
//! endpoints: those go out on plain hyper connections the delivery worker using one drives
//! itself ([`DeliveryConnections`]), which costs markedly less CPU per request on the
//! hot path. A delivery
//! answered with a redirect is followed by reqwest from the first hop on, as the whole
//! delivery would have been. The endpoint policy is enforced by resolution that drops
//! refused addresses (hostnames), by a check of literal addresses before sending, and on
//! every redirect hop.
//!
//! Nothing an endpoint sends can grow the node's memory: the echo reply is read up to
//! `http_client.max_response_bytes` (a longer one fails the challenge), and the other calls
//! are decided by their status alone — their bodies are read at most that far to reuse a
//! connection, or not at all; a delivery keeps the first `delivery.response_capture_bytes`
//! of its answer's body for the attempt log.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldhash::HashMap;
use http_body_util::Full;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;
use reqwest::Url;

use super::answer::{capture_into, Answer};
use super::connections::{DeliveryConnections, PlainTarget};
use super::error::{transport, OutboundError};
use super::policy::EndpointPolicy;
use crate::config::HttpClientConfig;
use crate::crypto;
use crate::store::KeyKind;

/// Redirect hops followed at most (as the `requests` library the original used).
const MAX_REDIRECTS: usize = 10;
/// Parsed delivery endpoints kept at most; all are dropped when it is full (a fan-out
/// refills it with the endpoints in use).
const MAX_ENDPOINTS: usize = 16_384;

/// Resolution failure, as both clients' resolver interfaces take it.
type ResolveError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves `host` and keeps the addresses the policy allows; none left is a refusal.
async fn allowed_addrs(
    policy: &EndpointPolicy,
    host: &str,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let allowed: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await?
        .filter(|a| policy.allows(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(Box::new(OutboundError::Refused));
    }
    Ok(allowed)
}

/// Resolves hostnames and drops every address the policy refuses.
struct PolicyResolver {
    policy: Arc<EndpointPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let allowed = allowed_addrs(&policy, &host).await?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A delivery endpoint, parsed and checked once: parsing the URL on every attempt was a
/// visible cost, and endpoints are few and used again and again.
struct DeliveryEndpoint {
    url: Url,
    /// For `http://` endpoints, where the delivery connections go.
    plain: Option<PlainTarget>,
}

/// The node's client for calls to account endpoints.
#[derive(Clone)]
pub struct EndpointClient {
    http: reqwest::Client,
    timeout: Duration,
    /// `http_client.max_response_bytes`.
    max_response: usize,
    policy: Arc<EndpointPolicy>,
    /// Delivery endpoints by their text (the policy does not change while running).
    endpoints: Arc<Mutex<HashMap<String, Arc<DeliveryEndpoint>>>>,
    /// Idle connections of `http://` deliveries.
    connections: Arc<DeliveryConnections>,
    /// Bytes of a delivery answer's body kept for the attempt log.
    capture: usize,
}

impl EndpointClient {
    /// Builds the client from `[http_client]` and the endpoint policy, keeping at most
    /// `max_idle_connections` idle delivery connections and the first `capture` bytes of
    /// each delivery answer's body.
    pub fn new(
        cfg: &HttpClientConfig,
        policy: EndpointPolicy,
        max_idle_connections: usize,
        capture: usize,
    ) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let redirect_policy = policy.clone();
        let timeout = Duration::from_secs_f64(cfg.timeout_secs);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .tcp_nodelay(true)
            .no_proxy()
            .tls_danger_accept_invalid_certs(cfg.insecure_tls)
            .dns_resolver(Arc::new(PolicyResolver {
                policy: policy.clone(),
            }))
            .redirect(redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if literal_refused(&redirect_policy, attempt.url()) {
                    attempt.error(OutboundError::Refused)
                } else {
                    attempt.follow()
                }
            }))
            .build()?;
        Ok(Self {
            http,
            timeout,
            max_response: cfg.max_response_bytes,
            policy,
            endpoints: Arc::default(),
            connections: Arc::new(DeliveryConnections::new(
                max_idle_connections,
                cfg.max_response_bytes,
                capture,
            )),
            capture,
        })
    }

    /// Parses `endpoint` and applies the policy to a literal address.
    fn target(&self, endpoint: &str) -> Result<Url, OutboundError> {
        let url = parse_endpoint(endpoint).ok_or(OutboundError::InvalidUrl)?;
        if literal_refused(&self.policy, &url) {
            return Err(OutboundError::Refused);
        }
        Ok(url)
    }

    /// `GET <endpoint>` with `param=value` appended to its query string; returns the
    /// response once its head arrived (the body is left to the caller).
    async fn get_with(
        &self,
        endpoint: &str,
        param: &str,
        value: &str,
    ) -> Result<reqwest::Response, OutboundError> {
        let mut url = self.target(endpoint)?;
        url.query_pairs_mut().append_pair(param, value);
        let response = self
            .http
            .get(url)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .send()
            .await?;
        Ok(response)
    }

    /// The echo challenge: passes only on 200 with JSON `{"echo": <the challenge>}` of at
    /// most `max_response_bytes`.
    pub async fn echo(&self, endpoint: &str) -> Result<(), OutboundError> {
        let challenge = crypto::generate_key()?;
        let response = self.get_with(endpoint, "echo", &challenge).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(OutboundError::Answer(format!("status {status}")));
        }
        let body = read_capped(response, self.max_response).await?;
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| OutboundError::Answer("body is not JSON".into()))?;
        match answer.get("echo").and_then(|v| v.as_str()) {
            Some(v) if v == challenge => Ok(()),
            _ => Err(OutboundError::Answer("wrong echo value".into())),
        }
    }

    /// Delivers a new key as `GET <endpoint>?api_key=…` / `?secret_key=…`; any 2xx succeeds,
    /// whatever its body (which is not read: dropping the response closes the connection).
    pub async fn send_key(
        &self,
        endpoint: &str,
        kind: KeyKind,
        key: &str,
    ) -> Result<(), OutboundError> {
        let status = self.get_with(endpoint, kind.param(), key).await?.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(OutboundError::Answer(format!("status {}", status.as_u16())))
        }
    }
}

/// `response`'s body, refused once it runs past `max` bytes (the client's timeout bounds
/// how long it is read).
async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, OutboundError> {
    let too_large = || OutboundError::Answer(format!("reply larger than {max} bytes"));
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl EndpointClient {
    /// `POST <endpoint>` with the headers `headers` makes and `body`, following
    /// redirects; returns the final answer.
    pub async fn post(
        &self,
        endpoint: &str,
        headers: impl Fn() -> reqwest::header::HeaderMap,
        body: bytes::Bytes,
    ) -> Result<Answer, OutboundError> {
        let target = self.delivery_endpoint(endpoint)?;
        if let Some(plain) = &target.plain {
            let answer = self.post_plain(plain, headers(), body.clone()).await?;
            if !(300..400).contains(&answer.status) {
                return Ok(answer);
            }
        }
        let mut response = self
            .http
            .post(target.url.clone())
            .headers(headers())
            .body(body)
            .send()
            .await?;
        let mut answer = Answer::from_head(response.status().as_u16(), response.headers());
        // The status decides; a body that fails or stalls (the client's timeout bounds it)
        // only shortens what the log keeps.
        let mut captured = Vec::new();
        while captured.len() < self.capture {
            match response.chunk().await {
                Ok(Some(chunk)) => capture_into(&mut captured, &chunk, self.capture),
                Ok(None) | Err(_) => break,
            }
        }
        answer.body = bytes::Bytes::from(captured);
        Ok(answer)
    }

    /// Closes the idle delivery connections unused for a while.
    pub fn prune_idle_connections(&self) {
        self.connections.prune();
    }

    /// `endpoint` parsed and checked, from the cache when it was seen before.
    fn delivery_endpoint(&self, endpoint: &str) -> Result<Arc<DeliveryEndpoint>, OutboundError> {
        let lock = || {
            self.endpoints
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(known) = lock().get(endpoint) {
            return Ok(known.clone());
        }
        let url = self.target(endpoint)?;
        let plain = if url.scheme() == "http" {
            Some(plain_target(&url)?)
        } else {
            None
        };
        let parsed = Arc::new(DeliveryEndpoint { url, plain });
        let mut endpoints = lock();
        if endpoints.len() >= MAX_ENDPOINTS {
            endpoints.clear();
        }
        endpoints.insert(endpoint.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// One `POST` on the delivery connections (no redirects followed); its status must
    /// arrive within the client timeout, connecting included.
    async fn post_plain(
        &self,
        target: &PlainTarget,
        headers: reqwest::header::HeaderMap,
        body: bytes::Bytes,
    ) -> Result<Answer, OutboundError> {
        let mut request = hyper::Request::new(Full::new(body));
        *request.method_mut() = hyper::Method::POST;
        *request.headers_mut() = headers;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let addrs = || self.plain_addrs(target);
        self.connections
            .post(target, request, addrs, deadline)
            .await
    }

    /// The addresses to connect to for `target`: its literal address (checked when the
    /// endpoint was parsed), or its name's addresses the policy allows.
    async fn plain_addrs(&self, target: &PlainTarget) -> Result<Vec<SocketAddr>, OutboundError> {
        let ip = match &target.host {
            url::Host::Ipv4(v4) => IpAddr::V4(*v4),
            url::Host::Ipv6(v6) => IpAddr::V6(*v6),
            url::Host::Domain(name) => {
                let allowed = allowed_addrs(&self.policy, name).await.map_err(|e| {
                    match e.downcast::<OutboundError>() {
                        Ok(refused) => *refused,
                        Err(e) => transport(&*e),
                    }
                })?;
                return Ok(allowed
                    .into_iter()
                    .map(|a| SocketAddr::new(a.ip(), target.port))
                    .collect());
            }
        };
        Ok(vec![SocketAddr::new(ip, target.port)])
    }
}

/// The connection details of an `http://` endpoint.
fn plain_target(url: &Url) -> Result<PlainTarget, OutboundError> {
    let host = url.host().ok_or(OutboundError::InvalidUrl)?.to_owned();
    let port = url
        .port_or_known_default()
        .ok_or(OutboundError::InvalidUrl)?;
    let host_text = url.host_str().ok_or(OutboundError::InvalidUrl)?;
    // `Url` leaves out a port that is the scheme's default.
    let host_header = match url.port() {
        Some(p) => format!("{host_text}:{p}"),
        None => host_text.to_string(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    Ok(PlainTarget {
        authority: format!("{host_text}:{port}"),
        host_header: host_header.parse().map_err(|_| OutboundError::InvalidUrl)?,
        path: path.parse().map_err(|_| OutboundError::InvalidUrl)?,
        host,
        port,
    })
}

/// An absolute `http`/`https` URL with a host, or `None`.
pub fn parse_endpoint(endpoint: &str) -> Option<Url> {
    let url = Url::parse(endpoint).ok()?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none();
    ok.then_some(url)
}

/// True when `url`'s host is a literal address the policy refuses.
fn literal_refused(policy: &EndpointPolicy, url: &Url) -> bool {
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return false,
    };
    !policy.allows(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_must_be_absolute_http() {
        assert!(parse_endpoint("http://127.0.0.1:9090/account/endpoint").is_some());
        assert!(parse_endpoint("https://hooks.internal/x?a=1").is_some());
        for bad in [
            "",
            "127.0.0.1:9090",
            "ftp://x/",
            "http://",
            "/relative",
            "http://user:pw@host/",
        ] {
            assert!(parse_endpoint(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn plain_targets_name_the_host_as_clients_do() {
        let t =
            plain_target(&Url::parse("http://127.0.0.1:9090/hooks/in?a=1&b=%20").unwrap()).unwrap();
        assert_eq!(t.authority, "127.0.0.1:9090");
        assert_eq!(t.host_header, "127.0.0.1:9090");
        assert_eq!(t.path, "/hooks/in?a=1&b=%20");
        assert_eq!(t.port, 9090);

        // The default port is left out of `Host`, but connected to.
        let t = plain_target(&Url::parse("http://hooks.internal:80").unwrap()).unwrap();
        assert_eq!(t.host_header, "hooks.internal");
        assert_eq!(t.authority, "hooks.internal:80");
        assert_eq!(t.path, "/");
        assert_eq!(t.host, url::Host::Domain("hooks.internal".to_string()));

        let t = plain_target(&Url::parse("http://[::1]:8080/x").unwrap()).unwrap();
        assert_eq!(t.host_header, "[::1]:8080");
        assert_eq!(
            t.host,
            url::Host::<String>::Ipv6(std::net::Ipv6Addr::LOCALHOST)
        );
    }

    #[test]
    fn literal_addresses_are_checked() {
        let p = EndpointPolicy::new(vec!["127.0.0.0/8".parse().unwrap()], vec![]);
        assert!(literal_refused(
            &p,
            &Url::parse("http://127.0.0.1/").unwrap()
        ));
        assert!(!literal_refused(
            &p,
            &Url::parse("http://10.1.2.3/").unwrap()
        ));
        assert!(!literal_refused(
            &p,
            &Url::parse("http://localhost/").unwrap()
        ));
        // "This host", however spelt, whatever the lists.
        let open = EndpointPolicy::default();
        for this_host in [
            "http://0.0.0.0/",
            "http://0/",
            "http://0x0:80/",
            "http://[::]/",
        ] {
            let url = Url::parse(this_host).unwrap();
            assert!(literal_refused(&open, &url), "{this_host}");
        }
    }
}
