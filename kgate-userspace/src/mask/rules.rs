//! The masking of one parsed object: which fields of which kind are replaced, and by
//! what. Pure functions over `serde_json::Value`, no I/O.
//!
//! Not here: finding objects in a response stream (see `scanner`), or deciding which
//! requests are masked (see `Masker::plan`).

use regex::RegexSet;
use serde_json::{Map, Value};

/// A masked Secret `data` or ConfigMap `binaryData` value: valid base64, so clients
/// that decode it keep working; it decodes to `kgate:masked`.
pub const MASKED_BASE64: &str = "a2dhdGU6bWFza2Vk";
/// A masked plain-text value (`stringData`, ConfigMap `data`, env values, annotations).
pub const MASKED_TEXT: &str = "kgate:masked";
/// Embeds the whole object as the client last applied it, values included.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The rules, compiled once.
#[derive(Debug)]
pub struct Rules {
    pub config_map_keys: Option<RegexSet>,
    pub env_names: Option<RegexSet>,
    pub annotations: Vec<String>,
}

/// What the objects of one response are, as the request's resource says (list items
/// carry no `kind`, so the resource decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Secret,
    ConfigMap,
    /// Objects holding a pod spec at this path.
    PodSpec(&'static [&'static str]),
    /// Only the annotation rules apply.
    Other,
}

/// Masks `value` and, whatever its `kind` claims, every object nested where a list
/// (`items`) or a Table (`rows[].object`) carries objects.
pub(super) fn mask_value(rules: &Rules, target: Target, value: &mut Value) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    mask_object(rules, target, obj);
    if let Some(Value::Array(items)) = obj.get_mut("items") {
        for item in items {
            mask_value(rules, target, item);
        }
    }
    if let Some(Value::Array(rows)) = obj.get_mut("rows") {
        for row in rows {
            mask_row(rules, target, row);
        }
    }
}

/// A Table row: its cells are the server's printer columns, which for the kinds
/// masked here show no masked value (a Secret's show a key count); its object may be
/// the full object or its metadata.
pub(super) fn mask_row(rules: &Rules, target: Target, row: &mut Value) {
    if let Some(object) = row.get_mut("object") {
        mask_value(rules, target, object);
    }
}

fn mask_object(rules: &Rules, target: Target, obj: &mut Map<String, Value>) {
    match target {
        Target::Secret => {
            replace_values(obj, "data", MASKED_BASE64, |_| true);
            replace_values(obj, "stringData", MASKED_TEXT, |_| true);
        }
        Target::ConfigMap => {
            if let Some(keys) = &rules.config_map_keys {
                replace_values(obj, "data", MASKED_TEXT, |k| keys.is_match(k));
                replace_values(obj, "binaryData", MASKED_BASE64, |k| keys.is_match(k));
            }
        }
        Target::PodSpec(path) => {
            if let (Some(names), Some(spec)) = (&rules.env_names, pointer(obj, path)) {
                mask_pod_spec(spec, names);
            }
        }
        Target::Other => {}
    }
    let Some(Value::Object(annotations)) = obj
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
    else {
        return;
    };
    match annotations.get_mut(LAST_APPLIED) {
        Some(Value::String(applied)) => {
            if let Some(masked) = mask_last_applied(rules, target, applied) {
                *applied = masked;
            }
        }
        // Never sent by an API server (annotations are strings); cannot be checked.
        Some(other) => *other = Value::String(MASKED_TEXT.to_owned()),
        None => {}
    }
    for name in &rules.annotations {
        if let Some(value) = annotations.get_mut(name) {
            *value = Value::String(MASKED_TEXT.to_owned());
        }
    }
}

/// The `last-applied-configuration` annotation with the values masked inside it, or
/// `None` when it holds nothing to mask (then it stays byte for byte as stored).
///
/// kubectl's client-side apply diffs against this annotation: its keys and structure
/// must survive, or a later apply stops pruning what the user removed. Only values
/// change, by the same rules as the object it describes. One that is not JSON cannot
/// be checked, so it is replaced as a whole (fail closed).
pub(super) fn mask_last_applied(rules: &Rules, target: Target, applied: &str) -> Option<String> {
    let Ok(Value::Object(mut inner)) = serde_json::from_str::<Value>(applied) else {
        return Some(MASKED_TEXT.to_owned());
    };
    let before = inner.clone();
    // The annotation never embeds itself (kubectl strips it), so this recurses one
    // level at most.
    mask_object(rules, target, &mut inner);
    if inner == before {
        return None;
    }
    let Ok(mut masked) = serde_json::to_string(&inner) else {
        return Some(MASKED_TEXT.to_owned());
    };
    // kubectl writes the annotation with a trailing newline; keep the shape.
    if applied.ends_with('\n') {
        masked.push('\n');
    }
    Some(masked)
}

/// Replaces the values of the string map `obj[field]` whose keys pass `select`.
fn replace_values(
    obj: &mut Map<String, Value>,
    field: &str,
    with: &str,
    select: impl Fn(&str) -> bool,
) {
    let Some(Value::Object(map)) = obj.get_mut(field) else {
        return;
    };
    for (key, value) in map.iter_mut() {
        if select(key) {
            *value = Value::String(with.to_owned());
        }
    }
}

fn pointer<'a>(obj: &'a mut Map<String, Value>, path: &[&str]) -> Option<&'a mut Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(obj.get_mut(*first)?, |v, key| v.get_mut(*key))
}

/// Masks matching `env[].value` in every container list of a pod spec.
fn mask_pod_spec(spec: &mut Value, names: &RegexSet) {
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for container in containers {
            let Some(Value::Array(env)) = container.get_mut("env") else {
                continue;
            };
            for var in env {
                let matches = var
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| names.is_match(n));
                if let (true, Some(value)) = (matches, var.get_mut("value")) {
                    *value = Value::String(MASKED_TEXT.to_owned());
                }
            }
        }
    }
}
