//! Shared by the Python peer tests: find the interpreter, run one scenario, read its JSON.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

/// The interpreter from `ACA_LAB_PYTHON`, else `<workspace>/.venv/bin/python` (`cargo xtask test`
/// creates that venv). Without one the tests fail; they never pass silently.
pub fn python() -> PathBuf {
    let path = std::env::var_os("ACA_LAB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(".venv")
                .join("bin")
                .join("python")
        });
    assert!(
        path.exists(),
        "no Python interpreter at {}: run `cargo xtask test` (it creates the venv with azure-servicebus) \
         or set ACA_LAB_PYTHON to a python that has azure-servicebus installed",
        path.display()
    );
    path
}

/// Run `tests/python/<script> <name>` with `env`; returns the JSON of its last stdout line. Panics
/// with the script's output on failure or after 120 s.
pub async fn run_scenario(script: &str, name: &str, env: &[(&str, String)]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let child = tokio::process::Command::new(python())
        .arg(&script)
        .arg(name)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .unwrap_or_else(|_| panic!("scenario {name} did not finish within 120 s"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("scenario {name} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}
