//! The HTML page around the timeline: the picture, a few numbers, and the execution table. One run, or
//! several runs of the same workload one above the other on a shared time scale (`report --compare`).
//!
//! Written with quick-xml's writer, which escapes every text and attribute; the only markup inserted as
//! is is the SVG that plotters produced.

use std::io;
use std::time::Duration;

use quick_xml::Writer;
use quick_xml::events::{BytesText, Event};

use super::recording::Recording;
use super::timeline::{self, clock_time};
use crate::lab::executions::{Execution, ExecutionStatus};
use crate::lab::ui::human_duration;

/// A run to put on the page: its recording and its picture.
pub struct Run<'a> {
    pub recording: &'a Recording,
    pub svg: &'a str,
}

const STYLE: &str = "
body { font-family: sans-serif; margin: 24px; color: #212121; max-width: 1040px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 28px; }
p.summary { color: #424242; margin-top: 0; }
figure { margin: 8px 0 16px 0; }
figcaption { font-size: 13px; color: #616161; }
table { border-collapse: collapse; font-size: 14px; }
th, td { text-align: left; padding: 4px 14px 4px 0; border-bottom: 1px solid #e0e0e0; }
td.number { text-align: right; }
";

/// Numbers a reader compares between runs.
struct Figures {
    sent: u64,
    executions: usize,
    by_status: Vec<(ExecutionStatus, usize)>,
    /// From the first send to the first execution's start: how long KEDA's polling made the message wait.
    to_first_start: Option<Duration>,
    /// From the first send to the end of the last execution: the whole drain.
    to_last_end: Option<Duration>,
    /// The executions' mean run time.
    mean_run: Option<Duration>,
}

fn figures(recording: &Recording) -> Figures {
    let executions = &recording.executions;
    let first_send = recording.sends.iter().map(|s| s.time).min();
    let since_send = |time: Option<time::OffsetDateTime>| {
        let (send, time) = (first_send?, time?);
        Duration::try_from(time - send).ok()
    };
    let mut by_status: Vec<(ExecutionStatus, usize)> = Vec::new();
    for execution in executions {
        match by_status.iter_mut().find(|(s, _)| *s == execution.status()) {
            Some((_, n)) => *n += 1,
            None => by_status.push((execution.status(), 1)),
        }
    }
    let runs: Vec<Duration> = executions.iter().filter_map(Execution::run_time).collect();
    let mean_run = u32::try_from(runs.len())
        .ok()
        .filter(|n| *n > 0)
        .map(|n| runs.iter().sum::<Duration>() / n);
    let after_send = |e: &&Execution| first_send.is_some_and(|s| e.start_time() >= Some(s));
    Figures {
        sent: recording.messages_sent(),
        executions: executions.len(),
        by_status,
        to_first_start: since_send(
            executions
                .iter()
                .filter(after_send)
                .filter_map(Execution::start_time)
                .min(),
        ),
        to_last_end: since_send(
            executions
                .iter()
                .filter(after_send)
                .filter_map(|e| e.properties.end_time)
                .max(),
        ),
        mean_run,
    }
}

fn or_dash(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "-".to_owned(), human_duration)
}

fn summary(recording: &Recording) -> String {
    let figures = figures(recording);
    let statuses: Vec<String> = figures
        .by_status
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    let mut parts = vec![
        format!("{} message(s) sent", figures.sent),
        format!(
            "{} execution(s){}",
            figures.executions,
            if statuses.is_empty() {
                String::new()
            } else {
                format!(": {}", statuses.join(", "))
            }
        ),
        format!("max executions {}", recording.max_executions),
        format!("queue {}", recording.queue),
    ];
    if let Some(drain) = figures.to_last_end {
        parts.push(format!(
            "first send to last execution's end: {}",
            human_duration(drain)
        ));
    }
    if recording.ended.is_none() {
        parts.push("the lab is still running; run the report again for more".to_owned());
    }
    parts.join(" · ")
}

/// The page for one run (`compare` = false) or for several on one time scale.
pub fn render(title: &str, runs: &[Run<'_>]) -> io::Result<String> {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 1);
    writer.write_event(Event::DocType(BytesText::new("html")))?;
    writer
        .create_element("html")
        .with_attribute(("lang", "en"))
        .write_inner_content(|w| {
            w.create_element("head").write_inner_content(|w| {
                w.create_element("meta")
                    .with_attribute(("charset", "utf-8"))
                    .write_empty()?;
                w.create_element("title")
                    .write_text_content(BytesText::new(title))?;
                w.create_element("style")
                    .write_text_content(BytesText::new(STYLE))?;
                Ok(())
            })?;
            w.create_element("body").write_inner_content(|w| {
                w.create_element("h1")
                    .write_text_content(BytesText::new(title))?;
                if runs.len() > 1 {
                    comparison(w, runs)?;
                }
                for run in runs {
                    section(w, run, runs.len() > 1)?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    String::from_utf8(writer.into_inner()).map_err(io::Error::other)
}

fn text_element<W: io::Write>(w: &mut Writer<W>, name: &str, text: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(text))?;
    Ok(())
}

fn row<W: io::Write>(w: &mut Writer<W>, cell: &str, cells: &[String]) -> io::Result<()> {
    w.create_element("tr").write_inner_content(|w| {
        for text in cells {
            text_element(w, cell, text)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// One line of the comparison: how to show a number of a run.
type Figure = fn(&Figures) -> String;

/// The runs' numbers side by side.
fn comparison<W: io::Write>(w: &mut Writer<W>, runs: &[Run<'_>]) -> io::Result<()> {
    let all: Vec<Figures> = runs.iter().map(|r| figures(r.recording)).collect();
    w.create_element("table")
        .with_attribute(("class", "comparison"))
        .write_inner_content(|w| {
            let mut head = vec![String::new()];
            head.extend(runs.iter().map(|r| r.recording.job.label().to_owned()));
            row(w, "th", &head)?;
            let lines: [(&str, Figure); 5] = [
                ("messages sent", |f| f.sent.to_string()),
                ("executions", |f| f.executions.to_string()),
                ("first send to first execution's start", |f| {
                    or_dash(f.to_first_start)
                }),
                ("first send to last execution's end", |f| {
                    or_dash(f.to_last_end)
                }),
                ("mean execution run time", |f| or_dash(f.mean_run)),
            ];
            for (name, value) in lines {
                let mut cells = vec![name.to_owned()];
                cells.extend(all.iter().map(value));
                row(w, "td", &cells)?;
            }
            Ok(())
        })?;
    Ok(())
}

fn section<W: io::Write>(w: &mut Writer<W>, run: &Run<'_>, heading: bool) -> io::Result<()> {
    let recording = run.recording;
    if heading {
        text_element(
            w,
            "h2",
            &format!("{} ({})", recording.job.label(), recording.job_name),
        )?;
    }
    w.create_element("p")
        .with_attribute(("class", "summary"))
        .write_text_content(BytesText::new(&summary(recording)))?;
    w.create_element("figure").write_inner_content(|w| {
        // plotters' SVG, inserted as markup: it is this program's own drawing, not outside input.
        w.write_event(Event::Text(BytesText::from_escaped(run.svg)))?;
        text_element(
            w,
            "figcaption",
            "Top: the queue's active messages (line), the controller's polls (dots, what the scaler saw) and the \
             sends (triangles). Bottom: one bar per execution from its start to its end, coloured by status.",
        )
    })?;
    w.create_element("table")
        .with_attribute(("class", "executions"))
        .write_inner_content(|w| {
            let head = ["NAME", "STATUS", "STARTED", "DURATION", "REASON"].map(str::to_owned);
            row(w, "th", &head)?;
            for execution in &recording.executions {
                let cells = [
                    execution.name.clone(),
                    execution.status().to_string(),
                    execution
                        .start_time()
                        .map_or_else(|| "-".to_owned(), clock_time),
                    or_dash(execution.run_time()),
                    execution.properties.reason.clone().unwrap_or_default(),
                ];
                row(w, "td", &cells)?;
            }
            Ok(())
        })?;
    Ok(())
}

/// The x axis both pictures of a comparison share: the longer run's.
pub fn shared_span(recordings: &[&Recording]) -> f64 {
    recordings
        .iter()
        .map(|r| timeline::span_of(r))
        .fold(0.0, f64::max)
}
