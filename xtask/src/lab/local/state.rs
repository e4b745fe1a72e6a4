//! The state directory (`.lab/` by default) that lets `lab up`, `send`, `watch`, `executions` and `down`
//! run as separate commands against one background lab.
//!
//! Files: `serve.pid` (written by `up` at once, so `down` finds the process even if it died before it
//! was ready), `state.json` (written by the lab when it is ready: addresses, connection string),
//! `executions.json` (az-shaped list), `records.json` (executions with replicas and log lines),
//! `last-send.json` (what `watch` waits for), `serve.log` (the background process's own output), and
//! `runs/` (each run's recording and timeline, see `lab::report`), which `down` leaves in place.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct StateDir(PathBuf);

/// What a running lab tells the other commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub pid: u32,
    pub amqp_addr: std::net::SocketAddr,
    pub health_addr: std::net::SocketAddr,
    pub connection_string: String,
    pub queue_name: String,
    pub job_name: String,
    pub polling_interval_secs: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The job settings file the lab runs with, so `watch` names the file that was really used.
    pub settings_file: PathBuf,
}

/// The last `lab send`: `watch` waits for an execution that started after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastSend {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub count: u32,
    /// Executions that existed before the send; they are not the ones we wait for.
    pub existing: Vec<String>,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn pid_file(&self) -> PathBuf {
        self.file("serve.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.file("serve.log")
    }

    pub fn executions_file(&self) -> PathBuf {
        self.file("executions.json")
    }

    pub fn write_executions(
        &self,
        executions: &[crate::lab::executions::Execution],
    ) -> anyhow::Result<()> {
        self.write("executions.json", &executions)
    }

    pub fn write_records(
        &self,
        records: &[crate::lab::controller::ExecutionRecord],
    ) -> anyhow::Result<()> {
        self.write("records.json", &records)
    }

    /// Executions with replicas and log lines; empty before the first one.
    pub fn records(&self) -> Vec<crate::lab::controller::ExecutionRecord> {
        self.read("records.json").unwrap_or_default()
    }

    pub fn create(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.0).with_context(|| {
            format!(
                "could not create the lab's state directory {}",
                self.0.display()
            )
        })
    }

    /// The pid `up` recorded, if any.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The running lab's state, with an error that says how to start one.
    pub fn lab(&self) -> anyhow::Result<LabState> {
        self.read("state.json").with_context(|| {
            format!(
                "no local lab is running (nothing in {}); start one with `cargo xtask lab up`",
                self.0.display()
            )
        })
    }

    pub fn write_lab(&self, state: &LabState) -> anyhow::Result<()> {
        self.write("state.json", state)
    }

    pub fn last_send(&self) -> Option<LastSend> {
        self.read("last-send.json").ok()
    }

    pub fn write_last_send(&self, send: &LastSend) -> anyhow::Result<()> {
        self.write("last-send.json", send)
    }

    pub fn read<T: DeserializeOwned>(&self, name: &str) -> anyhow::Result<T> {
        let path = self.file(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not what this lab wrote", path.display()))
    }

    /// Write through a temporary file and a rename, so a reader never sees half a file.
    pub fn write<T: Serialize>(&self, name: &str, value: &T) -> anyhow::Result<()> {
        let path = self.file(name);
        let temporary = self.file(&format!(".{name}.tmp"));
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(&temporary, text)
            .with_context(|| format!("could not write {}", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("could not write {}", path.display()))
    }

    /// Remove the lab's files; the recorded runs (`runs/`, the timelines) stay for `lab report`.
    pub fn remove(&self) -> anyhow::Result<()> {
        let entries = match std::fs::read_dir(&self.0) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => {
                return Err(error).with_context(|| format!("could not read {}", self.0.display()));
            }
        };
        for entry in entries {
            let path = entry?.path();
            if path.file_name() == Some(std::ffi::OsStr::new(crate::lab::report::RUNS_DIR)) {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(error)
                        .with_context(|| format!("could not remove {}", path.display()));
                }
                _ => {}
            }
        }
        // An empty directory is left as if the lab had never run.
        let _ = std::fs::remove_dir(&self.0);
        Ok(())
    }
}
