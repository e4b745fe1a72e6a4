//! The backends of the end-to-end matrix (`tests/backends.rs`) and what the tests observe.
//!
//! A backend is the Service Bus the worker container talks to:
//! - `embedded`: our emulator in this test process, on 127.0.0.1; the worker container joins the host's
//!   network namespace to reach it;
//! - `container`: our emulator image (`cargo xtask images`), on a network made for the test;
//! - `official`: Microsoft's emulator image with its SQL Server sidecar, on a network made for the test.
//!
//! `SERVICEBUS_BACKENDS` (comma-separated, or `all`) chooses them. Before any case starts, [`plan`]
//! decides per backend whether its cases run, are skipped, or fail:
//! - unset, every backend whose images are present runs, and an absent one is *skipped*: its cases are
//!   reported as ignored, with the reason, in the runner's own summary;
//! - a backend named in `SERVICEBUS_BACKENDS` that cannot run *fails* its cases instead: CI names the
//!   backends it promises, so a missing image there is an error, not a quiet pass. A name ending in `?`
//!   (`official?`) is optional: it runs where its images are present and is skipped where they are not
//!   (`cargo xtask test` asks for `embedded,container,official?`);
//! - our own images older than the sources (their `aca-job-lab.source-hash` label differs from the
//!   work tree's) fail the cases that need them, naming `cargo xtask images`: a green run on yesterday's
//!   image would test yesterday's code.
//!
//! After the runner's summary, a few lines name each backend, the cases it ran and, for one that did not
//! run, why; with `ACA_LAB_BACKENDS_REPORT` set the same goes to that file for `cargo xtask test`.

#![allow(dead_code)] // each test binary uses its own part of the support code

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aca_job_lab::servicebus::{
    ConnectionConfig, ReceivedMessage, ServiceBusClient, ServiceBusMessage,
};
use aca_job_lab::testcontainers::ServiceBusJob;
use aca_lab_testkit::report::{BackendRun, BackendsReport, REPORT_ENV};
use aca_lab_testkit::sources::{EMULATOR_IMAGE, ImageSources, JOB_IMAGE, SOURCE_HASH_LABEL};
use servicebus_emulator::Emulator;
use servicebus_emulator::testcontainers::{
    AMQP_PORT, OfficialServiceBusEmulator, OfficialStack, ServiceBusEmulator, connection_string,
};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, Image, ImageExt};

/// The lab's queue; every backend serves it from `lab/servicebus/Config.json` (or the same built-in default).
pub const QUEUE: &str = "queue-messages";
/// The lab's Config.json, given to the container backends explicitly so the config path is exercised.
pub const LAB_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/servicebus/Config.json");
/// Upper bound for a worker container to finish; generous because CI shares two cores.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    Embedded,
    Container,
    Official,
}

/// An image a backend needs, and for our own images the sources it must have been built from.
struct NeededImage {
    reference: String,
    sources: Option<ImageSources>,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Embedded, Backend::Container, Backend::Official];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Container => "container",
            Backend::Official => "official",
        }
    }

    /// The images a backend needs (the worker image for all of them).
    fn images(self) -> Vec<NeededImage> {
        let ours = |reference: String, sources| NeededImage {
            reference,
            sources: Some(sources),
        };
        let theirs = |reference: String| NeededImage {
            reference,
            sources: None,
        };
        let mut images = vec![ours(descriptor(&ServiceBusJob::default()), JOB_IMAGE)];
        match self {
            Backend::Embedded => {}
            Backend::Container => {
                images.push(ours(
                    descriptor(&ServiceBusEmulator::default()),
                    EMULATOR_IMAGE,
                ));
            }
            Backend::Official => {
                images.push(theirs(descriptor(&OfficialServiceBusEmulator::default())));
                images.push(theirs(descriptor(
                    &servicebus_emulator::testcontainers::MssqlSidecar::default(),
                )));
            }
        }
        images
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so the summary's `{backend:<9}` lines up.
        f.pad(self.name())
    }
}

fn descriptor<I: Image>(image: &I) -> String {
    format!("{}:{}", image.name(), image.tag())
}

/// How `SERVICEBUS_BACKENDS` treats a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// Named: it must run; a missing image fails its cases.
    Required,
    /// Named with a trailing `?`, or the variable is unset: run it where it can run, else skip visibly.
    IfPresent,
    /// Left out of the list: skip it.
    NotSelected,
}

fn wanted(backend: Backend) -> Result<Wanted, String> {
    Ok(match requested()? {
        None => Wanted::IfPresent,
        Some(names) if names.iter().any(|n| n == backend.name()) => Wanted::Required,
        Some(names)
            if names
                .iter()
                .any(|n| n.strip_suffix('?') == Some(backend.name())) =>
        {
            Wanted::IfPresent
        }
        Some(_) => Wanted::NotSelected,
    })
}

/// What `SERVICEBUS_BACKENDS` asks for: `None` = not set (run what is present).
fn requested() -> Result<Option<Vec<String>>, String> {
    let Ok(value) = std::env::var("SERVICEBUS_BACKENDS") else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.eq_ignore_ascii_case("all") {
        return Ok(Some(
            Backend::ALL.iter().map(|b| b.name().to_string()).collect(),
        ));
    }
    let names: Vec<String> = value
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for name in &names {
        let name = name.strip_suffix('?').unwrap_or(name);
        if !Backend::ALL.iter().any(|b| b.name() == name) {
            return Err(format!(
                "SERVICEBUS_BACKENDS names `{name}`, which is not a backend: use a comma-separated list of \
                 embedded, container, official (a trailing `?` makes one optional), or `all`"
            ));
        }
    }
    Ok(Some(names))
}

/// What this run does with a backend's cases, decided once before any case starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Run,
    /// Reported as ignored, with the reason.
    Skip(String),
    /// Failed, with the reason and the fix.
    Refuse(String),
}

/// Why a backend cannot run here.
enum Unavailable {
    /// No Docker, or an image is absent: a skip unless the backend was required.
    Absent(String),
    /// One of our images was built from other sources: always a failure.
    Stale(String),
}

/// Decide what to do with each backend's cases. Asks Docker once per backend.
pub async fn plan() -> BTreeMap<Backend, Plan> {
    let mut plans = BTreeMap::new();
    for backend in Backend::ALL {
        let plan = match wanted(backend) {
            Err(error) => Plan::Refuse(error),
            Ok(Wanted::NotSelected) => Plan::Skip(format!(
                "not selected (SERVICEBUS_BACKENDS={})",
                std::env::var("SERVICEBUS_BACKENDS").unwrap_or_default()
            )),
            Ok(wanted) => match (availability(backend).await, wanted) {
                (Ok(()), _) => Plan::Run,
                (Err(Unavailable::Stale(reason)), _) => Plan::Refuse(reason),
                (Err(Unavailable::Absent(reason)), Wanted::Required) => Plan::Refuse(format!(
                    "backend `{backend}` was requested by SERVICEBUS_BACKENDS but cannot run: {reason}"
                )),
                (Err(Unavailable::Absent(reason)), _) => Plan::Skip(reason),
            },
        };
        plans.insert(backend, plan);
    }
    plans
}

/// Whether `backend` can run here: Docker answers, its images are present, ours are current.
async fn availability(backend: Backend) -> Result<(), Unavailable> {
    let docker = match testcontainers::core::client::docker_client_instance().await {
        Ok(docker) => docker,
        Err(error) => return Err(Unavailable::Absent(format!("no Docker engine: {error}"))),
    };
    if let Err(error) = docker.ping().await {
        return Err(Unavailable::Absent(format!(
            "the Docker engine does not answer: {error}"
        )));
    }
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for image in backend.images() {
        let Ok(inspect) = docker.inspect_image(&image.reference).await else {
            missing.push(image.reference);
            continue;
        };
        let Some(sources) = image.sources else {
            continue;
        };
        let root = aca_lab_testkit::workspace_root();
        let want = sources
            .hash(&root)
            .map_err(|error| Unavailable::Stale(error.to_string()))?;
        let label = inspect
            .config
            .and_then(|config| config.labels)
            .and_then(|labels| labels.get(SOURCE_HASH_LABEL).cloned());
        match label {
            Some(have) if have == want => {}
            Some(have) => stale.push(format!(
                "{} was built from other sources ({SOURCE_HASH_LABEL} {}…, work tree {}…)",
                image.reference,
                &have[..have.len().min(12)],
                &want[..12]
            )),
            None => stale.push(format!(
                "{} has no {SOURCE_HASH_LABEL} label (built before images carried one)",
                image.reference
            )),
        }
    }
    if !stale.is_empty() {
        return Err(Unavailable::Stale(format!(
            "{}; a test on it would test old code: rebuild with `cargo xtask images`",
            stale.join("; ")
        )));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let hint = if backend == Backend::Official {
        "pull them where a registry is reachable (`docker pull …`), or `docker load` a saved copy"
    } else {
        "build them with `cargo xtask images`"
    };
    Err(Unavailable::Absent(format!(
        "image(s) {} not present; {hint}",
        missing.join(", ")
    )))
}

/// Per-backend bookkeeping for the summary printed after the runner's own.
#[derive(Default)]
struct BackendLog {
    ran: Vec<&'static str>,
    skipped: Vec<&'static str>,
    reason: Option<String>,
    ready_us: Vec<u128>,
}

static LOG: Mutex<BTreeMap<Backend, BackendLog>> = Mutex::new(BTreeMap::new());

fn log(backend: Backend, update: impl FnOnce(&mut BackendLog)) {
    if let Ok(mut log) = LOG.lock() {
        update(log.entry(backend).or_default());
    }
}

/// Count `case` as run on `backend` (call as it starts: a failing case ran too).
pub fn ran(backend: Backend, case: &'static str) {
    log(backend, |l| l.ran.push(case));
}

/// Count `case` as not run on `backend`, and why.
pub fn not_run(backend: Backend, case: &'static str, reason: &str) {
    log(backend, |l| {
        l.skipped.push(case);
        l.reason = Some(reason.to_owned());
    });
}

/// The lines naming each backend, what it ran and, for one that did not run, why; also written to
/// `ACA_LAB_BACKENDS_REPORT` when that names a file. Printed after the runner's summary.
pub fn summary() -> String {
    let Ok(log) = LOG.lock() else {
        return String::new();
    };
    let mut out = String::from("\nservicebus backends:\n");
    let mut report = BackendsReport::default();
    for backend in Backend::ALL {
        let Some(entry) = log.get(&backend) else {
            continue;
        };
        if !entry.ran.is_empty() {
            let ms = |us: &u128| *us as f64 / 1000.0;
            let ready = match (entry.ready_us.iter().min(), entry.ready_us.iter().max()) {
                (Some(min), Some(max)) => {
                    format!("; start() to ready {:.1}-{:.1} ms", ms(min), ms(max))
                }
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {backend:<9} ran {} case(s){ready}\n",
                entry.ran.len()
            ));
        }
        if !entry.skipped.is_empty() {
            out.push_str(&format!(
                "  {backend:<9} did NOT run {} case(s): {}\n",
                entry.skipped.len(),
                entry.reason.as_deref().unwrap_or("absent")
            ));
        }
        report.backends.push(BackendRun {
            name: backend.name().to_owned(),
            ran: entry.ran.iter().map(|c| (*c).to_owned()).collect(),
            skipped: entry.skipped.iter().map(|c| (*c).to_owned()).collect(),
            reason: entry.reason.clone(),
        });
    }
    if let Some(path) = std::env::var_os(REPORT_ENV) {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&path, json));
        if let Err(error) = written {
            let _ = writeln!(
                out,
                "  (could not write the report to {}: {error})",
                std::path::Path::new(&path).display()
            );
        }
    }
    out
}

/// The Service Bus under test, running.
pub struct Stack {
    pub backend: Backend,
    emulator: Running,
    /// The network the worker container joins.
    network: String,
    /// The connection string as the worker container sees the emulator.
    worker_connection_string: String,
}

// One per test, never moved around: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Running {
    Embedded(Option<Emulator>, std::net::SocketAddr),
    Container(ContainerAsync<ServiceBusEmulator>),
    Official(OfficialStack),
}

/// Start `backend` (its [`Plan`] said it can run), timing how long it takes to be ready.
pub async fn start(backend: Backend) -> Stack {
    let started = Instant::now();
    let stack = Stack::start(backend).await;
    let ready = started.elapsed().as_micros();
    log(backend, |l| l.ready_us.push(ready));
    stack
}

/// A name unique to this test, for containers and networks.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

impl Stack {
    async fn start(backend: Backend) -> Stack {
        match backend {
            Backend::Embedded => {
                let emulator = Emulator::builder()
                    .loopback()
                    .start()
                    .await
                    .expect("the embedded emulator starts");
                let addr = emulator.amqp_addr();
                Stack {
                    backend,
                    worker_connection_string: emulator.connection_string(),
                    emulator: Running::Embedded(Some(emulator), addr),
                    // The emulator listens on the host's loopback only; the worker shares the host's network.
                    network: "host".into(),
                }
            }
            Backend::Container => {
                let network = unique("sb-container");
                let name = unique("servicebus-emulator");
                let emulator = ServiceBusEmulator::default()
                    .with_config(std::path::PathBuf::from(LAB_CONFIG))
                    .with_network(&network)
                    .with_container_name(&name)
                    .start()
                    .await
                    .expect("our emulator image starts and prints its ready line");
                Stack {
                    backend,
                    emulator: Running::Container(emulator),
                    worker_connection_string: connection_string(&name, 5672),
                    network,
                }
            }
            Backend::Official => {
                let stack = OfficialServiceBusEmulator::default()
                    .with_accept_eula()
                    .with_config(LAB_CONFIG)
                    .start_with_sidecar()
                    .await
                    .expect("the official emulator and its SQL sidecar start");
                let container_name = official_container_name(&stack).await;
                Stack {
                    backend,
                    network: stack.network.clone(),
                    worker_connection_string: connection_string(container_name, 5672),
                    emulator: Running::Official(stack),
                }
            }
        }
    }

    /// The connection string for clients in this test process.
    pub async fn connection_string(&self) -> String {
        match &self.emulator {
            Running::Embedded(Some(emulator), _) => emulator.connection_string(),
            Running::Embedded(None, addr) => connection_string(addr.ip(), addr.port()),
            Running::Container(container) => {
                let port = container
                    .get_host_port_ipv4(AMQP_PORT)
                    .await
                    .expect("AMQP port is mapped");
                connection_string("127.0.0.1", port)
            }
            Running::Official(stack) => stack
                .connection_string()
                .await
                .expect("AMQP port is mapped"),
        }
    }

    /// A worker container request wired to this backend: network, connection string, queue, JSON logs.
    pub fn job(&self) -> ServiceBusJob {
        ServiceBusJob::default()
            .with_connection_string(&self.worker_connection_string)
            .with_queue_name(QUEUE)
            .with_json_logs()
    }

    /// Start a worker container (it runs until the queue is drained or it fails).
    pub async fn start_job(&self, job: ServiceBusJob) -> ContainerAsync<ServiceBusJob> {
        let request: ContainerRequest<ServiceBusJob> = job.with_network(&self.network);
        request.start().await.expect("the worker container starts")
    }

    /// Start a worker container and wait for it to exit.
    pub async fn run_job(&self, job: ServiceBusJob) -> JobRun {
        let container = self.start_job(job).await;
        JobRun::wait(&container).await
    }

    /// Send messages from the test process.
    pub async fn send(&self, messages: impl IntoIterator<Item = ServiceBusMessage>) {
        let mut client = self.client().await;
        let mut sender = client.sender(QUEUE).await.expect("sender attaches");
        sender
            .send_all(messages)
            .await
            .expect("messages are accepted");
        sender.close().await.expect("sender closes");
        client.close().await.expect("connection closes");
    }

    /// Receive and complete everything in `entity` (the queue, or `<queue>/$DeadLetterQueue`).
    pub async fn drain(&self, entity: &str) -> Vec<ReceivedMessage> {
        let mut client = self.client().await;
        let mut receiver = client.receiver(entity).await.expect("receiver attaches");
        let mut messages = Vec::new();
        while let Some(message) = receiver
            .receive(Duration::from_secs(2), 10)
            .await
            .expect("receive works")
        {
            receiver.complete(&message).await.expect("complete works");
            messages.push(message);
        }
        let _ = receiver.close().await;
        let _ = client.close().await;
        messages
    }

    async fn client(&self) -> ServiceBusClient {
        let cs = self.connection_string().await;
        let (config, _) = ConnectionConfig::from_connection_string(&cs)
            .expect("a valid emulator connection string");
        ServiceBusClient::connect(&config)
            .await
            .expect("the test client connects")
    }

    /// Stop the emulator abruptly, as a crash or an eviction would.
    pub async fn stop_emulator(&mut self) {
        match &mut self.emulator {
            Running::Embedded(emulator, _) => {
                if let Some(emulator) = emulator.take() {
                    emulator.shutdown().await;
                }
            }
            Running::Container(container) => container
                .stop_with_timeout(Some(0))
                .await
                .expect("the emulator container stops"),
            Running::Official(stack) => stack
                .emulator
                .stop_with_timeout(Some(0))
                .await
                .expect("the emulator stops"),
        }
    }

    /// Start the emulator again after [`Self::stop_emulator`], at the same address.
    pub async fn restart_emulator(&mut self) {
        match &mut self.emulator {
            Running::Embedded(slot, addr) => {
                let emulator = Emulator::builder()
                    .listen(*addr)
                    .health_listen("127.0.0.1:0".parse().unwrap())
                    .start()
                    .await
                    .expect("the embedded emulator restarts on its port");
                *slot = Some(emulator);
            }
            Running::Container(container) => {
                container
                    .start()
                    .await
                    .expect("the emulator container restarts");
                wait_for_ready_line(container, 2).await;
            }
            Running::Official(stack) => {
                stack
                    .emulator
                    .start()
                    .await
                    .expect("the official emulator restarts");
                wait_for_ready_line(&stack.emulator, 2).await;
            }
        }
    }
}

/// The official emulator's container name (Docker reports it with a leading slash).
async fn official_container_name(stack: &OfficialStack) -> String {
    let docker = testcontainers::core::client::docker_client_instance()
        .await
        .expect("docker answers");
    let inspect = docker
        .inspect_container(stack.emulator.id(), None)
        .await
        .expect("inspect works");
    inspect
        .name
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string()
}

/// After a restart, wait until the ready line has been printed `times` times in the container's log
/// (Docker keeps the log across restarts).
async fn wait_for_ready_line<I: Image>(container: &ContainerAsync<I>, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut logs =
            String::from_utf8_lossy(&container.stdout_to_vec().await.unwrap_or_default())
                .into_owned();
        logs.push_str(&String::from_utf8_lossy(
            &container.stderr_to_vec().await.unwrap_or_default(),
        ));
        if logs.matches(servicebus_emulator::READY_LINE).count() >= times {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the emulator did not print its ready line again within 120 s:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a finished worker container left behind.
#[derive(Debug)]
pub struct JobRun {
    pub exit_code: i64,
    /// JSON log lines (the worker runs with `LOG_FORMAT=json`); other lines are kept as `{"raw": line}`.
    pub events: Vec<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
}

impl JobRun {
    /// Wait for the container to exit (bounded by [`JOB_TIMEOUT`]) and collect its output.
    pub async fn wait(container: &ContainerAsync<ServiceBusJob>) -> JobRun {
        let deadline = Instant::now() + JOB_TIMEOUT;
        let exit_code = loop {
            if !container.is_running().await.expect("docker answers")
                && let Some(code) = container.exit_code().await.expect("docker answers")
            {
                break code;
            }
            if Instant::now() > deadline {
                let out =
                    String::from_utf8_lossy(&container.stdout_to_vec().await.unwrap_or_default())
                        .into_owned();
                panic!(
                    "the worker container did not exit within {JOB_TIMEOUT:?}; its output so far:\n{out}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let stdout =
            String::from_utf8_lossy(&container.stdout_to_vec().await.expect("stdout")).into_owned();
        let stderr =
            String::from_utf8_lossy(&container.stderr_to_vec().await.expect("stderr")).into_owned();
        let events = parse_events(&stdout);
        JobRun {
            exit_code,
            events,
            stdout,
            stderr,
        }
    }

    /// The events whose message is `message`.
    pub fn events(&self, message: &str) -> Vec<&serde_json::Value> {
        self.events
            .iter()
            .filter(|e| e["message"] == message)
            .collect()
    }

    /// `(message_id, delivery_count)` of every message the worker started processing.
    pub fn processed(&self) -> Vec<(String, u64)> {
        self.events("processing message")
            .into_iter()
            .map(|e| {
                (
                    e["message_id"].as_str().unwrap_or_default().to_string(),
                    e["delivery_count"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    }

    /// The `job finished` summary without its timings.
    pub fn summary(&self) -> serde_json::Value {
        let Some(event) = self.events("job finished").into_iter().next() else {
            return serde_json::Value::Null;
        };
        let keep = [
            "received",
            "completed",
            "abandoned",
            "dead_lettered",
            "settle_failures",
            "interrupted",
        ];
        keep.iter()
            .map(|k| (k.to_string(), event[*k].clone()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// Everything it printed, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "exit code {}\n--- stdout\n{}--- stderr\n{}",
            self.exit_code, self.stdout, self.stderr
        )
    }
}

fn parse_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| serde_json::json!({ "raw": line }))
        })
        .collect()
}

/// Filters for what varies between runs and backends: ids, addresses, times, container names.
pub fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.add_filter(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[uuid]",
    );
    settings.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
        "[time]",
    );
    settings.add_filter(
        r"(127\.0\.0\.1|localhost|servicebus-emulator-[0-9a-f]{32}):\d+",
        "[emulator]",
    );
    settings.add_filter(r"servicebus-emulator-[0-9a-f]{32}", "[emulator]");
    settings
}

/// `count` JSON messages with ids `{prefix}-01`, `{prefix}-02`, …
pub fn json_messages(prefix: &str, count: usize) -> Vec<ServiceBusMessage> {
    (1..=count)
        .map(|n| {
            ServiceBusMessage::new(format!(r#"{{"order":{n}}}"#))
                .with_message_id(format!("{prefix}-{n:02}"))
                .with_content_type("application/json")
        })
        .collect()
}
