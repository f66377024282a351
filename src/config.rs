//! Configuration: built-in defaults ← a TOML file ← `WEBHOOKD_*` environment variables.
//!
//! Every section is a struct with `deny_unknown_fields`, so a misspelt key stops start-up with
//! a message naming it instead of being silently ignored. Nested keys in the environment use
//! `__`: `WEBHOOKD_HTTP__LISTEN=127.0.0.1:9000` sets `http.listen`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Source};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod cluster;
mod delivery;
mod error;

pub use cluster::{ClusterConfig, Member, MAX_SNAPSHOT_CHUNK_BYTES};
pub use delivery::DeliveryConfig;
pub use error::ConfigError;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "WEBHOOKD_";
/// `WEBHOOKD_API_KEY` without its prefix (`cluster_cli::API_KEY_ENV`), lowercased as
/// figment passes keys (compared ignoring case).
const CLI_API_KEY: &str = "api_key";

/// The whole effective configuration of one node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP front end.
    pub http: HttpConfig,
    /// Where and how records are persisted.
    pub storage: StorageConfig,
    /// Key hashing, rate limits and the endpoint policy.
    pub security: SecurityConfig,
    /// Outbound HTTP (echo challenges, key resets, deliveries).
    pub http_client: HttpClientConfig,
    /// Delivery of triggered webhooks.
    pub delivery: DeliveryConfig,
    /// Logging.
    pub log: LogConfig,
    /// This node's place in the cluster.
    pub cluster: ClusterConfig,
    /// Lifetime of the per-record actors.
    pub actors: ActorsConfig,
}

/// `[http]`: the API listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the `/v1` API listens on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long a graceful stop waits for in-flight requests.
    pub shutdown_grace_secs: f64,
    /// A request header must arrive completely within this time (slow clients are cut off).
    pub header_read_timeout_secs: f64,
    /// A request's header and body must arrive completely within this time, counted from
    /// its first byte (slow clients are cut off).
    pub request_timeout_secs: f64,
    /// A keep-alive connection idle this long is closed.
    pub keepalive_idle_secs: f64,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Connections from one client address (an IPv6 /64 counts as one) served at once;
    /// further ones are closed.
    pub max_connections_per_ip: usize,
    /// Largest request header section in bytes (431 above).
    pub max_header_bytes: usize,
    /// Most header fields per request (431 above).
    pub max_headers: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_body_bytes: 1024 * 1024,
            shutdown_grace_secs: 10.0,
            header_read_timeout_secs: 10.0,
            request_timeout_secs: 30.0,
            keepalive_idle_secs: 60.0,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// `[storage]`: the sled database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the node's sled database.
    pub path: PathBuf,
    /// sled page cache size. The default (64 MiB) holds the delivery engine's working set
    /// (recent deliveries, the due queue, the subscriptions being fanned out); the bench's
    /// 100,000-subscriber fan-out ran as fast with it as with 128 MiB.
    pub cache_capacity_bytes: u64,
    /// A flush to disk running for longer than this means the disk is stuck: the node logs
    /// it and exits (non-zero) so that its supervisor restarts it. A healthy flush takes
    /// milliseconds; the margin is for slow disks under bursts.
    pub flush_stall_secs: f64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data"),
            cache_capacity_bytes: 64 * 1024 * 1024,
            flush_stall_secs: 30.0,
        }
    }
}

/// `[security]`: key hashing, rate limits, endpoint policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// PBKDF2-SHA256 iterations for newly stored API key hashes.
    pub pbkdf2_iterations: u32,
    /// How long a successful API key verification is remembered.
    pub auth_cache_ttl_secs: f64,
    /// Key resets (API or secret) allowed per account per rolling hour.
    pub key_resets_per_hour: u32,
    /// Endpoints resolving into these networks are refused.
    pub endpoint_deny_cidrs: Vec<IpNet>,
    /// When not empty, endpoints must resolve into one of these networks.
    pub endpoint_allow_cidrs: Vec<IpNet>,
    /// Largest `event_data` (as compact JSON) accepted at registration and trigger.
    pub max_event_data_bytes: usize,
    /// Failed API key checks allowed per username and per client address per minute;
    /// beyond it key checks answer 429 before hashing (0: no limit).
    pub auth_failures_per_minute: u32,
    /// After a secret-key reset, how long deliveries stay signed with the old secret too
    /// (a second `v1,` signature in `webhook-signature`).
    pub secret_rotation_grace_secs: f64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            pbkdf2_iterations: 100_000,
            auth_cache_ttl_secs: 60.0,
            key_resets_per_hour: 5,
            endpoint_deny_cidrs: vec![
                "169.254.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
                "fe80::/10".parse().unwrap_or_else(|_| unreachable!()),
            ],
            endpoint_allow_cidrs: Vec::new(),
            max_event_data_bytes: 256 * 1024,
            auth_failures_per_minute: 20,
            secret_rotation_grace_secs: 86_400.0,
        }
    }
}

/// `[http_client]`: outbound requests to account endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientConfig {
    /// Timeout of one outbound request (connect + response).
    pub timeout_secs: f64,
    /// Accept invalid TLS certificates (internal CAs without a trust store).
    pub insecure_tls: bool,
    /// Bytes of an endpoint's reply read at most (an echo reply over it fails).
    pub max_response_bytes: usize,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 5.0,
            insecure_tls: false,
            max_response_bytes: 64 * 1024,
        }
    }
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: tracing output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Default level filter (`RUST_LOG`, when set, takes precedence).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `[actors]`: lifetime of per-account and per-registration actors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActorsConfig {
    /// An actor that handled no message for this long stops (it is respawned on demand).
    pub idle_stop_secs: f64,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        Self {
            idle_stop_secs: 60.0,
        }
    }
}

/// A loaded configuration together with the figment it came from (for provenance).
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    figment: Figment,
}

impl Config {
    /// Loads defaults ← `file` (when given) ← environment, then validates the result.
    pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // WEBHOOKD_API_KEY is the admin key of the `cluster` commands, not configuration:
        // an operator who exported it must still be able to start a node.
        let env =
            Env::prefixed(ENV_PREFIX).filter(|key| !key.as_str().eq_ignore_ascii_case(CLI_API_KEY));
        figment = figment.merge(env.split("__"));
        let config: Config = figment.extract()?;
        config.validate().map_err(|e| e.located(&figment))?;
        Ok(Loaded { config, figment })
    }

    /// Range checks that the type system cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, v: f64) -> Result<(), ConfigError> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be a positive number of seconds, got {v}"),
                })
            }
        }
        positive("http.shutdown_grace_secs", self.http.shutdown_grace_secs)?;
        positive(
            "http.header_read_timeout_secs",
            self.http.header_read_timeout_secs,
        )?;
        positive("http.keepalive_idle_secs", self.http.keepalive_idle_secs)?;
        positive("http.request_timeout_secs", self.http.request_timeout_secs)?;
        for (key, value, min) in [
            ("http.max_connections", self.http.max_connections, 1),
            (
                "http.max_connections_per_ip",
                self.http.max_connections_per_ip,
                1,
            ),
            (
                "http_client.max_response_bytes",
                self.http_client.max_response_bytes,
                1024,
            ),
            ("http.max_header_bytes", self.http.max_header_bytes, 1024),
            ("http.max_headers", self.http.max_headers, 8),
        ] {
            if value < min {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("must be at least {min}"),
                });
            }
        }
        positive("http_client.timeout_secs", self.http_client.timeout_secs)?;
        positive("storage.flush_stall_secs", self.storage.flush_stall_secs)?;
        positive("actors.idle_stop_secs", self.actors.idle_stop_secs)?;
        self.delivery
            .validate(self.http_client.max_response_bytes)?;
        for (key, v) in [
            (
                "security.auth_cache_ttl_secs",
                self.security.auth_cache_ttl_secs,
            ),
            (
                "security.secret_rotation_grace_secs",
                self.security.secret_rotation_grace_secs,
            ),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be zero or a positive number of seconds".into(),
                });
            }
        }
        if self.http.max_body_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "http.max_body_bytes",
                reason: "must be at least 1".into(),
            });
        }
        if self.security.pbkdf2_iterations == 0 {
            return Err(ConfigError::Invalid {
                key: "security.pbkdf2_iterations",
                reason: "must be at least 1".into(),
            });
        }
        if self.cluster.shards == 0 {
            return Err(ConfigError::Invalid {
                key: "cluster.shards",
                reason: "must be at least 1".into(),
            });
        }
        if self.cluster.node_id.trim().is_empty() || self.cluster.node_id.contains('@') {
            return Err(ConfigError::Invalid {
                key: "cluster.node_id",
                reason: "must not be empty or contain '@'".into(),
            });
        }
        self.cluster.validate()?;
        error::check_log_level(&self.log.level).map_err(|reason| ConfigError::Invalid {
            key: "log.level",
            reason,
        })?;
        Ok(())
    }

    /// `http.shutdown_grace_secs` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.http.shutdown_grace_secs)
    }

    /// `storage.flush_stall_secs` as a duration.
    pub fn flush_stall(&self) -> Duration {
        Duration::from_secs_f64(self.storage.flush_stall_secs)
    }
}

impl Loaded {
    /// Every leaf setting as `(dotted key, value as TOML-ish text, source)`, sorted by key.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        let value = serde_json::to_value(&self.config).unwrap_or(serde_json::Value::Null);
        let mut leaves = Vec::new();
        flatten("", &value, &mut leaves);
        leaves
            .into_iter()
            .map(|(key, value)| {
                let source = self.source_of(&key);
                // The cookie authenticates cluster peers: never print it.
                let value = if key == "cluster.cookie" && value != "\"\"" {
                    "\"<redacted>\"".to_string()
                } else {
                    value
                };
                (key, value, source)
            })
            .collect()
    }

    fn source_of(&self, key: &str) -> String {
        match self.figment.find_metadata(key) {
            Some(meta) => match &meta.source {
                Some(Source::File(path)) => format!("file {}", path.display()),
                _ if meta.name.contains("environment") => {
                    format!("env {ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"))
                }
                _ => "default".into(),
            },
            None => "default".into(),
        }
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests;
