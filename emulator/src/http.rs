//! `GET /health` and `GET /queues/{name}` on the health listener.
//!
//! A hand-rolled HTTP/1.1 responder (one request per connection, `Connection: close`): the two routes
//! are tiny and read-only, so a web framework would only add build time. `/queues/{name}` answers with
//! the counts Azure reports, named as Azure names them (`activeMessageCount`, ...).

use std::future::Future;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::broker::Broker;

/// Serve until `shutdown` resolves.
pub async fn serve(listener: TcpListener, broker: Broker, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let broker = broker.clone();
                    tokio::spawn(async move {
                        if let Err(e) = respond(stream, &broker).await {
                            tracing::debug!(error = %e, "health request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "health accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Status line and JSON body for a request line such as `GET /queues/q HTTP/1.1`.
pub fn route(broker: &Broker, request_line: &str) -> (u16, String) {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return (405, r#"{"error":"only GET is supported"}"#.to_string());
    }
    let path = path.split('?').next().unwrap_or("");
    if path == "/health" {
        return (200, r#"{"status":"healthy"}"#.to_string());
    }
    if let Some(name) = path.strip_prefix("/queues/") {
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        return match broker.counts(&name) {
            Some(counts) => (200, serde_json::to_string(&counts).unwrap_or_default()),
            None => (
                404,
                serde_json::json!({
                    "error": format!("no queue named '{name}'"),
                    "queues": broker.queue_names(),
                })
                .to_string(),
            ),
        };
    }
    (
        404,
        r#"{"error":"unknown path; try /health or /queues/{name}"}"#.to_string(),
    )
}

async fn respond(mut stream: TcpStream, broker: &Broker) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    // Read until the end of the headers (or 8 KiB, plenty for a GET).
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("");
    let (status, body) = route(broker, line);
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
