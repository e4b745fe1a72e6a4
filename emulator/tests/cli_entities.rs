//! `servicebus-emulator entities` against a running emulator: the table a person reads, the JSON a
//! script reads, and the error when nothing listens.

use assert_cmd::Command;
use servicebus_emulator::Emulator;
use servicebus_emulator::config::{Config, QueueProperties, SubscriptionConfig, TopicConfig};

async fn emulator() -> Emulator {
    let config = Config::with_queues(["queue-messages"])
        .topic(TopicConfig::new("orders").subscription(SubscriptionConfig::new("audit")));
    let emu = Emulator::builder()
        .config(config)
        .loopback()
        .start()
        .await
        .unwrap();
    // One created at run time, holding a message.
    let broker = emu.broker();
    broker
        .create_queue("made-later", QueueProperties::default())
        .unwrap();
    let q = broker.resolve("made-later").unwrap();
    let hi = servicebus_emulator::message::StoredMessage::parse(bytes::Bytes::from_static(&[
        0x00, 0x53, 0x77, 0xa1, 2, b'h', b'i',
    ]))
    .unwrap();
    broker.send(&q, hi).unwrap();
    emu
}

fn entities(args: Vec<String>) -> std::process::Output {
    Command::cargo_bin("servicebus-emulator")
        .unwrap()
        .arg("entities")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_entities_with_counts() {
    let emu = emulator().await;
    let url = format!("http://{}", emu.health_addr());
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || entities(vec!["--url".into(), url])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["KIND", "NAME", "ACTIVE", "DEAD-LETTER", "SCHEDULED"],
            vec!["queue", "made-later", "1", "0", "0"],
            vec!["queue", "queue-messages", "0", "0", "0"],
            vec!["topic", "orders", "0", "0", "0"],
            vec!["subscription", "orders/Subscriptions/audit", "0", "0", "0"],
        ],
        "{table}"
    );

    let out =
        tokio::task::spawn_blocking(move || entities(vec!["--url".into(), url, "--json".into()]))
            .await
            .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["path"], "made-later");
    assert_eq!(json[0]["activeMessageCount"], 1);
    emu.shutdown().await;
}

#[test]
fn nothing_listening_names_the_address_and_the_flag() {
    // Port 1 on loopback: nothing listens there on any machine these tests run on.
    let out = entities(vec!["--url".into(), "http://127.0.0.1:1".into()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot reach the emulator's HTTP port at 127.0.0.1:1")
            && err.contains("--url"),
        "{err}"
    );
}
