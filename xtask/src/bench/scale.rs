//! `cargo xtask bench --scale`: the emulator binary at size, with and without `--data-dir`.
//!
//! Measured from this process with the worker's client library against the real binary (so the
//! emulator's RSS is its own): send throughput in memory and on a data directory (pipelined and one
//! at a time), restart time with a stored backlog (after SIGTERM and after SIGKILL, spawn to ready
//! line), RSS with a large backlog and receive throughput at that depth, and many concurrent
//! connections with an active link's throughput beside them. Prints one Markdown table.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aca_job_lab::servicebus::{ConnectionConfig, ServiceBusClient, ServiceBusMessage};
use anyhow::{Context, bail};

use crate::lab::controller::metrics::{HealthEndpointMetrics, QueueMetrics};

const QUEUE: &str = "queue-messages";

/// How big each measurement is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub send: usize,
    pub restart: usize,
    pub backlog: usize,
    pub connections: usize,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            send: 20_000,
            restart: 100_000,
            backlog: 1_000_000,
            connections: 10_000,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            send: 500,
            restart: 1_000,
            backlog: 2_000,
            connections: 100,
        }
    }
}

/// One emulator binary, on free ports, maybe on a data directory.
struct Process {
    child: Child,
    amqp: SocketAddr,
    health: SocketAddr,
}

impl Process {
    /// Spawn and wait for the ready line; returns it with the time from spawn to ready.
    fn start(
        binary: &Path,
        data_dir: Option<&Path>,
        extra: &[&str],
    ) -> anyhow::Result<(Process, Duration)> {
        let free = || -> anyhow::Result<SocketAddr> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
        };
        let (amqp, health) = (free()?, free()?);
        let mut cmd = Command::new(binary);
        cmd.args(["--listen", &amqp.to_string()])
            .args(["--health-listen", &health.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(dir) = data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        let began = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        crate::util::wait_for_ready_line(&mut child, Duration::from_secs(300))?;
        let took = began.elapsed();
        Ok((
            Process {
                child,
                amqp,
                health,
            },
            took,
        ))
    }

    fn connection(&self) -> anyhow::Result<ConnectionConfig> {
        let text = servicebus_emulator::auth::emulator_connection_string(self.amqp);
        Ok(ConnectionConfig::from_connection_string(&text)?.0)
    }

    async fn client(&self) -> anyhow::Result<ServiceBusClient> {
        Ok(ServiceBusClient::connect(&self.connection()?).await?)
    }

    async fn active(&self) -> anyhow::Result<u64> {
        Ok(HealthEndpointMetrics::new(self.health, QUEUE)
            .active_message_count()
            .await?)
    }

    /// (VmRSS, VmHWM) in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let mib = |field| {
            crate::util::proc_status_kib(self.child.id(), field)
                .map_or(0.0, |kib| kib as f64 / 1024.0)
        };
        (mib("VmRSS"), mib("VmHWM"))
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn body(bytes: usize) -> Vec<u8> {
    vec![b'x'; bytes]
}

/// Send `n` messages of `bytes` bytes, `pipelined` (64 in flight) or one at a time; messages/s.
async fn send(p: &Process, n: usize, bytes: usize, pipelined: bool) -> anyhow::Result<f64> {
    let mut client = p.client().await?;
    let mut sender = client.sender(QUEUE).await?;
    let payload = body(bytes);
    let began = Instant::now();
    if pipelined {
        // In chunks, so a million messages are never all in memory here.
        let mut left = n;
        while left > 0 {
            let chunk = left.min(10_000);
            sender
                .send_all((0..chunk).map(|_| ServiceBusMessage::new(payload.clone())))
                .await?;
            left -= chunk;
        }
    } else {
        for _ in 0..n {
            sender.send(ServiceBusMessage::new(payload.clone())).await?;
        }
    }
    let rate = n as f64 / began.elapsed().as_secs_f64();
    sender.close().await?;
    client.close().await?;
    Ok(rate)
}

/// Receive and complete `n` messages (credit 100); messages/s.
async fn drain(p: &Process, n: usize) -> anyhow::Result<f64> {
    let mut client = p.client().await?;
    let mut receiver = client.receiver(QUEUE).await?;
    let began = Instant::now();
    for done in 0..n {
        let Some(m) = receiver.receive(Duration::from_secs(10), 100).await? else {
            bail!("only {done} of {n} messages arrived");
        };
        receiver.complete(&m).await?;
    }
    let rate = n as f64 / began.elapsed().as_secs_f64();
    receiver.close().await?;
    client.close().await?;
    Ok(rate)
}

/// Every measurement, as `(benchmark, result)` rows.
pub fn run(binary: &Path, sizes: Sizes) -> anyhow::Result<Vec<(String, String)>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let work = tempfile_dir()?;
    let result = runtime.block_on(measure(binary, sizes, &work));
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("aca-lab-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn measure(binary: &Path, s: Sizes, work: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut rows = Vec::new();
    let mut row = |benchmark: String, result: String| {
        eprintln!("  {benchmark}: {result}");
        rows.push((benchmark, result));
    };
    aca_job_lab::servicebus::install_crypto_provider();

    // 1. Send throughput, in memory and on a data directory.
    for durable in [false, true] {
        let dir = work.join("send");
        let _ = std::fs::remove_dir_all(&dir);
        let (p, _) = Process::start(binary, durable.then_some(dir.as_path()), &[])?;
        let mode = if durable { "`--data-dir`" } else { "in memory" };
        let piped = send(&p, s.send, 1024, true).await?;
        let single = send(&p, s.send / 10, 1024, false).await?;
        row(
            format!(
                "send, {mode}: {} × 1 KiB, 64 in flight / {} one at a time",
                s.send,
                s.send / 10
            ),
            format!("{piped:.0} msg/s / {single:.0} msg/s"),
        );
        p.stop();
    }

    // 2. Restart with a stored backlog: after a clean stop and after SIGKILL.
    let dir = work.join("restart");
    let (p, _) = Process::start(binary, Some(&dir), &[])?;
    send(&p, s.restart, 1024, true).await?;
    p.stop();
    let file = dir.join(servicebus_emulator::store::FILE_NAME);
    let size = std::fs::metadata(&file).map_or(0, |m| m.len()) as f64 / 1024.0 / 1024.0;
    let (p, clean) = Process::start(binary, Some(&dir), &[])?;
    let counted = p.active().await?;
    p.kill();
    let (p, crashed) = Process::start(binary, Some(&dir), &[])?;
    let after_kill = p.active().await?;
    let (rss, _) = p.rss_mib();
    p.stop();
    if counted != s.restart as u64 || after_kill != s.restart as u64 {
        bail!(
            "restart lost messages: {} stored, {counted} after a clean restart, {after_kill} after SIGKILL",
            s.restart
        );
    }
    row(
        format!(
            "restart with {} × 1 KiB stored ({size:.0} MiB file), spawn to ready line",
            s.restart
        ),
        format!(
            "{:.2} s after SIGTERM, {:.2} s after SIGKILL (recovery included); RSS then {rss:.0} MiB",
            clean.as_secs_f64(),
            crashed.as_secs_f64()
        ),
    );

    // 3. A large backlog in memory: RSS, and receive throughput at that depth.
    let (p, _) = Process::start(binary, None, &[])?;
    let (idle, _) = p.rss_mib();
    let rate = send(&p, s.backlog, 1024, true).await?;
    let (rss, hwm) = p.rss_mib();
    let depth = p.active().await?;
    let receive = drain(&p, (s.backlog / 50).max(100)).await?;
    row(
        format!("backlog of {} × 1 KiB, in memory", s.backlog),
        format!(
            "RSS {rss:.0} MiB (peak {hwm:.0}, idle {idle:.0}); sent at {rate:.0} msg/s; receive + complete at depth {depth}: {receive:.0} msg/s"
        ),
    );
    p.stop();

    // 4. Many idle connections, and an active link beside them.
    let limit = (s.connections + 100).to_string();
    let (p, _) = Process::start(binary, None, &["--max-connections", &limit])?;
    let before = round_trip(&p, 2_000.min(s.send)).await?;
    let began = Instant::now();
    let mut clients = Vec::with_capacity(s.connections);
    let config = p.connection()?;
    while clients.len() < s.connections {
        let batch = (s.connections - clients.len()).min(200);
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let config = config.clone();
            opening.spawn(async move { ServiceBusClient::connect(&config).await });
        }
        for c in opening.join_all().await {
            clients.push(c.context("opening one of the idle connections")?);
        }
    }
    let opening = began.elapsed();
    let (rss, _) = p.rss_mib();
    let during = round_trip(&p, 2_000.min(s.send)).await?;
    row(
        format!(
            "{} concurrent connections (idle, each with a session)",
            s.connections
        ),
        format!(
            "opened in {:.1} s; emulator RSS {rss:.0} MiB; an active link's send + receive + complete: {during:.0} msg/s beside them, {before:.0} msg/s before",
            opening.as_secs_f64()
        ),
    );
    drop(clients);
    p.stop();
    Ok(rows)
}

/// Send then receive + complete `n` small messages on one connection; messages/s end to end.
async fn round_trip(p: &Process, n: usize) -> anyhow::Result<f64> {
    let began = Instant::now();
    send(p, n, 64, true).await?;
    drain(p, n).await?;
    Ok(n as f64 / began.elapsed().as_secs_f64())
}
