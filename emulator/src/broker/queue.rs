//! The queue state machine: one queue-like entity (a queue, or a topic's subscription) and its
//! dead-letter sub-queue, driven by explicit `now` instants. Queues and subscriptions differ only in
//! where messages come from: a queue numbers what clients send ([`Queue::enqueue`]); a subscription
//! takes copies its topic numbered ([`Queue::admit_copy`]).
//!
//! A message is in exactly one state: available, locked, deferred or scheduled. Indexes keep every call
//! O(log n): the available set (receive order = sequence order), lock tokens, and one deadline per
//! message (lock expiry, scheduled time or TTL, whichever applies to its state). [`Queue::expire`]
//! applies every deadline that has passed; callers run it before each operation, so expiry is exact
//! even if the timer task has not woken yet.

pub(super) mod durable;
mod sessions;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use tokio::time::Instant;
use uuid::Uuid;

use super::clock::{Clock, after};
use super::{BrokerError, Delivery, Outcome, QueueCounts, ReceiveMode, SettleError};
use crate::config::QueueProperties;
use crate::message::{BrokerAnnotations, StoredMessage, keys};

/// Service Bus Standard's message size limit.
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// Reason texts Service Bus uses when it dead-letters on its own.
pub const REASON_MAX_DELIVERY: &str = "MaxDeliveryCountExceeded";
pub const REASON_TTL: &str = "TTLExpiredException";

/// Which part of a queue an operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sub {
    Main,
    DeadLetter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Available,
    /// Not active until `at`; counted as scheduled.
    Scheduled {
        at: Instant,
    },
    /// Set aside by the receiver; only receive-by-sequence-number reaches it.
    Deferred,
    /// Held by a receiver until `until`. `deferred` remembers where an unlock returns it.
    Locked {
        token: Uuid,
        until: Instant,
        deferred: bool,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    message: StoredMessage,
    enqueued_at: SystemTime,
    /// TTL deadline; `None` in the dead-letter queue, where messages do not expire.
    expires_at: Option<Instant>,
    /// Failed delivery attempts so far (the header's delivery-count).
    delivery_count: u32,
    state: State,
    deadletter_source: Option<String>,
    /// The folded session id (see [`sessions::session_key`]) when the entity requires sessions;
    /// `None` elsewhere and in the dead-letter queue, which is not session-enabled.
    session: Option<Arc<str>>,
}

impl Entry {
    /// A message as it enters a queue-like entity, available at once.
    fn available(
        message: StoredMessage,
        enqueued_at: SystemTime,
        expires_at: Option<Instant>,
        session: Option<Arc<str>>,
    ) -> Entry {
        Entry {
            enqueued_at,
            expires_at,
            delivery_count: 0,
            state: State::Available,
            deadletter_source: None,
            session,
            message,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Locked { until, .. } => Some(until),
            State::Scheduled { at } => Some(at),
            State::Available | State::Deferred => self.expires_at,
        }
    }

    fn annotations(&self, seq: i64, locked_until: Option<SystemTime>) -> BrokerAnnotations {
        BrokerAnnotations {
            sequence_number: seq,
            enqueued_time: self.enqueued_at,
            locked_until,
            deadletter_source: self.deadletter_source.clone(),
            message_state: match self.state {
                State::Deferred | State::Locked { deferred: true, .. } => 1,
                State::Scheduled { .. } => 2,
                State::Available | State::Locked { .. } => 0,
            },
        }
    }

    fn encode(&self, seq: i64, locked_until: Option<SystemTime>) -> bytes::Bytes {
        self.message.encode_for_delivery(
            self.delivery_count,
            self.delivery_count == 0,
            &self.annotations(seq, locked_until),
        )
    }

    /// Where an unlock returns the message.
    fn unlocked_state(&self) -> State {
        match self.state {
            State::Locked { deferred: true, .. } => State::Deferred,
            _ => State::Available,
        }
    }
}

/// Messages by sequence number plus the indexes over them.
#[derive(Debug, Default)]
struct SubQueue {
    /// Boxed: B-tree nodes filled in sequence order end up about half full, so ~280-byte entries
    /// inline would cost nearly twice their size (measured per 1 KiB message: 1,889 bytes inline,
    /// 1,573 boxed; 1,446 with the smaller `StoredMessage`; docs/benchmarks.md).
    entries: BTreeMap<i64, Box<Entry>>,
    available: BTreeSet<i64>,
    locks: HashMap<Uuid, i64>,
    deadlines: BTreeSet<(Instant, i64)>,
    scheduled: usize,
    /// The available messages of each session (only sessions that have some), in sequence order:
    /// a session receiver takes the head of its session's set.
    by_session: HashMap<Arc<str>, BTreeSet<i64>>,
    /// With a store: the numbers whose entry changed since the last [`Queue::take_changes`].
    dirty: Option<BTreeSet<i64>>,
}

impl SubQueue {
    fn insert(&mut self, seq: i64, entry: Entry) {
        if let Some(dirty) = &mut self.dirty {
            dirty.insert(seq);
        }
        match entry.state {
            State::Available => {
                self.available.insert(seq);
                if let Some(key) = &entry.session {
                    self.by_session.entry(key.clone()).or_default().insert(seq);
                }
            }
            State::Locked { token, .. } => {
                self.locks.insert(token, seq);
            }
            State::Scheduled { .. } => self.scheduled += 1,
            State::Deferred => {}
        }
        if let Some(d) = entry.deadline() {
            self.deadlines.insert((d, seq));
        }
        self.entries.insert(seq, Box::new(entry));
    }

    fn remove(&mut self, seq: i64) -> Option<Entry> {
        let entry = *self.entries.remove(&seq)?;
        if let Some(dirty) = &mut self.dirty {
            dirty.insert(seq);
        }
        match entry.state {
            State::Available => {
                self.available.remove(&seq);
                if let Some(key) = &entry.session
                    && let Some(set) = self.by_session.get_mut(key)
                {
                    set.remove(&seq);
                    if set.is_empty() {
                        self.by_session.remove(key);
                    }
                }
            }
            State::Locked { token, .. } => {
                self.locks.remove(&token);
            }
            State::Scheduled { .. } => self.scheduled -= 1,
            State::Deferred => {}
        }
        if let Some(d) = entry.deadline() {
            self.deadlines.remove(&(d, seq));
        }
        Some(entry)
    }

    /// Remove the entry a live lock token points at.
    fn take_locked(&mut self, token: Uuid) -> Result<(i64, Entry), SettleError> {
        let seq = *self.locks.get(&token).ok_or(SettleError::LockLost)?;
        let entry = self.remove(seq).ok_or(SettleError::LockLost)?;
        Ok((seq, entry))
    }

    fn next_due(&self, now: Instant) -> Option<i64> {
        self.deadlines
            .first()
            .filter(|(at, _)| *at <= now)
            .map(|(_, seq)| *seq)
    }
}

/// An id recorded (`Some((sequence number, when))`) or forgotten (`None`), for the store.
type DuplicateChange = (String, Option<(i64, Instant)>);

/// Message-ids seen within the duplicate-detection window (a queue's, or a topic's).
#[derive(Debug, Default)]
pub struct DuplicateWindow {
    seen: HashMap<String, i64>,
    order: VecDeque<(Instant, String)>,
    /// With a store: ids recorded (with number and time) or forgotten since the last look.
    journal: Option<Vec<DuplicateChange>>,
}

impl DuplicateWindow {
    /// The sequence number of the message with this id seen within `window` before `now`, if any.
    fn seen_within(&mut self, id: &str, now: Instant, window: std::time::Duration) -> Option<i64> {
        self.prune(now.checked_sub(window));
        self.seen.get(id).copied()
    }

    /// `Err(original)` when `message` repeats a message-id seen within `window`; else `Ok` with the id
    /// to [`DuplicateWindow::record`] once numbered (`None` when detection is off or there is no id).
    pub fn check(
        &mut self,
        message: &StoredMessage,
        enabled: bool,
        window: std::time::Duration,
        now: Instant,
    ) -> Result<Option<String>, i64> {
        let Some(id) = message.message_id().filter(|_| enabled) else {
            return Ok(None);
        };
        match self.seen_within(&id, now, window) {
            Some(seq) => {
                tracing::debug!(message_id = %id, "duplicate message dropped");
                Err(seq)
            }
            None => Ok(Some(id)),
        }
    }

    pub fn record(&mut self, id: String, seq: i64, now: Instant) {
        if let Some(journal) = &mut self.journal {
            journal.push((id.clone(), Some((seq, now))));
        }
        self.seen.insert(id.clone(), seq);
        self.order.push_back((now, id));
    }

    fn prune(&mut self, older_than: Option<Instant>) {
        let Some(limit) = older_than else { return };
        while let Some((at, _)) = self.order.front() {
            if *at > limit {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
                if let Some(journal) = &mut self.journal {
                    journal.push((id, None));
                }
            }
        }
    }
}

/// One queue and its dead-letter queue.
#[derive(Debug)]
pub struct Queue {
    name: String,
    props: QueueProperties,
    clock: Clock,
    main: SubQueue,
    dlq: SubQueue,
    next_sequence: i64,
    duplicates: DuplicateWindow,
    /// `ForwardDeadLetteredMessagesTo` is set (and names a queue): dead letters go to `forwarded`
    /// instead of the dead-letter queue, for the broker to enqueue in the target queue.
    forward_dead_letters: bool,
    forwarded: Vec<StoredMessage>,
    /// Session locks and state (used when the entity requires sessions).
    sessions: sessions::Sessions,
    /// With a store: this entity's key there and the sequence number it last saved (see `durable`).
    journal: Option<durable::Journal>,
    /// Messages that were locked when the store last saw them: at start they count as expired locks,
    /// applied once the journal is on (they may dead-letter).
    recovered_locks: Vec<(Sub, i64)>,
}

impl Queue {
    pub fn new(name: String, props: QueueProperties, clock: Clock) -> Queue {
        Queue {
            name,
            props,
            clock,
            main: SubQueue::default(),
            dlq: SubQueue::default(),
            next_sequence: 1,
            duplicates: DuplicateWindow::default(),
            forward_dead_letters: false,
            forwarded: Vec::new(),
            sessions: sessions::Sessions::default(),
            journal: None,
            recovered_locks: Vec::new(),
        }
    }

    /// Send dead letters to another queue (the broker knows which) instead of the dead-letter queue.
    pub fn forward_dead_letters(&mut self, on: bool) {
        self.forward_dead_letters = on;
    }

    /// Dead letters waiting to be enqueued in the `ForwardDeadLetteredMessagesTo` queue.
    pub fn take_forwarded(&mut self) -> Vec<StoredMessage> {
        std::mem::take(&mut self.forwarded)
    }

    pub fn properties(&self) -> &QueueProperties {
        &self.props
    }

    /// New properties (the administration API's update); they apply from the next operation.
    pub fn set_properties(&mut self, props: QueueProperties) {
        self.props = props;
    }

    fn sub(&mut self, sub: Sub) -> &mut SubQueue {
        match sub {
            Sub::Main => &mut self.main,
            Sub::DeadLetter => &mut self.dlq,
        }
    }

    /// The earliest deadline of any message, for the timer task.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.main.deadlines.first().map(|d| d.0),
            self.dlq.deadlines.first().map(|d| d.0),
            self.sessions.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Apply every deadline up to `now`: expired locks unlock (counting the attempt, possibly
    /// dead-lettering), scheduled messages become active, expired messages are dropped or dead-lettered.
    /// Returns whether a message became available.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut became_available = false;
        while let Some(seq) = self.main.next_due(now) {
            let Some(mut entry) = self.main.remove(seq) else {
                break;
            };
            match entry.state {
                State::Locked { .. } => {
                    entry.state = entry.unlocked_state();
                    entry.delivery_count += 1;
                    became_available |= self.return_or_dead_letter(seq, entry);
                }
                State::Scheduled { at } => {
                    entry.state = State::Available;
                    entry.enqueued_at = self.clock.wall(at);
                    entry.expires_at = Some(self.expiry(&entry.message, at));
                    self.main.insert(seq, entry);
                    became_available = true;
                }
                State::Available | State::Deferred => {
                    if self.props.dead_lettering_on_message_expiration {
                        self.dead_letter(
                            seq,
                            entry,
                            Some(REASON_TTL),
                            Some("The message expired and was dead lettered."),
                        );
                        became_available = true;
                    } else {
                        tracing::debug!(queue = %self.name, seq, "message expired and was dropped");
                    }
                }
            }
        }
        // A session whose lock ran out is free for another receiver (its messages' locks ended with it).
        became_available |= self.sessions.expire(now);
        // Dead-letter queue messages do not expire; only their locks do.
        while let Some(seq) = self.dlq.next_due(now) {
            let Some(mut entry) = self.dlq.remove(seq) else {
                break;
            };
            if matches!(entry.state, State::Locked { .. }) {
                entry.state = entry.unlocked_state();
                entry.delivery_count += 1;
                became_available = true;
            }
            entry.expires_at = None;
            self.dlq.insert(seq, entry);
        }
        became_available
    }

    /// When a message enqueued at `at` expires: the queue's default TTL, shortened by the message's own
    /// `ttl` or `absolute-expiry-time`.
    fn expiry(&self, message: &StoredMessage, at: Instant) -> Instant {
        let ttl = message
            .ttl()
            .map_or(self.props.default_message_time_to_live, |t| {
                t.min(self.props.default_message_time_to_live)
            });
        let mut expires = after(at, ttl);
        if let Some(abs) = message.absolute_expiry() {
            expires = expires.min(self.clock.instant(abs));
        }
        expires
    }

    /// An unlocked message goes back (available or deferred) unless it has used up its delivery attempts.
    fn return_or_dead_letter(&mut self, seq: i64, entry: Entry) -> bool {
        if entry.delivery_count >= self.props.max_delivery_count {
            let description = format!(
                "Message could not be consumed after {} delivery attempts.",
                self.props.max_delivery_count
            );
            self.dead_letter(seq, entry, Some(REASON_MAX_DELIVERY), Some(&description));
            false
        } else {
            let available = entry.state == State::Available;
            self.main.insert(seq, entry);
            available
        }
    }

    /// Move a (removed) main-queue entry to the dead-letter queue with reason and description recorded
    /// as application properties.
    fn dead_letter(
        &mut self,
        seq: i64,
        mut entry: Entry,
        reason: Option<&str>,
        description: Option<&str>,
    ) {
        let props = reason_properties(reason, description);
        match entry.message.with_application_properties(props) {
            Ok(m) => entry.message = m,
            // Keep the message rather than lose it over its properties.
            Err(e) => {
                tracing::warn!(queue = %self.name, seq, error = %e, "dead-lettered without reason properties")
            }
        }
        tracing::debug!(queue = %self.name, seq, reason, "message dead-lettered");
        if self.forward_dead_letters {
            // It becomes a new message of the target queue; the annotation says where it came from.
            let source = Value::String(self.name.clone());
            entry
                .message
                .merge_annotations([(keys::DEADLETTER_SOURCE.to_string(), source)]);
            self.forwarded.push(entry.message);
            return;
        }
        entry.state = State::Available;
        entry.expires_at = None;
        entry.deadletter_source = Some(self.name.clone());
        entry.session = None;
        self.dlq.insert(seq, entry);
    }

    /// Enqueue a message, scheduled if `scheduled_at` is in the future. Duplicates (by message-id, within
    /// the window, when detection is on) are accepted and dropped, returning the original's number.
    pub fn enqueue(
        &mut self,
        message: StoredMessage,
        scheduled_at: Option<SystemTime>,
        now: Instant,
    ) -> Result<i64, BrokerError> {
        if message.len() > MAX_MESSAGE_SIZE {
            return Err(BrokerError::MessageTooLarge {
                size: message.len(),
                limit: MAX_MESSAGE_SIZE,
            });
        }
        self.check_session_id(&message)?;
        Ok(self.admit(message, scheduled_at, now))
    }

    /// Enqueue without the client size limit: for messages the broker moves itself (forwarded dead
    /// letters carry extra properties and must not be lost over them).
    pub fn admit(
        &mut self,
        message: StoredMessage,
        scheduled_at: Option<SystemTime>,
        now: Instant,
    ) -> i64 {
        let id = match self.duplicates.check(
            &message,
            self.props.requires_duplicate_detection,
            self.props.duplicate_detection_history_time_window,
            now,
        ) {
            Ok(id) => id,
            Err(original) => return original,
        };
        let seq = self.next_sequence;
        self.next_sequence += 1;
        if let Some(id) = id {
            self.duplicates.record(id, seq, now);
        }
        let at = scheduled_at
            .map(|t| self.clock.instant(t))
            .filter(|at| *at > now);
        let session = self.session_of(&message);
        let entry = match at {
            Some(at) => Entry {
                enqueued_at: self.clock.wall(at),
                expires_at: None,
                delivery_count: 0,
                state: State::Scheduled { at },
                deadletter_source: None,
                session,
                message,
            },
            None => {
                let expires = self.expiry(&message, now);
                Entry::available(message, self.clock.wall(now), Some(expires), session)
            }
        };
        self.store(seq, entry);
        seq
    }

    /// A subscription's copy of a topic message: number and enqueued time are the topic's; the TTL is
    /// this subscription's (already capped by the topic's). A number already present (which a topic
    /// never hands out twice) is refused rather than overwriting another message.
    pub fn admit_copy(
        &mut self,
        seq: i64,
        message: StoredMessage,
        enqueued_at: SystemTime,
        now: Instant,
    ) {
        if self.main.entries.contains_key(&seq) || self.dlq.entries.contains_key(&seq) {
            tracing::warn!(queue = %self.name, seq, "sequence number already present; copy dropped");
            return;
        }
        let expires = self.expiry(&message, now);
        let session = self.session_of(&message);
        let entry = Entry::available(message, enqueued_at, Some(expires), session);
        self.store(seq, entry);
    }

    /// A subscription's copy that goes straight to the dead-letter queue (its filter failed).
    pub fn dead_letter_copy(
        &mut self,
        seq: i64,
        message: StoredMessage,
        enqueued_at: SystemTime,
        reason: &str,
        description: &str,
    ) {
        if self.main.entries.contains_key(&seq) || self.dlq.entries.contains_key(&seq) {
            return;
        }
        // The dead-letter queue is not session-enabled.
        let entry = Entry::available(message, enqueued_at, None, None);
        self.dead_letter(seq, entry, Some(reason), Some(description));
    }

    /// Hand out the next available message in sequence order.
    /// On a session entity only session receivers ([`Queue::receive_session`]) take messages.
    pub fn receive(&mut self, sub: Sub, mode: ReceiveMode, now: Instant) -> Option<Delivery> {
        if sub == Sub::Main && self.props.requires_session {
            return None;
        }
        let seq = *self.sub(sub).available.first()?;
        self.take(sub, seq, mode, now)
    }

    /// Lock (peek-lock) or remove (receive-and-delete) one message that is available or deferred.
    fn take(&mut self, sub: Sub, seq: i64, mode: ReceiveMode, now: Instant) -> Option<Delivery> {
        let until = after(now, self.props.lock_duration);
        self.take_until(sub, seq, mode, until)
    }

    /// [`Queue::take`] with the lock ending at `until` (a session's messages share its lock time).
    fn take_until(
        &mut self,
        sub: Sub,
        seq: i64,
        mode: ReceiveMode,
        until: Instant,
    ) -> Option<Delivery> {
        let clock = self.clock;
        let q = self.sub(sub);
        let mut entry = q.remove(seq)?;
        match mode {
            ReceiveMode::ReceiveAndDelete => Some(Delivery {
                lock_token: Uuid::nil(),
                sequence_number: seq,
                payload: entry.encode(seq, None),
                delivery_count: entry.delivery_count,
                locked_until: None,
            }),
            ReceiveMode::PeekLock => {
                let token = Uuid::new_v4();
                let locked_until = clock.wall(until);
                entry.state = State::Locked {
                    token,
                    until,
                    deferred: entry.state == State::Deferred,
                };
                let delivery = Delivery {
                    lock_token: token,
                    sequence_number: seq,
                    payload: entry.encode(seq, Some(locked_until)),
                    delivery_count: entry.delivery_count,
                    locked_until: Some(locked_until),
                };
                q.insert(seq, entry);
                Some(delivery)
            }
        }
    }

    /// Apply a receiver's outcome to a locked message. Returns whether a message became available.
    pub fn settle(&mut self, sub: Sub, token: Uuid, outcome: Outcome) -> Result<bool, SettleError> {
        let (seq, mut entry) = self.sub(sub).take_locked(token)?;
        match outcome {
            Outcome::Complete => Ok(false),
            Outcome::Abandon {
                count_attempt,
                properties_to_modify,
            } => {
                entry.message.merge_annotations(properties_to_modify);
                entry.state = entry.unlocked_state();
                if count_attempt {
                    entry.delivery_count += 1;
                }
                Ok(match sub {
                    Sub::Main => self.return_or_dead_letter(seq, entry),
                    Sub::DeadLetter => {
                        let available = entry.state == State::Available;
                        self.dlq.insert(seq, entry);
                        available
                    }
                })
            }
            Outcome::Defer {
                properties_to_modify,
            } => {
                entry.message.merge_annotations(properties_to_modify);
                entry.state = State::Deferred;
                self.sub(sub).insert(seq, entry);
                Ok(false)
            }
            Outcome::DeadLetter {
                reason,
                description,
            } => {
                // A client that gives no reason gets none, as from Service Bus (not an empty one).
                let (reason, description) = (reason.as_deref(), description.as_deref());
                match sub {
                    Sub::Main => self.dead_letter(seq, entry, reason, description),
                    // A dead-lettered message cannot go further; record the new reason and unlock it.
                    Sub::DeadLetter => {
                        let props = reason_properties(reason, description);
                        if let Ok(m) = entry.message.with_application_properties(props) {
                            entry.message = m;
                        }
                        entry.state = entry.unlocked_state();
                        self.dlq.insert(seq, entry);
                    }
                }
                Ok(true)
            }
        }
    }

    /// Extend locks by the lock duration from `now`. All tokens must be live, or nothing changes.
    pub fn renew(
        &mut self,
        sub: Sub,
        tokens: &[Uuid],
        now: Instant,
    ) -> Result<Vec<SystemTime>, SettleError> {
        let until = after(now, self.props.lock_duration);
        let clock = self.clock;
        let q = self.sub(sub);
        if !tokens.iter().all(|t| q.locks.contains_key(t)) {
            return Err(SettleError::LockLost);
        }
        let mut times = Vec::with_capacity(tokens.len());
        for token in tokens {
            let (seq, mut entry) = q.take_locked(*token)?;
            if let State::Locked { until: old, .. } = &mut entry.state {
                *old = until;
            }
            q.insert(seq, entry);
            times.push(clock.wall(until));
        }
        Ok(times)
    }

    /// Browse without locking, from `from` in sequence order, including scheduled and deferred messages.
    pub fn peek(&self, sub: Sub, from: i64, count: usize) -> Vec<(i64, bytes::Bytes)> {
        self.peek_where(sub, from, count, |_| true)
    }

    /// [`Queue::peek`] over the messages `keep` selects.
    fn peek_where(
        &self,
        sub: Sub,
        from: i64,
        count: usize,
        keep: impl Fn(&Entry) -> bool,
    ) -> Vec<(i64, bytes::Bytes)> {
        let q = match sub {
            Sub::Main => &self.main,
            Sub::DeadLetter => &self.dlq,
        };
        q.entries
            .range(from..)
            .filter(|(_, e)| keep(e))
            .take(count)
            .map(|(seq, e)| {
                let locked_until = match e.state {
                    State::Locked { until, .. } => Some(self.clock.wall(until)),
                    _ => None,
                };
                (*seq, e.encode(*seq, locked_until))
            })
            .collect()
    }

    /// Remove scheduled messages. All must be scheduled, or nothing changes.
    pub fn cancel_scheduled(&mut self, seqs: &[i64]) -> Result<(), BrokerError> {
        if let Some(missing) = seqs.iter().find(|s| {
            !matches!(
                self.main.entries.get(s).map(|e| e.state),
                Some(State::Scheduled { .. })
            )
        }) {
            return Err(BrokerError::SequenceNotFound(*missing));
        }
        for seq in seqs {
            self.main.remove(*seq);
        }
        Ok(())
    }

    /// Take deferred messages by sequence number. All must be deferred, or nothing changes.
    pub fn receive_deferred(
        &mut self,
        sub: Sub,
        seqs: &[i64],
        mode: ReceiveMode,
        now: Instant,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let q = self.sub(sub);
        if let Some(missing) = seqs
            .iter()
            .find(|s| q.entries.get(s).map(|e| e.state) != Some(State::Deferred))
        {
            return Err(BrokerError::SequenceNotFound(*missing));
        }
        // A number listed twice is delivered once (a second take would re-lock it under a new token).
        let mut seen = std::collections::HashSet::new();
        Ok(seqs
            .iter()
            .filter(|seq| seen.insert(**seq))
            .filter_map(|seq| self.take(sub, *seq, mode, now))
            .collect())
    }

    pub fn counts(&self) -> QueueCounts {
        QueueCounts {
            active_message_count: (self.main.entries.len() - self.main.scheduled) as u64,
            dead_letter_message_count: self.dlq.entries.len() as u64,
            scheduled_message_count: self.main.scheduled as u64,
            transfer_message_count: 0,
            transfer_dead_letter_message_count: 0,
        }
    }
}

#[cfg(test)]
impl SubQueue {
    /// Every index agrees with the entries (used by the randomised state-machine test).
    fn check_indexes(&self) {
        let available: BTreeSet<i64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Available)
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(available, self.available, "available index");
        let locks: HashMap<Uuid, i64> = self
            .entries
            .iter()
            .filter_map(|(s, e)| match e.state {
                State::Locked { token, .. } => Some((token, *s)),
                _ => None,
            })
            .collect();
        assert_eq!(locks, self.locks, "lock index");
        let deadlines: BTreeSet<(Instant, i64)> = self
            .entries
            .iter()
            .filter_map(|(s, e)| e.deadline().map(|d| (d, *s)))
            .collect();
        assert_eq!(deadlines, self.deadlines, "deadline index");
        let scheduled = self
            .entries
            .values()
            .filter(|e| matches!(e.state, State::Scheduled { .. }))
            .count();
        assert_eq!(scheduled, self.scheduled, "scheduled count");
        let mut by_session: HashMap<Arc<str>, BTreeSet<i64>> = HashMap::new();
        for (s, e) in &self.entries {
            if let (State::Available, Some(key)) = (e.state, &e.session) {
                by_session.entry(key.clone()).or_default().insert(*s);
            }
        }
        assert_eq!(by_session, self.by_session, "session index");
    }
}

#[cfg(test)]
impl Queue {
    pub(crate) fn check_indexes(&self) {
        self.main.check_indexes();
        self.dlq.check_indexes();
        self.sessions.check_indexes();
        assert!(self.dlq.entries.values().all(|e| e.session.is_none()));
        assert!(
            self.dlq
                .entries
                .values()
                .all(|e| e.expires_at.is_none() && e.deadletter_source.is_some())
        );
        assert!(
            self.main
                .entries
                .keys()
                .all(|s| !self.dlq.entries.contains_key(s)),
            "a message in two places"
        );
    }
}

/// The application properties a dead-lettering sets: only those it was given.
fn reason_properties(
    reason: Option<&str>,
    description: Option<&str>,
) -> Vec<(String, SimpleValue)> {
    [
        (keys::DEAD_LETTER_REASON, reason),
        (keys::DEAD_LETTER_DESCRIPTION, description),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_string(), SimpleValue::String(value?.to_owned()))))
    .collect()
}
