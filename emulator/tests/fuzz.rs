//! Structure-aware fuzzing on stable Rust: property tests that feed the emulator what a broken or
//! hostile peer could send, and hold it to "no input panics or hangs it".
//!
//! - the frame codec, on any bytes, in both phases;
//! - a whole connection task (`serve_connection` over an in-memory pipe: SASL, engine, `$cbs`,
//!   `$management`, broker), after a valid prefix of a real conversation, fed random bytes, sequences of
//!   well-formed performatives with random fields, or valid frames with bytes flipped: it must end
//!   (no hang), without a panic, and a protocol error must close with an AMQP error condition;
//! - `Config.json`, as arbitrary JSON built from the format's own keys;
//! - many garbage connections against a running emulator, after which a real client still works.
//!
//! The suite runs a bounded number of cases (512 conversations, 1,024 codec inputs; `PROPTEST_CASES`
//! overrides);
//! `cargo xtask fuzz --cases N` runs them long. A failure prints the shrunk input and proptest keeps
//! it in `proptest-regressions/` so the next run tries it first.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fe2o3_amqp_types::definitions::{ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp_types::messaging::{Accepted, DeliveryState, Modified, Rejected, Released};
use fe2o3_amqp_types::performatives::{
    Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open, Performative,
    Transfer,
};
use fe2o3_amqp_types::primitives::{Binary, Symbol};
use fe2o3_amqp_types::sasl::SaslInit;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use servicebus_emulator::amqp::EngineConfig;
use servicebus_emulator::amqp::codec::{
    AMQP_HEADER, FrameCodec, Item, Phase, SASL_HEADER, TYPE_AMQP, TYPE_SASL, write_performative,
};
use servicebus_emulator::amqp::engine::{condition_str, name_of};
use servicebus_emulator::auth::SasValidator;
use servicebus_emulator::broker::Broker;
use servicebus_emulator::config::Config;
use servicebus_emulator::server::{ConnectionError, Shared, serve_connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// How long one conversation may take before it counts as a hang. Generous: the machine may be busy,
/// and a real hang never ends.
const HANG: Duration = Duration::from_secs(20);

fn config(default_cases: u32) -> ProptestConfig {
    // `PROPTEST_CASES` (what `cargo xtask fuzz --cases N` sets) wins over the suite's bound.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        // A shrink replays whole conversations; keep it bounded.
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------------------------------------
// Building blocks of a real conversation.

fn encode(frame_type: u8, channel: u16, body: &impl serde::Serialize, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_performative(&mut out, frame_type, channel, body, payload).expect("encodable");
    out.to_vec()
}

fn open() -> Performative {
    Performative::Open(Open {
        container_id: "fuzz".into(),
        hostname: Some("localhost".into()),
        max_frame_size: MaxFrameSize(65_536),
        channel_max: ChannelMax(255),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

fn begin(remote_channel: Option<u16>, window: u32) -> Performative {
    Performative::Begin(Begin {
        remote_channel,
        next_outgoing_id: 0,
        incoming_window: window,
        outgoing_window: window,
        handle_max: 255.into(),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

fn attach(name: String, handle: u32, role: Role, address: String, settle: u8) -> Performative {
    let snd = match settle % 3 {
        0 => SenderSettleMode::Unsettled,
        1 => SenderSettleMode::Settled,
        _ => SenderSettleMode::Mixed,
    };
    let rcv = if settle & 4 == 0 {
        ReceiverSettleMode::First
    } else {
        ReceiverSettleMode::Second
    };
    common::attach(&name, handle, role, &address, snd, rcv)
}

fn flow(handle: Option<u32>, delivery_count: u32, credit: u32, drain: bool) -> Performative {
    Performative::Flow(Flow {
        next_incoming_id: Some(0),
        incoming_window: 65_536,
        next_outgoing_id: 0,
        outgoing_window: 65_536,
        handle: handle.map(Into::into),
        delivery_count: handle.map(|_| delivery_count),
        link_credit: handle.map(|_| credit),
        available: None,
        drain,
        echo: false,
        properties: None,
    })
}

/// A message as a client encodes it: a data section (enough for the broker to store and deliver).
fn message_bytes(body: &[u8]) -> Vec<u8> {
    use fe2o3_amqp_types::messaging::Message;
    use fe2o3_amqp_types::messaging::message::__private::Serializable;
    let message = Message::builder().data(Binary::from(body.to_vec())).build();
    serde_amqp::to_vec(&Serializable(&message)).expect("a message encodes")
}

/// The valid beginnings of a conversation, deeper and deeper into the state machine; the fuzzed
/// part is appended to one of them.
fn prefix(depth: u8) -> Vec<u8> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    if depth == 1 {
        out.extend(AMQP_HEADER);
        return out;
    }
    out.extend(SASL_HEADER);
    let init = SaslInit {
        mechanism: Symbol::from("PLAIN"),
        initial_response: Some(Binary::from(
            b"\0RootManageSharedAccessKey\0SAS_KEY_VALUE".to_vec(),
        )),
        hostname: Some("localhost".into()),
    };
    out.extend(encode(TYPE_SASL, 0, &init, &[]));
    out.extend(AMQP_HEADER);
    if depth >= 3 {
        out.extend(encode(TYPE_AMQP, 0, &open(), &[]));
    }
    if depth >= 4 {
        out.extend(encode(TYPE_AMQP, 1, &begin(None, 65_536), &[]));
    }
    if depth >= 5 {
        let sender = attach("s".into(), 0, Role::Sender, "queue-messages".into(), 0);
        out.extend(encode(TYPE_AMQP, 1, &sender, &[]));
        out.extend(encode(TYPE_AMQP, 1, &flow(None, 0, 0, false), &[]));
    }
    if depth >= 6 {
        let receiver = attach("r".into(), 1, Role::Receiver, "queue-messages".into(), 4);
        out.extend(encode(TYPE_AMQP, 1, &receiver, &[]));
        out.extend(encode(TYPE_AMQP, 1, &flow(Some(1), 0, 10, false), &[]));
        let transfer = Performative::Transfer(transfer(0, Some(0), b"t0".to_vec(), false, false));
        out.extend(encode(TYPE_AMQP, 1, &transfer, &message_bytes(b"seed")));
    }
    out
}

fn transfer(handle: u32, id: Option<u32>, tag: Vec<u8>, more: bool, settled: bool) -> Transfer {
    Transfer {
        handle: handle.into(),
        delivery_id: id,
        delivery_tag: Some(tag.into()),
        message_format: Some(0),
        settled: Some(settled),
        more,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    }
}

// ------------------------------------------------------------------------------------------------
// Strategies.

fn small_u32() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 0u32..4, 1 => Just(u32::MAX), 1 => any::<u32>()]
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("queue-messages".to_owned()),
        Just("queue-messages/$DeadLetterQueue".to_owned()),
        Just("queue-messages/$management".to_owned()),
        Just("$cbs".to_owned()),
        Just("$management".to_owned()),
        Just("amqps://localhost/queue-messages".to_owned()),
        Just("no-such-queue".to_owned()),
        Just(String::new()),
        "[ -~]{0,300}",
        "\\PC{0,20}",
    ]
}

fn delivery_state() -> impl Strategy<Value = Option<DeliveryState>> {
    prop_oneof![
        Just(None),
        Just(Some(DeliveryState::Accepted(Accepted {}))),
        Just(Some(DeliveryState::Released(Released {}))),
        Just(Some(DeliveryState::Rejected(Rejected { error: None }))),
        any::<(bool, bool)>().prop_map(|(failed, here)| Some(DeliveryState::Modified(Modified {
            delivery_failed: Some(failed),
            undeliverable_here: Some(here),
            message_annotations: None,
        }))),
    ]
}

/// One well-formed performative with random field values, on a random channel, with a payload.
fn performative() -> BoxedStrategy<(u16, Performative, Vec<u8>)> {
    // Mostly the session the prefix began (channel 1) and the links it attached (handles 0 and 1), so
    // most frames reach the link state machine instead of being refused at the door.
    let channel = prop_oneof![8 => Just(1u16), 1 => Just(0), 1 => Just(2), 1 => any::<u16>()];
    let handle = prop_oneof![8 => 0u32..3, 1 => any::<u32>()];
    // Frames that end the session or connection are rarer, so sequences get deep.
    let body = prop_oneof![
        1 => (prop_oneof![Just(None), any::<u16>().prop_map(Some)], small_u32())
            .prop_map(|(remote, window)| (begin(remote, window), Vec::new())),
        3 => ("[a-z]{0,8}", handle.clone(), any::<bool>(), address(), any::<u8>()).prop_map(
            |(name, handle, sender, address, settle)| {
                let role = if sender { Role::Sender } else { Role::Receiver };
                (attach(name, handle, role, address, settle), Vec::new())
            }
        ),
        3 => (
            prop_oneof![Just(None), handle.clone().prop_map(Some)],
            small_u32(),
            small_u32(),
            any::<bool>()
        )
            .prop_map(|(handle, count, credit, drain)| (flow(handle, count, credit, drain), Vec::new())),
        3 => (
            handle.clone(),
            prop_oneof![Just(None), small_u32().prop_map(Some)],
            proptest::collection::vec(any::<u8>(), 0..20),
            any::<(bool, bool)>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| message_bytes(&b)),
                proptest::collection::vec(any::<u8>(), 0..300),
            ]
        )
            .prop_map(|(handle, id, tag, (more, settled), payload)| (
                Performative::Transfer(transfer(handle, id, tag, more, settled)),
                payload
            )),
        3 => (any::<bool>(), small_u32(), prop_oneof![Just(None), small_u32().prop_map(Some)], any::<bool>(), delivery_state())
            .prop_map(|(receiver, first, last, settled, state)| (
                Performative::Disposition(Disposition {
                    role: if receiver { Role::Receiver } else { Role::Sender },
                    first,
                    last,
                    settled,
                    state,
                    batchable: false,
                }),
                Vec::new()
            )),
        2 => (handle, any::<bool>()).prop_map(|(handle, closed)| (
            Performative::Detach(Detach {
                handle: handle.into(),
                closed,
                error: None
            }),
            Vec::new()
        )),
        1 => Just((Performative::End(End { error: None }), Vec::new())),
        1 => Just((Performative::Close(Close { error: None }), Vec::new())),
        1 => Just((open(), Vec::new())),
    ];
    (channel, body)
        .prop_map(|(channel, (performative, payload))| (channel, performative, payload))
        .boxed()
}

/// What comes after the valid prefix.
#[derive(Debug, Clone)]
enum Tail {
    /// Any bytes at all.
    Bytes(Vec<u8>),
    /// Well-formed performatives with random fields.
    Frames(Vec<(u16, Performative, Vec<u8>)>),
    /// Well-formed performatives, then some bytes overwritten and the end maybe cut off.
    Mutated {
        frames: Vec<(u16, Performative, Vec<u8>)>,
        flips: Vec<(usize, u8)>,
        cut: Option<usize>,
    },
}

impl Tail {
    fn bytes(&self) -> Vec<u8> {
        let frames = |frames: &[(u16, Performative, Vec<u8>)]| {
            frames
                .iter()
                .flat_map(|(channel, p, payload)| encode(TYPE_AMQP, *channel, p, payload))
                .collect::<Vec<u8>>()
        };
        match self {
            Tail::Bytes(bytes) => bytes.clone(),
            Tail::Frames(list) => frames(list),
            Tail::Mutated {
                frames: list,
                flips,
                cut,
            } => {
                let mut bytes = frames(list);
                if bytes.is_empty() {
                    return bytes;
                }
                for (at, value) in flips {
                    let at = at % bytes.len();
                    bytes[at] = *value;
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut % (bytes.len() + 1));
                }
                bytes
            }
        }
    }
}

fn tail() -> impl Strategy<Value = Tail> {
    let frames = proptest::collection::vec(performative(), 1..16);
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512).prop_map(Tail::Bytes),
        3 => frames.clone().prop_map(Tail::Frames),
        2 => (
            frames,
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            prop_oneof![Just(None), any::<usize>().prop_map(Some)]
        )
            .prop_map(|(frames, flips, cut)| Tail::Mutated { frames, flips, cut }),
    ]
}

// ------------------------------------------------------------------------------------------------
// Running one conversation.

fn shared() -> Arc<Shared> {
    Shared::new(
        Broker::new(&Config::lab_default()),
        SasValidator::emulator_default(),
        EngineConfig::default(),
    )
}

/// Serve one connection that receives `input` and then end-of-stream; return how it ended and what
/// the server wrote. Fails the case on a panic or a hang.
async fn converse(
    shared: Arc<Shared>,
    input: Vec<u8>,
) -> Result<(Result<(), ConnectionError>, Vec<u8>), TestCaseError> {
    let (client, server) = tokio::io::duplex(16 * 1024);
    let (mut read, mut write) = tokio::io::split(client);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(serve_connection(server, shared, stop));
    // Read everything the server writes, so it never blocks on a full pipe.
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = read.read_to_end(&mut out).await;
        out
    });
    // The server may stop reading (it closed): then writing fails or would block; both are fine.
    let _ = tokio::time::timeout(HANG, async {
        let _ = write.write_all(&input).await;
        let _ = write.shutdown().await;
    })
    .await;
    let ended = tokio::time::timeout(HANG, served).await;
    drop(stop_tx);
    let result = match ended {
        Err(_) => {
            return Err(TestCaseError::fail(format!(
                "the connection did not end within {HANG:?} after its input and end-of-stream (a hang)"
            )));
        }
        Ok(Err(join)) if join.is_panic() => {
            return Err(TestCaseError::fail(format!(
                "the connection task panicked: {join}"
            )));
        }
        Ok(Err(join)) => {
            return Err(TestCaseError::fail(format!(
                "the connection task failed: {join}"
            )));
        }
        Ok(Ok(result)) => result,
    };
    drop(write);
    let output = tokio::time::timeout(HANG, reader)
        .await
        .map_err(|_| TestCaseError::fail("the server kept its end open after it ended"))?
        .map_err(|e| TestCaseError::fail(format!("reader: {e}")))?;
    Ok((result, output))
}

/// The AMQP frames the server wrote after its last header (SASL frames and headers skipped).
fn performatives_written(output: &[u8]) -> Vec<Performative> {
    let mut buf = BytesMut::from(output);
    let mut codec = FrameCodec::new();
    codec.set_max_frame_size(u32::MAX);
    let mut found = Vec::new();
    // Headers and frames alternate in the handshake; try a header at each 'AMQP' and frames elsewhere.
    loop {
        let phase = if buf.starts_with(b"AMQP") {
            Phase::Header
        } else {
            Phase::Frames
        };
        codec.set_phase(phase);
        match codec.decode(&mut buf) {
            Ok(Some(Item::Frame(frame)))
                if frame.frame_type == TYPE_AMQP && !frame.body.is_empty() =>
            {
                if let Ok(p) = serde_amqp::from_slice::<Performative>(&frame.body) {
                    found.push(p);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return found,
        }
    }
}

fn check_conversation(depth: u8, tail: &Tail) -> Result<(), TestCaseError> {
    let mut input = prefix(depth);
    input.extend(tail.bytes());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (result, output) = runtime.block_on(async { converse(shared(), input).await })?;
    // A protocol error the engine raised must reach the peer as a Close carrying an AMQP condition.
    if let Err(ConnectionError::Protocol(error)) = &result {
        let close = performatives_written(&output)
            .into_iter()
            .rev()
            .find_map(|p| match p {
                Performative::Close(close) => Some(close),
                _ => None,
            });
        let condition = close.and_then(|c| c.error).map(|e| condition_str(&e));
        prop_assert!(
            condition
                .as_deref()
                .is_some_and(|c| c.starts_with("amqp:") || c.starts_with("com.microsoft:")),
            "the connection ended with {error} but the peer got no Close with a condition (got {condition:?})"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(config(1024))]

    /// Any bytes, any phase, any advertised limit: the codec returns frames, waits, or errs.
    #[test]
    fn the_frame_codec_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        frames_phase in any::<bool>(),
        max in 0u32..200_000,
    ) {
        let mut codec = FrameCodec::new();
        codec.set_phase(if frames_phase { Phase::Frames } else { Phase::Header });
        codec.set_max_frame_size(max);
        let mut buf = BytesMut::from(&bytes[..]);
        // Every item consumes at least 8 bytes, so this ends; the bound proves it.
        for _ in 0..=bytes.len() / 8 + 1 {
            match codec.decode(&mut buf) {
                Ok(Some(Item::Header(_))) => codec.set_phase(Phase::Frames),
                Ok(Some(Item::Frame(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

proptest! {
    // 512 conversations take a few seconds; a planted panic on one flow shape was found within
    // 2,000 (run `cargo xtask fuzz --cases 100000` for a long hunt).
    #![proptest_config(config(512))]

    /// A connection at any depth of a real conversation, then anything: it ends, it does not panic,
    /// and a protocol error closes it with an AMQP condition.
    #[test]
    fn a_connection_survives_anything_after_a_valid_prefix(
        // Mostly deep into the conversation, where the state machines are.
        depth in prop_oneof![1 => 0u8..4, 4 => 4u8..7],
        tail in tail(),
    ) {
        check_conversation(depth, &tail)?;
    }

    /// `Config.json` as any JSON built from the format's keys: a config or an error, never a panic.
    #[test]
    fn config_json_never_panics(value in config_json()) {
        let text = value.to_string();
        let _ = Config::from_json_str(&text);
    }
}

/// The fuzzing starts from valid conversations, or it would only ever test the first frame: each prefix
/// alone is served without an error, and the server answers as deep as the prefix goes.
#[test]
fn every_prefix_is_a_valid_conversation() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for depth in 0..7u8 {
        let (result, output) = runtime
            .block_on(async { converse(shared(), prefix(depth)).await })
            .unwrap();
        let answers: Vec<&'static str> =
            performatives_written(&output).iter().map(name_of).collect();
        let expected: &[&str] = match depth {
            0..=2 => &[],
            3 => &["open"],
            4 => &["open", "begin"],
            // The sender gets credit; then a receiver, and the prefix's own message is accepted
            // (its delivery to the receiver races the end of the input, so it is not required).
            5 => &["open", "begin", "attach", "flow"],
            _ => &["open", "begin", "attach", "flow", "attach", "disposition"],
        };
        assert!(
            expected.iter().all(|e| answers.contains(e)),
            "depth {depth}: ended {result:?}, answered {answers:?}, expected at least {expected:?}"
        );
        if depth >= 2 {
            assert!(result.is_ok(), "depth {depth}: {result:?}");
        }
    }
}

/// JSON values shaped like Config.json: its real keys, durations, numbers, wrong types, nesting.
fn config_json() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("UserConfig"),
        Just("Namespaces"),
        Just("Name"),
        Just("Queues"),
        Just("Topics"),
        Just("Subscriptions"),
        Just("Rules"),
        Just("Properties"),
        Just("Logging"),
        Just("Type"),
        Just("MaxDeliveryCount"),
        Just("LockDuration"),
        Just("DefaultMessageTimeToLive"),
        Just("DeadLetteringOnMessageExpiration"),
        Just("RequiresSession"),
        Just("ForwardTo"),
        Just("RequiresDuplicateDetection"),
        Just("DuplicateDetectionHistoryTimeWindow"),
        Just("ForwardDeadLetteredMessagesTo"),
        Just("FilterType"),
        Just("SqlFilter"),
        Just("CorrelationFilter"),
        Just("SqlExpression"),
        Just("Action"),
        Just("CorrelationId"),
        Just("MaxSizeInMegabytes"),
        Just("x"),
    ]
    .prop_map(str::to_owned);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        prop_oneof![
            Just("PT1M".to_owned()),
            Just("PT0S".to_owned()),
            Just("P10675199DT2H48M5.4775807S".to_owned()),
            Just("P1Y2M3DT4H5M6.7S".to_owned()),
            Just("Correlation".to_owned()),
            Just("Sql".to_owned()),
            Just("sbemulatorns".to_owned()),
            Just("queue-messages".to_owned()),
            "\\PC{0,30}",
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// The process keeps serving: many garbage connections over TCP against one running emulator, then a
/// real client sends and receives a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_connections_do_not_disturb_a_real_client() {
    use fe2o3_amqp::link::delivery::Delivery;
    use fe2o3_amqp::sasl_profile::SaslProfile;
    use fe2o3_amqp::types::messaging::{Body, Message};
    use fe2o3_amqp::types::primitives::Value;
    use fe2o3_amqp::{Connection, Receiver, Sender, Session};

    let emulator = servicebus_emulator::Emulator::builder()
        .loopback()
        .start()
        .await
        .unwrap();
    let addr = emulator.amqp_addr();
    // Inputs drawn from the same strategies, deterministically (the same every run).
    let mut runner = TestRunner::deterministic();
    let inputs: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            let tail = proptest::strategy::ValueTree::current(
                &tail().new_tree(&mut runner).expect("a value"),
            );
            let mut input = prefix((i % 7) as u8);
            input.extend(tail.bytes());
            input
        })
        .collect();
    let mut connections = tokio::task::JoinSet::new();
    for input in inputs {
        connections.spawn(async move {
            let Ok(mut socket) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let _ = socket.write_all(&input).await;
            let _ = socket.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(HANG, socket.read_to_end(&mut sink)).await;
        });
    }
    while connections.join_next().await.is_some() {}

    let mut connection = Connection::builder()
        .container_id("fuzz-survivor")
        .sasl_profile(SaslProfile::Plain {
            username: "RootManageSharedAccessKey".into(),
            password: "SAS_KEY_VALUE".into(),
        })
        .open(format!("amqp://127.0.0.1:{}", addr.port()).as_str())
        .await
        .unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut sender = Sender::attach(&mut session, "s", "queue-messages")
        .await
        .unwrap();
    sender
        .send(Message::builder().data(Binary::from("still here")).build())
        .await
        .unwrap();
    let mut receiver = Receiver::builder()
        .name("r")
        .source("queue-messages")
        .sender_settle_mode(SenderSettleMode::Settled)
        .attach(&mut session)
        .await
        .unwrap();
    // The depth-6 prefixes also queued messages ("seed"); ours is among what the queue holds.
    let mut bodies = Vec::new();
    while !bodies.iter().any(|b: &Vec<u8>| b == b"still here") {
        let delivery: Delivery<Body<Value>> = tokio::time::timeout(HANG, receiver.recv())
            .await
            .expect("a delivery")
            .unwrap();
        if let Body::Data(batch) = &delivery.message().body {
            bodies.push(batch.iter().flat_map(|d| d.0.to_vec()).collect());
        }
    }
    receiver.close().await.ok();
    sender.close().await.ok();
    session.end().await.ok();
    connection.close().await.ok();
    emulator.shutdown().await;
}
