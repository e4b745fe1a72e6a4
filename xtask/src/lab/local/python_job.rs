//! `--job python`: the tutorial's own job (`lab/python-job/job.py`) as the replica, so a workshop can run
//! the same walkthrough with it and compare it with the Rust job.
//!
//! It runs with the Python SDK from its own small virtualenv, `target/venvs/python-job`, made from
//! `lab/python-job/requirements.txt` on first use the way `cargo xtask test` makes its venvs (and
//! remade when the pins change). `--python` (`LAB_PYTHON`) names an interpreter that already has them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::Runtime;
use super::runtime::Worker;
use crate::util::project_root;

/// Where the job lives in the repository.
pub const JOB_DIR: &str = "lab/python-job";

pub fn script() -> PathBuf {
    project_root().join(JOB_DIR).join("job.py")
}

fn requirements() -> PathBuf {
    project_root().join(JOB_DIR).join("requirements.txt")
}

/// The Python job as a process: `python job.py`.
pub fn worker(python: Option<&Path>, runtime: Runtime, dry_run: bool) -> anyhow::Result<Worker> {
    if runtime == Runtime::Docker {
        bail!(
            "--job python runs the Python job as a process on this machine; --runtime docker runs the Rust \
             job's image only (leave out --runtime docker)"
        );
    }
    let script = script();
    if !script.is_file() {
        bail!(
            "the Python job {} is missing from this checkout",
            script.display()
        );
    }
    let python = match python {
        Some(python) => {
            if !dry_run && !aca_lab_testkit::python::satisfies(python, &requirements()) {
                bail!(
                    "{} lacks the Python job's packages; install them with `{} -m pip install -r {JOB_DIR}/requirements.txt`, \
                     or leave out --python / LAB_PYTHON to have the lab make its own virtualenv",
                    python.display(),
                    python.display()
                );
            }
            python.to_path_buf()
        }
        None => own_venv(dry_run)?,
    };
    Ok(Worker::Python { python, script })
}

/// `target/venvs/python-job`, made or updated now if it lacks the pinned packages. The testkit makes
/// it as it makes the test venv: one process at a time (a lock), so two labs started together do not
/// install into the same directory at once.
fn own_venv(dry_run: bool) -> anyhow::Result<PathBuf> {
    use aca_lab_testkit::python;
    let venv = crate::util::target_dir(&project_root())?
        .join("venvs")
        .join("python-job");
    if dry_run {
        return crate::test::ensure_venv(&venv, &requirements(), true);
    }
    let ready = python::satisfies(&python::venv_python(&venv), &requirements());
    if !ready {
        let shown = venv
            .strip_prefix(project_root())
            .unwrap_or(&venv)
            .display()
            .to_string();
        eprintln!(
            "Preparing the Python job's environment in {shown} (first use: azure-servicebus and \
             azure-identity from {JOB_DIR}/requirements.txt; this takes a minute)…"
        );
    }
    let started = std::time::Instant::now();
    let python = python::ensure_venv(&venv, &requirements())
        .context("could not prepare the Python job's virtualenv")?;
    if !ready {
        eprintln!(
            "Python job environment ready in {:.0} s.",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(python)
}

/// The Python job's name locally: the settings' job name with `-python` for `-rust` (`job-python`, as the
/// tutorial calls it), so its executions are told apart from the Rust job's in every list and picture.
pub fn job_name(settings_job_name: &str) -> String {
    let base = settings_job_name
        .strip_suffix("-rust")
        .unwrap_or(settings_job_name);
    format!("{base}-python")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_python_job_takes_the_tutorials_name() {
        assert_eq!(super::job_name("job-rust"), "job-python");
        assert_eq!(super::job_name("orders"), "orders-python");
    }
}
