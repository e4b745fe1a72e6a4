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
use crate::lab::controller::{Controller, ControllerConfig, History, ReplicaRunner};
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
        }
    }
}

impl std::fmt::Display for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Worker::Binary(path) => write!(f, "{}", path.display()),
            Worker::Image(image) => write!(f, "{image}"),
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

/// A running controller in this process.
pub struct RunningController {
    pub history: History,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningController {
    /// Start polling the emulator's queue now.
    pub fn start(plan: &LabPlan, emulator: &Emulator) -> Self {
        let mut config = ControllerConfig::from_settings(&plan.settings, &plan.worker.to_string());
        // The settings file holds Azure's interval (30 s); locally nobody wants to wait that long.
        config.polling_interval = plan.polling_interval;
        // A worker that ignores SIGTERM must not keep `lab down` waiting for half a minute.
        config.termination_grace_period = Duration::from_secs(5);
        let metrics = BrokerMetrics::new(emulator.broker().clone(), &plan.settings.queue_name);
        let env = worker_env(&plan.settings, &emulator.connection_string());
        match &plan.worker {
            Worker::Binary(path) => Self::spawn(Controller::new(
                config,
                metrics,
                ProcessRunner::new(path, env),
            )),
            Worker::Image(image) => Self::spawn(Controller::new(
                config,
                metrics,
                DockerRunner::new(image, env),
            )),
        }
    }

    fn spawn<R: ReplicaRunner>(controller: Controller<BrokerMetrics, R>) -> Self {
        let history = controller.history();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(controller.run(async {
            let _ = stopped.await;
        }));
        Self {
            history,
            stop,
            task,
        }
    }

    /// Stop polling, stop running executions (they end `Stopped`), and wait for both.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
