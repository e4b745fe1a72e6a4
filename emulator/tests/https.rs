//! The HTTP listener over HTTPS (`EmulatorBuilder::https`, `--https-listen`): the same routes as plain
//! HTTP, behind a certificate from a throwaway CA, reached by name (SNI and certificate checks as an
//! SDK's admin client does them against `https://{namespace}:443`), with SAS and Entra tokens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use servicebus_emulator::Emulator;
use servicebus_emulator::auth::jwt::make_test_token;
use servicebus_emulator::auth::{EMULATOR_KEY, EMULATOR_RULE, make_token};
use servicebus_emulator::tls::TestCa;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The namespace name the certificate is for, as a connection string to Azure would name it.
const NAMESPACE: &str = "sb-lab.servicebus.windows.net";

/// A queue description as the Python admin client sends it (the smallest the API takes).
const QUEUE: &str = r#"<?xml version="1.0" encoding="utf-8"?><entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml"><QueueDescription xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"></QueueDescription></content></entry>"#;

async fn emulator_with_https() -> (Emulator, TestCa) {
    let ca = TestCa::new().unwrap();
    let identity = ca
        .issue(&[NAMESPACE, "localhost"])
        .unwrap()
        .identity()
        .unwrap();
    let emu = Emulator::builder()
        .loopback()
        .https("127.0.0.1:0".parse().unwrap(), identity)
        .start()
        .await
        .unwrap();
    (emu, ca)
}

fn client_config(ca: &TestCa) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.certificate_der()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// One request over TLS to `addr`, checking the certificate for `NAMESPACE`; status and body.
async fn https(
    addr: SocketAddr,
    ca: &TestCa,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: &str,
) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(client_config(ca))
        .connect(NAMESPACE.try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake with the HTTPS listener");
    let (mut sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", NAMESPACE);
    if let Some(token) = authorization {
        request = request.header("authorization", token);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn sas() -> Option<String> {
    Some(make_token(
        &format!("https://{NAMESPACE}/"),
        EMULATOR_RULE,
        EMULATOR_KEY,
        SystemTime::now() + Duration::from_secs(3600),
    ))
}

fn bearer(expires: SystemTime) -> Option<String> {
    Some(format!(
        "Bearer {}",
        make_test_token("https://servicebus.azure.net/", expires)
    ))
}

#[tokio::test]
async fn health_counts_and_the_administration_api_are_served_over_https() {
    let (emu, ca) = emulator_with_https().await;
    let addr = emu.https_addr().expect("the HTTPS listener is bound");
    assert_ne!(addr, emu.health_addr(), "HTTPS has its own port");

    assert_eq!(
        https(addr, &ca, "GET", "/health", None, "").await,
        (200, r#"{"status":"healthy"}"#.to_string())
    );
    let (status, body) = https(addr, &ca, "GET", "/queues/queue-messages", None, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("activeMessageCount"), "{body}");

    let (status, body) = https(addr, &ca, "PUT", "/over-https", sas(), QUEUE).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body.contains(&format!("https://{NAMESPACE}/over-https")),
        "links name the scheme the client used: {body}"
    );
    assert!(emu.broker().entity_info("over-https").is_some());

    // The plain listener keeps serving the same routes.
    let plain = TcpStream::connect(emu.health_addr()).await.unwrap();
    let (mut sender, conn) = http1::handshake(TokioIo::new(plain)).await.unwrap();
    tokio::spawn(conn);
    let request = Request::get("/queues/over-https")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn entra_bearer_tokens_manage_entities_over_https_and_bad_ones_get_401() {
    let (emu, ca) = emulator_with_https().await;
    let addr = emu.https_addr().unwrap();
    let hour = Duration::from_secs(3600);

    let (status, body) = https(
        addr,
        &ca,
        "PUT",
        "/by-entra",
        bearer(SystemTime::now() + hour),
        QUEUE,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(emu.broker().entity_info("by-entra").is_some());

    let (status, body) = https(
        addr,
        &ca,
        "GET",
        "/by-entra",
        bearer(SystemTime::now() - hour),
        "",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("<Code>401</Code>") && body.contains("expired"),
        "Service Bus's error body, naming the problem: {body}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused_and_the_listener_goes_on() {
    let (emu, ca) = emulator_with_https().await;
    let addr = emu.https_addr().unwrap();
    let stranger = TestCa::new().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = TlsConnector::from(client_config(&stranger))
        .connect(NAMESPACE.try_into().unwrap(), tcp)
        .await;
    assert!(refused.is_err(), "a certificate from another CA is refused");
    // Plain HTTP on the HTTPS port is not answered as HTTP (the handshake fails), and the listener
    // still serves the next client.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    assert_eq!(https(addr, &ca, "GET", "/health", None, "").await.0, 200);
    emu.shutdown().await;
}
