//! A message as raw bytes plus section ranges. TO BE WRITTEN (broker helper).
//!
//! INTERFACE CONTRACT (keep these signatures; extend freely):
//! - `StoredMessage::parse(raw: Bytes) -> Result<StoredMessage, MessageError>`: one encoded AMQP message
//!   (format 0) as received in a transfer (all frames concatenated).
//! - `StoredMessage::split_batch(raw: Bytes) -> Result<Vec<StoredMessage>, MessageError>`: message-format
//!   0x80013700, each `data` section of the envelope is one complete encoded message.
//! - `StoredMessage::len(&self) -> usize`: the encoded size, for the 256 KiB limit.
//! - `StoredMessage::message_id(&self) -> Option<String>` (display form), for logs and duplicate detection.

use bytes::Bytes;

/// A message as the broker keeps it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    raw: Bytes,
}

/// Why bytes are not a message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl StoredMessage {
    pub fn parse(raw: Bytes) -> Result<StoredMessage, MessageError> {
        Ok(StoredMessage { raw })
    }

    pub fn split_batch(_raw: Bytes) -> Result<Vec<StoredMessage>, MessageError> {
        todo!()
    }

    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn message_id(&self) -> Option<String> {
        todo!()
    }
}
