//! The request/response nodes: `$cbs` (put-token) and `<entity>/$management` (with the rule
//! operations of a subscription in `rules`).
//!
//! Both take one decoded request message and produce one reply message; the server routes the reply
//! (by `reply-to`, else to the node's response link on the same connection). Replies always carry
//! `correlation-id` = the request's `message-id`, because pyamqp correlates on exactly that.

pub mod cbs;
pub mod management;
pub mod rules;
pub mod sessions;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fe2o3_amqp_types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{OrderedMap, SimpleValue, Timestamp, Value};

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub message: Message<Body<Value>>,
}

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("could not decode the request message: {0}")]
pub struct RequestError(String);

impl Request {
    pub fn decode(payload: &[u8]) -> Result<Request, RequestError> {
        let Deserializable(message) =
            serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(payload)
                .map_err(|e| RequestError(e.to_string()))?;
        Ok(Request { message })
    }

    pub fn message_id(&self) -> Option<MessageId> {
        self.message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.clone())
    }

    pub fn reply_to(&self) -> Option<String> {
        self.message
            .properties
            .as_ref()
            .and_then(|p| p.reply_to.clone())
    }

    /// An application property as a string (strings and symbols both accepted).
    pub fn property_str(&self, key: &str) -> Option<String> {
        match self.message.application_properties.as_ref()?.0.get(key)? {
            SimpleValue::String(s) => Some(s.clone()),
            SimpleValue::Symbol(s) => Some(s.0.clone()),
            _ => None,
        }
    }

    /// The `amqp-value` body.
    pub fn body_value(&self) -> Option<&Value> {
        match &self.message.body {
            Body::Value(AmqpValue(v)) => Some(v),
            _ => None,
        }
    }

    /// A field of a map body, by string (or symbol) key.
    pub fn body_field(&self, key: &str) -> Option<&Value> {
        map_get(self.body_value()?, key)
    }
}

/// Look up a string or symbol key in a map value.
pub fn map_get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    let Value::Map(m) = map else {
        return None;
    };
    m.iter().find_map(|(k, v)| match k {
        Value::String(s) if s == key => Some(v),
        Value::Symbol(s) if s.0 == key => Some(v),
        _ => None,
    })
}

/// The elements of an array or list value.
pub fn elements(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(a) => Some(&a.0),
        Value::List(l) => Some(l),
        _ => None,
    }
}

/// Integers of any width as i64.
pub fn as_i64(value: &Value) -> Option<i64> {
    Some(match value {
        Value::Long(v) => *v,
        Value::Int(v) => i64::from(*v),
        Value::Short(v) => i64::from(*v),
        Value::Byte(v) => i64::from(*v),
        Value::Ulong(v) => i64::try_from(*v).ok()?,
        Value::Uint(v) => i64::from(*v),
        Value::Ushort(v) => i64::from(*v),
        Value::Ubyte(v) => i64::from(*v),
        _ => return None,
    })
}

/// A reply under construction.
#[derive(Debug)]
pub struct Reply {
    pub status_code: i32,
    pub status_description: String,
    /// Extra application properties (e.g. `errorCondition`).
    pub properties: Vec<(String, SimpleValue)>,
    pub body: Box<Value>,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply {
            status_code: 200,
            status_description: "OK".into(),
            properties: Vec::new(),
            body: Box::new(body),
        }
    }

    /// 204: nothing to return (peek past the end, no sessions); the SDKs read it as an empty result.
    pub fn no_content() -> Reply {
        Reply {
            status_code: 204,
            status_description: "No Content".into(),
            properties: Vec::new(),
            body: Box::new(Value::Null),
        }
    }

    pub fn error(status_code: i32, condition: &str, description: impl Into<String>) -> Reply {
        Reply {
            status_code,
            status_description: description.into(),
            properties: vec![(
                "errorCondition".into(),
                SimpleValue::Symbol(condition.into()),
            )],
            body: Box::new(Value::Null),
        }
    }

    /// Encode with the given status property names (`$cbs` uses `status-code`, management `statusCode`).
    pub fn encode(
        self,
        correlation_id: Option<MessageId>,
        code_key: &str,
        description_key: &str,
    ) -> Bytes {
        let mut props = OrderedMap::new();
        props.insert(code_key.to_string(), SimpleValue::Int(self.status_code));
        props.insert(
            description_key.to_string(),
            SimpleValue::String(self.status_description),
        );
        for (k, v) in self.properties {
            props.insert(k, v);
        }
        let message = Message::builder()
            .properties(Properties {
                correlation_id,
                ..Properties::default()
            })
            .application_properties(ApplicationProperties(props))
            .value(*self.body)
            .build();
        // A message built from these types always encodes.
        Bytes::from(serde_amqp::to_vec(&Serializable(&message)).unwrap_or_default())
    }
}

/// `SystemTime` as an AMQP timestamp (ms since the Unix epoch).
pub fn timestamp(t: SystemTime) -> Timestamp {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    };
    Timestamp::from_milliseconds(ms)
}

/// A string-keyed map value.
pub fn string_map(entries: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_string()), v);
    }
    Value::Map(m)
}

/// Strip `scheme://host[:port]/` and a leading `/` from an address, for lookups only (replies echo the
/// original string).
pub fn normalise_address(address: &str) -> &str {
    let rest = match address.find("://") {
        Some(i) => {
            let after = &address[i + 3..];
            match after.find('/') {
                Some(j) => &after[j..],
                None => "",
            }
        }
        None => address,
    };
    rest.trim_start_matches('/')
}

/// The entity of a `<entity>/$management` address (case-insensitive suffix), if it is one.
pub fn management_entity(address: &str) -> Option<&str> {
    let path = normalise_address(address);
    let cut = path.len().checked_sub("/$management".len())?;
    path.get(cut..)
        .filter(|s| s.eq_ignore_ascii_case("/$management"))
        .map(|_| &path[..cut])
}

/// Whether an address is the `$cbs` node.
pub fn is_cbs(address: &str) -> bool {
    normalise_address(address).eq_ignore_ascii_case("$cbs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(normalise_address("amqps://localhost:5672/q"), "q");
        assert_eq!(normalise_address("/q"), "q");
        assert_eq!(
            normalise_address("q/$DeadLetterQueue"),
            "q/$DeadLetterQueue"
        );
        assert_eq!(management_entity("amqps://h/q/$management"), Some("q"));
        assert_eq!(management_entity("q/$Management"), Some("q"));
        assert_eq!(management_entity("q"), None);
        assert!(is_cbs("$cbs") && is_cbs("amqps://h/$cbs") && !is_cbs("q"));
    }

    #[test]
    fn replies_carry_status_and_correlation() {
        let reply = Reply::ok(string_map([("x", Value::Long(1))])).encode(
            Some(MessageId::Ulong(7)),
            "statusCode",
            "statusDescription",
        );
        let decoded = Request::decode(&reply).unwrap();
        assert_eq!(
            decoded.message.properties.unwrap().correlation_id,
            Some(MessageId::Ulong(7))
        );
        let props = decoded.message.application_properties.unwrap().0;
        assert_eq!(props.get("statusCode"), Some(&SimpleValue::Int(200)));
        assert_eq!(
            as_i64(map_get(decoded.message.body.try_as_value().unwrap(), "x").unwrap()),
            Some(1)
        );
    }
}
