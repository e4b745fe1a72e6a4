//! SASL on the server: offer `MSSBCBS`, `ANONYMOUS` and `PLAIN`, read the client's choice.
//!
//! `MSSBCBS` is what the .NET SDK insists on; it means "anonymous now, authorise through `$cbs`", so it
//! is treated exactly like `ANONYMOUS`. `PLAIN` carries a SAS rule name and key; the server checks them.

use bytes::BytesMut;
use fe2o3_amqp_types::primitives::{Array, Symbol};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};

use super::codec::{self, TYPE_SASL};

/// The mechanisms we offer, in preference order.
pub const MECHANISMS: [&str; 3] = ["MSSBCBS", "ANONYMOUS", "PLAIN"];

/// What the client presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslCredentials {
    Anonymous,
    Plain { username: String, password: String },
}

/// Why SASL failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SaslError {
    #[error("could not decode sasl-init: {0}")]
    Decode(String),
    #[error("unsupported SASL mechanism '{0}'; use one of MSSBCBS, ANONYMOUS or PLAIN")]
    Mechanism(String),
    #[error("malformed PLAIN response: expected authzid NUL authcid NUL password")]
    PlainFormat,
}

/// Append the sasl-mechanisms frame.
pub fn write_mechanisms(out: &mut BytesMut) {
    let m = SaslMechanisms {
        sasl_server_mechanisms: Array(MECHANISMS.iter().map(|m| Symbol::from(*m)).collect()),
    };
    // Encoding a fixed, valid value cannot fail.
    let _ = codec::write_performative(out, TYPE_SASL, 0, &m, &[]);
}

/// Append a sasl-outcome frame.
pub fn write_outcome(out: &mut BytesMut, code: SaslCode) {
    let o = SaslOutcome {
        code,
        additional_data: None,
    };
    let _ = codec::write_performative(out, TYPE_SASL, 0, &o, &[]);
}

/// Parse a sasl-init frame body.
pub fn parse_init(body: &[u8]) -> Result<SaslCredentials, SaslError> {
    let init: SaslInit =
        serde_amqp::from_slice(body).map_err(|e| SaslError::Decode(e.to_string()))?;
    match init.mechanism.0.as_str() {
        "ANONYMOUS" | "MSSBCBS" => Ok(SaslCredentials::Anonymous),
        "PLAIN" => {
            let response = init
                .initial_response
                .map(|b| b.into_vec())
                .unwrap_or_default();
            let mut parts = response.split(|b| *b == 0);
            let (_authzid, authcid, password) =
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(c), Some(p), None) => (a, c, p),
                    _ => return Err(SaslError::PlainFormat),
                };
            Ok(SaslCredentials::Plain {
                username: String::from_utf8_lossy(authcid).into_owned(),
                password: String::from_utf8_lossy(password).into_owned(),
            })
        }
        other => Err(SaslError::Mechanism(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::primitives::Binary;

    fn init(mechanism: &str, response: Option<&[u8]>) -> Vec<u8> {
        serde_amqp::to_vec(&SaslInit {
            mechanism: Symbol::from(mechanism),
            initial_response: response.map(|r| Binary::from(r.to_vec())),
            hostname: Some("localhost".into()),
        })
        .unwrap()
    }

    #[test]
    fn mechanisms_list_offers_mssbcbs_first() {
        let mut out = BytesMut::new();
        write_mechanisms(&mut out);
        let body = &out[8..];
        let m: SaslMechanisms = serde_amqp::from_slice(body).unwrap();
        let names: Vec<String> = m
            .sasl_server_mechanisms
            .0
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(names, ["MSSBCBS", "ANONYMOUS", "PLAIN"]);
        assert_eq!(out[5], TYPE_SASL);
    }

    #[test]
    fn parses_each_mechanism() {
        assert_eq!(
            parse_init(&init("ANONYMOUS", None)).unwrap(),
            SaslCredentials::Anonymous
        );
        assert_eq!(
            parse_init(&init("MSSBCBS", Some(b""))).unwrap(),
            SaslCredentials::Anonymous
        );
        assert_eq!(
            parse_init(&init("PLAIN", Some(b"\0rule\0key"))).unwrap(),
            SaslCredentials::Plain {
                username: "rule".into(),
                password: "key".into()
            }
        );
        assert_eq!(
            parse_init(&init("PLAIN", Some(b"rule"))),
            Err(SaslError::PlainFormat)
        );
        assert_eq!(
            parse_init(&init("GSSAPI", None)),
            Err(SaslError::Mechanism("GSSAPI".into()))
        );
    }
}
