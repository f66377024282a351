//! A pinned Python package for the tests that check webhookd against a reference
//! implementation: installed on first use into a virtual environment under `target/`
//! (cargo's scratch directory for integration tests), so a plain `cargo test` needs only
//! `python3` with its `venv` module (and PyPI once).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::timeout;

/// How long creating the environment and installing the package may take.
const INSTALL_DEADLINE: Duration = Duration::from_secs(900);
/// How long one script may run.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// The `python` of a virtual environment holding `package==version`, created on first use.
pub async fn python_with(package: &str, version: &str) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{package}-{version}"));
    let python = venv.join("bin").join("python");
    let installed = venv.join("installed");
    if installed.exists() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let pin = format!("{package}=={version}");
    println!("installing {pin} into {} (first run only)", venv.display());
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(&venv);
    let hint = "`python3 -m venv` failed: install python3 and its venv module";
    run(create, INSTALL_DEADLINE, hint).await;
    let mut install = Command::new(&python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(&pin);
    let hint = format!("pip could not install {pin} (it needs PyPI once)");
    run(install, INSTALL_DEADLINE, &hint).await;
    std::fs::write(&installed, &pin).expect("mark the virtual environment");
    python
}

/// Runs `script` with `python`, `args` after it; returns its standard output.
pub async fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(script).args(args);
    run(cmd, RUN_DEADLINE, "the Python script failed").await
}

/// Runs `cmd` to completion within `deadline`; panics with `hint` on failure.
async fn run(mut cmd: Command, deadline: Duration, hint: &str) -> String {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let output = timeout(deadline, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{hint} (no answer in time)"));
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => panic!(
            "{hint}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{hint} ({e})"),
    }
}
