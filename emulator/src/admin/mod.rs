//! The Service Bus administration API: ATOM/XML over HTTP, as `ServiceBusAdministrationClient` (.NET,
//! Python, Java) speaks it, on the emulator's HTTP port. Queues, topics, subscriptions and rules are
//! created, read (with runtime counts), updated, deleted and listed; they are usable over AMQP at once.
//!
//! The shapes follow `servicebus-admin-atom.md` (the 7.15 Python client's captured requests, Azure's
//! recorded responses, the SDKs' parsers). Requests are read namespace-aware and in any order
//! ([`xml`]); responses are serde models in Service Bus's element order ([`model`]), filled from what
//! the broker reports (`entries`); [`parse`] turns descriptions into broker properties with Service
//! Bus's limits; [`client`] is the small client the `entities` command uses.
//!
//! Authorization is Service Bus's: in `Authorization`, a SAS token signed with the namespace key (any
//! `sr`: the SDKs sign different audiences) or `Bearer <Entra ID token>` (what the admin clients send
//! with a `TokenCredential`), checked as `$cbs` checks them ([`SasValidator::grant`]); the same in
//! `ServiceBusSupplementaryAuthorization` / `ServiceBusDlqSupplementaryAuthorization` when a
//! description forwards elsewhere.
//!
//! This module knows nothing of listeners: [`crate::http`] routes requests here, and tells it with a
//! [`Scheme`] request extension whether they came over HTTPS (for the links written in entries).

pub mod client;
mod entries;
pub mod model;
pub mod parse;
pub mod xml;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::request::Parts;
use hyper::http::uri::Scheme;
use hyper::{HeaderMap, Method, Response, StatusCode};
use serde::Serialize;

use self::model::{
    Author, Content, Description, Entry, ErrorBody, Feed, Link, NamespaceInfo, Title, atom_time,
    timestamp,
};
use self::parse::{Described, Extras};
use self::xml::{ATOM, SB, XSI};
use crate::auth::SasValidator;
use crate::broker::{Broker, EntityInfo, EntityKind, EntityProperties, RegistryError, entity_path};

/// The body of every response the emulator's HTTP listener writes.
pub type Body = Full<Bytes>;

/// A response with a body and its content type.
pub fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// The api-version written into ids and links (clients send several; all are accepted).
const API_VERSION: &str = "2021-05";
/// Service Bus's default and largest page.
const PAGE: usize = 100;
/// Queue and topic names: Service Bus's limit.
const MAX_ENTITY_NAME: usize = 260;
/// Subscription names.
const MAX_SUBSCRIPTION_NAME: usize = 50;
const NEVER_ACCESSED: &str = "0001-01-01T00:00:00Z";

const ENTRY_TYPE: &str = "application/atom+xml;type=entry;charset=utf-8";
const FEED_TYPE: &str = "application/atom+xml;type=feed;charset=utf-8";
const ERROR_TYPE: &str = "application/xml; charset=utf-8";

/// A failure as Service Bus reports it: status, `SubCode` and a detail naming the problem and fix.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
        }
    }

    fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "The messaging entity '{what}' could not be found. To create it, send PUT with its description (without If-Match)."
            ),
        )
    }

    fn into_response(self) -> Response<Body> {
        let code = self.status.as_u16();
        // The detail is a sentence after the sub-code; reasons from deeper layers start lower-case.
        let mut chars = self.detail.chars();
        let detail: String = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        // .NET reads the sub-code with `SubCode=(\d+)\.`.
        let body = ErrorBody {
            code,
            detail: format!("SubCode={}. {detail}", u32::from(code) * 100),
        };
        match model::to_xml(&body) {
            Ok(xml) => response(self.status, ERROR_TYPE, Bytes::from(xml)),
            Err(_) => response(self.status, ERROR_TYPE, Bytes::new()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match e {
            RegistryError::AlreadyExists(what) => ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "Conflict. The messaging entity '{what}' already exists. To change it, send PUT with If-Match: *."
                ),
            ),
            RegistryError::NotFound(what) => ApiError::not_found(&what),
            RegistryError::Invalid(why) => ApiError::bad_request(why),
        }
    }
}

type ApiResult = Result<Response<Body>, ApiError>;

/// The administration API's state.
pub struct Admin {
    broker: Broker,
    validator: SasValidator,
    /// Echo-only properties per entity (lower-cased path); absent means Service Bus's defaults.
    extras: Mutex<HashMap<String, Extras>>,
    started: SystemTime,
}

/// What one request is about, from its path.
enum Target {
    NamespaceInfo,
    List(EntityKind),
    Entity(String),
    Subscriptions(String),
    Subscription(String, String),
    Rules(String, String),
    Rule(String, String, String),
}

fn parse_target(path: &str) -> Option<Target> {
    // Split on literal slashes first, then decode: a name may carry an encoded `/`.
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let is = |s: &String, word: &str| s.eq_ignore_ascii_case(word);
    Some(match segments.as_slice() {
        [one] if is(one, "$namespaceinfo") => Target::NamespaceInfo,
        [res, kind] if is(res, "$Resources") && is(kind, "queues") => {
            Target::List(EntityKind::Queue)
        }
        [res, kind] if is(res, "$Resources") && is(kind, "topics") => {
            Target::List(EntityKind::Topic)
        }
        [name] if !name.is_empty() => Target::Entity(name.clone()),
        [topic, subs] if is(subs, "subscriptions") => Target::Subscriptions(topic.clone()),
        [topic, subs, sub] if is(subs, "subscriptions") => {
            Target::Subscription(topic.clone(), sub.clone())
        }
        [topic, subs, sub, rules] if is(subs, "subscriptions") && is(rules, "rules") => {
            Target::Rules(topic.clone(), sub.clone())
        }
        [topic, subs, sub, rules, rule] if is(subs, "subscriptions") && is(rules, "rules") => {
            Target::Rule(topic.clone(), sub.clone(), rule.clone())
        }
        _ => return None,
    })
}

/// `$skip` and `$top` from the query (`$` may arrive as `%24`).
fn paging(query: Option<&str>) -> (usize, usize) {
    let (mut skip, mut top) = (0, PAGE);
    for pair in query.unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
        match &*k {
            "$skip" => skip = v.parse().unwrap_or(0),
            "$top" => top = v.parse().unwrap_or(PAGE).clamp(1, 10 * PAGE),
            _ => {}
        }
    }
    (skip, top)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then_some(token.trim())
}

/// A `Host` header without its port (`[::1]:443` → `[::1]`): the namespace's name.
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() => name,
        _ => host,
    }
}

/// Queue and topic names: letters, digits, `.`, `-`, `_`, starting and ending with a letter or digit.
fn check_entity_name(name: &str, max: usize) -> Result<(), ApiError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    let edges_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.is_empty() || name.chars().count() > max || !name.chars().all(ok_char) || !edges_ok {
        return Err(ApiError::bad_request(format!(
            "The entity name '{name}' is not valid; use 1 to {max} letters, digits, '.', '-' or '_', starting and ending with a letter or digit."
        )));
    }
    Ok(())
}

fn xml_response<T: Serialize>(
    status: StatusCode,
    content_type: &'static str,
    doc: &T,
) -> ApiResult {
    let xml = model::to_xml(doc).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the response could not be written: {e}"),
        )
    })?;
    Ok(response(status, content_type, Bytes::from(xml)))
}

impl Admin {
    pub fn new(broker: Broker, validator: SasValidator) -> Admin {
        Admin {
            started: broker.now(),
            broker,
            validator,
            extras: Mutex::new(HashMap::new()),
        }
    }

    fn extras_of(&self, path: &str) -> Extras {
        self.extras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&path.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    fn set_extras(&self, path: &str, extras: Extras) {
        self.extras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_ascii_lowercase(), extras);
    }

    /// Forget the echo-only properties of an entity and of everything under it.
    fn forget_extras(&self, path: &str) {
        let key = path.to_ascii_lowercase();
        let below = format!("{key}/");
        self.extras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| *k != key && !k.starts_with(&below));
    }

    /// Answer one request (its body already read).
    pub async fn handle(&self, parts: &Parts, body: Bytes) -> Response<Body> {
        tracing::trace!(method = %parts.method, uri = %parts.uri, body = %String::from_utf8_lossy(&body), "admin request");
        match self.route(parts, &body) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(method = %parts.method, path = %parts.uri.path(), status = %e.status, detail = %e.detail, "admin request refused");
                e.into_response()
            }
        }
    }

    /// The token in header `name` must be one Service Bus would take for `audience`
    /// (`sb://<namespace>/<path>`, what an Entra token is scoped to): a SAS token as is, or an Entra
    /// ID token after `Bearer `.
    fn authorize(&self, headers: &HeaderMap, name: &str, audience: &str) -> Result<(), ApiError> {
        let token = header(headers, name).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("The {name} header is missing; sign requests with the namespace's SAS key (the connection string's SharedAccessKey) or send Bearer and an Entra ID token for https://servicebus.azure.net."),
            )
        })?;
        let (token, fix) = match bearer(token) {
            Some(jwt) => (
                jwt,
                "Send an unexpired Entra ID token requested for the scope https://servicebus.azure.net/.default.",
            ),
            None => (
                token,
                "Use the connection string's SharedAccessKeyName and SharedAccessKey.",
            ),
        };
        self.validator
            .grant(token, Some(audience), SystemTime::now())
            .map(drop)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!("The token in {name} is not valid: {e}. {fix}"),
                )
            })
    }

    fn route(&self, parts: &Parts, body: &[u8]) -> ApiResult {
        let path = parts.uri.path();
        let host = header(&parts.headers, "host").unwrap_or("localhost:5300");
        let audience = format!("sb://{}{path}", host_name(host));
        self.authorize(&parts.headers, "Authorization", &audience)?;
        let target = parse_target(path).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("No service is hosted at '{path}'. Paths are /{{queue or topic}}, /{{topic}}/subscriptions/{{name}}, /{{topic}}/subscriptions/{{name}}/rules/{{rule}}, /$Resources/queues, /$Resources/topics and /$namespaceinfo."),
            )
        })?;
        // Links point where the client called: https:// when it came over the HTTPS listener.
        let scheme = parts.extensions.get::<Scheme>().unwrap_or(&Scheme::HTTP);
        let base = format!("{scheme}://{host}");
        let update = parts.headers.contains_key(hyper::header::IF_MATCH);
        let method = &parts.method;
        let not_allowed = || {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{method} is not allowed on '{path}'; use GET, PUT or DELETE on entities and GET on lists."
                ),
            ))
        };
        match (target, method) {
            (Target::NamespaceInfo, &Method::GET) => self.namespace_info(&base),
            (Target::List(kind), &Method::GET) => {
                let title = if kind == EntityKind::Queue {
                    "Queues"
                } else {
                    "Topics"
                };
                let list = self.broker.list_entities(kind, None).unwrap_or_default();
                let kind_path = if kind == EntityKind::Queue {
                    "queues"
                } else {
                    "topics"
                };
                self.feed(
                    &base,
                    &format!("$Resources/{kind_path}"),
                    title,
                    parts.uri.query(),
                    list,
                    |i| Ok(self.entry(&base, i)),
                )
            }
            (Target::Subscriptions(topic), &Method::GET) => {
                let list = self
                    .broker
                    .list_entities(EntityKind::Subscription, Some(&topic))
                    .ok_or_else(|| ApiError::not_found(&topic))?;
                self.feed(
                    &base,
                    &format!("{topic}/subscriptions"),
                    "Subscriptions",
                    parts.uri.query(),
                    list,
                    |i| Ok(self.entry(&base, i)),
                )
            }
            (Target::Rules(topic, sub), &Method::GET) => {
                let rules = self.broker.rules(&topic, &sub)?;
                let prefix = format!("{topic}/subscriptions/{sub}/rules");
                self.feed(&base, &prefix, "Rules", parts.uri.query(), rules, |r| {
                    Ok(entries::rule_entry(&base, &prefix, r))
                })
            }
            (Target::Entity(name), &Method::GET) => {
                let info = self
                    .broker
                    .entity_info(&name)
                    .filter(|i| i.kind != EntityKind::Subscription)
                    .ok_or_else(|| ApiError::not_found(&name))?;
                xml_response(StatusCode::OK, ENTRY_TYPE, &self.entry(&base, info))
            }
            (Target::Subscription(topic, sub), &Method::GET) => {
                let path = format!("{topic}/{}/{sub}", entity_path::SUBSCRIPTIONS);
                let info = self
                    .broker
                    .entity_info(&path)
                    .ok_or_else(|| ApiError::not_found(&path))?;
                xml_response(StatusCode::OK, ENTRY_TYPE, &self.entry(&base, info))
            }
            (Target::Rule(topic, sub, rule), &Method::GET) => {
                let rules = self.broker.rules(&topic, &sub)?;
                let found = rules
                    .into_iter()
                    .find(|r| r.rule.name.eq_ignore_ascii_case(&rule))
                    .ok_or_else(|| {
                        ApiError::not_found(&format!("{topic}/subscriptions/{sub}/rules/{rule}"))
                    })?;
                let prefix = format!("{topic}/subscriptions/{sub}/rules");
                xml_response(
                    StatusCode::OK,
                    ENTRY_TYPE,
                    &entries::rule_entry(&base, &prefix, found),
                )
            }
            (target, &Method::PUT) => self.put(target, &parts.headers, body, update, &base),
            (Target::Entity(name), &Method::DELETE) => {
                let kind = self.broker.entity_info(&name).map(|i| i.kind);
                if kind.is_none() || kind == Some(EntityKind::Subscription) {
                    return Err(ApiError::not_found(&name));
                }
                self.delete(&name)
            }
            (Target::Subscription(topic, sub), &Method::DELETE) => {
                self.delete(&format!("{topic}/{}/{sub}", entity_path::SUBSCRIPTIONS))
            }
            (Target::Rule(topic, sub, rule), &Method::DELETE) => {
                self.broker.delete_rule(&topic, &sub, &rule)?;
                Ok(response(StatusCode::OK, ENTRY_TYPE, Bytes::new()))
            }
            _ => not_allowed(),
        }
    }

    /// Delete answers 200 with an empty body (Python raises on 204).
    fn delete(&self, path: &str) -> ApiResult {
        self.broker.delete_entity(path)?;
        self.forget_extras(path);
        Ok(response(StatusCode::OK, ENTRY_TYPE, Bytes::new()))
    }

    fn put(
        &self,
        target: Target,
        headers: &HeaderMap,
        body: &[u8],
        update: bool,
        base: &str,
    ) -> ApiResult {
        let text = std::str::from_utf8(body)
            .map_err(|e| ApiError::bad_request(format!("The request body is not UTF-8: {e}.")))?;
        let root = xml::parse(text).map_err(|e| {
            ApiError::bad_request(format!("The request body is not well-formed XML: {e}."))
        })?;
        let described = parse::described(&root).map_err(ApiError::bad_request)?;
        let status = if update {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let mismatch = |what: &str, want: &str| {
            ApiError::bad_request(format!(
                "The body describes a {what} but the path names a {want}; send the matching description."
            ))
        };
        let info = match (&target, described) {
            (Target::Entity(name), Described::Queue(d)) => {
                check_entity_name(name, MAX_ENTITY_NAME)?;
                let (props, extras) = parse::queue(d).map_err(ApiError::bad_request)?;
                self.check_forwarding(headers, base, &props)?;
                let info = if update {
                    if let Some(EntityProperties::Queue(old)) =
                        self.broker.entity_info(name).map(|i| i.properties)
                        && old.requires_session != props.requires_session
                    {
                        return Err(ApiError::bad_request(
                            "The value for the RequiresSession property of an existing Queue cannot be changed.",
                        ));
                    }
                    self.broker.update_queue(name, props)?
                } else {
                    self.broker.create_queue(name, props)?
                };
                self.set_extras(&info.path, extras);
                info
            }
            (Target::Entity(name), Described::Topic(d)) => {
                check_entity_name(name, MAX_ENTITY_NAME)?;
                let (props, extras) = parse::topic(d).map_err(ApiError::bad_request)?;
                let info = if update {
                    self.broker.update_topic(name, props)?
                } else {
                    self.broker.create_topic(name, props)?
                };
                self.set_extras(&info.path, extras);
                info
            }
            (Target::Subscription(topic, sub), Described::Subscription(d)) => {
                if sub.is_empty() || sub.chars().count() > MAX_SUBSCRIPTION_NAME {
                    return Err(ApiError::bad_request(format!(
                        "The subscription name '{sub}' is not valid; use 1 to {MAX_SUBSCRIPTION_NAME} characters."
                    )));
                }
                let (props, dead_letter_on_filter_errors, extras, rule) =
                    parse::subscription(d).map_err(ApiError::bad_request)?;
                self.check_forwarding(headers, base, &props)?;
                let info = if update {
                    self.broker.update_subscription(
                        topic,
                        sub,
                        props,
                        dead_letter_on_filter_errors,
                    )?
                } else {
                    self.broker.create_subscription(
                        topic,
                        sub,
                        props,
                        dead_letter_on_filter_errors,
                        vec![rule],
                    )?
                };
                self.set_extras(&info.path, extras);
                info
            }
            (Target::Rule(topic, sub, name), Described::Rule(d)) => {
                let rule = parse::rule(d, name).map_err(ApiError::bad_request)?;
                let info = self.broker.put_rule(topic, sub, rule, update)?;
                let prefix = format!("{topic}/subscriptions/{sub}/rules");
                return xml_response(
                    status,
                    ENTRY_TYPE,
                    &entries::rule_entry(base, &prefix, info),
                );
            }
            (Target::Entity(_), Described::Subscription(_) | Described::Rule(_)) => {
                return Err(mismatch("subscription or rule", "queue or topic"));
            }
            (Target::Subscription(..), _) => {
                return Err(mismatch("queue, topic or rule", "subscription"));
            }
            (Target::Rule(..), _) => return Err(mismatch("queue, topic or subscription", "rule")),
            _ => {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "PUT creates or updates one entity; lists and the namespace are read-only.",
                ));
            }
        };
        xml_response(status, ENTRY_TYPE, &self.entry(base, info))
    }

    /// A description that forwards elsewhere must carry a token for the target, as Service Bus asks.
    /// `base` is where the request came (`scheme://host`): an Entra token is scoped to the target
    /// in that namespace.
    fn check_forwarding(
        &self,
        headers: &HeaderMap,
        base: &str,
        props: &crate::config::QueueProperties,
    ) -> Result<(), ApiError> {
        let host = host_name(base.split_once("://").map_or(base, |(_, host)| host));
        let audience = |target: &str| format!("sb://{host}/{}", entity_path::path_of(target));
        if let Some(target) = &props.forward_to {
            self.authorize(
                headers,
                "ServiceBusSupplementaryAuthorization",
                &audience(target),
            )?;
        }
        if let Some(target) = &props.forward_dead_lettered_messages_to {
            self.authorize(
                headers,
                "ServiceBusDlqSupplementaryAuthorization",
                &audience(target),
            )?;
        }
        Ok(())
    }

    /// The entry of a queue, topic or subscription with its echo-only properties.
    fn entry(&self, base: &str, info: EntityInfo) -> Entry {
        let extras = self.extras_of(&info.path);
        entries::entity_entry(base, info, extras)
    }

    fn namespace_info(&self, base: &str) -> ApiResult {
        let created = self.started;
        let entry = Entry {
            xmlns: ATOM,
            id: format!("{base}/$namespaceinfo?api-version={API_VERSION}"),
            title: Title::new(model::NAMESPACE),
            published: atom_time(created),
            updated: atom_time(self.broker.now()),
            author: Some(Author {
                name: model::NAMESPACE,
            }),
            link: Link {
                rel: "self",
                href: format!("{base}/$namespaceinfo?api-version={API_VERSION}"),
            },
            content: Content {
                kind: "application/xml",
                description: Description::NamespaceInfo(NamespaceInfo {
                    xmlns: SB,
                    xmlns_i: XSI,
                    created_time: timestamp(created),
                    messaging_sku: "Standard",
                    modified_time: timestamp(created),
                    name: model::NAMESPACE,
                    namespace_type: "Messaging",
                }),
            },
        };
        xml_response(StatusCode::OK, ENTRY_TYPE, &entry)
    }

    /// A page of a list: sorted, `$skip`/`$top` applied, `next` only when more remain.
    fn feed<T>(
        &self,
        base: &str,
        path: &str,
        title: &str,
        query: Option<&str>,
        items: Vec<T>,
        entry: impl Fn(T) -> Result<Entry, ApiError>,
    ) -> ApiResult {
        let (skip, top) = paging(query);
        let total = items.len();
        let entries = items
            .into_iter()
            .skip(skip)
            .take(top)
            .map(entry)
            .collect::<Result<Vec<Entry>, ApiError>>()?;
        let page_url = |skip: usize| {
            format!("{base}/{path}?$skip={skip}&$top={top}&api-version={API_VERSION}")
        };
        let mut link = vec![Link {
            rel: "self",
            href: page_url(skip),
        }];
        if skip + entries.len() < total {
            link.push(Link {
                rel: "next",
                href: page_url(skip + entries.len()),
            });
        }
        let feed = Feed {
            xmlns: ATOM,
            title: Title::new(title),
            id: page_url(skip),
            updated: atom_time(self.broker.now()),
            link,
            entry: entries,
        };
        xml_response(StatusCode::OK, FEED_TYPE, &feed)
    }
}

#[cfg(test)]
mod tests;
