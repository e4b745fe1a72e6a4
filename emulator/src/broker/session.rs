//! Message sessions: the broker's half. A session is the group of messages of one queue or
//! subscription that share a `SessionId` (AMQP `group-id`); one receive link at a time holds its
//! lock, takes its messages strictly in sequence order and may keep opaque state on it.
//!
//! The session lock is a broker concept next to message locks and is driven by the same explicit
//! instants: it lasts the entity's `LockDuration`, renewal moves it to `now + LockDuration`, and the
//! messages a session receiver holds are locked until exactly the session's lock time, so a lapsed
//! session lock unlocks them in the same [`Queue::expire`](super::queue) pass (counting the attempt).
//! Closing the link releases the session at once and returns its messages without counting.
//!
//! The table and the per-session indexes live with the queue state machine
//! (`queue/sessions.rs`); this module holds the types the AMQP layer sees and the [`Broker`] calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use uuid::Uuid;

use super::{Broker, Delivery, EntityPath, Outcome, ReceiveMode, SettleError, Sub};

/// The largest session state accepted: Service Bus Standard counts it like a message (256 KB).
pub const MAX_SESSION_STATE: usize = super::MAX_MESSAGE_SIZE;

/// Who holds a session lock: one receive link. Ids are unique in the process, so a link of one
/// connection can never act on a lock another link (or a closed one) held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionOwner(u64);

impl SessionOwner {
    /// A fresh owner id for a new session receive link.
    pub fn next() -> SessionOwner {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionOwner(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a session receiver asks for in its attach (`com.microsoft:session-filter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRequest {
    /// This session id (locked even if it has no messages yet, as Service Bus does).
    Specific(String),
    /// The unlocked session whose oldest available message is the oldest (`null` filter value).
    NextAvailable,
}

/// A session lock granted to a receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGrant {
    /// The id to echo in the attach reply (as requested, or as the messages spell it).
    pub session_id: String,
    pub locked_until: SystemTime,
}

/// Why a session operation failed. The AMQP layer maps each to Service Bus's error condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// `com.microsoft:session-cannot-be-locked`.
    #[error(
        "The requested session '{0}' cannot be accepted. It may be locked by another receiver."
    )]
    CannotBeLocked(String),
    /// `com.microsoft:session-lock-lost`.
    #[error(
        "The session lock has expired on the MessageSession (or the session '{0}' is not locked by this receiver). Accept a new MessageSession."
    )]
    LockLost(String),
    /// `amqp:not-allowed`: a session receiver on an entity without sessions.
    #[error(
        "A sessionful message receiver cannot be created on an entity that does not require sessions ('{0}'). Ensure RequiresSession is set to true when creating the queue or subscription, or receive without a session id."
    )]
    NotSessionful(String),
    /// `com.microsoft:message-not-found`.
    #[error("no deferred message with sequence number {0} in this session")]
    MessageNotFound(i64),
    /// `amqp:link:message-size-exceeded`.
    #[error("the session state is {size} bytes, larger than the limit of {limit} bytes")]
    StateTooLarge { size: usize, limit: usize },
}

impl SessionError {
    /// The AMQP error condition Service Bus uses for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            SessionError::CannotBeLocked(_) => "com.microsoft:session-cannot-be-locked",
            SessionError::LockLost(_) => "com.microsoft:session-lock-lost",
            SessionError::NotSessionful(_) => "amqp:not-allowed",
            SessionError::MessageNotFound(_) => "com.microsoft:message-not-found",
            SessionError::StateTooLarge { .. } => "amqp:link:message-size-exceeded",
        }
    }
}

/// The refusal text Service Bus gives a send without `SessionId` to an entity that requires sessions.
pub const SESSION_ID_MISSING: &str = "The SessionId was not set on a message, and it cannot be sent to the entity. Entities that have session support enabled can only receive messages that have the SessionId set to a valid value.";

/// The refusal text for a plain receiver on an entity that requires sessions.
pub const SESSION_RECEIVER_REQUIRED: &str = "It is not possible for an entity that requires sessions to create a non-sessionful message receiver. Receive with a session id (or the next available session).";

/// Dead-letter reason and description for a copy without a session id reaching a session-enabled
/// subscription (or forwarded to a session-enabled queue), as Service Bus writes them.
pub const REASON_SESSION_ID_NULL: &str = "Session id is null.";
pub const DESCRIPTION_SESSION_ID_NULL: &str =
    "Session enabled entity doesn't allow a message whose session identifier is null.";

impl Broker {
    /// Whether `entity` takes only session receivers: a queue or subscription with
    /// `RequiresSession` (its dead-letter queue is not session-enabled).
    pub fn requires_session(&self, entity: &EntityPath) -> bool {
        match entity.queue_like() {
            Some((idx, Sub::Main)) => self.with_index(idx, |q, _| (q.requires_session(), false)),
            _ => false,
        }
    }

    /// Lock a session for `owner`. `Ok(None)`: no session is available now (next-available only);
    /// wait on [`Broker::changes`] and try again until the receiver's timeout.
    pub fn accept_session(
        &self,
        entity: &EntityPath,
        request: &SessionRequest,
        owner: SessionOwner,
    ) -> Result<Option<SessionGrant>, SessionError> {
        let not_sessionful = || SessionError::NotSessionful(entity.to_string());
        let Some((idx, Sub::Main)) = entity.queue_like() else {
            return Err(not_sessionful());
        };
        self.with_index(idx, |q, now| {
            if !q.requires_session() {
                return (Err(not_sessionful()), false);
            }
            (q.accept_session(request, owner, now), false)
        })
    }

    /// Release `owner`'s lock on a session (its link closed): the session is free at once and the
    /// messages it held return to the head without counting a delivery attempt.
    pub fn release_session(&self, entity: &EntityPath, session_id: &str, owner: SessionOwner) {
        if let Some((idx, Sub::Main)) = entity.queue_like() {
            self.with_index(idx, |q, _| ((), q.release_session(session_id, owner)));
        }
    }

    /// Whether `owner` still holds the session (its lock has not lapsed).
    pub fn holds_session(
        &self,
        entity: &EntityPath,
        session_id: &str,
        owner: SessionOwner,
    ) -> bool {
        match entity.queue_like() {
            Some((idx, Sub::Main)) => self.with_index(idx, |q, _| {
                (q.session_holder(session_id, Some(owner)).is_ok(), false)
            }),
            _ => false,
        }
    }

    /// The next message of the session `owner` holds, in sequence order. `Ok(None)` when it has
    /// none available now.
    pub fn receive_session(
        &self,
        entity: &EntityPath,
        session_id: &str,
        owner: SessionOwner,
        mode: ReceiveMode,
    ) -> Result<Option<Delivery>, SessionError> {
        let idx = self.session_entity(entity)?;
        self.with_index(idx, |q, _| {
            (q.receive_session(session_id, owner, mode), false)
        })
    }

    /// Settle a message of a session; fails with session-lock-lost unless `owner` (any holder when
    /// `None`, for management requests that name no link) holds the session.
    pub fn settle_session(
        &self,
        entity: &EntityPath,
        session_id: &str,
        owner: Option<SessionOwner>,
        lock_token: Uuid,
        outcome: Outcome,
    ) -> Result<(), SettleError> {
        let idx = self
            .session_entity(entity)
            .map_err(|_| SettleError::SessionLockLost)?;
        self.with_index(idx, |q, _| {
            match q.settle_session(session_id, owner, lock_token, outcome) {
                Ok(available) => (Ok(()), available),
                Err(e) => (Err(e), false),
            }
        })
    }

    /// Renew a session lock: it then lasts until now + `LockDuration`, and so do the locks of the
    /// messages the receiver holds. Returns the new locked-until.
    pub fn renew_session_lock(
        &self,
        entity: &EntityPath,
        session_id: &str,
        owner: Option<SessionOwner>,
    ) -> Result<SystemTime, SessionError> {
        let idx = self.session_entity(entity)?;
        self.with_index(idx, |q, now| {
            (q.renew_session(session_id, owner, now), false)
        })
    }

    /// The session's state (`None` when never set or cleared). Requires the session lock.
    pub fn session_state(
        &self,
        entity: &EntityPath,
        session_id: &str,
        owner: Option<SessionOwner>,
    ) -> Result<Option<Bytes>, SessionError> {
        let idx = self.session_entity(entity)?;
        self.with_index(idx, |q, _| (q.session_state(session_id, owner), false))
    }

    /// Set (or with `None` clear) the session's state. Requires the session lock; the state outlives
    /// it.
    pub fn set_session_state(
        &self,
        entity: &EntityPath,
        session_id: &str,
        owner: Option<SessionOwner>,
        state: Option<Bytes>,
    ) -> Result<(), SessionError> {
        let idx = self.session_entity(entity)?;
        if let Some(s) = &state
            && s.len() > MAX_SESSION_STATE
        {
            return Err(SessionError::StateTooLarge {
                size: s.len(),
                limit: MAX_SESSION_STATE,
            });
        }
        self.with_index(idx, |q, now| {
            (q.set_session_state(session_id, owner, state, now), false)
        })
    }

    /// Ids of the sessions that have messages or state, sorted; with `state_updated_since`, only
    /// those whose state was set at or after it.
    pub fn message_sessions(
        &self,
        entity: &EntityPath,
        state_updated_since: Option<SystemTime>,
    ) -> Vec<String> {
        match entity.queue_like() {
            Some((idx, Sub::Main)) => {
                self.with_index(idx, |q, _| (q.message_sessions(state_updated_since), false))
            }
            _ => Vec::new(),
        }
    }

    /// Browse one session's messages (any state) from `from_sequence`, without locking.
    pub fn peek_session(
        &self,
        entity: &EntityPath,
        session_id: &str,
        from_sequence: i64,
        count: usize,
    ) -> Vec<(i64, Bytes)> {
        match self.session_entity(entity) {
            Ok(idx) => self.with_index(idx, |q, _| {
                (q.peek_session(session_id, from_sequence, count), false)
            }),
            Err(_) => Vec::new(),
        }
    }

    /// Receive deferred messages of the session `owner` holds, by sequence number; locked until the
    /// session's lock time (peek-lock).
    pub fn receive_deferred_session(
        &self,
        entity: &EntityPath,
        session_id: &str,
        owner: Option<SessionOwner>,
        sequence_numbers: &[i64],
        mode: ReceiveMode,
    ) -> Result<Vec<Delivery>, SessionError> {
        let idx = self.session_entity(entity)?;
        self.with_index(idx, |q, _| {
            (
                q.receive_deferred_session(session_id, owner, sequence_numbers, mode),
                false,
            )
        })
    }

    /// The index of a session-enabled entity (not its dead-letter queue).
    fn session_entity(&self, entity: &EntityPath) -> Result<usize, SessionError> {
        match entity.queue_like() {
            Some((idx, Sub::Main)) if self.requires_session(entity) => Ok(idx),
            _ => Err(SessionError::NotSessionful(entity.to_string())),
        }
    }
}
