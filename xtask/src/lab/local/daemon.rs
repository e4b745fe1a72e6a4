//! `lab up` / `lab serve` / `lab down`: the local lab as a background process for the workshop.
//!
//! `up` builds the worker, starts `cargo xtask lab serve` (this binary) detached in its own process
//! group, records its pid at once, and returns when the lab has written `state.json`. `serve` runs the
//! emulator and the controller until SIGTERM or SIGINT, keeping the executions files current. `down`
//! sends SIGTERM, waits, then kills the whole process group, so replicas left behind by a crashed lab go
//! too, and removes the lab's state (the runs' timelines stay for `lab report`).

use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use time::OffsetDateTime;

use super::runtime::{self, Worker};
use super::state::{LabState, StateDir};
use super::{Options, Runtime, header};
use crate::lab::OutputFormat;
use crate::lab::controller::History;
use crate::lab::controller::process::signal;
use crate::lab::report;
use crate::lab::ui::Ui;
use crate::util::display_command;

/// The emulator's usual ports, so tools and scripts written for it work against `lab up` unchanged.
const DEFAULT_AMQP_PORT: u16 = 5672;
const DEFAULT_HEALTH_PORT: u16 = 5300;
/// How long `up` waits for the background lab to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `down` waits after SIGTERM before killing.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub fn up(args: &Options, ui: &Ui, dry_run: bool) -> anyhow::Result<ExitCode> {
    let state = args.state();
    // Answer before building anything: a running lab is reported with what a participant needs from
    // it, and taken ports are reported once, with the flags `up` takes.
    if !dry_run {
        if let Some(pid) = state.pid().filter(|pid| is_our_lab(*pid)) {
            return already_running(ui, &state, pid);
        }
        check_port_free(
            args.flags.port.unwrap_or(DEFAULT_AMQP_PORT),
            "AMQP",
            "--port",
        )?;
        check_port_free(
            args.flags.health_port.unwrap_or(DEFAULT_HEALTH_PORT),
            "health and counts",
            "--health-port",
        )?;
    }
    let worker = args.worker(ui, dry_run)?;
    let plan = args.plan(worker.clone(), DEFAULT_AMQP_PORT, DEFAULT_HEALTH_PORT)?;
    let mut command =
        std::process::Command::new(std::env::current_exe().context("could not locate xtask")?);
    command
        .args([
            "lab",
            "serve",
            "--polling-interval",
            &format!("{}s", plan.polling_interval.as_secs()),
        ])
        .args(worker.serve_args())
        .arg("--settings")
        .arg(args.settings_path())
        .arg("--state-dir")
        .arg(state.path())
        .args([
            "--port",
            &plan.amqp.port().to_string(),
            "--health-port",
            &plan.health.port().to_string(),
        ]);
    if dry_run {
        println!("{}", display_command(&command));
        return Ok(ExitCode::SUCCESS);
    }
    header(ui, &plan.settings, &plan.worker);
    // Whatever is left from a lab that crashed is stale now.
    state.remove()?;
    state.create()?;
    let log =
        std::fs::File::create(state.log_file()).context("could not create the lab's log file")?;
    let progress = ui.step("up", "Starting the lab in the background");
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in this terminal does not reach it, and `down` can end the
        // group (the lab and every replica) in one signal.
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{}`", display_command(&command)))?;
    std::fs::write(state.pid_file(), child.id().to_string())
        .context("could not record the lab's pid")?;
    let started = Instant::now();
    let lab = loop {
        if let Ok(lab) = state.lab() {
            break lab;
        }
        if let Some(status) = child.try_wait()? {
            let error = anyhow::anyhow!(
                "the background lab exited ({status}) before it was ready; its log says:\n{}",
                tail(&state, 20)
            );
            progress.fail(&error);
            let _ = state.remove();
            return Err(error);
        }
        if started.elapsed() > READY_TIMEOUT {
            let error = anyhow::anyhow!(
                "the background lab was not ready after {} s; see {} and stop it with `cargo xtask lab down`",
                READY_TIMEOUT.as_secs(),
                state.log_file().display()
            );
            progress.fail(&error);
            return Err(error);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    progress.ok_with(
        format!(
            "Lab running in the background (pid {}) · emulator on {} · controller polling every {} s",
            lab.pid, lab.amqp_addr, lab.polling_interval_secs
        ),
        lab_facts(&lab, &state),
    );
    show_lab(ui, &lab, &state);
    if ui.format() == OutputFormat::Human {
        println!(
            "Next: `cargo xtask lab send`, then `cargo xtask lab watch`; `cargo xtask lab down` when done."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `up` while a lab runs: say so, with its connection string, and succeed (there is a lab, as asked).
fn already_running(ui: &Ui, state: &StateDir, pid: u32) -> anyhow::Result<ExitCode> {
    let lab = state.lab().with_context(|| {
        format!(
            "a local lab is starting (pid {pid}) but has not written {} yet; wait a moment, or stop \
             it with `cargo xtask lab down`",
            state.file("state.json").display()
        )
    })?;
    ui.step("up", "Checking for a running lab").ok_with(
        format!(
            "A local lab is already running (pid {}) · emulator on {} · controller polling every {} s",
            lab.pid, lab.amqp_addr, lab.polling_interval_secs
        ),
        lab_facts(&lab, state),
    );
    show_lab(ui, &lab, state);
    if ui.format() == OutputFormat::Human {
        println!(
            "It keeps its settings ({}); to start it with others: `cargo xtask lab down`, then `cargo xtask lab up`.",
            lab.settings_file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What scripts need from a running lab, as fields of `up`'s JSON record.
fn lab_facts(lab: &LabState, state: &StateDir) -> serde_json::Value {
    serde_json::json!({
        "pid": lab.pid,
        "connection_string": lab.connection_string,
        "amqp_addr": lab.amqp_addr,
        "health_addr": lab.health_addr,
        "queue_name": lab.queue_name,
        "state_dir": state.path(),
    })
}

/// The lines a participant copies from: the connection string and where the logs are.
fn show_lab(ui: &Ui, lab: &LabState, state: &StateDir) {
    if ui.format() == OutputFormat::Human {
        ui.detail(format!("connection string: {}", lab.connection_string));
        ui.detail(format!("state and logs: {}", state.path().display()));
    }
}

/// A taken port, found before anything is built or started (port 0 asks for a free one).
fn check_port_free(port: u16, what: &str, flag: &str) -> anyhow::Result<()> {
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "port {port} on 127.0.0.1 ({what}) is already in use by another program; stop it (an \
             earlier lab in another state directory: `cargo xtask lab down --state-dir DIR`), or \
             choose another port: `cargo xtask lab up {flag} {}`",
            port.saturating_add(1)
        ),
        Err(error) => {
            Err(error).with_context(|| format!("could not check port {port} on 127.0.0.1 ({what})"))
        }
    }
}

/// The background lab (hidden subcommand; `up` starts it).
pub async fn serve(args: &Options) -> anyhow::Result<ExitCode> {
    let state = args.state();
    let worker = match (args.flags.runtime, &args.flags.worker_bin) {
        _ if args.flags.job == report::JobKind::Python => Worker::Python {
            python: args.flags.python.clone().context(
                "`lab serve --job python` needs --python; start the lab with `cargo xtask lab up`",
            )?,
            script: super::python_job::script(),
        },
        (Runtime::Docker, _) => Worker::Image(args.flags.image.clone()),
        (Runtime::Process, Some(path)) => Worker::Binary(path.clone()),
        (Runtime::Process, None) => {
            bail!("`lab serve` needs --worker-bin; start the lab with `cargo xtask lab up`")
        }
    };
    let plan = args.plan(worker, DEFAULT_AMQP_PORT, DEFAULT_HEALTH_PORT)?;
    state.create()?;
    let emulator = runtime::start_emulator(&plan).await?;
    let controller = runtime::RunningController::start(&plan, &emulator);
    let writer = tokio::spawn(keep_files_current(
        controller.history.clone(),
        state.clone(),
    ));
    let run = report::RunDir::create(
        state.path(),
        &controller.recorder.recording(&controller.history),
    )?;
    let recording = tokio::spawn(keep_recording_current(
        controller.recorder.clone(),
        controller.history.clone(),
        run.clone(),
    ));
    state.write_lab(&LabState {
        pid: std::process::id(),
        amqp_addr: emulator.amqp_addr(),
        health_addr: emulator.health_addr(),
        connection_string: emulator.connection_string(),
        queue_name: plan.settings.queue_name.clone(),
        job_name: plan.settings.job_name.clone(),
        polling_interval_secs: plan.polling_interval.as_secs(),
        started_at: OffsetDateTime::now_utc(),
        settings_file: args.settings_path(),
    })?;
    eprintln!(
        "lab ready: emulator on {}, health on {}",
        emulator.amqp_addr(),
        emulator.health_addr()
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("could not listen for SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => eprintln!("SIGTERM: stopping the lab"),
        _ = tokio::signal::ctrl_c() => eprintln!("SIGINT: stopping the lab"),
    }
    let history = controller.history.clone();
    let recorder = controller.recorder.clone();
    controller.stop().await;
    writer.abort();
    recording.abort();
    write_files(&history, &state)?;
    run.save(&recorder.recording(&history))?;
    let written = run.render()?;
    eprintln!("timeline: {}", written.html.display());
    emulator.shutdown().await;
    eprintln!("lab stopped");
    Ok(ExitCode::SUCCESS)
}

/// Rewrite the executions files whenever the history changes (at most ten times a second).
async fn keep_files_current(history: History, state: StateDir) {
    let mut changes = history.subscribe();
    loop {
        if let Err(error) = write_files(&history, &state) {
            eprintln!("could not update the executions files: {error:#}");
        }
        if changes.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Save the run's recording every second, so `lab report` draws a running lab as it is now.
async fn keep_recording_current(recorder: report::Recorder, history: History, run: report::RunDir) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        if let Err(error) = run.save(&recorder.recording(&history)) {
            eprintln!("could not save the run's recording: {error:#}");
        }
    }
}

fn write_files(history: &History, state: &StateDir) -> anyhow::Result<()> {
    state.write_executions(&history.executions())?;
    state.write_records(&history.records())
}

pub fn down(args: &Options, ui: &Ui) -> anyhow::Result<ExitCode> {
    let state = args.state();
    let progress = ui.step("down", "Stopping the local lab");
    let Some(pid) = state.pid() else {
        state.remove()?;
        progress.ok("No local lab was running; nothing to stop");
        return Ok(ExitCode::SUCCESS);
    };
    let message = if is_our_lab(pid) {
        let _ = signal(pid, "TERM");
        let started = Instant::now();
        while is_alive(pid) && started.elapsed() < STOP_TIMEOUT {
            std::thread::sleep(Duration::from_millis(50));
        }
        if is_alive(pid) {
            format!(
                "Killed the lab (pid {pid}) after it ignored SIGTERM for {} s",
                STOP_TIMEOUT.as_secs()
            )
        } else {
            format!("Stopped the lab (pid {pid}): controller, replicas and emulator")
        }
    } else {
        format!("The lab (pid {pid}) had already exited; cleaned up what it left")
    };
    // The group outlives a crashed lab through its replicas; end them too. No group left is fine.
    let _ = signal(format!("-{pid}"), "KILL");
    state.remove()?;
    progress.ok(message);
    if let Some(run) = report::RunDir::latest(state.path(), None) {
        // The lab drew its timeline as it stopped; draw it here if it could not (it was killed).
        match run.render() {
            Ok(written) => report::announce(ui, &written),
            Err(error) => eprintln!("warning: could not draw the timeline: {error:#}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn is_alive(pid: u32) -> bool {
    signal(pid, "0").is_ok() && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The lab `up` started, if it is still running; a lab that crashed gets the way out named.
pub fn running_lab(state: &StateDir) -> anyhow::Result<LabState> {
    let lab = state.lab()?;
    if !is_our_lab(lab.pid) {
        bail!(
            "the local lab in {} is not running any more (pid {} exited: it crashed or was killed); \
             run `cargo xtask lab down` to clean up, then `cargo xtask lab up`",
            state.path().display(),
            lab.pid
        );
    }
    Ok(lab)
}

/// Is `pid` a lab this tool started (and not a recycled pid of something else)?
fn is_our_lab(pid: u32) -> bool {
    if !is_alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            words.windows(2).any(|w| w[0] == b"lab" && w[1] == b"serve")
        }
        // No /proc (not Linux): trust the pid file.
        Err(_) => true,
    }
}

fn tail(state: &StateDir, lines: usize) -> String {
    let text = std::fs::read_to_string(state.log_file()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
