//! Small helpers shared by the tasks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The workspace root, wherever `cargo xtask` was started from.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A command as a person would type it, for plans, logs and error messages.
pub fn display_command(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|arg| {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            format!("'{}'", arg.replace('\'', r"'\''"))
        } else {
            arg.into_owned()
        }
    }));
    words.join(" ")
}

/// Run a command to completion (no shell), inheriting stdio; with `dry_run`, only print it.
/// A failure names the command and its exit status.
pub fn run_checked(cmd: &mut Command, dry_run: bool) -> anyhow::Result<()> {
    let shown = display_command(cmd);
    if dry_run {
        println!("{shown}");
        return Ok(());
    }
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// The target directory cargo uses here (honours `CARGO_TARGET_DIR` and `build.target-dir`).
pub fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("could not run `cargo metadata` to find the target directory")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("`cargo metadata` printed something that is not JSON")?;
    let dir = meta["target_directory"]
        .as_str()
        .context("`cargo metadata` did not report a target_directory")?;
    Ok(PathBuf::from(dir))
}
