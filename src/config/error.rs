//! Configuration errors, worded for the person who edits the file.
//!
//! figment's own messages name its internals (`for key "default.http.bogus" in c.toml TOML
//! file`, serde's `struct HttpConfig`, `invalid socket address syntax`). Start-up failures are
//! read by operators, so each error is rewritten as: which key, where it was set, what was
//! expected. `webhookd config` and the docs use the same dotted key names.

use figment::error::{Actual, Kind};
use figment::Source;

use super::ENV_PREFIX;

/// A configuration that could not be loaded or failed validation.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, the environment or a value could not be parsed into the schema.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value parsed but is out of its allowed range.
    #[error("invalid configuration: key {key}: {reason}")]
    Invalid {
        /// Dotted path of the offending key.
        key: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

impl ConfigError {
    /// Adds where the refused value was set (`in webhookd.toml`, `from WEBHOOKD_...`), when
    /// it was not a default.
    pub(super) fn located(self, figment: &figment::Figment) -> Self {
        let ConfigError::Invalid { key, reason } = self else {
            return self;
        };
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        match figment
            .find_metadata(key)
            .and_then(|meta| origin(meta, &path))
        {
            Some(origin) => ConfigError::Parse(format!("key {key} {origin}: {reason}")),
            None => ConfigError::Invalid { key, reason },
        }
    }
}

/// `in <file>` or `from <environment variable>`; `None` for the built-in defaults.
fn origin(meta: &figment::Metadata, path: &[String]) -> Option<String> {
    match &meta.source {
        Some(Source::File(file)) => Some(format!("in {}", file.display())),
        _ if meta.name.contains("environment") => Some(format!(
            "from {ENV_PREFIX}{}",
            path.join("__").to_uppercase()
        )),
        _ => None,
    }
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        // figment chains several errors; the first one is enough to act on.
        let first = error.into_iter().next();
        ConfigError::Parse(first.map_or_else(|| "unreadable".to_string(), |e| describe(&e)))
    }
}

/// `key http.listen in webhookd.toml: expected IP:PORT ...`.
fn describe(error: &figment::Error) -> String {
    let key = error.path.join(".");
    let origin = error
        .metadata
        .as_ref()
        .and_then(|meta| origin(meta, &error.path));
    let what = explain(&error.kind, &error.path);
    match (key.is_empty(), origin) {
        (true, Some(origin)) => format!("{origin}: {what}"),
        (true, None) => what,
        (false, Some(origin)) => format!("key {key} {origin}: {what}"),
        (false, None) => format!("key {key}: {what}"),
    }
}

fn explain(kind: &Kind, path: &[String]) -> String {
    match kind {
        Kind::UnknownField(_, expected) => {
            let scope = match path.len() {
                0 | 1 => "sections are".to_string(),
                n => format!("keys of [{}] are", path[..n - 1].join(".")),
            };
            format!("unknown key; the {scope}: {}", expected.join(", "))
        }
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value {found:?}; expected one of: {}",
                expected.join(", ")
            )
        }
        Kind::InvalidType(found, expected) => {
            format!(
                "expected {}, found {}",
                expected_type(expected),
                actual(found)
            )
        }
        Kind::InvalidValue(found, expected) => {
            format!(
                "expected {}, found {}",
                expected_type(expected),
                actual(found)
            )
        }
        Kind::MissingField(name) => format!("missing key {name}"),
        Kind::Message(message) => explain_message(message),
        other => other.to_string(),
    }
}

/// serde's custom messages: the address and network parsers, and TOML syntax errors.
fn explain_message(message: &str) -> String {
    if message.contains("socket address") {
        return "expected an address as IP:PORT, e.g. 127.0.0.1:8081 (a host name is not \
                accepted)"
            .into();
    }
    if message.contains("IP address") || message.contains("prefix length") {
        return "expected a network as IP/PREFIX, e.g. 10.0.0.0/8".into();
    }
    // A TOML syntax error spans several lines (the source line, a caret under the column):
    // keep its words only, on one line.
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains('|') && !line.starts_with('^'))
        .collect::<Vec<_>>()
        .join("; ")
}

/// serde's names of the expected type, in the words of the docs.
fn expected_type(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a string" | "string" => "a string".into(),
        e if e.contains("socket address") => "an address as IP:PORT, e.g. 127.0.0.1:8081".into(),
        e if e.to_lowercase().contains("network") => {
            "a network as IP/PREFIX, e.g. 10.0.0.0/8".into()
        }
        e if e.starts_with("struct ") || e == "a map" => "a table".into(),
        e if e.contains("sequence") || e.starts_with("a vec") => "a list [...]".into(),
        other => other.into(),
    }
}

fn actual(found: &Actual) -> String {
    match found {
        Actual::Str(s) => format!("the string {s:?}"),
        Actual::Bool(b) => format!("{b}"),
        Actual::Unsigned(n) => format!("the number {n}"),
        Actual::Signed(n) => format!("the number {n}"),
        Actual::Float(n) => format!("the number {n}"),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        other => other.to_string(),
    }
}

/// Checks a `log.level` filter: comma-separated directives, each a level or `target=level`.
///
/// The tracing filter parser accepts any word as a target name, so `loud` would parse as
/// "everything from the target `loud`" and the node would log nothing at all.
pub fn check_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |s: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s.trim()));
    let refuse = || {
        Err(format!(
            "{filter:?} is not a level filter: use one of {} or target=level directives \
             separated by commas, e.g. \"info,webhookd=debug\"",
            LEVELS.join(", ")
        ))
    };
    if filter.trim().is_empty() {
        return refuse();
    }
    for directive in filter.split(',') {
        let ok = match directive.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(directive),
        };
        if !ok {
            return refuse();
        }
    }
    match filter.parse::<tracing_subscriber::EnvFilter>() {
        Ok(_) => Ok(()),
        Err(_) => refuse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_pass() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "info,webhookd=debug",
            "webhookd::http=trace",
        ] {
            assert!(check_log_level(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn words_that_are_not_levels_are_refused() {
        for bad in ["loud", "", "info,", "webhookd", "=debug", "webhookd=loud"] {
            assert!(check_log_level(bad).is_err(), "{bad}");
        }
    }
}
