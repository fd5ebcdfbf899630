//! `as=Table` responses (meta.k8s.io/v1 Table), as `kubectl get` asks for them: the
//! column definitions of the real server's printers (priority-1 columns are what
//! `-o wide` adds), one row per object, each row's object a PartialObjectMetadata
//! (or the full object with `includeObject=Object`), ages computed from
//! `creationTimestamp` the way the server's `HumanDuration` prints them.
//!
//! Not here: columns of kinds the double does not serve, `includeObject=None`.

use serde_json::{Value, json};

use super::resources::Resource;

/// Whether an Accept header asks for a Table first.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// (name, type, priority) of each column.
type Column = (&'static str, &'static str, u8);

fn columns(resource: &Resource) -> &'static [Column] {
    match resource.name {
        "pods" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "secrets" => &[
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "configmaps" => &[
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "serviceaccounts" => &[
            ("Name", "string", 0),
            ("Secrets", "integer", 0),
            ("Age", "string", 0),
        ],
        "deployments" => &[
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "namespaces" => &[
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        _ => &[("Name", "string", 0), ("Age", "string", 0)],
    }
}

pub(crate) fn table(
    resource: &Resource,
    objects: &[Value],
    rv: u64,
    include_object: bool,
) -> Value {
    let columns: Vec<Value> = columns(resource)
        .iter()
        .map(|(name, kind, priority)| {
            json!({
                "name": name, "type": kind, "format": if *name == "Name" { "name" } else { "" },
                "description": format!("{name} of the object"), "priority": priority
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

fn row(resource: &Resource, obj: &Value, include_object: bool) -> Value {
    let name = obj["metadata"]["name"].clone();
    let age = json!(age(obj["metadata"]["creationTimestamp"].as_str()));
    let count = |v: &Value| json!(v.as_object().map_or(0, serde_json::Map::len));
    let or_none = |v: &Value| json!(v.as_str().filter(|s| !s.is_empty()).unwrap_or("<none>"));
    let cells = match resource.name {
        "pods" => {
            let containers = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            let statuses = obj["status"]["containerStatuses"].as_array();
            let ready = statuses
                .into_iter()
                .flatten()
                .filter(|s| s["ready"] == true)
                .count();
            let restarts: i64 = statuses
                .into_iter()
                .flatten()
                .filter_map(|s| s["restartCount"].as_i64())
                .sum();
            let phase = if obj["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else {
                obj["status"]["phase"].as_str().unwrap_or("Pending")
            };
            vec![
                name,
                json!(format!("{ready}/{containers}")),
                json!(phase),
                json!(restarts.to_string()),
                age,
                or_none(&obj["status"]["podIP"]),
                or_none(&obj["spec"]["nodeName"]),
                or_none(&obj["status"]["nominatedNodeName"]),
                json!("<none>"),
            ]
        }
        "secrets" => vec![name, obj["type"].clone(), count(&obj["data"]), age],
        "configmaps" => {
            let data = obj["data"].as_object().map_or(0, serde_json::Map::len)
                + obj["binaryData"]
                    .as_object()
                    .map_or(0, serde_json::Map::len);
            vec![name, json!(data), age]
        }
        "serviceaccounts" => {
            let secrets = obj["secrets"].as_array().map_or(0, Vec::len);
            vec![name, json!(secrets), age]
        }
        "deployments" => {
            let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            let containers = obj["spec"]["template"]["spec"]["containers"].as_array();
            let field = |f: &str| {
                containers
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c[f].as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let selector = obj["spec"]["selector"]["matchLabels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",");
            // No controller runs, so every replica counts as up to date and available.
            vec![
                name,
                json!(format!("{replicas}/{replicas}")),
                json!(replicas),
                json!(replicas),
                age,
                json!(field("name")),
                json!(field("image")),
                json!(selector),
            ]
        }
        "namespaces" => {
            let phase = obj["status"]["phase"].as_str().unwrap_or("Active");
            vec![name, json!(phase), age]
        }
        _ => vec![name, age],
    };
    let object = if include_object {
        obj.clone()
    } else {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
    };
    json!({"cells": cells, "object": object})
}

/// The Age column: time since `created` as apimachinery's `duration.HumanDuration`.
fn age(created: Option<&str>) -> String {
    let Some(created) = created.and_then(super::store::parse_rfc3339) else {
        return "<unknown>".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    human_duration(now.saturating_sub(created))
}

fn human_duration(secs: u64) -> String {
    let (minutes, hours) = (secs / 60, secs / 3600);
    let (days, years) = (hours / 24, hours / 24 / 365);
    let pair = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    match () {
        () if secs < 120 => format!("{secs}s"),
        () if minutes < 10 => pair(minutes, "m", secs % 60, "s"),
        () if minutes < 180 => format!("{minutes}m"),
        () if hours < 8 => pair(hours, "h", minutes % 60, "m"),
        () if hours < 48 => format!("{hours}h"),
        () if hours < 24 * 8 => pair(days, "d", hours % 24, "h"),
        () if hours < 24 * 365 * 2 => format!("{days}d"),
        () if hours < 24 * 365 * 8 => pair(years, "y", days % 365, "d"),
        () => format!("{years}y"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_print_like_kubectl() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 3600, "3d1h"),
            (100 * 86_400, "100d"),
            (3 * 365 * 86_400 + 86_400, "3y1d"),
            (9 * 365 * 86_400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(super::human_duration(secs), want, "{secs}s");
        }
    }
}
