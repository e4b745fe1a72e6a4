//! What `tests/backends.rs` ran, for `cargo xtask test`'s closing summary.
//!
//! libtest's summary counts cases, not backends: "16 passed" reads the same whether the container
//! backend ran or every one of its cases was skipped. When [`REPORT_ENV`] names a file, the backends
//! test binary writes this report there, and `cargo xtask test` names every backend that ran and every
//! one that did not, with the reason, and fails when one the machine should have did not run.

use serde::{Deserialize, Serialize};

/// The file the backends test binary writes its report to, when set.
pub const REPORT_ENV: &str = "ACA_LAB_BACKENDS_REPORT";

/// One run of the backends test binary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendsReport {
    pub backends: Vec<BackendRun>,
}

/// What happened to one backend's cases (only the cases the run's filter kept).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRun {
    /// `embedded`, `container` or `official`.
    pub name: String,
    /// Cases that ran (passed or failed; libtest's summary tells which).
    pub ran: Vec<String>,
    /// Cases reported as ignored, and why.
    pub skipped: Vec<String>,
    /// Why the backend's cases did not run (skipped or refused), when they did not.
    pub reason: Option<String>,
}

impl BackendsReport {
    pub fn backend(&self, name: &str) -> Option<&BackendRun> {
        self.backends.iter().find(|b| b.name == name)
    }
}
