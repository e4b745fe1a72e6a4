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
    let status = cmd.status().with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}
