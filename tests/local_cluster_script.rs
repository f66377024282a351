//! `deploy/local-cluster.sh`, run with stand-ins for `cargo`, the node binary and `curl`.
//!
//! The stand-ins record how they were called, so the tests see which binary the script runs
//! (the one under `CARGO_TARGET_DIR`, where `cargo build` put it), where each node keeps its
//! storage, what the script prints about the admin keys, and how it waits for the replicated
//! groups' leaders, without building anything or taking the loopback ports 8081 and 7081
//! that a real local cluster uses.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn write_script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `deploy/local-cluster.sh start` and returns (success, stdout + stderr).
fn start(tmp: &Path) -> (bool, String) {
    run(tmp, "start")
}

/// Runs `deploy/local-cluster.sh COMMAND` (words split at spaces) and returns (success,
/// stdout + stderr).
fn run(tmp: &Path, command: &str) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-cluster.sh");
    let path = format!(
        "{}:{}",
        tmp.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(script)
        .args(command.split_whitespace())
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", tmp.join("target"))
        .env("LOCAL_CLUSTER_DIR", tmp.join("state"))
        .env("CALLS", tmp.join("calls"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_local_cluster_script_runs_the_binary_cargo_built_and_keeps_its_data_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    fs::create_dir_all(tmp.join("bin")).unwrap();
    fs::create_dir_all(tmp.join("target/release")).unwrap();
    write_script(&tmp.join("bin/cargo"), r#"echo "cargo $*" >> "$CALLS""#);
    // The node that owns the admin account prints its keys on the first start only, as
    // `webhookd serve` does; the stand-in exits at once.
    write_script(
        &tmp.join("target/release/webhookd"),
        r#"echo "$0 $* storage=$WEBHOOKD_STORAGE__PATH" >> "$CALLS"
case "$3" in
  *node2.toml) if [ ! -e "$WEBHOOKD_STORAGE__PATH" ]; then
      mkdir -p "$WEBHOOKD_STORAGE__PATH"
      echo "admin api_key: 1111111111111111111111111111111111111111"
      echo "admin secret_key: 2222222222222222222222222222222222222222"
    fi ;;
esac"#,
    );

    let (ok, first) = start(tmp);
    assert!(ok, "{first}");
    assert!(!first.contains("No such file"), "{first}");
    assert!(
        first.contains("Record these keys now")
            && first.contains("admin api_key: 1111111111111111111111111111111111111111"),
        "the first start shows the admin keys: {first}"
    );

    let calls = fs::read_to_string(tmp.join("calls")).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines[0], "cargo build --release", "{calls}");
    let bin = tmp.join("target/release/webhookd");
    for n in 1..=3 {
        let expected = format!(
            "{} serve --config deploy/local/node{n}.toml storage={}",
            bin.display(),
            tmp.join(format!("state/node{n}")).display()
        );
        assert!(lines.contains(&expected.as_str()), "{expected}\n{calls}");
    }

    // A later start prints no keys and says where they are.
    let (ok, second) = start(tmp);
    assert!(ok, "{second}");
    assert!(!second.contains("admin api_key"), "{second}");
    assert!(second.contains("first start only"), "{second}");
}

/// The node stand-in: node2 prints the admin keys on its first start, as the preferred
/// leader of the admin's group does, and every node then stays up (until `stop`).
const LIVE_NODE: &str = r#"echo "$0 $* storage=$WEBHOOKD_STORAGE__PATH" >> "$CALLS"
case "$3" in
  *node2.toml) if [ ! -e "$WEBHOOKD_STORAGE__PATH" ]; then
      mkdir -p "$WEBHOOKD_STORAGE__PATH"
      echo "admin api_key: 1111111111111111111111111111111111111111"
    fi ;;
esac
exec sleep 60"#;

/// The curl stand-in: every node is ready; `GET /v1/cluster` shows group 1 without a
/// leader for its first two answers, as while the groups elect theirs, then with one.
const CURL: &str = r#"for a in "$@"; do case "$a" in http://*) url="$a" ;; esac; done
case "$url" in
  */ready) echo '{"status":"ready"}' ;;
  */v1/cluster)
    echo "curl $*" >> "$CALLS"
    n=$(($(cat "$CALLS.cluster" 2>/dev/null || echo 0) + 1)); echo "$n" > "$CALLS.cluster"
    if [ "$n" -le 2 ]; then leader=null; elif [ "$n" -le 4 ]; then leader='"node1"'; else leader='"node3"'; fi
    echo '{"node":"node1","replication":{"factor":3,"moves":[{"group":"0","target":"node2"}],"groups":['\
'{"group":"meta","voters":["node1","node2","node3"],"target":["node1","node2","node3"],"leader":"node1","followers":[{"node":"node2","lag":0}]},'\
'{"group":"0","voters":["node2","node3","node1"],"target":["node2","node3","node1"],"leader":"node2","followers":[]},'\
'{"group":"1","voters":["node3","node1","node2"],"target":["node3","node1","node2"],"leader":'"$leader"',"followers":[]}]}}' ;;
  *) exit 7 ;;
esac"#;

#[test]
fn start_waits_for_every_group_to_be_led_by_its_preferred_voter_and_status_shows_the_leaders() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    fs::create_dir_all(tmp.join("bin")).unwrap();
    fs::create_dir_all(tmp.join("target/release")).unwrap();
    write_script(&tmp.join("bin/cargo"), r#"echo "cargo $*" >> "$CALLS""#);
    write_script(&tmp.join("bin/curl"), CURL);
    write_script(&tmp.join("target/release/webhookd"), LIVE_NODE);

    let (ok, started) = start(tmp);
    let (stopped_ok, stopped) = run(tmp, "stop");
    assert!(ok, "{started}");
    assert!(stopped_ok, "{stopped}");
    let asked: String = fs::read_to_string(tmp.join("calls.cluster")).unwrap();
    assert!(
        asked.trim().parse::<u32>().unwrap() >= 5,
        "start waited for group 1's lead to reach its preferred voter: {asked}\n{started}"
    );
    for line in ["node1 leads meta", "node2 leads 0", "node3 leads 1"] {
        assert!(started.contains(line), "{line}\n{started}");
    }
    assert!(!started.contains("no leader"), "{started}");
    let calls = fs::read_to_string(tmp.join("calls")).unwrap();
    assert!(
        calls.contains("username: admin")
            && calls.contains("api-key: 1111111111111111111111111111111111111111"),
        "GET /v1/cluster is asked with the printed admin key: {calls}"
    );
    for n in 1..=3 {
        assert!(stopped.contains(&format!("node{n} stopped")), "{stopped}");
        assert!(!tmp.join(format!("state/node{n}.pid")).exists());
    }
}

#[test]
fn status_names_the_groups_without_a_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    fs::create_dir_all(tmp.join("bin")).unwrap();
    fs::create_dir_all(tmp.join("target/release")).unwrap();
    write_script(&tmp.join("bin/cargo"), ":");
    write_script(&tmp.join("bin/curl"), CURL);
    write_script(&tmp.join("target/release/webhookd"), LIVE_NODE);
    let (ok, started) = start(tmp);
    // The stand-in's next answers show group 1 without a leader again.
    fs::write(tmp.join("calls.cluster"), "0").unwrap();
    let (status_ok, status) = run(tmp, "status");
    let (stopped_ok, stopped) = run(tmp, "stop");
    assert!(
        ok && status_ok && stopped_ok,
        "{started}\n{status}\n{stopped}"
    );
    assert!(status.contains("no leader: 1"), "{status}");
    assert!(status.contains("node2 leads 0"), "{status}");
}

/// What the restart tests' node stand-in adds to [`LIVE_NODE`]: `webhookd cluster status`,
/// recorded with the key it was given, failing when `$CALLS.lagging` names its target.
const CLUSTER_STATUS: &str = r#"if [ "$1" = cluster ]; then
  echo "$* key=$WEBHOOKD_API_KEY" >> "$CALLS"
  grep -qx "$4" "$CALLS.lagging" 2>/dev/null && exit 1
  exit 0
fi
"#;

/// A temp dir with the stand-ins for a restart test.
fn restart_stand_ins() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("bin")).unwrap();
    fs::create_dir_all(tmp.path().join("target/release")).unwrap();
    write_script(
        &tmp.path().join("bin/cargo"),
        r#"echo "cargo $*" >> "$CALLS""#,
    );
    write_script(&tmp.path().join("bin/curl"), CURL);
    write_script(
        &tmp.path().join("target/release/webhookd"),
        &format!("{CLUSTER_STATUS}{LIVE_NODE}"),
    );
    tmp
}

#[test]
fn restart_restarts_one_node_at_a_time_each_once_the_previous_one_caught_up() {
    let tmp = restart_stand_ins();
    let tmp = tmp.path();
    let (ok, started) = start(tmp);
    assert!(ok, "{started}");
    fs::write(tmp.join("calls"), "").unwrap();
    let (ok, restarted) = run(tmp, "restart");
    let (stopped_ok, stopped) = run(tmp, "stop");
    assert!(ok && stopped_ok, "{restarted}\n{stopped}");
    let calls = fs::read_to_string(tmp.join("calls")).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines[0], "cargo build --release", "{calls}");
    // Each node is started again, and the cluster asked (through the next node, with the
    // admin key) to settle; the next node is stopped only once the previous one caught up.
    let key = "key=1111111111111111111111111111111111111111";
    let waits: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("cluster status"))
        .collect();
    let expected: Vec<String> = [2, 3, 1]
        .iter()
        .map(|other| format!("cluster status --target http://127.0.0.{other}:8081 --wait 60 {key}"))
        .collect();
    assert_eq!(waits, expected, "{calls}");
    let position = |text: &str| {
        restarted
            .find(text)
            .unwrap_or_else(|| panic!("{text}: {restarted}"))
    };
    for n in 1..=3 {
        let serve = format!(
            "serve --config deploy/local/node{n}.toml storage={}",
            tmp.join(format!("state/node{n}")).display()
        );
        assert!(lines.iter().any(|l| l.ends_with(&serve)), "{calls}");
        let caught_up = position(&format!("node{n} restarted and caught up"));
        assert!(
            position(&format!("node{n} stopped")) < caught_up,
            "{restarted}"
        );
        if n < 3 {
            let next = position(&format!("node{} stopped", n + 1));
            assert!(caught_up < next, "node{n} caught up first: {restarted}");
        }
    }
}

#[test]
fn restart_stops_at_a_node_that_does_not_catch_up_and_needs_a_running_cluster() {
    let tmp = restart_stand_ins();
    let tmp = tmp.path();
    let (ok, not_running) = run(tmp, "restart");
    assert!(!ok, "{not_running}");
    assert!(not_running.contains("is not running"), "{not_running}");

    let (ok, started) = start(tmp);
    assert!(ok, "{started}");
    // node2 never catches up: asked through node3, the wait fails.
    fs::write(tmp.join("calls.lagging"), "http://127.0.0.3:8081\n").unwrap();
    let (ok, restarted) = run(tmp, "restart");
    let node3_pid = fs::read_to_string(tmp.join("state/node3.pid")).unwrap();
    let (stopped_ok, stopped) = run(tmp, "stop");
    assert!(!ok, "{restarted}");
    assert!(stopped_ok, "{stopped}");
    assert!(
        restarted.contains("node2 did not catch up within 60 s"),
        "{restarted}"
    );
    assert!(
        !restarted.contains("node3 stopped"),
        "node3 untouched: {restarted}"
    );
    assert!(!node3_pid.trim().is_empty());
}

#[test]
fn add_starts_a_joining_node_and_admits_it_and_remove_drains_one_then_deletes_it() {
    let tmp = restart_stand_ins();
    let tmp = tmp.path();
    let (ok, refused) = run(tmp, "add 4");
    assert!(!ok, "{refused}");
    let (ok, started) = start(tmp);
    assert!(ok, "{started}");
    for bad in ["add 2", "add 3", "add x", "remove 9"] {
        let (ok, out) = run(tmp, bad);
        assert!(!ok, "{bad}: {out}");
    }
    fs::write(tmp.join("calls"), "").unwrap();

    let (ok, added) = run(tmp, "add 4");
    assert!(ok, "{added}");
    let config = fs::read_to_string(tmp.join("state/node4.toml")).unwrap();
    for line in [
        "node_id = \"node4\"",
        "listen = \"127.0.0.4:7081\"",
        "listen = \"127.0.0.4:8081\"",
        "replication_factor = 3",
        "join = true",
        "id = \"node4\"",
        "cluster_addr = \"127.0.0.4:7081\"",
    ] {
        assert!(config.lines().any(|l| l == line), "{line}:\n{config}");
    }
    assert!(
        !config.contains("node1") && !config.contains("node2"),
        "{config}"
    );
    let key = "key=1111111111111111111111111111111111111111";
    let serve = format!(
        "serve --config {} storage={}",
        tmp.join("state/node4.toml").display(),
        tmp.join("state/node4").display()
    );
    // The node was started in the background: its stand-in notes the call when it runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let calls = loop {
        let calls = fs::read_to_string(tmp.join("calls")).unwrap();
        if calls.lines().any(|l| l.ends_with(&serve)) || std::time::Instant::now() > deadline {
            break calls;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(calls.lines().any(|l| l.ends_with(&serve)), "{calls}");
    let admit = format!(
        "cluster add --target http://127.0.0.1:8081 --id node4 --cluster-addr 127.0.0.4:7081 \
         --http-addr 127.0.0.4:8081 --wait 120 {key}"
    );
    assert!(calls.lines().any(|l| l == admit), "{admit}\n{calls}");
    assert!(added.contains("node4 admitted"), "{added}");
    let (ok, status) = run(tmp, "status");
    assert!(ok && status.contains("node4 running"), "{status}");

    // node1, a seed: drained through another member, stopped, its data deleted, and no
    // longer started.
    fs::create_dir_all(tmp.join("state/node1")).unwrap();
    let (ok, removed) = run(tmp, "remove 1");
    assert!(ok, "{removed}");
    let calls = fs::read_to_string(tmp.join("calls")).unwrap();
    let drain =
        format!("cluster remove --target http://127.0.0.2:8081 --id node1 --wait 120 {key}");
    assert!(calls.lines().any(|l| l == drain), "{drain}\n{calls}");
    assert!(removed.contains("node1 stopped"), "{removed}");
    assert!(!tmp.join("state/node1").exists());
    // The added node goes the same way, its config with it.
    let (ok, removed) = run(tmp, "remove 4");
    assert!(ok, "{removed}");
    assert!(!tmp.join("state/node4.toml").exists());
    let (stopped_ok, stopped) = run(tmp, "stop");
    assert!(stopped_ok, "{stopped}");
    assert!(
        !stopped.contains("node1") && !stopped.contains("node4"),
        "{stopped}"
    );
    assert!(
        stopped.contains("node2 stopped") && stopped.contains("node3 stopped"),
        "{stopped}"
    );

    // A member that does not leave keeps running: the failed drain stops the script.
    let (ok, started) = start(tmp);
    assert!(ok && !started.contains("node1 started"), "{started}");
    fs::write(tmp.join("calls.lagging"), "http://127.0.0.2:8081\n").unwrap();
    let (ok, refused) = run(tmp, "remove 3");
    let (_, stopped) = run(tmp, "stop");
    assert!(
        !ok && refused.contains("node3 was not removed"),
        "{refused}"
    );
    assert!(stopped.contains("node3 stopped"), "{stopped}");
}
