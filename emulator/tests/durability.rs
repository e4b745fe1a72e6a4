//! `--data-dir` on the real binary: the official Python SDK keeps it busy, the test kills it with
//! SIGKILL at a random moment, starts it again on the same directory, and reconciles what the SDK was
//! promised (`tests/python/crash_load.py` logs each acknowledged operation) with what is there:
//! acknowledged sends exactly once, acknowledged completes gone, scheduled, deferred and dead-lettered
//! messages in their state, locks ended by the crash counted, session state kept, numbers going up.
//!
//! The seed of the kill times is printed; `CRASH_SEED=<n>` repeats a run.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use serde_json::{Value, json};

const QUEUE: &str = "crash";
const SESSION_QUEUE: &str = "crash-sessions";
const ROUNDS: u32 = 3;

/// The emulator binary on `data`, until killed (a failing test kills it too, on drop).
struct Running {
    child: Child,
    amqp: u16,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(work: &Path, n: u32) -> Running {
        let config = work.join("Config.json");
        if !config.exists() {
            let file = json!({"UserConfig": {"Namespaces": [{
                "Name": "sbemulatorns",
                "Queues": [
                    {"Name": QUEUE, "Properties": {"MaxDeliveryCount": 50}},
                    {"Name": SESSION_QUEUE, "Properties": {"RequiresSession": true}}
                ]
            }]}});
            std::fs::write(&config, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
        }
        let amqp = common::free_port();
        let log = work.join(format!("emulator-{n}.log"));
        let mut child = Command::new(cargo_bin("servicebus-emulator"))
            .env_remove("SERVICEBUS_EMULATOR_DATA_DIR")
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{amqp}")])
            .args(["--health-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(work.join("data"))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(servicebus_emulator::READY_LINE) {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!(
                "emulator {n} never got ready:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Running { child, amqp, log }
    }

    fn connection_string(&self) -> String {
        format!(
            "Endpoint=sb://127.0.0.1:{};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
            self.amqp
        )
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SB_CONN", self.connection_string()),
            ("SB_QUEUE", QUEUE.to_string()),
            ("SB_SESSION_QUEUE", SESSION_QUEUE.to_string()),
            ("SB_SECONDS", "60".to_string()),
        ]
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: the clean stop a container runtime asks for.
    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit after SIGTERM: {status}");
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What the logs say the emulator promised, over every round so far.
#[derive(Default)]
struct Promises {
    sent: Vec<String>,
    completed: HashMap<String, ()>,
    /// Complete called, its answer never came: the message may be there or not.
    completing: HashMap<String, ()>,
    dead: HashMap<String, ()>,
    deferred: HashMap<String, i64>,
    scheduled: HashMap<String, i64>,
    /// id → delivery count when last received (and not settled since, as far as the log knows).
    received: HashMap<String, i64>,
    max_seq: i64,
    state: i64,
}

impl Promises {
    fn read(&mut self, log: &Path) -> BTreeMap<String, usize> {
        let mut ops = BTreeMap::new();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let op = v["op"].as_str().unwrap().to_string();
            let id = v["id"].as_str().map(str::to_string);
            if let Some(seq) = v["seq"].as_i64() {
                self.max_seq = self.max_seq.max(seq);
            }
            match (op.as_str(), id) {
                ("sent", Some(id)) => self.sent.push(id),
                ("completing", Some(id)) => {
                    self.completing.insert(id, ());
                }
                ("completed", Some(id)) => {
                    self.received.remove(&id);
                    self.completing.remove(&id);
                    self.completed.insert(id, ());
                }
                ("dead", Some(id)) => {
                    self.received.remove(&id);
                    self.dead.insert(id, ());
                }
                ("deferred", Some(id)) => {
                    self.received.remove(&id);
                    self.deferred.insert(id, v["seq"].as_i64().unwrap());
                }
                ("scheduled", Some(id)) => {
                    self.scheduled.insert(id, v["seq"].as_i64().unwrap());
                }
                ("received", Some(id)) => {
                    self.received.insert(id, v["count"].as_i64().unwrap());
                }
                ("state", None) => self.state = self.state.max(v["value"].as_i64().unwrap()),
                _ => panic!("unexpected log line {line}"),
            }
            *ops.entry(op).or_default() += 1;
        }
        ops
    }

    /// Every promise against what `reconcile` found. Returns the number of messages found.
    fn check(&self, found: &Value, round: u32) -> usize {
        let mut seen: HashMap<String, (&str, &Value)> = HashMap::new();
        for (place, list) in [("main", &found["main"]), ("dead", &found["dead"])] {
            for m in list.as_array().unwrap() {
                let id = m["id"].as_str().unwrap().to_string();
                if let Some((other, _)) = seen.insert(id.clone(), (place, m)) {
                    panic!("round {round}: message {id} is there twice ({other} and {place})");
                }
                assert!(
                    m["seq"].as_i64().unwrap() < found["next_seq"].as_i64().unwrap(),
                    "round {round}: {m} not below the next number {}",
                    found["next_seq"]
                );
            }
        }
        for id in &self.sent {
            let completed = self.completed.contains_key(id);
            match (seen.get(id), completed) {
                (Some((place, m)), true) => {
                    panic!(
                        "round {round}: {id} was completed (acknowledged) but is in {place}: {m}"
                    )
                }
                (None, false) if !self.completing.contains_key(id) => {
                    panic!("round {round}: {id} was sent (acknowledged) and is gone")
                }
                _ => {}
            }
        }
        for id in self.dead.keys() {
            assert_eq!(
                seen.get(id).map(|s| s.0),
                Some("dead"),
                "round {round}: {id} was dead-lettered (acknowledged)"
            );
        }
        for (id, seq) in &self.deferred {
            let (place, m) = seen
                .get(id)
                .unwrap_or_else(|| panic!("round {round}: deferred {id} is gone"));
            assert_eq!(
                (*place, m["state"].as_i64(), m["seq"].as_i64()),
                ("main", Some(1), Some(*seq)),
                "round {round}: {id} was deferred (acknowledged): {m}"
            );
        }
        for (id, seq) in &self.scheduled {
            let (place, m) = seen
                .get(id)
                .unwrap_or_else(|| panic!("round {round}: scheduled {id} is gone"));
            assert_eq!(
                (*place, m["state"].as_i64(), m["seq"].as_i64()),
                ("main", Some(2), Some(*seq)),
                "round {round}: {id} was scheduled (acknowledged): {m}"
            );
        }
        // A message the SDK received and had not settled was locked at the kill: it is available
        // again with that delivery counted, as an expired lock is.
        for (id, count) in &self.received {
            if let Some(("main", m)) = seen.get(id).copied()
                && m["state"].as_i64() == Some(0)
            {
                let now = m["count"].as_i64().unwrap();
                assert!(
                    now > *count && now <= *count + i64::from(round),
                    "round {round}: {id} was received with delivery count {count}, now {now}"
                );
            }
        }
        let state = found["state"].as_i64().unwrap();
        assert!(
            state == self.state || state == self.state + 1,
            "round {round}: session state {state}, last acknowledged {}",
            self.state
        );
        assert!(
            found["next_seq"].as_i64().unwrap() > self.max_seq,
            "round {round}: numbers went back: next {} after {}",
            found["next_seq"],
            self.max_seq
        );
        seen.len()
    }
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// A few steps of xorshift: enough to spread kill times, and repeatable from the printed seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_sdk_load_loses_nothing_acknowledged() {
    let seed = seed();
    println!("CRASH_SEED={seed}");
    let mut rng = seed | 1;
    let work = tempfile::tempdir().unwrap();
    let mut promises = Promises::default();
    let mut found = 0;
    for round in 1..=ROUNDS {
        let emulator = Running::start(work.path(), round);
        if round > 1 {
            let state = common::run_script("crash_load.py", &["reconcile"], &emulator.env()).await;
            found = promises.check(&state, round - 1);
        }
        let log = work.path().join(format!("round-{round}.log"));
        let env = emulator.env();
        let args = [
            "load".to_string(),
            log.display().to_string(),
            round.to_string(),
        ];
        let load = tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::run_script("crash_load.py", &args, &env).await
        });
        let kill_after = Duration::from_millis(1500 + next(&mut rng) % 2500);
        tokio::time::sleep(kill_after).await;
        let stderr = emulator.kill();
        load.await.expect("the load ends once the emulator is gone");
        let ops = promises.read(&log);
        println!("round {round}: killed after {kill_after:?}; acknowledged {ops:?}");
        assert!(
            ops.get("sent").copied().unwrap_or(0) >= 10 && ops.contains_key("completed"),
            "round {round}: the load hardly ran ({ops:?}); emulator log:\n{stderr}"
        );
    }
    // After the last kill: the restart recovers the file (and says so), and everything holds.
    let emulator = Running::start(work.path(), ROUNDS + 1);
    let state = common::run_script("crash_load.py", &["reconcile"], &emulator.env()).await;
    let after_crash = promises.check(&state, ROUNDS);
    // A clean stop and start changes nothing.
    let stderr = emulator.stop();
    assert!(
        stderr.contains("not closed cleanly"),
        "the start after a kill -9 says it recovered the file:\n{stderr}"
    );
    let emulator = Running::start(work.path(), ROUNDS + 2);
    let again = common::run_script("crash_load.py", &["reconcile"], &emulator.env()).await;
    assert_eq!(
        again["main"], state["main"],
        "a clean restart changes nothing"
    );
    assert_eq!(again["dead"], state["dead"]);
    let stderr = emulator.stop();
    assert!(
        !stderr.contains("not closed cleanly"),
        "a clean stop needs no recovery:\n{stderr}"
    );
    println!("messages there after the rounds: {found} then {after_crash}");
}

/// A data file that is not a store stops the start, naming the file, and is left as it was.
#[test]
fn a_damaged_data_file_is_refused_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join(servicebus_emulator::store::FILE_NAME);
    std::fs::write(&file, vec![0xa5; 8192]).unwrap();
    let out = Command::new(cargo_bin("servicebus-emulator"))
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("move the file aside"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), vec![0xa5; 8192]);
}

/// Two emulators on one data directory: the second is refused and says why.
#[test]
fn a_data_directory_in_use_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let first = Running::start(work.path(), 1);
    let out = Command::new(cargo_bin("servicebus-emulator"))
        .args(["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(work.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("in use by another emulator"), "{stderr}");
    first.stop();
}
