//! The broker core: entities, the queue state machine, locks and timers. No sockets here.
//!
//! INTERFACE CONTRACT (agreed between the broker and the AMQP server layers; keep these signatures
//! stable, extend rather than change). Time comes from `tokio::time::Instant::now()` so tests can run
//! under `#[tokio::test(start_paused = true)]` and `tokio::time::advance`.
//!
//! Inside: [`entity_path`] normalises addresses; `queue` is the state machine of one queue and its
//! dead-letter queue, driven by explicit instants; `clock` derives the wall-clock times clients see from
//! tokio's clock; `timers` is the task that applies deadlines when nobody calls. [`Broker`] is the
//! cloneable handle: one mutex per queue, never two held at once (forwarding moves messages between
//! queues only after releasing the first).

mod clock;
pub mod entity_path;
mod queue;
mod timers;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use uuid::Uuid;

use self::clock::Clock;
use self::queue::{Queue, Sub};
use crate::config::{Config, QueueProperties};
use crate::message::StoredMessage;

pub use self::queue::{MAX_MESSAGE_SIZE, REASON_MAX_DELIVERY, REASON_TTL};

/// Which queue-like thing an address names, after normalisation
/// (`amqps://host:port/queue` → `queue`; a leading `/` is stripped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityPath {
    /// A queue, by its configured name (case as configured).
    Queue(String),
    /// `<queue>/$DeadLetterQueue`.
    DeadLetter(String),
}

impl fmt::Display for EntityPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityPath::Queue(q) => f.write_str(q),
            EntityPath::DeadLetter(q) => write!(f, "{q}/{}", entity_path::DEAD_LETTER_SUFFIX),
        }
    }
}

impl EntityPath {
    fn sub(&self) -> Sub {
        match self {
            EntityPath::Queue(_) => Sub::Main,
            EntityPath::DeadLetter(_) => Sub::DeadLetter,
        }
    }

    /// The queue this path belongs to.
    pub fn queue(&self) -> &str {
        match self {
            EntityPath::Queue(q) | EntityPath::DeadLetter(q) => q,
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

/// The shared state. Each queue has its own mutex: operations on different queues do not contend.
struct Inner {
    queues: Vec<Mutex<Queue>>,
    /// Lower-cased name → index into `queues` (Service Bus names are case-insensitive).
    by_name: HashMap<String, usize>,
    names: Vec<String>,
    /// Per queue: the queue its messages are enqueued in (itself unless `ForwardTo` is set).
    forward_to: Vec<usize>,
    /// Per queue: where its dead letters go instead of its dead-letter queue
    /// (`ForwardDeadLetteredMessagesTo`, itself followed through `ForwardTo`).
    dead_letters_to: Vec<Option<usize>>,
    clock: Clock,
    changes: watch::Sender<u64>,
    /// Wakes the timer task when a deadline earlier than the one it sleeps towards appears.
    timer_wake: Arc<Notify>,
    /// The deadline the timer task sleeps towards, as [`Clock::nanos`]; 0 while it recomputes, so every
    /// operation with a deadline wakes it; `u64::MAX` when it waits for no deadline.
    timer_target: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The timer task holds only a `Weak`; wake it so it sees the broker is gone and ends.
        self.timer_wake.notify_one();
    }
}

/// A poisoned lock means a panic mid-operation elsewhere; the queue's indexes are updated in a
/// remove-then-insert style, so carrying on with the state is the least harmful choice.
fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

impl Broker {
    /// Build the entities of the (first) namespace in `config`. Spawns the timer task that expires locks,
    /// messages (TTL) and enqueues scheduled messages, so it must be called inside a tokio runtime.
    pub fn new(config: &Config) -> Broker {
        let clock = Clock::start();
        let configs = config.queues();
        let by_name: HashMap<String, usize> = configs
            .iter()
            .enumerate()
            .map(|(i, q)| (q.name.to_ascii_lowercase(), i))
            .collect();
        let names: Vec<String> = configs.iter().map(|q| q.name.clone()).collect();
        let index = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| by_name.get(&n.to_ascii_lowercase()).copied())
        };
        // Where a message sent to each queue ends up after following `ForwardTo`. The config loader
        // refuses loops; the bound also covers configs built in code.
        let next: Vec<Option<usize>> = configs
            .iter()
            .map(|q| index(&q.properties.forward_to))
            .collect();
        let destination = |start: usize| {
            let mut at = start;
            for _ in 0..configs.len() {
                match next[at] {
                    Some(to) if to != at => at = to,
                    _ => break,
                }
            }
            at
        };
        let forward_to: Vec<usize> = (0..configs.len()).map(destination).collect();
        let dead_letters_to: Vec<Option<usize>> = configs
            .iter()
            .map(|q| index(&q.properties.forward_dead_lettered_messages_to).map(destination))
            .collect();
        let queues = configs
            .iter()
            .zip(&dead_letters_to)
            .map(|(q, dl)| {
                let mut queue = Queue::new(q.name.clone(), q.properties.clone(), clock);
                queue.forward_dead_letters(dl.is_some());
                Mutex::new(queue)
            })
            .collect();
        let timer_wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            queues,
            by_name,
            names,
            forward_to,
            dead_letters_to,
            clock,
            changes: watch::Sender::new(0),
            timer_wake: timer_wake.clone(),
            timer_target: AtomicU64::new(u64::MAX),
        });
        tokio::spawn(timers::run(Arc::downgrade(&inner), timer_wake));
        Broker { inner }
    }

    /// Normalise an address (`amqps://host/q`, `/q`, `q`, `q/$DeadLetterQueue`) and check it exists.
    /// Management (`q/$management`) and `$cbs` addresses are not entities and return NotFound here.
    pub fn resolve(&self, address: &str) -> Result<EntityPath, BrokerError> {
        let split = entity_path::split_address(address);
        let not_found = || BrokerError::NotFound(address.to_string());
        let idx = *self
            .inner
            .by_name
            .get(&split.queue.to_ascii_lowercase())
            .ok_or_else(not_found)?;
        let name = self.inner.names[idx].clone();
        match split.sub_path {
            None => Ok(EntityPath::Queue(name)),
            Some(sub) if entity_path::is_dead_letter(sub) => Ok(EntityPath::DeadLetter(name)),
            Some(_) => Err(not_found()),
        }
    }

    fn index(&self, queue: &str) -> Option<usize> {
        self.inner.by_name.get(&queue.to_ascii_lowercase()).copied()
    }

    /// Run `op` on a queue (by name) after applying its due deadlines; see [`Broker::with_index`].
    fn with_queue<R>(
        &self,
        queue: &str,
        op: impl FnOnce(&mut Queue, Instant) -> (R, bool),
    ) -> Option<R> {
        let idx = self.index(queue)?;
        Some(self.with_index(idx, op))
    }

    /// Run `op` on a queue after applying its due deadlines. Bumps [`Broker::changes`] if a message may
    /// have become available, wakes the timer if the queue now has an earlier deadline, and moves
    /// forwarded dead letters on once the queue's lock is released (never two queue locks at once).
    fn with_index<R>(&self, idx: usize, op: impl FnOnce(&mut Queue, Instant) -> (R, bool)) -> R {
        let now = Instant::now();
        let mut q = lock(&self.inner.queues[idx]);
        let expired = q.expire(now);
        let (result, available) = op(&mut q, now);
        let deadline = q.next_deadline();
        let forwarded = q.take_forwarded();
        drop(q);
        if expired || available {
            self.bump();
        }
        if let Some(d) = deadline
            && self.inner.clock.nanos(d) < self.inner.timer_target.load(Ordering::SeqCst)
        {
            self.inner.timer_wake.notify_one();
        }
        self.forward_dead_letters(idx, forwarded);
        result
    }

    /// Enqueue dead letters of queue `from` in its `ForwardDeadLetteredMessagesTo` queue.
    fn forward_dead_letters(&self, from: usize, messages: Vec<StoredMessage>) {
        if messages.is_empty() {
            return;
        }
        let Some(to) = self.inner.dead_letters_to[from] else {
            return;
        };
        self.with_index(to, |q, now| {
            for m in messages {
                q.admit(m, None, now);
            }
            ((), true)
        });
    }

    fn bump(&self) {
        self.inner.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Enqueue a message sent by a client (or scheduled, if it has `x-opt-scheduled-enqueue-time` in the
    /// future). Returns its sequence number. Enforces the 256 KiB size limit. Sending to a dead-letter
    /// queue is refused with NotFound, as Service Bus refuses it. With duplicate detection on, a repeated
    /// message-id inside the window is accepted and dropped, and the original's sequence number returned.
    pub fn send(&self, entity: &EntityPath, message: StoredMessage) -> Result<i64, BrokerError> {
        let target = self.send_target(entity)?;
        let at = message.scheduled_enqueue_time();
        self.with_index(target, |q, now| {
            let r = q.enqueue(message, at, now);
            let ok = r.is_ok();
            (r, ok)
        })
    }

    /// The queue a message sent to `entity` is enqueued in: its `ForwardTo` destination, or itself.
    /// Dead-letter queues take no sends (Service Bus refuses them too).
    fn send_target(&self, entity: &EntityPath) -> Result<usize, BrokerError> {
        let not_found = || BrokerError::NotFound(entity.to_string());
        match entity {
            EntityPath::DeadLetter(_) => Err(not_found()),
            EntityPath::Queue(q) => self
                .index(q)
                .map(|i| self.inner.forward_to[i])
                .ok_or_else(not_found),
        }
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
        self.with_index(target, |q, now| {
            let r: Result<Vec<i64>, BrokerError> = messages
                .into_iter()
                .map(|m| {
                    let at = m.scheduled_enqueue_time().or(default_at);
                    q.enqueue(m, at, now)
                })
                .collect();
            (r, true)
        })
    }

    /// Take the next available message, locked (peek-lock) or removed (receive-and-delete). `None` when
    /// nothing is available now; wait on [`Broker::changes`] and try again.
    pub fn receive(&self, entity: &EntityPath, mode: ReceiveMode) -> Option<Delivery> {
        self.with_queue(entity.queue(), |q, now| {
            (q.receive(entity.sub(), mode, now), false)
        })
        .flatten()
    }

    /// Settle a locked message by its lock token.
    pub fn settle(
        &self,
        entity: &EntityPath,
        lock_token: Uuid,
        outcome: Outcome,
    ) -> Result<(), SettleError> {
        self.with_queue(entity.queue(), |q, _| {
            match q.settle(entity.sub(), lock_token, outcome) {
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
        self.with_queue(entity.queue(), |q, now| {
            (q.renew(entity.sub(), lock_tokens, now), false)
        })
        .unwrap_or(Err(SettleError::MessageNotFound))
    }

    /// Browse without locking: up to `count` messages with sequence number >= `from_sequence`
    /// (active, deferred and scheduled ones, as Service Bus does), encoded like a delivery.
    pub fn peek(&self, entity: &EntityPath, from_sequence: i64, count: usize) -> Vec<(i64, Bytes)> {
        self.with_queue(entity.queue(), |q, _| {
            (q.peek(entity.sub(), from_sequence, count), false)
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
        self.with_queue(entity.queue(), |q, _| {
            (q.cancel_scheduled(sequence_numbers), false)
        })
        .unwrap_or_else(|| Err(BrokerError::NotFound(entity.to_string())))
    }

    /// Receive deferred messages by sequence number (locks them in peek-lock mode).
    pub fn receive_deferred(
        &self,
        entity: &EntityPath,
        sequence_numbers: &[i64],
        mode: ReceiveMode,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.with_queue(entity.queue(), |q, now| {
            (
                q.receive_deferred(entity.sub(), sequence_numbers, mode, now),
                false,
            )
        })
        .unwrap_or_else(|| Err(BrokerError::NotFound(entity.to_string())))
    }

    /// Counts for a queue by name (case-insensitive, as Service Bus names are). `None` if unknown.
    pub fn counts(&self, queue: &str) -> Option<QueueCounts> {
        self.with_queue(queue, |q, _| (q.counts(), false))
    }

    /// Names of all queues.
    pub fn queue_names(&self) -> Vec<String> {
        self.inner.names.clone()
    }

    /// A queue's configured properties (lock duration, max delivery count, ...). `None` if unknown.
    pub fn queue_properties(&self, queue: &str) -> Option<QueueProperties> {
        let idx = *self.inner.by_name.get(&queue.to_ascii_lowercase())?;
        Some(lock(&self.inner.queues[idx]).properties().clone())
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
        for q in &self.inner.queues {
            lock(q).check_indexes();
        }
    }
}

#[cfg(test)]
mod tests;
