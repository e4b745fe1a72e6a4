//! The documents the administration API answers with, as serde models written by quick-xml. Field
//! order is element order: the reference (`servicebus-admin-atom.md` §4-5) gives the order Service
//! Bus emits, which the SDKs were built against. Names are Service Bus's (PascalCase).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::xml::{SB_COUNTS, SERIALIZATION, XSD};
use crate::broker::QueueCounts;
use crate::filter::FilterValue;

/// `TimeSpan.MaxValue` as .NET writes it: Service Bus's "never" for TTL and AutoDeleteOnIdle.
pub const MAX_TIMESPAN: &str = "P10675199DT2H48M5.4775807S";
/// Seconds in `TimeSpan.MaxValue`; longer durations (Python sends a microsecond less) mean "never".
pub const MAX_TIMESPAN_SECS: u64 = 922_337_203_685;
/// The emulator's one namespace, as the official emulator names it.
pub const NAMESPACE: &str = "sbemulatorns";

#[derive(Debug, Serialize)]
pub struct Title {
    #[serde(rename = "@type")]
    pub kind: &'static str,
    #[serde(rename = "$text")]
    pub text: String,
}

impl Title {
    pub fn new(text: impl Into<String>) -> Title {
        Title {
            kind: "text",
            text: text.into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Author {
    pub name: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Link {
    #[serde(rename = "@rel")]
    pub rel: &'static str,
    #[serde(rename = "@href")]
    pub href: String,
}

/// An Atom entry carrying one description.
#[derive(Debug, Serialize)]
#[serde(rename = "entry")]
pub struct Entry {
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    pub id: String,
    pub title: Title,
    pub published: String,
    pub updated: String,
    /// Queues, topics and the namespace; not subscriptions and rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    pub link: Link,
    pub content: Content,
}

#[derive(Debug, Serialize)]
pub struct Content {
    #[serde(rename = "@type")]
    pub kind: &'static str,
    #[serde(rename = "$value")]
    pub description: Description,
}

#[derive(Debug, Serialize)]
pub enum Description {
    QueueDescription(QueueDescription),
    TopicDescription(TopicDescription),
    SubscriptionDescription(SubscriptionDescription),
    RuleDescription(RuleDescription),
    NamespaceInfo(NamespaceInfo),
}

/// A list: `self` link, `next` only when more entries remain (Python pages only on exactly two links).
#[derive(Debug, Serialize)]
#[serde(rename = "feed")]
pub struct Feed {
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    pub title: Title,
    pub id: String,
    pub updated: String,
    pub link: Vec<Link>,
    pub entry: Vec<Entry>,
}

/// The failure body every SDK parses: `Code` and a `Detail` with `SubCode=NNNNN.` for .NET.
#[derive(Debug, Serialize)]
#[serde(rename = "Error")]
pub struct ErrorBody {
    #[serde(rename = "Code")]
    pub code: u16,
    #[serde(rename = "Detail")]
    pub detail: String,
}

/// A create request with every property at its default (`<QueueDescription/>`), as the service
/// accepts; what [`super::client::AdminClient::create_queue`] sends.
#[derive(Debug, Serialize)]
#[serde(rename = "entry")]
pub struct CreateRequest {
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    pub content: CreateContent,
}

#[derive(Debug, Serialize)]
pub struct CreateContent {
    #[serde(rename = "@type")]
    pub kind: &'static str,
    #[serde(rename = "QueueDescription")]
    pub queue: DefaultDescription,
}

#[derive(Debug, Serialize)]
pub struct DefaultDescription {
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
}

/// `CountDetails`, its children in the 2011/06 namespace (bound to `d2p1` as the service does).
#[derive(Debug, Serialize)]
pub struct CountDetails {
    #[serde(rename = "@xmlns:d2p1")]
    pub xmlns: &'static str,
    #[serde(rename = "d2p1:ActiveMessageCount")]
    pub active: u64,
    #[serde(rename = "d2p1:DeadLetterMessageCount")]
    pub dead_letter: u64,
    #[serde(rename = "d2p1:ScheduledMessageCount")]
    pub scheduled: u64,
    #[serde(rename = "d2p1:TransferMessageCount")]
    pub transfer: u64,
    #[serde(rename = "d2p1:TransferDeadLetterMessageCount")]
    pub transfer_dead_letter: u64,
}

impl From<QueueCounts> for CountDetails {
    fn from(c: QueueCounts) -> CountDetails {
        CountDetails {
            xmlns: SB_COUNTS,
            active: c.active_message_count,
            dead_letter: c.dead_letter_message_count,
            scheduled: c.scheduled_message_count,
            transfer: c.transfer_message_count,
            transfer_dead_letter: c.transfer_dead_letter_message_count,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueueDescription {
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    #[serde(rename = "@xmlns:i")]
    pub xmlns_i: &'static str,
    pub lock_duration: String,
    pub max_size_in_megabytes: u64,
    pub requires_duplicate_detection: bool,
    pub requires_session: bool,
    pub default_message_time_to_live: String,
    pub dead_lettering_on_message_expiration: bool,
    pub duplicate_detection_history_time_window: String,
    pub max_delivery_count: u32,
    pub enable_batched_operations: bool,
    pub size_in_bytes: u64,
    pub message_count: u64,
    pub is_anonymous_accessible: bool,
    pub authorization_rules: (),
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub accessed_at: String,
    pub support_ordering: bool,
    pub count_details: CountDetails,
    pub auto_delete_on_idle: String,
    pub enable_partitioning: bool,
    pub entity_availability_status: &'static str,
    pub enable_express: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_dead_lettered_messages_to: Option<String>,
    pub max_message_size_in_kilobytes: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TopicDescription {
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    #[serde(rename = "@xmlns:i")]
    pub xmlns_i: &'static str,
    pub default_message_time_to_live: String,
    pub max_size_in_megabytes: u64,
    pub requires_duplicate_detection: bool,
    pub duplicate_detection_history_time_window: String,
    pub enable_batched_operations: bool,
    pub size_in_bytes: u64,
    pub filtering_messages_before_publishing: bool,
    pub is_anonymous_accessible: bool,
    pub authorization_rules: (),
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    pub accessed_at: String,
    pub support_ordering: bool,
    pub count_details: CountDetails,
    pub subscription_count: u64,
    pub sql_filter_count: u64,
    pub correlation_filter_count: u64,
    pub auto_delete_on_idle: String,
    pub enable_partitioning: bool,
    pub entity_availability_status: &'static str,
    pub enable_subscription_partitioning: bool,
    pub enable_express: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<String>,
    pub max_message_size_in_kilobytes: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionDescription {
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    #[serde(rename = "@xmlns:i")]
    pub xmlns_i: &'static str,
    pub lock_duration: String,
    pub requires_session: bool,
    pub default_message_time_to_live: String,
    pub dead_lettering_on_message_expiration: bool,
    pub dead_lettering_on_filter_evaluation_exceptions: bool,
    pub message_count: u64,
    pub max_delivery_count: u32,
    pub enable_batched_operations: bool,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub accessed_at: String,
    pub count_details: CountDetails,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_dead_lettered_messages_to: Option<String>,
    pub auto_delete_on_idle: String,
    pub entity_availability_status: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleDescription {
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    #[serde(rename = "@xmlns:i")]
    pub xmlns_i: &'static str,
    pub filter: FilterXml,
    pub action: ActionXml,
    pub created_at: String,
    pub name: String,
}

/// `<Filter i:type="SqlFilter|TrueFilter|FalseFilter|CorrelationFilter">`: the SQL children or the
/// correlation children, never both.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterXml {
    #[serde(rename = "@i:type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql_expression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compatibility_level: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to_session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<KeyValues>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionXml {
    #[serde(rename = "@i:type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql_expression: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compatibility_level: Option<u32>,
}

#[derive(Debug, Default, Serialize)]
pub struct KeyValues {
    #[serde(rename = "KeyValueOfstringanyType")]
    pub pairs: Vec<KeyValue>,
}

#[derive(Debug, Serialize)]
pub struct KeyValue {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value")]
    pub value: TypedValue,
}

/// `<Value i:type="d6p1:int" xmlns:d6p1="…XMLSchema">2</Value>`: the prefix bound on the element, as
/// the service writes it (.NET reads the type only through a bound prefix).
#[derive(Debug, Serialize)]
pub struct TypedValue {
    #[serde(rename = "@i:type")]
    pub kind: String,
    #[serde(rename = "@xmlns:d6p1")]
    pub xmlns: &'static str,
    #[serde(rename = "$text")]
    pub text: String,
}

impl TypedValue {
    pub fn from_filter_value(v: &FilterValue) -> TypedValue {
        let (kind, text) = match v {
            FilterValue::Bool(b) => ("boolean", b.to_string()),
            FilterValue::Long(n) if i32::try_from(*n).is_ok() => ("int", n.to_string()),
            FilterValue::Long(n) => ("long", n.to_string()),
            FilterValue::Double(d) => ("double", d.to_string()),
            FilterValue::Timestamp(ms) => (
                "dateTime",
                timestamp(
                    SystemTime::UNIX_EPOCH
                        .checked_add(Duration::from_millis(u64::try_from(*ms).unwrap_or(0)))
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                ),
            ),
            FilterValue::String(s) => ("string", s.clone()),
            FilterValue::Uuid(u) => ("string", u.to_string()),
            FilterValue::Null | FilterValue::Opaque => ("string", String::new()),
        };
        TypedValue {
            kind: format!("d6p1:{kind}"),
            xmlns: XSD,
            text,
        }
    }
}

/// Durations in typed values live in another namespace; kept for documentation of the reader.
pub const DURATION_NS: &str = SERIALIZATION;

#[derive(Debug, Serialize)]
pub struct NamespaceInfo {
    #[serde(rename = "@xmlns")]
    pub xmlns: &'static str,
    #[serde(rename = "@xmlns:i")]
    pub xmlns_i: &'static str,
    #[serde(rename = "CreatedTime")]
    pub created_time: String,
    #[serde(rename = "MessagingSKU")]
    pub messaging_sku: &'static str,
    #[serde(rename = "ModifiedTime")]
    pub modified_time: String,
    #[serde(rename = "Name")]
    pub name: &'static str,
    #[serde(rename = "NamespaceType")]
    pub namespace_type: &'static str,
}

/// A duration as .NET's `XmlConvert.ToString(TimeSpan)` writes it (`PT1M`, `P14D`, `PT0.5S`); days,
/// never months or years (Java parses with `java.time.Duration`).
pub fn duration(d: Duration) -> String {
    if d.as_secs() >= MAX_TIMESPAN_SECS {
        return MAX_TIMESPAN.to_string();
    }
    let secs = d.as_secs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    // 100 ns ticks, as TimeSpan counts them.
    let ticks = d.subsec_nanos() / 100;
    let mut out = String::from("P");
    if days > 0 {
        out += &format!("{days}D");
    }
    if hours + minutes + seconds + u64::from(ticks) > 0 || days == 0 {
        out.push('T');
        if hours > 0 {
            out += &format!("{hours}H");
        }
        if minutes > 0 {
            out += &format!("{minutes}M");
        }
        if ticks > 0 {
            let fraction = format!("{ticks:07}");
            out += &format!("{seconds}.{}S", fraction.trim_end_matches('0'));
        } else if seconds > 0 || (hours == 0 && minutes == 0) {
            out += &format!("{seconds}S");
        }
    }
    out
}

/// ISO-8601 UTC with 7 fraction digits and `Z`, as the service writes `CreatedAt`.
pub fn timestamp(t: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    );
    time::OffsetDateTime::from(t)
        .format(&format)
        .unwrap_or_else(|_| "0001-01-01T00:00:00Z".to_string())
}

/// Atom `published`/`updated`: seconds precision.
pub fn atom_time(t: SystemTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(t)
        .format(&format)
        .unwrap_or_else(|_| "0001-01-01T00:00:00Z".to_string())
}

/// Serialize a document (no XML written by hand).
pub fn to_xml<T: Serialize>(document: &T) -> Result<String, quick_xml::SeError> {
    quick_xml::se::to_string(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_dotnet_writes_them() {
        for (d, text) in [
            (Duration::from_secs(60), "PT1M"),
            (Duration::from_secs(45), "PT45S"),
            (Duration::from_secs(0), "PT0S"),
            (Duration::from_secs(86_400), "P1D"),
            (Duration::from_secs(14 * 86_400), "P14D"),
            (Duration::from_secs(3600 + 2), "PT1H2S"),
            (Duration::from_millis(1500), "PT1.5S"),
            (Duration::from_secs(86_400 + 60), "P1DT1M"),
            (Duration::from_secs(MAX_TIMESPAN_SECS), MAX_TIMESPAN),
        ] {
            assert_eq!(duration(d), text);
            let back = crate::config::parse_iso8601_duration(text).unwrap();
            assert!(back.abs_diff(d) < Duration::from_millis(1) || text == MAX_TIMESPAN);
        }
    }

    #[test]
    fn error_body_is_plain_xml() {
        let xml = to_xml(&ErrorBody {
            code: 404,
            detail: "a & b".into(),
        })
        .unwrap();
        assert_eq!(
            xml,
            "<Error><Code>404</Code><Detail>a &amp; b</Detail></Error>"
        );
    }
}
