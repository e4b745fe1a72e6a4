//! `cargo xtask bench`. TO BE WRITTEN.

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask bench` is not implemented yet ({args:?})")
}
