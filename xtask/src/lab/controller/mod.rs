//! A local stand-in for Container Apps event-driven jobs scaled by KEDA's `azure-servicebus` scaler.
//!
//! Every polling interval the controller reads the queue's active message count ([`QueueMetrics`]),
//! decides how many executions to start ([`scaling`]), and runs each execution's replicas
//! ([`ReplicaRunner`]) with the job's parallelism, completion count, retry limit and timeout. What
//! happened is kept in a [`History`] in the shape `az containerapp job execution list` prints.
//!
//! Time comes from tokio (intervals, deadlines) so the rules are tested under a paused clock; wall-clock
//! timestamps for the history are derived from the same tokio clock ([`Clock`]) so they agree with it.

pub mod docker;
pub mod history;
pub mod metrics;
pub mod process;
pub mod replica;
pub mod scaling;

mod execution;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use history::{ExecutionRecord, History, Stream};
pub use metrics::{HealthEndpointMetrics, QueueMetrics};
pub use replica::{ReplicaError, ReplicaRunner};
pub use scaling::ScaleRule;

use crate::lab::settings::JobSettings;

/// Wall-clock time that advances with tokio's clock (and so stands still, or jumps, when tests pause it).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: OffsetDateTime,
    base: tokio::time::Instant,
}

impl Clock {
    /// Anchor at the current wall-clock time.
    pub fn system() -> Self {
        Self::starting_at(OffsetDateTime::now_utc())
    }

    /// Anchor at a fixed time (tests).
    pub fn starting_at(wall: OffsetDateTime) -> Self {
        Self {
            wall,
            base: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.wall + self.base.elapsed()
    }
}

/// The job as the controller runs it: the settings file's values plus what only the local lab has.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub job_name: String,
    pub scale: ScaleRule,
    pub polling_interval: Duration,
    pub parallelism: u32,
    pub replica_completion_count: u32,
    pub replica_retry_limit: u32,
    pub replica_timeout: Duration,
    /// Between SIGTERM and SIGKILL (Kubernetes' default termination grace period is 30 s).
    pub termination_grace_period: Duration,
    /// The execution's `properties.template`, as Azure would show it.
    pub template: serde_json::Value,
}

impl ControllerConfig {
    /// The job from the shared settings file, the same values the Terraform scale rule gets.
    pub fn from_settings(settings: &JobSettings, image: &str) -> Self {
        Self {
            job_name: settings.job_name.clone(),
            scale: ScaleRule {
                message_count: u64::from(settings.message_count),
                activation_message_count: u64::from(settings.activation_message_count),
                min_executions: settings.min_executions,
                max_executions: settings.max_executions,
            },
            polling_interval: settings.polling_interval(),
            parallelism: settings.parallelism,
            replica_completion_count: settings.replica_completion_count,
            replica_retry_limit: settings.replica_retry_limit,
            replica_timeout: settings.replica_timeout(),
            termination_grace_period: Duration::from_secs(30),
            template: serde_json::json!({
                "containers": [{
                    "name": settings.job_name,
                    "image": image,
                    "resources": { "cpu": settings.cpu, "memory": settings.memory }
                }],
                "initContainers": null
            }),
        }
    }
}

/// What the scaler saw on its last poll, for progress displays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalerStatus {
    /// Polls done so far.
    pub polls: u64,
    /// Active messages on the last successful poll.
    pub active_messages: Option<u64>,
    /// Why the last poll could not read the queue, if it failed.
    pub error: Option<String>,
}

/// The controller: owns the scaler loop; executions run as tasks beside it.
pub struct Controller<M, R> {
    config: Arc<ControllerConfig>,
    metrics: M,
    runner: Arc<R>,
    history: History,
    clock: Clock,
    status: watch::Sender<ScalerStatus>,
}

impl<M: QueueMetrics, R: ReplicaRunner> Controller<M, R> {
    pub fn new(config: ControllerConfig, metrics: M, runner: R) -> Self {
        Self::with_clock(config, metrics, runner, Clock::system())
    }

    pub fn with_clock(config: ControllerConfig, metrics: M, runner: R, clock: Clock) -> Self {
        Self {
            config: Arc::new(config),
            metrics,
            runner: Arc::new(runner),
            history: History::new(),
            clock,
            status: watch::channel(ScalerStatus::default()).0,
        }
    }

    /// The execution history; clone it before `run` to read it while the controller runs.
    pub fn history(&self) -> History {
        self.history.clone()
    }

    /// The scaler's last poll.
    pub fn status(&self) -> watch::Receiver<ScalerStatus> {
        self.status.subscribe()
    }

    /// Poll and start executions until `shutdown` completes; then stop the running executions
    /// (SIGTERM, grace period, SIGKILL; they end as `Stopped`) and return once they have.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.polling_interval);
        // After a slow poll, wait a whole interval again rather than catching up in a burst.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut executions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => self.poll(&mut executions, &stop_rx).await,
                Some(_) = executions.join_next(), if !executions.is_empty() => {}
            }
        }
        let _ = stop_tx.send(true);
        while executions.join_next().await.is_some() {}
    }

    async fn poll(&self, executions: &mut JoinSet<()>, stop: &watch::Receiver<bool>) {
        while executions.try_join_next().is_some() {}
        let reading = self.metrics.active_message_count().await;
        let active = match reading {
            Ok(active) => {
                self.status.send_modify(|s| {
                    s.polls += 1;
                    s.active_messages = Some(active);
                    s.error = None;
                });
                Some(active)
            }
            Err(error) => {
                // KEDA logs a failed scaler read and counts no messages (min_executions are still
                // kept, see ScaleRule); so do we, and try again next time.
                tracing::warn!(%error, "could not read the queue's active message count");
                self.status.send_modify(|s| {
                    s.polls += 1;
                    s.error = Some(error.to_string());
                });
                None
            }
        };
        let running = u32::try_from(executions.len()).unwrap_or(u32::MAX);
        let to_start = self.config.scale.executions_to_start(active, running);
        for _ in 0..to_start {
            let name = execution_name(&self.config.job_name);
            self.history
                .start(&name, self.clock.now(), self.config.template.clone());
            let run = execution::Execution {
                name,
                config: self.config.clone(),
                runner: self.runner.clone(),
                history: self.history.clone(),
                clock: self.clock,
                stop: stop.clone(),
            };
            executions.spawn(run.run());
        }
    }
}

/// `<job>-<7 random lowercase letters and digits>`, as Container Apps names executions.
pub fn execution_name(job: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..7]
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect();
    format!("{job}-{suffix}")
}
