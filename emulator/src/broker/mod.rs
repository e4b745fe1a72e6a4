//! The broker core: entities, the queue state machine, locks and timers. No sockets here.
//!
//! INTERFACE CONTRACT (agreed between the broker and the AMQP server layers; keep these signatures
//! stable, extend rather than change). Time comes from `tokio::time::Instant::now()` so tests can run
//! under `#[tokio::test(start_paused = true)]` and `tokio::time::advance`.

use std::time::SystemTime;

use bytes::Bytes;
use uuid::Uuid;

use crate::config::Config;
use crate::message::StoredMessage;

/// Which queue-like thing an address names, after normalisation
/// (`amqps://host:port/queue` → `queue`; a leading `/` is stripped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityPath {
    /// A queue, by its configured name (case as configured).
    Queue(String),
    /// `<queue>/$DeadLetterQueue`.
    DeadLetter(String),
}

impl EntityPath {
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
    Abandon { count_attempt: bool, properties_to_modify: Vec<(String, fe2o3_amqp_types::primitives::Value)> },
    /// `modified{undeliverable-here}`: set aside; only receive-by-sequence-number can fetch it.
    Defer { properties_to_modify: Vec<(String, fe2o3_amqp_types::primitives::Value)> },
    /// `rejected{com.microsoft:dead-letter}`: move to `<queue>/$DeadLetterQueue`.
    DeadLetter { reason: Option<String>, description: Option<String> },
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
    _todo: (),
}

impl Broker {
    /// Build the entities of the (first) namespace in `config`. Spawns the timer task that expires locks,
    /// messages (TTL) and enqueues scheduled messages, so it must be called inside a tokio runtime.
    pub fn new(_config: &Config) -> Broker {
        todo!()
    }

    /// Normalise an address (`amqps://host/q`, `/q`, `q`, `q/$DeadLetterQueue`) and check it exists.
    /// Management (`q/$management`) and `$cbs` addresses are not entities and return NotFound here.
    pub fn resolve(&self, _address: &str) -> Result<EntityPath, BrokerError> {
        todo!()
    }

    /// Enqueue a message sent by a client (or scheduled, if it has `x-opt-scheduled-enqueue-time` in the
    /// future). Returns its sequence number. Enforces the 256 KiB size limit.
    pub fn send(&self, _entity: &EntityPath, _message: StoredMessage) -> Result<i64, BrokerError> {
        todo!()
    }

    /// Take the next available message, locked (peek-lock) or removed (receive-and-delete). `None` when
    /// nothing is available now; wait on [`Broker::changes`] and try again.
    pub fn receive(&self, _entity: &EntityPath, _mode: ReceiveMode) -> Option<Delivery> {
        todo!()
    }

    /// Settle a locked message by its lock token.
    pub fn settle(&self, _entity: &EntityPath, _lock_token: Uuid, _outcome: Outcome) -> Result<(), SettleError> {
        todo!()
    }

    /// Extend the locks; returns the new locked-until times, in order.
    pub fn renew_locks(&self, _entity: &EntityPath, _lock_tokens: &[Uuid]) -> Result<Vec<SystemTime>, SettleError> {
        todo!()
    }

    /// Browse without locking: up to `count` messages with sequence number >= `from_sequence`
    /// (active, deferred and scheduled ones, as Service Bus does), encoded like a delivery.
    pub fn peek(&self, _entity: &EntityPath, _from_sequence: i64, _count: usize) -> Vec<(i64, Bytes)> {
        todo!()
    }

    /// Schedule messages for `enqueue_at` (each message's own `x-opt-scheduled-enqueue-time` wins when
    /// present). Returns their sequence numbers.
    pub fn schedule(&self, _entity: &EntityPath, _messages: Vec<StoredMessage>, _enqueue_at: Option<SystemTime>) -> Result<Vec<i64>, BrokerError> {
        todo!()
    }

    /// Cancel scheduled messages by sequence number.
    pub fn cancel_scheduled(&self, _entity: &EntityPath, _sequence_numbers: &[i64]) -> Result<(), BrokerError> {
        todo!()
    }

    /// Receive deferred messages by sequence number (locks them in peek-lock mode).
    pub fn receive_deferred(&self, _entity: &EntityPath, _sequence_numbers: &[i64], _mode: ReceiveMode) -> Result<Vec<Delivery>, BrokerError> {
        todo!()
    }

    /// Counts for a queue by name (case-insensitive, as Service Bus names are). `None` if unknown.
    pub fn counts(&self, _queue: &str) -> Option<QueueCounts> {
        todo!()
    }

    /// Names of all queues.
    pub fn queue_names(&self) -> Vec<String> {
        todo!()
    }

    /// A generation counter that changes whenever a message may have become available (send, unlock,
    /// lock expiry, scheduled enqueue). Connection tasks wait on it to retry `receive` for links with credit.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        todo!()
    }
}
