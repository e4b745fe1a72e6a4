//! The broker core: entities, the queue state machine, locks and timers. No sockets here.
//!
//! INTERFACE CONTRACT (agreed between the broker and the AMQP server layers; keep these signatures
//! stable, extend rather than change). Time comes from `tokio::time::Instant::now()` so tests can run
//! under `#[tokio::test(start_paused = true)]` and `tokio::time::advance`.
//!
//! # Entity model
//! Every entity a client receives from is *queue-like*: a queue, or a topic's subscription. Both are
//! the one state machine in `queue` (locks, delivery count, dead-letter queue, TTL, defer, scheduled,
//! MaxDeliveryCount), kept in one table and addressed by index; an [`EntityPath`] says which entry (and
//! whether its dead-letter queue) an address names. A topic (`topic`) is not queue-like: it numbers,
//! de-duplicates and schedules what is sent to it, and fans each message out to its subscriptions by
//! their rules, as cheap copies sharing the client's bytes. Sessions ([`session`]) are a layer of the
//! queue-like state machine (locks and state next to message locks), so queues and subscriptions get
//! them alike; the administration API adds to queue-like entries and topics without changing this split.
//!
//! Inside: [`entity_path`] normalises addresses; `registry` keeps which entities exist (Config.json's,
//! and those the administration API creates, updates and deletes at run time) in index-stable slots; `clock` derives the wall-clock times clients see from
//! tokio's clock; `timers` is the task that applies deadlines when nobody calls. [`Broker`] is the
//! cloneable handle: one mutex per entity, never two held at once (fan-out and forwarding move messages
//! to another entity only after releasing the first).

mod clock;
mod durable;
pub mod entity_path;
mod queue;
mod registry;
pub mod session;
mod timers;
mod topic;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use uuid::Uuid;

use self::clock::Clock;
use self::queue::{Queue, Sub};
use self::topic::{Accepted, Copy, Topic};
use crate::config::{Config, QueueProperties};
use crate::message::StoredMessage;

pub use self::queue::{MAX_MESSAGE_SIZE, REASON_MAX_DELIVERY, REASON_TTL};
pub use self::registry::{EntityInfo, EntityProperties, RegistryError, RuleInfo};
pub use self::session::{SessionError, SessionGrant, SessionOwner, SessionRequest};
pub use self::topic::REASON_FILTER;

/// Service Bus dead-letters a message forwarded through more than this many entities.
pub const MAX_TRANSFER_HOPS: u32 = 4;
pub const REASON_HOPS: &str = "MaxTransferHopCountExceeded";

/// What kind of entity an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Queue,
    Topic,
    Subscription,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    /// A queue or subscription (index into the queue-like table), or its dead-letter queue.
    QueueLike {
        index: usize,
        sub: Sub,
    },
    Topic {
        index: usize,
    },
}

/// An address after normalisation and lookup (`amqps://host:port/queue` → `queue`; a leading `/` is
/// stripped; `t/subscriptions/s` → `t/Subscriptions/s`). Displays as the entity path with its
/// configured spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityPath {
    node: Node,
    kind: EntityKind,
    /// `q`, `t` or `t/Subscriptions/s`, as configured (without `/$DeadLetterQueue`).
    name: Arc<str>,
}

impl fmt::Display for EntityPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.is_dead_letter() {
            write!(f, "/{}", entity_path::DEAD_LETTER_SUFFIX)?;
        }
        Ok(())
    }
}

impl EntityPath {
    pub fn kind(&self) -> EntityKind {
        self.kind
    }

    /// Whether this is the dead-letter queue of a queue or subscription.
    pub fn is_dead_letter(&self) -> bool {
        matches!(
            self.node,
            Node::QueueLike {
                sub: Sub::DeadLetter,
                ..
            }
        )
    }

    /// Queues and topics take sends; subscriptions and dead-letter queues do not.
    pub fn accepts_sends(&self) -> bool {
        !self.is_dead_letter() && self.kind != EntityKind::Subscription
    }

    /// Queues, subscriptions and their dead-letter queues can be received from; topics cannot.
    pub fn accepts_receivers(&self) -> bool {
        self.kind != EntityKind::Topic
    }

    /// The entity's name without `/$DeadLetterQueue` (`q`, `t`, `t/Subscriptions/s`).
    pub fn entity_name(&self) -> &str {
        &self.name
    }

    /// The queue this path belongs to (the entity name; kept for callers written for queues only).
    pub fn queue(&self) -> &str {
        &self.name
    }

    fn queue_like(&self) -> Option<(usize, Sub)> {
        match self.node {
            Node::QueueLike { index, sub } => Some((index, sub)),
            Node::Topic { .. } => None,
        }
    }
}

/// How a receiver takes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveMode {
    /// Lock the message; it stays in the queue until settled or the lock expires.
    PeekLock,
    /// Remove the message as it is handed out (sender-settled links).
    ReceiveAndDelete,
}

/// One message handed to a receiver.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The lock token (zero/nil for receive-and-delete). The AMQP layer writes it as the delivery tag in
    /// .NET GUID byte order (`to_bytes_le`).
    pub lock_token: Uuid,
    pub sequence_number: i64,
    /// The whole encoded message for the wire: broker header (with delivery-count) and annotations
    /// (`x-opt-sequence-number`, `x-opt-enqueued-time`, `x-opt-locked-until`, ...), then the client's
    /// bare message bytes untouched.
    pub payload: Bytes,
    pub delivery_count: u32,
    pub locked_until: Option<SystemTime>,
}

/// What a receiver asks to happen to a locked message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `accepted`: delete it.
    Complete,
    /// `modified{delivery-failed}` / `released`: unlock; `count_attempt` adds one to delivery-count.
    Abandon {
        count_attempt: bool,
        properties_to_modify: Vec<(String, fe2o3_amqp_types::primitives::Value)>,
    },
    /// `modified{undeliverable-here}`: set aside; only receive-by-sequence-number can fetch it.
    Defer {
        properties_to_modify: Vec<(String, fe2o3_amqp_types::primitives::Value)>,
    },
    /// `rejected{com.microsoft:dead-letter}`: move to `<queue>/$DeadLetterQueue`.
    DeadLetter {
        reason: Option<String>,
        description: Option<String>,
    },
}

/// Why a settlement or lock operation failed. The AMQP layer maps these to error conditions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// `com.microsoft:message-lock-lost`.
    #[error("the lock on the message was lost (it expired or was already settled)")]
    LockLost,
    /// `com.microsoft:message-not-found`.
    #[error("no such message")]
    MessageNotFound,
    /// `com.microsoft:session-lock-lost`: the message's session is no longer locked by the receiver.
    #[error(
        "the session lock was lost (it expired or the session was released); accept the session again"
    )]
    SessionLockLost,
}

impl SettleError {
    /// The AMQP error condition Service Bus uses for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            SettleError::LockLost => "com.microsoft:message-lock-lost",
            SettleError::MessageNotFound => "com.microsoft:message-not-found",
            SettleError::SessionLockLost => "com.microsoft:session-lock-lost",
        }
    }
}

/// Why an entity operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// `amqp:not-found`.
    #[error("the messaging entity '{0}' could not be found")]
    NotFound(String),
    /// `amqp:link:message-size-exceeded`.
    #[error("the message is {size} bytes, larger than the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
    /// `com.microsoft:message-not-found` (sequence numbers that do not exist).
    #[error("no message with sequence number {0}")]
    SequenceNotFound(i64),
    /// `amqp:not-allowed`: the operation does not apply to this kind of entity (a send to a
    /// subscription, a receive from a topic).
    #[error("{0}")]
    NotAllowed(String),
    /// `com.microsoft:entity-already-exists` (a rule name taken in that subscription).
    #[error("the messaging entity '{0}' already exists")]
    AlreadyExists(String),
}

impl From<RegistryError> for BrokerError {
    fn from(error: RegistryError) -> BrokerError {
        match error {
            RegistryError::AlreadyExists(what) => BrokerError::AlreadyExists(what),
            RegistryError::NotFound(what) => BrokerError::NotFound(what),
            RegistryError::Invalid(why) => BrokerError::NotAllowed(why),
        }
    }
}

/// The counts Azure reports for a queue (names as in Azure's `countDetails`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueCounts {
    pub active_message_count: u64,
    pub dead_letter_message_count: u64,
    pub scheduled_message_count: u64,
    pub transfer_message_count: u64,
    pub transfer_dead_letter_message_count: u64,
}

/// A cheap, cloneable handle to the broker state (an `Arc` inside).
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// Where a message sent to (or forwarded to) an entity is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    Queue(usize),
    Topic(usize),
}

/// The shared state. Each entity has its own mutex: operations on different entities do not contend.
struct Inner {
    /// Which entities exist (queues, topics, subscriptions) and where forwarding sends messages;
    /// changed at run time by the administration API (see `registry`).
    entities: RwLock<registry::Entities>,
    clock: Clock,
    changes: watch::Sender<u64>,
    /// Wakes the timer task when a deadline earlier than the one it sleeps towards appears.
    timer_wake: Arc<Notify>,
    /// The deadline the timer task sleeps towards, as [`Clock::nanos`]; 0 while it recomputes, so every
    /// operation with a deadline wakes it; `u64::MAX` when it waits for no deadline.
    timer_target: AtomicU64,
    /// Counts entity deletions, so connections look for links to detach only after one.
    deletions: AtomicU64,
    /// `--data-dir`: set once the stored state is back (see `durable`); every change goes to it.
    store: OnceLock<crate::store::Store>,
    /// Orders saves of the entity definitions.
    definitions: Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The timer task holds only a `Weak`; wake it so it sees the broker is gone and ends.
        self.timer_wake.notify_one();
    }
}

/// A poisoned lock means a panic mid-operation elsewhere; the entity's indexes are updated in a
/// remove-then-insert style, so carrying on with the state is the least harmful choice.
fn lock<T>(q: &Mutex<T>) -> MutexGuard<'_, T> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

impl Broker {
    /// Build the entities of the (first) namespace in `config`. Spawns the timer task that expires locks,
    /// messages (TTL) and enqueues scheduled messages, so it must be called inside a tokio runtime.
    pub fn new(config: &Config) -> Broker {
        let broker = Broker::build(config);
        broker.start_timers();
        broker
    }

    /// The entities of `config`, without the timer task (a store fills them first).
    fn build(config: &Config) -> Broker {
        let inner = Arc::new(Inner {
            entities: RwLock::new(registry::Entities::default()),
            clock: Clock::start(),
            changes: watch::Sender::new(0),
            timer_wake: Arc::new(Notify::new()),
            timer_target: AtomicU64::new(u64::MAX),
            deletions: AtomicU64::new(0),
            store: OnceLock::new(),
            definitions: Mutex::new(()),
        });
        let broker = Broker { inner };
        // The config loader has checked names and references; a clash here is a config built in code.
        let created = config
            .queues()
            .iter()
            .map(|q| broker.create_queue(&q.name, q.properties.clone()).map(drop))
            .chain(config.topics().iter().flat_map(|t| {
                std::iter::once(broker.create_topic(&t.name, t.properties.clone()).map(drop)).chain(
                    t.subscriptions.iter().map(|s| {
                        broker
                            .create_subscription(
                                &t.name,
                                &s.name,
                                s.properties.clone(),
                                s.dead_lettering_on_filter_evaluation_exceptions,
                                s.rules.clone(),
                            )
                            .map(drop)
                    }),
                )
            }))
            .collect::<Vec<_>>();
        for e in created.into_iter().filter_map(Result::err) {
            tracing::warn!(error = %e, "configured entity skipped");
        }
        broker
    }

    fn start_timers(&self) {
        tokio::spawn(timers::run(
            Arc::downgrade(&self.inner),
            self.inner.timer_wake.clone(),
        ));
    }

    /// Normalise an address (`amqps://host/q`, `/q`, `q`, `q/$DeadLetterQueue`, `t`,
    /// `t/Subscriptions/s`, `t/Subscriptions/s/$DeadLetterQueue`) and check it exists. Management
    /// (`q/$management`) and `$cbs` addresses are not entities and return NotFound here.
    pub fn resolve(&self, address: &str) -> Result<EntityPath, BrokerError> {
        let split = entity_path::split_address(address);
        let not_found = || BrokerError::NotFound(address.to_string());
        let (key, rest) = match split.sub_path.and_then(entity_path::split_subscription) {
            Some((sub, rest)) => (
                format!("{}/{}/{}", split.queue, entity_path::SUBSCRIPTIONS, sub)
                    .to_ascii_lowercase(),
                rest,
            ),
            None => (split.queue.to_ascii_lowercase(), split.sub_path),
        };
        let path = self
            .entities()
            .by_name
            .get(&key)
            .cloned()
            .ok_or_else(not_found)?;
        match rest {
            None => Ok(path),
            Some(sub) if entity_path::is_dead_letter(sub) => match path.node {
                Node::QueueLike { index, .. } => Ok(EntityPath {
                    node: Node::QueueLike {
                        index,
                        sub: Sub::DeadLetter,
                    },
                    ..path
                }),
                Node::Topic { .. } => Err(not_found()),
            },
            Some(_) => Err(not_found()),
        }
    }

    /// Run `op` on a queue-like entity (by name) after applying its due deadlines; see
    /// [`Broker::with_index`].
    fn with_queue<R>(
        &self,
        name: &str,
        op: impl FnOnce(&mut Queue, Instant) -> (R, bool),
    ) -> Option<R> {
        let (idx, _) = self.resolve(name).ok()?.queue_like()?;
        Some(self.with_index(idx, op))
    }

    /// Run `op` on the queue-like entity `entity` names; `None` for a topic.
    fn with_entity<R>(
        &self,
        entity: &EntityPath,
        op: impl FnOnce(&mut Queue, Sub, Instant) -> (R, bool),
    ) -> Option<R> {
        let (idx, sub) = entity.queue_like()?;
        Some(self.with_index(idx, |q, now| op(q, sub, now)))
    }

    /// Run `op` on a queue-like entity after applying its due deadlines. Bumps [`Broker::changes`] if a
    /// message may have become available, wakes the timer if the entity now has an earlier deadline,
    /// and moves forwarded dead letters on once the entity's lock is released (never two locks at once).
    fn with_index<R>(&self, idx: usize, op: impl FnOnce(&mut Queue, Instant) -> (R, bool)) -> R {
        let now = Instant::now();
        let slot = self.queue_slot(idx);
        let mut q = lock(&slot);
        let expired = q.expire(now);
        let (result, available) = op(&mut q, now);
        let deadline = q.next_deadline();
        let forwarded = q.take_forwarded();
        let saved = self.journal_queue(&mut q);
        drop(q);
        self.after_change(expired || available, deadline);
        self.forward_dead_letters(idx, forwarded);
        // Sent after the forwarded dead letters were stored, so one commit holds both sides.
        drop(saved);
        result
    }

    /// Run `op` on a topic after fanning out its due scheduled messages; the messages `op` accepts for
    /// now are fanned out after the topic's lock is released.
    fn with_topic<R>(
        &self,
        idx: usize,
        op: impl FnOnce(&mut Topic, Instant) -> (R, Vec<(i64, StoredMessage)>),
    ) -> R {
        let now = Instant::now();
        let enqueued = self.inner.clock.wall(now);
        let slot = self.topic_slot(idx);
        let mut t = lock(&slot);
        let mut copies = self.route_due(&mut t, now);
        let (result, accepted) = op(&mut t, now);
        for (seq, message) in accepted {
            copies.extend(
                t.route(seq, &message, enqueued)
                    .into_iter()
                    .map(|c| (c, enqueued)),
            );
        }
        let deadline = t.next_deadline();
        let saved = self.journal_topic(&mut t);
        drop(t);
        self.after_change(false, deadline);
        self.store_copies(copies, 0);
        // Sent after the copies, so a due scheduled message is never gone from both places.
        drop(saved);
        result
    }

    /// Route the topic's due scheduled messages; each is enqueued at the time it became due.
    fn route_due(&self, t: &mut Topic, now: Instant) -> Vec<((usize, Copy), SystemTime)> {
        let mut copies = Vec::new();
        for (seq, at, message) in t.expire(now) {
            let enqueued = self.inner.clock.wall(at);
            copies.extend(
                t.route(seq, &message, enqueued)
                    .into_iter()
                    .map(|c| (c, enqueued)),
            );
        }
        copies
    }

    /// Put the copies a topic routed into their subscriptions (or where those forward to).
    fn store_copies(&self, copies: Vec<((usize, Copy), SystemTime)>, hops: u32) {
        for ((idx, copy), enqueued) in copies {
            match copy {
                Copy::Deliver { sequence, message } => match self.forward_to(idx) {
                    Destination::Queue(to) if to == idx => self.with_index(idx, |q, now| {
                        q.admit_copy(sequence, message, enqueued, now);
                        ((), true)
                    }),
                    to if hops >= MAX_TRANSFER_HOPS => self.with_index(idx, |q, _| {
                        tracing::debug!(?to, "forwarding chain too long; dead-lettered");
                        let description = format!(
                            "The message was forwarded more than {MAX_TRANSFER_HOPS} times."
                        );
                        q.dead_letter_copy(sequence, message, enqueued, REASON_HOPS, &description);
                        ((), false)
                    }),
                    to => self.deliver(to, message, hops + 1),
                },
                Copy::DeadLetter {
                    sequence,
                    message,
                    description,
                } => self.with_index(idx, |q, _| {
                    q.dead_letter_copy(sequence, message, enqueued, REASON_FILTER, &description);
                    ((), false)
                }),
            }
        }
    }

    /// Store a message the broker moves itself (forwarded, dead letters forwarded) in a destination.
    fn deliver(&self, to: Destination, message: StoredMessage, hops: u32) {
        match to {
            Destination::Queue(q) => self.with_index(q, |q, now| {
                q.admit(message, None, now);
                ((), true)
            }),
            Destination::Topic(t) => {
                let now = Instant::now();
                let enqueued = self.inner.clock.wall(now);
                let slot = self.topic_slot(t);
                let mut topic = lock(&slot);
                let mut copies = self.route_due(&mut topic, now);
                if let Ok(Accepted::Now(seq, m)) = topic.accept(message, None, now, false) {
                    copies.extend(
                        topic
                            .route(seq, &m, enqueued)
                            .into_iter()
                            .map(|c| (c, enqueued)),
                    );
                }
                let saved = self.journal_topic(&mut topic);
                drop(topic);
                self.store_copies(copies, hops);
                drop(saved);
            }
        }
    }

    fn after_change(&self, available: bool, deadline: Option<Instant>) {
        if available {
            self.bump();
        }
        if let Some(d) = deadline
            && self.inner.clock.nanos(d) < self.inner.timer_target.load(Ordering::SeqCst)
        {
            self.inner.timer_wake.notify_one();
        }
    }

    /// Enqueue dead letters of entity `from` in its `ForwardDeadLetteredMessagesTo` destination.
    fn forward_dead_letters(&self, from: usize, messages: Vec<StoredMessage>) {
        if messages.is_empty() {
            return;
        }
        let Some(to) = self.entities().dead_letters_to[from] else {
            return;
        };
        for m in messages {
            self.deliver(to, m, 1);
        }
    }

    fn bump(&self) {
        self.inner.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Enqueue a message sent by a client (or scheduled, if it has `x-opt-scheduled-enqueue-time` in the
    /// future). Returns its sequence number. Enforces the 256 KiB size limit. Sending to a dead-letter
    /// queue or a subscription is refused. With duplicate detection on, a repeated message-id inside
    /// the window is accepted and dropped, and the original's sequence number returned.
    pub fn send(&self, entity: &EntityPath, message: StoredMessage) -> Result<i64, BrokerError> {
        self.enqueue_all(entity, vec![message], None)?
            .pop()
            .ok_or_else(|| BrokerError::NotFound(entity.to_string()))
    }

    /// The entity a message sent to `entity` is stored in: its `ForwardTo` destination, or itself.
    fn send_target(&self, entity: &EntityPath) -> Result<Destination, BrokerError> {
        if !entity.accepts_sends() {
            return Err(BrokerError::NotAllowed(format!(
                "'{entity}' cannot be sent to; send to the {}",
                if entity.is_dead_letter() {
                    "queue or topic itself"
                } else {
                    "topic"
                }
            )));
        }
        Ok(match entity.node {
            Node::QueueLike { index, .. } => self.forward_to(index),
            Node::Topic { index } => Destination::Topic(index),
        })
    }

    /// Enqueue a batch (message-format 0x80013700) all or nothing: sizes are checked first, then every
    /// message is enqueued under one lock. Returns the sequence numbers in order.
    pub fn send_batch(
        &self,
        entity: &EntityPath,
        messages: Vec<StoredMessage>,
    ) -> Result<Vec<i64>, BrokerError> {
        self.enqueue_all(entity, messages, None)
    }

    /// Enqueue messages all or nothing; each message's own `x-opt-scheduled-enqueue-time` wins over
    /// `default_at`.
    fn enqueue_all(
        &self,
        entity: &EntityPath,
        messages: Vec<StoredMessage>,
        default_at: Option<SystemTime>,
    ) -> Result<Vec<i64>, BrokerError> {
        let target = self.send_target(entity)?;
        if let Some(big) = messages.iter().find(|m| m.len() > MAX_MESSAGE_SIZE) {
            return Err(BrokerError::MessageTooLarge {
                size: big.len(),
                limit: MAX_MESSAGE_SIZE,
            });
        }
        match target {
            Destination::Queue(idx) => self.with_index(idx, |q, now| {
                // Every message of a batch is checked before any is stored (all or nothing).
                if let Some(e) = messages.iter().find_map(|m| q.check_session_id(m).err()) {
                    return (Err(e), false);
                }
                let r: Result<Vec<i64>, BrokerError> = messages
                    .into_iter()
                    .map(|m| {
                        let at = m.scheduled_enqueue_time().or(default_at);
                        q.enqueue(m, at, now)
                    })
                    .collect();
                (r, true)
            }),
            Destination::Topic(idx) => self.with_topic(idx, |t, now| {
                let mut numbers = Vec::with_capacity(messages.len());
                let mut now_due = Vec::new();
                for m in messages {
                    let at = m.scheduled_enqueue_time().or(default_at);
                    match t.accept(m, at, now, true) {
                        Ok(Accepted::Now(seq, m)) => {
                            numbers.push(seq);
                            now_due.push((seq, *m));
                        }
                        Ok(Accepted::Held(seq)) => numbers.push(seq),
                        Err(e) => return (Err(e), Vec::new()),
                    }
                }
                (Ok(numbers), now_due)
            }),
        }
    }

    /// Take the next available message, locked (peek-lock) or removed (receive-and-delete). `None` when
    /// nothing is available now (or `entity` is a topic); wait on [`Broker::changes`] and try again.
    pub fn receive(&self, entity: &EntityPath, mode: ReceiveMode) -> Option<Delivery> {
        self.with_entity(entity, |q, sub, now| (q.receive(sub, mode, now), false))
            .flatten()
    }

    /// Settle a locked message by its lock token.
    pub fn settle(
        &self,
        entity: &EntityPath,
        lock_token: Uuid,
        outcome: Outcome,
    ) -> Result<(), SettleError> {
        self.with_entity(entity, |q, sub, _| {
            match q.settle(sub, lock_token, outcome) {
                Ok(available) => (Ok(()), available),
                Err(e) => (Err(e), false),
            }
        })
        .unwrap_or(Err(SettleError::MessageNotFound))
    }

    /// Extend the locks; returns the new locked-until times, in order.
    pub fn renew_locks(
        &self,
        entity: &EntityPath,
        lock_tokens: &[Uuid],
    ) -> Result<Vec<SystemTime>, SettleError> {
        self.with_entity(entity, |q, sub, now| {
            (q.renew(sub, lock_tokens, now), false)
        })
        .unwrap_or(Err(SettleError::MessageNotFound))
    }

    /// Browse without locking: up to `count` messages with sequence number >= `from_sequence`
    /// (active, deferred and scheduled ones, as Service Bus does), encoded like a delivery.
    pub fn peek(&self, entity: &EntityPath, from_sequence: i64, count: usize) -> Vec<(i64, Bytes)> {
        self.with_entity(entity, |q, sub, _| {
            (q.peek(sub, from_sequence, count), false)
        })
        .unwrap_or_default()
    }

    /// Schedule messages for `enqueue_at` (each message's own `x-opt-scheduled-enqueue-time` wins when
    /// present). Returns their sequence numbers. A time in the past enqueues at once.
    pub fn schedule(
        &self,
        entity: &EntityPath,
        messages: Vec<StoredMessage>,
        enqueue_at: Option<SystemTime>,
    ) -> Result<Vec<i64>, BrokerError> {
        self.enqueue_all(entity, messages, enqueue_at)
    }

    /// Cancel scheduled messages by sequence number.
    pub fn cancel_scheduled(
        &self,
        entity: &EntityPath,
        sequence_numbers: &[i64],
    ) -> Result<(), BrokerError> {
        match self.send_target(entity)? {
            Destination::Topic(idx) => {
                self.with_topic(idx, |t, _| (t.cancel(sequence_numbers), Vec::new()))
            }
            Destination::Queue(idx) => {
                self.with_index(idx, |q, _| (q.cancel_scheduled(sequence_numbers), false))
            }
        }
    }

    /// Receive deferred messages by sequence number (locks them in peek-lock mode).
    pub fn receive_deferred(
        &self,
        entity: &EntityPath,
        sequence_numbers: &[i64],
        mode: ReceiveMode,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.with_entity(entity, |q, sub, now| {
            (q.receive_deferred(sub, sequence_numbers, mode, now), false)
        })
        .unwrap_or_else(|| {
            Err(BrokerError::NotAllowed(format!(
                "'{entity}' holds no messages; receive from one of its subscriptions"
            )))
        })
    }

    /// Counts for a queue or subscription by path (`q`, `t/Subscriptions/s`; case-insensitive, as
    /// Service Bus names are). `None` if unknown.
    pub fn counts(&self, entity: &str) -> Option<QueueCounts> {
        self.with_queue(entity, |q, _| (q.counts(), false))
    }

    /// Counts for a topic: its scheduled messages, and the sum over its subscriptions of the rest
    /// (messages do not sit at the topic). `None` if unknown.
    pub fn topic_counts(&self, topic: &str) -> Option<QueueCounts> {
        let path = self.resolve(topic).ok()?;
        let Node::Topic { index } = path.node else {
            return None;
        };
        let (scheduled, subs) = self.with_topic(index, |t, _| {
            let subs: Vec<usize> = t.routes.iter().map(|r| r.queue).collect();
            ((t.scheduled_count() as u64, subs), Vec::new())
        });
        let mut counts = QueueCounts {
            scheduled_message_count: scheduled,
            ..QueueCounts::default()
        };
        for idx in subs {
            let c = self.with_index(idx, |q, _| (q.counts(), false));
            counts.active_message_count += c.active_message_count;
            counts.dead_letter_message_count += c.dead_letter_message_count;
            counts.transfer_message_count += c.transfer_message_count;
            counts.transfer_dead_letter_message_count += c.transfer_dead_letter_message_count;
        }
        Some(counts)
    }

    /// `(topic, subscription)` of a subscription's path (`t/Subscriptions/s`); rules live there and
    /// nowhere else.
    fn subscription_of(entity: &EntityPath) -> Result<(&str, &str), BrokerError> {
        let separator = format!("/{}/", entity_path::SUBSCRIPTIONS);
        entity
            .entity_name()
            .rsplit_once(separator.as_str())
            .filter(|_| entity.kind() == EntityKind::Subscription && !entity.is_dead_letter())
            .ok_or_else(|| {
                BrokerError::NotAllowed(format!(
                    "'{entity}' is not a subscription; rules belong to '<topic>/Subscriptions/<name>'"
                ))
            })
    }

    /// A subscription's rules, ordered by name (as Service Bus lists them), for `$management`. The
    /// registry keeps them, so `$management` and the administration API see and change the same rules.
    pub fn subscription_rules(
        &self,
        entity: &EntityPath,
    ) -> Result<Vec<crate::filter::Rule>, BrokerError> {
        let (topic, sub) = Self::subscription_of(entity)?;
        let mut rules: Vec<_> = self
            .rules(topic, sub)?
            .into_iter()
            .map(|info| info.rule)
            .collect();
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rules)
    }

    /// Add a rule to a subscription; names are unique per subscription (case-insensitive).
    pub fn add_rule(
        &self,
        entity: &EntityPath,
        rule: crate::filter::Rule,
    ) -> Result<(), BrokerError> {
        let (topic, sub) = Self::subscription_of(entity)?;
        self.put_rule(topic, sub, rule, false)?;
        Ok(())
    }

    /// Remove a subscription's rule by name; removing every rule means it receives nothing.
    pub fn remove_rule(&self, entity: &EntityPath, name: &str) -> Result<(), BrokerError> {
        let (topic, sub) = Self::subscription_of(entity)?;
        Ok(self.delete_rule(topic, sub, name)?)
    }

    /// Names of all queues, in creation order.
    pub fn queue_names(&self) -> Vec<String> {
        self.entities().names(EntityKind::Queue)
    }

    /// Names of all topics, in creation order.
    pub fn topic_names(&self) -> Vec<String> {
        self.entities().names(EntityKind::Topic)
    }

    fn forward_to(&self, idx: usize) -> Destination {
        self.entities().forward_to[idx]
    }

    /// A queue's or subscription's properties (lock duration, max delivery count, ...). `None` if
    /// unknown.
    pub fn queue_properties(&self, entity: &str) -> Option<QueueProperties> {
        self.with_queue(entity, |q, _| (q.properties().clone(), false))
    }

    /// The broker's current wall-clock time. It follows `tokio::time` (paused and advanced in tests), so
    /// use it rather than `SystemTime::now()` when comparing with locked-until or scheduled times.
    pub fn now(&self) -> SystemTime {
        self.inner.clock.wall(Instant::now())
    }

    /// The instant (on the broker's clock) of a wall-clock time, e.g. a token's expiry, so it can be
    /// slept until and moves with `tokio::time::advance` in tests.
    pub fn instant_at(&self, at: SystemTime) -> Instant {
        self.inner.clock.instant(at)
    }

    /// A generation counter that changes whenever a message may have become available (send, unlock,
    /// lock expiry, scheduled enqueue). Connection tasks wait on it to retry `receive` for links with credit.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }
}

#[cfg(test)]
impl Broker {
    /// Check every queue's internal indexes against its messages.
    fn check_indexes(&self) {
        for q in self.entities().queues.iter() {
            lock(q).check_indexes();
        }
    }
}

#[cfg(test)]
mod tests;
