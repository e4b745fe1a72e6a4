//! A message as raw bytes plus section ranges.
//!
//! AMQP forbids intermediaries to change the bare message (properties, application-properties, body),
//! not even its encoding, and decoding + re-encoding with the codec crate is not byte-exact. So the broker
//! keeps the bytes as received, finds the section boundaries with a small "skip one value" scanner, and
//! re-encodes only what it owns: the header (hand-written, so that `delivery-count = 0` is on the wire)
//! and the message-annotations. Delivery-annotations are for the next hop only and are dropped.
//!
//! INTERFACE CONTRACT (keep these signatures; extend freely):
//! - `StoredMessage::parse(raw: Bytes) -> Result<StoredMessage, MessageError>`: one encoded AMQP message
//!   (format 0) as received in a transfer (all frames concatenated).
//! - `StoredMessage::split_batch(raw: Bytes) -> Result<Vec<StoredMessage>, MessageError>`: message-format
//!   0x80013700, each `data` section of the envelope is one complete encoded message.
//! - `StoredMessage::len(&self) -> usize`: the encoded size, for the 256 KiB limit.
//! - `StoredMessage::message_id(&self) -> Option<String>` (display form), for logs and duplicate detection.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use fe2o3_amqp_types::messaging::annotations::OwnedKey;
use fe2o3_amqp_types::messaging::{
    Annotations, ApplicationProperties, Header, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp_types::primitives::{OrderedMap, SimpleValue, Symbol, Timestamp, Value};

/// Descriptor codes of the message sections (messaging §3.2).
mod code {
    pub const HEADER: u64 = 0x70;
    pub const DELIVERY_ANNOTATIONS: u64 = 0x71;
    pub const MESSAGE_ANNOTATIONS: u64 = 0x72;
    pub const PROPERTIES: u64 = 0x73;
    pub const APPLICATION_PROPERTIES: u64 = 0x74;
    pub const DATA: u64 = 0x75;
    pub const AMQP_SEQUENCE: u64 = 0x76;
    pub const AMQP_VALUE: u64 = 0x77;
    pub const FOOTER: u64 = 0x78;
}

/// The Service Bus batch message format: each `data` section of the envelope is one encoded message.
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

/// Annotation keys the broker writes or reads.
pub mod keys {
    pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
    /// The number first given to the message (the SDKs' `enqueued_sequence_number`).
    pub const ENQUEUE_SEQUENCE_NUMBER: &str = "x-opt-enqueue-sequence-number";
    pub const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
    pub const LOCKED_UNTIL: &str = "x-opt-locked-until";
    pub const DEADLETTER_SOURCE: &str = "x-opt-deadletter-source";
    pub const SCHEDULED_ENQUEUE_TIME: &str = "x-opt-scheduled-enqueue-time";
    /// 0 active, 1 deferred, 2 scheduled (the SDKs' `state` of a peeked or received message).
    pub const MESSAGE_STATE: &str = "x-opt-message-state";
    pub const DEAD_LETTER_REASON: &str = "DeadLetterReason";
    pub const DEAD_LETTER_DESCRIPTION: &str = "DeadLetterErrorDescription";
    /// Set on a subscription's copy made by a rule with an action: the rule's name.
    pub const RULE_NAME: &str = "RuleName";
}

/// A message as the broker keeps it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The bytes as received (or as rewritten by [`StoredMessage::with_application_properties`]).
    raw: Bytes,
    /// The client's header, parsed (durable, priority, ttl are kept on delivery).
    header: Header,
    /// The client's message-annotations merged with modifications from abandon/defer; `None` when
    /// there are none (most messages: boxed, so they cost a pointer, not an empty map's 72 bytes).
    annotations: Option<Box<Annotations>>,
    properties: Option<Span>,
    application_properties: Option<Span>,
    /// Properties through the end of the body: the immutable bare message.
    bare: Span,
    /// The body sections alone (after application-properties).
    body: Span,
    footer: Option<Span>,
    /// Fields of `properties` the broker needs, decoded once.
    message_id: Option<Box<str>>,
    group_id: Option<Box<str>>,
    absolute_expiry: Option<SystemTime>,
}

/// A byte range of `raw` in half the space of a `Range<usize>`: a broker keeps a million messages,
/// and no message is near 4 GiB (the size limit is far below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

impl From<Range<usize>> for Span {
    fn from(r: Range<usize>) -> Span {
        // `scan_sections` only yields ranges inside `raw`, whose length the frame size bounds.
        Span {
            start: u32::try_from(r.start).unwrap_or(u32::MAX),
            end: u32::try_from(r.end).unwrap_or(u32::MAX),
        }
    }
}

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn malformed(msg: impl Into<String>) -> MessageError {
    MessageError::Malformed(msg.into())
}

/// Broker-owned annotations added to every delivery (and to peeked messages).
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerAnnotations {
    pub sequence_number: i64,
    pub enqueued_time: SystemTime,
    /// Only for peek-lock deliveries.
    pub locked_until: Option<SystemTime>,
    /// Set on dead-letter queue copies: the queue the message came from.
    pub deadletter_source: Option<String>,
    /// Service Bus's message state: 0 active, 1 deferred, 2 scheduled. Written only when not 0 (the
    /// SDKs read a missing state as active).
    pub message_state: i32,
}

impl StoredMessage {
    /// Find the sections of one encoded message (format 0) and decode the parts the broker needs.
    pub fn parse(raw: Bytes) -> Result<StoredMessage, MessageError> {
        let sections = scan_sections(&raw)?;
        let mut header = None;
        let mut annotations = None;
        let mut properties = None;
        let mut application_properties = None;
        let mut body: Option<Range<usize>> = None;
        let mut footer = None;
        // The spec orders the sections header, delivery-annotations, message-annotations, properties,
        // application-properties, body, footer. Service Bus is more lenient: the Python SDK writes
        // delivery-annotations after the body (its `send_and_receive_amqp_annotated_message`
        // sample) and the service takes it. So the sections around the bare message (header, the two
        // annotation maps, footer) may stand anywhere, once each; the bare message itself
        // (properties, application-properties, then consecutive body sections) keeps its order,
        // because it is kept and forwarded byte for byte as one range.
        let mut last_rank = 0u8;
        let mut seen_outer: Vec<u64> = Vec::new();
        let mut previous_was_body = false;
        let mut body_kind = None;
        for s in &sections {
            let rank = match s.code {
                code::HEADER
                | code::DELIVERY_ANNOTATIONS
                | code::MESSAGE_ANNOTATIONS
                | code::FOOTER => 0,
                code::PROPERTIES => 4,
                code::APPLICATION_PROPERTIES => 5,
                code::DATA | code::AMQP_SEQUENCE | code::AMQP_VALUE => 6,
                other => {
                    return Err(malformed(format!(
                        "unknown section descriptor 0x{other:x} at byte {}",
                        s.range.start
                    )));
                }
            };
            if rank == 0 {
                if seen_outer.contains(&s.code) {
                    return Err(malformed(format!(
                        "section 0x{:x} at byte {} is repeated",
                        s.code, s.range.start
                    )));
                }
                seen_outer.push(s.code);
            } else {
                let repeated_body = rank == 6 && last_rank == 6;
                if rank < last_rank || (rank == last_rank && !repeated_body) {
                    return Err(malformed(format!(
                        "section 0x{:x} at byte {} is out of order or repeated",
                        s.code, s.range.start
                    )));
                }
                if repeated_body && !previous_was_body {
                    return Err(malformed(format!(
                        "body section 0x{:x} at byte {}: body sections must follow each other",
                        s.code, s.range.start
                    )));
                }
                if repeated_body && (body_kind != Some(s.code) || s.code == code::AMQP_VALUE) {
                    return Err(malformed(format!(
                        "body section 0x{:x} at byte {} cannot follow 0x{:x}",
                        s.code,
                        s.range.start,
                        body_kind.unwrap_or(0)
                    )));
                }
                last_rank = rank;
            }
            previous_was_body = rank == 6;
            let r = s.range.clone();
            match s.code {
                code::HEADER => {
                    header = Some(
                        serde_amqp::from_slice::<Header>(&raw[r])
                            .map_err(|e| malformed(format!("header: {e}")))?,
                    )
                }
                code::DELIVERY_ANNOTATIONS => {}
                code::MESSAGE_ANNOTATIONS => {
                    let ma = serde_amqp::from_slice::<MessageAnnotations>(&raw[r])
                        .map_err(|e| malformed(format!("message-annotations: {e}")))?;
                    annotations = Some(ma.0);
                }
                code::PROPERTIES => {
                    if !matches!(raw[s.value.start], 0x45 | 0xc0 | 0xd0) {
                        return Err(malformed(format!(
                            "properties at byte {} is not a list",
                            s.range.start
                        )));
                    }
                    properties = Some(r)
                }
                code::APPLICATION_PROPERTIES => application_properties = Some(r),
                code::FOOTER => footer = Some(r),
                _ => {
                    body_kind = Some(s.code);
                    body = Some(match body {
                        Some(b) => b.start..r.end,
                        None => r,
                    });
                }
            }
        }
        // The spec requires a body; refusing a message without one also catches a transfer cut short at a
        // section boundary.
        let Some(body) = body else {
            return Err(malformed(
                "no body section (data, amqp-sequence or amqp-value)",
            ));
        };
        let bare_start = properties
            .as_ref()
            .or(application_properties.as_ref())
            .map_or(body.start, |r| r.start);
        let bare = bare_start..body.end;

        if raw.len() > u32::MAX as usize {
            return Err(malformed("a message of 4 GiB or more"));
        }
        let mut message = StoredMessage {
            header: header.unwrap_or_default(),
            annotations: annotations.filter(|a| !a.is_empty()).map(Box::new),
            properties: properties.map(Span::from),
            application_properties: application_properties.map(Span::from),
            bare: bare.into(),
            body: body.into(),
            footer: footer.map(Span::from),
            message_id: None,
            group_id: None,
            absolute_expiry: None,
            raw,
        };
        if let Some(r) = message.properties.map(Span::range) {
            // The bare message is forwarded as is, so a properties list the strict codec rejects (say, a
            // content-type sent as a string instead of a symbol) is no reason to refuse the message: it
            // only goes without duplicate detection and its own expiry time.
            match serde_amqp::from_slice::<Properties>(&message.raw[r]) {
                Ok(p) => {
                    message.message_id = p
                        .message_id
                        .as_ref()
                        .map(|id| display_message_id(id).into_boxed_str());
                    message.group_id = p.group_id.map(String::into_boxed_str);
                    message.absolute_expiry = p
                        .absolute_expiry_time
                        .as_ref()
                        .map(timestamp_to_system_time);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "message properties not understood; kept as sent")
                }
            }
        }
        Ok(message)
    }

    /// Split a batch (format 0x80013700): each `data` section of the envelope is one encoded message.
    pub fn split_batch(raw: Bytes) -> Result<Vec<StoredMessage>, MessageError> {
        let sections = scan_sections(&raw)?;
        let mut messages = Vec::new();
        for s in sections.iter().filter(|s| s.code == code::DATA) {
            let inner = binary_contents(&raw, s.value.clone()).ok_or_else(|| {
                malformed(format!(
                    "batch data section at byte {} is not binary",
                    s.range.start
                ))
            })?;
            messages.push(StoredMessage::parse(raw.slice(inner))?);
        }
        if messages.is_empty() {
            return Err(malformed("batch envelope has no data sections"));
        }
        Ok(messages)
    }

    /// The encoded size as received, for the 256 KiB limit.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The raw bytes as received.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The bare message bytes (properties, application-properties, body), exactly as sent.
    pub fn bare(&self) -> Bytes {
        self.raw.slice(self.bare.range())
    }

    /// `properties.message-id` in display form (string as is, uuid hyphenated, ulong decimal, binary hex).
    pub fn message_id(&self) -> Option<String> {
        self.message_id.as_deref().map(str::to_string)
    }

    /// The decoded `properties` section; `None` when absent or not understood (it is kept as sent).
    pub fn properties(&self) -> Option<Properties> {
        let r = self.properties?.range();
        serde_amqp::from_slice::<Properties>(&self.raw[r]).ok()
    }

    /// `properties.group-id` (the Service Bus session id).
    pub fn group_id(&self) -> Option<&str> {
        self.group_id.as_deref()
    }

    /// `header.ttl`, the relative time to live.
    pub fn ttl(&self) -> Option<Duration> {
        self.header
            .ttl
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// `properties.absolute-expiry-time`.
    pub fn absolute_expiry(&self) -> Option<SystemTime> {
        self.absolute_expiry
    }

    /// The client's `x-opt-scheduled-enqueue-time` annotation.
    pub fn scheduled_enqueue_time(&self) -> Option<SystemTime> {
        match self.annotation(keys::SCHEDULED_ENQUEUE_TIME)? {
            Value::Timestamp(t) => Some(timestamp_to_system_time(t)),
            // Some clients write it as a long of epoch milliseconds.
            Value::Long(ms) => Some(timestamp_to_system_time(&Timestamp::from_milliseconds(*ms))),
            _ => None,
        }
    }

    /// A message-annotation by symbol key.
    pub fn annotation(&self, key: &str) -> Option<&Value> {
        self.annotations
            .as_ref()?
            .get(&OwnedKey::Symbol(Symbol::from(key)))
    }

    /// Merge annotations (abandon/defer `properties-to-modify`): the same key replaces the old value.
    pub fn merge_annotations(&mut self, entries: impl IntoIterator<Item = (String, Value)>) {
        for (k, v) in entries {
            self.annotations
                .get_or_insert_with(Default::default)
                .insert(OwnedKey::Symbol(Symbol::from(k)), v);
        }
    }

    /// The merged message-annotations as an encoded section (empty when there are none), for the
    /// store: together with [`StoredMessage::raw`] it gives back this message ([`StoredMessage::restore`]).
    pub fn annotations_section(&self) -> Bytes {
        let Some(annotations) = &self.annotations else {
            return Bytes::new();
        };
        // Encoding a map of plain values into a Vec cannot fail; an empty section is the fallback.
        serde_amqp::to_vec(&MessageAnnotations(annotations.as_ref().clone()))
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// A message the store kept: its bytes as received and its merged annotations.
    pub fn restore(raw: Bytes, annotations: &[u8]) -> Result<StoredMessage, MessageError> {
        let mut message = StoredMessage::parse(raw)?;
        if !annotations.is_empty() {
            let stored = serde_amqp::from_slice::<MessageAnnotations>(annotations)
                .map_err(|e| malformed(format!("stored message-annotations: {e}")))?
                .0;
            message.annotations = Some(Box::new(stored));
        }
        Ok(message)
    }

    /// The decoded application-properties (empty if absent).
    pub fn application_properties(&self) -> Result<OrderedMap<String, SimpleValue>, MessageError> {
        match &self.application_properties {
            None => Ok(OrderedMap::new()),
            Some(r) => serde_amqp::from_slice::<ApplicationProperties>(&self.raw[r.range()])
                .map(|a| a.0)
                .map_err(|e| malformed(format!("application-properties: {e}"))),
        }
    }

    /// A copy with `entries` set in the application-properties (dead-letter reason and description).
    /// Only that section is re-encoded; properties and body bytes are copied untouched.
    pub fn with_application_properties(
        &self,
        entries: impl IntoIterator<Item = (String, SimpleValue)>,
    ) -> Result<StoredMessage, MessageError> {
        let mut map = self.application_properties()?;
        for (k, v) in entries {
            map.insert(k, v);
        }
        self.rewritten(None, map)
    }

    /// A copy with new `properties` (when given) and application-properties, for a subscription rule
    /// action's private copy. The body bytes are copied untouched.
    pub fn rewritten(
        &self,
        properties: Option<&Properties>,
        application_properties: OrderedMap<String, SimpleValue>,
    ) -> Result<StoredMessage, MessageError> {
        let section = serde_amqp::to_vec(&ApplicationProperties(application_properties))
            .map_err(|e| malformed(format!("cannot encode application-properties: {e}")))?;
        let properties = match properties {
            Some(p) => Some(
                serde_amqp::to_vec(p)
                    .map_err(|e| malformed(format!("cannot encode properties: {e}")))?,
            ),
            None => None,
        };
        let head_end = self
            .properties
            .or(self.application_properties)
            .unwrap_or(self.body)
            .range()
            .start;
        let mut buf = BytesMut::with_capacity(self.raw.len() + section.len());
        buf.extend_from_slice(&self.raw[..head_end]);
        match (&properties, &self.properties) {
            (Some(p), _) => buf.extend_from_slice(p),
            (None, Some(p)) => buf.extend_from_slice(&self.raw[p.range()]),
            (None, None) => {}
        }
        buf.extend_from_slice(&section);
        buf.extend_from_slice(&self.raw[self.body.range().start..]);
        let mut copy = StoredMessage::parse(buf.freeze())?;
        copy.annotations = self.annotations.clone();
        Ok(copy)
    }

    /// The message as the broker sends it: a hand-written header with an explicit delivery-count (the
    /// codec drops a 0, which clients then read as "absent"), the merged message-annotations, then the
    /// bare message and footer bytes as received.
    pub fn encode_for_delivery(
        &self,
        delivery_count: u32,
        first_acquirer: bool,
        broker: &BrokerAnnotations,
    ) -> Bytes {
        let mut annotations = self.annotations.as_deref().cloned().unwrap_or_default();
        // Service Bus gives every received message its enqueued sequence number: the number it got
        // where it was first enqueued. Here that is its own number, unless the message already
        // carries one (kept with its annotations when it was moved).
        let enqueue_key = OwnedKey::Symbol(Symbol::from(keys::ENQUEUE_SEQUENCE_NUMBER));
        if annotations.get(&enqueue_key).is_none() {
            annotations.insert(enqueue_key, Value::Long(broker.sequence_number));
        }
        let mut put = |k: &str, v: Value| {
            annotations.insert(OwnedKey::Symbol(Symbol::from(k)), v);
        };
        put(keys::SEQUENCE_NUMBER, Value::Long(broker.sequence_number));
        put(
            keys::ENQUEUED_TIME,
            Value::Timestamp(system_time_to_timestamp(broker.enqueued_time)),
        );
        if let Some(t) = broker.locked_until {
            put(
                keys::LOCKED_UNTIL,
                Value::Timestamp(system_time_to_timestamp(t)),
            );
        }
        if let Some(src) = &broker.deadletter_source {
            put(keys::DEADLETTER_SOURCE, Value::String(src.clone()));
        }
        if broker.message_state != 0 {
            put(keys::MESSAGE_STATE, Value::Int(broker.message_state));
        }
        // Encoding a map of plain values into a Vec cannot fail; an empty section is the fallback.
        let annotations = serde_amqp::to_vec(&MessageAnnotations(annotations)).unwrap_or_default();

        let mut out = BytesMut::with_capacity(32 + annotations.len() + self.raw.len());
        write_header(&mut out, &self.header, first_acquirer, delivery_count);
        out.extend_from_slice(&annotations);
        out.extend_from_slice(&self.raw[self.bare.range()]);
        if let Some(f) = self.footer {
            out.extend_from_slice(&self.raw[f.range()]);
        }
        out.freeze()
    }
}

/// `00 53 70 c0 <size> 05 <durable> <priority> <ttl> <first-acquirer> <delivery-count>`, every field
/// explicit.
fn write_header(out: &mut BytesMut, header: &Header, first_acquirer: bool, delivery_count: u32) {
    let mut fields = BytesMut::with_capacity(16);
    fields.put_u8(if header.durable { 0x41 } else { 0x42 });
    fields.put_u8(0x50);
    fields.put_u8(header.priority.0);
    match header.ttl {
        Some(ttl) => {
            fields.put_u8(0x70);
            fields.put_u32(ttl);
        }
        None => fields.put_u8(0x40),
    }
    fields.put_u8(if first_acquirer { 0x41 } else { 0x42 });
    fields.put_u8(0x70);
    fields.put_u32(delivery_count);
    out.extend_from_slice(&[0x00, 0x53, 0x70, 0xc0]);
    out.put_u8((fields.len() + 1) as u8); // size counts the count byte and the fields
    out.put_u8(5);
    out.extend_from_slice(&fields);
}

fn display_message_id(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner())
            .hyphenated()
            .to_string(),
        MessageId::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

/// AMQP timestamps are milliseconds since the Unix epoch (possibly negative).
pub fn timestamp_to_system_time(t: &Timestamp) -> SystemTime {
    let ms = t.milliseconds();
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

pub fn system_time_to_timestamp(t: SystemTime) -> Timestamp {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    };
    Timestamp::from_milliseconds(ms)
}

/// One top-level section: its descriptor code, its whole byte range, and the range of its value.
#[derive(Debug)]
struct Section {
    code: u64,
    range: Range<usize>,
    value: Range<usize>,
}

/// Split a message into described sections without decoding them.
fn scan_sections(raw: &[u8]) -> Result<Vec<Section>, MessageError> {
    let mut sections = Vec::with_capacity(4);
    let mut pos = 0;
    while pos < raw.len() {
        let start = pos;
        if raw[pos] != 0x00 {
            return Err(malformed(format!(
                "expected a described section at byte {pos}, found 0x{:02x}",
                raw[pos]
            )));
        }
        let (code, after_descriptor) = section_descriptor(raw, pos + 1)?;
        let end = skip_value(raw, after_descriptor)?;
        sections.push(Section {
            code,
            range: start..end,
            value: after_descriptor..end,
        });
        pos = end;
    }
    if sections.is_empty() {
        return Err(malformed("no sections (empty message)"));
    }
    Ok(sections)
}

/// Read a section descriptor: smallulong/ulong code, or the symbolic name.
fn section_descriptor(raw: &[u8], pos: usize) -> Result<(u64, usize), MessageError> {
    let fc = *raw.get(pos).ok_or_else(|| truncated(pos))?;
    match fc {
        0x53 => Ok((
            u64::from(*raw.get(pos + 1).ok_or_else(|| truncated(pos + 1))?),
            pos + 2,
        )),
        0x80 => {
            let b = raw
                .get(pos + 1..pos + 9)
                .ok_or_else(|| truncated(pos + 1))?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Ok((u64::from_be_bytes(a), pos + 9))
        }
        0x44 => Ok((0, pos + 1)),
        0xa3 | 0xb3 => {
            let end = skip_value(raw, pos)?;
            let header_len = if fc == 0xa3 { 2 } else { 5 };
            let name = std::str::from_utf8(&raw[pos + header_len..end]).unwrap_or("");
            let code = match name {
                "amqp:header:list" => code::HEADER,
                "amqp:delivery-annotations:map" => code::DELIVERY_ANNOTATIONS,
                "amqp:message-annotations:map" => code::MESSAGE_ANNOTATIONS,
                "amqp:properties:list" => code::PROPERTIES,
                "amqp:application-properties:map" => code::APPLICATION_PROPERTIES,
                "amqp:data:binary" => code::DATA,
                "amqp:amqp-sequence:list" => code::AMQP_SEQUENCE,
                "amqp:amqp-value:*" => code::AMQP_VALUE,
                "amqp:footer:map" => code::FOOTER,
                other => {
                    return Err(malformed(format!(
                        "unknown section descriptor \"{other}\" at byte {pos}"
                    )));
                }
            };
            Ok((code, end))
        }
        other => Err(malformed(format!(
            "unexpected section descriptor format 0x{other:02x} at byte {pos}"
        ))),
    }
}

fn truncated(pos: usize) -> MessageError {
    malformed(format!("truncated at byte {pos}"))
}

fn read_len(raw: &[u8], pos: usize, width: usize) -> Result<usize, MessageError> {
    let b = raw.get(pos..pos + width).ok_or_else(|| truncated(pos))?;
    Ok(match width {
        1 => b[0] as usize,
        _ => u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize,
    })
}

/// Return the position after the AMQP value that starts at `pos`. The width of a value follows from
/// the high nibble of its format code (types §1.2), so no decoding is needed.
fn skip_value(raw: &[u8], pos: usize) -> Result<usize, MessageError> {
    let fc = *raw.get(pos).ok_or_else(|| truncated(pos))?;
    let body = pos + 1;
    let end = match fc {
        0x00 => {
            // Described value: a descriptor value, then the value.
            let after_descriptor = skip_value(raw, body)?;
            return skip_value(raw, after_descriptor);
        }
        0x40..=0x45 => body,
        0x50..=0x56 => body + 1,
        0x60 | 0x61 => body + 2,
        0x70..=0x74 => body + 4,
        0x80..=0x84 => body + 8,
        0x98 => body + 16,
        0xa0 | 0xa1 | 0xa3 => body + 1 + read_len(raw, body, 1)?,
        0xb0 | 0xb1 | 0xb3 => body + 4 + read_len(raw, body, 4)?,
        0xc0 | 0xc1 | 0xe0 => body + 1 + read_len(raw, body, 1)?,
        0xd0 | 0xd1 | 0xf0 => body + 4 + read_len(raw, body, 4)?,
        other => {
            return Err(malformed(format!(
                "unknown format code 0x{other:02x} at byte {pos}"
            )));
        }
    };
    if end > raw.len() {
        return Err(truncated(raw.len()));
    }
    Ok(end)
}

/// The content range of a binary value (`vbin8`/`vbin32`) at `value.start`.
fn binary_contents(raw: &[u8], value: Range<usize>) -> Option<Range<usize>> {
    match raw.get(value.start)? {
        0xa0 => Some(value.start + 2..value.end),
        0xb0 => Some(value.start + 5..value.end),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp_types::messaging::message::__private::Serializable;
    use fe2o3_amqp_types::messaging::{AmqpValue, Body, Data, Message};
    use fe2o3_amqp_types::primitives::Binary;

    use super::*;

    fn encode(msg: &Message<Body<Value>>) -> Bytes {
        Bytes::from(serde_amqp::to_vec(&Serializable(msg)).unwrap())
    }

    fn sample() -> Message<Body<Value>> {
        Message::builder()
            .header(Header {
                durable: true,
                ttl: Some(30_000),
                ..Default::default()
            })
            .message_annotations(
                MessageAnnotations::builder()
                    .insert(
                        OwnedKey::Symbol(Symbol::from("x-opt-partition-key")),
                        Value::String("p".into()),
                    )
                    .build(),
            )
            .properties(
                Properties::builder()
                    .message_id(MessageId::String("id-1".into()))
                    .subject("greeting")
                    .group_id(String::from("g"))
                    .correlation_id(MessageId::Ulong(7))
                    .build(),
            )
            .application_properties(
                ApplicationProperties::builder()
                    .insert("k", SimpleValue::Int(5))
                    .insert("s", "v")
                    .build(),
            )
            .body(Body::Data(
                vec![Data(Binary::from(b"hello".to_vec()))].into(),
            ))
            .build()
    }

    fn broker_annotations() -> BrokerAnnotations {
        BrokerAnnotations {
            sequence_number: 42,
            enqueued_time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            locked_until: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_060_123)),
            deadletter_source: None,
            message_state: 0,
        }
    }

    /// The bytes of `sub` are found unchanged inside `whole`.
    fn contains(whole: &[u8], sub: &[u8]) -> bool {
        whole.windows(sub.len()).any(|w| w == sub)
    }

    fn decode(bytes: &[u8]) -> Message<Body<Value>> {
        use fe2o3_amqp_types::messaging::message::__private::Deserializable;
        serde_amqp::from_slice::<Deserializable<Message<Body<Value>>>>(bytes)
            .unwrap()
            .0
    }

    #[test]
    fn bare_message_round_trips_byte_exact() {
        let raw = encode(&sample());
        let m = StoredMessage::parse(raw.clone()).unwrap();
        assert_eq!(m.message_id().as_deref(), Some("id-1"));
        assert_eq!(m.group_id(), Some("g"));
        assert_eq!(m.ttl(), Some(Duration::from_secs(30)));
        // The bare message is everything from properties on: compare with the client's own encoding.
        let mut bare_only = sample();
        bare_only.header = None;
        bare_only.message_annotations = None;
        let bare_expected = encode(&bare_only);
        assert_eq!(m.bare(), bare_expected);

        let out = m.encode_for_delivery(0, true, &broker_annotations());
        assert!(out.ends_with(&bare_expected));
        let back = decode(&out);
        assert_eq!(back.properties, sample().properties);
        assert_eq!(back.application_properties, sample().application_properties);
        let ma = back.message_annotations.unwrap().0;
        assert_eq!(
            ma.get(&OwnedKey::Symbol(Symbol::from("x-opt-partition-key"))),
            Some(&Value::String("p".into()))
        );
        assert_eq!(
            ma.get(&OwnedKey::Symbol(Symbol::from(keys::SEQUENCE_NUMBER))),
            Some(&Value::Long(42))
        );
        assert_eq!(
            ma.get(&OwnedKey::Symbol(Symbol::from(
                keys::ENQUEUE_SEQUENCE_NUMBER
            ))),
            Some(&Value::Long(42)),
            "received messages carry their enqueued sequence number"
        );
        assert_eq!(
            ma.get(&OwnedKey::Symbol(Symbol::from(keys::LOCKED_UNTIL))),
            Some(&Value::Timestamp(Timestamp::from_milliseconds(
                1_700_000_060_123
            )))
        );
        let header = back.header.unwrap();
        assert!(header.durable);
        assert_eq!(header.ttl, Some(30_000));
        assert!(header.first_acquirer);
    }

    #[test]
    fn unusual_encodings_survive_untouched() {
        // properties as list32 with explicit nulls and a str32 message-id; application-properties as map32;
        // two data sections, one vbin32; a footer. Re-encoding with the codec would normalise all of it.
        let mut raw = vec![
            0x00, 0x53, 0x70, 0xc0, 0x06, 0x05, 0x41, 0x40, 0x40, 0x42, 0x43,
        ]; // header, explicit nulls
        raw.extend_from_slice(&[
            0x00, 0x53, 0x73, 0xd0, 0, 0, 0, 13, 0, 0, 0, 3, 0xb1, 0, 0, 0, 2, b'i', b'd', 0x40,
            0x40,
        ]);
        raw.extend_from_slice(&[
            0x00, 0x53, 0x74, 0xd1, 0, 0, 0, 16, 0, 0, 0, 2, 0xa1, 1, b'k', 0x81, 0, 0, 0, 0, 0, 0,
            0, 9,
        ]);
        let bare_start = 11;
        raw.extend_from_slice(&[0x00, 0x53, 0x75, 0xb0, 0, 0, 0, 2, b'h', b'i']);
        raw.extend_from_slice(&[0x00, 0x53, 0x75, 0xa0, 1, b'!']);
        let bare_end = raw.len();
        raw.extend_from_slice(&[0x00, 0x53, 0x78, 0xc1, 0x01, 0x00]);
        let raw = Bytes::from(raw);
        let m = StoredMessage::parse(raw.clone()).unwrap();
        assert_eq!(m.message_id().as_deref(), Some("id"));
        assert_eq!(m.bare(), raw.slice(bare_start..bare_end));
        let out = m.encode_for_delivery(2, false, &broker_annotations());
        assert!(
            out.ends_with(&raw[bare_start..]),
            "bare message and footer must be byte-identical"
        );
        let back = decode(&out);
        assert_eq!(back.header.unwrap().delivery_count, 2);

        // Symbolic and ulong descriptors are sections too.
        let mut sym = vec![0x00, 0xa3, 17];
        sym.extend_from_slice(b"amqp:amqp-value:*");
        sym.extend_from_slice(&[0xa1, 2, b'o', b'k']);
        let mut ulong = vec![0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x73, 0x45];
        ulong.extend_from_slice(&sym);
        let m = StoredMessage::parse(Bytes::from(ulong.clone())).unwrap();
        assert_eq!(m.bare(), Bytes::from(ulong));
    }

    #[test]
    fn delivery_count_zero_is_on_the_wire() {
        let m = StoredMessage::parse(encode(&sample())).unwrap();
        let out = m.encode_for_delivery(0, true, &broker_annotations());
        // durable=true, priority 4, ttl 30000, first-acquirer=true, delivery-count uint 0 — all five fields.
        assert_eq!(
            &out[..20],
            &[
                0x00, 0x53, 0x70, 0xc0, 0x0f, 0x05, 0x41, 0x50, 0x04, 0x70, 0, 0, 0x75, 0x30, 0x41,
                0x70, 0, 0, 0, 0
            ]
        );
        let redelivered = m.encode_for_delivery(3, false, &broker_annotations());
        assert_eq!(decode(&redelivered).header.unwrap().delivery_count, 3);
    }

    #[test]
    fn truncations_are_errors_not_panics() {
        let raw = encode(&sample());
        for n in 0..raw.len() {
            assert!(
                StoredMessage::parse(raw.slice(..n)).is_err(),
                "prefix of {n} bytes parsed"
            );
        }
        for garbage in [
            &[0x01u8][..],
            &[0x00, 0x53, 0x99, 0x40],
            &[0x00, 0x53, 0x73, 0x1f],
            &[0x00, 0x53, 0x75, 0xb0, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(
                StoredMessage::parse(Bytes::copy_from_slice(garbage)).is_err(),
                "{garbage:02x?}"
            );
        }
        // Out of order: properties after the body.
        let mut raw = vec![0x00, 0x53, 0x77, 0x40];
        raw.extend_from_slice(&[0x00, 0x53, 0x73, 0x45]);
        assert!(StoredMessage::parse(Bytes::from(raw)).is_err());
    }

    #[test]
    fn batches_split_into_messages() {
        let one = encode(&sample());
        let mut second = sample();
        second.properties.as_mut().unwrap().message_id = Some(MessageId::String("id-2".into()));
        let two = encode(&second);
        let envelope: Message<Body<Value>> = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(MessageId::String("id-1".into()))
                    .build(),
            )
            .body(Body::Data(
                vec![
                    Data(Binary::from(one.to_vec())),
                    Data(Binary::from(two.to_vec())),
                ]
                .into(),
            ))
            .build();
        let parts = StoredMessage::split_batch(encode(&envelope)).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].raw(), &one);
        assert_eq!(parts[1].message_id().as_deref(), Some("id-2"));
        let not_batch: Message<Body<Value>> = Message::builder()
            .body(Body::Value(AmqpValue(Value::Int(1))))
            .build();
        assert!(StoredMessage::split_batch(encode(&not_batch)).is_err());
    }

    /// The sections of `raw` as byte slices, in order.
    fn sections_of(raw: &[u8]) -> Vec<(u64, Vec<u8>)> {
        scan_sections(raw)
            .unwrap()
            .into_iter()
            .map(|s| (s.code, raw[s.range].to_vec()))
            .collect()
    }

    /// `00 53 71 c1 03 02 a3 01 78 40`: delivery-annotations {x: null}.
    const DELIVERY_ANNOTATIONS: &[u8] =
        &[0x00, 0x53, 0x71, 0xc1, 0x05, 0x02, 0xa3, 0x01, 0x78, 0x40];
    /// `00 53 78 c1 01 00`: an empty footer.
    const FOOTER: &[u8] = &[0x00, 0x53, 0x78, 0xc1, 0x01, 0x00];

    #[test]
    fn sections_around_the_bare_message_may_stand_anywhere_once() {
        let canonical = encode(&sample());
        let sections = sections_of(&canonical);
        let outer: Vec<Vec<u8>> = sections
            .iter()
            .filter(|(c, _)| matches!(*c, code::HEADER | code::MESSAGE_ANNOTATIONS))
            .map(|(_, b)| b.clone())
            .chain([DELIVERY_ANNOTATIONS.to_vec(), FOOTER.to_vec()])
            .collect();
        let bare: Vec<u8> = sections
            .iter()
            .filter(|(c, _)| !matches!(*c, code::HEADER | code::MESSAGE_ANNOTATIONS))
            .flat_map(|(_, b)| b.clone())
            .collect();
        let expected = StoredMessage::parse(canonical.clone())
            .unwrap()
            .encode_for_delivery(0, true, &broker_annotations());
        // Every position of the outer sections around the bare message: before it, after it, split.
        for mask in 0u32..(1 << outer.len()) {
            let mut raw = Vec::new();
            for (i, section) in outer.iter().enumerate() {
                if mask & (1 << i) == 0 {
                    raw.extend_from_slice(section);
                }
            }
            raw.extend_from_slice(&bare);
            for (i, section) in outer.iter().enumerate().rev() {
                if mask & (1 << i) != 0 {
                    raw.extend_from_slice(section);
                }
            }
            let m = StoredMessage::parse(Bytes::from(raw.clone()))
                .unwrap_or_else(|e| panic!("mask {mask:b}: {e}"));
            let mut out = m
                .encode_for_delivery(0, true, &broker_annotations())
                .to_vec();
            // The footer given here is delivered after the bare message, as the spec orders it.
            assert!(out.ends_with(FOOTER), "mask {mask:b}");
            out.truncate(out.len() - FOOTER.len());
            assert_eq!(
                out,
                expected.to_vec(),
                "mask {mask:b}: delivered in spec order"
            );
        }
        // The Python SDK's layout exactly: header, message-annotations, properties, body, then
        // delivery-annotations.
        let mut python = canonical.to_vec();
        python.extend_from_slice(DELIVERY_ANNOTATIONS);
        assert!(StoredMessage::parse(Bytes::from(python)).is_ok());
    }

    #[test]
    fn repeated_sections_and_a_split_body_are_still_refused() {
        let canonical = encode(&sample());
        let mut twice = canonical.to_vec();
        twice.extend_from_slice(DELIVERY_ANNOTATIONS);
        twice.extend_from_slice(DELIVERY_ANNOTATIONS);
        let error = StoredMessage::parse(Bytes::from(twice))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("0x71") && error.contains("repeated"),
            "{error}"
        );

        // data, delivery-annotations, data: the body is kept as one range, so it must be in one piece.
        let data = serde_amqp::to_vec(&Data(Binary::from(b"more".to_vec()))).unwrap();
        let mut split = canonical.to_vec();
        split.extend_from_slice(DELIVERY_ANNOTATIONS);
        split.extend_from_slice(&data);
        let error = StoredMessage::parse(Bytes::from(split))
            .unwrap_err()
            .to_string();
        assert!(error.contains("must follow each other"), "{error}");

        // The bare message keeps its order: application-properties after the body is refused.
        let sections = sections_of(&canonical);
        let mut reordered = Vec::new();
        for (c, b) in &sections {
            if *c != code::APPLICATION_PROPERTIES {
                reordered.extend_from_slice(b);
            }
        }
        let app = sections
            .iter()
            .find(|(c, _)| *c == code::APPLICATION_PROPERTIES)
            .unwrap();
        reordered.extend_from_slice(&app.1);
        let error = StoredMessage::parse(Bytes::from(reordered))
            .unwrap_err()
            .to_string();
        assert!(error.contains("out of order"), "{error}");
    }

    #[test]
    fn dead_letter_properties_touch_only_that_section() {
        let m = StoredMessage::parse(encode(&sample())).unwrap();
        let dl = m
            .with_application_properties([
                (
                    keys::DEAD_LETTER_REASON.to_string(),
                    SimpleValue::String("why".into()),
                ),
                (
                    keys::DEAD_LETTER_DESCRIPTION.to_string(),
                    SimpleValue::String("because".into()),
                ),
            ])
            .unwrap();
        let props = dl.application_properties().unwrap();
        assert_eq!(props.get("k"), Some(&SimpleValue::Int(5)));
        assert_eq!(
            props.get(keys::DEAD_LETTER_REASON),
            Some(&SimpleValue::String("why".into()))
        );
        // The properties section and the body bytes are unchanged.
        let p = m.properties.unwrap().range();
        assert!(contains(dl.raw(), &m.raw()[p]));
        assert!(dl.raw().ends_with(&m.raw()[m.body.range()]));
        assert_eq!(
            dl.annotation("x-opt-partition-key"),
            Some(&Value::String("p".into()))
        );
        // A message without application-properties gets one.
        let bare: Message<Body<Value>> = Message::builder()
            .body(Body::Value(AmqpValue(Value::Int(1))))
            .build();
        let m = StoredMessage::parse(encode(&bare)).unwrap();
        let dl = m
            .with_application_properties([("a".to_string(), SimpleValue::Bool(true))])
            .unwrap();
        assert_eq!(dl.application_properties().unwrap().len(), 1);
        assert!(dl.raw().ends_with(&m.raw()[m.body.range()]));
    }

    #[test]
    fn annotations_merge_and_scheduled_time() {
        let at = Timestamp::from_milliseconds(1_800_000_000_000);
        let msg: Message<Body<Value>> = Message::builder()
            .message_annotations(
                MessageAnnotations::builder()
                    .insert(
                        OwnedKey::Symbol(Symbol::from(keys::SCHEDULED_ENQUEUE_TIME)),
                        Value::Timestamp(at.clone()),
                    )
                    .build(),
            )
            .body(Body::Value(AmqpValue(Value::Int(1))))
            .build();
        let mut m = StoredMessage::parse(encode(&msg)).unwrap();
        assert_eq!(
            m.scheduled_enqueue_time(),
            Some(timestamp_to_system_time(&at))
        );
        m.merge_annotations([("custom".to_string(), Value::Int(9))]);
        let back = decode(&m.encode_for_delivery(1, false, &broker_annotations()));
        assert_eq!(
            back.message_annotations
                .unwrap()
                .0
                .get(&OwnedKey::Symbol(Symbol::from("custom"))),
            Some(&Value::Int(9))
        );
    }

    fn hex(s: &str) -> Bytes {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Bytes the Python SDK (azure-servicebus 7.15, pyamqp's `encode_payload`) produces for
    /// `ServiceBusMessage(b"hello", application_properties={"k": 5, "s": "v", "f": 1.5, "b": True},
    /// message_id="mid-1", subject="greeting", correlation_id="corr", content_type="text/plain",
    /// time_to_live=30 s, scheduled_enqueue_time_utc=2030-01-01, partition_key="pk")`.
    /// Its header writes explicit nulls, which the codec would drop on re-encoding.
    const PYTHON_MESSAGE: &str = "005370c00a05404070000075304040005372c14104a31c782d6f70742d7363686564756c\
        65642d656e71756575652d74696d6583000001b8dac5b400a313782d6f70742d706172746974696f6e2d6b6579a102706b\
        005373c03d0da1056d69642d314040a1086772656574696e6740a104636f7272a30a746578742f706c61696e40830000\
        01a212ef726083000001a212eefd30404040005374c11d08a1016b5405a10173a10176a10166823ff80000000000\
        00a101625601005375a00568656c6c6f";

    /// The SDK's batch envelope for two messages (ids "a" and "b"): every properties field written out
    /// as an explicit null, inner messages in `data` sections.
    const PYTHON_BATCH: &str = "005373c0100da10161404040404040404040404040005375a01d005373c0100da1016140\
        4040404040404040404040005375a0036f6e65005375a01d005373c0100da10162404040404040404040404040005375\
        a00374776f";

    #[test]
    fn python_sdk_message_round_trips_byte_exact() {
        let raw = hex(&PYTHON_MESSAGE.split_whitespace().collect::<String>());
        let m = StoredMessage::parse(raw.clone()).unwrap();
        assert_eq!(m.message_id().as_deref(), Some("mid-1"));
        assert_eq!(m.ttl(), Some(Duration::from_secs(30)));
        assert_eq!(
            m.scheduled_enqueue_time(),
            Some(UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );
        let bare_start = raw
            .windows(3)
            .position(|w| w == [0x00, 0x53, 0x73])
            .unwrap();
        assert_eq!(m.bare(), raw.slice(bare_start..));
        let out = m.encode_for_delivery(0, true, &broker_annotations());
        assert!(
            out.ends_with(&raw[bare_start..]),
            "the SDK's bare message must come back unchanged"
        );
        let back = decode(&out);
        let header = back.header.unwrap();
        assert_eq!((header.ttl, header.delivery_count), (Some(30_000), 0));
        let ma = back.message_annotations.unwrap().0;
        assert_eq!(
            ma.get(&OwnedKey::Symbol(Symbol::from("x-opt-partition-key"))),
            Some(&Value::String("pk".into()))
        );
        let props = m.application_properties().unwrap();
        assert_eq!(props.get("b"), Some(&SimpleValue::Bool(true)));
        assert_eq!(props.get("f"), Some(&SimpleValue::Double(1.5.into())));
    }

    #[test]
    fn python_sdk_batch_splits_into_its_messages() {
        let raw = hex(&PYTHON_BATCH.split_whitespace().collect::<String>());
        let parts = StoredMessage::split_batch(raw).unwrap();
        let ids: Vec<_> = parts.iter().map(|m| m.message_id().unwrap()).collect();
        assert_eq!(ids, ["a", "b"]);
        let out = parts[1].encode_for_delivery(0, true, &broker_annotations());
        assert!(
            out.ends_with(parts[1].raw()),
            "an inner message with no header is all bare message"
        );
    }

    #[test]
    fn properties_the_codec_rejects_are_kept_as_sent() {
        // properties: message-id "x", five nulls, then content-type as a *string* (the spec says symbol).
        let mut raw = vec![0x00, 0x53, 0x73, 0xc0, 0x0f, 0x07, 0xa1, 0x01, b'x'];
        raw.extend_from_slice(&[0x40; 5]);
        raw.extend_from_slice(&[0xa1, 0x04, b't', b'e', b'x', b't']);
        raw.extend_from_slice(&[0x00, 0x53, 0x77, 0x40]);
        let raw = Bytes::from(raw);
        assert!(
            serde_amqp::from_slice::<Properties>(&raw[..17]).is_err(),
            "the codec refuses it"
        );
        let m = StoredMessage::parse(raw.clone()).unwrap();
        assert_eq!(m.bare(), raw);
        assert_eq!(
            m.message_id(),
            None,
            "fields of properties it could not read are absent"
        );
        // Not a list at all is malformed.
        let not_list =
            Bytes::from_static(&[0x00, 0x53, 0x73, 0xa1, 0x01, b'x', 0x00, 0x53, 0x77, 0x40]);
        let e = StoredMessage::parse(not_list).unwrap_err().to_string();
        assert!(e.contains("properties at byte 0 is not a list"), "{e}");
    }

    #[test]
    fn message_ids_display() {
        let id = uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(
            display_message_id(&MessageId::Uuid(id.into())),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert_eq!(display_message_id(&MessageId::Ulong(12)), "12");
        assert_eq!(
            display_message_id(&MessageId::Binary(Binary::from(vec![0xab, 1]))),
            "ab01"
        );
    }
}
