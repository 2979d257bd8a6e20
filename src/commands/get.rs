//! `bosun get` and `bosun describe`: objects as tables (the server prints them, as it does
//! for kubectl), YAML, JSON or names, and one object described with its events.

use std::time::SystemTime;

use anyhow::bail;
use bosun_api::resources::Resource;
use bosun_api::time::{parse_rfc3339, short_age};
use serde_json::{Value, json};

use super::client::{ClientArgs, Cluster, api_error, encode, kind_name, path, resource};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(clap::Args)]
pub struct GetArgs {
    /// The kind (`pods`, `po`, `deploy`, `deployments.apps`), or KIND/NAME.
    kind: String,
    /// Names of objects (all of them when none is given).
    names: Vec<String>,
    /// Output format: the table (default), `wide` (more columns), `yaml`, `json` or `name`.
    #[arg(short, long, value_enum)]
    output: Option<Output>,
    /// Only objects whose labels match (`app=web`, `tier in (a,b)`, `!canary`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Objects of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Keep `metadata.managedFields` in YAML and JSON output (left out by default, as
    /// kubectl does).
    #[arg(long)]
    show_managed_fields: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// `KIND NAME…` or `KIND/NAME`.
pub fn split_kind(kind: &str, names: &[String]) -> (String, Vec<String>) {
    match kind.split_once('/') {
        Some((kind, name)) => {
            let mut all = vec![name.to_string()];
            all.extend(names.iter().cloned());
            (kind.to_string(), all)
        }
        None => (kind.to_string(), names.to_vec()),
    }
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.client).await?;
    let (kind, names) = split_kind(&args.kind, &args.names);
    let resource = resource(&kind)?;
    let namespace = (!args.all_namespaces).then_some(cluster.namespace.as_str());
    match args.output {
        None | Some(Output::Wide) => {
            let wide = args.output == Some(Output::Wide);
            let mut query = vec!["includeObject=Metadata".to_string()];
            if let Some(selector) = &args.selector {
                query.push(format!("labelSelector={}", encode(selector)));
            }
            let accept = "application/json;as=Table;v=v1;g=meta.k8s.io";
            let mut tables = Vec::new();
            if names.is_empty() {
                let url = format!("{}?{}", path(resource, namespace, None), query.join("&"));
                let listed = match fetch(&cluster, &url, accept).await {
                    Err(kube::Error::Api(e)) if e.code == 403 && is_namespaces(resource) => {
                        fetch(&cluster, ACCESSIBLE_NAMESPACES, accept).await
                    }
                    other => other,
                };
                tables.push(listed.map_err(api_error)?);
            } else {
                for name in &names {
                    let url = format!(
                        "{}?{}",
                        path(resource, namespace, Some(name)),
                        query.join("&")
                    );
                    tables.push(table(&cluster, &url, accept).await?);
                }
            }
            let merged = merge_tables(tables);
            let with_namespace = args.all_namespaces && resource.namespaced;
            if merged["rows"].as_array().is_none_or(Vec::is_empty) {
                match namespace {
                    Some(ns) if resource.namespaced => {
                        eprintln!("No resources found in {ns} namespace.")
                    }
                    _ => eprintln!("No resources found"),
                }
                return Ok(());
            }
            print!("{}", render_table(&merged, wide, with_namespace));
        }
        Some(format) => {
            let mut objects =
                objects(&cluster, resource, namespace, &names, &args.selector).await?;
            if !args.show_managed_fields {
                for object in &mut objects {
                    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("managedFields");
                    }
                }
            }
            let single = names.len() == 1;
            print!("{}", render_objects(resource, objects, single, format)?);
        }
    }
    Ok(())
}

async fn table(cluster: &Cluster, url: &str, accept: &str) -> anyhow::Result<Value> {
    fetch(cluster, url, accept).await.map_err(api_error)
}

async fn fetch(cluster: &Cluster, url: &str, accept: &str) -> Result<Value, kube::Error> {
    let text = cluster
        .send(http::Method::GET, url, None, Some(accept), Vec::new())
        .await?;
    serde_json::from_str(&text).map_err(kube::Error::SerdeError)
}

/// Where a user who may not list namespaces finds the ones they may use.
const ACCESSIBLE_NAMESPACES: &str = "/apis/bosun.dev/v1/accessible-namespaces";

fn is_namespaces(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.plural == "namespaces"
}

/// The objects named, or every object (matching `selector`).
async fn objects(
    cluster: &Cluster,
    resource: &Resource,
    namespace: Option<&str>,
    names: &[String],
    selector: &Option<String>,
) -> anyhow::Result<Vec<Value>> {
    if names.is_empty() {
        let mut url = path(resource, namespace, None);
        if let Some(selector) = selector {
            url.push_str(&format!("?labelSelector={}", encode(selector)));
        }
        let list = match fetch(cluster, &url, "application/json").await {
            Err(kube::Error::Api(e)) if e.code == 403 && is_namespaces(resource) => {
                fetch(cluster, ACCESSIBLE_NAMESPACES, "application/json").await
            }
            other => other,
        }
        .map_err(api_error)?;
        let kind = resource.kind;
        let api_version = resource.api_version();
        // List items carry no kind; kubectl fills it in.
        Ok(list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut item| {
                item["apiVersion"] = json!(api_version);
                item["kind"] = json!(kind);
                item
            })
            .collect())
    } else {
        let mut out = Vec::new();
        for name in names {
            out.push(
                cluster
                    .get_json(&path(resource, namespace, Some(name)))
                    .await?,
            );
        }
        Ok(out)
    }
}

/// One table with the rows of all of `tables`.
fn merge_tables(tables: Vec<Value>) -> Value {
    let mut merged = Value::Null;
    for table in tables {
        if merged.is_null() {
            merged = table;
            continue;
        }
        let rows = table["rows"].as_array().cloned().unwrap_or_default();
        if let Some(all) = merged["rows"].as_array_mut() {
            all.extend(rows);
        }
    }
    merged
}

/// The rows under upper-case headers, columns three spaces apart, as kubectl prints them.
/// Columns with a priority above 0 only when `wide`.
pub fn render_table(table: &Value, wide: bool, with_namespace: bool) -> String {
    let columns = table["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shown: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut header = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".to_string());
    }
    header.extend(
        shown
            .iter()
            .map(|&i| columns[i]["name"].as_str().unwrap_or("").to_uppercase()),
    );
    lines.push(header);
    for row in table["rows"].as_array().into_iter().flatten() {
        let cells = row["cells"].as_array().cloned().unwrap_or_default();
        let mut line = Vec::new();
        if with_namespace {
            let ns = row["object"]["metadata"]["namespace"]
                .as_str()
                .unwrap_or("");
            line.push(ns.to_string());
        }
        line.extend(shown.iter().map(|&i| cell(cells.get(i))));
        lines.push(line);
    }
    let width = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|c| {
            lines
                .iter()
                .map(|l| l.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (c, value) in line.iter().enumerate() {
            text.push_str(value);
            if c + 1 < line.len() {
                let pad = widths[c] - value.chars().count() + 3;
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "<none>".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Objects as YAML, JSON or `kind/name` lines; several as a `List`.
pub fn render_objects(
    resource: &Resource,
    objects: Vec<Value>,
    single: bool,
    format: Output,
) -> anyhow::Result<String> {
    let document = if single && objects.len() == 1 {
        objects.into_iter().next().unwrap_or_default()
    } else {
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": objects})
    };
    Ok(match format {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&document)?),
        Output::Yaml => serde_yaml::to_string(&document)?,
        Output::Name => {
            let items = match document.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => vec![document],
            };
            let kind = kind_name(resource);
            items
                .iter()
                .map(|o| {
                    format!(
                        "{kind}/{}\n",
                        o["metadata"]["name"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        }
        Output::Wide => bail!("wide is a table"),
    })
}

#[derive(clap::Args)]
pub struct DescribeArgs {
    /// The kind, or KIND/NAME.
    kind: String,
    /// The object's name.
    name: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn describe(args: DescribeArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.client).await?;
    let names: Vec<String> = args.name.into_iter().collect();
    let (kind, names) = split_kind(&args.kind, &names);
    let [name] = names.as_slice() else {
        bail!("describe one object: bosun describe KIND NAME");
    };
    let resource = resource(&kind)?;
    let namespace = Some(cluster.namespace.as_str());
    let object = cluster
        .get_json(&path(resource, namespace, Some(name)))
        .await?;
    let events = events_of(&cluster, resource, &object).await?;
    print!(
        "{}",
        render_description(&object, &events, SystemTime::now())?
    );
    Ok(())
}

/// The events about `object`, oldest first. Events written as core/v1 name it in
/// `involvedObject`, those written through events.k8s.io/v1 (the node's) in `regarding`.
async fn events_of(
    cluster: &Cluster,
    resource: &Resource,
    object: &Value,
) -> anyhow::Result<Vec<Value>> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let events = super::client::resource("events")?;
    let mut out: Vec<Value> = Vec::new();
    for field in ["involvedObject", "regarding"] {
        let selector = format!("{field}.name={name},{field}.kind={}", resource.kind);
        let url = format!(
            "{}?fieldSelector={}",
            path(events, Some(namespace), None),
            encode(&selector)
        );
        let list = cluster.get_json(&url).await?;
        for event in list["items"].as_array().into_iter().flatten() {
            let uid = &event["metadata"]["uid"];
            if !out.iter().any(|e| &e["metadata"]["uid"] == uid) {
                out.push(event.clone());
            }
        }
    }
    out.sort_by_key(|e| event_time(e).unwrap_or(SystemTime::UNIX_EPOCH));
    Ok(out)
}

fn event_time(event: &Value) -> Option<SystemTime> {
    ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .find_map(|f| event[*f].as_str().and_then(parse_rfc3339))
        .or_else(|| {
            event["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(parse_rfc3339)
        })
}

/// kubectl describe's shape: the identity, then spec and status as YAML, then the events.
pub fn render_description(
    object: &Value,
    events: &[Value],
    now: SystemTime,
) -> anyhow::Result<String> {
    let meta = &object["metadata"];
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: &str| {
        out.push_str(&format!("{:<14}{value}\n", format!("{name}:")));
    };
    field(&mut out, "Name", meta["name"].as_str().unwrap_or_default());
    if let Some(ns) = meta["namespace"].as_str() {
        field(&mut out, "Namespace", ns);
    }
    field(
        &mut out,
        "Kind",
        object["kind"].as_str().unwrap_or_default(),
    );
    for (title, key) in [("Labels", "labels"), ("Annotations", "annotations")] {
        let pairs: Vec<String> = meta[key]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "kubectl.kubernetes.io/last-applied-configuration")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        let text = if pairs.is_empty() {
            "<none>".to_string()
        } else {
            pairs.join(&format!("\n{:14}", ""))
        };
        field(&mut out, title, &text);
    }
    if let Some(created) = meta["creationTimestamp"].as_str() {
        field(&mut out, "Created", created);
    }
    for (title, key) in [("Spec", "spec"), ("Data", "data"), ("Status", "status")] {
        let value = &object[key];
        if value.is_null() {
            continue;
        }
        out.push_str(&format!("{title}:\n"));
        for line in serde_yaml::to_string(value)?.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if events.is_empty() {
        out.push_str("Events:       <none>\n");
        return Ok(out);
    }
    out.push_str("Events:\n");
    let mut table = json!({
        "columnDefinitions": [
            {"name": "Type"}, {"name": "Reason"}, {"name": "Age"}, {"name": "From"},
            {"name": "Message"}
        ],
        "rows": []
    });
    for event in events {
        let age = event_time(event)
            .and_then(|t| now.duration_since(t).ok())
            .map_or("<unknown>".to_string(), short_age);
        let from = event["source"]["component"]
            .as_str()
            .or(event["reportingComponent"].as_str())
            .or(event["reportingController"].as_str())
            .unwrap_or_default();
        let message = event["message"]
            .as_str()
            .or(event["note"].as_str())
            .unwrap_or_default();
        table["rows"]
            .as_array_mut()
            .expect("rows")
            .push(json!({"cells": [
                event["type"], event["reason"], age, from, message
            ]}));
    }
    for line in render_table(&table, false, false).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tables_align_hide_wide_columns_and_name_namespaces() {
        let table = json!({
            "columnDefinitions": [
                {"name": "Name", "priority": 0}, {"name": "Ready", "priority": 0},
                {"name": "IP", "priority": 1}
            ],
            "rows": [
                {"cells": ["web-1", "1/1", "10.88.0.2"], "object": {"metadata": {"namespace": "shop"}}},
                {"cells": ["a", "0/1", null], "object": {"metadata": {"namespace": "default"}}}
            ]
        });
        assert_eq!(
            render_table(&table, false, false),
            "NAME    READY\nweb-1   1/1\na       0/1\n"
        );
        assert_eq!(
            render_table(&table, true, true),
            "NAMESPACE   NAME    READY   IP\nshop        web-1   1/1     10.88.0.2\ndefault     a       0/1     <none>\n"
        );
    }

    #[test]
    fn objects_print_as_names_or_a_list() {
        let pods = super::super::client::resource("pods").unwrap();
        let objects = vec![
            json!({"metadata": {"name": "a"}}),
            json!({"metadata": {"name": "b"}}),
        ];
        assert_eq!(
            render_objects(pods, objects.clone(), false, Output::Name).unwrap(),
            "pod/a\npod/b\n"
        );
        let list: Value =
            serde_json::from_str(&render_objects(pods, objects, false, Output::Json).unwrap())
                .unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"][1]["metadata"]["name"], "b");
        assert_eq!(
            split_kind("pod/x", &["y".to_string()]),
            ("pod".to_string(), vec!["x".to_string(), "y".to_string()])
        );
    }

    #[test]
    fn descriptions_show_identity_spec_and_events() {
        let now = parse_rfc3339("2026-11-30T12:00:00Z").unwrap();
        let object = json!({
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                         "creationTimestamp": "2026-11-30T11:00:00Z"},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running"}
        });
        let events = vec![json!({
            "type": "Normal", "reason": "Started", "note": "Started container web",
            "reportingController": "bosun-node", "eventTime": "2026-11-30T11:59:30Z",
            "metadata": {"uid": "1"}
        })];
        let text = render_description(&object, &events, now).unwrap();
        assert!(text.starts_with("Name:         web\nNamespace:    shop\nKind:         Pod\nLabels:       app=web\nAnnotations:  <none>\n"), "{text}");
        assert!(text.contains("Spec:\n  nodeName: n1\n"), "{text}");
        assert!(text.contains("Status:\n  phase: Running\n"), "{text}");
        assert!(
            text.contains("  Normal   Started   30s   bosun-node   Started container web\n"),
            "{text}"
        );
        assert!(
            render_description(&object, &[], now + Duration::from_secs(1))
                .unwrap()
                .ends_with("Events:       <none>\n")
        );
    }
}
