//! The official emulator's `Config.json` (`UserConfig.Namespaces[].Queues[]`).
//!
//! The file is read into a `serde_json::Value` and walked by hand rather than derived with serde, so that
//! every error can name the exact JSON path of the problem
//! (`UserConfig.Namespaces[0].Queues[1].Properties.LockDuration`) and say how to fix it. Properties the
//! emulator reads but does not implement (sessions, topics) do not fail the start: they come
//! back as [`ConfigWarning`]s, which the CLI prints.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// The lab's `lab/servicebus/Config.json`. A copy inside the crate, because a published crate cannot
/// reach files outside its directory; `lab_default_equals_the_lab_file` keeps the two equal.
const LAB_CONFIG_JSON: &str = include_str!("lab_config.json");

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Every namespace in the file; the emulator serves the first one (the official emulator has one).
    pub namespaces: Vec<NamespaceConfig>,
    /// `UserConfig.Logging.Type` (`File` or `Console`); informational only.
    pub logging_type: Option<String>,
    /// Set-but-unsupported or unknown properties, for the CLI to print at start.
    pub warnings: Vec<ConfigWarning>,
}

/// One `UserConfig.Namespaces[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceConfig {
    pub name: String,
    pub queues: Vec<QueueConfig>,
}

/// One `Queues[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub name: String,
    pub properties: QueueProperties,
}

/// A queue's `Properties`; missing ones take the official emulator's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueProperties {
    pub lock_duration: Duration,
    pub max_delivery_count: u32,
    pub default_message_time_to_live: Duration,
    pub dead_lettering_on_message_expiration: bool,
    pub requires_duplicate_detection: bool,
    pub duplicate_detection_history_time_window: Duration,
    /// Messages sent to this queue go to that queue instead (another queue of the namespace).
    pub forward_to: Option<String>,
    /// Messages dead-lettered here go to that queue instead of this queue's dead-letter queue.
    pub forward_dead_lettered_messages_to: Option<String>,
    /// Parsed but not implemented (a warning is issued when true).
    pub requires_session: bool,
}

impl Default for QueueProperties {
    /// The official emulator's defaults for properties a file leaves out.
    fn default() -> Self {
        QueueProperties {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            default_message_time_to_live: Duration::from_secs(3600),
            dead_lettering_on_message_expiration: false,
            requires_duplicate_detection: false,
            duplicate_detection_history_time_window: Duration::from_secs(20),
            forward_to: None,
            forward_dead_lettered_messages_to: None,
            requires_session: false,
        }
    }
}

/// A property that is set but has no effect in this emulator, or that it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The JSON path, e.g. `UserConfig.Namespaces[0].Queues[0].Properties.ForwardTo`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}; check the path given to --config", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}is not valid JSON: {source}; fix the syntax at that line and column", in_file(.file))]
    Syntax {
        file: Option<PathBuf>,
        source: serde_json::Error,
    },
    #[error("{}{path}: {problem}; {fix}", in_file(.file))]
    Invalid {
        file: Option<PathBuf>,
        path: String,
        problem: String,
        fix: String,
    },
}

fn in_file(file: &Option<PathBuf>) -> String {
    match file {
        Some(f) => format!("{}: ", f.display()),
        None => String::new(),
    }
}

impl ConfigError {
    fn with_file(self, file: &Path) -> ConfigError {
        match self {
            ConfigError::Syntax { source, .. } => ConfigError::Syntax {
                file: Some(file.to_path_buf()),
                source,
            },
            ConfigError::Invalid {
                path, problem, fix, ..
            } => ConfigError::Invalid {
                file: Some(file.to_path_buf()),
                path,
                problem,
                fix,
            },
            other => other,
        }
    }
}

fn invalid(path: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: None,
        path: path.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

impl Config {
    /// The built-in default: exactly the lab's `lab/servicebus/Config.json` (one queue, `queue-messages`).
    pub fn lab_default() -> Config {
        // The embedded file is covered by a unit test, so a parse failure here is a build defect.
        Config::from_json_str(LAB_CONFIG_JSON)
            .unwrap_or_else(|e| panic!("embedded lab Config.json is invalid: {e}"))
    }

    /// Read and validate a `Config.json` file; errors name the file and the JSON path.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Config::from_json_str(&text).map_err(|e| e.with_file(file))
    }

    /// Validate the text of a `Config.json`.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        let root: Value = serde_json::from_str(text)
            .map_err(|source| ConfigError::Syntax { file: None, source })?;
        let mut walker = Walker {
            warnings: Vec::new(),
        };
        walker.root(&root)
    }

    /// The served namespace's queues (the first namespace; others are warned about).
    pub fn queues(&self) -> &[QueueConfig] {
        self.namespaces
            .first()
            .map(|n| n.queues.as_slice())
            .unwrap_or(&[])
    }

    /// A config with the given queues (default properties) in namespace `sbemulatorns`; handy in tests.
    pub fn with_queues<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Config {
        Self::in_default_namespace(
            names
                .into_iter()
                .map(|n| QueueConfig {
                    name: n.into(),
                    properties: QueueProperties::default(),
                })
                .collect(),
        )
    }

    /// A config with one queue with these properties in namespace `sbemulatorns`; handy in tests:
    /// `Config::single_queue("q", QueueProperties { max_delivery_count: 2, ..Default::default() })`.
    pub fn single_queue(name: impl Into<String>, properties: QueueProperties) -> Config {
        Self::in_default_namespace(vec![QueueConfig {
            name: name.into(),
            properties,
        }])
    }

    /// The official emulator's namespace name, as in the lab's Config.json.
    fn in_default_namespace(queues: Vec<QueueConfig>) -> Config {
        Config {
            namespaces: vec![NamespaceConfig {
                name: "sbemulatorns".to_string(),
                queues,
            }],
            logging_type: None,
            warnings: Vec::new(),
        }
    }
}

/// Walks the JSON tree keeping the path, collecting warnings.
struct Walker {
    warnings: Vec<ConfigWarning>,
}

const FIX_STRUCTURE: &str = "the file must look like {\"UserConfig\": {\"Namespaces\": [{\"Name\": ..., \"Queues\": [...]}]}} as in lab/servicebus/Config.json";

impl Walker {
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn object<'a>(
        &self,
        value: &'a Value,
        path: &str,
        fix: &str,
    ) -> Result<&'a Map<String, Value>, ConfigError> {
        value.as_object().ok_or_else(|| {
            invalid(
                path,
                format!("expected an object, got {}", describe(value)),
                fix,
            )
        })
    }

    fn array<'a>(
        &self,
        value: &'a Value,
        path: &str,
        fix: &str,
    ) -> Result<&'a Vec<Value>, ConfigError> {
        value.as_array().ok_or_else(|| {
            invalid(
                path,
                format!("expected an array, got {}", describe(value)),
                fix,
            )
        })
    }

    /// Warn about keys this emulator does not know, so typos do not pass silently.
    fn unknown_keys(&mut self, obj: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in obj.keys() {
            if !known.contains(&key.as_str()) {
                self.warn(
                    &format!("{path}.{key}"),
                    format!(
                        "unknown property, ignored (known here: {})",
                        known.join(", ")
                    ),
                );
            }
        }
    }

    fn root(&mut self, root: &Value) -> Result<Config, ConfigError> {
        let top = self.object(root, "$", FIX_STRUCTURE)?;
        self.unknown_keys(top, "$", &["UserConfig"]);
        let user = top
            .get("UserConfig")
            .ok_or_else(|| invalid("UserConfig", "missing", FIX_STRUCTURE))?;
        let user = self.object(user, "UserConfig", FIX_STRUCTURE)?;
        self.unknown_keys(user, "UserConfig", &["Namespaces", "Logging"]);

        let logging_type = match user.get("Logging") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let obj = self.object(
                    v,
                    "UserConfig.Logging",
                    "use {\"Type\": \"File\"} or {\"Type\": \"Console\"}",
                )?;
                self.unknown_keys(obj, "UserConfig.Logging", &["Type"]);
                match obj.get("Type") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => {
                        return Err(invalid(
                            "UserConfig.Logging.Type",
                            format!("expected a string, got {}", describe(other)),
                            "use \"File\" or \"Console\"",
                        ));
                    }
                }
            }
        };

        let ns_path = "UserConfig.Namespaces";
        let namespaces = user
            .get("Namespaces")
            .ok_or_else(|| invalid(ns_path, "missing", FIX_STRUCTURE))?;
        let namespaces = self.array(namespaces, ns_path, FIX_STRUCTURE)?;
        if namespaces.is_empty() {
            return Err(invalid(
                ns_path,
                "is empty",
                "add one namespace with at least one queue",
            ));
        }
        let mut parsed = Vec::with_capacity(namespaces.len());
        for (i, ns) in namespaces.iter().enumerate() {
            let path = format!("{ns_path}[{i}]");
            if i > 0 {
                self.warn(
                    &path,
                    "only the first namespace is served; this one is ignored",
                );
            }
            parsed.push(self.namespace(ns, &path)?);
        }
        Ok(Config {
            namespaces: parsed,
            logging_type,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn namespace(&mut self, ns: &Value, path: &str) -> Result<NamespaceConfig, ConfigError> {
        let obj = self.object(ns, path, FIX_STRUCTURE)?;
        self.unknown_keys(obj, path, &["Name", "Queues", "Topics"]);
        let name = required_string(
            obj,
            path,
            "Name",
            "give the namespace a name, e.g. \"sbemulatorns\"",
        )?;
        if let Some(topics) = obj.get("Topics") {
            let topics_path = format!("{path}.Topics");
            let topics = self.array(
                topics,
                &topics_path,
                "use an array (topics are not supported; leave it empty)",
            )?;
            if !topics.is_empty() {
                self.warn(
                    &topics_path,
                    format!(
                        "{} topic(s) configured; topics are not supported yet and are ignored",
                        topics.len()
                    ),
                );
            }
        }
        let queues_path = format!("{path}.Queues");
        let queues = match obj.get("Queues") {
            None | Some(Value::Null) => &Vec::new(),
            Some(v) => self.array(
                v,
                &queues_path,
                "use an array of {\"Name\": ..., \"Properties\": {...}} objects",
            )?,
        };
        let mut parsed: Vec<QueueConfig> = Vec::with_capacity(queues.len());
        for (i, q) in queues.iter().enumerate() {
            let qpath = format!("{queues_path}[{i}]");
            let queue = self.queue(q, &qpath)?;
            if let Some(first) = parsed
                .iter()
                .position(|p| p.name.eq_ignore_ascii_case(&queue.name))
            {
                return Err(invalid(
                    &format!("{qpath}.Name"),
                    format!(
                        "duplicate queue name \"{}\" (also {queues_path}[{first}]; names are case-insensitive)",
                        queue.name
                    ),
                    "give every queue a distinct name",
                ));
            }
            parsed.push(queue);
        }
        check_forwarding(&parsed, &queues_path)?;
        Ok(NamespaceConfig {
            name,
            queues: parsed,
        })
    }

    fn queue(&mut self, q: &Value, path: &str) -> Result<QueueConfig, ConfigError> {
        let obj = self.object(
            q,
            path,
            "each queue is {\"Name\": ..., \"Properties\": {...}}",
        )?;
        self.unknown_keys(obj, path, &["Name", "Properties"]);
        let name = required_string(
            obj,
            path,
            "Name",
            "give the queue a name, e.g. \"queue-messages\"",
        )?;
        validate_entity_name(&name, &format!("{path}.Name"))?;
        let props_path = format!("{path}.Properties");
        let properties = match obj.get("Properties") {
            None | Some(Value::Null) => QueueProperties::default(),
            Some(v) => {
                let props = self.object(v, &props_path, "use an object of queue properties")?;
                self.properties(props, &props_path)?
            }
        };
        Ok(QueueConfig { name, properties })
    }

    fn properties(
        &mut self,
        props: &Map<String, Value>,
        path: &str,
    ) -> Result<QueueProperties, ConfigError> {
        const KNOWN: &[&str] = &[
            "DeadLetteringOnMessageExpiration",
            "DefaultMessageTimeToLive",
            "DuplicateDetectionHistoryTimeWindow",
            "ForwardDeadLetteredMessagesTo",
            "ForwardTo",
            "LockDuration",
            "MaxDeliveryCount",
            "RequiresDuplicateDetection",
            "RequiresSession",
        ];
        self.unknown_keys(props, path, KNOWN);
        let d = QueueProperties::default();
        let fields = Fields { obj: props, path };

        let lock_duration = fields
            .read("LockDuration", duration)?
            .unwrap_or(d.lock_duration);
        if lock_duration.is_zero() || lock_duration > Duration::from_secs(300) {
            return Err(invalid(
                &fields.path("LockDuration"),
                format!("{lock_duration:?} is out of range"),
                "use a lock duration between PT1S and PT5M",
            ));
        }
        let max_delivery_count = fields
            .read("MaxDeliveryCount", delivery_count)?
            .unwrap_or(d.max_delivery_count);
        let default_message_time_to_live = fields
            .read("DefaultMessageTimeToLive", duration)?
            .unwrap_or(d.default_message_time_to_live);
        if default_message_time_to_live.is_zero() {
            return Err(invalid(
                &fields.path("DefaultMessageTimeToLive"),
                "must be longer than zero",
                "use a duration such as PT1H",
            ));
        }
        let duplicate_detection_history_time_window = fields
            .read("DuplicateDetectionHistoryTimeWindow", duration)?
            .unwrap_or(d.duplicate_detection_history_time_window);
        let dead_lettering_on_message_expiration = fields
            .read("DeadLetteringOnMessageExpiration", boolean)?
            .unwrap_or(false);
        let requires_duplicate_detection = fields
            .read("RequiresDuplicateDetection", boolean)?
            .unwrap_or(false);

        let requires_session = fields.read("RequiresSession", boolean)?.unwrap_or(false);
        if requires_session {
            self.warn(
                &fields.path("RequiresSession"),
                "sessions are not supported yet; the queue is served without sessions",
            );
        }
        // An empty string is how the official file says "not forwarded". Targets are checked once all
        // queues of the namespace are known (`check_forwarding`).
        let forward_to = fields.read("ForwardTo", string)?.filter(|s| !s.is_empty());
        let forward_dead_lettered_messages_to = fields
            .read("ForwardDeadLetteredMessagesTo", string)?
            .filter(|s| !s.is_empty());
        Ok(QueueProperties {
            lock_duration,
            max_delivery_count,
            default_message_time_to_live,
            dead_lettering_on_message_expiration,
            requires_duplicate_detection,
            duplicate_detection_history_time_window,
            forward_to,
            forward_dead_lettered_messages_to,
            requires_session,
        })
    }
}

/// Forwarding targets must be other queues of the namespace, and `ForwardTo` chains must end.
fn check_forwarding(queues: &[QueueConfig], queues_path: &str) -> Result<(), ConfigError> {
    let index = |name: &str| {
        queues
            .iter()
            .position(|q| q.name.eq_ignore_ascii_case(name))
    };
    let names = || {
        queues
            .iter()
            .map(|q| q.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, q) in queues.iter().enumerate() {
        let targets = [
            ("ForwardTo", &q.properties.forward_to),
            (
                "ForwardDeadLetteredMessagesTo",
                &q.properties.forward_dead_lettered_messages_to,
            ),
        ];
        for (key, target) in targets {
            let Some(target) = target else { continue };
            let path = format!("{queues_path}[{i}].Properties.{key}");
            match index(target) {
                None => {
                    return Err(invalid(
                        &path,
                        format!("\"{target}\" is not a queue of this namespace"),
                        format!("name one of: {}; or leave it empty", names()),
                    ));
                }
                Some(t) if t == i => {
                    return Err(invalid(
                        &path,
                        "a queue cannot forward to itself",
                        "name another queue, or leave it empty",
                    ));
                }
                Some(_) => {}
            }
        }
        // Follow the ForwardTo chain from this queue; coming back to a queue means it never ends.
        let mut seen = vec![i];
        let mut at = i;
        while let Some(next) = queues[at].properties.forward_to.as_deref().and_then(index) {
            if seen.contains(&next) {
                let chain: Vec<_> = seen
                    .iter()
                    .chain([&next])
                    .map(|&k| queues[k].name.as_str())
                    .collect();
                return Err(invalid(
                    &format!("{queues_path}[{i}].Properties.ForwardTo"),
                    format!("forwarding loop {}", chain.join(" -> ")),
                    "break the loop by clearing ForwardTo on one of these queues",
                ));
            }
            seen.push(next);
            at = next;
        }
    }
    Ok(())
}

/// The properties of one object, read by key with the key's JSON path in any error.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a str,
}

impl Fields<'_> {
    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// `None` when the key is absent or null (the default applies).
    fn read<T>(
        &self,
        key: &str,
        parse: fn(&Value, &str) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse(v, &self.path(key)).map(Some),
        }
    }
}

fn delivery_count(v: &Value, path: &str) -> Result<u32, ConfigError> {
    match v.as_u64() {
        Some(n @ 1..=2000) => Ok(n as u32),
        _ => Err(invalid(
            path,
            format!("expected an integer from 1 to 2000, got {}", describe(v)),
            "write a number such as 10",
        )),
    }
}

fn required_string(
    obj: &Map<String, Value>,
    path: &str,
    key: &str,
    fix: &str,
) -> Result<String, ConfigError> {
    let p = format!("{path}.{key}");
    match obj.get(key) {
        None | Some(Value::Null) => Err(invalid(&p, "missing", fix)),
        Some(v) => {
            let s = string(v, &p)?;
            if s.trim().is_empty() {
                Err(invalid(&p, "is empty", fix))
            } else {
                Ok(s)
            }
        }
    }
}

/// Entity names travel inside AMQP addresses (`amqps://host/<name>/$DeadLetterQueue`), so the characters
/// that would change how an address splits are refused.
fn validate_entity_name(name: &str, path: &str) -> Result<(), ConfigError> {
    let ok = name.len() <= 260
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['.', '-', '_'])
        && !name.ends_with(['.', '-', '_']);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("\"{name}\" is not a valid queue name"),
            "use letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
        ))
    }
}

fn string(v: &Value, path: &str) -> Result<String, ConfigError> {
    v.as_str().map(str::to_string).ok_or_else(|| {
        invalid(
            path,
            format!("expected a string, got {}", describe(v)),
            "put the value in double quotes",
        )
    })
}

fn boolean(v: &Value, path: &str) -> Result<bool, ConfigError> {
    v.as_bool().ok_or_else(|| {
        invalid(
            path,
            format!("expected true or false, got {}", describe(v)),
            "write true or false without quotes",
        )
    })
}

fn duration(v: &Value, path: &str) -> Result<Duration, ConfigError> {
    let fix = "write an ISO-8601 duration such as PT30S, PT5M, PT1H or P1DT2H";
    let Some(text) = v.as_str() else {
        return Err(invalid(
            path,
            format!(
                "expected an ISO-8601 duration like PT1M, got {}",
                describe(v)
            ),
            fix,
        ));
    };
    parse_iso8601_duration(text).ok_or_else(|| {
        invalid(
            path,
            format!("expected an ISO-8601 duration like PT1M, got \"{text}\""),
            fix,
        )
    })
}

/// A short, quoted rendering of a JSON value for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("\"{s}\""),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Parses `PnW`, `PnDTnHnMnS` (any subset, fractional seconds allowed), as Azure writes TimeSpans.
/// Years and months are refused: their length is ambiguous.
pub fn parse_iso8601_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P').or_else(|| text.strip_prefix('p'))?;
    if rest.is_empty() {
        return None;
    }
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut total = 0f64;
    let mut consume = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        let mut last_unit = None::<usize>;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let idx = units.iter().position(|(u, _)| u.eq_ignore_ascii_case(&c))?;
            // Units must appear once each, largest first.
            if last_unit.is_some_and(|l| idx <= l) || number.is_empty() {
                return None;
            }
            let n: f64 = number.parse().ok()?;
            total += n * units[idx].1;
            number.clear();
            last_unit = Some(idx);
        }
        if number.is_empty() { Some(()) } else { None }
    };
    consume(date, &[('W', 604_800.0), ('D', 86_400.0)])?;
    if let Some(t) = time {
        consume(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    if !total.is_finite() || total < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_json(props: &str) -> String {
        format!(
            r#"{{"UserConfig": {{"Namespaces": [{{"Name": "ns", "Queues": [
                {{"Name": "ok", "Properties": {{}}}},
                {{"Name": "q", "Properties": {props}}}
            ], "Topics": []}}], "Logging": {{"Type": "File"}}}}}}"#
        )
    }

    fn error_of(json: &str) -> String {
        Config::from_json_str(json).unwrap_err().to_string()
    }

    #[test]
    fn lab_default_equals_the_lab_file() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/servicebus/Config.json");
        let loaded = Config::load(&file).unwrap();
        assert_eq!(Config::lab_default(), loaded);
        let q = &loaded.queues()[0];
        assert_eq!(q.name, "queue-messages");
        assert_eq!(q.properties.lock_duration, Duration::from_secs(60));
        assert_eq!(q.properties.max_delivery_count, 3);
        assert_eq!(
            q.properties.default_message_time_to_live,
            Duration::from_secs(3600)
        );
        assert_eq!(
            q.properties.duplicate_detection_history_time_window,
            Duration::from_secs(20)
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.logging_type.as_deref(), Some("File"));
    }

    #[test]
    fn bad_lock_duration_names_the_path_and_the_fix() {
        let e = error_of(&queue_json(r#"{"LockDuration": "1 minute"}"#));
        assert_eq!(
            e,
            "UserConfig.Namespaces[0].Queues[1].Properties.LockDuration: expected an ISO-8601 duration like PT1M, \
             got \"1 minute\"; write an ISO-8601 duration such as PT30S, PT5M, PT1H or P1DT2H"
        );
    }

    #[test]
    fn wrong_types_name_the_path() {
        let e = error_of(&queue_json(r#"{"MaxDeliveryCount": "3"}"#));
        assert!(e.starts_with("UserConfig.Namespaces[0].Queues[1].Properties.MaxDeliveryCount: expected an integer"), "{e}");
        let e = error_of(&queue_json(r#"{"MaxDeliveryCount": 0}"#));
        assert!(e.contains("from 1 to 2000, got 0"), "{e}");
        let e = error_of(&queue_json(r#"{"RequiresDuplicateDetection": "yes"}"#));
        assert!(
            e.contains(
                "Properties.RequiresDuplicateDetection: expected true or false, got \"yes\""
            ),
            "{e}"
        );
        let e = error_of(&queue_json(r#"{"ForwardTo": 5}"#));
        assert!(
            e.contains("Properties.ForwardTo: expected a string, got 5"),
            "{e}"
        );
        let e = error_of(&queue_json(r#"{"LockDuration": "PT10M"}"#));
        assert!(
            e.contains(
                "LockDuration: 600s is out of range; use a lock duration between PT1S and PT5M"
            ),
            "{e}"
        );
    }

    #[test]
    fn structure_errors_name_the_path() {
        assert!(error_of("{}").starts_with("UserConfig: missing;"));
        assert!(
            error_of(r#"{"UserConfig": {"Namespaces": {}}}"#)
                .starts_with("UserConfig.Namespaces: expected an array, got an object")
        );
        assert!(
            error_of(r#"{"UserConfig": {"Namespaces": []}}"#)
                .starts_with("UserConfig.Namespaces: is empty")
        );
        let e = error_of(
            r#"{"UserConfig": {"Namespaces": [{"Name": "n", "Queues": [{"Properties": {}}]}]}}"#,
        );
        assert!(
            e.starts_with(
                "UserConfig.Namespaces[0].Queues[0].Name: missing; give the queue a name"
            ),
            "{e}"
        );
        let e = error_of(
            r#"{"UserConfig": {"Namespaces": [{"Name": "n", "Queues": [{"Name": "a/b"}]}]}}"#,
        );
        assert!(
            e.contains("Queues[0].Name: \"a/b\" is not a valid queue name"),
            "{e}"
        );
        let e = error_of(
            r#"{"UserConfig": {"Namespaces": [{"Name": "n", "Queues": [{"Name": "A"}, {"Name": "a"}]}]}}"#,
        );
        assert!(e.starts_with("UserConfig.Namespaces[0].Queues[1].Name: duplicate queue name \"a\" (also UserConfig.Namespaces[0].Queues[0]"), "{e}");
        let e = error_of("{\"UserConfig\": ");
        assert!(e.starts_with("is not valid JSON: EOF while parsing"), "{e}");
    }

    #[test]
    fn unsupported_but_set_properties_are_warnings() {
        let json = r#"{"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [{"Name": "q", "Properties": {
            "ForwardTo": "other", "ForwardDeadLetteredMessagesTo": "", "RequiresSession": true, "Colour": "blue"}},
            {"Name": "other"}],
            "Topics": [{"Name": "t"}]}]}}"#;
        let config = Config::from_json_str(json).unwrap();
        let paths: Vec<_> = config.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "UserConfig.Namespaces[0].Topics",
                "UserConfig.Namespaces[0].Queues[0].Properties.Colour",
                "UserConfig.Namespaces[0].Queues[0].Properties.RequiresSession",
            ]
        );
        assert_eq!(
            config.queues()[0].properties.forward_to.as_deref(),
            Some("other")
        );
        assert_eq!(
            config.queues()[0]
                .properties
                .forward_dead_lettered_messages_to,
            None
        );
    }

    #[test]
    fn forwarding_targets_must_exist_and_not_loop() {
        let ns = |queues: &str| {
            format!(
                r#"{{"UserConfig": {{"Namespaces": [{{"Name": "ns", "Queues": [{queues}]}}]}}}}"#
            )
        };
        let e = error_of(&ns(
            r#"{"Name": "a", "Properties": {"ForwardTo": "nope"}}, {"Name": "b"}"#,
        ));
        assert_eq!(
            e,
            "UserConfig.Namespaces[0].Queues[0].Properties.ForwardTo: \"nope\" is not a queue of this \
             namespace; name one of: a, b; or leave it empty"
        );
        let e = error_of(&ns(
            r#"{"Name": "a", "Properties": {"ForwardDeadLetteredMessagesTo": "A"}}"#,
        ));
        assert!(
            e.contains("ForwardDeadLetteredMessagesTo: a queue cannot forward to itself"),
            "{e}"
        );
        let e = error_of(&ns(
            r#"{"Name": "a", "Properties": {"ForwardTo": "b"}}, {"Name": "b", "Properties": {"ForwardTo": "c"}},
               {"Name": "c", "Properties": {"ForwardTo": "a"}}"#,
        ));
        assert!(e.starts_with("UserConfig.Namespaces[0].Queues[0].Properties.ForwardTo: forwarding loop a -> b -> c -> a"), "{e}");
        let ok = Config::from_json_str(&ns(
            r#"{"Name": "a", "Properties": {"ForwardTo": "B", "ForwardDeadLetteredMessagesTo": "c"}}, {"Name": "b"}, {"Name": "c"}"#,
        ))
        .unwrap();
        assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
    }

    #[test]
    fn missing_properties_take_defaults() {
        let config = Config::from_json_str(
            r#"{"UserConfig": {"Namespaces": [{"Name": "n", "Queues": [{"Name": "q"}]}]}}"#,
        )
        .unwrap();
        assert_eq!(config.queues()[0].properties, QueueProperties::default());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Config.json");
        std::fs::write(&file, queue_json(r#"{"LockDuration": 60}"#)).unwrap();
        let e = Config::load(&file).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{}: UserConfig.Namespaces[0].Queues[1].Properties.LockDuration: expected",
                file.display()
            )),
            "{e}"
        );
        let e = Config::load(&dir.path().join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.json") && e.contains("check the path given to --config"),
            "{e}"
        );
    }

    #[test]
    fn iso8601_durations() {
        let ok = [
            ("PT1M", 60.0),
            ("PT30S", 30.0),
            ("PT1H", 3600.0),
            ("P1D", 86400.0),
            ("P1DT2H3M4.5S", 93784.5),
            ("PT0.5S", 0.5),
            ("P2W", 1_209_600.0),
            ("P10675199DT2H48M5.4775807S", 922_337_203_685.477),
        ];
        for (text, secs) in ok {
            let d = parse_iso8601_duration(text).unwrap_or_else(|| panic!("{text}"));
            assert!((d.as_secs_f64() - secs).abs() < 1e-3, "{text}: {d:?}");
        }
        for bad in [
            "", "P", "PT", "1M", "PT1", "PTM", "PT1S1M", "P1Y", "P1M", "PT1H1H", "00:01:00",
            "PT-1S",
        ] {
            assert_eq!(parse_iso8601_duration(bad), None, "{bad}");
        }
    }
}
