//! The `servicebus-emulator` binary as a user runs it: real process, real ports, real signals.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;

mod common;

use common::free_port;

/// A command for the binary with the emulator's environment overrides cleared, so the host's
/// environment cannot change what a test sees.
fn emulator() -> Command {
    let mut cmd = Command::new(cargo_bin("servicebus-emulator"));
    for var in [
        "SERVICEBUS_EMULATOR_CONFIG",
        "SERVICEBUS_EMULATOR_LISTEN",
        "SERVICEBUS_EMULATOR_HEALTH_LISTEN",
        "SERVICEBUS_EMULATOR_LOG_FORMAT",
        "SERVICEBUS_EMULATOR_TLS_LISTEN",
        "SERVICEBUS_EMULATOR_TLS_CERT",
        "SERVICEBUS_EMULATOR_TLS_KEY",
        "SERVICEBUS_EMULATOR_HTTPS_LISTEN",
        "SERVICEBUS_EMULATOR_URL",
        "SERVICEBUS_EMULATOR_DATA_DIR",
        "EMULATOR_HTTP_PORT",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A Config.json with `json` in a fresh temporary directory (kept alive by the returned guard).
fn config_file(json: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Config.json");
    std::fs::write(&file, json).unwrap();
    (dir, file)
}

fn ephemeral() -> [&'static str; 4] {
    ["--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"]
}

/// Log lines carry timestamps; keep only the `error:`/`warning:` lines a user reads.
fn user_lines(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("error:") || l.starts_with("warning:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn help_describes_the_options() {
    let out = emulator().arg("--help").output().unwrap();
    assert!(out.status.success());
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}

/// A malformed Config.json is refused before anything listens, naming the file, the JSON path and
/// the fix.
#[test]
fn malformed_config_names_path_and_fix() {
    let (_dir, file) = config_file(
        r#"{"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": [
            {"Name": "a", "Properties": {"LockDuration": "PT1M"}},
            {"Name": "b", "Properties": {"LockDuration": "1 minute"}}]}]}}"#,
    );
    let out = emulator()
        .arg("--config")
        .arg(&file)
        .args(ephemeral())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no ready line for a refused config");
    let stderr = user_lines(&out.stderr).replace(&file.display().to_string(), "[CONFIG]");
    insta::assert_snapshot!(stderr);
}

/// Unsupported-but-set properties are warned about at start, and the emulator still starts.
#[test]
fn unsupported_properties_are_warned_about() {
    let (_dir, file) = config_file(
        r#"{"UserConfig": {"Namespaces": [{"Name": "sbemulatorns", "Queues": [
            {"Name": "q", "Properties": {"RequiresSession": true, "Colour": "blue"}}], "Topics": [{"Name": "t"}]}]}}"#,
    );
    let mut running = Running::start(emulator().arg("--config").arg(&file).args(ephemeral()));
    running.wait_ready();
    let out = running.stop();
    assert!(out.status.success());
    insta::assert_snapshot!(user_lines(&out.stderr));
}

/// The environment overrides the defaults, as in a container (`SERVICEBUS_EMULATOR_CONFIG` etc.).
#[test]
fn environment_overrides_apply() {
    let (_dir, file) = config_file(r#"{"UserConfig": {"Namespaces": []}}"#);
    let out = emulator()
        .env("SERVICEBUS_EMULATOR_CONFIG", &file)
        .env("SERVICEBUS_EMULATOR_LISTEN", "127.0.0.1:0")
        .env("SERVICEBUS_EMULATOR_HEALTH_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = user_lines(&out.stderr).replace(&file.display().to_string(), "[CONFIG]");
    assert_eq!(
        stderr,
        "error: [CONFIG]: UserConfig.Namespaces: is empty; add one namespace with at least one queue"
    );
    let out = emulator()
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid value 'not-an-address' for '--listen <ADDR>'")
    );
}

/// `EMULATOR_HTTP_PORT`, the official emulator's variable, moves the HTTP listener (health and the
/// administration API) to that port.
#[test]
fn emulator_http_port_sets_the_http_port() {
    let port = free_port();
    let mut running = Running::start(
        emulator()
            .args(ephemeral())
            .env("EMULATOR_HTTP_PORT", port.to_string()),
    );
    running.wait_ready();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(running.stop().status.success());
}

/// Start with `flag` (`--listen` or `--health-listen`) on a port another socket holds and the other
/// listener on a free port; expects exit 1 and returns the error lines with the port masked.
fn error_with_port_taken(flag: &str) -> String {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let other = if flag == "--listen" {
        "--health-listen"
    } else {
        "--listen"
    };
    let out = emulator()
        .args([flag, &addr, other, "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    user_lines(&out.stderr).replace(&addr, "127.0.0.1:[PORT]")
}

/// When the health port is the one taken, the fix names `--health-listen`, not `--listen`.
#[test]
fn health_port_in_use_names_the_health_flag() {
    insta::assert_snapshot!(error_with_port_taken("--health-listen"));
}

#[test]
fn port_in_use_is_a_clear_error() {
    insta::assert_snapshot!(error_with_port_taken("--listen"));
}

/// The ready line is printed on stdout once both ports accept, and SIGTERM stops the process cleanly.
#[test]
fn prints_ready_line_and_stops_on_sigterm() {
    let mut running = Running::start(emulator().args(ephemeral()));
    let first_line = running.wait_ready();
    assert_eq!(first_line, servicebus_emulator::READY_LINE);
    let out = running.stop();
    assert!(
        out.status.success(),
        "exit status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped"), "{stderr}");
}

/// `--log-format json` makes every log line on stderr one JSON object (for log collectors).
#[test]
fn json_logs_are_one_object_per_line() {
    let mut running = Running::start(emulator().args(ephemeral()).args(["--log-format", "json"]));
    running.wait_ready();
    let out = running.stop();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let messages: Vec<String> = stderr
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(messages.iter().any(|m| m == "ready"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "stopped"), "{messages:?}");
}

/// `--tls-listen` needs a certificate and key; a file that cannot be used is named with the fix,
/// before anything listens.
#[test]
fn tls_settings_come_together_and_bad_files_are_named() {
    let out = emulator()
        .args(ephemeral())
        .args(["--tls-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tls-cert <FILE>") && stderr.contains("--tls-key <FILE>"),
        "{stderr}"
    );

    let out = emulator()
        .args(ephemeral())
        .args(["--tls-listen", "127.0.0.1:0"])
        .args(["--tls-cert", "/nonexistent/server.pem"])
        .args(["--tls-key", "/nonexistent/server.key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(user_lines(&out.stderr));
}

/// With PEM files from a throwaway CA, the TLS port completes a handshake for `localhost` and
/// answers the AMQP header inside TLS, as Azure does on 5671.
#[test]
fn serves_amqp_inside_tls_from_pem_files() {
    use std::io::Write as _;
    use std::sync::Arc;

    let ca = servicebus_emulator::tls::TestCa::new().unwrap();
    let server = ca.issue(&["localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&cert_file, &server.certificate_pem).unwrap();
    std::fs::write(&key_file, &server.key_pem).unwrap();
    let port = free_port();

    let mut running = Running::start(
        emulator()
            .args(ephemeral())
            .args(["--tls-listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&cert_file)
            .arg("--tls-key")
            .arg(&key_file),
    );
    running.wait_ready();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.certificate_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(client, tcp);
    let amqp_header = *b"AMQP\x00\x01\x00\x00";
    tls.write_all(&amqp_header).unwrap();
    let mut answer = [0u8; 8];
    tls.read_exact(&mut answer).unwrap();
    assert_eq!(answer, amqp_header);
    drop(tls);
    assert!(running.stop().status.success());
}

/// `--https-listen` serves the HTTP routes inside TLS with the same certificate flags (no
/// `--tls-listen` needed); asked for on the command line without a certificate it is a usage error,
/// while the container image's default (the environment variable) waits quietly for one.
#[test]
fn https_listen_serves_the_http_routes_inside_tls() {
    use std::io::Write as _;
    use std::sync::Arc;

    let out = emulator()
        .args(ephemeral())
        .args(["--https-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--https-listen needs --tls-cert <FILE> and --tls-key <FILE>"),
        "{stderr}"
    );

    let port = free_port();
    let mut running = Running::start(emulator().args(ephemeral()).env(
        "SERVICEBUS_EMULATOR_HTTPS_LISTEN",
        format!("127.0.0.1:{port}"),
    ));
    running.wait_ready();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no certificate, no HTTPS"
    );
    assert!(running.stop().status.success());

    let ca = servicebus_emulator::tls::TestCa::new().unwrap();
    let server = ca.issue(&["localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&cert_file, &server.certificate_pem).unwrap();
    std::fs::write(&key_file, &server.key_pem).unwrap();
    let mut running = Running::start(
        emulator()
            .args(ephemeral())
            .env(
                "SERVICEBUS_EMULATOR_HTTPS_LISTEN",
                format!("127.0.0.1:{port}"),
            )
            .arg("--tls-cert")
            .arg(&cert_file)
            .arg("--tls-key")
            .arg(&key_file),
    );
    running.wait_ready();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.certificate_der()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let client =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(client, tcp);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    // The server closes after `Connection: close`; rustls reports a missing close_notify, if any,
    // after the data.
    let _ = tls.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with(r#"{"status":"healthy"}"#),
        "{answer}"
    );
    drop(tls);
    assert!(running.stop().status.success());
}

/// A spawned emulator whose stdout is read line by line on a thread.
struct Running {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The first stdout line; the generous bound only keeps a broken build from hanging the suite.
    fn wait_ready(&mut self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let mut stderr = String::new();
                let _ = self
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr);
                panic!("no ready line ({e}); stderr: {stderr}");
            }
        }
    }

    /// Send SIGTERM (as a container runtime does) and collect the exit status and stderr.
    fn stop(mut self) -> std::process::Output {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut stderr = Vec::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
        let status = self.child.wait().unwrap();
        std::process::Output {
            status,
            stdout: Vec::new(),
            stderr,
        }
    }
}
