//! A peek-lock receiver on one queue: receive with manual credit, settle, renew locks.

use std::time::{Duration, SystemTime};

use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::types::definitions::{
    Error as AmqpError, ErrorCondition, Fields, ReceiverSettleMode, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::{Body, Modified};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp_management::client::MgmtClient;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::servicebus::ServiceBusError;
use crate::servicebus::cbs::TokenRefresh;
use crate::servicebus::message::ReceivedMessage;
use crate::servicebus::requests::RenewLock;

/// The condition Service Bus reads as "move this message to the dead-letter queue".
const DEAD_LETTER_CONDITION: &str = "com.microsoft:dead-letter";
/// Bound on waiting for deliveries already on their way when the receiver closes.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

/// Receives peek-locked messages from one queue. Settlement uses `rcv-settle-mode=first`: our
/// disposition settles the delivery, and the broker applies the outcome.
pub struct Receiver {
    link: fe2o3_amqp::Receiver,
    management: Mutex<MgmtClient>,
    queue: String,
    /// Credit granted to the broker and not yet consumed by `receive`. Credit is only granted
    /// when this is zero, so we never hold more locked messages than the caller asked for.
    outstanding: u32,
    _token_refresh: TokenRefresh,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("queue", &self.queue)
            .field("outstanding", &self.outstanding)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    pub(crate) async fn attach(
        session: &mut fe2o3_amqp::session::SessionHandle<()>,
        queue: &str,
        token_refresh: TokenRefresh,
    ) -> Result<Receiver, ServiceBusError> {
        let id = Uuid::new_v4();
        let link = fe2o3_amqp::Receiver::builder()
            .name(format!("{queue}-receiver-{id}"))
            .source(queue)
            .target(format!("receiver-{id}"))
            .sender_settle_mode(SenderSettleMode::Unsettled)
            .receiver_settle_mode(ReceiverSettleMode::First)
            .credit_mode(CreditMode::Manual)
            .auto_accept(false)
            .attach(session)
            .await
            .map_err(|e| ServiceBusError::attach(queue, e))?;
        let management_node = format!("{queue}/$management");
        let management = MgmtClient::builder()
            .management_node_address(management_node.clone())
            .client_node_addr(format!("{queue}-mgmt-{id}"))
            .attach(session)
            .await
            .map_err(|e| ServiceBusError::attach(&management_node, e))?;
        Ok(Receiver {
            link,
            management: Mutex::new(management),
            queue: queue.to_string(),
            outstanding: 0,
            _token_refresh: token_refresh,
        })
    }

    /// The queue this receiver reads.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next message, or `None` if none arrives within `max_wait`. `credit` is how many
    /// messages the caller is prepared to take from now on (at least 1): when no credit is
    /// outstanding, that many are requested from the broker, which locks them as it sends them.
    pub async fn receive(
        &mut self,
        max_wait: Duration,
        credit: u32,
    ) -> Result<Option<ReceivedMessage>, ServiceBusError> {
        if self.outstanding == 0 {
            let credit = credit.max(1);
            self.link
                .set_credit(credit)
                .await
                .map_err(|e| ServiceBusError::Link(e.to_string()))?;
            self.outstanding = credit;
        }
        // `recv` is cancel-safe, so a timeout (or the caller's `select!`) loses nothing.
        match tokio::time::timeout(max_wait, self.link.recv::<Body<Value>>()).await {
            Err(_elapsed) => Ok(None),
            Ok(Err(e)) => Err(crate::servicebus::closed::receive_error(e)),
            Ok(Ok(delivery)) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                Ok(Some(ReceivedMessage::from_delivery(delivery)))
            }
        }
    }

    /// Complete: the message is removed from the queue.
    pub async fn complete(&self, message: &ReceivedMessage) -> Result<(), ServiceBusError> {
        self.link
            .accept(delivery(message)?)
            .await
            .map_err(settle_error)
    }

    /// Abandon: the lock is released and the message can be received again, with its
    /// delivery count one higher.
    pub async fn abandon(&self, message: &ReceivedMessage) -> Result<(), ServiceBusError> {
        let modified = Modified {
            delivery_failed: Some(true),
            undeliverable_here: Some(false),
            message_annotations: None,
        };
        self.link
            .modify(delivery(message)?, modified)
            .await
            .map_err(settle_error)
    }

    /// Dead-letter: the message moves to `<queue>/$DeadLetterQueue` with `DeadLetterReason` and
    /// `DeadLetterErrorDescription` set.
    pub async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &str,
        description: &str,
    ) -> Result<(), ServiceBusError> {
        let mut info = Fields::new();
        info.insert(
            Symbol::from("DeadLetterReason"),
            Value::String(reason.to_string()),
        );
        info.insert(
            Symbol::from("DeadLetterErrorDescription"),
            Value::String(description.to_string()),
        );
        let error = AmqpError::new(
            ErrorCondition::Custom(Symbol::from(DEAD_LETTER_CONDITION)),
            Some(description.to_string()),
            Some(info),
        );
        self.link
            .reject(delivery(message)?, error)
            .await
            .map_err(settle_error)
    }

    /// Extends the message's lock through `<queue>/$management`; returns the new locked-until.
    pub async fn renew_lock(
        &self,
        message: &ReceivedMessage,
    ) -> Result<SystemTime, ServiceBusError> {
        let lock_token = message.lock_token.ok_or(ServiceBusError::NoLockToken)?;
        let request = RenewLock {
            lock_tokens: vec![lock_token],
            associated_link_name: self.link.name().to_string(),
        };
        let renewed = self
            .management
            .lock()
            .await
            .call(request)
            .await
            .map_err(ServiceBusError::Management)?;
        renewed
            .expirations
            .first()
            .copied()
            .ok_or(ServiceBusError::Management(
                fe2o3_amqp_management::error::Error::DecodeError(None),
            ))
    }

    /// Stops the flow of messages, abandons any that were already on their way (so their locks
    /// do not sit until expiry), and detaches.
    pub async fn close(mut self) -> Result<(), ServiceBusError> {
        if self.outstanding > 0 {
            self.link
                .set_credit(0)
                .await
                .map_err(|e| ServiceBusError::Link(e.to_string()))?;
            while self.outstanding > 0 {
                match tokio::time::timeout(CLOSE_GRACE, self.link.recv::<Body<Value>>()).await {
                    Ok(Ok(delivery)) => {
                        self.outstanding -= 1;
                        let message = ReceivedMessage::from_delivery(delivery);
                        tracing::info!(
                            message_id = message.message_id,
                            "abandoning a message that arrived while closing"
                        );
                        self.abandon(&message).await?;
                    }
                    _ => break,
                }
            }
        }
        // The management link holds no state worth reporting a failure for; the receive link does.
        if let Err(error) = self.management.into_inner().close().await {
            tracing::debug!(%error, "closing the management link failed");
        }
        self.link
            .close()
            .await
            .map_err(|e| ServiceBusError::Link(e.to_string()))
    }
}

fn delivery(
    message: &ReceivedMessage,
) -> Result<fe2o3_amqp::link::delivery::DeliveryInfo, ServiceBusError> {
    message.delivery.clone().ok_or(ServiceBusError::Detached)
}

fn settle_error(error: fe2o3_amqp::link::DispositionError) -> ServiceBusError {
    ServiceBusError::Settle(error.to_string())
}
