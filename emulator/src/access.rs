//! What one connection may access, and when that ends: the sans-IO bookkeeping behind `$cbs` tokens.
//!
//! Service Bus scopes tokens to the connection and, when a token expires, "promptly drops all links on
//! the connection to the respective entity" unless a newer token covering it arrived first. A
//! connection that authenticated without credentials (ANONYMOUS/MSSBCBS) must also put a valid token
//! soon after opening, or it is dropped. SASL PLAIN authorises the whole connection, so neither applies.
//!
//! Like the engine, this is driven by explicit instants: the server sleeps until [`Access::next_deadline`]
//! and calls [`Access::on_timer`], so tests can pause and advance tokio's clock.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::amqp::LinkId;
use crate::auth::TokenGrant;

/// One accepted put-token: what it covers and until when (on the broker's clock).
#[derive(Debug, Clone)]
struct Grant {
    claims: TokenGrant,
    expires: Instant,
}

/// What [`Access::on_timer`] found due.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Token-authorised links whose every covering token has expired, with their entity paths.
    pub links: Vec<(LinkId, String)>,
    /// The connection put no valid token within the allowed time after opening.
    pub no_token_in_time: bool,
}

/// Per-connection access state.
#[derive(Debug)]
pub struct Access {
    /// SASL PLAIN authorised everything for the connection's lifetime.
    whole_connection: bool,
    grants: Vec<Grant>,
    /// Links attached on the strength of a token, by the entity path they were checked against.
    links: HashMap<LinkId, String>,
    /// When the connection is dropped unless a valid token arrives first.
    token_due: Option<Instant>,
}

impl Access {
    /// `plain`: SASL PLAIN succeeded. `token_timeout`: how long after `opened` a connection without
    /// PLAIN may go without a valid token (`None`: forever).
    pub fn new(plain: bool, opened: Instant, token_timeout: Option<Duration>) -> Access {
        Access {
            whole_connection: plain,
            grants: Vec::new(),
            links: HashMap::new(),
            token_due: if plain {
                None
            } else {
                token_timeout.and_then(|t| opened.checked_add(t))
            },
        }
    }

    /// Record an accepted token. Earlier tokens for the same audience that expire no later are
    /// superseded, so a client refreshing every few minutes does not grow the list.
    pub fn grant(&mut self, claims: TokenGrant, expires: Instant) {
        self.token_due = None;
        self.grants.retain(|g| {
            !(g.claims.audience.eq_ignore_ascii_case(&claims.audience) && g.expires <= expires)
        });
        self.grants.push(Grant { claims, expires });
    }

    /// Whether `path` may be attached to at `now`.
    pub fn allows(&self, path: &str, now: Instant) -> bool {
        self.whole_connection || self.valid_until(path).is_some_and(|until| until > now)
    }

    /// Remember that `link` was attached to `path` on a token, so it is detached when that token
    /// expires. Links on a PLAIN connection are not tracked.
    pub fn track(&mut self, link: LinkId, path: String) {
        if !self.whole_connection {
            self.links.insert(link, path);
        }
    }

    /// The link is gone; stop watching it.
    pub fn forget(&mut self, link: LinkId) {
        self.links.remove(&link);
    }

    /// The latest expiry among the tokens covering `path`.
    fn valid_until(&self, path: &str) -> Option<Instant> {
        self.grants
            .iter()
            .filter(|g| g.claims.covers(path))
            .map(|g| g.expires)
            .max()
    }

    /// The next instant [`Access::on_timer`] must run: a token deadline or a tracked link's expiry.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|path| self.valid_until(path))
            .chain(self.token_due)
            .min()
    }

    /// Collect what is due at `now`: expired links (forgotten here; the caller detaches them) and
    /// whether the token deadline passed. Expired tokens are dropped.
    pub fn on_timer(&mut self, now: Instant) -> Expired {
        let mut expired = Expired {
            no_token_in_time: self.token_due.is_some_and(|due| now >= due),
            ..Expired::default()
        };
        if expired.no_token_in_time {
            self.token_due = None;
        }
        let mut due: Vec<(LinkId, String)> = self
            .links
            .iter()
            .filter(|(_, path)| self.valid_until(path).is_none_or(|until| until <= now))
            .map(|(link, path)| (*link, path.clone()))
            .collect();
        due.sort_unstable();
        for (link, _) in &due {
            self.links.remove(link);
        }
        expired.links = due;
        self.grants.retain(|g| g.expires > now);
        expired
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn claims(audience: &str) -> TokenGrant {
        TokenGrant {
            audience: audience.into(),
            expires: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_link_expires_with_its_token_unless_a_covering_token_outlives_it() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut access = Access::new(false, t0, None);
        access.grant(claims("sb://localhost/a"), t0 + s(60));
        access.grant(claims("sb://localhost/b"), t0 + s(60));
        assert!(access.allows("a", t0) && !access.allows("c", t0));
        access.track(1, "a".into());
        access.track(2, "b/$management".into());
        assert_eq!(access.next_deadline(), Some(t0 + s(60)));

        // A namespace-wide token put later covers `b` for longer; `a` keeps only its own.
        access.grant(claims("sb://localhost/"), t0 + s(30));
        access.grant(claims("sb://localhost/b"), t0 + s(120));
        assert_eq!(access.on_timer(t0 + s(59)), Expired::default());
        let expired = access.on_timer(t0 + s(60));
        assert_eq!(expired.links, vec![(1, "a".to_string())]);
        assert!(!expired.no_token_in_time);
        assert!(!access.allows("a", t0 + s(60)));
        assert_eq!(access.next_deadline(), Some(t0 + s(120)));
        assert_eq!(
            access.on_timer(t0 + s(120)).links,
            vec![(2, "b/$management".to_string())]
        );
        assert_eq!(access.next_deadline(), None);
    }

    #[test]
    fn plain_connections_are_never_tracked_or_timed_out() {
        let t0 = Instant::now();
        let mut access = Access::new(true, t0, Some(Duration::from_secs(20)));
        assert!(access.allows("anything", t0));
        access.track(1, "q".into());
        assert_eq!(access.next_deadline(), None);
        assert_eq!(
            access.on_timer(t0 + Duration::from_secs(3600)),
            Expired::default()
        );
    }

    #[test]
    fn the_first_token_must_arrive_in_time() {
        let t0 = Instant::now();
        let timeout = Some(Duration::from_secs(20));
        let mut late = Access::new(false, t0, timeout);
        assert_eq!(late.next_deadline(), Some(t0 + Duration::from_secs(20)));
        assert!(!late.on_timer(t0 + Duration::from_secs(19)).no_token_in_time);
        assert!(late.on_timer(t0 + Duration::from_secs(20)).no_token_in_time);

        let mut prompt = Access::new(false, t0, timeout);
        prompt.grant(claims("sb://localhost/q"), t0 + Duration::from_secs(3600));
        assert!(
            !prompt
                .on_timer(t0 + Duration::from_secs(20))
                .no_token_in_time
        );
    }
}
