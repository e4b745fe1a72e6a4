//! The backends of the end-to-end matrix (`tests/backends.rs`) and what the tests observe.
//!
//! A backend is the Service Bus the worker container talks to:
//! - `embedded`: our emulator in this test process, on 127.0.0.1; the worker container joins the host's
//!   network namespace to reach it;
//! - `container`: our emulator image (`cargo xtask images`), on a network made for the test;
//! - `official`: Microsoft's emulator image with its SQL Server sidecar, on a network made for the test.
//!
//! `SERVICEBUS_BACKENDS` (comma-separated, or `all`) chooses them. Unset, every backend whose images
//! are present runs, and an absent one is skipped *visibly*: a `SKIPPED` line at once, and a summary
//! after cargo's own result line naming each backend, the cases it ran and, for an absent one, why.
//! A backend named in `SERVICEBUS_BACKENDS` that cannot run fails the test instead: CI names the
//! backends it promises, so a missing image there is an error, not a quiet pass. A name ending in `?`
//! (`official?`) is optional: it runs where its images are present and is skipped, with the reason,
//! where they are not (`cargo xtask test` asks for `embedded,container,official?`).

#![allow(dead_code)] // each test binary uses its own part of the support code

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use aca_job_lab::servicebus::{
    ConnectionConfig, ReceivedMessage, ServiceBusClient, ServiceBusMessage,
};
use aca_job_lab::testcontainers::ServiceBusJob;
use servicebus_emulator::Emulator;
use servicebus_emulator::testcontainers::{
    AMQP_PORT, OfficialServiceBusEmulator, OfficialStack, ServiceBusEmulator, connection_string,
};
use testcontainers::bollard::Docker;
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
    fn images(self) -> Vec<String> {
        let mut images = vec![descriptor(&ServiceBusJob::default())];
        match self {
            Backend::Embedded => {}
            Backend::Container => images.push(descriptor(&ServiceBusEmulator::default())),
            Backend::Official => {
                images.push(descriptor(&OfficialServiceBusEmulator::default()));
                images.push(descriptor(
                    &servicebus_emulator::testcontainers::MssqlSidecar::default(),
                ));
            }
        }
        images
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn descriptor<I: Image>(image: &I) -> String {
    format!("{}:{}", image.name(), image.tag())
}

/// How `SERVICEBUS_BACKENDS` treats a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// Named: it must run; a missing image fails the test.
    Required,
    /// Named with a trailing `?`, or the variable is unset: run it where it can run, else skip visibly.
    IfPresent,
    /// Left out of the list: skip it.
    NotSelected,
}

fn wanted(backend: Backend) -> Wanted {
    match requested() {
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
    }
}

/// What `SERVICEBUS_BACKENDS` asks for: `None` = not set (run what is present).
fn requested() -> Option<Vec<String>> {
    let value = std::env::var("SERVICEBUS_BACKENDS").ok()?;
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.eq_ignore_ascii_case("all") {
        return Some(Backend::ALL.iter().map(|b| b.name().to_string()).collect());
    }
    let names: Vec<String> = value
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for name in &names {
        let name = name.strip_suffix('?').unwrap_or(name);
        assert!(
            Backend::ALL.iter().any(|b| b.name() == name),
            "SERVICEBUS_BACKENDS names `{name}`, which is not a backend: use a comma-separated list of embedded, container, official (a trailing `?` makes one optional), or `all`"
        );
    }
    Some(names)
}

/// Why a backend cannot run here, or `Ok` when it can.
async fn availability(backend: Backend) -> Result<(), String> {
    let docker = match testcontainers::core::client::docker_client_instance().await {
        Ok(docker) => docker,
        Err(error) => return Err(format!("no Docker engine: {error}")),
    };
    if let Err(error) = docker.ping().await {
        return Err(format!("the Docker engine does not answer: {error}"));
    }
    let missing = missing_images(&docker, &backend.images()).await;
    if missing.is_empty() {
        Ok(())
    } else {
        let hint = if backend == Backend::Official {
            "pull them where a registry is reachable (`docker pull …`), or `docker load` a saved copy"
        } else {
            "build them with `cargo xtask images`"
        };
        Err(format!(
            "image(s) {} not present; {hint}",
            missing.join(", ")
        ))
    }
}

async fn missing_images(docker: &Docker, images: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    for image in images {
        if docker.inspect_image(image).await.is_err() {
            missing.push(image.clone());
        }
    }
    missing
}

/// Per-backend bookkeeping for the summary printed when the test binary exits.
#[derive(Default)]
struct BackendReport {
    ran: Vec<&'static str>,
    skipped: Vec<&'static str>,
    reason: Option<String>,
    ready_us: Vec<u128>,
}

static REPORT: Mutex<BTreeMap<Backend, BackendReport>> = Mutex::new(BTreeMap::new());
static SUMMARY: Once = Once::new();

unsafe extern "C" {
    // libc's atexit: the summary must come after libtest's own result line, which is printed after the
    // last test ends, so it cannot be a test itself.
    fn atexit(callback: extern "C" fn()) -> i32;
}

extern "C" fn print_summary() {
    let Ok(report) = REPORT.lock() else { return };
    let mut out = String::from("\nservicebus backends:\n");
    for backend in Backend::ALL {
        let Some(entry) = report.get(&backend) else {
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
                "  {backend:<9} SKIPPED {} case(s) ({}): {}\n",
                entry.skipped.len(),
                entry.skipped.join(", "),
                entry.reason.as_deref().unwrap_or("absent")
            ));
        }
    }
    // Straight to the process's stderr: libtest captures only the print macros, and this must be seen.
    let _ = std::io::stderr().write_all(out.as_bytes());
}

fn record(backend: Backend, update: impl FnOnce(&mut BackendReport)) {
    SUMMARY.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` with no captured state.
        unsafe {
            atexit(print_summary);
        }
    });
    if let Ok(mut report) = REPORT.lock() {
        update(report.entry(backend).or_default());
    }
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

/// Start `backend` for `case`, or report it absent and return `None` (the case then returns early).
/// Panics when `SERVICEBUS_BACKENDS` asked for this backend and it cannot run.
pub async fn start(backend: Backend, case: &'static str) -> Option<Stack> {
    if !runnable(backend, case).await {
        return None;
    }
    let started = Instant::now();
    let stack = Stack::start(backend).await;
    let ready = started.elapsed().as_micros();
    record(backend, |r| {
        r.ran.push(case);
        r.ready_us.push(ready);
    });
    Some(stack)
}

/// Count `case` as run on `backend`, for a test that starts its own containers after [`runnable`].
pub fn ran(backend: Backend, case: &'static str) {
    record(backend, |r| r.ran.push(case));
}

/// Whether `backend` can run `case` here; when not, says why (and panics when it was requested).
pub async fn runnable(backend: Backend, case: &'static str) -> bool {
    let skip = match wanted(backend) {
        Wanted::NotSelected => Some(format!(
            "not selected (SERVICEBUS_BACKENDS={})",
            requested().unwrap_or_default().join(",")
        )),
        Wanted::Required => {
            if let Err(reason) = availability(backend).await {
                panic!(
                    "backend `{backend}` was requested by SERVICEBUS_BACKENDS but cannot run: {reason}"
                );
            }
            None
        }
        Wanted::IfPresent => availability(backend).await.err(),
    };
    if let Some(reason) = skip {
        let _ = writeln!(std::io::stderr(), "SKIPPED {case} on {backend}: {reason}");
        record(backend, |r| {
            r.skipped.push(case);
            r.reason = Some(reason);
        });
        return false;
    }
    true
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
