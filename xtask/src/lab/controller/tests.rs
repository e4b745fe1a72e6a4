//! The controller's rules under a paused clock, with an in-memory queue and in-memory replicas.
//!
//! The fake replica behaves like the worker: on start it locks one message if there is one (a locked
//! message still counts as active, as in Service Bus); on success it completes it; on failure, SIGTERM or
//! SIGKILL the lock is released and the message becomes available again with one more delivery.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use super::metrics::MetricsError;
use super::replica::{Replica, ReplicaExit, ReplicaSpec};
use super::*;
use crate::lab::executions::ExecutionStatus;

const T0: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

#[derive(Debug, Default)]
struct QueueState {
    available: u64,
    locked: u64,
    completed: u64,
    /// Messages that became available again after their replica failed or was stopped.
    redelivered: u64,
}

#[derive(Clone, Default)]
struct FakeQueue(Arc<Mutex<QueueState>>);

impl FakeQueue {
    fn with(messages: u64) -> Self {
        let queue = Self::default();
        queue.0.lock().unwrap().available = messages;
        queue
    }

    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.0.lock().unwrap()
    }
}

impl QueueMetrics for FakeQueue {
    async fn active_message_count(&self) -> Result<u64, MetricsError> {
        let state = self.state();
        Ok(state.available + state.locked)
    }
}

/// What a fake replica does.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Completes its message and exits 0 after this long.
    Succeed(Duration),
    /// Abandons its message and exits 1 after this long.
    Fail(Duration),
    /// Never finishes on its own; exits 143 on SIGTERM if `honours_sigterm`, else only SIGKILL ends it.
    Hang { honours_sigterm: bool },
}

/// Runs until SIGTERM.
const STOPS_ON_SIGTERM: Behaviour = Behaviour::Hang {
    honours_sigterm: true,
};
/// Runs until SIGKILL.
const IGNORES_SIGTERM: Behaviour = Behaviour::Hang {
    honours_sigterm: false,
};

#[derive(Clone)]
struct FakeRunner {
    queue: FakeQueue,
    behaviour: Behaviour,
    /// (start instant, execution name) of every replica started.
    starts: Arc<Mutex<Vec<(Instant, String)>>>,
    running: Arc<Mutex<(u32, u32)>>,
}

impl FakeRunner {
    fn new(queue: &FakeQueue, behaviour: Behaviour) -> Self {
        Self {
            queue: queue.clone(),
            behaviour,
            starts: Arc::default(),
            running: Arc::default(),
        }
    }

    /// The most replicas that ran at the same time.
    fn peak(&self) -> u32 {
        self.running.lock().unwrap().1
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Signal {
    None,
    Term,
    Kill,
}

struct FakeReplica {
    queue: FakeQueue,
    behaviour: Behaviour,
    started: Instant,
    holds_message: bool,
    signal: watch::Sender<Signal>,
    signals: watch::Receiver<Signal>,
    running: Arc<Mutex<(u32, u32)>>,
    ended: Option<ReplicaExit>,
}

impl ReplicaRunner for FakeRunner {
    type Replica = FakeReplica;

    async fn start(&self, spec: ReplicaSpec) -> Result<FakeReplica, ReplicaError> {
        self.starts
            .lock()
            .unwrap()
            .push((Instant::now(), spec.execution_name.clone()));
        let holds_message = {
            let mut state = self.queue.state();
            let take = state.available > 0;
            if take {
                state.available -= 1;
                state.locked += 1;
            }
            take
        };
        {
            let mut running = self.running.lock().unwrap();
            running.0 += 1;
            running.1 = running.1.max(running.0);
        }
        spec.log.line(
            Stream::Stdout,
            if holds_message {
                "received 1 message"
            } else {
                "no message"
            },
        );
        let (signal, signals) = watch::channel(Signal::None);
        Ok(FakeReplica {
            queue: self.queue.clone(),
            behaviour: self.behaviour,
            started: Instant::now(),
            holds_message,
            signal,
            signals,
            running: self.running.clone(),
            ended: None,
        })
    }
}

impl FakeReplica {
    fn end(&mut self, exit: ReplicaExit) -> ReplicaExit {
        if self.ended.is_none() {
            if self.holds_message {
                let mut state = self.queue.state();
                state.locked -= 1;
                if exit.success() {
                    state.completed += 1;
                } else {
                    state.available += 1;
                    state.redelivered += 1;
                }
            }
            self.running.lock().unwrap().0 -= 1;
            self.ended = Some(exit);
        }
        self.ended.unwrap_or(exit)
    }
}

impl Replica for FakeReplica {
    async fn wait(&mut self) -> Result<ReplicaExit, ReplicaError> {
        if let Some(exit) = self.ended {
            return Ok(exit);
        }
        let finish_at = match self.behaviour {
            Behaviour::Succeed(after) | Behaviour::Fail(after) => Some(self.started + after),
            Behaviour::Hang { .. } => None,
        };
        loop {
            let signal = *self.signals.borrow_and_update();
            let honours = matches!(
                self.behaviour,
                Behaviour::Hang {
                    honours_sigterm: true
                }
            ) || !matches!(self.behaviour, Behaviour::Hang { .. });
            match signal {
                Signal::Kill => return Ok(self.end(ReplicaExit::Signal(9))),
                Signal::Term if honours => return Ok(self.end(ReplicaExit::Code(143))),
                _ => {}
            }
            tokio::select! {
                () = async { sleep_until(finish_at.unwrap_or_else(Instant::now)).await }, if finish_at.is_some() => {
                    let exit = match self.behaviour {
                        Behaviour::Succeed(_) => ReplicaExit::Code(0),
                        _ => ReplicaExit::Code(1),
                    };
                    return Ok(self.end(exit));
                }
                _ = self.signals.changed() => {}
            }
        }
    }

    fn terminate(&mut self) -> Result<(), ReplicaError> {
        self.signal.send_replace(Signal::Term);
        Ok(())
    }

    fn kill(&mut self) -> Result<(), ReplicaError> {
        self.signal.send_replace(Signal::Kill);
        Ok(())
    }
}

fn config(max_executions: u32) -> ControllerConfig {
    ControllerConfig {
        job_name: "job-rust".into(),
        scale: ScaleRule {
            message_count: 1,
            activation_message_count: 0,
            min_executions: 0,
            max_executions,
        },
        polling_interval: Duration::from_secs(1),
        parallelism: 1,
        replica_completion_count: 1,
        replica_retry_limit: 0,
        replica_timeout: Duration::from_secs(600),
        termination_grace_period: Duration::from_secs(5),
        template: serde_json::Value::Null,
    }
}

/// Run the controller for `duration` of (paused) time; return its history.
async fn run_for(
    config: ControllerConfig,
    queue: &FakeQueue,
    runner: &FakeRunner,
    duration: Duration,
) -> History {
    let controller = Controller::with_clock(
        config,
        queue.clone(),
        runner.clone(),
        Clock::starting_at(T0),
    );
    let history = controller.history();
    controller.run(sleep(duration)).await;
    history
}

fn seconds_after_t0(time: Option<OffsetDateTime>) -> f64 {
    (time.unwrap() - T0).as_seconds_f64()
}

fn statuses(records: &[ExecutionRecord]) -> Vec<ExecutionStatus> {
    records.iter().map(ExecutionRecord::status).collect()
}

/// When each execution started, in seconds after T0.
fn starts(records: &[ExecutionRecord]) -> Vec<f64> {
    records
        .iter()
        .map(|r| seconds_after_t0(r.execution.start_time()))
        .collect()
}

/// When each execution ended, in seconds after T0.
fn ends(records: &[ExecutionRecord]) -> Vec<f64> {
    records
        .iter()
        .map(|r| seconds_after_t0(r.execution.properties.end_time))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn five_messages_with_max_one_execution_run_one_after_another_until_the_queue_is_empty() {
    let queue = FakeQueue::with(5);
    let runner = FakeRunner::new(&queue, Behaviour::Succeed(Duration::from_millis(2500)));
    let history = run_for(config(1), &queue, &runner, Duration::from_secs(60)).await;

    let records = history.records();
    assert_eq!(
        records.len(),
        5,
        "one execution per message, and none once the queue is empty"
    );
    assert_eq!(statuses(&records), [ExecutionStatus::Succeeded; 5]);
    assert_eq!(runner.peak(), 1);
    for pair in records.windows(2) {
        let (earlier, later) = (&pair[0].execution.properties, &pair[1].execution.properties);
        assert!(
            later.start_time >= earlier.end_time,
            "executions overlap: {pair:?}"
        );
    }
    // Each runs 2.5 s and the next starts on the following 1 s poll.
    assert_eq!(starts(&records), [0.0, 3.0, 6.0, 9.0, 12.0]);
    let state = queue.state();
    assert_eq!((state.available, state.locked, state.completed), (0, 0, 5));
}

#[tokio::test(start_paused = true)]
async fn max_five_executions_with_message_count_one_run_in_parallel() {
    let queue = FakeQueue::with(5);
    let runner = FakeRunner::new(&queue, Behaviour::Succeed(Duration::from_secs(3)));
    let history = run_for(config(5), &queue, &runner, Duration::from_secs(30)).await;

    let records = history.records();
    assert_eq!(records.len(), 5);
    assert_eq!(runner.peak(), 5, "all five ran at once");
    assert_eq!(statuses(&records), [ExecutionStatus::Succeeded; 5]);
    assert_eq!(starts(&records), [0.0; 5]);
    assert_eq!(ends(&records), [3.0; 5]);
    assert_eq!(queue.state().completed, 5);
}

#[tokio::test(start_paused = true)]
async fn message_count_sets_messages_per_execution() {
    let queue = FakeQueue::with(7);
    let runner = FakeRunner::new(&queue, STOPS_ON_SIGTERM);
    let mut config = config(10);
    config.scale.message_count = 3;
    let history = run_for(config, &queue, &runner, Duration::from_millis(500)).await;
    assert_eq!(history.records().len(), 3, "ceil(7 / 3)");
}

#[tokio::test(start_paused = true)]
async fn a_failing_replica_is_retried_up_to_the_limit_then_the_execution_fails() {
    let queue = FakeQueue::with(1);
    let runner = FakeRunner::new(&queue, Behaviour::Fail(Duration::from_secs(1)));
    let mut config = config(1);
    config.replica_retry_limit = 2;
    let history = run_for(config, &queue, &runner, Duration::from_millis(3500)).await;

    let first = &history.records()[0];
    assert_eq!(first.status(), ExecutionStatus::Failed);
    assert_eq!(first.replicas.len(), 3, "the first attempt and two retries");
    assert!(
        first.replicas.iter().all(|a| a.exit_code == Some(1)),
        "{:?}",
        first.replicas
    );
    assert_eq!(seconds_after_t0(first.execution.properties.end_time), 3.0);
    let properties = &first.execution.properties;
    assert_eq!(properties.reason.as_deref(), Some("BackoffLimitExceeded"));
    let message = properties.message.as_deref().unwrap();
    assert!(
        message.contains("more than the replica retry limit of 2"),
        "{message}"
    );
    // Nothing is lost: the message is back and will start the next execution.
    let state = queue.state();
    assert_eq!(state.available + state.locked, 1);
    assert!(state.redelivered >= 3);
}

#[tokio::test(start_paused = true)]
async fn retry_limit_zero_fails_on_the_first_failure() {
    let queue = FakeQueue::with(1);
    let runner = FakeRunner::new(&queue, Behaviour::Fail(Duration::from_secs(1)));
    let history = run_for(config(1), &queue, &runner, Duration::from_millis(1500)).await;
    let first = &history.records()[0];
    assert_eq!(first.status(), ExecutionStatus::Failed);
    assert_eq!(first.replicas.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_replica_past_its_timeout_is_terminated_then_killed_and_its_message_redelivered() {
    let queue = FakeQueue::with(1);
    let runner = FakeRunner::new(&queue, IGNORES_SIGTERM);
    let mut config = config(1);
    config.replica_timeout = Duration::from_secs(10);
    config.replica_retry_limit = 3;
    let history = run_for(config, &queue, &runner, Duration::from_millis(15_500)).await;

    let first = &history.records()[0];
    assert_eq!(first.status(), ExecutionStatus::Failed);
    assert_eq!(first.replicas.len(), 1, "a timeout is not retried");
    // SIGTERM at 10 s is ignored; SIGKILL after the 5 s grace period.
    assert_eq!(seconds_after_t0(first.execution.properties.end_time), 15.0);
    assert_eq!(
        first.replicas[0].outcome.as_deref(),
        Some("killed after the grace period (signal 9)")
    );
    let system: Vec<&str> = first
        .log
        .iter()
        .filter(|l| l.stream == Stream::System)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(
        system,
        [
            "stopping the replica (SIGTERM): the replica timeout was reached",
            "still running 5 s after SIGTERM; killing it (SIGKILL)",
            "replica ended: killed after the grace period (signal 9)"
        ]
    );
    let properties = &first.execution.properties;
    assert_eq!(properties.reason.as_deref(), Some("DeadlineExceeded"));
    let message = properties.message.as_deref().unwrap();
    assert!(message.contains("replica timeout of 10 s"), "{message}");
    let state = queue.state();
    assert_eq!(
        state.redelivered, 1,
        "the killed replica's message is available again"
    );
    assert_eq!(state.available + state.locked, 1);
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_honours_sigterm_at_the_timeout_ends_without_a_kill() {
    let queue = FakeQueue::with(1);
    let runner = FakeRunner::new(&queue, STOPS_ON_SIGTERM);
    let mut config = config(1);
    config.replica_timeout = Duration::from_secs(10);
    let history = run_for(config, &queue, &runner, Duration::from_millis(10_500)).await;
    let first = &history.records()[0];
    assert_eq!(first.status(), ExecutionStatus::Failed);
    assert_eq!(seconds_after_t0(first.execution.properties.end_time), 10.0);
    assert_eq!(first.replicas[0].exit_code, Some(143));
    assert_eq!(queue.state().redelivered, 1);
}

/// A controller polling in the background, for tests that change the queue while it runs.
struct Running {
    history: History,
    status: watch::Receiver<ScalerStatus>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(config: ControllerConfig, queue: &FakeQueue, runner: &FakeRunner) -> Running {
        let controller = Controller::with_clock(
            config,
            queue.clone(),
            runner.clone(),
            Clock::starting_at(T0),
        );
        let (history, status) = (controller.history(), controller.status());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller.run(async {
            let _ = stopped.await;
        }));
        Running {
            history,
            status,
            stop,
            task,
        }
    }

    /// Stop the controller and wait until it has finished.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_activation_threshold_is_respected() {
    let queue = FakeQueue::with(2);
    let runner = FakeRunner::new(&queue, Behaviour::Succeed(Duration::from_millis(100)));
    let mut config = config(10);
    config.scale.activation_message_count = 2;
    let running = Running::start(config, &queue, &runner);
    let (history, status) = (running.history.clone(), running.status.clone());

    sleep(Duration::from_millis(10_500)).await;
    assert!(
        history.records().is_empty(),
        "2 messages are not more than activationMessageCount 2"
    );
    assert_eq!(status.borrow().polls, 11);
    assert_eq!(status.borrow().active_messages, Some(2));

    queue.state().available += 1;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        history.records().len(),
        3,
        "3 > 2 activates: one execution per message"
    );

    running.stop().await;
    assert_eq!(queue.state().completed, 3);
}

/// The workshop's trap, through the path the local lab takes: settings file → [`JobSettings`] →
/// [`ControllerConfig::from_settings`]. With `activation_message_count` 1 a single message starts nothing;
/// a second one starts an execution, which takes one message and leaves the other, which again is not
/// more than 1.
#[tokio::test(start_paused = true)]
async fn activation_message_count_comes_from_the_settings_file() {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(JobSettings::default_path()).unwrap())
            .unwrap();
    value["activation_message_count"] = 1.into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.auto.tfvars.json");
    std::fs::write(&path, value.to_string()).unwrap();
    let settings = JobSettings::load(&path).unwrap();
    let config = ControllerConfig::from_settings(&settings, "servicebus-job:test");
    assert_eq!(config.scale.activation_message_count, 1);
    assert_eq!(config.polling_interval, Duration::from_secs(30));

    let queue = FakeQueue::with(1);
    let runner = FakeRunner::new(&queue, Behaviour::Succeed(Duration::from_secs(1)));
    let running = Running::start(config, &queue, &runner);
    let (history, status) = (running.history.clone(), running.status.clone());

    // Polls at 0 s, 30 s and 60 s.
    sleep(Duration::from_secs(61)).await;
    assert!(
        history.records().is_empty(),
        "1 message is not more than activationMessageCount 1"
    );
    assert_eq!(status.borrow().polls, 3);
    assert_eq!(status.borrow().active_messages, Some(1));

    queue.state().available += 1;
    sleep(Duration::from_secs(30)).await;
    let records = history.records();
    assert_eq!(records.len(), 1, "2 > 1 activates; max_executions is 1");
    assert_eq!(
        seconds_after_t0(records[0].execution.properties.start_time),
        90.0
    );

    sleep(Duration::from_secs(60)).await;
    assert_eq!(
        history.records().len(),
        1,
        "the last message starts nothing"
    );
    assert_eq!(statuses(&history.records()), [ExecutionStatus::Succeeded]);
    let left = {
        let state = queue.state();
        (state.completed, state.available)
    };
    assert_eq!(left, (1, 1), "one message completed, one left waiting");

    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn min_executions_run_even_with_an_empty_queue() {
    let queue = FakeQueue::with(0);
    let runner = FakeRunner::new(&queue, STOPS_ON_SIGTERM);
    let mut config = config(3);
    config.scale.min_executions = 2;
    let history = run_for(config, &queue, &runner, Duration::from_millis(5500)).await;
    let records = history.records();
    assert_eq!(records.len(), 2);
    assert_eq!(statuses(&records), [ExecutionStatus::Stopped; 2]);
}

#[tokio::test(start_paused = true)]
async fn parallelism_and_completion_count_shape_one_execution() {
    let queue = FakeQueue::with(1);
    let runner = FakeRunner::new(&queue, Behaviour::Succeed(Duration::from_secs(2)));
    let mut config = config(1);
    config.parallelism = 3;
    config.replica_completion_count = 3;
    let history = run_for(config, &queue, &runner, Duration::from_millis(2500)).await;
    let first = &history.records()[0];
    assert_eq!(first.status(), ExecutionStatus::Succeeded);
    assert_eq!(first.replicas.len(), 3);
    assert_eq!(runner.peak(), 3);
    assert_eq!(seconds_after_t0(first.execution.properties.end_time), 2.0);
}

#[tokio::test(start_paused = true)]
async fn stopping_the_controller_stops_running_executions() {
    let queue = FakeQueue::with(1);
    let runner = FakeRunner::new(&queue, STOPS_ON_SIGTERM);
    let history = run_for(config(1), &queue, &runner, Duration::from_secs(4)).await;
    let first = &history.records()[0];
    assert_eq!(first.status(), ExecutionStatus::Stopped);
    assert_eq!(seconds_after_t0(first.execution.properties.end_time), 4.0);
    let state = queue.state();
    assert_eq!(
        (state.available, state.locked),
        (1, 0),
        "its message is back in the queue"
    );
}

/// A scaler whose every read fails (the queue does not exist).
struct UnreadableQueue;

impl QueueMetrics for UnreadableQueue {
    async fn active_message_count(&self) -> Result<u64, MetricsError> {
        Err(MetricsError::UnknownQueue("nope".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_queue_that_cannot_be_read_starts_nothing_and_says_why() {
    let queue = FakeQueue::with(1);
    let runner = FakeRunner::new(&queue, Behaviour::Succeed(Duration::ZERO));
    let controller =
        Controller::with_clock(config(1), UnreadableQueue, runner, Clock::starting_at(T0));
    let history = controller.history();
    let status = controller.status();
    controller.run(sleep(Duration::from_millis(2500))).await;
    assert!(history.records().is_empty());
    assert_eq!(status.borrow().polls, 3);
    assert!(
        status
            .borrow()
            .error
            .as_deref()
            .unwrap()
            .contains("\"nope\" does not exist")
    );
}

#[tokio::test(start_paused = true)]
async fn min_executions_are_kept_even_when_the_queue_cannot_be_read() {
    // KEDA: min > 0 keeps a ScaledJob active, and below the minimum it tops up, metrics or not.
    let queue = FakeQueue::with(0);
    let runner = FakeRunner::new(&queue, STOPS_ON_SIGTERM);
    let mut config = config(3);
    config.scale.min_executions = 2;
    let controller =
        Controller::with_clock(config, UnreadableQueue, runner, Clock::starting_at(T0));
    let history = controller.history();
    controller.run(sleep(Duration::from_millis(3500))).await;
    // Two at the first poll, then no more: the two keep running (until the controller stops).
    let records = history.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r.execution.properties.start_time == Some(T0))
    );
}

#[test]
fn execution_names_look_like_azure_ones() {
    let name = execution_name("job-rust");
    let suffix = name.strip_prefix("job-rust-").unwrap();
    assert_eq!(suffix.len(), 7);
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert_ne!(execution_name("job-rust"), execution_name("job-rust"));
}
