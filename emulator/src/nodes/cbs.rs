//! `$cbs` put-token: validate a SAS token and grant the connection access to what its audience covers.

use std::time::SystemTime;

use fe2o3_amqp_types::primitives::Value;

use super::{Reply, Request};
use crate::auth::{SasClaims, SasValidator};

/// The result of one put-token request.
#[derive(Debug)]
pub struct PutToken {
    pub reply: Reply,
    /// What the connection may now access; `None` when the token was refused.
    pub granted: Option<SasClaims>,
}

/// Handle a request on `$cbs`. Replies carry `status-code` / `status-description` (kebab-case on this node).
pub fn handle(validator: &SasValidator, request: &Request, now: SystemTime) -> PutToken {
    let operation = request.property_str("operation").unwrap_or_default();
    if operation != "put-token" {
        return PutToken {
            reply: Reply::error(
                400,
                "amqp:not-implemented",
                format!("unsupported $cbs operation '{operation}'; only put-token is implemented"),
            ),
            granted: None,
        };
    }
    let token = match request.body_value() {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => {
            return PutToken {
                reply: Reply::error(
                    400,
                    "amqp:decode-error",
                    "put-token needs the SAS token as an amqp-value string body",
                ),
                granted: None,
            };
        }
    };
    match validator.validate(&token, now) {
        Ok(claims) => PutToken {
            reply: Reply {
                status_code: 202,
                status_description: "Accepted".into(),
                properties: Vec::new(),
                body: Box::new(Value::Null),
            },
            granted: Some(claims),
        },
        Err(e) => PutToken {
            reply: Reply::error(
                401,
                "amqp:unauthorized-access",
                format!(
                    "{e}; use the namespace's SharedAccessKeyName and SharedAccessKey (emulator: RootManageSharedAccessKey / SAS_KEY_VALUE)"
                ),
            ),
            granted: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fe2o3_amqp_types::messaging::{
        ApplicationProperties, Body, Message, MessageId, Properties,
    };
    use fe2o3_amqp_types::primitives::SimpleValue;

    use super::*;
    use crate::auth::make_token;

    fn put_token(token: &str) -> Request {
        let message = Message::builder()
            .properties(Properties {
                message_id: Some(MessageId::Ulong(1)),
                ..Default::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", SimpleValue::String("put-token".into()))
                    .insert("type", SimpleValue::String("jwt".into()))
                    .insert("name", SimpleValue::String("sb://localhost/q".into()))
                    .build(),
            )
            .body(Body::Value(fe2o3_amqp_types::messaging::AmqpValue(
                Value::String(token.into()),
            )))
            .build();
        Request { message }
    }

    #[test]
    fn valid_tokens_get_202_and_claims_others_401() {
        let validator = SasValidator::emulator_default();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let good = make_token(
            "sb://localhost/q",
            "RootManageSharedAccessKey",
            "SAS_KEY_VALUE",
            now + hour,
        );
        let put = handle(&validator, &put_token(&good), now);
        assert_eq!(put.reply.status_code, 202);
        assert!(put.granted.unwrap().covers("q/$management"));

        let wrong_key = make_token(
            "sb://localhost/q",
            "RootManageSharedAccessKey",
            "nope",
            now + hour,
        );
        let wrong_rule = make_token("sb://localhost/q", "Other", "SAS_KEY_VALUE", now + hour);
        let expired = make_token(
            "sb://localhost/q",
            "RootManageSharedAccessKey",
            "SAS_KEY_VALUE",
            now - hour,
        );
        for token in [wrong_key, wrong_rule, expired, "garbage".to_string()] {
            let put = handle(&validator, &put_token(&token), now);
            assert_eq!(put.reply.status_code, 401, "{token}");
            assert!(put.granted.is_none());
        }
    }
}
