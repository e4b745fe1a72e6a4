//! The session layer of the queue state machine: session locks and state next to the message
//! states of [`Queue`]. Messages of a session-enabled entity carry their folded session id
//! ([`Entry::session`]); the sub-queue keeps each session's available messages in sequence order
//! (`SubQueue::by_session`), so a session receiver takes its head in O(log n).
//!
//! A message a session receiver holds is `Locked` until exactly the session lock's `until`, so the
//! one deadline pass that lets a session lock lapse also unlocks its messages (counting the attempt),
//! and renewal moves both together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Entry, Queue, State, Sub, after};
use crate::broker::session::{
    DESCRIPTION_SESSION_ID_NULL, REASON_SESSION_ID_NULL, SESSION_ID_MISSING, SessionError,
    SessionGrant, SessionOwner, SessionRequest,
};
use crate::broker::{BrokerError, Delivery, Outcome, ReceiveMode, SettleError};
use crate::message::StoredMessage;

/// Service Bus compares session ids case-insensitively; locks and state are keyed by the folded id.
pub fn session_key(id: &str) -> Arc<str> {
    Arc::from(id.to_lowercase())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lock {
    owner: SessionOwner,
    until: Instant,
}

#[derive(Debug)]
pub(super) struct SessionEntry {
    /// The id as first named (a specific accept, or set-state).
    pub(super) id: String,
    pub(super) lock: Option<Lock>,
    pub(super) state: Option<Bytes>,
    pub(super) state_updated: Option<SystemTime>,
}

/// The sessions of one entity that are locked or have state (sessions with only messages need no
/// entry: the messages say they exist).
#[derive(Debug, Default)]
pub(in crate::broker) struct Sessions {
    pub(super) table: HashMap<Arc<str>, SessionEntry>,
    deadlines: BTreeSet<(Instant, Arc<str>)>,
    /// With a store: sessions whose state changed since the last look.
    pub(super) dirty: Option<BTreeSet<Arc<str>>>,
}

impl Sessions {
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Let lapsed session locks go. Returns whether a session became free.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut freed = false;
        while let Some((at, key)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, key.clone()));
            if let Some(entry) = self.table.get_mut(&key)
                && entry.lock.is_some_and(|l| l.until == at)
            {
                entry.lock = None;
                tracing::debug!(session = %entry.id, "session lock expired");
                freed = true;
            }
            self.prune(&key);
        }
        freed
    }

    fn lock_of(&self, key: &str) -> Option<Lock> {
        self.table.get(key).and_then(|e| e.lock)
    }

    fn set_lock(&mut self, key: Arc<str>, id: &str, lock: Option<Lock>) {
        let entry = self
            .table
            .entry(key.clone())
            .or_insert_with(|| SessionEntry {
                id: id.to_string(),
                lock: None,
                state: None,
                state_updated: None,
            });
        if let Some(old) = entry.lock.take() {
            self.deadlines.remove(&(old.until, key.clone()));
        }
        entry.lock = lock;
        if let Some(new) = lock {
            self.deadlines.insert((new.until, key.clone()));
        }
        self.prune(&key);
    }

    /// Forget a session that is neither locked nor has state.
    fn prune(&mut self, key: &str) {
        if self
            .table
            .get(key)
            .is_some_and(|e| e.lock.is_none() && e.state.is_none())
        {
            self.table.remove(key);
        }
    }
}

impl Queue {
    pub fn requires_session(&self) -> bool {
        self.props.requires_session
    }

    /// The folded session id a new message of this entity is filed under.
    pub(super) fn session_of(&self, message: &StoredMessage) -> Option<Arc<str>> {
        if !self.props.requires_session {
            return None;
        }
        message.group_id().map(session_key)
    }

    /// A client's send to a session-enabled entity must carry a session id.
    pub fn check_session_id(&self, message: &StoredMessage) -> Result<(), BrokerError> {
        if self.props.requires_session && message.group_id().is_none() {
            return Err(BrokerError::NotAllowed(SESSION_ID_MISSING.into()));
        }
        Ok(())
    }

    /// File a new main-queue entry. A message the broker moves itself (a topic's copy, a forwarded
    /// message) that has no session id cannot live in a session-enabled entity: Service Bus
    /// dead-letters it there.
    pub(super) fn store(&mut self, seq: i64, entry: Entry) {
        if self.props.requires_session && entry.session.is_none() {
            self.dead_letter(
                seq,
                entry,
                Some(REASON_SESSION_ID_NULL),
                Some(DESCRIPTION_SESSION_ID_NULL),
            );
        } else {
            self.main.insert(seq, entry);
        }
    }

    /// Lock a session for `owner`; see [`crate::broker::Broker::accept_session`].
    pub fn accept_session(
        &mut self,
        request: &SessionRequest,
        owner: SessionOwner,
        now: Instant,
    ) -> Result<Option<SessionGrant>, SessionError> {
        let (key, id) = match request {
            SessionRequest::Specific(id) => {
                let key = session_key(id);
                if self.sessions.lock_of(&key).is_some() {
                    return Err(SessionError::CannotBeLocked(id.clone()));
                }
                (key, id.clone())
            }
            SessionRequest::NextAvailable => {
                // The unlocked session whose oldest available message is the oldest.
                let best = self
                    .main
                    .by_session
                    .iter()
                    .filter(|(key, _)| self.sessions.lock_of(key).is_none())
                    .filter_map(|(key, seqs)| Some((*seqs.first()?, key)))
                    .min();
                let Some((head, key)) = best else {
                    return Ok(None);
                };
                let id = self
                    .sessions
                    .table
                    .get(key)
                    .map(|e| e.id.clone())
                    .or_else(|| {
                        let entry = self.main.entries.get(&head)?;
                        entry.message.group_id().map(str::to_string)
                    })
                    .unwrap_or_else(|| key.to_string());
                (key.clone(), id)
            }
        };
        let until = after(now, self.props.lock_duration);
        self.sessions
            .set_lock(key, &id, Some(Lock { owner, until }));
        tracing::debug!(queue = %self.name, session = %id, "session locked");
        Ok(Some(SessionGrant {
            session_id: id,
            locked_until: self.clock.wall(until),
        }))
    }

    /// Release `owner`'s lock; its messages return without counting an attempt. Returns whether the
    /// session was released (and so may be taken by a waiting receiver).
    pub fn release_session(&mut self, id: &str, owner: SessionOwner) -> bool {
        let key = session_key(id);
        if self.sessions.lock_of(&key).map(|l| l.owner) != Some(owner) {
            return false;
        }
        self.sessions.set_lock(key.clone(), id, None);
        for (_, seq) in self.locked_in_session(&key) {
            if let Some(mut entry) = self.main.remove(seq) {
                entry.state = entry.unlocked_state();
                self.main.insert(seq, entry);
            }
        }
        true
    }

    /// The lock on the session, if `owner` holds it (any holder when `owner` is `None`).
    pub fn session_holder(
        &self,
        id: &str,
        owner: Option<SessionOwner>,
    ) -> Result<Instant, SessionError> {
        match self.sessions.lock_of(&session_key(id)) {
            Some(lock) if owner.is_none_or(|o| o == lock.owner) => Ok(lock.until),
            _ => Err(SessionError::LockLost(id.to_string())),
        }
    }

    /// (token, sequence number) of the main-queue messages locked under a session.
    fn locked_in_session(&self, key: &Arc<str>) -> Vec<(Uuid, i64)> {
        self.main
            .locks
            .iter()
            .filter(|(_, seq)| {
                self.main
                    .entries
                    .get(seq)
                    .is_some_and(|e| e.session.as_ref() == Some(key))
            })
            .map(|(t, s)| (*t, *s))
            .collect()
    }

    /// The head of the session's available messages, locked until the session's lock time.
    pub fn receive_session(
        &mut self,
        id: &str,
        owner: SessionOwner,
        mode: ReceiveMode,
    ) -> Result<Option<Delivery>, SessionError> {
        let until = self.session_holder(id, Some(owner))?;
        let key = session_key(id);
        let Some(seq) = self
            .main
            .by_session
            .get(&key)
            .and_then(|s| s.first().copied())
        else {
            return Ok(None);
        };
        Ok(self.take_until(Sub::Main, seq, mode, until))
    }

    /// Settle a message of a session: the session must be held, and the token must be of a message
    /// of that session.
    pub fn settle_session(
        &mut self,
        id: &str,
        owner: Option<SessionOwner>,
        token: Uuid,
        outcome: Outcome,
    ) -> Result<bool, SettleError> {
        self.session_holder(id, owner)
            .map_err(|_| SettleError::SessionLockLost)?;
        let key = session_key(id);
        let seq = *self.main.locks.get(&token).ok_or(SettleError::LockLost)?;
        if self
            .main
            .entries
            .get(&seq)
            .is_none_or(|e| e.session.as_ref() != Some(&key))
        {
            return Err(SettleError::LockLost);
        }
        self.settle(Sub::Main, token, outcome)
    }

    /// Move the session lock, and the locks of the messages held under it, to now + LockDuration.
    pub fn renew_session(
        &mut self,
        id: &str,
        owner: Option<SessionOwner>,
        now: Instant,
    ) -> Result<SystemTime, SessionError> {
        self.session_holder(id, owner)?;
        let key = session_key(id);
        let Some(lock) = self.sessions.lock_of(&key) else {
            return Err(SessionError::LockLost(id.to_string()));
        };
        let until = after(now, self.props.lock_duration);
        self.sessions
            .set_lock(key.clone(), id, Some(Lock { until, ..lock }));
        for (_, seq) in self.locked_in_session(&key) {
            if let Some(mut entry) = self.main.remove(seq) {
                if let State::Locked { until: old, .. } = &mut entry.state {
                    *old = until;
                }
                self.main.insert(seq, entry);
            }
        }
        Ok(self.clock.wall(until))
    }

    pub fn session_state(
        &self,
        id: &str,
        owner: Option<SessionOwner>,
    ) -> Result<Option<Bytes>, SessionError> {
        self.session_holder(id, owner)?;
        Ok(self
            .sessions
            .table
            .get(&session_key(id))
            .and_then(|e| e.state.clone()))
    }

    pub fn set_session_state(
        &mut self,
        id: &str,
        owner: Option<SessionOwner>,
        state: Option<Bytes>,
        now: Instant,
    ) -> Result<(), SessionError> {
        self.session_holder(id, owner)?;
        let updated = self.clock.wall(now);
        let key = session_key(id);
        if let Some(dirty) = &mut self.sessions.dirty {
            dirty.insert(key.clone());
        }
        // The session is locked, so it has an entry.
        if let Some(entry) = self.sessions.table.get_mut(&key) {
            entry.state = state;
            entry.state_updated = Some(updated);
        }
        Ok(())
    }

    /// Ids of sessions with messages (not scheduled) or state, sorted by folded id; with
    /// `state_updated_since`, only the sessions whose state was set at or after it (what the SDKs
    /// document for their `state_updated_after` filter).
    pub fn message_sessions(&self, state_updated_since: Option<SystemTime>) -> Vec<String> {
        let mut found: BTreeMap<Arc<str>, String> = BTreeMap::new();
        if let Some(since) = state_updated_since {
            for (key, entry) in &self.sessions.table {
                if entry.state_updated.is_some_and(|t| t >= since) {
                    found.insert(key.clone(), entry.id.clone());
                }
            }
            return found.into_values().collect();
        }
        for (key, entry) in &self.sessions.table {
            if entry.state.is_some() {
                found.insert(key.clone(), entry.id.clone());
            }
        }
        for entry in self.main.entries.values() {
            let Some(key) = &entry.session else { continue };
            if matches!(entry.state, State::Scheduled { .. }) || found.contains_key(key) {
                continue;
            }
            let id = self
                .sessions
                .table
                .get(key)
                .map(|e| e.id.clone())
                .or_else(|| entry.message.group_id().map(str::to_string))
                .unwrap_or_else(|| key.to_string());
            found.insert(key.clone(), id);
        }
        found.into_values().collect()
    }

    /// Browse one session's messages without locking.
    pub fn peek_session(&self, id: &str, from: i64, count: usize) -> Vec<(i64, Bytes)> {
        let key = session_key(id);
        self.peek_where(Sub::Main, from, count, |e| e.session.as_ref() == Some(&key))
    }

    /// Take deferred messages of the held session by sequence number; all must be deferred messages
    /// of this session, or nothing changes.
    pub fn receive_deferred_session(
        &mut self,
        id: &str,
        owner: Option<SessionOwner>,
        seqs: &[i64],
        mode: ReceiveMode,
    ) -> Result<Vec<Delivery>, SessionError> {
        let until = self.session_holder(id, owner)?;
        let key = session_key(id);
        if let Some(missing) = seqs.iter().find(|s| {
            self.main
                .entries
                .get(s)
                .is_none_or(|e| e.state != State::Deferred || e.session.as_ref() != Some(&key))
        }) {
            return Err(SessionError::MessageNotFound(*missing));
        }
        let mut seen = std::collections::HashSet::new();
        Ok(seqs
            .iter()
            .filter(|seq| seen.insert(**seq))
            .filter_map(|seq| self.take_until(Sub::Main, *seq, mode, until))
            .collect())
    }
}

#[cfg(test)]
impl Sessions {
    /// Every lock has its deadline and no more.
    pub(in crate::broker) fn check_indexes(&self) {
        let deadlines: BTreeSet<(Instant, Arc<str>)> = self
            .table
            .iter()
            .filter_map(|(k, e)| e.lock.map(|l| (l.until, k.clone())))
            .collect();
        assert_eq!(deadlines, self.deadlines, "session deadline index");
    }
}
