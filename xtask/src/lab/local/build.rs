//! Building the worker binary the local lab runs, quietly when cargo has nothing to do.
//!
//! A warm round must not print cargo's noise, and a cold one must not sit silent for two minutes: cargo
//! runs with its stderr piped, and the first `Compiling …` line it prints turns into a step with a live
//! line ("Building the worker · Compiling ring v0.17.14 (12 crates so far)") that ends ✔ with the time
//! it took. When cargo compiles nothing, nothing is shown. When it fails, its own output is shown.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};

use crate::lab::ui::{StepProgress, Ui, human_duration};
use crate::util::{cargo, display_command, project_root};

/// The package and binary of the worker.
const PACKAGE: &str = "aca-job-lab";
const BIN: &str = "servicebus-job";

/// Build the worker with cargo and return the path of the binary, next to this xtask binary.
pub fn worker(ui: &Ui, dry_run: bool) -> anyhow::Result<PathBuf> {
    let mut build = cargo();
    build
        .args(["build", "--package", PACKAGE, "--bin", BIN])
        // Plain lines, one per crate, that we can read; cargo's own bar needs a terminal.
        .args(["--color", "never"])
        .current_dir(project_root());
    let shown = display_command(&build);
    if dry_run {
        println!("{shown}");
        return worker_path();
    }
    let mut child = build
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let stderr = child
        .stderr
        .take()
        .context("cargo's stderr was not piped")?;
    let mut progress: Option<StepProgress> = None;
    let mut compiled = 0_usize;
    let mut output = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("could not read cargo's output")?;
        if let Some(unit) = compiling(&line) {
            compiled += 1;
            let step = progress.get_or_insert_with(|| {
                ui.step(
                    "build",
                    "Building the worker (servicebus-job) with cargo; the first build takes a few minutes",
                )
            });
            step.update(format!("Compiling {unit} ({compiled} crates so far)"));
        }
        output.push(line);
    }
    let status = child
        .wait()
        .with_context(|| format!("`{shown}` did not finish"))?;
    if !status.success() {
        let error = anyhow::anyhow!(
            "`{shown}` failed ({status}); cargo said:\n{}",
            output.join("\n")
        );
        match progress {
            Some(step) => step.fail(&error),
            None => ui.step("build", "Building the worker").fail(&error),
        }
        return Err(error);
    }
    if let Some(step) = progress {
        step.ok(format!(
            "Built the worker (servicebus-job) in {} ({compiled} crates compiled)",
            human_duration(step.elapsed())
        ));
    }
    let path = worker_path()?;
    if !path.is_file() {
        bail!(
            "built the worker but found no {}; pass its path with --worker-bin (or LAB_WORKER_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// The worker binary cargo puts next to this xtask binary (same profile, same target dir).
fn worker_path() -> anyhow::Result<PathBuf> {
    let xtask = std::env::current_exe().context("could not locate the running xtask binary")?;
    Ok(xtask.with_file_name(format!("{BIN}{}", std::env::consts::EXE_SUFFIX)))
}

/// `   Compiling ring v0.17.14` → `ring v0.17.14` (cargo's status lines are right-aligned).
fn compiling(line: &str) -> Option<&str> {
    let unit = line.trim_start().strip_prefix("Compiling ")?;
    // Drop a workspace member's path: `aca-job-lab v0.1.0 (/work/x)` reads as `aca-job-lab v0.1.0`.
    Some(unit.split(" (").next().unwrap_or(unit).trim())
}

#[cfg(test)]
mod tests {
    use super::compiling;

    #[test]
    fn reads_cargo_status_lines() {
        assert_eq!(
            compiling("   Compiling ring v0.17.14"),
            Some("ring v0.17.14")
        );
        assert_eq!(
            compiling("   Compiling aca-job-lab v0.1.0 (/work/main)"),
            Some("aca-job-lab v0.1.0")
        );
        assert_eq!(compiling("    Finished `dev` profile"), None);
        assert_eq!(compiling("warning: unused variable"), None);
    }
}
