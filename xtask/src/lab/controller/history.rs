//! The job's execution history: what `az containerapp job execution list` would show, plus each
//! execution's replicas and their log lines (what Log Analytics keeps in Azure).
//!
//! One shared, lock-protected store: the controller writes it, the lab's display and the state files read
//! it. A `watch` channel says "something changed" so readers need not poll.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::lab::executions::{
    Ending, Execution, ExecutionProperties, ExecutionStatus, LOCAL_RESOURCE_GROUP,
    LOCAL_SUBSCRIPTION, execution_id,
};

/// Container Apps keeps the most recent 100 finished executions; so do we.
pub const HISTORY_LIMIT: usize = 100;

/// Which of the replica's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines the controller itself writes (start, exit, timeout), as Container Apps' system logs.
    System,
}

/// One line of a replica's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub replica: String,
    pub stream: Stream,
    pub text: String,
}

/// One start of a replica (a retry is another attempt with its own name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaAttempt {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start_time: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end_time: Option<OffsetDateTime>,
    /// Exit code, when the process exited on its own or after SIGTERM.
    pub exit_code: Option<i32>,
    /// How it ended, in words (`exit code 0`, `killed after the replica timeout`, ...).
    pub outcome: Option<String>,
}

/// An execution with everything the lab shows about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The az-shaped execution (name, status, start and end time, template).
    pub execution: Execution,
    pub replicas: Vec<ReplicaAttempt>,
    pub log: Vec<LogLine>,
}

impl ExecutionRecord {
    pub fn name(&self) -> &str {
        &self.execution.name
    }

    pub fn status(&self) -> ExecutionStatus {
        self.execution.status()
    }
}

#[derive(Default)]
struct Inner {
    /// Oldest first.
    records: Vec<ExecutionRecord>,
}

/// A cheap, cloneable handle to the history.
#[derive(Clone)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still worth showing.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Wakes whenever an execution starts, changes status or logs a line.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Record a new `Running` execution (named `<job>-<suffix>`, as the controller names them).
    pub fn start(&self, name: &str, start_time: OffsetDateTime, template: serde_json::Value) {
        let job = name.rsplit_once('-').map_or(name, |(job, _)| job);
        let execution = Execution {
            id: Some(execution_id(
                LOCAL_SUBSCRIPTION,
                LOCAL_RESOURCE_GROUP,
                job,
                name,
            )),
            name: name.to_owned(),
            resource_type: Some("Microsoft.App/jobs/executions".to_owned()),
            properties: ExecutionProperties {
                status: ExecutionStatus::Running,
                start_time: Some(start_time),
                end_time: None,
                template: Some(template),
                reason: None,
                message: None,
            },
        };
        let mut inner = self.lock();
        inner.records.push(ExecutionRecord {
            execution,
            replicas: Vec::new(),
            log: Vec::new(),
        });
        trim(&mut inner.records);
        drop(inner);
        self.notify();
    }

    /// Set the final status, end time and, for failures, the reason code and message.
    pub fn finish(
        &self,
        name: &str,
        status: ExecutionStatus,
        end_time: OffsetDateTime,
        ending: Option<Ending>,
    ) {
        self.update(name, |record| {
            let properties = &mut record.execution.properties;
            properties.status = status;
            properties.end_time = Some(end_time);
            properties.reason = ending.as_ref().map(|e| e.reason.to_owned());
            properties.message = ending.map(|e| e.message);
        });
        trim(&mut self.lock().records);
    }

    pub fn replica_started(&self, execution: &str, replica: &str, start_time: OffsetDateTime) {
        self.update(execution, |record| {
            record.replicas.push(ReplicaAttempt {
                name: replica.to_owned(),
                start_time,
                end_time: None,
                exit_code: None,
                outcome: None,
            });
        });
    }

    pub fn replica_ended(
        &self,
        execution: &str,
        replica: &str,
        end_time: OffsetDateTime,
        exit_code: Option<i32>,
        outcome: String,
    ) {
        self.update(execution, |record| {
            if let Some(attempt) = record.replicas.iter_mut().rev().find(|a| a.name == replica) {
                attempt.end_time = Some(end_time);
                attempt.exit_code = exit_code;
                attempt.outcome = Some(outcome);
            }
        });
    }

    pub fn log(&self, execution: &str, line: LogLine) {
        self.update(execution, |record| record.log.push(line));
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut ExecutionRecord)) {
        let mut inner = self.lock();
        if let Some(record) = inner
            .records
            .iter_mut()
            .rev()
            .find(|r| r.execution.name == name)
        {
            change(record);
        }
        drop(inner);
        self.notify();
    }

    /// Every execution, oldest first.
    pub fn records(&self) -> Vec<ExecutionRecord> {
        self.lock().records.clone()
    }

    /// One execution by name.
    pub fn get(&self, name: &str) -> Option<ExecutionRecord> {
        self.lock()
            .records
            .iter()
            .find(|r| r.execution.name == name)
            .cloned()
    }

    /// The az-shaped list (what `az containerapp job execution list -o json` prints), oldest first.
    pub fn executions(&self) -> Vec<Execution> {
        self.lock()
            .records
            .iter()
            .map(|r| r.execution.clone())
            .collect()
    }

    /// Executions not yet finished.
    pub fn running(&self) -> usize {
        self.lock()
            .records
            .iter()
            .filter(|r| r.execution.status() == ExecutionStatus::Running)
            .count()
    }
}

/// Drop the oldest finished executions beyond the limit; running ones are never dropped.
fn trim(records: &mut Vec<ExecutionRecord>) {
    let finished = records
        .iter()
        .filter(|r| r.execution.status() != ExecutionStatus::Running)
        .count();
    let mut excess = finished.saturating_sub(HISTORY_LIMIT);
    records.retain(|r| {
        if excess > 0 && r.execution.status() != ExecutionStatus::Running {
            excess -= 1;
            return false;
        }
        true
    });
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const T0: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

    #[test]
    fn keeps_the_last_hundred_finished_and_every_running_execution() {
        let history = History::new();
        history.start("job-rust-running", T0, serde_json::Value::Null);
        for i in 0..150 {
            let name = format!("job-rust-{i:07}");
            history.start(&name, T0, serde_json::Value::Null);
            history.finish(&name, ExecutionStatus::Succeeded, T0, None);
        }
        let records = history.records();
        assert_eq!(records.len(), HISTORY_LIMIT + 1);
        assert_eq!(records[0].name(), "job-rust-running");
        assert_eq!(
            records[1].name(),
            "job-rust-0000050",
            "the oldest 50 finished ones are gone"
        );
        assert_eq!(history.running(), 1);
    }

    #[test]
    fn serializes_in_the_az_shape() {
        let history = History::new();
        history.start(
            "job-rust-abc1234",
            T0,
            serde_json::json!({"containers": []}),
        );
        history.finish(
            "job-rust-abc1234",
            ExecutionStatus::Failed,
            T0 + time::Duration::seconds(3),
            Some(Ending {
                reason: Ending::BACKOFF_LIMIT_EXCEEDED,
                message: "2 replica(s) failed, more than the replica retry limit of 1".into(),
            }),
        );
        let json = serde_json::to_value(history.executions()).unwrap();
        // As the REST spec's Job_Execution_Get example, plus the newer API's reason and message.
        assert_eq!(
            json,
            serde_json::json!([{
                "id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/aca-job-lab-local/providers/Microsoft.App/jobs/job-rust/executions/job-rust-abc1234",
                "name": "job-rust-abc1234",
                "type": "Microsoft.App/jobs/executions",
                "properties": {
                    "status": "Failed",
                    "startTime": "2026-11-25T12:00:00Z",
                    "endTime": "2026-11-25T12:00:03Z",
                    "template": {"containers": []},
                    "reason": "BackoffLimitExceeded",
                    "message": "2 replica(s) failed, more than the replica retry limit of 1"
                }
            }])
        );
    }
}
