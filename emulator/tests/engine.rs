//! The AMQP engine without sockets: feed frames built with the codec types, assert the frames out.

mod common;

use bytes::{Bytes, BytesMut};
use fe2o3_amqp_types::definitions::{ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp_types::messaging::{Accepted, DeliveryState, TargetArchetype};
use fe2o3_amqp_types::performatives::{
    Begin, ChannelMax, Close, Detach, Disposition, Flow, MaxFrameSize, Open, Performative, Transfer,
};
use fe2o3_amqp_types::primitives::{Binary, Symbol, Value};
use servicebus_emulator::amqp::codec::{FrameCodec, Item, Phase, TYPE_AMQP, write_performative};
use servicebus_emulator::amqp::engine::{amqp_error, condition_str};
use servicebus_emulator::amqp::{Engine, EngineConfig, Event};
use tokio::time::{Duration, Instant};
use tokio_util::codec::Decoder;

fn frame(channel: u16, p: Performative, payload: &[u8]) -> servicebus_emulator::amqp::codec::Frame {
    let mut buf = BytesMut::new();
    write_performative(&mut buf, TYPE_AMQP, channel, &p, payload).unwrap();
    let mut codec = FrameCodec::new();
    codec.set_phase(Phase::Frames);
    match codec.decode(&mut buf).unwrap().unwrap() {
        Item::Frame(f) => f,
        other => panic!("not a frame: {other:?}"),
    }
}

/// Decode everything the engine wrote: (channel, performative, payload); `None` for heartbeats.
fn output(engine: &mut Engine) -> Vec<(u16, Option<Performative>, Bytes)> {
    let mut buf = engine.take_output();
    let mut codec = FrameCodec::new();
    codec.set_phase(Phase::Frames);
    codec.set_max_frame_size(u32::MAX);
    let mut out = Vec::new();
    while let Some(Item::Frame(f)) = codec.decode(&mut buf).unwrap() {
        if f.body.is_empty() {
            out.push((f.channel, None, Bytes::new()));
            continue;
        }
        let p: Performative = serde_amqp::from_slice(&f.body).unwrap();
        let consumed = {
            use serde_amqp::read::Read;
            let mut r = serde_amqp::read::SliceReader::new(&f.body);
            serde_amqp::lazy::LazyValue::from_reader(&mut r).unwrap();
            r.bytes_consumed()
        };
        out.push((f.channel, Some(p), f.body.slice(consumed..)));
    }
    out
}

fn events(engine: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| engine.poll_event()).collect()
}

/// Feed one frame on the client's session channel (1), now.
fn feed(engine: &mut Engine, p: Performative, payload: &[u8]) {
    engine
        .on_frame(frame(1, p, payload), Instant::now())
        .unwrap();
}

fn open(max_frame: u32, idle_ms: Option<u32>) -> Performative {
    Performative::Open(Open {
        container_id: "client".into(),
        hostname: Some("localhost".into()),
        max_frame_size: MaxFrameSize(max_frame),
        channel_max: ChannelMax(65535),
        idle_time_out: idle_ms,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

fn begin(incoming_window: u32) -> Performative {
    Performative::Begin(Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window,
        outgoing_window: 65536,
        handle_max: 255.into(),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

fn attach(name: &str, handle: u32, client_role: Role, address: &str) -> Performative {
    common::attach(
        name,
        handle,
        client_role,
        address,
        SenderSettleMode::Unsettled,
        ReceiverSettleMode::Second,
    )
}

fn link_flow(handle: u32, delivery_count: u32, credit: u32, drain: bool) -> Performative {
    link_flow_window(handle, delivery_count, credit, drain, 65536)
}

fn link_flow_window(
    handle: u32,
    delivery_count: u32,
    credit: u32,
    drain: bool,
    window: u32,
) -> Performative {
    Performative::Flow(Flow {
        next_incoming_id: Some(0),
        incoming_window: window,
        next_outgoing_id: 0,
        outgoing_window: 65536,
        handle: Some(handle.into()),
        delivery_count: Some(delivery_count),
        link_credit: Some(credit),
        available: None,
        drain,
        echo: false,
        properties: None,
    })
}

/// A session-level flow (no link fields): the client's window moves on.
fn session_flow(next_incoming_id: u32, window: u32) -> Performative {
    let Performative::Flow(mut f) = link_flow_window(0, 0, 0, false, window) else {
        unreachable!()
    };
    f.next_incoming_id = Some(next_incoming_id);
    (f.handle, f.delivery_count, f.link_credit) = (None, None, None);
    Performative::Flow(f)
}

/// An engine with an open connection and one session on client channel 1, output drained.
fn opened(max_frame: u32, window: u32) -> Engine {
    let now = Instant::now();
    let mut engine = Engine::new(EngineConfig::default(), now);
    engine
        .on_frame(frame(0, open(max_frame, None), &[]), now)
        .unwrap();
    engine.on_frame(frame(1, begin(window), &[]), now).unwrap();
    let _ = output(&mut engine);
    engine
}

/// Feed a client sender's attach; returns the link the engine reports (not yet answered).
fn attach_client_sender(engine: &mut Engine, name: &str, handle: u32, address: &str) -> u64 {
    feed(engine, attach(name, handle, Role::Sender, address), &[]);
    match events(engine).as_slice() {
        [Event::Attached { link, .. }] => *link,
        other => panic!("expected one attach event, got {other:?}"),
    }
}

fn attached_receiver(engine: &mut Engine, handle: u32) -> u64 {
    feed(
        engine,
        attach("r", handle, Role::Receiver, "amqps://localhost/q"),
        &[],
    );
    let link = match events(engine).as_slice() {
        [Event::Attached { link, info }] => {
            assert_eq!(info.node_address(), Some("amqps://localhost/q"));
            *link
        }
        other => panic!("expected one attach event, got {other:?}"),
    };
    engine.accept_link(link, None);
    let _ = output(engine);
    link
}

/// `opened(max_frame, window)` with an accepted receiver on handle 0 that got the `flow`'s credit;
/// output and events drained.
fn receiver_with_credit(max_frame: u32, window: u32, flow: Performative) -> (Engine, u64) {
    let mut engine = opened(max_frame, window);
    let link = attached_receiver(&mut engine, 0);
    feed(&mut engine, flow, &[]);
    let _ = events(&mut engine);
    (engine, link)
}

#[test]
fn pipelined_open_begin_attach_are_answered_in_order() {
    let now = Instant::now();
    let mut engine = Engine::new(EngineConfig::default(), now);
    for f in [
        frame(0, open(1_048_576, None), &[]),
        frame(1, begin(65536), &[]),
        frame(1, attach("cbs-receiver", 0, Role::Receiver, "$cbs"), &[]),
        frame(1, attach("cbs-sender", 1, Role::Sender, "$cbs"), &[]),
    ] {
        engine.on_frame(f, now).unwrap();
    }
    let evs = events(&mut engine);
    let links: Vec<u64> = evs
        .iter()
        .map(|e| match e {
            Event::Attached { link, .. } => *link,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(links.len(), 2);
    for l in &links {
        engine.accept_link(*l, None);
    }
    let out = output(&mut engine);
    let kinds: Vec<_> = out
        .iter()
        .map(|(c, p, _)| (*c, p.clone().unwrap()))
        .collect();
    let Performative::Open(o) = &kinds[0].1 else {
        panic!("first frame must be open: {kinds:?}")
    };
    assert_eq!(o.max_frame_size.0, 262_144);
    let Performative::Begin(b) = &kinds[1].1 else {
        panic!("then begin")
    };
    assert_eq!(
        b.remote_channel,
        Some(1),
        "begin reply names the client's channel"
    );
    let local = kinds[1].0;
    let Performative::Attach(a) = &kinds[2].1 else {
        panic!("then attach")
    };
    assert_eq!(kinds[2].0, local);
    assert_eq!(a.name, "cbs-receiver");
    assert!(matches!(a.role, Role::Sender));
    assert_eq!(
        a.initial_delivery_count,
        Some(0),
        "pyamqp receivers detach without it"
    );
    assert_eq!(a.max_message_size, Some(262_144));
    assert_eq!(a.source.as_ref().unwrap().address.as_deref(), Some("$cbs"));
    let Performative::Attach(a) = &kinds[3].1 else {
        panic!("then attach")
    };
    assert_eq!(a.name, "cbs-sender");
    assert!(matches!(a.role, Role::Receiver));
    assert_eq!(a.initial_delivery_count, None);
    let Performative::Flow(f) = &kinds[4].1 else {
        panic!("client senders get credit at once: {kinds:?}")
    };
    assert_eq!(f.link_credit, Some(1000));
    assert_eq!(f.handle, Some(a.handle.clone()));
}

#[test]
fn refused_attach_has_null_termini_and_a_closing_detach_with_three_error_fields() {
    let mut engine = opened(65536, 65536);
    let link = attach_client_sender(&mut engine, "s", 0, "nope");
    engine.refuse_link(link, amqp_error("amqp:not-found", "no queue 'nope'"));
    let out = output(&mut engine);
    let Some(Performative::Attach(a)) = &out[0].1 else {
        panic!()
    };
    assert!(a.source.is_none() && a.target.is_none());
    let Some(Performative::Detach(d)) = &out[1].1 else {
        panic!()
    };
    assert!(d.closed);
    let err = d.error.as_ref().unwrap();
    assert_eq!(condition_str(err), "amqp:not-found");
    assert!(
        err.description.is_some() && err.info.is_some(),
        "pyamqp indexes all three fields"
    );
    // The client may reuse the handle without detaching (pyamqp does): accepted as a new link.
    feed(&mut engine, attach("s2", 0, Role::Sender, "q"), &[]);
    assert!(matches!(events(&mut engine)[..], [Event::Attached { .. }]));
}

#[test]
fn drain_uses_up_credit_and_reports_zero() {
    let mut engine = opened(65536, 65536);
    let link = attached_receiver(&mut engine, 0);
    feed(&mut engine, link_flow(0, 0, 5, true), &[]);
    assert!(matches!(events(&mut engine)[..], [Event::Credit { link: l }] if l == link));
    assert_eq!(engine.credit(link), 5);
    engine.no_more_messages(link);
    let out = output(&mut engine);
    let Some(Performative::Flow(f)) = &out[0].1 else {
        panic!("{out:?}")
    };
    assert_eq!(
        (f.delivery_count, f.link_credit, f.drain),
        (Some(5), Some(0), true)
    );
    assert_eq!(engine.credit(link), 0);
}

#[test]
fn stale_or_wrapped_delivery_count_never_yields_huge_credit() {
    let mut engine = opened(65536, 65536);
    let link = attached_receiver(&mut engine, 0);
    // Client thinks delivery-count is u32::MAX (one behind our 0) and grants 0: limit is behind us.
    feed(&mut engine, link_flow(0, u32::MAX, 0, false), &[]);
    assert_eq!(engine.credit(link), 0);
    // Across the wrap: client count u32::MAX with 3 credits leaves 2 for us at count 0.
    feed(&mut engine, link_flow(0, u32::MAX, 3, false), &[]);
    assert_eq!(engine.credit(link), 2);
}

#[test]
fn unbounded_session_window_and_credit_let_deliveries_out() {
    // Microsoft's Rust SDK begins its sessions with both windows at u32::MAX ("unbounded") and may
    // grant u32::MAX credit; these are plain u32 values, not serial numbers, so nothing is clamped.
    let (mut engine, link) = receiver_with_credit(
        65536,
        u32::MAX,
        link_flow_window(0, 0, u32::MAX, false, u32::MAX),
    );
    assert_eq!(engine.credit(link), u32::MAX);
    assert!(engine.can_send(link), "an unbounded window is open");
    for i in 0..3u8 {
        engine
            .send(
                link,
                Bytes::from(vec![i; 16]),
                Bytes::from_static(b"\x00\x53\x77\x40"),
                false,
            )
            .unwrap();
    }
    let transfers = output(&mut engine)
        .into_iter()
        .filter(|(_, p, _)| matches!(p, Some(Performative::Transfer(_))))
        .count();
    assert_eq!(transfers, 3);
    // A session flow that has not yet seen those three still leaves u32::MAX - 3 open.
    feed(&mut engine, session_flow(0, u32::MAX), &[]);
    assert!(engine.can_send(link));
    // One that counts more in flight than its window leaves none; the next flow reopens it.
    feed(&mut engine, session_flow(0, 2), &[]);
    assert!(!engine.can_send(link));
    feed(&mut engine, session_flow(3, 1), &[]);
    assert!(engine.can_send(link));
}

#[test]
fn attach_properties_with_a_string_key_are_taken_as_uamqp_sends_them() {
    // uamqp (Microsoft's C stack) writes its receiver's attach `properties` key as a string, where the
    // spec has a symbol; Service Bus takes it, so the emulator must not close with decode-error.
    let mut engine = opened(65536, 65536);
    let Performative::Attach(mut a) = attach("r", 0, Role::Receiver, "amqps://localhost/q") else {
        unreachable!()
    };
    let key = "com.microsoft:receiver-name";
    a.properties = Some(
        [(Symbol::from(key), Value::String("uamqp-receiver".into()))]
            .into_iter()
            .collect(),
    );
    let mut f = frame(1, Performative::Attach(a), &[]);
    // Turn the symbol key (sym8 0xa3) into a string (str8 0xa1), as uamqp writes it.
    let mut body = f.body.to_vec();
    let at = body
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .expect("the key is in the frame")
        - 2;
    assert_eq!(body[at], 0xa3, "a sym8 constructor before the key");
    body[at] = 0xa1;
    f.body = Bytes::from(body);
    engine
        .on_frame(f, Instant::now())
        .expect("the attach is taken");
    match events(&mut engine).as_slice() {
        [Event::Attached { info, .. }] => {
            assert_eq!(info.node_address(), Some("amqps://localhost/q"))
        }
        other => panic!("expected one attach event, got {other:?}"),
    }
}

#[test]
fn second_mode_settlement_is_reported_and_echoed_settled() {
    let (mut engine, link) = receiver_with_credit(65536, 65536, link_flow(0, 0, 10, false));
    let tag = Bytes::from_static(&[7; 16]);
    let id = engine
        .send(
            link,
            tag.clone(),
            Bytes::from_static(b"\x00\x53\x77\x40"),
            false,
        )
        .unwrap();
    let out = output(&mut engine);
    let Some(Performative::Transfer(t)) = &out[0].1 else {
        panic!()
    };
    assert_eq!(
        t.delivery_tag.as_ref().map(|b| b.to_vec()),
        Some(tag.to_vec())
    );
    assert_eq!(t.settled, None);
    let d = Disposition {
        role: Role::Receiver,
        first: id,
        last: None,
        settled: false,
        state: Some(DeliveryState::Accepted(Accepted {})),
        batchable: false,
    };
    feed(&mut engine, Performative::Disposition(d), &[]);
    let evs = events(&mut engine);
    let [
        Event::Settle {
            link: l,
            delivery_id,
            tag: t,
            settled: false,
            ..
        },
    ] = &evs[..]
    else {
        panic!("{evs:?}")
    };
    assert_eq!((*l, *delivery_id, t.clone()), (link, id, tag));
    engine.echo(link, id, DeliveryState::Accepted(Accepted {}));
    let out = output(&mut engine);
    let Some(Performative::Disposition(d)) = &out[0].1 else {
        panic!()
    };
    assert!(matches!(d.role, Role::Sender) && d.settled && d.first == id);
    assert!(matches!(d.state, Some(DeliveryState::Accepted(_))));
    assert_eq!(engine.unsettled_count(link), 0);
}

#[test]
fn large_delivery_is_split_and_waits_for_the_session_window() {
    // Peer accepts 512-byte frames and a session window of 1 frame.
    let (mut engine, link) = receiver_with_credit(512, 1, link_flow_window(0, 0, 10, false, 1));
    let payload: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
    engine
        .send(
            link,
            Bytes::from_static(&[1; 16]),
            Bytes::from(payload.clone()),
            false,
        )
        .unwrap();
    let mut frames = output(&mut engine);
    assert_eq!(frames.len(), 1, "window 1 lets one frame out");
    assert!(
        !engine.can_send(link),
        "no new delivery while frames are queued"
    );
    let mut next_incoming = 1;
    while frames.len() < 3 {
        feed(&mut engine, session_flow(next_incoming, 1), &[]);
        let more = output(&mut engine);
        assert_eq!(more.len(), 1);
        frames.extend(more);
        next_incoming += 1;
    }
    let mut joined = Vec::new();
    for (i, (_, p, data)) in frames.iter().enumerate() {
        let Some(Performative::Transfer(t)) = p else {
            panic!()
        };
        let body_len = serde_amqp::to_vec(p.as_ref().unwrap()).unwrap().len();
        assert!(
            8 + body_len + data.len() <= 512,
            "each frame fits the peer max-frame-size: {body_len} + {}",
            data.len()
        );
        if i == 0 {
            assert!(t.delivery_id.is_some() && t.delivery_tag.is_some());
        } else {
            assert!(
                t.delivery_id.is_none() && t.delivery_tag.is_none(),
                "continuations carry only the handle"
            );
        }
        assert_eq!(t.more, i < 2);
        joined.extend_from_slice(data);
    }
    assert_eq!(joined, payload);
}

fn transfer(handle: u32, delivery_id: Option<u32>, more: bool) -> Performative {
    Performative::Transfer(Transfer {
        handle: handle.into(),
        delivery_id,
        delivery_tag: delivery_id.map(|d| Binary::from(d.to_be_bytes().to_vec())),
        message_format: delivery_id.map(|_| 0),
        settled: Some(false),
        more,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    })
}

#[test]
fn client_multi_frame_transfer_is_reassembled_and_oversize_detaches() {
    let mut engine = opened(65536, 65536);
    let link = attach_client_sender(&mut engine, "s", 3, "q");
    engine.accept_link(link, None);
    let _ = output(&mut engine);
    feed(&mut engine, transfer(3, Some(0), true), b"hello ");
    feed(&mut engine, transfer(3, None, false), b"world");
    let evs = events(&mut engine);
    let [
        Event::Message {
            link: l,
            delivery_id: 0,
            settled: false,
            format: 0,
            payload,
        },
    ] = &evs[..]
    else {
        panic!("{evs:?}")
    };
    assert_eq!((*l, &payload[..]), (link, &b"hello world"[..]));

    let big = vec![0u8; 200_000];
    feed(&mut engine, transfer(3, Some(1), true), &big[..60_000]);
    for _ in 0..4 {
        feed(&mut engine, transfer(3, None, true), &big[..60_000]);
    }
    let out = output(&mut engine);
    let detach = out.iter().find_map(|(_, p, _)| match p {
        Some(Performative::Detach(d)) => Some(d.clone()),
        _ => None,
    });
    let d: Detach = detach.expect("oversized delivery detaches the link");
    assert_eq!(
        condition_str(d.error.as_ref().unwrap()),
        "amqp:link:message-size-exceeded"
    );
}

#[test]
fn undecodable_frame_closes_with_decode_error() {
    let mut engine = opened(65536, 65536);
    let bad = servicebus_emulator::amqp::codec::Frame {
        frame_type: TYPE_AMQP,
        channel: 1,
        body: Bytes::from_static(&[0x00, 0x53, 0x12, 0xc0, 0x03, 0x01, 0xff]),
    };
    let err = engine.on_frame(bad, Instant::now()).unwrap_err();
    assert_eq!(err.condition, "amqp:decode-error");
    let out = output(&mut engine);
    let Some(Performative::Close(Close { error: Some(e) })) = &out[0].1 else {
        panic!("{out:?}")
    };
    assert_eq!(condition_str(e), "amqp:decode-error");
    assert!(engine.is_closed());
}

#[test]
fn first_frame_must_be_open() {
    let mut engine = Engine::new(EngineConfig::default(), Instant::now());
    let err = engine
        .on_frame(frame(0, begin(10), &[]), Instant::now())
        .unwrap_err();
    assert_eq!(err.condition, "amqp:illegal-state");
    let out = output(&mut engine);
    assert!(
        matches!(out[0].1, Some(Performative::Open(_))),
        "open goes out before the close"
    );
    assert!(matches!(out[1].1, Some(Performative::Close(_))));
}

#[tokio::test(start_paused = true)]
async fn heartbeats_and_idle_timeout() {
    let start = Instant::now();
    let mut engine = Engine::new(
        EngineConfig {
            idle_timeout: Duration::from_secs(10),
            ..EngineConfig::default()
        },
        start,
    );
    engine
        .on_frame(frame(0, open(65536, Some(4000)), &[]), start)
        .unwrap();
    let _ = output(&mut engine);
    engine.mark_sent(start);
    // The peer wants traffic every 4 s: we beat at half that.
    assert_eq!(engine.next_deadline(), Some(start + Duration::from_secs(2)));
    tokio::time::advance(Duration::from_secs(2)).await;
    engine.on_timer(Instant::now());
    let out = output(&mut engine);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.is_none(), "an empty frame");
    engine.mark_sent(Instant::now());
    // Nothing received for twice our advertised 10 s: forced close.
    tokio::time::advance(Duration::from_secs(17)).await;
    engine.on_timer(Instant::now());
    assert!(!engine.is_closed());
    tokio::time::advance(Duration::from_secs(1)).await;
    engine.on_timer(Instant::now());
    assert!(engine.is_closed());
    let out = output(&mut engine);
    let Some(Performative::Close(Close { error: Some(e) })) = &out.last().unwrap().1 else {
        panic!("{out:?}")
    };
    assert_eq!(condition_str(e), "amqp:connection:forced");
}

// ---------------------------------------------------------------------------------------------------
// Raw bytes over a real connection task: `tokio::io::duplex` for one connection, loopback TCP where the
// point is that the process keeps serving others.

mod wire {
    use super::*;
    use fe2o3_amqp_types::messaging::Target;
    use fe2o3_amqp_types::primitives::Symbol;
    use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};
    use servicebus_emulator::amqp::codec::{AMQP_HEADER, SASL_HEADER, TYPE_SASL, write_frame};
    use servicebus_emulator::auth::SasValidator;
    use servicebus_emulator::broker::Broker;
    use servicebus_emulator::config::Config;
    use servicebus_emulator::server::{Shared, serve_connection};
    use std::sync::Arc;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// The client side of a raw connection: writes bytes, reads headers and frames.
    struct Raw<S> {
        io: S,
        buf: BytesMut,
        codec: FrameCodec,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
        fn new(io: S) -> Self {
            let mut codec = FrameCodec::new();
            codec.set_max_frame_size(u32::MAX);
            Raw {
                io,
                buf: BytesMut::new(),
                codec,
            }
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.unwrap();
        }

        async fn item(&mut self, phase: Phase) -> Option<Item> {
            self.codec.set_phase(phase);
            loop {
                if let Some(item) = self.codec.decode(&mut self.buf).unwrap() {
                    return Some(item);
                }
                let read =
                    tokio::time::timeout(Duration::from_secs(10), self.io.read_buf(&mut self.buf))
                        .await
                        .expect("the server answers within 10 s");
                if read.unwrap_or(0) == 0 {
                    return None;
                }
            }
        }

        async fn header(&mut self) -> [u8; 8] {
            match self.item(Phase::Header).await {
                Some(Item::Header(h)) => h,
                other => panic!("expected a header, got {other:?}"),
            }
        }

        async fn body(&mut self) -> servicebus_emulator::amqp::codec::Frame {
            match self.item(Phase::Frames).await {
                Some(Item::Frame(f)) => f,
                other => panic!("expected a frame, got {other:?}"),
            }
        }

        async fn performative(&mut self) -> Performative {
            let f = self.body().await;
            serde_amqp::from_slice(&f.body).unwrap()
        }

        /// True when the server closed the socket (after draining what it sent).
        async fn eof(&mut self) -> bool {
            let mut scratch = [0u8; 1024];
            loop {
                match tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut scratch))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => continue,
                    Err(_) => return false,
                }
            }
        }
    }

    fn bytes_of(channel: u16, p: Performative) -> Vec<u8> {
        bytes_with_payload(channel, p, &[])
    }

    fn bytes_with_payload(channel: u16, p: Performative, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        write_performative(&mut b, TYPE_AMQP, channel, &p, payload).unwrap();
        b.to_vec()
    }

    /// The emulator's default SAS key as a SASL PLAIN response.
    const PLAIN_ROOT_KEY: &[u8] = b"\0RootManageSharedAccessKey\0SAS_KEY_VALUE";

    /// What a client pipelines before its first session: SASL header and init, AMQP header, open.
    fn connection_burst(mechanism: &str, response: Option<&[u8]>) -> Vec<u8> {
        let mut burst = SASL_HEADER.to_vec();
        burst.extend(sasl_init(mechanism, response));
        burst.extend(AMQP_HEADER);
        burst.extend(bytes_of(0, open(65536, None)));
        burst
    }

    /// `connection_burst` plus a begin on channel 1.
    fn session_burst(mechanism: &str, response: Option<&[u8]>) -> Vec<u8> {
        let mut burst = connection_burst(mechanism, response);
        burst.extend(bytes_of(1, begin(65536)));
        burst
    }

    fn sasl_init(mechanism: &str, response: Option<&[u8]>) -> Vec<u8> {
        let mut b = BytesMut::new();
        let init = SaslInit {
            mechanism: Symbol::from(mechanism),
            initial_response: response.map(|r| Binary::from(r.to_vec())),
            hostname: Some("localhost".into()),
        };
        write_performative(&mut b, TYPE_SASL, 0, &init, &[]).unwrap();
        b.to_vec()
    }

    fn shared() -> Arc<Shared> {
        Shared::new(
            Broker::new(&Config::lab_default()),
            SasValidator::emulator_default(),
            EngineConfig::default(),
        )
    }

    /// A connection task for the lab's queue on one end of a duplex pipe; the other end is returned.
    fn connect() -> Raw<tokio::io::DuplexStream> {
        connect_to(shared())
    }

    /// A connection task serving `shared` on one end of a duplex pipe; the other end is returned.
    fn connect_to(shared: Arc<Shared>) -> Raw<tokio::io::DuplexStream> {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _keep = _stop_tx;
            let _ = serve_connection(server, shared, stop).await;
        });
        Raw::new(client)
    }

    async fn expect_sasl_ok<S: AsyncRead + AsyncWrite + Unpin>(raw: &mut Raw<S>) {
        assert_eq!(raw.header().await, SASL_HEADER);
        let mechanisms = raw.body().await;
        assert_eq!(mechanisms.frame_type, TYPE_SASL);
        let m: SaslMechanisms = serde_amqp::from_slice(&mechanisms.body).unwrap();
        let names: Vec<_> = m
            .sasl_server_mechanisms
            .0
            .iter()
            .map(|s| s.0.as_str())
            .collect();
        assert_eq!(names, ["MSSBCBS", "ANONYMOUS", "PLAIN"]);
        let outcome: SaslOutcome = serde_amqp::from_slice(&raw.body().await.body).unwrap();
        assert!(matches!(outcome.code, SaslCode::Ok));
        assert_eq!(raw.header().await, AMQP_HEADER);
    }

    fn condition_of(p: &Performative) -> Option<String> {
        let e = match p {
            Performative::Close(c) => c.error.as_ref(),
            Performative::Detach(d) => d.error.as_ref(),
            _ => None,
        }?;
        Some(condition_str(e))
    }

    #[tokio::test]
    async fn sasl_then_amqp_with_everything_pipelined_in_one_write() {
        let mut raw = connect();
        let mut burst = SASL_HEADER.to_vec();
        burst.extend(sasl_init("MSSBCBS", Some(b"")));
        burst.extend(AMQP_HEADER);
        burst.extend(bytes_of(0, open(1_048_576, None)));
        burst.extend(bytes_of(1, begin(65536)));
        burst.extend(bytes_of(1, attach("cbs", 0, Role::Receiver, "$cbs")));
        raw.send(&burst).await;
        expect_sasl_ok(&mut raw).await;
        assert!(matches!(raw.performative().await, Performative::Open(_)));
        assert!(
            matches!(raw.performative().await, Performative::Begin(b) if b.remote_channel == Some(1))
        );
        let Performative::Attach(a) = raw.performative().await else {
            panic!("attach reply")
        };
        assert_eq!(a.name, "cbs");
        assert_eq!(a.source.unwrap().address.as_deref(), Some("$cbs"));
    }

    #[tokio::test]
    async fn unsupported_protocol_header_is_answered_with_ours_and_closed() {
        let mut raw = connect();
        raw.send(b"GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(raw.header().await, SASL_HEADER);
        assert!(raw.eof().await);
    }

    #[tokio::test]
    async fn plain_with_a_wrong_key_fails_sasl_and_the_right_key_skips_cbs() {
        let mut raw = connect();
        let mut burst = SASL_HEADER.to_vec();
        burst.extend(sasl_init(
            "PLAIN",
            Some(b"\0RootManageSharedAccessKey\0wrong"),
        ));
        raw.send(&burst).await;
        assert_eq!(raw.header().await, SASL_HEADER);
        let _mechanisms = raw.body().await;
        let outcome: SaslOutcome = serde_amqp::from_slice(&raw.body().await.body).unwrap();
        assert!(matches!(outcome.code, SaslCode::Auth));
        assert!(raw.eof().await);

        let mut raw = connect();
        let mut burst = session_burst("PLAIN", Some(PLAIN_ROOT_KEY));
        burst.extend(bytes_of(
            1,
            attach(
                "s",
                0,
                Role::Sender,
                "amqps://localhost:5672/queue-messages",
            ),
        ));
        raw.send(&burst).await;
        expect_sasl_ok(&mut raw).await;
        let _open = raw.performative().await;
        let _begin = raw.performative().await;
        let Performative::Attach(a) = raw.performative().await else {
            panic!()
        };
        let Some(target) = a.target.as_deref() else {
            panic!("accepted attach has a target")
        };
        let TargetArchetype::Target(Target { address, .. }) = target else {
            panic!()
        };
        assert_eq!(
            address.as_deref(),
            Some("amqps://localhost:5672/queue-messages"),
            "echoed verbatim"
        );
        assert!(
            matches!(raw.performative().await, Performative::Flow(f) if f.link_credit == Some(1000))
        );
    }

    #[tokio::test]
    async fn links_without_a_token_or_to_unknown_entities_are_refused() {
        let mut raw = connect();
        let mut burst = session_burst("ANONYMOUS", None);
        burst.extend(bytes_of(
            1,
            attach("r", 0, Role::Receiver, "queue-messages"),
        ));
        burst.extend(bytes_of(1, attach("s", 1, Role::Sender, "no-such-queue")));
        raw.send(&burst).await;
        expect_sasl_ok(&mut raw).await;
        let _open = raw.performative().await;
        let _begin = raw.performative().await;
        expect_refused(&mut raw, "amqp:unauthorized-access").await;
        expect_refused(&mut raw, "amqp:not-found").await;
    }

    /// The next frames are a refused attach (null termini) and its detach with `condition`.
    async fn expect_refused<S: AsyncRead + AsyncWrite + Unpin>(raw: &mut Raw<S>, condition: &str) {
        let Performative::Attach(a) = raw.performative().await else {
            panic!()
        };
        assert!(a.source.is_none() && a.target.is_none());
        assert_eq!(
            condition_of(&raw.performative().await).as_deref(),
            Some(condition)
        );
    }

    async fn start_emulator() -> servicebus_emulator::Emulator {
        servicebus_emulator::Emulator::builder()
            .loopback()
            .start()
            .await
            .unwrap()
    }

    async fn connect_tcp(addr: std::net::SocketAddr) -> Raw<tokio::net::TcpStream> {
        Raw::new(tokio::net::TcpStream::connect(addr).await.unwrap())
    }

    async fn open_plain<S: AsyncRead + AsyncWrite + Unpin>(raw: &mut Raw<S>) {
        raw.send(&connection_burst("ANONYMOUS", None)).await;
        expect_sasl_ok(raw).await;
        assert!(matches!(raw.performative().await, Performative::Open(_)));
    }

    #[tokio::test]
    async fn malformed_frames_close_the_connection_and_the_server_keeps_serving() {
        let emu = start_emulator().await;
        // An undecodable performative: decode-error.
        let mut bad = connect_tcp(emu.amqp_addr()).await;
        open_plain(&mut bad).await;
        let mut garbage = BytesMut::new();
        write_frame(
            &mut garbage,
            TYPE_AMQP,
            0,
            &[0x00, 0x53, 0x11, 0xc0, 0x02, 0x01, 0xff],
            &[],
        );
        bad.send(&garbage).await;
        let close = bad.performative().await;
        assert_eq!(
            condition_of(&close).as_deref(),
            Some("amqp:decode-error"),
            "{close:?}"
        );
        assert!(bad.eof().await);

        // A frame size below 8: framing-error.
        let mut tiny = connect_tcp(emu.amqp_addr()).await;
        open_plain(&mut tiny).await;
        tiny.send(&[0, 0, 0, 4, 2, 0, 0, 0]).await;
        let close = tiny.performative().await;
        assert_eq!(
            condition_of(&close).as_deref(),
            Some("amqp:connection:framing-error")
        );
        assert!(tiny.eof().await);

        // Others are still served.
        let mut good = connect_tcp(emu.amqp_addr()).await;
        open_plain(&mut good).await;
        good.send(&bytes_of(0, Performative::Close(Close { error: None })))
            .await;
        assert!(matches!(
            good.performative().await,
            Performative::Close(Close { error: None })
        ));
        emu.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_closes_open_connections_with_forced() {
        let emu = start_emulator().await;
        let addr = emu.amqp_addr();
        let mut raw = connect_tcp(addr).await;
        open_plain(&mut raw).await;
        emu.shutdown().await;
        let close = raw.performative().await;
        assert_eq!(
            condition_of(&close).as_deref(),
            Some("amqp:connection:forced")
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed"
        );
    }

    fn shared_with(config: Config) -> Arc<Shared> {
        Shared::new(
            Broker::new(&config),
            SasValidator::emulator_default(),
            EngineConfig::default(),
        )
    }

    fn message_bytes(text: &str) -> Vec<u8> {
        use fe2o3_amqp_types::messaging::Message;
        use fe2o3_amqp_types::messaging::message::__private::Serializable;
        let m = Message::builder()
            .data(Binary::from(text.as_bytes().to_vec()))
            .build();
        serde_amqp::to_vec(&Serializable(&m)).unwrap()
    }

    fn disposition(first: u32, state: DeliveryState) -> Vec<u8> {
        bytes_of(
            1,
            Performative::Disposition(Disposition {
                role: Role::Receiver,
                first,
                last: None,
                settled: false,
                state: Some(state),
                batchable: false,
            }),
        )
    }

    /// Read frames until a disposition from the broker as sender arrives; returns it.
    async fn echo<S: AsyncRead + AsyncWrite + Unpin>(raw: &mut Raw<S>) -> Disposition {
        loop {
            if let Performative::Disposition(d) = raw.performative().await
                && matches!(d.role, Role::Sender)
            {
                return d;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn second_mode_echoes_the_applied_outcome_and_lock_lost() {
        use fe2o3_amqp_types::definitions::Error;
        use fe2o3_amqp_types::messaging::{Modified, Rejected};
        use fe2o3_amqp_types::primitives::OrderedMap;

        let config = Config::from_json_str(
            r#"{"UserConfig":{"Namespaces":[{"Name":"ns","Queues":[{"Name":"q","Properties":{"LockDuration":"PT5S","MaxDeliveryCount":10}}]}]}}"#,
        )
        .unwrap();
        let shared = shared_with(config);
        let broker = shared.broker.clone();
        let mut raw = connect_to(shared);

        let mut burst = session_burst("PLAIN", Some(PLAIN_ROOT_KEY));
        burst.extend(bytes_of(1, attach("s", 0, Role::Sender, "q")));
        for (id, text) in ["dead", "abandon", "late"].iter().enumerate() {
            burst.extend(bytes_with_payload(
                1,
                transfer(0, Some(id as u32), false),
                &message_bytes(text),
            ));
        }
        burst.extend(bytes_of(1, attach("r", 1, Role::Receiver, "q")));
        burst.extend(bytes_of(1, link_flow(1, 0, 3, false)));
        raw.send(&burst).await;
        expect_sasl_ok(&mut raw).await;

        // Collect the three deliveries (tags are lock tokens).
        let mut deliveries = Vec::new();
        while deliveries.len() < 3 {
            if let Performative::Transfer(t) = raw.performative().await {
                assert_eq!(t.delivery_tag.as_ref().unwrap().len(), 16);
                deliveries.push(t.delivery_id.unwrap());
            }
        }

        // Dead-letter: echoed as `rejected` WITHOUT an error.
        let mut info = OrderedMap::new();
        info.insert(
            Symbol::from("DeadLetterReason"),
            fe2o3_amqp_types::primitives::Value::String("Bad".into()),
        );
        let dead_letter = Rejected {
            error: Some(Error::new(
                fe2o3_amqp_types::definitions::ErrorCondition::Custom(Symbol::from(
                    "com.microsoft:dead-letter",
                )),
                Some("bad input".to_string()),
                Some(info),
            )),
        };
        raw.send(&disposition(
            deliveries[0],
            DeliveryState::Rejected(dead_letter),
        ))
        .await;
        let d = echo(&mut raw).await;
        assert!(d.settled && d.first == deliveries[0]);
        assert!(
            matches!(
                &d.state,
                Some(DeliveryState::Rejected(Rejected { error: None }))
            ),
            "{d:?}"
        );
        assert_eq!(broker.counts("q").unwrap().dead_letter_message_count, 1);

        // Abandon: echoed as `modified`.
        let abandon = Modified {
            delivery_failed: Some(true),
            undeliverable_here: None,
            message_annotations: None,
        };
        raw.send(&disposition(
            deliveries[1],
            DeliveryState::Modified(abandon),
        ))
        .await;
        let d = echo(&mut raw).await;
        assert_eq!(d.first, deliveries[1]);
        assert!(
            d.settled && matches!(d.state, Some(DeliveryState::Modified(_))),
            "{d:?}"
        );

        // The lock on the third runs out: a late complete is echoed as lock lost.
        tokio::time::advance(Duration::from_secs(6)).await;
        tokio::task::yield_now().await;
        raw.send(&disposition(
            deliveries[2],
            DeliveryState::Accepted(Accepted {}),
        ))
        .await;
        let d = echo(&mut raw).await;
        assert_eq!(d.first, deliveries[2]);
        let Some(DeliveryState::Rejected(Rejected { error: Some(e) })) = &d.state else {
            panic!("{d:?}")
        };
        assert_eq!(condition_str(e), "com.microsoft:message-lock-lost");
        assert!(e.description.is_some() && e.info.is_some());
    }
    /// A data section holding `bytes` (how a batch carries each message).
    fn data_section(bytes: &[u8]) -> Vec<u8> {
        let mut section = vec![0x00, 0x53, 0x75, 0xb0];
        section.extend(u32::try_from(bytes.len()).unwrap().to_be_bytes());
        section.extend(bytes);
        section
    }

    #[tokio::test]
    async fn a_batch_with_an_oversized_message_is_refused_whole_and_nothing_is_stored() {
        use servicebus_emulator::broker::MAX_MESSAGE_SIZE;
        // The link takes bigger deliveries than the broker stores, so the batch reaches the broker.
        let engine = EngineConfig {
            max_message_size: 1 << 20,
            ..EngineConfig::default()
        };
        let shared = Shared::new(
            Broker::new(&Config::with_queues(["q"])),
            SasValidator::emulator_default(),
            engine,
        );
        let broker = shared.broker.clone();
        let mut raw = connect_to(shared);

        let mut batch = data_section(&message_bytes("fits"));
        batch.extend(data_section(&message_bytes(&"x".repeat(MAX_MESSAGE_SIZE))));
        let mut burst = session_burst("PLAIN", Some(PLAIN_ROOT_KEY));
        burst.extend(bytes_of(1, attach("s", 0, Role::Sender, "q")));
        let chunks: Vec<&[u8]> = batch.chunks(60_000).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let more = i + 1 < chunks.len();
            let Performative::Transfer(mut t) = transfer(0, (i == 0).then_some(0), more) else {
                unreachable!()
            };
            if i == 0 {
                t.message_format = Some(0x8001_3700);
            }
            burst.extend(bytes_with_payload(1, Performative::Transfer(t), chunk));
        }
        raw.send(&burst).await;
        expect_sasl_ok(&mut raw).await;

        // The broker as receiver settles the client's delivery with the outcome.
        let d = loop {
            if let Performative::Disposition(d) = raw.performative().await {
                break d;
            }
        };
        assert!(d.settled && d.first == 0, "{d:?}");
        let Some(DeliveryState::Rejected(fe2o3_amqp_types::messaging::Rejected { error: Some(e) })) =
            &d.state
        else {
            panic!("{d:?}")
        };
        assert_eq!(condition_str(e), "amqp:link:message-size-exceeded");
        assert_eq!(
            broker.counts("q").unwrap().active_message_count,
            0,
            "the message that fits was not stored either"
        );
    }

    /// A `$cbs` put-token request for `audience`, valid until `expires`, as a transfer payload.
    fn put_token_bytes(audience: &str, expires: std::time::SystemTime) -> Vec<u8> {
        use fe2o3_amqp_types::messaging::message::__private::Serializable;
        use fe2o3_amqp_types::messaging::{ApplicationProperties, Message, MessageId, Properties};
        use fe2o3_amqp_types::primitives::{SimpleValue, Value};
        let token = servicebus_emulator::auth::make_token(
            audience,
            "RootManageSharedAccessKey",
            "SAS_KEY_VALUE",
            expires,
        );
        let m = Message::builder()
            .properties(Properties {
                message_id: Some(MessageId::Ulong(1)),
                ..Default::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", SimpleValue::String("put-token".into()))
                    .insert(
                        "type",
                        SimpleValue::String("servicebus.windows.net:sastoken".into()),
                    )
                    .insert("name", SimpleValue::String(audience.into()))
                    .build(),
            )
            .value(Value::String(token))
            .build();
        serde_amqp::to_vec(&Serializable(&m)).unwrap()
    }

    /// Read until the broker (as receiver) settles the client's delivery `id`; returns its state.
    async fn outcome_of<S: AsyncRead + AsyncWrite + Unpin>(
        raw: &mut Raw<S>,
        id: u32,
    ) -> Option<DeliveryState> {
        loop {
            match raw.performative().await {
                Performative::Disposition(d)
                    if matches!(d.role, Role::Receiver)
                        && d.first <= id
                        && id <= d.last.unwrap_or(d.first) =>
                {
                    return d.state;
                }
                Performative::Detach(d) => panic!("unexpected detach: {d:?}"),
                _ => {}
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_detaches_its_links_and_a_refreshed_one_keeps_them() {
        let shared = shared_with(Config::with_queues(["a", "b"]));
        let broker = shared.broker.clone();
        let mut raw = connect_to(shared);
        let minute = broker.now() + Duration::from_secs(60);

        let mut burst = session_burst("MSSBCBS", Some(b""));
        burst.extend(bytes_of(1, attach("cbs", 0, Role::Sender, "$cbs")));
        for (id, audience) in ["sb://localhost/a", "sb://localhost/b"].iter().enumerate() {
            burst.extend(bytes_with_payload(
                1,
                transfer(0, Some(id as u32), false),
                &put_token_bytes(audience, minute),
            ));
        }
        burst.extend(bytes_of(1, attach("from-a", 1, Role::Receiver, "a")));
        burst.extend(bytes_of(1, attach("to-b", 2, Role::Sender, "b")));
        raw.send(&burst).await;
        expect_sasl_ok(&mut raw).await;
        // Learn the broker's handle for `from-a`; every attach is accepted (termini echoed).
        let mut from_a = None;
        let mut accepted_links = 0;
        while accepted_links < 3 {
            if let Performative::Attach(a) = raw.performative().await {
                assert!(a.source.is_some() && a.target.is_some(), "refused: {a:?}");
                accepted_links += 1;
                if a.name == "from-a" {
                    from_a = Some(a.handle);
                }
            }
        }
        let from_a = from_a.unwrap();

        // Halfway through, the client refreshes only `b`'s token.
        tokio::time::advance(Duration::from_secs(30)).await;
        raw.send(&bytes_with_payload(
            1,
            transfer(0, Some(2), false),
            &put_token_bytes("sb://localhost/b", broker.now() + Duration::from_secs(3600)),
        ))
        .await;
        assert!(matches!(
            outcome_of(&mut raw, 2).await,
            Some(DeliveryState::Accepted(_))
        ));

        // Past the first tokens' expiry: `a`'s link is dropped with unauthorized-access.
        tokio::time::advance(Duration::from_secs(31)).await;
        let detach = loop {
            if let Performative::Detach(d) = raw.performative().await {
                break d;
            }
        };
        assert_eq!(detach.handle, from_a, "only the link to `a` is dropped");
        assert!(detach.closed);
        let error = detach.error.as_ref().unwrap();
        assert_eq!(condition_str(error), "amqp:unauthorized-access");
        let description = error.description.as_deref().unwrap();
        assert!(
            description.contains("'a'") && description.contains("expired"),
            "{description}"
        );
        assert!(
            error.info.is_some(),
            "pyamqp indexes condition, description and info"
        );

        // `b`'s link still works on the refreshed token.
        raw.send(&bytes_with_payload(
            1,
            transfer(2, Some(3), false),
            &message_bytes("still allowed"),
        ))
        .await;
        assert!(matches!(
            outcome_of(&mut raw, 3).await,
            Some(DeliveryState::Accepted(_))
        ));
        assert_eq!(broker.counts("b").unwrap().active_message_count, 1);
    }

    /// Open a connection with `mechanism`, optionally putting a token for the lab queue right away;
    /// returns it once the broker's Open has arrived.
    async fn opened_with(
        shared: Arc<Shared>,
        mechanism: &str,
        response: Option<&[u8]>,
        put_token: bool,
    ) -> Raw<tokio::io::DuplexStream> {
        let broker = shared.broker.clone();
        let mut raw = connect_to(shared);
        let mut burst = session_burst(mechanism, response);
        if put_token {
            burst.extend(bytes_of(1, attach("cbs", 0, Role::Sender, "$cbs")));
            burst.extend(bytes_with_payload(
                1,
                transfer(0, Some(0), false),
                &put_token_bytes(
                    "sb://localhost/queue-messages",
                    broker.now() + Duration::from_secs(3600),
                ),
            ));
        }
        raw.send(&burst).await;
        expect_sasl_ok(&mut raw).await;
        assert!(matches!(raw.performative().await, Performative::Open(_)));
        if put_token {
            assert!(matches!(
                outcome_of(&mut raw, 0).await,
                Some(DeliveryState::Accepted(_))
            ));
        }
        raw
    }

    /// Close from the client; the next frame must be the broker's reply without an error, i.e. the
    /// broker had not closed the connection itself.
    async fn still_open<S: AsyncRead + AsyncWrite + Unpin>(raw: &mut Raw<S>) {
        raw.send(&bytes_of(0, Performative::Close(Close { error: None })))
            .await;
        loop {
            match raw.performative().await {
                Performative::Close(c) => {
                    assert!(c.error.is_none(), "the broker closed first: {c:?}");
                    return;
                }
                Performative::Begin(_) | Performative::Attach(_) | Performative::Flow(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_token_is_closed_after_20_s_unless_it_puts_one_or_uses_plain() {
        let shared = shared();
        let mut silent = opened_with(shared.clone(), "MSSBCBS", Some(b""), false).await;
        let mut with_token = opened_with(shared.clone(), "ANONYMOUS", None, true).await;
        let mut plain = opened_with(shared.clone(), "PLAIN", Some(PLAIN_ROOT_KEY), false).await;

        tokio::time::advance(Duration::from_secs(21)).await;
        let close = loop {
            if let Performative::Close(c) = silent.performative().await {
                break c;
            }
        };
        let error = close.error.as_ref().unwrap();
        assert_eq!(condition_str(error), "amqp:connection:forced");
        let description = error.description.as_deref().unwrap();
        assert!(
            description.contains("within 20 s") && description.contains("$cbs"),
            "{description}"
        );
        assert!(error.info.is_some());
        assert!(silent.eof().await);

        still_open(&mut with_token).await;
        still_open(&mut plain).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_token_deadline_is_configurable_and_can_be_switched_off() {
        let config = |timeout| {
            Shared::new(
                Broker::new(&Config::lab_default()),
                SasValidator::emulator_default(),
                EngineConfig {
                    cbs_token_timeout: timeout,
                    ..EngineConfig::default()
                },
            )
        };
        let mut quick = opened_with(
            config(Some(Duration::from_secs(5))),
            "ANONYMOUS",
            None,
            false,
        )
        .await;
        let mut never = opened_with(config(None), "ANONYMOUS", None, false).await;

        tokio::time::advance(Duration::from_secs(6)).await;
        let close = loop {
            if let Performative::Close(c) = quick.performative().await {
                break c;
            }
        };
        assert!(
            close
                .error
                .unwrap()
                .description
                .unwrap()
                .contains("within 5 s"),
            "the configured deadline applies"
        );
        // Well past the default 20 s, within the idle timeout.
        tokio::time::advance(Duration::from_secs(60)).await;
        still_open(&mut never).await;
    }

    #[tokio::test]
    async fn a_presettled_send_that_cannot_be_stored_detaches_the_link() {
        let mut raw = connect();
        let mut burst = session_burst("PLAIN", Some(PLAIN_ROOT_KEY));
        let Performative::Attach(mut sender) = attach("s", 0, Role::Sender, "queue-messages")
        else {
            unreachable!()
        };
        sender.snd_settle_mode = SenderSettleMode::Settled;
        burst.extend(bytes_of(1, Performative::Attach(sender)));
        let Performative::Transfer(mut t) = transfer(0, Some(0), false) else {
            unreachable!()
        };
        t.settled = Some(true);
        // Not an AMQP message: a lone byte that is no section.
        burst.extend(bytes_with_payload(1, Performative::Transfer(t), &[0xff]));
        raw.send(&burst).await;
        expect_sasl_ok(&mut raw).await;
        loop {
            match raw.performative().await {
                Performative::Detach(d) => {
                    assert!(d.closed);
                    assert_eq!(
                        condition_of(&Performative::Detach(d)).as_deref(),
                        Some("amqp:decode-error")
                    );
                    break;
                }
                Performative::Disposition(d) => {
                    panic!("a settled transfer gets no disposition: {d:?}")
                }
                _ => {}
            }
        }
    }
}

#[test]
fn late_frames_for_an_ended_session_are_ignored_but_attach_is_an_error() {
    let mut engine = opened(65536, 65536);
    let _link = attached_receiver(&mut engine, 0);
    feed(
        &mut engine,
        Performative::End(fe2o3_amqp_types::performatives::End { error: None }),
        &[],
    );
    let out = output(&mut engine);
    assert!(matches!(out[0].1, Some(Performative::End(_))));
    assert!(matches!(events(&mut engine)[..], [Event::Detached { .. }]));
    // pyamqp sends the link's detach after its End when closing.
    let late = Detach {
        handle: 0.into(),
        closed: true,
        error: None,
    };
    feed(&mut engine, Performative::Detach(late), &[]);
    assert!(!engine.is_closed());
    let err = engine
        .on_frame(
            frame(1, attach("x", 1, Role::Sender, "q"), &[]),
            Instant::now(),
        )
        .unwrap_err();
    assert_eq!(err.condition, "amqp:connection:framing-error");
}

#[test]
fn a_link_past_max_links_per_connection_is_refused_and_the_connection_stays() {
    let now = Instant::now();
    let config = EngineConfig {
        max_links_per_connection: 2,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, now);
    engine
        .on_frame(frame(0, open(65_536, None), &[]), now)
        .unwrap();
    engine.on_frame(frame(1, begin(65536), &[]), now).unwrap();
    for (handle, name) in [(0, "a"), (1, "b"), (2, "c")] {
        engine
            .on_frame(
                frame(1, attach(name, handle, Role::Receiver, "q"), &[]),
                now,
            )
            .unwrap();
    }
    // Two links reach the broker; the third never does.
    assert_eq!(events(&mut engine).len(), 2);
    let out = output(&mut engine);
    let refused = out.iter().find_map(|(_, p, _)| match p {
        Some(Performative::Detach(d)) => d.error.as_ref().map(condition_str),
        _ => None,
    });
    assert_eq!(refused.as_deref(), Some("amqp:resource-limit-exceeded"));
    assert!(
        !engine.is_closed(),
        "one link too many must not cost the connection"
    );
    // Detaching one makes room again.
    feed(
        &mut engine,
        Performative::Detach(Detach {
            handle: 0.into(),
            closed: true,
            error: None,
        }),
        &[],
    );
    let _ = events(&mut engine);
    feed(&mut engine, attach("d", 3, Role::Receiver, "q"), &[]);
    assert!(
        matches!(events(&mut engine).as_slice(), [Event::Attached { .. }]),
        "after a detach, a new link is accepted"
    );
}
