//! One time base for the broker: deadlines are `tokio::time::Instant`s (so tests can pause and advance
//! time), and the wall-clock times clients see (`x-opt-locked-until`, enqueued time) are derived from
//! them, so both move together under `tokio::time::advance`.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_instant: Instant,
    base_wall: SystemTime,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            base_instant: Instant::now(),
            base_wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of an instant.
    pub fn wall(&self, at: Instant) -> SystemTime {
        if at >= self.base_instant {
            self.base_wall + (at - self.base_instant)
        } else {
            self.base_wall - (self.base_instant - at)
        }
    }

    /// The instant of a wall-clock time (times in the past map to instants in the past).
    pub fn instant(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.base_wall) {
            Ok(ahead) => self
                .base_instant
                .checked_add(ahead)
                .unwrap_or_else(far_future),
            Err(behind) => self
                .base_instant
                .checked_sub(behind.duration())
                .unwrap_or(self.base_instant),
        }
    }

    /// Nanoseconds since the base instant, for atomics (saturating).
    pub fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base_instant).as_nanos())
            .unwrap_or(u64::MAX)
    }
}

/// About thirty years ahead: "never" for deadlines, still safe to add to.
pub fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// `now + d`, saturating at [`far_future`] (TTLs such as `TimeSpan.MaxValue` overflow `Instant`).
pub fn after(now: Instant, d: Duration) -> Instant {
    let cap = far_future();
    match now.checked_add(d) {
        Some(t) if t < cap => t,
        _ => cap,
    }
}
