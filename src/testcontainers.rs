//! A testcontainers module for the worker image (feature `testcontainers`).
//!
//! [`ServiceBusJob`] runs `aca-job-lab/servicebus-job:dev` (built locally by `cargo xtask images`)
//! with the same environment contract as the Container Apps job in Azure: `SERVICEBUS_QUEUE_NAME`
//! plus either `SERVICEBUS_CONNECTION_STRING` (emulators) or `SERVICEBUS_FQDN` and
//! `MANAGED_IDENTITY_CLIENT_ID` (Azure). A job has no "ready" state: it drains the queue and exits, so
//! `start()` returns as soon as the container runs, and the test waits for the exit code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testcontainers::TestcontainersError> {
//! use aca_job_lab::testcontainers::ServiceBusJob;
//! use testcontainers::{ImageExt, runners::AsyncRunner};
//!
//! let job = ServiceBusJob::default()
//!     .with_connection_string("Endpoint=sb://emulator:5672;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")
//!     .with_max_messages(0)
//!     .with_network("lab-net")
//!     .start()
//!     .await?;
//! # let _ = job; Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use testcontainers::Image;
use testcontainers::core::WaitFor;

/// The worker image, configured like the job in Azure.
///
/// `Default` drains one message (the tutorial's job) from `queue-messages` on an emulator reachable as
/// `servicebus-emulator:5672`, the name the lab's compose files give it.
#[derive(Debug, Clone)]
pub struct ServiceBusJob {
    env_vars: BTreeMap<String, String>,
    args: Vec<String>,
}

impl ServiceBusJob {
    /// The image name; the tag is [`Self::TAG`].
    pub const NAME: &str = "aca-job-lab/servicebus-job";
    /// `dev` is what `cargo xtask images` builds.
    pub const TAG: &str = "dev";
    /// The queue the lab and the tutorial use.
    pub const DEFAULT_QUEUE: &str = "queue-messages";
    /// An emulator at the compose files' service name, with the official emulator's well-known key.
    pub const DEFAULT_CONNECTION_STRING: &str = "Endpoint=sb://servicebus-emulator:5672;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

    /// `SERVICEBUS_CONNECTION_STRING`, for emulators (and SAS in Azure). Removes an FQDN set before.
    pub fn with_connection_string(mut self, connection_string: impl Into<String>) -> Self {
        self.env_vars.remove("SERVICEBUS_FQDN");
        self.env_vars.insert(
            "SERVICEBUS_CONNECTION_STRING".into(),
            connection_string.into(),
        );
        self
    }

    /// `SERVICEBUS_FQDN` and `MANAGED_IDENTITY_CLIENT_ID`: the Azure identity path. Removes a
    /// connection string set before.
    pub fn with_managed_identity(
        mut self,
        fqdn: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        self.env_vars.remove("SERVICEBUS_CONNECTION_STRING");
        self.env_vars.insert("SERVICEBUS_FQDN".into(), fqdn.into());
        self.env_vars
            .insert("MANAGED_IDENTITY_CLIENT_ID".into(), client_id.into());
        self
    }

    /// `SERVICEBUS_QUEUE_NAME`.
    pub fn with_queue_name(mut self, queue: impl Into<String>) -> Self {
        self.env_vars
            .insert("SERVICEBUS_QUEUE_NAME".into(), queue.into());
        self
    }

    /// `--max-messages`: how many to take before exiting; 0 drains until the queue stays empty for `--max-wait`.
    pub fn with_max_messages(self, max: u32) -> Self {
        self.with_arg("--max-messages", max.to_string())
    }

    /// `--max-wait`: how long an empty receive waits before the job decides the queue is drained.
    pub fn with_max_wait(self, wait: Duration) -> Self {
        self.with_arg("--max-wait", format!("{}ms", wait.as_millis()))
    }

    /// `--fail-on-subject`: messages with this subject fail transiently and are abandoned (for retries).
    pub fn with_fail_on_subject(self, subject: impl Into<String>) -> Self {
        self.with_arg("--fail-on-subject", subject.into())
    }

    /// `--simulate-work`: each message takes this long to process.
    pub fn with_simulated_work(self, work: Duration) -> Self {
        self.with_arg("--simulate-work", format!("{}ms", work.as_millis()))
    }

    /// `LOG_FORMAT=json`: one JSON object per log line, for tests that read the job's output.
    pub fn with_json_logs(mut self) -> Self {
        self.env_vars.insert("LOG_FORMAT".into(), "json".into());
        self
    }

    /// Any other flag of `servicebus-job`, as `--name value`; a later call for the same flag wins.
    pub fn with_arg(mut self, flag: &str, value: impl Into<String>) -> Self {
        if let Some(at) = self.args.iter().position(|arg| arg == flag) {
            self.args.drain(at..=at + 1);
        }
        self.args.push(flag.to_string());
        self.args.push(value.into());
        self
    }
}

impl Default for ServiceBusJob {
    fn default() -> Self {
        Self {
            env_vars: BTreeMap::new(),
            args: Vec::new(),
        }
        .with_queue_name(Self::DEFAULT_QUEUE)
        .with_connection_string(Self::DEFAULT_CONNECTION_STRING)
    }
}

impl Image for ServiceBusJob {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn tag(&self) -> &str {
        Self::TAG
    }

    /// None: a job runs to completion, so there is nothing to wait for before the test observes it.
    fn ready_conditions(&self) -> Vec<WaitFor> {
        Vec::new()
    }

    fn env_vars(
        &self,
    ) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        &self.env_vars
    }

    fn cmd(&self) -> impl IntoIterator<Item = impl Into<Cow<'_, str>>> {
        &self.args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testcontainers::ImageExt;

    fn env(job: &ServiceBusJob) -> BTreeMap<String, String> {
        job.env_vars.clone()
    }

    #[test]
    fn default_is_the_tutorial_job_against_the_compose_emulator() {
        let job = ServiceBusJob::default();
        assert_eq!(
            format!("{}:{}", job.name(), job.tag()),
            "aca-job-lab/servicebus-job:dev"
        );
        assert_eq!(
            env(&job).get("SERVICEBUS_QUEUE_NAME").map(String::as_str),
            Some("queue-messages")
        );
        assert!(
            env(&job)["SERVICEBUS_CONNECTION_STRING"]
                .starts_with("Endpoint=sb://servicebus-emulator:5672;")
        );
        assert!(job.args.is_empty());
    }

    #[test]
    fn identity_and_connection_string_replace_each_other() {
        let job =
            ServiceBusJob::default().with_managed_identity("ns.servicebus.windows.net", "client-1");
        let vars = env(&job);
        assert!(!vars.contains_key("SERVICEBUS_CONNECTION_STRING"));
        assert_eq!(vars["SERVICEBUS_FQDN"], "ns.servicebus.windows.net");
        assert_eq!(vars["MANAGED_IDENTITY_CLIENT_ID"], "client-1");
        let job = job.with_connection_string("Endpoint=sb://x;");
        assert!(!env(&job).contains_key("SERVICEBUS_FQDN"));
    }

    #[test]
    fn flags_become_the_command_and_the_last_value_wins() {
        let request = ServiceBusJob::default()
            .with_max_messages(1)
            .with_fail_on_subject("flaky")
            .with_max_messages(0)
            .with_max_wait(Duration::from_secs(2))
            .with_network("net");
        let cmd: Vec<String> = request.cmd().map(Cow::into_owned).collect();
        assert_eq!(
            cmd,
            [
                "--fail-on-subject",
                "flaky",
                "--max-messages",
                "0",
                "--max-wait",
                "2000ms"
            ]
        );
    }
}
