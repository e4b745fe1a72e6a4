//! Small helpers shared by the tasks.

use std::path::{Path, PathBuf};

/// The workspace root, wherever `cargo xtask` was started from.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
