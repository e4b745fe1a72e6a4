//! The `az` commands the runner uses, and what their JSON means.

use anyhow::{Context, bail};
use serde::Deserialize;

use super::process::{Invocation, Runner};
use super::terraform::LabOutputs;
use crate::lab::executions::{Execution, ExecutionSource, parse_execution_list};

/// Resource providers the lab's resources need; a fresh subscription may not have them registered.
pub const PROVIDERS: &[&str] = &[
    "Microsoft.App",
    "Microsoft.ServiceBus",
    "Microsoft.ContainerRegistry",
    "Microsoft.OperationalInsights",
];

pub fn version() -> Invocation {
    Invocation::new("az", ["version", "-o", "json"])
}

pub fn account_show() -> Invocation {
    Invocation::new("az", ["account", "show", "-o", "json"])
}

pub fn provider_state(namespace: &str) -> Invocation {
    Invocation::new(
        "az",
        [
            "provider",
            "show",
            "--namespace",
            namespace,
            "--query",
            "registrationState",
            "-o",
            "tsv",
        ],
    )
}

pub fn execution_list(outputs: &LabOutputs) -> Invocation {
    Invocation::new(
        "az",
        [
            "containerapp",
            "job",
            "execution",
            "list",
            "-n",
            &outputs.job_name,
            "-g",
            &outputs.resource_group_name,
            "-o",
            "json",
        ],
    )
}

pub fn queue_counts(outputs: &LabOutputs) -> Invocation {
    Invocation::new(
        "az",
        [
            "servicebus",
            "queue",
            "show",
            "-g",
            &outputs.resource_group_name,
            "--namespace-name",
            &outputs.servicebus_namespace,
            "-n",
            &outputs.queue_name,
            "--query",
            "countDetails",
            "-o",
            "json",
        ],
    )
}

/// The queue's `countDetails` (ARM `MessageCountDetails`): what is left after the job ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueCounts {
    #[serde(default)]
    pub active_message_count: u64,
    #[serde(default)]
    pub dead_letter_message_count: u64,
    #[serde(default)]
    pub scheduled_message_count: u64,
}

impl QueueCounts {
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        serde_json::from_str(json)
            .context("`az servicebus queue show --query countDetails` printed something other than message counts")
    }
}

/// The command that shows an execution's console output (Container Apps streams it from the replica).
pub fn logs_command(outputs: &LabOutputs, execution: &str) -> String {
    Invocation::new(
        "az",
        [
            "containerapp",
            "job",
            "logs",
            "show",
            "-n",
            &outputs.job_name,
            "-g",
            &outputs.resource_group_name,
            "--execution",
            execution,
            "--container",
            &outputs.container_name,
        ],
    )
    .display()
}

/// `az version -o json` → the CLI's version.
pub fn cli_version(json: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_str(json)
        .context("`az version -o json` printed something other than its JSON")?;
    value["azure-cli"]
        .as_str()
        .map(str::to_owned)
        .context("`az version -o json` has no `azure-cli` entry")
}

/// The logged-in account (`az account show -o json`).
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    /// Subscription id.
    pub id: String,
    /// Subscription name.
    pub name: String,
    #[serde(default)]
    pub state: Option<String>,
    pub user: AccountUser,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AccountUser {
    pub name: String,
}

impl Account {
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        let account: Self = serde_json::from_str(json)
            .context("`az account show -o json` printed something other than an account")?;
        if let Some(state) = account.state.as_deref().filter(|s| *s != "Enabled") {
            bail!(
                "subscription \"{}\" is {state}, not Enabled: pick another with `az account set --subscription <id>`",
                account.name
            );
        }
        Ok(account)
    }

    /// For `--dry-run`, where nothing asks Azure.
    pub fn placeholder() -> Self {
        Self {
            id: "<subscription id>".into(),
            name: "<subscription>".into(),
            state: None,
            user: AccountUser {
                name: "<you>".into(),
            },
        }
    }
}

/// The job's executions from `az containerapp job execution list -o json`.
pub struct AzExecutions<'a> {
    pub runner: &'a Runner,
    pub invocation: Invocation,
}

impl ExecutionSource for AzExecutions<'_> {
    async fn list(&mut self) -> anyhow::Result<Vec<Execution>> {
        let output = self.runner.run(&self.invocation, None).await?;
        parse_execution_list(&output.stdout)
            .with_context(|| format!("`{}` printed unexpected JSON", self.invocation.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_subscription_is_refused_with_the_fix() {
        let json = r#"{"id":"0","name":"Old","state":"Disabled","user":{"name":"ada@contoso.com","type":"user"}}"#;
        let error = Account::parse(json).unwrap_err().to_string();
        assert!(error.contains("az account set --subscription"), "{error}");
    }
}
