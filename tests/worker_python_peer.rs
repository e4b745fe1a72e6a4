//! The Python `azure-servicebus` SDK as a peer of our client, both ways, through the embedded
//! emulator: what Python sends, the job reads with every property; what our sender sends, Python
//! reads with every property.

use std::process::Command;

use aca_job_lab::servicebus::{ConnectionConfig, ServiceBusClient, ServiceBusMessage};
use servicebus_emulator::Emulator;
use servicebus_emulator::config::Config;

const QUEUE: &str = "queue-messages";

/// `ACA_LAB_PYTHON`, else the workspace's `.venv`, created on first use (see `aca_lab_testkit::python`).
fn python() -> std::path::PathBuf {
    aca_lab_testkit::python::peer()
}

/// Runs a Python snippet with `argv[1]` = connection string, `argv[2]` = queue; returns stdout.
async fn python_run(script: &'static str, connection_string: String) -> String {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .args(["-c", script, &connection_string, QUEUE])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e})", python().display()))
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn emulator() -> Emulator {
    Emulator::builder()
        .config(Config::with_queues([QUEUE]))
        .loopback()
        .start()
        .await
        .unwrap()
}

const PYTHON_SEND: &str = r#"
import sys
from azure.servicebus import ServiceBusClient, ServiceBusMessage
with ServiceBusClient.from_connection_string(sys.argv[1]) as client:
    with client.get_queue_sender(sys.argv[2]) as sender:
        sender.send_messages(ServiceBusMessage('{"order": 42}', content_type='application/json',
            correlation_id='corr-1', subject='order-created', message_id='py-1',
            application_properties={'tenant': 'contoso', 'attempt': 7}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_reads_what_the_python_sdk_sends() {
    let emu = emulator().await;
    python_run(PYTHON_SEND, emu.connection_string()).await;

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_servicebus-job"));
    cmd.env_clear()
        .env("SERVICEBUS_CONNECTION_STRING", emu.connection_string())
        .env("SERVICEBUS_QUEUE_NAME", QUEUE)
        .env("LOG_FORMAT", "json");
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let line: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "processing message")
        .unwrap_or_else(|| panic!("no processing line:\n{stdout}"));
    assert_eq!(line["message_id"], "py-1");
    assert_eq!(line["content_type"], "application/json");
    assert_eq!(line["correlation_id"], "corr-1");
    assert_eq!(line["subject"], "order-created");
    assert_eq!(line["delivery_count"], 0);
    assert_eq!(line["body_bytes"], 13);
    assert!(line["sequence_number"].as_i64().is_some(), "{line}");
    assert!(
        line["enqueued_time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );
    let properties: serde_json::Value =
        serde_json::from_str(line["application_properties"].as_str().unwrap()).unwrap();
    assert_eq!(
        properties,
        serde_json::json!({"tenant": "contoso", "attempt": 7})
    );
    assert_eq!(emu.broker().counts(QUEUE).unwrap().active_message_count, 0);
    emu.shutdown().await;
}

const PYTHON_RECEIVE: &str = r#"
import sys, json
from azure.servicebus import ServiceBusClient
with ServiceBusClient.from_connection_string(sys.argv[1]) as client:
    with client.get_queue_receiver(sys.argv[2], max_wait_time=10) as receiver:
        m = receiver.receive_messages(max_message_count=1, max_wait_time=10)[0]
        props = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                 for k, v in (m.application_properties or {}).items()}
        print(json.dumps({'body': str(m), 'message_id': m.message_id, 'content_type': m.content_type,
            'correlation_id': m.correlation_id, 'subject': m.subject, 'properties': props}))
        receiver.complete_message(m)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_reads_what_our_sender_sends() {
    let emu = emulator().await;
    let (config, _) = ConnectionConfig::from_connection_string(&emu.connection_string()).unwrap();
    let mut client = ServiceBusClient::connect(&config).await.unwrap();
    let mut sender = client.sender(QUEUE).await.unwrap();
    sender
        .send(
            ServiceBusMessage::new(r#"{"order": 43}"#)
                .with_message_id("rs-1")
                .with_content_type("application/json")
                .with_correlation_id("corr-2")
                .with_subject("order-updated")
                .with_application_property("tenant", "fabrikam")
                .with_application_property("attempt", 2i64),
        )
        .await
        .unwrap();
    sender.close().await.unwrap();
    client.close().await.unwrap();

    let out = python_run(PYTHON_RECEIVE, emu.connection_string()).await;
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        seen,
        serde_json::json!({"body": r#"{"order": 43}"#, "message_id": "rs-1", "content_type": "application/json",
            "correlation_id": "corr-2", "subject": "order-updated", "properties": {"tenant": "fabrikam", "attempt": 2}})
    );
    assert_eq!(emu.broker().counts(QUEUE).unwrap().active_message_count, 0);
    emu.shutdown().await;
}
