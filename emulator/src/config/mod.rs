//! The official emulator's `Config.json` (`UserConfig.Namespaces[].Queues[]` and `Topics[]` with their
//! `Subscriptions[]` and `Rules[]`), and the same model built in Rust for tests of other crates.
//!
//! The file is read with serde derive (`raw`), `serde_path_to_error` naming the exact JSON path of any
//! problem (`UserConfig.Namespaces[0].Queues[1].Properties.LockDuration`) with how to fix it, and
//! `serde_ignored` turning unknown keys into [`ConfigWarning`]s, which the CLI prints, so typos do
//! not pass silently. `//` and `/* */` comments are allowed: the official sample has them.

mod raw;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::filter::{CorrelationFilter, Filter, FilterValue, Rule, SqlAction, SqlFilter};

/// The lab's `lab/servicebus/Config.json`. A copy inside the crate, because a published crate cannot
/// reach files outside its directory; `lab_default_equals_the_lab_file` keeps the two equal.
const LAB_CONFIG_JSON: &str = include_str!("../lab_config.json");

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Every namespace in the file; the emulator serves the first one (the official emulator has one).
    pub namespaces: Vec<NamespaceConfig>,
    /// `UserConfig.Logging.Type` (`File` or `Console`); informational only.
    pub logging_type: Option<String>,
    /// Set-but-unsupported or unknown properties, for the CLI to print at start.
    pub warnings: Vec<ConfigWarning>,
}

/// One `UserConfig.Namespaces[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceConfig {
    pub name: String,
    pub queues: Vec<QueueConfig>,
    pub topics: Vec<TopicConfig>,
}

/// One `Queues[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub name: String,
    pub properties: QueueProperties,
}

/// A queue's `Properties`; missing ones take the official emulator's defaults.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueProperties {
    pub lock_duration: Duration,
    pub max_delivery_count: u32,
    pub default_message_time_to_live: Duration,
    pub dead_lettering_on_message_expiration: bool,
    pub requires_duplicate_detection: bool,
    pub duplicate_detection_history_time_window: Duration,
    /// Messages sent to this queue (or matched by this subscription) go to that queue or topic instead.
    pub forward_to: Option<String>,
    /// Messages dead-lettered here go to that queue or topic instead of this entity's dead-letter queue.
    pub forward_dead_lettered_messages_to: Option<String>,
    /// Only session receivers may receive, and every message needs a `SessionId` (see
    /// `broker::session`).
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

/// One `Topics[]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub name: String,
    pub properties: TopicProperties,
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// A topic's `Properties`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicProperties {
    /// Caps the TTL of every message sent to the topic (each subscription may cap it further).
    pub default_message_time_to_live: Duration,
    pub requires_duplicate_detection: bool,
    pub duplicate_detection_history_time_window: Duration,
}

impl Default for TopicProperties {
    fn default() -> Self {
        let q = QueueProperties::default();
        TopicProperties {
            default_message_time_to_live: q.default_message_time_to_live,
            requires_duplicate_detection: q.requires_duplicate_detection,
            duplicate_detection_history_time_window: q.duplicate_detection_history_time_window,
        }
    }
}

/// One `Subscriptions[]` entry: a queue-like entity with rules.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionConfig {
    pub name: String,
    /// The queue properties a subscription has (the duplicate-detection ones are the topic's).
    pub properties: QueueProperties,
    /// Evaluated for every message sent to the topic; none means the subscription receives nothing.
    pub rules: Vec<Rule>,
    /// A filter or action that fails for a message dead-letters that copy (else the copy is dropped).
    /// Service Bus's default is true.
    pub dead_lettering_on_filter_evaluation_exceptions: bool,
}

impl SubscriptionConfig {
    /// A subscription with default properties and the `$Default` rule (a true filter), as Service Bus
    /// creates one.
    pub fn new(name: impl Into<String>) -> SubscriptionConfig {
        SubscriptionConfig {
            name: name.into(),
            properties: QueueProperties::default(),
            rules: vec![Rule::default_rule()],
            dead_lettering_on_filter_evaluation_exceptions: true,
        }
    }

    /// Replace the rules (`$Default` included) with these.
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> SubscriptionConfig {
        self.rules = rules.into_iter().collect();
        self
    }

    pub fn properties(mut self, properties: QueueProperties) -> SubscriptionConfig {
        self.properties = properties;
        self
    }
}

impl TopicConfig {
    /// A topic with default properties and no subscriptions yet.
    pub fn new(name: impl Into<String>) -> TopicConfig {
        TopicConfig {
            name: name.into(),
            properties: TopicProperties::default(),
            subscriptions: Vec::new(),
        }
    }

    pub fn subscription(mut self, subscription: SubscriptionConfig) -> TopicConfig {
        self.subscriptions.push(subscription);
        self
    }

    pub fn properties(mut self, properties: TopicProperties) -> TopicConfig {
        self.properties = properties;
        self
    }
}

const FIX_STRUCTURE: &str = "the file must look like {\"UserConfig\": {\"Namespaces\": [{\"Name\": ..., \"Queues\": [...]}]}} as in lab/servicebus/Config.json";

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

    /// Validate the text of a `Config.json` (JSON with `//` and `/* */` comments).
    pub fn from_json_str(text: &str) -> Result<Config, ConfigError> {
        // Comments become spaces, so line and column in syntax errors stay those of the file.
        let root: Value =
            serde_json::from_reader(json_comments::StripComments::new(text.as_bytes()))
                .map_err(|source| ConfigError::Syntax { file: None, source })?;
        let mut warnings = Vec::new();
        let file = raw::read(root, &mut warnings)?;
        let mut config = build(file, &mut warnings)?;
        config.warnings = warnings;
        Ok(config)
    }

    /// The served namespace's queues (the first namespace; others are warned about).
    pub fn queues(&self) -> &[QueueConfig] {
        self.namespaces
            .first()
            .map(|n| n.queues.as_slice())
            .unwrap_or(&[])
    }

    /// The served namespace's topics.
    pub fn topics(&self) -> &[TopicConfig] {
        self.namespaces
            .first()
            .map(|n| n.topics.as_slice())
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

    /// Add a topic to the served namespace:
    /// `Config::with_queues(["q"]).topic(TopicConfig::new("t").subscription(SubscriptionConfig::new("s")))`.
    pub fn topic(mut self, topic: TopicConfig) -> Config {
        if self.namespaces.is_empty() {
            self = Self::in_default_namespace(Vec::new());
        }
        self.namespaces[0].topics.push(topic);
        self
    }

    /// The official emulator's namespace name, as in the lab's Config.json.
    fn in_default_namespace(queues: Vec<QueueConfig>) -> Config {
        Config {
            namespaces: vec![NamespaceConfig {
                name: "sbemulatorns".to_string(),
                queues,
                topics: Vec::new(),
            }],
            logging_type: None,
            warnings: Vec::new(),
        }
    }
}

/// Check the deserialized file and build the model; `warnings` collects what is set but unsupported.
fn build(file: raw::File, warnings: &mut Vec<ConfigWarning>) -> Result<Config, ConfigError> {
    let user = file
        .user_config
        .ok_or_else(|| invalid("UserConfig", "missing", FIX_STRUCTURE))?;
    let logging_type = user.logging.and_then(|l| l.r#type).map(|t| t.0);
    let ns_path = "UserConfig.Namespaces";
    let namespaces = user
        .namespaces
        .ok_or_else(|| invalid(ns_path, "missing", FIX_STRUCTURE))?;
    if namespaces.is_empty() {
        return Err(invalid(
            ns_path,
            "is empty",
            "add one namespace with at least one queue",
        ));
    }
    let mut parsed = Vec::with_capacity(namespaces.len());
    for (i, ns) in namespaces.into_iter().enumerate() {
        let path = format!("{ns_path}[{i}]");
        if i > 0 {
            warn(
                warnings,
                &path,
                "only the first namespace is served; this one is ignored",
            );
        }
        parsed.push(namespace(ns, &path, warnings)?);
    }
    Ok(Config {
        namespaces: parsed,
        logging_type,
        warnings: Vec::new(),
    })
}

fn warn(warnings: &mut Vec<ConfigWarning>, path: &str, message: impl Into<String>) {
    warnings.push(ConfigWarning {
        path: path.to_string(),
        message: message.into(),
    });
}

fn required_name(name: Option<raw::Str>, path: &str, fix: &str) -> Result<String, ConfigError> {
    let p = format!("{path}.Name");
    match name {
        None => Err(invalid(&p, "missing", fix)),
        Some(raw::Str(s)) if s.trim().is_empty() => Err(invalid(&p, "is empty", fix)),
        Some(raw::Str(s)) => Ok(s),
    }
}

/// Refuse a second entity whose name differs only by case from an earlier one in the same list.
fn check_unique<'a>(
    names: impl IntoIterator<Item = &'a str>,
    list_path: &str,
    kind: &str,
) -> Result<(), ConfigError> {
    let names: Vec<&str> = names.into_iter().collect();
    for (i, name) in names.iter().enumerate() {
        if let Some(first) = names[..i].iter().position(|n| n.eq_ignore_ascii_case(name)) {
            return Err(invalid(
                &format!("{list_path}[{i}].Name"),
                format!(
                    "duplicate {kind} name \"{name}\" (also {list_path}[{first}]; names are case-insensitive)"
                ),
                format!("give every {kind} a distinct name"),
            ));
        }
    }
    Ok(())
}

fn namespace(
    ns: raw::Namespace,
    path: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<NamespaceConfig, ConfigError> {
    let name = required_name(
        ns.name,
        path,
        "give the namespace a name, e.g. \"sbemulatorns\"",
    )?;
    let queues_path = format!("{path}.Queues");
    let mut queues = Vec::new();
    for (i, q) in ns.queues.unwrap_or_default().into_iter().enumerate() {
        let qpath = format!("{queues_path}[{i}]");
        let name = required_name(
            q.name,
            &qpath,
            "give the queue a name, e.g. \"queue-messages\"",
        )?;
        validate_entity_name(&name, &format!("{qpath}.Name"), "queue")?;
        let props_path = format!("{qpath}.Properties");
        let properties = queue_properties(q.properties.unwrap_or_default(), &props_path)?;
        queues.push(QueueConfig { name, properties });
        check_unique(
            queues.iter().map(|q| q.name.as_str()),
            &queues_path,
            "queue",
        )?;
    }
    let topics_path = format!("{path}.Topics");
    let mut topics = Vec::new();
    for (i, t) in ns.topics.unwrap_or_default().into_iter().enumerate() {
        let tpath = format!("{topics_path}[{i}]");
        topics.push(topic(t, &tpath, warnings)?);
        check_unique(
            topics.iter().map(|t| t.name.as_str()),
            &topics_path,
            "topic",
        )?;
        if let Some(q) = queues
            .iter()
            .position(|q| q.name.eq_ignore_ascii_case(&topics[i].name))
        {
            return Err(invalid(
                &format!("{tpath}.Name"),
                format!(
                    "\"{}\" is also the name of {queues_path}[{q}]; queues and topics share one namespace",
                    topics[i].name
                ),
                "rename the topic or the queue",
            ));
        }
    }
    let ns = NamespaceConfig {
        name,
        queues,
        topics,
    };
    check_forwarding(&ns, path)?;
    Ok(ns)
}

fn lock_duration(
    d: Option<raw::IsoDuration>,
    path: &str,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let lock_duration = d.map_or(QueueProperties::default().lock_duration, |d| d.0);
    if lock_duration.is_zero() || lock_duration > max {
        return Err(invalid(
            &format!("{path}.LockDuration"),
            format!("{lock_duration:?} is out of range"),
            "use a lock duration between PT1S and PT5M",
        ));
    }
    Ok(lock_duration)
}

fn time_to_live(d: Option<raw::IsoDuration>, path: &str) -> Result<Duration, ConfigError> {
    let ttl = d.map_or(
        QueueProperties::default().default_message_time_to_live,
        |d| d.0,
    );
    if ttl.is_zero() {
        return Err(invalid(
            &format!("{path}.DefaultMessageTimeToLive"),
            "must be longer than zero",
            "use a duration such as PT1H",
        ));
    }
    Ok(ttl)
}

/// An empty string is how the official file says "not forwarded". Targets are checked once all
/// entities of the namespace are known (`check_forwarding`).
fn forward(s: Option<raw::Str>) -> Option<String> {
    s.map(|s| s.0).filter(|s| !s.is_empty())
}

fn queue_properties(p: raw::QueueProperties, path: &str) -> Result<QueueProperties, ConfigError> {
    let d = QueueProperties::default();
    let lock_duration = lock_duration(p.lock_duration, path, Duration::from_secs(300))?;
    let max_delivery_count = p.max_delivery_count.map_or(d.max_delivery_count, |c| c.0);
    let default_message_time_to_live = time_to_live(p.default_message_time_to_live, path)?;
    let requires_session = p.requires_session.is_some_and(|b| b.0);
    Ok(QueueProperties {
        lock_duration,
        max_delivery_count,
        default_message_time_to_live,
        dead_lettering_on_message_expiration: p
            .dead_lettering_on_message_expiration
            .is_some_and(|b| b.0),
        requires_duplicate_detection: p.requires_duplicate_detection.is_some_and(|b| b.0),
        duplicate_detection_history_time_window: p
            .duplicate_detection_history_time_window
            .map_or(d.duplicate_detection_history_time_window, |w| w.0),
        forward_to: forward(p.forward_to),
        forward_dead_lettered_messages_to: forward(p.forward_dead_lettered_messages_to),
        requires_session,
    })
}

fn topic(
    t: raw::Topic,
    path: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<TopicConfig, ConfigError> {
    let name = required_name(t.name, path, "give the topic a name, e.g. \"topic.1\"")?;
    validate_entity_name(&name, &format!("{path}.Name"), "topic")?;
    let props_path = format!("{path}.Properties");
    let p = t.properties.unwrap_or_default();
    let d = TopicProperties::default();
    let properties = TopicProperties {
        default_message_time_to_live: time_to_live(p.default_message_time_to_live, &props_path)?,
        requires_duplicate_detection: p.requires_duplicate_detection.is_some_and(|b| b.0),
        duplicate_detection_history_time_window: p
            .duplicate_detection_history_time_window
            .map_or(d.duplicate_detection_history_time_window, |w| w.0),
    };
    let subs_path = format!("{path}.Subscriptions");
    let raw_subs = t.subscriptions.unwrap_or_default();
    if raw_subs.is_empty() {
        warn(
            warnings,
            &subs_path,
            "the topic has no subscriptions: messages sent to it are accepted and dropped",
        );
    }
    let mut subscriptions = Vec::with_capacity(raw_subs.len());
    for (i, s) in raw_subs.into_iter().enumerate() {
        subscriptions.push(subscription(s, &format!("{subs_path}[{i}]"))?);
        check_unique(
            subscriptions.iter().map(|s| s.name.as_str()),
            &subs_path,
            "subscription",
        )?;
    }
    Ok(TopicConfig {
        name,
        properties,
        subscriptions,
    })
}

fn subscription(s: raw::Subscription, path: &str) -> Result<SubscriptionConfig, ConfigError> {
    let name = required_name(
        s.name,
        path,
        "give the subscription a name, e.g. \"subscription.1\"",
    )?;
    validate_entity_name(&name, &format!("{path}.Name"), "subscription")?;
    if name.len() > 50 {
        return Err(invalid(
            &format!("{path}.Name"),
            format!("\"{name}\" is longer than 50 characters"),
            "use a subscription name of at most 50 characters",
        ));
    }
    let props_path = format!("{path}.Properties");
    let p = s.properties.unwrap_or_default();
    let d = QueueProperties::default();
    let requires_session = p.requires_session.is_some_and(|b| b.0);
    let properties = QueueProperties {
        lock_duration: lock_duration(p.lock_duration, &props_path, Duration::from_secs(300))?,
        max_delivery_count: p.max_delivery_count.map_or(d.max_delivery_count, |c| c.0),
        default_message_time_to_live: time_to_live(p.default_message_time_to_live, &props_path)?,
        dead_lettering_on_message_expiration: p
            .dead_lettering_on_message_expiration
            .is_some_and(|b| b.0),
        forward_to: forward(p.forward_to),
        forward_dead_lettered_messages_to: forward(p.forward_dead_lettered_messages_to),
        requires_session,
        ..d
    };
    let rules_path = format!("{path}.Rules");
    let raw_rules = s.rules.unwrap_or_default();
    // A subscription declared without rules gets `$Default`, as Service Bus creates it (the official
    // sample's subscription.3 relies on that).
    let rules = if raw_rules.is_empty() {
        vec![Rule::default_rule()]
    } else {
        let mut rules: Vec<Rule> = Vec::with_capacity(raw_rules.len());
        for (i, r) in raw_rules.into_iter().enumerate() {
            rules.push(rule(r, &format!("{rules_path}[{i}]"))?);
            check_unique(rules.iter().map(|r| r.name.as_str()), &rules_path, "rule")?;
        }
        rules
    };
    Ok(SubscriptionConfig {
        name,
        properties,
        rules,
        dead_lettering_on_filter_evaluation_exceptions: p
            .dead_lettering_on_filter_evaluation_exceptions
            .is_none_or(|b| b.0),
    })
}

const FIX_RULE: &str = "write \"Properties\": {\"FilterType\": \"Sql\", \"SqlFilter\": {\"SqlExpression\": \"color = 'red'\"}} or {\"FilterType\": \"Correlation\", \"CorrelationFilter\": {\"Label\": \"...\"}}";

fn rule(r: raw::Rule, path: &str) -> Result<Rule, ConfigError> {
    let name = required_name(r.name, path, "give the rule a name, e.g. \"sql-filter-1\"")?;
    let props_path = format!("{path}.Properties");
    let p = r
        .properties
        .ok_or_else(|| invalid(&props_path, "missing", FIX_RULE))?;
    let type_path = format!("{props_path}.FilterType");
    let filter_type = match p.filter_type {
        Some(raw::Str(t)) => t,
        None => return Err(invalid(&type_path, "missing", FIX_RULE)),
    };
    let filter = if filter_type.eq_ignore_ascii_case("Sql") {
        let expr_path = format!("{props_path}.SqlFilter.SqlExpression");
        let text = p.sql_filter.and_then(|f| f.sql_expression).ok_or_else(|| {
            invalid(
                &expr_path,
                "missing",
                "put the expression in \"SqlFilter\": {\"SqlExpression\": \"...\"}",
            )
        })?;
        Filter::Sql(
            SqlFilter::parse(&text.0)
                .map_err(|e| invalid(&expr_path, e.to_string(), "fix the SQL expression"))?,
        )
    } else if filter_type.eq_ignore_ascii_case("Correlation") {
        let cpath = format!("{props_path}.CorrelationFilter");
        let c = p.correlation_filter.ok_or_else(|| {
            invalid(
                &cpath,
                "missing",
                "add \"CorrelationFilter\": {...} with at least one property such as \"Label\"",
            )
        })?;
        Filter::Correlation(correlation(c, &cpath)?)
    } else {
        return Err(invalid(
            &type_path,
            format!("unknown filter type \"{filter_type}\""),
            "use \"Sql\" or \"Correlation\"",
        ));
    };
    let mut rule = Rule::new(name, filter)
        .map_err(|e| invalid(&format!("{path}.Name"), e.to_string(), "rename the rule"))?;
    if let Some(action) = p.action {
        let apath = format!("{props_path}.Action.SqlExpression");
        let text = action.sql_expression.ok_or_else(|| {
            invalid(
                &apath,
                "missing",
                "put the action in \"Action\": {\"SqlExpression\": \"SET ...\"}",
            )
        })?;
        rule.action = Some(
            SqlAction::parse(&text.0)
                .map_err(|e| invalid(&apath, e.to_string(), "fix the SQL action"))?,
        );
    }
    Ok(rule)
}

fn correlation(c: raw::CorrelationFilter, path: &str) -> Result<CorrelationFilter, ConfigError> {
    let s = |v: Option<raw::Str>| v.map(|s| s.0);
    let mut properties = Vec::new();
    for (key, value) in c.properties.unwrap_or_default() {
        let v = match &value {
            Value::String(s) => FilterValue::String(s.clone()),
            Value::Bool(b) => FilterValue::Bool(*b),
            Value::Number(n) => n
                .as_i64()
                .map(FilterValue::Long)
                .or_else(|| n.as_f64().map(FilterValue::Double))
                .unwrap_or(FilterValue::Opaque),
            other => {
                return Err(invalid(
                    &format!("{path}.Properties.{key}"),
                    format!(
                        "expected a string, number or boolean, got {}",
                        describe(other)
                    ),
                    "write the value the user property must equal",
                ));
            }
        };
        properties.push((key, v));
    }
    let filter = CorrelationFilter {
        correlation_id: s(c.correlation_id),
        message_id: s(c.message_id),
        to: s(c.to),
        reply_to: s(c.reply_to),
        label: s(c.label),
        session_id: s(c.session_id),
        reply_to_session_id: s(c.reply_to_session_id),
        content_type: s(c.content_type),
        properties,
    };
    if filter.is_empty() {
        return Err(invalid(
            path,
            "has no properties, so it would match every message",
            "set at least one property such as \"Label\", or use a Sql filter \"1=1\" to match all",
        ));
    }
    Ok(filter)
}

/// Forwarding targets must be other entities of the namespace (queues, or topics), and queue
/// `ForwardTo` chains must end. Longer paths through topics are bounded at run time by the hop limit.
fn check_forwarding(ns: &NamespaceConfig, path: &str) -> Result<(), ConfigError> {
    let queue_index = |name: &str| {
        ns.queues
            .iter()
            .position(|q| q.name.eq_ignore_ascii_case(name))
    };
    let is_topic = |name: &str| ns.topics.iter().any(|t| t.name.eq_ignore_ascii_case(name));
    let names = || {
        ns.queues
            .iter()
            .map(|q| q.name.as_str())
            .chain(ns.topics.iter().map(|t| t.name.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let what = if ns.topics.is_empty() {
        "a queue"
    } else {
        "a queue or topic"
    };
    let check =
        |owner: &str, props: &QueueProperties, props_path: &str| -> Result<(), ConfigError> {
            let targets = [
                ("ForwardTo", &props.forward_to),
                (
                    "ForwardDeadLetteredMessagesTo",
                    &props.forward_dead_lettered_messages_to,
                ),
            ];
            for (key, target) in targets {
                let Some(target) = target else { continue };
                let path = format!("{props_path}.{key}");
                if target.eq_ignore_ascii_case(owner) {
                    return Err(invalid(
                        &path,
                        "a queue cannot forward to itself",
                        "name another queue, or leave it empty",
                    ));
                }
                if queue_index(target).is_none() && !is_topic(target) {
                    return Err(invalid(
                        &path,
                        format!("\"{target}\" is not {what} of this namespace"),
                        format!("name one of: {}; or leave it empty", names()),
                    ));
                }
            }
            Ok(())
        };
    for (i, q) in ns.queues.iter().enumerate() {
        check(
            &q.name,
            &q.properties,
            &format!("{path}.Queues[{i}].Properties"),
        )?;
        // Follow the ForwardTo chain from this queue; coming back to a queue means it never ends.
        let mut seen = vec![i];
        let mut at = i;
        while let Some(next) = ns.queues[at]
            .properties
            .forward_to
            .as_deref()
            .and_then(queue_index)
        {
            if seen.contains(&next) {
                let chain: Vec<_> = seen
                    .iter()
                    .chain([&next])
                    .map(|&k| ns.queues[k].name.as_str())
                    .collect();
                return Err(invalid(
                    &format!("{path}.Queues[{i}].Properties.ForwardTo"),
                    format!("forwarding loop {}", chain.join(" -> ")),
                    "break the loop by clearing ForwardTo on one of these queues",
                ));
            }
            seen.push(next);
            at = next;
        }
    }
    for (t, topic) in ns.topics.iter().enumerate() {
        for (s, sub) in topic.subscriptions.iter().enumerate() {
            let props_path = format!("{path}.Topics[{t}].Subscriptions[{s}].Properties");
            check(&sub.name, &sub.properties, &props_path)?;
            if sub
                .properties
                .forward_to
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case(&topic.name))
            {
                return Err(invalid(
                    &format!("{props_path}.ForwardTo"),
                    "a subscription cannot forward to its own topic (every message would loop)",
                    "name a queue or another topic, or leave it empty",
                ));
            }
        }
    }
    Ok(())
}

/// Entity names travel inside AMQP addresses (`amqps://host/<name>/$DeadLetterQueue`), so the characters
/// that would change how an address splits are refused.
fn validate_entity_name(name: &str, path: &str, kind: &str) -> Result<(), ConfigError> {
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
            format!("\"{name}\" is not a valid {kind} name"),
            "use letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
        ))
    }
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
