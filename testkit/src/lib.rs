//! What the workspace's tests and `cargo xtask` must agree on, in one place:
//!
//! - [`python`]: the virtualenv with the pinned `azure-servicebus` SDK that the Python peer tests run,
//!   created on first use so a plain `cargo test` on a fresh clone works (and `cargo xtask test`
//!   makes the same one);
//! - [`sources`]: the hash of the sources an image is built from, which `cargo xtask images` writes
//!   into a label and the container tests compare, so a test never runs yesterday's image;
//! - [`cargo`]: a child `cargo` without the variables cargo set for its parent, so builds started
//!   from `cargo xtask` or a test do not make the next `cargo xtask` rebuild;
//! - [`report`]: which Service Bus backends the container tests ran, for `cargo xtask test`'s summary.
//!
//! Not published: it exists for this workspace's tests and tooling only.

pub mod cargo;
pub mod python;
pub mod report;
pub mod sources;

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `<root>/testkit`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Bytes (a digest) as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
