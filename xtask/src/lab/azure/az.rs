//! The `az` commands the runner uses, and what their JSON means.

use anyhow::{Context, bail};
use serde::Deserialize;

use super::process::{Invocation, Runner};
use super::terraform::LabOutputs;
use crate::lab::executions::{Execution, ExecutionSource, parse_execution_list};

/// Resource providers the lab's resources need; a fresh subscription may not have them registered.
/// `Microsoft.ManagedIdentity` for the job's user-assigned identity, which a fresh subscription lacks
/// as often as the others (apply then fails with `MissingSubscriptionRegistration`).
pub const PROVIDERS: &[&str] = &[
    "Microsoft.App",
    "Microsoft.ServiceBus",
    "Microsoft.ContainerRegistry",
    "Microsoft.OperationalInsights",
    "Microsoft.ManagedIdentity",
];

/// The oldest az CLI the lab works with: the sender signs in through `azure_identity`'s CLI
/// credential, which reads `expires_on` from `az account get-access-token`, added in az 2.54.0
/// (azure_identity's `azure_cli_credential.rs` says so in its error).
pub const MIN_AZ_VERSION: (u32, u32) = (2, 54);

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

/// How to read an execution's console output: two commands, because neither always works.
pub struct LogCommands {
    /// `az containerapp job logs show`: streams from the live replica; a preview command of the
    /// `containerapp` CLI extension, so it needs `az extension add --name containerapp`.
    pub extension: String,
    /// The core CLI's way: a Log Analytics query of the environment's workspace through `az rest`
    /// (`az monitor log-analytics query` is an extension command too). Works after the execution has
    /// ended, once ingestion has caught up (a few minutes).
    pub core: String,
}

/// The extension install hint printed with [`LogCommands::extension`].
pub const CONTAINERAPP_EXTENSION: &str = "az extension add --name containerapp --upgrade";

/// The Log Analytics query API and the token audience `az rest` must ask for.
const LOG_ANALYTICS_API: &str = "https://api.loganalytics.azure.com/v1/workspaces";
const LOG_ANALYTICS_AUDIENCE: &str = "https://api.loganalytics.io";

pub fn log_commands(outputs: &LabOutputs, execution: &str) -> LogCommands {
    let extension = Invocation::new(
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
    .display();
    LogCommands {
        extension,
        core: log_query(outputs, execution).display(),
    }
}

/// The Log Analytics query of an execution's console lines, through `az rest` (core CLI).
fn log_query(outputs: &LabOutputs, execution: &str) -> Invocation {
    // Replicas of an execution are container groups named after it (`<execution>-<suffix>`).
    let query = format!(
        "ContainerAppConsoleLogs_CL | where ContainerGroupName_s startswith '{}' | project TimeGenerated, Log_s | order by TimeGenerated asc",
        kql_escape(execution)
    );
    let body = serde_json::json!({ "query": query }).to_string();
    let workspace = outputs
        .log_analytics_workspace_id
        .as_deref()
        .unwrap_or("<log_analytics_workspace_id>");
    Invocation::new(
        "az",
        [
            "rest",
            "--method",
            "post",
            "--url",
            &format!("{LOG_ANALYTICS_API}/{workspace}/query"),
            "--resource",
            LOG_ANALYTICS_AUDIENCE,
            "--body",
            &body,
            "--query",
            "tables[0].rows",
            "-o",
            "tsv",
        ],
    )
}

/// A KQL single-quoted string literal's content: backslash escapes, as the language defines.
fn kql_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

/// `az version -o json` → the CLI's version, refused when older than [`MIN_AZ_VERSION`].
pub fn cli_version(json: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_str(json)
        .context("`az version -o json` printed something other than its JSON")?;
    let version = value["azure-cli"]
        .as_str()
        .map(str::to_owned)
        .context("`az version -o json` has no `azure-cli` entry")?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_AZ_VERSION {
        bail!(
            "az {version} is too old: the lab signs in with your az login through `az account get-access-token`, \
             whose `expires_on` field needs az {}.{} or newer; upgrade with `az upgrade` (or your package manager, \
             https://learn.microsoft.com/cli/azure/install-azure-cli)",
            MIN_AZ_VERSION.0,
            MIN_AZ_VERSION.1
        );
    }
    Ok(version)
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
    fn an_az_older_than_2_54_is_refused_with_the_fix() {
        assert_eq!(cli_version(r#"{"azure-cli": "2.54.0"}"#).unwrap(), "2.54.0");
        assert_eq!(cli_version(r#"{"azure-cli": "2.79.0"}"#).unwrap(), "2.79.0");
        let error = cli_version(r#"{"azure-cli": "2.53.1"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("az 2.53.1 is too old") && error.contains("az upgrade"),
            "{error}"
        );
    }

    #[test]
    fn the_core_cli_log_query_is_valid_json_naming_the_execution() {
        let mut outputs =
            LabOutputs::placeholders(&crate::lab::settings::JobSettings::load_default().unwrap());
        outputs.log_analytics_workspace_id = Some("5d2f6a1e-0b7c-4e3a-9f1d-2c8b7a6e5d4c".into());
        let commands = log_commands(&outputs, "job-rust-k3j9x2q");
        assert!(
            commands
                .extension
                .starts_with("az containerapp job logs show")
        );
        let core = &commands.core;
        assert!(
            core.contains("/workspaces/5d2f6a1e-0b7c-4e3a-9f1d-2c8b7a6e5d4c/query"),
            "{core}"
        );
        let args = log_query(&outputs, "job-rust-k3j9x2q").args;
        let body = &args[args.iter().position(|a| a == "--body").unwrap() + 1];
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            body["query"]
                .as_str()
                .unwrap()
                .contains("startswith 'job-rust-k3j9x2q'")
        );
        assert_eq!(kql_escape(r"it's\"), r"it\'s\\");
    }

    #[test]
    fn a_disabled_subscription_is_refused_with_the_fix() {
        let json = r#"{"id":"0","name":"Old","state":"Disabled","user":{"name":"ada@contoso.com","type":"user"}}"#;
        let error = Account::parse(json).unwrap_err().to_string();
        assert!(error.contains("az account set --subscription"), "{error}");
    }
}
