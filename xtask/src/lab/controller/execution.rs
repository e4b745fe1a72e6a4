//! One execution: start replicas until enough have succeeded, retry failed ones up to the limit, and
//! stop everything at the replica timeout or when the controller shuts down.
//!
//! The rules follow Kubernetes Jobs, which Container Apps jobs run on: at most
//! `min(parallelism, completions - succeeded)` replicas at a time; the retry limit counts failed replicas
//! of the whole execution (the Job's `backoffLimit`); the timeout is a deadline for the execution
//! (`activeDeadlineSeconds`) after which replicas get SIGTERM, then SIGKILL after the grace period, and the
//! execution is `Failed` without retries.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::history::{History, Stream};
use super::replica::{LogSink, Replica, ReplicaExit, ReplicaRunner, ReplicaSpec};
use super::{Clock, ControllerConfig};
use crate::lab::executions::{Ending, ExecutionStatus};

pub(super) struct Execution<R> {
    pub name: String,
    pub config: Arc<ControllerConfig>,
    pub runner: Arc<R>,
    pub history: History,
    pub clock: Clock,
    /// Turns true when the controller shuts down.
    pub stop: watch::Receiver<bool>,
}

/// Why replicas are being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Timeout,
    Shutdown,
    /// Another replica used up the retries; the execution has failed.
    Failed,
}

/// How one replica attempt ended.
enum Ended {
    Exited(ReplicaExit),
    /// It could not be started or watched; counts as a failed replica.
    Error(String),
}

impl<R: ReplicaRunner> Execution<R> {
    pub async fn run(mut self) {
        let deadline = Instant::now() + self.config.replica_timeout;
        let (stop_replicas, replica_stop) = watch::channel(None::<StopReason>);
        let completions = self.config.replica_completion_count;
        let mut replicas = JoinSet::new();
        let mut attempts = 0u32;
        let mut succeeded = 0u32;
        let mut failed = 0u32;
        let mut stopping: Option<StopReason> = None;

        let outcome = loop {
            if stopping.is_none() {
                let wanted = self
                    .config
                    .parallelism
                    .min(completions.saturating_sub(succeeded));
                while u32::try_from(replicas.len()).unwrap_or(u32::MAX) < wanted {
                    attempts += 1;
                    replicas.spawn(self.replica(attempts, replica_stop.clone()));
                }
            }
            if replicas.is_empty() {
                break match stopping {
                    None => (ExecutionStatus::Succeeded, None),
                    Some(StopReason::Shutdown) => (
                        ExecutionStatus::Stopped,
                        Some(Ending {
                            reason: Ending::STOPPED,
                            message: "the local jobs controller was stopped".to_owned(),
                        }),
                    ),
                    Some(StopReason::Timeout) => (
                        ExecutionStatus::Failed,
                        Some(Ending {
                            reason: Ending::DEADLINE_EXCEEDED,
                            message: format!(
                                "the replica timeout of {} s was reached; the replica was stopped",
                                self.config.replica_timeout.as_secs()
                            ),
                        }),
                    ),
                    Some(StopReason::Failed) => (
                        ExecutionStatus::Failed,
                        Some(Ending {
                            reason: Ending::BACKOFF_LIMIT_EXCEEDED,
                            message: format!(
                                "{failed} replica(s) failed, more than the replica retry limit of {}",
                                self.config.replica_retry_limit
                            ),
                        }),
                    ),
                };
            }
            tokio::select! {
                biased;
                Ok(()) = self.stop.changed(), if stopping.is_none() => {
                    stopping = Some(StopReason::Shutdown);
                    let _ = stop_replicas.send(stopping);
                }
                () = tokio::time::sleep_until(deadline), if stopping.is_none() => {
                    stopping = Some(StopReason::Timeout);
                    let _ = stop_replicas.send(stopping);
                }
                Some(joined) = replicas.join_next() => {
                    let ended = joined.unwrap_or_else(|panic| Ended::Error(format!("the replica task failed: {panic}")));
                    match ended {
                        Ended::Exited(exit) if exit.success() => succeeded += 1,
                        _ => {
                            failed += 1;
                            if failed > self.config.replica_retry_limit && stopping.is_none() {
                                stopping = Some(StopReason::Failed);
                                let _ = stop_replicas.send(stopping);
                            }
                        }
                    }
                }
            }
        };
        let (status, reason) = outcome;
        self.history
            .finish(&self.name, status, self.clock.now(), reason);
    }

    /// Run one replica attempt to its end, stopping it when told to.
    fn replica(
        &self,
        attempt: u32,
        mut stop: watch::Receiver<Option<StopReason>>,
    ) -> impl Future<Output = Ended> + Send + 'static {
        let replica_name = format!("{}-{attempt}", self.name);
        let spec = ReplicaSpec {
            job_name: self.config.job_name.clone(),
            execution_name: self.name.clone(),
            replica_name: replica_name.clone(),
            log: LogSink::new(self.history.clone(), &self.name, &replica_name, self.clock),
        };
        let runner = self.runner.clone();
        let history = self.history.clone();
        let execution = self.name.clone();
        let clock = self.clock;
        let grace = self.config.termination_grace_period;
        async move {
            let log = spec.log.clone();
            history.replica_started(&execution, &replica_name, clock.now());
            let mut replica = match runner.start(spec).await {
                Ok(replica) => replica,
                Err(error) => {
                    let text = format!("could not start the replica: {error}");
                    log.line(Stream::System, text.clone());
                    history.replica_ended(
                        &execution,
                        &replica_name,
                        clock.now(),
                        None,
                        text.clone(),
                    );
                    return Ended::Error(text);
                }
            };
            let stop_reason = tokio::select! {
                exit = replica.wait() => Err(exit),
                reason = wait_for_stop(&mut stop) => Ok(reason),
            };
            let (ended, outcome) = match stop_reason {
                Err(exit) => describe(exit),
                Ok(reason) => {
                    let why = match reason {
                        StopReason::Timeout => "the replica timeout was reached",
                        StopReason::Shutdown => "the controller is stopping",
                        StopReason::Failed => "the execution has failed",
                    };
                    log.line(
                        Stream::System,
                        format!("stopping the replica (SIGTERM): {why}"),
                    );
                    if let Err(error) = replica.terminate() {
                        log.line(Stream::System, format!("could not send SIGTERM: {error}"));
                    }
                    match tokio::time::timeout(grace, replica.wait()).await {
                        Ok(exit) => describe(exit),
                        Err(_) => {
                            log.line(
                                Stream::System,
                                format!(
                                    "still running {} s after SIGTERM; killing it (SIGKILL)",
                                    grace.as_secs()
                                ),
                            );
                            if let Err(error) = replica.kill() {
                                log.line(
                                    Stream::System,
                                    format!("could not send SIGKILL: {error}"),
                                );
                            }
                            let (ended, outcome) = describe(replica.wait().await);
                            (ended, format!("killed after the grace period ({outcome})"))
                        }
                    }
                }
            };
            log.line(Stream::System, format!("replica ended: {outcome}"));
            let code = match &ended {
                Ended::Exited(exit) => exit.code(),
                Ended::Error(_) => None,
            };
            history.replica_ended(&execution, &replica_name, clock.now(), code, outcome);
            ended
        }
    }
}

type WaitResult = Result<ReplicaExit, super::ReplicaError>;

fn describe(exit: WaitResult) -> (Ended, String) {
    match exit {
        Ok(exit) => (Ended::Exited(exit), exit.to_string()),
        Err(error) => {
            let text = format!("could not watch the replica: {error}");
            (Ended::Error(text.clone()), text)
        }
    }
}

/// Resolves with the reason once one is sent; never resolves if the sender is dropped without one.
async fn wait_for_stop(stop: &mut watch::Receiver<Option<StopReason>>) -> StopReason {
    loop {
        if let Some(reason) = *stop.borrow_and_update() {
            return reason;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
