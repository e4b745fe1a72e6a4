//! The API without sockets: requests built as hyper `Parts` with the recorded bodies of
//! `tests/fixtures/admin/` (see its README), answers compared with insta snapshots (times redacted,
//! indented for reading).

use std::time::{Duration, SystemTime};

use http_body_util::BodyExt as _;
use hyper::Request;
use quick_xml::events::Event;
use quick_xml::{Reader, Writer};

use super::*;
use crate::auth::{EMULATOR_KEY, EMULATOR_RULE, make_token};
use crate::config::Config;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admin")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn token(key: &str) -> String {
    // Python signs the https URL of the namespace with its port; the audience is not checked.
    make_token(
        "https://localhost:5300",
        EMULATOR_RULE,
        key,
        SystemTime::now() + Duration::from_secs(3600),
    )
}

struct Api {
    broker: Broker,
    admin: Admin,
}

impl Api {
    fn new() -> Api {
        let broker = Broker::new(&Config::lab_default());
        let admin = Admin::new(broker.clone(), SasValidator::emulator_default());
        Api { broker, admin }
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> (u16, String) {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "localhost:5300");
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        let response = self
            .admin
            .handle(&parts, Bytes::from(body.to_string()))
            .await;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn call(&self, method: &str, uri: &str, body: &str) -> (u16, String) {
        self.send(method, uri, body, &[("authorization", token(EMULATOR_KEY))])
            .await
    }

    async fn update(&self, uri: &str, body: &str) -> (u16, String) {
        self.send(
            "PUT",
            uri,
            body,
            &[
                ("authorization", token(EMULATOR_KEY)),
                ("if-match", "*".to_string()),
            ],
        )
        .await
    }
}

/// Indent a document for a readable snapshot.
fn pretty(xml: &str) -> String {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            e => writer.write_event(e).unwrap(),
        }
    }
    String::from_utf8(writer.into_inner()).unwrap()
}

macro_rules! assert_xml_snapshot {
    ($name:expr, $xml:expr) => {
        insta::with_settings!({filters => vec![
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]"),
        ]}, {
            insta::assert_snapshot!($name, pretty(&$xml));
        })
    };
}

#[tokio::test]
async fn python_queue_create_then_get_with_counts() {
    let api = Api::new();
    let (status, created) = api
        .call(
            "PUT",
            "/fresh?api-version=2024-05",
            &fixture("python-queue-create.xml"),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_xml_snapshot!("queue_created", created);
    let props = api.broker.queue_properties("fresh").unwrap();
    assert_eq!(props.max_delivery_count, 2);
    assert_eq!(props.lock_duration, Duration::from_secs(30));
    assert_eq!(props.default_message_time_to_live, Duration::from_secs(600));

    let (status, got) = api
        .call("GET", "/fresh?enrich=false&api-version=2024-05", "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, created, "GET answers what PUT did");
}

#[tokio::test]
async fn python_update_echo_with_read_only_fields_is_accepted() {
    let api = Api::new();
    api.call("PUT", "/fresh", &fixture("python-queue-create.xml"))
        .await;
    let (status, body) = api
        .update(
            "/fresh?api-version=2024-05",
            &fixture("python-queue-update.xml"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let props = api.broker.queue_properties("fresh").unwrap();
    assert_eq!(props.max_delivery_count, 5);
    assert_eq!(props.lock_duration, Duration::from_secs(10));
    // An update of a queue that does not exist is 404, not a create.
    let (status, _) = api
        .update("/nope", &fixture("python-queue-update.xml"))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn dotnet_shaped_queue_and_rule_are_read_by_namespace() {
    let api = Api::new();
    let (status, body) = api
        .call("PUT", "/dotnet", &fixture("dotnet-queue-create.xml"))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_xml_snapshot!("dotnet_queue_created", body);
    let props = api.broker.queue_properties("dotnet").unwrap();
    assert_eq!(props.lock_duration, Duration::from_secs(45));
    assert!(props.requires_duplicate_detection && props.dead_lettering_on_message_expiration);
    assert_eq!(props.max_delivery_count, 4);

    api.call("PUT", "/t", &fixture("python-topic-create.xml"))
        .await;
    api.call(
        "PUT",
        "/t/Subscriptions/s",
        &fixture("python-subscription-create.xml"),
    )
    .await;
    let (status, body) = api
        .call(
            "PUT",
            "/t/Subscriptions/s/Rules/by-order",
            &fixture("dotnet-rule-correlation.xml"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_xml_snapshot!("dotnet_rule_created", body);
}

#[tokio::test]
async fn topic_subscription_and_rules_list_in_service_order() {
    let api = Api::new();
    let (status, body) = api
        .call("PUT", "/events", &fixture("python-topic-create.xml"))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .call(
            "PUT",
            "/events/subscriptions/red",
            &fixture("python-subscription-create.xml"),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_xml_snapshot!("subscription_created", body);
    for (rule, file) in [
        ("is-red", "python-rule-sql-action.xml"),
        ("prio", "python-rule-correlation.xml"),
        ("never", "python-rule-false.xml"),
    ] {
        let (status, body) = api
            .call(
                "PUT",
                &format!("/events/subscriptions/red/rules/{rule}"),
                &fixture(file),
            )
            .await;
        assert_eq!(status, 201, "{rule}: {body}");
    }
    let (status, body) = api
        .call(
            "GET",
            "/events/subscriptions/red/rules?$skip=0&$top=100",
            "",
        )
        .await;
    assert_eq!(status, 200);
    assert_xml_snapshot!("rules_feed", body);
    let (status, body) = api.call("GET", "/events", "").await;
    assert_eq!(status, 200);
    assert_xml_snapshot!("topic_with_counts", body);
}

#[tokio::test]
async fn invalid_sql_filter_is_400_naming_the_position() {
    let api = Api::new();
    api.call("PUT", "/events", &fixture("python-topic-create.xml"))
        .await;
    api.call(
        "PUT",
        "/events/subscriptions/red",
        &fixture("python-subscription-create.xml"),
    )
    .await;
    let (status, body) = api
        .call(
            "PUT",
            "/events/subscriptions/red/rules/broken",
            &fixture("python-rule-bad-sql.xml"),
        )
        .await;
    assert_eq!(status, 400);
    assert_xml_snapshot!("bad_sql_error", body);
}

#[tokio::test]
async fn lists_page_with_a_next_link_only_while_more_remain() {
    let api = Api::new();
    for name in ["b", "a", "c"] {
        api.call(
            "PUT",
            &format!("/{name}"),
            &fixture("python-queue-create.xml"),
        )
        .await;
    }
    let (_, first) = api
        .call(
            "GET",
            "/$Resources/queues?$skip=0&$top=2&api-version=2021-05",
            "",
        )
        .await;
    let root = xml::parse(&first).unwrap();
    let titles = |root: &xml::Element| -> Vec<String> {
        root.children_named(ATOM, "entry")
            .map(|e| e.child(ATOM, "title").unwrap().text.clone())
            .collect()
    };
    assert_eq!(titles(&root), ["a", "b"]);
    assert_eq!(
        root.children_named(ATOM, "link").count(),
        2,
        "self and next"
    );
    assert!(
        first.contains(
            "rel=\"next\" href=\"http://localhost:5300/$Resources/queues?$skip=2&amp;$top=2"
        ),
        "{first}"
    );
    let (_, last) = api
        .call("GET", "/%24Resources/Queues?%24skip=2&%24top=2", "")
        .await;
    let root = xml::parse(&last).unwrap();
    assert_eq!(titles(&root), ["c", "queue-messages"]);
    assert_eq!(
        root.children_named(ATOM, "link").count(),
        1,
        "no next on the last page"
    );
    let (_, empty) = api.call("GET", "/$Resources/topics", "").await;
    assert_xml_snapshot!("empty_feed", empty);
}

#[tokio::test]
async fn errors_as_service_bus_answers_them() {
    let api = Api::new();
    let queue = fixture("python-queue-create.xml");
    // Authorization
    let (status, body) = api.send("GET", "/queue-messages", "", &[]).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("<Code>401</Code>") && body.contains("Authorization header is missing"),
        "{body}"
    );
    let (status, _) = api
        .send(
            "GET",
            "/queue-messages",
            "",
            &[("authorization", token("wrong"))],
        )
        .await;
    assert_eq!(status, 401);
    // Missing, existing, malformed, invalid.
    let (status, body) = api.call("GET", "/nope", "").await;
    assert_eq!(status, 404);
    assert_xml_snapshot!("not_found_error", body);
    let (status, body) = api.call("PUT", "/queue-messages", &queue).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("SubCode=40900"), "{body}");
    let (status, body) = api.call("PUT", "/x", "<entry><content>").await;
    assert_eq!(status, 400);
    assert!(body.contains("not well-formed XML"), "{body}");
    let (status, body) = api
        .call("PUT", "/x", &queue.replace("PT30S", "PT10M"))
        .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("LockDuration") && body.contains("PT5M"),
        "{body}"
    );
    let (status, body) = api
        .call(
            "PUT",
            "/x",
            &queue.replace("<MaxDeliveryCount>2", "<MaxDeliveryCount>two"),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("'two' of MaxDeliveryCount"), "{body}");
    let (status, body) = api.call("PUT", "/bad%20name", &queue).await;
    assert_eq!(status, 400);
    assert!(body.contains("entity name 'bad name'"), "{body}");
    let (status, body) = api.call("PUT", "/x/subscriptions/s", &queue).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = api
        .call(
            "PUT",
            "/nope/subscriptions/s",
            &fixture("python-subscription-create.xml"),
        )
        .await;
    assert_eq!(status, 404, "a subscription of a missing topic");
    // RequiresSession cannot change on an existing queue.
    let (status, body) = api
        .update(
            "/queue-messages",
            &fixture("dotnet-queue-create.xml")
                .replace("<RequiresSession>false", "<RequiresSession>true"),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("RequiresSession"), "{body}");
    // ForwardTo needs a token for the target too.
    let (status, body) = api
        .call("PUT", "/src", &fixture("python-queue-create-forward.xml"))
        .await;
    assert_eq!(status, 401);
    assert!(
        body.contains("ServiceBusSupplementaryAuthorization"),
        "{body}"
    );
    let (status, body) = api
        .send(
            "PUT",
            "/src",
            &fixture("python-queue-create-forward.xml"),
            &[
                ("authorization", token(EMULATOR_KEY)),
                ("servicebussupplementaryauthorization", token(EMULATOR_KEY)),
            ],
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Delete answers 200 with no body, then the entity is gone.
    assert_eq!(api.call("DELETE", "/src", "").await, (200, String::new()));
    assert_eq!(api.call("DELETE", "/src", "").await.0, 404);
    assert_eq!(api.call("GET", "/a/b/c/d/e/f", "").await.0, 404);
    assert_eq!(api.call("POST", "/queue-messages", "").await.0, 405);
}

#[tokio::test]
async fn namespace_info() {
    let api = Api::new();
    let (status, body) = api
        .call("GET", "/$namespaceinfo?api-version=2021-05", "")
        .await;
    assert_eq!(status, 200);
    assert_xml_snapshot!("namespace_info", body);
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    const FIXTURES: [&str; 6] = [
        "python-queue-update.xml",
        "python-rule-correlation.xml",
        "python-rule-sql-action.xml",
        "python-subscription-create.xml",
        "dotnet-queue-create.xml",
        "dotnet-rule-correlation.xml",
    ];
    const PATHS: [&str; 4] = [
        "/q",
        "/t",
        "/t/subscriptions/s",
        "/t/subscriptions/s/rules/r",
    ];

    fn put(api: &Api, path: &str, body: &[u8], update: bool) -> u16 {
        let mut builder = Request::builder()
            .method("PUT")
            .uri(path)
            .header("authorization", token(EMULATOR_KEY));
        if update {
            builder = builder.header("if-match", "*");
        }
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        match api.admin.route(&parts, body) {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.status.as_u16(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Recorded bodies cut short or with a byte changed, on every kind of path: a 2xx or a
        /// 4xx, never a panic or a 500.
        #[test]
        fn damaged_bodies_get_a_client_error(
            fixture in 0..FIXTURES.len(),
            path in 0..PATHS.len(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            update in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _guard = rt.enter();
            let api = Api::new();
            api.broker.create_topic("t", crate::config::TopicProperties::default()).unwrap();
            api.broker
                .create_subscription("t", "s", crate::config::QueueProperties::default(), true, vec![])
                .unwrap();
            let mut body = fixture_bytes(FIXTURES[fixture]);
            let i = at.index(body.len());
            body[i] = byte;
            body.truncate(cut.index(body.len() + 1).max(1));
            let status = put(&api, PATHS[path], &body, update);
            prop_assert!((200..500).contains(&status), "status {status}");
        }

        #[test]
        fn arbitrary_text_gets_a_client_error(text in ".{0,300}", path in 0..PATHS.len()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _guard = rt.enter();
            let api = Api::new();
            let status = put(&api, PATHS[path], text.as_bytes(), false);
            prop_assert!((400..500).contains(&status), "status {status}");
        }
    }

    fn fixture_bytes(name: &str) -> Vec<u8> {
        super::fixture(name).into_bytes()
    }
}

/// `Authorization: Bearer <Entra ID token>`, as the admin clients send it with a `TokenCredential`,
/// is checked as `$cbs` checks a `jwt` (form, expiry, audience); refusals are Service Bus's 401.
#[tokio::test]
async fn entra_bearer_tokens_are_checked_as_on_cbs() {
    use crate::auth::jwt::make_test_token;
    let api = Api::new();
    let queue = fixture("python-queue-create.xml");
    let hour = Duration::from_secs(3600);
    let bearer =
        |aud: &str, expires: SystemTime| format!("Bearer {}", make_test_token(aud, expires));
    // The Python SDK asks for `https://servicebus.azure.net//.default`: its token says this.
    let good = bearer("https://servicebus.azure.net/", SystemTime::now() + hour);
    let (status, body) = api
        .send(
            "PUT",
            "/by-entra",
            &queue,
            &[("authorization", good.clone())],
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(api.broker.entity_info("by-entra").is_some());
    // The scheme is case-insensitive; a token for the namespace itself is Service Bus's too.
    let namespace =
        bearer("https://localhost/", SystemTime::now() + hour).replace("Bearer", "bearer");
    let (status, body) = api
        .send("GET", "/by-entra", "", &[("authorization", namespace)])
        .await;
    assert_eq!(status, 200, "{body}");
    // Forwarding needs a token for the target too; a Bearer one will do, as the SDK sends it.
    let (status, body) = api
        .send(
            "PUT",
            "/src",
            &fixture("python-queue-create-forward.xml"),
            &[
                ("authorization", good.clone()),
                ("servicebussupplementaryauthorization", good.clone()),
            ],
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let refused = [
        (
            bearer("https://servicebus.azure.net/", SystemTime::now() - hour),
            "expired",
        ),
        (
            bearer("https://storage.azure.com/", SystemTime::now() + hour),
            "audience (aud) is https://storage.azure.com/",
        ),
        ("Bearer not-a-jwt".to_string(), "malformed JWT"),
        (
            format!(
                "Bearer {}",
                make_test_token("https://servicebus.azure.net/", SystemTime::now() + hour)
            )
            .replace(
                "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9",
                "eyJhbGciOiJub25lIn0",
            ),
            "unsigned",
        ),
    ];
    for (token, expected) in refused {
        let (status, body) = api
            .send("GET", "/by-entra", "", &[("authorization", token.clone())])
            .await;
        assert_eq!(status, 401, "{token}: {body}");
        assert!(
            body.contains("<Code>401</Code>")
                && body.contains("SubCode=40100")
                && body.contains(expected),
            "{token}: {body}"
        );
        assert!(!body.contains("malformed SAS token"), "{body}");
    }
}
