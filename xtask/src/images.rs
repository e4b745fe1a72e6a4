//! `cargo xtask images`. TO BE WRITTEN.

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {}

pub fn run(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`cargo xtask images` is not implemented yet ({args:?})")
}
