//! Telling "the broker went away" apart from other receive failures, so the job's last error says so
//! in words instead of as a nested `SessionStopped(ConnectionStopped(…))`.

use fe2o3_amqp::connection::ConnectionStopReason;
use fe2o3_amqp::link::{LinkStateError, RecvError, SessionStopReason};
use fe2o3_amqp::types::definitions::{Error as AmqpError, ErrorCondition};
use fe2o3_amqp::types::primitives::Symbol;

use crate::servicebus::ServiceBusError;

/// A failed `recv`: [`ServiceBusError::BrokerClosed`] when the broker closed the connection or ended the
/// session, else [`ServiceBusError::Receive`]. Both keep fe2o3's own text as the detail.
pub(crate) fn receive_error(error: RecvError) -> ServiceBusError {
    let detail = error.to_string();
    let RecvError::LinkStateError(LinkStateError::SessionStopped(reason)) = &error else {
        return ServiceBusError::Receive(detail);
    };
    let (what, amqp_error) = match reason {
        SessionStopReason::ConnectionStopped(ConnectionStopReason::RemoteClosedWithError(e)) => {
            ("connection", Some(e))
        }
        SessionStopReason::ConnectionStopped(ConnectionStopReason::RemoteClosed) => {
            ("connection", None)
        }
        SessionStopReason::RemoteEndedWithError(e) => ("session", Some(e)),
        SessionStopReason::RemoteEnded => ("session", None),
        // We closed or ended it ourselves: not the broker's doing.
        SessionStopReason::Ended
        | SessionStopReason::EndedWithError(_)
        | SessionStopReason::ConnectionStopped(
            ConnectionStopReason::Closed | ConnectionStopReason::ClosedWithError(_),
        ) => return ServiceBusError::Receive(detail),
    };
    ServiceBusError::BrokerClosed {
        what,
        reason: amqp_error.map(describe).unwrap_or_default(),
        detail,
    }
}

/// ` (amqp:connection:forced: the emulator is shutting down)`: the condition as on the wire.
fn describe(error: &AmqpError) -> String {
    let condition = condition_symbol(&error.condition);
    match &error.description {
        Some(description) => format!(" ({condition}: {description})"),
        None => format!(" ({condition})"),
    }
}

fn condition_symbol(condition: &ErrorCondition) -> String {
    let symbol = match condition {
        ErrorCondition::AmqpError(e) => Symbol::from(e),
        ErrorCondition::ConnectionError(e) => Symbol::from(e),
        ErrorCondition::SessionError(e) => Symbol::from(e),
        ErrorCondition::LinkError(e) => Symbol::from(e),
        ErrorCondition::TransactionError(e) => Symbol::from(e),
        ErrorCondition::Custom(s) => s.clone(),
    };
    symbol.0
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::definitions::{AmqpError as AmqpCondition, ConnectionError};

    use super::*;

    fn session_stopped(reason: SessionStopReason) -> RecvError {
        RecvError::LinkStateError(LinkStateError::SessionStopped(reason))
    }

    #[test]
    fn a_connection_the_broker_closed_says_so_with_condition_description_and_detail() {
        let closed = AmqpError::new(
            ConnectionError::ConnectionForced,
            Some("the emulator is shutting down".to_owned()),
            None,
        );
        let error = receive_error(session_stopped(SessionStopReason::ConnectionStopped(
            ConnectionStopReason::RemoteClosedWithError(closed),
        )));
        let text = error.to_string();
        assert!(
            text.starts_with(
                "the broker closed the connection while the job was receiving \
                 (amqp:connection:forced: the emulator is shutting down); check that the Service Bus \
                 namespace (or the emulator) is running and reachable from here, then run the job again. \
                 Detail: Local error: SessionStopped(ConnectionStopped(RemoteClosedWithError("
            ),
            "{text}"
        );
    }

    #[test]
    fn a_session_the_broker_ended_without_an_error_is_named_too() {
        let error = receive_error(session_stopped(SessionStopReason::RemoteEnded));
        assert_eq!(
            error.to_string(),
            "the broker closed the session while the job was receiving; check that the Service Bus \
             namespace (or the emulator) is running and reachable from here, then run the job again. \
             Detail: Local error: SessionStopped(RemoteEnded)"
        );
    }

    #[test]
    fn a_custom_condition_reads_as_its_symbol() {
        let ended = AmqpError::new(
            ErrorCondition::Custom(Symbol::from("com.microsoft:timeout")),
            None,
            None,
        );
        let error = receive_error(session_stopped(SessionStopReason::RemoteEndedWithError(
            ended,
        )));
        assert!(
            error.to_string().starts_with(
                "the broker closed the session while the job was receiving (com.microsoft:timeout);"
            ),
            "{error}"
        );
        let internal = AmqpError::new(AmqpCondition::InternalError, None, None);
        assert_eq!(describe(&internal), " (amqp:internal-error)");
    }

    #[test]
    fn our_own_close_and_other_failures_stay_receive_errors() {
        let ours = receive_error(session_stopped(SessionStopReason::Ended));
        assert!(matches!(ours, ServiceBusError::Receive(_)), "{ours}");
        let other = receive_error(RecvError::TransferLimitExceeded);
        assert_eq!(
            other.to_string(),
            "receiving failed: The peer sent more message transfers than currently allowed on the link"
        );
    }
}
