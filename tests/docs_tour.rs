//! The docs' examples, run as one script against a live node: docs that cannot drift.
//!
//! The README's tour and every example of `docs/api.md` (then, on a node with
//! `config/demo.toml`, the failing-endpoint demo of `docs/deliveries.md`) are `sh` code blocks.
//! The test concatenates them into one bash script, points their `127.0.0.1:8081` and
//! `127.0.0.1:9090` URLs at a fresh node and at the example endpoint server
//! (`deploy/examples/endpoint_server.py`), and runs it top to bottom. A `curl` function
//! records every call's status and body. A block followed by
//! ``**Response:** `HTTP/1.1 <status> ...` `` documents its last call: the status must match,
//! and so must the shape of the `json` block under it (the same keys, list lengths, types,
//! whole numbers and fixed strings; ids, keys, times and hashes vary). Every other call must
//! answer below 400.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{eventually, TestNode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The URLs the docs use, replaced by the test's.
const DOC_NODE: &str = "http://127.0.0.1:8081";
const DOC_ENDPOINT: &str = "http://127.0.0.1:9090";
/// Bound on one docs script.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

/// One `sh` block, with what the docs say its last call answers.
#[derive(Debug, Default)]
struct Block {
    code: String,
    status: Option<u16>,
    json: Option<String>,
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// The `sh` blocks of `markdown`, or of its `## <section>` only, with their documented
/// answers.
fn blocks(markdown: &str, section: Option<&str>) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut in_section = section.is_none();
    let mut fence: Option<(String, String)> = None;
    for line in markdown.lines() {
        if let Some((info, body)) = fence.as_mut() {
            if line.trim_start().starts_with("```") {
                let (info, body) = (std::mem::take(info), std::mem::take(body));
                fence = None;
                if !in_section {
                    continue;
                }
                match info.as_str() {
                    "sh" => out.push(Block {
                        code: body,
                        ..Block::default()
                    }),
                    "json" => {
                        if let Some(last) = out.last_mut() {
                            if last.status.is_some() && last.json.is_none() {
                                last.json = Some(body);
                            }
                        }
                    }
                    _ => {}
                }
            } else {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        if let Some(title) = line.strip_prefix("## ") {
            if let Some(wanted) = section {
                in_section = title.trim() == wanted;
            }
        } else if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = Some((info.trim().to_string(), String::new()));
        } else if in_section && line.starts_with("**Response:** `HTTP/1.1 ") {
            let status = line["**Response:** `HTTP/1.1 ".len()..][..3]
                .parse()
                .unwrap_or_else(|_| panic!("unreadable status in {line:?}"));
            let last = out
                .last_mut()
                .unwrap_or_else(|| panic!("{line:?} follows no sh block"));
            assert!(
                last.status.is_none(),
                "two responses for one block: {line:?}"
            );
            last.status = Some(status);
        }
    }
    assert!(!out.is_empty(), "no sh blocks found (section {section:?})");
    out
}

/// `curl` calls in a block (`command curl` bypasses the recording wrapper: polling loops).
fn calls_in(code: &str) -> usize {
    code.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| {
            let bytes = l.as_bytes();
            l.match_indices("curl ")
                .filter(|(at, _)| {
                    let word_start = *at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
                    word_start && !l[..*at].ends_with("command ")
                })
                .count()
        })
        .sum()
}

/// Records each call: `$DOCS_LOG/<n>.head` and `<n>.body`; prints the body, like `curl -s`.
const PRELUDE: &str = r#"set -eu -o pipefail
echo 0 > "$DOCS_LOG/count"
curl() {
  local n args=() out="" a
  n=$(( $(cat "$DOCS_LOG/count") + 1 )); echo "$n" > "$DOCS_LOG/count"
  while [ $# -gt 0 ]; do
    case "$1" in
      -i|-s|-v|-sS) ;;
      -o) out="$2"; shift ;;
      *) args+=("$1") ;;
    esac
    shift
  done
  command curl -sS --noproxy '*' --max-time 30 -D "$DOCS_LOG/$n.head" -o "$DOCS_LOG/$n.body" "${args[@]}"
  if [ -n "$out" ]; then cp "$DOCS_LOG/$n.body" "$out"; else cat "$DOCS_LOG/$n.body"; fi
}
"#;

/// The example endpoint server on a free port, and what it prints.
struct EndpointServer {
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl EndpointServer {
    async fn start() -> Self {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/endpoint_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the example endpoint server");
        let mut reader = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), reader.next_line())
            .await
            .expect("the endpoint server prints its address")
            .unwrap()
            .unwrap_or_default();
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            url,
            lines,
            _child: child,
        }
    }

    fn printed(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    async fn wait_for(&self, needle: &str) {
        eventually(
            &format!("the endpoint server to print {needle:?}"),
            Duration::from_secs(15),
            || async { self.printed().contains(needle).then_some(()) },
        )
        .await;
    }
}

/// Runs `blocks` as one script against `node` and `endpoint`, then checks every call.
async fn run_docs(node: &TestNode, endpoint: &EndpointServer, blocks: &[Block]) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    std::fs::create_dir(&log).unwrap();
    let localise = |text: &str| {
        text.replace(DOC_NODE, &node.base_url)
            .replace(DOC_ENDPOINT, &endpoint.url)
    };
    let mut script = PRELUDE.to_string();
    let mut expected = Vec::new();
    for block in blocks {
        script.push_str(&localise(&block.code));
        script.push('\n');
        let calls = calls_in(&block.code);
        for i in 0..calls {
            let documented = (i + 1 == calls)
                .then_some(block)
                .filter(|b| b.status.is_some());
            expected.push((
                block.code.lines().next().unwrap_or("").to_string(),
                documented,
            ));
        }
        assert!(
            calls > 0 || block.status.is_none(),
            "a response is documented for a block without curl:\n{}",
            block.code
        );
    }
    let script_path = dir.path().join("docs.sh");
    std::fs::write(&script_path, &script).unwrap();
    let run = Command::new("bash")
        .arg(&script_path)
        .current_dir(dir.path())
        .env("DOCS_LOG", &log)
        .env("ADMIN_KEY", &node.admin_key)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_DEADLINE, run)
        .await
        .expect("the docs script finishes in time")
        .unwrap();
    let printed = format!(
        "--- script stdout ---\n{}\n--- script stderr ---\n{}\n--- endpoint server ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        endpoint.printed()
    );
    assert!(
        out.status.success(),
        "the docs script failed ({}):\n{printed}",
        out.status
    );
    let made: usize = std::fs::read_to_string(log.join("count"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        made,
        expected.len(),
        "calls made vs calls in the docs\n{printed}"
    );

    for (n, (first_line, documented)) in expected.iter().enumerate() {
        let n = n + 1;
        let head = std::fs::read_to_string(log.join(format!("{n}.head"))).unwrap();
        let status: u16 = head
            .lines()
            .rfind(|l| l.starts_with("HTTP/"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("call {n} has no status line: {head:?}"));
        let body = std::fs::read_to_string(log.join(format!("{n}.body"))).unwrap_or_default();
        let at = format!("call {n} (block starting {first_line:?})");
        let Some(block) = documented else {
            assert!(status < 400, "{at} answered {status}: {body}\n{printed}");
            continue;
        };
        assert_eq!(Some(status), block.status, "{at}: {body}\n{printed}");
        if let Some(doc) = &block.json {
            let doc: Value = serde_json::from_str(&localise(doc))
                .unwrap_or_else(|e| panic!("{at}: the documented JSON does not parse: {e}"));
            let actual: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{at}: the answer is not JSON ({e}): {body:?}"));
            let mut errors = Vec::new();
            same_shape(&doc, &actual, "$", &mut errors);
            assert!(
                errors.is_empty(),
                "{at}: the answer differs from the docs:\n  {}\nanswer: {body}",
                errors.join("\n  ")
            );
        }
    }
}

/// A string that differs on every run: ids, keys, hashes, digests.
fn varies(s: &str) -> bool {
    let hexish = s.len() >= 16 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    hexish || s.starts_with("pbkdf2:") || s.starts_with("whsec_")
}

fn same_shape(doc: &Value, actual: &Value, at: &str, errors: &mut Vec<String>) {
    match (doc, actual) {
        (Value::Object(d), Value::Object(a)) => {
            let dk: Vec<&String> = d.keys().collect();
            let mut ak: Vec<&String> = a.keys().collect();
            let mut sorted = dk.clone();
            sorted.sort();
            ak.sort();
            if sorted != ak {
                errors.push(format!("{at}: keys {sorted:?} documented, {ak:?} answered"));
                return;
            }
            for k in dk {
                same_shape(&d[k], &a[k], &format!("{at}.{k}"), errors);
            }
        }
        (Value::Array(d), Value::Array(a)) => {
            if d.len() != a.len() {
                errors.push(format!(
                    "{at}: {} items documented, {} answered",
                    d.len(),
                    a.len()
                ));
                return;
            }
            for (i, (d, a)) in d.iter().zip(a).enumerate() {
                same_shape(d, a, &format!("{at}[{i}]"), errors);
            }
        }
        (Value::String(d), Value::String(a)) if varies(d) || d == a => {}
        (Value::Number(d), Value::Number(a)) => {
            let whole = |n: &serde_json::Number| !n.to_string().contains(['.', 'e', 'E']);
            if whole(d) && d.to_string() != a.to_string() {
                errors.push(format!("{at}: {d} documented, {a} answered"));
            }
        }
        (d, a) if d == a => {}
        (d, a) => errors.push(format!("{at}: {d} documented, {a} answered")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_and_the_api_examples_run_as_documented() {
    let node = TestNode::spawn().await;
    let endpoint = EndpointServer::start().await;
    let mut script = blocks(&repo_file("README.md"), Some("A two-minute tour"));
    script.extend(blocks(&repo_file("docs/api.md"), None));
    run_docs(&node, &endpoint, &script).await;
    // The endpoint server learned each subscriber's secret and verified its deliveries.
    for (who, event) in [
        ("janedoe", "order.shipped"),
        ("samjones", "mywebhook.event"),
    ] {
        let line = format!(
            "for {who}: event '{event}', pywebhooks-signature valid, webhook-signature valid"
        );
        endpoint.wait_for(&line).await;
    }
    assert!(
        !endpoint.printed().contains("INVALID"),
        "{}",
        endpoint.printed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failing_endpoint_demo_runs_as_documented() {
    let demo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let demo = std::fs::read_to_string(&demo).unwrap();
    let node = TestNode::spawn_with(&demo).await;
    let endpoint = EndpointServer::start().await;
    let script = blocks(
        &repo_file("docs/deliveries.md"),
        Some("Demo: a failing endpoint, retries and redelivery"),
    );
    run_docs(&node, &endpoint, &script).await;
    endpoint.wait_for("answering 500 (broken endpoint)").await;
}
