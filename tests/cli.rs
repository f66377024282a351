//! The command line: help, `init --reset`, `admin reset-key` (also with replicated shard
//! groups), `config`, and start-up failures (bad config, port taken, storage locked).
//! Failures must exit != 0 with one stderr line starting with `error: ` that names the
//! cause.

use std::path::Path;

use crate::common::*;

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// `webhookd serve --config <file>` on a config expected to be refused.
async fn serve_expecting_failure(config: &TestConfig, env: &[(&str, &str)]) -> CliOutput {
    let path = path_str(&config.config_path);
    let out = run_webhookd(&["serve", "--config", &path], env).await;
    assert!(!out.success(), "serve should have failed: {out}");
    assert!(
        !out.stdout.contains("listening on"),
        "a refused start must not listen: {out}"
    );
    out
}

/// Exactly one stderr line, starting with `error: ` and containing `needle`.
#[track_caller]
fn assert_one_error_line_naming(out: &CliOutput, needle: &str) {
    assert_eq!(
        out.stderr_lines().len(),
        1,
        "expected a single stderr line: {out}"
    );
    let line = out.error_line();
    // case-insensitive: an env override may be reported as `HTTP.LISTEN`
    assert!(
        line.to_lowercase().contains(&needle.to_lowercase()),
        "the error should name `{needle}`: {out}"
    );
}

// ---------------------------------------------------------------------------------------------
// help
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_works_for_every_subcommand() {
    let cases: [&[&str]; 8] = [
        &["--help"],
        &["serve", "--help"],
        &["init", "--help"],
        &["admin", "--help"],
        &["admin", "reset-key", "--help"],
        &["config", "--help"],
        &["cluster", "--help"],
        &["cluster", "status", "--help"],
    ];
    for args in cases {
        let out = run_webhookd(args, &[]).await;
        assert!(out.success(), "`webhookd {}`: {out}", args.join(" "));
        assert!(
            out.stdout.to_lowercase().contains("usage"),
            "`webhookd {}` prints usage: {out}",
            args.join(" ")
        );
    }
    // the top-level help lists the subcommands
    let out = run_webhookd(&["--help"], &[]).await;
    for sub in ["serve", "init", "admin", "config", "cluster"] {
        assert!(out.stdout.contains(sub), "help mentions `{sub}`: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_subcommand_fails() {
    let out = run_webhookd(&["frobnicate"], &[]).await;
    assert!(!out.success(), "{out}");
}

// ---------------------------------------------------------------------------------------------
// cluster status
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_a_node_and_refuses_without_the_admin_key() {
    let node = TestNode::spawn().await;
    let target = node.base_url.clone();
    let admin = node.admin();
    let out = run_webhookd(
        &["cluster", "status", "--target", &target, "--wait", "10"],
        &[("WEBHOOKD_API_KEY", admin.api_key.as_str())],
    )
    .await;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("state"), "a member table: {out}");
    assert!(out.stdout.contains("not replicated"), "{out}");

    let out = run_webhookd(&["cluster", "status", "--target", &target], &[]).await;
    assert!(!out.success(), "{out}");
    assert!(out.error_line().contains("--api-key"), "{out}");

    let args = [
        "cluster",
        "status",
        "--target",
        &target,
        "--api-key",
        "nope",
    ];
    let out = run_webhookd(&args, &[]).await;
    assert!(!out.success(), "{out}");
    assert!(out.error_line().contains("401"), "{out}");

    let out = run_webhookd(
        &[
            "cluster",
            "status",
            "--target",
            "http://127.0.0.1:9",
            "--api-key",
            "k",
        ],
        &[],
    )
    .await;
    assert!(!out.success(), "nothing listens there: {out}");
}

// ---------------------------------------------------------------------------------------------
// init --reset
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_reset_without_yes_refuses_and_wipes_nothing() {
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn().await;
    let john = node
        .create_account("johndoe", &ep.endpoint_url("john"))
        .await;
    assert_eq!(node.terminate().await.code(), Some(0));

    let out = node.run_cli(&["init", "--reset"]).await;
    assert!(
        !out.success(),
        "init --reset without --yes must refuse: {out}"
    );
    assert_eq!(out.stderr_lines().len(), 1, "a one-line reason: {out}");
    out.error_line();
    assert!(!prints_admin_keys(
        &out.stdout.lines().map(String::from).collect::<Vec<_>>()
    ));

    node.restart().await;
    node.read_account(&john).await;
    assert_eq!(node.all_accounts().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_reset_yes_wipes_storage_and_prints_new_admin_keys() {
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn().await;
    let john = node
        .create_account("johndoe", &ep.endpoint_url("john"))
        .await;
    let reg = id_of(&node.register(&john, "e").await);
    node.subscribe(&john, &reg).await;
    let old_admin = node.admin();
    assert_eq!(node.terminate().await.code(), Some(0));

    let out = node.run_cli(&["init", "--reset", "--yes"]).await;
    assert!(out.success(), "{out}");
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    let api_key = find_line_value(&lines, "admin api_key:").expect("admin api_key line");
    let secret = find_line_value(&lines, "admin secret_key:").expect("admin secret_key line");
    assert!(is_hex40(&api_key) && is_hex40(&secret), "{out}");
    assert_ne!(api_key, old_admin.api_key);

    // the bootstrap already happened, so the next start prints no keys (restart asserts it)
    node.restart().await;
    node.admin_key = api_key;
    let accounts = node.all_accounts().await;
    assert_eq!(accounts.len(), 1, "wiped: only the new admin");
    assert_eq!(accounts[0]["username"], "admin");
    assert_eq!(accounts[0]["secret_key"], secret.as_str());
    assert!(node.all_registrations().await.is_empty());
    assert!(node.all_subscriptions().await.is_empty());
    node.get("/v1/accounts?start=0&limit=1")
        .auth(&old_admin)
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
    node.get(&format!("/v1/account/{}", john.id))
        .auth(&john)
        .send()
        .await
        .expect_error(401, UNKNOWN_USERNAME);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_reset_yes_on_fresh_storage_bootstraps_the_admin() {
    let config = TestConfig::new("");
    let path = path_str(&config.config_path);
    let out = run_webhookd(&["init", "--reset", "--yes", "--config", &path], &[]).await;
    assert!(out.success(), "{out}");
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    let api_key = find_line_value(&lines, "admin api_key:").expect("admin api_key line");
    let node = TestNode::start_existing(config, &api_key).await;
    let accounts = node.all_accounts().await;
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["is_admin"], true);
}

// ---------------------------------------------------------------------------------------------
// admin reset-key
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reset_key_rotates_the_admin_key_offline() {
    let ep = EndpointServer::start().await;
    let mut node = TestNode::spawn().await;
    let john = node
        .create_account("johndoe", &ep.endpoint_url("john"))
        .await;
    let old_admin = node.admin();
    assert_eq!(node.terminate().await.code(), Some(0));

    let out = node.run_cli(&["admin", "reset-key"]).await;
    assert!(out.success(), "{out}");
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    let new_key = find_line_value(&lines, "admin api_key:").expect("admin api_key line");
    assert!(is_hex40(&new_key), "{out}");
    assert_ne!(new_key, old_admin.api_key);

    node.restart().await;
    node.get("/v1/accounts?start=0&limit=10")
        .key("admin", &new_key)
        .send()
        .await
        .expect(200);
    node.get("/v1/accounts?start=0&limit=10")
        .auth(&old_admin)
        .send()
        .await
        .expect_error(401, INVALID_API_KEY);
    // nothing else changed
    node.admin_key = new_key;
    assert_eq!(node.all_accounts().await.len(), 2);
    node.read_account(&john).await;
}

/// With replicated shard groups the admin account exists once per cluster: `init --reset`
/// wipes without making one of its own, and `admin reset-key` refuses to change one node's
/// copy. Run with the local cluster's node file (three members, RF 3) on a fresh directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_init_makes_no_admin_and_reset_key_refuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = dir.path().join("node1");
    let storage = storage.to_str().expect("utf-8 temp path");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/node1.toml");
    let config = config.to_str().expect("utf-8 repo path");
    let env = [("WEBHOOKD_STORAGE__PATH", storage)];

    let out = run_webhookd(&["init", "--reset", "--yes", "--config", config], &env).await;
    assert!(out.success(), "{out}");
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    assert!(!prints_admin_keys(&lines), "{out}");
    assert!(out.stdout.contains("replicated"), "{out}");

    let out = run_webhookd(&["admin", "reset-key", "--config", config], &env).await;
    assert!(!out.success(), "{out}");
    assert!(
        out.error_line().contains("replication_factor"),
        "names the setting: {out}"
    );
    let lines: Vec<String> = out.stdout.lines().map(String::from).collect();
    assert!(find_line_value(&lines, "admin api_key:").is_none(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reset_key_fails_while_the_node_runs() {
    let node = TestNode::spawn().await;
    let out = node.run_cli(&["admin", "reset-key"]).await;
    assert!(
        !out.success(),
        "storage is locked by the running node: {out}"
    );
    out.error_line();
    assert!(find_line_value(
        &out.stdout.lines().map(String::from).collect::<Vec<_>>(),
        "admin api_key:"
    )
    .is_none());
    // the running node and its admin key are unaffected
    node.get("/v1/accounts?start=0&limit=10")
        .auth(&node.admin())
        .send()
        .await
        .expect(200);
}

// ---------------------------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------------------------

/// `key = value  # source` lines → (key, (value, source)).
fn parse_config_listing(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (kv, source) = line.rsplit_once('#')?;
            let (key, value) = kv.split_once('=')?;
            Some((
                key.trim().to_string(),
                value.trim().to_string(),
                source.trim().to_string(),
            ))
        })
        .collect()
}

#[track_caller]
fn setting<'a>(listing: &'a [(String, String, String)], key: &str) -> (&'a str, &'a str) {
    listing
        .iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, v, s)| (v.as_str(), s.as_str()))
        .unwrap_or_else(|| panic!("`webhookd config` does not list {key}: {listing:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_shows_each_setting_with_its_source() {
    let config = TestConfig::new("");
    let path = path_str(&config.config_path);

    let out = run_webhookd(
        &["config", "--config", &path],
        &[("WEBHOOKD_HTTP__LISTEN", "127.0.0.1:9999")],
    )
    .await;
    assert!(out.success(), "{out}");
    let listing = parse_config_listing(&out.stdout);

    let (value, source) = setting(&listing, "http.listen");
    assert!(value.contains("127.0.0.1:9999"), "env wins: {value}");
    assert_eq!(source, "env WEBHOOKD_HTTP__LISTEN");

    let (value, source) = setting(&listing, "security.pbkdf2_iterations");
    assert_eq!(value, "1000");
    assert!(
        source.starts_with("file ") && source.contains("webhookd.toml"),
        "{source}"
    );

    let (value, source) = setting(&listing, "delivery.max_failed_count");
    assert_eq!(value, "250");
    assert_eq!(source, "default");

    let (value, source) = setting(&listing, "http.max_body_bytes");
    assert_eq!(value, "1048576");
    assert_eq!(source, "default");

    // every documented key is listed
    for key in [
        "http.shutdown_grace_secs",
        "storage.path",
        "security.auth_cache_ttl_secs",
        "security.key_resets_per_hour",
        "security.endpoint_deny_cidrs",
        "security.endpoint_allow_cidrs",
        "http_client.timeout_secs",
        "http_client.insecure_tls",
        "delivery.retry_delays_secs",
        "log.level",
        "log.format",
    ] {
        setting(&listing, key);
    }

    // without the env override the file's value is shown
    let out = run_webhookd(&["config", "--config", &path], &[]).await;
    assert!(out.success(), "{out}");
    let listing = parse_config_listing(&out.stdout);
    let (value, source) = setting(&listing, "http.listen");
    assert!(value.contains("127.0.0.1:0"), "{value}");
    assert!(source.starts_with("file "), "{source}");
}

// ---------------------------------------------------------------------------------------------
// start-up failures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_values_are_refused_naming_the_key() {
    for (extra, key) in [
        ("[http]\nlisten = 5", "listen"),
        ("[http]\nlisten = \"not an address\"", "listen"),
        (
            "[security]\npbkdf2_iterations = \"many\"",
            "pbkdf2_iterations",
        ),
        (
            "[delivery]\nretry_delays_secs = \"soon\"",
            "retry_delays_secs",
        ),
    ] {
        let config = TestConfig::new(extra);
        let out = serve_expecting_failure(&config, &[]).await;
        assert_one_error_line_naming(&out, key);
        // `config` refuses it the same way
        let path = path_str(&config.config_path);
        let out = run_webhookd(&["config", "--config", &path], &[]).await;
        assert!(!out.success(), "{out}");
        assert_one_error_line_naming(&out, key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_config_keys_are_refused_naming_the_key() {
    for (extra, key) in [
        ("[http]\nbogus_key = 1", "bogus_key"),
        ("[security]\npbkdf2_iteration = 1000", "pbkdf2_iteration"),
        ("[nosuchsection]\nx = 1", "nosuchsection"),
    ] {
        let config = TestConfig::new(extra);
        let out = serve_expecting_failure(&config, &[]).await;
        assert_one_error_line_naming(&out, key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_env_value_is_refused_naming_the_key() {
    let config = TestConfig::new("");
    let out = serve_expecting_failure(&config, &[("WEBHOOKD_HTTP__LISTEN", "nonsense")]).await;
    assert_one_error_line_naming(&out, "listen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = path_str(&dir.path().join("nope.toml"));
    let out = run_webhookd(&["serve", "--config", &missing], &[]).await;
    assert!(!out.success(), "{out}");
    out.error_line();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_already_taken_is_refused() {
    // Hold a listening socket on a loopback port and point the node at it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = TestConfig::new(&format!("[http]\nlisten = \"{addr}\""));
    let out = serve_expecting_failure(&config, &[]).await;
    out.error_line();
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_node_on_the_same_storage_is_refused() {
    let node = TestNode::spawn().await;
    // Same config (port 0, so no port clash): only the storage lock can stop it.
    let out = serve_expecting_failure(&node.config, &[]).await;
    out.error_line();
    node.get("/v1/accounts?start=0&limit=10")
        .auth(&node.admin())
        .send()
        .await
        .expect(200);
}
