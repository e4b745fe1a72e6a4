//! What the job does with each message: the [`Processor`] trait and the default processor.

use std::future::Future;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::servicebus::{PropertyValue, ReceivedMessage};

/// Why a message was not processed; decides how it is settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// The message can never be processed (malformed, wrong schema): dead-letter it with this
    /// reason and description so a person can look at it.
    #[error("poison message ({reason}): {description}")]
    Poison { reason: String, description: String },
    /// Processing failed for a reason that may go away (a dependency is down): abandon it so the
    /// broker delivers it again (up to the queue's MaxDeliveryCount).
    #[error("transient failure: {0}")]
    Transient(String),
}

/// Processes one message. Implement this for your own work; the job handles receiving, lock
/// renewal and settlement.
pub trait Processor: Send + Sync {
    /// `Ok` completes the message; see [`ProcessError`] for the other outcomes.
    fn process(
        &self,
        message: &ReceivedMessage,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send;
}

/// Logs each message (structured; JSON lines with `LOG_FORMAT=json`), dead-letters bodies that
/// claim to be JSON but are not, and has two documented knobs for the lab and the tests.
#[derive(Debug, Clone, Default)]
pub struct DefaultProcessor {
    /// `--simulate-work`: pretend each message takes this long (shows lock renewal, lets the lab
    /// show scaling, and lets tests stop the job mid-message).
    pub simulated_work: Duration,
    /// `--fail-on-subject`: fail messages with this subject transiently, so they are abandoned and
    /// redelivered (shows retries and dead-lettering after MaxDeliveryCount).
    pub fail_on_subject: Option<String>,
}

/// The dead-letter reason for a body that is not the JSON its content type promises.
pub const INVALID_JSON_REASON: &str = "InvalidJson";

impl Processor for DefaultProcessor {
    async fn process(&self, message: &ReceivedMessage) -> Result<(), ProcessError> {
        tracing::info!(
            message_id = message.message_id.as_deref().unwrap_or(""),
            subject = message.subject.as_deref().unwrap_or(""),
            content_type = message.content_type.as_deref().unwrap_or(""),
            correlation_id = message.correlation_id.as_deref().unwrap_or(""),
            sequence_number = message.sequence_number,
            enqueued_time = message.enqueued_time.map(rfc3339).unwrap_or_default(),
            delivery_count = message.delivery_count,
            body_bytes = message.body.len(),
            application_properties = %properties_json(message),
            "processing message"
        );
        if is_json(message.content_type.as_deref()) {
            let body = message.body.as_bytes().unwrap_or_default();
            if let Err(error) = serde_json::from_slice::<serde_json::Value>(body) {
                return Err(ProcessError::Poison {
                    reason: INVALID_JSON_REASON.to_string(),
                    description: format!(
                        "the content type says JSON but the body is not valid JSON: {error}"
                    ),
                });
            }
        }
        if !self.simulated_work.is_zero() {
            tokio::time::sleep(self.simulated_work).await;
        }
        if let (Some(fail), Some(subject)) = (&self.fail_on_subject, &message.subject)
            && fail == subject
        {
            return Err(ProcessError::Transient(format!(
                "subject `{subject}` matches --fail-on-subject (a simulated failure)"
            )));
        }
        Ok(())
    }
}

/// `application/json`, `application/json; charset=utf-8`, `application/cloudevents+json`, ...
fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

pub(crate) fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn properties_json(message: &ReceivedMessage) -> serde_json::Value {
    message
        .application_properties
        .iter()
        .map(|(k, v)| (k.clone(), property_json(v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn property_json(value: &PropertyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        PropertyValue::Null => J::Null,
        PropertyValue::Bool(b) => J::Bool(*b),
        PropertyValue::Ubyte(n) => J::from(*n),
        PropertyValue::Ushort(n) => J::from(*n),
        PropertyValue::Uint(n) => J::from(*n),
        PropertyValue::Ulong(n) => J::from(*n),
        PropertyValue::Byte(n) => J::from(*n),
        PropertyValue::Short(n) => J::from(*n),
        PropertyValue::Int(n) => J::from(*n),
        PropertyValue::Long(n) => J::from(*n),
        PropertyValue::Float(f) => J::from(f64::from(f.into_inner())),
        PropertyValue::Double(f) => J::from(f.into_inner()),
        PropertyValue::String(s) => J::String(s.clone()),
        PropertyValue::Symbol(s) => J::String(s.0.clone()),
        PropertyValue::Timestamp(ts) => {
            J::String(rfc3339(crate::servicebus::message::system_time(ts)))
        }
        PropertyValue::Uuid(u) => J::String(uuid::Uuid::from_bytes(*u.as_inner()).to_string()),
        other => J::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicebus::MessageBody;

    fn message(content_type: Option<&str>, subject: Option<&str>, body: &[u8]) -> ReceivedMessage {
        let mut m = ReceivedMessage::detached(MessageBody::Data(body.to_vec()));
        m.content_type = content_type.map(str::to_string);
        m.subject = subject.map(str::to_string);
        m
    }

    #[tokio::test]
    async fn invalid_json_with_a_json_content_type_is_poison() {
        let p = DefaultProcessor::default();
        let err = p
            .process(&message(Some("application/json"), None, b"{oops"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProcessError::Poison { ref reason, .. } if reason == INVALID_JSON_REASON),
            "{err:?}"
        );
        assert_eq!(
            p.process(&message(Some("application/json"), None, br#"{"ok":true}"#))
                .await,
            Ok(())
        );
        // Without a JSON content type the body is not judged.
        assert_eq!(
            p.process(&message(Some("text/plain"), None, b"{oops"))
                .await,
            Ok(())
        );
        assert_eq!(p.process(&message(None, None, b"")).await, Ok(()));
    }

    #[tokio::test]
    async fn fail_on_subject_is_a_transient_failure_for_that_subject_only() {
        let p = DefaultProcessor {
            fail_on_subject: Some("flaky".into()),
            ..Default::default()
        };
        assert!(matches!(
            p.process(&message(None, Some("flaky"), b"x")).await,
            Err(ProcessError::Transient(_))
        ));
        assert_eq!(
            p.process(&message(None, Some("steady"), b"x")).await,
            Ok(())
        );
        assert_eq!(p.process(&message(None, None, b"x")).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_work_takes_exactly_that_long_on_the_tokio_clock() {
        let p = DefaultProcessor {
            simulated_work: Duration::from_secs(30),
            ..Default::default()
        };
        let m = message(None, None, b"x");
        let started = tokio::time::Instant::now();
        let mut work = std::pin::pin!(p.process(&m));
        tokio::select! {
            biased;
            _ = &mut work => panic!("finished before the simulated work was done"),
            () = tokio::time::sleep(Duration::from_secs(29)) => {}
        }
        assert_eq!(work.await, Ok(()));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/cloudevents+json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(None));
    }
}
