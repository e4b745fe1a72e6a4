//! The file's shape as serde types. Leaf values go through small newtypes whose errors say what was
//! expected, what was found and how to fix it; `serde_path_to_error` adds the JSON path and
//! `serde_ignored` reports keys no type knows, which become warnings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};
use serde_json::Value;

use super::{ConfigError, ConfigWarning, describe, invalid, parse_iso8601_duration};

/// `problem; fix` in one serde message; [`translate`] splits it again at the first `"; "`.
fn custom<E: de::Error>(problem: String, fix: &str) -> E {
    E::custom(format!("{problem}; {fix}"))
}

/// A JSON string.
#[derive(Debug, Clone)]
pub struct Str(pub String);

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Str(s)),
            v => Err(custom(
                format!("expected a string, got {}", describe(&v)),
                "put the value in double quotes",
            )),
        }
    }
}

/// A JSON boolean.
#[derive(Debug, Clone, Copy)]
pub struct Bool(pub bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Bool(b)),
            v => Err(custom(
                format!("expected true or false, got {}", describe(&v)),
                "write true or false without quotes",
            )),
        }
    }
}

/// An ISO-8601 duration string (`PT1M`).
#[derive(Debug, Clone, Copy)]
pub struct IsoDuration(pub Duration);

impl<'de> Deserialize<'de> for IsoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fix = "write an ISO-8601 duration such as PT30S, PT5M, PT1H or P1DT2H";
        match Value::deserialize(d)? {
            Value::String(text) => {
                parse_iso8601_duration(&text)
                    .map(IsoDuration)
                    .ok_or_else(|| {
                        custom(
                            format!("expected an ISO-8601 duration like PT1M, got \"{text}\""),
                            fix,
                        )
                    })
            }
            v => Err(custom(
                format!(
                    "expected an ISO-8601 duration like PT1M, got {}",
                    describe(&v)
                ),
                fix,
            )),
        }
    }
}

/// `MaxDeliveryCount`: 1 to 2000.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryCount(pub u32);

impl<'de> Deserialize<'de> for DeliveryCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v.as_u64() {
            Some(n @ 1..=2000) => Ok(DeliveryCount(n as u32)),
            _ => Err(custom(
                format!("expected an integer from 1 to 2000, got {}", describe(&v)),
                "write a number such as 10",
            )),
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct File {
    pub user_config: Option<UserConfig>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserConfig {
    pub namespaces: Option<Vec<Namespace>>,
    pub logging: Option<Logging>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Logging {
    pub r#type: Option<Str>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Namespace {
    pub name: Option<Str>,
    pub queues: Option<Vec<Queue>>,
    pub topics: Option<Vec<Topic>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Queue {
    pub name: Option<Str>,
    pub properties: Option<QueueProperties>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueueProperties {
    pub dead_lettering_on_message_expiration: Option<Bool>,
    pub default_message_time_to_live: Option<IsoDuration>,
    pub duplicate_detection_history_time_window: Option<IsoDuration>,
    pub forward_dead_lettered_messages_to: Option<Str>,
    pub forward_to: Option<Str>,
    pub lock_duration: Option<IsoDuration>,
    pub max_delivery_count: Option<DeliveryCount>,
    pub requires_duplicate_detection: Option<Bool>,
    pub requires_session: Option<Bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Topic {
    pub name: Option<Str>,
    pub properties: Option<TopicProperties>,
    pub subscriptions: Option<Vec<Subscription>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TopicProperties {
    pub default_message_time_to_live: Option<IsoDuration>,
    pub duplicate_detection_history_time_window: Option<IsoDuration>,
    pub requires_duplicate_detection: Option<Bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Subscription {
    pub name: Option<Str>,
    pub properties: Option<SubscriptionProperties>,
    pub rules: Option<Vec<Rule>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SubscriptionProperties {
    pub dead_lettering_on_filter_evaluation_exceptions: Option<Bool>,
    pub dead_lettering_on_message_expiration: Option<Bool>,
    pub default_message_time_to_live: Option<IsoDuration>,
    pub forward_dead_lettered_messages_to: Option<Str>,
    pub forward_to: Option<Str>,
    pub lock_duration: Option<IsoDuration>,
    pub max_delivery_count: Option<DeliveryCount>,
    pub requires_session: Option<Bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Rule {
    pub name: Option<Str>,
    pub properties: Option<RuleProperties>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleProperties {
    pub filter_type: Option<Str>,
    pub correlation_filter: Option<CorrelationFilter>,
    pub sql_filter: Option<SqlExpression>,
    pub action: Option<SqlExpression>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CorrelationFilter {
    pub content_type: Option<Str>,
    pub correlation_id: Option<Str>,
    pub label: Option<Str>,
    pub message_id: Option<Str>,
    pub reply_to: Option<Str>,
    pub reply_to_session_id: Option<Str>,
    pub session_id: Option<Str>,
    pub to: Option<Str>,
    pub properties: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SqlExpression {
    pub sql_expression: Option<Str>,
}

/// The keys an object at a path may have, for the "unknown property" warning.
fn known_keys(parent: &[String]) -> &'static [&'static str] {
    let names: Vec<&str> = parent
        .iter()
        .filter(|s| !s.starts_with('['))
        .map(String::as_str)
        .collect();
    match names.as_slice() {
        [] => &["UserConfig"],
        ["UserConfig"] => &["Namespaces", "Logging"],
        ["UserConfig", "Logging"] => &["Type"],
        ["UserConfig", "Namespaces"] => &["Name", "Queues", "Topics"],
        [.., "Queues"] => &["Name", "Properties"],
        [.., "Queues", "Properties"] => &[
            "DeadLetteringOnMessageExpiration",
            "DefaultMessageTimeToLive",
            "DuplicateDetectionHistoryTimeWindow",
            "ForwardDeadLetteredMessagesTo",
            "ForwardTo",
            "LockDuration",
            "MaxDeliveryCount",
            "RequiresDuplicateDetection",
            "RequiresSession",
        ],
        [.., "Topics"] => &["Name", "Properties", "Subscriptions"],
        [.., "Topics", "Properties"] => &[
            "DefaultMessageTimeToLive",
            "DuplicateDetectionHistoryTimeWindow",
            "RequiresDuplicateDetection",
        ],
        [.., "Subscriptions"] => &["Name", "Properties", "Rules"],
        [.., "Subscriptions", "Properties"] => &[
            "DeadLetteringOnFilterEvaluationExceptions",
            "DeadLetteringOnMessageExpiration",
            "DefaultMessageTimeToLive",
            "ForwardDeadLetteredMessagesTo",
            "ForwardTo",
            "LockDuration",
            "MaxDeliveryCount",
            "RequiresSession",
        ],
        [.., "Rules"] => &["Name", "Properties"],
        [.., "Rules", "Properties"] => &["FilterType", "CorrelationFilter", "SqlFilter", "Action"],
        [.., "CorrelationFilter"] => &[
            "ContentType",
            "CorrelationId",
            "Label",
            "MessageId",
            "ReplyTo",
            "ReplyToSessionId",
            "SessionId",
            "To",
            "Properties",
        ],
        [.., "SqlFilter"] | [.., "Action"] => &["SqlExpression"],
        _ => &[],
    }
}

fn segments(path: &serde_ignored::Path<'_>, out: &mut Vec<String>) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            segments(parent, out);
            out.push(format!("[{index}]"));
        }
        P::Map { parent, key } => {
            segments(parent, out);
            out.push(key.clone());
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            segments(parent, out)
        }
    }
}

fn join(segments: &[String]) -> String {
    let mut s = String::new();
    for seg in segments {
        if !s.is_empty() && !seg.starts_with('[') {
            s.push('.');
        }
        s.push_str(seg);
    }
    s
}

/// Deserialize the file, collecting a warning for every key no type knows.
pub fn read(root: Value, warnings: &mut Vec<ConfigWarning>) -> Result<File, ConfigError> {
    if !root.is_object() {
        return Err(invalid(
            "$",
            format!("expected an object, got {}", describe(&root)),
            super::FIX_STRUCTURE,
        ));
    }
    let mut ignored = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| {
        let mut segs = Vec::new();
        segments(&path, &mut segs);
        ignored.push(segs)
    };
    let result =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(root, &mut on_ignored));
    for segs in ignored {
        let Some((key, parent)) = segs.split_last() else {
            continue;
        };
        let path = if parent.is_empty() {
            format!("$.{key}")
        } else {
            format!("{}.{key}", join(parent))
        };
        warnings.push(ConfigWarning {
            path,
            message: format!(
                "unknown property, ignored (known here: {})",
                known_keys(parent).join(", ")
            ),
        });
    }
    result.map_err(|e| {
        let path = e.path().to_string();
        translate(&path, &e.into_inner().to_string())
    })
}

/// Turn a serde message into "problem; fix". Our leaf types already write both; serde's own messages
/// (`invalid type: map, expected a sequence`) are reworded in the file's terms.
fn translate(path: &str, message: &str) -> ConfigError {
    if let Some((problem, fix)) = message.split_once("; ") {
        return invalid(path, problem, fix);
    }
    let problem = match message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected "))
    {
        Some((found, expected)) => {
            let expected = if expected.contains("sequence") {
                "an array"
            } else {
                "an object"
            };
            let found = match found {
                "map" => "an object".to_string(),
                "sequence" => "an array".to_string(),
                other => match other.split_once(' ') {
                    // `string "x"`, "integer `5`", "boolean `true`", "floating point `1.5`"
                    Some((_, v)) if other.starts_with("string") => v.to_string(),
                    Some(_) => other
                        .rsplit_once(' ')
                        .map_or(other, |(_, v)| v)
                        .trim_matches('`')
                        .to_string(),
                    None => other.to_string(),
                },
            };
            format!("expected {expected}, got {found}")
        }
        None => message.to_string(),
    };
    let fix = match path.rsplit('.').next().unwrap_or_default() {
        p if p.starts_with("Queues") => "each queue is {\"Name\": ..., \"Properties\": {...}}",
        p if p.starts_with("Topics") => {
            "each topic is {\"Name\": ..., \"Properties\": {...}, \"Subscriptions\": [...]}"
        }
        p if p.starts_with("Subscriptions") => {
            "each subscription is {\"Name\": ..., \"Properties\": {...}, \"Rules\": [...]}"
        }
        p if p.starts_with("Rules") => {
            "each rule is {\"Name\": ..., \"Properties\": {\"FilterType\": \"Sql\", \"SqlFilter\": {\"SqlExpression\": ...}}}"
        }
        "Properties" => "use an object of properties",
        _ => super::FIX_STRUCTURE,
    };
    invalid(path, problem, fix)
}
