//! The values filters compare: AMQP property values narrowed to what the SQL language knows.

use std::fmt;

use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use uuid::Uuid;

/// A property value as filters see it. Integers of every width widen to `Long`, floats to `Double`,
/// strings and symbols to `String` (Service Bus follows C# conversions: no string↔number coercion).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FilterValue {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    String(String),
    /// Milliseconds since the Unix epoch (AMQP timestamp, .NET DateTime).
    Timestamp(i64),
    Uuid(Uuid),
    /// A value of a type filters cannot compare (binary, lists, maps, ...): present, never equal.
    Opaque,
}

impl FilterValue {
    /// Narrow an application-property value.
    pub fn from_simple(v: &SimpleValue) -> FilterValue {
        use SimpleValue as S;
        match v {
            S::Null => FilterValue::Null,
            S::Bool(b) => FilterValue::Bool(*b),
            S::Ubyte(n) => FilterValue::Long(i64::from(*n)),
            S::Ushort(n) => FilterValue::Long(i64::from(*n)),
            S::Uint(n) => FilterValue::Long(i64::from(*n)),
            S::Ulong(n) => {
                i64::try_from(*n).map_or(FilterValue::Double(*n as f64), FilterValue::Long)
            }
            S::Byte(n) => FilterValue::Long(i64::from(*n)),
            S::Short(n) => FilterValue::Long(i64::from(*n)),
            S::Int(n) => FilterValue::Long(i64::from(*n)),
            S::Long(n) => FilterValue::Long(*n),
            S::Float(f) => FilterValue::Double(f64::from(f.into_inner())),
            S::Double(f) => FilterValue::Double(f.into_inner()),
            S::Char(c) => FilterValue::String(c.to_string()),
            S::Timestamp(t) => FilterValue::Timestamp(t.milliseconds()),
            S::Uuid(u) => FilterValue::Uuid(Uuid::from_bytes(*u.as_inner())),
            S::String(s) => FilterValue::String(s.clone()),
            S::Symbol(s) => FilterValue::String(s.0.clone()),
            _ => FilterValue::Opaque,
        }
    }

    /// Narrow any AMQP value (management request maps carry full `Value`s).
    pub fn from_value(v: &Value) -> FilterValue {
        match SimpleValue::try_from(v.clone()) {
            Ok(s) => FilterValue::from_simple(&s),
            Err(_) => FilterValue::Opaque,
        }
    }

    /// The AMQP application-property value a `SET` action stores.
    pub fn to_simple(&self) -> SimpleValue {
        match self {
            FilterValue::Null | FilterValue::Opaque => SimpleValue::Null,
            FilterValue::Bool(b) => SimpleValue::Bool(*b),
            FilterValue::Long(n) => SimpleValue::Long(*n),
            FilterValue::Double(f) => SimpleValue::Double((*f).into()),
            FilterValue::String(s) => SimpleValue::String(s.clone()),
            FilterValue::Timestamp(ms) => SimpleValue::Timestamp(
                fe2o3_amqp_types::primitives::Timestamp::from_milliseconds(*ms),
            ),
            FilterValue::Uuid(u) => SimpleValue::Uuid((*u).into()),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, FilterValue::Null)
    }
}

impl fmt::Display for FilterValue {
    /// The string form used by `+` concatenation and by string-typed system properties.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterValue::Null => Ok(()),
            FilterValue::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            FilterValue::Long(n) => write!(f, "{n}"),
            FilterValue::Double(d) => write!(f, "{d}"),
            FilterValue::String(s) => f.write_str(s),
            FilterValue::Timestamp(ms) => write!(f, "{ms}"),
            FilterValue::Uuid(u) => write!(f, "{u}"),
            FilterValue::Opaque => f.write_str("?"),
        }
    }
}
