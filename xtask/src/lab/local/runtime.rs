//! The local lab in this process: the embedded emulator plus the jobs controller running the worker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use servicebus_emulator::Emulator;
use servicebus_emulator::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::lab::controller::docker::DockerRunner;
use crate::lab::controller::metrics::BrokerMetrics;
use crate::lab::controller::process::ProcessRunner;
use crate::lab::controller::{Clock, Controller, ControllerConfig, History, ReplicaRunner};
use crate::lab::report::{JobKind, Recorder, RecordingMetrics, RunInfo};
use crate::lab::settings::JobSettings;

/// What the local lab runs with.
#[derive(Debug, Clone)]
pub struct LabPlan {
    pub settings: JobSettings,
    pub worker: Worker,
    pub polling_interval: Duration,
    pub amqp: SocketAddr,
    pub health: SocketAddr,
}

/// What each replica runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Worker {
    /// The worker binary, as a process.
    Binary(PathBuf),
    /// The worker image, as a container.
    Image(String),
    /// The tutorial's Python job, as `python job.py`.
    Python { python: PathBuf, script: PathBuf },
}

impl Worker {
    /// The arguments that make `lab serve` run the same worker.
    pub fn serve_args(&self) -> Vec<String> {
        match self {
            Worker::Binary(path) => vec!["--worker-bin".into(), path.display().to_string()],
            Worker::Image(image) => vec![
                "--runtime".into(),
                "docker".into(),
                "--image".into(),
                image.clone(),
            ],
            Worker::Python { python, .. } => vec![
                "--job".into(),
                "python".into(),
                "--python".into(),
                python.display().to_string(),
            ],
        }
    }
}

impl std::fmt::Display for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Worker::Binary(path) => write!(f, "{}", path.display()),
            Worker::Image(image) => write!(f, "{image}"),
            Worker::Python { python, script } => {
                write!(f, "{} {}", python.display(), script.display())
            }
        }
    }
}

/// Start the emulator with one queue: the settings' `queue_name` (the lab's Config.json when it matches).
pub async fn start_emulator(plan: &LabPlan) -> anyhow::Result<Emulator> {
    let queue = &plan.settings.queue_name;
    let lab = Config::lab_default();
    let config = if lab
        .queues()
        .iter()
        .any(|q| q.name.eq_ignore_ascii_case(queue))
    {
        lab
    } else {
        Config::with_queues([queue.clone()])
    };
    Emulator::builder().config(config).listen(plan.amqp).health_listen(plan.health).start().await.with_context(|| {
        format!(
            "could not start the Service Bus emulator on {} (health {}); if the port is taken, stop what uses it \
             (`cargo xtask lab down` for an earlier lab) or pick another with --port / --health-port",
            plan.amqp, plan.health
        )
    })
}

/// The environment a replica gets: the job's contract with the emulator's connection string instead of
/// the managed identity (Azure sets `SERVICEBUS_FQDN` and `MANAGED_IDENTITY_CLIENT_ID`).
pub fn worker_env(settings: &JobSettings, connection_string: &str) -> Vec<(String, String)> {
    vec![
        (
            "SERVICEBUS_CONNECTION_STRING".to_owned(),
            connection_string.to_owned(),
        ),
        (
            settings.env_names.queue_name.clone(),
            settings.queue_name.clone(),
        ),
        // Replica output goes to a log, not a terminal: no colour codes in it.
        ("NO_COLOR".to_owned(), "1".to_owned()),
    ]
}

impl Worker {
    /// Which job the replicas run, for the timeline.
    pub fn job_kind(&self) -> JobKind {
        match self {
            Worker::Binary(_) | Worker::Image(_) => JobKind::Rust,
            Worker::Python { .. } => JobKind::Python,
        }
    }
}

/// A running controller in this process.
pub struct RunningController {
    pub history: History,
    /// The run's queue samples, polls and sends, for the timeline.
    pub recorder: Recorder,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    stop_sampler: oneshot::Sender<()>,
    sampler: JoinHandle<()>,
}

impl RunningController {
    /// Start polling the emulator's queue now.
    pub fn start(plan: &LabPlan, emulator: &Emulator) -> Self {
        let mut config = ControllerConfig::from_settings(&plan.settings, &plan.worker.to_string());
        // The settings file holds Azure's interval (30 s); locally nobody wants to wait that long.
        config.polling_interval = plan.polling_interval;
        // A worker that ignores SIGTERM must not keep `lab down` waiting for half a minute.
        config.termination_grace_period = Duration::from_secs(5);
        let clock = Clock::system();
        let recorder = Recorder::new(
            RunInfo {
                job: plan.worker.job_kind(),
                job_name: plan.settings.job_name.clone(),
                queue: plan.settings.queue_name.clone(),
                max_executions: plan.settings.max_executions,
            },
            clock,
        );
        let broker = emulator.broker().clone();
        let metrics = RecordingMetrics::new(
            BrokerMetrics::new(broker.clone(), &plan.settings.queue_name),
            recorder.clone(),
        );
        let queue = plan.settings.queue_name.clone();
        let (stop_sampler, sampler_stopped) = oneshot::channel();
        let sampler = tokio::spawn(recorder.clone().sample_queue(
            move || broker.counts(&queue).map(|c| c.active_message_count),
            sampler_stopped,
        ));
        let env = worker_env(&plan.settings, &emulator.connection_string());
        let (history, stop, task) = match &plan.worker {
            Worker::Binary(path) => Self::spawn(Controller::with_clock(
                config,
                metrics,
                ProcessRunner::new(path, env),
                clock,
            )),
            Worker::Image(image) => Self::spawn(Controller::with_clock(
                config,
                metrics,
                DockerRunner::new(image, env),
                clock,
            )),
            Worker::Python { python, script } => Self::spawn(Controller::with_clock(
                config,
                metrics,
                ProcessRunner::new(python, env).args([script.display().to_string()]),
                clock,
            )),
        };
        Self {
            history,
            recorder,
            stop,
            task,
            stop_sampler,
            sampler,
        }
    }

    fn spawn<R: ReplicaRunner>(
        controller: Controller<RecordingMetrics<BrokerMetrics>, R>,
    ) -> (History, oneshot::Sender<()>, JoinHandle<()>) {
        let history = controller.history();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(controller.run(async {
            let _ = stopped.await;
        }));
        (history, stop, task)
    }

    /// Stop polling, stop running executions (they end `Stopped`), and wait for both; the recording
    /// ends here.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = self.stop_sampler.send(());
        let _ = self.sampler.await;
        self.recorder.end();
    }
}
