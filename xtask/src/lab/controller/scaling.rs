//! How many executions to start on one poll: KEDA's ScaledJob `default` strategy, as Container Apps
//! applies it to event-driven jobs (reference: aca-keda-terraform.md §3a and §4d).
//!
//! Kept as a pure function of three numbers so the arithmetic is tested on its own, apart from timers
//! and processes.

/// The scale rule's numbers (the `azure-servicebus` scaler's metadata plus the job's min/max).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleRule {
    /// KEDA `messageCount`: target active messages per execution.
    pub message_count: u64,
    /// KEDA `activationMessageCount`: the scaler is active only when the queue holds MORE than this.
    pub activation_message_count: u64,
    /// Executions kept running even with an empty queue.
    pub min_executions: u32,
    /// Upper bound on executions (Container Apps `maxExecutions`).
    pub max_executions: u32,
}

impl ScaleRule {
    /// Whether the scaler is active. KEDA compares strictly (`queuelen > activation`), so an activation
    /// count of 1 means one message does NOT start anything; with `min_executions > 0` it is always active.
    pub fn is_active(&self, active_messages: u64) -> bool {
        self.min_executions > 0 || active_messages > self.activation_message_count
    }

    /// Executions to start now, given the queue's active messages and the executions still running.
    ///
    /// `maxScale = min(maxExecutions, ceil(messages / messageCount))`, minus the running executions
    /// (offset by `minExecutions`, which are topped up first), never more than the free slots under
    /// `maxExecutions`. Running executions are deducted because their messages are locked, not yet
    /// completed, and so still counted as active.
    pub fn executions_to_start(&self, active_messages: u64, running: u32) -> u32 {
        if !self.is_active(active_messages) {
            return 0;
        }
        if running < self.min_executions {
            return self.min_executions - running;
        }
        let wanted = active_messages.div_ceil(self.message_count.max(1));
        let max_scale = u32::try_from(wanted)
            .unwrap_or(u32::MAX)
            .min(self.max_executions);
        let by_strategy = max_scale.saturating_sub(running - self.min_executions);
        by_strategy.min(self.max_executions.saturating_sub(running))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(message_count: u64, activation: u64, min: u32, max: u32) -> ScaleRule {
        ScaleRule {
            message_count,
            activation_message_count: activation,
            min_executions: min,
            max_executions: max,
        }
    }

    #[test]
    fn one_execution_per_message_up_to_the_maximum() {
        let r = rule(1, 0, 0, 10);
        assert_eq!(r.executions_to_start(0, 0), 0);
        assert_eq!(r.executions_to_start(1, 0), 1);
        assert_eq!(r.executions_to_start(7, 0), 7);
        assert_eq!(r.executions_to_start(70, 0), 10);
    }

    #[test]
    fn running_executions_are_deducted() {
        let r = rule(1, 0, 0, 10);
        // The tutorial's case: one message, its execution running and holding the lock.
        assert_eq!(r.executions_to_start(1, 1), 0);
        assert_eq!(r.executions_to_start(7, 3), 4);
        assert_eq!(r.executions_to_start(70, 10), 0);
        assert_eq!(rule(1, 0, 0, 1).executions_to_start(5, 1), 0);
    }

    #[test]
    fn message_count_divides_rounding_up() {
        let r = rule(5, 0, 0, 100);
        assert_eq!(r.executions_to_start(1, 0), 1);
        assert_eq!(r.executions_to_start(5, 0), 1);
        assert_eq!(r.executions_to_start(6, 0), 2);
        assert_eq!(r.executions_to_start(6, 1), 1);
    }

    #[test]
    fn activation_is_strictly_greater_than() {
        let r = rule(1, 2, 0, 10);
        assert!(!r.is_active(2));
        assert_eq!(r.executions_to_start(2, 0), 0);
        assert_eq!(r.executions_to_start(3, 0), 3);
    }

    #[test]
    fn min_executions_are_kept_even_with_an_empty_queue() {
        let r = rule(1, 5, 2, 4);
        assert!(r.is_active(0));
        assert_eq!(r.executions_to_start(0, 0), 2);
        assert_eq!(r.executions_to_start(0, 2), 0);
        // Above the minimum, running executions are offset by it, but never beyond max.
        assert_eq!(r.executions_to_start(3, 2), 2);
        assert_eq!(r.executions_to_start(9, 3), 1);
    }
}
