//! Server-side apply (`PATCH` with `application/apply-patch+yaml`, `kubectl apply
//! --server-side`): the request is the manager's whole intent for the object. The fields it
//! sets are recorded as that manager's in `metadata.managedFields` (FieldsV1, as Kubernetes
//! writes it); applying a field another applier owns with a different value is a conflict
//! (409) unless `force=true`, which takes the field over; fields the manager applied before
//! and no longer does are removed unless another manager owns them too.
//!
//! Lists merge as strategic merge patch merges them: by their merge key (`patch.rs`), item
//! by item; other lists are atomic.
//!
//! Every other write (create, update, patch, on the object or its status or scale) is an
//! `Update` entry of its manager (`record_update`): the fields whose values it changed become
//! that manager's and leave everyone else's, without conflict, as in Kubernetes. An applier
//! then conflicts with those fields too (`kubectl scale` and then an apply of other replicas
//! is refused until forced).

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

/// A field another manager owns with another value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    /// The apiVersion the other manager wrote through, for an `Update` (Kubernetes names it
    /// in the message); None for an applier.
    pub updated_through: Option<String>,
    pub path: FieldPath,
}

impl Conflict {
    /// `conflict with "kubectl-scale" using apps/v1: .spec.replicas`, as Kubernetes says it.
    pub fn message(&self) -> String {
        match &self.updated_through {
            Some(version) => format!(
                "conflict with {:?} using {version}: {}",
                self.manager,
                self.field()
            ),
            None => format!("conflict with {:?}: {}", self.manager, self.field()),
        }
    }

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

/// The managedFields entry of one manager's `Apply`, or with `update` of its `Update` (through
/// `subresource`, if any).
fn entry(
    manager: &str,
    update: Option<Option<&str>>,
    api_version: &str,
    now: &str,
    paths: &BTreeSet<FieldPath>,
) -> Value {
    let mut entry = json!({
        "manager": manager,
        "operation": if update.is_some() { "Update" } else { "Apply" },
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    });
    if let Some(Some(subresource)) = update {
        entry["subresource"] = json!(subresource);
    }
    entry
}

/// The fields a write through `subresource` can change in `object`: the status alone through
/// `status`, else the object's fields but its status (where a status subresource has it).
fn fields_in_scope(
    object: &Value,
    subresource: Option<&str>,
    has_status: bool,
) -> BTreeSet<FieldPath> {
    if subresource == Some("status") {
        let mut out = BTreeSet::new();
        if let Some(status) = object.get("status") {
            collect(status, "status", &mut vec!["f:status".into()], &mut out);
        }
        return out;
    }
    fields_of(object, has_status)
}

/// Records in `new`'s managedFields a write by `manager` other than apply (an `Update`):
/// `old` is the object before it, None for a create. The fields whose values the write
/// changed become the manager's and leave every other entry, as do fields it removed;
/// entries left owning nothing disappear. A write that changes no field leaves them be.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    has_status: bool,
    now: &str,
) {
    let after = fields_in_scope(new, subresource, has_status);
    let before = old
        .map(|o| fields_in_scope(o, subresource, has_status))
        .unwrap_or_default();
    let changed: BTreeSet<FieldPath> = after
        .iter()
        .filter(|path| match old {
            None => true,
            // A list item itself changes by appearing; its fields are paths of their own.
            Some(old) if path.last().is_some_and(|s| s == ".") => {
                value_at(old, &path[..path.len() - 1]).is_none()
            }
            Some(old) => value_at(old, path) != value_at(new, path),
        })
        .cloned()
        .collect();
    let removed: BTreeSet<FieldPath> = before.difference(&after).cloned().collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    let api_version = new["apiVersion"].as_str().unwrap_or_default().to_string();
    let mut entries: Vec<Value> = new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_mine = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Update"
            && e.get("subresource").and_then(Value::as_str) == subresource
    };
    let mut mine: BTreeSet<FieldPath> = BTreeSet::new();
    let mut at = None;
    for (i, e) in entries.iter_mut().enumerate() {
        let owned = from_fields_v1(&e["fieldsV1"]);
        if is_mine(e) {
            mine = owned;
            at = Some(i);
            continue;
        }
        let kept: BTreeSet<FieldPath> = owned
            .iter()
            .filter(|p| !changed.contains(*p) && !removed.contains(*p))
            .cloned()
            .collect();
        if kept.len() != owned.len() {
            e["fieldsV1"] = to_fields_v1(&kept);
        }
    }
    mine.extend(changed);
    mine.retain(|p| !removed.contains(p));
    let updated = entry(manager, Some(subresource), &api_version, now, &mine);
    match at {
        Some(i) => entries[i] = updated,
        None => entries.push(updated),
    }
    // (An entry owning nothing has the empty tree `{}`.)
    entries.retain(|e| e["fieldsV1"].as_object().is_some_and(|f| !f.is_empty()));
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
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
            json!([entry(manager, None, &api_version, now, &paths)]),
        );
    }
    config
}

/// The manager whose applies take over what client-side `kubectl apply` set (Kubernetes'
/// upgrade path from client-side to server-side apply): a conflict over a field whose live
/// value is still the one in the `kubectl.kubernetes.io/last-applied-configuration`
/// annotation is no conflict for it, and the field moves to it as if forced. kubectl then
/// moves the rest of the client-side applier's fields itself (a JSON patch of managedFields).
const UPGRADING_MANAGER: &str = "kubectl";

/// The configuration `kubectl apply` (client-side) last applied to `live`, if any.
fn last_applied(live: &Value) -> Option<Value> {
    let text = live
        .pointer("/metadata/annotations")?
        .get("kubectl.kubernetes.io/last-applied-configuration")?
        .as_str()?;
    serde_json::from_str(text).ok()
}

/// `live` with `config` applied by `manager`, its managedFields updated; the conflicts
/// instead when other managers (appliers or updaters) own fields `config` changes and
/// `force` is off.
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
    for other in entries.iter().filter(|e| !is_mine(e)) {
        for path in owned(other).intersection(&new_paths) {
            if path.last().is_some_and(|s| s == ".") {
                continue;
            }
            if value_at(live, path) != value_at(config, path) {
                conflicts.push(Conflict {
                    manager: other["manager"].as_str().unwrap_or_default().to_string(),
                    updated_through: (other["operation"] == "Update")
                        .then(|| other["apiVersion"].as_str().unwrap_or_default().to_string()),
                    path: path.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let last_applied = (manager == UPGRADING_MANAGER)
            .then(|| last_applied(live))
            .flatten();
        let standing: Vec<Conflict> = conflicts
            .iter()
            .filter(|c| {
                !last_applied.as_ref().is_some_and(|last| {
                    value_at(last, &c.path).is_some_and(|v| value_at(live, &c.path) == Some(v))
                })
            })
            .cloned()
            .collect();
        if !standing.is_empty() {
            return Err(standing);
        }
        // Every conflict is over a field `kubectl apply` set: it changes hands as if forced.
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
    if !taken.is_empty() {
        for e in &mut entries {
            let kept: BTreeSet<FieldPath> = owned(e).difference(&taken).cloned().collect();
            e["fieldsV1"] = to_fields_v1(&kept);
        }
    }
    entries.retain(|e| !owned(e).is_empty());
    entries.push(entry(manager, None, &api_version, now, &new_paths));
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

    fn managers(object: &Value) -> Vec<(String, String, Option<String>)> {
        object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap().to_string(),
                    e["operation"].as_str().unwrap().to_string(),
                    e["subresource"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    fn owned_by(object: &Value, manager: &str) -> BTreeSet<FieldPath> {
        object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["manager"] == manager)
            .flat_map(|e| from_fields_v1(&e["fieldsV1"]))
            .collect()
    }

    fn path(segments: &[&str]) -> FieldPath {
        segments.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn updates_take_over_the_fields_they_change_and_drop_the_ones_they_remove() {
        let mut created = deployment(2, "x", true);
        record_update(None, &mut created, "kubectl-create", None, true, NOW);
        assert_eq!(
            managers(&created),
            [("kubectl-create".into(), "Update".into(), None)]
        );
        let replicas = path(&["f:spec", "f:replicas"]);
        assert!(owned_by(&created, "kubectl-create").contains(&replicas));

        // A scale changes replicas only: that field moves, the rest stays the creator's.
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(
            Some(&created),
            &mut scaled,
            "kubectl-scale",
            Some("scale"),
            true,
            NOW,
        );
        assert_eq!(
            owned_by(&scaled, "kubectl-scale"),
            BTreeSet::from([replicas.clone()])
        );
        assert!(!owned_by(&scaled, "kubectl-create").contains(&replicas));
        assert_eq!(managers(&scaled)[1].2.as_deref(), Some("scale"));

        // Writing the same values again records nothing.
        let mut same = scaled.clone();
        record_update(Some(&scaled), &mut same, "someone", None, true, NOW);
        assert_eq!(managers(&same).len(), 2);

        // An edit removing env B and setting the label: B leaves the creator's set.
        let mut edited = scaled.clone();
        edited["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}]);
        record_update(Some(&scaled), &mut edited, "kubectl-edit", None, true, NOW);
        let b = path(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            r#"k:{"name":"app"}"#,
            "f:env",
            r#"k:{"name":"B"}"#,
            ".",
        ]);
        assert!(owned_by(&scaled, "kubectl-create").contains(&b));
        assert!(!owned_by(&edited, "kubectl-create").contains(&b));
        // Removing is not owning: the editor changed no value, so it has no entry.
        assert_eq!(managers(&edited).len(), 2);

        // A status write is an entry of its own, of status fields only.
        let mut reported = edited.clone();
        reported["status"] = json!({"replicas": 5});
        record_update(
            Some(&edited),
            &mut reported,
            "controller",
            Some("status"),
            true,
            NOW,
        );
        assert_eq!(
            owned_by(&reported, "controller"),
            BTreeSet::from([path(&["f:status", "f:replicas"])])
        );
    }

    #[test]
    fn an_applier_conflicts_with_an_updater_unless_it_forces() {
        let live = create(deployment(2, "x", false), "alice", true, NOW);
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(
            Some(&live),
            &mut scaled,
            "kubectl-scale",
            Some("scale"),
            true,
            NOW,
        );
        // The scale took replicas from alice: her next apply of 2 conflicts with it.
        let conflicts = apply(
            &scaled,
            &deployment(2, "x", false),
            "alice",
            false,
            true,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            conflicts[0].message(),
            r#"conflict with "kubectl-scale" using apps/v1: .spec.replicas"#
        );
        // Applying the value the updater set is no conflict; forcing takes the field back.
        apply(
            &scaled,
            &deployment(5, "x", false),
            "alice",
            false,
            true,
            NOW,
        )
        .unwrap();
        let forced = apply(
            &scaled,
            &deployment(2, "x", false),
            "alice",
            true,
            true,
            NOW,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        assert_eq!(managers(&forced), [("alice".into(), "Apply".into(), None)]);
    }

    #[test]
    fn kubectl_takes_over_what_client_side_apply_set() {
        // `kubectl apply` (client-side) created it: an Update entry, and the annotation.
        let mut created = deployment(2, "x", false);
        created["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration":
                deployment(2, "x", false).to_string(),
        });
        record_update(
            None,
            &mut created,
            "kubectl-client-side-apply",
            None,
            true,
            NOW,
        );
        // kubectl's server-side apply of new replicas: no conflict, replicas change hands.
        let applied = apply(
            &created,
            &deployment(3, "x", false),
            "kubectl",
            false,
            true,
            NOW,
        )
        .unwrap();
        assert_eq!(applied["spec"]["replicas"], 3);
        let replicas = path(&["f:spec", "f:replicas"]);
        assert!(owned_by(&applied, "kubectl").contains(&replicas));
        assert!(!owned_by(&applied, "kubectl-client-side-apply").contains(&replicas));
        // Another manager gets the conflict, and so does kubectl over a field someone changed
        // since the last client-side apply.
        apply(
            &created,
            &deployment(3, "x", false),
            "bob",
            false,
            true,
            NOW,
        )
        .unwrap_err();
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(
            Some(&created),
            &mut scaled,
            "kubectl-client-side-apply",
            None,
            true,
            NOW,
        );
        let refused = apply(
            &scaled,
            &deployment(3, "x", false),
            "kubectl",
            false,
            true,
            NOW,
        )
        .unwrap_err();
        assert_eq!(refused[0].field(), ".spec.replicas");
    }
}
