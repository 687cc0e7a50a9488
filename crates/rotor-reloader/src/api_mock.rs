//! A scripted Kubernetes API for unit tests of the reloader's shell: each expected request
//! (method and path) gets its answer (status and JSON body) in order, and every request's
//! method, path and body are recorded for the test to read. kube's own `Client` talks to it
//! through tower-test's mock service, so the code under test is the code that runs.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::Value;

/// One request as the code sent it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub body: Value,
}

/// One scripted exchange: the request expected (method, path prefix) and the answer.
pub struct Exchange {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub answer: Value,
}

pub fn exchange(method: &'static str, path: &str, status: u16, answer: Value) -> Exchange {
    Exchange {
        method,
        path: path.to_string(),
        status,
        answer,
    }
}

/// A Kubernetes `Status` body for an error answer.
pub fn status(code: u16, reason: &str) -> Value {
    serde_json::json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code })
}

/// The API side of a scripted client.
pub struct Script {
    sent: Arc<Mutex<Vec<Sent>>>,
    task: tokio::task::JoinHandle<usize>,
}

impl Script {
    /// Drops `client`, checks every request matched the script and every exchange was used,
    /// and returns the requests received.
    pub async fn done(self, client: kube::Client) -> Vec<Sent> {
        drop(client);
        let answered = tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
            .await
            .expect("the scripted API finishes once the client is dropped")
            .expect("every request matched the script");
        let sent = self.sent.lock().unwrap().clone();
        assert_eq!(answered, sent.len());
        sent
    }
}

/// A client whose API answers `script` in order (and fails the test on any other request or
/// on an exchange left unused).
pub fn scripted(script: Vec<Exchange>) -> (kube::Client, Script) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    let expected_count = script.len();
    let task = tokio::spawn(async move {
        let mut answered = 0;
        for expected in script {
            let Some((request, respond)) = handle.next_request().await else {
                panic!("{answered} of {expected_count} scripted exchanges used");
            };
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let bytes = http_body_util::BodyExt::collect(request.into_body())
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            record.lock().unwrap().push(Sent {
                method: method.clone(),
                uri: uri.clone(),
                body,
            });
            assert_eq!(method, expected.method, "{uri}");
            assert!(
                uri.starts_with(&expected.path),
                "expected {} {}, got {method} {uri}",
                expected.method,
                expected.path
            );
            let answer = Response::builder()
                .status(expected.status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&expected.answer).unwrap()))
                .unwrap();
            respond.send_response(answer);
            answered += 1;
        }
        if let Some((request, _)) = handle.next_request().await {
            panic!(
                "an unscripted request: {} {}",
                request.method(),
                request.uri()
            );
        }
        answered
    });
    (kube::Client::new(service, "default"), Script { sent, task })
}
