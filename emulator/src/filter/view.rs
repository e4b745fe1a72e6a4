//! A message as filters see it: its system properties by [`SysProperty`] and its user properties by
//! case-insensitive name.

use std::time::SystemTime;

use fe2o3_amqp_types::messaging::{MessageId, Properties};

use super::FilterValue;
use crate::message::{StoredMessage, system_time_to_timestamp};

macro_rules! sys_properties {
    ($($variant:ident => $name:literal $(| $alias:literal)*, settable: $settable:literal;)*) => {
        /// The `sys.` properties a filter may name (Service Bus's BrokeredMessage names).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SysProperty {
            $($variant,)*
        }

        impl SysProperty {
            /// Every system property, in declaration order.
            pub const ALL: &'static [SysProperty] = &[$(SysProperty::$variant,)*];

            /// The canonical name, as printed after `sys.`.
            pub fn name(self) -> &'static str {
                match self {
                    $(SysProperty::$variant => $name,)*
                }
            }

            /// Look a name up case-insensitively (`sys.label`, `sys.Subject` and `sys.Label` are one).
            pub fn parse(name: &str) -> Option<SysProperty> {
                $(
                    if name.eq_ignore_ascii_case($name) $(|| name.eq_ignore_ascii_case($alias))* {
                        return Some(SysProperty::$variant);
                    }
                )*
                None
            }

            /// Whether a rule action may `SET` it (the broker-owned ones are read-only).
            pub fn settable(self) -> bool {
                match self {
                    $(SysProperty::$variant => $settable,)*
                }
            }
        }
    };
}

sys_properties! {
    MessageId => "MessageId", settable: true;
    CorrelationId => "CorrelationId", settable: true;
    Label => "Label" | "Subject", settable: true;
    To => "To", settable: true;
    ReplyTo => "ReplyTo", settable: true;
    ReplyToSessionId => "ReplyToSessionId", settable: true;
    SessionId => "SessionId", settable: true;
    ContentType => "ContentType", settable: true;
    ScheduledEnqueueTimeUtc => "ScheduledEnqueueTimeUtc", settable: true;
    PartitionKey => "PartitionKey", settable: true;
    ViaPartitionKey => "ViaPartitionKey", settable: true;
    EnqueuedTimeUtc => "EnqueuedTimeUtc", settable: false;
    SequenceNumber => "SequenceNumber", settable: false;
    EnqueuedSequenceNumber => "EnqueuedSequenceNumber", settable: false;
    DeliveryCount => "DeliveryCount", settable: false;
    Size => "Size", settable: false;
    TimeToLive => "TimeToLive", settable: true;
    ExpiresAtUtc => "ExpiresAtUtc", settable: false;
    LockToken => "LockToken", settable: false;
    LockedUntilUtc => "LockedUntilUtc", settable: false;
    DeadLetterSource => "DeadLetterSource", settable: false;
    State => "State", settable: false;
}

const SYS_COUNT: usize = SysProperty::ALL.len();

/// One message's properties, decoded once for every subscription of the topic.
#[derive(Debug, Clone)]
pub struct MessageView {
    sys: [FilterValue; SYS_COUNT],
    /// Lower-cased name → value, in the message's order (names are case-insensitive in filters).
    user: Vec<(String, FilterValue)>,
}

impl Default for MessageView {
    fn default() -> Self {
        MessageView {
            sys: std::array::from_fn(|_| FilterValue::Null),
            user: Vec::new(),
        }
    }
}

fn message_id_value(id: &MessageId) -> FilterValue {
    FilterValue::String(match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    })
}

fn string(s: &Option<String>) -> FilterValue {
    s.clone().map_or(FilterValue::Null, FilterValue::String)
}

impl MessageView {
    /// An empty view (every property missing); build on it with [`MessageView::with_sys`] and
    /// [`MessageView::with_user`].
    pub fn new() -> MessageView {
        MessageView::default()
    }

    /// The view of a stored message as a topic accepts it, with the topic's sequence number and time.
    pub fn of_message(
        message: &StoredMessage,
        sequence_number: i64,
        enqueued_at: SystemTime,
    ) -> MessageView {
        let mut view = MessageView::new();
        if let Some(p) = message.properties() {
            view.set_properties(&p);
        }
        if let Ok(props) = message.application_properties() {
            for (k, v) in props.iter() {
                view.set_user(k, FilterValue::from_simple(v));
            }
        }
        let enqueued_ms = system_time_to_timestamp(enqueued_at).milliseconds();
        view.set_sys(
            SysProperty::SequenceNumber,
            FilterValue::Long(sequence_number),
        );
        view.set_sys(
            SysProperty::EnqueuedTimeUtc,
            FilterValue::Timestamp(enqueued_ms),
        );
        view.set_sys(SysProperty::DeliveryCount, FilterValue::Long(0));
        view.set_sys(SysProperty::Size, FilterValue::Long(message.len() as i64));
        if let Some(ttl) = message.ttl() {
            view.set_sys(
                SysProperty::TimeToLive,
                FilterValue::Long(ttl.as_millis() as i64),
            );
        }
        if let Some(at) = message.scheduled_enqueue_time() {
            let ms = system_time_to_timestamp(at).milliseconds();
            view.set_sys(
                SysProperty::ScheduledEnqueueTimeUtc,
                FilterValue::Timestamp(ms),
            );
        }
        for (key, prop) in [
            ("x-opt-partition-key", SysProperty::PartitionKey),
            ("x-opt-via-partition-key", SysProperty::ViaPartitionKey),
        ] {
            if let Some(v) = message.annotation(key) {
                view.set_sys(prop, FilterValue::from_value(v));
            }
        }
        view
    }

    fn set_properties(&mut self, p: &Properties) {
        use SysProperty as S;
        if let Some(id) = &p.message_id {
            self.set_sys(S::MessageId, message_id_value(id));
        }
        if let Some(id) = &p.correlation_id {
            self.set_sys(S::CorrelationId, message_id_value(id));
        }
        self.set_sys(S::Label, string(&p.subject));
        self.set_sys(S::To, string(&p.to.as_ref().map(|a| a.to_string())));
        self.set_sys(
            S::ReplyTo,
            string(&p.reply_to.as_ref().map(|a| a.to_string())),
        );
        self.set_sys(S::ReplyToSessionId, string(&p.reply_to_group_id));
        self.set_sys(S::SessionId, string(&p.group_id));
        self.set_sys(
            S::ContentType,
            string(&p.content_type.as_ref().map(|c| c.0.clone())),
        );
        if let Some(t) = &p.absolute_expiry_time {
            self.set_sys(S::ExpiresAtUtc, FilterValue::Timestamp(t.milliseconds()));
        }
    }

    /// Builder form of [`MessageView::set_sys`].
    pub fn with_sys(mut self, property: SysProperty, value: FilterValue) -> MessageView {
        self.set_sys(property, value);
        self
    }

    /// Builder form of [`MessageView::set_user`].
    pub fn with_user(mut self, name: &str, value: FilterValue) -> MessageView {
        self.set_user(name, value);
        self
    }

    pub fn set_sys(&mut self, property: SysProperty, value: FilterValue) {
        self.sys[property as usize] = value;
    }

    /// Set a user property (replacing one whose name differs only by case).
    pub fn set_user(&mut self, name: &str, value: FilterValue) {
        let key = name.to_lowercase();
        match self.user.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.user.push((key, value)),
        }
    }

    pub fn remove_user(&mut self, name: &str) {
        let key = name.to_lowercase();
        self.user.retain(|(k, _)| *k != key);
    }

    /// A system property; `Null` when the message does not carry it.
    pub fn sys(&self, property: SysProperty) -> &FilterValue {
        &self.sys[property as usize]
    }

    /// A user property by its lower-cased name; `None` when absent (a present null is `Some(Null)`).
    pub fn user_lower(&self, lower_name: &str) -> Option<&FilterValue> {
        self.user
            .iter()
            .find(|(k, _)| k == lower_name)
            .map(|(_, v)| v)
    }

    /// A user property by name, case-insensitively.
    pub fn user(&self, name: &str) -> Option<&FilterValue> {
        self.user_lower(&name.to_lowercase())
    }
}
