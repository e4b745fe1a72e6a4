//! Job executions as `az containerapp job execution list -o json` prints them, and the poller that waits
//! for ours to succeed.
//!
//! The shape follows the REST API `Microsoft.App/jobs/executions` (api-version 2025-07-01, example
//! `Job_Executions_Get.json` in Azure/azure-rest-api-specs): the CLI prints the `value` array bare, one
//! object per execution with `name` and `properties.{status,startTime,endTime,template}`. Everything but
//! `name` is optional because the API omits fields while an execution is young (no `endTime`) and newer
//! API versions add some (`reason`, `message`). The list order is not documented, so nothing here relies
//! on it.
//!
//! The poller runs over [`ExecutionSource`], so the Azure runner (which shells out to `az`) and the local
//! lab (which asks its controller) share one waiting rule; [`table`] is how both show the executions.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::lab::ui::human_duration;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;

/// One execution of a Container Apps job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// ARM resource id, `.../jobs/<job>/executions/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `<job>-<7 random characters>`.
    pub name: String,
    /// `Microsoft.App/jobs/executions`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub properties: ExecutionProperties,
}

/// The `properties` object of an execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionProperties {
    #[serde(default)]
    pub status: ExecutionStatus,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start_time: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub end_time: Option<OffsetDateTime>,
    /// The containers the execution ran; kept as JSON because the poller never looks inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<serde_json::Value>,
    /// Why an execution ended as it did (newer API versions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `JobExecutionRunningState` from the API; any value this code does not know reads as `Unknown`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecutionStatus {
    Running,
    Processing,
    Succeeded,
    Failed,
    Stopped,
    Degraded,
    #[default]
    #[serde(other)]
    Unknown,
}

impl ExecutionStatus {
    /// The execution did what it was started for.
    pub fn is_success(self) -> bool {
        self == Self::Succeeded
    }

    /// The execution cannot reach `Succeeded` any more, so waiting longer is pointless: `Failed`, and
    /// `Stopped` (someone stopped it).
    ///
    /// `Degraded` and `Unknown` are NOT terminal. No source defines them beyond their names (the REST
    /// spec's `JobExecutionRunningState` enum, api-version 2025-07-01; the .NET and JS SDK docs say only
    /// "Degraded."/"Unknown."), so the watch keeps polling through them until the deadline, as the
    /// project's reference notes decide (shared/reference/aca-keda-terraform.md §3b): a replica that is
    /// being retried may well still succeed, and giving up early would tear down a lab that works.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Stopped)
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why an execution ended as it did, in the API's two fields: `properties.reason`, a short code, and
/// `properties.message`, a sentence. Container Apps jobs run on Kubernetes Jobs and surface their
/// condition reasons; the local controller uses the same codes (see [`Ending`]'s constants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub reason: &'static str,
    pub message: String,
}

impl Ending {
    /// More replicas failed than the retry limit allows (Kubernetes' Job condition reason for
    /// `backoffLimit`, "Job has reached the specified backoff limit").
    pub const BACKOFF_LIMIT_EXCEEDED: &'static str = "BackoffLimitExceeded";
    /// The replica timeout passed (`activeDeadlineSeconds`, "Job was active longer than specified
    /// deadline").
    pub const DEADLINE_EXCEEDED: &'static str = "DeadlineExceeded";
    /// Stopped from outside before it could finish; no Azure code is documented for this, so the
    /// status's own word.
    pub const STOPPED: &'static str = "Stopped";
}

/// The subscription id of local ARM-style resource ids: no subscription is involved.
pub const LOCAL_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
/// The resource group of local ARM-style resource ids.
pub const LOCAL_RESOURCE_GROUP: &str = "aca-job-lab-local";

/// An execution's ARM resource id, as `az containerapp job execution list` shows it:
/// `/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.App/jobs/<job>/executions/<name>`.
pub fn execution_id(subscription: &str, resource_group: &str, job: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.App/jobs/{job}/executions/{name}"
    )
}

impl Execution {
    pub fn status(&self) -> ExecutionStatus {
        self.properties.status
    }

    pub fn start_time(&self) -> Option<OffsetDateTime> {
        self.properties.start_time
    }

    /// ` (reason: message)`, ` (reason)`, ` (message)` or nothing: why it ended, for a sentence.
    pub fn why(&self) -> String {
        match (&self.properties.reason, &self.properties.message) {
            (Some(reason), Some(message)) => format!(" ({reason}: {message})"),
            (Some(text), None) | (None, Some(text)) => format!(" ({text})"),
            (None, None) => String::new(),
        }
    }

    /// How long it ran, once it has ended.
    pub fn run_time(&self) -> Option<Duration> {
        let (start, end) = (self.properties.start_time?, self.properties.end_time?);
        (end - start).try_into().ok()
    }
}

/// Parse what `az containerapp job execution list -o json` printed. The REST form `{ "value": [...] }` is
/// accepted too, so a recording taken with `az rest` replays as well.
pub fn parse_execution_list(json: &str) -> anyhow::Result<Vec<Execution>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Listing {
        Bare(Vec<Execution>),
        Page { value: Vec<Execution> },
    }
    let listing: Listing = serde_json::from_str(json).context(
        "expected a JSON array of job executions (each with `name` and `properties.status`)",
    )?;
    Ok(match listing {
        Listing::Bare(executions) | Listing::Page { value: executions } => executions,
    })
}

/// Where the poller gets the job's executions from: `az` for Azure, the controller for the local lab.
pub trait ExecutionSource {
    /// Every execution the job currently reports, in any order.
    fn list(&mut self) -> impl Future<Output = anyhow::Result<Vec<Execution>>>;
}

/// How many listings in a row may fail (network, throttling, an expired token being refreshed) before
/// the watch gives up; between them it backs off. Any successful listing resets the count.
pub const MAX_FAILED_LISTINGS: u32 = 5;

/// What to wait for, and for how long.
#[derive(Debug, Clone)]
pub struct WatchPlan {
    /// Only executions that started at or after this instant (minus `clock_skew`) count: ours.
    pub since: OffsetDateTime,
    /// Tolerance between this machine's clock and the one that stamps `startTime`.
    pub clock_skew: Duration,
    /// Executions with these names are older than the send even if the clocks disagree.
    pub ignore: HashSet<String>,
    /// Pause between two listings.
    pub poll_interval: Duration,
    /// Give up this long after the first listing.
    pub deadline: Duration,
}

impl WatchPlan {
    pub fn new(since: OffsetDateTime, poll_interval: Duration, deadline: Duration) -> Self {
        Self {
            since,
            clock_skew: Duration::from_secs(60),
            ignore: HashSet::new(),
            poll_interval,
            deadline,
        }
    }

    /// Ours are the executions that were not listed just before the send (`before`), whatever their
    /// clocks say: Azure stamps `startTime` with its own clock, so a comparison with this machine's
    /// clock could take an earlier execution for ours (or miss ours) when the two disagree.
    pub fn excluding(before: HashSet<String>, poll_interval: Duration, deadline: Duration) -> Self {
        Self {
            since: OffsetDateTime::UNIX_EPOCH,
            clock_skew: Duration::ZERO,
            ignore: before,
            poll_interval,
            deadline,
        }
    }

    /// Is this execution one that our send can have started?
    pub fn is_ours(&self, execution: &Execution) -> bool {
        if self.ignore.contains(&execution.name) {
            return false;
        }
        match execution.start_time() {
            Some(start) => start >= self.since - self.clock_skew,
            // A start time appears with the execution's first replica; one without is brand new.
            None => true,
        }
    }
}

/// What one listing showed, for a progress display.
#[derive(Debug)]
pub struct PollReport<'a> {
    /// 1 for the first listing.
    pub poll: u32,
    /// Time since the first listing started.
    pub elapsed: Duration,
    /// Our executions, oldest first.
    pub ours: &'a [Execution],
    /// Every execution listed.
    pub total: usize,
    /// This listing failed (the error, with the command and its output) and will be retried: the
    /// `n`th failure in a row out of [`MAX_FAILED_LISTINGS`]; `ours` is then what the last good one showed.
    pub failed: Option<(u32, &'a anyhow::Error)>,
}

/// How the wait ended.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchOutcome {
    /// One of our executions reached `Succeeded`.
    Succeeded {
        execution: Execution,
        elapsed: Duration,
    },
    /// One of our executions reached `Failed`, `Degraded` or `Stopped` and none succeeded.
    Failed {
        execution: Execution,
        elapsed: Duration,
    },
    /// The deadline passed first; `ours` is what was running (often nothing: the job was never triggered).
    DeadlineReached {
        waited: Duration,
        ours: Vec<Execution>,
    },
}

/// List executions every `poll_interval` until one of ours succeeds, one fails, or the deadline passes.
/// A success seen in the same listing as a failure wins: the message was processed. A listing that
/// fails is reported and retried with backoff (twice the pause after each failure in a row, at most a
/// minute); [`MAX_FAILED_LISTINGS`] failures in a row end the wait with the last error.
pub async fn wait_for_success<S: ExecutionSource>(
    source: &mut S,
    plan: &WatchPlan,
    mut on_poll: impl FnMut(&PollReport<'_>),
) -> anyhow::Result<WatchOutcome> {
    let started = Instant::now();
    let give_up_at = started + plan.deadline;
    let mut poll = 0;
    let mut failures = 0u32;
    let mut ours: Vec<Execution> = Vec::new();
    loop {
        poll += 1;
        // A listing that hangs must not outlive the deadline; allow one interval past it for the last one.
        let listing_deadline = give_up_at.max(Instant::now()) + plan.poll_interval;
        let Ok(listing) = tokio::time::timeout_at(listing_deadline, source.list()).await else {
            return Ok(WatchOutcome::DeadlineReached {
                waited: started.elapsed(),
                ours,
            });
        };
        let all = match listing {
            Ok(all) => {
                failures = 0;
                all
            }
            Err(error) => {
                failures += 1;
                let elapsed = started.elapsed();
                if failures >= MAX_FAILED_LISTINGS {
                    return Err(error.context(format!(
                        "listing the executions failed {failures} times in a row over {}; the last error follows",
                        human_duration(elapsed)
                    )));
                }
                on_poll(&PollReport {
                    poll,
                    elapsed,
                    ours: &ours,
                    total: 0,
                    failed: Some((failures, &error)),
                });
                let now = Instant::now();
                if now >= give_up_at {
                    return Ok(WatchOutcome::DeadlineReached {
                        waited: elapsed,
                        ours,
                    });
                }
                let backoff = plan
                    .poll_interval
                    .saturating_mul(1 << failures.min(16))
                    .min(plan.poll_interval.max(Duration::from_secs(60)));
                tokio::time::sleep_until((now + backoff).min(give_up_at)).await;
                continue;
            }
        };
        ours = all.iter().filter(|e| plan.is_ours(e)).cloned().collect();
        ours.sort_by_key(|e| (e.start_time(), e.name.clone()));
        let elapsed = started.elapsed();
        on_poll(&PollReport {
            poll,
            elapsed,
            ours: &ours,
            total: all.len(),
            failed: None,
        });

        if let Some(execution) = ours.iter().find(|e| e.status().is_success()) {
            return Ok(WatchOutcome::Succeeded {
                execution: execution.clone(),
                elapsed,
            });
        }
        if let Some(execution) = ours.iter().find(|e| e.status().is_failure()) {
            return Ok(WatchOutcome::Failed {
                execution: execution.clone(),
                elapsed,
            });
        }
        let now = Instant::now();
        if now >= give_up_at {
            return Ok(WatchOutcome::DeadlineReached {
                waited: elapsed,
                ours,
            });
        }
        tokio::time::sleep_until((now + plan.poll_interval).min(give_up_at)).await;
    }
}

/// Whole seconds, as the Azure CLI shows start times.
const STARTED: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `NAME  STATUS  STARTED  DURATION`, one row per execution, oldest first.
pub fn table(executions: &[Execution]) -> Vec<String> {
    let mut rows = vec![[
        "NAME".to_owned(),
        "STATUS".to_owned(),
        "STARTED".to_owned(),
        "DURATION".to_owned(),
    ]];
    let mut sorted: Vec<&Execution> = executions.iter().collect();
    sorted.sort_by_key(|e| (e.start_time(), e.name.clone()));
    for execution in sorted {
        let started = execution
            .start_time()
            .and_then(|t| t.format(STARTED).ok())
            .unwrap_or_else(|| "-".to_owned());
        let duration = execution
            .run_time()
            .map(human_duration)
            .unwrap_or_else(|| "-".to_owned());
        rows.push([
            execution.name.clone(),
            execution.status().to_string(),
            started,
            duration,
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use time::macros::datetime;

    use super::*;

    /// Replays listings in order, repeating the last one; counts calls.
    struct Scripted {
        listings: VecDeque<Vec<Execution>>,
        calls: u32,
    }

    impl Scripted {
        fn new(listings: Vec<Vec<Execution>>) -> Self {
            Self {
                listings: listings.into(),
                calls: 0,
            }
        }
    }

    impl ExecutionSource for Scripted {
        async fn list(&mut self) -> anyhow::Result<Vec<Execution>> {
            self.calls += 1;
            let listing = if self.listings.len() > 1 {
                self.listings.pop_front().unwrap()
            } else {
                self.listings.front().cloned().unwrap_or_default()
            };
            Ok(listing)
        }
    }

    /// An execution as a listing shows it.
    fn execution(name: &str, status: ExecutionStatus, start: Option<OffsetDateTime>) -> Execution {
        Execution {
            id: None,
            name: name.into(),
            resource_type: None,
            properties: ExecutionProperties {
                status,
                start_time: start,
                ..Default::default()
            },
        }
    }

    const SEND: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

    fn plan() -> WatchPlan {
        WatchPlan::new(SEND, Duration::from_secs(10), Duration::from_secs(300))
    }

    #[tokio::test(start_paused = true)]
    async fn running_then_succeeded_returns_our_execution() {
        let start = Some(datetime!(2026-11-25 12:00:31 UTC));
        let mut source = Scripted::new(vec![
            vec![],
            vec![execution(
                "job-rust-abc1234",
                ExecutionStatus::Running,
                start,
            )],
            vec![execution(
                "job-rust-abc1234",
                ExecutionStatus::Succeeded,
                start,
            )],
        ]);
        let mut seen = Vec::new();
        let outcome = wait_for_success(&mut source, &plan(), |report| {
            seen.push((
                report.poll,
                report.ours.iter().map(|e| e.status()).collect::<Vec<_>>(),
            ))
        })
        .await
        .unwrap();
        let WatchOutcome::Succeeded { execution, elapsed } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(execution.name, "job-rust-abc1234");
        assert_eq!(elapsed, Duration::from_secs(20));
        assert_eq!(
            seen,
            vec![
                (1, vec![]),
                (2, vec![ExecutionStatus::Running]),
                (3, vec![ExecutionStatus::Succeeded])
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_execution_from_before_the_send_is_not_ours() {
        let old = execution(
            "job-rust-old0000",
            ExecutionStatus::Succeeded,
            Some(datetime!(2026-11-25 11:50:00 UTC)),
        );
        let mut source = Scripted::new(vec![vec![old]]);
        let outcome = wait_for_success(&mut source, &plan(), |_| {})
            .await
            .unwrap();
        assert_eq!(
            outcome,
            WatchOutcome::DeadlineReached {
                waited: Duration::from_secs(300),
                ours: vec![]
            }
        );
        // Listings at 0, 10, …, 300 s: the last one lands exactly on the deadline.
        assert_eq!(source.calls, 31);
    }

    #[test]
    fn listed_before_the_send_is_the_only_rule_when_known() {
        let plan = WatchPlan::excluding(
            HashSet::from(["job-rust-before1".to_owned()]),
            Duration::from_secs(10),
            Duration::from_secs(300),
        );
        // Azure's clock ahead of ours: an earlier execution looks as if it started after the send.
        let earlier = execution(
            "job-rust-before1",
            ExecutionStatus::Succeeded,
            Some(SEND + Duration::from_secs(120)),
        );
        assert!(!plan.is_ours(&earlier));
        // Azure's clock behind ours: our execution looks as if it started long before the send.
        let ours = execution(
            "job-rust-new0000",
            ExecutionStatus::Running,
            Some(SEND - Duration::from_secs(600)),
        );
        assert!(plan.is_ours(&ours));
    }

    #[tokio::test(start_paused = true)]
    async fn ignored_names_are_not_ours_even_with_a_late_start_time() {
        let mut plan = plan();
        plan.ignore.insert("job-rust-before1".into());
        let late = execution("job-rust-before1", ExecutionStatus::Succeeded, Some(SEND));
        assert!(!plan.is_ours(&late));
        assert!(plan.is_ours(&execution(
            "job-rust-young00",
            ExecutionStatus::Running,
            None
        )));
        // Within the skew: the clocks may disagree by a few seconds.
        let skewed = execution(
            "job-rust-skew000",
            ExecutionStatus::Running,
            Some(SEND - Duration::from_secs(5)),
        );
        assert!(plan.is_ours(&skewed));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_and_stopped_end_the_wait_at_once() {
        for status in [ExecutionStatus::Failed, ExecutionStatus::Stopped] {
            let start = Some(datetime!(2026-11-25 12:00:40 UTC));
            let mut source = Scripted::new(vec![
                vec![execution(
                    "job-rust-abc1234",
                    ExecutionStatus::Running,
                    start,
                )],
                vec![execution("job-rust-abc1234", status, start)],
            ]);
            let outcome = wait_for_success(&mut source, &plan(), |_| {})
                .await
                .unwrap();
            let WatchOutcome::Failed { execution, elapsed } = outcome else {
                panic!("{outcome:?}")
            };
            assert_eq!(execution.status(), status);
            assert_eq!(elapsed, Duration::from_secs(10));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn degraded_and_unknown_keep_the_watch_going() {
        let start = Some(datetime!(2026-11-25 12:00:40 UTC));
        for status in [ExecutionStatus::Degraded, ExecutionStatus::Unknown] {
            // … until the execution recovers,
            let mut source = Scripted::new(vec![
                vec![execution("job-rust-abc1234", status, start)],
                vec![execution("job-rust-abc1234", status, start)],
                vec![execution(
                    "job-rust-abc1234",
                    ExecutionStatus::Succeeded,
                    start,
                )],
            ]);
            let outcome = wait_for_success(&mut source, &plan(), |_| {})
                .await
                .unwrap();
            assert!(
                matches!(outcome, WatchOutcome::Succeeded { elapsed, .. } if elapsed == Duration::from_secs(20)),
                "{status}: {outcome:?}"
            );
            // … or until the deadline, which reports the execution as it last was.
            let mut source =
                Scripted::new(vec![vec![execution("job-rust-abc1234", status, start)]]);
            let mut plan = plan();
            plan.deadline = Duration::from_secs(30);
            let outcome = wait_for_success(&mut source, &plan, |_| {}).await.unwrap();
            let WatchOutcome::DeadlineReached { ours, .. } = outcome else {
                panic!("{status}: {outcome:?}")
            };
            assert_eq!(ours[0].status(), status);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_beside_a_failure_wins() {
        let start = Some(datetime!(2026-11-25 12:00:40 UTC));
        let mut source = Scripted::new(vec![vec![
            execution("job-rust-fail000", ExecutionStatus::Failed, start),
            execution("job-rust-good000", ExecutionStatus::Succeeded, start),
        ]]);
        let outcome = wait_for_success(&mut source, &plan(), |_| {})
            .await
            .unwrap();
        assert!(
            matches!(outcome, WatchOutcome::Succeeded { ref execution, .. } if execution.name == "job-rust-good000")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn still_running_at_the_deadline_is_reported_with_the_execution() {
        let start = Some(datetime!(2026-11-25 12:00:40 UTC));
        let mut source = Scripted::new(vec![vec![execution(
            "job-rust-slow000",
            ExecutionStatus::Running,
            start,
        )]]);
        let mut plan = plan();
        plan.deadline = Duration::from_secs(25);
        let outcome = wait_for_success(&mut source, &plan, |_| {}).await.unwrap();
        let WatchOutcome::DeadlineReached { waited, ours } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(waited, Duration::from_secs(25));
        assert_eq!(ours[0].name, "job-rust-slow000");
        assert_eq!(source.calls, 4, "listings at 0, 10, 20 and 25 s");
    }

    /// Fails the first `failures` listings, then lists `then`.
    struct Flaky {
        failures: u32,
        calls: u32,
        then: Vec<Execution>,
    }

    impl ExecutionSource for Flaky {
        async fn list(&mut self) -> anyhow::Result<Vec<Execution>> {
            self.calls += 1;
            if self.calls <= self.failures {
                anyhow::bail!(
                    "`az containerapp job execution list` failed (exit status: 1): ERROR: (TooManyRequests)"
                )
            }
            Ok(self.then.clone())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_listings_are_retried_with_backoff_and_reported() {
        let start = Some(datetime!(2026-11-25 12:00:40 UTC));
        let mut source = Flaky {
            failures: 2,
            calls: 0,
            then: vec![execution(
                "job-rust-abc1234",
                ExecutionStatus::Succeeded,
                start,
            )],
        };
        let mut reported = Vec::new();
        let outcome = wait_for_success(&mut source, &plan(), |report| {
            reported.push(report.failed.map(|(n, error)| (n, error.to_string())))
        })
        .await
        .unwrap();
        let WatchOutcome::Succeeded { elapsed, .. } = outcome else {
            panic!("{outcome:?}")
        };
        // Backoff: 20 s after the first failure, 40 s after the second.
        assert_eq!(elapsed, Duration::from_secs(60));
        assert_eq!(reported.len(), 3);
        assert_eq!(reported[0].as_ref().unwrap().0, 1);
        assert!(reported[1].as_ref().unwrap().1.contains("TooManyRequests"));
        assert_eq!(reported[2], None);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_listings_end_the_wait_after_too_many_in_a_row() {
        let mut source = Flaky {
            failures: u32::MAX,
            calls: 0,
            then: Vec::new(),
        };
        let error = wait_for_success(&mut source, &plan(), |_| {})
            .await
            .unwrap_err();
        assert_eq!(source.calls, MAX_FAILED_LISTINGS);
        let text = format!("{error:#}");
        assert!(
            text.contains("failed 5 times in a row") && text.contains("ERROR: (TooManyRequests)"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_that_hangs_cannot_outlive_the_deadline() {
        struct Hangs;
        impl ExecutionSource for Hangs {
            async fn list(&mut self) -> anyhow::Result<Vec<Execution>> {
                std::future::pending().await
            }
        }
        let outcome = wait_for_success(&mut Hangs, &plan(), |_| {}).await.unwrap();
        assert_eq!(
            outcome,
            WatchOutcome::DeadlineReached {
                waited: Duration::from_secs(310),
                ours: vec![]
            }
        );
    }

    #[test]
    fn parses_the_documented_rest_example_and_the_cli_shape() {
        // Verbatim `Job_Executions_Get.json` response body (api-version 2025-07-01), trimmed of initContainers.
        let rest = r#"{ "value": [ { "name": "testcontainerAppJob-27944454", "properties": {
            "status": "Running", "startTime": "2023-02-13T20:37:30+00:00", "endTime": "2023-02-13T20:47:30+00:00",
            "template": { "containers": [ { "image": "repo/testcontainerappsjob0:v4", "name": "testcontainerappsjob0",
            "resources": { "cpu": 0.5, "memory": "1Gi" } } ] } } } ], "nextLink": null }"#;
        let executions = parse_execution_list(rest).unwrap();
        assert_eq!(executions.len(), 1);
        assert_eq!(executions[0].status(), ExecutionStatus::Running);
        assert_eq!(executions[0].run_time(), Some(Duration::from_secs(600)));

        let cli = r#"[ { "id": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.App/jobs/job-rust/executions/job-rust-k3j9x2q",
            "name": "job-rust-k3j9x2q", "type": "Microsoft.App/jobs/executions",
            "properties": { "startTime": "2026-08-24T10:15:31.5+00:00", "endTime": null, "status": "Paused",
            "template": { "containers": [], "initContainers": null } } } ]"#;
        let executions = parse_execution_list(cli).unwrap();
        assert_eq!(
            executions[0].status(),
            ExecutionStatus::Unknown,
            "unknown statuses are tolerated"
        );
        assert_eq!(executions[0].properties.end_time, None);
        assert_eq!(executions[0].run_time(), None);
    }

    #[test]
    fn garbage_is_an_error_that_says_what_was_expected() {
        let error = format!(
            "{:#}",
            parse_execution_list("ERROR: Please run 'az login'").unwrap_err()
        );
        assert!(
            error.contains("expected a JSON array of job executions"),
            "{error}"
        );
    }

    #[test]
    fn the_table_lines_up_and_sorts_by_start_time() {
        let ended = |name: &str, status, start, end| {
            let mut execution = execution(name, status, start);
            execution.properties.end_time = end;
            execution
        };
        let rows = table(&[
            ended(
                "job-rust-bbbbbbb",
                ExecutionStatus::Running,
                Some(datetime!(2026-11-25 12:00:05 UTC)),
                None,
            ),
            ended(
                "job-rust-aaaaaaa",
                ExecutionStatus::Succeeded,
                Some(datetime!(2026-11-25 12:00:03 UTC)),
                Some(datetime!(2026-11-25 12:00:03.120 UTC)),
            ),
        ]);
        assert_eq!(
            rows,
            [
                "NAME              STATUS     STARTED               DURATION",
                "job-rust-aaaaaaa  Succeeded  2026-11-25T12:00:03Z  0.12 s",
                "job-rust-bbbbbbb  Running    2026-11-25T12:00:05Z  -",
            ]
        );
    }
}
