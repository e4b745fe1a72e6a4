//! Session receive links of one connection: accepting a session on attach (a specific one at once,
//! or the next available one, waiting until one frees up or the receiver's timeout passes), pulling
//! only that session's messages, detaching with `com.microsoft:session-lock-lost` when the lock lapses,
//! and releasing the session as soon as the link, its AMQP session or the connection goes away.
//!
//! A waiting attach is answered exactly once: granted, refused on timeout, or dropped silently when
//! the client detached or ended first (the engine then no longer knows the link, so no frame is
//! ever written for it on an ended channel).

use std::time::Duration;

use tokio::time::Instant;

use super::{Connection, HeldSession, LinkRole, SessionReceiver, send_delivery};
use crate::amqp::{Engine, LinkId};
use crate::broker::{EntityPath, ReceiveMode, SessionGrant, SessionOwner, SessionRequest};
use crate::nodes::sessions;

impl Connection {
    /// Answer a session receiver's attach: lock the session it asks for, or wait for one.
    pub(super) fn attach_session(
        &mut self,
        engine: &mut Engine,
        link: LinkId,
        receiver: SessionReceiver,
        request: SessionRequest,
        wait: Duration,
    ) {
        let owner = SessionOwner::next();
        match self
            .shared
            .broker
            .accept_session(&receiver.entity, &request, owner)
        {
            Ok(Some(grant)) => self.hold(engine, link, receiver, owner, grant),
            Ok(None) => {
                tracing::debug!(entity = %receiver.entity, ?wait, "no session available; the attach waits");
                let deadline = Instant::now() + wait;
                self.links.insert(
                    link,
                    LinkRole::SessionWaiter {
                        receiver,
                        deadline,
                        wait,
                    },
                );
            }
            Err(e) => {
                self.access.forget(link);
                engine.refuse_link(link, sessions::error(&e));
            }
        }
    }

    /// Answer the attach with the granted session and make the link its receiver.
    fn hold(
        &mut self,
        engine: &mut Engine,
        link: LinkId,
        receiver: SessionReceiver,
        owner: SessionOwner,
        grant: SessionGrant,
    ) {
        engine.accept_link_with(link, sessions::attach_reply(&grant));
        let session = Some(HeldSession {
            id: grant.session_id,
            owner,
            link_name: receiver.name,
        });
        self.links.insert(
            link,
            LinkRole::EntityReceiver {
                entity: receiver.entity,
                mode: receiver.mode,
                session,
            },
        );
    }

    /// Try again to give a waiting next-available attach a session.
    pub(super) fn retry_waiter(&mut self, engine: &mut Engine, link: LinkId) {
        let Some(LinkRole::SessionWaiter { receiver, .. }) = self.links.get(&link).cloned() else {
            return;
        };
        let owner = SessionOwner::next();
        match self.shared.broker.accept_session(
            &receiver.entity,
            &SessionRequest::NextAvailable,
            owner,
        ) {
            Ok(Some(grant)) => self.hold(engine, link, receiver, owner, grant),
            Ok(None) => {}
            Err(e) => {
                self.links.remove(&link);
                self.access.forget(link);
                engine.refuse_link(link, sessions::error(&e));
            }
        }
    }

    /// The earliest deadline of a waiting attach.
    pub(super) fn next_waiter_deadline(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|role| match role {
                LinkRole::SessionWaiter { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min()
    }

    /// Refuse the waiting attaches whose wait is over with `com.microsoft:timeout`.
    pub(super) fn on_waiter_timer(&mut self, engine: &mut Engine, now: Instant) {
        let mut due: Vec<LinkId> = self
            .links
            .iter()
            .filter_map(|(id, role)| match role {
                LinkRole::SessionWaiter { deadline, .. } if *deadline <= now => Some(*id),
                _ => None,
            })
            .collect();
        due.sort_unstable();
        for link in due {
            // One last try: a session may have freed up at the very deadline.
            self.retry_waiter(engine, link);
            if let Some(LinkRole::SessionWaiter { wait, .. }) = self.links.get(&link) {
                let error = sessions::timeout_error(*wait);
                self.links.remove(&link);
                self.access.forget(link);
                engine.refuse_link(link, error);
            }
        }
    }

    /// Send the held session's messages while the link has credit; detach with
    /// `com.microsoft:session-lock-lost` once the lock has lapsed.
    pub(super) fn pump_session(
        &mut self,
        engine: &mut Engine,
        link: LinkId,
        entity: &EntityPath,
        mode: ReceiveMode,
        held: &HeldSession,
    ) {
        let broker = &self.shared.broker;
        if !broker.holds_session(entity, &held.id, held.owner) {
            self.lose_session(engine, link, &held.id);
            return;
        }
        while engine.can_send(link) {
            match broker.receive_session(entity, &held.id, held.owner, mode) {
                Ok(Some(delivery)) => send_delivery(engine, link, mode, delivery),
                Ok(None) => {
                    engine.no_more_messages(link);
                    break;
                }
                Err(_) => {
                    self.lose_session(engine, link, &held.id);
                    return;
                }
            }
        }
    }

    /// The lock lapsed: tell the receiver (the SDKs raise SessionLockLost) and forget the link.
    fn lose_session(&mut self, engine: &mut Engine, link: LinkId, id: &str) {
        tracing::debug!(session = id, "session lock lost; detaching the receiver");
        self.links.remove(&link);
        self.access.forget(link);
        let e = crate::broker::SessionError::LockLost(id.to_string());
        engine.detach(link, Some(sessions::error(&e)));
    }

    /// Release what a link held when it goes away.
    pub(super) fn release(&self, role: &LinkRole) {
        if let LinkRole::EntityReceiver {
            entity,
            session: Some(held),
            ..
        } = role
        {
            self.shared
                .broker
                .release_session(entity, &held.id, held.owner);
        }
    }

    /// The owner of the session held by the receive link named `link_name` on this connection.
    pub(super) fn session_owner(&self, link_name: &str) -> Option<SessionOwner> {
        self.links.values().find_map(|role| match role {
            LinkRole::EntityReceiver {
                session: Some(held),
                ..
            } if held.link_name == link_name => Some(held.owner),
            _ => None,
        })
    }
}

/// A connection that ends any way (close, socket error, shutdown) releases its sessions at once.
impl Drop for Connection {
    fn drop(&mut self) {
        for role in self.links.values() {
            self.release(role);
        }
    }
}
