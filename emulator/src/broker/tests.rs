//! State-machine tests of the broker core, with tokio's clock paused so expiry is deterministic.

use std::time::Duration;

use bytes::Bytes;
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp_types::messaging::{
    AmqpValue, Body, Header, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Symbol, Value};
use tokio::time::advance;

use super::*;
use crate::config::{NamespaceConfig, QueueConfig};
use crate::message::{keys, system_time_to_timestamp};

mod durable;
mod sessions;

const Q: &str = "orders";

fn props() -> QueueProperties {
    QueueProperties {
        lock_duration: Duration::from_secs(30),
        max_delivery_count: 3,
        ..QueueProperties::default()
    }
}

fn broker_with(props: QueueProperties) -> Broker {
    let mut config = Config::with_queues([Q, "other"]);
    config.namespaces = vec![NamespaceConfig {
        name: "ns".into(),
        topics: Vec::new(),
        queues: vec![
            QueueConfig {
                name: Q.into(),
                properties: props,
            },
            QueueConfig {
                name: "other".into(),
                properties: QueueProperties::default(),
            },
        ],
    }];
    Broker::new(&config)
}

fn broker() -> Broker {
    broker_with(props())
}

struct Msg {
    id: Option<&'static str>,
    session: Option<&'static str>,
    ttl: Option<u32>,
    annotations: Vec<(&'static str, Value)>,
    body: &'static str,
}

fn msg(body: &'static str) -> Msg {
    Msg {
        id: None,
        session: None,
        ttl: None,
        annotations: Vec::new(),
        body,
    }
}

impl Msg {
    fn id(mut self, id: &'static str) -> Msg {
        self.id = Some(id);
        self
    }
    fn session(mut self, id: &'static str) -> Msg {
        self.session = Some(id);
        self
    }
    fn ttl(mut self, ms: u32) -> Msg {
        self.ttl = Some(ms);
        self
    }
    fn annotate(mut self, k: &'static str, v: Value) -> Msg {
        self.annotations.push((k, v));
        self
    }
    fn build(self) -> StoredMessage {
        let mut ma = MessageAnnotations::builder();
        for (k, v) in self.annotations {
            ma = ma.insert(OwnedKey::Symbol(Symbol::from(k)), v);
        }
        let mut p = Properties::builder();
        if let Some(id) = self.id {
            p = p.message_id(MessageId::String(id.into()));
        }
        if let Some(session) = self.session {
            p = p.group_id(Some(session.to_string()));
        }
        let m: Message<Body<Value>> = Message::builder()
            .header(Header {
                ttl: self.ttl,
                ..Default::default()
            })
            .message_annotations(ma.build())
            .properties(p.build())
            .body(Body::Value(AmqpValue(Value::String(self.body.into()))))
            .build();
        StoredMessage::parse(Bytes::from(serde_amqp::to_vec(&Serializable(&m)).unwrap())).unwrap()
    }
}

/// A message just over the 256 KiB limit.
fn too_big() -> StoredMessage {
    let m: Message<Body<Value>> = Message::builder()
        .body(Body::Value(AmqpValue(Value::String(
            "x".repeat(MAX_MESSAGE_SIZE),
        ))))
        .build();
    StoredMessage::parse(Bytes::from(serde_amqp::to_vec(&Serializable(&m)).unwrap())).unwrap()
}

fn decode(payload: &Bytes) -> Message<Body<Value>> {
    serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(payload)
        .unwrap()
        .0
}

fn body_of(payload: &Bytes) -> String {
    match decode(payload).body {
        Body::Value(AmqpValue(Value::String(s))) => s,
        other => panic!("unexpected body {other:?}"),
    }
}

fn annotation(payload: &Bytes, key: &str) -> Option<Value> {
    decode(payload)
        .message_annotations?
        .0
        .get(&OwnedKey::Symbol(Symbol::from(key)))
        .cloned()
}

fn app_property(payload: &Bytes, key: &str) -> Option<SimpleValue> {
    decode(payload).application_properties?.0.get(key).cloned()
}

fn queue(b: &Broker) -> EntityPath {
    b.resolve(Q).unwrap()
}

fn dlq(b: &Broker) -> EntityPath {
    b.resolve(&format!("{Q}/$DeadLetterQueue")).unwrap()
}

fn send(b: &Broker, body: &'static str) -> i64 {
    b.send(&queue(b), msg(body).build()).unwrap()
}

fn lock(b: &Broker) -> Delivery {
    b.receive(&queue(b), ReceiveMode::PeekLock)
        .expect("a message is available")
}

fn abandon() -> Outcome {
    Outcome::Abandon {
        count_attempt: true,
        properties_to_modify: Vec::new(),
    }
}

fn counts(b: &Broker) -> QueueCounts {
    b.counts(Q).unwrap()
}

#[tokio::test(start_paused = true)]
async fn resolve_normalises_addresses_case_insensitively() {
    let b = broker();
    for a in [
        "amqps://localhost:5671/ORDERS",
        "sb://localhost/orders",
        "/orders",
    ] {
        let path = b.resolve(a).unwrap();
        assert_eq!(path.to_string(), Q, "{a}");
        assert_eq!(path.kind(), EntityKind::Queue);
        assert!(path.accepts_sends() && !path.is_dead_letter());
    }
    let dlq = b.resolve("orders/$deadletterqueue").unwrap();
    assert!(dlq.is_dead_letter() && !dlq.accepts_sends());
    assert_eq!(
        b.resolve("/orders/$DeadLetterQueue").unwrap().to_string(),
        "orders/$DeadLetterQueue"
    );
    for bad in [
        "nope",
        "orders/$management",
        "$cbs",
        "amqps://localhost",
        "orders/$Transfer/$DeadLetterQueue",
    ] {
        assert_eq!(
            b.resolve(bad),
            Err(BrokerError::NotFound(bad.into())),
            "{bad}"
        );
    }
    assert_eq!(b.queue_names(), [Q, "other"]);
}

#[tokio::test(start_paused = true)]
async fn sequence_numbers_start_at_one_and_receive_in_order() {
    let b = broker();
    assert_eq!(send(&b, "a"), 1);
    assert_eq!(send(&b, "b"), 2);
    assert_eq!(
        b.send(&b.resolve("other").unwrap(), msg("x").build())
            .unwrap(),
        1,
        "per-queue numbering"
    );
    let first = lock(&b);
    assert_eq!(first.sequence_number, 1);
    assert_eq!(body_of(&first.payload), "a");
    assert_eq!(first.delivery_count, 0);
    assert_eq!(
        annotation(&first.payload, keys::SEQUENCE_NUMBER),
        Some(Value::Long(1))
    );
    let until = first.locked_until.unwrap();
    assert_eq!(until, b.now() + Duration::from_secs(30));
    assert_eq!(
        annotation(&first.payload, keys::LOCKED_UNTIL),
        Some(Value::Timestamp(system_time_to_timestamp(until)))
    );
    assert!(annotation(&first.payload, keys::ENQUEUED_TIME).is_some());
    assert_eq!(decode(&first.payload).header.unwrap().delivery_count, 0);
    assert_eq!(lock(&b).sequence_number, 2);
    assert!(b.receive(&queue(&b), ReceiveMode::PeekLock).is_none());
    assert_eq!(
        counts(&b).active_message_count,
        2,
        "locked messages are still active"
    );
}

#[tokio::test(start_paused = true)]
async fn complete_removes_and_second_settle_is_lock_lost() {
    let b = broker();
    send(&b, "a");
    let d = lock(&b);
    b.settle(&queue(&b), d.lock_token, Outcome::Complete)
        .unwrap();
    assert_eq!(counts(&b), QueueCounts::default());
    assert_eq!(
        b.settle(&queue(&b), d.lock_token, Outcome::Complete),
        Err(SettleError::LockLost)
    );
    assert_eq!(
        b.settle(&queue(&b), Uuid::new_v4(), Outcome::Complete),
        Err(SettleError::LockLost)
    );
}

#[tokio::test(start_paused = true)]
async fn abandon_counts_and_release_does_not() {
    let b = broker();
    send(&b, "a");
    let d = lock(&b);
    let modify = vec![("custom".to_string(), Value::Int(7))];
    b.settle(
        &queue(&b),
        d.lock_token,
        Outcome::Abandon {
            count_attempt: true,
            properties_to_modify: modify,
        },
    )
    .unwrap();
    let again = lock(&b);
    assert_ne!(
        again.lock_token, d.lock_token,
        "a fresh token per delivery attempt"
    );
    assert_eq!(again.delivery_count, 1);
    assert_eq!(decode(&again.payload).header.unwrap().delivery_count, 1);
    assert!(!decode(&again.payload).header.unwrap().first_acquirer);
    assert_eq!(annotation(&again.payload, "custom"), Some(Value::Int(7)));
    b.settle(
        &queue(&b),
        again.lock_token,
        Outcome::Abandon {
            count_attempt: false,
            properties_to_modify: vec![],
        },
    )
    .unwrap();
    assert_eq!(lock(&b).delivery_count, 1, "released does not count");
}

#[tokio::test(start_paused = true)]
async fn max_delivery_count_moves_to_dead_letter_queue() {
    let b = broker();
    send(&b, "poison");
    for attempt in 0..3 {
        let d = lock(&b);
        assert_eq!(d.delivery_count, attempt);
        b.settle(&queue(&b), d.lock_token, abandon()).unwrap();
    }
    assert!(b.receive(&queue(&b), ReceiveMode::PeekLock).is_none());
    assert_eq!(counts(&b).active_message_count, 0);
    assert_eq!(counts(&b).dead_letter_message_count, 1);
    let dead = b.receive(&dlq(&b), ReceiveMode::PeekLock).unwrap();
    assert_eq!(body_of(&dead.payload), "poison");
    assert_eq!(dead.sequence_number, 1);
    assert_eq!(
        app_property(&dead.payload, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String(REASON_MAX_DELIVERY.into()))
    );
    assert_eq!(
        app_property(&dead.payload, keys::DEAD_LETTER_DESCRIPTION),
        Some(SimpleValue::String(
            "Message could not be consumed after 3 delivery attempts.".into()
        ))
    );
    assert_eq!(
        annotation(&dead.payload, keys::DEADLETTER_SOURCE),
        Some(Value::String(Q.into()))
    );
    // The dead-letter queue has its own locks: completing there removes it for good.
    assert_eq!(
        b.settle(&queue(&b), dead.lock_token, Outcome::Complete),
        Err(SettleError::LockLost)
    );
    b.settle(&dlq(&b), dead.lock_token, Outcome::Complete)
        .unwrap();
    assert_eq!(counts(&b), QueueCounts::default());
}

#[tokio::test(start_paused = true)]
async fn dead_letter_without_a_reason_sets_none() {
    // Service Bus sets DeadLetterReason/Description only when the client gave them (the SDKs then
    // read None); an empty string is not what a user sees on Azure.
    let b = broker();
    send(&b, "bad");
    let d = lock(&b);
    let outcome = Outcome::DeadLetter {
        reason: None,
        description: None,
    };
    b.settle(&queue(&b), d.lock_token, outcome).unwrap();
    let peeked = b.peek(&dlq(&b), 1, 10);
    assert_eq!(peeked.len(), 1);
    assert_eq!(app_property(&peeked[0].1, keys::DEAD_LETTER_REASON), None);
    assert_eq!(
        app_property(&peeked[0].1, keys::DEAD_LETTER_DESCRIPTION),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn dead_letter_keeps_reason_and_description() {
    let b = broker();
    send(&b, "bad");
    let d = lock(&b);
    let outcome = Outcome::DeadLetter {
        reason: Some("Invalid".into()),
        description: Some("no customer id".into()),
    };
    b.settle(&queue(&b), d.lock_token, outcome).unwrap();
    let peeked = b.peek(&dlq(&b), 1, 10);
    assert_eq!(peeked.len(), 1);
    assert_eq!(
        app_property(&peeked[0].1, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String("Invalid".into()))
    );
    assert_eq!(
        app_property(&peeked[0].1, keys::DEAD_LETTER_DESCRIPTION),
        Some(SimpleValue::String("no customer id".into()))
    );
    assert_eq!(counts(&b).dead_letter_message_count, 1);
    assert!(
        b.send(&dlq(&b), msg("x").build()).is_err(),
        "cannot send to a dead-letter queue"
    );
}

#[tokio::test(start_paused = true)]
async fn lock_expiry_redelivers_and_late_settle_is_lock_lost() {
    let b = broker();
    send(&b, "a");
    let mut changes = b.changes();
    changes.borrow_and_update();
    let d = lock(&b);
    advance(Duration::from_secs(29)).await;
    assert!(
        b.receive(&queue(&b), ReceiveMode::PeekLock).is_none(),
        "still locked before the lock duration"
    );
    // The timer task announces the expiry without any other call.
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("expiry bumps changes()")
        .unwrap();
    assert_eq!(
        b.settle(&queue(&b), d.lock_token, Outcome::Complete),
        Err(SettleError::LockLost)
    );
    assert_eq!(
        b.renew_locks(&queue(&b), &[d.lock_token]),
        Err(SettleError::LockLost)
    );
    let again = lock(&b);
    assert_eq!(
        again.delivery_count, 1,
        "lock expiry counts as a failed attempt"
    );
    assert_eq!(counts(&b).active_message_count, 1);
}

#[tokio::test(start_paused = true)]
async fn lock_expiry_three_times_dead_letters() {
    let b = broker();
    send(&b, "slow");
    for _ in 0..3 {
        lock(&b);
        advance(Duration::from_secs(31)).await;
    }
    assert_eq!(counts(&b).active_message_count, 0);
    assert_eq!(counts(&b).dead_letter_message_count, 1);
}

#[tokio::test(start_paused = true)]
async fn renew_extends_the_lock() {
    let b = broker();
    send(&b, "a");
    send(&b, "b");
    let d1 = lock(&b);
    let d2 = lock(&b);
    advance(Duration::from_secs(20)).await;
    let times = b
        .renew_locks(&queue(&b), &[d1.lock_token, d2.lock_token])
        .unwrap();
    assert_eq!(times, [b.now() + Duration::from_secs(30); 2]);
    advance(Duration::from_secs(20)).await;
    // 40 s after the receive, past the original lock, still held thanks to the renewal.
    b.settle(&queue(&b), d1.lock_token, Outcome::Complete)
        .unwrap();
    assert_eq!(
        b.renew_locks(&queue(&b), &[d2.lock_token, d1.lock_token]),
        Err(SettleError::LockLost)
    );
    advance(Duration::from_secs(11)).await;
    assert_eq!(
        b.settle(&queue(&b), d2.lock_token, Outcome::Complete),
        Err(SettleError::LockLost)
    );
}

#[tokio::test(start_paused = true)]
async fn defer_then_receive_deferred() {
    let b = broker();
    let seq = send(&b, "later");
    send(&b, "now");
    let d = lock(&b);
    b.settle(
        &queue(&b),
        d.lock_token,
        Outcome::Defer {
            properties_to_modify: vec![("why".into(), Value::Bool(true))],
        },
    )
    .unwrap();
    assert_eq!(
        lock(&b).sequence_number,
        2,
        "deferred messages are skipped by receive"
    );
    assert!(b.receive(&queue(&b), ReceiveMode::PeekLock).is_none());
    assert_eq!(
        counts(&b).active_message_count,
        2,
        "deferred messages count as active"
    );
    assert_eq!(
        b.receive_deferred(&queue(&b), &[seq, 99], ReceiveMode::PeekLock)
            .unwrap_err(),
        BrokerError::SequenceNotFound(99)
    );
    let got = b
        .receive_deferred(&queue(&b), &[seq, seq], ReceiveMode::PeekLock)
        .unwrap();
    assert_eq!(got.len(), 1, "a number listed twice is delivered once");
    assert_eq!(body_of(&got[0].payload), "later");
    assert_eq!(annotation(&got[0].payload, "why"), Some(Value::Bool(true)));
    // Abandoning a deferred message keeps it deferred.
    b.settle(
        &queue(&b),
        got[0].lock_token,
        Outcome::Abandon {
            count_attempt: false,
            properties_to_modify: vec![],
        },
    )
    .unwrap();
    assert!(b.receive(&queue(&b), ReceiveMode::PeekLock).is_none());
    let got = b
        .receive_deferred(&queue(&b), &[seq], ReceiveMode::PeekLock)
        .unwrap();
    b.settle(&queue(&b), got[0].lock_token, Outcome::Complete)
        .unwrap();
    assert_eq!(
        b.receive_deferred(&queue(&b), &[seq], ReceiveMode::PeekLock)
            .unwrap_err(),
        BrokerError::SequenceNotFound(seq)
    );
}

#[tokio::test(start_paused = true)]
async fn receive_and_delete_removes_at_once() {
    let b = broker();
    send(&b, "a");
    let d = b
        .receive(&queue(&b), ReceiveMode::ReceiveAndDelete)
        .unwrap();
    assert_eq!(d.lock_token, Uuid::nil());
    assert_eq!(d.locked_until, None);
    assert_eq!(annotation(&d.payload, keys::LOCKED_UNTIL), None);
    assert_eq!(counts(&b), QueueCounts::default());
    assert_eq!(
        b.settle(&queue(&b), d.lock_token, Outcome::Complete),
        Err(SettleError::LockLost)
    );
}

#[tokio::test(start_paused = true)]
async fn ttl_expiry_drops_or_dead_letters() {
    let b = broker();
    b.send(&queue(&b), msg("short").ttl(10_000).build())
        .unwrap();
    send(&b, "long");
    advance(Duration::from_secs(11)).await;
    assert_eq!(counts(&b).active_message_count, 1);
    assert_eq!(
        counts(&b).dead_letter_message_count,
        0,
        "dropped without DeadLetteringOnMessageExpiration"
    );
    assert_eq!(body_of(&lock(&b).payload), "long");

    let b = broker_with(QueueProperties {
        dead_lettering_on_message_expiration: true,
        default_message_time_to_live: Duration::from_secs(60),
        ..props()
    });
    send(&b, "default-ttl");
    advance(Duration::from_secs(61)).await;
    assert_eq!(counts(&b).active_message_count, 0);
    let dead = b.receive(&dlq(&b), ReceiveMode::ReceiveAndDelete).unwrap();
    assert_eq!(
        app_property(&dead.payload, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String(REASON_TTL.into()))
    );
}

#[tokio::test(start_paused = true)]
async fn locked_messages_do_not_expire_until_unlocked() {
    let b = broker_with(QueueProperties {
        dead_lettering_on_message_expiration: true,
        ..props()
    });
    b.send(&queue(&b), msg("a").ttl(5_000).build()).unwrap();
    let d = lock(&b);
    advance(Duration::from_secs(10)).await;
    b.renew_locks(&queue(&b), &[d.lock_token]).unwrap();
    b.settle(
        &queue(&b),
        d.lock_token,
        Outcome::Abandon {
            count_attempt: false,
            properties_to_modify: vec![],
        },
    )
    .unwrap();
    assert_eq!(
        counts(&b).active_message_count,
        0,
        "expired as soon as it was unlocked"
    );
    assert_eq!(counts(&b).dead_letter_message_count, 1);
}

#[tokio::test(start_paused = true)]
async fn scheduled_messages_activate_at_their_time_and_can_be_cancelled() {
    let b = broker();
    let at = b.now() + Duration::from_secs(60);
    let seqs = b
        .schedule(
            &queue(&b),
            vec![msg("s1").build(), msg("s2").build()],
            Some(at),
        )
        .unwrap();
    assert_eq!(seqs, [1, 2]);
    let own_time = b.now() + Duration::from_secs(5);
    let seq3 = b
        .send(
            &queue(&b),
            msg("self")
                .annotate(
                    keys::SCHEDULED_ENQUEUE_TIME,
                    Value::Timestamp(system_time_to_timestamp(own_time)),
                )
                .build(),
        )
        .unwrap();
    assert_eq!(counts(&b).scheduled_message_count, 3);
    assert_eq!(counts(&b).active_message_count, 0);
    assert!(b.receive(&queue(&b), ReceiveMode::PeekLock).is_none());
    assert_eq!(
        b.peek(&queue(&b), 1, 10).len(),
        3,
        "peek shows scheduled messages"
    );

    let mut changes = b.changes();
    changes.borrow_and_update();
    tokio::time::timeout(Duration::from_secs(6), changes.changed())
        .await
        .expect("scheduled enqueue bumps changes()")
        .unwrap();
    let d = lock(&b);
    assert_eq!(
        (d.sequence_number, body_of(&d.payload)),
        (seq3, "self".to_string())
    );
    b.settle(&queue(&b), d.lock_token, Outcome::Complete)
        .unwrap();
    assert_eq!(
        annotation(&d.payload, keys::ENQUEUED_TIME),
        Some(Value::Timestamp(system_time_to_timestamp(own_time)))
    );

    assert_eq!(
        b.cancel_scheduled(&queue(&b), &[1, 3]),
        Err(BrokerError::SequenceNotFound(3))
    );
    b.cancel_scheduled(&queue(&b), &[1]).unwrap();
    assert_eq!(counts(&b).scheduled_message_count, 1);
    advance(Duration::from_secs(60)).await;
    assert_eq!(counts(&b).scheduled_message_count, 0);
    let d = lock(&b);
    assert_eq!(d.sequence_number, 2);
    b.settle(&queue(&b), d.lock_token, Outcome::Complete)
        .unwrap();

    // A time in the past enqueues at once.
    let past = b
        .schedule(
            &queue(&b),
            vec![msg("p").build()],
            Some(b.now() - Duration::from_secs(1)),
        )
        .unwrap();
    assert_eq!(lock(&b).sequence_number, past[0]);
}

#[tokio::test(start_paused = true)]
async fn peek_from_sequence_in_order_without_locking() {
    let b = broker();
    for body in ["a", "b", "c", "d"] {
        send(&b, body);
    }
    let d = lock(&b);
    b.settle(&queue(&b), d.lock_token, Outcome::Complete)
        .unwrap();
    let page = b.peek(&queue(&b), 0, 2);
    assert_eq!(page.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(body_of(&page[0].1), "b");
    let rest = b.peek(&queue(&b), 4, 10);
    assert_eq!(rest.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [4]);
    assert!(b.peek(&queue(&b), 5, 10).is_empty());
    assert_eq!(lock(&b).sequence_number, 2, "peek does not lock");
}

#[tokio::test(start_paused = true)]
async fn duplicate_detection_within_the_window() {
    let b = broker_with(QueueProperties {
        requires_duplicate_detection: true,
        duplicate_detection_history_time_window: Duration::from_secs(20),
        ..props()
    });
    let first = b.send(&queue(&b), msg("1").id("m").build()).unwrap();
    assert_eq!(
        b.send(&queue(&b), msg("2").id("m").build()).unwrap(),
        first,
        "duplicate dropped"
    );
    assert_eq!(b.send(&queue(&b), msg("3").id("n").build()).unwrap(), 2);
    assert_eq!(counts(&b).active_message_count, 2);
    advance(Duration::from_secs(21)).await;
    assert_eq!(
        b.send(&queue(&b), msg("4").id("m").build()).unwrap(),
        3,
        "outside the window it is new"
    );

    // Without detection, the same id is just another message.
    let b = broker();
    b.send(&queue(&b), msg("1").id("m").build()).unwrap();
    b.send(&queue(&b), msg("2").id("m").build()).unwrap();
    assert_eq!(counts(&b).active_message_count, 2);
}

#[tokio::test(start_paused = true)]
async fn size_limit_and_unknown_entities() {
    let b = broker();
    assert!(matches!(
        b.send(&queue(&b), too_big()),
        Err(BrokerError::MessageTooLarge {
            limit: MAX_MESSAGE_SIZE,
            ..
        })
    ));
    assert_eq!(
        b.resolve("ghost"),
        Err(BrokerError::NotFound("ghost".into()))
    );
    assert_eq!(b.counts("ghost"), None);
    assert_eq!(b.counts("ORDERS"), Some(QueueCounts::default()));
}

#[tokio::test(start_paused = true)]
async fn batches_enqueue_all_or_nothing() {
    let b = broker();
    assert_eq!(
        b.send_batch(&queue(&b), vec![msg("a").build(), msg("b").build()])
            .unwrap(),
        [1, 2]
    );
    let r = b.send_batch(&queue(&b), vec![msg("c").build(), too_big()]);
    assert!(
        matches!(r, Err(BrokerError::MessageTooLarge { .. })),
        "{r:?}"
    );
    assert_eq!(
        counts(&b).active_message_count,
        2,
        "nothing of the refused batch was enqueued"
    );
    assert!(b.send_batch(&dlq(&b), vec![msg("d").build()]).is_err());
}

#[tokio::test(start_paused = true)]
async fn send_bumps_changes() {
    let b = broker();
    let mut changes = b.changes();
    let before = *changes.borrow_and_update();
    send(&b, "a");
    assert!(changes.has_changed().unwrap());
    assert_ne!(*changes.borrow_and_update(), before);
    lock(&b);
    assert!(
        !changes.has_changed().unwrap(),
        "taking a message makes nothing newly available"
    );
}

fn broker_of(queues: &[(&str, QueueProperties)]) -> Broker {
    let mut config = Config::with_queues(Vec::<String>::new());
    config.namespaces[0].queues = queues
        .iter()
        .map(|(name, properties)| QueueConfig {
            name: name.to_string(),
            properties: properties.clone(),
        })
        .collect();
    Broker::new(&config)
}

#[tokio::test(start_paused = true)]
async fn forward_to_follows_the_chain() {
    let forward = |to: &str| QueueProperties {
        forward_to: Some(to.into()),
        ..props()
    };
    let b = broker_of(&[
        ("inbox", forward("middle")),
        ("middle", forward("WORK")),
        ("work", props()),
    ]);
    let inbox = b.resolve("inbox").unwrap();
    assert_eq!(b.send(&inbox, msg("hop").build()).unwrap(), 1);
    assert_eq!(
        b.send_batch(&inbox, vec![msg("a").build(), msg("b").build()])
            .unwrap(),
        [2, 3]
    );
    assert_eq!(b.counts("inbox").unwrap(), QueueCounts::default());
    assert_eq!(b.counts("middle").unwrap(), QueueCounts::default());
    assert_eq!(b.counts("work").unwrap().active_message_count, 3);
    assert!(b.receive(&inbox, ReceiveMode::PeekLock).is_none());
    let d = b
        .receive(&b.resolve("work").unwrap(), ReceiveMode::ReceiveAndDelete)
        .unwrap();
    assert_eq!(body_of(&d.payload), "hop");
}

#[tokio::test(start_paused = true)]
async fn dead_letters_are_forwarded_to_another_queue() {
    let source = QueueProperties {
        forward_dead_lettered_messages_to: Some("poison".into()),
        dead_lettering_on_message_expiration: true,
        max_delivery_count: 1,
        ..props()
    };
    let b = broker_of(&[(Q, source), ("poison", props())]);
    let poison = b.resolve("poison").unwrap();

    // Max delivery count reached.
    send(&b, "abandoned");
    b.settle(&queue(&b), lock(&b).lock_token, abandon())
        .unwrap();
    // Explicit dead-letter.
    send(&b, "rejected");
    let d = lock(&b);
    let outcome = Outcome::DeadLetter {
        reason: Some("Bad".into()),
        description: None,
    };
    b.settle(&queue(&b), d.lock_token, outcome).unwrap();
    assert_eq!(
        counts(&b),
        QueueCounts::default(),
        "nothing in the source or its dead-letter queue"
    );
    assert_eq!(b.counts("poison").unwrap().active_message_count, 2);
    let first = b.receive(&poison, ReceiveMode::ReceiveAndDelete).unwrap();
    assert_eq!(
        (first.sequence_number, body_of(&first.payload)),
        (1, "abandoned".to_string())
    );
    assert_eq!(
        app_property(&first.payload, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String(REASON_MAX_DELIVERY.into()))
    );
    assert_eq!(
        annotation(&first.payload, keys::DEADLETTER_SOURCE),
        Some(Value::String(Q.into()))
    );
    assert_eq!(first.delivery_count, 0, "a new message of the target queue");
    let second = b.receive(&poison, ReceiveMode::ReceiveAndDelete).unwrap();
    assert_eq!(
        app_property(&second.payload, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String("Bad".into()))
    );

    // TTL expiry, found by the timer alone: a receiver of the target hears about it.
    b.send(&queue(&b), msg("stale").ttl(1_000).build()).unwrap();
    let mut changes = b.changes();
    changes.borrow_and_update();
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("forwarding bumps changes()")
        .unwrap();
    let expired = b
        .receive(&poison, ReceiveMode::ReceiveAndDelete)
        .expect("forwarded by the timer");
    assert_eq!(
        app_property(&expired.payload, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String(REASON_TTL.into()))
    );
}

/// A small deterministic generator, so a failing run replays from its seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Random interleavings of every operation: the indexes stay consistent with the messages, and every
/// message sent is accounted for (completed, deleted, cancelled, or still counted somewhere).
#[tokio::test(start_paused = true)]
async fn random_operations_keep_every_message_accounted_for() {
    for seed in 0..25 {
        let b = broker_with(QueueProperties {
            default_message_time_to_live: Duration::from_secs(86_400 * 10),
            ..props()
        });
        let (main, dead) = (queue(&b), dlq(&b));
        let mut rng = Lcg(seed);
        let (mut sent, mut gone) = (0u64, 0u64);
        let mut held: Vec<(EntityPath, Delivery)> = Vec::new();
        let mut deferred: Vec<i64> = Vec::new();
        let mut scheduled: Vec<i64> = Vec::new();
        for step in 0..400 {
            match rng.below(10) {
                0 | 1 => {
                    b.send(&main, msg("m").build()).unwrap();
                    sent += 1;
                }
                2 => {
                    let at = b.now() + Duration::from_secs(1 + rng.below(120));
                    scheduled.extend(b.schedule(&main, vec![msg("s").build()], Some(at)).unwrap());
                    sent += 1;
                }
                3 | 4 => {
                    let entity = if rng.below(4) == 0 { &dead } else { &main };
                    if let Some(d) = b.receive(entity, ReceiveMode::PeekLock) {
                        if entity == &main {
                            assert!(d.delivery_count < 3, "seed {seed} step {step}: {d:?}");
                        }
                        held.push((entity.clone(), d));
                    }
                }
                5 => {
                    if b.receive(&main, ReceiveMode::ReceiveAndDelete).is_some() {
                        gone += 1;
                    }
                }
                6 | 7 if !held.is_empty() => {
                    let (entity, d) = held.swap_remove(rng.below(held.len() as u64) as usize);
                    let outcome = match rng.below(5) {
                        0 => Outcome::Complete,
                        1 => abandon(),
                        2 => Outcome::Abandon {
                            count_attempt: false,
                            properties_to_modify: vec![],
                        },
                        3 => Outcome::Defer {
                            properties_to_modify: vec![],
                        },
                        _ => Outcome::DeadLetter {
                            reason: Some("r".into()),
                            description: None,
                        },
                    };
                    let complete = outcome == Outcome::Complete;
                    let defer = matches!(outcome, Outcome::Defer { .. });
                    match b.settle(&entity, d.lock_token, outcome) {
                        Ok(()) if complete => gone += 1,
                        Ok(()) if defer && entity == main => deferred.push(d.sequence_number),
                        Ok(()) | Err(SettleError::LockLost) => {}
                        Err(e) => panic!("seed {seed} step {step}: {e}"),
                    }
                }
                8 => advance(Duration::from_secs(rng.below(40))).await,
                _ => {
                    if let Some(seq) = deferred.pop() {
                        if let Ok(mut got) =
                            b.receive_deferred(&main, &[seq], ReceiveMode::PeekLock)
                        {
                            held.push((main.clone(), got.remove(0)));
                        }
                    } else if let Some(seq) = scheduled.pop() {
                        match b.cancel_scheduled(&main, &[seq]) {
                            Ok(()) => gone += 1,
                            Err(BrokerError::SequenceNotFound(_)) => {} // already active
                            Err(e) => panic!("seed {seed} step {step}: {e}"),
                        }
                    }
                }
            }
            b.check_indexes();
            let c = counts(&b);
            let present =
                c.active_message_count + c.scheduled_message_count + c.dead_letter_message_count;
            assert_eq!(sent, gone + present, "seed {seed} step {step}: {c:?}");
        }
    }
}

/// Throughput of the bare core (send, receive peek-lock, complete). Prints, asserts nothing:
/// `cargo test -p servicebus-emulator --release --lib broker::tests::throughput -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn throughput() {
    let b = broker_with(QueueProperties {
        lock_duration: Duration::from_secs(300),
        ..props()
    });
    let q = queue(&b);
    let template = msg("payload of a typical job message").id("id").build();
    let n = 200_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        b.send(&q, template.clone()).unwrap();
    }
    let sent = start.elapsed();
    let start = std::time::Instant::now();
    for _ in 0..n {
        let d = b.receive(&q, ReceiveMode::PeekLock).unwrap();
        b.settle(&q, d.lock_token, Outcome::Complete).unwrap();
    }
    let received = start.elapsed();
    println!(
        "send: {:.0} msg/s; receive+complete: {:.0} msg/s ({n} messages)",
        n as f64 / sent.as_secs_f64(),
        n as f64 / received.as_secs_f64()
    );
}

/// Topic `t` (duplicate detection on, TTL 60 s) with subscriptions showing each routing rule.
fn topic_broker() -> Broker {
    use crate::config::{SubscriptionConfig, TopicConfig, TopicProperties};
    use crate::filter::Rule;
    let sql = |name: &str, text: &str| Rule::sql(name, text).unwrap();
    let mut quiet = SubscriptionConfig::new("quiet").rules([sql("broken", "1 / 0 = 1")]);
    quiet.dead_lettering_on_filter_evaluation_exceptions = false;
    let config = Config::with_queues(Vec::<String>::new()).topic(
        TopicConfig::new("t")
            .properties(TopicProperties {
                requires_duplicate_detection: true,
                default_message_time_to_live: Duration::from_secs(60),
                ..TopicProperties::default()
            })
            .subscription(SubscriptionConfig::new("ok"))
            .subscription(SubscriptionConfig::new("broken").rules([sql("broken", "1 / 0 = 1")]))
            .subscription(quiet)
            .subscription(
                SubscriptionConfig::new("multi").rules([
                    Rule::default_rule(),
                    sql("also-true", "1=1"),
                    sql("a1", "1=1").with_action("SET n = 1").unwrap(),
                    sql("a2", "sys.MessageId = 'm1'")
                        .with_action("SET n = 2")
                        .unwrap(),
                ]),
            ),
    );
    Broker::new(&config)
}

#[tokio::test(start_paused = true)]
async fn topic_routes_copies_by_rules_and_survives_failing_filters() {
    let b = topic_broker();
    let t = b.resolve("t").unwrap();
    assert_eq!(t.kind(), EntityKind::Topic);
    assert_eq!(b.send(&t, msg("one").id("m1").build()), Ok(1));
    // A duplicate within the window is accepted and dropped: the original's number, no new copies.
    assert_eq!(b.send(&t, msg("again").id("m1").build()), Ok(1));
    let counts = |s: &str| b.counts(&format!("t/Subscriptions/{s}")).unwrap();
    assert_eq!(counts("ok").active_message_count, 1);
    // The failing filter dead-letters that subscription's copy only; the other goes on.
    assert_eq!(counts("broken").active_message_count, 0);
    assert_eq!(counts("broken").dead_letter_message_count, 1);
    assert_eq!(counts("quiet"), QueueCounts::default());
    let dlq = b
        .resolve("t/subscriptions/BROKEN/$deadletterqueue")
        .unwrap();
    let d = b.receive(&dlq, ReceiveMode::ReceiveAndDelete).unwrap();
    assert_eq!(
        app_property(&d.payload, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String(REASON_FILTER.into()))
    );
    // Matching rules without actions give one copy; each matching rule with an action its own,
    // numbered by the topic after the original.
    assert_eq!(counts("multi").active_message_count, 3);
    let multi = b.resolve("t/Subscriptions/multi").unwrap();
    let mut seen = Vec::new();
    while let Some(d) = b.receive(&multi, ReceiveMode::ReceiveAndDelete) {
        seen.push((
            d.sequence_number,
            app_property(&d.payload, "n"),
            app_property(&d.payload, keys::RULE_NAME),
        ));
    }
    let s = |v: &str| Some(SimpleValue::String(v.into()));
    assert_eq!(
        seen,
        [
            (1, None, None),
            (2, Some(SimpleValue::Long(1)), s("a1")),
            (3, Some(SimpleValue::Long(2)), s("a2")),
        ]
    );
    assert_eq!(b.send(&t, msg("two").build()), Ok(4));
    // The topic's TTL caps the copies.
    advance(Duration::from_secs(61)).await;
    assert_eq!(counts("ok").active_message_count, 0);
    // Topics take no receivers and subscriptions no sends.
    assert!(b.receive(&t, ReceiveMode::PeekLock).is_none());
    let ok = b.resolve("t/Subscriptions/ok").unwrap();
    assert!(matches!(
        b.send(&ok, msg("x").build()),
        Err(BrokerError::NotAllowed(_))
    ));
    assert_eq!(
        b.resolve("t/Subscriptions/nope"),
        Err(BrokerError::NotFound("t/Subscriptions/nope".into()))
    );
    b.check_indexes();
}

#[tokio::test(start_paused = true)]
async fn subscriptions_forward_to_topics_and_queues_with_a_hop_limit() {
    use crate::config::{QueueConfig, SubscriptionConfig, TopicConfig};
    let forward = |to: &str| QueueProperties {
        forward_to: Some(to.into()),
        ..QueueProperties::default()
    };
    let mut config = Config::with_queues(["dead"]).topic(
        TopicConfig::new("t")
            .subscription(SubscriptionConfig::new("f").properties(forward("t2")))
            .subscription(SubscriptionConfig::new("d").properties(QueueProperties {
                max_delivery_count: 1,
                forward_dead_lettered_messages_to: Some("dead".into()),
                ..QueueProperties::default()
            })),
    );
    config = config
        .topic(TopicConfig::new("t2").subscription(SubscriptionConfig::new("all")))
        .topic(
            TopicConfig::new("a")
                .subscription(SubscriptionConfig::new("x").properties(forward("b"))),
        )
        .topic(
            TopicConfig::new("b")
                .subscription(SubscriptionConfig::new("y").properties(forward("a"))),
        );
    assert_eq!(
        config.queues(),
        [QueueConfig {
            name: "dead".into(),
            properties: QueueProperties::default()
        }]
    );
    let b = Broker::new(&config);
    let counts = |e: &str| b.counts(e).unwrap();
    b.send(&b.resolve("t").unwrap(), msg("hello").build())
        .unwrap();
    // subscription → topic → its subscription
    assert_eq!(counts("t/Subscriptions/f").active_message_count, 0);
    assert_eq!(counts("t2/Subscriptions/all").active_message_count, 1);
    // ForwardDeadLetteredMessagesTo: the dead letter lands in the queue, marked with its source.
    let d = b.resolve("t/Subscriptions/d").unwrap();
    let delivery = b.receive(&d, ReceiveMode::PeekLock).unwrap();
    b.settle(&d, delivery.lock_token, abandon()).unwrap();
    assert_eq!(counts("t/Subscriptions/d").dead_letter_message_count, 0);
    assert_eq!(counts("dead").active_message_count, 1);
    let dead = b
        .receive(&b.resolve("dead").unwrap(), ReceiveMode::ReceiveAndDelete)
        .unwrap();
    assert_eq!(
        annotation(&dead.payload, keys::DEADLETTER_SOURCE),
        Some(Value::String("t/Subscriptions/d".into()))
    );
    // a → x → b → y → a ...: dead-lettered once the chain is longer than Service Bus allows.
    b.send(&b.resolve("a").unwrap(), msg("round").build())
        .unwrap();
    let x_dlq = b.resolve("a/Subscriptions/x/$DeadLetterQueue").unwrap();
    let looped = b.receive(&x_dlq, ReceiveMode::ReceiveAndDelete).unwrap();
    assert_eq!(
        app_property(&looped.payload, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String(REASON_HOPS.into()))
    );
    assert_eq!(counts("b/Subscriptions/y"), QueueCounts::default());
    b.check_indexes();
}
