//! Container probes as the kubelet runs them: startup, liveness and readiness, each an
//! `httpGet` or a `tcpSocket` from the node to the pod's address.
//!
//! [`Probes`] keeps one container run's probe state (counts of consecutive results, when each
//! probe is due); the pod worker asks it what is due, runs [`check`] for each, and feeds the
//! results back. Liveness and readiness wait until the startup probe (if any) has passed; a
//! startup or liveness probe that fails `failureThreshold` times in a row asks for the
//! container to be killed (and restarted by its pod's `restartPolicy`).
//!
//! `exec` probes are refused at admission for Wasm pods (there is no process to run a command
//! in); `grpc` probes fail with a message saying they are not supported yet.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// What a probe result means for the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing changes.
    None,
    /// The startup probe passed: liveness and readiness begin.
    Started,
    /// Readiness changed to this.
    Ready(bool),
    /// Kill the container (startup or liveness failed `failureThreshold` times in a row).
    Kill,
}

struct State {
    kind: Kind,
    probe: Probe,
    successes: i32,
    failures: i32,
    due: Instant,
    in_flight: bool,
}

impl State {
    fn new(kind: Kind, probe: &Probe, started: Instant) -> Self {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        Self {
            kind,
            probe: probe.clone(),
            successes: 0,
            failures: 0,
            due: started + delay,
            in_flight: false,
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64)
    }

    fn success_threshold(&self) -> i32 {
        self.probe.success_threshold.unwrap_or(1).max(1)
    }

    fn failure_threshold(&self) -> i32 {
        self.probe.failure_threshold.unwrap_or(3).max(1)
    }
}

/// The probes of one run of one container.
pub(super) struct Probes {
    states: Vec<State>,
    /// Whether the startup probe has passed (true without one).
    pub started: bool,
    /// Whether the readiness probe says ready (true without one).
    pub ready: bool,
}

impl Probes {
    /// The probes of `container`, for a run that began at `started`.
    pub fn new(container: &Container, started: Instant) -> Self {
        let mut states = Vec::new();
        for (kind, probe) in [
            (Kind::Startup, &container.startup_probe),
            (Kind::Liveness, &container.liveness_probe),
            (Kind::Readiness, &container.readiness_probe),
        ] {
            if let Some(probe) = probe {
                states.push(State::new(kind, probe, started));
            }
        }
        Self {
            started: container.startup_probe.is_none(),
            ready: container.readiness_probe.is_none(),
            states,
        }
    }

    fn applies(&self, state: &State) -> bool {
        match state.kind {
            Kind::Startup => !self.started,
            Kind::Liveness | Kind::Readiness => self.started,
        }
    }

    /// The probes due at `now`, marked in flight; the caller runs each and reports with
    /// [`Probes::record`].
    pub fn due(&mut self, now: Instant) -> Vec<(Kind, Probe)> {
        let mut due = Vec::new();
        for i in 0..self.states.len() {
            let state = &self.states[i];
            if !state.in_flight && state.due <= now && self.applies(state) {
                let state = &mut self.states[i];
                state.in_flight = true;
                due.push((state.kind, state.probe.clone()));
            }
        }
        due
    }

    /// When the next probe is due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.states
            .iter()
            .filter(|s| !s.in_flight && self.applies(s))
            .map(|s| s.due)
            .min()
    }

    /// Takes one result of the `kind` probe; says what follows from it.
    pub fn record(&mut self, kind: Kind, ok: bool, now: Instant) -> Verdict {
        let Some(state) = self.states.iter_mut().find(|s| s.kind == kind) else {
            return Verdict::None;
        };
        state.in_flight = false;
        state.due = now + state.period();
        if ok {
            state.successes += 1;
            state.failures = 0;
        } else {
            state.failures += 1;
            state.successes = 0;
        }
        let (passed, failed) = (
            state.successes >= state.success_threshold(),
            state.failures >= state.failure_threshold(),
        );
        match kind {
            Kind::Startup if ok => {
                self.started = true;
                Verdict::Started
            }
            Kind::Startup | Kind::Liveness if failed => Verdict::Kill,
            Kind::Readiness if passed && !self.ready => {
                self.ready = true;
                Verdict::Ready(true)
            }
            Kind::Readiness if failed && self.ready => {
                self.ready = false;
                Verdict::Ready(false)
            }
            _ => Verdict::None,
        }
    }
}

/// Why a probe failed, in the kubelet's words (they reach the pod's events).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0} probes are not supported yet")]
    Unsupported(&'static str),
    #[error("exec probes cannot run in a Wasm container")]
    Exec,
    #[error("the probe has no handler")]
    NoHandler,
    #[error("the container has no port named {0:?}")]
    NoSuchPort(String),
    #[error("{0} is not a port")]
    NotAPort(i32),
    #[error("dial tcp {target}: {source}")]
    Dial {
        target: String,
        source: std::io::Error,
    },
    #[error("Get {url:?}: {source}")]
    Http { url: String, source: std::io::Error },
    #[error("Get {url:?}: not an HTTP response: {line:?}")]
    NotHttp { url: String, line: String },
    #[error("HTTP probe failed with statuscode: {0}")]
    Status(u16),
    #[error("timed out after {0}s")]
    Timeout(u64),
}

/// Runs one probe against the pod at `pod_ip`; `Err` says why it failed, as the kubelet's
/// events do.
pub(super) async fn check(
    probe: &Probe,
    container: &Container,
    pod_ip: Ipv4Addr,
) -> Result<(), Failure> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let attempt = async {
        if let Some(http) = &probe.http_get {
            let host = http.host.clone().filter(|h| !h.is_empty());
            let host = host.unwrap_or_else(|| pod_ip.to_string());
            let port = port(&http.port, container)?;
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
            {
                return Err(Failure::Unsupported("HTTPS"));
            }
            let path = http
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or("/".to_string());
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            http_get(&host, port, &path, &headers).await
        } else if let Some(tcp) = &probe.tcp_socket {
            let host = tcp.host.clone().filter(|h| !h.is_empty());
            let host = host.unwrap_or_else(|| pod_ip.to_string());
            let port = port(&tcp.port, container)?;
            TcpStream::connect((host.as_str(), port))
                .await
                .map(drop)
                .map_err(|source| Failure::Dial {
                    target: format!("{host}:{port}"),
                    source,
                })
        } else if probe.grpc.is_some() {
            Err(Failure::Unsupported("gRPC"))
        } else if probe.exec.is_some() {
            Err(Failure::Exec)
        } else {
            Err(Failure::NoHandler)
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout(timeout.as_secs())),
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(port: &IntOrString, container: &Container) -> Result<u16, Failure> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| Failure::NoSuchPort(name.clone()))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or(Failure::NotAPort(number))
}

/// `GET path` over HTTP/1.1; success is a status from 200 to 399, as for the kubelet.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), Failure> {
    let url = format!("http://{host}:{port}{path}");
    let failed = |source| Failure::Http {
        url: url.clone(),
        source,
    };
    let mut stream = TcpStream::connect((host, port)).await.map_err(|source| {
        failed(std::io::Error::other(Failure::Dial {
            target: format!("{host}:{port}"),
            source,
        }))
    })?;
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
    {
        // As the kubelet names itself: functions tell probes from requests by it.
        request.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
    {
        request.push_str("Accept: */*\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(failed)?;
    // The status line is all that counts; read until it is complete.
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(failed)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Failure::NotHttp {
            url: url.clone(),
            line: line.to_string(),
        })?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(Failure::Status(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(json: serde_json::Value) -> Probe {
        serde_json::from_value(json).unwrap()
    }

    fn container(json: serde_json::Value) -> Container {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn liveness_and_readiness_wait_for_startup() {
        let c = container(serde_json::json!({
            "name": "c",
            "startupProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": 80}, "initialDelaySeconds": 5},
            "readinessProbe": {"tcpSocket": {"port": 80}},
        }));
        let t0 = Instant::now();
        let mut p = Probes::new(&c, t0);
        assert!(!p.started && !p.ready);
        let due = p.due(t0);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, Kind::Startup);
        assert_eq!(p.record(Kind::Startup, false, t0), Verdict::None);
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(p.record(Kind::Startup, true, t0), Verdict::Started);
        // Readiness at once (no delay); liveness after its initial delay.
        let kinds: Vec<Kind> = p.due(t0).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, vec![Kind::Readiness]);
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(p.record(Kind::Readiness, true, t0), Verdict::Ready(true));
        assert!(p.ready);
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let c = container(serde_json::json!({
            "name": "c",
            "livenessProbe": {"httpGet": {"port": 80}, "failureThreshold": 2},
            "readinessProbe": {"httpGet": {"port": 80}, "successThreshold": 2, "failureThreshold": 1},
        }));
        let t = Instant::now();
        let mut p = Probes::new(&c, t);
        assert!(p.started && !p.ready);
        assert_eq!(p.record(Kind::Liveness, false, t), Verdict::None);
        assert_eq!(p.record(Kind::Liveness, true, t), Verdict::None);
        assert_eq!(p.record(Kind::Liveness, false, t), Verdict::None);
        assert_eq!(p.record(Kind::Liveness, false, t), Verdict::Kill);
        assert_eq!(p.record(Kind::Readiness, true, t), Verdict::None);
        assert_eq!(p.record(Kind::Readiness, true, t), Verdict::Ready(true));
        assert_eq!(p.record(Kind::Readiness, false, t), Verdict::Ready(false));
        assert_eq!(p.record(Kind::Readiness, false, t), Verdict::None);
    }

    #[test]
    fn named_ports_come_from_the_container() {
        let c = container(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}],
        }));
        assert_eq!(port(&IntOrString::String("http".into()), &c).unwrap(), 8080);
        assert_eq!(port(&IntOrString::String("81".into()), &c).unwrap(), 81);
        assert!(matches!(
            port(&IntOrString::String("web".into()), &c),
            Err(Failure::NoSuchPort(name)) if name == "web"
        ));
        assert!(matches!(
            port(&IntOrString::Int(0), &c),
            Err(Failure::NotAPort(0))
        ));
    }

    #[tokio::test]
    async fn http_and_tcp_checks_against_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if request.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let c = container(serde_json::json!({"name": "c"}));
        let ip = Ipv4Addr::LOCALHOST;
        let ok = probe(serde_json::json!({"httpGet": {"path": "/ok", "port": port}}));
        check(&ok, &c, ip).await.unwrap();
        let bad = probe(serde_json::json!({"httpGet": {"path": "/bad", "port": port}}));
        assert_eq!(
            check(&bad, &c, ip).await.unwrap_err().to_string(),
            "HTTP probe failed with statuscode: 503"
        );
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        check(&tcp, &c, ip).await.unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = probe(serde_json::json!({"tcpSocket": {"port": closed}}));
        assert!(
            check(&refused, &c, ip)
                .await
                .unwrap_err()
                .to_string()
                .contains("dial tcp")
        );
    }
}
