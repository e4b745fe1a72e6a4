//! Sessions on the wire: what a session receiver's attach asks for (`com.microsoft:session-filter`,
//! `com.microsoft:timeout`), what the broker's answer carries (the session id in the echoed filter
//! and `com.microsoft:locked-until-utc` in .NET ticks), the refusals, and the session operations of
//! `<entity>/$management` (renew-session-lock, get/set-session-state, get-message-sessions).
//!
//! Facts from `shared/reference/servicebus-sessions.md` §1–§4 (SDK sources), in short: the filter key
//! present with a `null` value means "next available"; the reply's session id must be an AMQP string
//! and the lock time an AMQP long of 100 ns ticks since 0001-01-01 (Python, .NET and Java all read it
//! so); state is binary or null; status codes are ints and condition values symbols.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fe2o3_amqp_types::definitions::{Error, Fields};
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::{Array, Binary, Symbol, Value};

use super::{Reply, Request, as_i64, string_map, timestamp};
use crate::amqp::AttachReply;
use crate::amqp::engine::amqp_error;
use crate::broker::{Broker, EntityPath, SessionError, SessionGrant, SessionOwner, SessionRequest};

/// The filter key of a session receiver's source.
pub const SESSION_FILTER: &str = "com.microsoft:session-filter";
/// The attach reply's link property with the session lock time.
pub const LOCKED_UNTIL_UTC: &str = "com.microsoft:locked-until-utc";
/// The attach's link property with how long to wait for a next-available session (uint ms).
pub const TIMEOUT: &str = "com.microsoft:timeout";
/// How long the service waits for a next-available session when the client names no timeout.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(65);

/// .NET ticks (100 ns) from 0001-01-01 to the Unix epoch.
const TICKS_AT_UNIX_EPOCH: i64 = 621_355_968_000_000_000;

/// What the attach's source asks for: `None` for a plain receiver (no session-filter key at all).
/// The value is a session id (string, symbol or binary alike, as pyamqp decodes them) or `null`.
pub fn session_filter(attach: &Attach) -> Option<SessionRequest> {
    let filter = attach.source.as_ref()?.filter.as_ref()?;
    let value = filter.get(&Symbol::from(SESSION_FILTER))?;
    Some(match value {
        Value::String(s) => SessionRequest::Specific(s.clone()),
        Value::Symbol(s) => SessionRequest::Specific(s.0.clone()),
        Value::Binary(b) => SessionRequest::Specific(String::from_utf8_lossy(b).into_owned()),
        // `null` (or a shape we do not know) asks for the next available session.
        _ => SessionRequest::NextAvailable,
    })
}

/// How long a next-available attach waits for a session: the attach's `com.microsoft:timeout`
/// (ms), else the service's 65 s.
pub fn wait_timeout(attach: &Attach) -> Duration {
    attach
        .properties
        .as_ref()
        .and_then(|p| p.get(&Symbol::from(TIMEOUT)))
        .and_then(as_i64)
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or(DEFAULT_WAIT, Duration::from_millis)
}

/// A wall-clock time as .NET ticks (100 ns since 0001-01-01 UTC), the AMQP `long` the SDKs read.
pub fn dotnet_ticks(t: SystemTime) -> i64 {
    let since_epoch = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos() / 100).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos() / 100).unwrap_or(i64::MAX),
    };
    TICKS_AT_UNIX_EPOCH.saturating_add(since_epoch)
}

/// The accepting attach reply of a session receiver: the granted id replaces the requested one (or
/// the `null` of next-available) in the echoed filter, and the properties carry the lock time. A
/// fresh properties map is sent (never the client's `com.microsoft:timeout` echoed back).
pub fn attach_reply(grant: &SessionGrant) -> AttachReply {
    let mut properties = Fields::default();
    properties.insert(
        Symbol::from(LOCKED_UNTIL_UTC),
        Value::Long(dotnet_ticks(grant.locked_until)),
    );
    AttachReply {
        snd_settle_mode: None,
        source_filter: vec![(
            Symbol::from(SESSION_FILTER),
            Value::String(grant.session_id.clone()),
        )],
        properties: Some(properties),
    }
}

/// A session error as the AMQP error the SDKs map (condition and Service Bus's text).
pub fn error(e: &SessionError) -> Error {
    amqp_error(e.condition(), e.to_string())
}

/// The refusal of a next-available attach that found no session within its wait.
pub fn timeout_error(waited: Duration) -> Error {
    amqp_error(
        "com.microsoft:timeout",
        format!(
            "The operation did not complete within the allotted timeout of {}. No session with available messages could be locked; send messages with a SessionId, or wait longer (max_wait_time).",
            timespan(waited)
        ),
    )
}

/// A duration in .NET `TimeSpan` form (`00:01:05`, `00:00:02.5000000`), as Service Bus prints it.
fn timespan(d: Duration) -> String {
    let secs = d.as_secs();
    let mut text = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let ticks = d.subsec_nanos() / 100;
    if ticks > 0 {
        text.push_str(&format!(".{ticks:07}"));
    }
    text
}

fn bad_request(description: impl Into<String>) -> Reply {
    Reply::error(400, "com.microsoft:argument-error", description)
}

/// A session error as a management reply (status code, condition, Service Bus's text).
pub fn error_reply(e: SessionError) -> Reply {
    let status = match e {
        SessionError::CannotBeLocked(_) | SessionError::LockLost(_) => 410,
        SessionError::NotSessionful(_) => 400,
        SessionError::MessageNotFound(_) => 404,
        SessionError::StateTooLarge { .. } => 413,
    };
    Reply::error(status, e.condition(), e.to_string())
}

/// The `session-id` of a management request body, if any.
pub fn session_id(request: &Request) -> Option<String> {
    match request.body_field("session-id")? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

fn required_session_id(request: &Request) -> Result<String, Reply> {
    session_id(request).ok_or_else(|| bad_request("the request body has no 'session-id' string"))
}

/// The session operations of `<entity>/$management`; `None` for other operations. `owner` is the
/// session receiver named by `associated-link-name`, when it is a link of this connection.
pub fn handle(
    broker: &Broker,
    entity: &EntityPath,
    operation: &str,
    request: &Request,
    owner: Option<SessionOwner>,
) -> Option<Reply> {
    let result = match operation {
        "com.microsoft:get-message-sessions" => list(broker, entity, request),
        "com.microsoft:renew-session-lock"
        | "com.microsoft:get-session-state"
        | "com.microsoft:set-session-state" => required_session_id(request).and_then(|id| {
            let session = Session {
                broker,
                entity,
                id: &id,
                owner,
            };
            match operation {
                "com.microsoft:renew-session-lock" => session.renew_lock(),
                "com.microsoft:get-session-state" => session.get_state(),
                _ => session.set_state(request),
            }
        }),
        _ => return None,
    };
    Some(result.unwrap_or_else(|reply| reply))
}

/// One session named by a request's `session-id`, held (when `owner` is known) by that receiver.
struct Session<'a> {
    broker: &'a Broker,
    entity: &'a EntityPath,
    id: &'a str,
    owner: Option<SessionOwner>,
}

impl Session<'_> {
    fn renew_lock(&self) -> Result<Reply, Reply> {
        let until = self
            .broker
            .renew_session_lock(self.entity, self.id, self.owner)
            .map_err(error_reply)?;
        Ok(Reply::ok(string_map([(
            "expiration",
            Value::Timestamp(timestamp(until)),
        )])))
    }

    fn get_state(&self) -> Result<Reply, Reply> {
        let state = self
            .broker
            .session_state(self.entity, self.id, self.owner)
            .map_err(error_reply)?;
        // Never-set state is `null` (the SDKs return None/null), never a 204.
        let value = state.map_or(Value::Null, |s| Value::Binary(Binary::from(s.to_vec())));
        Ok(Reply::ok(string_map([("session-state", value)])))
    }

    fn set_state(&self, request: &Request) -> Result<Reply, Reply> {
        let state = match request.body_field("session-state") {
            None | Some(Value::Null) => None,
            Some(Value::Binary(b)) => Some(Bytes::from(b.to_vec())),
            // Tolerate a string (some clients encode text state so); stored as its UTF-8 bytes.
            Some(Value::String(s)) => Some(Bytes::from(s.clone().into_bytes())),
            Some(_) => {
                return Err(bad_request(
                    "'session-state' must be binary, or null to clear the state",
                ));
            }
        };
        self.broker
            .set_session_state(self.entity, self.id, self.owner, state)
            .map_err(error_reply)?;
        Ok(Reply::ok(string_map([])))
    }
}

/// `last-updated-time` at or beyond this (year 10000, what the SDKs send for "any") filters nothing.
const NO_FILTER_MS: i64 = 253_402_300_800_000;

fn list(broker: &Broker, entity: &EntityPath, request: &Request) -> Result<Reply, Reply> {
    let skip = request
        .body_field("skip")
        .and_then(as_i64)
        .unwrap_or(0)
        .max(0);
    let top = request
        .body_field("top")
        .and_then(as_i64)
        .unwrap_or(i64::from(i32::MAX))
        .max(0);
    let since = match request.body_field("last-updated-time") {
        Some(Value::Timestamp(t)) if t.milliseconds() < NO_FILTER_MS => {
            Some(crate::message::timestamp_to_system_time(t))
        }
        _ => None,
    };
    let ids: Vec<Value> = broker
        .message_sessions(entity, since)
        .into_iter()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(usize::try_from(top).unwrap_or(usize::MAX))
        .map(Value::String)
        .collect();
    if ids.is_empty() {
        return Ok(Reply::no_content());
    }
    let next = skip + ids.len() as i64;
    Ok(Reply::ok(string_map([
        ("skip", Value::Int(i32::try_from(next).unwrap_or(i32::MAX))),
        // The SDKs read the key with this spelling.
        ("sessions-ids", Value::Array(Array(ids))),
    ])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_match_the_dotnet_epoch() {
        assert_eq!(dotnet_ticks(UNIX_EPOCH), TICKS_AT_UNIX_EPOCH);
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(dotnet_ticks(t), TICKS_AT_UNIX_EPOCH + 15_000_000);
    }

    #[test]
    fn timespans_print_like_dotnet() {
        assert_eq!(timespan(Duration::from_secs(65)), "00:01:05");
        assert_eq!(timespan(Duration::from_millis(2_500)), "00:00:02.5000000");
        assert_eq!(timespan(Duration::from_secs(3_725)), "01:02:05");
    }
}
