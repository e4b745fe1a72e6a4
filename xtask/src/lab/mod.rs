//! `cargo xtask lab`: the walkthrough, locally (default) or on Azure (`--azure`).
//!
//! Both paths share the job settings file (`settings`) and the execution poller (`executions`).
//! OWNERSHIP while the kit is being built: `settings.rs`, `executions.rs`, `azure.rs`, `ui.rs` belong to the
//! Azure-walkthrough work; `local.rs` and `controller/` to the local-lab work.

// Shared API: each runner uses a different part of it, so not every item is used by every build.
#[allow(dead_code)]
pub mod executions;
#[allow(dead_code)]
pub mod settings;
#[allow(dead_code)]
pub mod ui;

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Args, Debug)]
pub struct LabArgs {
    /// Run against real Azure with Terraform instead of the embedded emulator and local controller.
    #[arg(long, global = true)]
    pub azure: bool,
    /// Print every command that would run, and run none.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Output for humans (progress, tables) or one JSON object per step for machines.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human, global = true)]
    pub output: OutputFormat,
    /// Leave everything running at the end (no teardown).
    #[arg(long, global = true)]
    pub keep: bool,
    #[command(subcommand)]
    pub step: Option<Step>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

/// The walkthrough's steps, each runnable on its own so a workshop can go step by step.
#[derive(Subcommand, Debug)]
pub enum Step {
    /// Provision: start (local) or apply (Azure) the lab and leave it running.
    Up,
    /// Send messages to the lab's queue.
    Send,
    /// Watch executions until one that started after the last send succeeds.
    Watch,
    /// List the job's executions.
    Executions,
    /// Tear the lab down.
    Down,
}

pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask lab` is not implemented yet ({args:?})")
}
