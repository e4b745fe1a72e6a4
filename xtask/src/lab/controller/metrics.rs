//! Where the scaler reads the queue's active message count, as KEDA's `azure-servicebus` scaler reads
//! `countDetails.activeMessageCount` (locked, not yet completed messages included).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why the count could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "the queue {0:?} does not exist in the emulator; check queue_name in the job settings file"
    )]
    UnknownQueue(String),
    #[error("could not ask the emulator at http://{addr}/queues/{queue}: {detail}")]
    Unreachable {
        addr: SocketAddr,
        queue: String,
        detail: String,
    },
    #[error("the emulator answered http://{addr}/queues/{queue} with {detail}")]
    BadAnswer {
        addr: SocketAddr,
        queue: String,
        detail: String,
    },
}

/// The scaler's only input.
pub trait QueueMetrics: Send + Sync + 'static {
    /// Messages that are active now (available or locked, not scheduled, not dead-lettered).
    fn active_message_count(&self) -> impl Future<Output = Result<u64, MetricsError>> + Send;
}

/// Asks the in-process emulator's broker directly (the one-shot lab and `lab serve` host it).
#[derive(Clone)]
pub struct BrokerMetrics {
    broker: servicebus_emulator::broker::Broker,
    queue: String,
}

impl BrokerMetrics {
    pub fn new(broker: servicebus_emulator::broker::Broker, queue: &str) -> Self {
        Self {
            broker,
            queue: queue.to_owned(),
        }
    }
}

impl QueueMetrics for BrokerMetrics {
    async fn active_message_count(&self) -> Result<u64, MetricsError> {
        self.broker
            .counts(&self.queue)
            .map(|counts| counts.active_message_count)
            .ok_or_else(|| MetricsError::UnknownQueue(self.queue.clone()))
    }
}

/// Asks an emulator in another process: `GET /queues/{name}` on its health listener.
#[derive(Clone, Debug)]
pub struct HealthEndpointMetrics {
    addr: SocketAddr,
    queue: String,
    timeout: Duration,
}

impl HealthEndpointMetrics {
    pub fn new(addr: SocketAddr, queue: &str) -> Self {
        Self {
            addr,
            queue: queue.to_owned(),
            timeout: Duration::from_secs(5),
        }
    }

    fn unreachable(&self, detail: impl ToString) -> MetricsError {
        MetricsError::Unreachable {
            addr: self.addr,
            queue: self.queue.clone(),
            detail: detail.to_string(),
        }
    }

    fn bad_answer(&self, detail: impl ToString) -> MetricsError {
        MetricsError::BadAnswer {
            addr: self.addr,
            queue: self.queue.clone(),
            detail: detail.to_string(),
        }
    }

    async fn get(&self) -> Result<(u16, String), MetricsError> {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| self.unreachable(e))?;
        let request = format!(
            "GET /queues/{} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            self.queue, self.addr
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| self.unreachable(e))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| self.bad_answer("no HTTP header"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| self.bad_answer(format!("a status line that is not HTTP: {head:?}")))?;
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok((status, body))
    }
}

impl QueueMetrics for HealthEndpointMetrics {
    async fn active_message_count(&self) -> Result<u64, MetricsError> {
        let (status, body) = tokio::time::timeout(self.timeout, self.get())
            .await
            .map_err(|_| {
                self.unreachable(format!("no answer within {} s", self.timeout.as_secs()))
            })??;
        if status == 404 {
            return Err(MetricsError::UnknownQueue(self.queue.clone()));
        }
        if status != 200 {
            return Err(self.bad_answer(format!("HTTP {status}: {}", body.trim())));
        }
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| self.bad_answer(format!("a body that is not JSON ({e})")))?;
        // Flat (`{"activeMessageCount": 1}`) or Azure's nesting (`{"countDetails": {...}}`).
        json.get("activeMessageCount")
            .or_else(|| {
                json.get("countDetails")
                    .and_then(|c| c.get("activeMessageCount"))
            })
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| self.bad_answer(format!("JSON without activeMessageCount: {body}")))
    }
}

/// Undo `Transfer-Encoding: chunked` (hex size line, data, CRLF; a zero size ends it).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A one-request HTTP server on loopback that answers with `response`.
    async fn serve_once(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap();
            assert!(
                String::from_utf8_lossy(&buf[..n])
                    .starts_with("GET /queues/queue-messages HTTP/1.1\r\n")
            );
            socket.write_all(response.as_bytes()).await.unwrap();
        });
        addr
    }

    async fn count_at(addr: SocketAddr, queue: &str) -> Result<u64, MetricsError> {
        HealthEndpointMetrics::new(addr, queue)
            .active_message_count()
            .await
    }

    async fn count(response: &'static str) -> u64 {
        count_at(serve_once(response).await, "queue-messages")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn reads_the_flat_and_the_nested_count() {
        let flat =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"activeMessageCount\":3}";
        assert_eq!(count(flat).await, 3);
        let nested = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\n{\"countDetails\":{\"activeMessag\r\n\
                      10\r\neCount\":7,\"x\":0}\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(count(nested).await, 7);
    }

    #[tokio::test]
    async fn a_missing_queue_names_the_setting_to_fix() {
        let addr = serve_once("HTTP/1.1 404 Not Found\r\n\r\n").await;
        let error = count_at(addr, "queue-messages").await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("check queue_name in the job settings file"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn nobody_listening_names_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = count_at(addr, "q").await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("http://{addr}/queues/q")),
            "{error}"
        );
    }
}
