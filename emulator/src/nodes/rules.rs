//! A subscription's rules over `<topic>/Subscriptions/<sub>/$management`, as the .NET and Java rule
//! managers call them: `com.microsoft:add-rule`, `remove-rule` and `enumerate-rules`.
//!
//! Requests carry maps with string keys; `enumerate-rules` answers with described types under the
//! numeric descriptors both SDKs hard-code (Java compares codes only). Note the filter codes have one
//! hex digit fewer than the rule-description and action codes; that is how the SDKs define them.

use fe2o3_amqp_types::primitives::{OrderedMap, Value};
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;

use super::management::{bad_request, broker_error, field};
use super::{Reply, Request, as_i64, map_get, string_map};
use crate::broker::{Broker, EntityPath};
use crate::filter::{CorrelationFilter, Filter, FilterValue, Rule, SqlAction, SqlFilter};

pub const RULE_DESCRIPTION: u64 = 0x0000_0137_0000_0004;
pub const SQL_FILTER: u64 = 0x0000_0013_7000_0006;
pub const TRUE_FILTER: u64 = 0x0000_0013_7000_0007;
pub const FALSE_FILTER: u64 = 0x0000_0013_7000_0008;
pub const CORRELATION_FILTER: u64 = 0x0000_0013_7000_0009;
pub const EMPTY_ACTION: u64 = 0x0000_0137_0000_0005;
pub const SQL_ACTION: u64 = 0x0000_0137_0000_0006;

/// The SQL compatibility level Service Bus reports.
const COMPATIBILITY_LEVEL: i32 = 20;

/// The correlation-filter map keys, in the order of the described list's fields.
const CORRELATION_KEYS: [&str; 8] = [
    "correlation-id",
    "message-id",
    "to",
    "reply-to",
    "label",
    "session-id",
    "reply-to-session-id",
    "content-type",
];

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        other => Some(FilterValue::from_value(other).to_string()),
    }
}

fn expression(map: &Value, what: &str) -> Result<String, Reply> {
    text(map_get(map, "expression"))
        .ok_or_else(|| bad_request(format!("'{what}' needs an 'expression' string")))
}

fn correlation(map: &Value) -> Result<CorrelationFilter, Reply> {
    let [
        correlation_id,
        message_id,
        to,
        reply_to,
        label,
        session_id,
        reply_to_session_id,
        content_type,
    ] = CORRELATION_KEYS.map(|k| text(map_get(map, k)));
    let properties = match map_get(map, "properties") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Map(m)) => m
            .iter()
            .map(|(k, v)| match text(Some(k)) {
                Some(k) => Ok((k, FilterValue::from_value(v))),
                None => Err(bad_request(
                    "correlation-filter 'properties' keys must be strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad_request("correlation-filter 'properties' must be a map")),
    };
    // .NET and Java send every key, null where unset, for `new CorrelationRuleFilter()`; such a
    // filter matches every message rather than being refused.
    Ok(CorrelationFilter {
        correlation_id,
        message_id,
        to,
        reply_to,
        label,
        session_id,
        reply_to_session_id,
        content_type,
        properties,
    })
}

/// A rule from an add-rule request's `rule-description` map.
fn decode_rule(name: String, description: &Value) -> Result<Rule, Reply> {
    let sql = map_get(description, "sql-filter").filter(|v| !matches!(v, Value::Null));
    let corr = map_get(description, "correlation-filter").filter(|v| !matches!(v, Value::Null));
    let filter = match (sql, corr) {
        (Some(sql), None) => Filter::Sql(
            SqlFilter::parse(&expression(sql, "sql-filter")?)
                .map_err(|e| bad_request(format!("invalid SQL filter: {e}")))?,
        ),
        (None, Some(c)) => Filter::Correlation(correlation(c)?),
        _ => {
            return Err(bad_request(
                "'rule-description' needs exactly one of 'sql-filter' and 'correlation-filter'",
            ));
        }
    };
    let mut rule = Rule::new(name, filter).map_err(|e| bad_request(e.to_string()))?;
    if let Some(action) =
        map_get(description, "sql-rule-action").filter(|v| !matches!(v, Value::Null))
    {
        rule.action = Some(
            SqlAction::parse(&expression(action, "sql-rule-action")?)
                .map_err(|e| bad_request(format!("invalid SQL action: {e}")))?,
        );
    }
    Ok(rule)
}

fn rule_name(request: &Request) -> Result<String, Reply> {
    text(Some(field(request, "rule-name")?))
        .ok_or_else(|| bad_request("'rule-name' must be a string"))
}

pub fn add(broker: &Broker, entity: &EntityPath, request: &Request) -> Result<Reply, Reply> {
    let name = rule_name(request)?;
    let rule = decode_rule(name, field(request, "rule-description")?)?;
    broker.add_rule(entity, rule).map_err(broker_error)?;
    Ok(Reply::ok(Value::Null))
}

pub fn remove(broker: &Broker, entity: &EntityPath, request: &Request) -> Result<Reply, Reply> {
    let name = rule_name(request)?;
    broker.remove_rule(entity, &name).map_err(broker_error)?;
    Ok(Reply::ok(Value::Null))
}

pub fn enumerate(broker: &Broker, entity: &EntityPath, request: &Request) -> Result<Reply, Reply> {
    let count = |key: &str| {
        request
            .body_field(key)
            .and_then(as_i64)
            .map(|n| usize::try_from(n.max(0)).unwrap_or(usize::MAX))
    };
    let skip = count("skip").unwrap_or(0);
    let top = count("top").unwrap_or(usize::MAX);
    let rules: Vec<Value> = broker
        .subscription_rules(entity)
        .map_err(broker_error)?
        .iter()
        .skip(skip)
        .take(top)
        .map(|r| string_map([("rule-description", encode_rule(r))]))
        .collect();
    if rules.is_empty() {
        return Ok(Reply {
            status_code: 204,
            status_description: "No Content".into(),
            properties: Vec::new(),
            body: Box::new(Value::Null),
        });
    }
    // An AMQP list, not an array: .NET casts it to List<object> and Java to List.
    Ok(Reply::ok(string_map([("rules", Value::List(rules))])))
}

fn described(code: u64, fields: Vec<Value>) -> Value {
    Value::Described(Box::new(Described {
        descriptor: Descriptor::Code(code),
        value: Value::List(fields),
    }))
}

fn string_or_null(s: &Option<String>) -> Value {
    s.clone().map_or(Value::Null, Value::String)
}

/// A rule as the `rule-description` described list: filter, action, name.
pub fn encode_rule(rule: &Rule) -> Value {
    let filter = match &rule.filter {
        Filter::True => described(TRUE_FILTER, Vec::new()),
        Filter::False => described(FALSE_FILTER, Vec::new()),
        Filter::Sql(s) => described(
            SQL_FILTER,
            vec![
                Value::String(s.text().to_string()),
                Value::Int(COMPATIBILITY_LEVEL),
            ],
        ),
        Filter::Correlation(c) => {
            let mut fields: Vec<Value> = c
                .system_fields()
                .iter()
                .map(|(_, v)| string_or_null(v))
                .collect();
            // The SDKs' field order puts correlation-id first and message-id second, as
            // `system_fields` does; `properties` is always a map (never null).
            let mut props = OrderedMap::new();
            for (k, v) in &c.properties {
                props.insert(Value::String(k.clone()), Value::from(v.to_simple()));
            }
            fields.push(Value::Map(props));
            described(CORRELATION_FILTER, fields)
        }
    };
    let action = match &rule.action {
        None => described(EMPTY_ACTION, Vec::new()),
        Some(a) => described(
            SQL_ACTION,
            vec![
                Value::String(a.text().to_string()),
                Value::Int(COMPATIBILITY_LEVEL),
            ],
        ),
    };
    described(
        RULE_DESCRIPTION,
        vec![filter, action, Value::String(rule.name.clone())],
    )
}
