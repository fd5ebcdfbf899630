//! `as=Table` responses (meta.k8s.io/v1 Table), as `kubectl get` asks for them: column
//! definitions per resource, one row per object, each row's object a
//! PartialObjectMetadata (or the full object with `includeObject=Object`).

use serde_json::{Value, json};

use super::resources::Resource;

/// Whether an Accept header asks for a Table first.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

pub fn table(resource: &Resource, objects: &[Value], rv: u64, include_object: bool) -> Value {
    let columns: Vec<Value> = columns(resource)
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            json!({
                "name": name, "type": kind, "format": if i == 0 { "name" } else { "" },
                "description": format!("{name} of the object"), "priority": 0
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| row(resource, o, include_object))
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns, "rows": rows,
    })
}

fn columns(resource: &Resource) -> &'static [(&'static str, &'static str)] {
    match resource.name {
        "pods" => &[
            ("Name", "string"),
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
            ("Age", "string"),
        ],
        "secrets" => &[
            ("Name", "string"),
            ("Type", "string"),
            ("Data", "string"),
            ("Age", "string"),
        ],
        "configmaps" => &[("Name", "string"), ("Data", "string"), ("Age", "string")],
        "deployments" => &[
            ("Name", "string"),
            ("Ready", "string"),
            ("Up-to-date", "string"),
            ("Available", "string"),
            ("Age", "string"),
        ],
        "namespaces" => &[("Name", "string"), ("Status", "string"), ("Age", "string")],
        _ => &[("Name", "string"), ("Age", "string")],
    }
}

fn row(resource: &Resource, obj: &Value, include_object: bool) -> Value {
    let name = obj["metadata"]["name"].clone();
    let age = json!("1m");
    let count = |v: &Value| json!(v.as_object().map_or(0, serde_json::Map::len));
    let cells = match resource.name {
        "pods" => {
            let containers = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            let phase = obj["status"]["phase"].as_str().unwrap_or("Pending");
            let ready = if phase == "Running" { containers } else { 0 };
            vec![
                name,
                json!(format!("{ready}/{containers}")),
                json!(phase),
                json!("0"),
                age,
            ]
        }
        "secrets" => vec![name, obj["type"].clone(), count(&obj["data"]), age],
        "configmaps" => vec![name, count(&obj["data"]), age],
        "deployments" => {
            let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            vec![
                name,
                json!(format!("{replicas}/{replicas}")),
                json!(replicas),
                json!(replicas),
                age,
            ]
        }
        "namespaces" => vec![name, json!("Active"), age],
        _ => vec![name, age],
    };
    let object = if include_object {
        obj.clone()
    } else {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
    };
    json!({"cells": cells, "object": object})
}
