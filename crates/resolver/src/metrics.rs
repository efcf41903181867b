//! The service's Prometheus metrics, served at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of the exposition (OpenMetrics text, which Prometheus reads).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of the service. Label values come from a fixed set (route templates, error
/// codes), never from request data, so the number of series stays bounded.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) registrations: Gauge,
    pub(crate) meshes: Gauge,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) registered: Counter,
    pub(crate) replaced: Counter,
    pub(crate) expirations: Counter,
    pub(crate) rejections: Family<RejectionLabels, Counter>,
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The route template (`/v1/meshes/{mesh}/peers`), or `unmatched`.
    pub(crate) route: String,
    pub(crate) method: String,
    pub(crate) status: u16,
}

/// Labels of the rejection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectionLabels {
    /// The error code of the answer (`mesh_full`, `rate_limited`, ...).
    pub(crate) reason: String,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("peerchannel_resolver");
        let registrations = Gauge::default();
        registry.register(
            "registrations",
            "Registrations held now",
            registrations.clone(),
        );
        let meshes = Gauge::default();
        registry.register(
            "meshes",
            "Meshes with at least one registration",
            meshes.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let registered = Counter::default();
        registry.register("registered", "Registrations accepted", registered.clone());
        let replaced = Counter::default();
        registry.register(
            "replaced",
            "Registrations that replaced an earlier one of the same peer in the same mesh",
            replaced.clone(),
        );
        let expirations = Counter::default();
        registry.register(
            "expirations",
            "Registrations dropped because they were not refreshed",
            expirations.clone(),
        );
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "rejections",
            "Requests refused, by error code",
            rejections.clone(),
        );
        Self {
            registry,
            registrations,
            meshes,
            requests,
            registered,
            replaced,
            expirations,
            rejections,
        }
    }

    /// Sets the gauges from the registry's counts.
    pub(crate) fn set_counts(&self, registrations: usize, meshes: usize) {
        self.registrations
            .set(i64::try_from(registrations).unwrap_or(i64::MAX));
        self.meshes.set(i64::try_from(meshes).unwrap_or(i64::MAX));
    }

    /// The text exposition.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let metrics = Metrics::new();
        metrics.set_counts(3, 1);
        metrics
            .requests
            .get_or_create(&RequestLabels {
                route: "/healthz".into(),
                method: "GET".into(),
                status: 200,
            })
            .inc();
        metrics
            .rejections
            .get_or_create(&RejectionLabels {
                reason: "mesh_full".into(),
            })
            .inc();
        let text = metrics.encode().unwrap();
        for line in [
            "peerchannel_resolver_registrations 3",
            "peerchannel_resolver_meshes 1",
            r#"peerchannel_resolver_requests_total{route="/healthz",method="GET",status="200"} 1"#,
            r#"peerchannel_resolver_rejections_total{reason="mesh_full"} 1"#,
            "peerchannel_resolver_expirations_total 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
