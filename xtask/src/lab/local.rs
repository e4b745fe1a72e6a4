//! `cargo xtask lab` on this machine: the embedded Service Bus emulator and the local jobs controller
//! (`controller`) running the worker binary, with no cloud account.
//!
//! Two ways to run it: the whole walkthrough in one command (`cargo xtask lab`: start, send, wait for the
//! execution to succeed, show the evidence, stop), or step by step for a workshop (`up` starts the same lab
//! as a background process, `send`, `watch` and `executions` talk to it through the state directory,
//! `down` stops it).

mod build;
mod daemon;
mod display;
mod live;
pub(crate) mod python_job;
pub(crate) mod runtime;
pub(crate) mod send;
mod state;

use std::cell::Cell;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use time::OffsetDateTime;

use super::controller::docker::WORKER_IMAGE;
use super::controller::{ExecutionRecord, History};
use super::executions::{self, Execution, ExecutionSource, WatchOutcome, WatchPlan};
use super::report;
use super::settings::JobSettings;
use super::ui::{Interrupted, Ui, human_duration};
use super::{LabArgs, OutputFormat, Step};
use crate::util::project_root;
use runtime::Worker;

/// Options of the local lab (ignored with `--azure`).
#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// How replicas run: the worker binary as processes, or the worker image as containers.
    #[arg(long, global = true, value_enum, default_value_t = Runtime::Process)]
    pub runtime: Runtime,
    /// The worker image for `--runtime docker` (built by `cargo xtask images`).
    #[arg(long, global = true, default_value = WORKER_IMAGE, value_name = "IMAGE")]
    pub image: String,
    /// The worker binary replicas run; by default it is built with cargo (`servicebus-job`).
    #[arg(long, global = true, env = "LAB_WORKER_BIN", value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,
    /// The job settings file shared with Terraform.
    #[arg(long, global = true, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Which job the replicas run: the Rust job, or the tutorial's Python job (lab/python-job).
    #[arg(long, global = true, value_enum, default_value_t = report::JobKind::Rust)]
    pub job: report::JobKind,
    /// The Python for `--job python`, with lab/python-job/requirements.txt installed [default: a
    /// virtualenv in target/venvs/python-job, made on first use].
    #[arg(long, global = true, env = "LAB_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// AMQP port of the emulator (`cargo xtask lab`: a free one; `lab up`: 5672, the emulator's usual).
    #[arg(long, global = true, env = "LAB_AMQP_PORT")]
    pub port: Option<u16>,
    /// HTTP port for /health and /queues/{name} (`lab up`: 5300; 0 picks a free one).
    #[arg(long, global = true, env = "LAB_HEALTH_PORT")]
    pub health_port: Option<u16>,
}

/// `--timeout`'s local default: the execution usually succeeds within a few seconds.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// `--polling-interval`'s local default: Container Apps' minimum, so the lab reacts at once.
const DEFAULT_POLLING_INTERVAL: Duration = Duration::from_secs(1);

/// What the local steps go by: the local flags, and the shared `LabArgs` ones with the local defaults.
#[derive(Debug, Clone)]
pub struct Options {
    flags: LocalArgs,
    timeout: Duration,
    polling_interval: Duration,
    state_dir: PathBuf,
}

/// Where replicas run.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    /// The worker binary as a child process per replica.
    Process,
    /// The worker image as a container per replica (`docker run --network host`).
    Docker,
}

/// `lab executions -o …`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    /// `NAME STATUS STARTED DURATION`.
    Table,
    /// What `az containerapp job execution list -o json` prints.
    Json,
}

pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    let local = Options {
        flags: args.local.clone(),
        timeout: args.timeout.unwrap_or(DEFAULT_TIMEOUT),
        polling_interval: args.polling_interval.unwrap_or(DEFAULT_POLLING_INTERVAL),
        state_dir: args
            .state_dir
            .clone()
            .unwrap_or_else(|| project_root().join(".lab")),
    };
    let ui = Ui::new(args.output);
    let runtime = tokio::runtime::Runtime::new().context("could not start the async runtime")?;
    if args.keep && args.step.is_none() {
        bail!(
            "--keep does not apply to the local walkthrough, which runs inside this command; \
             `cargo xtask lab up` starts a lab that keeps running (and `cargo xtask lab down` stops it)"
        );
    }
    let result = match args.step {
        None => runtime.block_on(walkthrough(&local, args.output, args.dry_run)),
        Some(Step::Up) => daemon::up(&local, &ui, args.dry_run),
        Some(Step::Serve) => runtime.block_on(daemon::serve(&local)),
        Some(Step::Send { count, ref body }) => {
            runtime.block_on(send_step(&local, &ui, count, body.as_deref()))
        }
        Some(Step::Watch) => runtime.block_on(watch_step(&local, &ui)),
        Some(Step::Executions { format }) => list_step(&local, args.output, format),
        Some(Step::Down) => daemon::down(&local, &ui),
        Some(Step::Report { compare }) => {
            report::report_step(&local.state_dir, &ui, compare).map(|()| ExitCode::SUCCESS)
        }
    };
    // The background readers of replica pipes must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

impl Options {
    fn settings_path(&self) -> PathBuf {
        self.flags
            .settings
            .clone()
            .unwrap_or_else(JobSettings::default_path)
    }

    fn settings(&self) -> anyhow::Result<JobSettings> {
        JobSettings::load(&self.settings_path())
    }

    fn state(&self) -> state::StateDir {
        state::StateDir::new(self.state_dir.clone())
    }

    /// Container Apps polls in whole seconds, at least one; so does the local controller.
    fn polling_interval(&self) -> anyhow::Result<Duration> {
        let interval = self.polling_interval;
        if interval < Duration::from_secs(1) || interval.subsec_nanos() != 0 {
            bail!(
                "--polling-interval must be whole seconds, at least 1 (Container Apps' minimum), e.g. 1s or 5s; \
                 the local default is 1s"
            );
        }
        Ok(interval)
    }

    fn plan(
        &self,
        worker: Worker,
        default_port: u16,
        default_health_port: u16,
    ) -> anyhow::Result<runtime::LabPlan> {
        let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut settings = self.settings()?;
        if matches!(worker, Worker::Python { .. }) {
            settings.job_name = python_job::job_name(&settings.job_name);
        }
        Ok(runtime::LabPlan {
            settings,
            worker,
            polling_interval: self.polling_interval()?,
            amqp: loopback(self.flags.port.unwrap_or(default_port)),
            health: loopback(self.flags.health_port.unwrap_or(default_health_port)),
        })
    }

    /// What replicas run: the image (`--runtime docker`), else the worker binary.
    fn worker(&self, ui: &Ui, dry_run: bool) -> anyhow::Result<Worker> {
        if self.flags.job == report::JobKind::Python {
            return python_job::worker(self.flags.python.as_deref(), self.flags.runtime, dry_run);
        }
        match self.flags.runtime {
            Runtime::Process => self.worker_binary(ui, dry_run).map(Worker::Binary),
            Runtime::Docker => {
                let mut inspect = Command::new("docker");
                inspect.args(["image", "inspect", "--format", "{{.Id}}", &self.flags.image]);
                let found = dry_run || inspect.output().is_ok_and(|output| output.status.success());
                if !found {
                    let image = &self.flags.image;
                    // The images task builds the default tag; another tag is that image, tagged.
                    let build = if image == WORKER_IMAGE {
                        "`cargo xtask images --only job`".to_owned()
                    } else {
                        format!(
                            "`cargo xtask images --only job && docker tag {WORKER_IMAGE} {}`",
                            crate::util::shell_quote(image)
                        )
                    };
                    bail!(
                        "the worker image {image} is not on this machine (or Docker is not running); build it \
                         with {build}, or leave out --runtime docker to run the worker as a process"
                    );
                }
                Ok(Worker::Image(self.flags.image.clone()))
            }
        }
    }

    /// The worker binary: `--worker-bin`, or built now next to this xtask binary.
    fn worker_binary(&self, ui: &Ui, dry_run: bool) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.flags.worker_bin {
            if !path.is_file() {
                bail!(
                    "the worker binary {} does not exist; build it with `cargo build -p aca-job-lab --bin servicebus-job` \
                     or leave out --worker-bin / LAB_WORKER_BIN to have the lab build it",
                    path.display()
                );
            }
            return Ok(path.clone());
        }
        build::worker(ui, dry_run)
    }
}

/// Run one step as a ✔/✘ line around an async body returning (value, message).
async fn step<T>(
    ui: &Ui,
    id: &'static str,
    title: &str,
    body: impl Future<Output = anyhow::Result<(T, String)>>,
) -> anyhow::Result<T> {
    let progress = ui.step(id, title);
    match body.await {
        Ok((value, message)) => {
            progress.ok(message);
            Ok(value)
        }
        Err(error) => Err(progress.failed(error)),
    }
}

fn header(ui: &Ui, settings: &JobSettings, worker: &Worker) {
    // Say where replicas run when it is not the default (processes of the worker binary).
    let runtime = match worker {
        // The Python job's name (`job-python`) is in the settings' summary already.
        Worker::Binary(_) | Worker::Python { .. } => String::new(),
        Worker::Image(image) => format!(" · runtime docker (image {image})"),
    };
    ui.header(&format!(
        "Lab: local · queue {} · {}{runtime}",
        settings.queue_name,
        settings.summary()
    ));
}

/// The whole walkthrough in one process.
async fn walkthrough(
    args: &Options,
    output: OutputFormat,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    // The clock of "Done in …" starts after the build: the lab itself is what takes seconds.
    let worker = args.worker(&Ui::new(output), dry_run)?;
    let ui = &Ui::new(output);
    let plan = args.plan(worker, 0, 0)?;
    if dry_run {
        ui.planned_command(
            "emulator",
            &format!("start the embedded Service Bus emulator on {}", plan.amqp),
        );
        ui.planned_command(
            "controller",
            &format!("start the jobs controller running {}", plan.worker),
        );
        return Ok(ExitCode::SUCCESS);
    }
    header(ui, &plan.settings, &plan.worker);
    let emulator = step(ui, "emulator", "Starting the Service Bus emulator", async {
        let started = std::time::Instant::now();
        let emulator = runtime::start_emulator(&plan).await?;
        let message = format!(
            "Service Bus emulator listening on {} (ready in {} ms)",
            emulator.amqp_addr(),
            started.elapsed().as_millis()
        );
        Ok((emulator, message))
    })
    .await?;
    let controller = runtime::RunningController::start(&plan, &emulator);
    ui.step("controller", "Starting the jobs controller")
        .ok(format!(
            "Jobs controller polling every {} s (settings: {})",
            plan.polling_interval.as_secs(),
            display_settings_path(&args.settings_path())
        ));

    let recorder = controller.recorder.clone();
    let outcome = tokio::select! {
        outcome = send_and_watch(args, ui, &plan, &emulator, &controller.history, &recorder) => outcome,
        _ = tokio::signal::ctrl_c() => {
            ui.interrupted("Interrupted (Ctrl-C); stopping the lab");
            Err(Interrupted.into())
        }
    };

    let queue = plan.settings.queue_name.clone();
    let teardown = ui.step("down", "Stopping the controller and the emulator");
    let controller_history = controller.history.clone();
    controller.stop().await;
    let left = emulator
        .broker()
        .counts(&queue)
        .map(|c| c.active_message_count)
        .unwrap_or(0);
    emulator.shutdown().await;
    teardown.ok(if left == 0 {
        "Stopped controller and emulator; queue drained".to_owned()
    } else {
        format!("Stopped controller and emulator; {left} message(s) were still in the queue")
    });
    // The picture of this run, whatever its outcome.
    match report::write_run(&args.state_dir, &recorder.recording(&controller_history)) {
        Ok(written) => report::announce(ui, &written),
        Err(error) => eprintln!("warning: could not draw the timeline: {error:#}"),
    }

    match outcome {
        Ok(()) => {
            ui.finish(true, "Done");
            if ui.format() == OutputFormat::Human {
                println!(
                    "Next: `cargo xtask lab up` keeps the lab running for the workshop steps (see lab/README.md)."
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) if error.is::<Interrupted>() => {
            ui.finish(false, "Interrupted");
            if ui.format() == OutputFormat::Human {
                println!(
                    "Nothing is left running: the controller, its replicas and the emulator are stopped."
                );
            }
            Err(error)
        }
        Err(error) => {
            ui.finish(false, "Failed");
            Err(error)
        }
    }
}

fn display_settings_path(path: &Path) -> String {
    path.strip_prefix(project_root())
        .map_or_else(|_| path.display().to_string(), |p| p.display().to_string())
}

async fn send_and_watch(
    args: &Options,
    ui: &Ui,
    plan: &runtime::LabPlan,
    emulator: &servicebus_emulator::Emulator,
    history: &History,
    recorder: &report::Recorder,
) -> anyhow::Result<()> {
    let existing: HashSet<String> = history.executions().into_iter().map(|e| e.name).collect();
    let since = OffsetDateTime::now_utc();
    let connection_string = emulator.connection_string();
    step(ui, "send", "Sending 1 message", async {
        let sent = send::send(&connection_string, &plan.settings.queue_name, 1, None).await?;
        recorder.send(1);
        Ok((
            (),
            format!(
                "Sent 1 message (message id {}, {} bytes)",
                sent.first_message_id, sent.bytes
            ),
        ))
    })
    .await?;
    let queue = plan.settings.queue_name.clone();
    let broker = emulator.broker().clone();
    let active = move || broker.counts(&queue).map(|c| c.active_message_count);
    let mut source = HistorySource {
        history: history.clone(),
        active: Box::new(active),
        last_active: Rc::default(),
    };
    let watch = WatchPlan {
        since,
        clock_skew: Duration::from_secs(1),
        ignore: existing,
        poll_interval: Duration::from_millis(100),
        deadline: args.timeout,
    };
    let result = wait(ui, &mut source, &watch, &args.settings_path()).await;
    // Success or not, the participant sees the executions and the log of ours.
    let name = match &result {
        Ok(execution) => Some(execution.name.clone()),
        Err(_) => latest_of_ours(&history.executions(), &watch),
    };
    let record = name.and_then(|name| history.get(&name));
    show_evidence(ui, &history.executions(), record.as_ref());
    result.map(|_| ())
}

/// The most recent execution the wait would have counted as ours.
fn latest_of_ours(executions: &[Execution], plan: &WatchPlan) -> Option<String> {
    executions
        .iter()
        .filter(|e| plan.is_ours(e))
        .max_by_key(|e| e.start_time())
        .map(|e| e.name.clone())
}

/// Wait with a live line; ✔ with the execution, or ✘ with its reason and log.
async fn wait<S: ExecutionSource + ActiveCount>(
    ui: &Ui,
    source: &mut S,
    plan: &WatchPlan,
    settings_file: &Path,
) -> anyhow::Result<Execution> {
    let progress = ui.step("watch", "Waiting for an execution");
    let last_active = source.last_active();
    let mut live = live::LiveLine::new(ui.format());
    let outcome = executions::wait_for_success(source, plan, |report| {
        live.show(&progress, last_active.get(), report.ours)
    })
    .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => return Err(progress.failed(error)),
    };
    match outcome {
        WatchOutcome::Succeeded { execution, .. } => {
            let ran = execution
                .run_time()
                .map(human_duration)
                .unwrap_or_else(|| "-".to_owned());
            // The number the workshop is about: from the send until the job had done its work.
            let after_send = execution
                .properties
                .end_time
                .and_then(|end| Duration::try_from(end - plan.since).ok())
                .map_or_else(String::new, |d| {
                    format!(" ({} after the send)", human_duration(d))
                });
            progress.ok(format!(
                "Execution {} Running → Succeeded in {ran}{after_send}",
                execution.name
            ));
            Ok(execution)
        }
        WatchOutcome::Failed { execution, .. } => {
            let reason = match execution.why() {
                why if why.is_empty() => " (no reason given)".to_owned(),
                why => why,
            };
            let error = anyhow::anyhow!(
                "execution {} ended {}{reason}; its replica log is shown with the executions",
                execution.name,
                execution.status()
            );
            Err(progress.failed(error))
        }
        WatchOutcome::DeadlineReached { waited, ours } => {
            // The queue's count makes the usual cause visible: messages waiting and nothing started
            // points at activation_message_count or the queue name.
            let queue = last_active
                .get()
                .map_or_else(|| "queue: ?".to_owned(), |n| format!("queue: {n} active"));
            let error = anyhow::anyhow!(
                "no execution succeeded within {} ({} started; {queue}); raise --timeout, or check the \
                 queue name and activation_message_count (an execution starts only with MORE messages \
                 than that) in {}",
                human_duration(waited),
                ours.len(),
                display_settings_path(settings_file)
            );
            Err(progress.failed(error))
        }
    }
}

/// The table and the replica's log lines.
fn show_evidence(ui: &Ui, executions: &[Execution], record: Option<&ExecutionRecord>) {
    if ui.format() == OutputFormat::Json {
        if let Some(record) = record {
            println!(
                "{}",
                serde_json::json!({ "event": "evidence", "executions": executions, "log": display::log_lines(record) })
            );
        }
        return;
    }
    println!();
    if executions.is_empty() {
        println!("  No execution started.");
    } else {
        for row in executions::table(executions) {
            println!("  {row}");
        }
    }
    if let Some(record) = record {
        println!("\n  replica log ({}):", record.name());
        for line in display::log_lines(record) {
            println!("    {line}");
        }
    }
    println!();
}

/// Lets the waiting line show the queue's count beside the executions.
trait ActiveCount {
    fn last_active(&self) -> Rc<Cell<Option<u64>>>;
}

/// The controller's history in this process.
struct HistorySource {
    history: History,
    active: Box<dyn Fn() -> Option<u64>>,
    last_active: Rc<Cell<Option<u64>>>,
}

impl ExecutionSource for HistorySource {
    async fn list(&mut self) -> anyhow::Result<Vec<Execution>> {
        self.last_active.set((self.active)());
        Ok(self.history.executions())
    }
}

impl ActiveCount for HistorySource {
    fn last_active(&self) -> Rc<Cell<Option<u64>>> {
        self.last_active.clone()
    }
}

/// A lab started with `lab up`: its executions file and its health endpoint.
struct StateFileSource {
    state: state::StateDir,
    metrics: super::controller::HealthEndpointMetrics,
    last_active: Rc<Cell<Option<u64>>>,
}

impl ExecutionSource for StateFileSource {
    async fn list(&mut self) -> anyhow::Result<Vec<Execution>> {
        use super::controller::QueueMetrics;
        self.last_active
            .set(self.metrics.active_message_count().await.ok());
        read_executions(&self.state)
    }
}

impl ActiveCount for StateFileSource {
    fn last_active(&self) -> Rc<Cell<Option<u64>>> {
        self.last_active.clone()
    }
}

fn read_executions(state: &state::StateDir) -> anyhow::Result<Vec<Execution>> {
    let path = state.executions_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => executions::parse_execution_list(&text)
            .with_context(|| format!("reading {}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(error).with_context(|| format!("could not read {}", path.display())),
    }
}

/// `lab send`: put messages on the running lab's queue and remember when, for `watch`.
async fn send_step(
    args: &Options,
    ui: &Ui,
    count: u32,
    body: Option<&str>,
) -> anyhow::Result<ExitCode> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let state = args.state();
    let lab = daemon::running_lab(&state)?;
    let existing = read_executions(&state)?
        .into_iter()
        .map(|e| e.name)
        .collect();
    let time = OffsetDateTime::now_utc();
    let title = format!("Sending {count} message(s) to {}", lab.queue_name);
    step(ui, "send", &title, async {
        let sent = send::send(&lab.connection_string, &lab.queue_name, count, body).await?;
        let message = if sent.count == 1 {
            format!(
                "Sent 1 message to {} (message id {}, {} bytes)",
                lab.queue_name, sent.first_message_id, sent.bytes
            )
        } else {
            format!(
                "Sent {} messages to {} ({} bytes)",
                sent.count, lab.queue_name, sent.bytes
            )
        };
        Ok(((), message))
    })
    .await?;
    state.write_last_send(&state::LastSend {
        time,
        count,
        existing,
    })?;
    report::note_send(state.path(), report::SendMark { time, count })?;
    if ui.format() == OutputFormat::Human {
        println!("Next: `cargo xtask lab watch` waits for the execution it starts.");
    }
    Ok(ExitCode::SUCCESS)
}

/// `lab watch`: wait for an execution that started after the last `send` to succeed.
async fn watch_step(args: &Options, ui: &Ui) -> anyhow::Result<ExitCode> {
    let state = args.state();
    let lab = daemon::running_lab(&state)?;
    let Some(last) = state.last_send() else {
        bail!("nothing was sent to this lab yet; run `cargo xtask lab send` first");
    };
    let mut source = StateFileSource {
        state: state.clone(),
        metrics: super::controller::HealthEndpointMetrics::new(lab.health_addr, &lab.queue_name),
        last_active: Rc::default(),
    };
    let plan = WatchPlan {
        since: last.time,
        clock_skew: Duration::from_secs(1),
        ignore: last.existing.into_iter().collect(),
        poll_interval: Duration::from_millis(250),
        deadline: args.timeout,
    };
    let result = tokio::select! {
        result = wait(ui, &mut source, &plan, &lab.settings_file) => result,
        _ = tokio::signal::ctrl_c() => {
            // The waiting line's spinner went with `wait`; say what is left running, and stop.
            ui.interrupted(
                "Stopped watching (Ctrl-C); the lab keeps running, `cargo xtask lab down` stops it",
            );
            return Err(Interrupted.into());
        }
    };
    let name = match &result {
        Ok(execution) => Some(execution.name.clone()),
        Err(_) => latest_of_ours(&read_executions(&state)?, &plan),
    };
    let record = name.and_then(|name| state.records().into_iter().find(|r| r.name() == name));
    show_evidence(ui, &read_executions(&state)?, record.as_ref());
    result.map(|_| ExitCode::SUCCESS)
}

/// `lab executions`: the running lab's executions, as a table or as az's JSON.
fn list_step(
    args: &Options,
    output: OutputFormat,
    format: Option<ListFormat>,
) -> anyhow::Result<ExitCode> {
    let state = args.state();
    state.lab()?;
    let executions = read_executions(&state)?;
    let json = match format {
        Some(ListFormat::Json) => true,
        Some(ListFormat::Table) => false,
        None => output == OutputFormat::Json,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&executions)?);
    } else if executions.is_empty() {
        println!("No executions yet; `cargo xtask lab send` puts a message on the queue.");
    } else {
        for row in executions::table(&executions) {
            println!("{row}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
