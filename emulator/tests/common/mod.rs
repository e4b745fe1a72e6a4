//! Shared by the Python peer tests: find the interpreter, run one scenario, read its JSON.
// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

/// The interpreter: `ACA_LAB_PYTHON`, else `<workspace>/.venv`, made on first use with the pinned SDK
/// (`aca_lab_testkit::python`). Without one the tests fail; they never pass silently.
pub fn python() -> PathBuf {
    aca_lab_testkit::python::peer()
}

/// Run `tests/python/<script> <name>` with `env`; returns the JSON of its last stdout line. Panics
/// with the script's output on failure or after 120 s.
pub async fn run_scenario(script: &str, name: &str, env: &[(&str, String)]) -> Value {
    run_script(script, &[name], env).await
}

/// Run `tests/python/<script> <args>` with `env`; returns the JSON of its last stdout line. Panics
/// with the script's output on failure or after 120 s.
pub async fn run_script(script: &str, args: &[&str], env: &[(&str, String)]) -> Value {
    let name = std::iter::once(script)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let child = tokio::process::Command::new(python())
        .arg(&script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .unwrap_or_else(|_| panic!("scenario {name} did not finish within 120 s"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario {name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("scenario {name} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// A client's attach: `address` is the node (the source when the client receives, the target when it
/// sends); the other terminus is named after the link.
pub fn attach(
    name: &str,
    handle: u32,
    client_role: fe2o3_amqp_types::definitions::Role,
    address: &str,
    snd_settle_mode: fe2o3_amqp_types::definitions::SenderSettleMode,
    rcv_settle_mode: fe2o3_amqp_types::definitions::ReceiverSettleMode,
) -> fe2o3_amqp_types::performatives::Performative {
    use fe2o3_amqp_types::definitions::Role;
    use fe2o3_amqp_types::messaging::{Source, Target, TargetArchetype};
    use fe2o3_amqp_types::performatives::{Attach, Performative};
    let (source, target) = match client_role {
        Role::Receiver => (address.to_string(), format!("receiver-link-{name}")),
        Role::Sender => (format!("sender-link-{name}"), address.to_string()),
    };
    Performative::Attach(Attach {
        name: name.into(),
        handle: handle.into(),
        role: client_role.clone(),
        snd_settle_mode,
        rcv_settle_mode,
        source: Some(Box::new(Source::builder().address(source).build())),
        target: Some(Box::new(TargetArchetype::Target(
            Target::builder().address(target).build(),
        ))),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: matches!(client_role, Role::Sender).then_some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

/// An emulator on loopback that also serves AMQP over TLS, with a certificate for `localhost` from a
/// CA made for this one test; the CA comes back so the client can trust it.
pub async fn emulator_with_tls() -> (
    servicebus_emulator::Emulator,
    servicebus_emulator::tls::TestCa,
) {
    let ca = servicebus_emulator::tls::TestCa::new().unwrap();
    let identity = ca.issue(&["localhost"]).unwrap().identity().unwrap();
    let emu = servicebus_emulator::Emulator::builder()
        .loopback()
        .tls("127.0.0.1:0".parse().unwrap(), identity)
        .start()
        .await
        .unwrap();
    (emu, ca)
}

/// A free port on 127.0.0.1: bound and released here, then given to the emulator.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
