//! The TCP listener and the in-process [`Emulator`] handle. TO BE WRITTEN (amqp helper).
//!
//! INTERFACE CONTRACT used by the worker's and xtask's tests (keep it):
//! ```ignore
//! let emu = servicebus_emulator::Emulator::builder()
//!     .config(config)                     // default: the built-in lab config (queue `queue-messages`)
//!     .listen("127.0.0.1:0".parse()?)     // default 127.0.0.1:5672; :0 = ephemeral
//!     .health_listen("127.0.0.1:0".parse()?)
//!     .start().await?;                    // returns once both listeners are bound and serving
//! emu.amqp_addr();                        // SocketAddr actually bound
//! emu.health_addr();
//! emu.connection_string();                // "Endpoint=sb://127.0.0.1:PORT;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
//! emu.broker();                           // &Broker, to inspect counts in tests
//! emu.shutdown().await;                   // closes connections and listeners
//! ```

/// A running emulator.
pub struct Emulator {}

/// Builder for [`Emulator`].
pub struct EmulatorBuilder {}
