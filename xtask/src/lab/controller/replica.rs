//! What the controller needs from a replica: start it, wait for it, ask it to stop, kill it.
//!
//! Behind traits so the controller's rules are tested with in-memory replicas under a paused clock,
//! while the lab runs the worker binary as real processes ([`super::process`]).

use std::fmt;
use std::future::Future;

use time::OffsetDateTime;

use super::history::{History, LogLine, Stream};

/// Everything a runner needs to start one replica.
#[derive(Clone)]
pub struct ReplicaSpec {
    pub job_name: String,
    pub execution_name: String,
    pub replica_name: String,
    /// Where the replica's output lines go.
    pub log: LogSink,
}

/// Appends a replica's output to its execution's log.
#[derive(Clone)]
pub struct LogSink {
    history: History,
    execution: String,
    replica: String,
    clock: super::Clock,
}

impl LogSink {
    pub(super) fn new(
        history: History,
        execution: &str,
        replica: &str,
        clock: super::Clock,
    ) -> Self {
        Self {
            history,
            execution: execution.to_owned(),
            replica: replica.to_owned(),
            clock,
        }
    }

    pub fn line(&self, stream: Stream, text: impl Into<String>) {
        let line = LogLine {
            time: self.clock.now(),
            replica: self.replica.clone(),
            stream,
            text: text.into(),
        };
        self.history.log(&self.execution, line);
    }

    /// The time the controller's clock shows now (wall time, consistent with a paused tokio clock).
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
}

/// How a replica ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaExit {
    /// It exited with this code (0 = success).
    Code(i32),
    /// A signal ended it (number as on Unix).
    Signal(i32),
}

impl ReplicaExit {
    pub fn success(self) -> bool {
        self == ReplicaExit::Code(0)
    }

    pub fn code(self) -> Option<i32> {
        match self {
            ReplicaExit::Code(code) => Some(code),
            ReplicaExit::Signal(_) => None,
        }
    }
}

impl fmt::Display for ReplicaExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaExit::Code(code) => write!(f, "exit code {code}"),
            ReplicaExit::Signal(signal) => write!(f, "signal {signal}"),
        }
    }
}

/// A replica could not be started or watched.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReplicaError(pub String);

/// Starts replicas of the job's container.
pub trait ReplicaRunner: Send + Sync + 'static {
    type Replica: Replica;

    /// Start one replica; return once it runs.
    fn start(
        &self,
        spec: ReplicaSpec,
    ) -> impl Future<Output = Result<Self::Replica, ReplicaError>> + Send;
}

/// One running replica.
pub trait Replica: Send + 'static {
    /// Wait until it ends. Must be cancel-safe: the controller races it against timers.
    fn wait(&mut self) -> impl Future<Output = Result<ReplicaExit, ReplicaError>> + Send;

    /// Ask it to stop (SIGTERM), as Container Apps does at the replica timeout.
    fn terminate(&mut self) -> Result<(), ReplicaError>;

    /// End it now (SIGKILL), after the grace period.
    fn kill(&mut self) -> Result<(), ReplicaError>;
}
