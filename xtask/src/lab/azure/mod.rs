//! `cargo xtask lab --azure`: the tutorial on a real subscription, in one command.
//!
//! preflight → `terraform init` → `plan -out tfplan` → `apply tfplan` → outputs → send one message →
//! watch `az containerapp job execution list` until an execution that started after the send succeeds →
//! `terraform destroy`. Teardown runs after success, after any failure from `apply` on, and after
//! Ctrl-C, unless `--keep`: a forgotten lab keeps billing. Every external command runs without a shell;
//! `--dry-run` prints them all and runs none.

mod az;
mod interrupt;
mod process;
mod send;
mod terraform;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use serde_json::json;

use self::az::{Account, AzExecutions};
use self::interrupt::Interrupt;
use self::process::{Invocation, Output, Runner, on_path};
use self::send::{Batch, SendTarget, SentMessage};
use self::terraform::{LabOutputs, Terraform, Variables};
use super::executions::{
    Execution, ExecutionSource, MAX_FAILED_LISTINGS, WatchOutcome, WatchPlan, wait_for_success,
};
use super::settings::JobSettings;
use super::ui::{StepProgress, Ui, human_duration};
use super::{LabArgs, Step};
use crate::util::parse_duration;

/// A step failed; the lab was torn down (or there was nothing to tear down, or `--keep`).
const EXIT_FAILED: u8 = 1;
/// Teardown itself failed: resources may still be running and billing.
const EXIT_TEARDOWN_FAILED: u8 = 3;
/// Ctrl-C or SIGTERM; teardown ran.
const EXIT_INTERRUPTED: u8 = 130;
/// `--timeout`'s Azure default: a new role assignment for the scaler can take minutes.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// `--polling-interval`'s Azure default: each look is an `az` call taking seconds itself.
const DEFAULT_POLLING_INTERVAL: Duration = Duration::from_secs(10);

/// Options of the Azure path.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Azure (with --azure)")]
pub struct AzureArgs {
    /// Azure region for the lab (Terraform variable `location`; default westeurope).
    #[arg(long, global = true)]
    pub location: Option<String>,
    /// How the KEDA scaler authenticates to Service Bus (Terraform variable `scaler_auth`).
    #[arg(long, value_enum, global = true)]
    pub scaler_auth: Option<ScalerAuth>,
    /// How the worker image gets into the registry (Terraform variable `image_builder`; default acr).
    #[arg(long, value_enum, global = true)]
    pub image_builder: Option<ImageBuilder>,
    /// How long the send keeps retrying while the new Data Sender role assignment propagates.
    #[arg(long, default_value = "5m", value_parser = parse_duration, global = true)]
    pub role_wait: Duration,
    /// Send with this Service Bus connection string instead of your az login.
    #[arg(
        long,
        env = "ACA_LAB_SERVICEBUS_CONNECTION_STRING",
        hide_env_values = true,
        global = true
    )]
    pub servicebus_connection_string: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScalerAuth {
    /// A user-assigned identity with Service Bus Data Owner on the queue (default).
    ManagedIdentity,
    /// The namespace's RootManageSharedAccessKey connection string as a job secret (the tutorial's way).
    ConnectionString,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImageBuilder {
    /// `az acr build`: built in the registry, no local Docker needed.
    Acr,
    /// Local `docker build` + `docker push` (subscriptions without ACR Tasks, e.g. free credit).
    Docker,
}

impl ScalerAuth {
    fn terraform_value(self) -> &'static str {
        match self {
            Self::ManagedIdentity => "managed_identity",
            Self::ConnectionString => "connection_string",
        }
    }
}

pub fn run(lab: &LabArgs) -> anyhow::Result<ExitCode> {
    // `--settings` (shared with the local lab) picks another job settings file; terraform gets it too.
    let settings_file =
        match &lab.local.settings {
            Some(path) => Some(std::path::absolute(path).with_context(|| {
                format!("could not resolve the settings path {}", path.display())
            })?),
            None => None,
        };
    let settings = match &settings_file {
        Some(path) => JobSettings::load(path)?,
        None => JobSettings::load_default()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        let interrupt = if lab.dry_run {
            Interrupt::never()
        } else {
            Interrupt::install()
        };
        let mut session = Session::new(lab, settings, settings_file, interrupt);
        if lab.dry_run {
            session.print_plan(lab.step.as_ref());
            return Ok(ExitCode::SUCCESS);
        }
        session.run(lab.step.as_ref()).await
    })
}

/// One run of the Azure lab: what it knows so far and whether anything may exist that needs teardown.
struct Session<'a> {
    args: &'a AzureArgs,
    keep: bool,
    ui: Ui,
    runner: Runner,
    interrupt: Interrupt,
    settings: JobSettings,
    /// `--settings`, when it replaces terraform/job.auto.tfvars.json.
    settings_file: Option<PathBuf>,
    /// `--timeout`: how long `watch` waits for a succeeded execution.
    timeout: Duration,
    /// `--polling-interval`: the pause between two execution listings.
    polling_interval: Duration,
    /// `--state-dir`: where the last send is remembered between `send` and `watch`, and where
    /// Terraform keeps the lab's state and plan (`terraform/` inside it).
    state_dir: PathBuf,
    /// The checkout: commands run from here (`-chdir=terraform` is relative to it).
    root: PathBuf,
    account: Option<Account>,
    /// What `terraform output` said, once asked (the teardown's advice names the resource group).
    outputs: Option<LabOutputs>,
    /// `terraform apply` has started, so resources may exist.
    provisioned: bool,
}

impl<'a> Session<'a> {
    fn new(
        lab: &'a LabArgs,
        settings: JobSettings,
        settings_file: Option<PathBuf>,
        interrupt: Interrupt,
    ) -> Self {
        let root = checkout_root();
        Self {
            args: &lab.azure_args,
            keep: lab.keep,
            ui: Ui::new(lab.output),
            runner: Runner::new(interrupt.clone(), root.clone()),
            interrupt,
            settings,
            settings_file,
            timeout: lab.timeout.unwrap_or(DEFAULT_TIMEOUT),
            polling_interval: lab.polling_interval.unwrap_or(DEFAULT_POLLING_INTERVAL),
            state_dir: lab
                .state_dir
                .clone()
                .unwrap_or_else(|| root.join(".lab").join("azure")),
            root,
            account: None,
            outputs: None,
            provisioned: false,
        }
    }

    fn header(&self) -> String {
        format!(
            "Lab: Azure · queue {} · {}",
            self.settings.queue_name,
            self.settings.summary()
        )
    }

    fn subscription(&self) -> String {
        self.account
            .as_ref()
            .map(|a| a.id.clone())
            .unwrap_or_default()
    }

    fn terraform(&self) -> Terraform {
        Terraform::new(&self.state_dir, self.subscription())
    }

    fn variables(&self) -> Variables {
        Variables {
            location: self.args.location.clone(),
            scaler_auth: self
                .args
                .scaler_auth
                .map(|s| s.terraform_value().to_owned()),
            image_builder: self.args.image_builder.map(|b| {
                match b {
                    ImageBuilder::Acr => "acr",
                    ImageBuilder::Docker => "docker",
                }
                .to_owned()
            }),
            var_file: self.settings_file.clone(),
        }
    }

    async fn run(&mut self, step: Option<&Step>) -> anyhow::Result<ExitCode> {
        self.ui.header(&self.header());
        // `matches!` rather than `match`: the local lab adds steps and step options of its own.
        let outcome = if step.is_none() {
            self.walkthrough().await
        } else if matches!(step, Some(Step::Up)) {
            self.up().await
        } else if let Some(Step::Send { count, body }) = step {
            self.send_step(Batch {
                count: *count,
                body: body.clone(),
            })
            .await
        } else if matches!(step, Some(Step::Watch)) {
            self.watch_step().await
        } else if let Some(Step::Executions { format }) = step {
            self.executions_step(*format == Some(super::local::ListFormat::Json))
                .await
        } else if matches!(step, Some(Step::Down)) {
            return self.down_step().await;
        } else {
            bail!("this step belongs to the local lab; run it without --azure")
        };
        if let Err(error) = &outcome
            && !self.ui.any_step_failed()
        {
            // Failed before any step could show it (e.g. no recorded send for `watch`).
            self.ui.step("lab", "cargo xtask lab --azure").fail(error);
        }
        // The walkthrough always ends with a teardown; `up` only after a failure (otherwise the lab is
        // meant to stay up); the other steps never create anything.
        let failed = outcome.is_err();
        let teardown_ok = match step {
            None => self.teardown(failed).await,
            Some(Step::Up) if failed => self.teardown(failed).await,
            _ => true,
        };
        let code = match (&outcome, teardown_ok) {
            (_, false) => EXIT_TEARDOWN_FAILED,
            (Err(_), true) if self.interrupt.is_set() => EXIT_INTERRUPTED,
            (Err(_), true) => EXIT_FAILED,
            (Ok(()), true) => 0,
        };
        let closing = match (code, step) {
            (0, None) => "Done".to_owned(),
            (0, Some(Step::Up)) => {
                self.ui.detail(
                    "The lab is running, and billing, until `cargo xtask lab --azure down`. \
                     Next: `cargo xtask lab --azure send`, then `cargo xtask lab --azure watch`.",
                );
                "Up".to_owned()
            }
            (0, Some(_)) => "Done".to_owned(),
            (EXIT_TEARDOWN_FAILED, _) => {
                "Teardown FAILED: resources may still be billing; see above. Ended".to_owned()
            }
            (EXIT_INTERRUPTED, None) => "Interrupted; ended".to_owned(),
            (EXIT_INTERRUPTED, Some(_)) => {
                // `send`, `watch` and `executions` create nothing and tear nothing down.
                self.ui.detail(
                    "The lab keeps running, and billing, until `cargo xtask lab --azure down`.",
                );
                "Interrupted; ended".to_owned()
            }
            _ => "Failed; ended".to_owned(),
        };
        self.ui.finish(code == 0, closing);
        Ok(ExitCode::from(code))
    }

    /// Decide and run the teardown; returns false only when `terraform destroy` failed.
    async fn teardown(&mut self, after_failure: bool) -> bool {
        let step = self.ui.step("destroy", "terraform destroy");
        if self.keep {
            step.skipped("--keep: the lab is still running and billing; tear it down with `cargo xtask lab --azure down`");
            return true;
        }
        if !self.provisioned {
            step.skipped("nothing was created (the failure came before terraform apply)");
            return true;
        }
        if after_failure {
            step.update("tearing down after the failure");
        }
        self.destroy_with(step).await
    }

    async fn destroy_with(&mut self, step: StepProgress) -> bool {
        if self.interrupt.is_set() {
            step.update("tearing down; Ctrl-C is ignored until terraform destroy ends");
        }
        let result = self
            .runner
            .run(&self.terraform().destroy(), Some(&step))
            .await;
        match result {
            Ok(output) => {
                let counts =
                    terraform::complete_summary(&output.stdout).unwrap_or_else(|| "done".into());
                step.ok_with(
                    format!(
                        "terraform destroy ({counts}) · nothing left running, nothing left billing"
                    ),
                    json!({ "resources": counts }),
                );
                true
            }
            Err(error) => {
                let left = self.left_behind().await;
                let error = error.context(left.advice());
                step.fail(&error);
                false
            }
        }
    }

    /// After a failed destroy: what the state still lists, and the resource group that holds it all.
    /// Both are best effort (the state may be unreadable too); the advice works without them.
    async fn left_behind(&mut self) -> LeftBehind {
        let terraform = self.terraform();
        let resources = match self.runner.run(&terraform.state_list(), None).await {
            Ok(output) => Some(
                output
                    .stdout
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            Err(_) => None,
        };
        if self.outputs.is_none()
            && let Ok(output) = self.runner.run(&terraform.output().shielded(), None).await
        {
            self.outputs = LabOutputs::parse(&output.stdout).ok();
        }
        LeftBehind {
            resources,
            resource_group: self.outputs.as_ref().map(|o| o.resource_group_name.clone()),
            output_command: terraform.by_hand("output -raw resource_group_name"),
        }
    }

    async fn walkthrough(&mut self) -> anyhow::Result<()> {
        self.preflight().await?;
        let outputs = self.provision().await?;
        let sent = self
            .send(
                &outputs,
                &Batch {
                    count: 1,
                    body: None,
                },
            )
            .await?;
        self.watch(&outputs, &sent).await
    }

    async fn up(&mut self) -> anyhow::Result<()> {
        self.preflight().await?;
        self.provision().await.map(|_| ())
    }

    async fn send_step(&mut self, batch: Batch) -> anyhow::Result<()> {
        let outputs = self.outputs().await?;
        self.send(&outputs, &batch).await.map(|_| ())
    }

    async fn watch_step(&mut self) -> anyhow::Result<()> {
        let sent = SentMessage::load(&self.state_dir)?;
        let outputs = self.outputs().await?;
        self.watch(&outputs, &sent).await
    }

    async fn down_step(&mut self) -> anyhow::Result<ExitCode> {
        let preflight = self.preflight().await;
        let (code, closing) = match preflight {
            Err(_) => (
                EXIT_FAILED,
                "Teardown did not run: fix the problem above and run `down` again; ended",
            ),
            Ok(()) => {
                // `init` first: a checkout where `up` never ran here (or ran with an older version of
                // the lab, which kept the state in terraform/) has no initialised data directory yet.
                let initialised = self.init().await.is_ok();
                let step = self.ui.step("destroy", "terraform destroy");
                let destroyed = if initialised {
                    self.destroy_with(step).await
                } else {
                    step.skipped("terraform init failed (see above), so destroy cannot run yet");
                    false
                };
                if destroyed {
                    (0, "Done")
                } else {
                    (
                        EXIT_TEARDOWN_FAILED,
                        "Teardown FAILED: resources may still be billing; see above. Ended",
                    )
                }
            }
        };
        self.ui.finish(code == 0, closing);
        Ok(ExitCode::from(code))
    }

    /// The history as a table, or (`-o json`) as the JSON array `az` printed, sorted by start time.
    async fn executions_step(&mut self, as_json: bool) -> anyhow::Result<()> {
        let outputs = self.outputs().await?;
        let invocation = az::execution_list(&outputs);
        let step = self.ui.step("executions", invocation.display());
        let result = async {
            let output = self.runner.run(&invocation, Some(&step)).await?;
            super::executions::parse_execution_list(&output.stdout)
        }
        .await;
        let mut executions = conclude(&step, result.map(|e| (e, String::new())))?;
        executions.sort_by_key(|e| e.start_time());
        let count = executions.len();
        step.ok_with(
            format!("{count} execution(s) of {}", outputs.job_name),
            json!({ "executions": executions }),
        );
        if as_json {
            println!("{}", serde_json::to_string_pretty(&executions)?);
            return Ok(());
        }
        for row in super::executions::table(&executions) {
            self.ui.detail(row);
        }
        Ok(())
    }

    /// az and terraform are there, the login works, the providers are registered.
    async fn preflight(&mut self) -> anyhow::Result<()> {
        let step = self.ui.step("preflight", "Preflight");
        let result = self.preflight_checks(&step).await;
        let summary = conclude(&step, result)?;
        step.ok_with(
            format!("Preflight: {summary}"),
            json!({ "subscription": self.subscription() }),
        );
        Ok(())
    }

    async fn preflight_checks(&mut self, step: &StepProgress) -> anyhow::Result<(String, String)> {
        let mut missing = Vec::new();
        if !on_path("az") {
            missing.push(
                "`az` (the Azure CLI) is not on PATH: install it (https://learn.microsoft.com/cli/azure/install-azure-cli), then run `az login`",
            );
        }
        if !on_path("terraform") {
            missing.push(
                "`terraform` is not on PATH: install Terraform 1.9 or newer (https://developer.hashicorp.com/terraform/install)",
            );
        }
        if self.args.image_builder == Some(ImageBuilder::Docker) && !on_path("docker") {
            missing.push(
                "`docker` is not on PATH, and --image-builder docker needs it: install Docker, or drop the flag to build with `az acr build`",
            );
        }
        if !missing.is_empty() {
            bail!("{}", missing.join("\n"));
        }
        let az_version = az::cli_version(&self.exec(&az::version(), step).await?.stdout)?;
        let tf_version =
            terraform::check_version(&self.exec(&terraform::version(), step).await?.stdout)?;
        let account = Account::parse(&self.exec(&az::account_show(), step).await?.stdout)?;
        let mut unregistered = Vec::new();
        for namespace in az::PROVIDERS {
            step.update(format!("checking provider {namespace}"));
            let state = self
                .exec(&az::provider_state(namespace), step)
                .await?
                .stdout
                .trim()
                .to_owned();
            if state != "Registered" {
                unregistered.push((namespace, state));
            }
        }
        if !unregistered.is_empty() {
            let list: Vec<String> = unregistered
                .iter()
                .map(|(ns, state)| format!("{ns} ({state})"))
                .collect();
            let fixes: Vec<String> = unregistered
                .iter()
                .map(|(ns, _)| format!("az provider register --namespace {ns} --wait"))
                .collect();
            bail!(
                "resource providers not registered in subscription \"{}\": {}\nfix (once per subscription, a minute or two each):\n  {}",
                account.name,
                list.join(", "),
                fixes.join("\n  ")
            );
        }
        let summary = format!(
            "az {az_version}, terraform {tf_version}, subscription \"{}\" as {}, providers {} registered",
            account.name,
            account.user.name,
            az::PROVIDERS
                .iter()
                .map(|p| p.trim_start_matches("Microsoft."))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        self.account = Some(account);
        Ok((summary, String::new()))
    }

    async fn exec(&self, invocation: &Invocation, step: &StepProgress) -> anyhow::Result<Output> {
        self.runner.run(invocation, Some(step)).await
    }

    /// `terraform init`, `plan -out`, `apply` that plan, then the outputs.
    async fn provision(&mut self) -> anyhow::Result<LabOutputs> {
        self.init().await?;
        let terraform = self.terraform();
        let plan = terraform.plan(&self.variables());
        self.terraform_step("plan", &plan, |out| {
            format!(
                "terraform plan -out tfplan ({})",
                terraform::plan_summary(out)
            )
        })
        .await?;
        // From here on something may exist in Azure, so any failure ends with a teardown.
        self.provisioned = true;
        let apply = terraform.apply();
        self.terraform_step("apply", &apply, |out| {
            let counts = terraform::complete_summary(out).unwrap_or_else(|| "applied".into());
            format!("terraform apply tfplan ({counts})")
        })
        .await?;
        self.outputs().await
    }

    /// `terraform init` with the state in the lab's state directory, after moving a state that an
    /// older version of the lab left in `terraform/` (so nothing it describes is forgotten).
    async fn init(&self) -> anyhow::Result<()> {
        let terraform = self.terraform();
        let moved = terraform.adopt_legacy_state(&self.root.join("terraform"));
        let step = self.ui.step("init", "terraform init");
        let moved = conclude(&step, moved.map(|m| (m, String::new())))?;
        drop(step);
        self.terraform_step("init", &terraform.init(), |_| {
            if moved.is_empty() {
                "terraform init".into()
            } else {
                format!(
                    "terraform init (state moved out of the work tree: {})",
                    moved.join(", ")
                )
            }
        })
        .await
    }

    async fn terraform_step(
        &self,
        id: &'static str,
        invocation: &Invocation,
        message: impl FnOnce(&str) -> String,
    ) -> anyhow::Result<()> {
        let title = match id {
            "init" => "terraform init".to_owned(),
            "plan" => "terraform plan -out tfplan".to_owned(),
            "apply" => "terraform apply tfplan".to_owned(),
            _ => invocation.display(),
        };
        let step = self.ui.step(id, title);
        let result = self.runner.run(invocation, Some(&step)).await;
        let output = conclude(&step, result.map(|o| (o, String::new())))?;
        step.ok(message(&output.stdout));
        Ok(())
    }

    async fn outputs(&mut self) -> anyhow::Result<LabOutputs> {
        let invocation = self.terraform().output();
        let step = self.ui.step("outputs", "terraform output -json");
        let result =
            async { LabOutputs::parse(&self.runner.run(&invocation, Some(&step)).await?.stdout) }
                .await;
        let outputs = conclude(&step, result.map(|o| (o, String::new())))?;
        step.ok_with(
            format!(
                "Lab: resource group {} · namespace {} · job {}",
                outputs.resource_group_name, outputs.servicebus_fqdn, outputs.job_name
            ),
            json!({
                "resource_group": outputs.resource_group_name,
                "servicebus_fqdn": outputs.servicebus_fqdn,
                "queue": outputs.queue_name,
                "job": outputs.job_name,
            }),
        );
        self.outputs = Some(outputs.clone());
        Ok(outputs)
    }

    async fn send(&self, outputs: &LabOutputs, batch: &Batch) -> anyhow::Result<SentMessage> {
        let target = SendTarget {
            fqdn: outputs.servicebus_fqdn.clone(),
            queue: outputs.queue_name.clone(),
            connection_string: self.args.servicebus_connection_string.clone(),
        };
        let step = self.ui.step(
            "send",
            format!("Sending {} to {}", messages(batch.count), target.queue),
        );
        let result = async {
            // What exists before the message goes out is not ours, whatever Azure's clock says.
            step.update("listing the executions that exist before the send");
            let before = self.executions_before_send(outputs, &step).await?;
            let mut sent =
                send::send_batch(&target, batch, self.args.role_wait, &self.interrupt, &step)
                    .await?;
            sent.executions_before = Some(before.into_iter().map(|e| e.name).collect());
            sent.save(&self.state_dir)?;
            Ok(sent)
        }
        .await;
        let sent = conclude(&step, result.map(|s| (s, String::new())))?;
        step.ok_with(
            format!(
                "Sent {} to {} ({}, {} bytes)",
                messages(sent.message_ids.len() as u32),
                sent.queue,
                match sent.message_ids.as_slice() {
                    [only] => format!("message id {only}"),
                    [first, ..] => format!("first message id {first}"),
                    [] => "no message id".to_owned(),
                },
                sent.bytes
            ),
            json!({ "message_ids": sent.message_ids, "queue": sent.queue, "bytes": sent.bytes }),
        );
        Ok(sent)
    }

    /// The job's executions just before the send. A failed listing is retried as the watch retries
    /// its own (backoff, [`MAX_FAILED_LISTINGS`] in a row at most): a throttled `az` call must not end
    /// the lab before the message is even sent.
    async fn executions_before_send(
        &self,
        outputs: &LabOutputs,
        step: &StepProgress,
    ) -> anyhow::Result<Vec<Execution>> {
        let mut source = AzExecutions {
            runner: &self.runner,
            invocation: az::execution_list(outputs),
        };
        let mut failures = 0;
        loop {
            match source.list().await {
                Ok(executions) => return Ok(executions),
                Err(error) if failures + 1 < MAX_FAILED_LISTINGS && !self.interrupt.is_set() => {
                    failures += 1;
                    report_failed_listing(&self.ui, failures, &error);
                    step.update("listing the executions again");
                    let pause = self
                        .polling_interval
                        .saturating_mul(1 << failures)
                        .min(self.polling_interval.max(Duration::from_secs(60)));
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.interrupt.wait() => return Err(anyhow!("the send was interrupted (Ctrl-C)")),
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn watch(&self, outputs: &LabOutputs, sent: &SentMessage) -> anyhow::Result<()> {
        let invocation = az::execution_list(outputs);
        let every = human_duration(self.polling_interval);
        let step = self.ui.step(
            "watch",
            format!("Watching `az containerapp job execution list` every {every}"),
        );
        let plan = match &sent.executions_before {
            Some(before) => WatchPlan::excluding(
                before.iter().cloned().collect(),
                self.polling_interval,
                self.timeout,
            ),
            // A send recorded by an older version of the lab: fall back to its time.
            None => WatchPlan::new(sent.sent_at, self.polling_interval, self.timeout),
        };
        let mut source = AzExecutions {
            runner: &self.runner,
            invocation,
        };
        let waited = tokio::select! {
            outcome = wait_for_success(&mut source, &plan, |report| {
                if let Some((failures, error)) = report.failed {
                    report_failed_listing(&self.ui, failures, error);
                    return;
                }
                let newest = report.ours.last().map_or_else(
                    || "no new execution yet".to_owned(),
                    |e| format!("{} {}", e.name, e.status()),
                );
                step.update(format!("{} elapsed · {newest}", human_duration(report.elapsed)));
            }) => outcome,
            () = self.interrupt.wait() => Err(anyhow!("watching was interrupted (Ctrl-C)")),
        };
        let logs = |execution: &Execution| logs_text(outputs, &execution.name);
        let result = match waited {
            Ok(WatchOutcome::Succeeded { execution, .. }) => Ok(execution),
            Ok(WatchOutcome::Failed { execution, .. }) => Err(anyhow!(
                "execution {} ended {}{}\n{}\nhint: the worker exited non-zero; its logs say why (missing role, wrong \
                 queue name, a poison message)",
                execution.name,
                execution.status(),
                execution.why(),
                logs(&execution)
            )),
            Ok(WatchOutcome::DeadlineReached { waited, ours }) => Err(anyhow!(
                "no execution of {} that started after the send succeeded within {} ({})\nhint: check the queue \
                 (`az servicebus queue show -g {} --namespace-name {} -n {} --query countDetails`) and the scale \
                 rule (`az containerapp job show -n {} -g {} --query properties.configuration.eventTriggerConfig`); \
                 a new role assignment for the scaler can take minutes; raise --timeout to wait longer",
                outputs.job_name,
                human_duration(waited),
                match ours.last() {
                    Some(e) => format!("{} was still {}", e.name, e.status()),
                    None => "no execution started".to_owned(),
                },
                outputs.resource_group_name,
                outputs.servicebus_namespace,
                outputs.queue_name,
                outputs.job_name,
                outputs.resource_group_name,
            )),
            Err(error) => Err(error),
        };
        let execution = conclude(&step, result.map(|e| (e, String::new())))?;
        let after_send = execution
            .start_time()
            .and_then(|start| Duration::try_from(start - sent.sent_at).ok())
            .map_or_else(String::new, |d| {
                format!("started {} after the send", human_duration(d))
            });
        let ran = execution
            .run_time()
            .map_or_else(String::new, |d| format!(", ran {}", human_duration(d)));
        step.ok_with(
            format!("Execution {} Succeeded ({after_send}{ran})", execution.name),
            json!({
                "execution": execution.name,
                "logs_command": az::log_commands(outputs, &execution.name).extension,
                "logs_query_command": az::log_commands(outputs, &execution.name).core,
            }),
        );
        for line in logs(&execution).lines() {
            self.ui.detail(line);
        }
        self.check_queue(outputs).await
    }

    /// The evidence that the job consumed the message: nothing dead-lettered, and (usually) nothing left.
    async fn check_queue(&self, outputs: &LabOutputs) -> anyhow::Result<()> {
        let invocation = az::queue_counts(outputs);
        let step = self
            .ui
            .step("queue", format!("Checking queue {}", outputs.queue_name));
        let result = async {
            let counts = az::QueueCounts::parse(&self.runner.run(&invocation, Some(&step)).await?.stdout)?;
            if counts.dead_letter_message_count > 0 {
                bail!(
                    "{} message(s) in the dead-letter queue: a replica received a message but did not complete \
                     it before its deliveries ran out (the tutorial's queue allows one); the execution's logs say why",
                    counts.dead_letter_message_count
                );
            }
            Ok(counts)
        }
        .await;
        let counts = conclude(&step, result.map(|c| (c, String::new())))?;
        let left = match counts.active_message_count {
            0 => "drained".to_owned(),
            n => format!("{n} active message(s) left (each starts another execution)"),
        };
        step.ok_with(
            format!("Queue {} {left}, 0 dead-lettered", outputs.queue_name),
            json!({
                "active": counts.active_message_count,
                "dead_lettered": counts.dead_letter_message_count,
                "scheduled": counts.scheduled_message_count,
            }),
        );
        Ok(())
    }

    /// `--dry-run`: every command in order, with `<placeholders>` for what terraform would report.
    fn print_plan(&self, step: Option<&Step>) {
        let outputs = LabOutputs::placeholders(&self.settings);
        let terraform = Terraform::new(&self.state_dir, Account::placeholder().id);
        let ui = &self.ui;
        let comment = |id, text: String| ui.planned_command(id, &format!("# {text}"));
        let preflight = || {
            for invocation in [az::version(), terraform::version(), az::account_show()] {
                ui.planned_command("preflight", &invocation.display());
            }
            for namespace in az::PROVIDERS {
                ui.planned_command("preflight", &az::provider_state(namespace).display());
            }
            comment(
                "preflight",
                format!(
                    "terraform runs with ARM_SUBSCRIPTION_ID=<id from az account show> and TF_DATA_DIR={}: \
                     state and plan stay in {}, out of the work tree",
                    terraform.data_dir().display(),
                    terraform.dir().display()
                ),
            );
        };
        let provision = || {
            ui.planned_command("init", &terraform.init().display());
            ui.planned_command("plan", &terraform.plan(&self.variables()).display());
            ui.planned_command("apply", &terraform.apply().display());
            ui.planned_command("outputs", &terraform.output().display());
        };
        let send = |count: u32| {
            let auth = if self.args.servicebus_connection_string.is_some() {
                "the given connection string"
            } else {
                "your az login token"
            };
            ui.planned_command("send", &az::execution_list(&outputs).display());
            comment(
                "send",
                "the executions listed now are not ours: watch ignores them".into(),
            );
            comment(
                "send",
                format!(
                    "send {} to {} on {} with {auth} (aca-job-lab sender)",
                    messages(count),
                    outputs.queue_name,
                    outputs.servicebus_fqdn
                ),
            );
        };
        let watch = || {
            ui.planned_command("watch", &az::execution_list(&outputs).display());
            comment(
                "watch",
                format!(
                    "repeat every {} until an execution not listed before the send is Succeeded (at most {}; \
                     a failed listing is retried with backoff, {MAX_FAILED_LISTINGS} in a row end the watch)",
                    human_duration(self.polling_interval),
                    human_duration(self.timeout)
                ),
            );
            comment(
                "watch",
                format!(
                    "then print how to read its logs:\n# {}",
                    logs_text(&outputs, "<execution>").replace('\n', "\n# ")
                ),
            );
            ui.planned_command("queue", &az::queue_counts(&outputs).display());
        };
        let destroy = || {
            if self.keep {
                comment("destroy", "--keep: no terraform destroy".into());
            } else {
                ui.planned_command("destroy", &terraform.destroy().display());
            }
        };
        comment("lab", self.header());
        if step.is_none() {
            preflight();
            provision();
            send(1);
            watch();
            destroy();
            // With --keep nothing is destroyed, after a failure either.
            if !self.keep {
                comment(
                    "destroy",
                    "terraform destroy also runs after a failure from apply on, and after Ctrl-C"
                        .into(),
                );
            }
        } else if matches!(step, Some(Step::Up)) {
            preflight();
            provision();
        } else if let Some(Step::Send { count, .. }) = step {
            ui.planned_command("outputs", &terraform.output().display());
            send(*count);
        } else if matches!(step, Some(Step::Watch)) {
            ui.planned_command("outputs", &terraform.output().display());
            watch();
        } else if matches!(step, Some(Step::Executions { .. })) {
            ui.planned_command("outputs", &terraform.output().display());
            ui.planned_command("executions", &az::execution_list(&outputs).display());
        } else if matches!(step, Some(Step::Down)) {
            preflight();
            ui.planned_command("init", &terraform.init().display());
            ui.planned_command("destroy", &terraform.destroy().display());
        }
    }
}

/// The checkout the lab runs from: `ACA_LAB_ROOT` when set (a copy of the repository, as the tests
/// use), otherwise the workspace this xtask was built in.
fn checkout_root() -> PathBuf {
    std::env::var_os("ACA_LAB_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(crate::util::project_root)
}

/// What a failed `terraform destroy` left in Azure, and how to finish the teardown.
struct LeftBehind {
    /// `terraform state list`; `None` when the state could not be read.
    resources: Option<Vec<String>>,
    resource_group: Option<String>,
    /// The by-hand command that prints the resource group's name, for when it is not known here.
    output_command: String,
}

impl LeftBehind {
    fn advice(&self) -> String {
        let mut text = String::from("TEARDOWN FAILED: ");
        match &self.resources {
            Some(resources) if resources.is_empty() => text.push_str(
                "Terraform's state lists nothing any more, but resources it was deleting may still exist",
            ),
            Some(resources) => {
                text.push_str(&format!(
                    "{} resource(s) are still in Azure and may be billing:",
                    resources.len()
                ));
                for resource in resources {
                    text.push_str("\n  ");
                    text.push_str(resource);
                }
            }
            None => text.push_str(
                "the lab's Terraform state could not be read; assume everything is still running and billing",
            ),
        }
        text.push_str(
            "\nfinish the teardown: run `cargo xtask lab --azure down` (terraform destroy again; transient Azure \
             errors usually pass); if it keeps failing, delete the resource group: ",
        );
        match &self.resource_group {
            Some(group) => text.push_str(&format!("`az group delete -n {group} --yes`")),
            None => text.push_str(&format!(
                "`az group delete -n <name> --yes` (the name: `{}`)",
                self.output_command
            )),
        }
        text
    }
}

/// ✘ the step with the error, or hand back the value and leave the step open for its ✔ message.
fn conclude<T>(step: &StepProgress, result: anyhow::Result<(T, String)>) -> anyhow::Result<T> {
    match result {
        Ok((value, _)) => Ok(value),
        Err(error) => {
            step.fail(&error);
            Err(error)
        }
    }
}

/// A failed execution listing that will be retried: said out loud (not only in the spinner), so a
/// flaky network or throttling shows in the run's log.
fn report_failed_listing(ui: &Ui, failures: u32, error: &anyhow::Error) {
    let text = error.to_string();
    ui.detail(format!(
        "listing failed ({failures} of {MAX_FAILED_LISTINGS} in a row allowed), retrying: {}",
        text.lines().next().unwrap_or_default()
    ));
}

/// The two ways to read an execution's logs, as printed under the watch step.
fn logs_text(outputs: &LabOutputs, execution: &str) -> String {
    let commands = az::log_commands(outputs, execution);
    format!(
        "logs: {}\n  (a preview command of the containerapp CLI extension: `{}`; it streams from a live replica)\n\
         logs with the core CLI, from Log Analytics (a few minutes after the execution):\n  {}",
        commands.extension,
        az::CONTAINERAPP_EXTENSION,
        commands.core
    )
}

/// `1 message`, `3 messages`.
fn messages(count: u32) -> String {
    if count == 1 {
        "1 message".to_owned()
    } else {
        format!("{count} messages")
    }
}
