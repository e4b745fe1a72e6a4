//! `cargo xtask lab --azure` against fake `az` and `terraform` executables.
//!
//! The fakes (`tests/fixtures/azure/fake_cli.py`, symlinked as `az` and `terraform` into a directory put
//! first on PATH) log their argv and replay recorded output chosen by a scenario file; the README next
//! to them says where each recorded shape comes from. The message itself goes to a real broker: our
//! Service Bus emulator, started in this process, through `--servicebus-connection-string`.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use servicebus_emulator::Emulator;
use servicebus_emulator::config::Config;
use tempfile::TempDir;

const QUEUE: &str = "queue-messages";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azure")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A checkout to run the lab from (`ACA_LAB_ROOT`): the repository's ignore files and `terraform/`,
/// so what the fake terraform writes lands in a copy, never in the real work tree.
fn checkout(at: &Path) {
    std::fs::create_dir_all(at.join("terraform")).unwrap();
    for file in [".gitignore", ".dockerignore"] {
        std::fs::copy(workspace().join(file), at.join(file)).unwrap();
    }
    for entry in std::fs::read_dir(workspace().join("terraform")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), at.join("terraform").join(entry.file_name())).unwrap();
        }
    }
}

/// One run of the lab in its own temp dir: fake tools, their log, the runner's state, and (for runs
/// that send) the emulator the message goes to.
struct AzureLab {
    dir: TempDir,
    scenario: &'static str,
    emulator: Option<Emulator>,
}

impl AzureLab {
    fn new(scenario: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in ["az", "terraform"] {
            std::os::unix::fs::symlink(fixtures().join("fake_cli.py"), bin.join(tool)).unwrap();
        }
        checkout(&dir.path().join("checkout"));
        Self {
            dir,
            scenario,
            emulator: None,
        }
    }

    /// A lab whose send reaches a real broker: our emulator, through the connection-string override.
    async fn with_emulator(scenario: &'static str) -> Self {
        let emulator = Emulator::builder()
            .config(Config::with_queues([QUEUE]))
            .listen("127.0.0.1:0".parse().unwrap())
            .health_listen("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        Self {
            emulator: Some(emulator),
            ..Self::new(scenario)
        }
    }

    fn emulator(&self) -> &Emulator {
        self.emulator.as_ref().unwrap()
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("checkout")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    fn command(&self, args: &[&str]) -> Command {
        let path = std::env::join_paths(
            std::iter::once(self.dir.path().join("bin"))
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command
            .args(["lab", "--azure"])
            .args(args)
            .env("PATH", path)
            .env("FAKE_LOG", self.log_path())
            .env(
                "FAKE_SCENARIO",
                fixtures()
                    .join("scenarios")
                    .join(format!("{}.json", self.scenario)),
            )
            .env("LAB_STATE_DIR", self.dir.path().join("state"))
            .env("ACA_LAB_ROOT", self.root())
            .env_remove("ACA_LAB_SERVICEBUS_CONNECTION_STRING")
            .stdin(Stdio::null());
        if let Some(emulator) = &self.emulator {
            command.env(
                "ACA_LAB_SERVICEBUS_CONNECTION_STRING",
                emulator.connection_string(),
            );
        }
        command
    }

    /// Run to the end.
    async fn run(&self, args: &[&str]) -> Output {
        run_to_end(self.command(args)).await
    }

    /// The fakes' log, with runs of the same call (polling, as often as timing allows) folded into one.
    fn calls(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let mut folded: Vec<&str> = log.lines().collect();
        folded.dedup();
        folded.join("\n")
    }

    fn count_calls(&self, command: &str) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(command))
            .count()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Everything that changes from run to run.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"in \d+(\.\d+)? s\.|in \d+m\d{2}s\.", "in [duration]."),
        // Message ids only: the subscription id is a fixed value the snapshots must show.
        (
            r"message id [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "message id [uuid]",
        ),
        (r"\d+ bytes", "[n] bytes"),
        (r"started \d+(\.\d+)? s after", "started [t] after"),
        (r"\d+(\.\d+)? s elapsed", "[t] elapsed"),
        (r"within \d+(\.\d+)? s", "within [t]"),
        (r#""elapsed_ms":\d+"#, r#""elapsed_ms":"[ms]""#),
        // The test's temp directory (tempfile names it `.tmp` and six letters or digits).
        (r"(/[A-Za-z0-9._-]+)*/\.tmp[A-Za-z0-9]{6}", "[tmp]"),
    ]
}

macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({ filters => filters() }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

fn exit_code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

#[test]
fn settings_file_has_the_tutorial_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform/job.auto.tfvars.json");
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // The tutorial's `az containerapp job create` flags, and Container Apps' default polling interval
    // (the tutorial does not set one). The job is ours (Rust), hence its name.
    assert_eq!(
        settings,
        serde_json::json!({
            "job_name": "job-rust",
            "queue_name": "queue-messages",
            "replica_timeout_in_seconds": 86400,
            "replica_retry_limit": 1,
            "replica_completion_count": 1,
            "parallelism": 1,
            "cpu": 0.25,
            "memory": "0.5Gi",
            "min_executions": 0,
            "max_executions": 1,
            "polling_interval_in_seconds": 30,
            "scale_rule_name": "azure-servicebus-queue-rule",
            "scale_rule_type": "azure-servicebus",
            "message_count": 1,
            // KEDA's default; the tutorial does not set it (1 would leave a single message waiting).
            "activation_message_count": 0,
            "env_names": {
                "servicebus_fqdn": "SERVICEBUS_FQDN",
                "managed_identity_client_id": "MANAGED_IDENTITY_CLIENT_ID",
                "queue_name": "SERVICEBUS_QUEUE_NAME"
            }
        })
    );
}

#[tokio::test]
async fn dry_run_prints_every_command_and_runs_none() {
    let lab = AzureLab::new("succeeded");
    let output = lab.run(&["--dry-run"]).await;
    assert_eq!(exit_code(&output), 0, "{output:?}");
    assert_eq!(lab.calls(), "", "a dry run must not start az or terraform");
    snapshot!("dry_run", stdout(&output));

    let output = lab
        .run(&[
            "--dry-run",
            "--keep",
            "--location",
            "swedencentral",
            "--scaler-auth",
            "connection-string",
            "--image-builder",
            "docker",
        ])
        .await;
    let text = stdout(&output);
    assert!(
        text.contains("-var location=swedencentral -var scaler_auth=connection_string -var image_builder=docker"),
        "{text}"
    );
    assert!(
        text.contains("# --keep: no terraform destroy")
            && !text.contains("terraform -chdir=terraform destroy")
    );
    // --keep means no destroy at all: not after a failure either.
    assert!(!text.contains("also runs after a failure"), "{text}");

    // Another settings file (shared `--settings`) is validated, shown, and handed to terraform.
    let custom = lab.dir.path().join("settings.json");
    let mut settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform/job.auto.tfvars.json"),
        )
        .unwrap(),
    )
    .unwrap();
    settings["max_executions"] = 3.into();
    std::fs::write(&custom, settings.to_string()).unwrap();
    let output = lab
        .run(&["--dry-run", "--settings", custom.to_str().unwrap()])
        .await;
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "plan -input=false -out={} -var-file={}",
            lab.dir.path().join("state/terraform/tfplan").display(),
            custom.display()
        )),
        "{text}"
    );
    assert!(text.contains("max executions 3"), "{text}");
    settings["max_executions"] = 0.into();
    std::fs::write(&custom, settings.to_string()).unwrap();
    let output = lab
        .run(&["--dry-run", "--settings", custom.to_str().unwrap()])
        .await;
    assert_eq!(exit_code(&output), 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("max_executions: must be at least 1"),
        "{stderr}"
    );
}

/// The subscription id in `az-account-show.json`: terraform must be pointed at exactly this one.
const SUBSCRIPTION: &str = "8f3c2b1a-4d5e-4f60-9a7b-1c2d3e4f5a6b";

/// `[ARM_SUBSCRIPTION_ID=…] [TF_DATA_DIR=…]` as the fake logs them, for a test's own state directory.
fn tf_env(lab: &AzureLab) -> String {
    format!(
        "[ARM_SUBSCRIPTION_ID={SUBSCRIPTION}] [TF_DATA_DIR={}]",
        lab.dir.path().join("state/terraform/.terraform").display()
    )
}

fn teardown(lab: &AzureLab) -> String {
    format!(
        "terraform -chdir=terraform destroy -input=false -auto-approve {}",
        tf_env(lab)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_then_succeeded_sends_for_real_and_tears_down() {
    let mut lab = AzureLab::with_emulator("succeeded").await;
    // The flag itself (the other tests pass the same value through its environment variable).
    let connection_string = lab.emulator().connection_string();
    let emulator = lab.emulator.take().unwrap();
    let output = lab
        .run(&[
            "--servicebus-connection-string",
            &connection_string,
            "--polling-interval",
            "50ms",
            "--timeout",
            "30s",
        ])
        .await;
    assert_eq!(
        exit_code(&output),
        0,
        "{}\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    snapshot!("succeeded_calls", lab.calls());
    // None (before the send) → Running → Succeeded: three listings, then it stops polling.
    assert_eq!(lab.count_calls("az containerapp job execution list"), 3);
    snapshot!("succeeded_stdout", stdout(&output));

    // The message reached a real broker, and nobody consumed it (the job is fake here).
    let broker = emulator.broker();
    assert_eq!(broker.counts(QUEUE).unwrap().active_message_count, 1);
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lab.dir.path().join("state/last-send.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["queue"], QUEUE);
    let (_, raw) = broker
        .peek(&broker.resolve(QUEUE).unwrap(), 0, 1)
        .pop()
        .unwrap();
    let message_id = record["message_ids"][0].as_str().unwrap();
    assert!(
        raw.windows(message_id.len())
            .any(|w| w == message_id.as_bytes()),
        "the queued message carries the recorded message id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_execution_fails_fast_and_still_tears_down() {
    let lab = AzureLab::with_emulator("failed").await;
    // A deadline far away: only failing fast can end this test quickly.
    let output = lab
        .run(&["--polling-interval", "50ms", "--timeout", "10m"])
        .await;
    assert_eq!(exit_code(&output), 1, "{}", stdout(&output));
    assert!(lab.calls().ends_with(&teardown(&lab)), "{}", lab.calls());
    snapshot!("failed_stdout", stdout(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_triggered_gives_up_at_the_deadline_and_still_tears_down() {
    let lab = AzureLab::with_emulator("never-triggered").await;
    let output = lab
        .run(&["--polling-interval", "100ms", "--timeout", "5s"])
        .await;
    assert_eq!(exit_code(&output), 1, "{}", stdout(&output));
    // The only listed execution predates the send, so it must not count as ours.
    let text = stdout(&output);
    assert!(text.contains("no execution started"), "{text}");
    assert!(lab.calls().ends_with(&teardown(&lab)), "{}", lab.calls());
    snapshot!("never_triggered_calls", lab.calls());
    snapshot!("never_triggered_stdout", text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_message_fails_the_lab_even_after_a_succeeded_execution() {
    let lab = AzureLab::with_emulator("dead-lettered").await;
    let output = lab.run(&["--polling-interval", "50ms"]).await;
    assert_eq!(exit_code(&output), 1, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains(" ✘ Checking queue queue-messages"), "{text}");
    assert!(
        text.contains("1 message(s) in the dead-letter queue"),
        "{text}"
    );
    assert!(lab.calls().ends_with(&teardown(&lab)), "{}", lab.calls());
}

#[tokio::test]
async fn not_logged_in_stops_at_preflight_with_the_fix_and_creates_nothing() {
    let lab = AzureLab::new("not-logged-in");
    let output = lab.run(&[]).await;
    assert_eq!(exit_code(&output), 1);
    let calls = lab.calls();
    assert!(
        !calls.contains("terraform -chdir"),
        "nothing may be provisioned or destroyed: {calls}"
    );
    snapshot!("not_logged_in_calls", calls);
    snapshot!("not_logged_in_stdout", stdout(&output));
}

#[tokio::test]
async fn an_unregistered_provider_is_named_with_the_command_that_registers_it() {
    let lab = AzureLab::new("provider-not-registered");
    let output = lab.run(&[]).await;
    assert_eq!(exit_code(&output), 1);
    let text = stdout(&output);
    assert!(text.contains("resource providers not registered in subscription \"Contoso Dev\": Microsoft.App (NotRegistered)"), "{text}");
    assert!(
        text.contains("az provider register --namespace Microsoft.App --wait"),
        "{text}"
    );
    assert!(
        !text.contains("--namespace Microsoft.ServiceBus --wait"),
        "only the missing one: {text}"
    );
    assert!(!lab.calls().contains("terraform -chdir"), "{}", lab.calls());
}

#[tokio::test]
async fn missing_tools_are_named_with_where_to_get_them() {
    let lab = AzureLab::new("succeeded");
    let empty = lab.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut command = lab.command(&[]);
    command.env("PATH", &empty);
    let output = run_to_end(command).await;
    assert_eq!(exit_code(&output), 1);
    let text = stdout(&output);
    assert!(
        text.contains("`az` (the Azure CLI) is not on PATH: install it"),
        "{text}"
    );
    assert!(
        text.contains("`terraform` is not on PATH: install Terraform 1.9 or newer"),
        "{text}"
    );
    assert_eq!(lab.calls(), "");
}

#[tokio::test]
async fn the_docker_image_builder_needs_docker_and_says_so() {
    let lab = AzureLab::new("succeeded");
    // PATH: the fakes and python3 only, so no docker whatever this machine has.
    let python = lab.dir.path().join("python");
    std::fs::create_dir(&python).unwrap();
    let real_python = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join("python3"))
        .find(|path| path.exists())
        .unwrap();
    std::os::unix::fs::symlink(real_python, python.join("python3")).unwrap();
    let mut command = lab.command(&["--image-builder", "docker"]);
    command.env(
        "PATH",
        std::env::join_paths([lab.dir.path().join("bin"), python]).unwrap(),
    );
    let output = run_to_end(command).await;
    assert_eq!(exit_code(&output), 1);
    let text = stdout(&output);
    assert!(
        text.contains("`docker` is not on PATH, and --image-builder docker needs it"),
        "{text}"
    );
    assert!(
        !text.contains("`az` (the Azure CLI) is not on PATH"),
        "{text}"
    );
    assert_eq!(lab.calls(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_watching_still_tears_down() {
    let lab = AzureLab::with_emulator("running-forever").await;
    let child = lab
        .command(&["--polling-interval", "50ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is watching (the first listing is the send's), then press Ctrl-C.
    wait_for_calls(&lab, "az containerapp job execution list", 2).await;
    let output = ctrl_c_after(&lab, child, "az containerapp job execution list").await;
    assert_eq!(exit_code(&output), 130, "{}", stdout(&output));
    assert!(lab.calls().ends_with(&teardown(&lab)), "{}", lab.calls());
    let text = stdout(&output);
    assert!(
        text.contains("watching was interrupted (Ctrl-C)") && text.contains(" ✔ terraform destroy"),
        "{text}"
    );
}

/// In step mode, Ctrl-C in `watch` stops watching only: nothing is destroyed, and the runner says
/// the lab keeps running (and billing) until `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_the_watch_step_leaves_the_lab_up_and_says_so() {
    let lab = AzureLab::with_emulator("running-forever").await;
    let sent = lab.run(&["send"]).await;
    assert_eq!(exit_code(&sent), 0, "{}", stdout(&sent));
    let child = lab
        .command(&["watch", "--polling-interval", "50ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let listings = lab.count_calls("az containerapp job execution list");
    wait_for_calls(&lab, "az containerapp job execution list", listings + 1).await;
    let output = ctrl_c_after(&lab, child, "az containerapp job execution list").await;
    assert_eq!(exit_code(&output), 130, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains("The lab keeps running, and billing, until `cargo xtask lab --azure down`."),
        "{text}"
    );
    assert!(!lab.calls().contains("destroy"), "{}", lab.calls());
}

#[tokio::test]
async fn ctrl_c_during_apply_stops_terraform_once_and_tears_down() {
    // The fake `terraform apply` would take two minutes; only a forwarded SIGINT ends it early.
    let lab = AzureLab::new("apply-interrupted");
    let child = lab.command(&[]).stdout(Stdio::piped()).spawn().unwrap();
    let output = ctrl_c_after(&lab, child, "terraform -chdir=terraform apply").await;
    assert_eq!(exit_code(&output), 130, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains(" ✘ terraform apply tfplan"), "{text}");
    assert!(
        text.contains(&format!(
            "`terraform -chdir=terraform apply -input=false {}` was interrupted (Ctrl-C)",
            lab.dir.path().join("state/terraform/tfplan").display()
        )),
        "{text}"
    );
    // apply had started, so something may exist: teardown runs, and nothing after apply does.
    assert!(
        lab.calls().ends_with(&format!(
            "terraform -chdir=terraform apply -input=false {plan} {env}\n{teardown}",
            plan = lab.dir.path().join("state/terraform/tfplan").display(),
            env = tf_env(&lab),
            teardown = teardown(&lab)
        )),
        "{}",
        lab.calls()
    );
}

/// Run to the end, off the async runtime, so an emulator in this test keeps serving meanwhile.
async fn run_to_end(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// Once `call` has run, press Ctrl-C (SIGINT to the runner alone) and wait for the runner to end.
async fn ctrl_c_after(lab: &AzureLab, child: std::process::Child, call: &str) -> Output {
    wait_for_call(lab, call).await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

/// Poll the fakes' log until a call shows up (the runner is a separate process).
async fn wait_for_call(lab: &AzureLab, call: &str) {
    wait_for_calls(lab, call, 1).await;
}

/// Poll the fakes' log until a call has run `times` times.
async fn wait_for_calls(lab: &AzureLab, call: &str, times: usize) {
    for _ in 0..600 {
        if lab.count_calls(call) >= times {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("`{call}` never ran {times} time(s): {}", lab.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_object_per_step() {
    let lab = AzureLab::with_emulator("succeeded").await;
    let output = lab
        .run(&["--output", "json", "--polling-interval", "50ms"])
        .await;
    assert_eq!(exit_code(&output), 0);
    let records: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let steps: Vec<String> = records
        .iter()
        .filter_map(|r| {
            Some(format!(
                "{}:{}",
                r.get("step")?.as_str()?,
                r["status"].as_str()?
            ))
        })
        .collect();
    assert_eq!(
        steps,
        [
            "preflight:ok",
            "init:ok",
            "plan:ok",
            "apply:ok",
            "outputs:ok",
            "send:ok",
            "watch:ok",
            "queue:ok",
            "destroy:ok"
        ]
    );
    let watch = records.iter().find(|r| r["step"] == "watch").unwrap();
    assert_eq!(watch["execution"], "job-rust-k3j9x2q");
    assert_eq!(records.last().unwrap()["event"], "end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_by_step_up_send_watch_down() {
    let lab = AzureLab::with_emulator("succeeded").await;
    for (step, expected) in [
        (vec!["up"], "terraform -chdir=terraform apply -input=false"),
        (vec!["send", "--count", "2"], "Sent 2 messages"),
        (vec!["watch", "--polling-interval", "50ms"], "Succeeded"),
        (vec!["down"], "terraform -chdir=terraform destroy"),
    ] {
        let output = lab.run(&step).await;
        assert_eq!(exit_code(&output), 0, "{step:?}: {}", stdout(&output));
        let seen = format!("{}\n{}", stdout(&output), lab.calls());
        assert!(seen.contains(expected), "{step:?}: {seen}");
    }
    let calls = lab.calls();
    assert_eq!(
        calls.matches("destroy").count(),
        1,
        "only `down` tears down: {calls}"
    );
    assert_eq!(
        lab.emulator()
            .broker()
            .counts(QUEUE)
            .unwrap()
            .active_message_count,
        2
    );
}

#[tokio::test]
async fn watch_without_a_recorded_send_says_to_send_first() {
    let lab = AzureLab::new("succeeded");
    let output = lab.run(&["watch"]).await;
    assert_eq!(exit_code(&output), 1);
    let text = stdout(&output);
    assert!(
        text.contains("run `cargo xtask lab --azure send` first"),
        "{text}"
    );
    assert_eq!(lab.calls(), "", "nothing to ask az or terraform yet");
}

#[tokio::test]
async fn executions_lists_the_history_as_a_table_or_as_json() {
    let lab = AzureLab::new("history"); // its first listing: one Running execution
    let output = lab.run(&["executions"]).await;
    assert_eq!(exit_code(&output), 0, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains(" ✔ 1 execution(s) of job-rust"), "{text}");
    // The same table as the local lab's `executions`.
    assert!(
        text.contains(
            "   NAME              STATUS   STARTED               DURATION\n   job-rust-k3j9x2q  Running  "
        ),
        "{text}"
    );

    let output = lab.run(&["executions", "-o", "json"]).await;
    let text = stdout(&output);
    let json = &text[text.find("[\n").unwrap()..text.rfind("\n]").unwrap() + 2];
    let executions: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(executions[0]["name"], "job-rust-k3j9x2q");
    assert_eq!(executions[0]["properties"]["status"], "Failed");
    assert!(!lab.calls().contains("destroy"), "listing never tears down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_destroy_fails_the_run_and_says_what_is_left_and_how_to_finish() {
    let lab = AzureLab::with_emulator("destroy-fails").await;
    let output = lab.run(&["--polling-interval", "50ms"]).await;
    // Everything else succeeded; the teardown did not: that must not read as success.
    assert_eq!(exit_code(&output), 3, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains(" ✘ terraform destroy"), "{text}");
    assert!(
        !text.contains("nothing left running") && !text.starts_with("Done"),
        "{text}"
    );
    for expected in [
        "TEARDOWN FAILED: 3 resource(s) are still in Azure and may be billing:",
        "  azurerm_container_app_environment.lab",
        "  azurerm_resource_group.lab",
        "run `cargo xtask lab --azure down`",
        "`az group delete -n rg-lab-x7k2q9 --yes`",
        "ScheduledForDelete",
        "Teardown FAILED: resources may still be billing",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // What was left behind comes from the state, read after the failed destroy.
    assert!(
        lab.calls().ends_with(&format!(
            "{}\nterraform -chdir=terraform state list {}",
            teardown(&lab),
            tf_env(&lab)
        )),
        "{}",
        lab.calls()
    );
    snapshot!("destroy_failed_stdout", text);
}

#[tokio::test]
async fn a_failed_down_exits_non_zero_with_what_is_left() {
    let lab = AzureLab::new("destroy-fails");
    let output = lab.run(&["down"]).await;
    assert_eq!(exit_code(&output), 3, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains("TEARDOWN FAILED: 3 resource(s) are still in Azure")
            && text.contains("`az group delete -n rg-lab-x7k2q9 --yes`"),
        "{text}"
    );
    // `down` initialises first (a checkout where `up` never ran has no data directory).
    let calls = lab.calls();
    let init = calls.find("terraform -chdir=terraform init").unwrap();
    let destroy = calls.find("terraform -chdir=terraform destroy").unwrap();
    assert!(init < destroy, "{calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_handed_to_terraform_is_the_one_az_is_logged_in_to() {
    let lab = AzureLab::with_emulator("succeeded").await;
    let output = lab.run(&["--polling-interval", "50ms"]).await;
    assert_eq!(exit_code(&output), 0, "{}", stdout(&output));
    let terraform_calls: Vec<String> = lab
        .calls()
        .lines()
        .filter(|l| l.starts_with("terraform -chdir"))
        .map(str::to_owned)
        .collect();
    assert_eq!(terraform_calls.len(), 5, "{terraform_calls:?}");
    for call in terraform_calls {
        assert!(
            call.contains(&format!("[ARM_SUBSCRIPTION_ID={SUBSCRIPTION}]")),
            "{call}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_listings_are_retried_and_reported_then_the_watch_succeeds() {
    let lab = AzureLab::with_emulator("listing-flaky").await;
    let output = lab.run(&["--polling-interval", "50ms"]).await;
    assert_eq!(exit_code(&output), 0, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains("listing failed (1 of 5 in a row allowed), retrying")
            && text.contains("listing failed (2 of 5 in a row allowed), retrying"),
        "{text}"
    );
    assert!(
        text.contains(" ✔ Execution job-rust-k3j9x2q Succeeded"),
        "{text}"
    );
    // One listing before the send, two failures, Running, Succeeded.
    assert_eq!(lab.count_calls("az containerapp job execution list"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_listing_before_the_send_is_retried_too() {
    let lab = AzureLab::with_emulator("listing-flaky-before-send").await;
    let output = lab.run(&["--polling-interval", "50ms"]).await;
    assert_eq!(exit_code(&output), 0, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains("listing failed (1 of 5 in a row allowed), retrying")
            && text.contains(" ✔ Sent 1 message"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_that_keep_failing_end_the_watch_with_the_command_and_its_stderr() {
    let lab = AzureLab::with_emulator("listing-broken").await;
    let output = lab
        .run(&["--polling-interval", "50ms", "--timeout", "10m"])
        .await;
    assert_eq!(exit_code(&output), 1, "{}", stdout(&output));
    let text = stdout(&output);
    for expected in [
        " ✘ Watching `az containerapp job execution list`",
        "listing the executions failed 5 times in a row",
        "`az containerapp job execution list -n job-rust -g rg-lab-x7k2q9 -o json` failed (exit status: 1)",
        "ERROR: (TooManyRequests) Number of 'read' requests",
        " ✔ terraform destroy",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(lab.calls().ends_with(&teardown(&lab)), "{}", lab.calls());
    // One listing before the send, then five failures.
    assert_eq!(lab.count_calls("az containerapp job execution list"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ignores_an_execution_listed_before_the_send_whatever_its_start_time() {
    let lab = AzureLab::with_emulator("earlier-execution").await;
    for step in [
        &["up"][..],
        &["send"],
        &["watch", "--polling-interval", "50ms"],
    ] {
        let output = lab.run(step).await;
        assert_eq!(exit_code(&output), 0, "{step:?}: {}", stdout(&output));
        if step[0] == "watch" {
            // The earlier execution Succeeded and its startTime is after the send by this machine's
            // clock; only the name list recorded at the send tells it is not ours.
            let text = stdout(&output);
            assert!(
                text.contains(" ✔ Execution job-rust-k3j9x2q Succeeded")
                    && !text.contains("job-rust-b4f0re1 Succeeded"),
                "{text}"
            );
        }
    }
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lab.dir.path().join("state/last-send.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["executions_before"],
        serde_json::json!(["job-rust-b4f0re1"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_fails_the_send_at_once_naming_it() {
    // The broker has no `queue-messages`; a retry loop would run for the whole --role-wait.
    let emulator = Emulator::builder()
        .config(Config::with_queues(["another-queue"]))
        .listen("127.0.0.1:0".parse().unwrap())
        .health_listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let lab = AzureLab {
        emulator: Some(emulator),
        ..AzureLab::new("succeeded")
    };
    let output = lab.run(&["send", "--role-wait", "30m"]).await;
    assert_eq!(exit_code(&output), 1, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains("hint: queue `queue-messages` does not exist on 127.0.0.1"),
        "{text}"
    );
    assert!(!text.contains("waiting for the Data Sender role"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_send_is_retried_until_the_role_wait_ends() {
    let lab = AzureLab::with_emulator("succeeded").await;
    // A key the emulator does not know: the broker refuses the token, as while a role propagates.
    let wrong: Vec<String> = lab
        .emulator()
        .connection_string()
        .split(';')
        .map(|part| match part.split_once('=') {
            Some(("SharedAccessKey", _)) => "SharedAccessKey=bm90LXRoZS1rZXk=".to_owned(),
            _ => part.to_owned(),
        })
        .collect();
    let wrong = wrong.join(";");
    let mut command = lab.command(&["send", "--role-wait", "1500ms"]);
    command.env("ACA_LAB_SERVICEBUS_CONNECTION_STRING", wrong);
    let output = run_to_end(command).await;
    assert_eq!(exit_code(&output), 1, "{}", stdout(&output));
    let text = stdout(&output);
    assert!(
        text.contains("hint: still unauthorized after --role-wait 1.50 s"),
        "{text}"
    );
}

#[tokio::test]
async fn an_az_cli_older_than_the_sign_in_needs_is_refused_with_the_upgrade() {
    let lab = AzureLab::new("az-too-old");
    let output = lab.run(&[]).await;
    assert_eq!(exit_code(&output), 1);
    let text = stdout(&output);
    assert!(
        text.contains("az 2.53.1 is too old") && text.contains("`az upgrade`"),
        "{text}"
    );
    assert!(!lab.calls().contains("terraform -chdir"), "{}", lab.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_the_work_tree_and_git_status_stays_clean() {
    let lab = AzureLab::with_emulator("succeeded").await;
    let root = lab.root();
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .args(["-c", "user.name=lab", "-c", "user.email=lab@example.com"])
            .args(args)
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "checkout"]);
    // The default state directory (in the checkout), as a participant has it.
    let mut command = lab.command(&["--polling-interval", "50ms", "--keep"]);
    command.env_remove("LAB_STATE_DIR");
    let output = run_to_end(command).await;
    assert_eq!(exit_code(&output), 0, "{}", stdout(&output));

    assert_eq!(git(&["status", "--porcelain", "--untracked-files=all"]), "");
    let terraform_dir = root.join(".lab/azure/terraform");
    for file in ["terraform.tfstate", "terraform.tfstate.backup", "tfplan"] {
        let text = std::fs::read_to_string(terraform_dir.join(file)).unwrap();
        assert!(
            text.contains("FAKE-SECRET"),
            "{file} is where the secrets went"
        );
    }
    for file in [
        "terraform.tfstate",
        "terraform.tfstate.backup",
        "tfplan",
        ".terraform",
    ] {
        assert!(
            !root.join("terraform").join(file).exists(),
            "terraform/{file} must not be written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_left_in_the_work_tree_by_an_older_lab_is_moved_not_forgotten() {
    let lab = AzureLab::new("destroy-fails");
    let legacy = lab.root().join("terraform/terraform.tfstate");
    std::fs::write(&legacy, r#"{"resources": ["the running lab"]}"#).unwrap();
    std::fs::write(lab.root().join("terraform/tfplan"), "old plan").unwrap();
    let output = lab.run(&["down"]).await;
    let text = stdout(&output);
    assert!(text.contains("state moved out of the work tree"), "{text}");
    assert!(!legacy.exists() && !lab.root().join("terraform/tfplan").exists());
    let moved = lab.dir.path().join("state/terraform/terraform.tfstate");
    assert_eq!(
        std::fs::read_to_string(moved).unwrap(),
        r#"{"resources": ["the running lab"]}"#
    );
}

#[test]
fn the_fake_cli_matches_a_rule_only_with_its_words_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.json");
    std::fs::write(
        &scenario,
        r#"{"rules": [{"when": "az show provider", "then": {"stdout": "az-version.json"}},
                      {"when": "az provider show", "then": {"stdout": "az-provider-registered.tsv"}}]}"#,
    )
    .unwrap();
    let az = dir.path().join("az");
    std::os::unix::fs::symlink(fixtures().join("fake_cli.py"), &az).unwrap();
    let run = |args: &[&str]| {
        Command::new(&az)
            .args(args)
            .env("FAKE_SCENARIO", &scenario)
            .env("FAKE_LOG", dir.path().join("log"))
            .output()
            .unwrap()
    };
    // `show provider` is not `provider show`: the second rule answers.
    let output = run(&["provider", "show", "--namespace", "Microsoft.App"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "Registered");
    // Neither rule matches these words in this order.
    let output = run(&["show", "--namespace", "x"]);
    assert_eq!(output.status.code(), Some(97), "{output:?}");
}
