//! Turns an [`Auth`] into CBS tokens: our SAS signer, or an Entra ID token from `azure_identity`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};

use crate::secret::Secret;
use crate::servicebus::connection_config::Auth;
use crate::servicebus::sas::{SasSigner, sas_token_expiry};

/// The Entra ID scope for Service Bus data-plane tokens.
pub const SERVICE_BUS_SCOPE: &str = "https://servicebus.azure.net/.default";
/// CBS token type for Entra ID (JWT) tokens.
pub const JWT_TOKEN_TYPE: &str = "jwt";
/// CBS token type for SAS tokens.
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
/// How long the SAS tokens we sign live. Refreshed well before that (see `cbs`).
pub const SAS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A token ready for CBS put-token.
#[derive(Clone, Debug)]
pub struct CbsToken {
    /// The token (SAS string or JWT).
    pub value: Secret,
    /// `jwt` or `servicebus.windows.net:sastoken`.
    pub token_type: &'static str,
    /// When it stops being valid.
    pub expires_at: SystemTime,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("could not set up {kind}: {source}")]
    Setup {
        kind: &'static str,
        #[source]
        source: azure_core::Error,
    },
    #[error("{kind} did not give a token for {scope}: {source}")]
    Token {
        kind: &'static str,
        scope: &'static str,
        #[source]
        source: azure_core::Error,
    },
}

/// A source of CBS tokens.
#[derive(Clone)]
pub enum Credential {
    /// Signs a fresh SAS token per request.
    SharedAccessKey(SasSigner),
    /// A fixed SAS token (cannot be renewed).
    SharedAccessSignature(Secret),
    /// An `azure_identity` credential; `kind` names it in errors and logs.
    Entra {
        kind: &'static str,
        credential: Arc<dyn TokenCredential>,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::SharedAccessKey(signer) => {
                f.debug_tuple("SharedAccessKey").field(signer).finish()
            }
            Credential::SharedAccessSignature(token) => {
                f.debug_tuple("SharedAccessSignature").field(token).finish()
            }
            Credential::Entra { kind, .. } => f
                .debug_struct("Entra")
                .field("kind", kind)
                .finish_non_exhaustive(),
        }
    }
}

impl Credential {
    /// Builds the credential for `auth`. Managed identity reads `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`
    /// (Container Apps, App Service) or falls back to IMDS.
    pub fn from_auth(auth: &Auth) -> Result<Credential, CredentialError> {
        Ok(match auth {
            Auth::SharedAccessKey(signer) => Credential::SharedAccessKey(signer.clone()),
            Auth::SharedAccessSignature(token) => Credential::SharedAccessSignature(token.clone()),
            Auth::ManagedIdentity { client_id } => {
                let kind = "the managed identity (ManagedIdentityCredential)";
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: Some(UserAssignedId::ClientId(client_id.clone())),
                    ..Default::default()
                };
                let credential = ManagedIdentityCredential::new(Some(options))
                    .map_err(|source| CredentialError::Setup { kind, source })?;
                Credential::Entra { kind, credential }
            }
            Auth::DeveloperTools => {
                let kind = "the developer login (az CLI / azd)";
                let credential = DeveloperToolsCredential::new(None)
                    .map_err(|source| CredentialError::Setup { kind, source })?;
                Credential::Entra { kind, credential }
            }
        })
    }

    /// A token for `audience` (`sb://<namespace>/<entity>`).
    pub async fn token(&self, audience: &str) -> Result<CbsToken, CredentialError> {
        match self {
            Credential::SharedAccessKey(signer) => {
                let expires_at = SystemTime::now() + SAS_TOKEN_LIFETIME;
                let expiry = unix_seconds(expires_at);
                Ok(CbsToken {
                    value: signer.sign(audience, expiry),
                    token_type: SAS_TOKEN_TYPE,
                    expires_at: UNIX_EPOCH + Duration::from_secs(expiry),
                })
            }
            Credential::SharedAccessSignature(token) => {
                // Without `se=` the token's lifetime is unknown; assume an hour so it is re-sent
                // now and then rather than never.
                let expires_at = sas_token_expiry(token.expose())
                    .map(|se| UNIX_EPOCH + Duration::from_secs(se))
                    .unwrap_or_else(|| SystemTime::now() + SAS_TOKEN_LIFETIME);
                Ok(CbsToken {
                    value: token.clone(),
                    token_type: SAS_TOKEN_TYPE,
                    expires_at,
                })
            }
            Credential::Entra { kind, credential } => {
                let token = credential
                    .get_token(&[SERVICE_BUS_SCOPE], None)
                    .await
                    .map_err(|source| CredentialError::Token {
                        kind,
                        scope: SERVICE_BUS_SCOPE,
                        source,
                    })?;
                Ok(CbsToken {
                    value: Secret::new(token.token.secret()),
                    token_type: JWT_TOKEN_TYPE,
                    expires_at: SystemTime::from(token.expires_on),
                })
            }
        }
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sas_key_gives_a_sas_token_for_the_audience_valid_for_an_hour() {
        let credential = Credential::SharedAccessKey(SasSigner::new("R", Secret::new("K")));
        let token = credential.token("sb://localhost/q").await.unwrap();
        assert_eq!(token.token_type, SAS_TOKEN_TYPE);
        assert!(
            token
                .value
                .expose()
                .starts_with("SharedAccessSignature sr=sb%3A%2F%2Flocalhost%2Fq&")
        );
        let lifetime = token.expires_at.duration_since(SystemTime::now()).unwrap();
        assert!(lifetime > Duration::from_secs(3500) && lifetime <= SAS_TOKEN_LIFETIME);
    }

    #[tokio::test]
    async fn fixed_signature_keeps_its_own_expiry() {
        let credential = Credential::SharedAccessSignature(Secret::new(
            "SharedAccessSignature sr=a&sig=b&se=2000000000&skn=c",
        ));
        let token = credential.token("sb://x/q").await.unwrap();
        assert_eq!(
            token.expires_at,
            UNIX_EPOCH + Duration::from_secs(2_000_000_000)
        );
        assert!(!format!("{credential:?} {token:?}").contains("sig=b"));
    }
}
