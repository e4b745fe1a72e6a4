//! `cargo xtask`: the kit's runner (matklad's cargo-xtask convention).
//!
//! One module per task; `main` only parses and dispatches. Commands that touch the outside world run
//! programs directly (never through a shell) and offer `--dry-run` to print the plan instead.

mod bench;
mod fuzz;
mod images;
mod lab;
mod soak;
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
    /// Run the emulator on a data directory under load for a while: workers and the emulator
    /// SIGKILLed at random, then every message reconciled (60 s of it run in `cargo xtask test`).
    Soak(soak::SoakArgs),
    /// Install what the tests need (Python venv with azure-servicebus, images) and run the whole suite.
    Test(test::TestArgs),
}

/// The command line, with each `lab` step's help trimmed to the flags it reads.
fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().mut_subcommand("lab", lab::trim_step_help)
}

fn main() -> std::process::ExitCode {
    use clap::FromArgMatches;
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Lab(args) => lab::run(args),
        Command::Images(args) => images::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Test(args) => test::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Soak(args) => soak::run(args),
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
        super::command().debug_assert();
    }

    /// Each step's help as `cargo xtask lab STEP --help` prints it, and the long flags it shows.
    fn step_help(step: &str) -> (String, Vec<String>) {
        let mut command = super::command();
        command.build();
        let lab = command.find_subcommand_mut("lab").unwrap();
        let step = lab.find_subcommand_mut(step).unwrap();
        let shown = step
            .get_arguments()
            .filter(|arg| !arg.is_hide_set())
            .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
            .collect();
        (step.render_long_help().to_string(), shown)
    }

    #[test]
    fn each_step_help_lists_only_the_flags_it_reads() {
        for (step, expected) in [
            (
                "send",
                &[
                    "--azure",
                    "--count",
                    "--body",
                    "--dry-run",
                    "--output",
                    "--state-dir",
                    "--settings",
                    "--help",
                    "--role-wait",
                    "--servicebus-connection-string",
                ][..],
            ),
            (
                "watch",
                &[
                    "--azure",
                    "--dry-run",
                    "--output",
                    "--timeout",
                    "--polling-interval",
                    "--state-dir",
                    "--settings",
                    "--help",
                ],
            ),
            (
                "down",
                &[
                    "--azure",
                    "--dry-run",
                    "--output",
                    "--state-dir",
                    "--settings",
                    "--help",
                ],
            ),
        ] {
            let (help, mut shown) = step_help(step);
            let mut expected: Vec<&str> = expected.to_vec();
            shown.sort();
            expected.sort();
            assert_eq!(shown, expected, "{step}:\n{help}");
            assert!(
                help.contains(&format!("Usage: cargo xtask lab {step} [OPTIONS]")),
                "{help}"
            );
        }
        // `up` provisions: the runtime and Azure knobs are its own.
        let up = step_help("up").1.join(" ");
        for flag in [
            "--runtime",
            "--worker-bin",
            "--port",
            "--location",
            "--keep",
        ] {
            assert!(up.contains(flag), "up lacks {flag}: {up}");
        }
        assert!(!up.contains("--count") && !up.contains("--timeout"), "{up}");
    }

    #[test]
    fn a_flag_before_or_after_the_step_reaches_the_step() {
        use clap::FromArgMatches;
        for words in [
            &[
                "cargo-xtask",
                "lab",
                "--state-dir",
                "/x",
                "watch",
                "--timeout",
                "5s",
            ][..],
            &[
                "cargo-xtask",
                "lab",
                "watch",
                "--state-dir",
                "/x",
                "--timeout",
                "5s",
            ],
        ] {
            let matches = super::command().try_get_matches_from(words).unwrap();
            let super::Command::Lab(lab) = super::Cli::from_arg_matches(&matches).unwrap().command
            else {
                panic!("not lab")
            };
            assert_eq!(lab.state_dir.as_deref(), Some(std::path::Path::new("/x")));
            assert_eq!(lab.timeout, Some(std::time::Duration::from_secs(5)));
        }
    }
}
