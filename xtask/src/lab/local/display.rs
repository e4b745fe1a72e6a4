//! The evidence at the end: the execution table (`az … -o table` columns plus a duration) and the
//! replica's log lines.

use crate::lab::controller::{ExecutionRecord, Stream};
use crate::lab::executions::{Execution, ExecutionStatus};
use crate::lab::ui::human_duration;

/// Whole seconds, as the Azure CLI shows start times.
const STARTED: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `NAME  STATUS  STARTED  DURATION`, one row per execution, oldest first.
pub fn table(executions: &[Execution]) -> Vec<String> {
    let mut rows = vec![[
        "NAME".to_owned(),
        "STATUS".to_owned(),
        "STARTED".to_owned(),
        "DURATION".to_owned(),
    ]];
    let mut sorted: Vec<&Execution> = executions.iter().collect();
    sorted.sort_by_key(|e| (e.start_time(), e.name.clone()));
    for execution in sorted {
        let started = execution
            .start_time()
            .and_then(|t| t.format(STARTED).ok())
            .unwrap_or_else(|| "-".to_owned());
        let duration = execution
            .run_time()
            .map(human_duration)
            .unwrap_or_else(|| "-".to_owned());
        rows.push([
            execution.name.clone(),
            execution.status().to_string(),
            started,
            duration,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

/// The replica's own output. When the execution did not succeed (or printed nothing), the controller's
/// lines too (`[controller] …`: start, SIGTERM, SIGKILL, exit code), since they tell why.
pub fn log_lines(record: &ExecutionRecord) -> Vec<String> {
    let output = || record.log.iter().filter(|l| l.stream != Stream::System);
    let succeeded = record.status() == ExecutionStatus::Succeeded;
    if succeeded && output().next().is_some() {
        return output().map(|l| l.text.clone()).collect();
    }
    record
        .log
        .iter()
        .map(|l| match l.stream {
            Stream::System => format!("[controller] {}: {}", l.replica, l.text),
            Stream::Stdout | Stream::Stderr => l.text.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::lab::executions;

    #[test]
    fn the_table_lines_up_and_sorts_by_start_time() {
        let execution = |name: &str, status, start, end| {
            let mut execution = executions::tests::execution(name, status, start);
            execution.properties.end_time = end;
            execution
        };
        let rows = table(&[
            execution(
                "job-rust-bbbbbbb",
                ExecutionStatus::Running,
                Some(datetime!(2026-11-25 12:00:05 UTC)),
                None,
            ),
            execution(
                "job-rust-aaaaaaa",
                ExecutionStatus::Succeeded,
                Some(datetime!(2026-11-25 12:00:03 UTC)),
                Some(datetime!(2026-11-25 12:00:03.120 UTC)),
            ),
        ]);
        assert_eq!(
            rows,
            [
                "NAME              STATUS     STARTED               DURATION",
                "job-rust-aaaaaaa  Succeeded  2026-11-25T12:00:03Z  0.12 s",
                "job-rust-bbbbbbb  Running    2026-11-25T12:00:05Z  -",
            ]
        );
    }
}
