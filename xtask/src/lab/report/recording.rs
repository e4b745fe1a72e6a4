//! What the timeline is drawn from: the queue's active count over time, the sends, the controller's
//! polls and the executions, kept by one [`Recorder`] while a local lab runs.
//!
//! The executions come from the controller's [`History`] (the az-shaped list); everything else the
//! controller does not keep is recorded here: polls by wrapping the scaler's [`QueueMetrics`]
//! ([`RecordingMetrics`], so every read the scaler makes is a marker), the queue's count by a sampler that
//! looks more often than the scaler (so the step line shows a send before the next poll sees it), and the
//! sends by whoever sends. Times come from the controller's [`Clock`], so a test under a paused tokio clock
//! records the same picture every run.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::lab::controller::metrics::MetricsError;
use crate::lab::controller::{Clock, History, QueueMetrics};
use crate::lab::executions::Execution;

/// How often the sampler reads the queue: a tenth of a second shows every send as its own step.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(100);

/// Which job the replicas ran (the picture's title, and how `report --compare` pairs runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// The Rust job, servicebus-job (the worker binary, or its image with --runtime docker).
    Rust,
    /// The tutorial's Python job, lab/python-job/job.py.
    Python,
}

impl JobKind {
    pub fn label(self) -> &'static str {
        match self {
            JobKind::Rust => "Rust job",
            JobKind::Python => "Python job",
        }
    }
}

/// The queue's active message count at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSample {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub active: u64,
}

/// One read of the queue by the controller's scaler; `active` is `None` when the read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub active: Option<u64>,
}

/// Messages put on the queue by `lab send` or the walkthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMark {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub count: u32,
}

/// Everything one lab run recorded (`recording.json` in its run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub job: JobKind,
    /// The job's name in the settings file (executions are named after it).
    pub job_name: String,
    pub queue: String,
    pub max_executions: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// When the lab stopped; `None` while it runs.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ended: Option<OffsetDateTime>,
    #[serde(default)]
    pub samples: Vec<QueueSample>,
    #[serde(default)]
    pub polls: Vec<Poll>,
    #[serde(default)]
    pub sends: Vec<SendMark>,
    /// As `az containerapp job execution list` shows them, oldest first.
    #[serde(default)]
    pub executions: Vec<Execution>,
}

impl Recording {
    /// The moment the picture ends: the lab's end, else the latest thing recorded.
    pub fn last_time(&self) -> OffsetDateTime {
        let executions = self.executions.iter().flat_map(|e| {
            [e.properties.start_time, e.properties.end_time]
                .into_iter()
                .flatten()
        });
        let times = self
            .samples
            .iter()
            .map(|s| s.time)
            .chain(self.polls.iter().map(|p| p.time))
            .chain(self.sends.iter().map(|s| s.time))
            .chain(executions);
        self.ended
            .unwrap_or_else(|| times.max().unwrap_or(self.started))
            .max(self.started)
    }

    /// Messages sent in all.
    pub fn messages_sent(&self) -> u64 {
        self.sends.iter().map(|s| u64::from(s.count)).sum()
    }
}

/// What stays the same for a whole run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub job: JobKind,
    pub job_name: String,
    pub queue: String,
    pub max_executions: u32,
}

/// A cheap, cloneable handle that records one run; [`Recorder::recording`] takes a snapshot.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Recording>>,
    clock: Clock,
}

impl Recorder {
    pub fn new(info: RunInfo, clock: Clock) -> Self {
        let recording = Recording {
            job: info.job,
            job_name: info.job_name,
            queue: info.queue,
            max_executions: info.max_executions,
            started: clock.now(),
            ended: None,
            samples: Vec::new(),
            polls: Vec::new(),
            sends: Vec::new(),
            executions: Vec::new(),
        };
        Self {
            inner: Arc::new(Mutex::new(recording)),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        // Plain data: still worth drawing after a panic elsewhere.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The queue's count now; kept only when it changed, so a quiet queue costs nothing.
    pub fn sample(&self, active: u64) {
        let time = self.clock.now();
        let mut recording = self.lock();
        if recording.samples.last().is_some_and(|s| s.active == active) {
            return;
        }
        recording.samples.push(QueueSample { time, active });
    }

    pub fn poll(&self, active: Option<u64>) {
        let time = self.clock.now();
        self.lock().polls.push(Poll { time, active });
    }

    pub fn send(&self, count: u32) {
        let time = self.clock.now();
        self.lock().sends.push(SendMark { time, count });
    }

    /// The lab stopped: the picture ends here.
    pub fn end(&self) {
        let time = self.clock.now();
        self.lock().ended = Some(time);
    }

    /// Everything so far, with the executions as the history has them now.
    pub fn recording(&self, history: &History) -> Recording {
        let mut recording = self.lock().clone();
        recording.executions = history.executions();
        recording
    }

    /// Read the queue every [`SAMPLE_PERIOD`] until `stop` fires (or is dropped); then read it once
    /// more, so the line ends at the count the lab stopped with.
    pub async fn sample_queue(
        self,
        count: impl Fn() -> Option<u64>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut ticker = tokio::time::interval(SAMPLE_PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut stop => break,
            }
            if let Some(active) = count() {
                self.sample(active);
            }
        }
        if let Some(active) = count() {
            self.sample(active);
        }
    }
}

/// The scaler's metrics, with every read recorded as a poll.
#[derive(Clone)]
pub struct RecordingMetrics<M> {
    inner: M,
    recorder: Recorder,
}

impl<M> RecordingMetrics<M> {
    pub fn new(inner: M, recorder: Recorder) -> Self {
        Self { inner, recorder }
    }
}

impl<M: QueueMetrics> QueueMetrics for RecordingMetrics<M> {
    async fn active_message_count(&self) -> Result<u64, MetricsError> {
        let reading = self.inner.active_message_count().await;
        let active = reading.as_ref().ok().copied();
        self.recorder.poll(active);
        // The scaler's read is a sample too: it is what the controller decided on.
        if let Some(active) = active {
            self.recorder.sample(active);
        }
        reading
    }
}
