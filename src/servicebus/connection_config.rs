//! Where to connect and how to authenticate: parsed from a connection string, or a namespace FQDN
//! plus an identity.

use crate::secret::Secret;
use crate::servicebus::sas::SasSigner;
use crate::servicebus::tls::TrustedCa;

/// The AMQP port with TLS (Azure).
pub const TLS_PORT: u16 = 5671;
/// The plain AMQP port (the Service Bus emulator).
pub const PLAIN_PORT: u16 = 5672;

/// How the client proves who it is, per entity, through CBS put-token.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `SharedAccessKeyName` + `SharedAccessKey`: we sign SAS tokens ourselves and refresh them.
    SharedAccessKey(SasSigner),
    /// `SharedAccessSignature=`: a ready-made token; it cannot be renewed.
    SharedAccessSignature(Secret),
    /// A user-assigned managed identity by client id (Container Apps: `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER` are set by the platform).
    ManagedIdentity { client_id: String },
    /// The developer's own login (az CLI, then azd), for running against Azure from a laptop.
    DeveloperTools,
}

/// Everything [`crate::servicebus::ServiceBusClient::connect`] needs.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// The namespace as it appears in token audiences: `host` or `host:port`
    /// (audience = `sb://<namespace>/<entity>`, as the Python SDK builds it).
    pub namespace: String,
    /// Host name to connect to, and the name its TLS certificate must carry (SNI). The namespace's
    /// host unless a custom endpoint ([`ConnectionConfig::with_custom_endpoint`]) says otherwise.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (Azure, `amqps`) or plain AMQP (emulator, `UseDevelopmentEmulator=true`).
    pub tls: bool,
    /// CA certificates trusted besides the public web roots (a private CA; the CA of an emulator's
    /// `--tls-cert`). `None`: the public roots only.
    pub trusted_ca: Option<TrustedCa>,
    /// Credentials.
    pub auth: Auth,
}

/// What is wrong with a custom endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address like sb://<host>:<port>")]
pub struct InvalidEndpoint(pub String);

/// What is wrong with a connection string. The messages never quote the key or signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// The part itself is not quoted: it might be a stray piece of the key.
    #[error("part {index} (counting from 1, split at ';') is not of the form Key=Value")]
    MalformedPart { index: usize },
    #[error("it has no Endpoint=sb://<namespace>/ part")]
    MissingEndpoint,
    #[error("Endpoint `{0}` is not of the form sb://<host>[:port]/")]
    InvalidEndpoint(String),
    #[error(
        "it has SharedAccessKeyName but no SharedAccessKey (or the other way round); both are needed"
    )]
    IncompleteKey,
    #[error("it has both SharedAccessKey and SharedAccessSignature; keep only one")]
    KeyAndSignature,
    #[error("it has neither SharedAccessKey nor SharedAccessSignature")]
    NoCredential,
}

/// What is wrong with a namespace FQDN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a host name like <namespace>.servicebus.windows.net")]
pub struct InvalidFqdn(pub String);

impl ConnectionConfig {
    /// Parses `Endpoint=sb://host[:port]/;SharedAccessKeyName=..;SharedAccessKey=..[;EntityPath=..][;UseDevelopmentEmulator=true]`
    /// or the `SharedAccessSignature=` form. Keys are case-insensitive, as in the Azure SDKs.
    /// Returns the config and the `EntityPath`, if any.
    pub fn from_connection_string(
        connection_string: &str,
    ) -> Result<(ConnectionConfig, Option<String>), ConnectionStringError> {
        let mut endpoint = None;
        let mut key_name = None;
        let mut key = None;
        let mut signature = None;
        let mut entity_path = None;
        let mut emulator = false;
        let parts = connection_string.trim().trim_end_matches(';').split(';');
        for (index, part) in parts.enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((name, value)) = part.split_once('=') else {
                return Err(ConnectionStringError::MalformedPart { index: index + 1 });
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(value.trim().to_string()),
                "sharedaccesskeyname" => key_name = Some(value.to_string()),
                "sharedaccesskey" => key = Some(Secret::new(value)),
                "sharedaccesssignature" => signature = Some(Secret::new(value)),
                "entitypath" => entity_path = Some(value.to_string()).filter(|v| !v.is_empty()),
                "usedevelopmentemulator" => emulator = value.trim().eq_ignore_ascii_case("true"),
                // Unknown keys (e.g. TransportType) do not change how we connect.
                _ => {}
            }
        }
        let endpoint = endpoint.ok_or(ConnectionStringError::MissingEndpoint)?;
        let namespace = endpoint
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| ConnectionStringError::InvalidEndpoint(endpoint.clone()))?
            .to_string();
        let (host, port) = split_host_port(&namespace)
            .ok_or_else(|| ConnectionStringError::InvalidEndpoint(endpoint.clone()))?;
        let auth = match (key_name, key, signature) {
            (Some(_), Some(_), Some(_)) | (None, Some(_), Some(_)) => {
                return Err(ConnectionStringError::KeyAndSignature);
            }
            (Some(name), Some(key), None) => Auth::SharedAccessKey(SasSigner::new(name, key)),
            (None, None, Some(signature)) | (Some(_), None, Some(signature)) => {
                Auth::SharedAccessSignature(signature)
            }
            (Some(_), None, None) | (None, Some(_), None) => {
                return Err(ConnectionStringError::IncompleteKey);
            }
            (None, None, None) => return Err(ConnectionStringError::NoCredential),
        };
        let default_port = if emulator { PLAIN_PORT } else { TLS_PORT };
        let config = ConnectionConfig {
            namespace,
            host,
            port: port.unwrap_or(default_port),
            tls: !emulator,
            trusted_ca: None,
            auth,
        };
        Ok((config, entity_path))
    }

    /// Azure: `amqps://<fqdn>:5671` with the given identity.
    pub fn azure(fqdn: &str, auth: Auth) -> Result<ConnectionConfig, InvalidFqdn> {
        let fqdn = fqdn.trim();
        let bare = fqdn
            .split_once("://")
            .map_or(fqdn, |(_, rest)| rest)
            .trim_end_matches('/');
        let valid = !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(InvalidFqdn(fqdn.to_string()));
        }
        Ok(ConnectionConfig {
            namespace: bare.to_string(),
            host: bare.to_string(),
            port: TLS_PORT,
            tls: true,
            trusted_ca: None,
            auth,
        })
    }

    /// Connects to `endpoint` (`sb://host[:port]`, `amqps://host[:port]` or `host[:port]`; the port
    /// defaults to this config's) instead of the namespace's host, keeping the namespace for token
    /// audiences and the AMQP `open` hostname. This is the Azure SDKs' custom endpoint address (.NET
    /// `CustomEndpointAddress`, Python `custom_endpoint_address`): a gateway, a tunnel, or an emulator's
    /// TLS port on loopback. As there, TLS is with the endpoint's host: its certificate must carry that name.
    pub fn with_custom_endpoint(mut self, endpoint: &str) -> Result<Self, InvalidEndpoint> {
        let trimmed = endpoint.trim();
        let authority = trimmed
            .split_once("://")
            .map_or(trimmed, |(_, rest)| rest)
            .trim_end_matches('/');
        let (host, port) = split_host_port(authority)
            .filter(|(host, _)| {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
            })
            .ok_or_else(|| InvalidEndpoint(endpoint.to_string()))?;
        self.host = host;
        self.port = port.unwrap_or(self.port);
        Ok(self)
    }

    /// The namespace's host, without a port: the AMQP `open` hostname, by which Service Bus knows
    /// which namespace a connection is for (it may differ from [`ConnectionConfig::host`] behind a
    /// custom endpoint).
    pub fn namespace_host(&self) -> &str {
        split_host_port(&self.namespace)
            .map(|(host, _)| &self.namespace[..host.len()])
            .unwrap_or(&self.namespace)
    }

    /// The token audience (and CBS `name`) for an entity: `sb://<namespace>/<entity>`.
    pub fn audience(&self, entity: &str) -> String {
        format!("sb://{}/{}", self.namespace, entity)
    }
}

/// `host` or `host:port`; `None` when the port is not a number or the host is empty.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            Some((host.to_string(), Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None => Some((authority.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMULATOR: &str = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

    #[test]
    fn emulator_connection_string_means_plain_amqp_on_5672() {
        let (config, entity) = ConnectionConfig::from_connection_string(EMULATOR).unwrap();
        assert_eq!(
            (config.host.as_str(), config.port, config.tls),
            ("localhost", 5672, false)
        );
        assert_eq!(config.audience("q"), "sb://localhost/q");
        assert!(
            matches!(config.auth, Auth::SharedAccessKey(ref s) if s.key_name() == "RootManageSharedAccessKey")
        );
        assert_eq!(entity, None);
    }

    #[test]
    fn explicit_port_is_kept_in_the_audience_like_the_python_sdk() {
        let cs = "Endpoint=sb://127.0.0.1:40123;SharedAccessKeyName=R;SharedAccessKey=K;UseDevelopmentEmulator=true";
        let (config, _) = ConnectionConfig::from_connection_string(cs).unwrap();
        assert_eq!((config.host.as_str(), config.port), ("127.0.0.1", 40123));
        assert_eq!(config.audience("q"), "sb://127.0.0.1:40123/q");
    }

    #[test]
    fn azure_connection_string_means_tls_on_5671_and_keeps_entity_path() {
        let cs = "endpoint=sb://ns.servicebus.windows.net/;sharedaccesskeyname=Listen;sharedaccesskey=abc=;EntityPath=orders";
        let (config, entity) = ConnectionConfig::from_connection_string(cs).unwrap();
        assert_eq!(
            (config.host.as_str(), config.port, config.tls),
            ("ns.servicebus.windows.net", 5671, true)
        );
        assert_eq!(entity.as_deref(), Some("orders"));
        // The key keeps its trailing '=' (split at the first '=' only).
        let Auth::SharedAccessKey(signer) = config.auth else {
            panic!("expected a key")
        };
        assert!(signer.sign("r", 1).expose().contains("skn=Listen"));
    }

    #[test]
    fn signature_form_is_accepted() {
        let cs = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessSignature=SharedAccessSignature sr=x&sig=y&se=1&skn=z";
        let (config, _) = ConnectionConfig::from_connection_string(cs).unwrap();
        assert!(matches!(config.auth, Auth::SharedAccessSignature(_)));
    }

    #[test]
    fn malformed_strings_are_refused_with_the_reason() {
        use ConnectionStringError::*;
        let cases = [
            (
                "Endpoint=sb://ns/;garbage;SharedAccessKey=k",
                MalformedPart { index: 2 },
            ),
            ("SharedAccessKeyName=a;SharedAccessKey=b", MissingEndpoint),
            (
                "Endpoint=localhost;SharedAccessKeyName=a;SharedAccessKey=b",
                InvalidEndpoint("localhost".into()),
            ),
            (
                "Endpoint=sb://h:port;SharedAccessKeyName=a;SharedAccessKey=b",
                InvalidEndpoint("sb://h:port".into()),
            ),
            ("Endpoint=sb://ns/;SharedAccessKeyName=a", IncompleteKey),
            (
                "Endpoint=sb://ns/;SharedAccessKey=b;SharedAccessSignature=c",
                KeyAndSignature,
            ),
            ("Endpoint=sb://ns/", NoCredential),
        ];
        for (input, expected) in cases {
            assert_eq!(
                ConnectionConfig::from_connection_string(input).unwrap_err(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_key() {
        let cs = "Endpoint=sb://ns/;SharedAccessKeyName=a;SharedAccessKey=TOPSECRET;oops";
        let err = ConnectionConfig::from_connection_string(cs)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("TOPSECRET"), "{err}");
        let (config, _) = ConnectionConfig::from_connection_string(EMULATOR).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("SAS_KEY_VALUE"), "{printed}");
    }

    #[test]
    fn a_custom_endpoint_moves_the_socket_but_not_the_namespace() {
        let config = ConnectionConfig::azure("mylab.servicebus.windows.net", Auth::DeveloperTools)
            .unwrap()
            .with_custom_endpoint("sb://localhost:40123")
            .unwrap();
        assert_eq!((config.host.as_str(), config.port), ("localhost", 40123));
        assert_eq!(config.namespace_host(), "mylab.servicebus.windows.net");
        assert_eq!(config.audience("q"), "sb://mylab.servicebus.windows.net/q");
        let bare = ConnectionConfig::azure("mylab.servicebus.windows.net", Auth::DeveloperTools)
            .unwrap()
            .with_custom_endpoint("gateway.example.com")
            .unwrap();
        assert_eq!(
            (bare.host.as_str(), bare.port),
            ("gateway.example.com", 5671)
        );
        for bad in ["", "sb://:5671", "sb://host:port", "sb://two words:1"] {
            let config =
                ConnectionConfig::azure("mylab.servicebus.windows.net", Auth::DeveloperTools)
                    .unwrap();
            assert!(config.with_custom_endpoint(bad).is_err(), "{bad}");
        }
        let (emulator, _) = ConnectionConfig::from_connection_string(
            "Endpoint=sb://127.0.0.1:40123;SharedAccessKeyName=R;SharedAccessKey=K;UseDevelopmentEmulator=true",
        )
        .unwrap();
        assert_eq!(emulator.namespace_host(), "127.0.0.1");
    }

    #[test]
    fn fqdn_is_validated_and_tolerates_a_scheme() {
        let config =
            ConnectionConfig::azure("sb://ns.servicebus.windows.net/", Auth::DeveloperTools)
                .unwrap();
        assert_eq!(
            (config.host.as_str(), config.port, config.tls),
            ("ns.servicebus.windows.net", 5671, true)
        );
        assert!(ConnectionConfig::azure("ns servicebus", Auth::DeveloperTools).is_err());
        assert!(ConnectionConfig::azure("", Auth::DeveloperTools).is_err());
    }
}
