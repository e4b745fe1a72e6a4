//! The timeline picture: one SVG that shows at a glance how the queue drove the job.
//!
//! Top panel: the queue's active message count as a step line, the controller's polls as dots on it
//! (what the scaler saw), the sends as triangles along the top. Bottom panel: one lane per execution,
//! a bar from its start to its end coloured by status and labelled with its name, status and run time.
//! Both panels share the x axis: seconds since the lab started. Drawn with plotters' SVG backend; text
//! is left to the browser's fonts.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use time::OffsetDateTime;

use super::recording::Recording;
use crate::lab::executions::{Execution, ExecutionStatus};
use crate::lab::ui::human_duration;

/// The picture's width in pixels.
pub const WIDTH: u32 = 1000;
const QUEUE_PANEL_HEIGHT: u32 = 250;
const LANE_HEIGHT: u32 = 30;
/// Axis, caption and margins of the executions panel.
const LANES_CHROME: u32 = 126;
/// Beyond this many executions the lanes show the most recent ones (the caption says so).
const MAX_LANES: usize = 40;
const FONT: &str = "sans-serif";

/// Status colours, chosen to be told apart by most colour-blind readers too (green/red/orange/blue
/// differ in lightness as well as hue).
pub const SUCCEEDED: RGBColor = RGBColor(46, 125, 50);
pub const FAILED: RGBColor = RGBColor(198, 40, 40);
pub const STOPPED: RGBColor = RGBColor(239, 108, 0);
pub const RUNNING: RGBColor = RGBColor(21, 101, 192);
const QUEUE_LINE: RGBColor = RGBColor(106, 27, 154);
const POLL: RGBColor = RGBColor(97, 97, 97);
const SEND: RGBColor = RGBColor(33, 33, 33);
const LABEL: RGBColor = RGBColor(33, 33, 33);

/// The colour a bar of this status gets.
pub fn status_colour(status: ExecutionStatus) -> RGBColor {
    match status {
        ExecutionStatus::Succeeded => SUCCEEDED,
        ExecutionStatus::Failed | ExecutionStatus::Degraded => FAILED,
        ExecutionStatus::Stopped => STOPPED,
        ExecutionStatus::Running | ExecutionStatus::Processing | ExecutionStatus::Unknown => {
            RUNNING
        }
    }
}

/// Why the picture could not be drawn (plotters' own error, with what was being drawn).
#[derive(Debug, thiserror::Error)]
#[error("could not draw the timeline's {part}: {detail}")]
pub struct DrawError {
    part: &'static str,
    detail: String,
}

fn drawing<E: std::fmt::Display>(part: &'static str) -> impl FnOnce(E) -> DrawError {
    move |error| DrawError {
        part,
        detail: error.to_string(),
    }
}

/// Seconds since `start`.
fn seconds(start: OffsetDateTime, time: OffsetDateTime) -> f64 {
    (time - start).as_seconds_f64()
}

/// The x axis' length for this recording: its whole span, at least five seconds so a short run is not
/// stretched into a few wide blobs.
pub fn span_of(recording: &Recording) -> f64 {
    seconds(recording.started, recording.last_time()).max(5.0)
}

/// Draw `recording` as SVG. `span` fixes the x axis (seconds) so two runs on one page share a scale.
pub fn render(recording: &Recording, span: Option<f64>) -> Result<String, DrawError> {
    let span = span.unwrap_or_else(|| span_of(recording)).max(1.0);
    let lanes = lanes(recording);
    let lanes_height = LANES_CHROME + LANE_HEIGHT * u32::try_from(lanes.len().max(1)).unwrap_or(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, QUEUE_PANEL_HEIGHT + lanes_height))
            .into_drawing_area();
        root.fill(&WHITE).map_err(drawing("background"))?;
        let (top, bottom) = root.split_vertically(QUEUE_PANEL_HEIGHT);
        queue_panel(&top, recording, span)?;
        executions_panel(&bottom, recording, &lanes, span)?;
        root.present().map_err(drawing("document"))?;
    }
    Ok(svg)
}

/// The executions that get a lane, oldest first.
fn lanes(recording: &Recording) -> Vec<&Execution> {
    let mut executions: Vec<&Execution> = recording
        .executions
        .iter()
        .filter(|e| e.properties.start_time.is_some())
        .collect();
    executions.sort_by_key(|e| e.properties.start_time);
    let skip = executions.len().saturating_sub(MAX_LANES);
    executions.split_off(skip)
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A panel with its caption, 0..`span` seconds across and 0..`height` up; both panels share the layout
/// so their x axes line up.
fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: String,
    caption_size: u32,
    x_label_area: u32,
    span: f64,
    height: f64,
) -> Result<Chart<'a, 'b>, DrawError> {
    ChartBuilder::on(area)
        .caption(caption, (FONT, caption_size))
        .margin(12)
        .x_label_area_size(x_label_area)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..span, 0f64..height)
        .map_err(drawing("panel"))
}

fn queue_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    recording: &Recording,
    span: f64,
) -> Result<(), DrawError> {
    let start = recording.started;
    let peak = recording
        .samples
        .iter()
        .map(|s| s.active)
        .chain(recording.polls.iter().filter_map(|p| p.active))
        .max()
        .unwrap_or(0);
    // Whole messages, and headroom above the highest step for the send markers.
    let top = peak as f64 + 1.6;
    let caption = format!(
        "{} · {} · {} message(s) sent · max executions {} · started {}",
        recording.job_name,
        recording.job.label(),
        recording.messages_sent(),
        recording.max_executions,
        clock_time(start),
    );
    let mut chart = panel(area, caption, 18, 28, span, top)?;
    chart
        .configure_mesh()
        .y_desc("active messages")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .y_labels(
            usize::try_from(peak)
                .unwrap_or(usize::MAX)
                .saturating_add(2)
                .min(12),
        )
        // Messages are whole: ticks between them get no label.
        .y_label_formatter(&|y| {
            if (y - y.round()).abs() < 1e-6 {
                format!("{y:.0}")
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|x| format!("{x:.0} s"))
        .max_light_lines(0)
        .draw()
        .map_err(drawing("queue axes"))?;

    let end = seconds(start, recording.last_time()).min(span);
    let mut steps = Vec::with_capacity(recording.samples.len() * 2 + 1);
    // The level at the picture's start: the last count before it (a comparison starts at the send).
    let mut level = recording
        .samples
        .iter()
        .take_while(|s| s.time <= start)
        .last()
        .map_or(0.0, |s| s.active as f64);
    steps.push((0.0, level));
    for sample in recording.samples.iter().filter(|s| s.time > start) {
        let x = seconds(start, sample.time).clamp(0.0, span);
        steps.push((x, level));
        level = sample.active as f64;
        steps.push((x, level));
    }
    steps.push((end, level));
    chart
        .draw_series(LineSeries::new(steps, QUEUE_LINE.stroke_width(2)))
        .map_err(drawing("queue line"))?
        .label("queue: active messages")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], QUEUE_LINE.stroke_width(2)));

    let polls = recording.polls.iter().filter_map(|poll| {
        let x = seconds(start, poll.time);
        (0.0..=span)
            .contains(&x)
            .then(|| Circle::new((x, poll.active.unwrap_or(0) as f64), 3, POLL.filled()))
    });
    chart
        .draw_series(polls)
        .map_err(drawing("poll markers"))?
        .label("controller poll")
        .legend(|(x, y)| Circle::new((x + 9, y), 3, POLL.filled()));

    let marker_y = top - 0.3;
    let sends = recording.sends.iter().filter_map(|send| {
        let x = seconds(start, send.time);
        (0.0..=span).contains(&x).then(|| {
            EmptyElement::at((x, marker_y))
                + TriangleMarker::new((0, 0), 6, SEND.filled())
                + Text::new(
                    format!("+{}", send.count),
                    (7, -6),
                    (FONT, 13).into_font().color(&SEND),
                )
        })
    });
    chart
        .draw_series(sends)
        .map_err(drawing("send markers"))?
        .label("send (+messages)")
        .legend(|(x, y)| TriangleMarker::new((x + 9, y), 5, SEND.filled()));

    // The bars' colour key, one entry per status that appears, in the same legend.
    for status in [
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::Stopped,
        ExecutionStatus::Running,
    ] {
        let colour = status_colour(status);
        if recording
            .executions
            .iter()
            .any(|e| status_colour(e.status()) == colour)
        {
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(drawing("colour key"))?
                .label(format!("execution {status}"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 18, y + 4)], colour.filled())
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(POLL)
        .label_font((FONT, 13))
        .draw()
        .map_err(drawing("legend"))?;
    Ok(())
}

fn executions_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    recording: &Recording,
    lanes: &[&Execution],
    span: f64,
) -> Result<(), DrawError> {
    let start = recording.started;
    let count = lanes.len().max(1) as f64;
    let hidden = recording.executions.len().saturating_sub(lanes.len());
    let caption = if lanes.is_empty() {
        "executions: none".to_owned()
    } else if hidden > 0 {
        format!(
            "executions (the latest {}; {hidden} earlier not shown)",
            lanes.len()
        )
    } else {
        format!("executions ({})", lanes.len())
    };
    let mut chart = panel(area, caption, 15, 62, span, count)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(format!("seconds since {}", clock_time(start)))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .x_label_formatter(&|x| format!("{x:.0} s"))
        .max_light_lines(0)
        .draw()
        .map_err(drawing("executions axes"))?;

    let end_of_picture = seconds(start, recording.last_time());
    // A bar is at least this wide, so an execution of a few milliseconds is still seen.
    let min_width = span / 160.0;
    let mut bars = Vec::with_capacity(lanes.len());
    let mut labels = Vec::with_capacity(lanes.len());
    for (index, execution) in lanes.iter().enumerate() {
        let Some(started) = execution.properties.start_time else {
            continue;
        };
        // The first execution on top, as a table reads.
        let lane = count - 1.0 - index as f64;
        let x0 = seconds(start, started).clamp(0.0, span);
        let x1 = execution
            .properties
            .end_time
            .map_or(end_of_picture, |end| seconds(start, end))
            .clamp(x0 + min_width, span.max(x0 + min_width));
        let colour = status_colour(execution.status());
        bars.push(Rectangle::new(
            [(x0, lane + 0.2), (x1, lane + 0.8)],
            colour.filled(),
        ));
        let ran = execution
            .run_time()
            .map_or_else(|| "running".to_owned(), human_duration);
        let text = format!("{} · {} · {ran}", execution.name, execution.status());
        // Right of the bar, unless that would run off the picture: then left of it.
        let (x, anchor) = if x1 < span * 0.62 {
            (x1 + span / 200.0, HPos::Left)
        } else {
            (x0 - span / 200.0, HPos::Right)
        };
        let style = TextStyle::from((FONT, 13).into_font())
            .color(&LABEL)
            .pos(Pos::new(anchor, VPos::Center));
        labels.push(Text::new(text, (x, lane + 0.5), style));
    }
    chart.draw_series(bars).map_err(drawing("execution bars"))?;
    chart
        .draw_series(labels)
        .map_err(drawing("execution labels"))?;

    Ok(())
}

/// `2026-11-25 12:00:00 UTC`.
pub fn clock_time(time: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| time.to_string())
}
