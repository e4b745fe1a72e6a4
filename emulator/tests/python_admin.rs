//! The administration API with the official Python SDK's `ServiceBusAdministrationClient` as the peer
//! (`tests/python/admin_scenarios.py`): every scenario manages entities over HTTP, then proves over
//! AMQP that the setting took effect. The interpreter comes from `ACA_LAB_PYTHON`, else
//! `<workspace>/.venv/bin/python` (created by `cargo xtask test`); without one these tests fail.
//!
//! The `https_*` tests run both clients as an app runs them against Azure: one connection string or
//! credential naming the namespace, the admin client on `https://{namespace}:443` (the emulator's
//! HTTPS listener) and the AMQP client on `amqps://{namespace}:5671` (its TLS listener), the name
//! mapped to loopback inside the Python process only (`tests/python/loopback_hosts`).

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

/// The namespace the apps name; the certificate is for it and the Python process maps it to loopback.
const NAMESPACE: &str = "sb-lab.servicebus.windows.net";

/// An emulator with AMQP over TLS and HTTPS, both with a certificate for [`NAMESPACE`] from a CA made
/// for this test; runs one `https_*` scenario with the name mapped to their ports, returns its JSON.
async fn run_https(name: &str) -> (Emulator, Value) {
    use servicebus_emulator::auth::jwt::make_test_token;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    let ca = servicebus_emulator::tls::TestCa::new().unwrap();
    let identity = ca.issue(&[NAMESPACE]).unwrap().identity().unwrap();
    let loopback = "127.0.0.1:0".parse().unwrap();
    let emu = Emulator::builder()
        .config(Config::lab_default())
        .loopback()
        .tls(loopback, identity.clone())
        .https(loopback, identity)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.certificate_pem()).unwrap();
    let hosts = format!(
        "{NAMESPACE}:443=127.0.0.1:{},{NAMESPACE}:5671=127.0.0.1:{}",
        emu.https_addr().unwrap().port(),
        emu.tls_addr().unwrap().port()
    );
    let shim = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/loopback_hosts");
    let exp = SystemTime::now() + Duration::from_secs(3600);
    let value = common::run_scenario(
        "admin_scenarios.py",
        name,
        &[
            ("SB_CONN", emu.connection_string()),
            ("SB_ADMIN_CONN", emu.admin_connection_string()),
            // What an app has for Azure: no port, no UseDevelopmentEmulator.
            (
                "SB_TLS_CONN",
                format!(
                    "Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName={};SharedAccessKey={}",
                    servicebus_emulator::auth::EMULATOR_RULE,
                    servicebus_emulator::auth::EMULATOR_KEY
                ),
            ),
            ("SB_FQDN", NAMESPACE.to_string()),
            ("SB_CA_FILE", ca_file.display().to_string()),
            (
                "SB_JWT",
                make_test_token("https://servicebus.azure.net/", exp),
            ),
            (
                "SB_JWT_OTHER_SERVICE",
                make_test_token("https://storage.azure.com/", exp),
            ),
            (
                "SB_JWT_EXP",
                exp.duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    .to_string(),
            ),
            ("PYTHONPATH", shim.display().to_string()),
            ("ACA_LAB_HOSTS", hosts),
        ],
    )
    .await;
    (emu, value)
}

/// `from_connection_string` with the AMQP client's connection string, no base-URL patch: the admin
/// client reaches the HTTPS listener and creates a queue the AMQP client then uses.
#[tokio::test]
async fn https_admin_client_from_the_amqp_connection_string_creates_a_queue() {
    let (emu, r) = run_https("https_connection_string").await;
    assert_eq!(r["max_delivery_count"], 3);
    assert_eq!(r["listed"], json!(["made-over-https", "queue-messages"]));
    assert_eq!(r["got"], "created over https");
    assert_eq!(
        emu.broker()
            .counts("made-over-https")
            .unwrap()
            .active_message_count,
        0
    );
    emu.shutdown().await;
}

/// A TokenCredential for both clients: the admin client sends `Bearer <jwt>` (also as the forwarding
/// target's supplementary token) and is let in; a token for another service gets 401.
#[tokio::test]
async fn https_admin_client_with_an_entra_credential_creates_queues() {
    let (emu, r) = run_https("https_entra").await;
    assert_eq!(r["got"], "created with an entra token");
    assert!(
        r["forward_to"]
            .as_str()
            .unwrap()
            .ends_with("/made-with-entra"),
        "{r}"
    );
    assert_eq!(r["forwarded"], json!(["forwarded"]));
    assert_eq!(
        r["scopes"],
        json!(["https://servicebus.azure.net//.default"])
    );
    let refused = r["refused"].as_str().unwrap();
    assert!(
        refused.contains("401") && refused.contains("https://storage.azure.com/"),
        "{refused}"
    );
    emu.shutdown().await;
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
