//! `cargo xtask lab`: the walkthrough, locally (default) or on Azure (`--azure`).
//!
//! Both paths share the job settings file (`settings`) and the execution poller (`executions`).
//! OWNERSHIP while the kit is being built: `settings.rs`, `executions.rs`, `azure.rs`, `ui.rs` belong to the
//! Azure-walkthrough work; `local.rs` and `controller/` to the local-lab work.

pub mod azure;
// Shared API: each runner uses a different part of it, so not every item is used by every build.
#[allow(dead_code)]
pub mod controller;
#[allow(dead_code)]
pub mod executions;
pub(crate) mod local;
pub mod report;
#[allow(dead_code)]
pub mod settings;
#[allow(dead_code)]
pub mod ui;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::util::parse_duration;

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
    /// Give up waiting for an execution that started after the send to succeed after this long
    /// (e.g. 90s, 15m, or plain seconds) [default: 60s locally, 15m with --azure].
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// How often the lab looks. Locally: how often the jobs controller counts the queue, in whole
    /// seconds (the settings file's 30 s is Azure's) [default: 1s]. With --azure: the pause between two
    /// `az containerapp job execution list` calls [default: 10s].
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub polling_interval: Option<Duration>,
    /// Where the lab keeps its state between steps (`up`'s pids, addresses and executions; the Azure
    /// path's last send) [default: .lab locally, .lab/azure with --azure].
    #[arg(long, global = true, env = "LAB_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub local: local::LocalArgs,
    #[command(flatten)]
    pub azure_args: Box<azure::AzureArgs>,
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
    Send {
        /// How many messages.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// The body of every message (default: a small JSON document numbering the message).
        #[arg(long)]
        body: Option<String>,
    },
    /// Watch executions until one that started after the last send succeeds.
    Watch,
    /// List the job's executions.
    Executions {
        /// `table` (name, status, start, duration) or `json` (as `az containerapp job execution list`).
        #[arg(short = 'o', long = "format", value_enum)]
        format: Option<local::ListFormat>,
    },
    /// Draw the timeline of the latest local lab run (running or finished): an SVG and an HTML page
    /// with the execution table, under the state directory.
    Report {
        /// Put the latest Rust-job run and the latest Python-job run on one page, on one time scale.
        #[arg(long)]
        compare: bool,
    },
    /// Tear the lab down.
    Down,
    /// The background local lab that `up` starts (not for direct use).
    #[command(hide = true)]
    Serve,
}

/// The lab's flags that each step reads; `--help` of a step lists only these (and `--help`).
///
/// The flags stay global so a participant may put them before or after the step's name, as the
/// workshop's commands do (`cargo xtask lab --azure up`, `cargo xtask lab up --settings …`); only
/// the help is trimmed, so a step's help does not offer knobs that would change nothing.
const STEP_FLAGS: &[(&str, &[&str])] = &[
    (
        "up",
        &[
            "azure",
            "dry_run",
            "output",
            "keep",
            "polling_interval",
            "state_dir",
            "runtime",
            "image",
            "worker_bin",
            "settings",
            "port",
            "health_port",
            "location",
            "scaler_auth",
            "image_builder",
        ],
    ),
    (
        "send",
        &[
            "azure",
            "dry_run",
            "output",
            "state_dir",
            "settings",
            "count",
            "body",
            "role_wait",
            "servicebus_connection_string",
        ],
    ),
    (
        "watch",
        &[
            "azure",
            "dry_run",
            "output",
            "state_dir",
            "settings",
            "timeout",
            "polling_interval",
        ],
    ),
    (
        "executions",
        &[
            "azure",
            "dry_run",
            "output",
            "state_dir",
            "settings",
            "format",
        ],
    ),
    (
        "down",
        &["azure", "dry_run", "output", "state_dir", "settings"],
    ),
];

/// Hide, in each step's `--help`, the global lab flags that step does not read. Call on the `lab`
/// command before it is built: clap copies a global flag into a step only where the step has no flag
/// of that name, so a hidden, local copy put there first keeps it out of that step's help. (Hiding
/// after the build would have to edit clap's built lookup tables.) Such a flag written after that
/// step's name is still accepted, and ignored, as the step never read it.
pub fn trim_step_help(lab: clap::Command) -> clap::Command {
    let globals: Vec<clap::Arg> = lab
        .get_arguments()
        .filter(|arg| arg.is_global_set())
        .cloned()
        .collect();
    STEP_FLAGS.iter().fold(lab, |lab, (step, used)| {
        lab.mut_subcommand(step, |mut step| {
            for arg in &globals {
                if !used.contains(&arg.get_id().as_str()) {
                    step = step.arg(arg.clone().global(false).hide(true));
                }
            }
            step
        })
    })
}

pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    if !args.azure {
        return local::run(args);
    }
    azure::run(&args)
}
