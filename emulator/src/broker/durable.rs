//! The broker with a store (`--data-dir`): start from what the store kept, then hand it every change.
//!
//! Order matters in two places. At start, entities come first (Config.json's, then the definitions
//! the store kept, which win: they include what the administration API created or changed), then
//! messages, sequence numbers, duplicate-detection ids and session state; only then does the store
//! start writing and the timer task run. While serving, each entity's changes are taken under its
//! lock and given a place in the commit order there ([`Pending`]); a change that moves messages on
//! (a topic's fan-out, forwarded dead letters) is sent only after the moves it causes, so one commit
//! holds both sides and a crash cannot keep one without the other.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio::time::Instant;

use super::queue::Queue;
use super::queue::durable::from_millis;
use super::topic::Topic;
use super::{Broker, EntityKind, Node, lock};
use crate::config::{Config, QueueProperties, TopicProperties};
use crate::filter::Rule;
use crate::store::{self, Op, Opened, Pending, Store, StoreError};

/// What the store keeps of the entities (`meta/entities`, JSON): enough to create them again.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind")]
enum Definition {
    Queue {
        name: String,
        properties: QueueProperties,
    },
    Topic {
        name: String,
        properties: TopicProperties,
    },
    Subscription {
        topic: String,
        name: String,
        properties: QueueProperties,
        dead_lettering_on_filter_evaluation_exceptions: bool,
        rules: Vec<Rule>,
    },
}

impl Broker {
    /// A broker for `config` that keeps its state in `data_dir` (see [`crate::store`]): what an earlier
    /// run acknowledged is there again, and every change from now on is saved before it is
    /// acknowledged. Must be called inside a tokio runtime.
    pub fn open(config: &Config, data_dir: &Path) -> Result<Broker, StoreError> {
        let opened = Opened::open(data_dir)?;
        let broker = Broker::build(config);
        let started = std::time::Instant::now();
        let restored = broker.restore(&opened)?;
        let store = opened.start();
        let _ = broker.inner.store.set(store);
        broker.start_journals();
        broker.save_entities();
        tracing::info!(
            data_dir = %data_dir.display(),
            messages = restored,
            ms = started.elapsed().as_millis() as u64,
            "state restored from the data directory"
        );
        broker.start_timers();
        Ok(broker)
    }

    pub(super) fn store(&self) -> Option<&Store> {
        self.inner.store.get()
    }

    /// Wait until every change made so far is on disk (immediately without a store). Callers
    /// acknowledge to clients only after this.
    pub async fn durable(&self) -> Result<(), StoreError> {
        match self.store() {
            Some(store) => store.durable(store.submitted()).await,
            None => Ok(()),
        }
    }

    /// Write what is queued and close the data file cleanly (the next start needs no recovery).
    pub fn close_store(&self) {
        if let Some(store) = self.store() {
            store.close();
        }
    }

    /// The changes a queue made under its lock, with their place in the commit order taken now.
    /// Dropping the [`Pending`] sends them: callers drop it after the moves the changes caused.
    pub(super) fn journal_queue(&self, q: &mut Queue) -> Option<Pending> {
        let store = self.store()?;
        let ops = q.take_changes();
        (!ops.is_empty()).then(|| store.begin(ops))
    }

    /// [`Broker::journal_queue`] for a topic.
    pub(super) fn journal_topic(&self, t: &mut Topic) -> Option<Pending> {
        let store = self.store()?;
        let ops = t.take_changes();
        (!ops.is_empty()).then(|| store.begin(ops))
    }

    /// Note from now on the changes of an entity created while serving.
    pub(super) fn journal_new_queue(&self, q: &mut Queue, path: &str) {
        if self.store().is_some() {
            q.start_journal(Arc::from(path.to_ascii_lowercase()));
        }
    }

    pub(super) fn journal_new_topic(&self, t: &mut Topic, path: &str) {
        if self.store().is_some() {
            t.start_journal(Arc::from(path.to_ascii_lowercase()));
        }
    }

    /// A deleted entity's rows go too; sent under its lock, after everything it wrote before.
    pub(super) fn forget_entity(&self, key: Option<Arc<str>>) {
        if let (Some(store), Some(key)) = (self.store(), key) {
            store.submit(vec![Op::DeleteEntity(key)]);
        }
    }

    /// Save the entity definitions (after the administration API or `$management` changed them).
    pub(super) fn save_entities(&self) {
        let Some(store) = self.store() else {
            return;
        };
        // One at a time, so that the last definitions saved are the newest.
        let _order = lock(&self.inner.definitions);
        match serde_json::to_string(&self.definitions()) {
            Ok(json) => store.submit(vec![Op::PutEntities(json)]),
            Err(e) => tracing::error!(error = %e, "entity definitions not saved"),
        }
    }

    fn definitions(&self) -> Vec<Definition> {
        let mut defs = Vec::new();
        for info in self
            .list_entities(EntityKind::Queue, None)
            .unwrap_or_default()
        {
            if let super::EntityProperties::Queue(properties) = info.properties {
                defs.push(Definition::Queue {
                    name: info.path,
                    properties,
                });
            }
        }
        for topic in self
            .list_entities(EntityKind::Topic, None)
            .unwrap_or_default()
        {
            let subs = self
                .list_entities(EntityKind::Subscription, Some(&topic.path))
                .unwrap_or_default();
            if let super::EntityProperties::Topic(properties) = topic.properties {
                defs.push(Definition::Topic {
                    name: topic.path.clone(),
                    properties,
                });
            }
            for sub in subs {
                if let super::EntityProperties::Subscription {
                    properties,
                    dead_lettering_on_filter_evaluation_exceptions,
                } = sub.properties
                {
                    let rules = self
                        .rules(&topic.path, &sub.name)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| r.rule)
                        .collect();
                    defs.push(Definition::Subscription {
                        topic: topic.path.clone(),
                        name: sub.name,
                        properties,
                        dead_lettering_on_filter_evaluation_exceptions,
                        rules,
                    });
                }
            }
        }
        defs
    }

    /// Create (or update) the entities the store defines; Config.json's that it does not mention stay.
    fn restore_entities(&self, opened: &Opened) -> Result<(), StoreError> {
        let Some(json) = opened.entities()? else {
            return Ok(());
        };
        let defs: Vec<Definition> = serde_json::from_str(&json)
            .map_err(|e| store_damaged(opened, format!("entity definitions: {e}")))?;
        for def in defs {
            let done = match def {
                Definition::Queue { name, properties } => {
                    if self.entity_info(&name).is_some() {
                        self.update_queue(&name, properties).map(drop)
                    } else {
                        self.create_queue(&name, properties).map(drop)
                    }
                }
                Definition::Topic { name, properties } => {
                    if self.entity_info(&name).is_some() {
                        self.update_topic(&name, properties).map(drop)
                    } else {
                        self.create_topic(&name, properties).map(drop)
                    }
                }
                Definition::Subscription {
                    topic,
                    name,
                    properties,
                    dead_lettering_on_filter_evaluation_exceptions: dlq,
                    rules,
                } => self.restore_subscription(&topic, &name, properties, dlq, rules),
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "a stored entity definition was not applied");
            }
        }
        Ok(())
    }

    fn restore_subscription(
        &self,
        topic: &str,
        name: &str,
        properties: QueueProperties,
        dlq: bool,
        rules: Vec<Rule>,
    ) -> Result<(), super::RegistryError> {
        if self.rules(topic, name).is_err() {
            return self
                .create_subscription(topic, name, properties, dlq, rules)
                .map(drop);
        }
        self.update_subscription(topic, name, properties, dlq)?;
        for old in self.rules(topic, name)? {
            self.delete_rule(topic, name, &old.rule.name)?;
        }
        for rule in rules {
            self.put_rule(topic, name, rule, false)?;
        }
        Ok(())
    }

    /// Put back what the store kept. Returns how many messages.
    fn restore(&self, opened: &Opened) -> Result<usize, StoreError> {
        self.restore_entities(opened)?;
        let targets = {
            let e = self.entities();
            e.by_name
                .iter()
                .map(|(key, path)| (key.clone(), path.node))
                .collect::<HashMap<String, Node>>()
        };
        let mut count = 0;
        let mut orphans: HashMap<String, usize> = HashMap::new();
        let mut bad: Option<String> = None;
        opened.for_each_message(|entity, part, seq, record| {
            if bad.is_some() {
                return;
            }
            let done = match targets.get(entity) {
                Some(Node::QueueLike { index, .. }) => {
                    lock(&self.queue_slot(*index)).restore_message(part, seq, record)
                }
                Some(Node::Topic { index }) if part == store::PART_TOPIC_SCHEDULED => {
                    lock(&self.topic_slot(*index)).restore_scheduled(seq, record)
                }
                _ => {
                    *orphans.entry(entity.to_string()).or_default() += 1;
                    return;
                }
            };
            match done {
                Ok(()) => count += 1,
                Err(e) => bad = Some(format!("message {seq} of '{entity}': {e}")),
            }
        })?;
        if let Some(detail) = bad {
            return Err(store_damaged(opened, detail));
        }
        for (entity, n) in orphans {
            tracing::warn!(
                entity,
                messages = n,
                "stored messages of an entity that no longer exists are kept in the file but not served; create the entity again to get them back"
            );
        }
        for (entity, next) in opened.sequences()? {
            match targets.get(&entity) {
                Some(Node::QueueLike { index, .. }) => {
                    lock(&self.queue_slot(*index)).restore_sequence(next)
                }
                Some(Node::Topic { index }) => {
                    lock(&self.topic_slot(*index)).restore_sequence(next)
                }
                None => {}
            }
        }
        let mut duplicates = opened.duplicates()?;
        duplicates.sort_by_key(|d| d.3);
        for (entity, id, seq, at) in duplicates {
            match targets.get(&entity) {
                Some(Node::QueueLike { index, .. }) => {
                    lock(&self.queue_slot(*index)).restore_duplicate(id, seq, from_millis(at))
                }
                Some(Node::Topic { index }) => {
                    lock(&self.topic_slot(*index)).restore_duplicate(id, seq, from_millis(at))
                }
                None => {}
            }
        }
        for (entity, key, record) in opened.sessions()? {
            if let Some(Node::QueueLike { index, .. }) = targets.get(&entity) {
                lock(&self.queue_slot(*index)).restore_session(&key, record);
            }
        }
        Ok(count)
    }

    /// Turn on change tracking everywhere; the unlocks of messages the crash left locked are the first
    /// changes saved.
    fn start_journals(&self) {
        let (mut queues, mut topics) = (Vec::new(), Vec::new());
        for (key, path) in self.entities().by_name.iter() {
            match path.node {
                Node::QueueLike { index, .. } => queues.push((key.clone(), index)),
                Node::Topic { index } => topics.push((key.clone(), index)),
            }
        }
        // Every journal first: forwarding below may move a message into any entity.
        for (key, index) in &queues {
            lock(&self.queue_slot(*index)).start_journal(Arc::from(key.as_str()));
        }
        for (key, index) in &topics {
            lock(&self.topic_slot(*index)).start_journal(Arc::from(key.as_str()));
        }
        for (_, index) in queues {
            let slot = self.queue_slot(index);
            let mut q = lock(&slot);
            // Lock recovery may have dead-lettered (or forwarded) a message; apply deadlines too.
            q.expire(Instant::now());
            let forwarded = q.take_forwarded();
            let pending = self.journal_queue(&mut q);
            drop(q);
            self.forward_dead_letters(index, forwarded);
            drop(pending);
        }
        for (_, index) in topics {
            let slot = self.topic_slot(index);
            let pending = self.journal_topic(&mut lock(&slot));
            drop(pending);
        }
    }
}

fn store_damaged(opened: &Opened, detail: String) -> StoreError {
    StoreError::Damaged {
        path: opened.path().to_path_buf(),
        detail,
    }
}
