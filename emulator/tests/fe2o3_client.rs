//! The fe2o3-amqp client as a peer over loopback TCP: SASL PLAIN (no `$cbs` needed), senders and
//! receivers in both settle modes, multi-frame transfers both ways, the size limit, release.

mod common;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{SendError, delivery::Delivery};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use servicebus_emulator::Emulator;

const QUEUE: &str = "queue-messages";

async fn emulator() -> Emulator {
    Emulator::builder().loopback().start().await.unwrap()
}

async fn connect(emu: &Emulator, max_frame_size: u32) -> (ConnectionHandle<()>, SessionHandle<()>) {
    let mut connection = Connection::builder()
        .container_id("fe2o3-peer")
        .max_frame_size(max_frame_size)
        .sasl_profile(SaslProfile::Plain {
            username: "RootManageSharedAccessKey".into(),
            password: "SAS_KEY_VALUE".into(),
        })
        .open(format!("amqp://127.0.0.1:{}", emu.amqp_addr().port()).as_str())
        .await
        .unwrap();
    let session = Session::begin(&mut connection).await.unwrap();
    (connection, session)
}

async fn receiver(session: &mut SessionHandle<()>, name: &str, snd: SenderSettleMode) -> Receiver {
    Receiver::builder()
        .name(name)
        .source(format!("amqps://localhost/{QUEUE}"))
        .sender_settle_mode(snd)
        .receiver_settle_mode(ReceiverSettleMode::First)
        .attach(session)
        .await
        .unwrap()
}

/// An emulator whose queue holds one message with `body`, and a connection and session to it.
async fn one_message_queued(body: &str) -> (Emulator, ConnectionHandle<()>, SessionHandle<()>) {
    let emu = emulator().await;
    let (connection, mut session) = connect(&emu, 65_536).await;
    let mut sender = Sender::attach(&mut session, "s", QUEUE).await.unwrap();
    sender
        .send(Message::builder().data(Binary::from(body)).build())
        .await
        .unwrap();
    sender.close().await.unwrap();
    (emu, connection, session)
}

fn annotation(delivery: &Delivery<Body<Value>>, key: &str) -> Option<Value> {
    let annotations = delivery.message().message_annotations.as_ref()?;
    annotations
        .iter()
        .find(|(k, _)| format!("{k:?}").contains(key))
        .map(|(_, v)| v.clone())
}

fn data(delivery: &Delivery<Body<Value>>) -> Vec<u8> {
    match &delivery.message().body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
        other => panic!("expected a data body, got {other:?}"),
    }
}

#[tokio::test]
async fn send_then_peek_lock_receive_and_accept() {
    let emu = emulator().await;
    let (mut connection, mut session) = connect(&emu, 65_536).await;
    let mut sender = Sender::attach(&mut session, "sender", QUEUE).await.unwrap();
    for i in 0..3 {
        let message = Message::builder()
            .properties(Properties {
                message_id: Some(format!("m-{i}").into()),
                ..Default::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("n", SimpleValue::Int(i))
                    .build(),
            )
            .data(Binary::from(format!("body-{i}")))
            .build();
        let outcome = sender.send(message).await.unwrap();
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    }
    assert_eq!(emu.broker().counts(QUEUE).unwrap().active_message_count, 3);

    let mut receiver = receiver(&mut session, "receiver", SenderSettleMode::Unsettled).await;
    let mut sequence_numbers = Vec::new();
    for i in 0..3 {
        let delivery: Delivery<Body<Value>> = receiver.recv().await.unwrap();
        assert_eq!(
            delivery.delivery_tag().len(),
            16,
            "lock tokens are 16-byte delivery tags"
        );
        assert_eq!(data(&delivery), format!("body-{i}").into_bytes());
        let header = delivery
            .message()
            .header
            .as_ref()
            .expect("the broker writes a header");
        assert_eq!(header.delivery_count, 0);
        let props = delivery.message().application_properties.as_ref().unwrap();
        assert_eq!(props.get("n"), Some(&SimpleValue::Int(i)));
        match annotation(&delivery, "x-opt-sequence-number") {
            Some(Value::Long(n)) => sequence_numbers.push(n),
            other => panic!("x-opt-sequence-number missing or not a long: {other:?}"),
        }
        assert!(annotation(&delivery, "x-opt-locked-until").is_some());
        assert!(annotation(&delivery, "x-opt-enqueued-time").is_some());
        receiver.accept(&delivery).await.unwrap();
    }
    assert!(
        sequence_numbers.windows(2).all(|w| w[0] < w[1]),
        "{sequence_numbers:?}"
    );
    // The detach is answered after the dispositions before it were applied.
    receiver.close().await.unwrap();
    assert_eq!(emu.broker().counts(QUEUE).unwrap().active_message_count, 0);
    sender.close().await.unwrap();
    session.end().await.unwrap();
    connection.close().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn large_messages_cross_small_frames_both_ways_byte_exact() {
    let emu = emulator().await;
    // 4 KiB frames: a 200 KiB message takes about 50 frames in each direction.
    let (mut connection, mut session) = connect(&emu, 4096).await;
    let payload: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut sender = Sender::attach(&mut session, "big-sender", QUEUE)
        .await
        .unwrap();
    let outcome = sender
        .send(
            Message::builder()
                .data(Binary::from(payload.clone()))
                .build(),
        )
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)));
    let mut receiver = receiver(&mut session, "big-receiver", SenderSettleMode::Unsettled).await;
    let delivery: Delivery<Body<Value>> = receiver.recv().await.unwrap();
    assert_eq!(data(&delivery), payload);
    receiver.accept(&delivery).await.unwrap();
    receiver.close().await.unwrap();
    sender.close().await.unwrap();
    connection.close().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn messages_over_256_kib_are_refused_by_the_advertised_limit() {
    let emu = emulator().await;
    let (mut connection, mut session) = connect(&emu, 65_536).await;
    let mut sender = Sender::attach(&mut session, "too-big", QUEUE)
        .await
        .unwrap();
    let result = sender
        .send(
            Message::builder()
                .data(Binary::from(vec![0u8; 300 * 1024]))
                .build(),
        )
        .await;
    // The client enforces the max-message-size our attach reply advertises (262144); the server-side
    // check for clients that ignore it is in tests/engine.rs.
    assert!(
        matches!(result, Err(SendError::MessageSizeExceeded(_))),
        "{result:?}"
    );
    assert_eq!(emu.broker().counts(QUEUE).unwrap().active_message_count, 0);
    let _ = connection.close().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn receive_and_delete_needs_no_settlement() {
    let (emu, mut connection, mut session) = one_message_queued("gone").await;
    let mut receiver = receiver(&mut session, "rd", SenderSettleMode::Settled).await;
    let delivery: Delivery<Body<Value>> = receiver.recv().await.unwrap();
    assert_eq!(data(&delivery), b"gone");
    assert_eq!(
        emu.broker().counts(QUEUE).unwrap().active_message_count,
        0,
        "removed on delivery"
    );
    receiver.close().await.unwrap();
    connection.close().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn released_message_comes_back_without_counting_an_attempt() {
    let (emu, mut connection, mut session) = one_message_queued("boomerang").await;
    let mut receiver = receiver(&mut session, "r", SenderSettleMode::Unsettled).await;
    let first: Delivery<Body<Value>> = receiver.recv().await.unwrap();
    receiver.release(&first).await.unwrap();
    let second: Delivery<Body<Value>> = receiver.recv().await.unwrap();
    assert_eq!(data(&second), b"boomerang");
    assert_eq!(second.message().header.as_ref().unwrap().delivery_count, 0);
    assert_ne!(
        first.delivery_tag(),
        second.delivery_tag(),
        "a fresh lock token per delivery"
    );
    receiver.accept(&second).await.unwrap();
    receiver.close().await.unwrap();
    connection.close().await.unwrap();
    emu.shutdown().await;
}

/// A management request (`amqp-value` map body) for `queue-messages/$management`.
fn management_request(
    message_id: u64,
    operation: &str,
    reply_to: Option<&str>,
    body: Vec<(&str, Value)>,
) -> Message<fe2o3_amqp::types::messaging::AmqpValue<Value>> {
    use fe2o3_amqp::types::primitives::OrderedMap;
    let mut map = OrderedMap::new();
    for (k, v) in body {
        map.insert(Value::String(k.into()), v);
    }
    Message::builder()
        .properties(Properties {
            message_id: Some(fe2o3_amqp::types::messaging::MessageId::Ulong(message_id)),
            reply_to: reply_to.map(str::to_string),
            ..Default::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("operation", SimpleValue::String(operation.into()))
                .build(),
        )
        .value(Value::Map(map))
        .build()
}

async fn reply_receiver(session: &mut SessionHandle<()>, name: &str, target: &str) -> Receiver {
    Receiver::builder()
        .name(name)
        .source(format!("{QUEUE}/$management"))
        .target(target)
        .attach(session)
        .await
        .unwrap()
}

#[tokio::test]
async fn management_replies_follow_reply_to_else_the_node_response_link() {
    let emu = emulator().await;
    let (mut connection, mut session) = connect(&emu, 65_536).await;
    let mut sender = Sender::attach(&mut session, "q-sender", QUEUE)
        .await
        .unwrap();
    sender
        .send(Message::builder().data(Binary::from("peek me")).build())
        .await
        .unwrap();

    let mut requests = Sender::attach(
        &mut session,
        "mgmt-requests",
        format!("{QUEUE}/$management"),
    )
    .await
    .unwrap();
    let mut first = reply_receiver(&mut session, "replies-a", "reply-a").await;
    let mut second = reply_receiver(&mut session, "replies-b", "reply-b").await;

    // reply-to names the second link's target.
    let peek = management_request(
        7,
        "com.microsoft:peek-message",
        Some("reply-b"),
        vec![
            ("from-sequence-number", Value::Long(0)),
            ("message-count", Value::Int(10)),
        ],
    );
    assert!(matches!(
        requests.send(peek).await.unwrap(),
        Outcome::Accepted(_)
    ));
    let reply: Delivery<Body<Value>> = second.recv().await.unwrap();
    let props = reply.message().properties.as_ref().unwrap();
    assert_eq!(
        props.correlation_id,
        Some(fe2o3_amqp::types::messaging::MessageId::Ulong(7))
    );
    let app = reply.message().application_properties.as_ref().unwrap();
    assert_eq!(app.get("statusCode"), Some(&SimpleValue::Int(200)));
    assert!(app.get("statusDescription").is_some());
    let Body::Value(fe2o3_amqp::types::messaging::AmqpValue(Value::Map(body))) =
        &reply.message().body
    else {
        panic!("map body")
    };
    let Some(Value::List(messages)) = body.get(&Value::String("messages".into())) else {
        panic!("{body:?}")
    };
    assert_eq!(messages.len(), 1);

    // Without reply-to the reply goes to the node's (oldest) response link.
    let unknown = management_request(8, "com.microsoft:no-such-operation", None, vec![]);
    requests.send(unknown).await.unwrap();
    let reply: Delivery<Body<Value>> = first.recv().await.unwrap();
    let app = reply.message().application_properties.as_ref().unwrap();
    assert_eq!(app.get("statusCode"), Some(&SimpleValue::Int(501)));
    assert_eq!(
        app.get("errorCondition"),
        Some(&SimpleValue::Symbol("amqp:not-implemented".into()))
    );

    connection.close().await.unwrap();
    emu.shutdown().await;
}

/// The worker's path: SASL ANONYMOUS, then a SAS token on `$cbs` with fe2o3-amqp-cbs, then the links.
#[tokio::test]
async fn cbs_put_token_grants_access_and_a_bad_token_does_not() {
    use fe2o3_amqp::types::primitives::Timestamp;
    use fe2o3_amqp_cbs::client::CbsClient;
    use fe2o3_amqp_cbs::token::CbsToken;
    use servicebus_emulator::auth::make_token;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    let emu = emulator().await;
    let url = format!("amqp://127.0.0.1:{}", emu.amqp_addr().port());
    let audience = format!("sb://127.0.0.1:{}/{QUEUE}", emu.amqp_addr().port());
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let expires_ms = expires.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;

    for (key, allowed) in [("not-the-key", false), ("SAS_KEY_VALUE", true)] {
        let mut connection = Connection::builder()
            .container_id("cbs-peer")
            .sasl_profile(SaslProfile::Anonymous)
            .open(url.as_str())
            .await
            .unwrap();
        let mut session = Session::begin(&mut connection).await.unwrap();
        let mut cbs = CbsClient::attach(&mut session).await.unwrap();
        let token = make_token(&audience, "RootManageSharedAccessKey", key, expires);
        let put = cbs
            .put_token(
                audience.as_str(),
                CbsToken::new(
                    token,
                    "servicebus.windows.net:sastoken",
                    Timestamp::from_milliseconds(expires_ms),
                ),
            )
            .await;
        assert_eq!(put.is_ok(), allowed, "put-token with key {key}: {put:?}");
        let sender = Sender::attach(&mut session, "after-cbs", QUEUE).await;
        assert_eq!(
            sender.is_ok(),
            allowed,
            "attach after put-token with key {key}: {:?}",
            sender.as_ref().err()
        );
        let _ = connection.close().await;
    }
    emu.shutdown().await;
}

/// An emulator serving TLS, and the roots a client needs to trust it.
async fn emulator_with_tls() -> (Emulator, rustls::RootCertStore) {
    let (emu, ca) = common::emulator_with_tls().await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.certificate_der()).unwrap();
    (emu, roots)
}

/// TLS to the emulator's TLS port trusting `roots`, then AMQP inside it (as `amqps://` on 5671).
async fn tls_connect(
    emu: &Emulator,
    roots: rustls::RootCertStore,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(emu.tls_addr().unwrap()).await?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

/// Azure's production path: TLS, SASL ANONYMOUS, an Entra ID `jwt` on `$cbs`, then a link. A client
/// that does not trust the CA ends at the handshake, and the emulator keeps serving.
#[tokio::test]
async fn over_tls_a_jwt_put_token_grants_the_queue() {
    use fe2o3_amqp::types::primitives::Timestamp;
    use fe2o3_amqp_cbs::client::CbsClient;
    use fe2o3_amqp_cbs::token::CbsToken;
    use servicebus_emulator::auth::jwt::make_test_token;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    let (emu, roots) = emulator_with_tls().await;
    let untrusted = tls_connect(&emu, rustls::RootCertStore::empty()).await;
    assert!(
        untrusted
            .as_ref()
            .is_err_and(|e| e.to_string().contains("UnknownIssuer")),
        "{:?}",
        untrusted.map(|_| ())
    );

    let stream = tls_connect(&emu, roots).await.unwrap();
    let mut connection = Connection::builder()
        .container_id("tls-peer")
        .hostname("mylab.servicebus.windows.net")
        .scheme("amqp")
        .sasl_profile(SaslProfile::Anonymous)
        .open_with_stream(stream)
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = CbsClient::attach(&mut session).await.unwrap();
    let audience = format!("sb://mylab.servicebus.windows.net/{QUEUE}");
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let expires_ms = expires.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    cbs.put_token(
        audience.as_str(),
        CbsToken::new(
            make_test_token("https://servicebus.azure.net", expires),
            "jwt",
            Timestamp::from_milliseconds(expires_ms),
        ),
    )
    .await
    .unwrap();
    let mut sender = Sender::attach(&mut session, "over-tls", QUEUE)
        .await
        .unwrap();
    let outcome = sender
        .send(Message::builder().data(Binary::from("over tls")).build())
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    assert_eq!(emu.broker().counts(QUEUE).unwrap().active_message_count, 1);
    sender.close().await.unwrap();
    connection.close().await.unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn a_connection_past_max_connections_is_closed_and_a_freed_slot_is_reused() {
    let emu = Emulator::builder()
        .loopback()
        .engine_config(servicebus_emulator::amqp::EngineConfig {
            max_connections: 2,
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let (mut first, _first_session) = connect(&emu, 65_536).await;
    let (_second, _second_session) = connect(&emu, 65_536).await;
    let url = format!("amqp://127.0.0.1:{}", emu.amqp_addr().port());
    let plain = || SaslProfile::Plain {
        username: "RootManageSharedAccessKey".into(),
        password: "SAS_KEY_VALUE".into(),
    };
    let third = Connection::builder()
        .container_id("third")
        .sasl_profile(plain())
        .open(url.as_str())
        .await;
    assert!(
        third.is_err(),
        "a third connection was served past max_connections 2"
    );
    first.close().await.unwrap();
    // The slot comes back when the server has finished with the first connection.
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(connection) = Connection::builder()
            .container_id("again")
            .sasl_profile(plain())
            .open(url.as_str())
            .await
        {
            reopened = Some(connection);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut reopened = reopened.expect("a freed slot is served again");
    let mut session = Session::begin(&mut reopened).await.unwrap();
    let mut sender = Sender::attach(&mut session, "s", QUEUE).await.unwrap();
    sender
        .send(Message::builder().data(Binary::from("after")).build())
        .await
        .unwrap();
}
/// An emulator with topic `orders` and subscription `s` (`$Default` rule), for rule management.
async fn topic_emulator() -> Emulator {
    use servicebus_emulator::config::{Config, SubscriptionConfig, TopicConfig};
    let config = Config::lab_default()
        .topic(TopicConfig::new("orders").subscription(SubscriptionConfig::new("s")));
    Emulator::builder()
        .config(config)
        .loopback()
        .start()
        .await
        .unwrap()
}

/// Send one management request on `requests` and return the reply's status, error condition,
/// description and body.
async fn call(
    requests: &mut Sender,
    replies: &mut Receiver,
    id: u64,
    operation: &str,
    body: Vec<(&str, Value)>,
) -> (i32, Option<String>, String, Value) {
    let request = management_request(id, operation, Some("rule-replies"), body);
    requests.send(request).await.unwrap();
    let reply: Delivery<Body<Value>> = replies.recv().await.unwrap();
    replies.accept(&reply).await.unwrap();
    let app = reply.message().application_properties.as_ref().unwrap();
    let Some(SimpleValue::Int(status)) = app.get("statusCode") else {
        panic!("statusCode must be an int: {app:?}")
    };
    let condition = match app.get("errorCondition") {
        Some(SimpleValue::Symbol(s)) => Some(s.0.clone()),
        None => None,
        other => panic!("errorCondition must be a symbol: {other:?}"),
    };
    let description = match app.get("statusDescription") {
        Some(SimpleValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let body = match &reply.message().body {
        Body::Value(fe2o3_amqp::types::messaging::AmqpValue(v)) => v.clone(),
        _ => Value::Null,
    };
    (*status, condition, description, body)
}

fn string_map(entries: Vec<(&str, Value)>) -> Value {
    use fe2o3_amqp::types::primitives::OrderedMap;
    let mut map = OrderedMap::new();
    for (k, v) in entries {
        map.insert(Value::String(k.into()), v);
    }
    Value::Map(map)
}

/// A rule-description as .NET sends it: the unused filter key absent, `sql-rule-action` null.
fn sql_rule(expression: &str) -> Value {
    string_map(vec![
        (
            "sql-filter",
            string_map(vec![("expression", Value::String(expression.into()))]),
        ),
        ("sql-rule-action", Value::Null),
    ])
}

/// The (descriptor code, fields) of each rule in an enumerate-rules reply.
fn enumerated(body: &Value) -> Vec<(String, u64, Vec<Value>)> {
    let Value::Map(map) = body else {
        panic!("{body:?}")
    };
    let Some(Value::List(rules)) = map.get(&Value::String("rules".into())) else {
        panic!("rules must be a list: {body:?}")
    };
    rules
        .iter()
        .map(|entry| {
            let Value::Map(entry) = entry else {
                panic!("{entry:?}")
            };
            let Some(Value::Described(description)) =
                entry.get(&Value::String("rule-description".into()))
            else {
                panic!("{entry:?}")
            };
            let Value::List(fields) = &description.value else {
                panic!()
            };
            let Value::Described(filter) = &fields[0] else {
                panic!()
            };
            let code = match filter.descriptor {
                serde_amqp::descriptor::Descriptor::Code(c) => c,
                _ => panic!("numeric descriptors"),
            };
            let Value::List(filter_fields) = &filter.value else {
                panic!()
            };
            let Value::String(name) = &fields[2] else {
                panic!()
            };
            (name.clone(), code, filter_fields.clone())
        })
        .collect()
}

/// Rules managed at run time over `<topic>/Subscriptions/<sub>/$management`, as the .NET and Java
/// rule managers do it, and the routing following them.
#[tokio::test]
async fn rules_are_added_listed_and_removed_over_management() {
    let emu = topic_emulator().await;
    let (mut connection, mut session) = connect(&emu, 65_536).await;
    let node = "orders/Subscriptions/s/$management";
    let mut requests = Sender::attach(&mut session, "rule-requests", node)
        .await
        .unwrap();
    let mut replies = Receiver::builder()
        .name("rule-replies-link")
        .source(node)
        .target("rule-replies")
        .attach(&mut session)
        .await
        .unwrap();

    let (status, _, _, body) = call(
        &mut requests,
        &mut replies,
        1,
        "com.microsoft:enumerate-rules",
        vec![("top", Value::Int(i32::MAX)), ("skip", Value::Int(0))],
    )
    .await;
    assert_eq!(status, 200);
    let rules = enumerated(&body);
    assert_eq!(rules.len(), 1);
    assert_eq!(
        (rules[0].0.as_str(), rules[0].1),
        ("$Default", 0x0000_0013_7000_0007)
    );

    let add = |name: &str, description: Value| {
        vec![
            ("rule-name", Value::String(name.into())),
            ("rule-description", description),
        ]
    };
    let (status, ..) = call(
        &mut requests,
        &mut replies,
        2,
        "com.microsoft:add-rule",
        add("red", sql_rule("color = 'red'")),
    )
    .await;
    assert_eq!(status, 200);
    let (status, condition, ..) = call(
        &mut requests,
        &mut replies,
        3,
        "com.microsoft:add-rule",
        add("RED", sql_rule("1=1")),
    )
    .await;
    assert_eq!(
        (status, condition.as_deref()),
        (409, Some("com.microsoft:entity-already-exists"))
    );
    let (status, condition, description, _) = call(
        &mut requests,
        &mut replies,
        4,
        "com.microsoft:add-rule",
        add("bad", sql_rule("color = = 'red'")),
    )
    .await;
    assert_eq!(
        (status, condition.as_deref()),
        (400, Some("com.microsoft:argument-error"))
    );
    assert!(
        description.contains("syntax error at position 9"),
        "{description}"
    );
    let (status, ..) = call(
        &mut requests,
        &mut replies,
        5,
        "com.microsoft:remove-rule",
        vec![("rule-name", Value::String("$Default".into()))],
    )
    .await;
    assert_eq!(status, 200);
    let (status, condition, ..) = call(
        &mut requests,
        &mut replies,
        6,
        "com.microsoft:remove-rule",
        vec![("rule-name", Value::String("nope".into()))],
    )
    .await;
    assert_eq!(
        (status, condition.as_deref()),
        (404, Some("amqp:not-found"))
    );

    let (_, _, _, body) = call(
        &mut requests,
        &mut replies,
        7,
        "com.microsoft:enumerate-rules",
        vec![("top", Value::Int(10)), ("skip", Value::Int(0))],
    )
    .await;
    let rules = enumerated(&body);
    assert_eq!(rules.len(), 1);
    assert_eq!(
        (rules[0].0.as_str(), rules[0].1),
        ("red", 0x0000_0013_7000_0006)
    );
    assert_eq!(
        rules[0].2[0],
        Value::String("color = 'red'".into()),
        "the SQL text round-trips"
    );

    // Routing follows: only the red message reaches the subscription.
    let mut sender = Sender::attach(&mut session, "topic-sender", "orders")
        .await
        .unwrap();
    for color in ["blue", "red"] {
        let message = Message::builder()
            .application_properties(
                ApplicationProperties::builder()
                    .insert("color", SimpleValue::String(color.into()))
                    .build(),
            )
            .data(Binary::from(color))
            .build();
        sender.send(message).await.unwrap();
    }
    assert_eq!(
        emu.broker()
            .counts("orders/Subscriptions/s")
            .unwrap()
            .active_message_count,
        1
    );
    let mut receiver = Receiver::builder()
        .name("sub-receiver")
        .source("orders/Subscriptions/s")
        .attach(&mut session)
        .await
        .unwrap();
    let delivery: Delivery<Body<Value>> = receiver.recv().await.unwrap();
    assert_eq!(data(&delivery), b"red");
    receiver.accept(&delivery).await.unwrap();

    // Without rules the subscription receives nothing, and enumerate answers 204.
    let (status, ..) = call(
        &mut requests,
        &mut replies,
        8,
        "com.microsoft:remove-rule",
        vec![("rule-name", Value::String("red".into()))],
    )
    .await;
    assert_eq!(status, 200);
    let (status, ..) = call(
        &mut requests,
        &mut replies,
        9,
        "com.microsoft:enumerate-rules",
        vec![("top", Value::Int(10)), ("skip", Value::Int(0))],
    )
    .await;
    assert_eq!(status, 204);
    sender
        .send(Message::builder().data(Binary::from("lost")).build())
        .await
        .unwrap();
    assert_eq!(
        emu.broker()
            .counts("orders/Subscriptions/s")
            .unwrap()
            .active_message_count,
        0
    );

    // A correlation rule (all nine keys, nulls where unset, as .NET sends them) with an action.
    let mut corr: Vec<(&str, Value)> = [
        "correlation-id",
        "message-id",
        "to",
        "reply-to",
        "session-id",
        "reply-to-session-id",
        "content-type",
    ]
    .into_iter()
    .map(|k| (k, Value::Null))
    .collect();
    corr.push(("label", Value::String("Orders".into())));
    corr.push(("properties", string_map(vec![])));
    let description = string_map(vec![
        ("correlation-filter", string_map(corr)),
        (
            "sql-rule-action",
            string_map(vec![(
                "expression",
                Value::String("SET routed = TRUE".into()),
            )]),
        ),
    ]);
    let (status, ..) = call(
        &mut requests,
        &mut replies,
        10,
        "com.microsoft:add-rule",
        add("orders", description),
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, _, body) = call(
        &mut requests,
        &mut replies,
        11,
        "com.microsoft:enumerate-rules",
        vec![("top", Value::Int(10)), ("skip", Value::Int(0))],
    )
    .await;
    let rules = enumerated(&body);
    assert_eq!(rules[0].1, 0x0000_0013_7000_0009);
    assert_eq!(rules[0].2.len(), 9);
    assert_eq!(rules[0].2[4], Value::String("Orders".into()));
    assert!(
        matches!(rules[0].2[8], Value::Map(_)),
        "properties is a map, never null"
    );

    // Rules belong to subscriptions only (the reply comes back on the link whose target reply-to
    // names).
    let mut queue_requests =
        Sender::attach(&mut session, "q-requests", format!("{QUEUE}/$management"))
            .await
            .unwrap();
    let (status, condition, ..) = call(
        &mut queue_requests,
        &mut replies,
        12,
        "com.microsoft:enumerate-rules",
        vec![],
    )
    .await;
    assert_eq!(
        (status, condition.as_deref()),
        (400, Some("amqp:not-allowed"))
    );

    connection.close().await.unwrap();
    emu.shutdown().await;
}

// ---- sessions: the attach handshake on the wire (the Python peer tests cover the SDK's view) ----

mod sessions {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use fe2o3_amqp::types::definitions::Fields;
    use fe2o3_amqp::types::messaging::{FilterSet, Source};
    use fe2o3_amqp::types::primitives::Symbol;
    use servicebus_emulator::config::{Config, QueueProperties};

    use super::*;

    async fn session_emulator() -> Emulator {
        let config = Config::single_queue(
            QUEUE,
            QueueProperties {
                requires_session: true,
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

    /// Attach a session receiver: `id` or, with `None`, the next available session (filter value
    /// `null`), waiting at most `timeout_ms` (`com.microsoft:timeout`).
    async fn session_receiver(
        session: &mut SessionHandle<()>,
        name: &str,
        id: Option<&str>,
        timeout_ms: u32,
    ) -> Result<Receiver, String> {
        let mut filter = FilterSet::new();
        filter.insert(
            Symbol::from("com.microsoft:session-filter"),
            id.map_or(Value::Null, |s| Value::String(s.into())),
        );
        let mut properties = Fields::new();
        properties.insert(
            Symbol::from("com.microsoft:timeout"),
            Value::Uint(timeout_ms),
        );
        Receiver::builder()
            .name(name)
            .source(
                Source::builder()
                    .address(format!("amqps://localhost/{QUEUE}"))
                    .filter(filter)
                    .build(),
            )
            .properties(properties)
            .sender_settle_mode(SenderSettleMode::Unsettled)
            .receiver_settle_mode(ReceiverSettleMode::Second)
            .attach(session)
            .await
            .map_err(|e| format!("{e:?}"))
    }

    async fn send_in_session(session: &mut SessionHandle<()>, id: &str, body: &str) {
        let mut sender = Sender::attach(session, format!("s-{id}-{body}"), QUEUE)
            .await
            .unwrap();
        let message = Message::builder()
            .properties(Properties {
                group_id: Some(id.into()),
                ..Properties::default()
            })
            .data(Binary::from(body))
            .build();
        sender.send(message).await.unwrap();
        sender.close().await.unwrap();
    }

    /// fe2o3-amqp reports a refused attach (null source, then detach with the error) either with the
    /// detach's error or, when both frames arrive in one read, as `IllegalState`; the condition itself
    /// is asserted through the Python SDK's exception types in `python_sdk.rs`.
    fn assert_refused(error: &str, condition: &str) {
        assert!(
            error.contains(condition) || error == "IllegalState",
            "expected a refusal with {condition}, got {error}"
        );
    }

    fn ticks_now() -> i64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        621_355_968_000_000_000 + ms * 10_000
    }

    #[tokio::test]
    async fn next_available_waits_for_a_message_and_the_reply_carries_the_lock_in_ticks() {
        let emu = session_emulator().await;
        let (_c1, mut s1) = connect(&emu, 65_536).await;
        let (_c2, mut s2) = connect(&emu, 65_536).await;
        let waiting = tokio::spawn(async move {
            let r = session_receiver(&mut s1, "waiter", None, 10_000).await;
            (r, s1)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the attach waits for a session");
        send_in_session(&mut s2, "late", "hello").await;
        let (receiver, _s1) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("granted once a message arrived")
            .unwrap();
        let mut receiver = receiver.unwrap();
        let until = receiver.properties(|p| {
            p.as_ref()
                .and_then(|p| p.get(&Symbol::from("com.microsoft:locked-until-utc")))
                .cloned()
        });
        let Some(Value::Long(ticks)) = until else {
            panic!("locked-until-utc must be an AMQP long of .NET ticks, got {until:?}");
        };
        let ahead = Duration::from_nanos(((ticks - ticks_now()) * 100) as u64);
        assert!(
            (Duration::from_secs(55)..=Duration::from_secs(61)).contains(&ahead),
            "{ahead:?}"
        );
        let delivery: Delivery<Body<Value>> = receiver.recv().await.unwrap();
        assert_eq!(data(&delivery), b"hello");
        receiver.accept(&delivery).await.unwrap();
        // Locked by the first link: refused to another.
        let refused = session_receiver(&mut s2, "second", Some("LATE"), 1_000)
            .await
            .expect_err("a locked session is refused");
        assert_refused(&refused, "com.microsoft:session-cannot-be-locked");
        // Closing the link releases the session at once.
        receiver.close().await.unwrap();
        let again = session_receiver(&mut s2, "third", Some("late"), 1_000).await;
        assert!(again.is_ok(), "{again:?}");
        emu.shutdown().await;
    }

    #[tokio::test]
    async fn next_available_without_sessions_is_refused_with_com_microsoft_timeout() {
        let emu = session_emulator().await;
        let (_c, mut s) = connect(&emu, 65_536).await;
        let started = std::time::Instant::now();
        let refused = session_receiver(&mut s, "waiter", None, 300)
            .await
            .expect_err("no session to lock");
        assert_refused(&refused, "com.microsoft:timeout");
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A plain receiver is refused on a session queue.
        let plain = Receiver::attach(&mut s, "plain", QUEUE).await;
        let error = format!("{:?}", plain.expect_err("refused"));
        assert_refused(&error, "requires sessions");
        emu.shutdown().await;
    }

    #[tokio::test]
    async fn a_waiter_whose_connection_closed_never_takes_a_session() {
        let emu = session_emulator().await;
        let (mut c1, mut s1) = connect(&emu, 65_536).await;
        let waiting = tokio::spawn(async move {
            let _ = session_receiver(&mut s1, "ghost", None, 10_000).await;
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        waiting.abort();
        let _ = c1.close().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_c2, mut s2) = connect(&emu, 65_536).await;
        send_in_session(&mut s2, "g", "x").await;
        let mut receiver = session_receiver(&mut s2, "live", None, 2_000)
            .await
            .expect("the session was not granted to the closed connection's waiter");
        let delivery: Delivery<Body<Value>> = receiver.recv().await.unwrap();
        assert_eq!(data(&delivery), b"x");
        receiver.accept(&delivery).await.unwrap();
        emu.shutdown().await;
    }
}
