//! Request descriptions → broker properties, with Service Bus's limits. Every refusal names the
//! element, the value and what is allowed (it becomes a 400 the SDKs show as the exception message).

use std::time::Duration;

use super::model::MAX_TIMESPAN_SECS;
use super::xml::{ATOM, Element, SB, SERIALIZATION, XSD};
use crate::config::{QueueProperties, TopicProperties, parse_iso8601_duration};
use crate::filter::{CorrelationFilter, Filter, FilterValue, Rule};

/// What a PUT body describes.
pub enum Described<'a> {
    Queue(&'a Element),
    Topic(&'a Element),
    Subscription(&'a Element),
    Rule(&'a Element),
}

/// The description inside `<entry><content>`.
pub fn described(root: &Element) -> Result<Described<'_>, String> {
    if !root.is(ATOM, "entry") {
        return Err(format!(
            "the body's root element is <{}>; send an Atom <entry> with the description in <content>",
            root.name.local
        ));
    }
    let content = root.child(ATOM, "content").ok_or(
        "the <entry> has no <content>; put the description in <content type=\"application/xml\">",
    )?;
    let description = content
        .children
        .first()
        .ok_or("the <content> is empty; put a QueueDescription, TopicDescription, SubscriptionDescription or RuleDescription in it")?;
    Ok(match description.name.local.as_str() {
        "QueueDescription" => Described::Queue(description),
        "TopicDescription" => Described::Topic(description),
        "SubscriptionDescription" => Described::Subscription(description),
        "RuleDescription" => Described::Rule(description),
        other => {
            return Err(format!(
                "<{other}> is not a description this API takes; send a QueueDescription, TopicDescription, SubscriptionDescription or RuleDescription"
            ));
        }
    })
}

/// Properties only echoed back (they have no effect in an emulator), kept per entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Extras {
    pub max_size_in_megabytes: u64,
    pub enable_batched_operations: bool,
    pub is_anonymous_accessible: bool,
    pub status: String,
    pub support_ordering: bool,
    pub auto_delete_on_idle: Duration,
    pub enable_partitioning: bool,
    pub enable_express: bool,
    pub user_metadata: Option<String>,
    pub max_message_size_in_kilobytes: u64,
    pub filtering_messages_before_publishing: bool,
    pub enable_subscription_partitioning: bool,
}

impl Default for Extras {
    /// Service Bus's (Standard tier) defaults.
    fn default() -> Self {
        Extras {
            max_size_in_megabytes: 1024,
            enable_batched_operations: true,
            is_anonymous_accessible: false,
            status: "Active".to_string(),
            support_ordering: true,
            auto_delete_on_idle: Duration::from_secs(MAX_TIMESPAN_SECS),
            enable_partitioning: false,
            enable_express: false,
            user_metadata: None,
            max_message_size_in_kilobytes: 256,
            filtering_messages_before_publishing: false,
            enable_subscription_partitioning: false,
        }
    }
}

const STATUSES: [&str; 4] = ["Active", "Disabled", "SendDisabled", "ReceiveDisabled"];
const MAX_USER_METADATA: usize = 1024;

/// Typed reads of a description's children.
struct Fields<'a>(&'a Element);

impl<'a> Fields<'a> {
    fn text(&self, name: &str) -> Option<&'a str> {
        self.0.child(SB, name).map(|e| e.text.trim())
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, String> {
        match self.text(name) {
            None | Some("") => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| format!("the value '{text}' of {name} is not {what}")),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, String> {
        self.parse(name, "a boolean; use true or false")
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>, String> {
        match self.text(name) {
            None | Some("") => Ok(None),
            Some(text) => parse_iso8601_duration(text)
                .map(|d| Some(d.min(Duration::from_secs(MAX_TIMESPAN_SECS))))
                .ok_or_else(|| {
                    format!(
                        "the value '{text}' of {name} is not an xs:duration; use days, hours, minutes and seconds such as PT1M or P14D"
                    )
                }),
        }
    }

    /// A forward target: empty or whitespace means none.
    fn target(&self, name: &str) -> Option<String> {
        self.text(name)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    }
}

fn within(name: &str, d: Duration, min: Duration, max: Duration) -> Result<Duration, String> {
    if d < min || d > max {
        return Err(format!(
            "the value {} of {name} is outside the allowed range {} to {}",
            super::model::duration(d),
            super::model::duration(min),
            super::model::duration(max)
        ));
    }
    Ok(d)
}

fn extras(f: &Fields<'_>) -> Result<Extras, String> {
    let d = Extras::default();
    let status = match f.text("Status") {
        None | Some("") => d.status.clone(),
        Some(s) => STATUSES
            .iter()
            .find(|k| k.eq_ignore_ascii_case(s))
            .map(|k| k.to_string())
            .ok_or_else(|| {
                format!(
                    "the value '{s}' of Status is not valid; use one of {}",
                    STATUSES.join(", ")
                )
            })?,
    };
    let user_metadata = f.text("UserMetadata").filter(|m| !m.is_empty());
    if let Some(m) = user_metadata
        && m.chars().count() > MAX_USER_METADATA
    {
        return Err(format!(
            "UserMetadata is {} characters long; at most {MAX_USER_METADATA} are allowed",
            m.chars().count()
        ));
    }
    let auto_delete = match f.duration("AutoDeleteOnIdle")? {
        Some(a) => within(
            "AutoDeleteOnIdle",
            a,
            Duration::from_secs(300),
            Duration::from_secs(MAX_TIMESPAN_SECS),
        )?,
        None => d.auto_delete_on_idle,
    };
    Ok(Extras {
        max_size_in_megabytes: f
            .parse("MaxSizeInMegabytes", "a whole number")?
            .unwrap_or(d.max_size_in_megabytes),
        enable_batched_operations: f
            .bool("EnableBatchedOperations")?
            .unwrap_or(d.enable_batched_operations),
        is_anonymous_accessible: f
            .bool("IsAnonymousAccessible")?
            .unwrap_or(d.is_anonymous_accessible),
        status,
        support_ordering: f.bool("SupportOrdering")?.unwrap_or(d.support_ordering),
        auto_delete_on_idle: auto_delete,
        enable_partitioning: f
            .bool("EnablePartitioning")?
            .unwrap_or(d.enable_partitioning),
        enable_express: f.bool("EnableExpress")?.unwrap_or(d.enable_express),
        user_metadata: user_metadata.map(str::to_string),
        max_message_size_in_kilobytes: f
            .parse("MaxMessageSizeInKilobytes", "a whole number")?
            .unwrap_or(d.max_message_size_in_kilobytes),
        filtering_messages_before_publishing: f
            .bool("FilteringMessagesBeforePublishing")?
            .unwrap_or(d.filtering_messages_before_publishing),
        enable_subscription_partitioning: f
            .bool("EnableSubscriptionPartitioning")?
            .unwrap_or(d.enable_subscription_partitioning),
    })
}

/// The queue-like properties shared by queues and subscriptions; omitted ones take the emulator's
/// defaults (an update replaces every property, as Service Bus's does).
fn queue_like(f: &Fields<'_>) -> Result<QueueProperties, String> {
    let d = QueueProperties::default();
    let max_delivery_count = f
        .parse::<u32>("MaxDeliveryCount", "a whole number")?
        .unwrap_or(d.max_delivery_count);
    if max_delivery_count == 0 {
        return Err("MaxDeliveryCount must be at least 1".to_string());
    }
    Ok(QueueProperties {
        lock_duration: match f.duration("LockDuration")? {
            Some(l) => within(
                "LockDuration",
                l,
                Duration::from_secs(5),
                Duration::from_secs(300),
            )?,
            None => d.lock_duration,
        },
        max_delivery_count,
        default_message_time_to_live: f
            .duration("DefaultMessageTimeToLive")?
            .unwrap_or(d.default_message_time_to_live),
        dead_lettering_on_message_expiration: f
            .bool("DeadLetteringOnMessageExpiration")?
            .unwrap_or(d.dead_lettering_on_message_expiration),
        requires_duplicate_detection: f
            .bool("RequiresDuplicateDetection")?
            .unwrap_or(d.requires_duplicate_detection),
        duplicate_detection_history_time_window: match f
            .duration("DuplicateDetectionHistoryTimeWindow")?
        {
            Some(w) => within(
                "DuplicateDetectionHistoryTimeWindow",
                w,
                Duration::from_secs(20),
                Duration::from_secs(7 * 86_400),
            )?,
            None => d.duplicate_detection_history_time_window,
        },
        forward_to: f.target("ForwardTo"),
        forward_dead_lettered_messages_to: f.target("ForwardDeadLetteredMessagesTo"),
        requires_session: f.bool("RequiresSession")?.unwrap_or(d.requires_session),
    })
}

pub fn queue(description: &Element) -> Result<(QueueProperties, Extras), String> {
    let f = Fields(description);
    Ok((queue_like(&f)?, extras(&f)?))
}

pub fn topic(description: &Element) -> Result<(TopicProperties, Extras), String> {
    let f = Fields(description);
    let q = queue_like(&f)?;
    Ok((
        TopicProperties {
            default_message_time_to_live: q.default_message_time_to_live,
            requires_duplicate_detection: q.requires_duplicate_detection,
            duplicate_detection_history_time_window: q.duplicate_detection_history_time_window,
        },
        extras(&f)?,
    ))
}

/// A subscription: its properties, DeadLetteringOnFilterEvaluationExceptions (default true), and the
/// rule it starts with (`DefaultRuleDescription`, else `$Default`).
pub fn subscription(
    description: &Element,
) -> Result<(QueueProperties, bool, Extras, Rule), String> {
    let f = Fields(description);
    let default_rule = match description.child(SB, "DefaultRuleDescription") {
        Some(rule_element) => {
            let name = Fields(rule_element)
                .text("Name")
                .filter(|n| !n.is_empty())
                .unwrap_or(crate::filter::DEFAULT_RULE_NAME)
                .to_string();
            rule(rule_element, &name)?
        }
        None => Rule::default_rule(),
    };
    Ok((
        queue_like(&f)?,
        f.bool("DeadLetteringOnFilterEvaluationExceptions")?
            .unwrap_or(true),
        extras(&f)?,
        default_rule,
    ))
}

/// A RuleDescription (or DefaultRuleDescription) → a rule named `name` (the URL's, which wins).
pub fn rule(description: &Element, name: &str) -> Result<Rule, String> {
    let filter = match description.child(SB, "Filter") {
        None => Filter::True,
        Some(filter) => filter_of(filter)?,
    };
    let mut rule = Rule::new(name, filter).map_err(|e| e.to_string())?;
    if let Some(action) = description.child(SB, "Action") {
        let kind = action.xsi_type.as_ref().map_or("", |t| t.local.as_str());
        match kind {
            "SqlRuleAction" => {
                no_parameters(action, "SqlRuleAction")?;
                let text = Fields(action).text("SqlExpression").unwrap_or_default();
                if !text.is_empty() {
                    rule = rule
                        .with_action(text)
                        .map_err(|e| format!("the SQL rule action '{text}' is not valid: {e}"))?;
                }
            }
            "EmptyRuleAction" | "" => {}
            other => {
                return Err(format!(
                    "the action type '{other}' is not known; use SqlRuleAction or EmptyRuleAction"
                ));
            }
        }
    }
    Ok(rule)
}

fn no_parameters(e: &Element, what: &str) -> Result<(), String> {
    if e.child(SB, "Parameters")
        .is_some_and(|p| !p.children.is_empty())
    {
        return Err(format!(
            "{what} parameters are not supported by this emulator; write the values into the expression"
        ));
    }
    Ok(())
}

fn filter_of(filter: &Element) -> Result<Filter, String> {
    let kind = filter.xsi_type.as_ref().map_or("", |t| t.local.as_str());
    let f = Fields(filter);
    match kind {
        "TrueFilter" => Ok(Filter::True),
        "FalseFilter" => Ok(Filter::False),
        "SqlFilter" => {
            no_parameters(filter, "SqlFilter")?;
            let text = f.text("SqlExpression").unwrap_or_default();
            crate::filter::sql::SqlFilter::parse(text)
                .map(Filter::Sql)
                .map_err(|e| format!("the SQL filter '{text}' is not valid: {e}"))
        }
        "CorrelationFilter" => {
            let get = |name: &str| f.text(name).filter(|t| !t.is_empty()).map(str::to_string);
            let mut properties = Vec::new();
            if let Some(props) = filter.child(SB, "Properties") {
                for pair in props.children_named(SB, "KeyValueOfstringanyType") {
                    let key = Fields(pair).text("Key").unwrap_or_default().to_string();
                    let value = pair.child(SB, "Value").ok_or_else(|| {
                        format!("the correlation property '{key}' has no <Value>")
                    })?;
                    properties.push((key.clone(), typed_value(&key, value)?));
                }
            }
            Ok(Filter::Correlation(CorrelationFilter {
                correlation_id: get("CorrelationId"),
                message_id: get("MessageId"),
                to: get("To"),
                reply_to: get("ReplyTo"),
                label: get("Label"),
                session_id: get("SessionId"),
                reply_to_session_id: get("ReplyToSessionId"),
                content_type: get("ContentType"),
                properties,
            }))
        }
        other => Err(format!(
            "the filter type '{other}' is not known; use SqlFilter, CorrelationFilter, TrueFilter or FalseFilter (as i:type)"
        )),
    }
}

/// `<Value i:type="d6p1:int">2</Value>` → a filter value.
fn typed_value(key: &str, value: &Element) -> Result<FilterValue, String> {
    let text = value.text.as_str();
    let Some(t) = &value.xsi_type else {
        return Ok(FilterValue::String(text.to_string()));
    };
    let bad =
        |what: &str| format!("the value '{text}' of correlation property '{key}' is not {what}");
    match (t.ns.as_deref(), t.local.as_str()) {
        (Some(XSD), "string") => Ok(FilterValue::String(text.to_string())),
        (Some(XSD), "int" | "long" | "short" | "byte" | "unsignedInt" | "unsignedShort") => text
            .trim()
            .parse()
            .map(FilterValue::Long)
            .map_err(|_| bad("an integer")),
        (Some(XSD), "double" | "float" | "decimal") => text
            .trim()
            .parse()
            .map(FilterValue::Double)
            .map_err(|_| bad("a number")),
        (Some(XSD), "boolean") => text
            .trim()
            .parse()
            .map(FilterValue::Bool)
            .map_err(|_| bad("true or false")),
        (Some(XSD), "dateTime") => {
            time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
                .map(|t| FilterValue::Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
                .map_err(|_| bad("an ISO-8601 date and time with offset"))
        }
        (Some(SERIALIZATION), "duration") | (Some(XSD), "duration") => Err(format!(
            "the correlation property '{key}' is a duration; this emulator compares strings, numbers, booleans and times only"
        )),
        (ns, local) => Err(format!(
            "the type '{local}' (namespace {}) of correlation property '{key}' is not supported; use string, int, long, double, boolean or dateTime",
            ns.unwrap_or("none")
        )),
    }
}
