//! Small helpers shared by the tasks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The workspace root, wherever `cargo xtask` was started from.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A command as a person would type it, for plans, logs and error messages.
pub fn display_command(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(
        cmd.get_args()
            .map(|arg| shell_quote(&arg.to_string_lossy())),
    );
    words.join(" ")
}

/// One word as a POSIX shell would need it to be typed: as is when it holds only characters a shell
/// leaves alone, otherwise in single quotes, so a printed plan can be pasted back and run.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%<>".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Is an executable file named `file_name` in a directory on PATH? (What a shell would find,
/// without running a shell.)
pub fn on_path(file_name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(file_name)))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Run a command to completion (no shell), inheriting stdio; with `dry_run`, only print it.
/// A failure names the command and its exit status.
pub fn run_checked(cmd: &mut Command, dry_run: bool) -> anyhow::Result<()> {
    let shown = display_command(cmd);
    if dry_run {
        println!("{shown}");
        return Ok(());
    }
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// A `cargo` command for a build or test that xtask starts, without the variables `cargo run` set
/// for xtask (see [`aca_lab_testkit::cargo`]: inheriting them made every round rebuild).
pub fn cargo() -> Command {
    aca_lab_testkit::cargo::command()
}

/// The target directory cargo uses here (honours `CARGO_TARGET_DIR` and `build.target-dir`).
pub fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let out = cargo()
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("could not run `cargo metadata` to find the target directory")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .context("`cargo metadata` printed something that is not JSON")?;
    let dir = meta["target_directory"]
        .as_str()
        .context("`cargo metadata` did not report a target_directory")?;
    Ok(PathBuf::from(dir))
}

/// `42s`, `500ms`, `15m` or plain seconds (`10`), for the `--timeout`/`--polling-interval`/`--role-wait`
/// flags. The worker's parser does the arithmetic, so the job and the runner read durations alike;
/// this adds a message that says what was wrong.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    aca_job_lab::config::parse_duration(text).ok_or_else(|| {
        let text = text.trim();
        let unit = text.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        if unit.len() < text.len() && !matches!(unit.trim(), "" | "ms" | "s" | "m" | "h") {
            format!("`{text}`: unknown unit `{unit}`; use ms, s, m or h")
        } else if text[..text.len() - unit.len()].parse::<f64>().is_ok() {
            format!("`{text}` is out of range")
        } else {
            format!("`{text}` is not a duration; write e.g. 500ms, 10s, 15m or 10")
        }
    })
}

/// Wait until a spawned emulator prints its ready line on stdout (piped), at most `timeout`; its
/// output is read on a thread until it exits, so the pipe never fills. The child is killed if it
/// never gets ready.
pub fn wait_for_ready_line(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let stdout = child
        .stdout
        .take()
        .context("the emulator's stdout is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(servicebus_emulator::READY_LINE) {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(timeout).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!(
            "the emulator did not print its ready line within {} s",
            timeout.as_secs()
        );
    }
    Ok(())
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …) in KiB; `None` when the process is gone
/// or this is not Linux.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}
