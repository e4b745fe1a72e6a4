//! Our Service Bus client over `fe2o3-amqp`: connection, CBS auth, peek-lock receiver, sender,
//! `$management` requests, and message types. It knows nothing about the job.
//!
//! The public surface other crates (the xtask, tests) rely on, kept stable:
//! [`ConnectionConfig::from_connection_string`] / [`ConnectionConfig::azure`] →
//! [`ServiceBusClient::connect`] → [`ServiceBusClient::sender`] → [`Sender::send`] /
//! [`Sender::send_all`] with [`ServiceBusMessage`], and [`ServiceBusClient::receiver`] →
//! [`Receiver::receive`] / `complete` / `abandon` / `dead_letter` / `renew_lock`.

mod cbs;
mod client;
mod closed;
pub mod connection_config;
pub mod credential;
pub mod message;
mod receiver;
mod requests;
pub mod sas;
mod sender;
mod tls;

pub use client::ServiceBusClient;
pub use connection_config::{Auth, ConnectionConfig, ConnectionStringError, InvalidEndpoint};
pub use credential::{CbsToken, Credential, CredentialError};
pub use message::{MessageBody, PropertyValue, ReceivedMessage, ServiceBusMessage};
pub use receiver::Receiver;
pub use sas::SasSigner;
pub use sender::Sender;
pub use tls::{TrustedCa, TrustedCaError, install_crypto_provider};

/// What can go wrong talking to Service Bus. Messages name the endpoint or entity involved.
#[derive(Debug, thiserror::Error)]
pub enum ServiceBusError {
    // The io error is in the text and deliberately not a `#[source]` too: the worker logs the text
    // alone, and chain printers (anyhow's `{:#}`) would show it twice.
    #[error("could not reach {endpoint}: {error}")]
    Connect {
        endpoint: String,
        error: std::io::Error,
    },
    /// We refused the server's TLS certificate: an issuer we do not trust, or a name it does not carry.
    #[error(
        "the TLS certificate of {endpoint} was refused ({reason}); if the broker's certificate comes \
         from a private CA (an emulator's --tls-cert, a TLS-inspecting proxy), trust that CA \
         (the job: SERVICEBUS_CA_FILE or --ca-file = the CA's PEM file), and connect by a name the \
         certificate carries"
    )]
    UntrustedCertificate { endpoint: String, reason: String },
    #[error("could not open an AMQP connection to {endpoint}: {reason}")]
    Open { endpoint: String, reason: String },
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("the broker refused the token for {audience}: {error}")]
    Authorization {
        audience: String,
        error: fe2o3_amqp_management::error::Error,
    },
    #[error(
        "could not attach to `{address}` (does it exist, and may this identity use it?): {reason}"
    )]
    Attach { address: String, reason: String },
    #[error("AMQP link or session failure: {0}")]
    Link(String),
    #[error("receiving failed: {0}")]
    Receive(String),
    /// The broker closed the connection or ended the session (it stopped, or dropped this client).
    #[error(
        "the broker closed the {what} while the job was receiving{reason}; check that the Service Bus \
         namespace (or the emulator) is running and reachable from here, then run the job again. \
         Detail: {detail}"
    )]
    BrokerClosed {
        /// `connection` or `session`.
        what: &'static str,
        /// ` (condition: description)`, or empty when the broker gave no error.
        reason: String,
        /// fe2o3's own text, for the record.
        detail: String,
    },
    #[error("settling a message failed: {0}")]
    Settle(String),
    #[error("sending failed: {0}")]
    Send(String),
    #[error("the broker did not accept the message: {0}")]
    NotAccepted(String),
    #[error("management request failed: {0}")]
    Management(fe2o3_amqp_management::error::Error),
    #[error("the message did not come from a receiver, so it cannot be settled")]
    Detached,
    #[error("the message has no lock token, so its lock cannot be renewed")]
    NoLockToken,
}

impl ServiceBusError {
    pub(crate) fn attach(address: &str, error: impl std::fmt::Display) -> ServiceBusError {
        ServiceBusError::Attach {
            address: address.to_string(),
            reason: error.to_string(),
        }
    }
}
