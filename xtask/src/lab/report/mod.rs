//! `cargo xtask lab report`: the timeline picture of a local lab run, and the page around it.
//!
//! Every local lab run gets a run directory, `<state dir>/runs/<UTC start>-<job>/`, holding
//! `recording.json` (what [`Recorder`] kept), `sends.json` (sends made by `lab send` from other processes),
//! `timeline.svg` and `index.html`. The walkthrough writes it when it ends; `lab up` keeps the recording
//! current while the lab runs and draws it when the lab stops; `lab report` draws the latest run again at
//! any time, and `lab report --compare` puts the latest Rust and Python runs on one page. Run
//! directories outlive `lab down`, so runs with different jobs can be compared afterwards.

pub mod page;
pub mod recording;
pub mod timeline;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

pub use recording::{JobKind, Recorder, Recording, RecordingMetrics, RunInfo, SendMark};

use crate::lab::OutputFormat;
use crate::lab::ui::Ui;

/// The state directory's subdirectory that `lab down` leaves in place.
pub const RUNS_DIR: &str = "runs";
const RECORDING_FILE: &str = "recording.json";
const SENDS_FILE: &str = "sends.json";
const SVG_FILE: &str = "timeline.svg";
const HTML_FILE: &str = "index.html";

/// One run's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(PathBuf);

/// The files a report wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub html: PathBuf,
    /// The picture on its own (`None` for a comparison, whose page holds several).
    pub svg: Option<PathBuf>,
}

impl RunDir {
    /// A new directory for a run that starts now.
    pub fn create(state_dir: &Path, recording: &Recording) -> anyhow::Result<Self> {
        let stamp = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let started = recording
            .started
            .to_offset(time::UtcOffset::UTC)
            .format(&stamp)
            .context("could not name the run directory")?;
        let job = match recording.job {
            JobKind::Rust => "rust",
            JobKind::Python => "python",
        };
        let runs = state_dir.join(RUNS_DIR);
        // Two runs started in the same second (tests do that) get a counter.
        let mut path = runs.join(format!("{started}-{job}"));
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = runs.join(format!("{started}-{job}-{n}"));
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("could not create {}", path.display()))?;
        Ok(Self(path))
    }

    /// Every run in `state_dir`, oldest first (names start with the UTC start time).
    pub fn all(state_dir: &Path) -> Vec<RunDir> {
        let Ok(entries) = std::fs::read_dir(state_dir.join(RUNS_DIR)) else {
            return Vec::new();
        };
        let mut runs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join(RECORDING_FILE).is_file())
            .collect();
        runs.sort();
        runs.into_iter().map(RunDir).collect()
    }

    /// The most recent run, of `job` if given.
    pub fn latest(state_dir: &Path, job: Option<JobKind>) -> Option<RunDir> {
        Self::all(state_dir)
            .into_iter()
            .rev()
            .find(|run| job.is_none_or(|job| run.load().is_ok_and(|r| r.job == job)))
    }

    /// Keep the recording (through a temporary file, so `lab report` never reads half of one).
    pub fn save(&self, recording: &Recording) -> anyhow::Result<()> {
        write_atomically(
            &self.0.join(RECORDING_FILE),
            &serde_json::to_vec_pretty(recording)?,
        )
    }

    /// The recording with the sends other processes added.
    pub fn load(&self) -> anyhow::Result<Recording> {
        let path = self.0.join(RECORDING_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let mut recording: Recording = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a lab recording", path.display()))?;
        recording.sends.extend(self.sends()?);
        recording.sends.sort_by_key(|s| s.time);
        Ok(recording)
    }

    fn sends(&self) -> anyhow::Result<Vec<SendMark>> {
        let path = self.0.join(SENDS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not a list of sends", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(error) => Err(error).with_context(|| format!("could not read {}", path.display())),
        }
    }

    /// Note a send made by another process (`lab send` while `lab up` runs).
    pub fn append_send(&self, send: SendMark) -> anyhow::Result<()> {
        let mut sends = self.sends()?;
        sends.push(send);
        write_atomically(
            &self.0.join(SENDS_FILE),
            &serde_json::to_vec_pretty(&sends)?,
        )
    }

    /// Draw the run: `timeline.svg` and `index.html` next to its recording.
    pub fn render(&self) -> anyhow::Result<Written> {
        let recording = self.load()?;
        let svg = timeline::render(&recording, None)?;
        let title = format!(
            "Lab timeline: {} ({})",
            recording.job_name,
            recording.job.label()
        );
        let html = page::render(
            &title,
            &[page::Run {
                recording: &recording,
                svg: &svg,
            }],
        )?;
        let written = Written {
            html: self.0.join(HTML_FILE),
            svg: Some(self.0.join(SVG_FILE)),
        };
        write_atomically(&self.0.join(SVG_FILE), svg.as_bytes())?;
        write_atomically(&written.html, html.as_bytes())?;
        Ok(written)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("could not write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("could not write {}", path.display()))
}

/// Keep a finished run and draw it (the walkthrough, at its end).
pub fn write_run(state_dir: &Path, recording: &Recording) -> anyhow::Result<Written> {
    let run = RunDir::create(state_dir, recording)?;
    run.save(recording)?;
    run.render()
}

/// A send made by `lab send` to the lab `lab up` started: marked on that lab's run.
pub fn note_send(state_dir: &Path, send: SendMark) -> anyhow::Result<()> {
    // The running lab's run: the latest one not yet ended (a walkthrough that finished in the same
    // state directory meanwhile is not it).
    let running = RunDir::all(state_dir)
        .into_iter()
        .rev()
        .find(|run| run.load().is_ok_and(|r| r.ended.is_none()));
    match running {
        Some(run) => run.append_send(send),
        // A lab from before runs were recorded: nothing to mark.
        None => Ok(()),
    }
}

/// The latest Rust and Python runs on one page: `<state dir>/runs/compare.html`.
pub fn compare(state_dir: &Path) -> anyhow::Result<Written> {
    let mut recordings = Vec::new();
    for job in [JobKind::Rust, JobKind::Python] {
        let Some(run) = RunDir::latest(state_dir, Some(job)) else {
            let flag = match job {
                JobKind::Rust => "",
                JobKind::Python => " --job python",
            };
            bail!(
                "no {} run is recorded in {}; run `cargo xtask lab{flag}` with the same workload first",
                job.label(),
                state_dir.join(RUNS_DIR).display()
            );
        };
        recordings.push(from_first_send(run.load()?));
    }
    let refs: Vec<&Recording> = recordings.iter().collect();
    let span = page::shared_span(&refs);
    let svgs = recordings
        .iter()
        .map(|r| timeline::render(r, Some(span)))
        .collect::<Result<Vec<_>, _>>()?;
    let runs: Vec<page::Run<'_>> = recordings
        .iter()
        .zip(&svgs)
        .map(|(recording, svg)| page::Run { recording, svg })
        .collect();
    let html = page::render("Lab timelines: the Rust job and the Python job", &runs)?;
    let path = state_dir.join(RUNS_DIR).join("compare.html");
    write_atomically(&path, html.as_bytes())?;
    Ok(Written {
        html: path,
        svg: None,
    })
}

/// The same recording seen from a second before its first send: runs compared on one page line up at
/// their workloads, however long each lab idled before it (`lab up` may wait minutes for `lab send`).
fn from_first_send(mut recording: Recording) -> Recording {
    if let Some(first) = recording.sends.iter().map(|s| s.time).min() {
        recording.started = recording
            .started
            .max(first - std::time::Duration::from_secs(1));
    }
    recording
}

/// `lab report [--compare]`.
pub fn report_step(state_dir: &Path, ui: &Ui, compare_runs: bool) -> anyhow::Result<()> {
    let written = if compare_runs {
        compare(state_dir)?
    } else {
        let Some(run) = RunDir::latest(state_dir, None) else {
            bail!(
                "no lab run is recorded in {}; `cargo xtask lab` (or `lab up` and `lab send`) records one",
                state_dir.display()
            );
        };
        run.render()?
    };
    announce(ui, &written);
    Ok(())
}

/// Tell where the picture is: a line for people, an event for machines.
pub fn announce(ui: &Ui, written: &Written) {
    match ui.format() {
        OutputFormat::Json => {
            println!(
                "{}",
                serde_json::json!({ "event": "report", "html": written.html, "svg": written.svg })
            );
        }
        OutputFormat::Human => {
            let html = display_path(&written.html);
            match &written.svg {
                Some(svg) => println!(
                    "Timeline: {html} (open it in a browser; the picture alone: {})",
                    display_path(svg)
                ),
                None => println!("Comparison: {html} (open it in a browser)"),
            }
        }
    }
}

/// Relative to the current directory when under it, so the path is short and clickable.
fn display_path(path: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    relative
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests;
