//! A `cargo` to start from a program that cargo itself started (`cargo run`, `cargo test`).
//!
//! cargo puts the package's variables (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …) in the environment of
//! what it runs. A child cargo must not inherit them: a build script in the dependency tree (ring's)
//! declares `rerun-if-env-changed` on `CARGO_MANIFEST_DIR`, so a build started from `cargo xtask` (or
//! from a test) and the next `cargo xtask` would see different values and rebuild each other on
//! alternate calls (20-35 s a workshop round). The variables a person sets to configure cargo
//! (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_BUILD_*`, `CARGO_TERM_*`, …) are kept.

use std::process::Command;

/// `$CARGO` (else `cargo`) as a participant's shell would run it.
pub fn command() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_run_variable) {
            command.env_remove(name);
        }
    }
    command
}

/// The variables cargo sets for the program it runs (cargo's "Environment variables Cargo sets for
/// crates"), as opposed to the ones that configure cargo itself.
fn is_run_variable(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}

#[cfg(test)]
mod tests {
    use super::is_run_variable;

    #[test]
    fn child_cargo_drops_the_run_variables_and_keeps_the_configuration() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
        ] {
            assert!(is_run_variable(name), "{name} must be removed");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_TERM_COLOR",
            "CARGO_INCREMENTAL",
        ] {
            assert!(!is_run_variable(name), "{name} must be kept");
        }
    }
}
