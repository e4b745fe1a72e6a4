//! The broker on a data directory: what one broker saved, the next one on the same directory has.
//! Real time (the store writes on its own thread); each test closes the first broker's store, as a
//! clean stop does. Crashes (kill -9) are tested on the real binary in `tests/durability.rs`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::{SubscriptionConfig, TopicConfig};
use crate::filter::Rule;

fn config() -> Config {
    let mut config = Config::with_queues(Vec::<String>::new());
    config.namespaces = vec![NamespaceConfig {
        name: "ns".into(),
        topics: Vec::new(),
        queues: vec![
            QueueConfig {
                name: Q.into(),
                properties: QueueProperties {
                    requires_duplicate_detection: true,
                    duplicate_detection_history_time_window: Duration::from_secs(600),
                    ..props()
                },
            },
            QueueConfig {
                name: "sessions".into(),
                properties: QueueProperties {
                    requires_session: true,
                    ..props()
                },
            },
        ],
    }];
    config.topic(
        TopicConfig::new("t")
            .subscription(SubscriptionConfig::new("all"))
            .subscription(
                SubscriptionConfig::new("red").rules([Rule::sql("red", "color = 'red'").unwrap()]),
            ),
    )
}

async fn open(dir: &Path) -> Broker {
    Broker::open(&config(), dir).expect("the data directory opens")
}

/// Stop as `Emulator::shutdown` does: everything queued is committed and the file closed.
async fn stop(b: Broker) {
    b.durable().await.expect("saved");
    b.close_store();
}

fn path(b: &Broker, p: &str) -> EntityPath {
    b.resolve(p).unwrap()
}

#[tokio::test]
async fn every_message_state_survives_a_restart_and_numbers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let q = path(&b, Q);
    for (i, body) in ["done", "deferred", "dead", "locked", "waiting"]
        .into_iter()
        .enumerate()
    {
        let _ = i;
        b.send(&q, msg(body).build()).unwrap();
    }
    let later = b.now() + Duration::from_secs(3600);
    let scheduled = b
        .schedule(&q, vec![msg("later").build()], Some(later))
        .unwrap();
    let take = |b: &Broker| b.receive(&q, ReceiveMode::PeekLock).unwrap();
    b.settle(&q, take(&b).lock_token, Outcome::Complete)
        .unwrap();
    let deferred = take(&b);
    b.settle(
        &q,
        deferred.lock_token,
        Outcome::Defer {
            properties_to_modify: vec![("note".into(), Value::String("kept".into()))],
        },
    )
    .unwrap();
    let dead = take(&b);
    b.settle(
        &q,
        dead.lock_token,
        Outcome::DeadLetter {
            reason: Some("bad".into()),
            description: Some("very".into()),
        },
    )
    .unwrap();
    let locked = take(&b);
    assert_eq!(locked.delivery_count, 0);
    stop(b).await;

    let b = open(dir.path()).await;
    let q = path(&b, Q);
    let counts = b.counts(Q).unwrap();
    assert_eq!(
        (
            counts.active_message_count,
            counts.scheduled_message_count,
            counts.dead_letter_message_count
        ),
        (3, 1, 1),
        "locked and waiting are active, deferred counts as active, one scheduled, one dead letter"
    );
    // The message locked at the stop is available again, its lock counted as an expired one.
    let again = b.receive(&q, ReceiveMode::PeekLock).unwrap();
    assert_eq!(
        (
            body_of(&again.payload),
            again.sequence_number,
            again.delivery_count
        ),
        ("locked".to_string(), locked.sequence_number, 1)
    );
    let next = b.receive(&q, ReceiveMode::PeekLock).unwrap();
    assert_eq!(body_of(&next.payload), "waiting");
    // Deferred: only by number, with the annotation its defer added.
    let got = b
        .receive_deferred(&q, &[deferred.sequence_number], ReceiveMode::PeekLock)
        .unwrap();
    assert_eq!(
        annotation(&got[0].payload, "note"),
        Some(Value::String("kept".into()))
    );
    // Dead letter: reason and description kept, and where it came from.
    let dlq = path(&b, &format!("{Q}/$DeadLetterQueue"));
    let d = b.receive(&dlq, ReceiveMode::PeekLock).unwrap();
    assert_eq!(body_of(&d.payload), "dead");
    assert_eq!(
        decode(&d.payload)
            .application_properties
            .unwrap()
            .0
            .get(keys::DEAD_LETTER_REASON)
            .cloned(),
        Some(SimpleValue::String("bad".into()))
    );
    // Scheduled: still scheduled for the same time; can be cancelled by its number.
    let peeked = b.peek(&q, scheduled[0], 1);
    assert_eq!(peeked[0].0, scheduled[0]);
    assert_eq!(
        annotation(&peeked[0].1, keys::MESSAGE_STATE),
        Some(Value::Int(2))
    );
    b.cancel_scheduled(&q, &scheduled).unwrap();
    // Numbers continue upward.
    let n = b.send(&q, msg("new").build()).unwrap();
    assert!(n > scheduled[0], "{n} after {}", scheduled[0]);
    stop(b).await;
}

#[tokio::test]
async fn a_completed_message_stays_gone_and_duplicate_detection_remembers() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let q = path(&b, Q);
    let first = b.send(&q, msg("one").id("id-1").build()).unwrap();
    let d = b.receive(&q, ReceiveMode::PeekLock).unwrap();
    b.settle(&q, d.lock_token, Outcome::Complete).unwrap();
    stop(b).await;

    let b = open(dir.path()).await;
    let q = path(&b, Q);
    assert_eq!(b.counts(Q).unwrap().active_message_count, 0);
    // The same message-id within the window is accepted and dropped, as before the restart.
    assert_eq!(
        b.send(&q, msg("one again").id("id-1").build()).unwrap(),
        first
    );
    assert_eq!(b.counts(Q).unwrap().active_message_count, 0);
    stop(b).await;
}

#[tokio::test]
async fn entities_made_at_run_time_and_session_state_survive_and_deletions_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    b.create_queue("made-later", QueueProperties::default())
        .unwrap();
    b.send(&path(&b, "made-later"), msg("kept").build())
        .unwrap();
    b.create_subscription(
        "t",
        "blue",
        QueueProperties::default(),
        true,
        vec![Rule::sql("blue", "color = 'blue'").unwrap()],
    )
    .unwrap();
    b.add_rule(
        &path(&b, "t/Subscriptions/red"),
        Rule::sql("big", "size > 10").unwrap(),
    )
    .unwrap();
    b.delete_entity("t/Subscriptions/all").unwrap();
    let s = path(&b, "sessions");
    b.send(&s, msg("in session").session("S-1").build())
        .unwrap();
    let owner = SessionOwner::next();
    b.accept_session(&s, &SessionRequest::Specific("S-1".into()), owner)
        .unwrap();
    b.set_session_state(&s, "S-1", Some(owner), Some(Bytes::from_static(b"step 2")))
        .unwrap();
    stop(b).await;

    let b = open(dir.path()).await;
    let made = path(&b, "made-later");
    assert_eq!(
        body_of(&b.receive(&made, ReceiveMode::PeekLock).unwrap().payload),
        "kept"
    );
    let rules: Vec<String> = b
        .subscription_rules(&path(&b, "t/Subscriptions/red"))
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(rules, ["big", "red"]);
    assert!(b.resolve("t/Subscriptions/blue").is_ok());
    // A subscription of Config.json deleted at run time comes back: Config.json's entities are
    // always there at start (documented); one created at run time and deleted stays deleted.
    assert!(b.resolve("t/Subscriptions/all").is_ok());
    let s = path(&b, "sessions");
    let owner = SessionOwner::next();
    b.accept_session(&s, &SessionRequest::Specific("s-1".into()), owner)
        .unwrap();
    assert_eq!(
        b.session_state(&s, "S-1", Some(owner)).unwrap().as_deref(),
        Some(&b"step 2"[..])
    );
    b.delete_entity("made-later").unwrap();
    stop(b).await;

    let b = open(dir.path()).await;
    assert!(b.resolve("made-later").is_err());
    b.create_queue("made-later", QueueProperties::default())
        .unwrap();
    assert_eq!(
        b.counts("made-later").unwrap().active_message_count,
        0,
        "a deleted entity's messages went with it"
    );
    stop(b).await;
}

#[tokio::test]
async fn a_topic_keeps_its_scheduled_messages_and_fans_them_out_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let t = path(&b, "t");
    let due = b.now() + Duration::from_millis(300);
    let seqs = b
        .schedule(&t, vec![msg("soon").build()], Some(due))
        .unwrap();
    stop(b).await;

    let b = open(dir.path()).await;
    assert_eq!(b.topic_counts("t").unwrap().scheduled_message_count, 1);
    let sub = path(&b, "t/Subscriptions/all");
    let mut changes = b.changes();
    let got = loop {
        if let Some(d) = b.receive(&sub, ReceiveMode::PeekLock) {
            break d;
        }
        assert!(b.now() < due + Duration::from_secs(10), "never fanned out");
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.changed()).await;
    };
    assert_eq!(
        (body_of(&got.payload), got.sequence_number),
        ("soon".to_string(), seqs[0])
    );
    assert!(SystemTime::now() >= due);
    stop(b).await;
}

#[tokio::test]
async fn a_lock_that_used_the_last_attempt_dead_letters_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path()).await;
    let q = path(&b, Q);
    b.send(&q, msg("poison").build()).unwrap();
    // max delivery count 3: two abandons, then a lock the stop ends.
    for _ in 0..2 {
        let d = b.receive(&q, ReceiveMode::PeekLock).unwrap();
        b.settle(&q, d.lock_token, abandon()).unwrap();
    }
    assert_eq!(
        b.receive(&q, ReceiveMode::PeekLock).unwrap().delivery_count,
        2
    );
    stop(b).await;

    let b = open(dir.path()).await;
    let counts = b.counts(Q).unwrap();
    assert_eq!(
        (
            counts.active_message_count,
            counts.dead_letter_message_count
        ),
        (0, 1)
    );
    stop(b).await;
    // ... and that dead-lettering was saved too.
    let b = open(dir.path()).await;
    assert_eq!(b.counts(Q).unwrap().dead_letter_message_count, 1);
    stop(b).await;
}
