//! The managed-identity path end to end on loopback: a fake Container Apps identity endpoint
//! (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`) hands out a token, and a small AMQP peer (fe2o3's
//! acceptor) plays the `$cbs` node and records the put-tokens the client sends with it: the first,
//! and the refresh before the (short-lived) token expires.
//!
//! One test in this binary: it sets process environment variables, which the credential reads.

#[path = "support/identity.rs"]
mod identity;

use std::collections::HashMap;
use std::time::Duration;

use aca_job_lab::servicebus::{Auth, ConnectionConfig, ServiceBusClient};
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, SaslAnonymousMechanism, SessionAcceptor,
};
use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use identity::IDENTITY_HEADER;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const CLIENT_ID: &str = "6d3f1c2e-0000-4000-8000-00000000c1d0";
const ACCESS_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL3NlcnZpY2VidXMuYXp1cmUubmV0In0.c2lnbmF0dXJl";

/// Plays just enough of a broker: accepts the connection, the `$cbs` link pair and the queue
/// link, answers every put-token with 202, and hands each request over.
async fn amqp_peer(listener: TcpListener, seen: mpsc::UnboundedSender<Message<Body<Value>>>) {
    let (tcp, _) = listener.accept().await.unwrap();
    let acceptor = ConnectionAcceptor::builder()
        .container_id("fake-servicebus")
        .sasl_acceptor(SaslAnonymousMechanism::new())
        .build();
    let mut connection = acceptor.accept(tcp).await.unwrap();
    let mut session = SessionAcceptor::new()
        .accept(&mut connection)
        .await
        .unwrap();
    let links = LinkAcceptor::new();
    let (mut cbs_in, mut cbs_out) = (None, None);
    while cbs_in.is_none() || cbs_out.is_none() {
        match links.accept(&mut session).await.unwrap() {
            LinkEndpoint::Receiver(r) => cbs_in = Some(r),
            LinkEndpoint::Sender(s) => cbs_out = Some(s),
        }
    }
    let (mut cbs_in, mut cbs_out) = (cbs_in.unwrap(), cbs_out.unwrap());
    let mut queue_link = None;
    loop {
        let delivery = cbs_in.recv::<Body<Value>>().await.unwrap();
        cbs_in.accept(&delivery).await.unwrap();
        let request = delivery.into_message();
        let correlation = request
            .properties
            .as_ref()
            .unwrap()
            .message_id
            .clone()
            .unwrap();
        let reply = Message::builder()
            .properties(Properties::builder().correlation_id(correlation).build())
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", 202i32)
                    .insert("status-description", "Accepted")
                    .build(),
            )
            .body(Body::<Value>::Value(
                fe2o3_amqp::types::messaging::AmqpValue(Value::Null),
            ))
            .build();
        seen.send(request).unwrap();
        cbs_out.send(reply).await.unwrap();
        if queue_link.is_none() {
            // The queue link the client attaches once authorised; kept open from then on.
            queue_link = Some(links.accept(&mut session).await.unwrap());
        }
    }
}

/// Token lifetime the fake endpoint gives: short, so the refresh shows up within seconds.
const LIFETIME_SECONDS: u64 = 4;

#[tokio::test]
async fn managed_identity_token_goes_out_in_cbs_put_token_as_jwt_and_is_refreshed() {
    aca_job_lab::servicebus::install_crypto_provider();
    let identity = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // SAFETY: this binary has one test and sets the variables before any thread reads them.
    unsafe {
        std::env::set_var("IDENTITY_ENDPOINT", identity::endpoint_url(&identity));
        std::env::set_var("IDENTITY_HEADER", IDENTITY_HEADER);
    }
    let (identity_seen, mut identity_requests) = mpsc::unbounded_channel();
    let (put_token_seen, mut put_tokens) = mpsc::unbounded_channel();
    // Token `n` is `ACCESS_TOKEN-n`.
    tokio::spawn(identity::serve(
        identity,
        LIFETIME_SECONDS,
        CLIENT_ID,
        |n, _| format!("{ACCESS_TOKEN}-{n}"),
        identity_seen,
    ));
    let peer_port = broker.local_addr().unwrap().port();
    let peer = tokio::spawn(amqp_peer(broker, put_token_seen));

    let config = ConnectionConfig {
        namespace: "mylab.servicebus.windows.net".into(),
        host: "127.0.0.1".into(),
        port: peer_port,
        tls: false,
        trusted_ca: None,
        auth: Auth::ManagedIdentity {
            client_id: CLIENT_ID.into(),
        },
    };
    // A dead identity endpoint retries for ~80 s; a working one answers at once.
    let (_client, _sender) = tokio::time::timeout(Duration::from_secs(30), async {
        let mut client = ServiceBusClient::connect(&config).await.unwrap();
        let sender = client.sender("queue-messages").await.unwrap();
        (client, sender)
    })
    .await
    .expect("connect + authorise timed out");

    // What the identity endpoint was asked.
    let request = identity_requests.recv().await.unwrap();
    let expires_on = request.expires_on;
    let (path, query) = request
        .request_line
        .strip_prefix("GET ")
        .unwrap()
        .split_once('?')
        .unwrap();
    assert_eq!(path, "/msi/token");
    let query: HashMap<&str, &str> = query
        .split(' ')
        .next()
        .unwrap()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .collect();
    assert_eq!(query.get("api-version"), Some(&"2019-08-01"));
    assert_eq!(
        query.get("resource"),
        Some(&"https%3A%2F%2Fservicebus.azure.net")
    );
    assert_eq!(query.get("client_id"), Some(&CLIENT_ID));
    assert_eq!(
        request.headers.get("x-identity-header").map(String::as_str),
        Some(IDENTITY_HEADER)
    );

    // What went out on the wire: that token, as a jwt, for the queue.
    let put_token = put_tokens.recv().await.unwrap();
    assert_put_token(&put_token, &format!("{ACCESS_TOKEN}-1"), expires_on);

    // Before the first token runs out, a fresh one is fetched and put again, without any help.
    let second_expiry = tokio::time::timeout(Duration::from_secs(20), identity_requests.recv())
        .await
        .expect("a second token request before the first expired")
        .unwrap()
        .expires_on;
    let refreshed = tokio::time::timeout(Duration::from_secs(20), put_tokens.recv())
        .await
        .expect("a second put-token")
        .unwrap();
    assert_put_token(&refreshed, &format!("{ACCESS_TOKEN}-2"), second_expiry);
    peer.abort();
}

fn assert_put_token(message: &Message<Body<Value>>, token: &str, expires_on: u64) {
    let props = message.application_properties.as_ref().unwrap();
    assert_eq!(
        props.get("operation"),
        Some(&SimpleValue::String("put-token".into()))
    );
    assert_eq!(props.get("type"), Some(&SimpleValue::String("jwt".into())));
    assert_eq!(
        props.get("name"),
        Some(&SimpleValue::String(
            "sb://mylab.servicebus.windows.net/queue-messages".into()
        ))
    );
    let Some(SimpleValue::Timestamp(expiration)) = props.get("expiration") else {
        panic!("expiration: {props:?}")
    };
    assert_eq!(
        expiration.milliseconds(),
        i64::try_from(expires_on * 1000).unwrap()
    );
    match &message.body {
        Body::Value(v) => assert_eq!(v.0, Value::String(token.into())),
        other => panic!("body: {other:?}"),
    }
}
