//! The evidence at the end: the replica's log lines (the execution table is `executions::table`).

use crate::lab::controller::{ExecutionRecord, Stream};
use crate::lab::executions::ExecutionStatus;

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
