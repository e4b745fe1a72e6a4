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

mod runner;
mod summary;
mod timing;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use aca_lab_testkit::report::{BackendsReport, REPORT_ENV};
use anyhow::Context;

use crate::util::{display_command, project_root, run_checked};
use runner::{Job, Run, RunKind, TestBinary};
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
    // The Terraform checks need only Python and nothing the build makes: they run beside the venv,
    // the build and the images instead of before them (checkov alone takes most of a minute).
    let terraform = (!args.no_terraform_checks).then(|| {
        let root = root.clone();
        let dry_run = args.dry_run;
        std::thread::spawn(move || {
            let started = Instant::now();
            (terraform_checks(&root, dry_run), started.elapsed())
        })
    });
    let python = if args.no_venv {
        std::env::var_os("ACA_LAB_PYTHON").map(PathBuf::from)
    } else {
        let requirements = root.join(aca_lab_testkit::python::REQUIREMENTS);
        Some(timing.time("Python venv (.venv)", || {
            ensure_venv(&root.join(VENV_DIR), &requirements, args.dry_run)
        })?)
    };

    let mut build = crate::util::cargo();
    build.current_dir(&root).args([
        "test",
        "--workspace",
        "--all-features",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    let binaries = timing.time("build of every test target", || {
        build_test_binaries(&mut build, args.dry_run)
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

    let target = crate::util::target_dir(&root)?;
    let report_path = target.join("backends-report.json");
    let filtered = !args.cargo_test_args.is_empty();
    let mut envs = vec![(REPORT_ENV.to_owned(), report_path.clone())];
    // Inside a binary too, most tests wait on a peer; libtest's default (one thread a core) leaves
    // the Python scenarios queueing behind each other. A thread count the user set is kept.
    if std::env::var_os("RUST_TEST_THREADS").is_none() {
        envs.push(("RUST_TEST_THREADS".into(), TEST_THREADS.into()));
    }
    if let Some(python) = &python {
        envs.push(("ACA_LAB_PYTHON".into(), python.clone()));
    }
    if docker && std::env::var_os("SERVICEBUS_BACKENDS").is_none() {
        envs.push((
            "SERVICEBUS_BACKENDS".into(),
            "embedded,container,official?".into(),
        ));
    }
    // The one test that needs Docker outside tests/backends.rs is `#[ignore]`d, so that a plain
    // `cargo test` reports it as ignored instead of passing it unrun; where Docker answers it runs here.
    let run_walkthrough = docker && !filtered;
    // The Chromium tests that paint the lab's timeline are `#[ignore]`d the same way. On CI Chromium
    // must be there (`.ci/run` installs it): running them anyway makes its absence a failure.
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .any(crate::util::on_path)
        || std::env::var_os("CHROMIUM").is_some()
        || std::env::var_os("CI").is_some();
    let run_pictures = chromium && !filtered;
    let history = TimesFile::new(target.join("xtask-test-times.json"));
    let jobs = plan_jobs(
        binaries,
        &root,
        &args.cargo_test_args,
        run_walkthrough,
        run_pictures,
        &history.load(),
    );
    let parallel = std::env::var("ACA_LAB_TEST_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_PARALLEL);
    if args.dry_run {
        println!(
            "then each test binary cargo built ({parallel} at a time), the doc tests{}{}{}",
            if run_walkthrough {
                ", local_lab's --ignored walkthrough"
            } else {
                ""
            },
            if run_pictures {
                ", xtask's --ignored chromium_ pictures"
            } else {
                ""
            },
            if filtered { "" } else { " and a 60 s soak" }
        );
        if let Some(handle) = terraform {
            let _ = handle.join();
        }
        return Ok(ExitCode::SUCCESS);
    }

    let _ = std::fs::remove_file(&report_path);
    // Step 6, beside the tests: a 60 s soak of the emulator on a data directory (workers and the
    // emulator SIGKILLed). It only waits most of the time, as the tests do.
    let soak = (!filtered).then(|| {
        std::thread::spawn(|| {
            let started = Instant::now();
            let result = crate::soak::reconciles(&crate::soak::SoakArgs {
                duration: std::time::Duration::from_secs(60),
                release: false,
                seed: None,
                work_dir: None,
            });
            (result, started.elapsed())
        })
    });
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into());
    let outcomes = runner::run_all(jobs, parallel, &cargo, &envs, true)?;
    history.save(&outcomes);

    let mut counts = Counts::default();
    let mut succeeded = true;
    let mut walkthrough = None::<(Counts, bool)>;
    let mut pictures = None::<(Counts, bool)>;
    for outcome in &outcomes {
        timing.push(outcome.label.clone(), outcome.took);
        let slot = match outcome.kind {
            RunKind::Main => {
                counts.add(outcome.counts);
                succeeded &= outcome.succeeded;
                continue;
            }
            RunKind::Walkthrough => &mut walkthrough,
            RunKind::Pictures => &mut pictures,
        };
        let (c, ok) = slot.get_or_insert((Counts::default(), true));
        c.add(outcome.counts);
        *ok &= outcome.succeeded;
    }
    let soak = match soak {
        Some(handle) => {
            let (result, took) = handle
                .join()
                .map_err(|_| anyhow::anyhow!("the soak thread panicked"))?;
            timing.push("soak, 60 s (cargo xtask soak)", took);
            Some(result?)
        }
        None => None,
    };
    if let Some(handle) = terraform {
        let (result, took) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("the Terraform checks' thread panicked"))?;
        timing.push("Terraform checks (hcl2, checkov), beside the build", took);
        result?;
    }
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

/// How many test binaries run at once. Ours mostly wait (peers, containers, lock expiry), so more than
/// the 2 cores pays; more than this made the CPU-bound ones (bench, fuzz) the long pole (measured in
/// docs/testing.md).
const DEFAULT_PARALLEL: usize = 4;

/// Threads each test binary runs its cases on (RUST_TEST_THREADS), see [`DEFAULT_PARALLEL`].
const TEST_THREADS: &str = "4";

/// `cargo test --no-run` with JSON messages (diagnostics still rendered for a person on stderr); the
/// test executables it built.
fn build_test_binaries(build: &mut Command, dry_run: bool) -> anyhow::Result<Vec<TestBinary>> {
    let shown = display_command(build);
    if dry_run {
        println!("{shown}");
        return Ok(Vec::new());
    }
    eprintln!("$ {shown}");
    let out = build
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        anyhow::bail!("`{shown}` failed ({})", out.status);
    }
    let binaries = runner::test_binaries(&String::from_utf8_lossy(&out.stdout));
    if binaries.is_empty() {
        anyhow::bail!("`{shown}` built no test binary");
    }
    Ok(binaries)
}

/// One job a binary; the `#[ignore]`d sets ride on their binary's job (after its normal run); the
/// doc tests are one more job. The longest (by the last run's times) go first, so the long poles
/// start at once and the short ones fill in around them.
fn plan_jobs(
    binaries: Vec<TestBinary>,
    root: &Path,
    filter: &[String],
    walkthrough: bool,
    pictures: bool,
    history: &std::collections::HashMap<String, f64>,
) -> Vec<Job> {
    let main = || Run {
        args: filter.to_vec(),
        kind: RunKind::Main,
    };
    let mut jobs: Vec<Job> = binaries
        .into_iter()
        .chain(std::iter::once(TestBinary::doc_tests(root)))
        .map(|binary| {
            let mut runs = vec![main()];
            if walkthrough && binary.package == "xtask" && binary.target == "local_lab" {
                runs.push(Run {
                    args: vec!["--ignored".into()],
                    kind: RunKind::Walkthrough,
                });
            }
            if pictures
                && binary.package == "xtask"
                && binary.target == "xtask"
                && binary.label.starts_with("unittests src/main.rs")
            {
                runs.push(Run {
                    args: vec!["--ignored".into(), "chromium_".into()],
                    kind: RunKind::Pictures,
                });
            }
            Job { binary, runs }
        })
        .collect();
    let expected = |job: &Job| {
        job.runs
            .iter()
            .map(|run| {
                history
                    .get(&runner::run_label(&job.binary, run))
                    .copied()
                    // Never timed here: assume it is long, so it is not the last to start.
                    .unwrap_or(f64::MAX / 4.0)
            })
            .sum::<f64>()
    };
    jobs.sort_by(|a, b| expected(b).total_cmp(&expected(a)));
    jobs
}

/// The last run's time of each test run, kept in the target directory to order the next run.
struct TimesFile(PathBuf);

impl TimesFile {
    fn new(path: PathBuf) -> TimesFile {
        TimesFile(path)
    }

    fn load(&self) -> std::collections::HashMap<String, f64> {
        std::fs::read(&self.0)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Best effort: without the file the next run only starts in a worse order.
    fn save(&self, outcomes: &[runner::Outcome]) {
        let mut times = self.load();
        for outcome in outcomes {
            times.insert(outcome.label.clone(), outcome.took.as_secs_f64());
        }
        if let Ok(json) = serde_json::to_vec_pretty(&times) {
            let _ = std::fs::write(&self.0, json);
        }
    }
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
