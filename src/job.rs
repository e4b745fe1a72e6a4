//! The run loop: receive → process → settle, with lock renewal while processing runs and a
//! shutdown future injected by the caller (the binary passes SIGTERM/SIGINT; tests pass their own).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

// The options are configuration (parsed and checked in `config`); the loop only reads them, so
// `job` depends on `config` and never the other way round.
use crate::config::Config;
pub use crate::config::JobOptions;
use crate::processor::{ProcessError, Processor};
use crate::servicebus::{ReceivedMessage, Receiver, ServiceBusClient, ServiceBusError};

/// Exit codes of `servicebus-job`, so a Container Apps retry policy (and a person) sees the truth.
pub mod exit_code {
    /// Every received message was completed (or the queue was empty).
    pub const SUCCESS: u8 = 0;
    /// Could not connect, authenticate, or talk to the broker.
    pub const RUNTIME_ERROR: u8 = 1;
    /// The configuration is wrong; the message names the variable and the fix.
    pub const CONFIGURATION_ERROR: u8 = 2;
    /// At least one message failed: abandoned for redelivery, dead-lettered, or not settled.
    pub const PROCESSING_FAILED: u8 = 3;
    /// Stopped by a signal: 128 + the signal number (SIGINT 130, SIGTERM 143), as shells do.
    pub const SIGNAL_BASE: u8 = 128;
}

/// What happened, logged at the end and mapped to the exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub received: u32,
    pub completed: u32,
    pub abandoned: u32,
    pub dead_lettered: u32,
    /// Settlements the broker link refused (e.g. the lock was lost).
    pub settle_failures: u32,
    pub lock_renewals: u32,
    /// Messages whose lock ran out (or could not be renewed) before they were settled: the broker
    /// delivers them again whatever we sent, so they do not count as completed.
    pub lock_lost: u32,
    /// The shutdown future fired before the job finished.
    pub interrupted: bool,
}

impl Summary {
    /// [`exit_code::PROCESSING_FAILED`] if any message did not complete, else success.
    /// (Interruption is reported by the caller, which knows the signal.)
    pub fn exit_code(&self) -> u8 {
        if self.abandoned + self.dead_lettered + self.settle_failures + self.lock_lost > 0 {
            exit_code::PROCESSING_FAILED
        } else {
            exit_code::SUCCESS
        }
    }
}

/// Connects, drains the queue per `config`, closes, and logs the summary.
pub async fn execute<P: Processor>(
    config: &Config,
    processor: &P,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, ServiceBusError> {
    let started = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    // A stop request while still connecting (say, during a slow token fetch) ends the job at once:
    // nothing is held yet.
    let connecting = async {
        let mut client = ServiceBusClient::connect(&config.connection).await?;
        let receiver = client.receiver(&config.job.queue).await?;
        Ok::<_, ServiceBusError>((client, receiver))
    };
    let (client, mut receiver) = tokio::select! {
        biased;
        () = &mut shutdown => {
            tracing::info!("stopped before any message was received");
            return Ok(Summary { interrupted: true, ..Summary::default() });
        }
        connected = connecting => connected?,
    };
    tracing::info!(
        queue = config.job.queue,
        namespace = config.connection.namespace,
        endpoint = format!("{}:{}", config.connection.host, config.connection.port),
        tls = config.connection.tls,
        max_messages = config.job.max_messages,
        "receiving"
    );
    let outcome = run(&mut receiver, processor, &config.job, &mut shutdown).await;
    let closed = receiver.close().await;
    if let Err(error) = client.close().await {
        tracing::debug!(%error, "closing the connection failed");
    }
    let summary = outcome?;
    closed?;
    let elapsed = started.elapsed();
    tracing::info!(
        received = summary.received,
        completed = summary.completed,
        abandoned = summary.abandoned,
        dead_lettered = summary.dead_lettered,
        settle_failures = summary.settle_failures,
        lock_renewals = summary.lock_renewals,
        lock_lost = summary.lock_lost,
        interrupted = summary.interrupted,
        elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        messages_per_second = rate(summary.received, elapsed),
        "job finished"
    );
    Ok(summary)
}

fn rate(count: u32, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        (f64::from(count) / seconds * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// The loop itself. On shutdown it stops receiving, abandons the message in hand and returns
/// with `interrupted` set; closing the receiver (which abandons any prefetched ones) is the
/// caller's job.
pub async fn run<P: Processor>(
    receiver: &mut Receiver,
    processor: &P,
    options: &JobOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, ServiceBusError> {
    let mut summary = Summary::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        if options.max_messages != 0 && summary.received >= options.max_messages {
            break;
        }
        let credit = match options.max_messages {
            0 => options.prefetch,
            max => options.prefetch.min(max - summary.received),
        };
        let next = tokio::select! {
            biased;
            () = &mut shutdown => {
                summary.interrupted = true;
                break;
            }
            next = receiver.receive(options.max_wait, credit) => next?,
        };
        let Some(message) = next else {
            tracing::info!(
                waited_ms = u64::try_from(options.max_wait.as_millis()).unwrap_or(u64::MAX),
                "no message arrived; the queue looks empty"
            );
            break;
        };
        summary.received += 1;
        let lock = LockWatch::new(message.locked_until);
        let result = tokio::select! {
            biased;
            () = &mut shutdown => {
                summary.interrupted = true;
                tracing::warn!(message_id = message.message_id, "shutting down mid-message; abandoning it so it is delivered again");
                let done = receiver.abandon(&message).await;
                if settled(&message, done, &mut summary) {
                    summary.abandoned += 1;
                }
                break;
            }
            result = process_with_renewal(receiver, processor, &message, &lock) => result,
        };
        summary.lock_renewals += lock.renewals.load(Ordering::Relaxed);
        // Settling still goes out (it is harmless), but a message whose lock is gone will be
        // delivered again, so it must not be reported as done.
        let lock_lost = lock.lost(SystemTime::now());
        if lock_lost {
            summary.lock_lost += 1;
            tracing::warn!(
                message_id = message.message_id,
                "the lock ran out before the message was settled; the broker will deliver it again"
            );
        }
        match result {
            Ok(()) => {
                let done = receiver.complete(&message).await;
                if settled(&message, done, &mut summary) && !lock_lost {
                    summary.completed += 1;
                }
            }
            Err(ProcessError::Poison {
                reason,
                description,
            }) => {
                tracing::warn!(
                    message_id = message.message_id,
                    reason,
                    description,
                    "dead-lettering a message that cannot be processed"
                );
                let done = receiver.dead_letter(&message, &reason, &description).await;
                if settled(&message, done, &mut summary) && !lock_lost {
                    summary.dead_lettered += 1;
                }
            }
            Err(ProcessError::Transient(why)) => {
                tracing::warn!(
                    message_id = message.message_id,
                    delivery_count = message.delivery_count,
                    error = why,
                    "processing failed; abandoning the message for redelivery"
                );
                let done = receiver.abandon(&message).await;
                if settled(&message, done, &mut summary) && !lock_lost {
                    summary.abandoned += 1;
                }
            }
        }
    }
    Ok(summary)
}

/// Whether a settlement went through; a refused one is logged and counted as a failure, and the
/// loop goes on with the next message.
fn settled(
    message: &ReceivedMessage,
    done: Result<(), ServiceBusError>,
    summary: &mut Summary,
) -> bool {
    match done {
        Ok(()) => true,
        Err(error) => {
            summary.settle_failures += 1;
            tracing::error!(message_id = message.message_id, %error, "settling the message failed");
            false
        }
    }
}

/// What lock renewal learned while a message was processed.
struct LockWatch {
    renewals: AtomicU32,
    locked_until: Mutex<Option<SystemTime>>,
    renewal_failed: AtomicBool,
}

impl LockWatch {
    fn new(locked_until: Option<SystemTime>) -> Self {
        LockWatch {
            renewals: AtomicU32::new(0),
            locked_until: Mutex::new(locked_until),
            renewal_failed: AtomicBool::new(false),
        }
    }

    fn locked_until(&self) -> Option<SystemTime> {
        *self
            .locked_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A renewal was refused, or the last known lock expiry has passed.
    fn lost(&self, now: SystemTime) -> bool {
        self.renewal_failed.load(Ordering::Relaxed)
            || self.locked_until().is_some_and(|until| until <= now)
    }
}

/// Runs the processor and, beside it, renews the message's lock before it runs out.
async fn process_with_renewal<P: Processor>(
    receiver: &Receiver,
    processor: &P,
    message: &ReceivedMessage,
    lock: &LockWatch,
) -> Result<(), ProcessError> {
    let processing = processor.process(message);
    let mut processing = std::pin::pin!(processing);
    tokio::select! {
        result = &mut processing => result,
        error = keep_lock(receiver, message, lock) => {
            lock.renewal_failed.store(true, Ordering::Relaxed);
            tracing::warn!(message_id = message.message_id, %error, "lock renewal failed; the message will probably be delivered again");
            processing.await
        }
    }
}

/// Renews the lock whenever half of what is left of it has passed; returns only on failure.
async fn keep_lock(
    receiver: &Receiver,
    message: &ReceivedMessage,
    lock: &LockWatch,
) -> ServiceBusError {
    loop {
        tokio::time::sleep(renewal_delay(lock.locked_until(), SystemTime::now())).await;
        match receiver.renew_lock(message).await {
            Ok(until) => {
                lock.renewals.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(message_id = message.message_id, "lock renewed");
                *lock
                    .locked_until
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(until);
            }
            Err(error) => return error,
        }
    }
}

/// When the broker did not say when the lock runs out, renew this often (well inside Service
/// Bus's default LockDuration of 60 s).
const UNKNOWN_LOCK_RENEWAL: Duration = Duration::from_secs(10);
/// Never renew more often than this.
const MIN_RENEWAL_DELAY: Duration = Duration::from_millis(250);

/// Half of the remaining lock time, so a renewal that is slow still lands before expiry.
pub(crate) fn renewal_delay(locked_until: Option<SystemTime>, now: SystemTime) -> Duration {
    match locked_until {
        None => UNKNOWN_LOCK_RENEWAL,
        Some(until) => (until.duration_since(now).unwrap_or_default() / 2).max(MIN_RENEWAL_DELAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_lands_half_way_through_the_remaining_lock() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            renewal_delay(Some(now + Duration::from_secs(60)), now),
            Duration::from_secs(30)
        );
        assert_eq!(
            renewal_delay(Some(now + Duration::from_secs(2)), now),
            Duration::from_secs(1)
        );
        assert_eq!(
            renewal_delay(Some(now - Duration::from_secs(1)), now),
            MIN_RENEWAL_DELAY
        );
        assert_eq!(renewal_delay(None, now), UNKNOWN_LOCK_RENEWAL);
    }

    #[test]
    fn lock_counts_as_lost_after_expiry_or_a_failed_renewal() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let watch = LockWatch::new(Some(now + Duration::from_secs(1)));
        assert!(!watch.lost(now));
        assert!(watch.lost(now + Duration::from_secs(1)));
        assert!(
            !LockWatch::new(None).lost(now),
            "unknown expiry is not evidence of loss"
        );
        let failed = LockWatch::new(None);
        failed.renewal_failed.store(true, Ordering::Relaxed);
        assert!(failed.lost(now));
    }

    #[test]
    fn exit_code_reports_any_message_that_did_not_complete() {
        let ok = Summary {
            received: 2,
            completed: 2,
            ..Default::default()
        };
        assert_eq!(ok.exit_code(), exit_code::SUCCESS);
        assert_eq!(Summary::default().exit_code(), exit_code::SUCCESS);
        for failed in [
            Summary {
                abandoned: 1,
                ..ok.clone()
            },
            Summary {
                dead_lettered: 1,
                ..ok.clone()
            },
            Summary {
                settle_failures: 1,
                ..ok.clone()
            },
        ] {
            assert_eq!(
                failed.exit_code(),
                exit_code::PROCESSING_FAILED,
                "{failed:?}"
            );
        }
    }
}
