//! The production path, offline: the real `servicebus-job` binary configured as Container Apps runs
//! it (`SERVICEBUS_FQDN` + `MANAGED_IDENTITY_CLIENT_ID`, a token from the platform's identity endpoint
//! at `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, AMQP over TLS, the token as a `jwt` CBS put-token) against
//! the embedded emulator's TLS listener and a loopback identity endpoint.
//!
//! How the job reaches a loopback port while keeping Azure's configuration: `SERVICEBUS_FQDN` stays a
//! namespace name (`mylab.servicebus.windows.net`, which goes into token audiences and the AMQP open),
//! and `SERVICEBUS_CUSTOM_ENDPOINT=sb://localhost:<port>` moves only the socket, as the Azure SDKs'
//! custom endpoint address does for gateways. A port in `SERVICEBUS_FQDN` was the alternative, but it
//! would change the token audience (`sb://host:port/queue`) into something no Azure namespace sends,
//! and the FQDN would no longer be the one Container Apps is given. TLS checks the host it connects
//! to, so the emulator's certificate is for `localhost` (and 127.0.0.1), signed by a throwaway CA made
//! here (the emulator's `tls::TestCa`, rcgen underneath) that the job trusts through `SERVICEBUS_CA_FILE`.

#[path = "support/identity.rs"]
mod identity;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aca_job_lab::servicebus::{ConnectionConfig, ServiceBusClient, ServiceBusMessage};
use servicebus_emulator::auth::jwt::make_test_token;
use servicebus_emulator::tls::TestCa;
use servicebus_emulator::{Emulator, TlsIdentity};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const JOB: &str = env!("CARGO_BIN_EXE_servicebus-job");
const QUEUE: &str = "queue-messages";
const FQDN: &str = "mylab.servicebus.windows.net";
const CLIENT_ID: &str = "6d3f1c2e-0000-4000-8000-0000000071c5";
const SERVICE_BUS: &str = "https://servicebus.azure.net";

/// A throwaway CA (its certificate in `ca.pem`, in a directory that lives as long as this) and a
/// server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    dir: tempfile::TempDir,
    server: TlsIdentity,
}

impl Pki {
    fn new() -> Pki {
        let ca = TestCa::new().unwrap();
        let server = ca
            .issue(&["localhost", "127.0.0.1"])
            .unwrap()
            .identity()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.certificate_pem()).unwrap();
        Pki { dir, server }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// The emulator with its plain listener (for the test's own sender) and a TLS listener (for the job).
async fn emulator(pki: &Pki) -> Emulator {
    Emulator::builder()
        .loopback()
        .tls("127.0.0.1:0".parse().unwrap(), pki.server.clone())
        .start()
        .await
        .unwrap()
}

async fn send(emu: &Emulator, n: usize) {
    let (config, _) = ConnectionConfig::from_connection_string(&emu.connection_string()).unwrap();
    let mut client = ServiceBusClient::connect(&config).await.unwrap();
    let mut sender = client.sender(QUEUE).await.unwrap();
    let messages: Vec<_> = (0..n)
        .map(|i| ServiceBusMessage::new(format!(r#"{{"order":{i}}}"#)))
        .collect();
    sender.send_all(messages).await.unwrap();
    sender.close().await.unwrap();
    client.close().await.unwrap();
}

/// A loopback Container Apps identity endpoint handing out `token(expires_on)`; returns its URL and
/// the requests it sees.
async fn identity_endpoint(
    token: impl Fn(u64) -> String + Send + 'static,
) -> (String, mpsc::UnboundedReceiver<identity::IdentityRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = identity::endpoint_url(&listener);
    let (seen, requests) = mpsc::unbounded_channel();
    tokio::spawn(identity::serve(
        listener,
        3600,
        CLIENT_ID,
        move |_, expires_on| token(expires_on),
        seen,
    ));
    (url, requests)
}

/// The job with exactly the environment Container Apps gives it (plus the endpoint and CA that
/// point it at the emulator).
fn job(emu: &Emulator, identity_url: &str, ca_file: Option<&Path>) -> std::process::Command {
    let tls = emu.tls_addr().expect("the emulator has a TLS listener");
    let mut cmd = std::process::Command::new(JOB);
    cmd.env_clear()
        .env("SERVICEBUS_FQDN", FQDN)
        .env("MANAGED_IDENTITY_CLIENT_ID", CLIENT_ID)
        .env("IDENTITY_ENDPOINT", identity_url)
        .env("IDENTITY_HEADER", identity::IDENTITY_HEADER)
        .env("SERVICEBUS_QUEUE_NAME", QUEUE)
        .env(
            "SERVICEBUS_CUSTOM_ENDPOINT",
            format!("sb://localhost:{}", tls.port()),
        )
        .env("MAX_MESSAGES", "0")
        .env("MAX_WAIT", "1s")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    if let Some(ca_file) = ca_file {
        cmd.env("SERVICEBUS_CA_FILE", ca_file);
    }
    cmd
}

/// Runs the job to completion off the runtime threads (which serve the emulator); its exit code and
/// its log lines (stdout, JSON) followed by stderr.
async fn run(cmd: std::process::Command) -> (i32, String) {
    let mut cmd = assert_cmd::Command::from_std(cmd);
    cmd.timeout(Duration::from_secs(120));
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn log_line(output: &str, message: &str) -> Option<serde_json::Value> {
    output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == message)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_drains_a_queue_over_tls_with_a_managed_identity_token() {
    let pki = Pki::new();
    let emu = emulator(&pki).await;
    send(&emu, 3).await;
    // What Entra ID gives a managed identity for Service Bus: aud = the resource, exp = expires_on.
    let (identity_url, mut requests) = identity_endpoint(|expires_on| {
        make_test_token(SERVICE_BUS, UNIX_EPOCH + Duration::from_secs(expires_on))
    })
    .await;

    let (code, output) = run(job(&emu, &identity_url, Some(&pki.ca_file()))).await;

    assert_eq!(code, 0, "{output}");
    let receiving = log_line(&output, "receiving").unwrap_or_else(|| panic!("{output}"));
    assert_eq!(receiving["tls"], true, "{receiving}");
    assert_eq!(receiving["namespace"], FQDN);
    let summary = log_line(&output, "job finished").unwrap_or_else(|| panic!("{output}"));
    assert_eq!(summary["received"], 3, "{summary}");
    assert_eq!(summary["completed"], 3, "{summary}");
    let counts = emu.broker().counts(QUEUE).unwrap();
    assert_eq!(
        (
            counts.active_message_count,
            counts.dead_letter_message_count
        ),
        (0, 0)
    );
    // The token came from the identity endpoint, for this identity, with the platform's header.
    let request = requests.recv().await.unwrap();
    assert!(
        request
            .request_line
            .contains(&format!("client_id={CLIENT_ID}")),
        "{request:?}"
    );
    assert_eq!(
        request.headers.get("x-identity-header").map(String::as_str),
        Some(identity::IDENTITY_HEADER)
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_jwt_is_refused_and_the_job_says_why() {
    let pki = Pki::new();
    let emu = emulator(&pki).await;
    // The endpoint says the token is fresh, but its exp passed an hour ago (a clock or cache bug).
    let expired = UNIX_EPOCH + Duration::from_secs(unix_now() - 3600);
    let (identity_url, _requests) =
        identity_endpoint(move |_| make_test_token(SERVICE_BUS, expired)).await;

    let (code, output) = run(job(&emu, &identity_url, Some(&pki.ca_file()))).await;

    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "the broker refused the token for sb://{FQDN}/{QUEUE}"
        )) && output.contains("the JWT expired at"),
        "{output}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_for_another_service_is_refused_and_the_job_says_why() {
    let pki = Pki::new();
    let emu = emulator(&pki).await;
    // A token for Azure Resource Manager: the classic wrong scope.
    let (identity_url, _requests) = identity_endpoint(|expires_on| {
        make_test_token(
            "https://management.azure.com",
            UNIX_EPOCH + Duration::from_secs(expires_on),
        )
    })
    .await;

    let (code, output) = run(job(&emu, &identity_url, Some(&pki.ca_file()))).await;

    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("audience (aud) is https://management.azure.com")
            && output.contains("https://servicebus.azure.net/.default"),
        "{output}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused_naming_the_setting() {
    let pki = Pki::new();
    let emu = emulator(&pki).await;
    send(&emu, 1).await;
    let (identity_url, _requests) = identity_endpoint(|expires_on| {
        make_test_token(SERVICE_BUS, UNIX_EPOCH + Duration::from_secs(expires_on))
    })
    .await;

    // No SERVICEBUS_CA_FILE: only the public roots, which do not know the throwaway CA.
    let (code, output) = run(job(&emu, &identity_url, None)).await;

    assert_eq!(code, 1, "{output}");
    let port = emu.tls_addr().unwrap().port();
    assert!(
        output.contains(&format!(
            "the TLS certificate of localhost:{port} was refused (UnknownIssuer: it is signed by a CA this job does not trust)"
        )) && output.contains("SERVICEBUS_CA_FILE"),
        "{output}"
    );
    // Nothing was taken from the queue.
    assert_eq!(emu.broker().counts(QUEUE).unwrap().active_message_count, 1);
    emu.shutdown().await;
}
