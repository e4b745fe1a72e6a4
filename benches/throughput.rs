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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(f64::EPSILON)
}
