//! Correlation filters: every field that is set must equal the message's value (logical AND).

use std::fmt;

use super::{FilterValue, MessageView, SysProperty};

/// System properties plus user properties that must all match. Unset fields do not matter. String
/// comparison is ordinal (case-sensitive), as Service Bus documents; user-property names are looked up
/// case-insensitively, like SQL filter names.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CorrelationFilter {
    pub correlation_id: Option<String>,
    pub message_id: Option<String>,
    pub to: Option<String>,
    pub reply_to: Option<String>,
    /// `Label` in the wire and Config.json names; `Subject` in the current SDKs.
    pub label: Option<String>,
    pub session_id: Option<String>,
    pub reply_to_session_id: Option<String>,
    pub content_type: Option<String>,
    /// User (application) properties.
    pub properties: Vec<(String, FilterValue)>,
}

impl CorrelationFilter {
    /// The system-property fields with the property each one compares.
    pub fn system_fields(&self) -> [(SysProperty, &Option<String>); 8] {
        [
            (SysProperty::CorrelationId, &self.correlation_id),
            (SysProperty::MessageId, &self.message_id),
            (SysProperty::To, &self.to),
            (SysProperty::ReplyTo, &self.reply_to),
            (SysProperty::Label, &self.label),
            (SysProperty::SessionId, &self.session_id),
            (SysProperty::ReplyToSessionId, &self.reply_to_session_id),
            (SysProperty::ContentType, &self.content_type),
        ]
    }

    /// Whether no field is set. Such a filter matches every message (.NET and Java send all-null maps
    /// for a filter built without fields; refusing them would break those clients).
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty() && self.system_fields().iter().all(|(_, v)| v.is_none())
    }

    pub fn matches(&self, message: &MessageView) -> bool {
        let system = self
            .system_fields()
            .into_iter()
            .all(|(p, want)| match want {
                None => true,
                Some(want) => matches!(message.sys(p), FilterValue::String(have) if have == want),
            });
        system
            && self.properties.iter().all(|(name, want)| {
                message
                    .user(name)
                    .is_some_and(|have| values_equal(have, want))
            })
    }
}

/// Equality by value after widening numbers; no string↔number coercion; null equals nothing.
fn values_equal(a: &FilterValue, b: &FilterValue) -> bool {
    use FilterValue as V;
    match (a, b) {
        (V::Long(x), V::Double(y)) | (V::Double(y), V::Long(x)) => (*x as f64) == *y,
        (V::Null, _) | (_, V::Null) | (V::Opaque, _) | (_, V::Opaque) => false,
        _ => a == b,
    }
}

impl fmt::Display for CorrelationFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .system_fields()
            .into_iter()
            .filter_map(|(p, v)| v.as_ref().map(|v| format!("sys.{}='{v}'", p.name())))
            .collect();
        parts.extend(self.properties.iter().map(|(k, v)| format!("{k}={v:?}")));
        write!(f, "{{{}}}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_set_field_must_match() {
        let m = MessageView::new()
            .with_sys(
                SysProperty::ContentType,
                FilterValue::String("application/json".into()),
            )
            .with_sys(SysProperty::Label, FilterValue::String("Orders".into()))
            .with_user("Prop1", FilterValue::String("value1".into()))
            .with_user("n", FilterValue::Long(5));
        let f = |c: CorrelationFilter| c.matches(&m);
        assert!(f(CorrelationFilter::default()));
        assert!(f(CorrelationFilter {
            content_type: Some("application/json".into()),
            ..Default::default()
        }));
        assert!(!f(CorrelationFilter {
            content_type: Some("Application/JSON".into()),
            ..Default::default()
        }));
        assert!(f(CorrelationFilter {
            label: Some("Orders".into()),
            properties: vec![("prop1".into(), FilterValue::String("value1".into()))],
            ..Default::default()
        }));
        assert!(!f(CorrelationFilter {
            label: Some("Orders".into()),
            to: Some("x".into()),
            ..Default::default()
        }));
        assert!(f(CorrelationFilter {
            properties: vec![("N".into(), FilterValue::Double(5.0))],
            ..Default::default()
        }));
        assert!(!f(CorrelationFilter {
            properties: vec![("n".into(), FilterValue::String("5".into()))],
            ..Default::default()
        }));
        assert!(!f(CorrelationFilter {
            properties: vec![("missing".into(), FilterValue::String("x".into()))],
            ..Default::default()
        }));
    }
}
