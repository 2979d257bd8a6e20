//! The API server's own metrics, at `GET /metrics` in Prometheus' text format, with the names
//! kube-apiserver uses, so that dashboards and alerts made for it carry over:
//! - `apiserver_request_total{verb, group, version, resource, subresource, scope, component,
//!   code}`: every request, as it is answered;
//! - `apiserver_request_duration_seconds{verb, group, version, resource, subresource, scope,
//!   component}`: the time to the response's head, watches excepted (they last);
//! - `apiserver_registered_watchers{group, version, kind}`: watches open now.
//!
//! A middleware sees every request; it names it as RBAC does (the verb in kube-apiserver's
//! upper-case spelling: `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY`, `DELETE`,
//! `DELETECOLLECTION`). Written with the `prometheus-client` crate.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::request::{self, Parsed};

/// What a request is, as the series label it.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    /// `resource` (one object), `namespace`, `cluster`, or empty for paths that name none.
    scope: String,
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnsweredLabels {
    #[prometheus(flatten)]
    request: RequestLabels,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatcherLabels {
    group: String,
    version: String,
    kind: String,
}

/// The series, and the registry that writes them.
pub struct ServerMetrics {
    registry: Registry,
    requests: Family<AnsweredLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    watchers: Family<WatcherLabels, Gauge>,
}

/// kube-apiserver's buckets for request durations, in seconds.
const DURATION_BUCKETS: [f64; 21] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0,
];

impl Default for ServerMetrics {
    fn default() -> Self {
        let requests = Family::<AnsweredLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
        );
        let watchers = Family::<WatcherLabels, Gauge>::default();
        let mut registry = Registry::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component",
            durations.clone(),
        );
        registry.register(
            "apiserver_registered_watchers",
            "Number of currently registered watchers for a given resource",
            watchers.clone(),
        );
        crate::telemetry::global().register(&mut registry);
        Self {
            registry,
            requests,
            durations,
            watchers,
        }
    }
}

impl ServerMetrics {
    /// Every series in Prometheus' text format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// How a request is labelled, from its method and path alone.
fn classify(method: &Method, uri: &axum::http::Uri) -> (RequestLabels, Option<WatcherLabels>) {
    let path = uri.path();
    let mut labels = RequestLabels {
        verb: method.as_str().to_string(),
        component: "apiserver".to_string(),
        ..Default::default()
    };
    let (core, rest) = match (path.strip_prefix("/api/"), path.strip_prefix("/apis/")) {
        (Some(rest), _) => (true, format!("/{rest}")),
        (_, Some(rest)) => (false, format!("/{rest}")),
        _ => return (labels, None),
    };
    let Ok(Parsed::Target(target)) = request::parse(core, &rest) else {
        return (labels, None);
    };
    let query = request::query(uri.query());
    let verb = request::verb(method, &target, &query);
    labels.verb = match verb {
        "create" => "POST",
        "update" => "PUT",
        "patch" => "PATCH",
        "delete" => "DELETE",
        other => other,
    }
    .to_ascii_uppercase();
    labels.group = target.resource.group.to_string();
    labels.version = target.resource.version.to_string();
    labels.resource = target.resource.plural.to_string();
    labels.subresource = target.subresource.clone().unwrap_or_default();
    labels.scope = if target.name.is_some() {
        "resource"
    } else if target.namespace.is_some() {
        "namespace"
    } else {
        "cluster"
    }
    .to_string();
    let watcher = (verb == "watch").then(|| WatcherLabels {
        group: labels.group.clone(),
        version: labels.version.clone(),
        kind: target.resource.kind.to_string(),
    });
    (labels, watcher)
}

/// The middleware: counts and times each request; keeps a watch in the watchers' gauge for
/// as long as its body streams.
pub async fn observe(
    State(metrics): State<Arc<ServerMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut labels, watcher) = classify(request.method(), request.uri());
    if labels.verb == "PATCH"
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"))
    {
        labels.verb = "APPLY".to_string();
    }
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&AnsweredLabels {
            request: labels.clone(),
            code: response.status().as_u16().to_string(),
        })
        .inc();
    let Some(watcher) = watcher else {
        metrics
            .durations
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        return response;
    };
    if !response.status().is_success() {
        return response;
    }
    // One more watcher until the stream ends (the client goes, or the server ends it).
    struct Registered(Gauge);
    impl Drop for Registered {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    let gauge = metrics.watchers.get_or_create(&watcher).clone();
    gauge.inc();
    let registered = Registered(gauge);
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _ = &registered;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// `GET /metrics`.
pub async fn serve(State(metrics): State<Arc<ServerMetrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: Method, uri: &str) -> RequestLabels {
        classify(&method, &uri.parse().unwrap()).0
    }

    #[test]
    fn requests_are_named_as_kube_apiserver_names_them() {
        let list = labels(Method::GET, "/api/v1/namespaces/default/pods?limit=500");
        assert_eq!(
            (
                list.verb.as_str(),
                list.resource.as_str(),
                list.scope.as_str()
            ),
            ("LIST", "pods", "namespace")
        );
        let watch = classify(
            &Method::GET,
            &"/apis/apps/v1/deployments?watch=1".parse().unwrap(),
        );
        assert_eq!(watch.0.verb, "WATCH");
        assert_eq!(watch.0.group, "apps");
        assert_eq!(watch.1.unwrap().kind, "Deployment");
        let status = labels(Method::PUT, "/api/v1/namespaces/a/pods/p/status");
        assert_eq!(
            (
                status.verb.as_str(),
                status.subresource.as_str(),
                status.scope.as_str()
            ),
            ("PUT", "status", "resource")
        );
        let create = labels(Method::POST, "/api/v1/nodes");
        assert_eq!(
            (create.verb.as_str(), create.scope.as_str()),
            ("POST", "cluster")
        );
        let other = labels(Method::GET, "/healthz");
        assert_eq!((other.verb.as_str(), other.resource.as_str()), ("GET", ""));
    }

    #[test]
    fn the_text_has_kube_apiservers_names() {
        let metrics = ServerMetrics::default();
        let (request, _) = classify(&Method::GET, &"/api/v1/pods".parse().unwrap());
        metrics
            .requests
            .get_or_create(&AnsweredLabels {
                request: request.clone(),
                code: "200".to_string(),
            })
            .inc();
        metrics.durations.get_or_create(&request).observe(0.01);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE apiserver_request_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"apiserver_request_total{verb="LIST",group="",version="v1",resource="pods",subresource="",scope="cluster",component="apiserver",code="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"apiserver_request_duration_seconds_bucket{le="0.025",verb="LIST""#)
                || text.contains(r#"apiserver_request_duration_seconds_bucket{verb="LIST""#),
            "{text}"
        );
    }
}
