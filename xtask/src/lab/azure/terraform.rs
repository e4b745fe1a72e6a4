//! The terraform commands of the tutorial (`init`, `plan -out`, `apply` of that plan), the outputs the
//! runner reads, and `destroy`. They run from the workspace root with `-chdir=terraform`, so a printed
//! command can be pasted into a shell at the root of the checkout.
//!
//! Everything Terraform writes for a run stays out of the work tree, under the lab's state directory
//! (`.lab/azure/terraform/` by default, ignored by git and by `.dockerignore`): the state and its
//! backups hold the namespace's keys and connection strings, and so does a saved plan. Terraform
//! offers no single switch for that, so three are used:
//! - `TF_DATA_DIR` moves the per-working-directory data (`.terraform/`: providers and the backend
//!   settings `init` saved), see Terraform's "Environment Variables" documentation;
//! - the `local` backend (declared in `versions.tf`) takes its `path` at `init` time through
//!   `-backend-config=path=…` (a partial backend configuration); state backups go next to it
//!   (`<path>.backup`), and every later command finds the path through `TF_DATA_DIR`;
//! - the plan is written with `-out=<state>/tfplan` and applied from there.
//!
//! Only the dependency lock file (`terraform/.terraform.lock.hcl`) is still written beside the
//! configuration, where Terraform always puts it; it holds provider checksums, no secrets.
//! Paths are absolute because terraform resolves relative ones after `-chdir`.

use std::path::{Path, PathBuf};

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

/// Where one lab's Terraform files live, and the subscription terraform works in.
#[derive(Debug, Clone)]
pub struct Terraform {
    /// `--state-dir`/terraform: state, backups, plan and `TF_DATA_DIR`.
    dir: PathBuf,
    /// azurerm 4+ needs the subscription; taking it from `az account show` means the lab runs
    /// wherever the participant's az CLI points.
    subscription: String,
}

/// The files a lab's Terraform state consists of in the state directory (for the legacy move).
const STATE_FILES: &[&str] = &["terraform.tfstate", "terraform.tfstate.backup"];

impl Terraform {
    pub fn new(state_dir: &Path, subscription: impl Into<String>) -> Self {
        Self {
            dir: state_dir.join("terraform"),
            subscription: subscription.into(),
        }
    }

    /// The directory holding state, backups, the plan and terraform's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("terraform.tfstate")
    }

    pub fn plan_file(&self) -> PathBuf {
        self.dir.join("tfplan")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(".terraform")
    }

    fn command(&self, args: &[&str]) -> Invocation {
        let mut words = vec![CHDIR];
        words.extend_from_slice(args);
        Invocation::new("terraform", words)
            .env("ARM_SUBSCRIPTION_ID", &self.subscription)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_DATA_DIR", self.data_dir().display().to_string())
    }

    /// How a person runs terraform on this lab by hand (POSIX shell), e.g. to look at the state.
    pub fn by_hand(&self, args: &str) -> String {
        format!(
            "ARM_SUBSCRIPTION_ID={} TF_DATA_DIR={} terraform {CHDIR} {args}",
            crate::util::shell_quote(&self.subscription),
            crate::util::shell_quote(&self.data_dir().display().to_string()),
        )
    }

    pub fn init(&self) -> Invocation {
        let backend = format!("-backend-config=path={}", self.state_file().display());
        self.command(&["init", "-input=false", &backend]).streamed()
    }

    pub fn plan(&self, variables: &Variables) -> Invocation {
        let out = format!("-out={}", self.plan_file().display());
        let mut invocation = self.command(&["plan", "-input=false", &out]).streamed();
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

    pub fn apply(&self) -> Invocation {
        let plan = self.plan_file().display().to_string();
        self.command(&["apply", "-input=false", &plan]).streamed()
    }

    pub fn output(&self) -> Invocation {
        self.command(&["output", "-json"])
    }

    /// What is still in the state (after a failed destroy: what was left behind). Shielded like the
    /// destroy it follows: after Ctrl-C the participant needs this list most.
    pub fn state_list(&self) -> Invocation {
        self.command(&["state", "list"]).shielded()
    }

    /// Teardown runs shielded: a second Ctrl-C must not leave half a lab billing.
    pub fn destroy(&self) -> Invocation {
        self.command(&["destroy", "-input=false", "-auto-approve"])
            .shielded()
            .streamed()
    }

    /// Earlier versions of the lab kept the state in `terraform/` itself. Move such a state into the
    /// state directory, so `down` still finds (and destroys) what it describes, and delete the old
    /// plan, which holds the same secrets. Returns what was moved, for the step's message.
    pub fn adopt_legacy_state(&self, config_dir: &Path) -> anyhow::Result<Vec<String>> {
        let legacy = config_dir.join("terraform.tfstate");
        if !legacy.exists() {
            return Ok(Vec::new());
        }
        if self.state_file().exists() {
            bail!(
                "two Terraform states: {} (left by an older version of the lab) and {}; the lab cannot tell \
                 which one describes what is running. Destroy the old one by hand (with ARM_SUBSCRIPTION_ID set and \
                 TF_DATA_DIR unset: `terraform -chdir=terraform init`, then `terraform -chdir=terraform destroy`), \
                 then delete {}",
                legacy.display(),
                self.state_file().display(),
                legacy.display()
            );
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("could not create {}", self.dir.display()))?;
        let mut moved = Vec::new();
        for name in STATE_FILES {
            let from = config_dir.join(name);
            if from.exists() {
                let to = self.dir.join(name);
                // Same file system in the usual layout (.lab/ is in the checkout); copy otherwise.
                if std::fs::rename(&from, &to).is_err() {
                    std::fs::copy(&from, &to).with_context(|| {
                        format!("could not move {} to {}", from.display(), to.display())
                    })?;
                    std::fs::remove_file(&from)
                        .with_context(|| format!("could not remove {}", from.display()))?;
                }
                moved.push(format!("{} → {}", from.display(), to.display()));
            }
        }
        let old_plan = config_dir.join("tfplan");
        if old_plan.exists() {
            std::fs::remove_file(&old_plan)
                .with_context(|| format!("could not remove {}", old_plan.display()))?;
        }
        Ok(moved)
    }
}

pub fn version() -> Invocation {
    Invocation::new("terraform", ["version", "-json"])
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
    /// The workspace (customer) id for the Log Analytics query of an execution's logs; absent in a lab
    /// applied by an older version of terraform/outputs.tf.
    pub log_analytics_workspace_id: Option<String>,
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
            log_analytics_workspace_id: get("log_analytics_workspace_id").ok(),
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
            log_analytics_workspace_id: None,
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
