//! Signatures for outbound deliveries.
//!
//! Two schemes are sent side by side:
//! - the legacy `pywebhooks-signature` header: lowercase hex HMAC-SHA1 of the exact body bytes,
//!   keyed with the subscriber's `secret_key` string, as PyWebhooks did;
//! - the Standard Webhooks `webhook-signature` header: `v1,` + base64 HMAC-SHA256 of
//!   `"{id}.{timestamp}.{body}"`. Its key is the same `secret_key` bytes, published to
//!   subscribers as `whsec_` + base64 so the standard verification libraries work unchanged.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// Prefix Standard Webhooks puts in front of the base64 key.
const WHSEC_PREFIX: &str = "whsec_";

/// The `pywebhooks-signature` header value: lowercase hex HMAC-SHA1 of `body`, keyed with the
/// UTF-8 bytes of `secret_key`.
///
/// `body` must be the exact bytes sent (the Python-`json.dumps` form). An empty key is valid
/// and still signs, as PyWebhooks did.
pub fn pywebhooks_signature(secret_key: &str, body: &[u8]) -> String {
    let mut mac = hmac_with_key::<Hmac<Sha1>>(secret_key.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The Standard Webhooks `webhook-signature` header value:
/// `v1,<base64 HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")>`.
///
/// `secret_key_bytes` is the raw key, i.e. the subscriber's `secret_key` as UTF-8 bytes, which
/// is also what [`decode_standard_webhooks_secret`] returns for the published `whsec_` secret.
/// `timestamp` is the Unix time in seconds sent in `webhook-timestamp`.
pub fn standard_webhooks_signature(
    secret_key_bytes: &[u8],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut mac = hmac_with_key::<Hmac<Sha256>>(secret_key_bytes);
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The secret shown to subscribers for Standard Webhooks verification:
/// `"whsec_"` + base64 (standard alphabet, padded) of the UTF-8 bytes of `secret_key`.
pub fn standard_webhooks_secret(secret_key: &str) -> String {
    format!("{WHSEC_PREFIX}{}", STANDARD.encode(secret_key.as_bytes()))
}

/// Decodes a Standard Webhooks secret (`whsec_<base64>`) into the HMAC key bytes.
///
/// The `whsec_` prefix is optional, as in the Standard Webhooks reference libraries.
///
/// # Errors
///
/// Returns the base64 error when the part after the prefix is not valid standard base64.
pub fn decode_standard_webhooks_secret(secret: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let encoded = secret.strip_prefix(WHSEC_PREFIX).unwrap_or(secret);
    STANDARD.decode(encoded)
}

/// Builds an HMAC keyed with `key`.
fn hmac_with_key<M: KeyInit>(key: &[u8]) -> M {
    // HMAC hashes or pads keys of any length, so its `new_from_slice` never returns an error.
    M::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body PyWebhooks was observed to send.
    const OBSERVED_BODY: &str = r#"{"message": "John Doe", "b": [1, 2.5, "\u00e9", {"z": 1, "a": 2}], "a": null, "t": true}"#;

    #[test]
    fn rfc2202_hmac_sha1_vector() {
        // RFC 2202 test case 2.
        assert_eq!(
            pywebhooks_signature("Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn pywebhooks_signature_over_observed_body() {
        // Expected value from Python:
        // hmac.new("s3crét-key".encode(), body.encode(), hashlib.sha1).hexdigest()
        let signature = pywebhooks_signature("s3cr\u{e9}t-key", OBSERVED_BODY.as_bytes());
        assert_eq!(signature, "77567f47f25da397c3b69f57cf12c97c330dfe59");
        assert_eq!(signature.len(), 40);
    }

    #[test]
    fn pywebhooks_signature_with_empty_key_still_signs() {
        assert_eq!(pywebhooks_signature("", b"").len(), 40);
        assert_ne!(
            pywebhooks_signature("a", OBSERVED_BODY.as_bytes()),
            pywebhooks_signature("b", OBSERVED_BODY.as_bytes())
        );
    }

    #[test]
    fn standard_webhooks_spec_vector() {
        let key = decode_standard_webhooks_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            .expect("spec secret is valid base64");
        let signature = standard_webhooks_signature(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn whsec_secret_round_trips_to_the_secret_key_bytes() {
        let secret = standard_webhooks_secret("s3cr\u{e9}t-key");
        assert_eq!(secret, "whsec_czNjcsOpdC1rZXk=");
        let key = decode_standard_webhooks_secret(&secret).expect("we produced valid base64");
        assert_eq!(key, "s3cr\u{e9}t-key".as_bytes());
        // The prefix is optional; garbage is an error, not a panic.
        assert_eq!(
            decode_standard_webhooks_secret("czNjcsOpdC1rZXk=").ok(),
            Some(key)
        );
        assert!(decode_standard_webhooks_secret("whsec_not base64!").is_err());
    }
}
