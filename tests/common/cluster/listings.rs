//! Listings compared across nodes: every node must give exactly the same pages.

use serde_json::Value;

use crate::common::node::TestNode;
use crate::common::records::{AsCreds, Creds};

/// A paged listing: path, who reads it, and the key of its rows.
#[derive(Clone, Debug)]
pub struct Listing {
    pub path: String,
    pub who: Creds,
    pub key: String,
}

impl Listing {
    pub fn new(path: &str, who: &impl AsCreds, key: &str) -> Self {
        Self {
            path: path.into(),
            who: Creds::new(who.username(), who.api_key()),
            key: key.into(),
        }
    }
}

/// One page as seen: the query, the status and the JSON body (`Null` for a 204).
#[derive(Debug, PartialEq)]
struct Seen {
    start: u64,
    limit: u64,
    status: u16,
    body: Value,
}

/// Every page of `l` on `node` with `limit`, following `next_start` from 0 until a 204 or a
/// page without `next_start`, then the pages at `start = rows` and `rows + 3` (past the end).
async fn walk(node: &TestNode, l: &Listing, limit: u64) -> (Vec<Seen>, Vec<Value>) {
    let mut seen = Vec::new();
    let mut rows = Vec::new();
    let mut start = 0;
    for _ in 0..1000 {
        let r = node.page(&l.path, &l.who, start, limit).await;
        let body = r.json.clone().unwrap_or(Value::Null);
        let status = r.status;
        let next = match status {
            204 => {
                r.expect_no_content();
                None
            }
            200 => {
                let items = r.items(&l.key);
                assert!(
                    !items.is_empty() && items.len() as u64 <= limit,
                    "a 200 page holds 1..=limit rows: {r}"
                );
                rows.extend(items);
                body.get("next_start").and_then(Value::as_u64)
            }
            other => panic!(
                "listing {} on {}: status {other}; {r}",
                l.path, node.base_url
            ),
        };
        seen.push(Seen {
            start,
            limit,
            status,
            body,
        });
        match next {
            Some(n) => {
                assert!(n > start, "next_start {n} does not advance from {start}");
                start = n;
            }
            None => break,
        }
    }
    let total = rows.len() as u64;
    for start in [total, total + 3] {
        let r = node.page(&l.path, &l.who, start, limit).await;
        seen.push(Seen {
            start,
            limit,
            status: r.status,
            body: r.json.clone().unwrap_or(Value::Null),
        });
    }
    (seen, rows)
}

/// Asserts that every node gives exactly the same pages of every listing, for each limit
/// (statuses, rows, `next_start`, 204s past the end), and that the pages of each limit
/// concatenate to the same rows, each once.
pub async fn assert_same_listings(
    step: &str,
    nodes: &[&TestNode],
    listings: &[Listing],
    limits: &[u64],
) {
    for l in listings {
        let mut reference_rows: Option<Vec<Value>> = None;
        for &limit in limits {
            let mut first: Option<Vec<Seen>> = None;
            for node in nodes {
                let (seen, rows) = walk(node, l, limit).await;
                let ids: std::collections::HashSet<String> =
                    rows.iter().map(|r| r["id"].to_string()).collect();
                assert_eq!(
                    ids.len(),
                    rows.len(),
                    "[{step}] {} (limit {limit}) on {} lists a row twice: {rows:?}",
                    l.path,
                    node.base_url
                );
                match &reference_rows {
                    None => reference_rows = Some(rows),
                    Some(reference) => assert_eq!(
                        reference, &rows,
                        "[{step}] {} as {}: the rows paged with limit {limit} on {} differ from \
                         the first node's first walk",
                        l.path, l.who.username, node.base_url
                    ),
                }
                match &first {
                    None => first = Some(seen),
                    Some(f) => {
                        if f != &seen {
                            let diff: Vec<String> = f
                                .iter()
                                .zip(&seen)
                                .filter(|(a, b)| a != b)
                                .map(|(a, b)| {
                                    format!(
                                        "start={} limit={}:\n  first node: {} {}\n  {}: {} {}",
                                        a.start,
                                        a.limit,
                                        a.status,
                                        a.body,
                                        node.base_url,
                                        b.status,
                                        b.body
                                    )
                                })
                                .collect();
                            panic!(
                                "[{step}] {} as {}: pages differ between nodes ({} vs {} pages):\n{}",
                                l.path,
                                l.who.username,
                                f.len(),
                                seen.len(),
                                diff.join("\n")
                            );
                        }
                    }
                }
            }
        }
    }
}
