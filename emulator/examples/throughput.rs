//! Measures the emulator in-process: start-up time to serving, and messages per second for
//! send, then receive + complete, with the fe2o3-amqp client over loopback.
//!
//! Run with a release build (debug builds are about ten times slower):
//! `cargo run --release -p servicebus-emulator --example throughput -- 20000`

use std::time::Instant;

use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use servicebus_emulator::Emulator;

const QUEUE: &str = "queue-messages";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);

    let started = Instant::now();
    let emu = Emulator::builder()
        .listen("127.0.0.1:0".parse()?)
        .health_listen("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let startup = started.elapsed();

    let mut connection = Connection::builder()
        .container_id("throughput")
        .sasl_profile(SaslProfile::Plain {
            username: "RootManageSharedAccessKey".into(),
            password: "SAS_KEY_VALUE".into(),
        })
        .open(format!("amqp://127.0.0.1:{}", emu.amqp_addr().port()).as_str())
        .await?;
    let mut session = Session::begin(&mut connection).await?;
    let mut sender = Sender::attach(&mut session, "bench-sender", QUEUE).await?;
    let body = Binary::from(vec![b'x'; 256]);

    let t = Instant::now();
    for _ in 0..count {
        sender
            .send(Message::builder().data(body.clone()).build())
            .await?;
    }
    let send = t.elapsed();

    let mut receiver = Receiver::builder()
        .name("bench-receiver")
        .source(QUEUE)
        .sender_settle_mode(SenderSettleMode::Unsettled)
        .receiver_settle_mode(ReceiverSettleMode::First)
        .attach(&mut session)
        .await?;
    let t = Instant::now();
    for _ in 0..count {
        let delivery: Delivery<Body<Value>> = receiver.recv().await?;
        receiver.accept(&delivery).await?;
    }
    receiver.close().await?;
    let receive = t.elapsed();
    let left = emu
        .broker()
        .counts(QUEUE)
        .map(|c| c.active_message_count)
        .unwrap_or(0);

    println!(
        "start-up to serving: {:.2} ms",
        startup.as_secs_f64() * 1000.0
    );
    println!(
        "send (one at a time, awaiting each accepted): {count} in {:.2} s = {:.0} msg/s",
        send.as_secs_f64(),
        count as f64 / send.as_secs_f64()
    );
    println!(
        "receive + complete (peek-lock): {count} in {:.2} s = {:.0} msg/s",
        receive.as_secs_f64(),
        count as f64 / receive.as_secs_f64()
    );
    println!(
        "send + receive + complete: {:.0} msg/s; left in queue: {left}",
        count as f64 / (send + receive).as_secs_f64()
    );
    sender.close().await?;
    connection.close().await?;
    emu.shutdown().await;
    Ok(())
}
