//! The audit log, as kube-apiserver's log backend writes it: one `audit.k8s.io/v1` Event per
//! line, for the stages `RequestReceived` and `ResponseComplete`, at the level the policy
//! (`--audit-policy-file`, an `audit.k8s.io/v1` Policy) gives the request: `None`, `Metadata`
//! (who, what, when, the answer's code, the authorization decision and reason), `Request` (and
//! the request's body) or `RequestResponse` (and the response's). The first matching rule
//! decides; without a policy file nothing is logged, as upstream.
//!
//! Secrets' data never reaches the log: requests about `secrets` and ServiceAccount tokens
//! are logged at `Metadata` at most, whatever the policy says.
//!
//! Lines go through a channel to one writer task (a request waits only when the channel is
//! full), to `--audit-log-path` (`-` for stdout), rotated at `--audit-log-maxsize` megabytes,
//! keeping `--audit-log-maxbackup` old files no older than `--audit-log-maxage` days.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::auth::{ImpersonatedBy, User};

/// How many lines may wait for the writer before requests wait for it.
const QUEUE: usize = 8192;
/// How long the writer waits for more lines before flushing what it has.
const FLUSH_PAUSE: Duration = Duration::from_millis(5);
/// The largest body recorded at `Request` and `RequestResponse` (larger ones are left out).
const MAX_RECORDED_BODY: usize = 3 * 1024 * 1024;

/// How much of a request is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GroupResources {
    group: String,
    resources: Vec<String>,
    resource_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

/// An `audit.k8s.io/v1` Policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the audit policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the audit policy {path} is not an audit.k8s.io/v1 Policy: {reason}")]
    Invalid { path: String, reason: String },
}

impl Policy {
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| PolicyError::Invalid {
            path: shown,
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let kind = value["kind"].as_str().unwrap_or_default();
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        if kind != "Policy" || !api_version.starts_with("audit.k8s.io/") {
            return Err(format!(
                "kind {kind:?} in {api_version:?}, expected Policy in audit.k8s.io/v1"
            ));
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// The level and omitted stages of a request.
    fn decide(&self, request: &Described, user: &User) -> (Level, Vec<String>) {
        for rule in &self.rules {
            if rule.matches(request, user) {
                let mut omit = self.omit_stages.clone();
                omit.extend(rule.omit_stages.iter().cloned());
                return (rule.level, omit);
            }
        }
        (Level::None, Vec::new())
    }
}

impl Rule {
    fn matches(&self, request: &Described, user: &User) -> bool {
        if !self.users.is_empty() && !self.users.contains(&user.name) {
            return false;
        }
        if !self.user_groups.is_empty() && !self.user_groups.iter().any(|g| user.in_group(g)) {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&request.verb) {
            return false;
        }
        match &request.object {
            Some(object) => {
                if !self.non_resource_urls.is_empty() && self.resources.is_empty() {
                    return false;
                }
                if !self.namespaces.is_empty()
                    && !self
                        .namespaces
                        .contains(&object.namespace.clone().unwrap_or_default())
                {
                    return false;
                }
                self.resources.is_empty()
                    || self.resources.iter().any(|gr| {
                        gr.group == object.group
                            && (gr.resources.is_empty()
                                || gr.resources.iter().any(|r| resource_matches(r, object)))
                            && (gr.resource_names.is_empty()
                                || object
                                    .name
                                    .as_ref()
                                    .is_some_and(|n| gr.resource_names.contains(n)))
                    })
            }
            None => {
                if !self.resources.is_empty() || !self.namespaces.is_empty() {
                    return false;
                }
                self.non_resource_urls.is_empty()
                    || self.non_resource_urls.iter().any(|u| {
                        u == &request.path
                            || u.strip_suffix('*')
                                .is_some_and(|prefix| request.path.starts_with(prefix))
                    })
            }
        }
    }
}

/// `pods`, `pods/log`, `*/status` and `pods/*`, as upstream's policy matching.
fn resource_matches(rule: &str, object: &ObjectRef) -> bool {
    let full = match &object.subresource {
        Some(sub) => format!("{}/{sub}", object.resource),
        None => object.resource.clone(),
    };
    rule == "*"
        || rule == full
        || rule
            .strip_prefix("*/")
            .is_some_and(|sub| object.subresource.as_deref() == Some(sub))
        || rule
            .strip_suffix("/*")
            .is_some_and(|res| res == object.resource && object.subresource.is_some())
}

#[derive(Debug, Clone)]
struct ObjectRef {
    group: String,
    version: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// What a request is about, read from its method and path.
struct Described {
    verb: String,
    path: String,
    object: Option<ObjectRef>,
}

fn describe(method: &Method, uri: &axum::http::Uri) -> Described {
    let path = uri.path().to_string();
    let watching = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => ("", "", &[][..]),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let object = match rest {
        [] => None,
        [resource, more @ ..] => Some(ObjectRef {
            group: group.to_string(),
            version: version.to_string(),
            resource: resource.to_string(),
            namespace,
            name: more.first().map(|n| n.to_string()),
            subresource: (more.len() > 1).then(|| more[1..].join("/")),
        }),
    };
    let named = object.as_ref().is_some_and(|o| o.name.is_some());
    let verb = match object {
        None => method.as_str().to_ascii_lowercase(),
        Some(_) => match super::request::resource_verb(method, named, watching) {
            "unknown" => method.as_str().to_ascii_lowercase(),
            verb => verb.to_string(),
        },
    };
    Described { verb, path, object }
}

/// Where the log goes and how it is kept.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A file, or `-` for stdout.
    pub path: PathBuf,
    /// Rotate past this many megabytes (0: never).
    pub max_size_mb: u64,
    /// Old files kept (0: all).
    pub max_backups: usize,
    /// Old files older than this many days are removed (0: kept).
    pub max_age_days: u64,
}

/// The audit backend: the policy and the writer's queue.
pub struct Auditor {
    policy: Policy,
    lines: mpsc::Sender<String>,
}

tokio::task_local! {
    /// The authorization decision of the request being served, for its audit annotations.
    static DECISION: std::cell::RefCell<Option<(bool, String)>>;
}

/// Records the authorization decision of the request being served (a no-op outside the
/// audit middleware).
pub fn record_decision(allowed: bool, reason: &str) {
    let _ = DECISION.try_with(|slot| {
        // The first decision is the request's; impersonation checks come before it and
        // are kept only if nothing else decides.
        let mut slot = slot.borrow_mut();
        if slot.as_ref().is_none_or(|(was_allowed, _)| *was_allowed) {
            *slot = Some((allowed, reason.to_string()));
        }
    });
}

impl Auditor {
    /// Starts the writer. Fails if the log file cannot be opened.
    pub fn start(policy: Policy, config: LogConfig) -> std::io::Result<Arc<Self>> {
        let (lines, rx) = mpsc::channel(QUEUE);
        let writer = Writer::open(config)?;
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Arc::new(Self { policy, lines }))
    }
}

/// The middleware: logs each request the policy asks for, at its level.
pub async fn audit(State(auditor): State<Arc<Auditor>>, request: Request, next: Next) -> Response {
    let Some(user) = request.extensions().get::<User>().cloned() else {
        // Public paths and refused credentials: nobody to attribute them to.
        return next.run(request).await;
    };
    let described = describe(request.method(), request.uri());
    let (mut level, omit) = auditor.policy.decide(&described, &user);
    if level == Level::None {
        return next.run(request).await;
    }
    let sensitive = described.object.as_ref().is_some_and(|o| {
        o.group.is_empty()
            && (o.resource == "secrets"
                || (o.resource == "serviceaccounts" && o.subresource.as_deref() == Some("token")))
    });
    if sensitive {
        level = level.min(Level::Metadata);
    }
    let received = SystemTime::now();
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": format!("{level:?}"),
        "auditID": super::admission::new_uid(),
        "stage": "RequestReceived",
        "requestURI": request.uri().to_string(),
        "verb": described.verb,
        "user": user.info(),
        "sourceIPs": source_ips(request.headers(), request.extensions().get::<ConnectInfo<SocketAddr>>()),
        "requestReceivedTimestamp": micro_time(received),
        "stageTimestamp": micro_time(received),
    });
    if let Some(agent) = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        event["userAgent"] = json!(agent);
    }
    if let Some(ImpersonatedBy(by)) = request.extensions().get::<ImpersonatedBy>() {
        // The event's user is who authenticated; impersonatedUser whom they acted as.
        event["impersonatedUser"] = event["user"].clone();
        event["user"] = by.info();
    }
    if let Some(object) = &described.object {
        let mut reference = json!({"resource": object.resource, "apiVersion": object.version});
        if !object.group.is_empty() {
            reference["apiGroup"] = json!(object.group);
        }
        for (key, value) in [
            ("namespace", &object.namespace),
            ("name", &object.name),
            ("subresource", &object.subresource),
        ] {
            if let Some(value) = value {
                reference[key] = json!(value);
            }
        }
        event["objectRef"] = reference;
    }
    let request = if level >= Level::Request {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        if bytes.len() <= MAX_RECORDED_BODY
            && let Some(object) = request_object(&parts.headers, &bytes)
        {
            event["requestObject"] = object;
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    if !omit.iter().any(|s| s == "RequestReceived") {
        auditor.send(&event).await;
    }
    let (response, decision) = DECISION
        .scope(std::cell::RefCell::new(None), async {
            let response = next.run(request).await;
            let decision = DECISION.with(|slot| slot.borrow().clone());
            (response, decision)
        })
        .await;
    let status = response.status();
    let mut response_status = json!({"metadata": {}, "code": status.as_u16()});
    if !status.is_success() {
        response_status["status"] = json!("Failure");
    }
    event["responseStatus"] = response_status;
    if let Some((allowed, reason)) = decision {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "authorization.k8s.io/decision",
            if allowed { "allow" } else { "forbid" }.to_string(),
        );
        annotations.insert("authorization.k8s.io/reason", reason);
        event["annotations"] = json!(annotations);
    }
    let watching = described.verb == "watch";
    let response = if level == Level::RequestResponse && !watching {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        if bytes.len() <= MAX_RECORDED_BODY
            && let Ok(object) = serde_json::from_slice::<Value>(&bytes)
        {
            if status.is_success() {
                event["responseObject"] = object;
            } else if let Some(message) = object.get("message") {
                event["responseStatus"]["message"] = message.clone();
            }
        }
        Response::from_parts(parts, Body::from(bytes))
    } else {
        response
    };
    event["stage"] = json!(if watching {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    });
    event["stageTimestamp"] = json!(micro_time(SystemTime::now()));
    if !omit
        .iter()
        .any(|s| s == event["stage"].as_str().unwrap_or_default())
    {
        auditor.send(&event).await;
    }
    response
}

impl Auditor {
    async fn send(&self, event: &Value) {
        // The writer is gone only if the process is ending.
        let _ = self.lines.send(event.to_string()).await;
    }
}

/// A request body as JSON: JSON as it is, YAML and protobuf (kubectl's generators) decoded.
fn request_object(headers: &HeaderMap, body: &[u8]) -> Option<Value> {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with(super::protobuf::MEDIA_TYPE) {
        return super::protobuf::decode(body, super::kinds::protobuf_message).ok();
    }
    if content_type.contains("yaml") {
        return serde_yaml::from_slice(body).ok();
    }
    serde_json::from_slice(body).ok()
}

fn source_ips(headers: &HeaderMap, peer: Option<&ConnectInfo<SocketAddr>>) -> Vec<String> {
    let mut ips: Vec<String> = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    if let Some(ConnectInfo(peer)) = peer {
        ips.push(peer.ip().to_string());
    }
    ips
}

fn micro_time(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds =
        bosun_api::time::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs()));
    // `2026-12-07T15:00:00Z` → `2026-12-07T15:00:00.123456Z`.
    format!(
        "{}.{:06}Z",
        seconds.trim_end_matches('Z'),
        since.subsec_micros()
    )
}

/// Writes lines to the log, rotating it.
struct Writer {
    config: LogConfig,
    out: Option<std::io::BufWriter<std::fs::File>>,
    written: u64,
}

impl Writer {
    fn open(config: LogConfig) -> std::io::Result<Self> {
        let mut writer = Self {
            config,
            out: None,
            written: 0,
        };
        if !writer.to_stdout() {
            writer.reopen()?;
        }
        Ok(writer)
    }

    fn to_stdout(&self) -> bool {
        self.config.path.as_os_str() == "-"
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(parent) = self
            .config
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.config.path)?;
        self.written = file.metadata()?.len();
        self.out = Some(std::io::BufWriter::new(file));
        Ok(())
    }

    fn run(mut self, mut lines: mpsc::Receiver<String>) {
        while let Some(line) = lines.blocking_recv() {
            if let Err(error) = self.write(&line) {
                tracing::warn!(%error, "cannot write the audit log");
            }
            // Flush once nothing has come for a moment: a busy server's lines go out in
            // batches (a write per few milliseconds, not per line), a quiet server's at once.
            if lines.is_empty() {
                std::thread::sleep(FLUSH_PAUSE);
                if lines.is_empty() {
                    self.flush();
                }
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(out) = &mut self.out {
            let _ = out.flush();
        }
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.to_stdout() {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{line}")?;
            return stdout.flush();
        }
        let max = self.config.max_size_mb * 1024 * 1024;
        if max > 0 && self.written + line.len() as u64 + 1 > max && self.written > 0 {
            self.rotate()?;
        }
        let out = self.out.as_mut().expect("opened");
        writeln!(out, "{line}")?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }

    /// Moves the full file aside as `NAME-TIMESTAMP.EXT` and starts a new one; removes the
    /// backups beyond `max_backups` and older than `max_age_days`.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.flush();
        self.out = None;
        let path = self.config.path.clone();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("audit")
            .to_string();
        let extension = path.extension().and_then(|s| s.to_str()).map(String::from);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let stamp = format!("{}{:09}", now.as_secs(), now.subsec_nanos());
        let backup = match &extension {
            Some(ext) => format!("{stem}-{stamp}.{ext}"),
            None => format!("{stem}-{stamp}"),
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::rename(&path, dir.join(&backup))?;
        self.reopen()?;
        self.prune(dir, &stem, extension.as_deref());
        Ok(())
    }

    fn prune(&self, dir: &Path, stem: &str, extension: Option<&str>) {
        let prefix = format!("{stem}-");
        let suffix = extension.map(|e| format!(".{e}")).unwrap_or_default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut backups: Vec<(String, PathBuf, SystemTime)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let middle = name.strip_prefix(&prefix)?.strip_suffix(suffix.as_str())?;
                if middle.is_empty() || !middle.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((name, e.path(), modified))
            })
            .collect();
        // Newest first (the stamp sorts as the time it was taken).
        backups.sort_by(|a, b| b.0.cmp(&a.0));
        let max_age = Duration::from_secs(self.config.max_age_days * 24 * 3600);
        for (index, (_, path, modified)) in backups.iter().enumerate() {
            let too_many = self.config.max_backups > 0 && index >= self.config.max_backups;
            let too_old =
                self.config.max_age_days > 0 && modified.elapsed().is_ok_and(|age| age > max_age);
            if too_many || too_old {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> User {
        User::new(name, groups.iter().map(|g| g.to_string()))
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = Policy::parse(
            r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:kube-scheduler"]
- level: Metadata
  resources: [{group: "", resources: ["secrets", "configmaps"]}]
- level: RequestResponse
  resources: [{group: "apps", resources: ["deployments", "*/scale"]}]
  namespaces: ["team-a"]
- level: Request
  nonResourceURLs: ["/api*"]
- level: None
"#,
        )
        .unwrap();
        let decide = |method: Method, uri: &str, who: &User| {
            policy.decide(&describe(&method, &uri.parse().unwrap()), who)
        };
        let alice = user("alice", &[]);
        let (level, omit) = decide(Method::GET, "/api/v1/namespaces/a/secrets/s", &alice);
        assert_eq!(level, Level::Metadata);
        assert_eq!(omit, ["RequestReceived"]);
        assert_eq!(
            decide(
                Method::GET,
                "/api/v1/pods",
                &user("system:kube-scheduler", &[])
            )
            .0,
            Level::None
        );
        assert_eq!(
            decide(
                Method::PUT,
                "/apis/apps/v1/namespaces/team-a/deployments/web/scale",
                &alice
            )
            .0,
            Level::RequestResponse
        );
        assert_eq!(
            decide(
                Method::POST,
                "/apis/apps/v1/namespaces/team-b/deployments",
                &alice
            )
            .0,
            Level::None
        );
        assert_eq!(decide(Method::GET, "/apis", &alice).0, Level::Request);
        assert_eq!(decide(Method::GET, "/metrics", &alice).0, Level::None);
        assert!(Policy::parse("kind: Pod\napiVersion: v1\n").is_err());
    }

    #[test]
    fn requests_are_described_as_rbac_names_them() {
        let d = describe(
            &Method::GET,
            &"/api/v1/namespaces/a/pods?watch=true".parse().unwrap(),
        );
        assert_eq!(d.verb, "watch");
        let object = d.object.unwrap();
        assert_eq!(
            (object.resource.as_str(), object.namespace.as_deref()),
            ("pods", Some("a"))
        );
        let d = describe(
            &Method::GET,
            &"/api/v1/namespaces/a/pods/p/log".parse().unwrap(),
        );
        assert_eq!(d.object.unwrap().subresource.as_deref(), Some("log"));
        let d = describe(&Method::DELETE, &"/api/v1/namespaces/a".parse().unwrap());
        let object = d.object.unwrap();
        assert_eq!(
            (object.resource.as_str(), object.name.as_deref()),
            ("namespaces", Some("a"))
        );
        assert_eq!(d.verb, "delete");
        assert!(
            describe(&Method::GET, &"/version".parse().unwrap())
                .object
                .is_none()
        );
    }

    #[test]
    fn rotation_keeps_the_newest_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut writer = Writer::open(LogConfig {
            path: path.clone(),
            max_size_mb: 1,
            max_backups: 2,
            max_age_days: 0,
        })
        .unwrap();
        let line = "x".repeat(100 * 1024);
        for _ in 0..45 {
            writer.write(&line).unwrap();
        }
        writer.flush();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "the log and two backups: {names:?}");
        assert!(names.contains(&"audit.log".to_string()));
        for name in &names {
            let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(size <= 1024 * 1024, "{name}: {size}");
        }
    }
}
