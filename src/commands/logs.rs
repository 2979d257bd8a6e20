//! `bosun logs`: a container's log through the API server (which reads it from the node), as
//! `kubectl logs` shows it.

use anyhow::bail;
use futures::AsyncBufReadExt as _;
use std::io::Write as _;

use super::client::{ClientArgs, Cluster, encode, path, resource};

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The pod, `pod/NAME`, or `job/NAME` (the Job's first pod).
    pod: String,
    /// The container (needed when the pod has several).
    #[arg(short, long)]
    container: Option<String>,
    /// Keep printing as the container writes.
    #[arg(short, long)]
    follow: bool,
    /// The log of the container's previous run.
    #[arg(short, long)]
    previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<i64>,
    /// Put each line's time first.
    #[arg(long)]
    timestamps: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.client).await?;
    let pod = pod_name(&cluster, &args.pod).await?;
    let pods = resource("pods")?;
    let mut query = Vec::new();
    if let Some(container) = &args.container {
        query.push(format!("container={}", encode(container)));
    }
    if args.follow {
        query.push("follow=true".to_string());
    }
    if args.previous {
        query.push("previous=true".to_string());
    }
    if let Some(tail) = args.tail {
        query.push(format!("tailLines={tail}"));
    }
    if args.timestamps {
        query.push("timestamps=true".to_string());
    }
    let mut url = format!("{}/log", path(pods, Some(&cluster.namespace), Some(&pod)));
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    let stream = cluster.stream(&url).await?;
    let mut lines = stream.lines();
    let mut stdout = std::io::stdout();
    use futures::StreamExt as _;
    while let Some(line) = lines.next().await {
        writeln!(stdout, "{}", line?)?;
        stdout.flush()?;
    }
    Ok(())
}

/// The pod `target` names: `NAME`, `pod/NAME`, or `job/NAME` (its oldest pod).
async fn pod_name(cluster: &Cluster, target: &str) -> anyhow::Result<String> {
    let Some((kind, name)) = target.split_once('/') else {
        return Ok(target.to_string());
    };
    let kind = resource(kind)?;
    match kind.plural {
        "pods" => Ok(name.to_string()),
        "jobs" => {
            let pods = resource("pods")?;
            let url = format!(
                "{}?labelSelector={}",
                path(pods, Some(&cluster.namespace), None),
                encode(&format!("batch.kubernetes.io/job-name={name}"))
            );
            let list = cluster.get_json(&url).await?;
            let mut items: Vec<_> = list["items"].as_array().cloned().unwrap_or_default();
            items.sort_by(|a, b| {
                a["metadata"]["creationTimestamp"]
                    .as_str()
                    .cmp(&b["metadata"]["creationTimestamp"].as_str())
            });
            match items.first().and_then(|p| p["metadata"]["name"].as_str()) {
                Some(pod) => Ok(pod.to_string()),
                None => bail!("job {name} has no pods"),
            }
        }
        other => bail!("logs reads a pod or a job's pod, not {other}"),
    }
}
