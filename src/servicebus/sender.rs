//! A sender to one queue, for the lab, the xtask and the tests.

use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::Outcome;
use uuid::Uuid;

use crate::servicebus::ServiceBusError;
use crate::servicebus::cbs::TokenRefresh;
use crate::servicebus::message::ServiceBusMessage;

/// How many transfers `send_all` keeps in flight before waiting for their outcomes.
const PIPELINE: usize = 64;

/// Sends messages to one queue; each send waits for the broker to accept the message.
pub struct Sender {
    link: fe2o3_amqp::Sender,
    queue: String,
    _token_refresh: TokenRefresh,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Sender {
    pub(crate) async fn attach(
        session: &mut fe2o3_amqp::session::SessionHandle<()>,
        queue: &str,
        token_refresh: TokenRefresh,
    ) -> Result<Sender, ServiceBusError> {
        let link = fe2o3_amqp::Sender::builder()
            .name(format!("{queue}-sender-{}", Uuid::new_v4()))
            .target(queue)
            .sender_settle_mode(SenderSettleMode::Unsettled)
            .receiver_settle_mode(ReceiverSettleMode::First)
            .attach(session)
            .await
            .map_err(|e| ServiceBusError::attach(queue, e))?;
        Ok(Sender {
            link,
            queue: queue.to_string(),
            _token_refresh: token_refresh,
        })
    }

    /// The queue this sender writes to.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Sends one message and waits until the broker has accepted it.
    pub async fn send(&mut self, message: ServiceBusMessage) -> Result<(), ServiceBusError> {
        let outcome = self
            .link
            .send(message.into_amqp())
            .await
            .map_err(|e| ServiceBusError::Send(e.to_string()))?;
        accepted(outcome)
    }

    /// Sends many messages, keeping up to 64 transfers in flight, and returns once the broker has
    /// accepted all of them (or at the first refusal).
    pub async fn send_all(
        &mut self,
        messages: impl IntoIterator<Item = ServiceBusMessage>,
    ) -> Result<(), ServiceBusError> {
        let mut in_flight = Vec::with_capacity(PIPELINE);
        for message in messages {
            let pending = self
                .link
                .send_batchable(message.into_amqp())
                .await
                .map_err(|e| ServiceBusError::Send(e.to_string()))?;
            in_flight.push(pending);
            if in_flight.len() == PIPELINE {
                for pending in in_flight.drain(..) {
                    accepted(
                        pending
                            .await
                            .map_err(|e| ServiceBusError::Send(e.to_string()))?,
                    )?;
                }
            }
        }
        for pending in in_flight {
            accepted(
                pending
                    .await
                    .map_err(|e| ServiceBusError::Send(e.to_string()))?,
            )?;
        }
        Ok(())
    }

    /// Detaches the link.
    pub async fn close(self) -> Result<(), ServiceBusError> {
        self.link
            .close()
            .await
            .map_err(|e| ServiceBusError::Link(e.to_string()))
    }
}

fn accepted(outcome: Outcome) -> Result<(), ServiceBusError> {
    match outcome {
        Outcome::Accepted(_) => Ok(()),
        other => Err(ServiceBusError::NotAccepted(format!("{other:?}"))),
    }
}
