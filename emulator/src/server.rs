//! The TCP listener and the in-process [`Emulator`] handle.
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
//! // optional: AMQP over TLS as Azure serves it on 5671, with `.tls(addr, TlsIdentity::from_pem_files(..)?)`
//! emu.tls_addr();                         // Option<SocketAddr>
//! // optional: the HTTP listener (admin API) over HTTPS too, with `.https(addr, identity)`
//! emu.https_addr();                       // Option<SocketAddr>
//! emu.broker();                           // &Broker, to inspect counts in tests
//! emu.shutdown().await;                   // closes connections and listeners
//! ```
//!
//! One task per connection runs [`serve_connection`]: the header/SASL/header exchange on one read
//! buffer, then a loop feeding frames to the sans-IO [`Engine`] and reacting to its events with broker
//! calls. Dispatch is pull-based: a message leaves its queue only when the link has credit and the
//! session window is open, and a connection with waiting credit retries on `broker.changes()`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fe2o3_amqp_types::definitions::{Error, Role, SenderSettleMode};
use fe2o3_amqp_types::messaging::{Accepted, DeliveryState, Modified, Rejected};
use fe2o3_amqp_types::primitives::{OrderedMap, Symbol, Value};
use fe2o3_amqp_types::sasl::SaslCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use uuid::Uuid;

use crate::access::Access;
use crate::amqp::codec::{
    AMQP_HEADER, CodecError, FrameCodec, Item, Phase, SASL_HEADER, TYPE_SASL,
};
use crate::amqp::engine::{BATCH_MESSAGE_FORMAT, amqp_error};
use crate::amqp::sasl::{self, SaslCredentials};
use crate::amqp::{AttachInfo, Engine, EngineConfig, Event, LinkId};
use crate::auth::SasValidator;
use crate::broker::session::SESSION_RECEIVER_REQUIRED;
use crate::broker::{
    Broker, BrokerError, Delivery, EntityPath, Outcome, ReceiveMode, SessionOwner,
};
use crate::config::Config;
use crate::message::StoredMessage;
use crate::nodes::{self, Request, cbs, management, sessions};
use crate::tls::TlsIdentity;

mod session_links;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr}: {source}; pick another address (e.g. {} 127.0.0.1:0 for a free port) or stop the process using it",
        listener.flag()
    )]
    Bind {
        addr: SocketAddr,
        listener: Listener,
        source: std::io::Error,
    },
    /// `--data-dir` cannot be used (in use, damaged, unwritable); the message names the file.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Which of the emulator's listeners an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// AMQP, set with [`EmulatorBuilder::listen`].
    Amqp,
    /// Health/HTTP, set with [`EmulatorBuilder::health_listen`].
    Health,
    /// AMQP over TLS, set with [`EmulatorBuilder::tls`].
    Tls,
    /// The HTTP listener over TLS, set with [`EmulatorBuilder::https`].
    Https,
}

impl Listener {
    /// The command-line flag that moves this listener, for the fix in error messages.
    pub fn flag(self) -> &'static str {
        match self {
            Listener::Amqp => "--listen",
            Listener::Health => "--health-listen",
            Listener::Tls => "--tls-listen",
            Listener::Https => "--https-listen",
        }
    }
}

/// Bind `addr` and learn the address actually bound (port 0 picks one).
async fn bind(
    addr: SocketAddr,
    listener: Listener,
) -> Result<(TcpListener, SocketAddr), ServerError> {
    let error = |source| ServerError::Bind {
        addr,
        listener,
        source,
    };
    let bound = TcpListener::bind(addr).await.map_err(error)?;
    let local = bound.local_addr().map_err(error)?;
    Ok((bound, local))
}

/// Builder for [`Emulator`].
pub struct EmulatorBuilder {
    config: Option<Config>,
    listen: SocketAddr,
    health_listen: SocketAddr,
    tls: Option<(SocketAddr, TlsIdentity)>,
    https: Option<(SocketAddr, TlsIdentity)>,
    engine: EngineConfig,
    data_dir: Option<PathBuf>,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        EmulatorBuilder {
            config: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 5672)),
            health_listen: SocketAddr::from(([127, 0, 0, 1], 5300)),
            tls: None,
            https: None,
            engine: EngineConfig::default(),
            data_dir: None,
        }
    }
}

impl EmulatorBuilder {
    /// The entities to serve (default: the lab's built-in config, one queue `queue-messages`).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// AMQP listen address (default `127.0.0.1:5672`; port 0 picks a free one).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Health/HTTP listen address (default `127.0.0.1:5300`).
    pub fn health_listen(mut self, addr: SocketAddr) -> Self {
        self.health_listen = addr;
        self
    }

    /// Also serve AMQP over TLS on `addr` (Azure's port is 5671; port 0 picks a free one) with this
    /// certificate and key: TLS first, then AMQP inside it, as Azure and `amqps://` clients do. The plain
    /// listener keeps running. Clients must trust the certificate's CA (the worker: `SERVICEBUS_CA_FILE`).
    pub fn tls(mut self, addr: SocketAddr, identity: TlsIdentity) -> Self {
        self.tls = Some((addr, identity));
        self
    }

    /// Also serve the HTTP listener (health, counts, the administration API: the same routes) over
    /// HTTPS on `addr` with this certificate and key. The SDKs' administration clients call
    /// `https://{namespace}:443/…` whatever the connection string says, so this is what lets them use
    /// the AMQP client's connection string unchanged (map the name to this address, and trust the CA).
    /// The plain HTTP listener keeps running.
    pub fn https(mut self, addr: SocketAddr, identity: TlsIdentity) -> Self {
        self.https = Some((addr, identity));
        self
    }

    /// Both listeners on 127.0.0.1 with free ports, so tests can run side by side: the same as
    /// `.listen("127.0.0.1:0")` and `.health_listen("127.0.0.1:0")`.
    pub fn loopback(self) -> Self {
        let free = SocketAddr::from(([127, 0, 0, 1], 0));
        self.listen(free).health_listen(free)
    }

    /// Protocol tunables (frame size, idle timeout, windows, the first-token deadline); tests use it to
    /// exercise limits.
    pub fn engine_config(mut self, engine: EngineConfig) -> Self {
        self.engine = engine;
        self
    }

    /// Keep messages, entities created at run time and session state in `dir` (see [`crate::store`]):
    /// a later emulator on the same directory starts where this one stopped or crashed. Without it the
    /// emulator is in memory only.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Bind both listeners and start serving. Returns once both are accepting.
    pub async fn start(self) -> Result<Emulator, ServerError> {
        let config = self.config.unwrap_or_else(Config::lab_default);
        let (amqp, amqp_addr) = bind(self.listen, Listener::Amqp).await?;
        let (health, health_addr) = bind(self.health_listen, Listener::Health).await?;
        let tls = match self.tls {
            Some((addr, identity)) => {
                let (listener, bound) = bind(addr, Listener::Tls).await?;
                Some((listener, bound, identity))
            }
            None => None,
        };
        let tls_addr = tls.as_ref().map(|(_, addr, _)| *addr);
        let https = match self.https {
            Some((addr, identity)) => {
                let (listener, bound) = bind(addr, Listener::Https).await?;
                Some((listener, bound, identity))
            }
            None => None,
        };
        let https_addr = https.as_ref().map(|(_, addr, _)| *addr);
        let broker = match &self.data_dir {
            Some(dir) => Broker::open(&config, dir)?,
            None => Broker::new(&config),
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Shared::new(
            broker.clone(),
            SasValidator::emulator_default(),
            self.engine,
        );
        let mut tasks = JoinSet::new();
        let shutdown = || {
            let mut rx = shutdown_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        tasks.spawn(accept_loop(
            amqp,
            None,
            shared.clone(),
            shutdown_rx.clone(),
            shutdown(),
        ));
        if let Some((listener, _, identity)) = tls {
            tasks.spawn(accept_loop(
                listener,
                Some(identity),
                shared,
                shutdown_rx.clone(),
                shutdown(),
            ));
        }
        let routes = crate::http::Routes::new(
            broker.clone(),
            crate::admin::Admin::new(broker.clone(), SasValidator::emulator_default()),
        );
        if let Some((listener, _, identity)) = https {
            tasks.spawn(crate::http::serve(
                listener,
                Some(identity),
                routes.clone(),
                shutdown(),
            ));
        }
        tasks.spawn(crate::http::serve(health, None, routes, shutdown()));
        let off =
            |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_string(), |a| a.to_string());
        let (amqps_addr, https) = (off(tls_addr), off(https_addr));
        tracing::info!(%amqp_addr, %amqps_addr, %health_addr, %https, "emulator listening");
        Ok(Emulator {
            amqp_addr,
            tls_addr,
            https_addr,
            health_addr,
            broker,
            shutdown: shutdown_tx,
            tasks,
        })
    }
}

/// A running emulator.
pub struct Emulator {
    amqp_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    health_addr: SocketAddr,
    broker: Broker,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Emulator {
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// The AMQP address actually bound.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    /// The AMQP-over-TLS address actually bound, when [`EmulatorBuilder::tls`] asked for one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The HTTPS address actually bound, when [`EmulatorBuilder::https`] asked for one.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The health/HTTP address actually bound.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The official emulator connection string, pointing at this instance's port.
    pub fn connection_string(&self) -> String {
        crate::auth::emulator_connection_string(self.amqp_addr)
    }

    /// The connection string for `ServiceBusAdministrationClient`: the HTTP port, as the official
    /// emulator documents it for management.
    pub fn admin_connection_string(&self) -> String {
        crate::auth::emulator_connection_string(self.health_addr)
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Close every connection (`amqp:connection:forced`) and both listeners, and wait for the tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        // With `--data-dir`: commit what is queued and close the file, so the next start needs no
        // recovery.
        let broker = self.broker.clone();
        let _ = tokio::task::spawn_blocking(move || broker.close_store()).await;
    }

    /// Serve until `signal` resolves, then shut down (for the binary: pass `ctrl_c`).
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// What every connection task shares.
pub struct Shared {
    pub broker: Broker,
    pub validator: SasValidator,
    pub engine: EngineConfig,
    /// One permit per connection being served, over every listener (`EngineConfig::max_connections`).
    connection_slots: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    pub fn new(broker: Broker, validator: SasValidator, engine: EngineConfig) -> Arc<Shared> {
        let slots = tokio::sync::Semaphore::new(engine.max_connections);
        Arc::new(Shared {
            broker,
            validator,
            engine,
            connection_slots: Arc::new(slots),
        })
    }
}

/// Accept connections until `shutdown` resolves; each runs in its own task, behind a TLS handshake
/// when `tls` is given. `stop` tells the connections to close.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsIdentity>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    let acceptor = tls.map(|identity| identity.acceptor());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = shared.connection_slots.clone().try_acquire_owned() else {
                        // Closing at once is the cheapest answer, and the one that protects us.
                        tracing::warn!(
                            %peer,
                            max = shared.engine.max_connections,
                            "connection refused: the emulator already serves the most connections \
                             --max-connections allows; close connections you no longer use, or raise it"
                        );
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let stop = stop.clone();
                    let acceptor = acceptor.clone();
                    connections.spawn(async move {
                        let served = match acceptor {
                            None => serve_connection(stream, shared, stop).await,
                            Some(acceptor) => match crate::tls::handshake(&acceptor, stream).await {
                                Ok(stream) => serve_connection(stream, shared, stop).await,
                                Err(e) => Err(ConnectionError::Tls(e)),
                            },
                        };
                        if let Err(e) = served {
                            tracing::info!(%peer, error = %e, "connection ended with an error");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Transient (e.g. too many open files): back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Connections close with `amqp:connection:forced`; one stuck writing to a peer that never reads
    // must not hold shutdown forever, so the rest are aborted after a grace period.
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .is_err()
    {
        tracing::warn!("connections still open 5 s after shutdown; aborting them");
        connections.abort_all();
    }
}

/// Why a connection ended abnormally (logged; the process keeps serving others).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A client that does not trust the certificate aborts here (rustls: "received fatal alert:
    /// UnknownCA" or "BadCertificate"): give it the CA that signed `--tls-cert`.
    #[error(
        "TLS handshake: {0} (a client that does not trust the certificate ends it here; give the client the CA of --tls-cert)"
    )]
    Tls(std::io::Error),
    #[error("framing: {0}")]
    Codec(#[from] CodecError),
    #[error(
        "protocol header {0:02x?} is not supported; clients must send AMQP 1.0 with or without SASL"
    )]
    Header([u8; 8]),
    #[error("SASL: {0}")]
    Sasl(String),
    #[error("the peer closed the socket")]
    Eof,
    #[error(transparent)]
    Protocol(#[from] crate::amqp::engine::ConnectionError),
}

/// How many frames in a row are handled before pending answers are written.
const MAX_HELD_ANSWERS: u32 = 64;

/// The socket with one read buffer kept across the header, SASL and AMQP phases, so bytes a client
/// pipelines behind a header are never lost when the codec switches phase.
struct Io<S> {
    stream: S,
    buf: bytes::BytesMut,
    codec: FrameCodec,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    /// Whether a whole AMQP frame (its size is the first four bytes) is in the buffer, so the next
    /// [`Io::next`] returns without reading.
    fn frame_buffered(&self) -> bool {
        match self.buf.get(..4) {
            Some(size) => {
                let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
                self.buf.len() >= size.max(8)
            }
            None => false,
        }
    }

    /// The next header or frame; `None` at end of stream. Cancel-safe: state lives in `buf`.
    async fn next(&mut self) -> Result<Option<Item>, CodecError> {
        loop {
            if let Some(item) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(item));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    async fn next_item(&mut self) -> Result<Item, ConnectionError> {
        self.next().await?.ok_or(ConnectionError::Eof)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }
}

/// The header/SASL phase. Returns what the client authenticated as.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    shared: &Shared,
) -> Result<SaslCredentials, ConnectionError> {
    let Item::Header(header) = io.next_item().await? else {
        return Err(ConnectionError::Header([0; 8]));
    };
    if header == AMQP_HEADER {
        io.write(&AMQP_HEADER).await?;
        io.codec.set_phase(Phase::Frames);
        return Ok(SaslCredentials::Anonymous);
    }
    if header != SASL_HEADER {
        // Answer with the header we do accept, then close (transport §2.2).
        io.write(&SASL_HEADER).await?;
        return Err(ConnectionError::Header(header));
    }
    let mut out = bytes::BytesMut::new();
    out.extend_from_slice(&SASL_HEADER);
    sasl::write_mechanisms(&mut out);
    io.write(&out).await?;
    io.codec.set_phase(Phase::Frames);
    let Item::Frame(frame) = io.next_item().await? else {
        return Err(ConnectionError::Sasl("expected sasl-init".into()));
    };
    if frame.frame_type != TYPE_SASL || frame.body.is_empty() {
        return Err(ConnectionError::Sasl("expected a sasl-init frame".into()));
    }
    let mut out = bytes::BytesMut::new();
    let credentials = match sasl::parse_init(&frame.body) {
        Ok(SaslCredentials::Plain { username, password }) => {
            if plain_is_valid(&shared.validator, &username, &password) {
                SaslCredentials::Plain { username, password }
            } else {
                sasl::write_outcome(&mut out, SaslCode::Auth);
                io.write(&out).await?;
                return Err(ConnectionError::Sasl(format!(
                    "PLAIN credentials for rule '{username}' were refused; use the SharedAccessKeyName and SharedAccessKey of the namespace"
                )));
            }
        }
        Ok(c) => c,
        Err(e) => {
            sasl::write_outcome(&mut out, SaslCode::Auth);
            io.write(&out).await?;
            return Err(ConnectionError::Sasl(e.to_string()));
        }
    };
    sasl::write_outcome(&mut out, SaslCode::Ok);
    io.write(&out).await?;
    // The client may already have pipelined the AMQP header and frames; they stay in the read buffer.
    io.codec.set_phase(Phase::Header);
    let Item::Header(header) = io.next_item().await? else {
        return Err(ConnectionError::Header([0; 8]));
    };
    if header != AMQP_HEADER {
        io.write(&AMQP_HEADER).await?;
        return Err(ConnectionError::Header(header));
    }
    io.write(&AMQP_HEADER).await?;
    io.codec.set_phase(Phase::Frames);
    Ok(credentials)
}

/// PLAIN carries a rule name and key: check them by signing a token with the key and validating it.
fn plain_is_valid(validator: &SasValidator, rule: &str, key: &str) -> bool {
    let now = SystemTime::now();
    let token =
        crate::auth::make_token("sb://emulator/", rule, key, now + Duration::from_secs(300));
    validator.validate(&token, now).is_ok()
}

/// What a link is for, decided at attach.
#[derive(Debug, Clone)]
enum LinkRole {
    /// A client sending to a queue.
    EntitySender { entity: EntityPath },
    /// A client receiving from a queue or subscription (or a dead-letter queue); a session receiver
    /// holds the lock of one session and receives only its messages.
    EntityReceiver {
        entity: EntityPath,
        mode: ReceiveMode,
        session: Option<HeldSession>,
    },
    /// A next-available session receiver whose attach is not answered yet: it waits for an unlocked
    /// session with messages until `deadline`, then is refused with `com.microsoft:timeout`.
    SessionWaiter {
        receiver: SessionReceiver,
        deadline: Instant,
        wait: Duration,
    },
    /// Requests to `$cbs`.
    CbsRequests,
    /// Requests to `<entity>/$management`.
    ManagementRequests { entity: EntityPath },
    /// A client receiver for replies of a node (`$cbs` or `<entity>/$management`).
    Replies {
        node: String,
        target: Option<String>,
    },
}

/// A session receive link: where it receives from, how, and its name (which management requests
/// name in `associated-link-name`).
#[derive(Debug, Clone)]
struct SessionReceiver {
    entity: EntityPath,
    mode: ReceiveMode,
    name: String,
}

/// The session a receive link holds.
#[derive(Debug, Clone)]
struct HeldSession {
    id: String,
    owner: SessionOwner,
    /// The link name, which management requests name in `associated-link-name`.
    link_name: String,
}

struct Connection {
    shared: Arc<Shared>,
    access: Access,
    links: HashMap<LinkId, LinkRole>,
    replies: HashMap<LinkId, VecDeque<Bytes>>,
    closed: bool,
    /// [`Broker::deletions`] when the links were last checked for deleted entities.
    deletions_seen: u64,
}

/// Serve one connection on any byte stream (TCP in production, `tokio::io::duplex` in tests) until the
/// peer closes, a protocol error closes it, or `stop` turns true.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let mut io = Io {
        stream,
        buf: bytes::BytesMut::with_capacity(8192),
        codec: FrameCodec::new(),
    };
    let credentials = handshake(&mut io, &shared).await?;
    io.codec.set_max_frame_size(shared.engine.max_frame_size);
    let mut engine = Engine::new(shared.engine.clone(), Instant::now());
    let mut changes = shared.broker.changes();
    let mut conn = Connection {
        shared: shared.clone(),
        access: Access::new(
            matches!(credentials, SaslCredentials::Plain { .. }),
            Instant::now(),
            shared.engine.cbs_token_timeout,
        ),
        links: HashMap::new(),
        replies: HashMap::new(),
        closed: false,
        deletions_seen: shared.broker.deletions(),
    };
    let mut result = Ok(());
    // Answers held back while the client's pipelined frames are handled (see below).
    let mut held = 0;
    loop {
        // Frames the client already sent are handled before answering, up to a bound: with
        // `--data-dir` one commit then covers a pipelined run of sends or settlements.
        let more_buffered = held < MAX_HELD_ANSWERS && io.frame_buffered();
        held = if more_buffered { held + 1 } else { 0 };
        if engine.has_output() && !more_buffered {
            // Nothing is acknowledged before it is on disk (with `--data-dir`; at once without). The
            // output may hold dispositions and management responses for changes made just now.
            if let Err(e) = shared.broker.durable().await {
                tracing::error!(error = %e, "closing a connection: its changes cannot be saved");
                return Err(ConnectionError::Io(std::io::Error::other(e)));
            }
            let out = engine.take_output();
            match io.write(&out).await {
                Ok(()) => engine.mark_sent(Instant::now()),
                // The peer dropped the socket (often right after its Close): nothing left to tell it.
                Err(ConnectionError::Io(e)) if peer_gone(&e) => {
                    tracing::debug!(error = %e, "peer closed the socket");
                    return result;
                }
                Err(e) => return Err(e),
            }
        }
        if conn.closed {
            break;
        }
        let deadline = engine.next_deadline();
        tokio::select! {
            item = io.next() => match item {
                Ok(Some(Item::Frame(frame))) => {
                    if let Err(e) = engine.on_frame(frame, Instant::now()) {
                        result = Err(e.into());
                    }
                }
                Ok(Some(Item::Header(_))) => {}
                Err(CodecError::Io(e)) if peer_gone(&e) => return result,
                Err(e) => {
                    let condition = match e {
                        CodecError::Io(_) => None,
                        _ => Some("amqp:connection:framing-error"),
                    };
                    if let Some(condition) = condition {
                        engine.close(Some(amqp_error(condition, e.to_string())));
                        let out = engine.take_output();
                        let _ = io.write(&out).await;
                    }
                    return Err(e.into());
                }
                Ok(None) => break,
            },
            // Only connections with entity links listen: every send wakes the listeners, and
            // thousands of idle connections (or CBS-only ones) must not slow the active links.
            changed = changes.changed(), if conn.wants_changes() => {
                if changed.is_err() {
                    engine.close(Some(amqp_error("amqp:connection:forced", "the broker stopped")));
                }
                conn.pump_all(&mut engine);
            }
            _ = sleep_until_opt(deadline) => engine.on_timer(Instant::now()),
            _ = sleep_until_opt(conn.access.next_deadline()) => {
                conn.on_access_timer(&mut engine, Instant::now());
            }
            _ = sleep_until_opt(conn.next_waiter_deadline()) => {
                conn.on_waiter_timer(&mut engine, Instant::now());
            }
            _ = stopped(&mut stop) => {
                engine.close(Some(amqp_error("amqp:connection:forced", "the emulator is shutting down")));
            }
        }
        while let Some(event) = engine.poll_event() {
            conn.on_event(&mut engine, event);
        }
    }
    if engine.has_output() {
        let out = engine.take_output();
        let _ = io.write(&out).await;
    }
    let _ = io.stream.shutdown().await;
    result
}

fn peer_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn rejected(error: Error) -> DeliveryState {
    DeliveryState::Rejected(Rejected { error: Some(error) })
}

fn accepted() -> DeliveryState {
    DeliveryState::Accepted(Accepted {})
}

impl Connection {
    /// Detach the links whose tokens expired (Service Bus drops them promptly rather than failing the
    /// next operation), and close a connection that never put a valid token in time.
    fn on_access_timer(&mut self, engine: &mut Engine, now: Instant) {
        let expired = self.access.on_timer(now);
        if expired.no_token_in_time {
            let waited = self.shared.engine.cbs_token_timeout.unwrap_or_default();
            engine.close(Some(amqp_error(
                "amqp:connection:forced",
                format!(
                    "no valid token was put on $cbs within {} s of opening the connection; put a SAS token on $cbs right after connecting (or authenticate with SASL PLAIN)",
                    waited.as_secs()
                ),
            )));
            return;
        }
        for (link, path) in expired.links {
            let expired_at = self.shared.broker.now();
            engine.detach(
                link,
                Some(amqp_error(
                    "amqp:unauthorized-access",
                    format!(
                        "the token for '{path}' expired at {} (unix seconds) and no newer token covers it; put a fresh token on $cbs before the old one expires, then attach again",
                        unix_seconds(expired_at)
                    ),
                )),
            );
        }
    }

    fn on_event(&mut self, engine: &mut Engine, event: Event) {
        match event {
            Event::Attached { link, info } => self.on_attach(engine, link, info),
            Event::Message {
                link,
                delivery_id,
                settled,
                format,
                payload,
            } => {
                let state = self.on_message(engine, link, format, payload);
                match (settled, state) {
                    (false, state) => engine.ack(link, delivery_id, state),
                    // A pre-settled send cannot be rejected by disposition: detaching with the
                    // error is the only way to tell the client it was not stored.
                    (true, DeliveryState::Rejected(Rejected { error: Some(error) })) => {
                        engine.detach(link, Some(error))
                    }
                    (true, _) => {}
                }
            }
            Event::Settle {
                link,
                delivery_id,
                tag,
                settled,
                state,
            } => self.on_settle(engine, link, delivery_id, tag, settled, state),
            Event::Credit { link } => self.pump(engine, link),
            Event::Detached { link } => {
                self.access.forget(link);
                if let Some(role) = self.links.remove(&link) {
                    self.release(&role);
                }
                self.replies.remove(&link);
            }
            Event::Closed => self.closed = true,
        }
    }

    fn on_attach(&mut self, engine: &mut Engine, link: LinkId, info: AttachInfo) {
        if info.coordinator {
            engine.refuse_link(
                link,
                amqp_error(
                    "amqp:not-implemented",
                    "transactions are not supported by the emulator",
                ),
            );
            return;
        }
        let Some(address) = info.node_address().map(str::to_string) else {
            engine.refuse_link(
                link,
                amqp_error("amqp:invalid-field", "the attach names no address; set the source (receivers) or target (senders) address"),
            );
            return;
        };
        let client_sends = matches!(info.client_role, Role::Sender);
        if nodes::is_cbs(&address) {
            let role = if client_sends {
                LinkRole::CbsRequests
            } else {
                LinkRole::Replies {
                    node: "$cbs".into(),
                    target: info.target_address.clone(),
                }
            };
            self.links.insert(link, role);
            engine.accept_link(link, None);
            return;
        }
        let management = nodes::management_entity(&address).map(str::to_string);
        let entity_address = management
            .clone()
            .unwrap_or_else(|| nodes::normalise_address(&address).to_string());
        let entity = match self.shared.broker.resolve(&entity_address) {
            Ok(e) => e,
            Err(e) => {
                engine.refuse_link(
                    link,
                    amqp_error(
                        "amqp:not-found",
                        format!("{e}; check the entity name in Config.json"),
                    ),
                );
                return;
            }
        };
        let path = nodes::normalise_address(&address).to_string();
        if !self.access.allows(&path, Instant::now()) {
            engine.refuse_link(
                link,
                amqp_error(
                    "amqp:unauthorized-access",
                    format!("no valid token for '{path}': put a SAS token on $cbs first (or use SASL PLAIN with the rule name and key)"),
                ),
            );
            return;
        }
        let path_for_expiry = path.clone();
        let role = match (management.is_some(), client_sends) {
            (true, true) => LinkRole::ManagementRequests { entity },
            (true, false) => LinkRole::Replies {
                node: path,
                target: info.target_address.clone(),
            },
            (false, true) => {
                if !entity.accepts_sends() {
                    let fix = if entity.is_dead_letter() {
                        "a dead-letter queue cannot be sent to; send to the queue itself"
                    } else {
                        "a subscription cannot be sent to; send to its topic"
                    };
                    engine.refuse_link(link, amqp_error("amqp:not-allowed", fix));
                    return;
                }
                LinkRole::EntitySender { entity }
            }
            (false, false) if !entity.accepts_receivers() => {
                engine.refuse_link(
                    link,
                    amqp_error(
                        "amqp:not-allowed",
                        format!("a topic cannot be received from; receive from '{entity}/Subscriptions/<name>'"),
                    ),
                );
                return;
            }
            (false, false) => {
                let mode = if matches!(info.snd_settle_mode, SenderSettleMode::Settled) {
                    ReceiveMode::ReceiveAndDelete
                } else {
                    ReceiveMode::PeekLock
                };
                let attach = engine.link_attach(link);
                let request = attach.and_then(sessions::session_filter);
                let wait = attach.map_or(sessions::DEFAULT_WAIT, sessions::wait_timeout);
                match (request, self.shared.broker.requires_session(&entity)) {
                    (None, false) => LinkRole::EntityReceiver {
                        entity,
                        mode,
                        session: None,
                    },
                    (None, true) => {
                        engine.refuse_link(
                            link,
                            amqp_error("amqp:not-allowed", SESSION_RECEIVER_REQUIRED),
                        );
                        return;
                    }
                    (Some(request), _) => {
                        self.access.track(link, path_for_expiry);
                        let receiver = SessionReceiver {
                            entity,
                            mode,
                            name: info.name,
                        };
                        self.attach_session(engine, link, receiver, request, wait);
                        return;
                    }
                }
            }
        };
        self.access.track(link, path_for_expiry);
        self.links.insert(link, role);
        engine.accept_link(link, None);
    }

    fn on_message(
        &mut self,
        engine: &mut Engine,
        link: LinkId,
        format: u32,
        payload: Bytes,
    ) -> DeliveryState {
        let Some(role) = self.links.get(&link).cloned() else {
            return rejected(amqp_error("amqp:illegal-state", "the link is not attached"));
        };
        match role {
            LinkRole::EntitySender { entity } => self.enqueue(&entity, format, payload),
            LinkRole::CbsRequests => {
                let request = match Request::decode(&payload) {
                    Ok(r) => r,
                    Err(e) => return rejected(amqp_error("amqp:decode-error", e.to_string())),
                };
                let put = cbs::handle(&self.shared.validator, &request, self.shared.broker.now());
                if let Some(claims) = put.granted {
                    let expires = self.shared.broker.instant_at(claims.expires);
                    self.access.grant(claims, expires);
                }
                let reply =
                    put.reply
                        .encode(request.message_id(), "status-code", "status-description");
                self.route_reply(engine, "$cbs", request.reply_to(), reply);
                accepted()
            }
            LinkRole::ManagementRequests { entity } => {
                let request = match Request::decode(&payload) {
                    Ok(r) => r,
                    Err(e) => return rejected(amqp_error("amqp:decode-error", e.to_string())),
                };
                let owner = request
                    .property_str("associated-link-name")
                    .and_then(|name| self.session_owner(&name));
                let reply = management::handle(&self.shared.broker, &entity, &request, owner);
                let reply = reply.encode(request.message_id(), "statusCode", "statusDescription");
                let node = format!("{entity}/$management");
                self.route_reply(engine, &node, request.reply_to(), reply);
                accepted()
            }
            LinkRole::EntityReceiver { .. }
            | LinkRole::SessionWaiter { .. }
            | LinkRole::Replies { .. } => rejected(amqp_error(
                "amqp:not-allowed",
                "this link only delivers to the client",
            )),
        }
    }

    /// Store one message, or a batch (format 0x80013700) all or nothing: a batch refused midway must
    /// not leave its first messages behind, or the client's retry would store them twice.
    fn enqueue(&self, entity: &EntityPath, format: u32, payload: Bytes) -> DeliveryState {
        let broker = &self.shared.broker;
        let stored = if format == BATCH_MESSAGE_FORMAT {
            StoredMessage::split_batch(payload)
                .map(|messages| broker.send_batch(entity, messages).map(drop))
        } else {
            StoredMessage::parse(payload).map(|message| broker.send(entity, message).map(drop))
        };
        match stored {
            Err(e) => rejected(amqp_error("amqp:decode-error", e.to_string())),
            Ok(Err(e)) => {
                let condition = match e {
                    BrokerError::NotFound(_) => "amqp:not-found",
                    BrokerError::MessageTooLarge { .. } => "amqp:link:message-size-exceeded",
                    BrokerError::SequenceNotFound(_) => "com.microsoft:message-not-found",
                    BrokerError::NotAllowed(_) => "amqp:not-allowed",
                    BrokerError::AlreadyExists(_) => "com.microsoft:entity-already-exists",
                };
                rejected(amqp_error(condition, e.to_string()))
            }
            Ok(Ok(())) => accepted(),
        }
    }

    /// Deliver a reply on the link whose target is `reply_to`, else on the node's reply link.
    fn route_reply(
        &mut self,
        engine: &mut Engine,
        node: &str,
        reply_to: Option<String>,
        reply: Bytes,
    ) {
        let mut candidates: Vec<(LinkId, bool)> = self
            .links
            .iter()
            .filter_map(|(id, role)| match role {
                LinkRole::Replies { node: n, target } => {
                    let by_target = reply_to
                        .as_deref()
                        .is_some_and(|r| target.as_deref() == Some(r));
                    let by_node = n.eq_ignore_ascii_case(node);
                    (by_target || by_node).then_some((*id, by_target))
                }
                _ => None,
            })
            .collect();
        // Prefer the reply-to match, then the oldest link of the node.
        candidates.sort_by_key(|(id, by_target)| (!*by_target, *id));
        let Some((link, _)) = candidates.first().copied() else {
            tracing::warn!(
                node,
                ?reply_to,
                "no reply link for a request; the reply is dropped"
            );
            return;
        };
        self.replies.entry(link).or_default().push_back(reply);
        self.pump(engine, link);
    }

    fn on_settle(
        &mut self,
        engine: &mut Engine,
        link: LinkId,
        delivery_id: u32,
        tag: Bytes,
        settled: bool,
        state: Option<DeliveryState>,
    ) {
        let Some(LinkRole::EntityReceiver {
            entity, session, ..
        }) = self.links.get(&link).cloned()
        else {
            return;
        };
        let Ok(token_bytes) = <[u8; 16]>::try_from(&tag[..]) else {
            return;
        };
        let token = Uuid::from_bytes_le(token_bytes);
        let Some(state) = state else {
            return;
        };
        let (outcome, echo) = match outcome_of(&state) {
            Some(o) => o,
            None => return,
        };
        let broker = &self.shared.broker;
        let result = match &session {
            Some(held) => {
                broker.settle_session(&entity, &held.id, Some(held.owner), token, outcome)
            }
            None => broker.settle(&entity, token, outcome),
        };
        if settled {
            return;
        }
        let echoed = match result {
            Ok(()) => echo,
            Err(e) => rejected(amqp_error(e.condition(), e.to_string())),
        };
        engine.echo(link, delivery_id, echoed);
        // A released/abandoned message may be deliverable again at once.
        self.pump_all(engine);
    }

    /// Whether anything here waits on the broker: a receiver for messages or a session, or any
    /// entity link (deleted entities detach theirs at the next change).
    fn wants_changes(&self) -> bool {
        self.links.values().any(|role| {
            matches!(
                role,
                LinkRole::EntitySender { .. }
                    | LinkRole::EntityReceiver { .. }
                    | LinkRole::SessionWaiter { .. }
                    | LinkRole::ManagementRequests { .. }
            )
        })
    }

    fn pump_all(&mut self, engine: &mut Engine) {
        let deletions = self.shared.broker.deletions();
        if deletions != self.deletions_seen {
            self.deletions_seen = deletions;
            self.detach_deleted(engine);
        }
        let mut ids: Vec<LinkId> = self.links.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            match self.links.get(&id) {
                Some(LinkRole::SessionWaiter { .. }) => self.retry_waiter(engine, id),
                _ => self.pump(engine, id),
            }
        }
    }

    /// Detach the links of entities deleted (by the administration API) since they attached, as
    /// Service Bus does, with `amqp:not-found`.
    fn detach_deleted(&mut self, engine: &mut Engine) {
        let broker = &self.shared.broker;
        let gone: Vec<(LinkId, String)> = self
            .links
            .iter()
            .filter_map(|(id, role)| match role {
                LinkRole::EntitySender { entity }
                | LinkRole::EntityReceiver { entity, .. }
                | LinkRole::ManagementRequests { entity }
                    if !broker.exists(entity) =>
                {
                    Some((*id, entity.to_string()))
                }
                _ => None,
            })
            .collect();
        for (link, entity) in gone {
            self.links.remove(&link);
            engine.detach(
                link,
                Some(amqp_error(
                    "amqp:not-found",
                    format!("the messaging entity '{entity}' was deleted"),
                )),
            );
        }
    }

    /// Send what the link can carry now: queued replies, or messages pulled from the broker.
    fn pump(&mut self, engine: &mut Engine, link: LinkId) {
        match self.links.get(&link) {
            Some(LinkRole::Replies { .. }) => {
                let Some(queue) = self.replies.get_mut(&link) else {
                    return;
                };
                while engine.can_send(link) {
                    let Some(reply) = queue.pop_front() else {
                        break;
                    };
                    // Reply receivers never settle, so replies go out settled.
                    engine.send(
                        link,
                        Bytes::copy_from_slice(Uuid::new_v4().as_bytes()),
                        reply,
                        true,
                    );
                }
            }
            Some(LinkRole::EntityReceiver {
                entity,
                mode,
                session: Some(held),
            }) => {
                let (entity, mode, held) = (entity.clone(), *mode, held.clone());
                self.pump_session(engine, link, &entity, mode, &held);
            }
            Some(LinkRole::EntityReceiver { entity, mode, .. }) => {
                let (entity, mode) = (entity.clone(), *mode);
                while engine.can_send(link) {
                    match self.shared.broker.receive(&entity, mode) {
                        Some(delivery) => send_delivery(engine, link, mode, delivery),
                        None => {
                            engine.no_more_messages(link);
                            break;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Put one message on a receive link: the lock token is the delivery tag, in .NET GUID byte order;
/// receive-and-delete deliveries go out settled, under a fresh tag.
fn send_delivery(engine: &mut Engine, link: LinkId, mode: ReceiveMode, delivery: Delivery) {
    let settled = mode == ReceiveMode::ReceiveAndDelete;
    let token = if settled {
        Uuid::new_v4()
    } else {
        delivery.lock_token
    };
    let tag = Bytes::copy_from_slice(&token.to_bytes_le());
    engine.send(link, tag, delivery.payload, settled);
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn info_string(info: &OrderedMap<Symbol, Value>, key: &str) -> Option<String> {
    match info.get(&Symbol::from(key))? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// Map a client's requested outcome to the broker's, and the state to echo on success.
fn outcome_of(state: &DeliveryState) -> Option<(Outcome, DeliveryState)> {
    Some(match state {
        DeliveryState::Accepted(_) => (Outcome::Complete, accepted()),
        DeliveryState::Released(r) => (
            Outcome::Abandon {
                count_attempt: false,
                properties_to_modify: Vec::new(),
            },
            DeliveryState::Released(r.clone()),
        ),
        DeliveryState::Modified(m) => {
            let props: Vec<(String, Value)> = m
                .message_annotations
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (k.0.clone(), v.clone())).collect())
                .unwrap_or_default();
            let outcome = if m.undeliverable_here.unwrap_or(false) {
                Outcome::Defer {
                    properties_to_modify: props,
                }
            } else {
                Outcome::Abandon {
                    count_attempt: m.delivery_failed.unwrap_or(false),
                    properties_to_modify: props,
                }
            };
            (outcome, DeliveryState::Modified(Modified { ..m.clone() }))
        }
        DeliveryState::Rejected(r) => {
            let info = r.error.as_ref().and_then(|e| e.info.as_deref());
            let reason = info.and_then(|i| info_string(i, "DeadLetterReason"));
            let description = info.and_then(|i| info_string(i, "DeadLetterErrorDescription"));
            // The dead-letter echo is `rejected` WITHOUT an error: pyamqp treats any error as failure.
            (
                Outcome::DeadLetter {
                    reason,
                    description,
                },
                DeliveryState::Rejected(Rejected { error: None }),
            )
        }
        _ => return None,
    })
}
