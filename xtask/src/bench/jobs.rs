//! The Rust job and the tutorial's Python job, side by side on one emulator: cold start to the first
//! completed message, the drain of N messages, and peak RSS.
//!
//! Each job runs as a process with the lab's environment contract (a connection string to the emulator,
//! the queue name), as the local controller would start it. Time runs from the spawn; "completed" is
//! read from the emulator's `/queues/{name}` count (a locked message still counts as active, so the count
//! drops only when the job completes it). Peak RSS is the kernel's high-water mark (`VmHWM`), read
//! while the process runs.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::lab::controller::{HealthEndpointMetrics, QueueMetrics};
use crate::lab::local::send;

pub const QUEUE: &str = "queue-messages";
/// How long a job waits for more messages before it exits after a drain.
const IDLE_WAIT: &str = "1s";
/// Longest any single measurement may take before it is reported as a failure.
const GIVE_UP: Duration = Duration::from_secs(120);

/// A job as the bench starts it.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// The emulator the jobs talk to.
#[derive(Debug, Clone)]
pub struct Target {
    pub connection_string: String,
    pub metrics: HealthEndpointMetrics,
}

/// Median and max of repeated runs, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub runs: usize,
    pub median_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    pub fn of(mut times: Vec<Duration>) -> Self {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Self {
            runs: times.len(),
            median_ms: times.get(times.len() / 2).copied().map_or(0.0, ms),
            max_ms: times.last().copied().map_or(0.0, ms),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub job: &'static str,
    pub cold_start_to_first_completed: Spread,
    pub drain_messages: u32,
    /// From the spawn to the empty queue.
    pub drain_seconds: f64,
    pub drain_messages_per_second: f64,
    /// The highest of all runs; `None` where /proc is not there to read it.
    pub peak_rss_mib: Option<f64>,
}

/// Measure one job: `runs` cold starts with one message each, then one drain of `drain` messages.
pub async fn measure(
    job: &Job,
    target: &Target,
    runs: usize,
    drain: u32,
) -> anyhow::Result<JobResult> {
    let mut starts = Vec::with_capacity(runs);
    let mut peak_kib: Option<u64> = None;
    for _ in 0..runs.max(1) {
        send::send(&target.connection_string, QUEUE, 1, None).await?;
        let run = run_until_empty(job, target, 1).await?;
        starts.push(run.to_empty);
        peak_kib = peak_kib.max(run.peak_kib);
    }
    send::send(&target.connection_string, QUEUE, drain, None).await?;
    let run = run_until_empty(job, target, 0).await?;
    peak_kib = peak_kib.max(run.peak_kib);
    Ok(JobResult {
        job: job.name,
        cold_start_to_first_completed: Spread::of(starts),
        drain_messages: drain,
        drain_seconds: run.to_empty.as_secs_f64(),
        drain_messages_per_second: f64::from(drain) / run.to_empty.as_secs_f64().max(f64::EPSILON),
        peak_rss_mib: peak_kib.map(|kib| kib as f64 / 1024.0),
    })
}

struct Run {
    to_empty: Duration,
    peak_kib: Option<u64>,
}

/// Start the job (`max_messages` as its MAX_MESSAGES) and time it until the queue is empty; then wait
/// for it to exit, reading its memory high-water mark all along.
async fn run_until_empty(job: &Job, target: &Target, max_messages: u32) -> anyhow::Result<Run> {
    let mut command = tokio::process::Command::new(&job.program);
    command
        .args(&job.args)
        .env("SERVICEBUS_CONNECTION_STRING", &target.connection_string)
        .env("SERVICEBUS_QUEUE_NAME", QUEUE)
        .env("MAX_MESSAGES", max_messages.to_string())
        .env("MAX_WAIT", IDLE_WAIT)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        // Not read: a job logging every message would fill a pipe and stall.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let began = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start {}", job.program.display()))?;
    let pid = child.id();
    let mut peak_kib = None;
    let mut to_empty = None;
    loop {
        if let Some(kib) = pid.and_then(high_water_mark_kib) {
            peak_kib = peak_kib.max(Some(kib));
        }
        if to_empty.is_none() && target.metrics.active_message_count().await? == 0 {
            to_empty = Some(began.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            let to_empty = match to_empty {
                Some(took) => took,
                None if target.metrics.active_message_count().await? == 0 => began.elapsed(),
                None => bail!(
                    "{} exited ({status}) with messages still on the queue; run `cargo xtask lab` with it to see                      its log",
                    job.name
                ),
            };
            if !status.success() {
                bail!("{} exited with {status}", job.name);
            }
            return Ok(Run { to_empty, peak_kib });
        }
        if began.elapsed() > GIVE_UP {
            bail!("{} did not finish within {} s", job.name, GIVE_UP.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `VmHWM` of a running process (the most resident memory it has had), in KiB.
fn high_water_mark_kib(pid: u32) -> Option<u64> {
    crate::util::proc_status_kib(pid, "VmHWM")
}
