//! A small client of the administration API for people: `servicebus-emulator entities` lists what a
//! running emulator has, with counts, by reading the same feeds the SDKs read.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use super::xml::{self, ATOM, Element, SB, SB_COUNTS};
use crate::auth::make_token;

/// How long one request may take before the CLI gives up.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why listing failed; each names the address and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the emulator's HTTP port at {addr} ({source}); start the emulator, or pass --url with its HTTP address"
    )]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the request to {addr} failed: {0}", addr = .1)]
    Http(String, String),
    #[error("{addr} answered {status} to {method} {path}: {detail}")]
    Status {
        method: String,
        addr: String,
        path: String,
        status: u16,
        detail: String,
    },
    #[error("{addr} did not answer within {} s", TIMEOUT.as_secs())]
    Timeout { addr: String },
    #[error("the answer to GET {path} is not a Service Bus feed: {reason}")]
    Feed { path: String, reason: String },
}

/// One entity and its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRow {
    /// `queue`, `topic` or `subscription`.
    pub kind: &'static str,
    /// `q`, `t` or `t/Subscriptions/s`.
    pub path: String,
    pub active_message_count: u64,
    pub dead_letter_message_count: u64,
    pub scheduled_message_count: u64,
    pub transfer_message_count: u64,
}

/// Talks to one emulator (`host:port`), signing with a SAS key.
pub struct AdminClient {
    addr: String,
    key_name: String,
    key: String,
}

impl AdminClient {
    /// `url` is `http://host:port` or `host:port`.
    pub fn new(url: &str, key_name: &str, key: &str) -> AdminClient {
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        AdminClient {
            addr,
            key_name: key_name.to_string(),
            key: key.to_string(),
        }
    }

    async fn get(&self, path: &str) -> Result<String, ClientError> {
        self.request("GET", path, String::new(), 200).await
    }

    /// Create a queue with Service Bus's defaults (PUT without If-Match); it is usable over AMQP
    /// as soon as this returns.
    pub async fn create_queue(&self, name: &str) -> Result<(), ClientError> {
        let body = super::model::to_xml(&super::model::CreateRequest {
            xmlns: ATOM,
            content: super::model::CreateContent {
                kind: "application/xml",
                queue: super::model::DefaultDescription { xmlns: SB },
            },
        })
        .map_err(|e| ClientError::Http(e.to_string(), self.addr.clone()))?;
        let encoded =
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
        self.request("PUT", &format!("/{encoded}"), body, 201)
            .await
            .map(drop)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: String,
        expected: u16,
    ) -> Result<String, ClientError> {
        tokio::time::timeout(TIMEOUT, self.request_inner(method, path, body, expected))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.addr.clone(),
            })?
    }

    async fn request_inner(
        &self,
        method: &str,
        path: &str,
        body: String,
        expected: u16,
    ) -> Result<String, ClientError> {
        let http = |e: hyper::Error| ClientError::Http(e.to_string(), self.addr.clone());
        let stream =
            TcpStream::connect(&self.addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: self.addr.clone(),
                    source,
                })?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        tokio::spawn(conn);
        let token = make_token(
            &format!("http://{}", self.addr),
            &self.key_name,
            &self.key,
            SystemTime::now() + Duration::from_secs(300),
        );
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("authorization", token)
            .header("content-type", "application/atom+xml")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Http(e.to_string(), self.addr.clone()))?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != expected {
            let detail = xml::parse(&body)
                .ok()
                .and_then(|e| e.child("", "Detail").map(|d| d.text.clone()))
                .unwrap_or(body);
            return Err(ClientError::Status {
                method: method.to_string(),
                addr: self.addr.clone(),
                path: path.to_string(),
                status,
                detail,
            });
        }
        Ok(body)
    }

    /// Every entry of a feed, following `next` links.
    async fn entries(&self, first: &str) -> Result<Vec<Element>, ClientError> {
        let mut path = first.to_string();
        let mut all = Vec::new();
        loop {
            let body = self.get(&path).await?;
            let feed = xml::parse(&body).map_err(|reason| ClientError::Feed {
                path: path.clone(),
                reason,
            })?;
            let count = feed.children_named(ATOM, "entry").count();
            all.extend(feed.children_named(ATOM, "entry").cloned());
            // Page by $skip as .NET does: ask again while pages are full.
            if count < 100 {
                return Ok(all);
            }
            path = format!(
                "{}?$skip={}&$top=100",
                first.split('?').next().unwrap_or(first),
                all.len()
            );
        }
    }

    /// Queues, topics and every topic's subscriptions, with their counts.
    pub async fn list(&self) -> Result<Vec<EntityRow>, ClientError> {
        let mut rows = Vec::new();
        for entry in self.entries("/$Resources/queues?$skip=0&$top=100").await? {
            rows.push(row("queue", title(&entry), &entry, "QueueDescription"));
        }
        for entry in self.entries("/$Resources/topics?$skip=0&$top=100").await? {
            let topic = title(&entry);
            rows.push(row("topic", topic.clone(), &entry, "TopicDescription"));
            let encoded =
                percent_encoding::utf8_percent_encode(&topic, percent_encoding::NON_ALPHANUMERIC);
            for sub in self
                .entries(&format!("/{encoded}/subscriptions?$skip=0&$top=100"))
                .await?
            {
                let path = format!("{topic}/Subscriptions/{}", title(&sub));
                rows.push(row("subscription", path, &sub, "SubscriptionDescription"));
            }
        }
        Ok(rows)
    }
}

fn title(entry: &Element) -> String {
    entry
        .child(ATOM, "title")
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

fn row(kind: &'static str, path: String, entry: &Element, description: &str) -> EntityRow {
    let counts = entry
        .child(ATOM, "content")
        .and_then(|c| c.child(SB, description))
        .and_then(|d| d.child(SB, "CountDetails"));
    let count = |name: &str| {
        counts
            .and_then(|c| c.child(SB_COUNTS, name))
            .and_then(|e| e.text.trim().parse().ok())
            .unwrap_or(0)
    };
    EntityRow {
        kind,
        path,
        active_message_count: count("ActiveMessageCount"),
        dead_letter_message_count: count("DeadLetterMessageCount"),
        scheduled_message_count: count("ScheduledMessageCount"),
        transfer_message_count: count("TransferMessageCount"),
    }
}
