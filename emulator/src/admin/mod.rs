//! The Service Bus administration API (ATOM/XML over HTTP) on the HTTP listener.

use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};

use crate::auth::SasValidator;
use crate::broker::Broker;
use crate::http::{Body, response};

/// The administration API's state: the broker it manages and the keys requests are signed with.
pub struct Admin {
    #[allow(dead_code)]
    broker: Broker,
    #[allow(dead_code)]
    validator: SasValidator,
}

impl Admin {
    pub fn new(broker: Broker, validator: SasValidator) -> Admin {
        Admin { broker, validator }
    }

    pub async fn handle(&self, parts: &Parts, _body: Bytes) -> Response<Body> {
        let path = parts.uri.path();
        response(
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from(
                serde_json::json!({ "error": format!("no route for {path}; try GET /health, /queues/{{name}}, /topics/{{name}} or /topics/{{name}}/subscriptions/{{name}}") })
                    .to_string(),
            ),
        )
    }
}
