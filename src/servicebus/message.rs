//! Message types as users of Service Bus know them, converted from and to AMQP messages.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use fe2o3_amqp::Delivery;
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Header, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Value};
use uuid::Uuid;

use crate::servicebus::requests::from_timestamp;

/// An application property value (AMQP simple types: strings, numbers, booleans, timestamps, ...).
pub type PropertyValue = SimpleValue;

/// The body of a received message.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageBody {
    /// One or more `data` sections, concatenated (what the Azure SDKs send for bytes and strings).
    Data(Vec<u8>),
    /// An `amqp-value` section.
    Value(Value),
    /// One or more `amqp-sequence` sections.
    Sequence(Vec<Vec<Value>>),
    /// No body section.
    Empty,
}

impl MessageBody {
    /// The body as bytes when it is binary data or a string value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            MessageBody::Data(bytes) => Some(bytes),
            MessageBody::Value(Value::String(s)) => Some(s.as_bytes()),
            MessageBody::Value(Value::Binary(b)) => Some(b.as_slice()),
            _ => None,
        }
    }

    /// Size in bytes where that is meaningful (0 otherwise), for logs.
    pub fn len(&self) -> usize {
        self.as_bytes().map_or(0, <[u8]>::len)
    }

    /// Whether there are no body bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A peek-locked message. Settle it through the [`crate::servicebus::Receiver`] that gave it.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The lock token: the 16-byte delivery tag read as a .NET GUID (`Uuid::from_bytes_le`), the
    /// same value the Azure SDKs show. `None` if the broker sent no 16-byte tag.
    pub lock_token: Option<Uuid>,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub correlation_id: Option<String>,
    /// `subject` (Service Bus calls it Label).
    pub subject: Option<String>,
    pub application_properties: BTreeMap<String, PropertyValue>,
    /// `x-opt-sequence-number`.
    pub sequence_number: Option<i64>,
    /// `x-opt-enqueued-time`.
    pub enqueued_time: Option<SystemTime>,
    /// `x-opt-locked-until`: when the lock runs out unless renewed.
    pub locked_until: Option<SystemTime>,
    /// The AMQP header's delivery-count: earlier deliveries of this message that did not complete
    /// (the Python SDK's `delivery_count` shows the same number).
    pub delivery_count: u32,
    pub body: MessageBody,
    /// How to settle it on the link it came from; `None` for messages made with
    /// [`ReceivedMessage::detached`].
    pub(crate) delivery: Option<DeliveryInfo>,
}

impl ReceivedMessage {
    /// A message that did not come from a broker (to exercise a [`crate::processor::Processor`]
    /// in tests); settling it fails.
    pub fn detached(body: MessageBody) -> ReceivedMessage {
        ReceivedMessage {
            lock_token: None,
            message_id: None,
            content_type: None,
            correlation_id: None,
            subject: None,
            application_properties: BTreeMap::new(),
            sequence_number: None,
            enqueued_time: None,
            locked_until: None,
            delivery_count: 0,
            body,
            delivery: None,
        }
    }

    pub(crate) fn from_delivery(delivery: Delivery<Body<Value>>) -> ReceivedMessage {
        let tag = delivery.delivery_tag().as_slice().to_vec();
        let (info, message) = delivery.into_parts();
        let annotation = |name: &str| {
            message
                .message_annotations
                .as_ref()
                .and_then(|a| a.iter().find(|(k, _)| matches!(k, fe2o3_amqp::types::messaging::annotations::OwnedKey::Symbol(s) if s.0 == name)))
                .map(|(_, v)| v.clone())
        };
        let timestamp = |name: &str| match annotation(name) {
            Some(Value::Timestamp(ts)) => Some(from_timestamp(&ts)),
            _ => None,
        };
        let sequence_number = match annotation("x-opt-sequence-number") {
            Some(Value::Long(n)) => Some(n),
            Some(Value::Ulong(n)) => i64::try_from(n).ok(),
            Some(Value::Int(n)) => Some(i64::from(n)),
            _ => None,
        };
        let lock_token = <[u8; 16]>::try_from(tag.as_slice())
            .ok()
            .map(Uuid::from_bytes_le)
            .or_else(|| match message.delivery_annotations.as_ref().and_then(|a| {
                a.iter()
                    .find(|(k, _)| matches!(k, fe2o3_amqp::types::messaging::annotations::OwnedKey::Symbol(s) if s.0 == "x-opt-lock-token"))
                    .map(|(_, v)| v.clone())
            }) {
                Some(Value::Uuid(u)) => Some(Uuid::from_bytes(*u.as_inner())),
                _ => None,
            });
        let properties = message.properties.unwrap_or_default();
        ReceivedMessage {
            lock_token,
            message_id: properties.message_id.as_ref().map(message_id_to_string),
            content_type: properties.content_type.map(|s| s.0),
            correlation_id: properties.correlation_id.as_ref().map(message_id_to_string),
            subject: properties.subject,
            application_properties: message
                .application_properties
                .map(|p| p.0.into_iter().collect())
                .unwrap_or_default(),
            sequence_number,
            enqueued_time: timestamp("x-opt-enqueued-time"),
            locked_until: timestamp("x-opt-locked-until"),
            delivery_count: message.header.map_or(0, |h| h.delivery_count),
            body: match message.body {
                Body::Data(batch) => {
                    MessageBody::Data(batch.into_iter().flat_map(|d| d.0.into_vec()).collect())
                }
                Body::Value(v) => MessageBody::Value(v.0),
                Body::Sequence(batch) => {
                    MessageBody::Sequence(batch.into_iter().map(|s| s.0).collect())
                }
                Body::Empty => MessageBody::Empty,
            },
            delivery: Some(info),
        }
    }
}

/// A message to send. Build it with [`ServiceBusMessage::new`] and the `with_*` methods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceBusMessage {
    /// Sent as one `data` section, as the Azure SDKs do.
    pub body: Vec<u8>,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub correlation_id: Option<String>,
    pub subject: Option<String>,
    pub application_properties: BTreeMap<String, PropertyValue>,
}

impl ServiceBusMessage {
    /// A message with this body and nothing else set.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        ServiceBusMessage {
            body: body.into(),
            ..Default::default()
        }
    }

    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn with_application_property(
        mut self,
        name: impl Into<String>,
        value: impl Into<PropertyValue>,
    ) -> Self {
        self.application_properties
            .insert(name.into(), value.into());
        self
    }

    pub(crate) fn into_amqp(self) -> Message<Body<Value>> {
        let mut properties = Properties::builder();
        if let Some(id) = self.message_id {
            properties = properties.message_id(MessageId::String(id));
        }
        if let Some(id) = self.correlation_id {
            properties = properties.correlation_id(MessageId::String(id));
        }
        if let Some(ct) = self.content_type {
            properties = properties.content_type(Symbol::from(ct));
        }
        if let Some(subject) = self.subject {
            properties = properties.subject(subject);
        }
        let application_properties = (!self.application_properties.is_empty())
            .then(|| ApplicationProperties(self.application_properties.into_iter().collect()));
        Message {
            header: Some(Header {
                durable: true,
                ..Default::default()
            }),
            delivery_annotations: None,
            message_annotations: None::<MessageAnnotations>,
            properties: Some(properties.build()),
            application_properties,
            body: Body::Data(vec![Data(Binary::from(self.body))].into()),
            footer: None,
        }
    }
}

/// An AMQP timestamp as a `SystemTime`.
pub(crate) fn system_time(ts: &fe2o3_amqp::types::primitives::Timestamp) -> SystemTime {
    from_timestamp(ts)
}

/// Message ids as the Azure SDKs print them.
fn message_id_to_string(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => b.iter().fold(String::new(), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_message_maps_to_amqp_sections() {
        let message = ServiceBusMessage::new(b"{\"n\":1}".to_vec())
            .with_message_id("m-1")
            .with_content_type("application/json")
            .with_correlation_id("c-1")
            .with_subject("order")
            .with_application_property("tenant", "contoso")
            .into_amqp();
        let props = message.properties.unwrap();
        assert_eq!(props.message_id, Some(MessageId::String("m-1".into())));
        assert_eq!(props.correlation_id, Some(MessageId::String("c-1".into())));
        assert_eq!(props.content_type, Some(Symbol::from("application/json")));
        assert_eq!(props.subject.as_deref(), Some("order"));
        assert_eq!(
            message.application_properties.unwrap().get("tenant"),
            Some(&SimpleValue::String("contoso".into()))
        );
        assert!(
            matches!(message.body, Body::Data(ref b) if b.iter().next().unwrap().0.as_slice() == b"{\"n\":1}")
        );
    }

    #[test]
    fn message_ids_print_like_the_sdks() {
        let uuid = Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        assert_eq!(
            message_id_to_string(&MessageId::Uuid((*uuid.as_bytes()).into())),
            uuid.to_string()
        );
        assert_eq!(message_id_to_string(&MessageId::Ulong(7)), "7");
        assert_eq!(
            message_id_to_string(&MessageId::Binary(Binary::from(vec![0xab, 0x01]))),
            "ab01"
        );
    }

    #[test]
    fn body_bytes_for_data_and_string_values() {
        assert_eq!(MessageBody::Data(b"x".to_vec()).as_bytes(), Some(&b"x"[..]));
        assert_eq!(
            MessageBody::Value(Value::String("y".into())).as_bytes(),
            Some(&b"y"[..])
        );
        assert_eq!(MessageBody::Value(Value::Int(1)).as_bytes(), None);
        assert!(MessageBody::Empty.is_empty());
    }
}
