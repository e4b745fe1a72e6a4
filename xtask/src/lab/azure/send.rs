//! Sending the lab's messages with our own Service Bus client (package `aca-job-lab`), authenticated by
//! the participant's az login (Entra token, role Data Sender granted by terraform), or by a connection
//! string when one is given (a SAS key, or an emulator in tests). The executions that existed just
//! before the send are recorded (with the send time) so that a later `watch` knows which are ours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aca_job_lab::servicebus::{
    Auth, ConnectionConfig, ServiceBusClient, ServiceBusError, ServiceBusMessage,
};
use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::interrupt::Interrupt;
use crate::lab::ui::StepProgress;

/// Where a message goes.
#[derive(Debug, Clone)]
pub struct SendTarget {
    pub fqdn: String,
    pub queue: String,
    /// Overrides the az login: `Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…`.
    pub connection_string: Option<String>,
}

/// What was sent, kept in the state directory between `send` and `watch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMessage {
    /// One id per message, in sending order.
    pub message_ids: Vec<String>,
    pub queue: String,
    /// All bodies together.
    pub bytes: usize,
    /// Taken just before the first message went out; executions that started earlier are not ours.
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    /// The job's executions listed just before the first message went out: none of them is ours.
    /// `None` in a record written by an older version of the lab (then the send time decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions_before: Option<Vec<String>>,
}

const RECORD: &str = "last-send.json";

impl SentMessage {
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(state_dir).with_context(|| {
            format!(
                "could not create the lab's state directory {}",
                state_dir.display()
            )
        })?;
        let path = state_dir.join(RECORD);
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, json)
            .with_context(|| format!("could not write {}", path.display()))?;
        Ok(path)
    }

    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(RECORD);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no send is recorded in {}: run `cargo xtask lab --azure send` first, so `watch` knows which executions are yours",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged; send again to replace it", path.display()))
    }
}

/// What to send: `count` messages, each with `body` or a small JSON document that numbers it.
#[derive(Debug, Clone)]
pub struct Batch {
    pub count: u32,
    pub body: Option<String>,
}

impl Batch {
    fn messages(&self, sent_at: OffsetDateTime) -> anyhow::Result<Vec<(String, String)>> {
        let stamp = sent_at.format(&time::format_description::well_known::Rfc3339)?;
        Ok((1..=self.count.max(1))
            .map(|n| {
                let id = uuid::Uuid::new_v4().to_string();
                let body = self.body.clone().unwrap_or_else(|| {
                    serde_json::json!({
                        "text": "Hello from cargo xtask lab",
                        "n": n,
                        "message_id": id,
                        "sent_at": stamp,
                    })
                    .to_string()
                });
                (id, body)
            })
            .collect())
    }
}

/// Send the batch over one connection; retry while Service Bus says "unauthorized", which is what a role
/// assignment that has not propagated yet looks like (it can take a few minutes after `terraform apply`).
/// Nothing else is retried: a queue that does not exist fails at once, naming it.
pub async fn send_batch(
    target: &SendTarget,
    batch: &Batch,
    role_wait: Duration,
    interrupt: &Interrupt,
    step: &StepProgress,
) -> anyhow::Result<SentMessage> {
    let config = match &target.connection_string {
        Some(connection_string) => {
            ConnectionConfig::from_connection_string(connection_string)
                .map_err(|e| anyhow!("the Service Bus connection string is not valid: {e}"))?
                .0
        }
        None => ConnectionConfig::azure(&target.fqdn, Auth::DeveloperTools)
            .map_err(|e| anyhow!("{e}"))?,
    };
    let sent_at = OffsetDateTime::now_utc();
    let messages = batch.messages(sent_at)?;
    let give_up = tokio::time::Instant::now() + role_wait;
    let mut attempt = 1;
    loop {
        let outgoing = messages.iter().map(|(id, body)| {
            let message =
                ServiceBusMessage::new(body.clone().into_bytes()).with_message_id(id.clone());
            // Only our own default body is known to be JSON.
            if batch.body.is_none() {
                message.with_content_type("application/json")
            } else {
                message
            }
        });
        let result = tokio::select! {
            result = send_with(&config, &target.queue, outgoing) => result,
            () = interrupt.wait() => return Err(anyhow!("the send was interrupted (Ctrl-C)")),
        };
        match result {
            Ok(()) => {
                return Ok(SentMessage {
                    message_ids: messages.iter().map(|(id, _)| id.clone()).collect(),
                    queue: target.queue.clone(),
                    bytes: messages.iter().map(|(_, body)| body.len()).sum(),
                    sent_at,
                    executions_before: None,
                });
            }
            Err(error)
                if refusal(&error) == Refusal::Unauthorized
                    && tokio::time::Instant::now() < give_up =>
            {
                step.update(format!(
                    "waiting for the Data Sender role to reach Service Bus (attempt {attempt})"
                ));
                attempt += 1;
                let pause = give_up
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(Duration::from_secs(10));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = interrupt.wait() => return Err(anyhow!("the send was interrupted (Ctrl-C)")),
                }
            }
            Err(error) => {
                let hint = match refusal(&error) {
                    Refusal::Unauthorized => format!(
                        "\nhint: still unauthorized after --role-wait {}: your account needs `Azure Service Bus Data \
                         Sender` on the queue; terraform grants it to whoever ran `terraform apply` (variable \
                         operator_object_id); role assignments can take minutes, so a longer --role-wait may do",
                        crate::lab::ui::human_duration(role_wait)
                    ),
                    Refusal::NotFound => format!(
                        "\nhint: queue `{}` does not exist on {}: check the queue name (terraform output queue_name) \
                         and that the lab is up (`cargo xtask lab --azure up`)",
                        target.queue, config.host
                    ),
                    Refusal::Other => String::new(),
                };
                return Err(anyhow::Error::new(error).context(format!(
                    "could not send to queue `{}` on {}{hint}",
                    target.queue, config.host
                )));
            }
        }
    }
}

async fn send_with(
    config: &ConnectionConfig,
    queue: &str,
    messages: impl IntoIterator<Item = ServiceBusMessage>,
) -> Result<(), ServiceBusError> {
    let mut client = ServiceBusClient::connect(config).await?;
    let mut sender = client.sender(queue).await?;
    sender.send_all(messages).await?;
    sender.close().await?;
    client.close().await
}

/// Why Service Bus turned the send away, as far as the retry decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The token was refused (`$cbs` put-token), or the link was (`amqp:unauthorized-access`, e.g.
    /// "'Send' claim(s) are required"): what a role assignment still propagating looks like.
    Unauthorized,
    /// `amqp:not-found`: no such queue. Waiting will not create it.
    NotFound,
    Other,
}

fn refusal(error: &ServiceBusError) -> Refusal {
    match error {
        ServiceBusError::Authorization { .. } => Refusal::Unauthorized,
        ServiceBusError::Attach { reason, .. } => {
            // The attach error carries the broker's condition only as text (fe2o3's Display).
            let reason = reason.to_ascii_lowercase();
            if reason.contains("not-found") || reason.contains("notfound") {
                Refusal::NotFound
            } else if reason.contains("unauthorized") {
                Refusal::Unauthorized
            } else {
                Refusal::Other
            }
        }
        _ => Refusal::Other,
    }
}
