//! The Python peer: a virtualenv with the pinned `azure-servicebus` SDK (`tests/requirements.txt`).
//!
//! Tests that need it call [`peer`]. On a fresh clone the first of them creates `<workspace>/.venv`
//! and installs the pins (about half a minute), so a plain `cargo test` needs no prior step; every
//! later test, in this process or another, finds it ready. Test binaries run one after another but
//! their tests run in parallel, and a developer may run two `cargo test`s at once, so the creation
//! happens once per process ([`OnceLock`]) and once across processes (an exclusive lock on a file,
//! with std's `File::lock`, stable since Rust 1.89). `cargo xtask test` creates the same virtualenv
//! through [`ensure_venv`].

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Set to a Python that has the pinned SDK to use it instead of the workspace's virtualenv.
pub const PYTHON_ENV: &str = "ACA_LAB_PYTHON";
/// The virtualenv, relative to the workspace root.
pub const VENV_DIR: &str = ".venv";
/// The pinned requirements, relative to the workspace root.
pub const REQUIREMENTS: &str = "tests/requirements.txt";

/// Why the virtualenv could not be made ready. Each names what failed and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    #[error(
        "no python3 on PATH: the Python peer tests need Python 3.9+ with its venv module \
         (install python3 and python3-venv), or set {PYTHON_ENV} to a python that has the packages \
         of {REQUIREMENTS}"
    )]
    NoPython,
    #[error("could not read the requirements {path}: {error}")]
    Requirements {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("could not lock {path}, which makes the virtualenv's creation happen once: {error}")]
    Lock {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("could not run `{command}`: {error}")]
    Spawn {
        command: String,
        error: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed {
        command: String,
        status: ExitStatus,
        output: String,
    },
    #[error("{python} still lacks {missing:?} after installing {requirements}")]
    StillMissing {
        python: PathBuf,
        missing: Vec<String>,
        requirements: PathBuf,
    },
}

/// The interpreter for the Python peer tests: `ACA_LAB_PYTHON` when set, else the workspace's
/// `.venv`, created and filled now if it lacks a pinned package.
///
/// # Panics
/// When the virtualenv cannot be made, with the reason and the fix: a test that needs the peer must
/// fail, never pass without it.
pub fn peer() -> PathBuf {
    static PEER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PEER.get_or_init(|| {
        if let Some(python) = std::env::var_os(PYTHON_ENV) {
            let python = PathBuf::from(python);
            // A bare name (`python3`) is looked up on PATH when it runs; a path must exist.
            if python.components().count() > 1 && !python.exists() {
                return Err(format!(
                    "{PYTHON_ENV}={} does not exist: point it at a python that has the packages of \
                     {REQUIREMENTS}, or unset it and the tests create {VENV_DIR} themselves",
                    python.display()
                ));
            }
            return Ok(python);
        }
        let root = crate::workspace_root();
        ensure_venv(&root.join(VENV_DIR), &root.join(REQUIREMENTS))
            .map_err(|error| format!("the Python peer's virtualenv is not ready: {error}"))
    });
    match found {
        Ok(python) => python.clone(),
        Err(error) => panic!("{error}"),
    }
}

/// Make `venv` hold every `name==version` pin of `requirements`, creating it if needed; returns its
/// python. Cheap when it already does (one short python run). Safe to call from several processes at
/// once: the one that creates it holds a lock the others wait on, and they then find it ready.
pub fn ensure_venv(venv: &Path, requirements: &Path) -> Result<PathBuf, VenvError> {
    let python = venv_python(venv);
    let pins = pins(requirements)?;
    if missing(&python, &pins).is_empty() {
        return Ok(python);
    }
    let _lock = lock(venv)?;
    // Another process may have made it while this one waited for the lock.
    if missing(&python, &pins).is_empty() {
        return Ok(python);
    }
    // Straight to the process's stderr: the test harness captures the print macros, and whoever waits
    // half a minute on the first test should see why.
    let _ = writeln!(
        std::io::stderr(),
        "installing {} into the virtualenv {} (once) …",
        pins.join(", "),
        venv.display()
    );
    if !python.exists() {
        run(create_command(&system_python()?, venv))?;
    }
    run(install_command(&python, requirements))?;
    let still = missing(&python, &pins);
    if !still.is_empty() {
        return Err(VenvError::StillMissing {
            python,
            missing: still,
            requirements: requirements.to_path_buf(),
        });
    }
    Ok(python)
}

/// Does `python` have every `name==version` pin of `requirements`? (False when either cannot be read.)
pub fn satisfies(python: &Path, requirements: &Path) -> bool {
    pins(requirements).is_ok_and(|pins| missing(python, &pins).is_empty())
}

/// The python of a virtualenv.
pub fn venv_python(venv: &Path) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join("python.exe")
    } else {
        venv.join("bin").join("python")
    }
}

/// `python3`, or `python` where that is the only name, from PATH.
pub fn system_python() -> Result<PathBuf, VenvError> {
    ["python3", "python"]
        .into_iter()
        .find(|candidate| {
            Command::new(candidate)
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .map(PathBuf::from)
        .ok_or(VenvError::NoPython)
}

/// `<system python> -m venv <venv>`.
pub fn create_command(system_python: &Path, venv: &Path) -> Command {
    let mut command = Command::new(system_python);
    command.args(["-m", "venv"]).arg(venv);
    command
}

/// `<venv python> -m pip install --quiet --disable-pip-version-check -r <requirements>`.
pub fn install_command(python: &Path, requirements: &Path) -> Command {
    let mut command = Command::new(python);
    command
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(requirements);
    command
}

/// The `name==version` lines of a requirements file (comments and blank lines left out).
fn pins(requirements: &Path) -> Result<Vec<String>, VenvError> {
    let text = std::fs::read_to_string(requirements).map_err(|error| VenvError::Requirements {
        path: requirements.to_path_buf(),
        error,
    })?;
    Ok(parse_pins(&text))
}

fn parse_pins(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The pins `python` does not have at exactly that version (all of them when it cannot run). A pin
/// that is not `name==version` counts as missing, so pip gets to install it.
fn missing(python: &Path, pins: &[String]) -> Vec<String> {
    const CHECK: &str = "import importlib.metadata as m, sys\n\
        for pin in sys.argv[1:]:\n\
        \x20   name, _, version = pin.partition('==')\n\
        \x20   try:\n\
        \x20       ok = bool(version) and m.version(name.strip()) == version.strip()\n\
        \x20   except m.PackageNotFoundError:\n\
        \x20       ok = False\n\
        \x20   if not ok:\n\
        \x20       print(pin)\n";
    if pins.is_empty() {
        return Vec::new();
    }
    match Command::new(python).args(["-c", CHECK]).args(pins).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
        _ => pins.to_vec(),
    }
}

/// An exclusive lock for making `venv`, held until the returned file is dropped. The lock file sits in
/// the temporary directory, named after the virtualenv's path, so the work tree stays clean.
fn lock(venv: &Path) -> Result<File, VenvError> {
    let path = lock_path(venv);
    let file = File::options()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|error| VenvError::Lock {
            path: path.clone(),
            error,
        })?;
    Ok(file)
}

fn lock_path(venv: &Path) -> PathBuf {
    let absolute = std::path::absolute(venv).unwrap_or_else(|_| venv.to_path_buf());
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    let key = crate::hex(&digest[..8]);
    std::env::temp_dir().join(format!("aca-lab-venv-{key}.lock"))
}

/// Run `command`, its output kept for the error only.
fn run(mut command: Command) -> Result<(), VenvError> {
    let shown = display(&command);
    let out = command.output().map_err(|error| VenvError::Spawn {
        command: shown.clone(),
        error,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(VenvError::Failed {
        command: shown,
        status: out.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn display(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_the_requirement_lines_without_comments() {
        let text = "# the peer\nazure-servicebus==7.15.0\n\n  six==1.16.0  # why\n";
        assert_eq!(
            parse_pins(text),
            ["azure-servicebus==7.15.0", "six==1.16.0"]
        );
    }

    #[test]
    fn every_pin_is_missing_when_the_interpreter_does_not_exist() {
        let pins = vec!["azure-servicebus==7.15.0".to_owned()];
        assert_eq!(missing(Path::new("/nonexistent/bin/python"), &pins), pins);
    }

    #[test]
    fn a_system_python_reports_what_it_lacks_and_only_that() {
        let Ok(python) = system_python() else {
            panic!("this test needs python3 on PATH, as the Python peer tests do");
        };
        let pins = vec![
            "no-such-package-aca-lab==1.0".to_owned(),
            "not a pin".to_owned(),
        ];
        assert_eq!(missing(&python, &pins), pins);
        assert!(missing(&python, &[]).is_empty());
    }

    #[test]
    fn each_virtualenv_has_its_own_lock_in_the_temporary_directory() {
        let a = lock_path(Path::new("/work/a/.venv"));
        assert_eq!(a, lock_path(Path::new("/work/a/.venv")));
        assert_ne!(a, lock_path(Path::new("/work/b/.venv")));
        assert!(a.starts_with(std::env::temp_dir()), "{}", a.display());
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join(".venv");
        let held = lock(&venv).unwrap();
        let other = File::options().write(true).open(lock_path(&venv)).unwrap();
        assert!(other.try_lock().is_err(), "a second holder got the lock");
        drop(held);
        other
            .try_lock()
            .expect("the lock is free once its holder drops it");
    }
}
