//! Prometheus metrics of the webhook. Labels stay low-cardinality: no pod names, no paths.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// patched, unchanged, denied, invalid
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// loaded, invalid_kept_last_good (a new file that does not parse; the last good is kept)
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok, error
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// body_too_large, body_timeout, connection_limit, peer_connection_limit
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// One of `DenyReason::label`
    pub reason: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<OutcomeLabels, Counter>,
    pub duration: Histogram,
    pub cert_reloads: Family<ReloadLabels, Counter>,
    pub cert_loaded: Gauge,
    pub registry_lookups: Family<ResultLabels, Counter>,
    pub registry_cache_hits: Counter,
    pub refused: Family<RefusedLabels, Counter>,
    pub denials: Family<DenialLabels, Counter>,
    /// Set at each scrape from the body budget.
    pub body_bytes_held: Gauge,
    pub body_peers: Gauge,
    /// Connections holding a slot of the HTTPS port now.
    pub connections: Gauge,
    /// Connections the server closed, by why (idle, given_to_another_peer).
    pub connections_closed: Family<RefusedLabels, Counter>,
}

impl Metrics {
    /// Counts one pod refused, by why.
    pub fn deny(&self, reason: crate::deny::DenyReason) {
        self.denials
            .get_or_create(&DenialLabels {
                reason: reason.label(),
            })
            .inc();
    }

    /// Counts one refusal of the HTTPS port.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("rotor_webhook");
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by outcome",
            requests.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request",
            duration.clone(),
        );
        let cert_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads by result",
            cert_reloads.clone(),
        );
        let cert_loaded = Gauge::default();
        registry.register(
            "certificate_loaded",
            "1 once a serving certificate is loaded",
            cert_loaded.clone(),
        );
        let registry_lookups = Family::<ResultLabels, Counter>::default();
        registry.register(
            "registry_lookups",
            "Image entrypoint lookups in registries by result",
            registry_lookups.clone(),
        );
        let registry_cache_hits = Counter::default();
        registry.register(
            "registry_cache_hits",
            "Image entrypoint lookups answered from the cache",
            registry_cache_hits.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "refused",
            "Requests and connections the HTTPS port refused before review, by reason",
            refused.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "denials",
            "Pods refused, by reason (bad_annotation, bad_reference, store_not_allowed, rotor_setting, reserved_name, no_entrypoint, expanded_reference, unsupported_os, review_timeout, internal, not_a_pod)",
            denials.clone(),
        );
        let body_bytes_held = Gauge::default();
        registry.register(
            "body_bytes_held",
            "Bytes of request bodies received and held now (of --max-inflight-body-bytes)",
            body_bytes_held.clone(),
        );
        let body_peers = Gauge::default();
        registry.register(
            "body_peers",
            "Peer addresses with a connection open to the HTTPS port",
            body_peers.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Connections holding a slot of the HTTPS port (of --max-connections)",
            connections.clone(),
        );
        let connections_closed = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections the HTTPS port closed: idle (no request within the header or idle timeout), given_to_another_peer (every slot was taken)",
            connections_closed.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            duration,
            cert_reloads,
            cert_loaded,
            registry_lookups,
            registry_cache_hits,
            refused,
            denials,
            body_bytes_held,
            body_peers,
            connections,
            connections_closed,
        })
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
