//! "Where the time went": the wall time of each step of `cargo xtask test`, printed as a table at the
//! end, so a slow run says which step to look at instead of leaving a contributor to guess.
//!
//! Steps are timed from the outside (the moment a step starts to the moment it returns), like a
//! stopwatch at the keyboard; each test binary is a row of its own. Steps that run side by side
//! overlap, so the rows add up to more than the wall time, which is the last line.

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

#[cfg(test)]
mod tests {
    use super::*;

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
