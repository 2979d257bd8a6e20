//! Server-side apply (`PATCH` with `application/apply-patch+yaml`, `kubectl apply
//! --server-side`): the request is the manager's whole intent for the object. The fields it
//! sets are recorded as that manager's in `metadata.managedFields` (FieldsV1, as Kubernetes
//! writes it); applying a field another applier owns with a different value is a conflict
//! (409) unless `force=true`, which takes the field over; fields the manager applied before
//! and no longer does are removed unless another manager owns them too.
//!
//! Lists merge as strategic merge patch merges them: by their merge key (`patch.rs`), item
//! by item; other lists are atomic. Ownership is tracked for apply operations; other writes
//! (`Update`) do not record fields yet, so they never conflict with an applier.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::patch::merge_key;

/// A field's path in FieldsV1 terms: `f:spec`, `f:containers`, `k:{"name":"app"}`, and `.`
/// for a list item itself.
pub type FieldPath = Vec<String>;

/// The fields an applied configuration sets. Identity and server-owned metadata, and (for
/// kinds with a status subresource) the status, are not owned through apply.
pub fn fields_of(config: &Value, has_status: bool) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Value::Object(map) = config else {
        return out;
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => continue,
            "status" if has_status => continue,
            "metadata" => {
                let Value::Object(meta) = value else { continue };
                for (field, v) in meta {
                    if matches!(
                        field.as_str(),
                        "name"
                            | "namespace"
                            | "uid"
                            | "resourceVersion"
                            | "generation"
                            | "creationTimestamp"
                            | "managedFields"
                            | "selfLink"
                    ) {
                        continue;
                    }
                    let mut path = vec!["f:metadata".to_string(), format!("f:{field}")];
                    collect(v, field, &mut path, &mut out);
                }
            }
            _ => {
                let mut path = vec![format!("f:{key}")];
                collect(value, key, &mut path, &mut out);
            }
        }
    }
    out
}

/// Adds the leaf paths under `value` (reached through the field `field`) to `out`.
fn collect(value: &Value, field: &str, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                path.push(format!("f:{key}"));
                collect(v, key, path, out);
                path.pop();
            }
        }
        Value::Array(items) => match keyed(items, field, parent_of(path)) {
            Some(key) => {
                for item in items {
                    path.push(item_segment(item, key));
                    let mut itself = path.clone();
                    itself.push(".".into());
                    out.insert(itself);
                    collect(item, "", path, out);
                    path.pop();
                }
            }
            None => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The field name that contains the list at `path` (`spec` for a Service's ports).
fn parent_of(path: &FieldPath) -> &str {
    path.iter()
        .rev()
        .nth(1)
        .and_then(|s| s.strip_prefix("f:"))
        .unwrap_or("")
}

/// The merge key of a list field whose items are objects that all carry it.
fn keyed<'a>(items: &[Value], field: &str, parent: &str) -> Option<&'a str> {
    let key = merge_key(parent, field)?;
    items.iter().all(|i| i.get(key).is_some()).then_some(key)
}

fn item_segment(item: &Value, key: &str) -> String {
    format!("k:{}", json!({ key: item[key] }))
}

/// FieldsV1: a tree of segments; a leaf is `{}`.
pub fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for segment in path {
            node = node
                .entry(segment.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("a fields tree holds objects");
        }
    }
    Value::Object(root)
}

/// The leaf paths of a FieldsV1 tree.
pub fn from_fields_v1(tree: &Value) -> BTreeSet<FieldPath> {
    fn walk(node: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let Value::Object(map) = node else { return };
        if map.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (segment, child) in map {
            path.push(segment.clone());
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// The value at `path` in `object`.
fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut node = object;
    for segment in path {
        node = if let Some(field) = segment.strip_prefix("f:") {
            node.get(field)?
        } else if let Some(key) = segment.strip_prefix("k:") {
            let key: Value = serde_json::from_str(key).ok()?;
            find_item(node.as_array()?, &key)?
        } else {
            // ".": the item itself.
            node
        };
    }
    Some(node)
}

fn find_item<'a>(items: &'a [Value], key: &Value) -> Option<&'a Value> {
    let key = key.as_object()?;
    items
        .iter()
        .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
}

/// Removes the field (or list item, for a path ending in `.`) at `path`.
fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        let Some((item, list_path)) = parents.split_last() else {
            return;
        };
        let Some(key) = item
            .strip_prefix("k:")
            .and_then(|k| serde_json::from_str::<Value>(k).ok())
        else {
            return;
        };
        if let Some(Value::Array(items)) = value_at_mut(object, list_path) {
            let key = key.as_object().cloned().unwrap_or_default();
            items.retain(|i| !key.iter().all(|(k, v)| i.get(k) == Some(v)));
        }
        return;
    }
    if let (Some(field), Some(Value::Object(parent))) =
        (last.strip_prefix("f:"), value_at_mut(object, parents))
    {
        parent.remove(field);
    }
}

fn value_at_mut<'a>(object: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut node = object;
    for segment in path {
        node = if let Some(field) = segment.strip_prefix("f:") {
            node.get_mut(field)?
        } else if let Some(key) = segment.strip_prefix("k:") {
            let key: Value = serde_json::from_str(key).ok()?;
            let key = key.as_object()?.clone();
            node.as_array_mut()?
                .iter_mut()
                .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else {
            node
        };
    }
    Some(node)
}

/// `config` merged into `live`: objects field by field, keyed lists item by item, anything
/// else replaced.
fn merge(live: Value, config: &Value, field: &str, parent: &str) -> Value {
    match (live, config) {
        (Value::Object(mut live), Value::Object(config)) => {
            for (key, value) in config {
                let current = live.remove(key).unwrap_or(Value::Null);
                live.insert(key.clone(), merge(current, value, key, field));
            }
            Value::Object(live)
        }
        (Value::Array(mut live), Value::Array(items)) => {
            let Some(key) = keyed(items, field, parent) else {
                return Value::Array(items.clone());
            };
            if !live.iter().all(|i| i.get(key).is_some()) {
                return Value::Array(items.clone());
            }
            for item in items {
                match live.iter().position(|l| l.get(key) == item.get(key)) {
                    Some(at) => {
                        let current = std::mem::take(&mut live[at]);
                        live[at] = merge(current, item, "", field);
                    }
                    None => live.push(item.clone()),
                }
            }
            Value::Array(live)
        }
        (_, config) => config.clone(),
    }
}

/// A field another applier owns with another value: (manager, path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub path: FieldPath,
}

impl Conflict {
    /// `.spec.replicas`, `.spec.containers[name="app"].image`.
    pub fn field(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            if let Some(field) = segment.strip_prefix("f:") {
                out.push('.');
                out.push_str(field);
            } else if let Some(key) = segment.strip_prefix("k:") {
                let key: Value = serde_json::from_str(key).unwrap_or(Value::Null);
                let parts: Vec<String> = key
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
        }
        out
    }
}

/// The managedFields entry of one manager.
fn entry(manager: &str, api_version: &str, now: &str, paths: &BTreeSet<FieldPath>) -> Value {
    json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    })
}

/// The object `config` creates for `manager`: the config with its managedFields.
pub fn create(mut config: Value, manager: &str, has_status: bool, now: &str) -> Value {
    let paths = fields_of(&config, has_status);
    let api_version = config["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "managedFields".into(),
            json!([entry(manager, &api_version, now, &paths)]),
        );
    }
    config
}

/// `live` with `config` applied by `manager`, its managedFields updated; the conflicts
/// instead when other appliers own fields `config` changes and `force` is off.
pub fn apply(
    live: &Value,
    config: &Value,
    manager: &str,
    force: bool,
    has_status: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let new_paths = fields_of(config, has_status);
    let mut entries: Vec<Value> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let owned = |e: &Value| from_fields_v1(&e["fieldsV1"]);
    let is_mine = |e: &Value| e["manager"] == manager && e["operation"] == "Apply";

    let mut conflicts = Vec::new();
    for other in entries
        .iter()
        .filter(|e| e["operation"] == "Apply" && !is_mine(e))
    {
        for path in owned(other).intersection(&new_paths) {
            if path.last().is_some_and(|s| s == ".") {
                continue;
            }
            if value_at(live, path) != value_at(config, path) {
                conflicts.push(Conflict {
                    manager: other["manager"].as_str().unwrap_or_default().to_string(),
                    path: path.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }

    let mut object = merge(live.clone(), config, "", "");
    // Fields this manager applied before and now leaves out go, unless someone else has them.
    let before: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| is_mine(e))
        .flat_map(owned)
        .collect();
    let others: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(owned)
        .collect();
    let mut dropped: Vec<&FieldPath> = before
        .difference(&new_paths)
        .filter(|p| !others.contains(*p))
        .collect();
    // Deepest first, so an item's fields go before the item.
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in dropped {
        remove_at(&mut object, path);
    }

    // Forced fields change hands; managers left with nothing disappear.
    let taken: BTreeSet<FieldPath> = conflicts.into_iter().map(|c| c.path).collect();
    let api_version = config["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    entries.retain(|e| !is_mine(e));
    for e in &mut entries {
        if e["operation"] == "Apply" && !taken.is_empty() {
            let kept: BTreeSet<FieldPath> = owned(e).difference(&taken).cloned().collect();
            e["fieldsV1"] = to_fields_v1(&kept);
        }
    }
    entries.retain(|e| e["operation"] != "Apply" || !owned(e).is_empty());
    entries.push(entry(manager, &api_version, now, &new_paths));
    object["metadata"]["managedFields"] = Value::Array(entries);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-30T12:00:00Z";

    fn deployment(replicas: i64, image: &str, extra_env: bool) -> Value {
        let mut env = vec![json!({"name": "A", "value": "1"})];
        if extra_env {
            env.push(json!({"name": "B", "value": "2"}));
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "app", "image": image, "env": env}
            ]}}}
        })
    }

    #[test]
    fn fields_are_recorded_with_list_items_by_key() {
        let paths = fields_of(&deployment(2, "x", false), true);
        let tree = to_fields_v1(&paths);
        assert_eq!(tree["f:metadata"]["f:labels"]["f:app"], json!({}));
        let container =
            &tree["f:spec"]["f:template"]["f:spec"]["f:containers"][r#"k:{"name":"app"}"#];
        assert_eq!(container["."], json!({}));
        assert_eq!(
            container["f:env"][r#"k:{"name":"A"}"#]["f:value"],
            json!({})
        );
        assert!(tree["f:metadata"].get("f:name").is_none());
        assert_eq!(from_fields_v1(&tree), paths);
    }

    #[test]
    fn a_second_applier_conflicts_unless_it_forces() {
        let live = create(deployment(2, "x", false), "alice", true, NOW);
        // Same values: no conflict, both own the fields.
        let shared = apply(&live, &deployment(2, "x", false), "bob", false, true, NOW).unwrap();
        assert_eq!(
            shared["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // A different replica count conflicts with alice's.
        let conflicts =
            apply(&live, &deployment(5, "x", false), "bob", false, true, NOW).unwrap_err();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].manager, "alice");
        assert_eq!(conflicts[0].field(), ".spec.replicas");
        let image = apply(&live, &deployment(2, "y", false), "bob", false, true, NOW).unwrap_err();
        assert_eq!(
            image[0].field(),
            r#".spec.template.spec.containers[name="app"].image"#
        );
        // Forced: bob takes replicas over, alice keeps the rest.
        let forced = apply(&live, &deployment(5, "x", false), "bob", true, true, NOW).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        let alice = &forced["metadata"]["managedFields"][0];
        assert_eq!(alice["manager"], "alice");
        assert!(alice["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        assert!(alice["fieldsV1"]["f:spec"].get("f:template").is_some());
    }

    #[test]
    fn what_a_manager_stops_applying_goes_and_keyed_lists_merge() {
        let live = create(deployment(2, "x", true), "alice", true, NOW);
        // Someone else added an env entry outside apply: it stays.
        let mut live = live;
        live["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "C", "value": "3"}));
        let mut config = deployment(2, "x", false);
        config["metadata"]["labels"] = json!({});
        let after = apply(&live, &config, "alice", false, true, NOW).unwrap();
        let env: Vec<&str> = after["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            env,
            ["A", "C"],
            "B was alice's and is gone; C was never hers"
        );
        assert!(after["metadata"]["labels"].get("app").is_none());
        assert_eq!(
            after["metadata"]["managedFields"].as_array().unwrap().len(),
            1
        );
    }
}
