//! The node's log server: `GET /containerLogs/{namespace}/{pod}/{container}` over HTTPS on the
//! node port (10250, with `/metrics/functions` beside it), the
//! path and query the kubelet serves (`follow`, `previous`, `timestamps`, `tailLines`,
//! `sinceSeconds`, `sinceTime`, `limitBytes`). The API server proxies `pods/{name}/log` here,
//! so `kubectl logs` works unchanged.
//!
//! Who may read (logs and metrics alike): only a client presenting a certificate issued by the cluster CA (the CA the
//! node's kubeconfig trusts). The API server has one; cluster admins go through the API
//! server, which checks their right to `pods/log`. The node's own certificate is self-signed
//! and published in the Node's `bosun.dev/serving-certificate` annotation, which only the node
//! and admins can write; the API server trusts exactly that certificate for that node.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::parse;

/// Which pods and containers the node has, for the server to find their files.
#[derive(Default)]
pub struct LogIndex {
    pods: Mutex<HashMap<(String, String), PodLogs>>,
}

struct PodLogs {
    /// `<pod dir>/logs`: one directory per container, `<attempt>.log` in each.
    dir: PathBuf,
    running: HashSet<String>,
}

impl LogIndex {
    pub fn add_pod(&self, namespace: &str, name: &str, dir: PathBuf) {
        self.pods.lock().unwrap().insert(
            (namespace.to_string(), name.to_string()),
            PodLogs {
                dir,
                running: HashSet::new(),
            },
        );
    }

    pub fn remove_pod(&self, namespace: &str, name: &str, dir: &Path) {
        let mut pods = self.pods.lock().unwrap();
        let key = (namespace.to_string(), name.to_string());
        // A newer pod of the same name may have taken the slot.
        if pods.get(&key).is_some_and(|p| p.dir == dir) {
            pods.remove(&key);
        }
    }

    pub fn set_running(&self, namespace: &str, name: &str, container: &str, running: bool) {
        let mut pods = self.pods.lock().unwrap();
        if let Some(pod) = pods.get_mut(&(namespace.to_string(), name.to_string())) {
            if running {
                pod.running.insert(container.to_string());
            } else {
                pod.running.remove(container);
            }
        }
    }

    fn find(&self, namespace: &str, name: &str) -> Option<(PathBuf, HashSet<String>)> {
        let pods = self.pods.lock().unwrap();
        pods.get(&(namespace.to_string(), name.to_string()))
            .map(|p| (p.dir.clone(), p.running.clone()))
    }

    fn is_running(&self, namespace: &str, name: &str, container: &str) -> bool {
        let pods = self.pods.lock().unwrap();
        pods.get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|p| p.running.contains(container))
    }
}

/// The query of a log request, as the kubelet takes it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    #[serde(default)]
    pub follow: bool,
    #[serde(default)]
    pub previous: bool,
    #[serde(default)]
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<String>,
    pub limit_bytes: Option<i64>,
}

/// The log server's routes, for the node port's router (which also serves
/// [`crate::metrics::routes`]).
pub fn routes(index: Arc<LogIndex>, poll: Duration) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(Served { index, poll })
}

#[derive(Clone)]
struct Served {
    index: Arc<LogIndex>,
    poll: Duration,
}

fn text(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], message).into_response()
}

async fn container_logs(
    State(served): State<Served>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let Some((dir, running)) = served.index.find(&namespace, &pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} is not on this node"),
        );
    };
    let attempts = attempts(&dir.join(&container));
    let path = match (query.previous, attempts.as_slice()) {
        (_, []) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container {container:?} in pod {pod:?} is waiting to start"),
            );
        }
        (true, [.., previous, _]) => previous.clone(),
        (true, _) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            );
        }
        (false, [.., current]) => current.clone(),
    };
    let follow = query.follow && !query.previous && running.contains(&container);
    let since = match since(&query) {
        Ok(since) => since,
        Err(message) => return text(StatusCode::BAD_REQUEST, message.to_string()),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let reader = Reader {
        out: tx,
        timestamps: query.timestamps,
        since,
        left: query.limit_bytes.filter(|l| *l > 0).map(|l| l as u64),
        pending: String::new(),
    };
    let tail = query.tail_lines.filter(|t| *t >= 0).map(|t| t as usize);
    let index = served.index.clone();
    let poll = served.poll;
    tokio::spawn(async move {
        let keep_going = move || index.is_running(&namespace, &pod, &container);
        reader.run(path, tail, follow, poll, keep_going).await;
    });
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .expect("a valid response")
}

/// A log request's options that cannot be used.
#[derive(Debug, thiserror::Error)]
enum BadQuery {
    #[error("sinceSeconds must be positive")]
    SinceSeconds,
    #[error("invalid sinceTime {0:?}")]
    SinceTime(String),
}

fn since(query: &LogQuery) -> Result<Option<SystemTime>, BadQuery> {
    if let Some(s) = query.since_seconds {
        if s <= 0 {
            return Err(BadQuery::SinceSeconds);
        }
        return Ok(SystemTime::now().checked_sub(Duration::from_secs(s as u64)));
    }
    match &query.since_time {
        Some(t) => bosun_api::time::parse_rfc3339(t)
            .map(Some)
            .ok_or_else(|| BadQuery::SinceTime(t.clone())),
        None => Ok(None),
    }
}

/// The log files of a container's attempts, `<n>.log` in ascending `n`.
fn attempts(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Turns CRI entries into what `kubectl logs` prints, and sends it.
struct Reader {
    out: mpsc::Sender<Bytes>,
    timestamps: bool,
    since: Option<SystemTime>,
    /// Bytes still allowed by `limitBytes`.
    left: Option<u64>,
    /// The start of a line whose end (the `F` entry) has not been read yet.
    pending: String,
}

impl Reader {
    async fn run(
        mut self,
        path: PathBuf,
        tail: Option<usize>,
        follow: bool,
        poll: Duration,
        running: impl Fn() -> bool,
    ) {
        // What is there now: the rotated files, then the current one.
        let mut lines: Vec<String> = Vec::new();
        let mut offset = 0;
        let mut inode = None;
        for file in super::files(&path) {
            let Ok(text) = std::fs::read(&file) else {
                continue;
            };
            let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if file == path {
                offset = complete as u64;
                inode = std::fs::metadata(&file).ok().map(|m| m.ino());
            }
            for line in String::from_utf8_lossy(&text[..complete]).lines() {
                if let Some(out) = self.line(line) {
                    lines.push(out);
                }
            }
        }
        let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
        for line in lines.into_iter().skip(skip) {
            if !self.send(line).await {
                return;
            }
        }
        if !follow {
            return;
        }
        // Follow the current file: poll for what is appended, move to the new file when it
        // is rotated, and end once the container has stopped and everything is read.
        let mut buffer = Vec::new();
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => return,
        };
        let mut stopped_reads = 0;
        loop {
            let before = offset;
            if file.seek(SeekFrom::Start(offset)).is_ok() {
                let mut chunk = Vec::new();
                if file.read_to_end(&mut chunk).is_ok() {
                    offset += chunk.len() as u64;
                    buffer.extend_from_slice(&chunk);
                }
            }
            if let Some(end) = buffer.iter().rposition(|b| *b == b'\n') {
                let complete: Vec<u8> = buffer.drain(..=end).collect();
                for line in String::from_utf8_lossy(&complete).lines() {
                    if let Some(out) = self.line(line)
                        && !self.send(out).await
                    {
                        return;
                    }
                }
            }
            let now = std::fs::metadata(&path).ok().map(|m| m.ino());
            if now.is_some() && now != inode && offset == before {
                // Rotated and the old file is read to its end: go on with the new one.
                match std::fs::File::open(&path) {
                    Ok(f) => {
                        file = f;
                        offset = 0;
                        inode = now;
                        continue;
                    }
                    Err(_) => return,
                }
            }
            if !running() {
                // Read once more after the container stopped, then end.
                stopped_reads += 1;
                if stopped_reads > 1 && offset == before {
                    return;
                }
            }
            if self.out.is_closed() {
                return;
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// One CRI line → the text to print, once its line is complete and selected.
    fn line(&mut self, raw: &str) -> Option<String> {
        let entry = parse(raw)?;
        if let Some(since) = self.since
            && bosun_api::time::parse_rfc3339(entry.time).is_some_and(|t| t < since)
        {
            return None;
        }
        if self.pending.is_empty() && self.timestamps {
            self.pending.push_str(entry.time);
            self.pending.push(' ');
        }
        self.pending.push_str(entry.content);
        if entry.partial {
            return None;
        }
        self.pending.push('\n');
        Some(std::mem::take(&mut self.pending))
    }

    /// Sends within `limitBytes`; false when the reader should stop.
    async fn send(&mut self, mut text: String) -> bool {
        if let Some(left) = self.left.as_mut() {
            if *left == 0 {
                return false;
            }
            if text.len() as u64 > *left {
                let mut cut = *left as usize;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            *left -= text.len() as u64;
        }
        self.out.send(Bytes::from(text)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{LogFile, Rotation, Stream};

    async fn read(path: &Path, query: LogQuery, follow: bool) -> String {
        let (tx, mut rx) = mpsc::channel(16);
        let reader = Reader {
            out: tx,
            timestamps: query.timestamps,
            since: since(&query).unwrap(),
            left: query.limit_bytes.map(|l| l as u64),
            pending: String::new(),
        };
        let tail = query.tail_lines.map(|t| t as usize);
        let path = path.to_path_buf();
        tokio::spawn(reader.run(path, tail, follow, Duration::from_millis(10), || false));
        let mut out = String::new();
        while let Some(b) = rx.recv().await {
            out.push_str(std::str::from_utf8(&b).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn tail_limit_timestamps_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = LogFile::open_with(
            &path,
            Rotation {
                max_size: 300,
                max_files: 10,
            },
        )
        .unwrap();
        for i in 0..20 {
            log.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let long = "y".repeat(crate::logs::MAX_LINE + 5);
        log.write(Stream::Stderr, format!("{long}\n").as_bytes())
            .unwrap();
        assert!(crate::logs::files(&path).len() > 1, "rotated");

        let all = read(&path, LogQuery::default(), false).await;
        let expected: String =
            (0..20).map(|i| format!("line {i}\n")).collect::<String>() + &long + "\n";
        assert_eq!(
            all, expected,
            "rotated files are read oldest first, long lines joined"
        );

        let tail = read(
            &path,
            LogQuery {
                tail_lines: Some(2),
                ..Default::default()
            },
            false,
        )
        .await;
        assert_eq!(tail, format!("line 19\n{long}\n"));

        let limited = read(
            &path,
            LogQuery {
                limit_bytes: Some(10),
                ..Default::default()
            },
            false,
        )
        .await;
        assert_eq!(limited, "line 0\nlin");

        let stamped = read(
            &path,
            LogQuery {
                timestamps: true,
                tail_lines: Some(1),
                ..Default::default()
            },
            false,
        )
        .await;
        let (time, rest) = stamped.split_once(' ').unwrap();
        assert!(bosun_api::time::parse_rfc3339(time).is_some(), "{time}");
        assert_eq!(rest, format!("{long}\n"));

        let future = bosun_api::time::rfc3339(SystemTime::now() + Duration::from_secs(60));
        let none = read(
            &path,
            LogQuery {
                since_time: Some(future),
                ..Default::default()
            },
            false,
        )
        .await;
        assert_eq!(none, "");
    }
}
