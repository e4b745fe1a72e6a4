//! The fe2o3-amqp client as a peer over loopback TCP: SASL PLAIN (no `$cbs` needed), senders and
//! receivers in both settle modes, multi-frame transfers both ways, the size limit, release.

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
