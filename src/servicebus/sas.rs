//! Our own Shared Access Signature signer for connection strings with `SharedAccessKey=`.
//!
//! Format (what Service Bus and its emulator verify):
//! `SharedAccessSignature sr=<enc(resource)>&sig=<enc(base64(HMAC-SHA256(key, enc(resource) + "\n" + expiry)))>&se=<expiry>&skn=<enc(rule)>`.
//! The key is used as its raw UTF-8 bytes, not base64-decoded. Percent-encoding leaves only
//! `A-Z a-z 0-9 - _ . ~` alone with upper-case hex, byte for byte what the Python SDK's
//! `quote_plus` produces, so both sign identically (a test compares them).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

use crate::secret::Secret;

/// Characters left as they are: RFC 3986 unreserved.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Signs SAS tokens with one shared access rule.
#[derive(Clone, Debug)]
pub struct SasSigner {
    key_name: String,
    key: Secret,
}

impl SasSigner {
    /// A signer for rule `key_name` with its key.
    pub fn new(key_name: impl Into<String>, key: Secret) -> Self {
        SasSigner {
            key_name: key_name.into(),
            key,
        }
    }

    /// The rule name (not secret; it shows up as `skn=` in every token).
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// A token for `resource` (e.g. `sb://ns.servicebus.windows.net/queue`) valid until
    /// `expiry_unix_seconds`.
    pub fn sign(&self, resource: &str, expiry_unix_seconds: u64) -> Secret {
        let encoded_resource = encode(resource);
        let string_to_sign = format!("{encoded_resource}\n{expiry_unix_seconds}");
        // HMAC accepts keys of any length, so this cannot fail; keep the fallback total anyway.
        let signature = match Hmac::<Sha256>::new_from_slice(self.key.expose().as_bytes()) {
            Ok(mut mac) => {
                mac.update(string_to_sign.as_bytes());
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        };
        Secret::new(format!(
            "SharedAccessSignature sr={encoded_resource}&sig={}&se={expiry_unix_seconds}&skn={}",
            encode(&signature),
            encode(&self.key_name)
        ))
    }
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, UNRESERVED).to_string()
}

/// The `se=` (expiry, unix seconds) of a ready-made SAS token, if it has one.
pub fn sas_token_expiry(token: &str) -> Option<u64> {
    let fields = token
        .strip_prefix("SharedAccessSignature ")
        .unwrap_or(token);
    fields
        .split('&')
        .find_map(|pair| pair.strip_prefix("se="))
        .and_then(|se| se.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_the_service_bus_shape() {
        let signer = SasSigner::new("RootManageSharedAccessKey", Secret::new("SAS_KEY_VALUE"));
        let token = signer.sign("sb://localhost/queue-messages", 1_700_000_000);
        let token = token.expose();
        assert!(
            token
                .starts_with("SharedAccessSignature sr=sb%3A%2F%2Flocalhost%2Fqueue-messages&sig=")
        );
        assert!(token.ends_with("&se=1700000000&skn=RootManageSharedAccessKey"));
        assert_eq!(sas_token_expiry(token), Some(1_700_000_000));
    }

    #[test]
    fn signature_depends_on_key_resource_and_expiry() {
        let a = SasSigner::new("rule", Secret::new("key-a"));
        let b = SasSigner::new("rule", Secret::new("key-b"));
        let base = a.sign("sb://ns/q", 100);
        assert_ne!(base, b.sign("sb://ns/q", 100));
        assert_ne!(base, a.sign("sb://ns/other", 100));
        assert_ne!(base, a.sign("sb://ns/q", 101));
        assert_eq!(base, a.sign("sb://ns/q", 100));
    }

    #[test]
    fn debug_of_the_signer_hides_the_key() {
        let signer = SasSigner::new("rule", Secret::new("very-secret-key"));
        let printed = format!("{signer:?}");
        assert!(!printed.contains("very-secret-key"), "{printed}");
        assert!(printed.contains("rule"));
    }

    #[test]
    fn expiry_of_a_token_without_se_is_none() {
        assert_eq!(
            sas_token_expiry("SharedAccessSignature sr=a&sig=b&skn=c"),
            None
        );
    }
}
