//! The layers of `src/` and which may use which, checked on every test run.
//!
//! A module may name (`crate::<module>`) only the modules listed for it below; everything
//! else is a layering violation, reported with its file and line. The order, lowest first:
//!
//! ```text
//! config, crypto, byte_strings   leaves: no other module of the crate (so is cluster_cli,
//!                                which asks a node over its HTTP API)
//! store                          the database: the byte-string helpers only
//! cluster                        the transport: knows no domain (no service, actors, store)
//! replication                    Raft groups over the transport, their log and state in store
//! domain                         the shared vocabulary: callers, errors, access rules
//! delivery                       outbound HTTP: signing, endpoint policy, connections
//! actors                         the writers of records, and the delivery engine
//! service                        one type per operation, routed to its shard's owner
//! http                           the server: takes a Service, never imports the API
//! api                            the route table and its handlers
//! bench, daemon                  assemble everything
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// For each top-level module of `src/`, the modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("auth_throttle", &[]),
    ("byte_strings", &[]),
    ("cluster_cli", &[]),
    ("config", &[]),
    ("crypto", &[]),
    ("store", &["byte_strings"]),
    ("cluster", &["byte_strings", "config"]),
    (
        "replication",
        &["byte_strings", "cluster", "config", "store"],
    ),
    ("domain", &["cluster", "crypto", "store"]),
    ("delivery", &["config", "crypto", "store"]),
    (
        "actors",
        &[
            "auth_throttle",
            "cluster",
            "config",
            "crypto",
            "delivery",
            "domain",
            "store",
        ],
    ),
    (
        "service",
        &[
            "actors",
            "cluster",
            "crypto",
            "delivery",
            "domain",
            "replication",
            "store",
        ],
    ),
    ("http", &["auth_throttle", "domain", "store"]),
    (
        "api",
        &["cluster", "delivery", "domain", "http", "service", "store"],
    ),
    ("bench", &["cluster", "config", "delivery"]),
    (
        "daemon",
        &[
            "actors",
            "api",
            "auth_throttle",
            "cluster",
            "config",
            "crypto",
            "delivery",
            "domain",
            "http",
            "replication",
            "service",
            "store",
        ],
    ),
];

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs` and `main.rs`).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        file => Some(file.trim_end_matches(".rs").to_string()),
    }
}

/// The modules `source` names as `crate::<module>`, with their line numbers.
fn uses(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b}` names several modules at once.
        if let Some(at) = code.find("crate::{") {
            let list = &code[at + "crate::{".len()..];
            for item in list.split([',', '}']) {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((n + 1, name));
                }
            }
        }
    }
    found
}

/// Every violation in the files under `src`: `file:line: a -> b`.
fn violations(files: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut out = Vec::new();
    for (path, source) in files {
        let Some(module) = module_of(path) else {
            continue;
        };
        let Some(may) = allowed.get(module.as_str()) else {
            out.push(format!(
                "{}: module `{module}` is not in ALLOWED",
                path.display()
            ));
            continue;
        };
        for (line, used) in uses(source) {
            if used != module && !may.contains(&used.as_str()) {
                out.push(format!("{}:{line}: {module} -> {used}", path.display()));
            }
        }
    }
    out
}

/// Every `.rs` file under `dir`, by path relative to `root`.
fn read_tree(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            files.insert(path.strip_prefix(root).unwrap().to_path_buf(), source);
        }
    }
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&src, &src, &mut files);
    assert!(files.len() > 20, "read only {} files", files.len());
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "layering violations:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_forbidden_use_is_reported() {
    let mut files = BTreeMap::new();
    files.insert(
        PathBuf::from("cluster/gateway.rs"),
        "use crate::config::Member;\nuse crate::service::Node; // no\nfn f() { crate::store::x(); }\n"
            .to_string(),
    );
    files.insert(
        PathBuf::from("http/server.rs"),
        "use crate::{api, domain};\n".to_string(),
    );
    files.insert(
        PathBuf::from("api/mod.rs"),
        "// crate::daemon in a comment is no use\n".to_string(),
    );
    assert_eq!(
        violations(&files),
        vec![
            "cluster/gateway.rs:2: cluster -> service",
            "cluster/gateway.rs:3: cluster -> store",
            "http/server.rs:1: http -> api",
        ]
    );
}
