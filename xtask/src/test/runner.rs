//! Run the workspace's test binaries side by side instead of one after another.
//!
//! `cargo test` runs one test binary at a time. Most of ours spend their time waiting (on a Python
//! peer, a container, a lock that must expire, a killed emulator restarting), not computing, so on a
//! 2-core machine one binary at a time leaves the machine idle most of the run. Here the binaries that
//! `cargo test --no-run` built are started as cargo would start them (in their package's directory,
//! with the package's variables), several at once. Each binary's output is kept and printed whole when
//! it ends, so the log reads binary by binary, and its `test result:` lines are counted as before.
//!
//! Jobs that use the same binary (its normal run, then its `--ignored` cases) stay in one job, one after
//! the other, so a binary never runs against itself.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;

use super::summary::Counts;

/// One test binary cargo built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBinary {
    /// How the log and the timing table name it: `tests/engine.rs [servicebus-emulator]`.
    pub label: String,
    /// The package's name (for `CARGO_PKG_NAME`) and directory (cargo runs tests there).
    pub package: String,
    pub package_dir: PathBuf,
    /// The target's name: `engine`, or the crate's name for unit tests.
    pub target: String,
    pub executable: PathBuf,
    /// `cargo test --doc`, not a test binary: cargo is run (without the package variables, which
    /// would make it rebuild, see [`aca_lab_testkit::cargo`]) and `executable` is unused.
    pub doc_tests: bool,
}

impl TestBinary {
    /// The workspace's doc tests, which only cargo (through rustdoc) can build and run.
    pub fn doc_tests(root: &Path) -> TestBinary {
        TestBinary {
            label: "doc-tests of every crate".into(),
            package: String::new(),
            package_dir: root.to_path_buf(),
            target: String::new(),
            executable: PathBuf::new(),
            doc_tests: true,
        }
    }
}

/// One run of a binary: its arguments after the binary, and which run it is (for the summary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub args: Vec<String>,
    pub kind: RunKind,
}

/// The main run's counts and the `#[ignore]`d sets' counts are kept apart, as the summary needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Main,
    Walkthrough,
    Pictures,
}

/// A binary and the runs it makes, in order.
#[derive(Debug, Clone)]
pub struct Job {
    pub binary: TestBinary,
    pub runs: Vec<Run>,
}

/// What one run gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub label: String,
    pub kind: RunKind,
    pub counts: Counts,
    pub succeeded: bool,
    pub took: Duration,
}

/// The part of cargo's `--message-format=json` lines that names a built test executable.
#[derive(Deserialize)]
struct Artifact {
    reason: String,
    #[serde(default)]
    executable: Option<PathBuf>,
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    manifest_path: Option<PathBuf>,
    #[serde(default)]
    package_id: Option<String>,
}

#[derive(Deserialize)]
struct Profile {
    test: bool,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
    src_path: PathBuf,
}

/// The test executables in cargo's JSON messages (one per line; other lines are ignored).
pub fn test_binaries(json_lines: &str) -> Vec<TestBinary> {
    let mut found = Vec::new();
    for line in json_lines.lines() {
        let Ok(artifact) = serde_json::from_str::<Artifact>(line) else {
            continue;
        };
        let (Some(executable), Some(profile), Some(target), Some(manifest)) = (
            artifact.executable,
            artifact.profile,
            artifact.target,
            artifact.manifest_path,
        ) else {
            continue;
        };
        if artifact.reason != "compiler-artifact" || !profile.test {
            continue;
        }
        let package_dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
        let package = package_name(artifact.package_id.as_deref(), &package_dir);
        let source = target
            .src_path
            .strip_prefix(&package_dir)
            .unwrap_or(&target.src_path)
            .display()
            .to_string();
        let what = if target.kind.iter().any(|k| k == "test") {
            source
        } else {
            format!("unittests {source}")
        };
        found.push(TestBinary {
            label: format!("{what} [{package}]"),
            package,
            package_dir,
            target: target.name,
            executable,
            doc_tests: false,
        });
    }
    found
}

/// The package's name from cargo's package id (`path+file:///…/emulator#servicebus-emulator@0.1.0`,
/// or the older `name 0.1.0 (path+file://…)`), else the directory's name.
fn package_name(id: Option<&str>, dir: &Path) -> String {
    // `…/xtask#0.1.0`: cargo leaves the name out where it is the directory's.
    let from_id = id.and_then(|id| match id.rsplit_once('#') {
        Some((_, name_version)) => name_version
            .split_once('@')
            .map(|(name, _)| name.to_owned()),
        None => id.split_whitespace().next().map(str::to_owned),
    });
    from_id.unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

/// The command cargo would run for `binary` with `args`, with `envs` set.
fn command(
    binary: &TestBinary,
    args: &[String],
    cargo: &Path,
    envs: &[(String, PathBuf)],
) -> Command {
    let mut command = if binary.doc_tests {
        let mut command = aca_lab_testkit::cargo::command();
        command.args(["test", "--workspace", "--all-features", "--doc"]);
        if !args.is_empty() {
            command.arg("--").args(args);
        }
        command
    } else {
        let mut command = Command::new(&binary.executable);
        command
            .args(args)
            .env("CARGO", cargo)
            .env("CARGO_MANIFEST_DIR", &binary.package_dir)
            .env("CARGO_PKG_NAME", &binary.package)
            .env("CARGO_CRATE_NAME", binary.target.replace('-', "_"));
        command
    };
    command
        .current_dir(&binary.package_dir)
        .envs(envs.iter().map(|(k, v)| (k, v)));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Run every job, at most `parallel` at a time, the longest-expected first (jobs come in that order);
/// with `echo`, each job's output is printed whole when it ends. Returns each run's outcome, in the
/// order they ended.
pub fn run_all(
    jobs: Vec<Job>,
    parallel: usize,
    cargo: &Path,
    envs: &[(String, PathBuf)],
    echo: bool,
) -> anyhow::Result<Vec<Outcome>> {
    let queue = Mutex::new(VecDeque::from(jobs));
    let outcomes = Mutex::new(Vec::new());
    let failure = Mutex::new(None::<anyhow::Error>);
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            scope.spawn(|| {
                loop {
                    let Some(job) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                        return;
                    };
                    for run in &job.runs {
                        match run_one(&job.binary, run, cargo, envs, echo) {
                            Ok(outcome) => {
                                if let Ok(mut all) = outcomes.lock() {
                                    all.push(outcome);
                                }
                            }
                            Err(error) => {
                                if let Ok(mut slot) = failure.lock() {
                                    slot.get_or_insert(error);
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().ok().flatten() {
        return Err(error);
    }
    Ok(outcomes.into_inner().unwrap_or_default())
}

/// How the timing table names one run: the binary, and its arguments when it has any.
pub fn run_label(binary: &TestBinary, run: &Run) -> String {
    if run.args.is_empty() {
        binary.label.clone()
    } else {
        format!("{} {}", binary.label, run.args.join(" "))
    }
}

fn run_one(
    binary: &TestBinary,
    run: &Run,
    cargo: &Path,
    envs: &[(String, PathBuf)],
    echo: bool,
) -> anyhow::Result<Outcome> {
    let mut command = command(binary, &run.args, cargo, envs);
    let shown = format!("{} {}", binary.executable.display(), run.args.join(" "));
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    // stderr on a thread, stdout here: neither pipe may fill up while the other is read.
    let mut stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    });
    let mut output = String::new();
    let mut counts = Counts::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("reading the output of `{shown}`"))?;
            counts.add_line(&line);
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    let errors = errors.join().unwrap_or_default();
    let took = started.elapsed();
    if echo {
        print_whole(binary, run, took, &output, &errors);
    }
    Ok(Outcome {
        label: run_label(binary, run),
        kind: run.kind,
        counts,
        succeeded: status.success(),
        took,
    })
}

/// One run's output in one piece, under a line naming it, so parallel runs never interleave.
fn print_whole(binary: &TestBinary, run: &Run, took: Duration, output: &str, errors: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n── {} {} ({:.1} s)",
        binary.label,
        run.args.join(" "),
        took.as_secs_f64()
    );
    let _ = out.write_all(output.as_bytes());
    if !errors.trim().is_empty() {
        let _ = out.write_all(errors.as_bytes());
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_json_gives_the_test_executables_with_their_package() {
        let lines = [
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/emulator#servicebus-emulator@0.1.0","manifest_path":"/w/emulator/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"engine","src_path":"/w/emulator/tests/engine.rs"},"profile":{"test":true},"executable":"/w/target/debug/deps/engine-1234"}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w#aca-job-lab@0.1.0","manifest_path":"/w/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"aca_job_lab","src_path":"/w/src/lib.rs"},"profile":{"test":true},"executable":"/w/target/debug/deps/aca_job_lab-99"}"#,
            // a library built for the tests, not a test: no executable
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w#aca-job-lab@0.1.0","manifest_path":"/w/Cargo.toml","target":{"kind":["lib"],"name":"aca_job_lab","src_path":"/w/src/lib.rs"},"profile":{"test":false},"executable":null}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/xtask#0.1.0","manifest_path":"/w/xtask/Cargo.toml","target":{"kind":["test"],"name":"local_lab","src_path":"/w/xtask/tests/local_lab.rs"},"profile":{"test":true},"executable":"/w/target/debug/deps/local_lab-5"}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json at all",
        ]
        .join("\n");
        let found = test_binaries(&lines);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].label, "tests/engine.rs [servicebus-emulator]");
        assert_eq!(found[0].package_dir, PathBuf::from("/w/emulator"));
        assert_eq!(found[0].target, "engine");
        assert_eq!(found[1].label, "unittests src/lib.rs [aca-job-lab]");
        assert_eq!(found[1].package, "aca-job-lab");
        // where the package is named like its directory, cargo's id leaves the name out
        assert_eq!(found[2].label, "tests/local_lab.rs [xtask]");
    }

    #[test]
    fn every_run_of_every_job_is_run_and_counted() {
        // `sh` stands in for a test binary: it prints libtest's closing line for its arguments.
        let binary = |label: &str| TestBinary {
            label: label.to_owned(),
            package: "p".into(),
            package_dir: std::env::temp_dir(),
            target: "t".into(),
            executable: PathBuf::from("sh"),
            doc_tests: false,
        };
        let run = |script: &str, kind| Run {
            args: vec!["-c".into(), script.into()],
            kind,
        };
        let jobs = vec![
            Job {
                binary: binary("a"),
                runs: vec![
                    run(
                        "echo 'test result: ok. 2 passed; 0 failed; 1 ignored'",
                        RunKind::Main,
                    ),
                    run(
                        "echo 'test result: ok. 1 passed; 0 failed; 0 ignored'",
                        RunKind::Walkthrough,
                    ),
                ],
            },
            Job {
                binary: binary("b"),
                runs: vec![run(
                    "echo 'test result: FAILED. 0 passed; 1 failed; 0 ignored'; exit 101",
                    RunKind::Main,
                )],
            },
        ];
        // Not echoed: these fake result lines must not reach the stdout a real run counts.
        let outcomes = run_all(jobs, 2, Path::new("cargo"), &[], false).unwrap();
        assert_eq!(outcomes.len(), 3);
        let main: Vec<_> = outcomes
            .iter()
            .filter(|o| o.kind == RunKind::Main)
            .collect();
        let passed: u64 = main.iter().map(|o| o.counts.passed).sum();
        let failed: u64 = main.iter().map(|o| o.counts.failed).sum();
        assert_eq!((passed, failed), (2, 1));
        assert!(
            main.iter().any(|o| !o.succeeded),
            "the failing run is reported as failed"
        );
        let walk = outcomes
            .iter()
            .find(|o| o.kind == RunKind::Walkthrough)
            .unwrap();
        assert_eq!(walk.counts.passed, 1);
    }
}
