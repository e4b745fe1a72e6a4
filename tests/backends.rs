//! One end-to-end matrix: every case runs the worker *container* against each Service Bus backend
//! (`embedded`, `container`, `official`; see `tests/support/mod.rs` for how they are chosen and how an
//! absent one is reported). The test sends and inspects messages from this process with the worker's
//! own client library; the worker runs exactly as in Azure, configured by environment variables.
//!
//! Snapshots hold what the tests observe (exit codes, job summaries, processed and dead-lettered
//! messages). One snapshot serves all backends, so a backend that behaves differently fails visibly.
//!
//! This file has its own `main` (`harness = false`, with libtest-mimic): whether a backend can run is
//! known only when the binary starts (Docker, images), and libtest can mark a case ignored only at
//! compile time, so a case that returned early used to count as passed. Here a case whose backend is
//! absent is reported `ignored (<reason>)` and counted as ignored in the summary line; the command line
//! is libtest's (filters, `--list`, `--test-threads`, `--nocapture`). Cases are named
//! `<backend>::<case>`, so `cargo test --test backends -- container::` runs one backend.
//!
//! Run: `cargo xtask images && cargo test --test backends` (`SERVICEBUS_BACKENDS=embedded,container` to
//! insist on those two, `embedded,container,official?` to also run Microsoft's where its images are
//! present; `TESTCONTAINERS_COMMAND=keep` keeps the containers for a look afterwards).

mod support;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aca_job_lab::servicebus::{
    ConnectionConfig, PropertyValue, ServiceBusClient, ServiceBusError, ServiceBusMessage,
};
use aca_job_lab::testcontainers::ServiceBusJob;
use libtest_mimic::{Arguments, Completion, Trial};
use serde_json::json;
use servicebus_emulator::Emulator;
use servicebus_emulator::admin::client::AdminClient;
use servicebus_emulator::auth::{EMULATOR_KEY, EMULATOR_RULE};
use servicebus_emulator::config::Config;
use servicebus_emulator::testcontainers::{
    AMQP_PORT, HEALTH_PORT, ServiceBusEmulator, connection_string,
};
use support::{Backend, JobRun, Plan, QUEUE, json_messages, snapshot_settings};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, ImageExt};

type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A case: its name, the backends it runs on, and its body.
struct Case {
    name: &'static str,
    backends: &'static [Backend],
    body: fn(Backend) -> CaseFuture,
}

/// A [`Case`] named after its function, so a filter on the name finds the code.
macro_rules! case {
    ($body:ident on $backends:expr) => {
        Case {
            name: stringify!($body),
            backends: $backends,
            body: |backend| Box::pin($body(backend)),
        }
    };
}

fn cases() -> Vec<Case> {
    vec![
        case!(worker_container_drains_the_queue_and_exits_zero on &Backend::ALL),
        case!(poison_message_lands_in_the_dead_letter_queue on &Backend::ALL),
        case!(abandoned_message_is_redelivered_to_the_next_execution on &Backend::ALL),
        case!(two_worker_containers_share_a_queue_without_double_completion on &Backend::ALL),
        case!(worker_fails_clearly_when_the_emulator_stops_mid_run on &Backend::ALL),
        case!(our_emulator_image_serves_the_config_it_is_given on &[Backend::Container]),
        case!(our_emulator_image_keeps_messages_on_a_volume_across_docker_kill on &[Backend::Container]),
        case!(a_queue_created_through_the_admin_api_is_drained_by_the_worker on &[Backend::Embedded, Backend::Container]),
    ]
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    // Docker is asked once, before any case starts; `--list` needs no answer.
    let plans = if args.list {
        Default::default()
    } else {
        runtime().block_on(support::plan())
    };
    let trials = cases()
        .into_iter()
        .flat_map(|case| {
            case.backends
                .iter()
                .map(|backend| {
                    let plan = plans.get(backend).cloned().unwrap_or(Plan::Run);
                    trial(*backend, &case, plan)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if !args.list {
        eprint!("{}", support::summary());
    }
    conclusion.exit_code()
}

fn trial(backend: Backend, case: &Case, plan: Plan) -> Trial {
    let (name, body) = (case.name, case.body);
    Trial::ignorable_test(format!("{backend}::{name}"), move || match plan {
        Plan::Skip(reason) => {
            support::not_run(backend, name, &reason);
            Ok(Completion::ignored_with(reason))
        }
        Plan::Refuse(reason) => {
            support::not_run(backend, name, &reason);
            Err(reason.into())
        }
        Plan::Run => {
            support::ran(backend, name);
            runtime().block_on(body(backend));
            Ok(Completion::Completed)
        }
    })
}

/// A multi-threaded runtime per case: the embedded emulator serves from it while the case waits on
/// Docker.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Long enough for a receive on a busy CI machine, short enough that an empty queue ends the job soon.
const DRAIN_WAIT: Duration = Duration::from_secs(3);

/// The worker drains everything sent before it started, completes each message once, and exits 0.
async fn worker_container_drains_the_queue_and_exits_zero(backend: Backend) {
    let stack = support::start(backend).await;
    stack.send(json_messages("order", 5)).await;

    let run = stack
        .run_job(stack.job().with_max_messages(0).with_max_wait(DRAIN_WAIT))
        .await;

    assert_eq!(run.exit_code, 0, "{}", run.output());
    let left = stack.drain(QUEUE).await;
    let mut processed = run.processed();
    processed.sort();
    snapshot_settings().bind(|| {
        insta::assert_json_snapshot!(
            "drains",
            json!({ "exit_code": run.exit_code, "processed": processed, "summary": run.summary(), "left_in_queue": left.len() })
        )
    });
}

/// A body that claims to be JSON but is not goes to the dead-letter queue with the worker's reason;
/// the good message beside it completes; the exit code says a message failed.
async fn poison_message_lands_in_the_dead_letter_queue(backend: Backend) {
    let stack = support::start(backend).await;
    let poison = ServiceBusMessage::new("{not json")
        .with_message_id("poison-01")
        .with_content_type("application/json");
    stack
        .send([poison].into_iter().chain(json_messages("good", 1)))
        .await;

    let run = stack
        .run_job(stack.job().with_max_messages(0).with_max_wait(DRAIN_WAIT))
        .await;

    let dead = stack.drain(&format!("{QUEUE}/$DeadLetterQueue")).await;
    let left = stack.drain(QUEUE).await;
    assert_eq!(dead.len(), 1, "{}", run.output());
    let dead_letters: Vec<_> = dead
        .iter()
        .map(|m| {
            json!({
                "message_id": m.message_id,
                "reason": property(&m.application_properties, "DeadLetterReason"),
                "description": property(&m.application_properties, "DeadLetterErrorDescription"),
                "body": String::from_utf8_lossy(m.body.as_bytes().unwrap_or_default()),
            })
        })
        .collect();
    snapshot_settings().bind(|| {
        insta::assert_json_snapshot!(
            "poison",
            json!({ "exit_code": run.exit_code, "summary": run.summary(), "dead_letters": dead_letters, "left_in_queue": left.len() })
        )
    });
}

/// A transient failure abandons the message; the broker delivers it again with delivery-count + 1,
/// and the next execution completes it.
async fn abandoned_message_is_redelivered_to_the_next_execution(backend: Backend) {
    let stack = support::start(backend).await;
    let flaky = ServiceBusMessage::new(r#"{"order":1}"#)
        .with_message_id("flaky-01")
        .with_subject("flaky")
        .with_content_type("application/json");
    stack.send([flaky]).await;

    let failing = stack
        .run_job(
            stack
                .job()
                .with_max_messages(1)
                .with_fail_on_subject("flaky"),
        )
        .await;
    let retry = stack
        .run_job(stack.job().with_max_messages(0).with_max_wait(DRAIN_WAIT))
        .await;

    assert_eq!(retry.exit_code, 0, "{}", retry.output());
    let left = stack.drain(QUEUE).await;
    snapshot_settings().bind(|| {
        insta::assert_json_snapshot!(
            "abandon",
            json!({
                "first": { "exit_code": failing.exit_code, "processed": failing.processed(), "summary": failing.summary() },
                "retry": { "exit_code": retry.exit_code, "processed": retry.processed(), "summary": retry.summary() },
                "left_in_queue": left.len(),
            })
        )
    });
}

/// Two executions at once share the queue through peek-lock: every message is completed exactly once.
async fn two_worker_containers_share_a_queue_without_double_completion(backend: Backend) {
    let stack = support::start(backend).await;
    stack.send(json_messages("order", 20)).await;

    // One message at a time each, with enough work (20 × 300 ms = 6 s for one worker alone) that the
    // second container is up before the first could drain the queue by itself.
    let job = || {
        stack
            .job()
            .with_max_messages(0)
            .with_max_wait(DRAIN_WAIT)
            .with_arg("--prefetch", "1")
            .with_simulated_work(Duration::from_millis(300))
    };
    let (a, b) = tokio::join!(stack.start_job(job()), stack.start_job(job()));
    let (a, b) = tokio::join!(JobRun::wait(&a), JobRun::wait(&b));

    let left = stack.drain(QUEUE).await;
    let mut all: Vec<String> = a
        .processed()
        .into_iter()
        .chain(b.processed())
        .map(|(id, _)| id)
        .collect();
    all.sort();
    let distinct: BTreeSet<&String> = all.iter().collect();
    let duplicates: Vec<&String> = all
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| &w[0])
        .collect();
    let completed = a.summary()["completed"].as_u64().unwrap_or(0)
        + b.summary()["completed"].as_u64().unwrap_or(0);
    assert!(
        duplicates.is_empty(),
        "processed twice: {duplicates:?}\n{}\n{}",
        a.output(),
        b.output()
    );
    // Sharing means both took part: a broker that handed everything to one receiver would pass the
    // checks above.
    assert!(
        !a.processed().is_empty() && !b.processed().is_empty(),
        "one worker got nothing ({} and {} processed):\n{}\n{}",
        a.processed().len(),
        b.processed().len(),
        a.output(),
        b.output()
    );
    snapshot_settings().bind(|| {
        insta::assert_json_snapshot!(
            "two_workers",
            json!({
                "exit_codes": [a.exit_code, b.exit_code],
                "completed_total": completed,
                "distinct_processed": distinct.len(),
                "duplicates": duplicates,
                "left_in_queue": left.len(),
            })
        )
    });
}

/// The emulator stops while the worker holds a message: the worker fails with a clear error naming
/// what went wrong, and the message is accounted for. Without persistence (our emulator keeps queues in
/// memory) the in-flight message is named in the worker's error output; with persistence (the official
/// emulator's SQL store) it is back in the queue after the restart.
async fn worker_fails_clearly_when_the_emulator_stops_mid_run(backend: Backend) {
    let mut stack = support::start(backend).await;
    stack.send(json_messages("inflight", 1)).await;

    let worker = stack
        .start_job(
            stack
                .job()
                .with_max_messages(0)
                .with_max_wait(DRAIN_WAIT)
                .with_simulated_work(Duration::from_secs(5)),
        )
        .await;
    wait_until_processing(&worker).await;
    stack.stop_emulator().await;
    let run = JobRun::wait(&worker).await;
    stack.restart_emulator().await;
    let back_in_queue: Vec<String> = stack
        .drain(QUEUE)
        .await
        .into_iter()
        .filter_map(|m| m.message_id)
        .collect();

    assert_ne!(run.exit_code, 0, "{}", run.output());
    let errors: Vec<&serde_json::Value> = run
        .events
        .iter()
        .filter(|e| e["level"] == "ERROR" || e["level"] == "WARN")
        .collect();
    let named = errors.iter().any(|e| e["message_id"] == "inflight-01");
    assert!(
        named || back_in_queue.iter().any(|id| id == "inflight-01"),
        "the in-flight message is neither named in the worker's errors nor back in the queue:\n{}",
        run.output()
    );
    let last_error = errors
        .iter()
        .rev()
        .find(|e| e["level"] == "ERROR")
        .map(|e| json!({ "message": e["message"], "error": e["error"] }));
    // Our emulator keeps queues in memory, so both of its backends must tell the same story; the official
    // one persists to SQL and is held to the assertions above only.
    if backend != Backend::Official {
        snapshot_settings().bind(|| {
            insta::assert_json_snapshot!(
                "emulator_stops",
                json!({
                    "exit_code": run.exit_code,
                    "in_flight_named_in_errors": named,
                    "last_error": last_error,
                    "back_in_queue_after_restart": back_in_queue,
                })
            )
        });
    }
}

/// `with_config` replaces the Config.json baked into our image: the given queue exists and the lab's
/// queue does not. (The matrix passes the lab's own file, which would pass even if it were ignored.)
async fn our_emulator_image_serves_the_config_it_is_given(_backend: Backend) {
    let lab = std::fs::read_to_string(support::LAB_CONFIG).unwrap();
    let config = lab.replace(QUEUE, "custom-queue");
    let emulator = ServiceBusEmulator::default()
        .with_config(config.into_bytes())
        .start()
        .await
        .expect("our emulator image starts with the given config");
    let port = emulator.get_host_port_ipv4(AMQP_PORT).await.unwrap();
    let (connection, _) =
        ConnectionConfig::from_connection_string(&connection_string("127.0.0.1", port)).unwrap();

    let mut client = ServiceBusClient::connect(&connection).await.unwrap();
    let mut sender = client.sender("custom-queue").await.unwrap();
    sender
        .send(ServiceBusMessage::new("hello").with_message_id("custom-01"))
        .await
        .unwrap();
    let mut receiver = client.receiver("custom-queue").await.unwrap();
    let received = receiver
        .receive(Duration::from_secs(5), 1)
        .await
        .unwrap()
        .expect("the message comes back");
    receiver.complete(&received).await.unwrap();
    assert_eq!(received.message_id.as_deref(), Some("custom-01"));

    // Not any error: the broker must refuse the link because the queue does not exist (a refused
    // token or a dropped connection would pass a bare `is_err`).
    let mut other = ServiceBusClient::connect(&connection).await.unwrap();
    match other.sender(QUEUE).await {
        Err(ServiceBusError::Attach { address, reason }) => {
            assert_eq!(address, QUEUE);
            // fe2o3 shows the condition as `AmqpError(NotFound)`; the wire symbol is `amqp:not-found`.
            assert!(
                reason.contains("NotFound") || reason.contains("amqp:not-found"),
                "attaching to `{QUEUE}` failed, but not as not-found: {reason}"
            );
        }
        Err(other) => panic!("attaching to `{QUEUE}` failed, but not as not-found: {other}"),
        Ok(_) => panic!("the image's built-in queue `{QUEUE}` is still served"),
    }
}

/// `with_data_dir`: messages sent to one container are there in the next one on the same volume, even
/// after `docker kill` (SIGKILL); one completed before the kill stays gone.
async fn our_emulator_image_keeps_messages_on_a_volume_across_docker_kill(_backend: Backend) {
    let volume = format!("sb-data-{}", uuid::Uuid::new_v4().simple());
    let start = || async {
        let emulator = ServiceBusEmulator::default()
            .with_data_dir(volume.clone())
            .start()
            .await
            .expect("our emulator image starts on a data volume");
        let port = emulator.get_host_port_ipv4(AMQP_PORT).await.unwrap();
        let (connection, _) =
            ConnectionConfig::from_connection_string(&connection_string("127.0.0.1", port))
                .unwrap();
        (
            emulator,
            ServiceBusClient::connect(&connection).await.unwrap(),
        )
    };

    let (first, mut client) = start().await;
    let mut sender = client.sender(QUEUE).await.unwrap();
    for id in ["kept-1", "kept-2", "done-3"] {
        sender
            .send(ServiceBusMessage::new(id).with_message_id(id))
            .await
            .unwrap();
    }
    let mut receiver = client.receiver(QUEUE).await.unwrap();
    let mut done = None;
    for _ in 0..3 {
        let m = receiver
            .receive(Duration::from_secs(5), 3)
            .await
            .unwrap()
            .expect("all three arrive");
        if m.message_id.as_deref() == Some("done-3") {
            done = Some(m);
        }
    }
    receiver
        .complete(&done.expect("done-3 arrives"))
        .await
        .unwrap();
    let killed = std::process::Command::new("docker")
        .args(["kill", "--signal", "KILL", first.id()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(client);
    drop(first);

    let (second, mut client) = start().await;
    let mut receiver = client.receiver(QUEUE).await.unwrap();
    let mut ids = BTreeSet::new();
    while let Some(m) = receiver.receive(Duration::from_secs(3), 10).await.unwrap() {
        ids.extend(m.message_id.clone());
    }
    drop(client);
    drop(second);
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", "-f", &volume])
        .status();
    assert_eq!(
        ids,
        BTreeSet::from(["kept-1".to_string(), "kept-2".to_string()])
    );
}

/// Wait until the worker has logged that it is processing a message (it holds the lock from then on).
async fn wait_until_processing(
    worker: &testcontainers::ContainerAsync<aca_job_lab::testcontainers::ServiceBusJob>,
) {
    let deadline = Instant::now() + support::JOB_TIMEOUT;
    loop {
        let out =
            String::from_utf8_lossy(&worker.stdout_to_vec().await.unwrap_or_default()).into_owned();
        if out.contains("processing message") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never started processing:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn property(
    properties: &std::collections::BTreeMap<String, PropertyValue>,
    name: &str,
) -> Option<String> {
    properties.get(name).map(|value| match value {
        PropertyValue::String(text) => text.clone(),
        other => format!("{other:?}"),
    })
}

const EMPTY_CONFIG: &str =
    r#"{"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": [], "Topics": []}]}}"#;

/// Entities made at run time, end to end: the emulator under test starts with no entities at all, the
/// test creates its own queue through the administration API (the HTTP port, as
/// `ServiceBusAdministrationClient` would), sends to it, and the worker container drains it.
///
/// The emulator under test with no entities, and how each party reaches it.
struct Empty {
    _embedded: Option<Emulator>,
    _container: Option<ContainerAsync<ServiceBusEmulator>>,
    /// `host:port` of the HTTP port, from this process.
    admin: String,
    /// AMQP, from this process.
    connection_string: String,
    /// AMQP, from the worker container, and the network it joins.
    worker_connection_string: String,
    network: String,
}

async fn start_empty(backend: Backend) -> Empty {
    let config = Config::from_json_str(EMPTY_CONFIG).expect("an empty namespace is a valid config");
    match backend {
        Backend::Embedded => {
            let emulator = Emulator::builder()
                .config(config)
                .loopback()
                .start()
                .await
                .unwrap();
            Empty {
                admin: emulator.health_addr().to_string(),
                connection_string: emulator.connection_string(),
                worker_connection_string: emulator.connection_string(),
                // Loopback only: the worker shares the host's network.
                network: "host".into(),
                _embedded: Some(emulator),
                _container: None,
            }
        }
        Backend::Container | Backend::Official => {
            let network = support::unique("sb-admin");
            let name = support::unique("servicebus-emulator");
            let container = ServiceBusEmulator::default()
                .with_config(EMPTY_CONFIG.as_bytes().to_vec())
                .with_network(&network)
                .with_container_name(&name)
                .start()
                .await
                .expect("our emulator image starts with an empty namespace");
            let http = container.get_host_port_ipv4(HEALTH_PORT).await.unwrap();
            let amqp = container.get_host_port_ipv4(AMQP_PORT).await.unwrap();
            Empty {
                admin: format!("127.0.0.1:{http}"),
                connection_string: connection_string("127.0.0.1", amqp),
                worker_connection_string: connection_string(&name, 5672),
                network,
                _embedded: None,
                _container: Some(container),
            }
        }
    }
}

async fn a_queue_created_through_the_admin_api_is_drained_by_the_worker(backend: Backend) {
    let stack = start_empty(backend).await;
    let admin = AdminClient::new(&stack.admin, EMULATOR_RULE, EMULATOR_KEY);
    // An image built before the administration API would answer 404 here; the harness refuses such
    // an image before any case runs (its source-hash label differs from the work tree's).
    assert_eq!(
        admin.list().await.unwrap(),
        [],
        "the namespace starts empty"
    );
    let queue = "made-by-the-test";
    admin
        .create_queue(queue)
        .await
        .expect("the queue is created");

    let (connection, _) =
        ConnectionConfig::from_connection_string(&stack.connection_string).unwrap();
    let mut client = ServiceBusClient::connect(&connection).await.unwrap();
    let mut sender = client
        .sender(queue)
        .await
        .expect("the new queue takes senders at once");
    sender.send_all(json_messages("made", 3)).await.unwrap();
    sender.close().await.unwrap();
    client.close().await.unwrap();

    let job = ServiceBusJob::default()
        .with_connection_string(&stack.worker_connection_string)
        .with_queue_name(queue)
        .with_json_logs()
        .with_max_messages(0)
        .with_max_wait(Duration::from_secs(3));
    let request: ContainerRequest<ServiceBusJob> = job.with_network(&stack.network);
    let container = request.start().await.expect("the worker container starts");
    let run = JobRun::wait(&container).await;
    assert_eq!(run.exit_code, 0, "{}", run.output());
    assert_eq!(run.processed().len(), 3, "{}", run.output());
    let rows = admin.list().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].path, queue);
    assert_eq!(rows[0].active_message_count, 0, "drained");
}
