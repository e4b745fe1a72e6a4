//! The entity registry: which queues, topics, subscriptions and rules exist, created from Config.json
//! at start and by the administration API at run time, and where forwarding sends what reaches each.
//!
//! Entities live in index-stable slots: an [`EntityPath`] a link holds keeps naming the entity it
//! resolved to. Deleting an entity empties its slot and removes its name, so a stale path no longer
//! [`Broker::exists`] (links on it are detached with `amqp:not-found`), and an entity created later
//! under the same name gets a new slot rather than the old one's messages.
//!
//! Lock order: the registry's `RwLock` may be held while an entity's mutex is taken (admin changes
//! adjust the entity), never the other way round; message operations read the registry only to clone
//! a slot's `Arc` and release it before locking the entity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::queue::{Queue, Sub};
use super::topic::{Route, Topic};
use super::{Broker, Destination, EntityKind, EntityPath, Node, QueueCounts, entity_path, lock};
use crate::config::{QueueProperties, TopicProperties};
use crate::filter::{Filter, Rule};

/// Why an entity change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the messaging entity '{0}' already exists")]
    AlreadyExists(String),
    #[error("the messaging entity '{0}' could not be found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// The properties an entity was created or last updated with (what the administration API echoes).
#[derive(Debug, Clone, PartialEq)]
pub enum EntityProperties {
    Queue(QueueProperties),
    Topic(TopicProperties),
    Subscription {
        properties: QueueProperties,
        dead_lettering_on_filter_evaluation_exceptions: bool,
    },
}

/// One entity as the administration API and the CLI see it.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityInfo {
    /// `q`, `t`, or the subscription's own name.
    pub name: String,
    /// `q`, `t` or `t/Subscriptions/s`.
    pub path: String,
    pub kind: EntityKind,
    pub properties: EntityProperties,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// For a topic: its scheduled messages, and the rest summed over its subscriptions.
    pub counts: QueueCounts,
    /// Topics only.
    pub subscription_count: usize,
    pub sql_filter_count: usize,
    pub correlation_filter_count: usize,
}

/// A rule with the time it was created.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    pub rule: Rule,
    pub created_at: SystemTime,
}

/// A live queue-like slot.
struct QueueSlot {
    path: EntityPath,
    /// What reaches the entity is stored per these (ForwardTo, ForwardDeadLetteredMessagesTo).
    effective: QueueProperties,
}

struct Meta {
    properties: EntityProperties,
    created_at: SystemTime,
    updated_at: SystemTime,
    /// Subscriptions: rule name (lower-cased) → creation time.
    rule_times: HashMap<String, SystemTime>,
}

#[derive(Default)]
pub(super) struct Entities {
    pub(super) queues: Vec<Arc<Mutex<Queue>>>,
    pub(super) topics: Vec<Arc<Mutex<Topic>>>,
    /// Per queue slot; `None` once deleted.
    queue_slots: Vec<Option<QueueSlot>>,
    /// Per topic slot: its path; `None` once deleted.
    topic_slots: Vec<Option<EntityPath>>,
    /// Lower-cased entity path (`q`, `t`, `t/subscriptions/s`) → the path.
    pub(super) by_name: HashMap<String, EntityPath>,
    meta: HashMap<String, Meta>,
    /// Per queue slot: where what reaches it is stored (itself unless `ForwardTo` is set).
    pub(super) forward_to: Vec<Destination>,
    /// Per queue slot: where its dead letters go instead of its dead-letter queue.
    pub(super) dead_letters_to: Vec<Option<Destination>>,
}

fn key(path: &str) -> String {
    path.to_ascii_lowercase()
}

fn subscription_path(topic: &str, sub: &str) -> String {
    format!("{topic}/{}/{sub}", entity_path::SUBSCRIPTIONS)
}

impl Entities {
    /// Names of the live queues or topics, in creation order.
    pub(super) fn names(&self, kind: EntityKind) -> Vec<String> {
        match kind {
            EntityKind::Topic => self
                .topic_slots
                .iter()
                .flatten()
                .map(|p| p.name.to_string())
                .collect(),
            _ => self
                .queue_slots
                .iter()
                .flatten()
                .filter(|s| s.path.kind == kind)
                .map(|s| s.path.name.to_string())
                .collect(),
        }
    }

    fn destination_of(&self, target: &Option<String>) -> Option<Destination> {
        let name = entity_path::path_of(target.as_deref()?);
        match self.by_name.get(&key(name))?.node {
            Node::QueueLike { index, .. } => Some(Destination::Queue(index)),
            Node::Topic { index } => Some(Destination::Topic(index)),
        }
    }

    /// Recompute where messages reaching each queue-like entity end up after following `ForwardTo`
    /// through queues (bounded: loops stop where they close), and where dead letters go.
    fn recompute_routing(&mut self) {
        let n = self.queue_slots.len();
        let next: Vec<Option<Destination>> = self
            .queue_slots
            .iter()
            .map(|s| {
                s.as_ref()
                    .and_then(|s| self.destination_of(&s.effective.forward_to))
            })
            .collect();
        let destination = |start: Destination| {
            let mut at = start;
            for _ in 0..n {
                match at {
                    Destination::Queue(i) => match next[i] {
                        Some(to) if to != at => at = to,
                        _ => break,
                    },
                    Destination::Topic(_) => break,
                }
            }
            at
        };
        self.forward_to = (0..n).map(|i| destination(Destination::Queue(i))).collect();
        let dead_letters_to: Vec<Option<Destination>> = self
            .queue_slots
            .iter()
            .map(|s| {
                s.as_ref()
                    .and_then(|s| {
                        self.destination_of(&s.effective.forward_dead_lettered_messages_to)
                    })
                    .map(destination)
            })
            .collect();
        for (i, dl) in dead_letters_to.iter().enumerate() {
            if self.queue_slots[i].is_some() {
                lock(&self.queues[i]).forward_dead_letters(dl.is_some());
            }
        }
        self.dead_letters_to = dead_letters_to;
    }

    fn add_queue_slot(
        &mut self,
        name: &str,
        kind: EntityKind,
        effective: QueueProperties,
        broker: &Broker,
    ) -> usize {
        let index = self.queues.len();
        let path = EntityPath {
            node: Node::QueueLike {
                index,
                sub: Sub::Main,
            },
            kind,
            name: Arc::from(name),
        };
        let mut queue = Queue::new(name.to_string(), effective.clone(), broker.inner.clock);
        broker.journal_new_queue(&mut queue, name);
        self.queues.push(Arc::new(Mutex::new(queue)));
        self.by_name.insert(key(name), path.clone());
        self.queue_slots.push(Some(QueueSlot { path, effective }));
        index
    }

    fn topic_index(&self, topic: &str) -> Result<usize, RegistryError> {
        match self.by_name.get(&key(topic)).map(|p| p.node) {
            Some(Node::Topic { index }) => Ok(index),
            _ => Err(RegistryError::NotFound(topic.to_string())),
        }
    }

    fn subscription_index(&self, topic: &str, sub: &str) -> Result<usize, RegistryError> {
        let path = subscription_path(topic, sub);
        match self.by_name.get(&key(&path)) {
            Some(p) if p.kind == EntityKind::Subscription => Ok(p
                .queue_like()
                .map(|(i, _)| i)
                .ok_or_else(|| RegistryError::NotFound(path.clone()))?),
            _ => Err(RegistryError::NotFound(path)),
        }
    }

    fn check_free(&self, path: &str) -> Result<(), RegistryError> {
        if self.by_name.contains_key(&key(path)) {
            return Err(RegistryError::AlreadyExists(path.to_string()));
        }
        Ok(())
    }

    fn remove_queue_slot(&mut self, index: usize, broker: &Broker) {
        if let Some(slot) = self.queue_slots[index].take() {
            self.by_name.remove(&key(&slot.path.name));
            self.meta.remove(&key(&slot.path.name));
            // Free the messages; the slot stays so that indexes held elsewhere stay valid.
            let mut q = lock(&self.queues[index]);
            broker.forget_entity(q.stop_journal());
            *q = Queue::new(
                slot.path.name.to_string(),
                slot.effective,
                broker.inner.clock,
            );
        }
    }
}

fn same_topic(a: &EntityPath, b: &EntityPath) -> bool {
    match (a.node, b.node) {
        (Node::Topic { index: x }, Node::Topic { index: y }) => x == y,
        _ => true,
    }
}

/// A subscription's effective properties: the topic's TTL caps every copy; duplicates are the
/// topic's business.
fn subscription_effective(sub: &QueueProperties, topic: &TopicProperties) -> QueueProperties {
    let mut effective = sub.clone();
    effective.default_message_time_to_live = effective
        .default_message_time_to_live
        .min(topic.default_message_time_to_live);
    effective.requires_duplicate_detection = false;
    effective
}

impl Broker {
    pub(super) fn entities(&self) -> std::sync::RwLockReadGuard<'_, Entities> {
        self.inner
            .entities
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn entities_mut(&self) -> std::sync::RwLockWriteGuard<'_, Entities> {
        self.inner
            .entities
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn queue_slot(&self, index: usize) -> Arc<Mutex<Queue>> {
        self.entities().queues[index].clone()
    }

    pub(super) fn topic_slot(&self, index: usize) -> Arc<Mutex<Topic>> {
        self.entities().topics[index].clone()
    }

    /// Whether the entity a path resolved to still exists (it was not deleted since).
    pub fn exists(&self, entity: &EntityPath) -> bool {
        self.entities()
            .by_name
            .get(&key(&entity.name))
            .is_some_and(|p| {
                p.queue_like().map(|(i, _)| i) == entity.queue_like().map(|(i, _)| i)
                    && p.kind == entity.kind
                    && same_topic(p, entity)
            })
    }

    /// Tell waiting links that something changed (an entity deleted: its links detach).
    fn registry_changed(&self) {
        self.bump();
    }

    /// How many entities were deleted so far: a connection checks its links with [`Broker::exists`]
    /// only when this moved, not on every message.
    pub fn deletions(&self) -> u64 {
        self.inner
            .deletions
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn meta(&self, properties: EntityProperties) -> Meta {
        let now = self.now();
        Meta {
            properties,
            created_at: now,
            updated_at: now,
            rule_times: HashMap::new(),
        }
    }

    /// Create a queue.
    pub fn create_queue(
        &self,
        name: &str,
        properties: QueueProperties,
    ) -> Result<EntityInfo, RegistryError> {
        {
            let mut e = self.entities_mut();
            e.check_free(name)?;
            e.add_queue_slot(name, EntityKind::Queue, properties.clone(), self);
            self.created(&mut e, name, EntityProperties::Queue(properties));
        }
        self.save_entities();
        self.info(name)
    }

    /// Replace a queue's properties; messages and locks stay. New values apply from the next
    /// operation (a lock taken now gets the new lock duration).
    pub fn update_queue(
        &self,
        name: &str,
        properties: QueueProperties,
    ) -> Result<EntityInfo, RegistryError> {
        self.update_queue_like(name, EntityKind::Queue, |_| {
            Ok((
                properties.clone(),
                EntityProperties::Queue(properties.clone()),
            ))
        })?;
        self.save_entities();
        self.info(name)
    }

    fn update_queue_like(
        &self,
        path: &str,
        kind: EntityKind,
        derive: impl FnOnce(&Entities) -> Result<(QueueProperties, EntityProperties), RegistryError>,
    ) -> Result<(), RegistryError> {
        let mut e = self.entities_mut();
        let (index, _) = e
            .by_name
            .get(&key(path))
            .filter(|p| p.kind == kind)
            .and_then(EntityPath::queue_like)
            .ok_or_else(|| RegistryError::NotFound(path.to_string()))?;
        let (effective, declared) = derive(&e)?;
        if let Some(slot) = e.queue_slots[index].as_mut() {
            slot.effective = effective.clone();
        }
        lock(&e.queues[index]).set_properties(effective);
        let now = self.now();
        if let Some(meta) = e.meta.get_mut(&key(path)) {
            meta.properties = declared;
            meta.updated_at = now;
        }
        e.recompute_routing();
        drop(e);
        // A shorter TTL or lock may already be due; a changed forward applies to the next message.
        self.registry_changed();
        Ok(())
    }

    /// Create a topic without subscriptions.
    pub fn create_topic(
        &self,
        name: &str,
        properties: TopicProperties,
    ) -> Result<EntityInfo, RegistryError> {
        {
            let mut e = self.entities_mut();
            e.check_free(name)?;
            let index = e.topics.len();
            let path = EntityPath {
                node: Node::Topic { index },
                kind: EntityKind::Topic,
                name: Arc::from(name),
            };
            let mut topic = Topic::new(
                name.to_string(),
                properties.clone(),
                self.inner.clock,
                Vec::new(),
            );
            self.journal_new_topic(&mut topic, name);
            e.topics.push(Arc::new(Mutex::new(topic)));
            e.topic_slots.push(Some(path.clone()));
            e.by_name.insert(key(name), path);
            self.created(&mut e, name, EntityProperties::Topic(properties));
        }
        self.save_entities();
        self.info(name)
    }

    /// Replace a topic's properties (duplicate detection, TTL cap of new copies).
    pub fn update_topic(
        &self,
        name: &str,
        properties: TopicProperties,
    ) -> Result<EntityInfo, RegistryError> {
        {
            let mut e = self.entities_mut();
            let index = e.topic_index(name)?;
            let subscriptions: Vec<usize> = {
                let mut topic = lock(&e.topics[index]);
                topic.set_properties(properties.clone());
                topic.routes.iter().map(|r| r.queue).collect()
            };
            // The topic's TTL caps its subscriptions' copies: re-derive what each one applies.
            for sub in subscriptions {
                let Some(slot) = e.queue_slots[sub].as_ref() else {
                    continue;
                };
                let declared = match e.meta.get(&key(&slot.path.name)).map(|m| &m.properties) {
                    Some(EntityProperties::Subscription { properties: p, .. }) => p.clone(),
                    _ => continue,
                };
                let effective = subscription_effective(&declared, &properties);
                lock(&e.queues[sub]).set_properties(effective.clone());
                if let Some(slot) = e.queue_slots[sub].as_mut() {
                    slot.effective = effective;
                }
            }
            let now = self.now();
            if let Some(meta) = e.meta.get_mut(&key(name)) {
                meta.properties = EntityProperties::Topic(properties);
                meta.updated_at = now;
            }
        }
        self.save_entities();
        self.info(name)
    }

    fn topic_properties(e: &Entities, topic: &str) -> TopicProperties {
        match e.meta.get(&key(topic)).map(|m| &m.properties) {
            Some(EntityProperties::Topic(p)) => p.clone(),
            _ => TopicProperties::default(),
        }
    }

    /// Create a subscription with these rules (Service Bus gives a new one `$Default`, a true filter;
    /// pass [`Rule::default_rule`] for that).
    pub fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        properties: QueueProperties,
        dead_lettering_on_filter_evaluation_exceptions: bool,
        rules: Vec<Rule>,
    ) -> Result<EntityInfo, RegistryError> {
        let path;
        {
            let mut e = self.entities_mut();
            let t = e.topic_index(topic)?;
            // The path with the topic's spelling, as Config.json subscriptions are named.
            let topic_name = e.topic_slots[t]
                .as_ref()
                .map_or_else(|| topic.to_string(), |p| p.name.to_string());
            path = subscription_path(&topic_name, name);
            e.check_free(&path)?;
            let effective = subscription_effective(&properties, &Self::topic_properties(&e, topic));
            let index = e.add_queue_slot(&path, EntityKind::Subscription, effective, self);
            let now = self.now();
            lock(&e.topics[t]).routes.push(Route {
                queue: index,
                name: name.to_string(),
                rules: rules.clone(),
                dead_letter_on_filter_errors: dead_lettering_on_filter_evaluation_exceptions,
            });
            let meta = self.created(
                &mut e,
                &path,
                EntityProperties::Subscription {
                    properties,
                    dead_lettering_on_filter_evaluation_exceptions,
                },
            );
            meta.rule_times = rules.iter().map(|r| (key(&r.name), now)).collect();
        }
        self.save_entities();
        self.info(&path)
    }

    /// Replace a subscription's properties; its rules and messages stay.
    pub fn update_subscription(
        &self,
        topic: &str,
        name: &str,
        properties: QueueProperties,
        dead_lettering_on_filter_evaluation_exceptions: bool,
    ) -> Result<EntityInfo, RegistryError> {
        let path = subscription_path(topic, name);
        self.update_queue_like(&path, EntityKind::Subscription, |e| {
            let t = e.topic_index(topic)?;
            let index = e.subscription_index(topic, name)?;
            if let Some(route) = lock(&e.topics[t])
                .routes
                .iter_mut()
                .find(|r| r.queue == index)
            {
                route.dead_letter_on_filter_errors = dead_lettering_on_filter_evaluation_exceptions;
            }
            Ok((
                subscription_effective(&properties, &Self::topic_properties(e, topic)),
                EntityProperties::Subscription {
                    properties: properties.clone(),
                    dead_lettering_on_filter_evaluation_exceptions,
                },
            ))
        })?;
        self.save_entities();
        self.info(&path)
    }

    /// Delete a queue, a topic (with its subscriptions) or a subscription (`t/Subscriptions/s`),
    /// with their messages. Links on them are detached at the next change notification.
    pub fn delete_entity(&self, path: &str) -> Result<(), RegistryError> {
        {
            let mut e = self.entities_mut();
            let found = e
                .by_name
                .get(&key(path))
                .cloned()
                .ok_or_else(|| RegistryError::NotFound(path.to_string()))?;
            match found.node {
                Node::QueueLike { index, .. } => {
                    if found.kind == EntityKind::Subscription {
                        for t in e.topics.iter() {
                            lock(t).routes.retain(|r| r.queue != index);
                        }
                    }
                    e.remove_queue_slot(index, self);
                }
                Node::Topic { index } => {
                    let subs: Vec<usize> = {
                        let mut t = lock(&e.topics[index]);
                        let subs = t.routes.iter().map(|r| r.queue).collect();
                        self.forget_entity(t.stop_journal());
                        // Free the scheduled messages; the slot stays for indexes held elsewhere.
                        *t = Topic::new(
                            found.name.to_string(),
                            TopicProperties::default(),
                            self.inner.clock,
                            Vec::new(),
                        );
                        subs
                    };
                    for s in subs {
                        e.remove_queue_slot(s, self);
                    }
                    e.topic_slots[index] = None;
                    e.by_name.remove(&key(path));
                    e.meta.remove(&key(path));
                }
            }
            e.recompute_routing();
        }
        self.inner
            .deletions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.registry_changed();
        self.save_entities();
        Ok(())
    }

    fn info(&self, path: &str) -> Result<EntityInfo, RegistryError> {
        self.entity_info(path)
            .ok_or_else(|| RegistryError::NotFound(path.to_string()))
    }

    /// Record what an entity was created with, and re-derive forwarding (a queue may already forward
    /// to a new entity of this name).
    fn created<'e>(
        &self,
        e: &'e mut Entities,
        path: &str,
        properties: EntityProperties,
    ) -> &'e mut Meta {
        let meta = self.meta(properties);
        e.recompute_routing();
        e.meta.entry(key(path)).insert_entry(meta).into_mut()
    }

    /// One entity by path (`q`, `t`, `t/Subscriptions/s`; case-insensitive).
    pub fn entity_info(&self, path: &str) -> Option<EntityInfo> {
        let (found, meta_props, created_at, updated_at, topic_routes) = {
            let e = self.entities();
            let found = e.by_name.get(&key(path))?.clone();
            let meta = e.meta.get(&key(path))?;
            let routes = match found.node {
                Node::Topic { index } => Some(e.topics[index].clone()),
                Node::QueueLike { .. } => None,
            };
            (
                found,
                meta.properties.clone(),
                meta.created_at,
                meta.updated_at,
                routes,
            )
        };
        let name = match found.kind {
            EntityKind::Subscription => found
                .name
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            _ => found.name.to_string(),
        };
        let mut info = EntityInfo {
            name,
            path: found.name.to_string(),
            kind: found.kind,
            properties: meta_props,
            created_at,
            updated_at,
            counts: QueueCounts::default(),
            subscription_count: 0,
            sql_filter_count: 0,
            correlation_filter_count: 0,
        };
        match topic_routes {
            Some(topic) => {
                {
                    let t = lock(&topic);
                    info.subscription_count = t.routes.len();
                    for rule in t.routes.iter().flat_map(|r| &r.rules) {
                        match rule.filter {
                            Filter::Correlation(_) => info.correlation_filter_count += 1,
                            _ => info.sql_filter_count += 1,
                        }
                    }
                }
                info.counts = self.topic_counts(&found.name).unwrap_or_default();
            }
            None => info.counts = self.counts(&found.name).unwrap_or_default(),
        }
        Some(info)
    }

    /// Queues (`kind` Queue), topics (Topic) or one topic's subscriptions (Subscription with
    /// `topic`), sorted by name case-insensitively. `None` if the topic does not exist.
    pub fn list_entities(&self, kind: EntityKind, topic: Option<&str>) -> Option<Vec<EntityInfo>> {
        let paths: Vec<String> = {
            let e = self.entities();
            match (kind, topic) {
                (EntityKind::Subscription, Some(topic)) => {
                    let t = e.topic_index(topic).ok()?;
                    let t = lock(&e.topics[t]);
                    t.routes
                        .iter()
                        .filter_map(|r| e.queue_slots[r.queue].as_ref())
                        .map(|s| s.path.name.to_string())
                        .collect()
                }
                _ => e
                    .by_name
                    .values()
                    .filter(|p| p.kind == kind)
                    .map(|p| p.name.to_string())
                    .collect(),
            }
        };
        let mut list: Vec<EntityInfo> = paths.iter().filter_map(|p| self.entity_info(p)).collect();
        list.sort_by_key(|i| i.name.to_ascii_lowercase());
        Some(list)
    }

    /// A subscription's rules in order, with their creation times.
    pub fn rules(&self, topic: &str, sub: &str) -> Result<Vec<RuleInfo>, RegistryError> {
        let e = self.entities();
        let t = e.topic_index(topic)?;
        let index = e.subscription_index(topic, sub)?;
        let times = e
            .meta
            .get(&key(&subscription_path(topic, sub)))
            .map(|m| &m.rule_times);
        let created = |name: &str| {
            times
                .and_then(|t| t.get(&key(name)).copied())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        let t = lock(&e.topics[t]);
        Ok(t.routes
            .iter()
            .find(|r| r.queue == index)
            .map(|r| {
                r.rules
                    .iter()
                    .map(|rule| RuleInfo {
                        created_at: created(&rule.name),
                        rule: rule.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Add a rule to a subscription (`update`: replace the rule of that name instead).
    pub fn put_rule(
        &self,
        topic: &str,
        sub: &str,
        rule: Rule,
        update: bool,
    ) -> Result<RuleInfo, RegistryError> {
        let mut e = self.entities_mut();
        let t = e.topic_index(topic)?;
        let index = e.subscription_index(topic, sub)?;
        let rule_path = format!("{}/Rules/{}", subscription_path(topic, sub), rule.name);
        {
            let mut topic_state = lock(&e.topics[t]);
            let route = topic_state
                .routes
                .iter_mut()
                .find(|r| r.queue == index)
                .ok_or_else(|| RegistryError::NotFound(subscription_path(topic, sub)))?;
            let existing = route
                .rules
                .iter()
                .position(|r| r.name.eq_ignore_ascii_case(&rule.name));
            match (existing, update) {
                (Some(_), false) => return Err(RegistryError::AlreadyExists(rule_path)),
                (None, true) => return Err(RegistryError::NotFound(rule_path)),
                (Some(i), true) => route.rules[i] = rule.clone(),
                (None, false) => route.rules.push(rule.clone()),
            }
        }
        let now = self.now();
        let times = &mut e
            .meta
            .get_mut(&key(&subscription_path(topic, sub)))
            .ok_or_else(|| RegistryError::NotFound(subscription_path(topic, sub)))?
            .rule_times;
        let created_at = *times.entry(key(&rule.name)).or_insert(now);
        drop(e);
        self.save_entities();
        Ok(RuleInfo { rule, created_at })
    }

    /// Remove a rule from a subscription.
    pub fn delete_rule(&self, topic: &str, sub: &str, rule: &str) -> Result<(), RegistryError> {
        let e = self.entities();
        let t = e.topic_index(topic)?;
        let index = e.subscription_index(topic, sub)?;
        let mut topic_state = lock(&e.topics[t]);
        let route = topic_state
            .routes
            .iter_mut()
            .find(|r| r.queue == index)
            .ok_or_else(|| RegistryError::NotFound(subscription_path(topic, sub)))?;
        let before = route.rules.len();
        route.rules.retain(|r| !r.name.eq_ignore_ascii_case(rule));
        if route.rules.len() == before {
            return Err(RegistryError::NotFound(format!(
                "{}/Rules/{rule}",
                subscription_path(topic, sub)
            )));
        }
        drop(topic_state);
        drop(e);
        self.save_entities();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::broker::{Outcome, ReceiveMode};
    use crate::config::Config;
    use crate::message::StoredMessage;

    fn message() -> StoredMessage {
        // amqp-value "hi"
        StoredMessage::parse(bytes::Bytes::from_static(&[
            0x00, 0x53, 0x77, 0xa1, 2, b'h', b'i',
        ]))
        .unwrap()
    }

    fn abandon() -> Outcome {
        Outcome::Abandon {
            count_attempt: true,
            properties_to_modify: Vec::new(),
        }
    }

    #[tokio::test]
    async fn queue_created_at_run_time_takes_messages_and_its_properties() {
        let broker = Broker::new(&Config::with_queues(["existing"]));
        let props = QueueProperties {
            max_delivery_count: 2,
            ..QueueProperties::default()
        };
        let info = broker.create_queue("Fresh", props.clone()).unwrap();
        assert_eq!(info.kind, EntityKind::Queue);
        assert_eq!(info.properties, EntityProperties::Queue(props));
        assert_eq!(
            broker.create_queue("fresh", QueueProperties::default()),
            Err(RegistryError::AlreadyExists("fresh".into()))
        );
        assert_eq!(broker.queue_names(), ["existing", "Fresh"]);
        let q = broker.resolve("fresh").unwrap();
        broker.send(&q, message()).unwrap();
        for _ in 0..2 {
            let d = broker.receive(&q, ReceiveMode::PeekLock).unwrap();
            broker.settle(&q, d.lock_token, abandon()).unwrap();
        }
        assert!(broker.receive(&q, ReceiveMode::PeekLock).is_none());
        assert_eq!(broker.counts("fresh").unwrap().dead_letter_message_count, 1);
    }

    #[tokio::test]
    async fn update_changes_behaviour_and_keeps_messages() {
        let broker = Broker::new(&Config::with_queues(["q"]));
        let q = broker.resolve("q").unwrap();
        broker.send(&q, message()).unwrap();
        let props = QueueProperties {
            max_delivery_count: 1,
            lock_duration: Duration::from_secs(5),
            ..QueueProperties::default()
        };
        let info = broker.update_queue("Q", props).unwrap();
        assert!(info.updated_at >= info.created_at);
        assert_eq!(info.counts.active_message_count, 1);
        let d = broker.receive(&q, ReceiveMode::PeekLock).unwrap();
        let until = d.locked_until.unwrap();
        assert!(until <= broker.now() + Duration::from_secs(5));
        broker.settle(&q, d.lock_token, abandon()).unwrap();
        assert_eq!(broker.counts("q").unwrap().dead_letter_message_count, 1);
        assert_eq!(
            broker.update_queue("nope", QueueProperties::default()),
            Err(RegistryError::NotFound("nope".into()))
        );
    }

    #[tokio::test]
    async fn deleted_entities_are_gone_and_their_names_reusable() {
        let broker = Broker::new(&Config::with_queues(["q"]));
        let old = broker.resolve("q").unwrap();
        broker.send(&old, message()).unwrap();
        broker.delete_entity("Q").unwrap();
        assert!(!broker.exists(&old));
        assert!(broker.resolve("q").is_err());
        assert_eq!(
            broker.delete_entity("q"),
            Err(RegistryError::NotFound("q".into()))
        );
        broker
            .create_queue("q", QueueProperties::default())
            .unwrap();
        let new = broker.resolve("q").unwrap();
        assert!(broker.exists(&new) && !broker.exists(&old));
        assert_eq!(broker.counts("q").unwrap().active_message_count, 0);
    }

    #[tokio::test]
    async fn topics_subscriptions_and_rules_at_run_time() {
        let broker = Broker::new(&Config::with_queues(["q"]));
        broker
            .create_topic("t", TopicProperties::default())
            .unwrap();
        broker
            .create_subscription(
                "T",
                "all",
                QueueProperties::default(),
                true,
                vec![Rule::default_rule()],
            )
            .unwrap();
        broker
            .create_subscription("t", "red", QueueProperties::default(), true, Vec::new())
            .unwrap();
        broker
            .put_rule("t", "red", Rule::sql("red", "1=1").unwrap(), false)
            .unwrap();
        assert!(matches!(
            broker.put_rule("t", "red", Rule::sql("red", "1=1").unwrap(), false),
            Err(RegistryError::AlreadyExists(_))
        ));
        let t = broker.resolve("t").unwrap();
        broker.send(&t, message()).unwrap();
        assert_eq!(
            broker
                .counts("t/subscriptions/red")
                .unwrap()
                .active_message_count,
            1
        );
        let info = broker.entity_info("t").unwrap();
        assert_eq!(info.subscription_count, 2);
        assert_eq!(info.sql_filter_count, 2);
        assert_eq!(info.counts.active_message_count, 2);
        let subs: Vec<String> = broker
            .list_entities(EntityKind::Subscription, Some("t"))
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(subs, ["all", "red"]);

        broker.delete_rule("t", "red", "RED").unwrap();
        broker.send(&t, message()).unwrap();
        assert_eq!(
            broker
                .counts("t/subscriptions/red")
                .unwrap()
                .active_message_count,
            1
        );
        let sub = broker.resolve("t/Subscriptions/all").unwrap();
        broker.delete_entity("t").unwrap();
        assert!(!broker.exists(&sub));
        assert!(broker.resolve("t/subscriptions/red").is_err());
        assert!(
            broker
                .list_entities(EntityKind::Subscription, Some("t"))
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_topic_update_re_caps_its_subscriptions_ttl() {
        let broker = Broker::new(&Config::with_queues(["q"]));
        broker
            .create_topic("t", TopicProperties::default())
            .unwrap();
        broker
            .create_subscription("t", "s", QueueProperties::default(), true, Vec::new())
            .unwrap();
        let short = TopicProperties {
            default_message_time_to_live: Duration::from_secs(30),
            ..TopicProperties::default()
        };
        broker.update_topic("t", short).unwrap();
        let sub = broker.queue_properties("t/Subscriptions/s").unwrap();
        assert_eq!(sub.default_message_time_to_live, Duration::from_secs(30));
        // What the subscription was created with is still what it reports.
        let EntityProperties::Subscription { properties, .. } =
            broker.entity_info("t/Subscriptions/s").unwrap().properties
        else {
            panic!("not a subscription");
        };
        assert_eq!(properties, QueueProperties::default());
    }

    #[tokio::test]
    async fn forward_to_set_by_update_applies_to_the_next_message() {
        let broker = Broker::new(&Config::with_queues(["a", "b"]));
        let a = broker.resolve("a").unwrap();
        broker
            .update_queue(
                "a",
                QueueProperties {
                    forward_to: Some("sb://localhost:5300/b".into()),
                    ..QueueProperties::default()
                },
            )
            .unwrap();
        broker.send(&a, message()).unwrap();
        assert_eq!(broker.counts("b").unwrap().active_message_count, 1);
        assert_eq!(broker.counts("a").unwrap().active_message_count, 0);
    }
}
