//! The timer task: sleeps until the earliest deadline of any entity (lock expiry, scheduled enqueue,
//! TTL, a topic's scheduled message), applies it, and bumps `changes()` so waiting receivers retry.
//!
//! Every broker operation also applies due deadlines itself, so correctness does not depend on this task
//! waking on time; the task exists so that receivers blocked on `changes()` hear about a lock expiry or a
//! scheduled message without any other traffic. Under `tokio::time::pause` its `sleep_until` is what
//! auto-advance and `advance` fire, which makes expiry deterministic in tests.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Broker, Inner, lock};

pub(super) async fn run(broker: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let Some(inner) = broker.upgrade() else {
            return;
        };
        // 0 while recomputing: any operation adding a deadline meanwhile leaves a wake-up permit.
        inner.timer_target.store(0, Ordering::SeqCst);
        let now = Instant::now();
        let mut available = false;
        let mut next: Option<Instant> = None;
        let mut forwarded = Vec::new();
        // Each entity's changes keep their place in the commit order and are sent after the moves
        // below (see `durable`).
        let mut saved = Vec::new();
        let handle = Broker {
            inner: inner.clone(),
        };
        // Clone the slots and release the registry before taking entity locks (see `registry`).
        let (queues, topics) = {
            let e = handle.entities();
            (e.queues.clone(), e.topics.clone())
        };
        for (idx, q) in queues.iter().enumerate() {
            let mut q = lock(q);
            available |= q.expire(now);
            if let Some(d) = q.next_deadline() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
            forwarded.push((idx, q.take_forwarded()));
            saved.push(handle.journal_queue(&mut q));
        }
        if available {
            inner.changes.send_modify(|g| *g = g.wrapping_add(1));
        }
        // Scheduled messages of topics that are due are routed now and stored below.
        let mut copies = Vec::new();
        for t in &topics {
            let mut t = lock(t);
            copies.extend(handle.route_due(&mut t, now));
            if let Some(d) = t.next_deadline() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
            saved.push(handle.journal_topic(&mut t));
        }
        // Dead letters forwarded elsewhere and topic copies are stored after every lock is released.
        for (idx, messages) in forwarded {
            handle.forward_dead_letters(idx, messages);
        }
        handle.store_copies(copies, 0);
        drop(saved);
        drop(handle);
        inner.timer_target.store(
            next.map_or(u64::MAX, |d| inner.clock.nanos(d)),
            Ordering::SeqCst,
        );
        // Do not keep the broker alive while sleeping.
        drop(inner);
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
