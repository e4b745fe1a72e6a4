//! The administration API with the official Python SDK's `ServiceBusAdministrationClient` as the peer
//! (`tests/python/admin_scenarios.py`): every scenario manages entities over HTTP, then proves over
//! AMQP that the setting took effect. The interpreter comes from `ACA_LAB_PYTHON`, else
//! `<workspace>/.venv/bin/python` (created by `cargo xtask test`); without one these tests fail.

mod common;

use serde_json::{Value, json};
use servicebus_emulator::Emulator;
use servicebus_emulator::broker::EntityKind;
use servicebus_emulator::config::Config;

/// Start an emulator with the lab's Config.json (queue `queue-messages`), run one scenario, return its
/// JSON. Panics with the script's output on failure.
async fn run(name: &str) -> (Emulator, Value) {
    let emu = Emulator::builder()
        .config(Config::lab_default())
        .loopback()
        .start()
        .await
        .unwrap();
    let value = common::run_scenario(
        "admin_scenarios.py",
        name,
        &[
            ("SB_CONN", emu.connection_string()),
            ("SB_ADMIN_CONN", emu.admin_connection_string()),
        ],
    )
    .await;
    (emu, value)
}

#[tokio::test]
async fn created_queue_takes_its_max_delivery_count_then_updates_conflicts_and_deletes() {
    let (emu, r) = run("queue_lifecycle").await;
    // MaxDeliveryCount 2: two deliveries, then the dead-letter queue.
    assert_eq!(r["deliveries"], 2);
    assert_eq!(r["reason"], "MaxDeliveryCountExceeded");
    assert_eq!(r["dead_letter_count_after_complete"], 0);
    assert!(r["conflict"].as_str().unwrap().contains("409"), "{r}");
    assert_eq!(r["updated_max_delivery_count"], 5);
    assert_eq!(r["updated_lock_seconds"], 10.0);
    assert_eq!(r["missing"], true);
    assert_eq!(r["delete_missing"], true);
    assert!(
        r["send_after_delete"]
            .as_str()
            .unwrap()
            .contains("amqp:not-found"),
        "{r}"
    );
    assert!(emu.broker().entity_info("fresh").is_none());
    emu.shutdown().await;
}

#[tokio::test]
async fn runtime_properties_count_what_amqp_did() {
    let (emu, r) = run("runtime_properties").await;
    assert_eq!(
        r,
        json!({"active": 2, "dead_letter": 1, "scheduled": 1, "total": 4, "transfer": 0,
               "created_is_recent": true, "listed_active": 2})
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn lists_page_in_name_order() {
    let (emu, r) = run("list_paging").await;
    assert_eq!(
        r["pages"],
        json!([["p-a", "p-b"], ["p-c", "p-d"], ["p-e", "queue-messages"]])
    );
    assert_eq!(
        r["all"],
        json!(["p-a", "p-b", "p-c", "p-d", "p-e", "queue-messages"])
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn topics_subscriptions_sql_and_correlation_rules_route_messages() {
    let (emu, r) = run("topics_and_rules").await;
    assert_eq!(r["topic_ttl_minutes"], 30.0);
    assert_eq!(
        r["got"],
        json!({"all": ["b", "r", "u"], "red": ["r"], "red_handled": "yes", "urgent": ["u"], "none": [],
               "red_after_update": ["b2"], "red_dead_lettered": ["b2"]})
    );
    assert_eq!(r["rules"], json!(["is-red"]));
    assert_eq!(r["sql"], "color = 'red'");
    assert_eq!(r["action"], "SET handled = 'yes'");
    assert_eq!(r["prio_label"], "alert");
    assert_eq!(r["prio_properties"], json!({"priority": 2}));
    assert!(
        r["bad_sql"].as_str().unwrap().contains("position 9"),
        "an invalid SQL filter names its position: {r}"
    );
    assert_eq!(r["subscription_count"], 4);
    assert_eq!(r["subscriptions"], json!(["all", "none", "red", "urgent"]));
    assert_eq!(r["sub_missing"], true);
    assert_eq!(r["topic_missing"], true);
    assert_eq!(
        emu.broker().list_entities(EntityKind::Topic, None).unwrap(),
        []
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn forward_to_set_at_creation_moves_messages() {
    let (emu, r) = run("forwarding").await;
    assert_eq!(r["forwarded"], json!(["hop"]));
    assert!(
        r["forward_to"].as_str().unwrap().ends_with("/fwd-target"),
        "{r}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn duplicate_detection_and_expiry_to_the_dead_letter_queue_take_effect() {
    let (emu, r) = run("dedup_and_expiry").await;
    assert_eq!(
        r,
        json!({"requires_duplicate_detection": true, "dead_lettering_on_message_expiration": true,
               "ttl_seconds": 2.0, "active_after_duplicate_send": 1, "expired_to_dlq": ["once"],
               "reason": "TTLExpiredException"})
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn wrong_key_is_401() {
    let (emu, r) = run("wrong_key").await;
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("Unauthorized") && error.contains("401"),
        "{error}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn namespace_properties_and_configured_entities() {
    let (emu, r) = run("namespace").await;
    assert_eq!(
        r,
        json!({"name": "sbemulatorns", "sku": "Standard", "configured_queue": "queue-messages"})
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn receivers_on_a_deleted_queue_are_detached_with_not_found() {
    let (emu, r) = run("receiver_on_deleted_queue").await;
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("amqp:not-found") && error.contains("deleted"),
        "{error}"
    );
    emu.shutdown().await;
}
