//! The real `servicebus-job` binary against the embedded emulator (in this test process, on
//! loopback): draining, poison messages, transient failures, lock renewal and SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use aca_job_lab::servicebus::{
    ConnectionConfig, ReceivedMessage, ServiceBusClient, ServiceBusMessage,
};
use rstest::rstest;
use servicebus_emulator::Emulator;
use servicebus_emulator::config::{Config, QueueProperties};
use tokio::io::{AsyncBufReadExt, BufReader};

const QUEUE: &str = "queue-messages";
const JOB: &str = env!("CARGO_BIN_EXE_servicebus-job");

/// An emulator with one queue, `queue-messages`, with this lock duration and max delivery count (the
/// other properties at the official emulator's defaults).
async fn emulator(lock_duration: Duration, max_delivery_count: u32) -> Emulator {
    let config = Config::single_queue(
        QUEUE,
        QueueProperties {
            lock_duration,
            max_delivery_count,
            ..QueueProperties::default()
        },
    );
    Emulator::builder()
        .config(config)
        .loopback()
        .start()
        .await
        .unwrap()
}

async fn client(emu: &Emulator) -> ServiceBusClient {
    let (config, _) = ConnectionConfig::from_connection_string(&emu.connection_string()).unwrap();
    ServiceBusClient::connect(&config).await.unwrap()
}

async fn send(emu: &Emulator, messages: Vec<ServiceBusMessage>) {
    let mut client = client(emu).await;
    let mut sender = client.sender(QUEUE).await.unwrap();
    sender.send_all(messages).await.unwrap();
    sender.close().await.unwrap();
    client.close().await.unwrap();
}

/// Takes one message from `address` with our own receiver (within 5 s) and completes it.
async fn take_one(emu: &Emulator, address: &str) -> ReceivedMessage {
    let mut client = client(emu).await;
    let mut receiver = client.receiver(address).await.unwrap();
    let message = receiver
        .receive(Duration::from_secs(5), 1)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no message available on {address}"));
    receiver.complete(&message).await.unwrap();
    receiver.close().await.unwrap();
    client.close().await.unwrap();
    message
}

fn counts(emu: &Emulator) -> (u64, u64) {
    let c = emu.broker().counts(QUEUE).unwrap();
    (c.active_message_count, c.dead_letter_message_count)
}

/// The binary with only the variables a test gives it, logging JSON lines.
fn job(emu: &Emulator) -> std::process::Command {
    let mut cmd = std::process::Command::new(JOB);
    cmd.env_clear()
        .env("SERVICEBUS_CONNECTION_STRING", emu.connection_string())
        .env("SERVICEBUS_QUEUE_NAME", QUEUE)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    cmd
}

/// Runs the binary to completion (off the runtime threads, which serve the emulator) and returns
/// its exit code and the `job finished` summary line.
async fn run(cmd: std::process::Command) -> (i32, serde_json::Value, String) {
    let mut cmd = assert_cmd::Command::from_std(cmd);
    cmd.timeout(Duration::from_secs(120));
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let summary = summary_of(&stdout).unwrap_or_else(|| {
        panic!(
            "no summary line; stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), summary, stdout)
}

fn summary_of(stdout: &str) -> Option<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "job finished")
}

#[rstest]
#[case::the_tutorials_single_message(1, &[])]
#[case::ten(10, &["--max-messages", "0", "--max-wait", "1s"])]
#[case::a_thousand(1000, &["--max-messages", "0", "--max-wait", "1s"])]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_the_queue_and_exits_0(#[case] n: usize, #[case] args: &[&str]) {
    let emu = emulator(Duration::from_secs(60), 10).await;
    let messages = (0..n)
        .map(|i| {
            ServiceBusMessage::new(format!(r#"{{"order":{i}}}"#))
                .with_message_id(format!("order-{i}"))
                .with_content_type("application/json")
        })
        .collect();
    send(&emu, messages).await;
    assert_eq!(counts(&emu), (n as u64, 0));

    let mut cmd = job(&emu);
    cmd.args(args);
    let (code, summary, _) = run(cmd).await;

    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["received"], n);
    assert_eq!(summary["completed"], n);
    assert_eq!(counts(&emu), (0, 0), "queue empty, nothing dead-lettered");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_dead_lettered_with_our_reason() {
    let emu = emulator(Duration::from_secs(60), 10).await;
    send(
        &emu,
        vec![
            ServiceBusMessage::new("{not json")
                .with_message_id("poison-1")
                .with_content_type("application/json"),
        ],
    )
    .await;

    let (code, summary, _) = run(job(&emu)).await;

    assert_eq!(
        code, 3,
        "a dead-lettered message is a processing failure: {summary}"
    );
    assert_eq!(summary["dead_lettered"], 1);
    assert_eq!(counts(&emu), (0, 1));
    let dead = take_one(&emu, &format!("{QUEUE}/$DeadLetterQueue")).await;
    assert_eq!(dead.message_id.as_deref(), Some("poison-1"));
    let reason = dead.application_properties.get("DeadLetterReason");
    assert_eq!(
        reason,
        Some(&aca_job_lab::servicebus::PropertyValue::String(
            "InvalidJson".into()
        ))
    );
    let Some(aca_job_lab::servicebus::PropertyValue::String(description)) = dead
        .application_properties
        .get("DeadLetterErrorDescription")
    else {
        panic!("no description: {:?}", dead.application_properties)
    };
    assert!(description.contains("not valid JSON"), "{description}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failure_is_redelivered_with_delivery_count_plus_one() {
    let emu = emulator(Duration::from_secs(60), 10).await;
    send(
        &emu,
        vec![
            ServiceBusMessage::new("hello")
                .with_message_id("flaky-1")
                .with_subject("fail-me"),
        ],
    )
    .await;

    let mut cmd = job(&emu);
    cmd.args(["--fail-on-subject", "fail-me"]);
    let (code, summary, stdout) = run(cmd).await;
    assert_eq!(code, 3, "{summary}");
    assert_eq!(summary["abandoned"], 1);
    assert_eq!(counts(&emu), (1, 0), "the message is back in the queue");
    let first_count = delivery_count_logged(&stdout);

    // The next run (without the failure) gets it again, one delivery later, and completes it.
    let (code, summary, stdout) = run(job(&emu)).await;
    assert_eq!(code, 0, "{summary}");
    assert_eq!(delivery_count_logged(&stdout), first_count + 1);
    assert_eq!(counts(&emu), (0, 0));
    emu.shutdown().await;
}

fn delivery_count_logged(stdout: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "processing message")
        .and_then(|v| v["delivery_count"].as_u64())
        .unwrap_or_else(|| panic!("no processing line in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_processing_keeps_its_lock_through_renew_lock() {
    // A 2 s lock and 5 s of work: without renewal the lock is lost and the message comes back.
    let emu = emulator(Duration::from_secs(2), 10).await;
    send(
        &emu,
        vec![ServiceBusMessage::new("slow").with_message_id("slow-1")],
    )
    .await;

    let mut cmd = job(&emu);
    cmd.args(["--simulate-work", "5s"]);
    let (code, summary, _) = run(cmd).await;

    assert_eq!(code, 0, "{summary}");
    assert!(summary["lock_renewals"].as_u64().unwrap() >= 2, "{summary}");
    assert_eq!(summary["completed"], 1);
    assert_eq!(summary["lock_lost"], 0);
    // Completed, not redelivered: nothing left, even after the old lock would have expired.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(counts(&emu), (0, 0));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_message_leaves_it_available_again() {
    let emu = emulator(Duration::from_secs(60), 10).await;
    send(
        &emu,
        vec![ServiceBusMessage::new("in progress").with_message_id("interrupted-1")],
    )
    .await;

    let mut cmd = tokio::process::Command::from(job(&emu));
    cmd.args(["--simulate-work", "10m"])
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let processing = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("processing message") {
                return;
            }
        }
        panic!("the job ended before processing:\n{seen}");
    });
    processing.await.expect("the job never started processing");

    // A real signal from outside, as Container Apps sends it at replica timeout.
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exit after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(143), "128 + SIGTERM:\n{rest}");
    let summary = summary_of(&rest).unwrap_or_else(|| panic!("no summary:\n{rest}"));
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["abandoned"], 1);

    // Available again now (its 1 min lock was released, not left to expire), nothing lost.
    assert_eq!(counts(&emu), (1, 0));
    let again = take_one(&emu, QUEUE).await;
    assert_eq!(again.message_id.as_deref(), Some("interrupted-1"));
    assert_eq!(again.body.as_bytes(), Some(&b"in progress"[..]));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    let emu = emulator(Duration::from_secs(60), 10).await;
    send(&emu, vec![ServiceBusMessage::new("x")]).await;
    let mut cmd = job(&emu);
    cmd.env("RUST_LOG", "trace");
    let mut cmd = assert_cmd::Command::from_std(cmd);
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(logs.contains("job finished"), "{logs}");
    // The debug line about the very token we check for is there: the filter really is open.
    assert!(logs.contains("token accepted by the broker"), "{logs}");
    for secret in ["SAS_KEY_VALUE", "SharedAccessSignature", "sig="] {
        assert!(!logs.contains(secret), "`{secret}` in the logs:\n{logs}");
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_does_not_exist_is_a_runtime_error_naming_it() {
    let emu = emulator(Duration::from_secs(60), 10).await;
    let mut cmd = job(&emu);
    cmd.env("SERVICEBUS_QUEUE_NAME", "no-such-queue")
        .env("LOG_FORMAT", "text");
    let mut cmd = assert_cmd::Command::from_std(cmd);
    cmd.timeout(Duration::from_secs(60));
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{logs}");
    assert!(logs.contains("no-such-queue"), "{logs}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_port_fails_fast_instead_of_hanging() {
    let emu = emulator(Duration::from_secs(60), 10).await;
    let (mut config, _) =
        ConnectionConfig::from_connection_string(&emu.connection_string()).unwrap();
    config.tls = true;
    aca_job_lab::servicebus::install_crypto_provider();
    let result = tokio::time::timeout(Duration::from_secs(30), ServiceBusClient::connect(&config))
        .await
        .expect("TLS against a plain AMQP port must fail, not hang");
    let error = result.expect_err("there is no TLS there").to_string();
    assert!(
        error.contains(&emu.amqp_addr().port().to_string()),
        "{error}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_connecting_stops_at_once() {
    // A peer that accepts the TCP connection and then says nothing: the AMQP handshake hangs.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut cmd = tokio::process::Command::new(JOB);
    cmd.env_clear()
        .env(
            "SERVICEBUS_CONNECTION_STRING",
            format!("Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"),
        )
        .env("SERVICEBUS_QUEUE_NAME", QUEUE)
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let (_socket, _) = tokio::time::timeout(Duration::from_secs(30), silent.accept())
        .await
        .expect("the job connects")
        .unwrap();

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the job stops")
        .unwrap();
    assert_eq!(status.code(), Some(143));
}
