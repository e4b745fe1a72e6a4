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
    /// KEDA's `ScaledJob.MinReplicaCount()`: `min_executions`, never above `max_executions`.
    fn min_replicas(&self) -> u32 {
        self.min_executions.min(self.max_executions)
    }

    /// KEDA's `ScaledJob.MaxReplicaCount()`: the executions allowed on top of the minimum
    /// (`max - min`, or `max` itself when min exceeds it).
    fn max_replicas(&self) -> u32 {
        if self.min_executions > self.max_executions {
            self.max_executions
        } else {
            self.max_executions - self.min_executions
        }
    }

    /// Whether the scaler is active. KEDA compares strictly (`queuelen > activation`), so an activation
    /// count of 1 means one message does NOT start anything; with `min_executions > 0` it is always
    /// active (`IsScaledJobActive`), even when the queue could not be read.
    pub fn is_active(&self, active_messages: Option<u64>) -> bool {
        self.min_replicas() > 0
            || active_messages.is_some_and(|count| count > self.activation_message_count)
    }

    /// Executions to start now, given the queue's active messages (`None`: the read failed) and the
    /// executions still running. Step by step as KEDA 2.x computes it for a ScaledJob with the
    /// `default` strategy (kedacore/keda `pkg/scaling/scaledjob/metrics.go` and
    /// `pkg/scaling/executor/scale_jobs.go`):
    /// 1. inactive → nothing;
    /// 2. fewer running than the minimum → top up to the minimum, nothing more this time
    ///    (`getScalingDecision`), whatever the queue says;
    /// 3. otherwise `maxScale = min(ceil(messages / messageCount), MaxReplicaCount())`, the default
    ///    strategy's `effectiveMaxScale = maxScale - (running - min)`, and `createJobs` starts
    ///    `min(messages, effectiveMaxScale)`, none when that is not positive.
    ///
    /// Running executions are deducted because their messages are locked, not yet completed, and so
    /// still counted as active. A failed read counts no messages: KEDA skips a failing scaler's metrics.
    pub fn executions_to_start(&self, active_messages: Option<u64>, running: u32) -> u32 {
        if !self.is_active(active_messages) {
            return 0;
        }
        let min = self.min_replicas();
        if running < min {
            return min - running;
        }
        let messages = active_messages.unwrap_or(0);
        let max_scale = messages
            .div_ceil(self.message_count.max(1))
            .min(u64::from(self.max_replicas()));
        let effective_max_scale =
            i64::try_from(max_scale).unwrap_or(i64::MAX) - i64::from(running - min);
        let to_start = i64::try_from(messages)
            .unwrap_or(i64::MAX)
            .min(effective_max_scale);
        u32::try_from(to_start.max(0)).unwrap_or(u32::MAX)
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
        assert_eq!(r.executions_to_start(Some(0), 0), 0);
        assert_eq!(r.executions_to_start(Some(1), 0), 1);
        assert_eq!(r.executions_to_start(Some(7), 0), 7);
        assert_eq!(r.executions_to_start(Some(70), 0), 10);
    }

    #[test]
    fn running_executions_are_deducted() {
        let r = rule(1, 0, 0, 10);
        // The tutorial's case: one message, its execution running and holding the lock.
        assert_eq!(r.executions_to_start(Some(1), 1), 0);
        assert_eq!(r.executions_to_start(Some(7), 3), 4);
        assert_eq!(r.executions_to_start(Some(70), 10), 0);
        assert_eq!(rule(1, 0, 0, 1).executions_to_start(Some(5), 1), 0);
    }

    #[test]
    fn message_count_divides_rounding_up() {
        let r = rule(5, 0, 0, 100);
        assert_eq!(r.executions_to_start(Some(1), 0), 1);
        assert_eq!(r.executions_to_start(Some(5), 0), 1);
        assert_eq!(r.executions_to_start(Some(6), 0), 2);
        assert_eq!(r.executions_to_start(Some(6), 1), 1);
    }

    #[test]
    fn activation_is_strictly_greater_than() {
        let r = rule(1, 2, 0, 10);
        assert!(!r.is_active(Some(2)));
        assert_eq!(r.executions_to_start(Some(2), 0), 0);
        assert_eq!(r.executions_to_start(Some(3), 0), 3);
    }

    #[test]
    fn min_executions_are_kept_even_with_an_empty_queue() {
        let r = rule(1, 5, 2, 4);
        assert!(r.is_active(Some(0)));
        assert_eq!(r.executions_to_start(Some(0), 0), 2);
        assert_eq!(r.executions_to_start(Some(0), 2), 0);
        // Above the minimum, running executions are offset by it, but never beyond max.
        assert_eq!(r.executions_to_start(Some(3), 2), 2);
        assert_eq!(r.executions_to_start(Some(9), 3), 1);
    }

    #[test]
    fn below_the_minimum_keda_tops_up_and_starts_nothing_else() {
        // min 2 of max 5, three messages, nothing running: two now (the top-up), not 2 + 3.
        let r = rule(1, 0, 2, 5);
        assert_eq!(r.executions_to_start(Some(3), 0), 2);
        // One running: the top-up is one, even with a long queue.
        assert_eq!(r.executions_to_start(Some(50), 1), 1);
        // At the minimum, the messages count, against max - min slots: min(3, 5 - 2) - (2 - 2) = 3.
        assert_eq!(r.executions_to_start(Some(3), 2), 3);
        assert_eq!(r.executions_to_start(Some(50), 2), 3);
        assert_eq!(r.executions_to_start(Some(50), 5), 0);
    }

    #[test]
    fn an_unreadable_queue_still_keeps_the_minimum() {
        // KEDA skips a failing scaler's metrics but min > 0 keeps the ScaledJob active.
        let r = rule(1, 0, 2, 5);
        assert!(r.is_active(None));
        assert_eq!(r.executions_to_start(None, 0), 2);
        assert_eq!(r.executions_to_start(None, 2), 0);
        // Without a minimum, nothing starts on a failed read.
        let r = rule(1, 0, 0, 5);
        assert!(!r.is_active(None));
        assert_eq!(r.executions_to_start(None, 0), 0);
    }
}
