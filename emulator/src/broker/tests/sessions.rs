//! The session layer of the queue state machine, under tokio's paused clock.

use super::*;
use crate::broker::session::{
    REASON_SESSION_ID_NULL, SESSION_ID_MISSING, SessionError, SessionOwner, SessionRequest,
};

/// Queue `orders` with sessions, 30 s locks, three delivery attempts.
fn session_broker() -> Broker {
    broker_with(QueueProperties {
        requires_session: true,
        ..props()
    })
}

fn specific(id: &str) -> SessionRequest {
    SessionRequest::Specific(id.to_string())
}

fn send_to(b: &Broker, session: &'static str, body: &'static str) -> i64 {
    b.send(&queue(b), msg(body).session(session).build())
        .unwrap()
}

fn accept(b: &Broker, request: SessionRequest) -> (SessionOwner, String) {
    let owner = SessionOwner::next();
    let grant = b
        .accept_session(&queue(b), &request, owner)
        .unwrap()
        .expect("a session is granted");
    assert_eq!(
        grant.locked_until,
        b.now() + Duration::from_secs(30),
        "the session lock lasts LockDuration"
    );
    (owner, grant.session_id)
}

fn next(b: &Broker, id: &str, owner: SessionOwner) -> Option<Delivery> {
    b.receive_session(&queue(b), id, owner, ReceiveMode::PeekLock)
        .unwrap()
}

fn bodies(b: &Broker, id: &str, owner: SessionOwner) -> Vec<String> {
    std::iter::from_fn(|| next(b, id, owner))
        .map(|d| {
            b.settle_session(&queue(b), id, Some(owner), d.lock_token, Outcome::Complete)
                .unwrap();
            body_of(&d.payload)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn sends_without_session_id_are_refused_all_or_nothing() {
    let b = session_broker();
    let q = queue(&b);
    assert_eq!(
        b.send(&q, msg("no-session").build()),
        Err(BrokerError::NotAllowed(SESSION_ID_MISSING.into()))
    );
    let batch = vec![msg("ok").session("a").build(), msg("missing").build()];
    assert!(matches!(
        b.send_batch(&q, batch),
        Err(BrokerError::NotAllowed(_))
    ));
    assert_eq!(
        counts(&b).active_message_count,
        0,
        "nothing of the batch stored"
    );
    // Plain receivers get nothing from a session entity; its dead-letter queue is not session-enabled.
    send_to(&b, "a", "a1");
    assert!(b.receive(&q, ReceiveMode::PeekLock).is_none());
    assert!(!b.requires_session(&dlq(&b)));
    assert!(b.requires_session(&q));
    // A session id on a non-session entity is just a property.
    let other = b.resolve("other").unwrap();
    b.send(&other, msg("x").session("a").build()).unwrap();
    assert!(b.receive(&other, ReceiveMode::PeekLock).is_some());
    assert_eq!(
        b.accept_session(&other, &SessionRequest::NextAvailable, SessionOwner::next()),
        Err(SessionError::NotSessionful("other".into()))
    );
    b.check_indexes();
}

#[tokio::test(start_paused = true)]
async fn a_session_delivers_in_order_with_abandon_going_back_to_the_head() {
    let b = session_broker();
    let q = queue(&b);
    send_to(&b, "A", "a1");
    send_to(&b, "A", "a2");
    send_to(&b, "B", "b1");
    send_to(&b, "A", "a3");
    // Session ids are case-insensitive; the id is echoed as requested.
    let (owner, id) = accept(&b, specific("a"));
    assert_eq!(id, "a");
    let first = next(&b, &id, owner).unwrap();
    let second = next(&b, &id, owner).unwrap();
    assert_eq!(
        (body_of(&first.payload), body_of(&second.payload)),
        ("a1".into(), "a2".into())
    );
    assert_eq!(first.locked_until, Some(b.now() + Duration::from_secs(30)));
    b.settle_session(&q, &id, Some(owner), first.lock_token, abandon())
        .unwrap();
    // The abandoned message is the head again, before a3, with its attempt counted.
    let again = next(&b, &id, owner).unwrap();
    assert_eq!(body_of(&again.payload), "a1");
    assert_eq!(again.delivery_count, 1);
    b.settle_session(&q, &id, Some(owner), again.lock_token, Outcome::Complete)
        .unwrap();
    b.settle_session(&q, &id, Some(owner), second.lock_token, Outcome::Complete)
        .unwrap();
    assert_eq!(bodies(&b, &id, owner), ["a3"]);
    // Locked by one receiver: refused to another; next-available skips it.
    assert_eq!(
        b.accept_session(&q, &specific("A"), SessionOwner::next()),
        Err(SessionError::CannotBeLocked("A".into()))
    );
    let (other, other_id) = accept(&b, SessionRequest::NextAvailable);
    assert_eq!(other_id, "B");
    // A token of another session is not this session's to settle.
    let b1 = next(&b, "B", other).unwrap();
    assert_eq!(
        b.settle_session(&q, &id, Some(owner), b1.lock_token, Outcome::Complete),
        Err(SettleError::LockLost)
    );
    assert_eq!(
        b.settle_session(&q, "B", Some(owner), b1.lock_token, Outcome::Complete),
        Err(SettleError::SessionLockLost)
    );
    b.check_indexes();
}

#[tokio::test(start_paused = true)]
async fn max_delivery_count_inside_a_session_dead_letters_without_the_session() {
    let b = session_broker();
    let q = queue(&b);
    send_to(&b, "s", "flaky");
    send_to(&b, "s", "fine");
    let (owner, id) = accept(&b, specific("s"));
    for attempt in 0..3 {
        let d = next(&b, &id, owner).unwrap();
        assert_eq!(
            (body_of(&d.payload), d.delivery_count),
            ("flaky".into(), attempt)
        );
        b.settle_session(&q, &id, Some(owner), d.lock_token, abandon())
            .unwrap();
    }
    assert_eq!(counts(&b).dead_letter_message_count, 1);
    assert_eq!(bodies(&b, &id, owner), ["fine"]);
    // The dead-letter queue takes plain receivers; the reason is Service Bus's.
    let dead = b.receive(&dlq(&b), ReceiveMode::ReceiveAndDelete).unwrap();
    assert_eq!(
        app_property(&dead.payload, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String(REASON_MAX_DELIVERY.into()))
    );
    b.check_indexes();
}

#[tokio::test(start_paused = true)]
async fn deferred_messages_stay_in_their_session() {
    let b = session_broker();
    let q = queue(&b);
    let later = send_to(&b, "s", "later");
    send_to(&b, "s", "now");
    let elsewhere = send_to(&b, "t", "t1");
    let (owner, id) = accept(&b, specific("s"));
    let d = next(&b, &id, owner).unwrap();
    b.settle_session(
        &q,
        &id,
        Some(owner),
        d.lock_token,
        Outcome::Defer {
            properties_to_modify: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(bodies(&b, &id, owner), ["now"]);
    // Another session's message is not reachable from this one.
    assert_eq!(
        b.receive_deferred_session(&q, &id, Some(owner), &[elsewhere], ReceiveMode::PeekLock)
            .err(),
        Some(SessionError::MessageNotFound(elsewhere))
    );
    let got = b
        .receive_deferred_session(&q, &id, Some(owner), &[later], ReceiveMode::PeekLock)
        .unwrap();
    assert_eq!(body_of(&got[0].payload), "later");
    assert_eq!(got[0].locked_until, Some(b.now() + Duration::from_secs(30)));
    // A session holding only a deferred message is not offered to next-available receivers.
    b.release_session(&q, &id, owner);
    let (t_owner, t_id) = accept(&b, SessionRequest::NextAvailable);
    assert_eq!(t_id, "t");
    assert_eq!(bodies(&b, &t_id, t_owner), ["t1"]);
    assert_eq!(
        b.accept_session(&q, &SessionRequest::NextAvailable, SessionOwner::next()),
        Ok(None)
    );
    assert_eq!(
        counts(&b).active_message_count,
        1,
        "the deferred message is counted"
    );
    b.check_indexes();
}

#[tokio::test(start_paused = true)]
async fn session_lock_expiry_frees_the_session_and_counts_the_attempt() {
    let b = session_broker();
    let q = queue(&b);
    let mut changes = b.changes();
    send_to(&b, "s", "slow");
    let (first, id) = accept(&b, specific("s"));
    let d = next(&b, &id, first).unwrap();
    changes.borrow_and_update();
    advance(Duration::from_secs(31)).await;
    // The timer task applied the deadline and told waiting receivers.
    assert!(changes.has_changed().unwrap());
    assert!(!b.holds_session(&q, &id, first));
    assert_eq!(
        b.settle_session(&q, &id, Some(first), d.lock_token, Outcome::Complete),
        Err(SettleError::SessionLockLost)
    );
    assert_eq!(
        b.renew_session_lock(&q, &id, Some(first)),
        Err(SessionError::LockLost(id.clone()))
    );
    let (second, _) = accept(&b, specific("S"));
    let again = next(&b, &id, second).unwrap();
    assert_eq!(
        (body_of(&again.payload), again.delivery_count),
        ("slow".into(), 1)
    );
    b.check_indexes();
}

#[tokio::test(start_paused = true)]
async fn renewing_moves_the_session_lock_and_its_messages_locks() {
    let b = session_broker();
    let q = queue(&b);
    send_to(&b, "s", "long-job");
    let (owner, id) = accept(&b, specific("s"));
    let d = next(&b, &id, owner).unwrap();
    advance(Duration::from_secs(20)).await;
    let until = b.renew_session_lock(&q, &id, Some(owner)).unwrap();
    assert_eq!(until, b.now() + Duration::from_secs(30));
    // Past the first lock time: both the session and the message are still held.
    advance(Duration::from_secs(20)).await;
    assert!(b.holds_session(&q, &id, owner));
    // Only the holder may renew.
    assert_eq!(
        b.renew_session_lock(&q, &id, Some(SessionOwner::next())),
        Err(SessionError::LockLost(id.clone()))
    );
    b.settle_session(&q, &id, Some(owner), d.lock_token, Outcome::Complete)
        .unwrap();
    assert_eq!(counts(&b).active_message_count, 0);
    b.check_indexes();
}

#[tokio::test(start_paused = true)]
async fn releasing_returns_messages_without_counting_and_keeps_state() {
    let b = session_broker();
    let q = queue(&b);
    send_to(&b, "s", "in-flight");
    let (owner, id) = accept(&b, specific("s"));
    assert_eq!(b.session_state(&q, &id, Some(owner)), Ok(None));
    b.set_session_state(&q, &id, Some(owner), Some(Bytes::from_static(b"step-2")))
        .unwrap();
    next(&b, &id, owner).unwrap();
    // Only the holder's release counts.
    b.release_session(&q, &id, SessionOwner::next());
    assert!(b.holds_session(&q, &id, owner));
    b.release_session(&q, &id, owner);
    // State needs the lock, and outlives it.
    assert_eq!(
        b.session_state(&q, &id, Some(owner)),
        Err(SessionError::LockLost(id.clone()))
    );
    let (again, _) = accept(&b, SessionRequest::NextAvailable);
    let d = next(&b, &id, again).unwrap();
    assert_eq!(
        d.delivery_count, 0,
        "a clean close does not count an attempt"
    );
    assert_eq!(
        b.session_state(&q, &id, Some(again)),
        Ok(Some(Bytes::from_static(b"step-2")))
    );
    assert_eq!(b.message_sessions(&q, None), ["s"]);
    b.settle_session(&q, &id, Some(again), d.lock_token, Outcome::Complete)
        .unwrap();
    // A session with state only is listed, but not offered to next-available receivers.
    assert_eq!(b.message_sessions(&q, None), ["s"]);
    b.release_session(&q, &id, again);
    assert_eq!(
        b.accept_session(&q, &SessionRequest::NextAvailable, SessionOwner::next()),
        Ok(None)
    );
    // Null clears it; then the session is gone from the list.
    let (last, _) = accept(&b, specific("s"));
    let too_big = Bytes::from(vec![0u8; MAX_MESSAGE_SIZE + 1]);
    assert_eq!(
        b.set_session_state(&q, &id, Some(last), Some(too_big)),
        Err(SessionError::StateTooLarge {
            size: MAX_MESSAGE_SIZE + 1,
            limit: MAX_MESSAGE_SIZE
        })
    );
    b.set_session_state(&q, &id, Some(last), None).unwrap();
    assert_eq!(b.session_state(&q, &id, Some(last)), Ok(None));
    b.release_session(&q, &id, last);
    assert!(b.message_sessions(&q, None).is_empty());
    b.check_indexes();
}

#[tokio::test(start_paused = true)]
async fn next_available_prefers_the_oldest_head_and_skips_scheduled() {
    let b = session_broker();
    let q = queue(&b);
    let in_an_hour = b.now() + Duration::from_secs(3600);
    b.schedule(
        &q,
        vec![msg("future").session("z").build()],
        Some(in_an_hour),
    )
    .unwrap();
    send_to(&b, "y", "y1");
    send_to(&b, "x", "x1");
    send_to(&b, "y", "y2");
    let order: Vec<String> = (0..2)
        .map(|_| accept(&b, SessionRequest::NextAvailable).1)
        .collect();
    assert_eq!(order, ["y", "x"]);
    assert_eq!(
        b.accept_session(&q, &SessionRequest::NextAvailable, SessionOwner::next()),
        Ok(None)
    );
    // A specific session is locked even without messages.
    accept(&b, specific("empty"));
    b.check_indexes();
}

#[tokio::test(start_paused = true)]
async fn subscriptions_have_sessions_and_dead_letter_copies_without_a_session_id() {
    use crate::config::{SubscriptionConfig, TopicConfig};
    let config = Config::with_queues(Vec::<String>::new()).topic(
        TopicConfig::new("t")
            .subscription(SubscriptionConfig::new("plain"))
            .subscription(
                SubscriptionConfig::new("sessions").properties(QueueProperties {
                    requires_session: true,
                    ..props()
                }),
            ),
    );
    let b = Broker::new(&config);
    let t = b.resolve("t").unwrap();
    // The topic takes both; the session subscription dead-letters the copy without a session id.
    b.send(&t, msg("no-session").build()).unwrap();
    b.send(&t, msg("with-session").session("s").build())
        .unwrap();
    let sub = b.resolve("t/Subscriptions/sessions").unwrap();
    let dead = b
        .receive(
            &b.resolve("t/Subscriptions/sessions/$DeadLetterQueue")
                .unwrap(),
            ReceiveMode::ReceiveAndDelete,
        )
        .unwrap();
    assert_eq!(body_of(&dead.payload), "no-session");
    assert_eq!(
        app_property(&dead.payload, keys::DEAD_LETTER_REASON),
        Some(SimpleValue::String(REASON_SESSION_ID_NULL.into()))
    );
    let owner = SessionOwner::next();
    let grant = b
        .accept_session(&sub, &SessionRequest::NextAvailable, owner)
        .unwrap()
        .unwrap();
    assert_eq!(grant.session_id, "s");
    let d = b
        .receive_session(&sub, "s", owner, ReceiveMode::ReceiveAndDelete)
        .unwrap()
        .unwrap();
    assert_eq!(body_of(&d.payload), "with-session");
    assert_eq!(
        b.counts("t/Subscriptions/plain")
            .unwrap()
            .active_message_count,
        2
    );
    b.check_indexes();
}

/// Random interleavings of session operations with lock expiry: the indexes (messages, sessions,
/// session deadlines) stay consistent, every message sent is accounted for, a session has one holder
/// at a time, and a holder receives only messages of its own session.
#[tokio::test(start_paused = true)]
async fn random_session_operations_keep_indexes_and_locks_consistent() {
    const IDS: [&str; 3] = ["a", "b", "c"];
    for seed in 0..20 {
        let b = broker_with(QueueProperties {
            requires_session: true,
            default_message_time_to_live: Duration::from_secs(86_400 * 10),
            ..props()
        });
        let q = queue(&b);
        let mut rng = super::Lcg(seed);
        let (mut sent, mut gone) = (0u64, 0u64);
        // (session id, owner) of every lock we believe is held, and messages taken under them.
        let mut holders: Vec<(&str, SessionOwner)> = Vec::new();
        let mut held: Vec<(&str, SessionOwner, Delivery)> = Vec::new();
        for step in 0..300 {
            let id = IDS[rng.below(3) as usize];
            match rng.below(9) {
                0 | 1 => {
                    b.send(&q, msg("m").session(id).build()).unwrap();
                    sent += 1;
                }
                2 => {
                    let owner = SessionOwner::next();
                    let request = if rng.below(2) == 0 {
                        SessionRequest::NextAvailable
                    } else {
                        specific(id)
                    };
                    match b.accept_session(&q, &request, owner) {
                        Ok(Some(grant)) => {
                            let id = IDS.iter().find(|i| **i == grant.session_id).unwrap();
                            assert!(
                                !holders
                                    .iter()
                                    .any(|(h, o)| h == id && b.holds_session(&q, h, *o)),
                                "seed {seed} step {step}: two holders of {id}"
                            );
                            holders.push((id, owner));
                        }
                        Ok(None) | Err(SessionError::CannotBeLocked(_)) => {}
                        Err(e) => panic!("seed {seed} step {step}: {e}"),
                    }
                }
                3 | 4 if !holders.is_empty() => {
                    let (id, owner) = holders[rng.below(holders.len() as u64) as usize];
                    let in_session = b
                        .peek_session(&q, id, 0, usize::MAX)
                        .into_iter()
                        .map(|(seq, _)| seq)
                        .collect::<Vec<_>>();
                    match b.receive_session(&q, id, owner, ReceiveMode::PeekLock) {
                        Ok(Some(d)) => {
                            assert!(in_session.contains(&d.sequence_number));
                            assert!(d.delivery_count < 3, "seed {seed} step {step}: {d:?}");
                            held.push((id, owner, d));
                        }
                        Ok(None) | Err(SessionError::LockLost(_)) => {}
                        Err(e) => panic!("seed {seed} step {step}: {e}"),
                    }
                }
                5 if !held.is_empty() => {
                    let (id, owner, d) = held.swap_remove(rng.below(held.len() as u64) as usize);
                    let outcome = match rng.below(4) {
                        0 | 1 => Outcome::Complete,
                        2 => abandon(),
                        _ => Outcome::DeadLetter {
                            reason: None,
                            description: None,
                        },
                    };
                    let complete = outcome == Outcome::Complete;
                    match b.settle_session(&q, id, Some(owner), d.lock_token, outcome) {
                        Ok(()) if complete => gone += 1,
                        Ok(()) | Err(SettleError::SessionLockLost) | Err(SettleError::LockLost) => {
                        }
                        Err(e) => panic!("seed {seed} step {step}: {e}"),
                    }
                }
                6 if !holders.is_empty() => {
                    let (id, owner) = holders.swap_remove(rng.below(holders.len() as u64) as usize);
                    if rng.below(2) == 0 {
                        b.release_session(&q, id, owner);
                    } else if b.renew_session_lock(&q, id, Some(owner)).is_ok() {
                        holders.push((id, owner));
                    }
                }
                7 => advance(Duration::from_secs(rng.below(40))).await,
                _ => {
                    if let Some(&(id, owner)) = holders.first() {
                        let _ = b.set_session_state(
                            &q,
                            id,
                            Some(owner),
                            Some(Bytes::from_static(b"s")),
                        );
                    }
                }
            }
            b.check_indexes();
            let c = counts(&b);
            let present = c.active_message_count + c.dead_letter_message_count;
            assert_eq!(sent, gone + present, "seed {seed} step {step}: {c:?}");
        }
    }
}

/// A queue the administration API creates with `RequiresSession` is a session queue at once: the
/// registry and the session layer share the queue's properties.
#[tokio::test(start_paused = true)]
async fn a_session_queue_created_at_run_time_takes_session_receivers_at_once() {
    let b = broker_with(props());
    b.create_queue(
        "made-at-run-time",
        QueueProperties {
            requires_session: true,
            ..props()
        },
    )
    .unwrap();
    let q = b.resolve("made-at-run-time").unwrap();
    assert_eq!(
        b.send(&q, msg("no-session").build()),
        Err(BrokerError::NotAllowed(SESSION_ID_MISSING.into()))
    );
    b.send(&q, msg("in-a").session("a").build()).unwrap();
    let owner = SessionOwner::next();
    let grant = b
        .accept_session(&q, &specific("a"), owner)
        .unwrap()
        .expect("the new queue's session is granted");
    assert_eq!(grant.session_id, "a");
    let delivery = b
        .receive_session(&q, "a", owner, ReceiveMode::PeekLock)
        .unwrap()
        .expect("its message");
    assert_eq!(body_of(&delivery.payload), "in-a");
}
