//! `docs/configuration.md` and `config/default.toml` list every configuration key with the
//! default the code has.
//!
//! The key list comes from the code: `webhookd config`, run with no file and a clean
//! environment, prints every leaf of the default configuration as `key = value  # default`,
//! with the value as JSON. A key missing from the docs' table or from `config/default.toml`,
//! a key documented that the code does not have, or a default that differs fails the test.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Every key of the default configuration and its value, from `webhookd config`.
fn defaults_from_the_code() -> BTreeMap<String, Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_webhookd"));
    cmd.arg("config");
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .to_uppercase()
            .starts_with("WEBHOOKD_")
        {
            cmd.env_remove(name);
        }
    }
    let out = cmd.output().expect("run webhookd config");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let defaults: BTreeMap<String, Value> = text
        .lines()
        .map(|line| {
            let (key, rest) = line.split_once(" = ").unwrap_or_else(|| panic!("{line:?}"));
            let value = rest
                .strip_suffix("  # default")
                .unwrap_or_else(|| panic!("{line:?}"));
            (key.to_string(), parse(value, line))
        })
        .collect();
    assert!(defaults.len() > 30, "{text}");
    defaults
}

fn parse(value: &str, context: &str) -> Value {
    serde_json::from_str(value)
        .unwrap_or_else(|e| panic!("{context:?}: {value:?} is not JSON: {e}"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Reports every difference between `documented` and the code's `defaults`.
fn compare(what: &str, documented: &BTreeMap<String, Value>, defaults: &BTreeMap<String, Value>) {
    let mut problems = Vec::new();
    for (key, value) in defaults {
        match documented.get(key) {
            None => problems.push(format!("{key} is not documented (default {value})")),
            Some(doc) if !same(doc, value) => {
                problems.push(format!("{key}: documented {doc}, the code says {value}"))
            }
            Some(_) => {}
        }
    }
    for key in documented.keys().filter(|k| !defaults.contains_key(*k)) {
        problems.push(format!(
            "{key} is documented but is not a configuration key"
        ));
    }
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// Equal JSON, numbers spelled as `webhookd config` prints them (`10.0` for a float, not
/// `10`), so a reader can tell which keys take fractions.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.to_string() == y.to_string(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

#[test]
fn every_key_is_documented_with_its_default() {
    let defaults = defaults_from_the_code();
    let docs = read("docs/configuration.md");
    let documented: BTreeMap<String, Value> = docs
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let key = cells[0].trim_end_matches('`');
            let default = cells
                .get(1)
                .and_then(|c| c.strip_prefix('`'))
                .and_then(|c| c.strip_suffix('`'))
                .unwrap_or_else(|| panic!("no `default` cell in {row:?}"));
            (key.to_string(), parse(default, row))
        })
        .collect();
    compare("docs/configuration.md", &documented, &defaults);
}

#[test]
fn config_default_toml_lists_every_key_with_its_default() {
    let defaults = defaults_from_the_code();
    let mut documented = BTreeMap::new();
    let mut section = String::new();
    for line in read("config/default.toml").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, value)) = line.split_once(" = ") {
            // The values of this file are TOML that is also JSON: strings, numbers, lists.
            documented.insert(format!("{section}.{key}"), parse(value, line));
        }
    }
    compare("config/default.toml", &documented, &defaults);
}
