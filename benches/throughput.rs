//! Throughput and start-up benchmarks of the emulator and the worker, in release mode.
//!
//! Run through `cargo xtask bench` (which also times the emulator binary's start-up and records the
//! machine). Plain numbers, printed as Markdown table rows; nothing here asserts a duration.

use std::process::Stdio;
use std::time::{Duration, Instant};

use aca_job_lab::servicebus::{ConnectionConfig, ServiceBusClient, ServiceBusMessage};
use servicebus_emulator::Emulator;

const QUEUE: &str = "queue-messages";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aca_job_lab::servicebus::install_crypto_provider();
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);

    println!("| benchmark | result |");
    println!("|---|---|");
    emulator_start(50).await?;
    client_round_trip(messages).await?;
    topic_fan_out(messages / 2, 10).await?;
    sql_evaluations(1_000_000);
    session_drain(100, 100, 10).await?;
    if let Some(job) = std::env::var_os("ACA_LAB_JOB_BIN") {
        worker_drain(std::path::Path::new(&job), 1000).await?;
    }
    Ok(())
}

async fn start() -> anyhow::Result<Emulator> {
    Ok(Emulator::builder().loopback().start().await?)
}

async fn client(emu: &Emulator) -> anyhow::Result<ServiceBusClient> {
    let (config, _) = ConnectionConfig::from_connection_string(&emu.connection_string())?;
    Ok(ServiceBusClient::connect(&config).await?)
}

/// In-process start-up: from `start()` to both listeners serving.
async fn emulator_start(runs: usize) -> anyhow::Result<()> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let began = Instant::now();
        let emu = start().await?;
        times.push(began.elapsed());
        emu.shutdown().await;
    }
    times.sort();
    println!(
        "| emulator start, in-process (`Emulator::start`, {runs} runs) | median {:.2} ms, max {:.2} ms |",
        ms(times[runs / 2]),
        ms(times[runs - 1])
    );
    Ok(())
}

/// Our client against our emulator: send N (64 in flight), then receive + complete N (credit 100).
async fn client_round_trip(n: usize) -> anyhow::Result<()> {
    let emu = start().await?;
    let mut client = client(&emu).await?;
    let mut sender = client.sender(QUEUE).await?;
    let body = br#"{"order": 42, "note": "benchmark payload"}"#.to_vec();
    let began = Instant::now();
    sender
        .send_all((0..n).map(|i| {
            ServiceBusMessage::new(body.clone())
                .with_message_id(format!("bench-{i}"))
                .with_content_type("application/json")
        }))
        .await?;
    let sent = began.elapsed();

    let mut receiver = client.receiver(QUEUE).await?;
    let began = Instant::now();
    let mut done = 0;
    while done < n {
        match receiver.receive(Duration::from_secs(5), 100).await? {
            Some(message) => {
                receiver.complete(&message).await?;
                done += 1;
            }
            None => anyhow::bail!("only {done} of {n} messages arrived"),
        }
    }
    let drained = began.elapsed();
    receiver.close().await?;
    sender.close().await?;
    client.close().await?;
    let left = emu.broker().counts(QUEUE).map(|c| c.active_message_count);
    emu.shutdown().await;
    anyhow::ensure!(
        left == Some(0),
        "queue not empty after the benchmark: {left:?}"
    );
    println!(
        "| send, our client → emulator ({n} × 42 B, 64 in flight) | {:.0} msg/s |",
        rate(n, sent)
    );
    println!(
        "| receive + complete, peek-lock ({n}, credit 100) | {:.0} msg/s |",
        rate(n, drained)
    );
    println!(
        "| send + receive + complete, end to end | {:.0} msg/s |",
        rate(n, sent + drained)
    );
    Ok(())
}

/// A topic with `subs` subscriptions (true filters): send N, then every subscription receives and
/// completes its N copies; deliveries/s counts copies (N × subs) over the whole run.
async fn topic_fan_out(n: usize, subs: usize) -> anyhow::Result<()> {
    use servicebus_emulator::config::{Config, SubscriptionConfig, TopicConfig};
    let mut topic = TopicConfig::new("fan-out");
    for i in 0..subs {
        topic = topic.subscription(SubscriptionConfig::new(format!("s{i}")));
    }
    let emu = Emulator::builder()
        .config(Config::lab_default().topic(topic))
        .loopback()
        .start()
        .await?;
    let mut client = client(&emu).await?;
    let mut sender = client.sender("fan-out").await?;
    let body = br#"{"order": 42, "note": "benchmark payload"}"#.to_vec();
    let began = Instant::now();
    sender
        .send_all((0..n).map(|_| ServiceBusMessage::new(body.clone())))
        .await?;
    for i in 0..subs {
        let mut receiver = client
            .receiver(&format!("fan-out/Subscriptions/s{i}"))
            .await?;
        for done in 0..n {
            match receiver.receive(Duration::from_secs(5), 100).await? {
                Some(message) => receiver.complete(&message).await?,
                None => anyhow::bail!("subscription s{i}: only {done} of {n} copies arrived"),
            }
        }
        receiver.close().await?;
    }
    let took = began.elapsed();
    sender.close().await?;
    client.close().await?;
    emu.shutdown().await;
    println!(
        "| topic with {subs} subscriptions (true filters): send {n}, each subscription receives + completes its copies | {:.0} deliveries/s |",
        rate(n * subs, took)
    );
    Ok(())
}

/// The SQL filter evaluator alone, one core: a 3-clause expression against a message view.
fn sql_evaluations(n: usize) {
    use servicebus_emulator::filter::{FilterValue, MessageView, SqlFilter, SysProperty};
    let text = "color = 'red' AND quantity > 5 AND sys.Label LIKE 'Ord%'";
    let Ok(filter) = SqlFilter::parse(text) else {
        unreachable!("the benchmark's expression parses")
    };
    let view = MessageView::new()
        .with_user("color", FilterValue::String("red".into()))
        .with_user("quantity", FilterValue::Long(10))
        .with_user("priority", FilterValue::String("high".into()))
        .with_sys(SysProperty::Label, FilterValue::String("Orders".into()));
    let began = Instant::now();
    let matched = (0..n)
        .filter(|_| std::hint::black_box(&filter).evaluate(std::hint::black_box(&view)) == Ok(true))
        .count();
    let took = began.elapsed();
    assert_eq!(matched, n, "the expression matches the view");
    println!(
        "| SQL filter evaluations, one core (`{text}`) | {:.0} evaluations/s |",
        rate(n, took)
    );
}

/// The real worker binary draining N messages (`--max-messages 0`), with its peak RSS when
/// `/usr/bin/time` is there to measure it.
async fn worker_drain(job: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let emu = start().await?;
    let mut client = client(&emu).await?;
    let mut sender = client.sender(QUEUE).await?;
    sender
        .send_all((0..n).map(|i| {
            ServiceBusMessage::new(format!(r#"{{"n": {i}}}"#)).with_content_type("application/json")
        }))
        .await?;
    sender.close().await?;
    client.close().await?;

    let time = std::path::Path::new("/usr/bin/time");
    let mut cmd = if time.exists() {
        let mut c = tokio::process::Command::new(time);
        c.args(["-f", "peak-rss-kib=%M"]).arg(job);
        c
    } else {
        tokio::process::Command::new(job)
    };
    cmd.args(["--max-messages", "0", "--max-wait", "1s"])
        .env("SERVICEBUS_CONNECTION_STRING", emu.connection_string())
        .env("SERVICEBUS_QUEUE_NAME", QUEUE)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let began = Instant::now();
    let out = cmd.output().await?;
    let took = began.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "the worker failed: {stderr}");
    let left = emu.broker().counts(QUEUE).map(|c| c.active_message_count);
    emu.shutdown().await;
    anyhow::ensure!(
        left == Some(0),
        "queue not empty after the worker ran: {left:?}"
    );
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib="))
        .and_then(|kib| kib.trim().parse::<f64>().ok())
        .map_or("not measured (no /usr/bin/time)".to_string(), |kib| {
            format!("{:.1} MiB", kib / 1024.0)
        });
    println!(
        "| worker binary drains {n} messages (`--max-messages 0`, incl. start and 1 s idle wait) | {:.2} s wall, {:.0} msg/s over the drain, peak RSS {rss} |",
        took.as_secs_f64(),
        rate(n, took.saturating_sub(Duration::from_secs(1)))
    );
    Ok(())
}

/// Sessions: `sessions` × `per_session` messages (interleaved, put straight into the broker) drained
/// by `receivers` concurrent next-available session receivers, each on its own connection (fe2o3-amqp:
/// our worker's client has no sessions), completing each message (peek-lock, credit 100).
async fn session_drain(
    sessions: usize,
    per_session: usize,
    receivers: usize,
) -> anyhow::Result<()> {
    use fe2o3_amqp::types::messaging::{FilterSet, Message, Properties, Source};
    use fe2o3_amqp::types::primitives::{Symbol, Value};
    use fe2o3_amqp_types::messaging::message::__private::Serializable;
    use servicebus_emulator::config::{Config, QueueProperties};
    use servicebus_emulator::message::StoredMessage;

    let config = Config::single_queue(
        QUEUE,
        QueueProperties {
            requires_session: true,
            ..QueueProperties::default()
        },
    );
    let emu = Emulator::builder()
        .config(config)
        .loopback()
        .start()
        .await?;
    let queue = emu.broker().resolve(QUEUE)?;
    let n = sessions * per_session;
    let messages = (0..n)
        .map(|i| {
            let message = Message::builder()
                .properties(Properties {
                    group_id: Some(format!("session-{}", i % sessions)),
                    ..Properties::default()
                })
                .value(format!("message {i}"))
                .build();
            let bytes = serde_amqp::to_vec(&Serializable(&message))?;
            Ok(StoredMessage::parse(bytes.into())?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    emu.broker().send_batch(&queue, messages)?;

    let url = format!("amqp://127.0.0.1:{}", emu.amqp_addr().port());
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..receivers {
        let url = url.clone();
        tasks.spawn(async move {
            let mut connection = fe2o3_amqp::Connection::builder()
                .container_id(format!("bench-{r}"))
                .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain {
                    username: "RootManageSharedAccessKey".into(),
                    password: "SAS_KEY_VALUE".into(),
                })
                .open(url.as_str())
                .await?;
            let mut session = fe2o3_amqp::Session::begin(&mut connection).await?;
            let mut drained = 0usize;
            for attempt in 0.. {
                let mut filter = FilterSet::new();
                filter.insert(Symbol::from("com.microsoft:session-filter"), Value::Null);
                let mut properties = fe2o3_amqp::types::definitions::Fields::new();
                properties.insert(Symbol::from("com.microsoft:timeout"), Value::Uint(200));
                // A refusal (com.microsoft:timeout) means every session is drained or taken.
                let Ok(mut receiver) = fe2o3_amqp::Receiver::builder()
                    .name(format!("bench-{r}-{attempt}"))
                    .source(Source::builder().address(QUEUE).filter(filter).build())
                    .properties(properties)
                    .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Auto(100))
                    .attach(&mut session)
                    .await
                else {
                    break;
                };
                for _ in 0..per_session {
                    let delivery: fe2o3_amqp::link::delivery::Delivery<Value> =
                        receiver.recv().await?;
                    receiver.accept(&delivery).await?;
                    drained += 1;
                }
                receiver.close().await?;
            }
            session.end().await?;
            connection.close().await?;
            anyhow::Ok(drained)
        });
    }
    let mut drained = 0;
    while let Some(done) = tasks.join_next().await {
        drained += done??;
    }
    let took = began.elapsed();
    let left = emu.broker().counts(QUEUE).map(|c| c.active_message_count);
    emu.shutdown().await;
    anyhow::ensure!(
        drained == n && left == Some(0),
        "sessions not drained: {drained} of {n} received, {left:?} left"
    );
    println!(
        "| sessions: {sessions} × {per_session} messages drained by {receivers} next-available session receivers (peek-lock, complete each; incl. the last 200 ms next-available wait) | {:.0} msg/s ({:.2} s) |",
        rate(n, took),
        took.as_secs_f64()
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(f64::EPSILON)
}
