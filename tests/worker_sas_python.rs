//! Our SAS signer against the Python `azure-servicebus` SDK's for the same inputs: a token the
//! Python SDK would send is a token the broker accepts, so ours must be byte-for-byte the same.

use std::process::Command;

use aca_job_lab::secret::Secret;
use aca_job_lab::servicebus::SasSigner;

/// `ACA_LAB_PYTHON`, else the workspace's `.venv`, created on first use (see `aca_lab_testkit::python`).
fn python() -> std::path::PathBuf {
    aca_lab_testkit::python::peer()
}

fn python_token(audience: &str, rule: &str, key: &str, expiry: u64) -> String {
    let script = "import sys\n\
from azure.servicebus._pyamqp.utils import generate_sas_token\n\
print(generate_sas_token(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])), end='')";
    let output = Command::new(python())
        .args(["-c", script, audience, rule, key, &expiry.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", python().display()));
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn sas_tokens_match_the_python_sdk() {
    let cases = [
        (
            "sb://localhost/queue-messages",
            "RootManageSharedAccessKey",
            "SAS_KEY_VALUE",
            1_700_000_000,
        ),
        (
            "sb://127.0.0.1:40123/queue-messages",
            "RootManageSharedAccessKey",
            "SAS_KEY_VALUE",
            1_800_000_123,
        ),
        // A real-looking base64 key: '+', '/' and '=' must be used as raw bytes, and the
        // signature's own '+', '/' and '=' must be percent-encoded.
        (
            "sb://mylab.servicebus.windows.net/orders",
            "Listen_Only-1.x",
            "q7Z+Yk/2mP0vX9w3bR4t8sL1nC6dE5fA0gH2iJ3kL4M=",
            1_764_000_000,
        ),
        ("sb://mylab.servicebus.windows.net/", "send", "k", 1),
    ];
    for (audience, rule, key, expiry) in cases {
        let ours = SasSigner::new(rule, Secret::new(key)).sign(audience, expiry);
        let theirs = python_token(audience, rule, key, expiry);
        assert_eq!(ours.expose(), theirs, "audience {audience}, rule {rule}");
    }
}
