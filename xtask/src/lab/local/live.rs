//! The waiting line of `lab` and `lab watch`: the queue's depth and the executions as they change.
//!
//! On a terminal it is one compact live line (a sparkline of the queue's last counts, the count, the
//! running executions and how many ended how); when stdout is not a terminal (a pipe, a CI log) the
//! same facts are printed as plain lines, one each time they change, so a log shows the story too.
//! `--output json` prints neither: its steps are the record.

use std::collections::VecDeque;
use std::io::IsTerminal;

use crate::lab::OutputFormat;
use crate::lab::executions::{Execution, ExecutionStatus};
use crate::lab::ui::StepProgress;

/// Counts the sparkline remembers.
const SPARK_WIDTH: usize = 24;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub struct LiveLine {
    plain: bool,
    history: VecDeque<u64>,
    last_plain: Option<String>,
}

impl LiveLine {
    pub fn new(format: OutputFormat) -> Self {
        Self {
            plain: format == OutputFormat::Human && !std::io::stdout().is_terminal(),
            history: VecDeque::with_capacity(SPARK_WIDTH),
            last_plain: None,
        }
    }

    /// Show what this poll saw.
    pub fn show(&mut self, progress: &StepProgress, active: Option<u64>, ours: &[Execution]) {
        if let Some(active) = active {
            if self.history.len() == SPARK_WIDTH {
                self.history.pop_front();
            }
            self.history.push_back(active);
        }
        let facts = facts(active, ours);
        progress.update(format!("{} {facts}", sparkline(&self.history)));
        if self.plain && self.last_plain.as_ref() != Some(&facts) {
            println!("   … {facts}");
            self.last_plain = Some(facts);
        }
    }
}

/// `queue: 3 active · running: job-rust-abc1234 · ended: 2 Succeeded`.
fn facts(active: Option<u64>, ours: &[Execution]) -> String {
    let queue = active.map_or_else(|| "queue: ?".to_owned(), |n| format!("queue: {n} active"));
    if ours.is_empty() {
        return format!("{queue} · executions: none yet");
    }
    let running: Vec<&str> = ours
        .iter()
        .filter(|e| e.status() == ExecutionStatus::Running)
        .map(|e| e.name.as_str())
        .collect();
    let mut ended: Vec<(ExecutionStatus, usize)> = Vec::new();
    for execution in ours
        .iter()
        .filter(|e| e.status() != ExecutionStatus::Running)
    {
        match ended.iter_mut().find(|(s, _)| *s == execution.status()) {
            Some((_, n)) => *n += 1,
            None => ended.push((execution.status(), 1)),
        }
    }
    let mut parts = vec![queue];
    if !running.is_empty() {
        parts.push(format!("running: {}", running.join(", ")));
    }
    if !ended.is_empty() {
        let ended: Vec<String> = ended.iter().map(|(s, n)| format!("{n} {s}")).collect();
        parts.push(format!("ended: {}", ended.join(", ")));
    }
    parts.join(" · ")
}

/// The counts as bars, the highest count full height; empty before the first count.
fn sparkline(counts: &VecDeque<u64>) -> String {
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    counts
        .iter()
        .map(|&n| {
            let level =
                usize::try_from(n * (BARS.len() as u64 - 1) / top).unwrap_or(BARS.len() - 1);
            BARS[level.min(BARS.len() - 1)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(name: &str, status: ExecutionStatus) -> Execution {
        let mut execution: Execution =
            serde_json::from_value(serde_json::json!({ "name": name })).unwrap();
        execution.properties.status = status;
        execution
    }

    #[test]
    fn the_line_names_the_queue_the_running_and_the_ended_executions() {
        assert_eq!(
            facts(Some(1), &[]),
            "queue: 1 active · executions: none yet"
        );
        let ours = [
            execution("job-rust-a", ExecutionStatus::Succeeded),
            execution("job-rust-b", ExecutionStatus::Succeeded),
            execution("job-rust-c", ExecutionStatus::Running),
        ];
        assert_eq!(
            facts(Some(3), &ours),
            "queue: 3 active · running: job-rust-c · ended: 2 Succeeded"
        );
        assert_eq!(facts(None, &ours[..1]), "queue: ? · ended: 1 Succeeded");
    }

    #[test]
    fn the_sparkline_scales_to_the_highest_count() {
        let counts: VecDeque<u64> = [0, 5, 4, 2, 0].into_iter().collect();
        assert_eq!(sparkline(&counts), "▁█▆▃▁");
        assert_eq!(sparkline(&VecDeque::new()), "");
    }
}
