//! The timeline from a run recorded under a paused clock: the SVG as a snapshot, and the HTML page as a
//! real headless Chromium paints it, checked pixel by pixel for the bars a reader must see.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use super::recording::{JobKind, Recorder, Recording, RunInfo};
use super::{RunDir, page, timeline};
use crate::lab::controller::{Clock, History, ScaleRule};
use crate::lab::executions::ExecutionStatus;

const T0: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);
/// How long each simulated execution takes to process its one message.
const WORK: Duration = Duration::from_millis(1500);

/// `send --count 5` half a second after the lab starts, a controller polling every second with the
/// scale rule of the settings file (messageCount 1) and `max_executions`, each execution completing its
/// one message after [`WORK`]. Time is tokio's paused clock, so every run records the same thing.
async fn five_messages(max_executions: u32, job: JobKind) -> Recording {
    let clock = Clock::starting_at(T0);
    let job_name = match job {
        JobKind::Rust => "job-rust",
        JobKind::Python => "job-python",
    };
    let recorder = Recorder::new(
        RunInfo {
            job,
            job_name: job_name.to_owned(),
            queue: "queue-messages".to_owned(),
            max_executions,
        },
        clock,
    );
    let history = History::new();
    let rule = ScaleRule {
        message_count: 1,
        activation_message_count: 0,
        min_executions: 0,
        max_executions,
    };
    let tick = Duration::from_millis(100);
    let mut active = 0u64;
    let mut running: Vec<(String, OffsetDateTime)> = Vec::new();
    let mut started = 0;
    for step in 0..150u32 {
        let now = clock.now();
        if step == 5 {
            active += 5;
            recorder.send(5);
        }
        running.retain(|(name, ends)| {
            let done = *ends <= now;
            if done {
                history.finish(name, ExecutionStatus::Succeeded, now, None);
                active -= 1;
            }
            !done
        });
        if step % 10 == 0 {
            recorder.poll(Some(active));
            let running_now = u32::try_from(running.len()).unwrap();
            for _ in 0..rule.executions_to_start(Some(active), running_now) {
                started += 1;
                let name = format!("{job_name}-{started:07}");
                history.start(&name, now, serde_json::json!({"containers": []}));
                running.push((name, now + WORK));
            }
        }
        recorder.sample(active);
        tokio::time::advance(tick).await;
    }
    recorder.end();
    recorder.recording(&history)
}

#[tokio::test(start_paused = true)]
async fn sequential_executions_draw_as_a_staircase_of_bars() {
    let recording = five_messages(1, JobKind::Rust).await;
    assert_eq!(recording.executions.len(), 5);
    let svg = timeline::render(&recording, None).unwrap();
    let bars = succeeded_rects(&svg);
    // Five bars and the legend's key.
    assert_eq!(bars, 6, "{svg}");
    for n in 1..=5 {
        assert!(svg.contains(&format!("job-rust-000000{n} · Succeeded · 1.50 s")));
    }
    assert!(svg.contains("+5"), "the send is marked");
    insta::with_settings!({ filters => vec![(r"(\d+\.\d)\d+", "$1")] }, {
        insta::assert_snapshot!("sequential_timeline", svg);
    });
}

#[tokio::test(start_paused = true)]
async fn the_page_embeds_the_picture_and_escapes_the_table() {
    let mut recording = five_messages(5, JobKind::Rust).await;
    recording.executions[0].properties.reason = Some("<script>alert(1)</script> & more".into());
    let svg = timeline::render(&recording, None).unwrap();
    let html = page::render(
        "Lab timeline: job-rust",
        &[page::Run {
            recording: &recording,
            svg: &svg,
        }],
    )
    .unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"),
        "{html}"
    );
    assert!(!html.contains("<script>"));
    assert!(html.contains("<svg"), "the picture is inline");
    assert!(
        html.contains("5 message(s) sent · 5 execution(s): 5 Succeeded · max executions 5"),
        "{html}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_directory_keeps_the_recording_and_the_sends_of_other_processes() {
    let state = tempfile::tempdir().unwrap();
    // A lab still running (`lab up`), then a walkthrough that finished meanwhile in the same directory.
    let mut recording = five_messages(1, JobKind::Python).await;
    recording.ended = None;
    let written = super::write_run(state.path(), &recording).unwrap();
    let mut finished = recording.clone();
    finished.started += Duration::from_secs(60);
    finished.ended = Some(finished.started + Duration::from_secs(5));
    let finished_run = super::write_run(state.path(), &finished).unwrap();
    let latest = RunDir::latest(state.path(), Some(JobKind::Python)).unwrap();
    assert_eq!(
        latest,
        RunDir(finished_run.html.parent().unwrap().to_path_buf())
    );
    let run = RunDir(written.html.parent().unwrap().to_path_buf());
    assert_eq!(run.load().unwrap(), recording);
    let later = super::SendMark {
        time: T0 + Duration::from_secs(20),
        count: 2,
    };
    super::note_send(state.path(), later).unwrap();
    assert_eq!(
        run.load().unwrap().sends.last(),
        Some(&later),
        "marked on the running lab"
    );
    assert_eq!(
        latest.load().unwrap(),
        finished,
        "not on the finished walkthrough"
    );
    assert!(RunDir::latest(state.path(), Some(JobKind::Rust)).is_none());
    let error = super::compare(state.path()).unwrap_err().to_string();
    assert!(
        error.contains("no Rust job run is recorded") && error.contains("cargo xtask lab"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_comparison_lines_the_runs_up_at_their_first_send() {
    let state = tempfile::tempdir().unwrap();
    super::write_run(state.path(), &five_messages(1, JobKind::Rust).await).unwrap();
    // A `lab up` that idled a minute before `lab send`.
    let mut idle = five_messages(1, JobKind::Python).await;
    idle.started -= Duration::from_secs(60);
    super::write_run(state.path(), &idle).unwrap();
    let page = std::fs::read_to_string(super::compare(state.path()).unwrap().html).unwrap();
    // Both pictures start a second before their send (at 12:00:00.5), on one 15 s scale.
    assert!(
        page.contains("job-rust · Rust job · 5 message(s) sent · max executions 1 · started 2026-11-25 12:00:00 UTC"),
        "{page}"
    );
    assert!(
        page.contains("job-python · Python job · 5 message(s) sent · max executions 1 · started 2026-11-25 11:59:59 UTC"),
        "{page}"
    );
}

/// `<rect …>` elements filled with the Succeeded colour.
fn succeeded_rects(svg: &str) -> usize {
    let RGBColour(r, g, b) = RGBColour::from(timeline::SUCCEEDED);
    let fill = format!("fill=\"#{r:02X}{g:02X}{b:02X}\"");
    svg.lines()
        .filter(|l| l.starts_with("<rect") && l.contains(&fill))
        .count()
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct RGBColour(u8, u8, u8);

impl From<plotters::style::RGBColor> for RGBColour {
    fn from(colour: plotters::style::RGBColor) -> Self {
        Self(colour.0, colour.1, colour.2)
    }
}

/// Headless Chromium. The tests that need it are `#[ignore]`d, so a plain `cargo test` reports them as
/// ignored instead of passing them unpainted; `cargo xtask test` runs them where Chromium is installed
/// (and always on CI, where `.ci/run` installs it), so here its absence is a failure that says how
/// to fix it.
fn chromium() -> PathBuf {
    let candidates = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(PathBuf::from));
    for candidate in candidates {
        let works = Command::new(&candidate)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if works {
            return candidate;
        }
    }
    panic!(
        "no headless Chromium here: install Debian's `chromium` package (`.ci/run` does), or set \
         CHROMIUM to its path"
    )
}

/// Paint `html` as a browser window 1100 px wide would, and decode the PNG.
fn screenshot(chromium: &Path, dir: &Path, html: &str) -> Image {
    let page = dir.join("index.html");
    std::fs::write(&page, html).unwrap();
    let png = dir.join("page.png");
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1100,1400",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        png.is_file(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // To look at what the test saw: REPORT_SCREENSHOTS=<dir> keeps a copy of every screenshot.
    if let Some(keep) = std::env::var_os("REPORT_SCREENSHOTS") {
        let name = format!(
            "{}.png",
            std::thread::current()
                .name()
                .unwrap_or("page")
                .replace("::", "-")
        );
        std::fs::copy(&png, Path::new(&keep).join(name)).unwrap();
    }
    Image::decode(&png)
}

struct Image {
    width: usize,
    height: usize,
    rgb: Vec<RGBColour>,
}

impl Image {
    fn decode(path: &Path) -> Self {
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        let channels = info.color_type.samples();
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        let rgb = buffer[..info.buffer_size()]
            .chunks(channels)
            .map(|p| RGBColour(p[0], p[1], p[2]))
            .collect();
        Self {
            width: info.width as usize,
            height: info.height as usize,
            rgb,
        }
    }

    /// Axis-aligned boxes of the regions painted `colour`, biggest first (4-connected flood fill).
    fn regions(&self, colour: RGBColour) -> Vec<Region> {
        let close = |p: RGBColour| {
            p.0.abs_diff(colour.0) <= 6
                && p.1.abs_diff(colour.1) <= 6
                && p.2.abs_diff(colour.2) <= 6
        };
        let mut seen = vec![false; self.rgb.len()];
        let mut regions = Vec::new();
        for start in 0..self.rgb.len() {
            if seen[start] || !close(self.rgb[start]) {
                continue;
            }
            let mut region = Region {
                left: usize::MAX,
                right: 0,
                top: usize::MAX,
                bottom: 0,
                pixels: 0,
            };
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(i) = stack.pop() {
                let (x, y) = (i % self.width, i / self.width);
                region.left = region.left.min(x);
                region.right = region.right.max(x);
                region.top = region.top.min(y);
                region.bottom = region.bottom.max(y);
                region.pixels += 1;
                let mut visit = |j: usize| {
                    if !seen[j] && close(self.rgb[j]) {
                        seen[j] = true;
                        stack.push(j);
                    }
                };
                if x > 0 {
                    visit(i - 1);
                }
                if x + 1 < self.width {
                    visit(i + 1);
                }
                if y > 0 {
                    visit(i - self.width);
                }
                if y + 1 < self.height {
                    visit(i + self.width);
                }
            }
            regions.push(region);
        }
        regions.sort_by_key(|r| std::cmp::Reverse(r.pixels));
        regions
    }
}

#[derive(Debug, Clone, Copy)]
struct Region {
    left: usize,
    right: usize,
    top: usize,
    bottom: usize,
    pixels: usize,
}

/// The execution bars as painted: Succeeded-coloured regions bigger than the legend's key.
fn painted_bars(image: &Image) -> Vec<Region> {
    let mut bars: Vec<Region> = image
        .regions(timeline::SUCCEEDED.into())
        .into_iter()
        .filter(|r| r.pixels >= 250 && r.bottom - r.top >= 10)
        .collect();
    bars.sort_by_key(|r| r.top);
    bars
}

/// Five messages with `max_executions`, recorded, drawn, painted by Chromium: the bars it painted.
async fn painted_run(max_executions: u32) -> Vec<Region> {
    let chromium = chromium();
    let recording = five_messages(max_executions, JobKind::Rust).await;
    let dir = tempfile::tempdir().unwrap();
    let written = super::write_run(dir.path(), &recording).unwrap();
    let html = std::fs::read_to_string(written.html).unwrap();
    painted_bars(&screenshot(&chromium, dir.path(), &html))
}

#[tokio::test(start_paused = true)]
#[ignore = "needs headless Chromium (Debian's chromium); `cargo xtask test` runs it where Chromium is installed"]
async fn chromium_paints_five_bars_one_after_another_with_max_executions_1() {
    let bars = painted_run(1).await;
    assert_eq!(bars.len(), 5, "{bars:#?}");
    for pair in bars.windows(2) {
        // One lane each, top to bottom, and each bar starts after the one above ended.
        assert!(pair[0].bottom < pair[1].top, "{bars:#?}");
        assert!(
            pair[0].right < pair[1].left,
            "the bars overlap in time: {bars:#?}"
        );
    }
    // 1.5 s of a 15 s axis on a ~900 px wide plot: a bar a reader sees at once.
    for bar in &bars {
        assert!(bar.right - bar.left >= 60, "{bar:?}");
    }
}

#[tokio::test(start_paused = true)]
#[ignore = "needs headless Chromium (Debian's chromium); `cargo xtask test` runs it where Chromium is installed"]
async fn chromium_paints_five_bars_together_with_max_executions_5() {
    let bars = painted_run(5).await;
    assert_eq!(bars.len(), 5, "{bars:#?}");
    let first = bars[0];
    for bar in &bars {
        assert!(
            bar.left.abs_diff(first.left) <= 1 && bar.right.abs_diff(first.right) <= 1,
            "{bars:#?}"
        );
    }
}

#[tokio::test(start_paused = true)]
#[ignore = "needs headless Chromium (Debian's chromium); `cargo xtask test` runs it where Chromium is installed"]
async fn chromium_paints_a_comparison_with_both_runs_on_one_scale() {
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    super::write_run(dir.path(), &five_messages(1, JobKind::Rust).await).unwrap();
    super::write_run(dir.path(), &five_messages(5, JobKind::Python).await).unwrap();
    let written = super::compare(dir.path()).unwrap();
    let html = std::fs::read_to_string(&written.html).unwrap();
    assert!(html.contains("Rust job") && html.contains("Python job"));
    let image = screenshot(&chromium, dir.path(), &html);
    // Five staircase bars from the Rust run, then five side by side from the Python one (those may be
    // below the window's fold, so at least the first run's must show).
    assert!(painted_bars(&image).len() >= 5);
}
