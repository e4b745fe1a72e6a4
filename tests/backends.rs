//! One end-to-end matrix: every case runs the worker *container* against each Service Bus backend
//! (`embedded`, `container`, `official`; see `tests/support/mod.rs` for how they are chosen and how an
//! absent one is reported). The test sends and inspects messages from this process with the worker's
//! own client library; the worker runs exactly as in Azure, configured by environment variables.
//!
//! Snapshots hold what the tests observe (exit codes, job summaries, processed and dead-lettered
//! messages). One snapshot serves all backends, so a backend that behaves differently fails visibly.
//!
//! Run: `cargo xtask images && cargo test --test backends` (`SERVICEBUS_BACKENDS=embedded,container` to
//! insist on those two, `embedded,container,official?` to also run Microsoft's where its images are
//! present; `TESTCONTAINERS_COMMAND=keep` keeps the containers for a look afterwards).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aca_job_lab::servicebus::{
    ConnectionConfig, PropertyValue, ServiceBusClient, ServiceBusMessage,
};
use rstest::rstest;
use serde_json::json;
use servicebus_emulator::testcontainers::{AMQP_PORT, ServiceBusEmulator, connection_string};
use support::{Backend, JobRun, QUEUE, json_messages, snapshot_settings};
use testcontainers::runners::AsyncRunner;

/// Runs a test once per backend (`case_1_embedded`, `case_2_container`, `case_3_official`), each in a
/// multi-threaded runtime: the embedded emulator serves from the test's runtime while the test waits
/// on Docker.
macro_rules! backend_matrix {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        $(#[$meta])*
        #[rstest]
        #[case::embedded(Backend::Embedded)]
        #[case::container(Backend::Container)]
        #[case::official(Backend::Official)]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name(#[case] $backend: Backend) $body
    };
}

/// Long enough for a receive on a busy CI machine, short enough that an empty queue ends the job soon.
const DRAIN_WAIT: Duration = Duration::from_secs(3);

backend_matrix! {
    /// The worker drains everything sent before it started, completes each message once, and exits 0.
    async fn worker_container_drains_the_queue_and_exits_zero(backend: Backend) {
        let Some(stack) = support::start(backend, "drains").await else {
            return;
        };
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
}

backend_matrix! {
    /// A body that claims to be JSON but is not goes to the dead-letter queue with the worker's reason;
    /// the good message beside it completes; the exit code says a message failed.
    async fn poison_message_lands_in_the_dead_letter_queue(backend: Backend) {
        let Some(stack) = support::start(backend, "poison").await else {
            return;
        };
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
}

backend_matrix! {
    /// A transient failure abandons the message; the broker delivers it again with delivery-count + 1,
    /// and the next execution completes it.
    async fn abandoned_message_is_redelivered_to_the_next_execution(backend: Backend) {
        let Some(stack) = support::start(backend, "abandon").await else {
            return;
        };
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
}

backend_matrix! {
    /// Two executions at once share the queue through peek-lock: every message is completed exactly once.
    async fn two_worker_containers_share_a_queue_without_double_completion(backend: Backend) {
        let Some(stack) = support::start(backend, "two-workers").await else {
            return;
        };
        stack.send(json_messages("order", 20)).await;

        // One message at a time each, with a little work, so both executions take part.
        let job = || {
            stack
                .job()
                .with_max_messages(0)
                .with_max_wait(DRAIN_WAIT)
                .with_arg("--prefetch", "1")
                .with_simulated_work(Duration::from_millis(100))
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
}

backend_matrix! {
    /// The emulator stops while the worker holds a message: the worker fails with a clear error naming
    /// what went wrong, and the message is accounted for. Without persistence (our emulator keeps queues in
    /// memory) the in-flight message is named in the worker's error output; with persistence (the official
    /// emulator's SQL store) it is back in the queue after the restart.
    async fn worker_fails_clearly_when_the_emulator_stops_mid_run(backend: Backend) {
        let Some(mut stack) = support::start(backend, "emulator-stops").await else {
            return;
        };
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
}

/// `with_config` replaces the Config.json baked into our image: the given queue exists and the lab's
/// queue does not. (The matrix passes the lab's own file, which would pass even if it were ignored.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_emulator_image_serves_the_config_it_is_given() {
    if !support::runnable(Backend::Container, "with-config").await {
        return;
    }
    support::ran(Backend::Container, "with-config");
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

    let mut other = ServiceBusClient::connect(&connection).await.unwrap();
    let lab_queue = match other.sender(QUEUE).await {
        Ok(mut sender) => sender.send(ServiceBusMessage::new("x")).await,
        Err(error) => Err(error),
    };
    assert!(
        lab_queue.is_err(),
        "the image's built-in queue `{QUEUE}` is still served"
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
