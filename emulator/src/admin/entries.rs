//! The entries the API answers with, built from what the broker reports: queue, topic and
//! subscription descriptions with their counts, rules, the namespace.

use std::time::SystemTime;

use super::model::{
    self, ActionXml, Author, Content, Description, Entry, FilterXml, KeyValue, KeyValues, Link,
    QueueDescription, RuleDescription, SubscriptionDescription, Title, TopicDescription,
    TypedValue, atom_time, duration, timestamp,
};
use super::parse::Extras;
use super::xml::{ATOM, SB, XSI};
use super::{API_VERSION, NEVER_ACCESSED};
use crate::broker::{EntityInfo, EntityKind, EntityProperties, RuleInfo, entity_path};
use crate::filter::{Filter, Rule};

/// The entry of a queue, topic or subscription, with its runtime counts.
pub(super) fn entity_entry(base: &str, info: EntityInfo, extras: Extras) -> Entry {
    let counts = info.counts;
    let message_count = counts.active_message_count
        + counts.dead_letter_message_count
        + counts.scheduled_message_count
        + counts.transfer_message_count
        + counts.transfer_dead_letter_message_count;
    let (created, updated) = (timestamp(info.created_at), timestamp(info.updated_at));
    let url_path = match info.kind {
        EntityKind::Subscription => info.path.replacen(
            &format!("/{}/", entity_path::SUBSCRIPTIONS),
            "/subscriptions/",
            1,
        ),
        _ => info.path.clone(),
    };
    let description = match info.properties {
        EntityProperties::Queue(p) => Description::QueueDescription(QueueDescription {
            xmlns: SB,
            xmlns_i: XSI,
            lock_duration: duration(p.lock_duration),
            max_size_in_megabytes: extras.max_size_in_megabytes,
            requires_duplicate_detection: p.requires_duplicate_detection,
            requires_session: p.requires_session,
            default_message_time_to_live: duration(p.default_message_time_to_live),
            dead_lettering_on_message_expiration: p.dead_lettering_on_message_expiration,
            duplicate_detection_history_time_window: duration(
                p.duplicate_detection_history_time_window,
            ),
            max_delivery_count: p.max_delivery_count,
            enable_batched_operations: extras.enable_batched_operations,
            size_in_bytes: 0,
            message_count,
            is_anonymous_accessible: extras.is_anonymous_accessible,
            authorization_rules: (),
            status: extras.status.clone(),
            created_at: created,
            updated_at: updated,
            accessed_at: NEVER_ACCESSED.to_string(),
            support_ordering: extras.support_ordering,
            count_details: counts.into(),
            auto_delete_on_idle: duration(extras.auto_delete_on_idle),
            enable_partitioning: extras.enable_partitioning,
            entity_availability_status: "Available",
            enable_express: extras.enable_express,
            forward_to: p.forward_to,
            user_metadata: extras.user_metadata.clone(),
            forward_dead_lettered_messages_to: p.forward_dead_lettered_messages_to,
            max_message_size_in_kilobytes: extras.max_message_size_in_kilobytes,
        }),
        EntityProperties::Topic(p) => Description::TopicDescription(TopicDescription {
            xmlns: SB,
            xmlns_i: XSI,
            default_message_time_to_live: duration(p.default_message_time_to_live),
            max_size_in_megabytes: extras.max_size_in_megabytes,
            requires_duplicate_detection: p.requires_duplicate_detection,
            duplicate_detection_history_time_window: duration(
                p.duplicate_detection_history_time_window,
            ),
            enable_batched_operations: extras.enable_batched_operations,
            size_in_bytes: 0,
            filtering_messages_before_publishing: extras.filtering_messages_before_publishing,
            is_anonymous_accessible: extras.is_anonymous_accessible,
            authorization_rules: (),
            status: extras.status.clone(),
            created_at: created,
            updated_at: updated,
            accessed_at: NEVER_ACCESSED.to_string(),
            support_ordering: extras.support_ordering,
            count_details: counts.into(),
            subscription_count: info.subscription_count as u64,
            sql_filter_count: info.sql_filter_count as u64,
            correlation_filter_count: info.correlation_filter_count as u64,
            auto_delete_on_idle: duration(extras.auto_delete_on_idle),
            enable_partitioning: extras.enable_partitioning,
            entity_availability_status: "Available",
            enable_subscription_partitioning: extras.enable_subscription_partitioning,
            enable_express: extras.enable_express,
            user_metadata: extras.user_metadata.clone(),
            max_message_size_in_kilobytes: extras.max_message_size_in_kilobytes,
        }),
        EntityProperties::Subscription {
            properties: p,
            dead_lettering_on_filter_evaluation_exceptions,
        } => Description::SubscriptionDescription(SubscriptionDescription {
            xmlns: SB,
            xmlns_i: XSI,
            lock_duration: duration(p.lock_duration),
            requires_session: p.requires_session,
            default_message_time_to_live: duration(p.default_message_time_to_live),
            dead_lettering_on_message_expiration: p.dead_lettering_on_message_expiration,
            dead_lettering_on_filter_evaluation_exceptions,
            message_count,
            max_delivery_count: p.max_delivery_count,
            enable_batched_operations: extras.enable_batched_operations,
            status: extras.status.clone(),
            forward_to: p.forward_to,
            created_at: created,
            updated_at: updated,
            accessed_at: NEVER_ACCESSED.to_string(),
            count_details: counts.into(),
            user_metadata: extras.user_metadata.clone(),
            forward_dead_lettered_messages_to: p.forward_dead_lettered_messages_to,
            auto_delete_on_idle: duration(extras.auto_delete_on_idle),
            entity_availability_status: "Available",
        }),
    };
    let href = format!("{base}/{url_path}?api-version={API_VERSION}");
    Entry {
        xmlns: ATOM,
        id: href.clone(),
        title: Title::new(info.name),
        published: atom_time(info.created_at),
        updated: atom_time(info.updated_at),
        author: (info.kind != EntityKind::Subscription).then_some(Author {
            name: model::NAMESPACE,
        }),
        link: Link { rel: "self", href },
        content: Content {
            kind: "application/xml",
            description,
        },
    }
}

/// A rule's entry (rules have no author).
pub(super) fn rule_entry(base: &str, prefix: &str, info: RuleInfo) -> Entry {
    let RuleInfo { rule, created_at } = info;
    let href = format!("{base}/{prefix}/{}?api-version={API_VERSION}", rule.name);
    Entry {
        xmlns: ATOM,
        id: href.clone(),
        title: Title::new(rule.name.clone()),
        published: atom_time(created_at),
        updated: atom_time(created_at),
        author: None,
        link: Link { rel: "self", href },
        content: Content {
            kind: "application/xml",
            description: Description::RuleDescription(rule_description(&rule, created_at)),
        },
    }
}

fn rule_description(rule: &Rule, created_at: SystemTime) -> RuleDescription {
    let sql = |kind: &'static str, text: &str| FilterXml {
        kind,
        sql_expression: Some(text.to_string()),
        compatibility_level: Some(20),
        ..FilterXml::default()
    };
    let filter = match &rule.filter {
        Filter::True => sql("TrueFilter", "1=1"),
        Filter::False => sql("FalseFilter", "1=0"),
        Filter::Sql(s) => sql("SqlFilter", s.text()),
        Filter::Correlation(c) => FilterXml {
            kind: "CorrelationFilter",
            correlation_id: c.correlation_id.clone(),
            message_id: c.message_id.clone(),
            to: c.to.clone(),
            reply_to: c.reply_to.clone(),
            label: c.label.clone(),
            session_id: c.session_id.clone(),
            reply_to_session_id: c.reply_to_session_id.clone(),
            content_type: c.content_type.clone(),
            properties: (!c.properties.is_empty()).then(|| KeyValues {
                pairs: c
                    .properties
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.clone(),
                        value: TypedValue::from_filter_value(v),
                    })
                    .collect(),
            }),
            ..FilterXml::default()
        },
    };
    let action = match &rule.action {
        Some(a) => ActionXml {
            kind: "SqlRuleAction",
            sql_expression: Some(a.text().to_string()),
            compatibility_level: Some(20),
        },
        None => ActionXml {
            kind: "EmptyRuleAction",
            ..ActionXml::default()
        },
    };
    RuleDescription {
        xmlns: SB,
        xmlns_i: XSI,
        filter,
        action,
        created_at: timestamp(created_at),
        name: rule.name.clone(),
    }
}
