//! `GET /health` and `GET /queues/{name}`: a tiny HTTP/1.1 server, hand-written on tokio because two
//! read-only routes do not justify an HTTP framework.
//!
//! - `GET /health` → 200 `{"status":"healthy"}` (the listener is only served once the emulator is ready).
//! - `GET /queues/{name}` → 200 with the queue's counts as Azure names them, or 404 naming the queue and
//!   listing the known ones.
//! - Other paths → 404; other methods → 405. Each response closes the connection.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::broker::Broker;

/// Requests larger than this are refused: the routes take no body and short paths.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client that does not send its request line in this time is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve until `shutdown` completes. Connections are handled on their own tasks.
pub async fn serve(listener: TcpListener, broker: Broker, shutdown: impl Future) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let broker = broker.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &broker).await {
                            tracing::debug!(error = %e, "health connection failed");
                        }
                    });
                }
                // Accept errors (e.g. out of file descriptors) are transient; back off briefly.
                Err(e) => {
                    tracing::warn!(error = %e, "health listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn handle(mut stream: TcpStream, broker: &Broker) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let response = match head {
        Some(head) => respond(&head, broker),
        None => Response::json(
            400,
            r#"{"error":"malformed or oversized HTTP request"}"#.to_string(),
        ),
    };
    stream.write_all(&response.to_bytes()).await?;
    stream.shutdown().await
}

/// Read up to the blank line ending the request head. `None` if it is too large or the peer closes early.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((end <= MAX_REQUEST_HEAD)
                .then(|| String::from_utf8(buf[..end].to_vec()).ok())
                .flatten());
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
}

struct Response {
    status: u16,
    body: String,
    allow: bool,
}

impl Response {
    fn json(status: u16, body: String) -> Response {
        Response {
            status,
            body,
            allow: false,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Error",
        };
        let allow = if self.allow { "Allow: GET\r\n" } else { "" };
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{}",
            self.status,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

fn error_body(message: String) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Route one request head to a response.
fn respond(head: &str, broker: &Broker) -> Response {
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Response::json(
            400,
            error_body(format!("malformed request line \"{request_line}\"")),
        );
    };
    if !version.starts_with("HTTP/1.") {
        return Response::json(
            400,
            error_body(format!("unsupported protocol \"{version}\"; use HTTP/1.1")),
        );
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let route_known =
        path == "/health" || path.starts_with("/queues/") || path.starts_with("/topics/");
    if method != "GET" {
        let mut r = Response::json(
            405,
            error_body(format!("method {method} is not allowed; use GET")),
        );
        r.allow = true;
        if route_known {
            return r;
        }
    }
    if path == "/health" {
        return Response::json(200, r#"{"status":"healthy"}"#.to_string());
    }
    if let Some(name) = path.strip_prefix("/queues/") {
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        return match broker.counts(&name) {
            Some(counts) => Response::json(200, serde_json::to_string(&counts).unwrap_or_default()),
            None => {
                let known = broker.queue_names();
                Response::json(
                    404,
                    serde_json::json!({
                        "error": format!("queue '{name}' not found; known queues: {}", known.join(", ")),
                        "knownQueues": known,
                    })
                    .to_string(),
                )
            }
        };
    }
    if let Some(rest) = path.strip_prefix("/topics/") {
        return topic_counts(
            broker,
            &percent_encoding::percent_decode_str(rest).decode_utf8_lossy(),
        );
    }
    Response::json(
        404,
        error_body(format!(
            "no route for {path}; try GET /health, /queues/{{name}}, /topics/{{name}} or /topics/{{name}}/subscriptions/{{name}}"
        )),
    )
}

/// `GET /topics/{t}` (scheduled at the topic, the rest summed over its subscriptions) and
/// `GET /topics/{t}/subscriptions/{s}`, with the same count names as queues.
fn topic_counts(broker: &Broker, rest: &str) -> Response {
    let counts = match rest.split_once('/') {
        None => broker.topic_counts(rest),
        Some((topic, sub)) => match sub.split_once('/') {
            Some((segment, name)) if segment.eq_ignore_ascii_case("subscriptions") => {
                broker.counts(&format!("{topic}/Subscriptions/{name}"))
            }
            _ => None,
        },
    };
    match counts {
        Some(counts) => Response::json(200, serde_json::to_string(&counts).unwrap_or_default()),
        None => Response::json(
            404,
            serde_json::json!({
                "error": format!("topic or subscription '{rest}' not found; known topics: {}", broker.topic_names().join(", ")),
                "knownTopics": broker.topic_names(),
            })
            .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::sync::oneshot;

    use super::*;
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
        let task = tokio::spawn(serve(listener, broker.clone(), rx));
        (addr, broker, tx, task)
    }

    async fn request(addr: std::net::SocketAddr, raw: &str) -> (u16, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
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

        assert_eq!(get(addr, "/").await.0, 404);
        let (status, body) =
            request(addr, "POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(status, 405, "{body}");
        assert_eq!(request(addr, "garbage\r\n\r\n").await.0, 400);
        assert_eq!(request(addr, "GET /health SPDY/3\r\n\r\n").await.0, 400);
        // Oversized heads are refused, not buffered forever.
        let huge = format!(
            "GET /health HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_HEAD)
        );
        assert_eq!(request(addr, &huge).await.0, 400);
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
