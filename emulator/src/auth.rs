//! SAS token validation for `$cbs` put-token. TO BE WRITTEN (broker helper).
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

use std::time::SystemTime;

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
}

/// Validates SAS tokens against the configured rules.
#[derive(Debug, Clone)]
pub struct SasValidator {
    rules: Vec<SasRule>,
}

impl SasValidator {
    pub fn new(rules: Vec<SasRule>) -> Self {
        SasValidator { rules }
    }

    pub fn validate(&self, _token: &str, _now: SystemTime) -> Result<SasClaims, AuthError> {
        let _ = &self.rules;
        todo!()
    }
}
