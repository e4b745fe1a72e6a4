//! `cargo xtask soak --duration 10m`: the emulator on a data directory under a long, unkind load.
//!
//! Senders (this process, the worker's own client library) send numbered messages, one in ten a
//! poison message (JSON content type, body not JSON); real `servicebus-job` processes drain the queue
//! as KEDA would start them, and one of them is SIGKILLed every few seconds; the emulator itself is
//! SIGKILLed and restarted on its data directory twice (at a third and at two thirds of the run).
//! Then the senders stop, the workers drain what is left, and everything is reconciled exactly:
//!
//! - the queue is empty;
//! - the dead-letter queue holds each acknowledged poison message exactly once, and nothing else but
//!   poison messages whose send was in flight at a kill (sent, not acknowledged);
//! - every acknowledged message was processed by some worker (its log says `processing message`
//!   with that id): none was lost, even the ones a killed worker or a killed emulator had locked.
//!
//! The emulator's resident set size is sampled every second; the table at the end shows it per
//! emulator run, with the restart times. Exit 0 only when everything reconciles.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aca_job_lab::servicebus::{ConnectionConfig, ServiceBusClient, ServiceBusMessage};
use anyhow::Context;
use tokio::time::timeout;

use crate::lab::controller::metrics::{HealthEndpointMetrics, QueueMetrics};
use crate::util::{cargo, parse_duration, project_root, run_checked};

const QUEUE: &str = "soak";
/// Worker processes kept running (KEDA's replicas).
const WORKERS: usize = 3;
/// Sender tasks in this process.
const SENDERS: usize = 2;
/// One message in this many is poison.
const POISON_EVERY: u64 = 10;
/// A client call that takes longer than this counts as failed (the emulator was killed under it).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// How long the load runs (then the workers drain the rest), e.g. 60s, 10m.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Build optimised binaries first (slower to build, closer to a user's image).
    #[arg(long)]
    pub release: bool,
    /// Seed for the kill times (printed at the start; repeat a run with it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the data directory and the logs go (default: a new directory under target/soak).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

pub fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    Ok(if reconciles(&args)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Run the soak; whether everything reconciled (the report is printed either way).
pub fn reconciles(args: &SoakArgs) -> anyhow::Result<bool> {
    let root = project_root();
    let mut build = cargo();
    build.current_dir(&root).args([
        "build",
        "-p",
        "servicebus-emulator",
        "-p",
        "aca-job-lab",
        "--bins",
    ]);
    if args.release {
        build.arg("--release");
    }
    run_checked(&mut build, false)?;
    let bin = crate::util::target_dir(&root)?.join(if args.release { "release" } else { "debug" });
    let work = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => crate::util::target_dir(&root)?
            .join("soak")
            .join(format!("{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "soak: {:?} of load, seed {seed}, work directory {}",
        args.duration,
        work.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(soak(&bin, &work, args.duration, seed))?;
    print!("{}", outcome.report());
    Ok(outcome.problems.is_empty())
}

/// A small xorshift: enough to spread kill times, repeatable from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One run of the emulator process.
struct EmulatorRun {
    child: Child,
    ready_after: Duration,
    /// (seconds since the soak began, RSS in KiB)
    rss: Vec<(f64, u64)>,
}

struct Emulator {
    bin: PathBuf,
    work: PathBuf,
    amqp: SocketAddr,
    http: SocketAddr,
    runs: Vec<EmulatorRun>,
}

impl Emulator {
    fn config(work: &Path) -> anyhow::Result<PathBuf> {
        let path = work.join("Config.json");
        let config = serde_json::json!({"UserConfig": {"Namespaces": [{
            "Name": "sbemulatorns",
            "Queues": [{"Name": QUEUE, "Properties": {
                // Locks a killed worker held come back soon; retries never exhaust.
                "LockDuration": "PT5S",
                "MaxDeliveryCount": 1000
            }}]
        }]}});
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        Ok(path)
    }

    /// Start (or restart) on the same ports and data directory; returns once it printed its ready line.
    fn start(&mut self) -> anyhow::Result<()> {
        let config = Self::config(&self.work)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join("emulator.log"))?;
        let started = Instant::now();
        let mut child = Command::new(self.bin.join("servicebus-emulator"))
            .arg("--config")
            .arg(&config)
            .args(["--listen", &self.amqp.to_string()])
            .args(["--health-listen", &self.http.to_string()])
            .arg("--data-dir")
            .arg(self.work.join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting servicebus-emulator")?;
        crate::util::wait_for_ready_line(&mut child, Duration::from_secs(120))
            .with_context(|| format!("see {}", self.work.join("emulator.log").display()))?;
        self.runs.push(EmulatorRun {
            child,
            ready_after: started.elapsed(),
            rss: Vec::new(),
        });
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(run) = self.runs.last_mut() {
            let _ = run.child.kill();
            let _ = run.child.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(run) = self.runs.last_mut() {
            let _ = Command::new("kill")
                .args(["-TERM", &run.child.id().to_string()])
                .status();
            let _ = run.child.wait();
        }
    }

    fn sample_rss(&mut self, since: Instant) {
        if let Some(run) = self.runs.last_mut()
            && let Some(kib) = crate::util::proc_status_kib(run.child.id(), "VmRSS")
        {
            run.rss.push((since.elapsed().as_secs_f64(), kib));
        }
    }
}

/// What the senders were told.
#[derive(Default)]
struct Sent {
    ok: BTreeSet<String>,
    poison: BTreeSet<String>,
    /// Sends that failed (the emulator went away mid-send): stored or not, either is right.
    unsure: BTreeSet<String>,
}

use servicebus_emulator::auth::emulator_connection_string as connection_string;

fn connection(amqp: SocketAddr) -> anyhow::Result<ConnectionConfig> {
    Ok(ConnectionConfig::from_connection_string(&connection_string(amqp))?.0)
}

async fn sender(n: usize, amqp: SocketAddr, stop: Instant, sent: Arc<Mutex<Sent>>) {
    let mut i: u64 = 0;
    while Instant::now() < stop {
        let Ok(config) = connection(amqp) else { return };
        // Every call has a deadline: a connection the kill cut may never answer.
        let mut client = match timeout(CALL_TIMEOUT, ServiceBusClient::connect(&config)).await {
            Ok(Ok(c)) => c,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(Ok(mut s)) = timeout(CALL_TIMEOUT, client.sender(QUEUE)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while Instant::now() < stop {
            i += 1;
            let id = format!("soak-{n}-{i}");
            let poison = i.is_multiple_of(POISON_EVERY);
            let body = if poison {
                b"{not json".to_vec()
            } else {
                serde_json::to_vec(&serde_json::json!({"sender": n, "n": i})).unwrap_or_default()
            };
            let message = ServiceBusMessage::new(body)
                .with_message_id(id.clone())
                .with_content_type("application/json");
            let ok = matches!(timeout(CALL_TIMEOUT, s.send(message)).await, Ok(Ok(())));
            {
                let mut book = sent.lock().unwrap_or_else(|p| p.into_inner());
                match (ok, poison) {
                    (true, false) => book.ok.insert(id),
                    (true, true) => book.poison.insert(id),
                    (false, _) => book.unsure.insert(id),
                };
            }
            if !ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
}

struct Workers {
    bin: PathBuf,
    work: PathBuf,
    amqp: SocketAddr,
    running: Vec<Child>,
    started: usize,
    killed: usize,
}

impl Workers {
    fn spawn(&mut self) -> anyhow::Result<()> {
        self.started += 1;
        let log = std::fs::File::create(self.work.join(format!("worker-{}.log", self.started)))?;
        let child = Command::new(self.bin.join("servicebus-job"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SERVICEBUS_CONNECTION_STRING", connection_string(self.amqp))
            .env("SERVICEBUS_QUEUE_NAME", QUEUE)
            .env("MAX_MESSAGES", "0")
            .env("MAX_WAIT", "2s")
            .env("SIMULATE_WORK", "10ms")
            .env("LOG_FORMAT", "json")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting servicebus-job")?;
        self.running.push(child);
        Ok(())
    }

    /// Replace exited workers (while `keep` says so), reaping them.
    fn top_up(&mut self, keep: bool) -> anyhow::Result<()> {
        self.running
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        while keep && self.running.len() < WORKERS {
            self.spawn()?;
        }
        Ok(())
    }

    fn kill_one(&mut self, rng: &mut Rng) {
        if self.running.is_empty() {
            return;
        }
        let i = rng.below(self.running.len() as u64) as usize;
        let mut child = self.running.swap_remove(i);
        let _ = child.kill();
        let _ = child.wait();
        self.killed += 1;
    }

    fn kill_all(&mut self) {
        for mut c in self.running.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Outcome {
    duration: Duration,
    sent: Sent,
    processed: usize,
    dead_lettered: usize,
    workers_started: usize,
    workers_killed: usize,
    runs: Vec<(Duration, Vec<(f64, u64)>)>,
    problems: Vec<String>,
}

impl Outcome {
    fn report(&self) -> String {
        let mut out = String::new();
        let sent = self.sent.ok.len() + self.sent.poison.len();
        out += &format!(
            "soak: {:?}: {sent} messages acknowledged ({} poison), {} sends cut by a kill; {} processed by {} worker runs ({} SIGKILLed); {} dead-lettered\n",
            self.duration,
            self.sent.poison.len(),
            self.sent.unsure.len(),
            self.processed,
            self.workers_started,
            self.workers_killed,
            self.dead_lettered,
        );
        out += "emulator runs (after SIGKILL, each restart recovers the data directory):\n";
        out += "  run  ready after  RSS min / max / last (MiB)  samples\n";
        for (i, (ready, rss)) in self.runs.iter().enumerate() {
            let mib = |k: u64| k as f64 / 1024.0;
            let min = rss.iter().map(|r| r.1).min().unwrap_or(0);
            let max = rss.iter().map(|r| r.1).max().unwrap_or(0);
            let last = rss.last().map_or(0, |r| r.1);
            out += &format!(
                "  {:>3}  {:>8.0} ms  {:>6.1} / {:>6.1} / {:>6.1}        {}\n",
                i + 1,
                ready.as_secs_f64() * 1000.0,
                mib(min),
                mib(max),
                mib(last),
                rss.len()
            );
        }
        if self.problems.is_empty() {
            out += "soak: reconciled: every acknowledged message was processed, each poison message dead-lettered exactly once, the queue is empty\n";
        } else {
            for p in &self.problems {
                out += &format!("soak: PROBLEM: {p}\n");
            }
        }
        out
    }
}

async fn soak(bin: &Path, work: &Path, duration: Duration, seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = Rng(seed | 1);
    let free = || -> anyhow::Result<SocketAddr> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
    };
    let mut emulator = Emulator {
        bin: bin.to_path_buf(),
        work: work.to_path_buf(),
        amqp: free()?,
        http: free()?,
        runs: Vec::new(),
    };
    emulator.start()?;
    let began = Instant::now();
    let stop_sending = began + duration;
    let sent = Arc::new(Mutex::new(Sent::default()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| tokio::spawn(sender(n, emulator.amqp, stop_sending, sent.clone())))
        .collect();
    let mut workers = Workers {
        bin: bin.to_path_buf(),
        work: work.to_path_buf(),
        amqp: emulator.amqp,
        running: Vec::new(),
        started: 0,
        killed: 0,
    };
    let crashes = [began + duration / 3, began + duration * 2 / 3];
    let mut crashed = 0;
    let mut next_worker_kill = began + Duration::from_millis(2000 + rng.below(4000));
    let metrics = HealthEndpointMetrics::new(emulator.http, QUEUE);
    let mut problems = Vec::new();
    // Load, kills and restarts.
    while Instant::now() < stop_sending {
        workers.top_up(true)?;
        emulator.sample_rss(began);
        let now = Instant::now();
        if now >= next_worker_kill {
            workers.kill_one(&mut rng);
            next_worker_kill = now + Duration::from_millis(2000 + rng.below(4000));
        }
        if crashed < crashes.len() && now >= crashes[crashed] {
            crashed += 1;
            emulator.kill();
            println!(
                "soak: emulator SIGKILLed at {:.0} s; restarting on its data directory",
                began.elapsed().as_secs_f64()
            );
            emulator.start()?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for s in senders {
        let _ = s.await;
    }
    // Drain: workers keep coming until the queue is empty (locks of killed workers expire in 5 s).
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    loop {
        workers.top_up(true)?;
        emulator.sample_rss(began);
        match metrics.active_message_count().await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => problems.push(format!("counting the queue failed: {e}")),
        }
        if Instant::now() > drain_deadline {
            problems.push("the queue did not drain within 300 s".into());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Let running workers finish their idle wait, then stop the rest.
    tokio::time::sleep(Duration::from_secs(3)).await;
    workers.kill_all();

    let dead = read_dead_letters(emulator.amqp).await?;
    let processed = processed_ids(work)?;
    emulator.stop();
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));

    let counted: BTreeMap<&String, usize> = dead.iter().fold(BTreeMap::new(), |mut m, id| {
        *m.entry(id).or_default() += 1;
        m
    });
    for (id, n) in &counted {
        if *n > 1 {
            problems.push(format!("{id} is in the dead-letter queue {n} times"));
        }
        let poison_like = id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n.is_multiple_of(POISON_EVERY));
        let expected = sent.poison.contains(*id) || (sent.unsure.contains(*id) && poison_like);
        if !expected {
            problems.push(format!(
                "{id} is dead-lettered but was not a poison message"
            ));
        }
    }
    for id in &sent.poison {
        if !counted.contains_key(id) {
            problems.push(format!(
                "poison message {id} (acknowledged) is not in the dead-letter queue"
            ));
        }
    }
    let lost: Vec<&String> = sent
        .ok
        .iter()
        .filter(|id| !processed.contains(*id))
        .collect();
    if !lost.is_empty() {
        problems.push(format!(
            "{} acknowledged messages were never processed, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    Ok(Outcome {
        duration,
        processed: processed.len(),
        dead_lettered: dead.len(),
        sent,
        workers_started: workers.started,
        workers_killed: workers.killed,
        runs: emulator
            .runs
            .iter()
            .map(|r| (r.ready_after, r.rss.clone()))
            .collect(),
        problems,
    })
}

/// Every message in the dead-letter queue (received and completed, so it is empty afterwards).
async fn read_dead_letters(amqp: SocketAddr) -> anyhow::Result<Vec<String>> {
    let read = async {
        let mut client = ServiceBusClient::connect(&connection(amqp)?).await?;
        let mut receiver = client
            .receiver(&format!("{QUEUE}/$DeadLetterQueue"))
            .await?;
        let mut ids = Vec::new();
        while let Some(m) = receiver.receive(Duration::from_secs(2), 50).await? {
            ids.extend(m.message_id.clone());
            receiver.complete(&m).await?;
        }
        anyhow::Ok(ids)
    };
    timeout(Duration::from_secs(300), read)
        .await
        .context("reading the dead-letter queue took over 300 s")?
}

/// The message ids the workers' JSON logs show as processed (`processing message`).
fn processed_ids(work: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(work)? {
        let path = entry?.path();
        let is_worker_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("worker-"));
        if !is_worker_log {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            // The worker's JSON lines carry their fields at the top level.
            if v["message"] == "processing message"
                && let Some(id) = v["message_id"].as_str()
            {
                ids.insert(id.to_string());
            }
        }
    }
    Ok(ids)
}
