//! Sending the lab's messages with the worker's own Service Bus client.

use aca_job_lab::servicebus::{ConnectionConfig, ServiceBusClient, ServiceBusMessage};
use anyhow::Context;

/// What was sent, for the progress line.
#[derive(Debug, Clone)]
pub struct Sent {
    pub count: u32,
    pub first_message_id: String,
    pub bytes: usize,
}

/// The body of message `number` when the participant gave none: small JSON the worker logs.
pub fn default_body(number: u32) -> String {
    format!(r#"{{"message":"hello from the lab","number":{number}}}"#)
}

/// Send `count` messages (`body`, or [`default_body`]) and wait until the broker accepted all of them.
pub async fn send(
    connection_string: &str,
    queue: &str,
    count: u32,
    body: Option<&str>,
) -> anyhow::Result<Sent> {
    let (config, _) = ConnectionConfig::from_connection_string(connection_string).context(
        "the lab's connection string is not valid; run `cargo xtask lab down` and `up` again",
    )?;
    let mut client = ServiceBusClient::connect(&config).await.with_context(|| {
        format!(
            "could not connect to the Service Bus emulator at {}:{}",
            config.host, config.port
        )
    })?;
    let mut sender = client
        .sender(queue)
        .await
        .with_context(|| format!("could not open a sender to {queue}"))?;
    let mut first_message_id = String::new();
    let mut bytes = 0;
    let messages: Vec<ServiceBusMessage> = (1..=count)
        .map(|number| {
            let text = body.map_or_else(|| default_body(number), str::to_owned);
            // The worker dead-letters a body that claims to be JSON and is not; say what it really is.
            let content_type = if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                "application/json"
            } else {
                "text/plain"
            };
            let id = uuid::Uuid::new_v4().to_string();
            if first_message_id.is_empty() {
                first_message_id = id.clone();
            }
            bytes += text.len();
            ServiceBusMessage::new(text)
                .with_message_id(id)
                .with_content_type(content_type)
        })
        .collect();
    sender
        .send_all(messages)
        .await
        .with_context(|| format!("sending to {queue} failed"))?;
    // The messages are accepted; a failing close changes nothing for the participant.
    let _ = sender.close().await;
    let _ = client.close().await;
    Ok(Sent {
        count,
        first_message_id,
        bytes,
    })
}
