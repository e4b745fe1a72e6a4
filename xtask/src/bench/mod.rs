//! `cargo xtask bench`: measure the emulator and the jobs, side by side, in one run.
//!
//! Performance is measured here, never asserted in tests. The output is Markdown ready to paste into
//! `docs/benchmarks.md`, headed by the machine and the command, so numbers always travel with their
//! context; the same numbers go to `target/bench/bench.json` for tools. Three tables:
//! 1. the Rust job and the tutorial's Python job on one emulator (cold start to the first completed
//!    message, the drain of N messages, peak RSS) — see [`jobs`];
//! 2. our emulator and Microsoft's official one (start to ready, throughput), the official one only where
//!    its image is on the machine, else a row that says why it was skipped;
//! 3. the detail rows of `benches/throughput.rs` (in-process start, our client's send/receive rates).
//!
//! `--quick` runs a small version on the dev build, so CI executes every path and the bench never rots;
//! its numbers are labelled as such.

mod jobs;
mod scale;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::util::{project_root, run_checked};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// How many times to start the emulator binary for the start-up measurement [default: 20; 5 with --quick].
    #[arg(long)]
    pub starts: Option<usize>,
    /// Messages for the send/receive/complete benchmark [default: 2000; 200 with --quick].
    #[arg(long)]
    pub messages: Option<usize>,
    /// Cold starts of each job, one message each [default: 5; 2 with --quick].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Messages each job drains in the drain measurement [default: 500; 50 with --quick].
    #[arg(long)]
    pub drain: Option<u32>,
    /// A small, fast version on the dev build (what CI runs so the bench keeps working); its numbers
    /// are not for comparison with a full run.
    #[arg(long)]
    pub quick: bool,
    /// Print the commands and run none.
    #[arg(long)]
    pub dry_run: bool,
    /// Instead: the emulator binary at size, with and without `--data-dir` (send throughput, restart
    /// with 100k stored messages, RSS with a backlog of 1,000,000 × 1 KiB, 10,000 connections).
    /// Takes several minutes; with --quick, small sizes.
    #[arg(long)]
    pub scale: bool,
}

/// The official emulator's image (as in `servicebus_emulator::testcontainers`).
const OFFICIAL_IMAGE: &str = "mcr.microsoft.com/azure-messaging/servicebus-emulator";

/// Everything one bench run measured (`bench.json`).
#[derive(Debug, Serialize)]
struct BenchReport {
    date: String,
    machine: String,
    command: String,
    build: &'static str,
    jobs: Vec<jobs::JobResult>,
    emulators: Vec<EmulatorResult>,
    details: Vec<Detail>,
}

#[derive(Debug, Serialize)]
struct EmulatorResult {
    emulator: &'static str,
    #[serde(flatten)]
    outcome: EmulatorOutcome,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase", tag = "status")]
enum EmulatorOutcome {
    Measured {
        start_to_ready: jobs::Spread,
        /// Send + receive + complete with our client, end to end, messages per second.
        throughput_messages_per_second: Option<f64>,
    },
    Skipped {
        reason: String,
    },
}

/// A row of `benches/throughput.rs`.
#[derive(Debug, Serialize)]
struct Detail {
    benchmark: String,
    result: String,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let quick = args.quick;
    let starts = args.starts.unwrap_or(if quick { 5 } else { 20 });
    let messages = args.messages.unwrap_or(if quick { 200 } else { 2000 });
    let runs = args.runs.unwrap_or(if quick { 2 } else { 5 });
    let drain = args.drain.unwrap_or(if quick { 50 } else { 500 });
    let root = project_root();
    let profile = if quick { "dev" } else { "release" };
    let mut build = crate::util::cargo();
    build.current_dir(&root).args([
        "build",
        "--profile",
        profile,
        "-p",
        "servicebus-emulator",
        "-p",
        "aca-job-lab",
        "--bins",
    ]);
    run_checked(&mut build, args.dry_run)?;

    let bins = crate::util::target_dir(&root)?.join(if quick { "debug" } else { "release" });
    let emulator = bins.join("servicebus-emulator");
    let job = bins.join("servicebus-job");
    if args.scale {
        return scale_table(&emulator, quick, args.dry_run);
    }

    let mut bench = crate::util::cargo();
    bench
        .current_dir(&root)
        .args(["bench", "--profile", if quick { "dev" } else { "bench" }])
        .args(["-p", "aca-job-lab", "--bench", "throughput"])
        .env("ACA_LAB_JOB_BIN", &job)
        .env("BENCH_MESSAGES", messages.to_string())
        .stderr(Stdio::inherit());
    if args.dry_run {
        run_checked(&mut bench, true)?;
        println!(
            "{} --listen 127.0.0.1:0 --health-listen 127.0.0.1:0   # × {starts}, timed to the ready line",
            emulator.display()
        );
        println!(
            "then the Rust job and the Python job, {runs} cold starts and a drain of {drain} each"
        );
        return Ok(ExitCode::SUCCESS);
    }

    eprintln!("$ {}", crate::util::display_command(&bench));
    let output = bench
        .output()
        .with_context(|| format!("could not start `{}`", crate::util::display_command(&bench)))?;
    if !output.status.success() {
        bail!(
            "`cargo bench --bench throughput` failed ({})",
            output.status
        );
    }
    let details = detail_rows(&String::from_utf8_lossy(&output.stdout));
    let end_to_end = details
        .iter()
        .find(|d| d.benchmark.starts_with("send + receive + complete"))
        .and_then(|d| {
            d.result
                .trim_end_matches(" msg/s")
                .replace(' ', "")
                .parse()
                .ok()
        });

    let start_to_ready = binary_start(&emulator, starts)?;
    let python = python_job()?;
    let rust = jobs::Job {
        name: "Rust job (servicebus-job)",
        program: job.clone(),
        args: Vec::new(),
    };
    let runtime = tokio::runtime::Runtime::new().context("could not start the async runtime")?;
    let results = runtime.block_on(async {
        let server = EmulatorProcess::start(&emulator)?;
        let target = server.target();
        let mut results = Vec::new();
        for job in [&rust, &python] {
            eprintln!(
                "measuring the {} ({runs} cold starts, a drain of {drain})…",
                job.name
            );
            results.push(jobs::measure(job, &target, runs, drain).await?);
        }
        anyhow::Ok(results)
    })?;

    let mut command = format!("cargo xtask bench{}", if quick { " --quick" } else { "" });
    for (flag, value, default) in [
        ("--starts", starts, if quick { 5 } else { 20 }),
        ("--messages", messages, if quick { 200 } else { 2000 }),
        ("--runs", runs, if quick { 2 } else { 5 }),
        ("--drain", drain as usize, if quick { 50 } else { 500 }),
    ] {
        if value != default {
            command.push_str(&format!(" {flag} {value}"));
        }
    }
    let report = BenchReport {
        date: today(),
        machine: machine(),
        command,
        build: if quick {
            "dev build; --quick is a smoke run, not for comparison"
        } else {
            "release build"
        },
        jobs: results,
        emulators: vec![
            EmulatorResult {
                emulator: "ours (servicebus-emulator)",
                outcome: EmulatorOutcome::Measured {
                    start_to_ready,
                    throughput_messages_per_second: end_to_end,
                },
            },
            EmulatorResult {
                emulator: "official (Microsoft's emulator + SQL sidecar)",
                outcome: EmulatorOutcome::Skipped {
                    reason: official_skip_reason(),
                },
            },
        ],
        details,
    };
    let markdown = markdown(&report, messages);
    print!("{markdown}");
    let out = crate::util::target_dir(&root)?.join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("could not create {}", out.display()))?;
    std::fs::write(out.join("bench.md"), &markdown)?;
    std::fs::write(out.join("bench.json"), serde_json::to_vec_pretty(&report)?)?;
    eprintln!(
        "wrote {} and {}",
        out.join("bench.md").display(),
        out.join("bench.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `--scale`: one table of the emulator binary at size.
fn scale_table(emulator: &Path, quick: bool, dry_run: bool) -> anyhow::Result<ExitCode> {
    let sizes = if quick {
        scale::Sizes::quick()
    } else {
        scale::Sizes::full()
    };
    if dry_run {
        println!(
            "{} at {sizes:?}, with and without --data-dir",
            emulator.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("measuring the emulator at {sizes:?}…");
    let rows = scale::run(emulator, sizes)?;
    let command = format!(
        "cargo xtask bench --scale{}",
        if quick { " --quick" } else { "" }
    );
    let mut out = format!("## {}, `{command}`\n\nMachine: {}\n\n", today(), machine());
    out.push_str(&format!(
        "Command: `{command}` ({}; the emulator binary on loopback, our client in the xtask process).\n\n",
        if quick { "dev build, small sizes: a smoke run" } else { "release build" }
    ));
    out.push_str("| emulator at size | result |\n|---|---|\n");
    for (benchmark, result) in rows {
        out.push_str(&format!("| {benchmark} | {result} |\n"));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// The Python job with its interpreter (the lab's venv, made on first use, or `LAB_PYTHON`).
fn python_job() -> anyhow::Result<jobs::Job> {
    let python = std::env::var_os("LAB_PYTHON").map(PathBuf::from);
    let worker = crate::lab::local::python_job::worker(
        python.as_deref(),
        crate::lab::local::Runtime::Process,
        false,
    )?;
    let crate::lab::local::runtime::Worker::Python { python, script } = worker else {
        bail!("the Python job's worker is not a Python process");
    };
    Ok(jobs::Job {
        name: "Python job (lab/python-job/job.py)",
        program: python,
        args: vec![script.display().to_string()],
    })
}

/// Why the official emulator was not measured. Measuring it needs its image and its SQL sidecar; this
/// bench does not start them yet, so even where they are present the row says so rather than guess.
fn official_skip_reason() -> String {
    if !crate::images::docker_answers() {
        return "no Docker engine answers on this machine".to_owned();
    }
    let present = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", OFFICIAL_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        format!(
            "{OFFICIAL_IMAGE} is present, but this bench does not start it yet (tests/backends.rs does)"
        )
    } else {
        format!(
            "{OFFICIAL_IMAGE} is not on this machine (no registry here; `docker pull` it where there is one)"
        )
    }
}

/// `| benchmark | result |` rows printed by `benches/throughput.rs`.
fn detail_rows(output: &str) -> Vec<Detail> {
    output
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .collect();
            let [benchmark, result] = cells[..] else {
                return None;
            };
            let (benchmark, result) = (benchmark.trim(), result.trim());
            (benchmark != "benchmark" && !benchmark.starts_with("---")).then(|| Detail {
                benchmark: benchmark.to_owned(),
                result: result.to_owned(),
            })
        })
        .collect()
}

fn markdown(report: &BenchReport, messages: usize) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("## {}, `{}`\n", report.date, report.command));
    line(format!("Machine: {}\n", report.machine));
    line(format!(
        "Command: `{}` ({}; both jobs against one emulator binary on loopback, one after the other).\n",
        report.command, report.build
    ));
    let names: Vec<&str> = report.jobs.iter().map(|j| j.job).collect();
    line(format!("| jobs, same emulator | {} |", names.join(" | ")));
    line(format!("|---|{}", "---|".repeat(names.len())));
    let row = |name: String, cells: Vec<String>| format!("| {name} | {} |", cells.join(" | "));
    if let Some(first) = report.jobs.first() {
        let spread = first.cold_start_to_first_completed;
        line(row(
            format!(
                "cold start to the first completed message (median of {}, max)",
                spread.runs
            ),
            report
                .jobs
                .iter()
                .map(|j| {
                    let s = j.cold_start_to_first_completed;
                    format!("{} (max {})", human_ms(s.median_ms), human_ms(s.max_ms))
                })
                .collect(),
        ));
        line(row(
            format!(
                "drain {} messages, spawn to empty queue",
                first.drain_messages
            ),
            report
                .jobs
                .iter()
                .map(|j| {
                    format!(
                        "{:.2} s, {:.0} msg/s",
                        j.drain_seconds, j.drain_messages_per_second
                    )
                })
                .collect(),
        ));
        line(row(
            "peak RSS (VmHWM, highest run)".to_owned(),
            report
                .jobs
                .iter()
                .map(|j| {
                    j.peak_rss_mib.map_or_else(
                        || "not measured (no /proc)".to_owned(),
                        |m| format!("{m:.1} MiB"),
                    )
                })
                .collect(),
        ));
    }
    line(String::new());
    line(
        "| emulator | start to ready | throughput (send + receive + complete, our client) |"
            .to_owned(),
    );
    line("|---|---|---|".to_owned());
    for emulator in &report.emulators {
        match &emulator.outcome {
            EmulatorOutcome::Measured {
                start_to_ready,
                throughput_messages_per_second,
            } => line(format!(
                "| {} | median {} of {} starts (max {}) | {} |",
                emulator.emulator,
                human_ms(start_to_ready.median_ms),
                start_to_ready.runs,
                human_ms(start_to_ready.max_ms),
                throughput_messages_per_second.map_or_else(
                    || "-".to_owned(),
                    |t| format!("{t:.0} msg/s ({messages} messages)")
                )
            )),
            EmulatorOutcome::Skipped { reason } => {
                line(format!(
                    "| {} | SKIPPED: {reason} | SKIPPED |",
                    emulator.emulator
                ));
            }
        }
    }
    line(String::new());
    line("| benchmark (`benches/throughput.rs`) | result |".to_owned());
    line("|---|---|".to_owned());
    for detail in &report.details {
        line(format!("| {} | {} |", detail.benchmark, detail.result));
    }
    out
}

fn human_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// The emulator binary on free loopback ports, for the jobs.
struct EmulatorProcess {
    child: Child,
    amqp: SocketAddr,
    health: SocketAddr,
}

impl EmulatorProcess {
    fn start(binary: &Path) -> anyhow::Result<Self> {
        let amqp = free_port()?;
        let health = free_port()?;
        let mut child = Command::new(binary)
            .args([
                "--listen",
                &amqp.to_string(),
                "--health-listen",
                &health.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        crate::util::wait_for_ready_line(&mut child, std::time::Duration::from_secs(60))?;
        Ok(Self {
            child,
            amqp,
            health,
        })
    }

    fn target(&self) -> jobs::Target {
        jobs::Target {
            connection_string: servicebus_emulator::auth::emulator_connection_string(self.amqp),
            metrics: crate::lab::controller::HealthEndpointMetrics::new(self.health, jobs::QUEUE),
        }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free loopback port")?;
    Ok(listener.local_addr()?)
}

/// Start the emulator binary `runs` times and time each start to its ready line on stdout.
fn binary_start(emulator: &Path, runs: usize) -> anyhow::Result<jobs::Spread> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let began = Instant::now();
        let mut child = Command::new(emulator)
            .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {}", emulator.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains(servicebus_emulator::READY_LINE));
        let took = began.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        if !ready {
            bail!(
                "{} exited without printing the ready line",
                emulator.display()
            );
        }
        times.push(took);
    }
    Ok(jobs::Spread::of(times))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .map(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
            })
        })
        .flatten()
        .map_or(0.0, |kib| kib / 1_048_576.0);
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, {}",
        std::env::consts::OS
    )
}

fn today() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}
