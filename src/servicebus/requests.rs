//! The request/response bodies we send to `$cbs` and `<queue>/$management`, on top of
//! `fe2o3-amqp-management`'s request/response plumbing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp::types::messaging::{ApplicationProperties, Message};
use fe2o3_amqp::types::primitives::{Array, OrderedMap, SimpleValue, Timestamp, Value};
use fe2o3_amqp_management::error::{
    Error as MgmtError, InvalidType, StatusCodeNotFound, StatusError,
};
use fe2o3_amqp_management::mgmt_ext::AmqpMessageManagementExt;
use fe2o3_amqp_management::request::Request;
use fe2o3_amqp_management::response::Response;
use fe2o3_amqp_management::status::StatusCode;
use uuid::Uuid;

use crate::servicebus::credential::CbsToken;

/// CBS `put-token`: authorises this connection for one entity.
pub struct PutToken {
    pub audience: String,
    pub token: CbsToken,
}

impl Request for PutToken {
    const OPERATION: &'static str = "put-token";
    type Response = PutTokenAccepted;
    type Body = String;

    fn manageable_entity_type(&mut self) -> Option<String> {
        Some(self.token.token_type.to_string())
    }

    fn encode_application_properties(&mut self) -> Option<ApplicationProperties> {
        Some(
            ApplicationProperties::builder()
                .insert("name", self.audience.clone())
                .insert(
                    "expiration",
                    SimpleValue::Timestamp(to_timestamp(self.token.expires_at)),
                )
                .build(),
        )
    }

    fn encode_body(self) -> String {
        self.token.value.expose().to_string()
    }
}

/// A put-token answer with status 200 or 202 (Service Bus says 202; some brokers say 200).
#[derive(Debug)]
pub struct PutTokenAccepted;

impl Response for PutTokenAccepted {
    const STATUS_CODE: u16 = 202;
    type Body = Value;
    type Error = MgmtError;

    fn verify_status_code(message: &mut Message<Value>) -> Result<StatusCode, MgmtError> {
        verify_status(message, &[200, 202])
    }

    fn decode_message(_message: Message<Value>) -> Result<Self, MgmtError> {
        Ok(PutTokenAccepted)
    }
}

/// `com.microsoft:renew-lock` for peek-locked messages.
pub struct RenewLock {
    pub lock_tokens: Vec<Uuid>,
    /// The receiver link the locks belong to (Service Bus routes the renewal through it).
    pub associated_link_name: String,
}

impl Request for RenewLock {
    const OPERATION: &'static str = "com.microsoft:renew-lock";
    type Response = RenewedLocks;
    type Body = Value;

    fn encode_application_properties(&mut self) -> Option<ApplicationProperties> {
        Some(
            ApplicationProperties::builder()
                .insert("associated-link-name", self.associated_link_name.clone())
                .build(),
        )
    }

    fn encode_body(self) -> Value {
        // On the wire a lock token is an AMQP uuid in RFC byte order: the same bytes
        // `uuid.UUID(bytes_le=delivery_tag).bytes` gives in the Python SDK.
        let tokens = self
            .lock_tokens
            .iter()
            .map(|t| Value::Uuid((*t.as_bytes()).into()))
            .collect::<Vec<_>>();
        let mut map = OrderedMap::new();
        map.insert(
            Value::String("lock-tokens".into()),
            Value::Array(Array::from(tokens)),
        );
        Value::Map(map)
    }
}

/// The new locked-until times, one per lock token, in order.
#[derive(Debug)]
pub struct RenewedLocks {
    pub expirations: Vec<SystemTime>,
}

impl Response for RenewedLocks {
    const STATUS_CODE: u16 = 200;
    type Body = Value;
    type Error = MgmtError;

    fn decode_message(message: Message<Value>) -> Result<Self, MgmtError> {
        let invalid = |what: &str| {
            MgmtError::DecodeError(Some(InvalidType {
                expected: what.into(),
                actual: String::new(),
            }))
        };
        let Value::Map(map) = message.body else {
            return Err(invalid("a map body"));
        };
        let Some(Value::Array(values)) = map.get(&Value::String("expirations".into())) else {
            return Err(invalid("an `expirations` array"));
        };
        let expirations = values
            .iter()
            .map(|v| match v {
                Value::Timestamp(ts) => Ok(from_timestamp(ts)),
                _ => Err(invalid("timestamps in `expirations`")),
            })
            .collect::<Result<_, _>>()?;
        Ok(RenewedLocks { expirations })
    }
}

/// Accepts any of `codes` (the blanket implementation accepts exactly one).
fn verify_status<T>(message: &mut Message<T>, codes: &[u16]) -> Result<StatusCode, MgmtError> {
    let code = match message.remove_status_code().ok_or(StatusCodeNotFound {})? {
        Ok(code) => code,
        Err(other) => {
            return Err(InvalidType {
                expected: "a status code".into(),
                actual: format!("{other:?}"),
            }
            .into());
        }
    };
    if codes.contains(&code.0.get()) {
        return Ok(code);
    }
    let description = message.remove_status_description().and_then(Result::ok);
    Err(StatusError { code, description }.into())
}

pub(crate) fn to_timestamp(at: SystemTime) -> Timestamp {
    let millis = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp::from_milliseconds(i64::try_from(millis).unwrap_or(i64::MAX))
}

pub(crate) fn from_timestamp(ts: &Timestamp) -> SystemTime {
    let millis = ts.milliseconds();
    if millis >= 0 {
        UNIX_EPOCH + Duration::from_millis(millis.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(millis.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn put_token_carries_type_name_expiration_and_the_token_as_body() {
        let expires_at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let request = PutToken {
            audience: "sb://ns/q".into(),
            token: CbsToken {
                value: Secret::new("eyJ.token"),
                token_type: "jwt",
                expires_at,
            },
        };
        let message = request.into_message();
        let props = message.application_properties.unwrap();
        assert_eq!(
            props.get("operation"),
            Some(&SimpleValue::String("put-token".into()))
        );
        assert_eq!(props.get("type"), Some(&SimpleValue::String("jwt".into())));
        assert_eq!(
            props.get("name"),
            Some(&SimpleValue::String("sb://ns/q".into()))
        );
        assert_eq!(
            props.get("expiration"),
            Some(&SimpleValue::Timestamp(to_timestamp(expires_at)))
        );
        assert_eq!(message.body, "eyJ.token");
    }

    #[test]
    fn renew_lock_body_is_a_uuid_array_in_rfc_byte_order() {
        let tag: [u8; 16] = core::array::from_fn(|i| i as u8);
        let token = Uuid::from_bytes_le(tag);
        let message = RenewLock {
            lock_tokens: vec![token],
            associated_link_name: "l".into(),
        }
        .into_message();
        let Value::Map(map) = message.body else {
            panic!("map body")
        };
        let Some(Value::Array(tokens)) = map.get(&Value::String("lock-tokens".into())) else {
            panic!()
        };
        let Some(Value::Uuid(wire)) = tokens.iter().next() else {
            panic!()
        };
        assert_eq!(wire.as_inner(), token.as_bytes());
    }

    fn response(code: i32, body: Value) -> Message<Value> {
        Message::builder()
            .application_properties(
                ApplicationProperties::builder()
                    .insert("statusCode", code)
                    .build(),
            )
            .body(body)
            .build()
    }

    #[test]
    fn renew_lock_response_gives_expirations_and_non_200_is_an_error() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let mut map = OrderedMap::new();
        map.insert(
            Value::String("expirations".into()),
            Value::Array(Array::from(vec![Value::Timestamp(to_timestamp(at))])),
        );
        let renewed = RenewedLocks::from_message(response(200, Value::Map(map))).unwrap();
        assert_eq!(renewed.expirations, vec![at]);
        assert!(matches!(
            RenewedLocks::from_message(response(410, Value::Null)),
            Err(MgmtError::Status(_))
        ));
    }

    #[test]
    fn put_token_accepts_200_and_202_only() {
        assert!(PutTokenAccepted::from_message(response(202, Value::Null)).is_ok());
        assert!(PutTokenAccepted::from_message(response(200, Value::Null)).is_ok());
        assert!(PutTokenAccepted::from_message(response(401, Value::Null)).is_err());
    }
}
