//! `deploy/local-cluster.sh start`, run with stand-ins for `cargo` and the node binary.
//!
//! The stand-ins record how they were called, so the test sees which binary the script runs
//! (the one under `CARGO_TARGET_DIR`, where `cargo build` put it), where each node keeps its
//! storage, and what the script prints about the admin keys, without building anything or
//! taking the loopback ports 8081 and 7081 that a real local cluster uses.

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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-cluster.sh");
    let path = format!(
        "{}:{}",
        tmp.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(script)
        .arg("start")
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
