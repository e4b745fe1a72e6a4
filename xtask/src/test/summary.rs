//! The closing summary of `cargo xtask test`: what ran, what did not and why, and one count line.
//!
//! libtest's summaries count cases per test binary. They cannot say that a whole backend was absent
//! (its cases read as "ignored" among others), and the last of them speaks for the last binary only.
//! So the run ends with: the Service Bus backends that ran and those that did not, with the reason
//! (from the backends test binary's report, [`aca_lab_testkit::report`]); the Docker walkthrough; and
//! one plain `N passed, N failed, N skipped` line over every binary, which is what CI reads. A backend
//! the machine should have run (Docker answers ⇒ `embedded` and `container`) that did not run counts
//! as a failure there.

use std::fmt::Write as _;

use aca_lab_testkit::report::BackendsReport;

/// Cases counted from libtest's `test result:` lines (libtest-mimic writes the same line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    /// Add another run's counts.
    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Add the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; …` line; other lines
    /// are left alone. Returns whether the line was one.
    pub fn add_line(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return false;
        };
        let Some((_, counts)) = rest.split_once(". ") else {
            return false;
        };
        for part in counts.split(';') {
            let mut words = part.split_whitespace();
            let (Some(number), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match what {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" => self.ignored += number,
                _ => {}
            }
        }
        true
    }
}

/// Everything the closing summary is made from.
#[derive(Debug, Default)]
pub struct Run {
    /// The main `cargo test --workspace` run.
    pub counts: Counts,
    /// Whether that run exited successfully (a build failure leaves no `test result:` line).
    pub succeeded: bool,
    /// The backends test binary's report; `None` when it did not write one.
    pub report: Option<BackendsReport>,
    /// Whether a Docker engine answered, so the container backends must have run.
    pub docker: bool,
    /// The user narrowed the run with arguments after `--`: nothing is required to have run.
    pub filtered: bool,
    /// The `#[ignore]`d Docker walkthrough, run on its own where Docker answers.
    pub walkthrough: Option<(Counts, bool)>,
    /// Whether headless Chromium is installed (or must be: on CI), so its tests must have run.
    pub chromium: bool,
    /// The `#[ignore]`d tests that paint the timeline in Chromium, run on their own where it is.
    pub pictures: Option<(Counts, bool)>,
    /// The 60 s `cargo xtask soak` (whether it reconciled); `None` when it did not run.
    pub soak: Option<bool>,
}

/// A set of `#[ignore]`d tests that needs something of the machine, run on its own where it has it.
struct Ignored<'a> {
    /// How the summary names it.
    label: &'static str,
    /// How a problem names it.
    name: &'static str,
    /// What the machine needs, said as a fact ("a Docker engine answers").
    when: &'static str,
    /// Why it did not run where the machine lacks it.
    absent: &'static str,
    capable: bool,
    outcome: &'a Option<(Counts, bool)>,
}

/// The backends a machine whose Docker engine answers must run: both need only our own images,
/// which `cargo xtask test` builds. The official emulator's images cannot be built here.
const REQUIRED_WITH_DOCKER: [&str; 2] = ["embedded", "container"];
const ALL_BACKENDS: [&str; 3] = ["embedded", "container", "official"];
const SOAK_LABEL: &str = "soak on a data directory, 60 s (cargo xtask soak)";

/// One ignored set's line, the problems it raises, and its counts added to `total` (each test it ran
/// was counted as ignored by the main run).
fn ignored_run(
    out: &mut String,
    problems: &mut Vec<String>,
    total: &mut Counts,
    filtered: bool,
    set: &Ignored,
) {
    let line = match (set.outcome, set.capable) {
        (Some((counts, _)), _) if counts.passed + counts.failed > 0 => "ran".to_owned(),
        (Some(_), _) => "did NOT run: `cargo test … -- --ignored` ran no test".to_owned(),
        (None, false) => format!("did NOT run: {}", set.absent),
        (None, true) => "did NOT run: a test filter was given".to_owned(),
    };
    let _ = writeln!(out, "{}: {line}", set.label);
    if set.capable && !filtered && !line.starts_with("ran") {
        problems.push(format!(
            "{} did not run although {}: {line}",
            set.name, set.when
        ));
    }
    if let Some((counts, succeeded)) = set.outcome {
        let ran = counts.passed + counts.failed;
        total.passed += counts.passed;
        total.failed += counts.failed;
        total.ignored = total.ignored.saturating_sub(ran);
        if !succeeded && counts.failed == 0 {
            problems.push(format!("{}'s cargo test failed before it ran", set.name));
        }
    }
}

/// The summary text, ending with the count line, and whether the run passed.
pub fn render(run: &Run) -> (String, bool) {
    let mut out = String::from("\n== what ran\nservicebus backends (tests/backends.rs):\n");
    let mut problems = Vec::new();
    for name in ALL_BACKENDS {
        let entry = run.report.as_ref().and_then(|r| r.backend(name));
        let ran = entry.map_or(0, |e| e.ran.len());
        let line = match entry {
            None if run.report.is_none() => {
                "did NOT run: tests/backends.rs wrote no report (it did not run, or was filtered out)"
                    .to_owned()
            }
            None => "did NOT run: no case of it was selected".to_owned(),
            Some(e) if e.ran.is_empty() => format!(
                "did NOT run: {}",
                e.reason.as_deref().unwrap_or("no case of it was selected")
            ),
            Some(e) if e.skipped.is_empty() => format!("ran {ran} case(s)"),
            Some(e) => format!(
                "ran {ran} case(s), not {}: {}",
                e.skipped.len(),
                e.reason.as_deref().unwrap_or("no reason given")
            ),
        };
        let _ = writeln!(out, "  {name:<9} {line}");
        if run.docker && !run.filtered && REQUIRED_WITH_DOCKER.contains(&name) && ran == 0 {
            problems.push(format!(
                "backend `{name}` did not run although a Docker engine answers: {line}"
            ));
        }
    }
    let mut total = run.counts;
    for set in [
        Ignored {
            label: "docker walkthrough (xtask/tests/local_lab.rs)",
            name: "the Docker walkthrough",
            when: "a Docker engine answers",
            absent: "no Docker engine answers",
            capable: run.docker,
            outcome: &run.walkthrough,
        },
        Ignored {
            label: "timeline pictures in Chromium (xtask lab::report)",
            name: "the Chromium picture tests",
            when: "Chromium is installed (or this is CI)",
            absent: "no headless Chromium here (Debian's `chromium`)",
            capable: run.chromium,
            outcome: &run.pictures,
        },
    ] {
        ignored_run(&mut out, &mut problems, &mut total, run.filtered, &set);
    }
    // The soak counts as one test: it passes only when every message reconciled.
    let soak = match run.soak {
        Some(true) => {
            total.passed += 1;
            "passed"
        }
        Some(false) => {
            total.failed += 1;
            "FAILED (its report is above)"
        }
        None if run.filtered => "did NOT run: a test filter was given",
        None => {
            problems.push("the soak did not run".to_owned());
            "did NOT run"
        }
    };
    let _ = writeln!(out, "{SOAK_LABEL}: {soak}");
    if !run.succeeded && run.counts.failed == 0 {
        problems
            .push("cargo test failed without a failing test (a build error? see above)".to_owned());
    }
    for problem in &problems {
        let _ = writeln!(out, "error: {problem}");
    }
    let failed = total.failed + problems.len() as u64;
    let _ = writeln!(
        out,
        "{} passed, {failed} failed, {} skipped",
        total.passed, total.ignored
    );
    (out, failed == 0)
}

#[cfg(test)]
mod tests {
    use aca_lab_testkit::report::BackendRun;

    use super::*;

    fn backend(name: &str, ran: usize, skipped: usize, reason: Option<&str>) -> BackendRun {
        BackendRun {
            name: name.to_owned(),
            ran: (0..ran).map(|i| format!("case{i}")).collect(),
            skipped: (0..skipped).map(|i| format!("case{i}")).collect(),
            reason: reason.map(str::to_owned),
        }
    }

    fn counts(passed: u64, failed: u64, ignored: u64) -> Counts {
        Counts {
            passed,
            failed,
            ignored,
        }
    }

    #[test]
    fn result_lines_of_libtest_and_libtest_mimic_are_summed() {
        let mut total = Counts::default();
        assert!(total.add_line(
            "test result: ok. 10 passed; 0 failed; 5 ignored; 0 measured; 0 filtered out; finished in 49.45s"
        ));
        assert!(total.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 1 filtered out; finished in 0.01s"
        ));
        assert!(!total.add_line("test foo ... ok"));
        assert!(!total.add_line("running 3 tests"));
        assert_eq!(total, counts(13, 2, 5));
    }

    fn docker_run(report: BackendsReport) -> Run {
        Run {
            // Ignored in the main run: 5 official cases, the walkthrough, the 3 Chromium tests.
            counts: counts(100, 0, 9),
            succeeded: true,
            report: Some(report),
            docker: true,
            filtered: false,
            walkthrough: Some((counts(1, 0, 0), true)),
            chromium: true,
            pictures: Some((counts(3, 0, 0), true)),
            soak: Some(true),
        }
    }

    #[test]
    fn with_docker_every_backend_is_named_and_the_walkthrough_is_no_longer_skipped() {
        let official = "image(s) mcr.microsoft.com/x not present; pull them";
        let run = docker_run(BackendsReport {
            backends: vec![
                backend("embedded", 5, 0, None),
                backend("container", 6, 0, None),
                backend("official", 0, 5, Some(official)),
            ],
        });
        let (text, ok) = render(&run);
        assert!(ok, "{text}");
        assert!(text.contains("  embedded  ran 5 case(s)\n"), "{text}");
        assert!(text.contains("  container ran 6 case(s)\n"), "{text}");
        assert!(
            text.contains(&format!("  official  did NOT run: {official}\n")),
            "{text}"
        );
        assert!(text.contains("docker walkthrough (xtask/tests/local_lab.rs): ran\n"));
        assert!(
            text.ends_with("\n105 passed, 0 failed, 5 skipped\n"),
            "{text}"
        );
    }

    #[test]
    fn with_docker_a_container_backend_that_did_not_run_fails_the_run_and_says_why() {
        let reason = "not selected (SERVICEBUS_BACKENDS=embedded)";
        let run = docker_run(BackendsReport {
            backends: vec![
                backend("embedded", 5, 0, None),
                backend("container", 0, 6, Some(reason)),
            ],
        });
        let (text, ok) = render(&run);
        assert!(!ok, "{text}");
        assert!(
            text.contains(&format!(
                "error: backend `container` did not run although a Docker engine answers: did NOT run: {reason}"
            )),
            "{text}"
        );
        assert!(
            text.ends_with("\n105 passed, 1 failed, 5 skipped\n"),
            "{text}"
        );
    }

    #[test]
    fn with_docker_a_missing_report_fails_the_run() {
        let mut run = docker_run(BackendsReport::default());
        run.report = None;
        let (text, ok) = render(&run);
        assert!(!ok, "{text}");
        assert!(text.contains("wrote no report"), "{text}");
    }

    #[test]
    fn without_docker_nothing_container_is_required_but_everything_is_named() {
        let reason = "no Docker engine: connection refused";
        let run = Run {
            counts: counts(80, 0, 17),
            succeeded: true,
            report: Some(BackendsReport {
                backends: ["embedded", "container", "official"]
                    .map(|name| backend(name, 0, 5, Some(reason)))
                    .to_vec(),
            }),
            docker: false,
            filtered: false,
            walkthrough: None,
            chromium: false,
            pictures: None,
            soak: Some(true),
        };
        let (text, ok) = render(&run);
        assert!(ok, "{text}");
        assert_eq!(text.matches(&format!("did NOT run: {reason}")).count(), 3);
        assert!(text.contains(
            "walkthrough (xtask/tests/local_lab.rs): did NOT run: no Docker engine answers"
        ));
        assert!(
            text.ends_with("\n81 passed, 0 failed, 17 skipped\n"),
            "{text}"
        );
    }

    #[test]
    fn where_chromium_is_installed_its_pictures_must_have_run() {
        let mut run = docker_run(BackendsReport {
            backends: vec![
                backend("embedded", 5, 0, None),
                backend("container", 6, 0, None),
            ],
        });
        let (text, ok) = render(&run);
        assert!(ok, "{text}");
        assert!(
            text.contains("timeline pictures in Chromium (xtask lab::report): ran\n"),
            "{text}"
        );
        run.pictures = None;
        let (text, ok) = render(&run);
        assert!(!ok, "{text}");
        assert!(
            text.contains(
                "error: the Chromium picture tests did not run although Chromium is installed"
            ),
            "{text}"
        );
        run.chromium = false;
        let (text, ok) = render(&run);
        assert!(ok, "{text}");
        assert!(
            text.contains("did NOT run: no headless Chromium here (Debian's `chromium`)"),
            "{text}"
        );
    }

    #[test]
    fn a_filtered_run_requires_nothing() {
        let run = Run {
            counts: counts(2, 0, 0),
            succeeded: true,
            report: None,
            docker: true,
            filtered: true,
            walkthrough: None,
            chromium: false,
            pictures: None,
            soak: Some(true),
        };
        let (text, ok) = render(&run);
        assert!(ok, "{text}");
        assert!(text.contains("a test filter was given"), "{text}");
    }

    #[test]
    fn a_failed_build_is_never_summed_up_as_zero_failed() {
        let run = Run {
            succeeded: false,
            ..docker_run(BackendsReport {
                backends: vec![
                    backend("embedded", 5, 0, None),
                    backend("container", 6, 0, None),
                ],
            })
        };
        let (text, ok) = render(&run);
        assert!(!ok, "{text}");
        assert!(
            text.ends_with("\n105 passed, 1 failed, 5 skipped\n"),
            "{text}"
        );
    }

    #[test]
    fn a_soak_that_did_not_reconcile_fails_the_run_as_one_failed_test() {
        let run = Run {
            soak: Some(false),
            ..docker_run(BackendsReport {
                backends: vec![
                    backend("embedded", 5, 0, None),
                    backend("container", 6, 0, None),
                ],
            })
        };
        let (text, ok) = render(&run);
        assert!(!ok, "{text}");
        assert!(text.contains("(cargo xtask soak): FAILED"), "{text}");
        assert!(
            text.ends_with("\n104 passed, 1 failed, 5 skipped\n"),
            "{text}"
        );
    }
}
