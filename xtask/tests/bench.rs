//! `cargo xtask bench --quick` in the suite, so the bench never rots: it must run every measurement and
//! print the side-by-side table with both jobs. The numbers are printed for the log, never asserted.

use std::path::Path;
use std::time::Duration;

/// Run `cargo xtask <args>` from the workspace root; its stdout and stderr once it succeeded. The
/// stdout is printed too: for whoever reads the test log, the numbers of this run.
fn xtask(args: &[&str], timeout: Duration) -> (String, String) {
    let assert = assert_cmd::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
        .timeout(timeout)
        .assert();
    let output = assert.get_output();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    (stdout, stderr)
}

#[test]
fn the_quick_bench_puts_the_rust_and_the_python_job_side_by_side() {
    let (stdout, stderr) = xtask(&["bench", "--quick"], Duration::from_secs(900));

    assert!(
        stdout.starts_with("## ") && stdout.contains("`cargo xtask bench --quick`"),
        "{stdout}"
    );
    assert!(stdout.contains("\nMachine: "), "{stdout}");
    let header =
        "| jobs, same emulator | Rust job (servicebus-job) | Python job (lab/python-job/job.py) |";
    assert!(stdout.contains(header), "{stdout}");
    for row in [
        "| cold start to the first completed message",
        "| drain 50 messages, spawn to empty queue",
        "| peak RSS",
        "| ours (servicebus-emulator) | median ",
        "| official (",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{stdout}"));
        // One cell per column, none empty.
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "{line}");
        assert!(cells.iter().all(|c| !c.is_empty()), "{line}");
    }

    // The JSON next to the table carries the same measurements for tools.
    let json_path = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("wrote ")
                .and_then(|rest| rest.split(" and ").nth(1))
        })
        .unwrap_or_else(|| panic!("no `wrote … and …json` line in:\n{stderr}"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    let jobs: Vec<&str> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(
        jobs,
        [
            "Rust job (servicebus-job)",
            "Python job (lab/python-job/job.py)"
        ]
    );
    for job in report["jobs"].as_array().unwrap() {
        assert_eq!(job["cold_start_to_first_completed"]["runs"], 2, "{job}");
        assert_eq!(job["drain_messages"], 50, "{job}");
    }
    let statuses: Vec<&str> = report["emulators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[0], "measured");
    assert!(
        matches!(statuses[1], "measured" | "skipped"),
        "{statuses:?}"
    );
}

/// `cargo xtask bench --scale --quick`: every measurement of the emulator at size runs (small), on a
/// data directory too, and each row says what it measured. The restart row is also a check: the
/// bench fails when a restart does not bring back every stored message.
#[test]
fn the_quick_scale_bench_measures_every_row() {
    let (stdout, _) = xtask(&["bench", "--scale", "--quick"], Duration::from_secs(600));
    assert!(
        stdout.contains("`cargo xtask bench --scale --quick`"),
        "{stdout}"
    );
    for row in [
        "| send, in memory: ",
        "| send, `--data-dir`: ",
        "| restart with 1000 × 1 KiB stored",
        "| backlog of 2000 × 1 KiB, in memory | RSS ",
        "| 100 concurrent connections",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?} in:\n{stdout}"));
        assert!(
            line.contains("msg/s") || line.contains(" s after"),
            "{line}"
        );
    }
}
