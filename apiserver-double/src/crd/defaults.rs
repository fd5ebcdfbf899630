//! The defaults of a structural schema, as `defaulting.ValidateDefaults`
//! (pkg/apiserver/schema/defaulting/validation.go, 1.32) checks them: each must
//! survive pruning unchanged ("must not have unknown fields") and pass the schema's
//! validation, of which kube-openapi's enum check is modelled (`field.NotSupported`,
//! as `kubeOpenAPIResultToFieldErrors` turns it).
//!
//! Not here: a default's type, bounds and required fields; defaults inside the root's
//! `metadata`, `kind` and `apiVersion` (the OpenAPI rules refuse those anyway).

use serde_json::{Map, Value};

use super::{
    field::{FieldError, Path, go_value},
    schema::{additional_schema, is_true, properties},
};

/// Every default error below `path` (`…openAPIV3Schema`).
pub(super) fn validate(schema: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    walk(schema, path, true, errs);
}

/// Each default must survive pruning unchanged and satisfy its schema's enums.
/// Defaults inside `metadata`, `kind` and `apiVersion` of the root are refused by the
/// OpenAPI rules instead.
fn walk(s: &Value, path: &Path, root: bool, errs: &mut Vec<FieldError>) {
    if let Some(default) = s.get("default").filter(|d| !d.is_null()) {
        let at = path.child("default");
        let mut pruned = default.clone();
        prune(&mut pruned, s);
        if &pruned != default {
            errs.push(FieldError::invalid(
                &at,
                &go_value(default),
                "must not have unknown fields",
            ));
        } else {
            enums(default, s, &at, errs);
        }
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        walk(items, &path.child("items"), false, errs);
    }
    for (k, p) in properties(s) {
        if root && matches!(k.as_str(), "metadata" | "kind" | "apiVersion") {
            continue;
        }
        walk(p, &path.child("properties").key(k), false, errs);
    }
}

/// Drops the fields of `value` that `s` does not specify (`pruning.Prune`).
fn prune(value: &mut Value, s: &Value) {
    if is_true(s, "x-kubernetes-preserve-unknown-fields") {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(values) = additional_schema(s) {
                map.values_mut().for_each(|v| prune(v, values));
            } else if s.get("additionalProperties") != Some(&Value::Bool(true)) {
                let empty = Map::new();
                let known = s["properties"].as_object().unwrap_or(&empty);
                map.retain(|k, _| known.contains_key(k));
                for (k, v) in map.iter_mut() {
                    prune(v, &known[k]);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.get("items") {
                items.iter_mut().for_each(|v| prune(v, item));
            }
        }
        _ => {}
    }
}

/// kube-openapi's enum check over a value and what it contains, as
/// `field.NotSupported` errors (`kubeOpenAPIResultToFieldErrors`).
fn enums(value: &Value, s: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    if let Some(allowed) = s["enum"].as_array()
        && !allowed.is_empty()
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed
            .iter()
            .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(path, &go_value(value), &names));
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let sub = s["properties"].get(k).or_else(|| additional_schema(s));
                if let Some(sub) = sub {
                    enums(v, sub, &path.child(k), errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.get("items") {
                for (i, v) in items.iter().enumerate() {
                    enums(v, item, &path.index(i), errs);
                }
            }
        }
        _ => {}
    }
}
