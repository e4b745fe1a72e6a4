//! The sans-IO connection/session/link engine (AMQP 1.0 transport, server side).
//!
//! It turns decoded frames into [`Event`]s for the server and turns the server's decisions (accept or
//! refuse a link, send a delivery, echo a settlement) into encoded frames. It owns the protocol state:
//! channel and handle maps, session windows and link credit (u32 serial-number arithmetic), partial
//! transfers in both directions, heartbeats and the idle timeout. It knows nothing about queues or
//! sockets, so it is tested by feeding frames and reading bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fe2o3_amqp_types::definitions::{
    Error, ErrorCondition, Fields, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp_types::messaging::{DeliveryState, Source, Target, TargetArchetype};
use fe2o3_amqp_types::performatives::{
    Attach, Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open,
    Performative, Transfer,
};
use fe2o3_amqp_types::primitives::{Binary, OrderedMap, Symbol, Value};
use tokio::time::Instant;

use super::codec::{self, EMPTY_FRAME, Frame, TYPE_AMQP};

/// Identifies a link within one connection (never reused).
pub type LinkId = u64;

/// The message-format of Service Bus batches: each `data` section is one encoded message.
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

/// Build an error with all three fields present: pyamqp indexes condition, description and info.
pub fn amqp_error(condition: &str, description: impl Into<String>) -> Error {
    amqp_error_with_info(condition, description, Fields::default())
}

/// Like [`amqp_error`] with an info map.
pub fn amqp_error_with_info(
    condition: &str,
    description: impl Into<String>,
    info: Fields,
) -> Error {
    Error {
        condition: ErrorCondition::Custom(Symbol::from(condition)),
        description: Some(description.into()),
        info: Some(Box::new(info)),
    }
}

/// The condition of an error as its wire symbol.
pub fn condition_str(error: &Error) -> String {
    match &error.condition {
        ErrorCondition::Custom(s) => s.0.clone(),
        other => {
            // Standard conditions serialise as their symbol; round-trip through the codec to get it.
            serde_amqp::to_vec(other)
                .ok()
                .and_then(|b| serde_amqp::from_slice::<Symbol>(&b).ok())
                .map(|s| s.0)
                .unwrap_or_default()
        }
    }
}

/// Tunables of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub container_id: String,
    /// Largest frame we accept (advertised in Open).
    pub max_frame_size: u32,
    /// Highest channel number we accept (advertised in Open).
    pub channel_max: u16,
    /// What we advertise as idle-time-out; we enforce twice this before closing.
    pub idle_timeout: Duration,
    /// Session incoming window in frames; refilled when it drops below half.
    pub incoming_window: u32,
    /// Largest message a client may send, and what attach replies advertise.
    pub max_message_size: u64,
    /// Credit granted to client senders, topped up when it drops below half.
    pub sender_credit: u32,
    /// Highest output handle we hand out per session.
    pub handle_max: u32,
    /// How long a connection that did not authenticate with SASL PLAIN may stay open without putting a
    /// valid `$cbs` token before it is closed (Service Bus: 20 s). `None` never closes it.
    pub cbs_token_timeout: Option<Duration>,
    /// Links one connection may have attached at once, over all its sessions; one more is refused
    /// with `amqp:resource-limit-exceeded` (the connection stays up). Protects the process from a
    /// client that leaks links; real clients use a handful.
    pub max_links_per_connection: usize,
    /// Connections the emulator serves at once, over its plain and TLS listeners; one more is closed
    /// at once with a log line naming `--max-connections`. The default is a Standard namespace's AMQP
    /// connection quota (Service Bus quotas: 5,000).
    pub max_connections: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            container_id: format!("servicebus-emulator-{}", uuid::Uuid::new_v4()),
            max_frame_size: 262_144,
            channel_max: 4999,
            idle_timeout: Duration::from_secs(120),
            incoming_window: 65_536,
            max_message_size: 262_144,
            sender_credit: 1000,
            handle_max: 1023,
            cbs_token_timeout: Some(Duration::from_secs(20)),
            max_links_per_connection: 4096,
            max_connections: 5000,
        }
    }
}

/// What the peer's Attach asked for, as the server needs it to route the link.
#[derive(Debug, Clone)]
pub struct AttachInfo {
    pub name: String,
    /// The client's role: `Receiver` means the broker sends on this link.
    pub client_role: Role,
    pub source_address: Option<String>,
    pub target_address: Option<String>,
    pub snd_settle_mode: SenderSettleMode,
    pub rcv_settle_mode: ReceiverSettleMode,
    pub properties: Option<Fields>,
    /// The target is a transaction coordinator (not supported; refuse it).
    pub coordinator: bool,
}

impl AttachInfo {
    /// The address of the node on the broker side: the source for a client receiver, else the target.
    pub fn node_address(&self) -> Option<&str> {
        match self.client_role {
            Role::Receiver => self.source_address.as_deref(),
            Role::Sender => self.target_address.as_deref(),
        }
    }
}

/// What an accepting attach reply adds to the echo of the client's attach.
#[derive(Debug, Clone, Default)]
pub struct AttachReply {
    /// Overrides the echoed sender settle mode (response links answer `Settled`).
    pub snd_settle_mode: Option<SenderSettleMode>,
    /// Entries set in the echoed source's filter set (replacing the client's value for a key).
    pub source_filter: Vec<(Symbol, Value)>,
    /// The reply's link properties.
    pub properties: Option<Fields>,
}

/// Something the server must react to.
#[derive(Debug, Clone)]
pub enum Event {
    /// A client attached a link. Answer with [`Engine::accept_link`] or [`Engine::refuse_link`].
    Attached { link: LinkId, info: AttachInfo },
    /// A complete delivery from a client sender. If `settled` is false, answer with [`Engine::ack`].
    Message {
        link: LinkId,
        delivery_id: u32,
        settled: bool,
        format: u32,
        payload: Bytes,
    },
    /// A client disposition for one of our deliveries. If `settled` is false the client waits for
    /// [`Engine::echo`] (rcv-settle-mode second).
    Settle {
        link: LinkId,
        delivery_id: u32,
        tag: Bytes,
        settled: bool,
        state: Option<DeliveryState>,
    },
    /// A link on which the broker sends got credit (or session window); try to send.
    Credit { link: LinkId },
    /// A link is gone (client detach, session end, or our own refusal/detach acknowledged).
    Detached { link: LinkId },
    /// The connection is closed; stop reading and drop the socket once output is flushed.
    Closed,
}

/// A connection-level failure: the engine has written `close(error)` already.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{condition}: {description}")]
pub struct ConnectionError {
    pub condition: String,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitOpen,
    Opened,
    /// We sent Close (with or without error); ignore input until the peer's Close.
    CloseSent,
    Closed,
}

struct Session {
    local_channel: u16,
    next_outgoing_id: u32,
    initial_outgoing_id: u32,
    remote_incoming_window: u32,
    next_incoming_id: u32,
    incoming_window: u32,
    next_delivery_id: u32,
    peer_handle_max: u32,
    links_by_input: HashMap<u32, LinkId>,
    output_handles: BTreeSet<u32>,
    /// Transfer frames (body, payload) waiting for the peer's session window.
    pending: VecDeque<(Bytes, Bytes)>,
    /// Broker deliveries the client has not settled: delivery-id → (link, tag).
    unsettled_out: BTreeMap<u32, (LinkId, Bytes)>,
}

struct Partial {
    delivery_id: u32,
    settled: bool,
    format: u32,
    buf: BytesMut,
}

struct Link {
    incoming_channel: u16,
    input_handle: u32,
    output_handle: u32,
    attach: Attach,
    /// True when the broker sends on it (client receiver).
    broker_sends: bool,
    accepted: bool,
    /// We sent a closing detach; forget the link when the peer answers.
    detach_sent: bool,
    // Broker as sender.
    delivery_count: u32,
    credit: u32,
    drain: bool,
    // Broker as receiver.
    rcv_delivery_count: u32,
    rcv_credit: u32,
    partial: Option<Partial>,
}

/// The engine for one connection.
pub struct Engine {
    config: EngineConfig,
    state: State,
    out: BytesMut,
    events: VecDeque<Event>,
    sessions: HashMap<u16, Session>,
    links: HashMap<LinkId, Link>,
    next_link_id: LinkId,
    peer_max_frame: u32,
    peer_channel_max: u16,
    peer_idle_timeout: Option<Duration>,
    last_received: Instant,
    last_sent: Instant,
}

fn serial_lt(a: u32, b: u32) -> bool {
    a != b && (b.wrapping_sub(a) as i32) > 0
}

impl Engine {
    /// A fresh engine; `now` starts the idle clock. Call it after the AMQP header exchange.
    pub fn new(config: EngineConfig, now: Instant) -> Self {
        Engine {
            config,
            state: State::AwaitOpen,
            out: BytesMut::new(),
            events: VecDeque::new(),
            sessions: HashMap::new(),
            links: HashMap::new(),
            next_link_id: 1,
            peer_max_frame: 512,
            peer_channel_max: 0,
            peer_idle_timeout: None,
            last_received: now,
            last_sent: now,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Encoded bytes to write to the socket.
    pub fn take_output(&mut self) -> BytesMut {
        self.out.split()
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed | State::CloseSent)
    }

    /// The attach a client sent, for links still known.
    pub fn link_attach(&self, link: LinkId) -> Option<&Attach> {
        self.links.get(&link).map(|l| &l.attach)
    }

    fn write<T: serde::Serialize>(&mut self, channel: u16, body: &T, payload: &[u8]) {
        // Performatives built here always encode; a failure would be a bug in the types.
        if let Err(e) = codec::write_performative(&mut self.out, TYPE_AMQP, channel, body, payload)
        {
            tracing::error!(error = %e, "could not encode a performative");
        }
    }

    fn send_open(&mut self) {
        let open = Open {
            container_id: self.config.container_id.clone(),
            hostname: None,
            max_frame_size: MaxFrameSize(self.config.max_frame_size),
            channel_max: ChannelMax(self.config.channel_max),
            idle_time_out: Some(self.config.idle_timeout.as_millis() as u32),
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.write(0, &Performative::Open(open), &[]);
    }

    /// Close the connection with an error (or none). Sends our Open first if it was not sent yet.
    pub fn close(&mut self, error: Option<Error>) {
        match self.state {
            State::AwaitOpen => self.send_open(),
            State::Opened => {}
            State::CloseSent | State::Closed => return,
        }
        self.write(0, &Performative::Close(Close { error }), &[]);
        self.state = State::CloseSent;
        self.drop_all_links();
        self.events.push_back(Event::Closed);
    }

    fn fail(&mut self, condition: &str, description: String) -> ConnectionError {
        tracing::warn!(condition, %description, "closing connection");
        self.close(Some(amqp_error(condition, description.clone())));
        ConnectionError {
            condition: condition.to_string(),
            description,
        }
    }

    fn drop_all_links(&mut self) {
        let mut ids: Vec<LinkId> = self.links.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.links.remove(&id);
            self.events.push_back(Event::Detached { link: id });
        }
        self.sessions.clear();
    }

    /// The next instant [`Engine::on_timer`] must run (heartbeat or idle check).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.state != State::Opened {
            return None;
        }
        let idle = self.last_received + self.config.idle_timeout * 2;
        let beat = self.peer_idle_timeout.map(|t| self.last_sent + t / 2);
        Some(beat.map_or(idle, |b| b.min(idle)))
    }

    /// Heartbeats and idle detection.
    pub fn on_timer(&mut self, now: Instant) {
        if self.state != State::Opened {
            return;
        }
        if now >= self.last_received + self.config.idle_timeout * 2 {
            self.close(Some(amqp_error(
                "amqp:connection:forced",
                "idle timeout: no frames received within the advertised idle-time-out",
            )));
            return;
        }
        if let Some(t) = self.peer_idle_timeout
            && now >= self.last_sent + t / 2
            && self.out.is_empty()
        {
            self.out.extend_from_slice(&EMPTY_FRAME);
        }
    }

    /// Record that output was written at `now` (the server calls it after flushing).
    pub fn mark_sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// Handle one decoded AMQP frame (after the AMQP header exchange).
    pub fn on_frame(&mut self, frame: Frame, now: Instant) -> Result<(), ConnectionError> {
        self.last_received = now;
        if self.state == State::Closed {
            return Ok(());
        }
        if frame.frame_type != TYPE_AMQP {
            return Err(self.fail(
                "amqp:connection:framing-error",
                format!(
                    "unexpected frame type {:#04x} after the AMQP header",
                    frame.frame_type
                ),
            ));
        }
        if frame.body.is_empty() {
            // Heartbeat.
            return Ok(());
        }
        // Strict first; only a frame that fails is tried again with string map keys read as symbols
        // (uamqp writes some; Service Bus takes them, see `lenient`). Same length, same payload offset.
        let performative: Performative = match serde_amqp::from_slice(&frame.body).or_else(|e| {
            super::lenient::symbol_keys(&frame.body)
                .and_then(|fixed| serde_amqp::from_slice(&fixed).ok())
                .ok_or(e)
        }) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(body = %hex(&frame.body), "undecodable frame");
                return Err(self.fail(
                    "amqp:decode-error",
                    format!("could not decode the frame body: {e}"),
                ));
            }
        };
        let payload_start = frame.body.len() - reader_remaining(&frame.body);
        let payload = frame.body.slice(payload_start..);
        if self.state == State::CloseSent {
            if matches!(performative, Performative::Close(_)) {
                self.state = State::Closed;
            }
            return Ok(());
        }
        match (self.state, performative) {
            (State::AwaitOpen, Performative::Open(open)) => {
                if frame.channel != 0 {
                    return Err(self.fail(
                        "amqp:connection:framing-error",
                        "open must be on channel 0".into(),
                    ));
                }
                self.peer_max_frame = open.max_frame_size.0.max(512);
                self.peer_channel_max = open.channel_max.0;
                self.peer_idle_timeout = open
                    .idle_time_out
                    .filter(|t| *t > 0)
                    .map(|t| Duration::from_millis(u64::from(t)));
                self.send_open();
                self.state = State::Opened;
                Ok(())
            }
            (State::AwaitOpen, other) => Err(self.fail(
                "amqp:illegal-state",
                format!("the first frame must be open, got {}", name_of(&other)),
            )),
            (State::Opened, p) => {
                if frame.channel > self.config.channel_max {
                    return Err(self.fail(
                        "amqp:connection:framing-error",
                        format!(
                            "channel {} is above channel-max {}",
                            frame.channel, self.config.channel_max
                        ),
                    ));
                }
                self.on_performative(frame.channel, p, payload)
            }
            _ => Ok(()),
        }
    }

    fn on_performative(
        &mut self,
        channel: u16,
        p: Performative,
        payload: Bytes,
    ) -> Result<(), ConnectionError> {
        match p {
            Performative::Open(_) => {
                Err(self.fail("amqp:illegal-state", "a second open was received".into()))
            }
            Performative::Close(_) => {
                self.write(0, &Performative::Close(Close { error: None }), &[]);
                self.drop_all_links();
                self.state = State::Closed;
                self.events.push_back(Event::Closed);
                Ok(())
            }
            Performative::Begin(begin) => self.on_begin(channel, begin),
            Performative::End(_) => {
                self.on_end(channel);
                Ok(())
            }
            other => {
                if !self.sessions.contains_key(&channel) {
                    // pyamqp may send a link's detach (or a late flow/disposition) after the End of
                    // its session when it closes; those refer to state already gone, so drop them.
                    // An attach on a channel without a session is a real protocol error.
                    if !matches!(other, Performative::Attach(_)) {
                        tracing::debug!(
                            channel,
                            frame = name_of(&other),
                            "frame for an ended session ignored"
                        );
                        return Ok(());
                    }
                    return Err(self.fail(
                        "amqp:connection:framing-error",
                        format!(
                            "{} on channel {channel}, which has no session",
                            name_of(&other)
                        ),
                    ));
                }
                match other {
                    Performative::Attach(a) => self.on_attach(channel, a),
                    Performative::Flow(f) => self.on_flow(channel, f),
                    Performative::Transfer(t) => self.on_transfer(channel, t, payload),
                    Performative::Disposition(d) => {
                        self.on_disposition(channel, d);
                        Ok(())
                    }
                    Performative::Detach(d) => {
                        self.on_detach(channel, d);
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    fn on_begin(&mut self, channel: u16, begin: Begin) -> Result<(), ConnectionError> {
        if self.sessions.contains_key(&channel) {
            return Err(self.fail(
                "amqp:illegal-state",
                format!("channel {channel} already has a session"),
            ));
        }
        if begin.remote_channel.is_some() {
            return Err(self.fail(
                "amqp:not-allowed",
                "the emulator does not begin sessions itself".into(),
            ));
        }
        let used: BTreeSet<u16> = self.sessions.values().map(|s| s.local_channel).collect();
        let Some(local) = (0..=self.peer_channel_max).find(|c| !used.contains(c)) else {
            return Err(self.fail(
                "amqp:resource-limit-exceeded",
                format!(
                    "no free channel within the peer's channel-max {}",
                    self.peer_channel_max
                ),
            ));
        };
        let session = Session {
            local_channel: local,
            next_outgoing_id: 0,
            initial_outgoing_id: 0,
            remote_incoming_window: begin.incoming_window,
            next_incoming_id: begin.next_outgoing_id,
            incoming_window: self.config.incoming_window,
            next_delivery_id: 0,
            peer_handle_max: begin.handle_max.0,
            links_by_input: HashMap::new(),
            output_handles: BTreeSet::new(),
            pending: VecDeque::new(),
            unsettled_out: BTreeMap::new(),
        };
        self.sessions.insert(channel, session);
        let reply = Begin {
            remote_channel: Some(channel),
            next_outgoing_id: 0,
            incoming_window: self.config.incoming_window,
            outgoing_window: u32::MAX / 2,
            handle_max: self.config.handle_max.into(),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.write(local, &Performative::Begin(reply), &[]);
        Ok(())
    }

    fn on_end(&mut self, channel: u16) {
        let Some(session) = self.sessions.remove(&channel) else {
            return;
        };
        let mut ids: Vec<LinkId> = session.links_by_input.values().copied().collect();
        ids.extend(
            self.links
                .iter()
                .filter(|(_, l)| l.incoming_channel == channel)
                .map(|(id, _)| *id),
        );
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if self.links.remove(&id).is_some() {
                self.events.push_back(Event::Detached { link: id });
            }
        }
        self.write(
            session.local_channel,
            &Performative::End(End { error: None }),
            &[],
        );
    }

    fn on_attach(&mut self, channel: u16, attach: Attach) -> Result<(), ConnectionError> {
        let input = attach.handle.0;
        let (handle_max, existing) = {
            let Some(session) = self.sessions.get(&channel) else {
                return Ok(());
            };
            (
                session.peer_handle_max,
                session.links_by_input.get(&input).copied(),
            )
        };
        if let Some(old) = existing {
            // A handle reused after we refused or detached the link: the spec expects the peer's
            // detach first, but pyamqp never sends it, so replace the dead link.
            if self.links.get(&old).is_some_and(|l| !l.detach_sent) {
                return Err(self.fail(
                    "amqp:session:handle-in-use",
                    format!("handle {input} is already attached on channel {channel}"),
                ));
            }
            self.forget_link(old);
        }
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Ok(());
        };
        let limit = handle_max.min(self.config.handle_max);
        let Some(output) = (0..=limit).find(|h| !session.output_handles.contains(h)) else {
            return Err(self.fail(
                "amqp:resource-limit-exceeded",
                format!("no free link handle within handle-max {limit}"),
            ));
        };
        session.output_handles.insert(output);
        let id = self.next_link_id;
        self.next_link_id += 1;
        session.links_by_input.insert(input, id);

        let (target_address, coordinator) = match attach.target.as_deref() {
            Some(TargetArchetype::Target(t)) => (t.address.clone(), false),
            Some(TargetArchetype::Coordinator(_)) => (None, true),
            None => (None, false),
        };
        let info = AttachInfo {
            name: attach.name.clone(),
            client_role: attach.role.clone(),
            source_address: attach.source.as_ref().and_then(|s| s.address.clone()),
            target_address,
            snd_settle_mode: attach.snd_settle_mode.clone(),
            rcv_settle_mode: attach.rcv_settle_mode.clone(),
            properties: attach.properties.clone(),
            coordinator,
        };
        let broker_sends = matches!(attach.role, Role::Receiver);
        let rcv_delivery_count = attach.initial_delivery_count.unwrap_or(0);
        self.links.insert(
            id,
            Link {
                incoming_channel: channel,
                input_handle: input,
                output_handle: output,
                attach,
                broker_sends,
                accepted: false,
                detach_sent: false,
                delivery_count: 0,
                credit: 0,
                drain: false,
                rcv_delivery_count,
                rcv_credit: 0,
                partial: None,
            },
        );
        let open_links = self.links.values().filter(|l| !l.detach_sent).count();
        if open_links > self.config.max_links_per_connection {
            let max = self.config.max_links_per_connection;
            self.refuse_link(
                id,
                amqp_error(
                    "amqp:resource-limit-exceeded",
                    format!(
                        "this connection already has {max} links attached, the most the emulator \
                         allows (--max-links-per-connection); detach links you no longer use"
                    ),
                ),
            );
            return Ok(());
        }
        self.events.push_back(Event::Attached { link: id, info });
        Ok(())
    }

    fn forget_link(&mut self, id: LinkId) {
        if let Some(link) = self.links.remove(&id)
            && let Some(session) = self.sessions.get_mut(&link.incoming_channel)
        {
            if session.links_by_input.get(&link.input_handle) == Some(&id) {
                session.links_by_input.remove(&link.input_handle);
            }
            session.output_handles.remove(&link.output_handle);
            session.unsettled_out.retain(|_, (l, _)| *l != id);
        }
    }

    fn reply_attach(&mut self, id: LinkId, refuse: bool, reply: AttachReply) -> Option<u16> {
        let AttachReply {
            snd_settle_mode,
            source_filter,
            properties,
        } = reply;
        let max_message_size = self.config.max_message_size;
        let link = self.links.get_mut(&id)?;
        let local = self.sessions.get(&link.incoming_channel)?.local_channel;
        let a = &link.attach;
        let (source, target) = if refuse {
            (None, None)
        } else {
            // Echo the termini verbatim, but never as empty composites: pyamqp reads an empty list as
            // "no terminus" and fails the link.
            let source = a.source.clone().map(|mut s| {
                if s.address.is_none() {
                    s.address = Some(format!("source-{}", a.name));
                }
                if !source_filter.is_empty() {
                    let filter = s.filter.get_or_insert_with(Default::default);
                    for (k, v) in source_filter {
                        filter.insert(k, v);
                    }
                }
                s
            });
            let source = source.or_else(|| {
                Some(Box::new(
                    Source::builder()
                        .address(format!("source-{}", a.name))
                        .build(),
                ))
            });
            let target = match a.target.clone() {
                Some(t) => match *t {
                    TargetArchetype::Target(mut t) => {
                        if t.address.is_none() {
                            t.address = Some(format!("target-{}", a.name));
                        }
                        Some(Box::new(TargetArchetype::Target(t)))
                    }
                    other => Some(Box::new(other)),
                },
                None => Some(Box::new(TargetArchetype::Target(
                    Target::builder()
                        .address(format!("target-{}", a.name))
                        .build(),
                ))),
            };
            (source, target)
        };
        let reply = Attach {
            name: a.name.clone(),
            handle: link.output_handle.into(),
            role: if link.broker_sends {
                Role::Sender
            } else {
                Role::Receiver
            },
            snd_settle_mode: snd_settle_mode.unwrap_or_else(|| a.snd_settle_mode.clone()),
            rcv_settle_mode: a.rcv_settle_mode.clone(),
            source,
            target,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: if link.broker_sends {
                Some(link.delivery_count)
            } else {
                None
            },
            max_message_size: Some(max_message_size),
            offered_capabilities: None,
            desired_capabilities: None,
            properties,
        };
        link.accepted = !refuse;
        self.write(local, &Performative::Attach(reply), &[]);
        Some(local)
    }

    /// Accept an attached link: echo it and, when the client sends, grant credit.
    /// `snd_settle_mode` overrides the echoed sender settle mode (response links answer `Settled`).
    pub fn accept_link(&mut self, id: LinkId, snd_settle_mode: Option<SenderSettleMode>) {
        self.accept_link_with(
            id,
            AttachReply {
                snd_settle_mode,
                ..AttachReply::default()
            },
        );
    }

    /// [`Engine::accept_link`] with additions to the reply (a session receiver's granted session id in
    /// the source filter and its lock time in the link properties).
    pub fn accept_link_with(&mut self, id: LinkId, reply: AttachReply) {
        if self.reply_attach(id, false, reply).is_none() {
            return;
        }
        let credit = self.config.sender_credit;
        if let Some(link) = self.links.get_mut(&id)
            && !link.broker_sends
        {
            link.rcv_credit = credit;
            self.send_link_flow(id, false);
        }
    }

    /// Refuse a link: attach reply with null termini, then a closing detach carrying `error`.
    pub fn refuse_link(&mut self, id: LinkId, error: Error) {
        if self
            .reply_attach(id, true, AttachReply::default())
            .is_none()
        {
            return;
        }
        self.detach(id, Some(error));
    }

    /// Detach a link from our side (closing), with an optional error.
    pub fn detach(&mut self, id: LinkId, error: Option<Error>) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if link.detach_sent {
            return;
        }
        link.detach_sent = true;
        link.credit = 0;
        link.partial = None;
        let handle = link.output_handle;
        let Some(local) = self
            .sessions
            .get(&link.incoming_channel)
            .map(|s| s.local_channel)
        else {
            return;
        };
        self.write(
            local,
            &Performative::Detach(Detach {
                handle: handle.into(),
                closed: true,
                error,
            }),
            &[],
        );
    }

    fn on_detach(&mut self, channel: u16, detach: Detach) {
        let Some(id) = self
            .sessions
            .get(&channel)
            .and_then(|s| s.links_by_input.get(&detach.handle.0).copied())
        else {
            return;
        };
        let Some(link) = self.links.get(&id) else {
            return;
        };
        if !link.detach_sent {
            let handle = link.output_handle;
            let local = self
                .sessions
                .get(&channel)
                .map(|s| s.local_channel)
                .unwrap_or(0);
            self.write(
                local,
                &Performative::Detach(Detach {
                    handle: handle.into(),
                    closed: detach.closed,
                    error: None,
                }),
                &[],
            );
        }
        self.forget_link(id);
        self.events.push_back(Event::Detached { link: id });
    }

    fn session_flow_fields(&self, channel: u16) -> Option<(u16, Flow)> {
        let s = self.sessions.get(&channel)?;
        Some((
            s.local_channel,
            Flow {
                next_incoming_id: Some(s.next_incoming_id),
                incoming_window: s.incoming_window,
                next_outgoing_id: s.next_outgoing_id,
                outgoing_window: u32::MAX / 2,
                handle: None,
                delivery_count: None,
                link_credit: None,
                available: None,
                drain: false,
                echo: false,
                properties: None,
            },
        ))
    }

    fn send_link_flow(&mut self, id: LinkId, echo_drain: bool) {
        let Some(link) = self.links.get(&id) else {
            return;
        };
        let Some((local, mut flow)) = self.session_flow_fields(link.incoming_channel) else {
            return;
        };
        flow.handle = Some(link.output_handle.into());
        if link.broker_sends {
            flow.delivery_count = Some(link.delivery_count);
            flow.link_credit = Some(link.credit);
            flow.available = Some(0);
            flow.drain = echo_drain || link.drain;
        } else {
            flow.delivery_count = Some(link.rcv_delivery_count);
            flow.link_credit = Some(link.rcv_credit);
        }
        self.write(local, &Performative::Flow(flow), &[]);
    }

    fn on_flow(&mut self, channel: u16, flow: Flow) -> Result<(), ConnectionError> {
        {
            let Some(session) = self.sessions.get_mut(&channel) else {
                return Ok(());
            };
            // remote-incoming-window = next-incoming-id + incoming-window - next-outgoing-id (2.5.6).
            // The window is a plain u32 over its whole range (clients such as Microsoft's Rust SDK
            // send u32::MAX, "unbounded"); only the transfer ids are serial numbers. So the frames
            // in flight (sent, not yet seen by the peer) come off the window, and a stale flow that
            // counts more in flight than its window leaves none.
            let base = flow.next_incoming_id.unwrap_or(session.initial_outgoing_id);
            let in_flight = session.next_outgoing_id.wrapping_sub(base);
            session.remote_incoming_window = flow.incoming_window.saturating_sub(in_flight);
            session.next_incoming_id = flow.next_outgoing_id;
        }
        self.flush_pending(channel);

        let Some(handle) = flow.handle else {
            if flow.echo
                && let Some((local, f)) = self.session_flow_fields(channel)
            {
                self.write(local, &Performative::Flow(f), &[]);
            }
            self.notify_senders(channel);
            return Ok(());
        };
        let Some(id) = self
            .sessions
            .get(&channel)
            .and_then(|s| s.links_by_input.get(&handle.0).copied())
        else {
            return Err(self.fail(
                "amqp:session:unattached-handle",
                format!("flow for handle {} which is not attached", handle.0),
            ));
        };
        let Some(link) = self.links.get_mut(&id) else {
            return Ok(());
        };
        if link.detach_sent {
            return Ok(());
        }
        if link.broker_sends {
            // link-credit = delivery-count(rcv) + link-credit(rcv) - delivery-count(snd) (2.6.7). The
            // counts are serial numbers, the credit a plain u32 (u32::MAX is a real grant): the
            // deliveries the receiver has not counted yet come off its credit. A receiver whose count
            // is ahead of ours (it cannot have seen deliveries we never sent) makes `in_flight` wrap
            // past 2^31, so it gets no credit rather than a huge one.
            let dc_rcv = flow.delivery_count.unwrap_or(0); // absent: our initial-delivery-count, 0
            let in_flight = link.delivery_count.wrapping_sub(dc_rcv);
            link.credit = if in_flight < 1 << 31 {
                flow.link_credit.unwrap_or(0).saturating_sub(in_flight)
            } else {
                0
            };
            link.drain = flow.drain;
            if flow.echo {
                self.send_link_flow(id, false);
            }
            self.events.push_back(Event::Credit { link: id });
        } else if flow.echo {
            self.send_link_flow(id, false);
        }
        Ok(())
    }

    fn notify_senders(&mut self, channel: u16) {
        let mut ids: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.incoming_channel == channel && l.broker_sends && l.credit > 0 && !l.detach_sent
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.events.push_back(Event::Credit { link: id });
        }
    }

    fn on_transfer(
        &mut self,
        channel: u16,
        t: Transfer,
        payload: Bytes,
    ) -> Result<(), ConnectionError> {
        let target_window = self.config.incoming_window;
        let max_message = self.config.max_message_size;
        let refill = {
            let Some(session) = self.sessions.get_mut(&channel) else {
                return Ok(());
            };
            session.next_incoming_id = session.next_incoming_id.wrapping_add(1);
            session.incoming_window = session.incoming_window.saturating_sub(1);
            if session.incoming_window < target_window / 2 {
                session.incoming_window = target_window;
                true
            } else {
                false
            }
        };
        if refill && let Some((local, f)) = self.session_flow_fields(channel) {
            self.write(local, &Performative::Flow(f), &[]);
        }
        let Some(id) = self
            .sessions
            .get(&channel)
            .and_then(|s| s.links_by_input.get(&t.handle.0).copied())
        else {
            return Err(self.fail(
                "amqp:session:unattached-handle",
                format!("transfer for handle {} which is not attached", t.handle.0),
            ));
        };
        let Some(link) = self.links.get_mut(&id) else {
            return Ok(());
        };
        if link.detach_sent {
            return Ok(());
        }
        if link.broker_sends {
            return Err(self.fail(
                "amqp:not-allowed",
                format!(
                    "transfer on handle {} where the client is the receiver",
                    t.handle.0
                ),
            ));
        }
        let partial = match link.partial.take() {
            Some(p) => p,
            None => {
                let Some(delivery_id) = t.delivery_id else {
                    return Err(self.fail(
                        "amqp:invalid-field",
                        "the first transfer of a delivery has no delivery-id".into(),
                    ));
                };
                // The client may exceed our credit (pyamqp resets its own); count it but never refuse.
                link.rcv_delivery_count = link.rcv_delivery_count.wrapping_add(1);
                link.rcv_credit = link.rcv_credit.saturating_sub(1);
                Partial {
                    delivery_id,
                    settled: false,
                    format: t.message_format.unwrap_or(0),
                    buf: BytesMut::new(),
                }
            }
        };
        let mut partial = partial;
        partial.settled |= t.settled.unwrap_or(false);
        if t.aborted {
            return Ok(());
        }
        if (partial.buf.len() + payload.len()) as u64 > max_message {
            self.detach(
                id,
                Some(amqp_error(
                    "amqp:link:message-size-exceeded",
                    format!(
                        "the message is larger than the limit of {max_message} bytes; send smaller messages or split the batch"
                    ),
                )),
            );
            return Ok(());
        }
        partial.buf.extend_from_slice(&payload);
        let low_credit = link.rcv_credit < self.config.sender_credit / 2;
        if t.more {
            link.partial = Some(partial);
        } else {
            self.events.push_back(Event::Message {
                link: id,
                delivery_id: partial.delivery_id,
                settled: partial.settled,
                format: partial.format,
                payload: partial.buf.freeze(),
            });
        }
        if low_credit {
            if let Some(link) = self.links.get_mut(&id) {
                link.rcv_credit = self.config.sender_credit;
            }
            self.send_link_flow(id, false);
        }
        Ok(())
    }

    fn on_disposition(&mut self, channel: u16, d: Disposition) {
        if !matches!(d.role, Role::Receiver) {
            // The client settling its own sends: we settle those at once, nothing to do.
            return;
        }
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let first = d.first;
        let last = d.last.unwrap_or(first);
        // Walk only ids we know, within the (possibly wrapped) range; both ends are peer-controlled.
        let ids: Vec<u32> = if first <= last {
            session
                .unsettled_out
                .range(first..=last)
                .map(|(k, _)| *k)
                .collect()
        } else {
            session
                .unsettled_out
                .range(first..)
                .chain(session.unsettled_out.range(..=last))
                .map(|(k, _)| *k)
                .collect()
        };
        for delivery_id in ids {
            let entry = if d.settled {
                session.unsettled_out.remove(&delivery_id)
            } else {
                session.unsettled_out.get(&delivery_id).cloned()
            };
            if let Some((link, tag)) = entry {
                self.events.push_back(Event::Settle {
                    link,
                    delivery_id,
                    tag,
                    settled: d.settled,
                    state: d.state.clone(),
                });
            }
        }
    }

    /// Acknowledge a client's delivery (settled, in our mode first): accepted or rejected.
    pub fn ack(&mut self, id: LinkId, delivery_id: u32, state: DeliveryState) {
        self.settled_disposition(id, Role::Receiver, delivery_id, state);
    }

    /// Echo the outcome applied to one of our deliveries (rcv-settle-mode second), settled.
    pub fn echo(&mut self, id: LinkId, delivery_id: u32, state: DeliveryState) {
        self.settled_disposition(id, Role::Sender, delivery_id, state);
    }

    /// A settled disposition for one delivery; as the sender we also forget it.
    fn settled_disposition(
        &mut self,
        id: LinkId,
        role: Role,
        delivery_id: u32,
        state: DeliveryState,
    ) {
        let Some(link) = self.links.get(&id) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&link.incoming_channel) else {
            return;
        };
        if matches!(role, Role::Sender) {
            session.unsettled_out.remove(&delivery_id);
        }
        let local = session.local_channel;
        let d = Disposition {
            role,
            first: delivery_id,
            last: None,
            settled: true,
            state: Some(state),
            batchable: false,
        };
        self.write(local, &Performative::Disposition(d), &[]);
    }

    /// Whether a delivery can go on the wire now: link credit, session window, nothing queued.
    pub fn can_send(&self, id: LinkId) -> bool {
        let Some(link) = self.links.get(&id) else {
            return false;
        };
        if !link.broker_sends || !link.accepted || link.detach_sent || link.credit == 0 {
            return false;
        }
        self.sessions
            .get(&link.incoming_channel)
            .is_some_and(|s| s.pending.is_empty() && s.remote_incoming_window > 0)
    }

    /// Link credit the client has granted on a broker-sending link.
    pub fn credit(&self, id: LinkId) -> u32 {
        self.links.get(&id).map_or(0, |l| l.credit)
    }

    /// Send one delivery; splits it into frames by the peer's max-frame-size. Returns the delivery-id,
    /// or `None` if [`Engine::can_send`] was false. `settled` deliveries are not tracked.
    pub fn send(&mut self, id: LinkId, tag: Bytes, payload: Bytes, settled: bool) -> Option<u32> {
        if !self.can_send(id) {
            return None;
        }
        let max_frame = self.peer_max_frame as usize;
        let link = self.links.get_mut(&id)?;
        link.credit -= 1;
        link.delivery_count = link.delivery_count.wrapping_add(1);
        let handle = link.output_handle;
        let session = self.sessions.get_mut(&link.incoming_channel)?;
        let delivery_id = session.next_delivery_id;
        session.next_delivery_id = session.next_delivery_id.wrapping_add(1);
        if !settled {
            session.unsettled_out.insert(delivery_id, (id, tag.clone()));
        }
        let mut first = Some((delivery_id, tag));
        let mut rest = payload;
        loop {
            let (delivery_id, delivery_tag) = match first.take() {
                Some((d, t)) => (Some(d), Some(Binary::from(t.to_vec()))),
                // Continuations carry only the handle: pyamqp treats a repeated delivery-id as a new
                // first frame and would lose the tag.
                None => (None, None),
            };
            let is_first = delivery_id.is_some();
            let mut transfer = Transfer {
                handle: handle.into(),
                delivery_id,
                delivery_tag,
                message_format: if is_first { Some(0) } else { None },
                settled: if is_first && settled {
                    Some(true)
                } else {
                    None
                },
                more: false,
                rcv_settle_mode: None,
                state: None,
                resume: false,
                aborted: false,
                batchable: false,
            };
            // Size the chunk with `more` set (the larger encoding); the last frame only shrinks.
            transfer.more = true;
            let overhead = serde_amqp::to_vec(&Performative::Transfer(transfer.clone()))
                .map(|b| b.len())
                .unwrap_or(64)
                + 8;
            let room = max_frame.saturating_sub(overhead).max(1);
            let chunk = if rest.len() > room {
                rest.split_to(room)
            } else {
                transfer.more = false;
                std::mem::take(&mut rest)
            };
            let body = serde_amqp::to_vec(&Performative::Transfer(transfer)).unwrap_or_default();
            session.pending.push_back((Bytes::from(body), chunk));
            if rest.is_empty() {
                break;
            }
        }
        let channel = link.incoming_channel;
        self.flush_pending(channel);
        Some(delivery_id)
    }

    fn flush_pending(&mut self, channel: u16) {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        while session.remote_incoming_window > 0 {
            let Some((body, payload)) = session.pending.pop_front() else {
                break;
            };
            session.remote_incoming_window -= 1;
            session.next_outgoing_id = session.next_outgoing_id.wrapping_add(1);
            codec::write_frame(
                &mut self.out,
                TYPE_AMQP,
                session.local_channel,
                &body,
                &payload,
            );
        }
    }

    /// Nothing more to send on this link right now: answer a pending drain by using up the credit.
    pub fn no_more_messages(&mut self, id: LinkId) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if link.drain && link.credit > 0 {
            link.delivery_count = link.delivery_count.wrapping_add(link.credit);
            link.credit = 0;
            self.send_link_flow(id, true);
        }
    }

    /// Number of deliveries in flight on the session of `id` that the client has not settled.
    pub fn unsettled_count(&self, id: LinkId) -> usize {
        self.links
            .get(&id)
            .and_then(|l| self.sessions.get(&l.incoming_channel))
            .map_or(0, |s| {
                s.unsettled_out.values().filter(|(l, _)| *l == id).count()
            })
    }

    /// Whether `a` precedes `b` in serial-number order (exposed for tests).
    pub fn serial_before(a: u32, b: u32) -> bool {
        serial_lt(a, b)
    }
}

/// How many bytes of `body` follow the performative (the transfer payload).
fn reader_remaining(body: &Bytes) -> usize {
    use serde_amqp::read::Read;
    let mut reader = serde_amqp::read::SliceReader::new(body);
    match serde_amqp::lazy::LazyValue::from_reader(&mut reader) {
        Ok(_) => body.len() - reader.bytes_consumed(),
        Err(_) => 0,
    }
}

/// The performative's name as the spec writes it (`open`, `attach`, …), for messages and logs.
pub fn name_of(p: &Performative) -> &'static str {
    match p {
        Performative::Open(_) => "open",
        Performative::Begin(_) => "begin",
        Performative::Attach(_) => "attach",
        Performative::Flow(_) => "flow",
        Performative::Transfer(_) => "transfer",
        Performative::Disposition(_) => "disposition",
        Performative::Detach(_) => "detach",
        Performative::End(_) => "end",
        Performative::Close(_) => "close",
    }
}

/// Hex dump for logs of undecodable frames (first 256 bytes).
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(256)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An empty fields map.
pub fn empty_fields() -> Fields {
    OrderedMap::new()
}
