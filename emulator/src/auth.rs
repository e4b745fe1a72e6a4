//! Token validation for `$cbs` put-token and the administration API's `Authorization` header: SAS
//! tokens here (signature checked against the rules' keys), Entra ID `jwt` tokens in [`jwt`] (form,
//! expiry and audience only: an emulator cannot check Entra's signature). [`SasValidator::grant`] tells
//! the two apart the same way for both; the outcome is a [`TokenGrant`]: what the token may access,
//! until when.
//!
//! INTERFACE CONTRACT:
//! - `SasValidator::new(rules: Vec<SasRule>)`; `SasValidator::emulator_default()` = the official emulator's
//!   `RootManageSharedAccessKey` / `SAS_KEY_VALUE`.
//! - `validate(&self, token: &str, now: SystemTime) -> Result<SasClaims, AuthError>`: parses
//!   `SharedAccessSignature sr=..&sig=..&se=..&skn=..` (any field order), recomputes
//!   HMAC-SHA256(key as raw UTF-8 bytes, sr-as-sent + "\n" + se), compares in constant time, checks expiry.
//! - `SasClaims { audience: String /* decoded sr */, rule: String, expires: SystemTime }` and
//!   `SasClaims::covers(&self, entity: &str) -> bool`: the audience (e.g. `sb://localhost/queue`, or the
//!   namespace `sb://localhost/`) is a prefix of the entity path.
//! - `AuthError` (thiserror) names what was wrong: unknown rule, signature mismatch, expired, malformed.

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::broker::entity_path::path_of;

pub mod jwt;

/// The official emulator's rule name and key; its connection string uses them unchanged.
pub const EMULATOR_RULE: &str = "RootManageSharedAccessKey";
pub const EMULATOR_KEY: &str = "SAS_KEY_VALUE";

/// The official emulator's connection string for an emulator at `endpoint` (`host:port`).
pub fn emulator_connection_string(endpoint: impl std::fmt::Display) -> String {
    format!(
        "Endpoint=sb://{endpoint};SharedAccessKeyName={EMULATOR_RULE};SharedAccessKey={EMULATOR_KEY};UseDevelopmentEmulator=true;"
    )
}

/// A shared access rule: name and key.
#[derive(Debug, Clone)]
pub struct SasRule {
    pub name: String,
    pub key: String,
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasClaims {
    pub audience: String,
    pub rule: String,
    pub expires: SystemTime,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed SAS token: {0}")]
    Malformed(String),
    #[error(
        "unknown shared access rule '{0}' (skn); use a rule the emulator knows, e.g. {EMULATOR_RULE}"
    )]
    UnknownRule(String),
    #[error("the SAS token signature does not match for rule '{0}'; sign it with that rule's key")]
    SignatureMismatch(String),
    #[error("the SAS token expired at {} (unix seconds); request a new token", .0.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))]
    Expired(SystemTime),
}

impl SasClaims {
    /// Whether the token's audience (`sr`) grants access to `entity` (see [`audience_covers`]).
    pub fn covers(&self, entity: &str) -> bool {
        audience_covers(&self.audience, entity)
    }
}

/// Whether an audience grants access to `entity`: the audience's path (after `scheme://host/`) is
/// empty (the whole namespace) or a case-insensitive prefix of the entity's path on a segment boundary.
pub fn audience_covers(audience: &str, entity: &str) -> bool {
    let audience = path_of(audience).to_ascii_lowercase();
    let entity = path_of(entity).to_ascii_lowercase();
    audience.is_empty()
        || entity == audience
        || (entity.starts_with(&audience) && entity.as_bytes().get(audience.len()) == Some(&b'/'))
}

/// What an accepted put-token grants the connection, whatever the kind of token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// What it covers: the SAS token's `sr`, or for a `jwt` the put-token's `name` (an Entra token's
    /// own audience is the whole service, `https://servicebus.azure.net`; Service Bus scopes it to the
    /// entity named in the request and checks the identity's roles there).
    pub audience: String,
    /// When it runs out (the SAS `se`, the JWT `exp`).
    pub expires: SystemTime,
}

impl TokenGrant {
    /// Whether this grant covers `entity` (see [`audience_covers`]).
    pub fn covers(&self, entity: &str) -> bool {
        audience_covers(&self.audience, entity)
    }
}

impl From<SasClaims> for TokenGrant {
    fn from(claims: SasClaims) -> TokenGrant {
        TokenGrant {
            audience: claims.audience,
            expires: claims.expires,
        }
    }
}

/// Why a token of either kind was refused ([`SasValidator::grant`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Sas(#[from] AuthError),
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
    /// A JWT's grant is the entity it is presented for; without one there is nothing to grant.
    #[error(
        "a jwt needs the audience it is for, sb://<namespace>/<entity> (on $cbs: the put-token's name property)"
    )]
    NoAudience,
}

/// Said once per process: the limits of the `jwt` check belong in the log of anyone relying on it.
static JWT_LIMITS_SAID: Once = Once::new();

/// Validates SAS tokens against the configured rules.
#[derive(Debug, Clone)]
pub struct SasValidator {
    rules: Vec<SasRule>,
}

impl SasValidator {
    pub fn new(rules: Vec<SasRule>) -> Self {
        SasValidator { rules }
    }

    /// The official emulator's single rule.
    pub fn emulator_default() -> Self {
        SasValidator::new(vec![SasRule {
            name: EMULATOR_RULE.to_string(),
            key: EMULATOR_KEY.to_string(),
        }])
    }

    /// A token as a client presents it, on `$cbs` or in an HTTP `Authorization` header (without its
    /// `Bearer ` scheme): `SharedAccessSignature …` is a SAS token, checked against the rules' keys and
    /// granting its `sr`; anything else is taken as an Entra ID JWT, checked as [`jwt::validate`] says
    /// and granting `name`, the entity it is presented for (`sb://<namespace>/<entity>`), as Service
    /// Bus scopes an Entra token to the entity of the request.
    pub fn grant(
        &self,
        token: &str,
        name: Option<&str>,
        now: SystemTime,
    ) -> Result<TokenGrant, TokenError> {
        if token.starts_with("SharedAccessSignature ") {
            return Ok(self.validate(token, now)?.into());
        }
        let name = name
            .filter(|n| !n.is_empty())
            .ok_or(TokenError::NoAudience)?;
        let claims = jwt::validate(token, name, now)?;
        JWT_LIMITS_SAID.call_once(|| {
            tracing::warn!(
                "accepting Entra ID (jwt) tokens after checking their form, expiry and audience only: \
                 the emulator cannot verify Entra's signature, issuer or role assignments"
            );
        });
        tracing::info!(
            audience = name,
            aud = claims.audience,
            principal = claims.principal.as_deref().unwrap_or("-"),
            app_id = claims.app_id.as_deref().unwrap_or("-"),
            "jwt accepted (signature not verified)"
        );
        Ok(TokenGrant {
            audience: name.to_string(),
            expires: claims.expires,
        })
    }

    pub fn validate(&self, token: &str, now: SystemTime) -> Result<SasClaims, AuthError> {
        let fields = token
            .strip_prefix("SharedAccessSignature ")
            .ok_or_else(|| {
                AuthError::Malformed("it must start with \"SharedAccessSignature \"".to_string())
            })?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in fields.trim().split('&') {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| AuthError::Malformed(format!("field \"{pair}\" has no '='")))?;
            let slot = match k {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue, // unknown fields are ignored, as Service Bus does
            };
            if slot.replace(v).is_some() {
                return Err(AuthError::Malformed(format!("field \"{k}\" appears twice")));
            }
        }
        let missing = |name: &str| AuthError::Malformed(format!("field \"{name}\" is missing"));
        let (sr, sig, se, skn) = (
            sr.ok_or_else(|| missing("sr"))?,
            sig.ok_or_else(|| missing("sig"))?,
            se.ok_or_else(|| missing("se"))?,
            skn.ok_or_else(|| missing("skn"))?,
        );

        let rule_name = decode(skn, "skn")?;
        let rule = self
            .rules
            .iter()
            .find(|r| r.name == rule_name)
            .ok_or_else(|| AuthError::UnknownRule(rule_name.clone()))?;
        let expiry_secs: u64 = se.parse().map_err(|_| {
            AuthError::Malformed(format!("field \"se\" must be unix seconds, got \"{se}\""))
        })?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(decode(sig, "sig")?)
            .map_err(|e| AuthError::Malformed(format!("field \"sig\" is not base64: {e}")))?;

        // The string-to-sign uses `sr` exactly as sent (still URL-encoded), so casing of the escapes
        // only has to agree between the client's `sr` and its own signature.
        let mut mac = Hmac::<Sha256>::new_from_slice(rule.key.as_bytes())
            .map_err(|e| AuthError::Malformed(format!("rule key unusable: {e}")))?;
        mac.update(sr.as_bytes());
        mac.update(b"\n");
        mac.update(se.as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::SignatureMismatch(rule.name.clone()))?;

        let expires = UNIX_EPOCH + Duration::from_secs(expiry_secs);
        if expires <= now {
            return Err(AuthError::Expired(expires));
        }
        Ok(SasClaims {
            audience: decode(sr, "sr")?,
            rule: rule.name.clone(),
            expires,
        })
    }
}

fn decode(value: &str, field: &str) -> Result<String, AuthError> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|e| {
            AuthError::Malformed(format!(
                "field \"{field}\" is not UTF-8 after URL-decoding: {e}"
            ))
        })
}

/// Make a token the way the SDKs do (tests, and tools that need one): `sr` URL-encoded with lower-case
/// escapes, HMAC-SHA256 over `sr\nse`, base64, URL-encoded.
pub fn make_token(audience: &str, rule: &str, key: &str, expires: SystemTime) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let se = expires
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string();
    let sr = utf8_percent_encode(audience, NON_ALPHANUMERIC)
        .to_string()
        .to_ascii_lowercase();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(format!("{sr}\n{se}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig = utf8_percent_encode(&sig, NON_ALPHANUMERIC);
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={rule}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Generated by the Python SDK (azure-servicebus 7.15, the helper its SAS credential calls):
    /// `azure.servicebus._pyamqp.utils.generate_sas_token("sb://localhost/queue-messages",
    /// "RootManageSharedAccessKey", "SAS_KEY_VALUE", 2000000000)`. Note its upper-case escapes.
    const PYTHON_TOKEN: &str = "SharedAccessSignature sr=sb%3A%2F%2Flocalhost%2Fqueue-messages&sig=ytgqTcIgB%2BIOdq%2B9yLuiOaW2AEgcgwJtJa1oaqBrAQw%3D&se=2000000000&skn=RootManageSharedAccessKey";

    #[test]
    fn python_sdk_token_validates() {
        let token = PYTHON_TOKEN.trim();
        let claims = SasValidator::emulator_default()
            .validate(token, at(1_700_000_000))
            .unwrap();
        assert_eq!(claims.audience, "sb://localhost/queue-messages");
        assert_eq!(claims.rule, EMULATOR_RULE);
        assert!(claims.covers("queue-messages"));
        assert!(claims.covers("amqps://localhost/queue-messages/$DeadLetterQueue"));
        assert!(!claims.covers("other"));
        assert!(!claims.covers("queue-messages-2"));
    }

    #[test]
    fn our_tokens_validate_in_any_field_order() {
        let token = make_token("sb://localhost/", EMULATOR_RULE, EMULATOR_KEY, at(2_000));
        let claims = SasValidator::emulator_default()
            .validate(&token, at(1_000))
            .unwrap();
        assert_eq!(claims.expires, at(2_000));
        assert!(claims.covers("any-queue"));
        let body = token.strip_prefix("SharedAccessSignature ").unwrap();
        let mut parts: Vec<_> = body.split('&').collect();
        parts.reverse();
        let reordered = format!("SharedAccessSignature {}", parts.join("&"));
        assert_eq!(
            SasValidator::emulator_default()
                .validate(&reordered, at(1_000))
                .unwrap(),
            claims
        );
    }

    #[test]
    fn wrong_key_rule_or_time_is_refused() {
        let v = SasValidator::emulator_default();
        let wrong_key = make_token("sb://localhost/q", EMULATOR_RULE, "not-the-key", at(2_000));
        assert_eq!(
            v.validate(&wrong_key, at(1_000)),
            Err(AuthError::SignatureMismatch(EMULATOR_RULE.into()))
        );
        let wrong_rule = make_token("sb://localhost/q", "Other", EMULATOR_KEY, at(2_000));
        assert_eq!(
            v.validate(&wrong_rule, at(1_000)),
            Err(AuthError::UnknownRule("Other".into()))
        );
        let good = make_token("sb://localhost/q", EMULATOR_RULE, EMULATOR_KEY, at(2_000));
        assert_eq!(
            v.validate(&good, at(2_000)),
            Err(AuthError::Expired(at(2_000)))
        );
        // A tampered audience breaks the signature.
        let tampered = good.replace("sr=sb%3a%2f%2flocalhost%2fq", "sr=sb%3a%2f%2flocalhost%2fr");
        assert_ne!(tampered, good);
        assert_eq!(
            v.validate(&tampered, at(1_000)),
            Err(AuthError::SignatureMismatch(EMULATOR_RULE.into()))
        );
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let v = SasValidator::emulator_default();
        let cases = [
            ("Bearer abc", "must start with"),
            (
                "SharedAccessSignature sr=a&sig=b&se=1",
                "\"skn\" is missing",
            ),
            (
                "SharedAccessSignature sr=a&sig=b&se=soon&skn=RootManageSharedAccessKey",
                "unix seconds",
            ),
            (
                "SharedAccessSignature sr=a&sig=%%%&se=1&skn=RootManageSharedAccessKey",
                "not base64",
            ),
            (
                "SharedAccessSignature sr=a&sr=b&sig=x&se=1&skn=k",
                "appears twice",
            ),
            ("SharedAccessSignature garbage", "has no '='"),
        ];
        for (token, expected) in cases {
            let e = v.validate(token, at(0)).unwrap_err().to_string();
            assert!(e.contains(expected), "{token}: {e}");
        }
    }
}
