//! Keys, Werkzeug-format PBKDF2 hashes, constant-time compares and the verification cache.
//!
//! API keys are 160-bit random values, so the hash only has to stop a stolen database from
//! yielding usable keys; the iteration count is a config value. The cache makes an
//! authenticated request cost one SHA-256 instead of a full PBKDF2 run.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::Hmac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of every generated key: 40 lowercase hex characters (160 bits).
pub const KEY_LEN: usize = 40;

/// A failure of the operating system's random number generator.
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed: {0}")]
pub struct RandomError(String);

fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| RandomError(e.to_string()))?;
    Ok(buf)
}

/// A new key: 40 lowercase hex characters from the OS CSPRNG.
pub fn generate_key() -> Result<String, RandomError> {
    Ok(hex::encode(random_bytes::<{ KEY_LEN / 2 }>()?))
}

const SALT_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const SALT_LEN: usize = 16;

/// Hashes `key` as Werkzeug does: `pbkdf2:sha256:<iterations>$<16-char salt>$<64 hex>`.
pub fn hash_key(key: &str, iterations: u32) -> Result<String, RandomError> {
    // 62 symbols: rejection sampling keeps the salt uniform.
    let mut salt = String::with_capacity(SALT_LEN);
    while salt.len() < SALT_LEN {
        for b in random_bytes::<32>()? {
            if (b as usize) < SALT_CHARS.len() * 4 && salt.len() < SALT_LEN {
                salt.push(SALT_CHARS[b as usize % SALT_CHARS.len()] as char);
            }
        }
    }
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2::<Hmac<Sha256>>(key.as_bytes(), salt.as_bytes(), iterations, &mut out)
        .map_err(|e| RandomError(e.to_string()))?;
    Ok(format!(
        "pbkdf2:sha256:{iterations}${salt}${}",
        hex::encode(out)
    ))
}

/// Checks `key` against a stored Werkzeug PBKDF2 hash (`sha256`, or legacy `sha1`).
///
/// Any hash that does not parse simply fails to verify.
pub fn verify_key(key: &str, stored: &str) -> bool {
    let mut parts = stored.splitn(3, '$');
    let (Some(method), Some(salt), Some(hash_hex)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let mut method_parts = method.split(':');
    let (Some("pbkdf2"), Some(digest), iterations) = (
        method_parts.next(),
        method_parts.next(),
        method_parts.next(),
    ) else {
        return false;
    };
    // Werkzeug's historical default when the count is omitted.
    let iterations = match iterations {
        Some(n) => match n.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => return false,
        },
        None => 1000,
    };
    let Ok(expected) = hex::decode(hash_hex) else {
        return false;
    };
    let actual = match digest {
        "sha256" => {
            let mut out = [0u8; 32];
            if pbkdf2::pbkdf2::<Hmac<Sha256>>(key.as_bytes(), salt.as_bytes(), iterations, &mut out)
                .is_err()
            {
                return false;
            }
            out.to_vec()
        }
        "sha1" => {
            let mut out = [0u8; 20];
            if pbkdf2::pbkdf2::<Hmac<sha1::Sha1>>(
                key.as_bytes(),
                salt.as_bytes(),
                iterations,
                &mut out,
            )
            .is_err()
            {
                return false;
            }
            out.to_vec()
        }
        _ => return false,
    };
    constant_time_eq(&actual, &expected)
}

/// Compares two byte strings without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

struct CacheEntry {
    key_digest: [u8; 32],
    stored_hash: String,
    at: Instant,
}

/// Remembers recent successful verifications: `(username, key)` against the stored hash.
///
/// An entry only matches while the stored hash is the one it was made for, so a key reset
/// (a new hash) or a deleted account (no hash to compare) invalidates it at once.
pub struct AuthCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, CacheEntry>>,
}

impl AuthCache {
    /// A cache keeping entries for `ttl`, holding at most `capacity` usernames.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn digest(key: &str) -> [u8; 32] {
        Sha256::digest(key.as_bytes()).into()
    }

    /// True when `key` was verified against exactly `stored_hash` less than `ttl` ago.
    pub fn hit(&self, username: &str, key: &str, stored_hash: &str) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        entries.get(username).is_some_and(|e| {
            e.at.elapsed() < self.ttl
                && e.stored_hash == stored_hash
                && constant_time_eq(&e.key_digest, &Self::digest(key))
        })
    }

    /// Records a successful verification.
    pub fn insert(&self, username: &str, key: &str, stored_hash: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(username) {
            let ttl = self.ttl;
            entries.retain(|_, e| e.at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            username.to_string(),
            CacheEntry {
                key_digest: Self::digest(key),
                stored_hash: stored_hash.to_string(),
                at: Instant::now(),
            },
        );
    }

    /// Forgets `username` (key reset, account deletion).
    pub fn invalidate(&self, username: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(username);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_40_lowercase_hex_and_distinct() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_eq!(a.len(), KEY_LEN);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn sha256_hash_round_trips_and_has_werkzeug_shape() {
        let h = hash_key("secret", 1000).unwrap();
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts[0], "pbkdf2:sha256:1000");
        assert_eq!(parts[1].len(), 16);
        assert_eq!(parts[2].len(), 64);
        assert!(verify_key("secret", &h));
        assert!(!verify_key("Secret", &h));
        assert!(!verify_key("", &h));
    }

    #[test]
    fn verifies_legacy_werkzeug_sha1_hash() {
        // werkzeug.security.generate_password_hash('password', 'pbkdf2:sha1:1000', 8)
        // with the salt fixed to "abcdefgh": PBKDF2-HMAC-SHA1(password, salt, 1000, 20).
        let mut out = [0u8; 20];
        pbkdf2::pbkdf2::<Hmac<sha1::Sha1>>(b"password", b"abcdefgh", 1000, &mut out).unwrap();
        let stored = format!("pbkdf2:sha1:1000$abcdefgh${}", hex::encode(out));
        assert!(verify_key("password", &stored));
        assert!(!verify_key("passwore", &stored));
    }

    #[test]
    fn pbkdf2_sha1_matches_rfc6070() {
        let mut out = [0u8; 20];
        pbkdf2::pbkdf2::<Hmac<sha1::Sha1>>(b"password", b"salt", 2, &mut out).unwrap();
        assert_eq!(hex::encode(out), "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
    }

    #[test]
    fn malformed_hashes_never_verify() {
        for bad in [
            "",
            "plain",
            "pbkdf2:sha256:0$s$00",
            "pbkdf2:md5:10$s$00",
            "pbkdf2:sha256:10$s$zz",
            "scrypt:1:1:1$s$00",
        ] {
            assert!(!verify_key("x", bad), "{bad}");
        }
    }

    #[test]
    fn cache_hits_only_for_same_key_and_hash() {
        let cache = AuthCache::new(Duration::from_secs(60), 10);
        cache.insert("u", "k", "h1");
        assert!(cache.hit("u", "k", "h1"));
        assert!(!cache.hit("u", "other", "h1"));
        assert!(!cache.hit("u", "k", "h2"));
        cache.invalidate("u");
        assert!(!cache.hit("u", "k", "h1"));
    }
}
