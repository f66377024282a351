//! The request guards: Content-Type gate, headers, paging, body.
//!
//! Handlers call these in the contract's order: Content-Type → auth → paging → body.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use crate::store::PageRequest;

/// Called once the body has been read (to its end, or until reading it failed).
type BodyRead = Box<dyn FnOnce() + Send + Sync>;

/// An incoming API request with the accessors handlers need.
pub struct ApiRequest {
    method: Method,
    path: String,
    headers: HeaderMap,
    query: Option<String>,
    body: Option<Incoming>,
    max_body: usize,
    /// Tells the connection that the request is no longer being received.
    body_read: Option<BodyRead>,
    /// The client's address (the TCP peer), when known.
    client_ip: Option<IpAddr>,
}

impl ApiRequest {
    /// Wraps a hyper request; bodies larger than `max_body` are refused with 413.
    pub fn new(req: Request<Incoming>, max_body: usize) -> Self {
        let (parts, body) = req.into_parts();
        Self {
            method: parts.method,
            path: parts.uri.path().to_string(),
            headers: parts.headers,
            query: parts.uri.query().map(str::to_string),
            body: Some(body),
            max_body,
            body_read: None,
            client_ip: None,
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path (without the query).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Records the client's address (the TCP peer).
    pub(super) fn with_client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// The client's address (the TCP peer; no forwarding header is trusted), e.g. to
    /// throttle failed authentications per address.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// Calls `done` once the body has been read (the connection's request deadline stops
    /// counting then).
    pub(super) fn on_body_read(mut self, done: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.body_read = Some(Box::new(done));
        self
    }

    /// The Content-Type gate: must start with `application/json`, case-insensitively.
    pub fn require_json_content_type(&self) -> Result<(), ApiError> {
        let ok = self
            .headers
            .get(CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .is_some_and(|v| v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/json"));
        if ok {
            Ok(())
        } else {
            Err(ApiError::UnsupportedMediaType)
        }
    }

    /// True when a declared Content-Length already exceeds the limit.
    pub fn declared_too_large(&self) -> bool {
        self.headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.max_body as u64)
    }

    /// A header's value; non-UTF-8 bytes are replaced, so such a value is present but
    /// never matches a stored one.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The validated `start` / `limit` parameters.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        PageRequest::parse(
            self.query_param("start").as_deref(),
            self.query_param("limit").as_deref(),
        )
        .map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    /// Reads the whole body, refusing more than the limit.
    pub async fn body_bytes(&mut self) -> Result<Bytes, ApiError> {
        if self.declared_too_large() {
            return Err(ApiError::PayloadTooLarge);
        }
        let Some(body) = self.body.take() else {
            return Ok(Bytes::new());
        };
        let read = Limited::new(body, self.max_body).collect().await;
        if let Some(done) = self.body_read.take() {
            done();
        }
        match read {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge),
            Err(_) => Err(ApiError::BadRequest(
                "Could not read the request body".into(),
            )),
        }
    }

    /// Reads the body as a JSON object.
    pub async fn json_object(&mut self) -> Result<Map<String, Value>, ApiError> {
        let bytes = self.body_bytes().await?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(ApiError::BadRequest("JSON body must be an object".into())),
            Err(_) => Err(ApiError::BadRequest("Invalid JSON body".into())),
        }
    }

    /// Reads the body as JSON when there is one; `None` for an empty body.
    pub async fn optional_json_object(&mut self) -> Result<Option<Map<String, Value>>, ApiError> {
        let bytes = self.body_bytes().await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(_) => Err(ApiError::BadRequest("JSON body must be an object".into())),
            Err(_) => Err(ApiError::BadRequest("Invalid JSON body".into())),
        }
    }
}

/// A path id: a malformed UUID is simply an id that matches nothing.
pub fn parse_id(raw: &str) -> Option<Uuid> {
    // Only the canonical hyphenated form: ids are always shown that way.
    if raw.len() != 36 {
        return None;
    }
    Uuid::parse_str(raw).ok()
}

/// The string field `name`: `Missing <name> field` / `Invalid <name> field`.
pub fn string_field(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match body.get(name) {
        None => Err(ApiError::BadRequest(format!("Missing {name} field"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::BadRequest(format!("Invalid {name} field"))),
    }
}

/// An invalid-field error for `name`.
pub fn invalid_field(name: &str) -> ApiError {
    ApiError::BadRequest(format!("Invalid {name} field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_must_be_canonical_uuids() {
        assert!(parse_id("45712a61-a1b3-41a4-aa89-9593b909ae3d").is_some());
        assert!(parse_id("45712A61-A1B3-41A4-AA89-9593B909AE3D").is_some());
        for bad in [
            "",
            "x",
            "45712a61a1b341a4aa899593b909ae3d",
            "{45712a61-a1b3-41a4-aa89-9593b909ae3d}",
            "45712a61-a1b3-41a4-aa89-9593b909ae3g",
        ] {
            assert!(parse_id(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn string_fields() {
        let body: Map<String, Value> = serde_json::from_str(r#"{"a": "x", "b": 1}"#).unwrap();
        assert_eq!(string_field(&body, "a").unwrap(), "x");
        assert_eq!(
            string_field(&body, "b").unwrap_err().to_string(),
            "Invalid b field"
        );
        assert_eq!(
            string_field(&body, "c").unwrap_err().to_string(),
            "Missing c field"
        );
    }
}

/// Property tests of the Content-Type gate and of path ids.
#[cfg(test)]
mod proptests {
    use super::*;
    use hyper::header::HeaderValue;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            // Never write regression files into the source tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A request carrying only `content_type` (no body: the gate never reads it).
    fn request_with(content_type: Option<&[u8]>) -> ApiRequest {
        let mut headers = HeaderMap::new();
        if let Some(raw) = content_type {
            let value = HeaderValue::from_bytes(raw).expect("strategy yields valid header bytes");
            headers.insert(CONTENT_TYPE, value);
        }
        ApiRequest {
            method: Method::POST,
            path: "/v1/account".into(),
            headers,
            query: None,
            body: None,
            max_body: 0,
            body_read: None,
            client_ip: None,
        }
    }

    /// The gate's specification: the value starts with `application/json`, ASCII
    /// case-insensitively.
    fn spec_passes(raw: &[u8]) -> bool {
        raw.to_ascii_lowercase().starts_with(b"application/json")
    }

    /// Bytes a header value may hold: HTAB, visible ASCII, space and obs-text.
    fn header_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'\t'),
            0x20u8..0x7f,
            0x80u8..=0xff,
            prop::sample::select(b";= ,/+-.Jj\"".to_vec()),
        ]
    }

    fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(header_byte(), 0..max)
    }

    /// `application/json` with each letter's case chosen at random.
    fn json_any_case() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<bool>(), 16).prop_map(|upper| {
            b"application/json"
                .iter()
                .zip(upper)
                .map(|(b, up)| if up { b.to_ascii_uppercase() } else { *b })
                .collect()
        })
    }

    /// A canonical (8-4-4-4-12) UUID text check, independent of the uuid crate.
    fn canonical_shape(raw: &str) -> bool {
        raw.len() == 36
            && raw.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
    }

    proptest! {
        #![proptest_config(config())]

        /// Any value starting with `application/json` in any case passes, whatever follows.
        #[test]
        fn json_prefix_in_any_case_passes(prefix in json_any_case(), rest in header_bytes(40)) {
            let raw = [prefix, rest].concat();
            prop_assert!(request_with(Some(&raw)).require_json_content_type().is_ok());
        }

        /// Arbitrary values pass exactly when the specification says so.
        #[test]
        fn arbitrary_values_agree_with_the_specification(raw in header_bytes(40)) {
            let got = request_with(Some(&raw)).require_json_content_type();
            prop_assert_eq!(got.is_ok(), spec_passes(&raw), "value {:?}", String::from_utf8_lossy(&raw));
            if let Err(e) = got {
                prop_assert!(matches!(e, ApiError::UnsupportedMediaType));
            }
        }

        /// Near misses fail: one byte of `application/json` changed (to anything but the
        /// other case of the same letter), the prefix cut short, or something before it.
        #[test]
        fn near_misses_fail(
            prefix in json_any_case(),
            at in 0usize..16,
            replacement in header_byte(),
            cut in 0usize..16,
            lead in prop::collection::vec(header_byte(), 1..4),
            rest in header_bytes(12),
        ) {
            let mut changed = prefix.clone();
            if !changed[at].eq_ignore_ascii_case(&replacement) {
                changed[at] = replacement;
                let raw = [changed, rest.clone()].concat();
                prop_assert!(request_with(Some(&raw)).require_json_content_type().is_err());
            }
            // Cut short.
            let short: Vec<u8> = prefix[..cut].to_vec();
            prop_assert!(request_with(Some(&short)).require_json_content_type().is_err());
            let led = [lead, prefix].concat();
            prop_assert!(request_with(Some(&led)).require_json_content_type().is_err());
        }

        /// Every UUID, in its canonical text in lower, upper or mixed case, is a path id.
        #[test]
        fn every_canonical_uuid_parses(bytes in any::<[u8; 16]>(), case in prop::collection::vec(any::<bool>(), 36)) {
            let id = Uuid::from_bytes(bytes);
            let lower = id.hyphenated().to_string();
            prop_assert_eq!(parse_id(&lower), Some(id));
            prop_assert_eq!(parse_id(&lower.to_ascii_uppercase()), Some(id));
            let mixed: String = lower
                .chars()
                .zip(case)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect();
            prop_assert_eq!(parse_id(&mixed), Some(id));
            // The other spellings the uuid crate knows are not path ids.
            prop_assert_eq!(parse_id(&id.simple().to_string()), None);
            prop_assert_eq!(parse_id(&id.braced().to_string()), None);
            prop_assert_eq!(parse_id(&id.urn().to_string()), None);
        }

        /// Arbitrary text never panics, and parses exactly when it has the canonical shape
        /// (then to the UUID that text spells).
        #[test]
        fn arbitrary_segments_parse_only_in_canonical_form(
            raw in prop_oneof![
                any::<String>(),
                "[0-9a-fA-F-]{34,38}",
                "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                "[0-9a-fA-FgG{}:]{1}[0-9a-fA-F]{7}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{11}[0-9a-f}g]",
                "[0-9a-f]{8}[-_+ ][0-9a-f]{4}-[0-9a-f]{4}[-_+ ][0-9a-f]{4}-[0-9a-f]{12}",
            ]
        ) {
            let parsed = parse_id(&raw);
            prop_assert_eq!(parsed.is_some(), canonical_shape(&raw), "segment {:?}", raw);
            if let Some(id) = parsed {
                prop_assert_eq!(id.hyphenated().to_string(), raw.to_ascii_lowercase());
            }
        }
    }
}
