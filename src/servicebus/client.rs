//! One AMQP connection with one session to a Service Bus namespace (or the emulator), from which
//! senders and receivers are made.

use std::sync::Arc;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::{Connection, Session};
use tokio::net::TcpStream;

use crate::servicebus::cbs::Cbs;
use crate::servicebus::connection_config::ConnectionConfig;
use crate::servicebus::credential::Credential;
use crate::servicebus::receiver::Receiver;
use crate::servicebus::sender::Sender;
use crate::servicebus::{ServiceBusError, tls};

/// A connected client.
///
/// ```no_run
/// # async fn demo() -> Result<(), aca_job_lab::servicebus::ServiceBusError> {
/// use aca_job_lab::servicebus::{ConnectionConfig, ServiceBusClient, ServiceBusMessage};
/// let (config, _entity) = ConnectionConfig::from_connection_string(
///     "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
/// )
/// .expect("a valid connection string");
/// let mut client = ServiceBusClient::connect(&config).await?;
/// let mut sender = client.sender("queue-messages").await?;
/// sender.send(ServiceBusMessage::new("hello").with_subject("greeting")).await?;
/// client.close().await?;
/// # Ok(()) }
/// ```
pub struct ServiceBusClient {
    config: ConnectionConfig,
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    cbs: Arc<Cbs>,
}

impl std::fmt::Debug for ServiceBusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServiceBusClient {
    /// Connects (TLS or plain, per `config.tls`), opens the session and the `$cbs` link.
    /// No entity is authorised yet: that happens per sender or receiver.
    pub async fn connect(config: &ConnectionConfig) -> Result<ServiceBusClient, ServiceBusError> {
        let credential = Credential::from_auth(&config.auth)?;
        let endpoint = format!("{}:{}", config.host, config.port);
        let connect_error = |error: std::io::Error| ServiceBusError::Connect {
            endpoint: endpoint.clone(),
            error,
        };
        let tcp = TcpStream::connect((config.host.as_str(), config.port))
            .await
            .map_err(connect_error)?;
        // Small messages one at a time: send them without waiting for more data.
        tcp.set_nodelay(true).map_err(connect_error)?;
        let container_id = format!("servicebus-job-{}", uuid::Uuid::new_v4());
        // Service Bus wants SASL ANONYMOUS and then CBS; "amqp" here means "no AMQP-level TLS
        // upgrade": for Azure the TLS is already wrapped around the stream.
        let builder = Connection::builder()
            .container_id(container_id)
            .hostname(config.namespace_host())
            .scheme("amqp")
            .sasl_profile(SaslProfile::Anonymous);
        let open_error = |e: fe2o3_amqp::connection::OpenError| ServiceBusError::Open {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        };
        let mut connection = if config.tls {
            let stream = tls::connect(&config.host, tcp, config.trusted_ca.as_ref())
                .await
                .map_err(|error| match tls::refused_certificate(&error) {
                    Some(reason) => ServiceBusError::UntrustedCertificate {
                        endpoint: endpoint.clone(),
                        reason,
                    },
                    None => connect_error(error),
                })?;
            builder.open_with_stream(stream).await.map_err(open_error)?
        } else {
            builder.open_with_stream(tcp).await.map_err(open_error)?
        };
        let mut session = Session::begin(&mut connection)
            .await
            .map_err(|e| ServiceBusError::Link(e.to_string()))?;
        let cbs = Cbs::attach(&mut session, credential).await?;
        tracing::debug!(endpoint, tls = config.tls, "connected");
        Ok(ServiceBusClient {
            config: config.clone(),
            connection,
            session,
            cbs,
        })
    }

    /// The connection settings this client was made with.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// A sender to `queue`, authorised (and kept authorised) through CBS.
    pub async fn sender(&mut self, queue: &str) -> Result<Sender, ServiceBusError> {
        let refresh = self.authorize(queue).await?;
        Sender::attach(&mut self.session, queue, refresh).await
    }

    /// A peek-lock receiver on `queue`, authorised (and kept authorised) through CBS.
    pub async fn receiver(&mut self, queue: &str) -> Result<Receiver, ServiceBusError> {
        let refresh = self.authorize(queue).await?;
        Receiver::attach(&mut self.session, queue, refresh).await
    }

    async fn authorize(
        &self,
        entity: &str,
    ) -> Result<crate::servicebus::cbs::TokenRefresh, ServiceBusError> {
        let audience = self.config.audience(entity);
        let expires_at = self.cbs.authorize(&audience).await?;
        Ok(self.cbs.keep_authorized(audience, expires_at))
    }

    /// Ends the session and closes the connection.
    pub async fn close(mut self) -> Result<(), ServiceBusError> {
        // The session end can fail if the broker already went away; closing the connection is
        // what matters.
        if let Err(error) = self.session.end().await {
            tracing::debug!(%error, "ending the session failed");
        }
        self.connection
            .close()
            .await
            .map_err(|e| ServiceBusError::Link(e.to_string()))
    }
}
