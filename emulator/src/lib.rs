//! A Service Bus compatible AMQP 1.0 broker for offline tests and the local lab.
//!
//! # Layout
//! The layers are kept apart so that each can be tested alone, and data flows one way:
//!
//! - [`config`]: the official emulator's `Config.json`, validated with JSON paths in errors.
//! - [`message`]: a message as raw bytes plus section ranges; re-encodes only header and annotations.
//! - [`filter`]: subscription rules: correlation filters and the SQL filter/action language.
//! - [`broker`]: entities, the queue state machine (with its session layer), locks, timers. Knows
//!   nothing of sockets.
//! - [`auth`]: SAS token validation for `$cbs` put-token.
//! - [`access`]: what a connection's tokens allow and when that ends (link expiry, first-token deadline).
//! - [`amqp`]: frame codec and the sans-IO connection/session/link engine. Knows nothing of queues.
//! - [`nodes`]: the `$cbs` and `<entity>/$management` request/response handlers, and the session
//!   attach on the wire (`com.microsoft:session-filter`, `locked-until-utc`).
//! - [`server`]: the TCP listener gluing engine and broker, and the [`Emulator`] handle tests start.
//! - [`http`]: `GET /health` and `GET /queues/{name}`.
//! - `testcontainers` (feature `testcontainers`): `Image`s for this emulator's container image and for
//!   Microsoft's official emulator with its SQL sidecar.

pub mod access;
pub mod amqp;
pub mod auth;
pub mod broker;
pub mod config;
pub mod filter;
pub mod http;
pub mod message;
pub mod nodes;
pub mod server;
#[cfg(feature = "testcontainers")]
pub mod testcontainers;

pub use server::{Emulator, EmulatorBuilder};

/// The line the official emulator prints when it is ready; test wait strategies key on it.
pub const READY_LINE: &str = "Emulator Service is Successfully Up!";
