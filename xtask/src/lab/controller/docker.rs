//! Replicas as containers: the worker image run with `docker run`, as Container Apps runs the job's image.
//!
//! The container shares the host's network so `127.0.0.1` reaches the embedded emulator, exactly as the
//! process runtime does. `docker run` stays attached, so the replica's output is the container's output;
//! SIGTERM and SIGKILL go to the container through `docker kill`, because signalling the CLI process would
//! not stop a container that ignores it.

use std::process::Stdio;

use tokio::process::Command;

use super::process::{ProcessReplica, container_app_env, spawn};
use super::replica::{Replica, ReplicaError, ReplicaExit, ReplicaRunner, ReplicaSpec};

/// The image `cargo xtask images` builds for the worker.
pub const WORKER_IMAGE: &str = "aca-job-lab/servicebus-job:dev";

/// Runs each replica as `docker run --rm --network host <image>` with the job's environment.
#[derive(Debug, Clone)]
pub struct DockerRunner {
    image: String,
    env: Vec<(String, String)>,
}

impl DockerRunner {
    pub fn new(image: impl Into<String>, env: Vec<(String, String)>) -> Self {
        Self {
            image: image.into(),
            env,
        }
    }

    /// The `docker run` command for one replica. Values travel in the CLI's environment and only their
    /// names on the command line (`-e NAME`), so the connection string does not show up in `ps`.
    fn command(&self, spec: &ReplicaSpec) -> Command {
        let mut command = Command::new("docker");
        command.args([
            "run",
            "--rm",
            "--network",
            "host",
            "--name",
            &container_name(spec),
        ]);
        let replica_env = container_app_env(spec);
        let names = self
            .env
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(replica_env.iter().map(|(k, _)| *k));
        for name in names {
            command.args(["-e", name]);
        }
        command.arg(&self.image);
        command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(replica_env);
        command
    }
}

/// Container names must be unique on the host; replica names already are.
fn container_name(spec: &ReplicaSpec) -> String {
    format!("aca-job-lab-{}", spec.replica_name)
}

impl ReplicaRunner for DockerRunner {
    type Replica = DockerReplica;

    async fn start(&self, spec: ReplicaSpec) -> Result<DockerReplica, ReplicaError> {
        let process = spawn(self.command(&spec), &spec).map_err(|error| {
            ReplicaError(format!(
                "`docker run {}` could not be started ({error}); install Docker Engine, or use the default \
                 process runtime (leave out --runtime docker)",
                self.image
            ))
        })?;
        Ok(DockerReplica {
            process,
            container: container_name(&spec),
        })
    }
}

/// A running `docker run` and the container it attached to.
pub struct DockerReplica {
    process: ProcessReplica,
    container: String,
}

impl DockerReplica {
    fn docker_kill(&self, signal: &str) -> Result<(), ReplicaError> {
        let output = std::process::Command::new("docker")
            .args(["kill", "--signal", signal, &self.container])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ReplicaError(format!("could not run `docker kill`: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        Err(ReplicaError(format!(
            "`docker kill --signal {signal} {}` failed: {}",
            self.container,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl Replica for DockerReplica {
    async fn wait(&mut self) -> Result<ReplicaExit, ReplicaError> {
        self.process.wait().await
    }

    fn terminate(&mut self) -> Result<(), ReplicaError> {
        self.docker_kill("TERM")
    }

    fn kill(&mut self) -> Result<(), ReplicaError> {
        // Killing the container ends the attached CLI; kill the CLI too in case the daemon is gone.
        let result = self.docker_kill("KILL");
        let _ = self.process.kill();
        result
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    use super::*;
    use crate::lab::controller::{Clock, History, replica::LogSink};

    #[test]
    fn the_command_passes_names_not_values() {
        let history = History::new();
        history.start(
            "job-rust-abcdefg",
            OffsetDateTime::now_utc(),
            serde_json::Value::Null,
        );
        let spec = ReplicaSpec {
            job_name: "job-rust".into(),
            execution_name: "job-rust-abcdefg".into(),
            replica_name: "job-rust-abcdefg-1".into(),
            log: LogSink::new(
                history,
                "job-rust-abcdefg",
                "job-rust-abcdefg-1",
                Clock::system(),
            ),
        };
        let runner = DockerRunner::new(
            WORKER_IMAGE,
            vec![("SERVICEBUS_CONNECTION_STRING".into(), "secret".into())],
        );
        let command = runner.command(&spec);
        let shown = crate::util::display_command(command.as_std());
        assert_eq!(
            shown,
            "docker run --rm --network host --name aca-job-lab-job-rust-abcdefg-1 -e SERVICEBUS_CONNECTION_STRING \
             -e CONTAINER_APP_JOB_NAME -e CONTAINER_APP_JOB_EXECUTION_NAME -e CONTAINER_APP_REPLICA_NAME \
             aca-job-lab/servicebus-job:dev"
        );
        let env: Vec<_> = command
            .as_std()
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
            .collect();
        assert!(env.contains(&("SERVICEBUS_CONNECTION_STRING".into(), Some("secret".into()))));
    }
}
