//! What an operator reads: configuration errors and request log lines.
//!
//! A refused configuration is one `error: invalid configuration: ...` line that names the
//! key, where it was set and what is expected, in the words of `docs/configuration.md`
//! (dotted keys, `IP:PORT`), never the configuration library's internals. A `log.level`
//! that is not a level filter is refused instead of silencing the node. Request log lines
//! give the latency rounded to the microsecond.

use std::time::Duration;

use crate::common::{eventually, run_webhookd, CliOutput, TestConfig, TestNode};

/// `webhookd serve` on `config` must fail with one error line; returns it.
async fn refused(config: &TestConfig, env: &[(&str, &str)]) -> String {
    let path = config.config_path.display().to_string();
    let out: CliOutput = run_webhookd(&["serve", "--config", &path], env).await;
    assert!(!out.success(), "serve should have failed: {out}");
    assert!(!out.stdout.contains("listening on"), "{out}");
    assert_eq!(out.stderr_lines().len(), 1, "one stderr line: {out}");
    let line = out.error_line();
    for internal in [
        "default.",
        "TOML file",
        "``",
        "struct ",
        "invalid socket address syntax",
    ] {
        assert!(!line.contains(internal), "{internal:?} leaks into {line:?}");
    }
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_log_level_is_refused_naming_the_key_and_the_file() {
    let config = TestConfig::new("[log]\nlevel = \"loud\"");
    let line = refused(&config, &[]).await;
    let expected = format!(
        "error: invalid configuration: key log.level in {}: \"loud\" is not a level filter",
        config.config_path.display()
    );
    assert!(line.starts_with(&expected), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_directives_are_accepted() {
    let node = TestNode::spawn_with("[log]\nlevel = \"warn,webhookd::http=info\"").await;
    node.get("/health").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_address_asks_for_ip_port() {
    let config = TestConfig::new("[http]\nlisten = \"localhost:8081\"");
    let line = refused(&config, &[]).await;
    assert!(
        line.starts_with("error: invalid configuration: key http.listen in "),
        "{line}"
    );
    assert!(line.contains("IP:PORT"), "{line}");

    let config = TestConfig::new("");
    let line = refused(&config, &[("WEBHOOKD_CLUSTER__LISTEN", "7081")]).await;
    assert!(
        line.starts_with(
            "error: invalid configuration: key cluster.listen from WEBHOOKD_CLUSTER__LISTEN: "
        ),
        "{line}"
    );
    assert!(line.contains("IP:PORT"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_and_wrong_types_say_what_is_expected() {
    let config = TestConfig::new("[http]\nbogus = 1");
    let line = refused(&config, &[]).await;
    assert!(line.contains("key http.bogus in "), "{line}");
    assert!(line.contains("the keys of [http] are: listen, "), "{line}");

    let config = TestConfig::new("[delivery]\nmax_in_flight = \"many\"");
    let line = refused(&config, &[]).await;
    assert!(line.contains("key delivery.max_in_flight in "), "{line}");
    assert!(line.contains("expected a whole number"), "{line}");

    let config = TestConfig::new("[log]\nformat = \"xml\"");
    let line = refused(&config, &[]).await;
    assert!(line.contains("expected one of: text, json"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_syntax_error_is_one_line() {
    let config = TestConfig::new("");
    std::fs::write(&config.config_path, "[http\nlisten = 1\n").unwrap();
    let line = refused(&config, &[]).await;
    assert!(line.starts_with("error: invalid configuration: "), "{line}");
    assert!(line.contains("line 1"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_latencies_are_logged_to_the_microsecond() {
    let node = TestNode::spawn_with("[log]\nformat = \"json\"").await;
    for _ in 0..20 {
        node.get("/health").send().await.expect(200);
    }
    let latencies: Vec<String> =
        eventually("request log lines", Duration::from_secs(10), || async {
            let found: Vec<String> = node
                .config
                .log()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["fields"].get("latency_ms").map(|n| n.to_string()))
                .collect();
            (found.len() >= 20).then_some(found)
        })
        .await;
    for latency in latencies {
        let decimals = latency.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "latency_ms={latency}");
    }
}
