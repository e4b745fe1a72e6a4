//! `cargo xtask fuzz`: the emulator's property tests (`emulator/tests/fuzz.rs`) run long.
//!
//! The suite runs a bounded number of cases on every `cargo xtask test`; this runs as many as asked,
//! which is how a long hunt is done on stable Rust (no nightly toolchain, so no cargo-fuzz). A failure
//! prints the shrunk input, and proptest records it under `emulator/tests/` so the next run (and the
//! suite) tries it first.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;

use crate::util::{cargo, display_command, project_root, run_checked};

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Cases per property (the suite runs 512 conversations and 1,024 codec inputs).
    #[arg(long, default_value_t = 100_000)]
    pub cases: u32,
    /// Build optimised (a few minutes once, then many more cases a second).
    #[arg(long)]
    pub release: bool,
    /// Only the properties whose name contains this (e.g. `connection`, `codec`, `config`).
    pub filter: Option<String>,
    /// Print the command and run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: FuzzArgs) -> anyhow::Result<ExitCode> {
    if args.cases == 0 {
        bail!("--cases must be at least 1");
    }
    let mut test = cargo();
    test.current_dir(project_root())
        .args(["test", "-p", "servicebus-emulator", "--test", "fuzz"])
        .env("PROPTEST_CASES", args.cases.to_string());
    if args.release {
        test.arg("--release");
    }
    if let Some(filter) = &args.filter {
        test.arg("--").arg(filter);
    }
    if args.dry_run {
        println!("PROPTEST_CASES={} {}", args.cases, display_command(&test));
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    run_checked(&mut test, false)?;
    println!(
        "fuzz: {} cases per property passed in {:.1} s",
        args.cases,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
