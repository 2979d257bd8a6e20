//! `bosun apply -f` and `bosun delete`: manifests in, objects created, configured or deleted.
//!
//! Apply works as kubectl's client-side apply: the manifest is kept in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, and the next apply sends a
//! JSON merge patch that sets what the manifest says (where the live object differs) and
//! removes what an earlier manifest set and this one no longer does. Lists are replaced
//! whole when the manifest changed them (a merge patch has no list merge keys).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use bosun_api::resources::{self, Resource};
use http::Method;
use serde_json::{Map, Value, json};

use super::client::{ClientArgs, Cluster, api_error, is_not_found, kind_name, path, resource};
use super::get::split_kind;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// Manifest files or directories (their .yaml, .yml and .json files), `-` for stdin; each
    /// may hold several documents.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let objects = read_manifests(&args.files)?;
    let cluster = Cluster::connect(&args.client).await?;
    let mut failed = 0;
    for object in objects {
        match apply_one(&cluster, object).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("{e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} object(s) could not be applied");
    }
    Ok(())
}

/// Creates or configures one object; returns kubectl's line (`deployment.apps/web created`).
async fn apply_one(cluster: &Cluster, mut object: Value) -> anyhow::Result<String> {
    let (resource, name, namespace) = identify(cluster, &object)?;
    let label = format!("{}/{name}", kind_name(resource));
    // (`pointer_mut`, not `[]`, which would add `annotations: null` where there were none.)
    if let Some(Value::Object(annotations)) = object.pointer_mut("/metadata/annotations") {
        annotations.remove(LAST_APPLIED);
    }
    let applied = serde_json::to_string(&object)?;
    let url = path(resource, namespace.as_deref(), Some(&name));
    let live = match cluster
        .send(
            Method::GET,
            &url,
            None,
            Some("application/json"),
            Vec::new(),
        )
        .await
    {
        Ok(text) => serde_json::from_str::<Value>(&text)?,
        Err(e) if is_not_found(&e) => {
            object["metadata"]["annotations"][LAST_APPLIED] = json!(applied);
            if let Some(ns) = &namespace {
                object["metadata"]["namespace"] = json!(ns);
            }
            let body = serde_json::to_vec(&object)?;
            cluster
                .send(
                    Method::POST,
                    &path(resource, namespace.as_deref(), None),
                    Some("application/json"),
                    Some("application/json"),
                    body,
                )
                .await
                .map_err(api_error)
                .with_context(|| format!("cannot create {label}"))?;
            return Ok(format!("{label} created"));
        }
        Err(e) => return Err(api_error(e)).with_context(|| format!("cannot read {label}")),
    };
    let previous: Option<Value> = live["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok());
    let mut patch = three_way(previous.as_ref(), &live, &object).unwrap_or_else(|| json!({}));
    if patch.as_object().is_some_and(Map::is_empty)
        && live["metadata"]["annotations"][LAST_APPLIED].as_str() == Some(applied.as_str())
    {
        return Ok(format!("{label} unchanged"));
    }
    patch["metadata"]["annotations"][LAST_APPLIED] = json!(applied);
    cluster
        .send(
            Method::PATCH,
            &url,
            Some("application/merge-patch+json"),
            Some("application/json"),
            serde_json::to_vec(&patch)?,
        )
        .await
        .map_err(api_error)
        .with_context(|| format!("cannot configure {label}"))?;
    Ok(format!("{label} configured"))
}

/// The resource, name and namespace (for namespaced kinds) of a manifest's object.
fn identify(
    cluster: &Cluster,
    object: &Value,
) -> anyhow::Result<(&'static Resource, String, Option<String>)> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        bail!("every object needs apiVersion and kind: {}", brief(object));
    }
    let resource = resources::by_kind(api_version, kind)
        .with_context(|| format!("no kind {kind:?} is served in version {api_version:?}"))?;
    let name = object["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .with_context(|| format!("a {kind} to apply needs metadata.name"))?
        .to_string();
    let namespace = resource.namespaced.then(|| {
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&cluster.namespace)
            .to_string()
    });
    Ok((resource, name, namespace))
}

fn brief(object: &Value) -> String {
    let text = object.to_string();
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// The merge patch that makes `live` what `new` says: keys of `new` whose value differs from
/// `live`'s, and `null` for keys that `previous` (the last applied manifest) had and `new`
/// has not. Lists go whole, and only when `new` changed them since `previous` (or `live`
/// lacks them): a list the server filled with defaults is left alone. `None` when nothing
/// needs to change.
pub fn three_way(previous: Option<&Value>, live: &Value, new: &Value) -> Option<Value> {
    match (new, live) {
        (Value::Object(new_map), Value::Object(live_map)) => {
            let mut patch = Map::new();
            for (key, value) in new_map {
                let before = previous.and_then(|p| p.get(key));
                match live_map.get(key) {
                    Some(live_value) => {
                        if let Some(change) = three_way(before, live_value, value) {
                            patch.insert(key.clone(), change);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            if let Some(Value::Object(previous_map)) = previous {
                for key in previous_map.keys() {
                    if !new_map.contains_key(key) && live_map.contains_key(key) {
                        patch.insert(key.clone(), Value::Null);
                    }
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        (Value::Array(_), _) => {
            let unchanged = previous == Some(new) && live.is_array();
            (!unchanged && live != new).then(|| new.clone())
        }
        _ => (live != new).then(|| new.clone()),
    }
}

/// Every object in `files` (`-` is stdin; a directory means its .yaml, .yml and .json files,
/// sorted), `List`s unpacked, empty documents skipped.
pub fn read_manifests(files: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for file in files {
        if file == Path::new("-") {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            objects.extend(parse_documents(&text).context("in stdin")?);
        } else if file.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            entries.sort();
            for entry in entries {
                objects.extend(read_file(&entry)?);
            }
        } else {
            objects.extend(read_file(file)?);
        }
    }
    Ok(objects)
}

fn read_file(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_documents(&text).with_context(|| format!("in {}", path.display()))
}

/// The objects in a YAML (or JSON) text of one or more documents.
pub fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .with_context(|| format!("document {} is not valid YAML", i + 1))?;
        match value {
            Value::Null => {}
            Value::Object(_) if value["kind"] == "List" => {
                out.extend(value["items"].as_array().cloned().unwrap_or_default());
            }
            Value::Object(_) => out.push(value),
            other => bail!("document {} is not an object: {other}", i + 1),
        }
    }
    Ok(out)
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// The kind, or KIND/NAME (without -f).
    kind: Option<String>,
    /// Names of the objects to delete.
    names: Vec<String>,
    /// Delete the objects of these manifests instead.
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// A missing object is not an error.
    #[arg(long)]
    ignore_not_found: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&args.client).await?;
    let mut targets: Vec<(&'static Resource, String, Option<String>)> = Vec::new();
    if !args.files.is_empty() {
        for object in read_manifests(&args.files)? {
            targets.push(identify(&cluster, &object)?);
        }
    } else {
        let Some(kind) = &args.kind else {
            bail!("say what to delete: bosun delete KIND NAME… or -f FILE");
        };
        let (kind, names) = split_kind(kind, &args.names);
        if names.is_empty() {
            bail!("name the objects to delete: bosun delete {kind} NAME…");
        }
        let resource = resource(&kind)?;
        let namespace = resource.namespaced.then(|| cluster.namespace.clone());
        targets.extend(names.into_iter().map(|n| (resource, n, namespace.clone())));
    }
    let mut failed = 0;
    for (resource, name, namespace) in targets {
        let url = format!(
            "{}?propagationPolicy=Background",
            path(resource, namespace.as_deref(), Some(&name))
        );
        match cluster
            .send(
                Method::DELETE,
                &url,
                None,
                Some("application/json"),
                Vec::new(),
            )
            .await
        {
            Ok(_) => println!("{} \"{name}\" deleted", kind_name(resource)),
            Err(e) if is_not_found(&e) && args.ignore_not_found => {}
            Err(e) => {
                eprintln!("{:#}", api_error(e));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} object(s) could not be deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_sets_what_differs_and_removes_what_the_manifest_dropped() {
        let previous = json!({"metadata": {"labels": {"a": "1", "old": "x"}}, "data": {"k": "v"}});
        let live = json!({
            "metadata": {"labels": {"a": "1", "old": "x"}, "uid": "u", "resourceVersion": "7"},
            "data": {"k": "changed by hand"}
        });
        let new = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}});
        assert_eq!(
            three_way(Some(&previous), &live, &new),
            Some(json!({"metadata": {"labels": {"b": "2", "old": null}}, "data": {"k": "v"}}))
        );
        assert_eq!(
            three_way(Some(&new), &three_way_applied(&live, &new), &new),
            None
        );
    }

    /// `live` after the patch.
    fn three_way_applied(live: &Value, new: &Value) -> Value {
        let mut out = live.clone();
        out["metadata"]["labels"] = new["metadata"]["labels"].clone();
        out["data"] = new["data"].clone();
        out
    }

    #[test]
    fn lists_go_whole_only_when_the_manifest_changed_them() {
        let manifest = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let defaulted = json!({"spec": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"}]}});
        assert_eq!(three_way(Some(&manifest), &defaulted, &manifest), None);
        let changed = json!({"spec": {"containers": [{"name": "a", "image": "y"}]}});
        assert_eq!(
            three_way(Some(&manifest), &defaulted, &changed),
            Some(changed.clone())
        );
        // Without a last-applied manifest a differing list is sent.
        assert_eq!(three_way(None, &defaulted, &manifest), Some(manifest));
    }

    #[test]
    fn manifests_hold_several_documents_and_lists() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{\"kind\": \"Pod\"}, {\"kind\": \"Service\"}]}\n";
        let objects = parse_documents(text).unwrap();
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["ConfigMap", "Pod", "Service"]);
        let err = parse_documents("a: [unclosed").unwrap_err();
        assert!(format!("{err:#}").contains("document 1"), "{err:#}");
        assert!(parse_documents("- 1\n- 2\n").is_err());
    }
}
