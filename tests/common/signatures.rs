//! The delivery signatures, computed here independently of the daemon's code, and the check
//! of everything a delivery POST must carry.

use crate::common::endpoint::RecordedPost;

/// Standard base64 (with padding), for `standard_webhooks_secret`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lowercase hex HMAC-SHA1(key = `secret_key` as UTF-8, message = `body`): the expected
/// `pywebhooks-signature` (computed here independently of the daemon's code).
pub fn expected_pywebhooks_signature(secret_key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret_key.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `v1,` + base64(HMAC-SHA256(key = `secret_key` as UTF-8, "{id}.{timestamp}.{body}")): the
/// expected Standard Webhooks `webhook-signature`.
pub fn expected_standard_signature(
    secret_key: &str,
    webhook_id: &str,
    timestamp: &str,
    body: &[u8],
) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret_key.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64(&mac.finalize().into_bytes()))
}

fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Asserts everything a delivery POST must carry, verified with the
/// subscriber's own `secret_key` over the raw received body: both signatures, `content-type`
/// and `accept` `application/json`, the `event` header (absent when `event` is empty), a UUID
/// `webhook-id` and a current `webhook-timestamp`. Returns the `webhook-id`.
#[track_caller]
pub fn assert_signed_delivery(post: &RecordedPost, secret_key: &str, event: &str) -> String {
    let h = |name: &str| {
        post.header(name)
            .unwrap_or_else(|| panic!("delivery to {} lacks header `{name}`: {post:?}", post.path))
    };
    assert_eq!(h("content-type"), "application/json", "{post:?}");
    assert_eq!(h("accept"), "application/json", "{post:?}");
    if event.is_empty() {
        assert!(
            post.header("event").is_none(),
            "empty event must be left out: {post:?}"
        );
    } else {
        assert_eq!(h("event"), event, "{post:?}");
    }
    assert_eq!(
        h("pywebhooks-signature"),
        expected_pywebhooks_signature(secret_key, &post.body),
        "pywebhooks-signature does not verify with the subscriber's secret_key over the raw body; {post:?}"
    );
    let id = h("webhook-id");
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "webhook-id is not a UUID: {id}"
    );
    let ts = h("webhook-timestamp");
    let secs: i64 = ts
        .parse()
        .unwrap_or_else(|_| panic!("webhook-timestamp is not integer seconds: {ts:?}"));
    assert!(
        (secs - unix_now_secs()).abs() <= 300,
        "webhook-timestamp {secs} is not the current Unix time in seconds"
    );
    assert_eq!(
        h("webhook-signature"),
        expected_standard_signature(secret_key, &id, &ts, &post.body),
        "webhook-signature does not verify with the subscriber's secret_key; {post:?}"
    );
    id
}

/// The Standard Webhooks verification rule: the message verifies with `secret_key` when any
/// of the space-separated `v1,` signatures of `webhook-signature` is the one that secret
/// makes (and the timestamp is current).
pub fn standard_webhooks_verifies(post: &RecordedPost, secret_key: &str) -> bool {
    let (Some(id), Some(ts), Some(signatures)) = (
        post.header("webhook-id"),
        post.header("webhook-timestamp"),
        post.header("webhook-signature"),
    ) else {
        return false;
    };
    let current = ts
        .parse::<i64>()
        .is_ok_and(|secs| (secs - unix_now_secs()).abs() <= 300);
    let expected = expected_standard_signature(secret_key, &id, &ts, &post.body);
    current && signatures.split(' ').any(|s| s == expected)
}
