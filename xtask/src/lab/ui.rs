//! The lab's progress display: one line per step, a spinner while a step runs, ✔ or ✘ when it ends.
//!
//! Humans get the story on stdout (the spinner lives on stderr and only when stderr is a terminal, so
//! piped output and test snapshots contain just the final lines). `--output json` prints one JSON object
//! per finished step on stdout instead, for scripts and CI, and no spinner at all.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::OutputFormat;

/// An error the story has already shown (a ✘ line with its causes, or a JSON record): `main` exits
/// non-zero without printing it a second time.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct Shown(pub anyhow::Error);

/// The participant pressed Ctrl-C and the story said what it left running: `main` exits 130 (128 +
/// SIGINT, what a shell reports for a program Ctrl-C ended) and prints nothing more.
#[derive(Debug, thiserror::Error)]
#[error("interrupted (Ctrl-C)")]
pub struct Interrupted;

/// The exit code of a command ended by Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Writes the lab's story.
#[derive(Debug)]
pub struct Ui {
    format: OutputFormat,
    spinners: bool,
    started: Instant,
    /// Set when any step ended with ✘, so a caller knows whether an error was already shown.
    failed: Arc<AtomicBool>,
}

impl Ui {
    pub fn new(format: OutputFormat) -> Self {
        let spinners = format == OutputFormat::Human && std::io::stderr().is_terminal();
        Self {
            format,
            spinners,
            started: Instant::now(),
            failed: Arc::default(),
        }
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Has any step been marked ✘?
    pub fn any_step_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The opening line: which lab, where.
    pub fn header(&self, text: &str) {
        match self.format {
            OutputFormat::Human => println!("{text}\n"),
            OutputFormat::Json => emit(json!({ "event": "start", "message": text })),
        }
    }

    /// Start a step; `id` is the stable key for machines, `title` what a person reads.
    pub fn step(&self, id: &'static str, title: impl Into<String>) -> StepProgress {
        let title = title.into();
        let bar = self.spinners.then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template(" {spinner} {wide_msg}") {
                bar.set_style(style);
            }
            bar.set_message(title.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        StepProgress {
            id,
            title,
            format: self.format,
            bar,
            started: Instant::now(),
            finished: AtomicBool::new(false),
            failed: self.failed.clone(),
        }
    }

    /// Run a step: ✔ with the message `f` returns, or ✘ with the error (which is returned too).
    pub fn attempt<T>(
        &self,
        id: &'static str,
        title: impl Into<String>,
        f: impl FnOnce(&StepProgress) -> anyhow::Result<(T, String)>,
    ) -> anyhow::Result<T> {
        let step = self.step(id, title);
        match f(&step) {
            Ok((value, message)) => {
                step.ok(message);
                Ok(value)
            }
            Err(error) => {
                step.fail(&error);
                Err(error)
            }
        }
    }

    /// An indented detail under the last step (a command to copy, a table row).
    pub fn detail(&self, text: impl Display) {
        match self.format {
            OutputFormat::Human => println!("   {text}"),
            OutputFormat::Json => emit(json!({ "event": "detail", "message": text.to_string() })),
        }
    }

    /// A command that `--dry-run` would have run.
    pub fn planned_command(&self, id: &'static str, command: &str) {
        match self.format {
            OutputFormat::Human => println!("{command}"),
            OutputFormat::Json => {
                emit(json!({ "step": id, "status": "planned", "command": command }))
            }
        }
    }

    /// Ctrl-C: a ✘ line that says so (the running step's spinner is gone with it).
    pub fn interrupted(&self, text: impl Display) {
        match self.format {
            OutputFormat::Human => println!(" ✘ {text}"),
            OutputFormat::Json => {
                emit(json!({ "event": "interrupted", "message": text.to_string() }))
            }
        }
    }

    /// The closing line.
    pub fn finish(&self, succeeded: bool, text: impl Display) {
        match self.format {
            OutputFormat::Human => {
                println!("{text} in {}.", human_duration(self.started.elapsed()))
            }
            OutputFormat::Json => emit(json!({
                "event": "end",
                "status": if succeeded { "ok" } else { "failed" },
                "message": text.to_string(),
                "elapsed_ms": millis(self.started.elapsed()),
            })),
        }
    }
}

/// A running step. The first of [`ok`](Self::ok), [`fail`](Self::fail) or [`skipped`](Self::skipped)
/// ends it (later calls print nothing); dropping it unended clears the spinner.
#[derive(Debug)]
pub struct StepProgress {
    id: &'static str,
    title: String,
    format: OutputFormat,
    bar: Option<ProgressBar>,
    started: Instant,
    finished: AtomicBool,
    failed: Arc<AtomicBool>,
}

impl StepProgress {
    /// Live status after the title, e.g. the last line terraform printed.
    pub fn update(&self, detail: impl Display) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} · {detail}", self.title));
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn ok(&self, message: impl Display) {
        self.ok_with(message, Value::Null);
    }

    /// ✔, with machine-readable facts (`data`) for `--output json`.
    pub fn ok_with(&self, message: impl Display, data: Value) {
        if !self.end() {
            return;
        }
        match self.format {
            OutputFormat::Human => println!(" ✔ {message}"),
            OutputFormat::Json => emit(self.record("ok", message.to_string(), data)),
        }
    }

    /// ✘, then every line of the error (an anyhow chain prints one cause per line).
    pub fn fail(&self, error: &anyhow::Error) {
        if !self.end() {
            return;
        }
        self.failed.store(true, Ordering::SeqCst);
        match self.format {
            OutputFormat::Human => {
                println!(" ✘ {}", self.title);
                for cause in error.chain() {
                    for line in cause.to_string().lines() {
                        println!("   {line}");
                    }
                }
            }
            OutputFormat::Json => {
                let causes: Vec<String> = error.chain().map(|c| c.to_string()).collect();
                emit(self.record("failed", self.title.clone(), json!({ "error": causes })));
            }
        }
    }

    /// ✘ with the error, which is returned marked as [`Shown`] so it is not printed again.
    pub fn failed(&self, error: anyhow::Error) -> anyhow::Error {
        self.fail(&error);
        Shown(error).into()
    }

    /// The step did not run (e.g. teardown with `--keep`).
    pub fn skipped(&self, reason: impl Display) {
        if !self.end() {
            return;
        }
        match self.format {
            OutputFormat::Human => println!(" – {} skipped: {reason}", self.title),
            OutputFormat::Json => emit(self.record("skipped", reason.to_string(), Value::Null)),
        }
    }

    fn record(&self, status: &str, message: String, data: Value) -> Value {
        let mut record = json!({
            "step": self.id,
            "status": status,
            "message": message,
            "elapsed_ms": millis(self.started.elapsed()),
        });
        if let (Value::Object(record), Value::Object(data)) = (&mut record, data) {
            record.extend(data);
        }
        record
    }

    /// Mark the step ended and clear its spinner; false if it had already ended.
    fn end(&self) -> bool {
        if self.finished.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        true
    }
}

impl Drop for StepProgress {
    fn drop(&mut self) {
        self.end();
    }
}

fn emit(record: Value) {
    println!("{record}");
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `0.12 s`, `42 s`, `4m12s`: precise when short, readable when long.
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 10 {
        format!("{:.2} s", duration.as_secs_f64())
    } else if secs < 60 {
        format!("{secs} s")
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(120)), "0.12 s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42 s");
        assert_eq!(human_duration(Duration::from_secs(252)), "4m12s");
    }

    #[test]
    fn json_records_merge_the_step_facts() {
        let ui = Ui::new(OutputFormat::Json);
        let step = ui.step("watch", "Watching executions");
        let record = step.record(
            "ok",
            "done".into(),
            json!({ "execution": "job-rust-abc1234" }),
        );
        assert_eq!(record["step"], "watch");
        assert_eq!(record["status"], "ok");
        assert_eq!(record["execution"], "job-rust-abc1234");
        assert!(record["elapsed_ms"].is_u64());
    }
}
