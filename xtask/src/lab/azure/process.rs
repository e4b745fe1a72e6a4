//! Running `az` and `terraform`: no shell, output captured, failures that name the command and quote
//! its stderr, and a hint for the usual causes.

use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::interrupt::Interrupt;
use crate::lab::ui::StepProgress;

/// How many stderr lines a failure quotes.
const STDERR_TAIL: usize = 15;

/// One external command, as data: what `--dry-run` prints and what runs.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub program: &'static str,
    pub args: Vec<String>,
    /// Extra environment; values are never printed (they may be ids a participant would rather not paste).
    pub env: Vec<(&'static str, String)>,
    /// Let the child finish even after Ctrl-C (teardown must not be cut short).
    pub shielded: bool,
    /// Show its output lines in the step's spinner (progress of long commands; not for JSON replies).
    pub streamed: bool,
}

impl Invocation {
    pub fn new<S: Into<String>>(program: &'static str, args: impl IntoIterator<Item = S>) -> Self {
        Self {
            program,
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            shielded: false,
            streamed: false,
        }
    }

    pub fn env(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.env.push((name, value.into()));
        self
    }

    pub fn shielded(mut self) -> Self {
        self.shielded = true;
        self
    }

    pub fn streamed(mut self) -> Self {
        self.streamed = true;
        self
    }

    /// As a person would type it (POSIX quoting where needed).
    pub fn display(&self) -> String {
        let mut words = vec![self.program.to_owned()];
        words.extend(self.args.iter().map(|arg| crate::util::shell_quote(arg)));
        words.join(" ")
    }
}

/// What a finished command printed on stdout (stderr only matters when it fails).
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
}

/// Runs invocations; the one place where child processes are started.
#[derive(Debug, Clone)]
pub struct Runner {
    interrupt: Interrupt,
    /// Every command starts here (the checkout root), so `-chdir=terraform` works from any directory
    /// `cargo xtask` was started in.
    dir: std::path::PathBuf,
}

impl Runner {
    pub fn new(interrupt: Interrupt, dir: std::path::PathBuf) -> Self {
        Self { interrupt, dir }
    }

    /// Run to completion. A spinner (`step`) shows the child's latest output line while it runs.
    /// Ctrl-C forwards SIGINT to an unshielded child (terraform then stops cleanly) and fails the step.
    pub async fn run(
        &self,
        invocation: &Invocation,
        step: Option<&StepProgress>,
    ) -> anyhow::Result<Output> {
        let shown = invocation.display();
        let mut command = Command::new(program_path(invocation.program));
        command
            .current_dir(&self.dir)
            .args(&invocation.args)
            .envs(invocation.env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Its own process group keeps a terminal's Ctrl-C away from the child: the runner decides.
        // (Two SIGINTs make terraform quit at once, without releasing its state lock.)
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `{shown}`"))?;
        let pid = child.id();
        let live = step.filter(|_| invocation.streamed);
        let stdout = child.stdout.take().map(|out| collect_lines(out, live));
        let stderr = child.stderr.take().map(|err| collect_lines(err, None));
        let collect = async {
            let (stdout, stderr) = tokio::join!(
                async {
                    match stdout {
                        Some(f) => f.await,
                        None => String::new(),
                    }
                },
                async {
                    match stderr {
                        Some(f) => f.await,
                        None => String::new(),
                    }
                }
            );
            (stdout, stderr)
        };
        let mut interrupted = false;
        let wait = async { tokio::join!(collect, child.wait()) };
        tokio::pin!(wait);
        let ((stdout, stderr), status) = loop {
            tokio::select! {
                done = &mut wait => break done,
                () = self.interrupt.wait(), if !interrupted && !invocation.shielded => {
                    interrupted = true;
                    // Exactly one SIGINT: terraform finishes the call in flight, saves state and exits.
                    if let Some(pid) = pid {
                        forward_sigint(pid).await;
                    }
                }
            }
        };
        let status = status.with_context(|| format!("could not wait for `{shown}`"))?;
        if interrupted {
            bail!("`{shown}` was interrupted (Ctrl-C)");
        }
        if !status.success() {
            bail!(
                "{}",
                failure_message(&shown, &status.to_string(), &stderr, &stdout)
            );
        }
        Ok(Output { stdout })
    }
}

async fn forward_sigint(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await;
}

/// `az` is a batch file on Windows; everything else is found on PATH as is.
fn program_path(program: &str) -> String {
    if cfg!(windows) && program == "az" {
        "az.cmd".to_owned()
    } else {
        program.to_owned()
    }
}

async fn collect_lines(stream: impl AsyncRead + Unpin, step: Option<&StepProgress>) -> String {
    let mut lines = BufReader::new(stream).lines();
    let mut all = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = strip_ansi(&line);
        if let Some(step) = step {
            let shown = line.trim();
            if !shown.is_empty() {
                step.update(truncate(shown, 80));
            }
        }
        all.push_str(&line);
        all.push('\n');
    }
    all
}

/// The failure text: command, exit status, the last stderr lines, and a hint when the cause is known.
pub fn failure_message(shown: &str, status: &str, stderr: &str, stdout: &str) -> String {
    let quoted = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = quoted.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(STDERR_TAIL)..];
    let mut message = format!("`{shown}` failed ({status})");
    if tail.is_empty() {
        message.push_str(" and printed nothing");
    } else {
        message.push_str(if lines.len() > tail.len() {
            "; last lines of its output:"
        } else {
            "; its output:"
        });
        for line in tail {
            message.push_str("\n  | ");
            message.push_str(line.trim_end());
        }
    }
    if let Some(hint) = hint_for(quoted) {
        message.push_str("\nhint: ");
        message.push_str(hint);
    }
    message
}

/// The usual causes, recognised by what az and terraform print.
fn hint_for(output: &str) -> Option<&'static str> {
    const HINTS: &[(&str, &str)] = &[
        (
            "az login",
            "you are not logged in to Azure: run `az login` (and `az account set --subscription <id>` to pick the subscription)",
        ),
        (
            "AADSTS",
            "your Azure login has expired: run `az login` again",
        ),
        (
            "MissingSubscriptionRegistration",
            "a resource provider is not registered: run `az provider register --namespace <the namespace named above> --wait`",
        ),
        (
            "TasksOperationsNotAllowed",
            "ACR Tasks (`az acr build`) are not available on free-credit and trial subscriptions: run again with `--image-builder docker` (builds and pushes with your local Docker), or use a pay-as-you-go subscription",
        ),
        (
            "QuotaExceeded",
            "the subscription's quota for this region is used up: pick another region with `--location`, or free some quota",
        ),
        (
            "AuthorizationFailed",
            "your account may not create role assignments: it needs Owner, or User Access Administrator plus Contributor, on the subscription",
        ),
        (
            "Error acquiring the state lock",
            "another terraform run holds the state lock; wait for it, or, if it died, `terraform -chdir=terraform force-unlock <ID>` with TF_DATA_DIR set to the lab's state directory's terraform/.terraform (default .lab/azure/terraform/.terraform)",
        ),
        (
            "Backend initialization required",
            "terraform has not been initialised in the lab's state directory yet: run `cargo xtask lab --azure up` (or `down`, which initialises first)",
        ),
        (
            "Saved plan is stale",
            "the plan is out of date: run the lab again (it plans afresh)",
        ),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| output.contains(needle))
        .map(|(_, hint)| *hint)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// terraform and az color their output even into a pipe; the spinner and error messages want text.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then one final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Is `program` on PATH? (`az` under its Windows name where that applies.)
pub fn on_path(program: &str) -> bool {
    crate::util::on_path(&program_path(program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_display_as_typed() {
        let invocation =
            Invocation::new("az", ["containerapp", "job", "list", "--query", "[].name"]);
        assert_eq!(
            invocation.display(),
            "az containerapp job list --query '[].name'"
        );
        assert_eq!(crate::util::shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn failures_quote_the_tail_of_stderr_and_give_a_hint() {
        let stderr = "WARNING: something\nERROR: Please run 'az login' to setup account.\n";
        let message = failure_message("az account show -o json", "exit status: 1", stderr, "");
        assert_eq!(
            message,
            "`az account show -o json` failed (exit status: 1); its output:\n  | WARNING: something\n  | \
             ERROR: Please run 'az login' to setup account.\nhint: you are not logged in to Azure: run `az login` \
             (and `az account set --subscription <id>` to pick the subscription)"
        );
    }

    #[test]
    fn ansi_colors_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[1m\u{1b}[32mApply complete!\u{1b}[0m"),
            "Apply complete!"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        use crate::util::parse_duration;
        use std::time::Duration;
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_duration("soon").unwrap_err().contains("e.g. 500ms"));
        assert!(
            parse_duration("3d")
                .unwrap_err()
                .contains("unknown unit `d`")
        );
    }
}
