//! "Where the time went": the wall time of each step of `cargo xtask test`, printed as a table at the
//! end, so a slow run says which step to look at instead of leaving a contributor to guess.
//!
//! Steps are timed from the outside (the moment a step starts to the moment it returns), like a
//! stopwatch at the keyboard. Inside a `cargo test` run each test binary is one row: cargo names the
//! binary it is about to run on stderr (`Running tests/engine.rs (…)`, `Doc-tests servicebus_emulator`),
//! and a binary's time runs from its line to the next one (or to the end of the run).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The rows, in the order the steps ran, and when the whole run started.
#[derive(Debug)]
pub struct Timing {
    started: Instant,
    rows: Vec<(String, Duration)>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing::new()
    }
}

impl Timing {
    pub fn new() -> Timing {
        Timing {
            started: Instant::now(),
            rows: Vec::new(),
        }
    }

    /// Run `step`, record its wall time under `label`, and hand back what it returned.
    pub fn time<T>(&mut self, label: impl Into<String>, step: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = step();
        self.rows.push((label.into(), start.elapsed()));
        out
    }

    /// Record a row measured elsewhere (a test binary inside a `cargo test`).
    pub fn push(&mut self, label: impl Into<String>, took: Duration) {
        self.rows.push((label.into(), took));
    }

    /// The table: one row a step in the order they ran (a reader follows the run down), then the
    /// wall time from the start of the command.
    pub fn render(&self) -> String {
        self.render_with_total(self.started.elapsed())
    }

    fn render_with_total(&self, total: Duration) -> String {
        let width = self
            .rows
            .iter()
            .map(|(label, _)| label.chars().count())
            .max()
            .unwrap_or(0)
            .max("wall time, start to end".len());
        let mut out = String::from("\n== Where the time went\n");
        for (label, took) in &self.rows {
            let _ = writeln!(out, "{label:<width$}  {:>7.1} s", took.as_secs_f64());
        }
        let _ = writeln!(
            out,
            "{:<width$}  {:>7.1} s",
            "wall time, start to end",
            total.as_secs_f64()
        );
        out
    }
}

/// The test binary a cargo stderr line announces, if it is such a line: `Running tests/engine.rs
/// (target/debug/deps/engine-…)` gives `tests/engine.rs`; `Running unittests src/lib.rs (…)` gives
/// `unittests src/lib.rs`; `Doc-tests name` gives `doc-tests name`. Cargo prints paths relative to
/// each package, so the package directory from the binary's file name is not known here; the
/// caller prefixes the crate when it can tell.
pub fn announced_binary(line: &str) -> Option<String> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("Running ") {
        let (what, binary) = match rest.rsplit_once(" (") {
            Some((what, binary)) => (what, binary.trim_end_matches(')')),
            None => (rest, ""),
        };
        // The binary's file name starts with the crate's target name: `engine-0123abcd`.
        let stem = binary
            .rsplit('/')
            .next()
            .and_then(|file| file.rsplit_once('-').map(|(name, _)| name))
            .unwrap_or("");
        return Some(if stem.is_empty() {
            what.to_owned()
        } else {
            format!("{what} [{stem}]")
        });
    }
    line.strip_prefix("Doc-tests ")
        .map(|name| format!("doc-tests {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_lines_name_the_binary_and_other_lines_do_not() {
        assert_eq!(
            announced_binary(
                "     Running tests/engine.rs (target/debug/deps/engine-3f2a9c0d1e2b4a5c)"
            )
            .as_deref(),
            Some("tests/engine.rs [engine]")
        );
        assert_eq!(
            announced_binary(
                "     Running unittests src/lib.rs (target/debug/deps/servicebus_emulator-0a1b2c3d)"
            )
            .as_deref(),
            Some("unittests src/lib.rs [servicebus_emulator]")
        );
        assert_eq!(
            announced_binary("   Doc-tests servicebus_emulator").as_deref(),
            Some("doc-tests servicebus_emulator")
        );
        assert_eq!(announced_binary("test a ... ok"), None);
        assert_eq!(announced_binary("   Compiling xtask v0.1.0"), None);
    }

    #[test]
    fn the_table_has_a_row_a_step_and_the_wall_time_last() {
        let mut timing = Timing::new();
        timing.push("venv", Duration::from_millis(1_500));
        timing.push("tests/engine.rs [engine]", Duration::from_millis(200));
        let table = timing.render_with_total(Duration::from_secs(3));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[1], "== Where the time went");
        assert!(
            lines[2].starts_with("venv ") && lines[2].ends_with("1.5 s"),
            "{table}"
        );
        assert!(lines[3].starts_with("tests/engine.rs [engine]") && lines[3].ends_with("0.2 s"));
        assert!(lines[4].starts_with("wall time, start to end") && lines[4].ends_with("3.0 s"));
    }
}
