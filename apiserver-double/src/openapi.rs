//! OpenAPI v3 discovery (`/openapi/v3` and one document per group version), as much
//! of it as clients read to decide how to talk to the server: every operation with
//! its `x-kubernetes-action`, `x-kubernetes-group-version-kind` and the `dryRun`,
//! `fieldManager` and `fieldValidation` query parameters. kubectl reads the last one to
//! leave validation to the server (`fieldValidation=Strict`), as with a real server,
//! instead of failing to download schemas.
//!
//! Not here: component schemas (so `kubectl explain` finds nothing to explain) and
//! `/openapi/v2`, which answers 404 as on a server with it turned off.

use serde_json::{Value, json};

use super::resources::{RESOURCES, Resource};

/// The group versions that have a document, as the index names them.
fn group_versions() -> Vec<(String, &'static str, &'static str)> {
    let mut out: Vec<(String, &str, &str)> = Vec::new();
    for r in RESOURCES {
        let path = if r.group.is_empty() {
            format!("api/{}", r.version)
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        if !out.iter().any(|(p, _, _)| *p == path) {
            out.push((path, r.group, r.version));
        }
    }
    out
}

/// `/openapi/v3`: where each group version's document is.
pub(crate) fn index() -> Value {
    let paths: serde_json::Map<String, Value> = group_versions()
        .into_iter()
        .map(|(path, _, _)| {
            let url = format!("/openapi/v3/{path}?hash={}", hash(&path));
            (path, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/GROUP/VERSION`.
pub(crate) fn document(path: &str) -> Option<Value> {
    let (_, group, version) = group_versions().into_iter().find(|(p, _, _)| p == path)?;
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let scope = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let collection = format!("{prefix}{scope}/{}", r.name);
        if super::resources::is_review(r.name) {
            paths.insert(collection, json!({"post": operation(r, "post", "create")}));
            continue;
        }
        paths.insert(
            collection.clone(),
            json!({
                "get": operation(r, "list", "list"),
                "post": operation(r, "post", "create"),
                "delete": operation(r, "deletecollection", "deletecollection"),
            }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation(r, "get", "read"),
                "put": operation(r, "put", "replace"),
                "patch": operation(r, "patch", "patch"),
                "delete": operation(r, "delete", "delete"),
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.4"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

fn operation(r: &Resource, action: &str, verb: &str) -> Value {
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let mut parameters = vec![query("pretty")];
    if matches!(action, "post" | "put" | "patch") {
        parameters.extend([
            query("dryRun"),
            query("fieldManager"),
            query("fieldValidation"),
        ]);
    }
    if action == "patch" {
        parameters.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    json!({
        "operationId": format!("{verb}{}", r.kind),
        "parameters": parameters,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    })
}

/// A stable content hash, so clients' caches key on something that changes with us.
fn hash(path: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA512, path.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}
