//! Strategic merge patch (`application/strategic-merge-patch+json`) for the built-in
//! kinds the double serves, as apimachinery's `strategicpatch` applies it: maps merge
//! (null deletes), lists with a patch merge key merge element by element, `finalizers`
//! merges as a set, other lists are replaced; the directives `$patch` (replace,
//! delete, merge), `$retainKeys`, `$setElementOrder/FIELD` and
//! `$deleteFromPrimitiveList/FIELD` are honoured and never stored.
//!
//! Not here: the Go struct tags themselves. Merge keys come from a table keyed by the
//! field's name, which is unambiguous for the kinds served (the real server reads the
//! tags of the field's Go type: a Service's `ports` would merge on `port`, not
//! `containerPort`, but Services are not served).

use serde_json::{Map, Value};

/// The merge key of a list field, or `None` for a list that is replaced whole.
pub(crate) fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Lists of scalars whose patch strategy is merge (a set union).
pub(crate) fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

/// Applies `patch` to `original`.
pub(crate) fn apply(original: &Value, patch: &Value) -> Result<Value, String> {
    let (Value::Object(original), Value::Object(patch)) = (original, patch) else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    let mut out = original.clone();
    match merge_map(&mut out, patch)? {
        Outcome::Keep => Ok(Value::Object(out)),
        Outcome::Delete => Err("$patch: delete of the whole object is not allowed".into()),
    }
}

enum Outcome {
    Keep,
    Delete,
}

fn merge_map(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Outcome, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(Outcome::Delete),
        Some("replace") => {
            *original = clean_map(patch);
            return Ok(Outcome::Keep);
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other} in map")),
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(p) => match original.get_mut(key) {
                Some(Value::Object(o)) => {
                    if let Outcome::Delete = merge_map(o, p)? {
                        original.remove(key);
                    }
                }
                _ if p.get("$patch").and_then(Value::as_str) == Some("delete") => {
                    original.remove(key);
                }
                _ => {
                    original.insert(key.clone(), Value::Object(clean_map(p)));
                }
            },
            Value::Array(p) => {
                let merged = match original.get_mut(key) {
                    Some(Value::Array(o)) => merge_list(key, o, p)?,
                    _ => p.iter().filter(|e| !is_directive(e)).map(clean).collect(),
                };
                original.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                original.insert(key.clone(), scalar.clone());
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let doomed = value
                .as_array()
                .ok_or("$deleteFromPrimitiveList needs a list")?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !doomed.contains(v));
            }
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            let order = value.as_array().ok_or("$setElementOrder needs a list")?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                reorder(field, list, order);
            }
        }
    }
    Ok(Outcome::Keep)
}

fn merge_list(field: &str, original: &[Value], patch: &[Value]) -> Result<Vec<Value>, String> {
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|e| !is_directive(e))
            .map(clean)
            .collect());
    }
    if merges_as_set(field) {
        let mut out = original.to_vec();
        for v in patch {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Ok(out);
    }
    let Some(key) = merge_key(field) else {
        return Ok(patch.iter().map(clean).collect());
    };
    let mut out = original.to_vec();
    for element in patch {
        let Value::Object(p) = element else {
            return Err(format!(
                "{field}: elements of a merging list must be objects"
            ));
        };
        let id = p.get(key);
        let at = out.iter().position(|o| o.get(key) == id && id.is_some());
        if p.get("$patch").and_then(Value::as_str) == Some("delete") {
            out.retain(|o| o.get(key) != id);
            continue;
        }
        match at {
            Some(i) => {
                let Value::Object(o) = &mut out[i] else {
                    continue;
                };
                if let Outcome::Delete = merge_map(o, p)? {
                    out.remove(i);
                }
            }
            None => out.push(Value::Object(clean_map(p))),
        }
    }
    Ok(out)
}

/// Puts the elements named in `order` first, in that order; the rest keep theirs.
fn reorder(field: &str, list: &mut [Value], order: &[Value]) {
    let id = |v: &Value| match merge_key(field) {
        Some(key) => v.get(key).cloned(),
        None => Some(v.clone()),
    };
    let rank = |v: &Value| {
        let this = id(v);
        order
            .iter()
            .position(|o| this.is_some() && id(o) == this)
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank); // stable: unnamed elements keep their relative order
}

fn is_directive(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.len() == 1 && m.contains_key("$patch"))
}

fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        Value::Array(a) => Value::Array(a.iter().filter(|e| !is_directive(e)).map(clean).collect()),
        other => other.clone(),
    }
}

/// A value from a patch, without directives, as it is stored when nothing merges into it.
fn clean_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), clean(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::apply;

    #[test]
    fn containers_merge_by_name_and_keep_unpatched_fields() {
        let deploy = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}]}}}});
        // What `kubectl set image deployment/web app=nginx:2` sends.
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}});
        let out = apply(&deploy, &patch).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "nginx:2", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "busybox"}])
        );
    }

    #[test]
    fn directives_are_applied_not_stored() {
        let pod = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}],
                     "tolerations": [{"key": "k"}]}});
        // The shape `kubectl apply` sends: element order, a deletion, a set union.
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"],
                                        "labels": {"$patch": "replace", "z": "3"}},
            "spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "b"}],
                     "containers": [{"name": "a", "$patch": "delete"}, {"name": "c", "image": "3"}],
                     "tolerations": [{"key": "other"}]}});
        let out = apply(&pod, &patch).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["b", "c"], "labels": {"z": "3"}},
                   "spec": {"containers": [{"name": "c", "image": "3"}, {"name": "b", "image": "2"}],
                            "tolerations": [{"key": "other"}]}})
        );
    }

    #[test]
    fn null_deletes_and_retain_keys_prunes() {
        let obj = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, "paused": true}});
        let patch = json!({"spec": {"paused": null, "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        assert_eq!(
            apply(&obj, &patch).unwrap(),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );
    }
}
