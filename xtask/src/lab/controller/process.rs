//! Replicas as processes: the worker binary with the job's environment, output captured line by line.
//!
//! Container Apps gives a replica its environment and sends SIGTERM at the timeout; a process gets the
//! same. Signals go through the `kill` program so this crate needs no `unsafe` or extra dependency.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::history::Stream;
use super::replica::{LogSink, Replica, ReplicaError, ReplicaExit, ReplicaRunner, ReplicaSpec};

/// Runs each replica as `program args…` with `env` plus the Container Apps replica variables.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ProcessRunner {
    pub fn new(program: impl Into<PathBuf>, env: Vec<(String, String)>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env,
        }
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn program(&self) -> &std::path::Path {
        &self.program
    }
}

impl ReplicaRunner for ProcessRunner {
    type Replica = ProcessReplica;

    async fn start(&self, spec: ReplicaSpec) -> Result<ProcessReplica, ReplicaError> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(container_app_env(&spec));
        spawn(command, &spec).map_err(|error| {
            ReplicaError(format!(
                "{} could not be started ({error}); build it with `cargo build -p aca-job-lab --bin servicebus-job` \
                 or pass its path with --worker-bin",
                self.program.display()
            ))
        })
    }
}

/// The names Container Apps sets in every job replica.
pub(super) fn container_app_env(spec: &ReplicaSpec) -> [(&'static str, String); 3] {
    [
        ("CONTAINER_APP_JOB_NAME", spec.job_name.clone()),
        (
            "CONTAINER_APP_JOB_EXECUTION_NAME",
            spec.execution_name.clone(),
        ),
        ("CONTAINER_APP_REPLICA_NAME", spec.replica_name.clone()),
    ]
}

/// Start `command` with its output going line by line into the replica's log.
pub(super) fn spawn(mut command: Command, spec: &ReplicaSpec) -> std::io::Result<ProcessReplica> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // If the controller itself dies, its replicas must not outlive it holding message locks.
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the replica exited before it could be watched"))?;
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(forward_lines(
            stdout,
            Stream::Stdout,
            spec.log.clone(),
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(forward_lines(
            stderr,
            Stream::Stderr,
            spec.log.clone(),
        )));
    }
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    spec.log
        .line(Stream::System, format!("started {program} (pid {pid})"));
    Ok(ProcessReplica {
        child,
        pid,
        readers,
    })
}

async fn forward_lines(output: impl AsyncRead + Unpin, stream: Stream, log: LogSink) {
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log.line(stream, line);
    }
}

/// A running worker process.
pub struct ProcessReplica {
    child: Child,
    pid: u32,
    readers: Vec<JoinHandle<()>>,
}

impl Replica for ProcessReplica {
    async fn wait(&mut self) -> Result<ReplicaExit, ReplicaError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| ReplicaError(format!("waiting for pid {}: {e}", self.pid)))?;
        // Report the exit only after its last output lines are in the log. A grandchild holding the pipes
        // open must not hang the execution, hence the bound.
        while let Some(reader) = self.readers.last_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
            self.readers.pop();
        }
        Ok(exit_of(status))
    }

    fn terminate(&mut self) -> Result<(), ReplicaError> {
        signal(self.pid, "TERM").map_err(ReplicaError)
    }

    fn kill(&mut self) -> Result<(), ReplicaError> {
        self.child
            .start_kill()
            .map_err(|e| ReplicaError(format!("killing pid {}: {e}", self.pid)))
    }
}

fn exit_of(status: std::process::ExitStatus) -> ReplicaExit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ReplicaExit::Code(code),
        (None, Some(signal)) => ReplicaExit::Signal(signal),
        (None, None) => ReplicaExit::Code(-1),
    }
}

/// Send a signal (`TERM`, `KILL`, or `0` to probe) to a process, or to a process group with a negative
/// id, through the `kill` program.
pub fn signal(target: impl std::fmt::Display, name: &str) -> Result<(), String> {
    let output = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg("--")
        .arg(target.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run `kill` to send SIG{name} to {target}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`kill -{name} {target}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::lab::controller::{Clock, History};

    fn spec(history: &History) -> ReplicaSpec {
        history.start(
            "job-rust-abcdefg",
            OffsetDateTime::now_utc(),
            serde_json::Value::Null,
        );
        ReplicaSpec {
            job_name: "job-rust".into(),
            execution_name: "job-rust-abcdefg".into(),
            replica_name: "job-rust-abcdefg-1".into(),
            log: LogSink::new(
                history.clone(),
                "job-rust-abcdefg",
                "job-rust-abcdefg-1",
                Clock::system(),
            ),
        }
    }

    fn texts(history: &History, stream: Stream) -> Vec<String> {
        let record = history.get("job-rust-abcdefg").unwrap();
        record
            .log
            .into_iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text)
            .collect()
    }

    #[tokio::test]
    async fn captures_output_and_passes_the_environment() {
        let history = History::new();
        let runner = ProcessRunner::new("sh", vec![("SERVICEBUS_QUEUE_NAME".into(), "queue-messages".into())])
            .args(["-c", "echo queue=$SERVICEBUS_QUEUE_NAME exec=$CONTAINER_APP_JOB_EXECUTION_NAME; echo oops >&2; exit 3"]);
        let mut replica = runner.start(spec(&history)).await.unwrap();
        assert_eq!(replica.wait().await.unwrap(), ReplicaExit::Code(3));
        assert_eq!(
            texts(&history, Stream::Stdout),
            ["queue=queue-messages exec=job-rust-abcdefg"]
        );
        assert_eq!(texts(&history, Stream::Stderr), ["oops"]);
    }

    #[tokio::test]
    async fn sigterm_reaches_the_process() {
        let history = History::new();
        let runner = ProcessRunner::new("sh", vec![]).args([
            "-c",
            "trap 'echo got TERM; exit 143' TERM; echo ready; while :; do sleep 0.05; done",
        ]);
        let mut replica = runner.start(spec(&history)).await.unwrap();
        // Wait for the trap to be installed before signalling.
        while texts(&history, Stream::Stdout).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        replica.terminate().unwrap();
        assert_eq!(replica.wait().await.unwrap(), ReplicaExit::Code(143));
        assert_eq!(texts(&history, Stream::Stdout), ["ready", "got TERM"]);
    }

    #[tokio::test]
    async fn kill_ends_a_process_that_ignores_sigterm() {
        let history = History::new();
        let runner = ProcessRunner::new("sh", vec![]).args([
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ]);
        let mut replica = runner.start(spec(&history)).await.unwrap();
        while texts(&history, Stream::Stdout).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        replica.terminate().unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), replica.wait())
                .await
                .is_err()
        );
        replica.kill().unwrap();
        assert_eq!(replica.wait().await.unwrap(), ReplicaExit::Signal(9));
    }

    #[tokio::test]
    async fn a_missing_binary_says_how_to_build_it() {
        let history = History::new();
        let error = ProcessRunner::new("/nonexistent/servicebus-job", vec![])
            .start(spec(&history))
            .await
            .err()
            .unwrap();
        assert!(error.to_string().contains("--worker-bin"), "{error}");
    }
}
