//! The service's Prometheus metrics (`GET /metrics`), through the `prometheus-client` crate:
//! requests by endpoint and status, errors by kind, retrieval latency, reloads, and the model
//! being served with its index size.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::engine::Retriever;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    version: String,
    index: &'static str,
}

/// Every metric, and the registry that encodes them.
pub(crate) struct ServeMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    latency: Histogram,
    reloads: Family<OutcomeLabels, Counter>,
    model: Family<ModelLabels, Gauge>,
    pins: Gauge,
    dim: Gauge,
}

impl ServeMetrics {
    pub(crate) fn new() -> ServeMetrics {
        let mut registry = Registry::with_prefix("convcg");
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<KindLabels, Counter>::default();
        // 100 us to about 13 s, doubling.
        let latency = Histogram::new(exponential_buckets(1e-4, 2.0, 18));
        let reloads = Family::<OutcomeLabels, Counter>::default();
        let model = Family::<ModelLabels, Gauge>::default();
        let pins = Gauge::default();
        let dim = Gauge::default();
        registry.register(
            "requests",
            "Requests answered, by endpoint and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_errors",
            "Requests refused or failed, by kind",
            errors.clone(),
        );
        registry.register(
            "retrieve_latency_seconds",
            "Time to answer POST /v1/retrieve, from the request's body to the response",
            latency.clone(),
        );
        registry.register("reloads", "Model reloads, by outcome", reloads.clone());
        registry.register(
            "model_info",
            "The model being served (1), by version and index kind",
            model.clone(),
        );
        registry.register("index_pins", "Pins in the index", pins.clone());
        registry.register("index_dim", "Width of the pin embeddings", dim.clone());
        ServeMetrics {
            registry,
            requests,
            errors,
            latency,
            reloads,
            model,
            pins,
            dim,
        }
    }

    pub(crate) fn request(&self, endpoint: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
        if endpoint == "retrieve" {
            self.latency.observe(took.as_secs_f64());
        }
    }

    pub(crate) fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabels { kind }).inc();
    }

    pub(crate) fn reload(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn set_model(&self, r: &Retriever) {
        self.model.clear();
        self.model
            .get_or_create(&ModelLabels {
                version: r.version().to_owned(),
                index: r.index().name(),
            })
            .set(1);
        let (pins, dim) = r.pin_embeddings().dim();
        self.pins.set(i64::try_from(pins).unwrap_or(i64::MAX));
        self.dim.set(i64::try_from(dim).unwrap_or(i64::MAX));
    }

    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
