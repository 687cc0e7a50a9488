//! The webhook's HTTP behaviour in process (no sockets): body limits, bad bodies, readiness.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::*;
use crate::registry::{RegistryClient, RegistryConfig};

const LIMIT: usize = 4096;

fn state(loaded: bool) -> AppState {
    rotor_core::install_crypto_provider();
    let pair = loaded.then(|| {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        crate::tls::parse_pair(
            key.cert.pem().as_bytes(),
            key.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap()
    });
    AppState {
        admission: Arc::new(AdmissionContext {
            config: Arc::new(crate::config::InjectConfig {
                default_addr: Some("https://vault:8200".into()),
                ..Default::default()
            }),
            review_timeout: Duration::from_secs(4),
            planners: crate::admission::default_planners(),
            metrics: Metrics::new(),
            registry: RegistryClient::new(RegistryConfig::default()).unwrap(),
            kube: None,
            configmap_references: false,
        }),
        resolver: Arc::new(CertResolver::new(pair)),
        budget: crate::body_budget::BodyBudget::new(sizes()),
    }
}

fn sizes() -> crate::body_budget::BudgetSizes {
    crate::body_budget::BudgetSizes {
        total: 4 * LIMIT,
        per_peer: 2 * LIMIT,
        per_connection: LIMIT,
    }
}

fn limits() -> BodyLimits {
    BodyLimits::new(LIMIT, Duration::from_secs(5), sizes())
}

async fn call(router: Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn mutate(body: impl Into<Body>, declared: Option<usize>) -> Request<Body> {
    let mut request = Request::post("/mutate").header("content-type", "application/json");
    if let Some(length) = declared {
        request = request.header("content-length", length);
    }
    request.body(body.into()).unwrap()
}

#[tokio::test]
async fn an_oversized_body_is_refused_from_its_declared_length_or_while_it_is_read() {
    let router = webhook_router(state(true), limits());
    // Declared over the limit: 413 before any body byte is read (the body here is empty).
    let (status, text) = call(router.clone(), mutate(Body::empty(), Some(LIMIT + 1))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("--max-body-bytes"), "{text}");
    // No length declared (a stream): refused while reading.
    let chunks = futures::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; LIMIT / 4]))),
    );
    let (status, _) = call(router, mutate(Body::from_stream(chunks), None)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn bad_bodies_get_an_invalid_answer_never_a_5xx() {
    let router = webhook_router(state(true), limits());
    for bad in [
        "",
        "{",
        "[]",
        "{\"kind\":\"AdmissionReview\"}",
        "\u{0}\u{1}",
    ] {
        let (status, text) = call(router.clone(), mutate(bad.to_string(), None)).await;
        assert_eq!(status, StatusCode::OK, "{bad:?}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["response"]["allowed"], false, "{bad:?}: {text}");
    }
}

#[tokio::test]
async fn ready_only_with_a_certificate_and_metrics_count_answers() {
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let (status, _) = call(admin_router(state(false)), get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let loaded = state(true);
    let (status, _) = call(admin_router(loaded.clone()), get("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(admin_router(loaded.clone()), get("/livez")).await;
    assert_eq!(status, StatusCode::OK);
    call(webhook_router(loaded.clone(), limits()), mutate("{", None)).await;
    let (status, metrics) = call(admin_router(loaded), get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("outcome=\"invalid\"} 1"),
        "one invalid answer counted:\n{metrics}"
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_refused_at_the_body_timeout() {
    let state = state(true);
    let metrics = state.admission.metrics.clone();
    let router = webhook_router(
        state,
        BodyLimits::new(LIMIT, Duration::from_millis(300), sizes()),
    );
    let first = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{"))]);
    let stalled = first.chain(futures::stream::pending());
    let started = std::time::Instant::now();
    let (status, text) = call(router, mutate(Body::from_stream(stalled), Some(100))).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{text}");
    assert!(text.contains("--body-timeout-ms"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        metrics.encode().contains("reason=\"body_timeout\"} 1"),
        "{}",
        metrics.encode()
    );
}

#[tokio::test]
async fn a_declared_length_holds_no_budget_only_the_bytes_that_arrived_do() {
    let limits = limits();
    let budget = limits.budget.clone();
    let router = webhook_router(state(true), limits);
    let first = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{"))]);
    let stalled = first.chain(futures::stream::pending());
    let request = mutate(Body::from_stream(stalled), Some(LIMIT));
    let call = tokio::spawn(call(router, request));
    // Evidence that the body is being read: the byte that arrived is held.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while budget.available() == 4 * LIMIT {
        assert!(
            std::time::Instant::now() < deadline,
            "the body was never read"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        budget.available(),
        4 * LIMIT - 1,
        "one byte held, not the {LIMIT} declared"
    );
    call.abort();
}

#[test]
fn body_budgets_must_hold_one_largest_body_and_nest() {
    let sizes = |total, per_peer, per_connection| crate::body_budget::BudgetSizes {
        total,
        per_peer,
        per_connection,
    };
    assert!(check_budget(sizes(32, 8, 4), 3).is_ok());
    let small = check_budget(sizes(32, 8, 2), 3).unwrap_err().to_string();
    assert!(
        small.contains(
            "--max-inflight-body-bytes-per-connection=2 must be at least --max-body-bytes=3"
        ),
        "{small}"
    );
    let inverted = check_budget(sizes(32, 40, 4), 3).unwrap_err().to_string();
    assert!(inverted.contains("must nest"), "{inverted}");
}

#[tokio::test]
async fn a_refused_pod_is_counted_by_its_reason() {
    let state = state(true);
    let metrics = state.admission.metrics.clone();
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u1", "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "n", "operation": "CREATE", "userInfo": {},
            "object": { "metadata": { "name": "w" }, "spec": { "os": { "name": "windows" },
                "containers": [{ "name": "c", "image": "i", "command": ["/c"],
                    "env": [{ "name": "A", "value": "vault:secret/data/a#k" }] }] } },
        }
    });
    let (status, text) = call(
        webhook_router(state, limits()),
        mutate(review.to_string(), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("\"allowed\":false"), "{text}");
    assert!(
        metrics
            .encode()
            .contains("rotor_webhook_denials_total{reason=\"unsupported_os\"} 1"),
        "{}",
        metrics.encode()
    );
}
