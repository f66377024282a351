//! A node's files: a temp dir holding its config, its storage and its stderr log.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tempfile::TempDir;

/// `http.shutdown_grace_secs` in the generated config.
pub const SHUTDOWN_GRACE_SECS: u64 = 5;

/// A temp dir holding `webhookd.toml`, the storage dir and the node's stderr log.
pub struct TestConfig {
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

impl TestConfig {
    /// Writes the base test config merged with `extra_toml` (see [`merge_toml`]).
    pub fn new(extra_toml: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("webhookd-test-")
            .tempdir()
            .expect("create temp dir");
        let config_path = dir.path().join("webhookd.toml");
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("webhookd.log");
        let config = Self {
            dir,
            config_path,
            data_dir,
            log_path,
        };
        config.write(extra_toml);
        config
    }

    /// (Re)writes the config file: base settings, then `extra_toml` on top.
    pub fn write(&self, extra_toml: &str) {
        let data = serde_json::to_string(&self.data_dir.display().to_string()).unwrap();
        let base = format!(
            r#"
[http]
listen = "127.0.0.1:0"
shutdown_grace_secs = {SHUTDOWN_GRACE_SECS}
[storage]
path = {data}
[security]
pbkdf2_iterations = 1000
[http_client]
timeout_secs = 2.0
[delivery]
retry_delays_secs = [0.2, 0.2, 0.2]
"#
        );
        std::fs::write(&self.config_path, merge_toml(&base, extra_toml)).expect("write config");
    }

    /// The node's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Merges two simple TOML documents (`[section]` headers and one-line `key = value` pairs;
/// `section.key = value` is accepted outside a section). Keys of `extra` replace the base's.
/// Plain concatenation would not do: TOML forbids defining a table twice.
pub fn merge_toml(base: &str, extra: &str) -> String {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for doc in [base, extra] {
        let mut current = String::new();
        for line in doc.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = name.trim().to_string();
                sections.entry(current.clone()).or_default();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("merge_toml: not a `key = value` line: {line}"));
            let (mut section, mut key) = (current.clone(), key.trim().to_string());
            if section.is_empty() {
                if let Some((s, k)) = key.clone().split_once('.') {
                    section = s.to_string();
                    key = k.to_string();
                }
            }
            let entries = sections.entry(section).or_default();
            let value = value.trim().to_string();
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
        }
    }
    let mut out = String::new();
    if let Some(top) = sections.remove("") {
        for (k, v) in top {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    for (name, entries) in sections {
        out.push_str(&format!("[{name}]\n"));
        for (k, v) in entries {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out
}
