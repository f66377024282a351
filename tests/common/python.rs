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
    venv_with(package, version, None)
        .await
        .join("bin")
        .join("python")
}

/// The directory of a virtual environment holding `package==version`, created on first use
/// (a marker file says the install finished, so an interrupted one is redone). `otherwise`
/// tells the reader what else to do when pip cannot install the package.
pub async fn venv_with(package: &str, version: &str, otherwise: Option<&str>) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{package}-{version}"));
    let installed = venv.join("installed");
    if installed.exists() {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let pin = format!("{package}=={version}");
    println!("installing {pin} into {} (first run only)", venv.display());
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(&venv);
    let hint = "`python3 -m venv` failed: install Python's venv module (Debian and Ubuntu: \
                `apt-get install python3-venv`)";
    run(create, INSTALL_DEADLINE, hint).await;
    let mut install = Command::new(venv.join("bin").join("python"));
    install
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(&pin);
    let mut hint = format!("pip could not install {pin} (it needs network access to PyPI once)");
    if let Some(otherwise) = otherwise {
        hint = format!("{hint}; {otherwise}");
    }
    run(install, INSTALL_DEADLINE, &hint).await;
    std::fs::write(&installed, &pin).expect("mark the virtual environment");
    venv
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
        .unwrap_or_else(|_| panic!("{hint} (no answer within {deadline:?})"));
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => panic!(
            "{hint}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{hint} ({e}; is python3 installed?)"),
    }
}
