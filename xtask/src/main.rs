//! `cargo xtask`: the kit's runner (matklad's cargo-xtask convention).
//!
//! One module per task; `main` only parses and dispatches. Commands that touch the outside world run
//! programs directly (never through a shell) and offer `--dry-run` to print the plan instead.

mod bench;
mod fuzz;
mod images;
mod lab;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Tasks for the aca-job-lab kit",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the walkthrough: provision, send a message, watch a triggered execution succeed, tear down.
    /// Local (embedded emulator + jobs controller) by default; `--azure` for the real cloud.
    Lab(lab::LabArgs),
    /// Build the container images locally (no registry needed).
    Images(images::ImagesArgs),
    /// Run the benchmarks and print the numbers for docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// Run the emulator's property tests (frames, connections, Config.json) with many cases.
    Fuzz(fuzz::FuzzArgs),
    /// Install what the tests need (Python venv with azure-servicebus, images) and run the whole suite.
    Test(test::TestArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(args) => lab::run(args),
        Command::Images(args) => images::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Test(args) => test::run(args),
        Command::Fuzz(args) => fuzz::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<lab::ui::Interrupted>().is_some() => {
            std::process::ExitCode::from(lab::ui::EXIT_INTERRUPTED)
        }
        // The lab's story already showed it (✘ and its causes); once is enough.
        Err(err) if err.downcast_ref::<lab::ui::Shown>().is_some() => {
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
