//! `$cbs` put-token: validate the token and grant the connection access to what it covers.
//!
//! The token's form decides how it is checked (the `type` property is advisory: clients send `jwt`
//! or `servicebus.windows.net:sastoken`): a `SharedAccessSignature …` token is a SAS token, checked
//! against the rules' keys; anything else is taken as an Entra ID JWT, checked for form, expiry and
//! audience only ([`crate::auth::jwt`]: an emulator cannot verify Entra's signature, and says so in
//! its log the first time it accepts one).

use std::time::SystemTime;

use fe2o3_amqp_types::primitives::Value;

use super::{Reply, Request};
use crate::auth::{SasValidator, TokenError, TokenGrant};

/// The result of one put-token request.
#[derive(Debug)]
pub struct PutToken {
    pub reply: Reply,
    /// What the connection may now access; `None` when the token was refused.
    pub granted: Option<TokenGrant>,
}

impl PutToken {
    fn refused(status_code: i32, condition: &str, description: String) -> PutToken {
        PutToken {
            reply: Reply::error(status_code, condition, description),
            granted: None,
        }
    }
}

/// Handle a request on `$cbs`. Replies carry `status-code` / `status-description` (kebab-case on this node).
pub fn handle(validator: &SasValidator, request: &Request, now: SystemTime) -> PutToken {
    let operation = request.property_str("operation").unwrap_or_default();
    if operation != "put-token" {
        return PutToken::refused(
            400,
            "amqp:not-implemented",
            format!("unsupported $cbs operation '{operation}'; only put-token is implemented"),
        );
    }
    let token = match request.body_value() {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => {
            return PutToken::refused(
                400,
                "amqp:decode-error",
                "put-token needs the token (SAS or JWT) as an amqp-value string body".into(),
            );
        }
    };
    let granted = validator
        .grant(&token, request.property_str("name").as_deref(), now)
        .map_err(|e| match e {
            TokenError::Sas(e) => format!(
                "{e}; use the namespace's SharedAccessKeyName and SharedAccessKey (emulator: RootManageSharedAccessKey / SAS_KEY_VALUE)"
            ),
            TokenError::NoAudience => "a jwt put-token needs the name property: the audience it is for, sb://<namespace>/<entity>".to_string(),
            e => e.to_string(),
        });
    match granted {
        Ok(grant) => PutToken {
            reply: Reply {
                status_code: 202,
                status_description: "Accepted".into(),
                properties: Vec::new(),
                body: Box::new(Value::Null),
            },
            granted: Some(grant),
        },
        Err(description) => {
            tracing::info!(
                name = request.property_str("name").unwrap_or_default(),
                reason = description,
                "put-token refused"
            );
            PutToken::refused(401, "amqp:unauthorized-access", description)
        }
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
    use crate::auth::jwt::make_test_token;
    use crate::auth::make_token;

    fn put_token(token_type: &str, name: Option<&str>, token: &str) -> Request {
        let mut properties = ApplicationProperties::builder()
            .insert("operation", SimpleValue::String("put-token".into()))
            .insert("type", SimpleValue::String(token_type.into()));
        if let Some(name) = name {
            properties = properties.insert("name", SimpleValue::String(name.into()));
        }
        let message = Message::builder()
            .properties(Properties {
                message_id: Some(MessageId::Ulong(1)),
                ..Default::default()
            })
            .application_properties(properties.build())
            .body(Body::Value(fe2o3_amqp_types::messaging::AmqpValue(
                Value::String(token.into()),
            )))
            .build();
        Request { message }
    }

    fn sas(token: &str) -> Request {
        put_token(
            "servicebus.windows.net:sastoken",
            Some("sb://localhost/q"),
            token,
        )
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
        let put = handle(&validator, &sas(&good), now);
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
            let put = handle(&validator, &sas(&token), now);
            assert_eq!(put.reply.status_code, 401, "{token}");
            assert!(put.granted.is_none());
        }
    }

    #[test]
    fn a_jwt_grants_the_entity_it_is_put_for_until_its_exp() {
        let validator = SasValidator::emulator_default();
        let now = SystemTime::now();
        let exp = now + Duration::from_secs(600);
        let token = make_test_token("https://servicebus.azure.net", exp);
        let name = "sb://mylab.servicebus.windows.net/queue-messages";
        let put = handle(&validator, &put_token("jwt", Some(name), &token), now);
        assert_eq!(put.reply.status_code, 202);
        let grant = put.granted.unwrap();
        assert_eq!(grant.audience, name);
        assert!(grant.covers("queue-messages/$management") && !grant.covers("other"));
        // exp is whole seconds.
        assert!(exp.duration_since(grant.expires).unwrap() < Duration::from_secs(1));
    }

    #[test]
    fn jwts_that_are_expired_for_another_service_or_for_nothing_get_401_saying_why() {
        let validator = SasValidator::emulator_default();
        let now = SystemTime::now();
        let name = Some("sb://mylab.servicebus.windows.net/queue-messages");
        let hour = Duration::from_secs(3600);
        let cases = [
            (
                put_token(
                    "jwt",
                    name,
                    &make_test_token("https://servicebus.azure.net", now - hour),
                ),
                "expired",
            ),
            (
                put_token(
                    "jwt",
                    name,
                    &make_test_token("https://management.azure.com", now + hour),
                ),
                "audience (aud) is https://management.azure.com",
            ),
            (
                put_token(
                    "jwt",
                    None,
                    &make_test_token("https://servicebus.azure.net", now + hour),
                ),
                "needs the name property",
            ),
        ];
        for (request, expected) in cases {
            let put = handle(&validator, &request, now);
            assert_eq!(put.reply.status_code, 401);
            assert!(put.granted.is_none());
            assert!(
                put.reply.status_description.contains(expected),
                "{}",
                put.reply.status_description
            );
        }
    }
}
