//! `cargo xtask test`: install what the tests need, then run the whole suite.
//!
//! This is the one test command the README names and `.ci/run` executes. It keeps the machine set-up
//! in code rather than in a shell script, so a developer and CI run exactly the same steps:
//! 1. a Python virtualenv at `.venv` with the real `azure-servicebus` SDK (the emulator's peer);
//! 2. the static checks of `terraform/` (python-hcl2 parse + invariants, checkov), each tool in its own
//!    virtualenv under `target/venvs/` because checkov ships a clashing `hcl2` package;
//! 3. one build of every test target in the workspace;
//! 4. the container images, packaged from that build, when a Docker engine answers;
//! 5. `cargo test --workspace`, and where Docker answers the `#[ignore]`d Docker walkthrough;
//! 6. a 60 s `cargo xtask soak` (the emulator on a data directory, workers and the emulator SIGKILLed,
//!    every message reconciled), counted as one test;
//! 7. a closing summary ([`summary`]): every Service Bus backend that ran and every one that did not,
//!    with the reason, and one `N passed, N failed, N skipped` line. It fails the run when a backend
//!    the machine should have (Docker answers ⇒ `embedded` and `container`) did not run.

mod summary;
mod timing;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use aca_lab_testkit::report::{BackendsReport, REPORT_ENV};
use anyhow::Context;

use crate::util::{display_command, project_root, run_checked};
use summary::Counts;
use timing::Timing;

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skip creating or updating the Python virtualenv here (the tests then use `ACA_LAB_PYTHON`, or
    /// create `.venv` themselves).
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
const VENV_DIR: &str = aca_lab_testkit::python::VENV_DIR;

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let root = project_root();
    let mut timing = Timing::new();
    let python = if args.no_venv {
        std::env::var_os("ACA_LAB_PYTHON").map(PathBuf::from)
    } else {
        let requirements = root.join(aca_lab_testkit::python::REQUIREMENTS);
        Some(timing.time("Python venv (.venv)", || {
            ensure_venv(&root.join(VENV_DIR), &requirements, args.dry_run)
        })?)
    };
    if !args.no_terraform_checks {
        timing.time("Terraform checks (hcl2, checkov)", || {
            terraform_checks(&root, args.dry_run)
        })?;
    }

    let mut build = crate::util::cargo();
    build
        .current_dir(&root)
        .args(["test", "--workspace", "--all-features", "--no-run"]);
    timing.time("build of every test target", || {
        run_checked(&mut build, args.dry_run)
    })?;

    // Step 3: package the binaries that build just produced into the images (no second compile), and
    // then require the backends that run on them: a missing image must fail CI, not skip quietly.
    let docker = crate::images::docker_answers();
    if docker {
        if args.dry_run {
            println!("cargo xtask images --prebuilt");
        } else {
            timing.time("container images (prebuilt binaries)", || {
                crate::images::run(crate::images::ImagesArgs::prebuilt())
            })?;
        }
    } else {
        eprintln!(
            "no Docker engine answers: the container backends of tests/backends.rs will be reported as skipped"
        );
    }

    let report_path = crate::util::target_dir(&root)?.join("backends-report.json");
    let filtered = !args.cargo_test_args.is_empty();
    let mut test = crate::util::cargo();
    test.current_dir(&root)
        .args(["test", "--workspace", "--all-features"])
        .env(REPORT_ENV, &report_path);
    if filtered {
        test.arg("--").args(&args.cargo_test_args);
    }
    if let Some(python) = &python {
        test.env("ACA_LAB_PYTHON", python);
    }
    if docker && std::env::var_os("SERVICEBUS_BACKENDS").is_none() {
        test.env("SERVICEBUS_BACKENDS", "embedded,container,official?");
    }
    // The one test that needs Docker outside tests/backends.rs is `#[ignore]`d, so that a plain
    // `cargo test` reports it as ignored instead of passing it unrun; where Docker answers it runs here.
    // `--workspace` keeps the features unified as in the build above, so nothing is compiled again.
    let mut walkthrough = crate::util::cargo();
    walkthrough.current_dir(&root).args([
        "test",
        "--workspace",
        "--all-features",
        "--test",
        "local_lab",
        "--",
        "--ignored",
    ]);
    let run_walkthrough = docker && !filtered;
    // The Chromium tests that paint the lab's timeline are `#[ignore]`d the same way. On CI Chromium
    // must be there (`.ci/run` installs it): running them anyway makes its absence a failure.
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .any(crate::util::on_path)
        || std::env::var_os("CHROMIUM").is_some()
        || std::env::var_os("CI").is_some();
    let mut pictures = crate::util::cargo();
    pictures.current_dir(&root).args([
        "test",
        "--workspace",
        "--all-features",
        "--bin",
        "xtask",
        "--",
        "--ignored",
        "chromium_",
    ]);
    let run_pictures = chromium && !filtered;
    if args.dry_run {
        run_checked(&mut test, true)?;
        if run_walkthrough {
            run_checked(&mut walkthrough, true)?;
        }
        if run_pictures {
            run_checked(&mut pictures, true)?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    let _ = std::fs::remove_file(&report_path);
    let (counts, succeeded) = run_counted(&mut test, &mut timing)?;
    let walkthrough = if run_walkthrough {
        Some(run_counted(&mut walkthrough, &mut timing)?)
    } else {
        None
    };
    let pictures = if run_pictures {
        Some(run_counted(&mut pictures, &mut timing)?)
    } else {
        None
    };
    // Step 6: a 60 s soak of the emulator on a data directory (workers and the emulator SIGKILLed).
    let soak = if filtered {
        None
    } else {
        Some(timing.time("soak, 60 s (cargo xtask soak)", || {
            crate::soak::reconciles(&crate::soak::SoakArgs {
                duration: std::time::Duration::from_secs(60),
                release: false,
                seed: None,
                work_dir: None,
            })
        })?)
    };
    let report = std::fs::read(&report_path)
        .ok()
        .and_then(|json| serde_json::from_slice::<BackendsReport>(&json).ok());
    let (text, passed) = summary::render(&summary::Run {
        counts,
        succeeded,
        report,
        docker,
        filtered,
        walkthrough,
        chromium,
        pictures,
        soak,
    });
    // The table goes before the summary so that the count line CI reads stays the last line.
    print!("{}", timing.render());
    print!("{text}");
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Run a `cargo test`, passing its output through line by line while counting its `test result:`
/// lines and timing each test binary cargo announces (a row of `timing` each); returns the counts
/// and whether it succeeded.
fn run_counted(command: &mut Command, timing: &mut Timing) -> anyhow::Result<(Counts, bool)> {
    let shown = display_command(command);
    eprintln!("$ {shown}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    // cargo announces each binary on stderr while the binary writes its results on stdout: read
    // stderr on a thread and note when each announcement came.
    let stderr = child.stderr.take();
    let announcements = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let Some(stderr) = stderr else {
            return seen;
        };
        let mut err = std::io::stderr();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(binary) = timing::announced_binary(&line) {
                seen.push((binary, Instant::now()));
            }
            let _ = writeln!(err, "{line}");
        }
        seen
    });
    let mut counts = Counts::default();
    if let Some(stdout) = child.stdout.take() {
        let mut out = std::io::stdout();
        for line in BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("reading the output of `{shown}`"))?;
            counts.add_line(&line);
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    let ended = Instant::now();
    let seen = announcements.join().unwrap_or_default();
    for (i, (binary, start)) in seen.iter().enumerate() {
        let end = seen.get(i + 1).map_or(ended, |(_, next)| *next);
        timing.push(binary.clone(), end.duration_since(*start));
    }
    Ok((counts, status.success()))
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
/// python. The tests that need the Python peer make `.venv` the same way when it is missing
/// (`aca_lab_testkit::python`), so a plain `cargo test` works too.
pub(crate) fn ensure_venv(
    venv: &Path,
    requirements: &Path,
    dry_run: bool,
) -> anyhow::Result<PathBuf> {
    use aca_lab_testkit::python;
    if dry_run {
        let system = python::system_python().unwrap_or_else(|_| PathBuf::from("python3"));
        let venv_python = python::venv_python(venv);
        run_checked(&mut python::create_command(&system, venv), true)?;
        run_checked(
            &mut python::install_command(&venv_python, requirements),
            true,
        )?;
        return Ok(venv_python);
    }
    Ok(python::ensure_venv(venv, requirements)?)
}
