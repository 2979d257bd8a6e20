//! The three patch formats `kubectl` sends: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902) and strategic merge patch (lists merged by key, `$patch` directives).

use serde_json::{Map, Value};

/// Which patch a request carries, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Merge,
    Json,
    Strategic,
}

impl Kind {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(Kind::Merge),
            "application/json-patch+json" => Some(Kind::Json),
            "application/strategic-merge-patch+json" => Some(Kind::Strategic),
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a JSON patch must be a list of operations: {0}")]
    NotOperations(#[source] serde_json::Error),
    #[error("{0}")]
    Failed(#[from] json_patch::PatchError),
}

/// `patch` applied to `target`.
pub fn apply(kind: Kind, target: &Value, patch: &Value) -> Result<Value, Error> {
    let mut doc = target.clone();
    match kind {
        Kind::Merge => json_patch::merge(&mut doc, patch),
        Kind::Json => {
            let operations: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(Error::NotOperations)?;
            json_patch::patch(&mut doc, &operations)?;
        }
        Kind::Strategic => doc = strategic(doc, patch, ""),
    }
    Ok(doc)
}

/// The key that identifies elements of a list field in a strategic merge patch, as the
/// Kubernetes types declare it (`patchMergeKey`). Lists without one are replaced whole.
pub(super) fn merge_key(parent: &str, field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "hostAliases" => match field {
            "hostAliases" => "ip",
            _ => "name",
        },
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" if parent == "spec" => "port",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "addresses" => "type",
        "topologySpreadConstraints" => "topologyKey",
        "resourceClaims" => "name",
        _ => return None,
    })
}

/// Strategic merge patch: like a merge patch, except that lists with a merge key are merged
/// element by element, and the directives `$patch` (`delete`, `replace`, `merge`),
/// `$retainKeys`, `$deleteFromPrimitiveList/…` and `$setElementOrder/…` are honoured.
pub fn strategic(target: Value, patch: &Value, parent: &str) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        replacement.remove("$patch");
        return strip_directives(Value::Object(replacement));
    }
    let mut target = match target {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (target.get_mut(field), value)
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if value.is_null() {
            target.remove(key);
            continue;
        }
        let current = target.remove(key).unwrap_or(Value::Null);
        let merged = match (current, value, merge_key(parent, key)) {
            (Value::Array(existing), Value::Array(items), Some(merge_key)) => {
                Value::Array(merge_list(existing, items, merge_key, key))
            }
            (current, Value::Object(_), _) => strategic(current, value, key),
            (_, value, _) => strip_directives(value.clone()),
        };
        target.insert(key.clone(), merged);
    }
    Value::Object(target)
}

fn merge_list(
    mut existing: Vec<Value>,
    patch: &[Value],
    merge_key: &str,
    field: &str,
) -> Vec<Value> {
    for item in patch {
        let key = item.get(merge_key);
        let position = key.and_then(|k| existing.iter().position(|e| e.get(merge_key) == Some(k)));
        match (item.get("$patch").and_then(Value::as_str), position) {
            (Some("delete"), Some(i)) => {
                existing.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => {
                let current = std::mem::take(&mut existing[i]);
                existing[i] = strategic(current, item, field);
            }
            (_, None) => existing.push(strip_directives(item.clone())),
        }
    }
    existing
}

fn strip_directives(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_directives).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let out = apply(
            Kind::Merge,
            &doc,
            &json!({"a": {"b": null, "d": 3}, "l": [3]}),
        )
        .unwrap();
        assert_eq!(out, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_patch_of_one_env_entry_keeps_the_others() {
        let pod = json!({"spec": {"containers": [{"name": "app", "image": "a:1", "env": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}});
        let patch = json!({"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "20"}],
            "$setElementOrder/env": [{"name": "A"}, {"name": "B"}]}]}});
        let out = strategic(pod, &patch, "");
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}])
        );
        assert_eq!(out["spec"]["containers"][0]["image"], "a:1");
    }

    #[test]
    fn strategic_directives() {
        let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "x": {"k": 1}}});
        let out = strategic(
            doc.clone(),
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            "",
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
        let out = strategic(
            doc,
            &json!({"spec": {"x": {"$patch": "replace", "j": 2}}}),
            "",
        );
        assert_eq!(out["spec"]["x"], json!({"j": 2}));
    }

    #[test]
    fn json_patch_ops_and_failures() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "l": [1, 2]});
        let out = apply(
            Kind::Json,
            &doc,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/l/0", "value": 9},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "add", "path": "/l/-", "value": 3},
                {"op": "test", "path": "/l/2", "value": 3}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2"}}, "l": [9, 2, 3]})
        );
        let missing = apply(
            Kind::Json,
            &doc,
            &json!([{"op": "remove", "path": "/nope"}]),
        );
        assert!(missing.unwrap_err().to_string().contains("/nope"));
        let not_a_list = apply(Kind::Json, &doc, &json!({"op": "add"}));
        assert!(matches!(not_a_list, Err(Error::NotOperations(_))));
        let test_failed = apply(
            Kind::Json,
            &doc,
            &json!([{"op": "test", "path": "/l/0", "value": 5}]),
        );
        assert!(test_failed.is_err());
    }
}
