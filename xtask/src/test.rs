//! `cargo xtask test`: install what the tests need, then run the whole suite.
//!
//! This is the one test command the README names and `.ci/run` executes. It keeps the machine set-up
//! in code rather than in a shell script, so a developer and CI run exactly the same steps:
//! 1. a Python virtualenv at `.venv` with the real `azure-servicebus` SDK (the emulator's peer);
//! 2. the static checks of `terraform/` (python-hcl2 parse + invariants, checkov), each tool in its own
//!    virtualenv under `target/venvs/` because checkov ships a clashing `hcl2` package;
//! 3. one build of every test target in the workspace;
//! 4. the container images, packaged from that build, when a Docker engine answers;
//! 5. `cargo test --workspace`, last, so its summary lines close the output.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

use crate::util::{project_root, run_checked};

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skip creating or updating the Python virtualenv (use whatever `ACA_LAB_PYTHON` points at).
    #[arg(long)]
    pub no_venv: bool,
    /// Skip the static checks of `terraform/` (python-hcl2 and checkov).
    #[arg(long)]
    pub no_terraform_checks: bool,
    /// Print the steps and run none.
    #[arg(long)]
    pub dry_run: bool,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// Where the test virtualenv lives, relative to the workspace root.
const VENV_DIR: &str = ".venv";

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let root = project_root();
    let python = if args.no_venv {
        std::env::var_os("ACA_LAB_PYTHON").map(PathBuf::from)
    } else {
        let requirements = root.join("tests").join("requirements.txt");
        Some(ensure_venv(
            &root.join(VENV_DIR),
            &requirements,
            args.dry_run,
        )?)
    };
    if !args.no_terraform_checks {
        terraform_checks(&root, args.dry_run)?;
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .current_dir(&root)
        .args(["test", "--workspace", "--all-features", "--no-run"]);
    run_checked(&mut build, args.dry_run)?;

    // Step 3: package the binaries that build just produced into the images (no second compile), and
    // then require the backends that run on them: a missing image must fail CI, not skip quietly.
    let docker = crate::images::docker_answers();
    if docker {
        if args.dry_run {
            println!("cargo xtask images --prebuilt");
        } else {
            crate::images::run(crate::images::ImagesArgs::prebuilt())?;
        }
    } else {
        eprintln!(
            "no Docker engine answers: the container backends of tests/backends.rs will be reported as skipped"
        );
    }

    let mut test = Command::new(&cargo);
    test.current_dir(&root)
        .args(["test", "--workspace", "--all-features"]);
    if !args.cargo_test_args.is_empty() {
        test.arg("--").args(&args.cargo_test_args);
    }
    if let Some(python) = &python {
        test.env("ACA_LAB_PYTHON", python);
    }
    if docker && std::env::var_os("SERVICEBUS_BACKENDS").is_none() {
        test.env("SERVICEBUS_BACKENDS", "embedded,container,official?");
    }
    if args.dry_run {
        run_checked(&mut test, true)?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = test
        .status()
        .with_context(|| format!("could not start `{}`", crate::util::display_command(&test)))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Terraform cannot run here (no binary, no provider downloads), so `terraform/` is checked statically:
/// every file parses and the lab's invariants hold (`check_terraform.py`, `--terraform` when a binary is
/// on PATH), and checkov's policies pass with each skip justified in `checkov.yaml`.
fn terraform_checks(root: &Path, dry_run: bool) -> anyhow::Result<()> {
    let checks = root.join("terraform").join("checks");
    let venvs = crate::util::target_dir(root)?.join("venvs");
    let hcl2 = ensure_venv(
        &venvs.join("hcl2"),
        &checks.join("requirements-hcl2.txt"),
        dry_run,
    )?;
    let checkov = ensure_venv(
        &venvs.join("checkov"),
        &checks.join("requirements-checkov.txt"),
        dry_run,
    )?;

    let mut parse = Command::new(&hcl2);
    parse
        .current_dir(root)
        .arg(checks.join("check_terraform.py"));
    if crate::util::on_path("terraform") {
        parse.arg("--terraform");
    }
    run_checked(&mut parse, dry_run)?;

    let checkov_bin = checkov.with_file_name("checkov");
    let mut scan = Command::new(checkov_bin);
    scan.current_dir(root).args([
        "--config-file",
        "terraform/checks/checkov.yaml",
        "--quiet",
        "--compact",
    ]);
    run_checked(&mut scan, dry_run)
}

/// Create the virtualenv `venv` with the pinned `requirements` unless it already has them; returns its
/// python.
pub(crate) fn ensure_venv(
    venv: &Path,
    requirements: &Path,
    dry_run: bool,
) -> anyhow::Result<PathBuf> {
    let python = venv.join("bin").join("python");
    if !dry_run && python.exists() && venv_satisfies(&python, requirements) {
        return Ok(python);
    }
    let system_python = find_system_python()?;
    if dry_run || !python.exists() {
        let mut create = Command::new(&system_python);
        create.args(["-m", "venv"]).arg(venv);
        run_checked(&mut create, dry_run)?;
    }
    let mut install = Command::new(&python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(requirements);
    run_checked(&mut install, dry_run)?;
    Ok(python)
}

/// True when every pinned `name==version` line in the requirements file is installed in the venv.
pub(crate) fn venv_satisfies(python: &Path, requirements: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(requirements) else {
        return false;
    };
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .all(|pin| {
            let Some((name, version)) = pin.split_once("==") else {
                return false;
            };
            Command::new(python)
                .args([
                    "-c",
                    "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))",
                    name,
                ])
                .output()
                .is_ok_and(|out| {
                    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == version
                })
        })
}

fn find_system_python() -> anyhow::Result<PathBuf> {
    for candidate in ["python3", "python"] {
        let found = Command::new(candidate).arg("--version").output();
        if found.is_ok_and(|out| out.status.success()) {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!(
        "no python3 on PATH: the emulator's SDK tests need Python 3.9+ with venv (install python3 and python3-venv)"
    )
}
