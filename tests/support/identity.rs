//! A loopback stand-in for the Container Apps managed-identity endpoint: what `IDENTITY_ENDPOINT`
//! and `IDENTITY_HEADER` point a job at. It answers each token request with the platform's JSON
//! shape and reports what it was asked.
//!
//! Included with `#[path = "support/identity.rs"] mod identity;` by the tests that need it (the rest
//! of `support` brings in testcontainers, which they do not).

#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The secret the platform puts in `IDENTITY_HEADER`; the client must send it back.
pub const IDENTITY_HEADER: &str = "identity-header-from-the-platform";

/// One token request, as the endpoint saw it.
#[derive(Debug)]
pub struct IdentityRequest {
    pub request_line: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    /// The `expires_on` the endpoint answered with (unix seconds).
    pub expires_on: u64,
}

/// The `IDENTITY_ENDPOINT` URL for a listener.
pub fn endpoint_url(listener: &TcpListener) -> String {
    format!("http://{}/msi/token", listener.local_addr().unwrap())
}

/// Answers token requests on `listener` the way the Container Apps identity endpoint does: request
/// `n` (from 1) gets `token(n, expires_on)` with `expires_on` = now + `lifetime` seconds. Each
/// request is sent to `seen` (a dropped receiver is fine).
pub async fn serve(
    listener: TcpListener,
    lifetime: u64,
    client_id: &'static str,
    token: impl Fn(u64, u64) -> String,
    seen: mpsc::UnboundedSender<IdentityRequest>,
) {
    for n in 1.. {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = socket.read(&mut buf).await.unwrap();
            assert!(read > 0, "connection closed before the request head ended");
            head.extend_from_slice(&buf[..read]);
        }
        let head = String::from_utf8(head).unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let expires_on = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + lifetime;
        let _ = seen.send(IdentityRequest {
            request_line,
            headers,
            expires_on,
        });
        let body = serde_json::json!({
            "access_token": token(n, expires_on),
            // The platform sends numbers as strings.
            "expires_on": expires_on.to_string(),
            "resource": "https://servicebus.azure.net",
            "token_type": "Bearer",
            "client_id": client_id,
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
    }
}
