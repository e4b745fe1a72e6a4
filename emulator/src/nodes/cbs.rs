//! `$cbs` put-token: validate a SAS token and grant the connection access to what its audience covers.

use std::time::SystemTime;

use fe2o3_amqp_types::primitives::Value;

use super::{Reply, Request};
use crate::auth::{SasClaims, SasRule, SasValidator};

/// The SAS rule and key of the official emulator, so its connection string works unchanged.
pub fn emulator_rules() -> Vec<SasRule> {
    vec![SasRule {
        name: "RootManageSharedAccessKey".into(),
        key: "SAS_KEY_VALUE".into(),
    }]
}

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
                body: Value::Null,
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

/// Sign a SAS token the way the SDKs do (HMAC-SHA256 over the URL-encoded audience, a newline and the
/// expiry in Unix seconds). The server uses it to check SASL PLAIN keys through the same validator.
pub fn sign_token(audience: &str, rule: &str, key: &str, expiry: SystemTime) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

    let se = expiry
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let sr = utf8_percent_encode(audience, NON_ALPHANUMERIC).to_string();
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{sr}\n{se}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig = utf8_percent_encode(&sig, NON_ALPHANUMERIC);
    let skn = utf8_percent_encode(rule, NON_ALPHANUMERIC);
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={skn}")
}

/// Whether a token's audience (`sb://host[:port]/path`) covers an entity path such as `q`,
/// `q/$DeadLetterQueue` or `q/$management`. A namespace audience covers everything.
pub fn audience_covers(audience: &str, entity_path: &str) -> bool {
    let scope = crate::nodes::normalise_address(audience).to_ascii_lowercase();
    let scope = scope.trim_end_matches('/');
    let entity = entity_path.trim_start_matches('/').to_ascii_lowercase();
    scope.is_empty() || entity == scope || entity.starts_with(&format!("{scope}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_cover_entities_and_their_sub_paths() {
        assert!(audience_covers("sb://localhost/", "q"));
        assert!(audience_covers("sb://localhost:5672", "q/$management"));
        assert!(audience_covers(
            "sb://localhost:5672/q",
            "q/$DeadLetterQueue"
        ));
        assert!(audience_covers("sb://localhost/Q", "q"));
        assert!(!audience_covers("sb://localhost/q", "q2"));
        assert!(!audience_covers("sb://localhost/other", "q"));
    }
}
