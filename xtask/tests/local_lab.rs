//! `cargo xtask lab` for real: the embedded emulator, the local controller and the worker binary as
//! processes, driven the way a workshop participant drives them. Every command `lab/README.md` shows is
//! run here (see `every_command_in_the_workshop_is_exercised`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use assert_cmd::assert::Assert;

/// The commands of `lab/README.md`, exactly as written there, each run by a test below through
/// [`readme_command`].
const README_COMMANDS: &[&str] = &[
    "cargo xtask lab",
    "cargo xtask lab up",
    "cargo xtask lab send",
    "cargo xtask lab watch",
    "cargo xtask lab send --count 3",
    "cargo xtask lab executions",
    "cargo xtask lab executions -o json",
    "cargo xtask lab send --body 'not json'",
    "cargo xtask lab down",
    "cargo xtask lab report",
    "cargo xtask lab --job python",
    "cargo xtask lab up --job python",
    "cargo xtask lab report --compare",
];

/// The worker binary: `LAB_WORKER_BIN`, or built now into the same target directory as this test.
fn worker_bin() -> PathBuf {
    static WORKER: OnceLock<PathBuf> = OnceLock::new();
    WORKER
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("LAB_WORKER_BIN") {
                return PathBuf::from(path);
            }
            let status = cargo_as_typed()
                .args([
                    "build",
                    "--quiet",
                    "--package",
                    "aca-job-lab",
                    "--bin",
                    "servicebus-job",
                ])
                .status()
                .unwrap();
            assert!(status.success(), "building the worker failed");
            Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("servicebus-job")
        })
        .clone()
}

/// `cargo` as a participant's shell runs it: without the variables `cargo test` sets for this test
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …), which a build script in the tree watches; inheriting them
/// would make this build and the next `cargo xtask` rebuild each other.
fn cargo_as_typed() -> Command {
    let mut command = aca_lab_testkit::cargo::command();
    command.current_dir(workspace_root());
    command
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One lab, isolated: its own state directory, free ports, the worker built above.
struct Lab {
    state: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        Self {
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::new(env!("CARGO_BIN_EXE_xtask"));
        command
            .args(args)
            .env("LAB_WORKER_BIN", worker_bin())
            .env("LAB_STATE_DIR", self.state.path())
            .env("LAB_AMQP_PORT", "0")
            .env("LAB_HEALTH_PORT", "0")
            .timeout(Duration::from_secs(120));
        command
    }

    /// Run a command as `lab/README.md` writes it (it must be listed in [`README_COMMANDS`]).
    fn readme_command(&self, line: &str) -> Assert {
        self.readme(line).assert()
    }

    /// A command as `lab/README.md` writes it, to be given more environment before it runs.
    fn readme(&self, line: &str) -> assert_cmd::Command {
        assert!(
            README_COMMANDS.contains(&line),
            "{line:?} is not a README command"
        );
        let words = shell_words(line.strip_prefix("cargo xtask ").unwrap());
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        self.command(&words)
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.state.path().join("serve.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn executions(&self) -> serde_json::Value {
        let out = self
            .readme_command("cargo xtask lab executions -o json")
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    }
}

impl Drop for Lab {
    /// A failing test must not leave a lab running.
    fn drop(&mut self) {
        if self.state.path().join("serve.pid").exists() {
            let _ = self.command(&["lab", "down"]).output();
        }
    }
}

/// Split like a POSIX shell for the simple quoting the README uses ('…').
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The message id the `Sent 1 message (message id …, …)` line names.
fn sent_message_id(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split("message id ").nth(1))
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned()
}

fn stdout(assert: &Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

/// Names, times and durations change every run; uuids too.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"job-rust-[a-z0-9]{7}", "job-rust-[EXECUTION]"),
        (r"job-python-[a-z0-9]{7}", "job-python-[EXECUTION]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]"),
        (r"\b\d+\.\d+ s\b", "[DURATION]"),
        (r"\d+m\d\ds\b", "[DURATION]"),
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[UUID]",
        ),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        (r"\(ready in \d+ ms\)", "(ready in [MS] ms)"),
        (r"pid \d+", "pid [PID]"),
    ]
}

/// The lines of the table printed after the walkthrough (from the `NAME` header to the blank line).
fn table(output: &str) -> String {
    output
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("NAME"))
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

fn story(output: &str) -> String {
    output
        .lines()
        .filter(|l| {
            l.starts_with("Lab:")
                || l.starts_with(" ✔")
                || l.starts_with(" ✘")
                || l.starts_with("Done")
                || l.starts_with("Failed")
                || l.starts_with("Interrupted")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a ✘ step said: the indented lines under each ✘ line (an error's causes, one per line).
fn failure(output: &str) -> String {
    let mut lines = Vec::new();
    let mut under_failure = false;
    for line in output.lines() {
        if line.starts_with(" ✘") {
            under_failure = true;
        } else if under_failure && line.starts_with("   ") {
            lines.push(line.trim());
        } else {
            under_failure = false;
        }
    }
    lines.join("\n")
}

fn stderr(assert: &Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

#[test]
fn the_walkthrough_ends_with_a_succeeded_execution() {
    let lab = Lab::new();
    let assert = lab.readme_command("cargo xtask lab").success();
    let output = stdout(&assert);

    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("walkthrough_story", story(&output));
        insta::assert_snapshot!("walkthrough_table", table(&output));
    });
    // The replica's log is the worker's own output and names the message we sent.
    let sent_id = sent_message_id(&output);
    let log: Vec<&str> = output
        .lines()
        .skip_while(|l| !l.contains("replica log ("))
        .skip(1)
        .collect();
    assert!(
        log.iter().any(|l| l.contains(&sent_id)),
        "the replica log does not mention {sent_id}:\n{output}"
    );
}

/// Ignored unless asked for, so that where Docker is absent the runner counts it as ignored rather than
/// passing it unrun; `cargo xtask test` runs it (`-- --ignored`) wherever a Docker engine answers.
#[test]
#[ignore = "needs Docker and the aca-job-lab/servicebus-job:dev image (`cargo xtask images`); \
            `cargo xtask test` runs it where Docker answers, or `cargo test -p xtask --test local_lab -- --ignored`"]
fn the_walkthrough_runs_the_worker_image_with_runtime_docker() {
    let docker = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    assert!(
        docker.is_ok_and(|out| out.status.success()),
        "no Docker engine answers here: this test needs one (the process runtime is tested without)"
    );
    let lab = Lab::new();
    let assert = lab.command(&["lab", "--runtime", "docker"]).assert();
    let output = stdout(&assert);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        assert.get_output().status.success(),
        "{output}\n{stderr}\n(build the image with `cargo xtask images`)"
    );
    assert!(
        output.contains("· runtime docker (image aca-job-lab/servicebus-job:dev)"),
        "the header does not say where replicas run:\n{output}"
    );
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("walkthrough_table_docker", table(&output));
    });
    let template_image = "aca-job-lab/servicebus-job:dev";
    let sent_id = sent_message_id(&output);
    assert!(
        output.contains(&format!("message_id=\"{sent_id}\"")),
        "the container's log lacks the message:\n{output}"
    );
    let leftovers = Command::new("docker")
        .args([
            "ps",
            "--all",
            "--quiet",
            "--filter",
            "name=aca-job-lab-job-rust-",
        ])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "containers of {template_image} were left behind"
    );
}

#[test]
fn the_walkthrough_prints_json_steps_for_machines() {
    let lab = Lab::new();
    let assert = lab.command(&["lab", "--output", "json"]).assert().success();
    let steps: Vec<serde_json::Value> = stdout(&assert)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok: Vec<&str> = steps
        .iter()
        .filter(|s| s["status"] == "ok" && s["step"].is_string())
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(ok, ["emulator", "controller", "send", "watch", "down"]);
    let evidence = steps.iter().find(|s| s["event"] == "evidence").unwrap();
    assert_eq!(
        evidence["executions"][0]["properties"]["status"],
        "Succeeded"
    );
    assert_eq!(steps.last().unwrap()["status"], "ok");
}

#[test]
fn the_workshop_steps_keep_one_lab_running_across_commands() {
    let lab = Lab::new();
    // Every replica works 2 s on its message, longer than the 1 s poll (the lab's replicas inherit its
    // environment): were max_executions ignored, the three messages sent below would start executions
    // side by side, and the overlap check would see it.
    let up = lab
        .readme("cargo xtask lab up")
        .env("SIMULATE_WORK", "2s")
        .assert()
        .success();
    assert!(
        stdout(&up).contains("Lab running in the background"),
        "{}",
        stdout(&up)
    );
    let pid = lab.pid().unwrap();
    // One lab per state directory: a second `up` answers with the running one (and its connection
    // string, which a participant may have lost) instead of starting another.
    let again = lab.command(&["lab", "up"]).assert().success();
    let again = stdout(&again);
    assert!(
        again.contains(&format!("A local lab is already running (pid {pid})"))
            && again.contains("cargo xtask lab down"),
        "{again}"
    );
    let connection_string = |text: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("connection string: "))
            .map(str::to_owned)
    };
    assert_eq!(connection_string(&again), connection_string(&stdout(&up)));
    assert!(connection_string(&again).is_some(), "{again}");
    let zero = lab
        .command(&["lab", "send", "--count", "0"])
        .assert()
        .failure();
    assert!(
        String::from_utf8_lossy(&zero.get_output().stderr).contains("--count must be at least 1")
    );

    lab.readme_command("cargo xtask lab send").success();
    let watch = lab.readme_command("cargo xtask lab watch").success();
    let watched = stdout(&watch);
    assert!(watched.contains("Running → Succeeded"), "{watched}");
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("watch_table", table(&watched));
    });

    // Three more messages with max executions 1: three more executions, one after another.
    lab.readme_command("cargo xtask lab send --count 3")
        .success();
    let deadline = Instant::now() + Duration::from_secs(60);
    let executions = loop {
        let executions = lab.executions();
        let succeeded = executions
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["properties"]["status"] == "Succeeded");
        if succeeded.count() == 4 {
            break executions;
        }
        assert!(
            Instant::now() < deadline,
            "4 executions did not succeed: {executions:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // max_executions is 1: each execution starts after the previous one ended, never beside it.
    let parse = |value: &serde_json::Value| {
        time::OffsetDateTime::parse(
            value.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let mut spans: Vec<_> = executions
        .as_array()
        .unwrap()
        .iter()
        .map(|execution| {
            assert_eq!(execution["type"], "Microsoft.App/jobs/executions");
            let properties = &execution["properties"];
            (
                parse(&properties["startTime"]),
                parse(&properties["endTime"]),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].0 <= pair[0].1 && pair[0].1 <= pair[1].0,
            "executions overlap: {executions:#}"
        );
    }
    let table = lab.readme_command("cargo xtask lab executions").success();
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("executions_table", stdout(&table));
    });

    // A body the worker cannot parse as JSON is sent as text/plain, so it is still processed.
    lab.readme_command("cargo xtask lab send --body 'not json'")
        .success();
    lab.command(&["lab", "watch"]).assert().success();

    let down = lab.readme_command("cargo xtask lab down").success();
    assert!(
        stdout(&down).contains(&format!("Stopped the lab (pid {pid})")),
        "{}",
        stdout(&down)
    );
    assert!(!lab.state.path().join("state.json").exists());
    assert!(!is_running(pid), "the lab process is still there");
}

/// Alive and not a zombie (a container's init may never reap the lab after `up` exits).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn down_cleans_up_after_a_crashed_lab() {
    let lab = Lab::new();
    lab.command(&["lab", "up"]).assert().success();
    let pid = lab.pid().unwrap();
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    while is_running(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for step in [&["lab", "send"][..], &["lab", "watch"]] {
        let refused = lab.command(step).assert().failure();
        let said = stderr(&refused);
        assert!(
            said.contains(&format!("is not running any more (pid {pid} exited"))
                && said
                    .contains("run `cargo xtask lab down` to clean up, then `cargo xtask lab up`"),
            "{step:?}: {said}"
        );
    }
    let down = lab.command(&["lab", "down"]).assert().success();
    assert!(
        stdout(&down).contains("had already exited; cleaned up"),
        "{}",
        stdout(&down)
    );
    assert!(!lab.state.path().join("serve.pid").exists());
    // And a new lab starts in the same place.
    lab.command(&["lab", "up"]).assert().success();
    lab.command(&["lab", "down"]).assert().success();
}

#[test]
fn steps_without_a_running_lab_say_how_to_start_one() {
    let lab = Lab::new();
    for step in [
        &["lab", "send"][..],
        &["lab", "watch"],
        &["lab", "executions"],
    ] {
        let assert = lab.command(step).assert().failure();
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        assert!(
            stderr.contains("no local lab is running") && stderr.contains("cargo xtask lab up"),
            "{step:?}: {stderr}"
        );
    }
    let down = lab.command(&["lab", "down"]).assert().success();
    assert!(stdout(&down).contains("No local lab was running"));
}

#[test]
fn a_missing_worker_binary_is_named_with_the_fix() {
    let lab = Lab::new();
    let assert = lab
        .command(&["lab", "--worker-bin", "/nonexistent/servicebus-job"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("/nonexistent/servicebus-job does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cargo build -p aca-job-lab --bin servicebus-job"),
        "{stderr}"
    );
}

#[test]
fn every_command_in_the_workshop_is_exercised() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/README.md"))
            .unwrap();
    let mut in_blocks = false;
    let mut commands = Vec::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_blocks = !in_blocks && line.trim_start().starts_with("```shell");
            continue;
        }
        if in_blocks && let Some(command) = line.trim().strip_prefix("$ ") {
            commands.push(command.to_owned());
        }
    }
    assert!(
        !commands.is_empty(),
        "lab/README.md has no ```shell blocks with `$ ` commands"
    );
    for command in &commands {
        assert!(
            README_COMMANDS.contains(&command.as_str()),
            "lab/README.md shows `{command}`, which no test runs; add it to README_COMMANDS and run it in a test"
        );
    }
    for command in README_COMMANDS {
        assert!(
            commands.iter().any(|c| c == command),
            "`{command}` is tested but not in lab/README.md"
        );
    }
}

#[test]
fn a_failing_job_ends_the_story_with_the_reason_and_still_tears_down() {
    let lab = Lab::new();
    // Every replica exits 1: the first attempt and the tutorial's one retry fail, so the execution fails.
    let assert = lab
        .command(&["lab", "--worker-bin", "/bin/false"])
        .assert()
        .failure();
    let output = stdout(&assert);
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("failing_job_story", story(&output));
        insta::assert_snapshot!("failing_job_error", failure(&output));
    });
    // Said once, in the story: not again as an `error:` line afterwards.
    assert_eq!(stderr(&assert), "", "the error was printed twice");
}

/// The lab's settings file with one key changed, written into `dir`; returns its path.
fn settings_with(dir: &Path, key: &str, value: u64) -> std::path::PathBuf {
    let settings_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform/job.auto.tfvars.json");
    let mut settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(settings_file).unwrap()).unwrap();
    settings[key] = value.into();
    let path = dir.join("job.json");
    std::fs::write(&path, settings.to_string()).unwrap();
    path
}

#[test]
fn a_replica_past_its_timeout_is_stopped_and_its_message_stays_in_the_queue() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let settings_path = settings_with(dir.path(), "replica_timeout_in_seconds", 1);
    // A job that ignores SIGTERM: only the SIGKILL after the grace period ends it.
    let worker = dir.path().join("stubborn-job");
    std::fs::write(&worker, "#!/bin/sh\ntrap 'echo got SIGTERM, ignoring it' TERM\necho working\nwhile :; do sleep 0.1; done\n").unwrap();
    let mut permissions = std::fs::metadata(&worker).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&worker, permissions).unwrap();

    let assert = lab
        .command(&[
            "lab",
            "--settings",
            settings_path.to_str().unwrap(),
            "--worker-bin",
            worker.to_str().unwrap(),
        ])
        .assert()
        .failure();
    let output = stdout(&assert);
    assert!(
        output.contains("working") && output.contains("got SIGTERM, ignoring it"),
        "{output}"
    );
    assert!(
        output.contains("still running 5 s after SIGTERM; killing it (SIGKILL)"),
        "{output}"
    );
    assert!(
        failure(&output).contains("the replica timeout of 1 s was reached"),
        "{output}"
    );
    assert!(
        output.contains("1 message(s) were still in the queue"),
        "the message was lost:\n{output}"
    );
}

/// The workshop's activation trap with the real emulator, controller and worker: with
/// `activation_message_count` 1 in the settings file, one message starts nothing; a second one starts
/// an execution.
#[test]
fn activation_message_count_from_the_settings_file_holds_back_a_single_message() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let settings_path = settings_with(dir.path(), "activation_message_count", 1);

    let up = lab
        .command(&["lab", "up", "--settings", settings_path.to_str().unwrap()])
        .assert()
        .success();
    assert!(
        stdout(&up).contains("activationMessageCount 1"),
        "{}",
        stdout(&up)
    );
    lab.readme_command("cargo xtask lab send").success();
    // Several 1 s polls see the one message; none may start an execution (1 is not more than 1).
    let held = lab
        .command(&["lab", "watch", "--timeout", "3s"])
        .assert()
        .failure();
    let said = failure(&stdout(&held));
    assert!(
        said.contains("(0 started; queue: 1 active)") && said.contains("activation_message_count"),
        "{said}"
    );
    // The file the lab really runs with, not the default one.
    assert!(said.contains(settings_path.to_str().unwrap()), "{said}");
    assert_eq!(lab.executions(), serde_json::json!([]));

    lab.readme_command("cargo xtask lab send").success();
    let watch = lab.readme_command("cargo xtask lab watch").success();
    assert!(
        stdout(&watch).contains("Running → Succeeded"),
        "{}",
        stdout(&watch)
    );
    // The execution took one of the two messages; the one left behind is again not more than 1, so
    // further polls start nothing (with activation 0 the next poll would start a second execution).
    std::thread::sleep(Duration::from_secs(3));
    let executions = lab.executions();
    assert_eq!(
        executions.as_array().unwrap().len(),
        1,
        "the message left behind is not more than activation_message_count 1: {executions:#}"
    );
    // Shaped like Azure's: an ARM resource id that ends with the execution's name.
    let only = &executions[0];
    let id = only["id"].as_str().unwrap_or_default();
    assert!(
        id.starts_with("/subscriptions/")
            && id.contains("/providers/Microsoft.App/jobs/job-rust/executions/")
            && id.ends_with(only["name"].as_str().unwrap()),
        "{only:#}"
    );
    lab.readme_command("cargo xtask lab down").success();
}

/// The issue this answers: three warm `cargo xtask lab` rounds took 19-34 s each because the worker
/// build that xtask starts inherited `cargo run`'s `CARGO_MANIFEST_DIR`, so the worker and xtask rebuilt
/// each other on alternate calls. Run as typed, twice: the second round compiles nothing (cargo's own
/// `Compiling` lines and the lab's "Built the worker" step are the evidence; no clock is read).
#[test]
fn a_second_round_of_cargo_xtask_lab_rebuilds_nothing() {
    let state = tempfile::tempdir().unwrap();
    let round = || {
        let output = cargo_as_typed()
            .args(["xtask", "lab"])
            .env("LAB_STATE_DIR", state.path())
            .env_remove("LAB_WORKER_BIN")
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
        assert!(output.status.success(), "{out}\n{err}");
        assert!(out.contains("Running → Succeeded"), "{out}");
        (out, err)
    };
    // The first round may build: this test's own build used the test suite's feature set.
    round();
    let (out, err) = round();
    assert!(
        !err.lines().any(|l| l.trim_start().starts_with("Compiling")),
        "the second round rebuilt:\n{err}"
    );
    assert!(
        !out.contains("Built the worker"),
        "the second round rebuilt the worker:\n{out}"
    );
}

/// Wait until `pid` has installed a SIGINT handler (tokio's `ctrl_c`), so the signal is not the
/// default action that kills it.
fn wait_for_sigint_handler(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        if caught & (1 << (2 - 1)) != 0 {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} never caught SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start `xtask` with `args` for this lab, send it Ctrl-C's signal once `ready` has been printed (or
/// at once when `ready` is empty), and return its exit code, stdout and stderr.
fn interrupt(lab: &Lab, args: &[&str], ready: &str) -> (Option<i32>, String, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("LAB_WORKER_BIN", worker_bin())
        .env("LAB_STATE_DIR", lab.state.path())
        .env("LAB_AMQP_PORT", "0")
        .env("LAB_HEALTH_PORT", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    while !out.contains(ready) {
        assert!(
            reader.read_line(&mut out).unwrap() > 0,
            "ended before {ready:?}:\n{out}"
        );
    }
    wait_for_sigint_handler(child.id());
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    reader.read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap().code(), out, err)
}

#[test]
fn ctrl_c_ends_the_walkthrough_with_130_and_says_everything_stopped() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    // Activation 1: one message starts nothing, so the walkthrough is still waiting when Ctrl-C comes.
    let settings = settings_with(dir.path(), "activation_message_count", 1);
    let (code, out, err) = interrupt(
        &lab,
        &["lab", "--settings", settings.to_str().unwrap()],
        "Sent 1 message",
    );
    assert_eq!(code, Some(130), "{out}\n{err}");
    let mut filters = filters();
    filters.push((r"\(settings: [^)]*\)", "(settings: [FILE])"));
    insta::with_settings!({ filters => filters }, {
        insta::assert_snapshot!("interrupted_walkthrough", story(&out));
    });
    assert!(out.contains("Nothing is left running"), "{out}");
    assert_eq!(err, "", "no error line after the story");
}

#[test]
fn ctrl_c_ends_watch_with_130_and_the_lab_keeps_running() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_with(dir.path(), "activation_message_count", 1);
    lab.command(&["lab", "up", "--settings", settings.to_str().unwrap()])
        .assert()
        .success();
    lab.readme_command("cargo xtask lab send").success();
    let (code, out, err) = interrupt(&lab, &["lab", "watch"], "");
    assert_eq!(code, Some(130), "{out}\n{err}");
    // The last line says what is left running (live lines about the queue may come before it).
    assert_eq!(
        out.lines().last().unwrap_or_default(),
        " ✘ Stopped watching (Ctrl-C); the lab keeps running, `cargo xtask lab down` stops it",
        "{out}"
    );
    assert_eq!(out.matches('✘').count(), 1, "{out}");
    assert_eq!(err, "");
    // It did keep running.
    lab.readme_command("cargo xtask lab send").success();
    lab.readme_command("cargo xtask lab down").success();
}

#[test]
fn a_taken_port_is_reported_once_before_anything_starts_with_the_flag_up_takes() {
    let lab = Lab::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let refused = lab
        .command(&["lab", "up", "--port", &port.to_string()])
        .assert()
        .failure();
    let said = format!("{}{}", stdout(&refused), stderr(&refused));
    assert_eq!(said.matches("already in use").count(), 1, "{said}");
    assert!(
        said.contains(&format!(
            "port {port} on 127.0.0.1 (AMQP) is already in use"
        )) && said.contains(&format!("`cargo xtask lab up --port {}`", port + 1)),
        "{said}"
    );
    assert!(!said.contains("--listen"), "{said}");
    assert!(
        !lab.state.path().join("serve.pid").exists(),
        "a lab was started"
    );
}

#[test]
fn settings_errors_name_the_key_and_the_file_in_use_once() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let path = settings_with(dir.path(), "max_executions", 1);
    let mut settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    settings["max_executions"] = "five".into();
    std::fs::write(&path, settings.to_string()).unwrap();
    let refused = lab
        .command(&["lab", "--settings", path.to_str().unwrap()])
        .assert()
        .failure();
    let said = format!("{}{}", stdout(&refused), stderr(&refused));
    assert_eq!(
        said.trim(),
        format!(
            "error: the job settings file {} is not valid (the tutorial's values are in \
             terraform/job.auto.tfvars.json): max_executions: expected a whole number, got \"five\"",
            path.display()
        )
    );
}

#[test]
fn up_for_scripts_carries_the_connection_string_as_a_field() {
    let lab = Lab::new();
    let up = lab
        .command(&["lab", "--output", "json", "up"])
        .assert()
        .success();
    let record: serde_json::Value = stdout(&up)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["step"] == "up")
        .unwrap();
    let connection_string = record["connection_string"].as_str().unwrap();
    assert!(
        connection_string.starts_with("Endpoint=sb://127.0.0.1:")
            && connection_string.contains("UseDevelopmentEmulator=true"),
        "{record}"
    );
    assert_eq!(record["queue_name"], "queue-messages");
    lab.readme_command("cargo xtask lab down").success();
}

#[test]
fn a_missing_custom_image_gets_the_command_that_builds_that_tag() {
    let lab = Lab::new();
    let refused = lab
        .command(&["lab", "--runtime", "docker", "--image", "my/job:v9"])
        .assert()
        .failure();
    let said = stderr(&refused);
    assert!(
        said.contains("the worker image my/job:v9 is not on this machine")
            && said.contains(
                "`cargo xtask images --only job && docker tag aca-job-lab/servicebus-job:dev my/job:v9`"
            ),
        "{said}"
    );
}

/// The page a command said it drew (`Timeline: <path> (…` or `Comparison: <path> (…`), read.
fn drawn_page(output: &str, label: &str) -> String {
    let path = output
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split(" (").next())
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{output}"));
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_python_job_walkthrough_ends_with_a_succeeded_execution_and_a_timeline() {
    let lab = Lab::new();
    let assert = lab.readme_command("cargo xtask lab --job python").success();
    let output = stdout(&assert);
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("python_walkthrough_story", story(&output));
    });
    // The replica log is the Python job's own output, naming the message we sent.
    let sent_id = sent_message_id(&output);
    assert!(
        output.contains(&format!(
            "received message {sent_id} (delivery 0, 43 bytes, application/json)"
        )),
        "{output}"
    );
    let page = drawn_page(&output, "Timeline: ");
    assert!(
        page.contains("<svg") && page.contains("Python job"),
        "{page}"
    );
    assert!(
        page.contains("1 message(s) sent · 1 execution(s): 1 Succeeded"),
        "{page}"
    );

    // The same workload with the Rust job, then both on one page.
    lab.readme_command("cargo xtask lab").success();
    let compare = lab
        .readme_command("cargo xtask lab report --compare")
        .success();
    let page = drawn_page(&stdout(&compare), "Comparison: ");
    assert!(
        page.contains("Rust job (job-rust)") && page.contains("Python job (job-python)"),
        "{page}"
    );
    assert_eq!(page.matches("<svg").count(), 2);
}

#[test]
fn the_workshop_steps_run_the_python_job_and_draw_the_running_lab() {
    let lab = Lab::new();
    let up = lab
        .readme_command("cargo xtask lab up --job python")
        .success();
    assert!(stdout(&up).contains("job job-python"), "{}", stdout(&up));
    lab.readme_command("cargo xtask lab send --count 3")
        .success();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let executions = lab.executions();
        let succeeded = executions
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["properties"]["status"] == "Succeeded"
                    && e["name"].as_str().unwrap().starts_with("job-python-")
            })
            .count();
        if succeeded == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 executions did not succeed: {executions:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The running lab's picture: the send of 3 and the three executions, drawn now.
    std::thread::sleep(Duration::from_millis(1200));
    let report = lab.readme_command("cargo xtask lab report").success();
    let page = drawn_page(&stdout(&report), "Timeline: ");
    assert!(
        page.contains("3 message(s) sent · 3 execution(s): 3 Succeeded"),
        "{page}"
    );
    assert!(page.contains("the lab is still running"), "{page}");
    assert_eq!(page.matches("· Succeeded ·").count(), 3, "{page}");
    // `down` keeps the picture (now of the finished lab) and says where it is.
    let down = lab.readme_command("cargo xtask lab down").success();
    let page = drawn_page(&stdout(&down), "Timeline: ");
    assert!(!page.contains("the lab is still running"), "{page}");
    assert!(!lab.state.path().join("state.json").exists());
}
