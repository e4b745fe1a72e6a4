//! The terraform commands of the tutorial (`init`, `plan -out tfplan`, `apply tfplan`), the outputs the
//! runner reads, and `destroy`. They run from the workspace root with `-chdir=terraform`, so a printed
//! command can be pasted into a shell at the root of the checkout.

use anyhow::{Context, bail};
use serde::Deserialize;

use super::process::Invocation;
use crate::lab::settings::JobSettings;

const CHDIR: &str = "-chdir=terraform";

/// Values a participant can set from the command line; `None` keeps the Terraform default.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    pub location: Option<String>,
    pub scaler_auth: Option<String>,
    pub image_builder: Option<String>,
    /// A job settings file other than `terraform/job.auto.tfvars.json` (`--settings`); absolute, because
    /// terraform resolves relative paths from `-chdir`.
    pub var_file: Option<std::path::PathBuf>,
}

fn terraform(args: &[&str], subscription: &str) -> Invocation {
    let mut words = vec![CHDIR];
    words.extend_from_slice(args);
    // azurerm 4+ needs the subscription; taking it from `az account show` means the lab runs wherever
    // the participant's az CLI points.
    Invocation::new("terraform", words)
        .env("ARM_SUBSCRIPTION_ID", subscription)
        .env("TF_IN_AUTOMATION", "1")
}

pub fn version() -> Invocation {
    Invocation::new("terraform", ["version", "-json"])
}

pub fn init(subscription: &str) -> Invocation {
    terraform(&["init", "-input=false"], subscription).streamed()
}

pub fn plan(subscription: &str, variables: &Variables) -> Invocation {
    let mut invocation =
        terraform(&["plan", "-input=false", "-out", "tfplan"], subscription).streamed();
    if let Some(file) = &variables.var_file {
        // -var-file wins over *.auto.tfvars.json, so these settings replace the committed ones.
        invocation
            .args
            .push(format!("-var-file={}", file.display()));
    }
    for (name, value) in [
        ("location", &variables.location),
        ("scaler_auth", &variables.scaler_auth),
        ("image_builder", &variables.image_builder),
    ] {
        if let Some(value) = value {
            invocation.args.push("-var".into());
            invocation.args.push(format!("{name}={value}"));
        }
    }
    invocation
}

pub fn apply(subscription: &str) -> Invocation {
    terraform(&["apply", "-input=false", "tfplan"], subscription).streamed()
}

pub fn output(subscription: &str) -> Invocation {
    terraform(&["output", "-json"], subscription)
}

/// Teardown runs shielded: a second Ctrl-C must not leave half a lab billing.
pub fn destroy(subscription: &str) -> Invocation {
    terraform(&["destroy", "-input=false", "-auto-approve"], subscription)
        .shielded()
        .streamed()
}

/// `terraform version -json` → `1.11.4`; the lab needs 1.9 or newer (cross-variable validations).
pub fn check_version(json: &str) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct Version {
        terraform_version: String,
    }
    let version: Version = serde_json::from_str(json)
        .context("`terraform version -json` printed something other than its JSON")?;
    let mut parts = version
        .terraform_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (1, 9) {
        bail!(
            "terraform {} is too old: the lab needs 1.9 or newer; install it from https://developer.hashicorp.com/terraform/install",
            version.terraform_version
        );
    }
    Ok(version.terraform_version)
}

/// `Plan: 14 to add, 0 to change, 0 to destroy.` → `14 to add`; `No changes.` → `no changes`.
pub fn plan_summary(stdout: &str) -> String {
    if let Some(line) = stdout.lines().find_map(|l| l.trim().strip_prefix("Plan: ")) {
        let counts: Vec<&str> = line
            .trim_end_matches('.')
            .split(", ")
            .filter(|part| !part.starts_with("0 "))
            .collect();
        return counts.join(", ");
    }
    if stdout.contains("No changes.") {
        "no changes".into()
    } else {
        "plan saved".into()
    }
}

/// `Apply complete! Resources: 14 added, …` / `Destroy complete! Resources: 14 destroyed.` → the counts.
pub fn complete_summary(stdout: &str) -> Option<String> {
    let line = stdout
        .lines()
        .find(|l| l.contains(" complete! Resources: "))?;
    let (_, counts) = line.split_once("Resources: ")?;
    let counts: Vec<&str> = counts
        .trim()
        .trim_end_matches('.')
        .split(", ")
        .filter(|part| !part.starts_with("0 "))
        .collect();
    Some(if counts.is_empty() {
        "nothing changed".to_owned()
    } else {
        counts.join(", ")
    })
}

/// What the runner needs from `terraform output -json` (see terraform/outputs.tf).
#[derive(Debug, Clone, PartialEq)]
pub struct LabOutputs {
    pub resource_group_name: String,
    pub location: String,
    pub job_name: String,
    pub container_name: String,
    pub servicebus_namespace: String,
    pub servicebus_fqdn: String,
    pub queue_name: String,
}

impl LabOutputs {
    /// Parse `terraform output -json`: `{ "name": { "value": …, "type": …, "sensitive": … }, … }`.
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Output {
            value: serde_json::Value,
        }
        let outputs: std::collections::BTreeMap<String, Output> = serde_json::from_str(json)
            .context("`terraform output -json` printed something other than its JSON")?;
        if outputs.is_empty() {
            bail!(
                "terraform has no outputs: the lab is not provisioned; run `cargo xtask lab --azure up` first"
            );
        }
        let get = |name: &str| -> anyhow::Result<String> {
            match outputs.get(name).map(|o| &o.value) {
                Some(serde_json::Value::String(value)) => Ok(value.clone()),
                Some(other) => bail!("terraform output `{name}` is {other}, expected a string"),
                None => bail!(
                    "terraform output `{name}` is missing: the applied lab is older than terraform/outputs.tf; \
                     run `cargo xtask lab --azure up` to update it"
                ),
            }
        };
        Ok(Self {
            resource_group_name: get("resource_group_name")?,
            location: get("location")?,
            job_name: get("job_name")?,
            container_name: get("container_name")?,
            servicebus_namespace: get("servicebus_namespace")?,
            servicebus_fqdn: get("servicebus_fqdn")?,
            queue_name: get("queue_name")?,
        })
    }

    /// What `--dry-run` shows where real values would come from terraform.
    pub fn placeholders(settings: &JobSettings) -> Self {
        Self {
            resource_group_name: "<resource_group_name>".into(),
            location: "<location>".into(),
            job_name: settings.job_name.clone(),
            container_name: settings.job_name.clone(),
            servicebus_namespace: "<servicebus_namespace>".into(),
            servicebus_fqdn: "<servicebus_fqdn>".into(),
            queue_name: settings.queue_name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_keep_only_nonzero_counts() {
        assert_eq!(
            plan_summary("\nPlan: 14 to add, 0 to change, 0 to destroy.\n"),
            "14 to add"
        );
        assert_eq!(
            plan_summary("No changes. Your infrastructure matches"),
            "no changes"
        );
        assert_eq!(
            complete_summary("Destroy complete! Resources: 14 destroyed.\n").as_deref(),
            Some("14 destroyed")
        );
        assert_eq!(
            complete_summary("Apply complete! Resources: 15 added, 0 changed, 0 destroyed.")
                .as_deref(),
            Some("15 added")
        );
    }

    #[test]
    fn old_terraform_is_refused_with_the_fix() {
        assert_eq!(
            check_version(r#"{"terraform_version":"1.11.4","platform":"linux_amd64"}"#).unwrap(),
            "1.11.4"
        );
        let error = check_version(r#"{"terraform_version":"1.5.7"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("1.5.7 is too old") && error.contains("install"),
            "{error}"
        );
    }

    #[test]
    fn missing_outputs_say_what_to_run() {
        let error = LabOutputs::parse("{}").unwrap_err().to_string();
        assert!(error.contains("cargo xtask lab --azure up"), "{error}");
    }
}
