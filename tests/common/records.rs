//! Credentials and records: who sends a request ([`Creds`], [`Account`], [`AsCreds`]) and
//! small helpers to read or invent ids and keys.

use serde_json::Value;

/// `username` + plaintext `api-key` header values.
#[derive(Clone, Debug)]
pub struct Creds {
    pub username: String,
    pub api_key: String,
}

impl Creds {
    pub fn new(username: &str, api_key: &str) -> Self {
        Self {
            username: username.into(),
            api_key: api_key.into(),
        }
    }
}

pub trait AsCreds {
    fn username(&self) -> &str;
    fn api_key(&self) -> &str;
}

impl AsCreds for Creds {
    fn username(&self) -> &str {
        &self.username
    }
    fn api_key(&self) -> &str {
        &self.api_key
    }
}

/// An account as returned by the create call (plaintext keys).
#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub api_key: String,
    pub secret_key: String,
    pub endpoint: String,
}

impl Account {
    pub fn from_record(record: Value) -> Self {
        let s = |k: &str| {
            record[k]
                .as_str()
                .unwrap_or_else(|| panic!("account record lacks string `{k}`: {record}"))
                .to_string()
        };
        Self {
            id: s("id"),
            username: s("username"),
            api_key: s("api_key"),
            secret_key: s("secret_key"),
            endpoint: s("endpoint"),
        }
    }

    pub fn creds(&self) -> Creds {
        Creds::new(&self.username, &self.api_key)
    }
}

impl AsCreds for Account {
    fn username(&self) -> &str {
        &self.username
    }
    fn api_key(&self) -> &str {
        &self.api_key
    }
}

pub fn id_of(record: &Value) -> String {
    record["id"]
        .as_str()
        .unwrap_or_else(|| panic!("record without string id: {record}"))
        .to_string()
}

/// A fresh random UUIDv4 that names nothing.
pub fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// 40 random lowercase hex chars (looks like a key, matches none).
pub fn random_hex40() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")[..40].to_string()
}

/// Ids that are not UUIDs at all (they behave like unknown ids).
pub const MALFORMED_IDS: &[&str] = &[
    "not-a-uuid",
    "12345",
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
];

pub fn is_hex40(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
