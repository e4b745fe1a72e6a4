//! The worker: a Rust Azure Container Apps job that drains a Service Bus queue in peek-lock.
//!
//! # Layout
//! Data flows one way: configuration → client → job loop → processor.
//!
//! - [`config`]: environment variables and flags → [`config::Config`]; every error names the
//!   variable and the fix.
//! - [`servicebus`]: our Service Bus client over `fe2o3-amqp` (connection, CBS auth with SAS or
//!   Entra ID, peek-lock receiver, sender, `$management`). Knows nothing about the job.
//! - [`processor`]: the [`processor::Processor`] trait and the default processor.
//! - [`job`]: receive → process → settle, with lock renewal and shutdown injected as a future.
//! - [`secret`]: a string type whose `Debug` never shows the value.
//! - [`telemetry`]: logging setup (`LOG_FORMAT=json` for JSON lines).

pub mod config;
pub mod job;
pub mod processor;
pub mod secret;
pub mod servicebus;
pub mod telemetry;
#[cfg(feature = "testcontainers")]
pub mod testcontainers;
