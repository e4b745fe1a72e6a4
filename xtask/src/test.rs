//! `cargo xtask test`. TO BE WRITTEN.

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct TestArgs {}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask test` is not implemented yet ({args:?})")
}
