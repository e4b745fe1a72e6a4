//! Configuration errors from the real binary: non-zero exit (2), and a message naming the
//! variable and the fix. Snapshots keep the wording honest.

use assert_cmd::Command;

fn job() -> Command {
    let mut cmd = Command::cargo_bin("servicebus-job").unwrap();
    // Only what each test sets: nothing from the developer's shell leaks in.
    cmd.env_clear();
    cmd
}

fn run(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap();
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    format!(
        "exit code: {:?}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn missing_queue_name() {
    let out = run(job().env(
        "SERVICEBUS_CONNECTION_STRING",
        "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
    ));
    insta::assert_snapshot!(out);
}

#[test]
fn malformed_connection_string() {
    let out = run(job()
        .env("SERVICEBUS_CONNECTION_STRING", "Endpoint=localhost:5672;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=TOPSECRETKEY")
        .env("SERVICEBUS_QUEUE_NAME", "queue-messages"));
    assert!(
        !out.contains("TOPSECRETKEY"),
        "the key must not be printed: {out}"
    );
    insta::assert_snapshot!(out);
}

#[test]
fn neither_fqdn_nor_connection_string() {
    let out = run(job().env("SERVICEBUS_QUEUE_NAME", "queue-messages"));
    insta::assert_snapshot!(out);
}

#[test]
fn both_fqdn_and_connection_string() {
    let out = run(job()
        .env("SERVICEBUS_QUEUE_NAME", "queue-messages")
        .env("SERVICEBUS_FQDN", "mylab.servicebus.windows.net")
        .arg("--connection-string")
        .arg("Endpoint=sb://localhost;SharedAccessKeyName=R;SharedAccessKey=K;UseDevelopmentEmulator=true"));
    insta::assert_snapshot!(out);
}

#[test]
fn flag_value_that_is_not_a_number_names_the_flag() {
    let out = run(job()
        .env("SERVICEBUS_QUEUE_NAME", "queue-messages")
        .env("SERVICEBUS_FQDN", "mylab.servicebus.windows.net")
        .args(["--max-messages", "all"]));
    insta::assert_snapshot!(out);
}

#[test]
fn ca_file_that_does_not_exist() {
    let out = run(job()
        .env("SERVICEBUS_QUEUE_NAME", "queue-messages")
        .env("SERVICEBUS_FQDN", "mylab.servicebus.windows.net")
        .env("SERVICEBUS_CA_FILE", "/nonexistent/ca.pem"));
    insta::assert_snapshot!(out);
}

#[test]
fn ca_file_without_a_certificate_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = run(job()
        .current_dir(dir.path())
        .env("SERVICEBUS_QUEUE_NAME", "queue-messages")
        .env("SERVICEBUS_FQDN", "mylab.servicebus.windows.net")
        .args(["--ca-file", "key.pem"]));
    insta::assert_snapshot!(out);
}

#[test]
fn ca_file_with_a_plain_emulator_connection() {
    let out = run(job()
        .env("SERVICEBUS_QUEUE_NAME", "queue-messages")
        .env("SERVICEBUS_CONNECTION_STRING", "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;")
        .env("SERVICEBUS_CA_FILE", "/any/ca.pem"));
    insta::assert_snapshot!(out);
}

#[test]
fn custom_endpoint_that_is_not_an_address() {
    let out = run(job()
        .env("SERVICEBUS_QUEUE_NAME", "queue-messages")
        .env("SERVICEBUS_FQDN", "mylab.servicebus.windows.net")
        .env("SERVICEBUS_CUSTOM_ENDPOINT", "sb://localhost:amqps"));
    insta::assert_snapshot!(out);
}
