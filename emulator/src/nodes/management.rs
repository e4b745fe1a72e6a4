//! `<entity>/$management` operations. Replies carry `statusCode` / `statusDescription` (camelCase),
//! and failures an `errorCondition` the SDKs map to exceptions.

use std::time::Duration;

use bytes::Bytes;
use fe2o3_amqp_types::primitives::{Array, Binary, Value};
use uuid::Uuid;

use super::sessions::{self, session_id};
use super::{Reply, Request, as_i64, elements, map_get, string_map, timestamp};
use crate::broker::{
    Broker, BrokerError, EntityPath, Outcome, ReceiveMode, SessionError, SessionOwner, SettleError,
};
use crate::message::StoredMessage;

/// Handle one management request for `entity`. `owner` is the session receiver the request's
/// `associated-link-name` names (a link of the same connection), for operations inside a session.
pub fn handle(
    broker: &Broker,
    entity: &EntityPath,
    request: &Request,
    owner: Option<SessionOwner>,
) -> Reply {
    let operation = request.property_str("operation").unwrap_or_default();
    if let Some(reply) = sessions::handle(broker, entity, &operation, request, owner) {
        return reply;
    }
    let result = match operation.as_str() {
        "com.microsoft:renew-lock" => renew_lock(broker, entity, request),
        "com.microsoft:peek-message" => peek(broker, entity, request),
        "com.microsoft:schedule-message" => schedule(broker, entity, request),
        "com.microsoft:cancel-scheduled-message" => cancel(broker, entity, request),
        "com.microsoft:receive-by-sequence-number" => {
            receive_deferred(broker, entity, request, owner)
        }
        "com.microsoft:update-disposition" => update_disposition(broker, entity, request, owner),
        "com.microsoft:add-rule" => super::rules::add(broker, entity, request),
        "com.microsoft:remove-rule" => super::rules::remove(broker, entity, request),
        "com.microsoft:enumerate-rules" => super::rules::enumerate(broker, entity, request),
        other => Err(Reply::error(
            501,
            "amqp:not-implemented",
            format!("management operation '{other}' is not implemented by the emulator"),
        )),
    };
    result.unwrap_or_else(|reply| reply)
}

pub(super) fn bad_request(description: impl Into<String>) -> Reply {
    Reply::error(400, "com.microsoft:argument-error", description)
}

pub(super) fn field<'a>(request: &'a Request, key: &str) -> Result<&'a Value, Reply> {
    request
        .body_field(key)
        .ok_or_else(|| bad_request(format!("the request body has no '{key}' field")))
}

fn lock_tokens(request: &Request) -> Result<Vec<Uuid>, Reply> {
    let value = field(request, "lock-tokens")?;
    elements(value)
        .ok_or_else(|| bad_request("'lock-tokens' must be an array of uuids"))?
        .iter()
        .map(|v| match v {
            // In management bodies lock tokens are AMQP uuids in RFC 4122 byte order.
            Value::Uuid(u) => Ok(Uuid::from_bytes(u.clone().into_inner())),
            _ => Err(bad_request("'lock-tokens' must be an array of uuids")),
        })
        .collect()
}

fn sequence_numbers(request: &Request) -> Result<Vec<i64>, Reply> {
    let value = field(request, "sequence-numbers")?;
    elements(value)
        .ok_or_else(|| bad_request("'sequence-numbers' must be an array of longs"))?
        .iter()
        .map(|v| {
            as_i64(v).ok_or_else(|| bad_request("'sequence-numbers' must be an array of longs"))
        })
        .collect()
}

fn settle_error(e: SettleError) -> Reply {
    let status = match e {
        SettleError::LockLost | SettleError::SessionLockLost => 410,
        SettleError::MessageNotFound => 404,
    };
    Reply::error(status, e.condition(), e.to_string())
}

fn session_error(e: SessionError) -> Reply {
    sessions::error_reply(e)
}

pub(super) fn broker_error(e: BrokerError) -> Reply {
    match e {
        BrokerError::NotFound(_) => Reply::error(404, "amqp:not-found", e.to_string()),
        BrokerError::MessageTooLarge { .. } => {
            Reply::error(413, "amqp:link:message-size-exceeded", e.to_string())
        }
        BrokerError::SequenceNotFound(_) => {
            Reply::error(404, "com.microsoft:message-not-found", e.to_string())
        }
        BrokerError::NotAllowed(_) => Reply::error(400, "amqp:not-allowed", e.to_string()),
        BrokerError::AlreadyExists(_) => {
            Reply::error(409, "com.microsoft:entity-already-exists", e.to_string())
        }
    }
}

fn renew_lock(broker: &Broker, entity: &EntityPath, request: &Request) -> Result<Reply, Reply> {
    let tokens = lock_tokens(request)?;
    let until = broker.renew_locks(entity, &tokens).map_err(settle_error)?;
    let expirations = until
        .into_iter()
        .map(|t| Value::Timestamp(timestamp(t)))
        .collect();
    Ok(Reply::ok(string_map([(
        "expirations",
        Value::Array(Array(expirations)),
    )])))
}

fn message_entry(lock_token: Option<Uuid>, payload: Bytes) -> Value {
    let mut entries = vec![("message", Value::Binary(Binary::from(payload.to_vec())))];
    if let Some(token) = lock_token {
        entries.push(("lock-token", Value::Uuid(token.into())));
    }
    string_map(entries)
}

fn peek(broker: &Broker, entity: &EntityPath, request: &Request) -> Result<Reply, Reply> {
    let from = as_i64(field(request, "from-sequence-number")?)
        .ok_or_else(|| bad_request("'from-sequence-number' must be a long"))?;
    let count = as_i64(field(request, "message-count")?)
        .ok_or_else(|| bad_request("'message-count' must be an int"))?;
    let count = usize::try_from(count.max(0)).unwrap_or(0);
    // A session receiver's peek sees only its session's messages.
    let messages = match session_id(request) {
        Some(id) => broker.peek_session(entity, &id, from, count),
        None => broker.peek(entity, from, count),
    };
    if messages.is_empty() {
        return Ok(Reply::no_content());
    }
    let list = messages
        .into_iter()
        .map(|(_, payload)| message_entry(None, payload))
        .collect();
    Ok(Reply::ok(string_map([("messages", Value::List(list))])))
}

fn schedule(broker: &Broker, entity: &EntityPath, request: &Request) -> Result<Reply, Reply> {
    let value = field(request, "messages")?;
    let items = elements(value).ok_or_else(|| bad_request("'messages' must be a list of maps"))?;
    let mut messages = Vec::with_capacity(items.len());
    for item in items {
        let Some(Value::Binary(bytes)) = map_get(item, "message") else {
            return Err(bad_request(
                "each scheduled entry needs a 'message' binary (an encoded AMQP message)",
            ));
        };
        let message = StoredMessage::parse(Bytes::from(bytes.to_vec()))
            .map_err(|e| bad_request(format!("scheduled message: {e}")))?;
        messages.push(message);
    }
    let numbers = broker
        .schedule(entity, messages, None)
        .map_err(broker_error)?;
    let numbers = numbers.into_iter().map(Value::Long).collect();
    Ok(Reply::ok(string_map([(
        "sequence-numbers",
        Value::Array(Array(numbers)),
    )])))
}

fn cancel(broker: &Broker, entity: &EntityPath, request: &Request) -> Result<Reply, Reply> {
    let numbers = sequence_numbers(request)?;
    broker
        .cancel_scheduled(entity, &numbers)
        .map_err(broker_error)?;
    Ok(Reply::ok(Value::Null))
}

fn receive_deferred(
    broker: &Broker,
    entity: &EntityPath,
    request: &Request,
    owner: Option<SessionOwner>,
) -> Result<Reply, Reply> {
    let numbers = sequence_numbers(request)?;
    // The SDKs send the AMQP receiver settle mode: 1 (second) = peek-lock, 0 (first) = receive-and-delete.
    let mode = match request.body_field("receiver-settle-mode").and_then(as_i64) {
        Some(0) => ReceiveMode::ReceiveAndDelete,
        _ => ReceiveMode::PeekLock,
    };
    let deliveries = match session_id(request) {
        Some(id) => broker
            .receive_deferred_session(entity, &id, owner, &numbers, mode)
            .map_err(session_error)?,
        None => broker
            .receive_deferred(entity, &numbers, mode)
            .map_err(broker_error)?,
    };
    let list = deliveries
        .into_iter()
        .map(|d| {
            let token = (mode == ReceiveMode::PeekLock).then_some(d.lock_token);
            message_entry(token, d.payload)
        })
        .collect();
    Ok(Reply::ok(string_map([("messages", Value::List(list))])))
}

fn properties_to_modify(request: &Request) -> Vec<(String, Value)> {
    match request.body_field("properties-to-modify") {
        Some(Value::Map(m)) => m
            .iter()
            .filter_map(|(k, v)| match k {
                Value::String(s) => Some((s.clone(), v.clone())),
                Value::Symbol(s) => Some((s.0.clone(), v.clone())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn optional_string(request: &Request, key: &str) -> Option<String> {
    match request.body_field(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

fn update_disposition(
    broker: &Broker,
    entity: &EntityPath,
    request: &Request,
    owner: Option<SessionOwner>,
) -> Result<Reply, Reply> {
    let status = optional_string(request, "disposition-status")
        .ok_or_else(|| bad_request("the request body has no 'disposition-status' string"))?;
    let tokens = lock_tokens(request)?;
    let outcome = match status.as_str() {
        "completed" => Outcome::Complete,
        "abandoned" => Outcome::Abandon {
            count_attempt: true,
            properties_to_modify: properties_to_modify(request),
        },
        // The Python SDK spells it "defered".
        "defered" | "deferred" => Outcome::Defer {
            properties_to_modify: properties_to_modify(request),
        },
        "suspended" => Outcome::DeadLetter {
            reason: optional_string(request, "deadletter-reason"),
            description: optional_string(request, "deadletter-description"),
        },
        other => {
            return Err(bad_request(format!(
                "unknown disposition-status '{other}'; use completed, abandoned, defered or suspended"
            )));
        }
    };
    let session = session_id(request);
    for token in tokens {
        match &session {
            Some(id) => broker.settle_session(entity, id, owner, token, outcome.clone()),
            None => broker.settle(entity, token, outcome.clone()),
        }
        .map_err(settle_error)?;
    }
    Ok(Reply::ok(Value::Null))
}

/// The server timeout a request asks for (`com.microsoft:server-timeout`, ms), for logs.
pub fn server_timeout(request: &Request) -> Option<Duration> {
    let props = request.message.application_properties.as_ref()?;
    match props.0.get("com.microsoft:server-timeout")? {
        fe2o3_amqp_types::primitives::SimpleValue::Uint(ms) => {
            Some(Duration::from_millis(u64::from(*ms)))
        }
        _ => None,
    }
}
