//! Claims-based security: put-token per entity on the connection's one `$cbs` link, and a background
//! refresh that re-sends the token before it expires (Service Bus drops the entity's links when it does).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp_management::client::MgmtClient;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::servicebus::ServiceBusError;
use crate::servicebus::credential::Credential;
use crate::servicebus::requests::PutToken;

/// Re-send a token this long before it expires (the Azure SDKs use 5–6 minutes).
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// After a failed refresh, try again this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The `$cbs` link pair and the credential that feeds it. Service Bus allows one `$cbs` link per
/// connection, so authorisations are serialised behind the mutex.
pub(crate) struct Cbs {
    client: Mutex<MgmtClient>,
    credential: Credential,
}

impl Cbs {
    pub(crate) async fn attach(
        session: &mut SessionHandle<()>,
        credential: Credential,
    ) -> Result<Arc<Cbs>, ServiceBusError> {
        let client = MgmtClient::builder()
            .management_node_address("$cbs")
            .client_node_addr(format!("cbs-client-{}", uuid::Uuid::new_v4()))
            .attach(session)
            .await
            .map_err(|e| ServiceBusError::attach("$cbs", e))?;
        Ok(Arc::new(Cbs {
            client: Mutex::new(client),
            credential,
        }))
    }

    /// Gets a token for `audience` and puts it; returns when it expires.
    pub(crate) async fn authorize(&self, audience: &str) -> Result<SystemTime, ServiceBusError> {
        let token = self.credential.token(audience).await?;
        let expires_at = token.expires_at;
        let request = PutToken {
            audience: audience.to_string(),
            token,
        };
        let mut client = self.client.lock().await;
        client
            .call(request)
            .await
            .map_err(|error| ServiceBusError::Authorization {
                audience: audience.to_string(),
                error,
            })?;
        tracing::debug!(audience, "token accepted by the broker");
        Ok(expires_at)
    }

    /// Keeps `audience` authorised until the returned guard is dropped.
    pub(crate) fn keep_authorized(
        self: &Arc<Self>,
        audience: String,
        expires_at: SystemTime,
    ) -> TokenRefresh {
        if matches!(self.credential, Credential::SharedAccessSignature(_)) {
            // A fixed SAS token cannot be renewed; re-sending it would change nothing.
            return TokenRefresh(None);
        }
        let cbs = Arc::clone(self);
        TokenRefresh(Some(tokio::spawn(async move {
            let mut expires_at = expires_at;
            loop {
                let remaining = expires_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tokio::time::sleep(refresh_delay(remaining)).await;
                match cbs.authorize(&audience).await {
                    Ok(next) => expires_at = next,
                    Err(error) => {
                        tracing::warn!(audience, %error, "token refresh failed; retrying");
                        expires_at = SystemTime::now() + REFRESH_MARGIN + RETRY_AFTER_FAILURE;
                    }
                }
            }
        })))
    }
}

/// How long to wait before re-sending a token that is valid for `remaining`: `REFRESH_MARGIN`
/// before expiry, or half-way for short-lived tokens, but never in a busy loop.
pub(crate) fn refresh_delay(remaining: Duration) -> Duration {
    let delay = if remaining > REFRESH_MARGIN * 2 {
        remaining - REFRESH_MARGIN
    } else {
        remaining / 2
    };
    delay.max(Duration::from_secs(1))
}

/// Stops the background refresh of one entity's token when dropped.
pub(crate) struct TokenRefresh(Option<JoinHandle<()>>);

impl Drop for TokenRefresh {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_happens_before_expiry() {
        assert_eq!(
            refresh_delay(Duration::from_secs(3600)),
            Duration::from_secs(3300)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(300)),
            Duration::from_secs(150)
        );
        assert_eq!(refresh_delay(Duration::ZERO), Duration::from_secs(1));
    }
}
