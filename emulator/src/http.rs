//! The HTTP listener (port 5300 by default, as the official emulator's): `GET /health`, JSON counts for
//! people and scripts, and the Service Bus administration API ([`crate::admin`]) the SDKs'
//! `ServiceBusAdministrationClient`s speak. HTTP/1.1 by hyper; this module only routes.
//!
//! With a certificate, [`serve`] also runs behind TLS (`--https-listen`; 443 in the container image):
//! the SDKs' admin clients call `https://{namespace}:443/…` whatever the connection string's port, so
//! the same connection string as the AMQP client's reaches it. Same routes, same [`Routes`].
//!
//! - `GET /health` → 200 `{"status":"healthy"}` (the listener is only served once the emulator is ready).
//! - `GET /queues/{name}`, `GET /topics/{t}[/subscriptions/{s}]` without an `Authorization` header →
//!   200 with the counts as Azure names them, or 404 naming the entity and listing the known ones.
//!   (The administration API reads the same paths as entity names; its clients always send a SAS
//!   token, which is how the two are told apart.)
//! - Everything else goes to the administration API, which answers in Service Bus's XML.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, HeaderValue};
use hyper::http::uri::Scheme;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{Admin, Body, response};
use crate::broker::Broker;
use crate::tls::TlsIdentity;

/// A client that does not send its request head in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request bodies (entity descriptions) larger than this are refused with 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// What the routes need: the broker for counts, the administration API for the rest.
#[derive(Clone)]
pub struct Routes {
    broker: Broker,
    admin: Arc<Admin>,
}

impl Routes {
    pub fn new(broker: Broker, admin: Admin) -> Routes {
        Routes {
            broker,
            admin: Arc::new(admin),
        }
    }
}

/// Serve until `shutdown` completes; then open connections finish their request and close. With
/// `tls`, every connection starts with a TLS handshake (HTTPS); without, it is plain HTTP.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsIdentity>,
    routes: Routes,
    shutdown: impl Future,
) {
    let acceptor = tls.map(|identity| identity.acceptor());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let routes = routes.clone();
                    let stop = stop_rx.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let result = match acceptor {
                            None => serve_connection(stream, Scheme::HTTP, routes, stop).await,
                            Some(acceptor) => match crate::tls::handshake(&acceptor, stream).await {
                                Ok(stream) => serve_connection(stream, Scheme::HTTPS, routes, stop).await,
                                Err(e) => {
                                    tracing::info!(%peer, error = %e, "HTTPS handshake failed (a client that does not trust the certificate ends it here; give the client the CA of --tls-cert)");
                                    return;
                                }
                            },
                        };
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "HTTP connection failed");
                        }
                    });
                }
                // Accept errors (e.g. out of file descriptors) are transient; back off briefly.
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    let _ = stop_tx.send(true);
}

/// One connection, plain or inside TLS: HTTP/1.1 until the client closes or `stop` says so. Each
/// request carries `scheme` as an extension, so the administration API writes links the client can
/// follow.
async fn serve_connection<S>(
    stream: S,
    scheme: Scheme,
    routes: Routes,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut req: Request<Incoming>| {
        let routes = routes.clone();
        req.extensions_mut().insert(scheme.clone());
        async move { Ok::<_, Infallible>(routes.respond(req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    response(
        status,
        "application/json",
        Bytes::from(value.to_string().into_bytes()),
    )
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

impl Routes {
    async fn respond(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if path == "/health" {
            if req.method() != Method::GET {
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("method {} is not allowed; use GET", req.method()),
                );
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET"));
                return r;
            }
            return json(StatusCode::OK, &serde_json::json!({ "status": "healthy" }));
        }
        let counts_route = path.starts_with("/queues/") || path.starts_with("/topics/");
        if counts_route && req.method() == Method::GET && !req.headers().contains_key(AUTHORIZATION)
        {
            return self.counts(&path);
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body could not be read ({e}); the limit is {MAX_BODY} bytes"
                    ),
                );
            }
        };
        let response = self.admin.handle(&parts, body).await;
        // A change the administration API made is acknowledged only once it is on disk (with
        // `--data-dir`); if it cannot be saved, the client hears that instead.
        if let Err(e) = self.broker.durable().await {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
        response
    }

    /// `GET /queues/{q}`, `GET /topics/{t}` (scheduled at the topic, the rest summed over its
    /// subscriptions) and `GET /topics/{t}/subscriptions/{s}`.
    fn counts(&self, path: &str) -> Response<Body> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        if let Some(name) = path.strip_prefix("/queues/") {
            let name = decode(name);
            return match self.broker.counts(&name) {
                Some(counts) => json(StatusCode::OK, &serde_json::json!(counts)),
                None => {
                    let known = self.broker.queue_names();
                    json(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({
                            "error": format!("queue '{name}' not found; known queues: {}", known.join(", ")),
                            "knownQueues": known,
                        }),
                    )
                }
            };
        }
        let rest = decode(path.strip_prefix("/topics/").unwrap_or_default());
        let counts = match rest.split_once('/') {
            None => self.broker.topic_counts(&rest),
            Some((topic, sub)) => match sub.split_once('/') {
                Some((segment, name)) if segment.eq_ignore_ascii_case("subscriptions") => {
                    self.broker.counts(&format!("{topic}/Subscriptions/{name}"))
                }
                _ => None,
            },
        };
        match counts {
            Some(counts) => json(StatusCode::OK, &serde_json::json!(counts)),
            None => {
                let known = self.broker.topic_names();
                json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({
                        "error": format!("topic or subscription '{rest}' not found; known topics: {}", known.join(", ")),
                        "knownTopics": known,
                    }),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;
    use crate::auth::SasValidator;
    use crate::broker::ReceiveMode;
    use crate::config::Config;
    use crate::message::StoredMessage;

    async fn start() -> (
        std::net::SocketAddr,
        Broker,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let broker = Broker::new(
            &Config::with_queues(["queue-messages", "other"]).topic(
                crate::config::TopicConfig::new("orders")
                    .subscription(crate::config::SubscriptionConfig::new("all")),
            ),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let routes = Routes::new(
            broker.clone(),
            Admin::new(broker.clone(), SasValidator::emulator_default()),
        );
        let task = tokio::spawn(serve(listener, None, routes, rx));
        (addr, broker, tx, task)
    }

    /// One request on its own connection (`Connection: close`), the raw status and body.
    async fn request(addr: std::net::SocketAddr, raw: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
        .await
    }

    fn message() -> StoredMessage {
        // amqp-value "hi"
        StoredMessage::parse(bytes::Bytes::from_static(&[
            0x00, 0x53, 0x77, 0xa1, 2, b'h', b'i',
        ]))
        .unwrap()
    }

    #[tokio::test]
    async fn health_and_queue_counts_over_loopback() {
        let (addr, broker, stop, task) = start().await;
        assert_eq!(
            get(addr, "/health").await,
            (200, r#"{"status":"healthy"}"#.to_string())
        );

        let q = broker.resolve("queue-messages").unwrap();
        broker.send(&q, message()).unwrap();
        broker.send(&q, message()).unwrap();
        let d = broker.receive(&q, ReceiveMode::PeekLock).unwrap();
        broker
            .settle(
                &q,
                d.lock_token,
                crate::broker::Outcome::DeadLetter {
                    reason: None,
                    description: None,
                },
            )
            .unwrap();
        let (status, body) = get(addr, "/queues/Queue-Messages").await;
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["activeMessageCount"], 1);
        assert_eq!(json["deadLetterMessageCount"], 1);
        assert_eq!(json["scheduledMessageCount"], 0);

        stop.send(()).unwrap();
        task.await.unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener closed after shutdown"
        );
    }

    #[tokio::test]
    async fn keep_alive_connections_serve_several_requests() {
        let (addr, _broker, _stop, _task) = start().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /queues/other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    }

    #[tokio::test]
    async fn errors_name_the_problem() {
        let (addr, _broker, _stop, _task) = start().await;
        let (status, body) = get(addr, "/queues/nope").await;
        assert_eq!(status, 404);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["error"],
            "queue 'nope' not found; known queues: queue-messages, other"
        );
        assert_eq!(
            json["knownQueues"],
            serde_json::json!(["queue-messages", "other"])
        );

        let (status, body) = request(
            addr,
            "POST /health HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 405, "{body}");
        assert_eq!(request(addr, "garbage\r\n\r\n").await.0, 400);
        // Oversized heads are refused, not buffered forever.
        let huge = format!(
            "GET /health HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(1024 * 1024)
        );
        assert_eq!(request(addr, &huge).await.0, 431);
    }

    #[tokio::test]
    async fn topic_and_subscription_counts() {
        let (addr, broker, _stop, _task) = start().await;
        let t = broker.resolve("orders").unwrap();
        broker.send(&t, message()).unwrap();
        let (status, body) = get(addr, "/topics/orders/subscriptions/ALL").await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["activeMessageCount"], 1);
        assert_eq!(v["deadLetterMessageCount"], 0);
        let (status, body) = get(addr, "/topics/orders").await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["activeMessageCount"], 1);
        assert_eq!(v["scheduledMessageCount"], 0);
        let (status, body) = get(addr, "/topics/nope").await;
        assert_eq!(status, 404);
        assert!(body.contains("known topics: orders"), "{body}");
        let (status, _) = get(addr, "/topics/orders/subscriptions/nope").await;
        assert_eq!(status, 404);
    }
}
