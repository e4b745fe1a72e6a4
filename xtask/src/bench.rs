//! `cargo xtask bench`: measure the emulator and the worker in release mode.
//!
//! Performance is measured here, never asserted in tests. The output is Markdown ready to paste into
//! `docs/benchmarks.md`, headed by the machine and the command, so numbers always travel with their context.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::util::{project_root, run_checked};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// How many times to start the emulator binary for the start-up measurement.
    #[arg(long, default_value_t = 20)]
    pub starts: usize,
    /// Messages for the send/receive/complete benchmark.
    #[arg(long, default_value_t = 2000)]
    pub messages: usize,
    /// Print the commands and run none.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let root = project_root();
    let mut build = crate::util::cargo();
    build.current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "servicebus-emulator",
        "-p",
        "aca-job-lab",
        "--bins",
    ]);
    run_checked(&mut build, args.dry_run)?;

    let release = crate::util::target_dir(&root)?.join("release");
    let emulator = release.join("servicebus-emulator");
    let job = release.join("servicebus-job");

    let mut bench = crate::util::cargo();
    bench
        .current_dir(&root)
        .args(["bench", "-p", "aca-job-lab", "--bench", "throughput"])
        .env("ACA_LAB_JOB_BIN", &job)
        .env("BENCH_MESSAGES", args.messages.to_string());
    if args.dry_run {
        run_checked(&mut bench, true)?;
        println!(
            "{} --listen 127.0.0.1:0 --health-listen 127.0.0.1:0   # × {}, timed to the ready line",
            emulator.display(),
            args.starts
        );
        return Ok(ExitCode::SUCCESS);
    }

    println!("## {}\n", today());
    println!("Machine: {}\n", machine());
    println!(
        "Command: `cargo xtask bench --starts {} --messages {}`\n",
        args.starts, args.messages
    );
    run_checked(&mut bench, false)?;
    let (median, max) = binary_start(&emulator, args.starts)?;
    println!(
        "| emulator binary start to ready line ({} runs) | median {:.1} ms, max {:.1} ms |",
        args.starts,
        median.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    for (name, path) in [("servicebus-emulator", &emulator), ("servicebus-job", &job)] {
        let size = std::fs::metadata(path)
            .with_context(|| format!("no {}", path.display()))?
            .len();
        println!(
            "| release binary size, {name} (stripped, dynamic) | {:.1} MiB |",
            size as f64 / 1_048_576.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Start the emulator binary `runs` times and time each start to its ready line on stdout.
fn binary_start(emulator: &Path, runs: usize) -> anyhow::Result<(Duration, Duration)> {
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
    times.sort();
    Ok((times[times.len() / 2], times[times.len() - 1]))
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
