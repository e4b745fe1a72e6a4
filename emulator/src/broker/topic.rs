//! A topic: it numbers and de-duplicates what is sent to it, holds scheduled messages until due, and
//! decides for each subscription, by its rules, which copies it gets. It stores no active messages:
//! copies live in the subscriptions, each a [`super::queue::Queue`] (the same state machine as a
//! queue), and share the client's bytes (`StoredMessage` is a refcounted buffer plus small metadata).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use fe2o3_amqp_types::messaging::{MessageId, Properties};
use fe2o3_amqp_types::primitives::{SimpleValue, Symbol};
use tokio::time::Instant;

use super::BrokerError;
use super::clock::Clock;
use super::queue::durable::{duplicate_ops, from_millis, millis, record_of};
use super::queue::{DuplicateWindow, MAX_MESSAGE_SIZE};
use crate::config::TopicProperties;
use crate::filter::sql::Edit;
use crate::filter::{FilterValue, MessageView, Rule, Selected, SysProperty};
use crate::message::{StoredMessage, keys};
use crate::store::{self, MessageRecord, Op, RecordState};

/// The reason Service Bus gives a copy whose filter or action failed.
pub const REASON_FILTER: &str = "FilterEvaluationException";

/// One subscription as the topic sees it: where its copies go and which rules select them.
#[derive(Debug)]
pub struct Route {
    /// Index of the subscription's queue-like state in the broker.
    pub queue: usize,
    pub name: String,
    pub rules: Vec<Rule>,
    pub dead_letter_on_filter_errors: bool,
}

/// What a subscription gets for one message.
#[derive(Debug)]
pub enum Copy {
    /// Enqueue with this (topic) sequence number.
    Deliver {
        sequence: i64,
        message: StoredMessage,
    },
    /// A filter or action failed and the subscription dead-letters on that.
    DeadLetter {
        sequence: i64,
        message: StoredMessage,
        description: String,
    },
}

/// What the topic did with a sent message.
#[derive(Debug)]
// Short-lived return value: boxing the message would cost an allocation per send for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Accepted {
    /// Fan it out now with this sequence number.
    Now(i64, Box<StoredMessage>),
    /// Held until due (or a duplicate, dropped); nothing to fan out.
    Held(i64),
}

#[derive(Debug)]
pub struct Topic {
    name: String,
    props: TopicProperties,
    clock: Clock,
    next_sequence: i64,
    duplicates: DuplicateWindow,
    scheduled: BTreeMap<i64, (Instant, StoredMessage)>,
    deadlines: BTreeSet<(Instant, i64)>,
    pub routes: Vec<Route>,
    /// With a store: the topic's key there, the sequence number last saved, and the scheduled
    /// messages added or removed since the last [`Topic::take_changes`].
    journal: Option<(Arc<str>, i64, BTreeSet<i64>)>,
}

impl Topic {
    pub fn new(name: String, props: TopicProperties, clock: Clock, routes: Vec<Route>) -> Topic {
        Topic {
            name,
            props,
            clock,
            next_sequence: 1,
            duplicates: DuplicateWindow::default(),
            scheduled: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            routes,
            journal: None,
        }
    }

    /// New properties (the administration API's update); they apply to the next message.
    pub fn set_properties(&mut self, props: TopicProperties) {
        self.props = props;
    }

    fn take_sequence(&mut self) -> i64 {
        let seq = self.next_sequence;
        self.next_sequence += 1;
        seq
    }

    /// Number a message, drop it if it is a duplicate, hold it if it is scheduled for later.
    pub fn accept(
        &mut self,
        message: StoredMessage,
        scheduled_at: Option<SystemTime>,
        now: Instant,
        client: bool,
    ) -> Result<Accepted, BrokerError> {
        if client && message.len() > MAX_MESSAGE_SIZE {
            return Err(BrokerError::MessageTooLarge {
                size: message.len(),
                limit: MAX_MESSAGE_SIZE,
            });
        }
        let id = match self.duplicates.check(
            &message,
            self.props.requires_duplicate_detection,
            self.props.duplicate_detection_history_time_window,
            now,
        ) {
            Ok(id) => id,
            Err(original) => return Ok(Accepted::Held(original)),
        };
        let seq = self.take_sequence();
        if let Some(id) = id {
            self.duplicates.record(id, seq, now);
        }
        match scheduled_at
            .map(|t| self.clock.instant(t))
            .filter(|at| *at > now)
        {
            Some(at) => {
                self.note(seq);
                self.scheduled.insert(seq, (at, message));
                self.deadlines.insert((at, seq));
                Ok(Accepted::Held(seq))
            }
            None => Ok(Accepted::Now(seq, Box::new(message))),
        }
    }

    /// Scheduled messages that are due, in sequence order, with the instant each became due.
    pub fn expire(&mut self, now: Instant) -> Vec<(i64, Instant, StoredMessage)> {
        let mut due = Vec::new();
        while let Some(&(at, seq)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            self.note(seq);
            if let Some((_, m)) = self.scheduled.remove(&seq) {
                due.push((seq, at, m));
            }
        }
        due
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|d| d.0)
    }

    /// A scheduled message was added or removed (for the store).
    fn note(&mut self, seq: i64) {
        if let Some((_, _, dirty)) = &mut self.journal {
            dirty.insert(seq);
        }
    }

    /// From now on note every change for the store, under `key` (the topic's lower-cased path).
    pub fn start_journal(&mut self, key: Arc<str>) {
        self.duplicates.start_journal();
        self.journal = Some((key, 0, BTreeSet::new()));
    }

    /// Stop noting changes (the topic was deleted); returns its key.
    pub fn stop_journal(&mut self) -> Option<Arc<str>> {
        self.duplicates.stop_journal();
        self.journal.take().map(|(key, _, _)| key)
    }

    /// The rows that changed since the last call: the next sequence number, duplicate-detection ids
    /// and the scheduled messages held here.
    pub fn take_changes(&mut self) -> Vec<Op> {
        let Some((key, saved, dirty)) = &mut self.journal else {
            return Vec::new();
        };
        let key = key.clone();
        let mut ops = Vec::new();
        if *saved != self.next_sequence {
            *saved = self.next_sequence;
            ops.push(Op::PutSequence {
                entity: key.clone(),
                next: self.next_sequence,
            });
        }
        for seq in std::mem::take(dirty) {
            ops.push(match self.scheduled.get(&seq) {
                Some((at, message)) => Op::PutMessage {
                    entity: key.clone(),
                    part: store::PART_TOPIC_SCHEDULED,
                    seq,
                    record: record_of(
                        message,
                        &self.clock,
                        self.clock.wall(*at),
                        None,
                        0,
                        RecordState::Scheduled {
                            at_ms: millis(self.clock.wall(*at)),
                        },
                    ),
                },
                None => Op::DeleteMessage {
                    entity: key.clone(),
                    part: store::PART_TOPIC_SCHEDULED,
                    seq,
                },
            });
        }
        ops.extend(duplicate_ops(&key, &mut self.duplicates, &self.clock));
        ops
    }

    /// Put back a scheduled message the store kept.
    pub fn restore_scheduled(&mut self, seq: i64, record: MessageRecord) -> Result<(), String> {
        let RecordState::Scheduled { at_ms } = record.state else {
            return Err(format!(
                "a topic holds only scheduled messages, not {:?}",
                record.state
            ));
        };
        let message =
            StoredMessage::restore(record.raw, &record.annotations).map_err(|e| e.to_string())?;
        let at = self.clock.instant(from_millis(at_ms));
        self.scheduled.insert(seq, (at, message));
        self.deadlines.insert((at, seq));
        self.next_sequence = self.next_sequence.max(seq + 1);
        Ok(())
    }

    pub fn restore_sequence(&mut self, next: i64) {
        self.next_sequence = self.next_sequence.max(next);
    }

    pub fn restore_duplicate(&mut self, id: String, seq: i64, at: SystemTime) {
        let at = self.clock.instant(at);
        self.duplicates.restore(id, seq, at);
    }

    pub fn scheduled_count(&self) -> usize {
        self.scheduled.len()
    }

    /// Cancel scheduled messages; all must be scheduled, or nothing changes.
    pub fn cancel(&mut self, seqs: &[i64]) -> Result<(), BrokerError> {
        if let Some(missing) = seqs.iter().find(|s| !self.scheduled.contains_key(s)) {
            return Err(BrokerError::SequenceNotFound(*missing));
        }
        for seq in seqs {
            self.note(*seq);
            if let Some((at, _)) = self.scheduled.remove(seq) {
                self.deadlines.remove(&(at, *seq));
            }
        }
        Ok(())
    }

    /// Apply every subscription's rules to one message. Service Bus semantics: the matching rules
    /// without an action together give one copy; each matching rule with an action gives its own copy
    /// (with that rule's edits and a `RuleName` property). A subscription with no matching rule gets
    /// nothing. A failing filter or action dead-letters the copy (or drops it) and never stops the
    /// other subscriptions.
    pub fn route(
        &mut self,
        seq: i64,
        message: &StoredMessage,
        enqueued_at: SystemTime,
    ) -> Vec<(usize, Copy)> {
        let view = MessageView::of_message(message, seq, enqueued_at);
        let mut out = Vec::new();
        for r in 0..self.routes.len() {
            let mut plain = false;
            let mut actions = Vec::new();
            let mut failure = None;
            let route = &self.routes[r];
            for rule in &route.rules {
                match rule.filter.evaluate(&view) {
                    Selected::Yes => match &rule.action {
                        None => plain = true,
                        Some(action) => {
                            let mut edited = view.clone();
                            match action.apply(&mut edited) {
                                Ok(edits) => actions.push((rule.name.clone(), edits)),
                                Err(e) => {
                                    failure = Some(format!(
                                        "the action of rule '{}' failed: {e}",
                                        rule.name
                                    ))
                                }
                            }
                        }
                    },
                    Selected::No => {}
                    Selected::Error(e) => {
                        failure = Some(format!("the filter of rule '{}' failed: {e}", rule.name))
                    }
                }
            }
            let queue = route.queue;
            let dead_letter = route.dead_letter_on_filter_errors;
            if let Some(description) = failure {
                tracing::debug!(topic = %self.name, subscription = %route.name, seq, %description, "filter evaluation failed");
                if dead_letter {
                    out.push((
                        queue,
                        Copy::DeadLetter {
                            sequence: seq,
                            message: message.clone(),
                            description,
                        },
                    ));
                }
                continue;
            }
            let mut first = true;
            let mut number = |topic: &mut Topic| {
                // The first copy has the topic's number; further copies of the same message in one
                // subscription get numbers of their own, so receive-by-sequence-number stays exact.
                if std::mem::take(&mut first) {
                    seq
                } else {
                    topic.take_sequence()
                }
            };
            if plain {
                let sequence = number(self);
                out.push((
                    queue,
                    Copy::Deliver {
                        sequence,
                        message: message.clone(),
                    },
                ));
            }
            for (rule_name, edits) in actions {
                let sequence = number(self);
                match edited_copy(message, &rule_name, &edits) {
                    Ok(m) => out.push((
                        queue,
                        Copy::Deliver {
                            sequence,
                            message: m,
                        },
                    )),
                    Err(e) => {
                        let description =
                            format!("the action of rule '{rule_name}' could not be written: {e}");
                        if dead_letter {
                            out.push((
                                queue,
                                Copy::DeadLetter {
                                    sequence,
                                    message: message.clone(),
                                    description,
                                },
                            ));
                        }
                    }
                }
            }
        }
        out
    }
}

fn string_field(v: &FilterValue) -> Option<String> {
    match v {
        FilterValue::Null => None,
        FilterValue::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The subscription's private copy with an action's edits written into its properties and
/// application-properties, plus `RuleName`.
fn edited_copy(
    message: &StoredMessage,
    rule_name: &str,
    edits: &[Edit],
) -> Result<StoredMessage, crate::message::MessageError> {
    let mut app = message.application_properties()?;
    let mut props: Option<Properties> = None;
    for edit in edits {
        match edit {
            Edit::SetUser(name, value) => {
                // Replace a property whose name differs only by case (names are case-insensitive).
                let existing = app.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned();
                let key = existing.unwrap_or_else(|| name.clone());
                app.insert(key, value.to_simple());
            }
            Edit::RemoveUser(name) => {
                let existing: Vec<String> = app
                    .keys()
                    .filter(|k| k.eq_ignore_ascii_case(name))
                    .cloned()
                    .collect();
                for k in existing {
                    app.swap_remove(&k);
                }
            }
            Edit::SetSys(p, value) => {
                let props = props.get_or_insert_with(|| message.properties().unwrap_or_default());
                let text = string_field(value);
                match p {
                    SysProperty::MessageId => props.message_id = text.map(MessageId::String),
                    SysProperty::CorrelationId => {
                        props.correlation_id = text.map(MessageId::String)
                    }
                    SysProperty::Label => props.subject = text,
                    SysProperty::To => props.to = text,
                    SysProperty::ReplyTo => props.reply_to = text,
                    SysProperty::ReplyToSessionId => props.reply_to_group_id = text,
                    SysProperty::SessionId => props.group_id = text,
                    SysProperty::ContentType => props.content_type = text.map(Symbol::from),
                    // Service Bus ignores the others in a subscription (scheduled time, TTL,
                    // partition keys take effect only when a message is forwarded).
                    _ => {}
                }
            }
        }
    }
    app.insert(
        keys::RULE_NAME.to_string(),
        SimpleValue::String(rule_name.to_string()),
    );
    message.rewritten(props.as_ref(), app)
}
