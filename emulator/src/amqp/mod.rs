//! The AMQP 1.0 protocol layer: frame [`codec`], [`sasl`] and the sans-IO connection [`engine`].
//! It knows nothing of queues; the server glues it to the broker.

pub mod codec;
pub mod engine;
pub mod lenient;
pub mod sasl;

pub use engine::{AttachInfo, AttachReply, Engine, EngineConfig, Event, LinkId};
