//! Configuration: flags override environment variables (the tutorial's contract), and every
//! error names the variable and says how to fix it.

use std::fmt;
use std::time::Duration;

use crate::processor::DefaultProcessor;
use crate::servicebus::{Auth, ConnectionConfig, TrustedCa};
use crate::telemetry::LogFormat;

/// What the loop is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOptions {
    /// The queue to drain.
    pub queue: String,
    /// Stop after this many messages; 0 = until the queue stays empty for `max_wait`.
    pub max_messages: u32,
    /// How long to wait for a message before deciding the queue is empty.
    pub max_wait: Duration,
    /// Upper bound on messages requested (and so locked) ahead of processing.
    pub prefetch: u32,
}

/// The environment variables read, with the flag that overrides each.
pub mod env {
    pub const FQDN: &str = "SERVICEBUS_FQDN";
    pub const CONNECTION_STRING: &str = "SERVICEBUS_CONNECTION_STRING";
    pub const CLIENT_ID: &str = "MANAGED_IDENTITY_CLIENT_ID";
    pub const CA_FILE: &str = "SERVICEBUS_CA_FILE";
    pub const CUSTOM_ENDPOINT: &str = "SERVICEBUS_CUSTOM_ENDPOINT";
    pub const QUEUE: &str = "SERVICEBUS_QUEUE_NAME";
    pub const MAX_MESSAGES: &str = "MAX_MESSAGES";
    pub const MAX_WAIT: &str = "MAX_WAIT";
    pub const PREFETCH: &str = "PREFETCH_COUNT";
    pub const SIMULATE_WORK: &str = "SIMULATE_WORK";
    pub const FAIL_ON_SUBJECT: &str = "FAIL_ON_SUBJECT";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
}

const EMULATOR_CONNECTION_STRING: &str = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

/// Command-line flags. Each one overrides the environment variable named in its help.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "servicebus-job",
    version,
    about = "Drains a Service Bus queue in peek-lock: receive, process, complete. An Azure Container Apps job.",
    after_help = "Exit codes: 0 success (or empty queue), 1 connection/auth/broker error, 2 configuration error, \
3 at least one message failed (abandoned, dead-lettered, not settled, or its lock ran out), 128+N stopped by signal N (143 = SIGTERM).\n\
Logs: RUST_LOG sets the level (default info); LOG_FORMAT=json gives JSON lines."
)]
pub struct Flags {
    /// Namespace host name, e.g. mylab.servicebus.windows.net (Azure, TLS on 5671) [env: SERVICEBUS_FQDN]
    #[arg(long, value_name = "HOST")]
    pub fqdn: Option<String>,
    /// Client id of the user-assigned managed identity; without it the az CLI login is used [env: MANAGED_IDENTITY_CLIENT_ID]
    #[arg(long, value_name = "GUID")]
    pub client_id: Option<String>,
    /// Connection string instead of FQDN + identity (emulator: ...;UseDevelopmentEmulator=true) [env: SERVICEBUS_CONNECTION_STRING]
    #[arg(long, value_name = "STRING", hide_env_values = true)]
    pub connection_string: Option<String>,
    /// PEM file of CA certificates to trust for TLS besides the public roots: a private CA, or the CA of the emulator's --tls-cert [env: SERVICEBUS_CA_FILE]
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<String>,
    /// Connect to this address instead of the namespace host, keeping the namespace for tokens (the Azure SDKs' custom endpoint: a gateway, a tunnel, an emulator's TLS port), e.g. sb://localhost:5671 [env: SERVICEBUS_CUSTOM_ENDPOINT]
    #[arg(long, value_name = "ADDRESS")]
    pub custom_endpoint: Option<String>,
    /// Queue to drain [env: SERVICEBUS_QUEUE_NAME]
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    /// Messages to process before exiting; 0 = until the queue stays empty for --max-wait [env: MAX_MESSAGES] [default: 1]
    #[arg(long, value_name = "N")]
    pub max_messages: Option<String>,
    /// How long to wait for a message (e.g. 5s, 500ms, 2m) [env: MAX_WAIT] [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub max_wait: Option<String>,
    /// Most messages requested (and locked) ahead of processing [env: PREFETCH_COUNT] [default: 20]
    #[arg(long, value_name = "N")]
    pub prefetch: Option<String>,
    /// Lab knob: pretend each message takes this long to process (e.g. 30s) [env: SIMULATE_WORK]
    #[arg(long, value_name = "DURATION")]
    pub simulate_work: Option<String>,
    /// Lab knob: fail messages with this subject transiently, so they are abandoned and redelivered [env: FAIL_ON_SUBJECT]
    #[arg(long, value_name = "SUBJECT")]
    pub fail_on_subject: Option<String>,
    /// Log format: text or json [env: LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// Everything the binary needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub connection: ConnectionConfig,
    pub job: JobOptions,
    pub processor: DefaultProcessor,
    pub log_format: LogFormat,
}

/// A configuration problem: which setting, what is wrong, and how to fix it. Never quotes secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable(s) and flag(s) involved, e.g. `SERVICEBUS_QUEUE_NAME (--queue)`.
    pub setting: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}\n  fix: {}", self.setting, self.problem, self.fix)
    }
}

impl std::error::Error for ConfigError {}

/// One setting looked up in flags, then the environment; empty values count as unset
/// (a Container Apps env var set to "" is a common slip).
struct Lookup<'a, E: Fn(&str) -> Option<String>> {
    env: &'a E,
}

struct Setting {
    value: String,
    /// How to refer to it in an error: the flag if it came from there, else the variable.
    name: String,
}

impl<E: Fn(&str) -> Option<String>> Lookup<'_, E> {
    fn get(&self, flag_value: Option<String>, flag: &str, variable: &str) -> Option<Setting> {
        let non_empty = |v: String| (!v.trim().is_empty()).then_some(v);
        match flag_value.and_then(non_empty) {
            Some(value) => Some(Setting {
                value,
                name: format!("--{flag}"),
            }),
            None => (self.env)(variable)
                .and_then(non_empty)
                .map(|value| Setting {
                    value,
                    name: variable.to_string(),
                }),
        }
    }
}

impl Config {
    /// Builds the configuration from flags and an environment lookup (`|name| std::env::var(name).ok()`
    /// in the binary; a map in tests).
    pub fn from_sources(
        flags: Flags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let lookup = Lookup { env: &env };
        let fqdn = lookup.get(flags.fqdn, "fqdn", env::FQDN);
        let connection_string = lookup.get(
            flags.connection_string,
            "connection-string",
            env::CONNECTION_STRING,
        );
        let client_id = lookup.get(flags.client_id, "client-id", env::CLIENT_ID);

        let (connection, entity_path) = match (fqdn, connection_string) {
            (Some(fqdn), Some(cs)) => {
                return Err(ConfigError {
                    setting: format!("{} and {}", fqdn.name, cs.name),
                    problem: "are both set, so it is unclear which namespace to use.".into(),
                    fix: format!("keep {} for Azure with a managed identity, or {} for the emulator (or a SAS key), not both.", fqdn.name, cs.name),
                });
            }
            (None, None) => {
                return Err(ConfigError {
                    setting: format!("{} and {}", env::FQDN, env::CONNECTION_STRING),
                    problem: "are both unset, so there is no Service Bus to connect to.".into(),
                    fix: format!(
                        "in Azure set {}=<namespace>.servicebus.windows.net (and {}=<client id of the job's identity>); \
against the emulator set {}=\"{EMULATOR_CONNECTION_STRING}\" (or pass --fqdn / --connection-string).",
                        env::FQDN, env::CLIENT_ID, env::CONNECTION_STRING
                    ),
                });
            }
            (Some(fqdn), None) => {
                let auth = match client_id {
                    Some(id) => Auth::ManagedIdentity { client_id: id.value.trim().to_string() },
                    None => Auth::DeveloperTools,
                };
                let config = ConnectionConfig::azure(&fqdn.value, auth).map_err(|e| ConfigError {
                    setting: fqdn.name.clone(),
                    problem: format!("is invalid: {e}."),
                    fix: format!("set {} to the namespace host name only, e.g. mylab.servicebus.windows.net (no path, no port).", fqdn.name),
                })?;
                (config, None)
            }
            (None, Some(cs)) => ConnectionConfig::from_connection_string(&cs.value).map_err(|e| ConfigError {
                setting: cs.name.clone(),
                problem: format!("is malformed: {e}."),
                fix: format!(
                    "use the form Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=<rule>;SharedAccessKey=<key> \
(Azure portal: the namespace's or queue's Shared access policies), or for the emulator \"{EMULATOR_CONNECTION_STRING}\"."
                ),
            })?,
        };

        let connection = match lookup.get(
            flags.custom_endpoint,
            "custom-endpoint",
            env::CUSTOM_ENDPOINT,
        ) {
            None => connection,
            Some(endpoint) => connection.with_custom_endpoint(&endpoint.value).map_err(|e| ConfigError {
                problem: format!("is invalid: {e}."),
                fix: format!(
                    "set {} to the address to connect to, e.g. sb://localhost:5671 (host and port only; the namespace stays in {}), or unset it.",
                    endpoint.name,
                    env::FQDN
                ),
                setting: endpoint.name,
            })?,
        };
        let connection = match lookup.get(flags.ca_file, "ca-file", env::CA_FILE) {
            None => connection,
            Some(ca_file) => trust_ca(connection, ca_file)?,
        };

        let queue = match lookup.get(flags.queue, "queue", env::QUEUE) {
            Some(queue) => queue.value.trim().to_string(),
            None => entity_path.ok_or_else(|| ConfigError {
                setting: env::QUEUE.to_string(),
                problem: "is not set, so there is no queue to drain.".into(),
                fix: format!("set {}=<queue name> (the lab's queue is queue-messages), or pass --queue <name>.", env::QUEUE),
            })?,
        };

        let max_messages = number(
            lookup.get(flags.max_messages, "max-messages", env::MAX_MESSAGES),
            1,
            "a count such as 1, 10, or 0 for \"until the queue is empty\"",
        )?;
        let prefetch = number(
            lookup.get(flags.prefetch, "prefetch", env::PREFETCH),
            20,
            "a count from 1 to 5000, e.g. 20",
        )?;
        if !(1..=5000).contains(&prefetch) {
            return Err(ConfigError {
                setting: format!("{} (--prefetch)", env::PREFETCH),
                problem: format!("is {prefetch}, outside 1..=5000."),
                fix: "use a count from 1 to 5000, e.g. 20.".into(),
            });
        }
        let max_wait = duration(
            lookup.get(flags.max_wait, "max-wait", env::MAX_WAIT),
            Duration::from_secs(5),
        )?;
        let simulated_work = duration(
            lookup.get(flags.simulate_work, "simulate-work", env::SIMULATE_WORK),
            Duration::ZERO,
        )?;
        let fail_on_subject = lookup
            .get(
                flags.fail_on_subject,
                "fail-on-subject",
                env::FAIL_ON_SUBJECT,
            )
            .map(|s| s.value);
        let log_format = match lookup.get(flags.log_format, "log-format", env::LOG_FORMAT) {
            None => LogFormat::Text,
            Some(s) => match s.value.trim().to_ascii_lowercase().as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                other => {
                    return Err(ConfigError {
                        setting: s.name,
                        problem: format!("is `{other}`, which is not a log format."),
                        fix: "use json (JSON lines, for log collectors) or text.".into(),
                    });
                }
            },
        };

        Ok(Config {
            connection,
            job: JobOptions {
                queue,
                max_messages,
                max_wait,
                prefetch,
            },
            processor: DefaultProcessor {
                simulated_work,
                fail_on_subject,
            },
            log_format,
        })
    }
}

/// Adds the CA certificates of `ca_file` to what TLS trusts; a plain connection cannot use them.
fn trust_ca(
    mut connection: ConnectionConfig,
    ca_file: Setting,
) -> Result<ConnectionConfig, ConfigError> {
    if !connection.tls {
        return Err(ConfigError {
            problem: "is set, but the connection is plain AMQP (UseDevelopmentEmulator=true), so there is no certificate to check.".into(),
            fix: format!(
                "for TLS, drop UseDevelopmentEmulator=true from {} (or use {} with {}); otherwise unset {}.",
                env::CONNECTION_STRING, env::FQDN, env::CUSTOM_ENDPOINT, ca_file.name
            ),
            setting: ca_file.name,
        });
    }
    let path = ca_file.value.trim();
    let trusted = TrustedCa::from_pem_file(std::path::Path::new(path)).map_err(|e| ConfigError {
        problem: format!("is `{path}`, which {e}."),
        fix: format!(
            "point {} at a PEM file with the CA certificate(s) to trust besides the public roots \
(e.g. the CA that signed the emulator's --tls-cert), or unset it.",
            ca_file.name
        ),
        setting: ca_file.name.clone(),
    })?;
    connection.trusted_ca = Some(trusted);
    Ok(connection)
}

fn number(setting: Option<Setting>, default: u32, expected: &str) -> Result<u32, ConfigError> {
    let Some(setting) = setting else {
        return Ok(default);
    };
    setting.value.trim().parse().map_err(|_| ConfigError {
        problem: format!("is `{}`, which is not a whole number.", setting.value),
        setting: setting.name,
        fix: format!("use {expected}."),
    })
}

fn duration(setting: Option<Setting>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(setting) = setting else {
        return Ok(default);
    };
    parse_duration(&setting.value).ok_or_else(|| ConfigError {
        problem: format!("is `{}`, which is not a duration.", setting.value),
        setting: setting.name,
        fix: "use a number with a unit: 500ms, 5s, 2m or 1h (a bare number means seconds).".into(),
    })
}

/// `500ms`, `5s`, `2m`, `1h`, or a bare number of seconds (fractions allowed: `1.5s`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(flags: Flags, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(flags, |name| vars.get(name).cloned())
    }

    const CS: &str = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

    #[test]
    fn tutorial_environment_means_managed_identity_over_tls() {
        let c = config(
            Flags::default(),
            &[
                (env::FQDN, "lab.servicebus.windows.net"),
                (env::CLIENT_ID, "00000000-0000-0000-0000-000000000001"),
                (env::QUEUE, "queue-messages"),
            ],
        )
        .unwrap();
        assert!(c.connection.tls);
        assert_eq!(c.connection.port, 5671);
        assert!(
            matches!(c.connection.auth, Auth::ManagedIdentity { ref client_id } if client_id == "00000000-0000-0000-0000-000000000001")
        );
        assert_eq!(
            c.job,
            JobOptions {
                queue: "queue-messages".into(),
                max_messages: 1,
                max_wait: Duration::from_secs(5),
                prefetch: 20
            }
        );
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn custom_endpoint_moves_the_socket_and_keeps_the_namespace() {
        let c = config(
            Flags {
                custom_endpoint: Some("sb://localhost:45671".into()),
                ..Default::default()
            },
            &[
                (env::FQDN, "lab.servicebus.windows.net"),
                (env::CUSTOM_ENDPOINT, "sb://ignored:1"),
                (env::QUEUE, "q"),
            ],
        )
        .unwrap();
        assert_eq!(
            (
                c.connection.host.as_str(),
                c.connection.port,
                c.connection.tls
            ),
            ("localhost", 45671, true)
        );
        assert_eq!(
            c.connection.audience("q"),
            "sb://lab.servicebus.windows.net/q"
        );
        assert!(c.connection.trusted_ca.is_none());
    }

    #[test]
    fn fqdn_without_client_id_uses_the_developer_login() {
        let c = config(
            Flags::default(),
            &[(env::FQDN, "lab.servicebus.windows.net"), (env::QUEUE, "q")],
        )
        .unwrap();
        assert!(matches!(c.connection.auth, Auth::DeveloperTools));
    }

    #[test]
    fn flags_override_environment() {
        let flags = Flags {
            queue: Some("from-flag".into()),
            max_messages: Some("0".into()),
            max_wait: Some("250ms".into()),
            log_format: Some("json".into()),
            ..Default::default()
        };
        let c = config(
            flags,
            &[
                (env::CONNECTION_STRING, CS),
                (env::QUEUE, "from-env"),
                (env::MAX_MESSAGES, "7"),
                (env::LOG_FORMAT, "text"),
            ],
        )
        .unwrap();
        assert_eq!(c.job.queue, "from-flag");
        assert_eq!(c.job.max_messages, 0);
        assert_eq!(c.job.max_wait, Duration::from_millis(250));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(!c.connection.tls);
    }

    #[test]
    fn entity_path_stands_in_for_a_missing_queue_name() {
        let c = config(
            Flags::default(),
            &[(env::CONNECTION_STRING, &format!("{CS}EntityPath=orders"))],
        )
        .unwrap();
        assert_eq!(c.job.queue, "orders");
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let err = config(
            Flags::default(),
            &[(env::CONNECTION_STRING, CS), (env::QUEUE, "  ")],
        )
        .unwrap_err();
        assert!(err.setting.contains(env::QUEUE));
    }

    #[test]
    fn errors_name_the_setting_and_the_fix() {
        let missing_queue = config(Flags::default(), &[(env::CONNECTION_STRING, CS)]).unwrap_err();
        assert_eq!(missing_queue.setting, "SERVICEBUS_QUEUE_NAME");
        assert!(missing_queue.fix.contains("--queue"));

        let neither = config(Flags::default(), &[(env::QUEUE, "q")]).unwrap_err();
        assert!(
            neither.setting.contains("SERVICEBUS_FQDN")
                && neither.setting.contains("SERVICEBUS_CONNECTION_STRING")
        );

        let both = config(
            Flags::default(),
            &[
                (env::QUEUE, "q"),
                (env::FQDN, "a.servicebus.windows.net"),
                (env::CONNECTION_STRING, CS),
            ],
        )
        .unwrap_err();
        assert!(both.problem.contains("both"));

        let bad_number = config(
            Flags {
                max_messages: Some("ten".into()),
                ..Default::default()
            },
            &[(env::CONNECTION_STRING, CS), (env::QUEUE, "q")],
        )
        .unwrap_err();
        assert_eq!(bad_number.setting, "--max-messages");

        let bad_wait = config(
            Flags::default(),
            &[
                (env::CONNECTION_STRING, CS),
                (env::QUEUE, "q"),
                (env::MAX_WAIT, "soon"),
            ],
        )
        .unwrap_err();
        assert_eq!(bad_wait.setting, "MAX_WAIT");

        let bad_format = config(
            Flags::default(),
            &[
                (env::CONNECTION_STRING, CS),
                (env::QUEUE, "q"),
                (env::LOG_FORMAT, "xml"),
            ],
        )
        .unwrap_err();
        assert_eq!(bad_format.setting, "LOG_FORMAT");

        let bad_fqdn = config(
            Flags::default(),
            &[(env::FQDN, "https://x/y"), (env::QUEUE, "q")],
        )
        .unwrap_err();
        assert_eq!(bad_fqdn.setting, "SERVICEBUS_FQDN");
    }

    #[test]
    fn malformed_connection_string_error_never_quotes_the_key() {
        let err = config(
            Flags::default(),
            &[
                (
                    env::CONNECTION_STRING,
                    "Endpoint=nope;SharedAccessKeyName=r;SharedAccessKey=TOPSECRETKEY",
                ),
                (env::QUEUE, "q"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.setting, "SERVICEBUS_CONNECTION_STRING");
        assert!(!err.to_string().contains("TOPSECRETKEY"), "{err}");
    }

    #[test]
    fn debug_of_a_config_hides_the_key() {
        let c = config(
            Flags::default(),
            &[
                (
                    env::CONNECTION_STRING,
                    "Endpoint=sb://h/;SharedAccessKeyName=r;SharedAccessKey=TOPSECRETKEY",
                ),
                (env::QUEUE, "q"),
            ],
        )
        .unwrap();
        let printed = format!("{c:?} {c:#?}");
        assert!(!printed.contains("TOPSECRETKEY"), "{printed}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration(""), None);
    }
}
