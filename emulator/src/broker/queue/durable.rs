//! The queue state machine and the store: which rows changed ([`Queue::take_changes`]) and how the
//! rows become entries again at start ([`Queue::restore_message`] and friends).
//!
//! Changes are found, not logged: every state change of a message goes through `SubQueue::insert` or
//! `SubQueue::remove`, which note its number; `take_changes` then writes each noted message as it is
//! now (or deletes it). So a receive that locks and a settle that completes under one lock cost one row
//! at most, and no code path can forget to journal.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::sessions::SessionEntry;
use super::{Entry, Queue, State, Sub};
use crate::broker::clock::Clock;
use crate::message::StoredMessage;
use crate::store::{self, MessageRecord, Op, RecordState, SessionRecord};

/// A queue's bookkeeping while a store is attached.
#[derive(Debug)]
pub(in crate::broker) struct Journal {
    key: Arc<str>,
    saved_sequence: i64,
}

pub(in crate::broker) fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_millis().min(i64::MAX as u128) as i64),
    }
}

pub(in crate::broker) fn from_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A message and its times as a row.
pub(in crate::broker) fn record_of(
    message: &StoredMessage,
    clock: &Clock,
    enqueued_at: SystemTime,
    expires_at: Option<Instant>,
    delivery_count: u32,
    state: RecordState,
) -> MessageRecord {
    MessageRecord {
        raw: message.raw().clone(),
        annotations: message.annotations_section(),
        enqueued_ms: millis(enqueued_at),
        expires_ms: expires_at.map(|at| millis(clock.wall(at))),
        delivery_count,
        state,
        deadletter_source: None,
        session: None,
    }
}

fn part(sub: Sub) -> u8 {
    match sub {
        Sub::Main => store::PART_MAIN,
        Sub::DeadLetter => store::PART_DEAD_LETTER,
    }
}

impl Entry {
    fn record(&self, clock: &Clock) -> MessageRecord {
        let state = match self.state {
            State::Available => RecordState::Available,
            State::Scheduled { at } => RecordState::Scheduled {
                at_ms: millis(clock.wall(at)),
            },
            State::Deferred => RecordState::Deferred,
            State::Locked { deferred, .. } => RecordState::Locked { deferred },
        };
        MessageRecord {
            deadletter_source: self.deadletter_source.clone(),
            session: self.session.as_deref().map(str::to_string),
            ..record_of(
                &self.message,
                clock,
                self.enqueued_at,
                self.expires_at,
                self.delivery_count,
                state,
            )
        }
    }
}

impl Queue {
    /// From now on note every change for the store, under `key` (the entity's lower-cased path).
    pub fn start_journal(&mut self, key: Arc<str>) {
        self.main.dirty = Some(BTreeSet::new());
        self.dlq.dirty = Some(BTreeSet::new());
        self.duplicates.start_journal();
        self.sessions.dirty = Some(BTreeSet::new());
        self.journal = Some(Journal {
            key,
            saved_sequence: 0,
        });
        // A lock the crash ended counts like an expired one (it may use up the last attempt).
        for (sub, seq) in std::mem::take(&mut self.recovered_locks) {
            let Some(entry) = self.sub(sub).remove(seq) else {
                continue;
            };
            match sub {
                Sub::Main => {
                    self.return_or_dead_letter(seq, entry);
                }
                Sub::DeadLetter => self.dlq.insert(seq, entry),
            }
        }
    }

    /// Stop noting changes (the entity was deleted); returns its key.
    pub fn stop_journal(&mut self) -> Option<Arc<str>> {
        self.main.dirty = None;
        self.dlq.dirty = None;
        self.duplicates.stop_journal();
        self.sessions.dirty = None;
        self.journal.take().map(|j| j.key)
    }

    /// The rows that changed since the last call: messages as they are now (or gone), the next
    /// sequence number, duplicate-detection ids and session state.
    pub fn take_changes(&mut self) -> Vec<Op> {
        let Some(journal) = &mut self.journal else {
            return Vec::new();
        };
        let key = journal.key.clone();
        let mut ops = Vec::new();
        if self.next_sequence != journal.saved_sequence {
            journal.saved_sequence = self.next_sequence;
            ops.push(Op::PutSequence {
                entity: key.clone(),
                next: self.next_sequence,
            });
        }
        for sub in [Sub::Main, Sub::DeadLetter] {
            let clock = self.clock;
            let q = self.sub(sub);
            let Some(dirty) = q.dirty.as_mut().map(std::mem::take) else {
                continue;
            };
            ops.extend(dirty.into_iter().map(|seq| match q.entries.get(&seq) {
                Some(entry) => Op::PutMessage {
                    entity: key.clone(),
                    part: part(sub),
                    seq,
                    record: entry.record(&clock),
                },
                None => Op::DeleteMessage {
                    entity: key.clone(),
                    part: part(sub),
                    seq,
                },
            }));
        }
        ops.extend(duplicate_ops(&key, &mut self.duplicates, &self.clock));
        if let Some(dirty) = self.sessions.dirty.as_mut().map(std::mem::take) {
            for session in dirty {
                let entry = self.sessions.table.get(&session);
                ops.push(match entry.filter(|e| e.state.is_some()) {
                    Some(e) => Op::PutSession {
                        entity: key.clone(),
                        key: session.to_string(),
                        record: SessionRecord {
                            id: e.id.clone(),
                            state: e.state.clone(),
                            updated_ms: e.state_updated.map(millis),
                        },
                    },
                    None => Op::DeleteSession {
                        entity: key.clone(),
                        key: session.to_string(),
                    },
                });
            }
        }
        ops
    }

    /// Put back a stored message. A message locked when the store was written comes back unlocked with
    /// the attempt counted, as an expired lock would ([`Queue::start_journal`] finishes that).
    pub fn restore_message(
        &mut self,
        part: u8,
        seq: i64,
        record: MessageRecord,
    ) -> Result<(), String> {
        let sub = match part {
            store::PART_MAIN => Sub::Main,
            store::PART_DEAD_LETTER => Sub::DeadLetter,
            other => return Err(format!("unknown part {other}")),
        };
        let message =
            StoredMessage::restore(record.raw, &record.annotations).map_err(|e| e.to_string())?;
        let (state, crash_ended_lock) = match record.state {
            RecordState::Available => (State::Available, false),
            RecordState::Deferred => (State::Deferred, false),
            RecordState::Scheduled { at_ms } => (
                State::Scheduled {
                    at: self.clock.instant(from_millis(at_ms)),
                },
                false,
            ),
            RecordState::Locked { deferred: true } => (State::Deferred, true),
            RecordState::Locked { deferred: false } => (State::Available, true),
        };
        if crash_ended_lock {
            self.recovered_locks.push((sub, seq));
        }
        let entry = Entry {
            message,
            enqueued_at: from_millis(record.enqueued_ms),
            expires_at: record
                .expires_ms
                .map(|ms| self.clock.instant(from_millis(ms))),
            delivery_count: record.delivery_count + u32::from(crash_ended_lock),
            state,
            deadletter_source: record.deadletter_source,
            session: record.session.map(Arc::from),
        };
        self.next_sequence = self.next_sequence.max(seq + 1);
        self.sub(sub).insert(seq, entry);
        Ok(())
    }

    pub fn restore_sequence(&mut self, next: i64) {
        self.next_sequence = self.next_sequence.max(next);
    }

    /// A duplicate-detection id seen at `at`; ids older than the window are pruned as usual.
    pub fn restore_duplicate(&mut self, id: String, seq: i64, at: SystemTime) {
        let at = self.clock.instant(at);
        self.duplicates.restore(id, seq, at);
    }

    pub fn restore_session(&mut self, key: &str, record: SessionRecord) {
        self.sessions.table.insert(
            Arc::from(key),
            SessionEntry {
                id: record.id,
                lock: None,
                state: record.state,
                state_updated: record.updated_ms.map(from_millis),
            },
        );
    }
}

/// The duplicate-detection changes of a queue or topic as rows.
pub(in crate::broker) fn duplicate_ops(
    key: &Arc<str>,
    window: &mut super::DuplicateWindow,
    clock: &Clock,
) -> Vec<Op> {
    let Some(journal) = window.journal.as_mut().map(std::mem::take) else {
        return Vec::new();
    };
    journal
        .into_iter()
        .map(|(id, seen)| match seen {
            Some((seq, at)) => Op::PutDuplicate {
                entity: key.clone(),
                id,
                seq,
                at_ms: millis(clock.wall(at)),
            },
            None => Op::DeleteDuplicate {
                entity: key.clone(),
                id,
            },
        })
        .collect()
}

impl super::DuplicateWindow {
    /// Start noting changes for the store.
    pub(in crate::broker) fn start_journal(&mut self) {
        self.journal = Some(Vec::new());
    }

    pub(in crate::broker) fn stop_journal(&mut self) {
        self.journal = None;
    }

    /// Put back an id the store kept; callers restore in time order (the store sorts them).
    pub(in crate::broker) fn restore(&mut self, id: String, seq: i64, at: Instant) {
        self.seen.insert(id.clone(), seq);
        self.order.push_back((at, id));
    }
}
