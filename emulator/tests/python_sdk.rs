//! The official Python `azure-servicebus` SDK as the peer: each test starts the emulator in-process on
//! an ephemeral port, runs one scenario of `tests/python/scenarios.py` with the official emulator
//! connection string, and asserts the JSON the scenario prints (the script asserts too).
//!
//! The interpreter comes from `ACA_LAB_PYTHON`, else `<workspace>/.venv`, which the first test creates
//! when it lacks the pinned SDK (see `aca_lab_testkit::python`). Without it these tests fail (they never
//! pass silently).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use servicebus_emulator::Emulator;
use servicebus_emulator::config::{Config, QueueProperties, SubscriptionConfig, TopicConfig};
use servicebus_emulator::filter::{CorrelationFilter, FilterValue, Rule};

const QUEUE: &str = "queue-messages";
const TOPIC: &str = "orders";

/// A config with one queue `queue-messages` and these properties.
fn config_with(properties: QueueProperties) -> Config {
    Config::single_queue(QUEUE, properties)
}

async fn start(config: Config) -> Emulator {
    Emulator::builder()
        .config(config)
        .loopback()
        .start()
        .await
        .unwrap()
}

/// Run a scenario against `emu`; returns its JSON result. Panics with the script's output on failure.
async fn scenario(emu: &Emulator, name: &str) -> Value {
    let env = [("SB_CONN", emu.connection_string())];
    python_json("scenarios.py", &[name], &env).await
}

/// Run `tests/python/<script> <args>` with `env` plus `SB_QUEUE` and `SB_TOPIC`; returns the JSON
/// object on the last line of its stdout.
async fn python_json(script: &str, args: &[&str], env: &[(&str, String)]) -> Value {
    let mut env = env.to_vec();
    env.extend([
        ("SB_QUEUE", QUEUE.to_string()),
        ("SB_TOPIC", TOPIC.to_string()),
    ]);
    common::run_script(script, args, &env).await
}

async fn run(name: &str) -> (Emulator, Value) {
    let emu = start(Config::lab_default()).await;
    let result = scenario(&emu, name).await;
    (emu, result)
}

fn counts(emu: &Emulator) -> servicebus_emulator::broker::QueueCounts {
    emu.broker().counts(QUEUE).unwrap()
}

/// The SDK as it runs in Azure: TLS (its `custom_endpoint_address` to the emulator's TLS port,
/// `connection_verify` with a throwaway CA) and a `jwt` put-token from a TokenCredential.
#[tokio::test]
async fn over_tls_with_an_entra_token() {
    use servicebus_emulator::auth::jwt::make_test_token;
    use std::time::{SystemTime, UNIX_EPOCH};

    let (emu, ca) = common::emulator_with_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.certificate_pem()).unwrap();
    let exp = SystemTime::now() + Duration::from_secs(3600);
    let exp_secs = exp.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let env = [
        ("SB_FQDN", "mylab.servicebus.windows.net".to_string()),
        (
            "SB_ENDPOINT",
            format!("sb://localhost:{}", emu.tls_addr().unwrap().port()),
        ),
        ("SB_CA_FILE", ca_file.display().to_string()),
        (
            "SB_JWT",
            // The audience Entra ID gives for the scope the SDK asks for (below): the resource with
            // its trailing slash.
            make_test_token("https://servicebus.azure.net/", exp),
        ),
        ("SB_JWT_EXP", exp_secs.to_string()),
    ];
    let r = python_json("tls_entra.py", &[], &env).await;
    assert_eq!(r["body"], "over tls with an entra token");
    // What the SDK asks Entra ID for (its JWT_TOKEN_SCOPE, with a double slash), and so an audience
    // the emulator's check must accept.
    assert_eq!(
        r["scopes"],
        serde_json::json!(["https://servicebus.azure.net//.default"])
    );
    assert_eq!(counts(&emu).active_message_count, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn send_single_list_and_batch_then_receive_and_complete() {
    let (emu, r) = run("send_receive_complete").await;
    let mut bodies: Vec<&str> = r["bodies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            "batch-0", "batch-1", "batch-2", "list-0", "list-1", "single"
        ]
    );
    assert_eq!(r["left_after_complete"], 0);
    assert_eq!(counts(&emu).active_message_count, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn abandon_redelivers_with_delivery_count_plus_one() {
    let (emu, r) = run("abandon").await;
    assert_eq!(r["first_delivery_count"], 0);
    assert_eq!(r["second_delivery_count"], 1);
    assert_eq!(r["new_lock_token"], true);
    emu.shutdown().await;
}

#[tokio::test]
async fn dead_letter_keeps_reason_and_description() {
    let (emu, r) = run("dead_letter").await;
    assert_eq!(r["body"], "poison");
    assert_eq!(r["reason"], "BadInput");
    assert_eq!(r["description"], "field x is missing");
    assert_eq!(r["left_in_queue"], 0);
    assert_eq!(
        counts(&emu).dead_letter_message_count,
        0,
        "the DLQ copy was completed"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn defer_then_receive_deferred_by_sequence_number() {
    let (emu, r) = run("defer").await;
    assert_eq!(r["deferred_body"], "later");
    assert_eq!(r["deferred_sequence_number"], r["sequence_number"]);
    assert_eq!(r["visible_to_normal_receive"], 0);
    assert_eq!(counts(&emu).active_message_count, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn peek_does_not_lock_or_remove() {
    let (emu, r) = run("peek").await;
    assert_eq!(r["peeked"], serde_json::json!(["p0", "p1", "p2"]));
    let seqs: Vec<i64> = r["peeked_sequence_numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(
        r["received_after_peek"],
        serde_json::json!(["p0", "p1", "p2"])
    );
    emu.shutdown().await;
}

/// Renewing must extend the lock on the broker, not only the `locked_until` it reports: the scenario
/// completes the message after its original lock would have expired.
#[tokio::test]
async fn renew_lock_keeps_the_message_locked_past_its_original_expiry() {
    let emu = start(config_with(QueueProperties {
        lock_duration: Duration::from_secs(4),
        max_delivery_count: 10,
        ..QueueProperties::default()
    }))
    .await;
    let r = scenario(&emu, "renew_lock").await;
    assert_eq!(r["extended"], true, "{r}");
    assert_eq!(r["completed_after_original_expiry"], true, "{r}");
    assert_eq!(r["completed_within_renewed_lock"], true, "{r}");
    assert_eq!(r["redelivered"], 0, "{r}");
    let counts = counts(&emu);
    assert_eq!(counts.active_message_count, 0, "{counts:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn schedule_and_cancel() {
    let (emu, r) = run("schedule").await;
    assert_eq!(r["sequence_numbers"].as_array().unwrap().len(), 2);
    // The cancelled one is gone; the hour-away one and the soon one show in peek.
    assert_eq!(r["peeked"], serde_json::json!(["s-keep", "s-soon"]));
    assert_eq!(r["received_before_due"], 0);
    assert_eq!(r["received_when_due"], "s-soon");
    assert_eq!(
        counts(&emu).scheduled_message_count,
        1,
        "s-keep stays scheduled"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn receive_and_delete_removes_on_delivery() {
    let (emu, r) = run("receive_and_delete").await;
    assert_eq!(r["bodies"], serde_json::json!(["rd-0", "rd-1"]));
    assert_eq!(r["left"], 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn lock_is_lost_after_lock_duration() {
    let emu = start(config_with(QueueProperties {
        lock_duration: Duration::from_secs(2),
        max_delivery_count: 10,
        ..QueueProperties::default()
    }))
    .await;
    let r = scenario(&emu, "lock_lost").await;
    assert_eq!(r["error"], "MessageLockLostError");
    assert_eq!(r["redelivered_body"], "too-slow");
    assert_eq!(r["redelivered_delivery_count"], 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn max_delivery_count_moves_to_dead_letter_queue() {
    let emu = start(config_with(QueueProperties {
        max_delivery_count: 2,
        ..QueueProperties::default()
    }))
    .await;
    let r = scenario(&emu, "max_delivery").await;
    assert_eq!(r["left_in_queue"], 0);
    assert_eq!(r["dlq_body"], "flaky");
    assert_eq!(r["reason"], "MaxDeliveryCountExceeded");
    emu.shutdown().await;
}

#[tokio::test]
async fn wrong_sas_key_is_refused() {
    let (emu, r) = run("wrong_key").await;
    let error = r["error"]
        .as_str()
        .unwrap_or_else(|| panic!("sending with a wrong key succeeded: {r}"));
    assert!(
        error.contains("Authentication") || error.contains("Unauthorized"),
        "{error}"
    );
    assert_eq!(counts(&emu).active_message_count, 0, "nothing was enqueued");
    emu.shutdown().await;
}

#[tokio::test]
async fn application_and_message_properties_round_trip() {
    let (emu, r) = run("properties").await;
    assert_eq!(
        r["application_properties"],
        serde_json::json!({"str": "text", "int": 42, "neg": -7, "float": 1.5, "bool": true})
    );
    assert_eq!(r["message_id_matches"], true);
    assert_eq!(r["correlation_id"], "corr-1");
    assert_eq!(r["subject"], "the-subject");
    assert_eq!(r["content_type"], "application/json");
    assert_eq!(r["reply_to"], "reply-queue");
    assert_eq!(r["to"], "somewhere");
    assert_eq!(r["time_to_live_seconds"], 300.0);
    assert_eq!(r["enqueued_time_set"], true);
    assert_eq!(r["body"], "with-props");
    emu.shutdown().await;
}

/// The lab queue plus topic `orders` with one subscription per routing rule the scenarios check.
fn topic_config() -> Config {
    let red = CorrelationFilter {
        label: Some("Orders".into()),
        properties: vec![("color".into(), FilterValue::String("red".into()))],
        ..Default::default()
    };
    let sub = SubscriptionConfig::new;
    Config::lab_default().topic(
        TopicConfig::new(TOPIC)
            .subscription(sub("all"))
            .subscription(sub("all2"))
            .subscription(sub("red").rules([Rule::correlation("red-orders", red).unwrap()]))
            .subscription(
                sub("sql").rules([Rule::sql(
                    "blue-orders",
                    "color = 'blue' AND sys.Label LIKE 'Ord%' AND quantity > 5",
                )
                .unwrap()]),
            )
            .subscription(sub("norules").rules([]))
            .subscription(
                sub("act").rules([Rule::sql("act-rule", "user.Color = 'red'")
                    .unwrap()
                    .with_action("SET stage = 'routed'; SET sys.Label = 'Routed'")
                    .unwrap()]),
            )
            .subscription(
                sub("fwd")
                    .rules([Rule::sql("green", "color = 'green'").unwrap()])
                    .properties(QueueProperties {
                        forward_to: Some(QUEUE.into()),
                        ..QueueProperties::default()
                    }),
            ),
    )
}

async fn run_topic(name: &str) -> (Emulator, Value) {
    let emu = start(topic_config()).await;
    let result = scenario(&emu, name).await;
    (emu, result)
}

#[tokio::test]
async fn topic_fans_out_by_rules_correlation_sql_and_action() {
    let (emu, r) = run_topic("topic_fan_out").await;
    let all = serde_json::json!(["red-order", "blue-order", "blue-other"]);
    assert_eq!(r["bodies"]["all"], all);
    assert_eq!(r["bodies"]["all2"], all);
    // every copy of a message has the topic's sequence number
    assert_eq!(r["sequence_numbers"]["all"], serde_json::json!([1, 2, 3]));
    assert_eq!(r["sequence_numbers"]["all2"], serde_json::json!([1, 2, 3]));
    assert_eq!(r["bodies"]["red"], serde_json::json!(["red-order"]));
    assert_eq!(r["bodies"]["sql"], serde_json::json!(["blue-order"]));
    assert_eq!(r["bodies"]["norules"], serde_json::json!([]));
    assert_eq!(r["bodies"]["act"], serde_json::json!(["red-order"]));
    // the action edits the act subscription's copy only
    assert_eq!(r["act_properties"]["stage"], "routed");
    assert_eq!(r["act_properties"]["RuleName"], "act-rule");
    assert_eq!(r["act_subject"], "Routed");
    assert_eq!(r["all_properties_of_red"].get("stage"), None);
    assert_eq!(r["all_subject_of_red"], "Orders");
    emu.shutdown().await;
}

#[tokio::test]
async fn topic_subscription_dead_letter_queue() {
    let (emu, r) = run_topic("topic_dead_letter").await;
    assert_eq!(r["dead"], serde_json::json!(["poison"]));
    assert_eq!(r["reason"], "BadInput");
    assert_eq!(r["description"], "no good");
    assert_eq!(r["source"], "orders/Subscriptions/all");
    assert_eq!(r["other_subscription"], serde_json::json!(["poison"]));
    emu.shutdown().await;
}

#[tokio::test]
async fn topic_scheduled_messages_reach_subscriptions_when_due_and_cancel_works() {
    let (emu, r) = run_topic("topic_schedule").await;
    assert_eq!(r["received_before_due"], 0);
    assert_eq!(r["received_when_due"], "t-soon");
    assert_eq!(r["other_subscription"], serde_json::json!(["t-soon"]));
    let counts = emu.broker().topic_counts(TOPIC).unwrap();
    assert_eq!(
        counts.scheduled_message_count, 1,
        "t-keep still scheduled, t-cancel gone"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn topic_subscription_peek_defer_and_renew() {
    let (emu, r) = run_topic("topic_peek_defer").await;
    assert_eq!(r["peeked"], serde_json::json!(["d0", "d1"]));
    assert_eq!(r["deferred"], "d0");
    assert_eq!(r["visible_while_deferred"], 0);
    assert_eq!(r["renewed"], true);
    emu.shutdown().await;
}

#[tokio::test]
async fn topic_subscription_forwards_to_a_queue() {
    let (emu, r) = run_topic("topic_forward").await;
    assert_eq!(r["queue_got"], "via-fwd");
    assert_eq!(r["left_in_forwarding_subscription"], 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn topic_errors_name_the_entity() {
    let (emu, r) = run_topic("topic_errors").await;
    let unknown = r["unknown_topic"].as_str().unwrap();
    assert!(
        unknown.contains("no-such-topic") && unknown.contains("could not be found"),
        "{unknown}"
    );
    let unknown = r["unknown_subscription"].as_str().unwrap();
    assert!(
        unknown.contains("orders/Subscriptions/no-such-sub"),
        "{unknown}"
    );
    let refused = r["send_to_subscription"].as_str().unwrap();
    assert!(
        refused.contains("a subscription cannot be sent to; send to its topic"),
        "{refused}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn official_sample_config_routes_by_its_rules() {
    let file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/official-Config.json");
    let config = Config::load(&file).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let emu = start(config).await;
    let r = scenario(&emu, "official_sample").await;
    assert_eq!(r["bodies"]["subscription.1"], serde_json::json!(["json"]));
    assert_eq!(r["bodies"]["subscription.2"], serde_json::json!(["text"]));
    assert_eq!(
        r["bodies"]["subscription.3"],
        serde_json::json!(["json", "sql", "text"])
    );
    assert_eq!(r["bodies"]["subscription.4"], serde_json::json!(["sql"]));
    assert_eq!(r["sql_to"], "Entity");
    emu.shutdown().await;
}

// ---- sessions (issue #10): `queue-messages` requires sessions; topic `orders` has a session
// subscription `sessions` and a plain one `plain` ----

fn session_config(lock_duration: Duration) -> Config {
    let sessions = QueueProperties {
        requires_session: true,
        lock_duration,
        ..QueueProperties::default()
    };
    Config::single_queue(QUEUE, sessions.clone()).topic(
        TopicConfig::new(TOPIC)
            .subscription(SubscriptionConfig::new("sessions").properties(sessions))
            .subscription(SubscriptionConfig::new("plain")),
    )
}

async fn run_sessions(name: &str) -> (Emulator, Value) {
    let emu = start(session_config(Duration::from_secs(60))).await;
    let result = scenario(&emu, name).await;
    (emu, result)
}

#[tokio::test]
async fn session_receiver_gets_only_its_session_in_order() {
    let (emu, r) = run_sessions("session_specific").await;
    assert_eq!(r["session_id"], "s1");
    assert_eq!(r["bodies"], serde_json::json!(["a1", "a2", "a3"]));
    assert_eq!(r["message_session_ids"], serde_json::json!(["s1"]));
    assert_eq!(r["sequence_numbers"], serde_json::json!([1, 3, 5]));
    // The SDK read locked-until-utc (ticks) from the attach: about LockDuration ahead.
    let left = r["lock_seconds_left"].as_f64().unwrap();
    assert!((50.0..=61.0).contains(&left), "{left}");
    // s2's messages are untouched.
    assert_eq!(counts(&emu).active_message_count, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn next_available_session_picks_sessions_with_messages_oldest_first() {
    let (emu, r) = run_sessions("session_next_available").await;
    assert_eq!(
        r["sessions"],
        serde_json::json!([["first", ["f1", "f2"]], ["second", ["s1"]]])
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn settlement_inside_a_session() {
    let (emu, r) = run_sessions("session_settlement").await;
    assert_eq!(r["peeked"], serde_json::json!(["m0", "m1", "m2", "m3"]));
    assert_eq!(r["first"], "m0");
    assert_eq!(r["redelivered"], "m0");
    assert_eq!(r["redelivered_count"], 1);
    assert_eq!(r["after_deferred"], "m2");
    assert_eq!(r["last"], "m3");
    assert_eq!(r["visible_while_deferred"], 0);
    assert_eq!(r["deferred"], "m1");
    assert_eq!(r["dead"], serde_json::json!(["m2"]));
    assert_eq!(r["dead_reason"], "Bad");
    assert_eq!(
        r["dead_session_id"], "w",
        "the session id travels with the dead letter"
    );
    assert_eq!(counts(&emu), Default::default());
    emu.shutdown().await;
}

#[tokio::test]
async fn session_state_is_binary_survives_release_and_clears_with_none() {
    let (emu, r) = run_sessions("session_state").await;
    assert_eq!(r["initial"], Value::Null);
    assert_eq!(r["read_back"], "step-1");
    assert_eq!(r["after_reopen"], "step-1");
    assert_eq!(r["listed"], serde_json::json!(["stateful"]));
    assert_eq!(r["cleared"], Value::Null);
    emu.shutdown().await;
}

#[tokio::test]
async fn list_sessions_names_the_sessions_with_messages() {
    let (emu, r) = run_sessions("session_list").await;
    assert_eq!(r["sessions"], serde_json::json!(["l1", "l2"]));
    emu.shutdown().await;
}

#[tokio::test]
async fn renew_session_lock_moves_locked_until() {
    let (emu, r) = run_sessions("session_renew").await;
    let moved = r["moved_seconds"].as_f64().unwrap();
    assert!((1.0..10.0).contains(&moved), "{moved}");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_locked_session_is_refused_to_a_second_receiver() {
    let (emu, r) = run_sessions("session_locked_elsewhere").await;
    let error = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(error.starts_with("SessionCannotBeLockedError"), "{error}");
    assert!(error.contains("busy"), "{error}");
    emu.shutdown().await;
}

#[tokio::test]
async fn session_lock_expiry_lets_another_receiver_in() {
    let emu = start(session_config(Duration::from_secs(3))).await;
    let r = scenario(&emu, "session_lock_expiry").await;
    assert_eq!(r["error"], "SessionLockLostError");
    assert_eq!(r["redelivered"], "too-slow");
    assert_eq!(
        r["redelivered_count"], 1,
        "a lapsed lock counts the attempt"
    );
    assert_eq!(counts(&emu).active_message_count, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn no_session_available_is_the_sdks_timeout_error() {
    let (emu, r) = run_sessions("session_none_available").await;
    let error = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(error.starts_with("OperationTimeoutError"), "{error}");
    // Two attempts of the 2 s wait plus the SDK's back-off: well inside the 30 s receive wait.
    let seconds = r["seconds"].as_f64().unwrap();
    assert!(seconds < 20.0, "{seconds}");
    emu.shutdown().await;
}

#[tokio::test]
async fn send_without_session_id_is_refused() {
    let (emu, r) = run_sessions("session_send_without_id").await;
    let error = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(
        error.contains("The SessionId was not set on a message"),
        "{error}"
    );
    assert_eq!(
        counts(&emu).active_message_count,
        1,
        "only the message with a session id"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn plain_receiver_on_a_session_queue_is_refused() {
    let (emu, r) = run_sessions("session_plain_receiver_refused").await;
    let error = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(error.contains("requires sessions"), "{error}");
    emu.shutdown().await;
}

#[tokio::test]
async fn sessions_on_a_topic_subscription() {
    let (emu, r) = run_sessions("session_subscription").await;
    assert_eq!(r["a"], serde_json::json!(["t-a1", "t-a2"]));
    assert_eq!(r["b"], serde_json::json!(["t-b1"]));
    assert_eq!(r["b_id"], "b");
    assert_eq!(r["dead"], serde_json::json!(["t-none"]));
    assert_eq!(r["dead_reason"], "Session id is null.");
    assert_eq!(
        r["plain"],
        serde_json::json!(["t-a1", "t-b1", "t-a2", "t-none"])
    );
    emu.shutdown().await;
}
