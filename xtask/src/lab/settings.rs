//! The job's settings: one JSON file, read by Terraform (as `*.auto.tfvars.json`) and by the local lab.
//!
//! Keeping the tutorial's values in a single file means the local controller and the Azure job cannot
//! drift apart: change `messageCount` there and both paths change. The keys are Terraform variable
//! names (declared with validation in `terraform/variables.tf`); [`JobSettings::validate`] applies the
//! same rules here so the local lab rejects what `terraform plan` would reject, with the same advice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Where the settings live, relative to the workspace root.
pub const SETTINGS_FILE: &str = "terraform/job.auto.tfvars.json";

/// The only KEDA scaler this lab is about.
pub const SERVICEBUS_SCALER: &str = "azure-servicebus";

/// An event-triggered Container Apps job, as the tutorial configures it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Job name; executions are named `<job_name>-<7 random characters>`. The container has the same name.
    pub job_name: String,
    /// The Service Bus queue the scaler watches and the worker drains.
    pub queue_name: String,
    /// Seconds a replica may run before it is stopped (`--replica-timeout`).
    pub replica_timeout_in_seconds: u64,
    /// Retries of a failed replica before the execution is `Failed` (`--replica-retry-limit`).
    pub replica_retry_limit: u32,
    /// Replicas that must succeed for the execution to succeed (`--replica-completion-count`).
    pub replica_completion_count: u32,
    /// Replicas started per execution (`--parallelism`).
    pub parallelism: u32,
    /// vCPU per replica, in steps of 0.25.
    pub cpu: f64,
    /// Memory per replica, e.g. `0.5Gi`.
    pub memory: String,
    /// Executions kept running even with an empty queue; 0 means "only when there are messages".
    pub min_executions: u32,
    /// Executions started at most per polling interval.
    pub max_executions: u32,
    /// How often the scaler counts the queue's active messages.
    pub polling_interval_in_seconds: u64,
    /// Name of the KEDA scale rule.
    pub scale_rule_name: String,
    /// KEDA scaler type; always `azure-servicebus` here.
    pub scale_rule_type: String,
    /// Target active messages per execution (KEDA `messageCount`): 1 means one execution per message.
    pub message_count: u32,
    /// KEDA `activationMessageCount`: no execution starts until the queue holds MORE active messages than
    /// this (strictly greater-than). 0, KEDA's default and the tutorial's, starts one for the first
    /// message; 1 means a single message starts nothing.
    #[serde(deserialize_with = "activation_message_count")]
    pub activation_message_count: u32,
    /// Names of the environment variables the worker reads.
    pub env_names: EnvNames,
}

/// The worker's environment contract (the tutorial's three variables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvNames {
    /// Holds `<namespace>.servicebus.windows.net`.
    pub servicebus_fqdn: String,
    /// Holds the client id of the user-assigned identity the worker authenticates with.
    pub managed_identity_client_id: String,
    /// Holds the queue name.
    pub queue_name: String,
}

impl JobSettings {
    /// The settings file of this checkout.
    pub fn default_path() -> PathBuf {
        crate::util::project_root().join(SETTINGS_FILE)
    }

    /// Read and validate the settings file of this checkout.
    pub fn load_default() -> anyhow::Result<Self> {
        Self::load(&Self::default_path())
    }

    /// Read and validate a settings file. Errors name the file and the key, and say where the
    /// tutorial's values are.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the job settings file {}", path.display()))?;
        let tutorial = if path == Self::default_path() {
            format!("the tutorial's values are in git: `git diff -- {SETTINGS_FILE}`")
        } else {
            format!("the tutorial's values are in {SETTINGS_FILE}")
        };
        Self::from_json(&text).with_context(|| {
            format!(
                "the job settings file {} is not valid ({tutorial})",
                path.display()
            )
        })
    }

    /// Parse and validate settings from JSON text.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let mut json = serde_json::Deserializer::from_str(text);
        let settings: Self = serde_path_to_error::deserialize(&mut json).map_err(|error| {
            let key = error.path().to_string();
            let problem = describe(error.inner());
            // Unknown and missing keys are about the whole object, and serde names the key itself.
            if key == "."
                || problem.starts_with("unknown field")
                || problem.starts_with("missing field")
            {
                anyhow::anyhow!(
                    "{problem} (the file holds exactly the keys declared in terraform/variables.tf)"
                )
            } else if problem.starts_with(&key) {
                anyhow::anyhow!("{problem}")
            } else {
                anyhow::anyhow!("{key}: {problem}")
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Check every value; the error lists every problem, each with the rule it breaks.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        check(
            is_job_name(&self.job_name),
            format!(
                "job_name {:?}: use 1 to 32 lowercase letters, digits or '-', starting and ending with a \
                 letter or digit, without '--' (azurerm's rule for a Container Apps job name)",
                self.job_name
            ),
        );
        check(
            is_queue_name(&self.queue_name),
            format!(
                "queue_name {:?}: use 1 to 260 letters, digits, '.', '-', '_' or '/', \
                 starting and ending with a letter or digit",
                self.queue_name
            ),
        );
        check(
            self.replica_timeout_in_seconds >= 1,
            "replica_timeout_in_seconds: must be at least 1 (the tutorial uses 86400)".into(),
        );
        check(
            self.replica_completion_count >= 1,
            "replica_completion_count: must be at least 1 (the tutorial uses 1)".into(),
        );
        check(
            self.parallelism >= 1,
            "parallelism: must be at least 1 (the tutorial uses 1)".into(),
        );
        check(
            self.replica_completion_count <= self.parallelism,
            format!(
                "replica_completion_count {} is more than parallelism {}: an execution could never \
                 succeed; make them equal (the tutorial uses 1 and 1)",
                self.replica_completion_count, self.parallelism
            ),
        );
        check(
            is_quarter_cpu(self.cpu),
            format!(
                "cpu {}: use a multiple of 0.25 between 0.25 and 4 (the tutorial uses 0.25)",
                self.cpu
            ),
        );
        check(
            self.memory_gib() == Some(self.cpu * 2.0),
            format!(
                "memory {:?}: on the Consumption profile memory is twice the cpu in Gi, so cpu {} needs \"{}Gi\"",
                self.memory,
                self.cpu,
                self.cpu * 2.0
            ),
        );
        check(
            self.max_executions >= 1,
            "max_executions: must be at least 1 (the tutorial uses 1)".into(),
        );
        check(
            self.min_executions <= self.max_executions,
            format!(
                "min_executions {} is more than max_executions {}; lower min_executions (the tutorial uses 0)",
                self.min_executions, self.max_executions
            ),
        );
        check(
            self.polling_interval_in_seconds >= 1,
            "polling_interval_in_seconds: must be at least 1 (Container Apps defaults to 30)"
                .into(),
        );
        check(
            is_rule_name(&self.scale_rule_name),
            format!(
                "scale_rule_name {:?}: use lowercase letters, digits, '-' or '.', starting and ending \
                 with a letter or digit",
                self.scale_rule_name
            ),
        );
        check(
            self.scale_rule_type == SERVICEBUS_SCALER,
            format!(
                "scale_rule_type {:?}: this lab only knows the {SERVICEBUS_SCALER:?} scaler",
                self.scale_rule_type
            ),
        );
        check(
            self.message_count >= 1,
            "message_count: must be at least 1; 1 starts one execution per message".into(),
        );
        for (key, name) in [
            ("env_names.servicebus_fqdn", &self.env_names.servicebus_fqdn),
            (
                "env_names.managed_identity_client_id",
                &self.env_names.managed_identity_client_id,
            ),
            ("env_names.queue_name", &self.env_names.queue_name),
        ] {
            check(
                is_env_name(name),
                format!(
                    "{key} {name:?}: use uppercase letters, digits and '_', starting with a letter"
                ),
            );
        }
        if problems.is_empty() {
            return Ok(());
        }
        bail!("{}", problems.join("\n"))
    }

    /// How long a replica may run.
    pub fn replica_timeout(&self) -> Duration {
        Duration::from_secs(self.replica_timeout_in_seconds)
    }

    /// How often the scaler looks at the queue.
    pub fn polling_interval(&self) -> Duration {
        Duration::from_secs(self.polling_interval_in_seconds)
    }

    /// `memory` in GiB, if it is written as `<number>Gi`.
    pub fn memory_gib(&self) -> Option<f64> {
        self.memory.strip_suffix("Gi")?.parse().ok()
    }

    /// KEDA's scale-rule metadata for the queue, as Container Apps expects it (all values are strings).
    pub fn scale_rule_metadata(&self, namespace: &str) -> Vec<(&'static str, String)> {
        vec![
            ("queueName", self.queue_name.clone()),
            ("namespace", namespace.to_owned()),
            ("messageCount", self.message_count.to_string()),
            (
                "activationMessageCount",
                self.activation_message_count.to_string(),
            ),
        ]
    }

    /// One line for the lab's header, e.g. `job job-rust (event trigger, messageCount 1, max executions 1)`.
    /// A non-default activation threshold is shown too: it is why a single message may start nothing.
    pub fn summary(&self) -> String {
        let activation = match self.activation_message_count {
            0 => String::new(),
            count => format!(", activationMessageCount {count}"),
        };
        format!(
            "job {} (event trigger, messageCount {}{activation}, max executions {})",
            self.job_name, self.message_count, self.max_executions
        )
    }
}

/// `activation_message_count` as Terraform's validation reads it: a whole number of 0 or more. Checked
/// while parsing (a `u32` cannot hold the bad values) so the error can say what to write instead.
fn activation_message_count<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    let value = serde_json::Number::deserialize(deserializer)?;
    value
        .as_u64()
        .and_then(|count| u32::try_from(count).ok())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "activation_message_count {value}: must be a whole number of 0 or more; 0 (KEDA's \
                 default) starts an execution for the first message, 1 waits for a second"
            ))
        })
}

/// serde_json's message in a participant's words, without the position (the key says where):
/// `invalid type: string "five", expected u32` becomes `expected a whole number, got "five"`.
fn describe(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let text = match text.rsplit_once(" at line ") {
        Some((message, _)) if error.line() > 0 => message,
        _ => text.as_str(),
    };
    let Some((got, expected)) = text
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.rsplit_once(", expected "))
    else {
        return text.to_owned();
    };
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        other if other.starts_with("struct ") => "an object",
        other => other,
    };
    // serde names the kind and quotes the value: `string "five"`, `integer `-1``, `boolean `true``.
    let got = ["string ", "integer ", "floating point ", "boolean "]
        .iter()
        .find_map(|kind| got.strip_prefix(kind))
        .map_or(got, |value| value.trim_matches('`'));
    format!("expected {expected}, got {got}")
}

/// The azurerm provider's `ContainerAppJobName` validation (internal/services/containerapps/validate):
/// 1 to 32 characters, lowercase letters, digits and '-', first and last a letter or digit, no "--".
fn is_job_name(name: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=32).contains(&name.len())
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
        && !name.contains("--")
        && name.chars().all(|c| alphanumeric(c) || c == '-')
}

fn is_queue_name(name: &str) -> bool {
    (1..=260).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

fn is_rule_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

fn is_env_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_quarter_cpu(cpu: f64) -> bool {
    let quarters = cpu * 4.0;
    (0.25..=4.0).contains(&cpu) && quarters.fract() == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> JobSettings {
        JobSettings::load_default().unwrap()
    }

    #[test]
    fn committed_settings_are_valid_and_read_as_durations() {
        let settings = committed();
        assert_eq!(settings.replica_timeout(), Duration::from_secs(86_400));
        assert_eq!(settings.polling_interval(), Duration::from_secs(30));
        assert_eq!(settings.memory_gib(), Some(0.5));
        assert_eq!(
            settings.summary(),
            "job job-rust (event trigger, messageCount 1, max executions 1)"
        );
        assert_eq!(
            settings.scale_rule_metadata("sb-lab-x7k2"),
            vec![
                ("queueName", "queue-messages".to_owned()),
                ("namespace", "sb-lab-x7k2".to_owned()),
                ("messageCount", "1".to_owned()),
                ("activationMessageCount", "0".to_owned())
            ]
        );
    }

    #[test]
    fn job_names_follow_the_azurerm_rule() {
        for good in ["j", "7", "job-rust", "0job", &"a".repeat(32)] {
            assert!(is_job_name(good), "{good}");
        }
        for bad in [
            "",
            "-job",
            "job-",
            "job--rust",
            "Job",
            "job_rust",
            &"a".repeat(33),
        ] {
            assert!(!is_job_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_problem_is_named_with_its_fix() {
        let mut settings = committed();
        settings.job_name = "Job_Rust".into();
        settings.min_executions = 3;
        settings.max_executions = 2;
        settings.memory = "1Gi".into();
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("job_name \"Job_Rust\": use 1 to 32 lowercase letters"),
            "{error}"
        );
        assert!(
            error.contains("min_executions 3 is more than max_executions 2"),
            "{error}"
        );
        assert!(error.contains("cpu 0.25 needs \"0.5Gi\""), "{error}");
        assert_eq!(error.lines().count(), 3, "{error}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_key_named() {
        let mut value = serde_json::to_value(committed()).unwrap();
        value["messagecount"] = 2.into();
        let error = format!(
            "{:#}",
            JobSettings::from_json(&value.to_string()).unwrap_err()
        );
        assert!(error.contains("unknown field `messagecount`"), "{error}");
        assert!(error.contains("terraform/variables.tf"), "{error}");
    }

    #[test]
    fn activation_message_count_must_be_a_whole_number_of_zero_or_more() {
        for bad in [serde_json::json!(-1), serde_json::json!(0.5)] {
            let mut value = serde_json::to_value(committed()).unwrap();
            value["activation_message_count"] = bad.clone();
            let error = format!(
                "{:#}",
                JobSettings::from_json(&value.to_string()).unwrap_err()
            );
            assert!(
                error.contains(&format!(
                    "activation_message_count {bad}: must be a whole number of 0 or more"
                )),
                "{error}"
            );
        }
        let mut value = serde_json::to_value(committed()).unwrap();
        value["activation_message_count"] = 1.into();
        let settings = JobSettings::from_json(&value.to_string()).unwrap();
        assert_eq!(settings.activation_message_count, 1);
        assert_eq!(
            settings.summary(),
            "job job-rust (event trigger, messageCount 1, activationMessageCount 1, max executions 1)"
        );
        assert_eq!(
            settings.scale_rule_metadata("ns")[3],
            ("activationMessageCount", "1".to_owned())
        );
    }

    #[test]
    fn type_errors_name_the_key_and_what_to_write() {
        for (key, bad, expected) in [
            (
                "max_executions",
                serde_json::json!("five"),
                r#"max_executions: expected a whole number, got "five""#,
            ),
            (
                "cpu",
                serde_json::json!("half"),
                r#"cpu: expected a number, got "half""#,
            ),
            (
                "job_name",
                serde_json::json!(7),
                "job_name: expected a string, got 7",
            ),
            (
                "env_names",
                serde_json::json!("x"),
                r#"env_names: expected an object, got "x""#,
            ),
        ] {
            let mut value = serde_json::to_value(committed()).unwrap();
            value[key] = bad;
            let error = format!(
                "{:#}",
                JobSettings::from_json(&value.to_string()).unwrap_err()
            );
            assert_eq!(error, expected);
        }
    }

    #[test]
    fn errors_point_at_the_file_in_use_and_where_the_tutorial_values_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.json");
        let mut value = serde_json::to_value(committed()).unwrap();
        value["max_executions"] = "five".into();
        std::fs::write(&path, value.to_string()).unwrap();
        let error = format!("{:#}", JobSettings::load(&path).unwrap_err());
        assert_eq!(
            error,
            format!(
                "the job settings file {} is not valid (the tutorial's values are in \
                 terraform/job.auto.tfvars.json): max_executions: expected a whole number, got \"five\"",
                path.display()
            )
        );
        assert!(!error.contains("named above"), "{error}");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let error = format!(
            "{:#}",
            JobSettings::load(Path::new("/nonexistent/job.json")).unwrap_err()
        );
        assert!(error.contains("/nonexistent/job.json"), "{error}");
    }

    #[test]
    fn cpu_must_come_in_quarters() {
        assert!(is_quarter_cpu(0.25));
        assert!(is_quarter_cpu(2.0));
        assert!(!is_quarter_cpu(0.3));
        assert!(!is_quarter_cpu(0.0));
        assert!(!is_quarter_cpu(4.25));
    }
}
