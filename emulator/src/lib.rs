//! A Service Bus compatible AMQP 1.0 broker for offline tests and the local lab.
//!
//! Start one in a test, on a free port, with the queues the code under test expects, and hand the code
//! its connection string; no container, no SQL Server, ready in milliseconds:
//!
//! ```
//! use servicebus_emulator::Emulator;
//! use servicebus_emulator::config::Config;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! // The body of a `#[tokio::test]`:
//! let emulator = Emulator::builder()
//!     .config(Config::with_queues(["orders"]))
//!     .listen("127.0.0.1:0".parse()?)
//!     .health_listen("127.0.0.1:0".parse()?)
//!     .start()
//!     .await?;
//!
//! // What any Service Bus client (the Azure SDKs included) connects with, SAS auth and all.
//! let connection_string = emulator.connection_string();
//! assert!(connection_string.contains("UseDevelopmentEmulator=true"));
//!
//! // … run the code under test against it, then look at the queue directly:
//! let counts = emulator.broker().counts("orders").expect("the queue exists");
//! assert_eq!(counts.active_message_count, 0);
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The `servicebus-emulator` binary serves the same broker from the official emulator's `Config.json`;
//! with the `testcontainers` feature, [`testcontainers`](crate#layout) has images for it and for
//! Microsoft's emulator.
//!
//! # Layout
//! The layers are kept apart so that each can be tested alone, and data flows one way:
//!
//! - [`config`]: the official emulator's `Config.json`, validated with JSON paths in errors.
//! - [`message`]: a message as raw bytes plus section ranges; re-encodes only header and annotations.
//! - [`filter`]: subscription rules: correlation filters and the SQL filter/action language.
//! - [`store`]: `--data-dir`: the rows the broker keeps in one redb file, written by one thread in
//!   group commits; knows nothing of queues.
//! - [`broker`]: entities, the queue state machine (with its session layer), locks, timers. Knows
//!   nothing of sockets.
//! - [`auth`]: token validation for `$cbs` put-token and the administration API: SAS tokens
//!   (signature checked), Entra ID `jwt` tokens (form, expiry and audience; an emulator cannot check
//!   Entra's signature).
//! - [`access`]: what a connection's tokens allow and when that ends (link expiry, first-token deadline).
//! - [`amqp`]: frame codec and the sans-IO connection/session/link engine. Knows nothing of queues.
//! - [`nodes`]: the `$cbs` and `<entity>/$management` request/response handlers, and the session
//!   attach on the wire (`com.microsoft:session-filter`, `locked-until-utc`).
//! - [`tls`]: the optional TLS listeners' certificate and key (rustls, ring).
//! - [`server`]: the TCP listener gluing engine and broker, and the [`Emulator`] handle tests start.
//! - [`http`]: the HTTP listener, plain or HTTPS: `GET /health`, JSON counts, and the routes of
//!   [`admin`] (which does not know the listener).
//! - [`admin`]: the Service Bus administration API (ATOM/XML): entities created, read, updated,
//!   deleted and listed at run time.
//! - `testcontainers` (feature `testcontainers`): `Image`s for this emulator's container image and for
//!   Microsoft's official emulator with its SQL sidecar.

pub mod access;
pub mod admin;
pub mod amqp;
pub mod auth;
pub mod broker;
pub mod config;
pub mod filter;
pub mod http;
pub mod message;
pub mod nodes;
pub mod server;
pub mod store;
#[cfg(feature = "testcontainers")]
pub mod testcontainers;
pub mod tls;

pub use server::{Emulator, EmulatorBuilder};
pub use tls::TlsIdentity;

/// The line the official emulator prints when it is ready; test wait strategies key on it.
pub const READY_LINE: &str = "Emulator Service is Successfully Up!";
