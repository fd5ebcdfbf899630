//! Writes: create (`generateName`, `dryRun`), update, patch (merge, strategic merge,
//! JSON patch), server-side apply (`application/apply-patch+yaml`, `force`, `dryRun`)
//! and deletecollection, each recording its managed fields (managed.rs), with the
//! server's checks on the body (kind, `fieldValidation=Strict` for top-level and
//! metadata fields), Secrets' write-only `stringData` folded into `data`, CRD
//! admission, optimistic-lock conflicts and `Warning` headers.
//!
//! Not here: single deletes (delete.rs) and the `scale` subresource (scale.rs).

use base64::Engine as _;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Target, details, group_suffix, is_true, not_found, status_body};
use crate::{
    Body, Req, State, crd, json_response,
    managed::{self, Writer},
    resources::{self, Resource},
    selector::Selector,
    status,
    store::{self, StoreError},
    strategic,
};

fn read_object(req: &Req, r: &Resource) -> Result<Value, hyper::Response<Body>> {
    let mut obj = req.decode_body()?;
    if !obj.is_object() || !obj["metadata"].is_object() {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the object has no metadata",
        ));
    }
    if let Some(kind) = obj["kind"].as_str()
        && kind != r.kind
    {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                obj["apiVersion"],
                r.api_version()
            ),
        ));
    }
    if req.query("fieldValidation") == Some("Strict")
        && let Some(field) = unknown_field(r, &obj)
    {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: unknown field \"{field}\"",
                kind = r.kind,
                v = r.version
            ),
        ));
    }
    obj["kind"] = json!(r.kind);
    obj["apiVersion"] = json!(r.api_version());
    if r.name == "secrets" {
        fold_string_data(&mut obj);
    }
    Ok(obj)
}

/// The first field of `obj` that its kind does not have, at the top level or in
/// `metadata` (the double has no schemas for deeper levels; the real server checks
/// every level).
fn unknown_field(r: &Resource, obj: &Value) -> Option<String> {
    const META: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ];
    let own: &[&str] = match r.name {
        "configmaps" => &["data", "binaryData", "immutable"],
        "secrets" => &["data", "stringData", "type", "immutable"],
        "serviceaccounts" => &[
            "secrets",
            "imagePullSecrets",
            "automountServiceAccountToken",
        ],
        "endpointslices" => &["addressType", "endpoints", "ports"],
        _ => &["spec", "status"],
    };
    let top = obj.as_object()?.keys().find(|k| {
        !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") && !own.contains(&k.as_str())
    });
    let meta = obj["metadata"]
        .as_object()?
        .keys()
        .find(|k| !META.contains(&k.as_str()))
        .map(|k| format!("metadata.{k}"));
    top.cloned().or(meta)
}

/// `stringData` is write-only: merged into `data` as base64, never stored.
fn fold_string_data(obj: &mut Value) {
    let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in string_data {
        obj["data"][k] =
            json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default()));
    }
}

pub(super) fn create(state: &State, t: &Target, req: &Req) -> hyper::Response<Body> {
    let r = t.resource;
    let mut obj = match read_object(req, r) {
        Ok(obj) => obj,
        Err(response) => return response,
    };
    if r.namespaced && state.store.get("namespaces", "", &t.namespace).is_none() {
        return not_found(
            resources::find("", "v1", "namespaces").expect("served"),
            &t.namespace,
        );
    }
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        let Some(prefix) = obj["metadata"]["generateName"].as_str() else {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                &format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    r.kind
                ),
            );
        };
        let suffix = state.store.current_rv() % 100_000;
        obj["metadata"]["name"] = json!(format!("{prefix}{suffix:05x}"));
    }
    let (mut obj, warnings) = match admit(state, r, obj, None) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    managed::track_update(None, &mut obj, &writer(t, req));
    if is_true(req.query("dryRun").map(|_| "true")) {
        return with_warnings(json_response(StatusCode::CREATED, &obj), &warnings);
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match state.store.create(r.name, &t.namespace, obj) {
        Ok(obj) => with_warnings(json_response(StatusCode::CREATED, &obj), &warnings),
        Err(_) => {
            let mut body = status_body(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{}{} \"{name}\" already exists", r.name, group_suffix(r)),
            );
            body["details"] = details(r, &name);
            json_response(StatusCode::CONFLICT, &body)
        }
    }
}

pub(super) fn update(state: &State, t: &Target, name: &str, req: &Req) -> hyper::Response<Body> {
    let obj = match read_object(req, t.resource) {
        Ok(obj) => obj,
        Err(response) => return response,
    };
    if obj["metadata"]["name"].as_str() != Some(name) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL",
        );
    }
    // Without a stored object the update is a 404 (store_update), before admission.
    let obj = match state.store.get(t.resource.name, &t.namespace, name) {
        Some(old) => match admit(state, t.resource, obj, Some(&old)) {
            Ok((mut admitted, _)) => {
                managed::track_update(Some(&old), &mut admitted, &writer(t, req));
                admitted
            }
            Err(response) => return response,
        },
        None => obj,
    };
    store_update(state, t, name, obj)
}

/// CustomResourceDefinitions are defaulted and validated as the real server does
/// (crd.rs), `old` being the stored object of an update; other kinds pass as they
/// are. The warnings go out as `Warning` headers.
fn admit(
    state: &State,
    r: &Resource,
    obj: Value,
    old: Option<&Value>,
) -> Result<(Value, Vec<String>), hyper::Response<Body>> {
    if r.name != "customresourcedefinitions" {
        return Ok((obj, Vec::new()));
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let admitted = match old {
        None => crd::admit_create(obj, state.version),
        Some(old) => crd::admit_update(obj, old, state.version),
    };
    admitted.map_err(|errs| {
        json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &crd::invalid_status(crd::GROUP, crd::KIND, &name, &errs),
        )
    })
}

/// Adds each warning as the API server writes it: `Warning: 299 - "TEXT"`.
fn with_warnings(
    mut response: hyper::Response<Body>,
    warnings: &[String],
) -> hyper::Response<Body> {
    for w in warnings {
        let quoted = serde_json::to_string(w).unwrap_or_default();
        if let Ok(value) = http::HeaderValue::from_str(&format!("299 - {quoted}")) {
            response.headers_mut().append(http::header::WARNING, value);
        }
    }
    response
}

fn store_update(state: &State, t: &Target, name: &str, obj: Value) -> hyper::Response<Body> {
    updated(
        t,
        name,
        state.store.update(t.resource.name, &t.namespace, obj),
    )
}

/// The answer to an update of the store.
fn updated(t: &Target, name: &str, result: Result<Value, StoreError>) -> hyper::Response<Body> {
    let r = t.resource;
    match result {
        Ok(obj) => json_response(StatusCode::OK, &obj),
        Err(StoreError::NotFound) => not_found(r, name),
        Err(StoreError::Conflict | StoreError::AlreadyExists) => {
            let mut body = status_body(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {}{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    r.name,
                    group_suffix(r)
                ),
            );
            body["details"] = details(r, name);
            json_response(StatusCode::CONFLICT, &body)
        }
    }
}

/// A patch applies to the object as stored when it is written: as kube-apiserver's
/// patcher, called again by `GuaranteedUpdate` with the fresh object whenever
/// another write got in between, it is re-applied rather than answered 409. Only a
/// patch that names a `resourceVersion` of its own (a precondition) conflicts.
pub(super) fn patch(state: &State, t: &Target, name: &str, req: &Req) -> hyper::Response<Body> {
    if is_apply(req) {
        return apply(state, t, name, req);
    }
    loop {
        let Some(current) = state.store.get(t.resource.name, &t.namespace, name) else {
            return not_found(t.resource, name);
        };
        let mut patched = match apply_patch(&current, req) {
            Ok(v) => v,
            Err(response) => return response,
        };
        if t.resource.name == "secrets" {
            fold_string_data(&mut patched);
        }
        let patched = match admit(state, t.resource, patched, Some(&current)) {
            Ok((mut admitted, _)) => {
                managed::track_update(Some(&current), &mut admitted, &writer(t, req));
                admitted
            }
            Err(response) => return response,
        };
        let pinned =
            patched["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"];
        match state.store.update(t.resource.name, &t.namespace, patched) {
            Err(StoreError::Conflict) if !pinned => {}
            result => return updated(t, name, result),
        }
    }
}

pub(crate) fn apply_patch(current: &Value, req: &Req) -> Result<Value, hyper::Response<Body>> {
    let content_type = req.header("content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let bad = |e: String| status(StatusCode::BAD_REQUEST, "BadRequest", &e);
    let mut doc = current.clone();
    match media {
        "application/merge-patch+json" => {
            let p: Value = serde_json::from_slice(&req.body).map_err(|e| bad(e.to_string()))?;
            json_patch::merge(&mut doc, &p);
        }
        "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(&req.body).map_err(|e| bad(e.to_string()))?;
            doc = strategic::apply(&doc, &p).map_err(bad)?;
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch =
                serde_json::from_slice(&req.body).map_err(|e| bad(e.to_string()))?;
            json_patch::patch(&mut doc, &p).map_err(|e| {
                status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        other => {
            return Err(status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                ),
            ));
        }
    }
    Ok(doc)
}

/// Who a write's managed fields name: `?fieldManager=`, else the User-Agent up to its
/// first `/` (at most 128 characters), as the API server derives it.
fn manager_of(req: &Req) -> String {
    match req.query("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.to_owned(),
        None => req
            .header("user-agent")
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect(),
    }
}

fn writer(t: &Target, req: &Req) -> Writer {
    Writer {
        manager: manager_of(req),
        api_version: t.resource.api_version(),
        subresource: t.subresource.clone(),
        time: store::now(),
    }
}

fn is_apply(req: &Req) -> bool {
    req.header("content-type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case("application/apply-patch+yaml")
}

/// Server-side apply: the configuration (YAML, or JSON, which is YAML) merged into
/// the object, or the object created from it; see [`managed`].
fn apply(state: &State, t: &Target, name: &str, req: &Req) -> hyper::Response<Body> {
    let r = t.resource;
    let bad = |message: &str| status(StatusCode::BAD_REQUEST, "BadRequest", message);
    let Some(manager) = req.query("fieldManager").filter(|m| !m.is_empty()) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        );
    };
    if manager.chars().count() > 128 {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long: may not be more than 128 bytes",
        );
    }
    let force = is_true(req.query("force"));
    let mut config: Value = match serde_yaml::from_slice(&req.body) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => return bad("error decoding YAML: the apply configuration is not an object"),
        Err(e) => return bad(&format!("error decoding YAML: {e}")),
    };
    let api_version = r.api_version();
    if config["apiVersion"].as_str() != Some(api_version.as_str()) {
        return bad(&format!(
            "Incorrect version specified in apply patch. Specified patch version: {}, expected: {api_version}",
            config["apiVersion"].as_str().unwrap_or_default()
        ));
    }
    if config["kind"].as_str() != Some(r.kind) {
        return bad(&format!(
            "the kind {:?} in the apply configuration is not {:?}",
            config["kind"].as_str().unwrap_or_default(),
            r.kind
        ));
    }
    if !config["metadata"].is_object() {
        config["metadata"] = json!({});
    }
    if !config["metadata"]["managedFields"].is_null() {
        return bad("metadata.managedFields must be nil");
    }
    match config["metadata"]["name"].as_str() {
        Some(n) if n != name => {
            return bad("the name of the object does not match the name on the URL");
        }
        Some(_) => {}
        None => config["metadata"]["name"] = json!(name),
    }
    if r.namespaced {
        match config["metadata"]["namespace"].as_str() {
            Some(ns) if ns != t.namespace => {
                return bad(
                    "the namespace of the provided object does not match the namespace sent on the request",
                );
            }
            _ => config["metadata"]["namespace"] = json!(t.namespace),
        }
    }
    let dry_run = req.query("dryRun").is_some();
    let w = Writer {
        manager: manager.to_owned(),
        api_version,
        subresource: t.subresource.clone(),
        time: store::now(),
    };
    loop {
        let current = state.store.get(r.name, &t.namespace, name);
        if current.is_none()
            && r.namespaced
            && state.store.get("namespaces", "", &t.namespace).is_none()
        {
            return not_found(
                resources::find("", "v1", "namespaces").expect("served"),
                &t.namespace,
            );
        }
        let mut applied = match managed::apply(current.as_ref(), &config, &w, force) {
            Ok(applied) => applied,
            Err(conflicts) => {
                let (message, causes) = conflicts.message_and_causes();
                let mut body = status_body(StatusCode::CONFLICT, "Conflict", &message);
                body["details"] = json!({"causes": causes});
                return json_response(StatusCode::CONFLICT, &body);
            }
        };
        if r.name == "secrets" {
            fold_string_data(&mut applied);
        }
        let Some(current) = current else {
            let (obj, warnings) = match admit(state, r, applied, None) {
                Ok(admitted) => admitted,
                Err(response) => return response,
            };
            if dry_run {
                return with_warnings(json_response(StatusCode::CREATED, &obj), &warnings);
            }
            match state.store.create(r.name, &t.namespace, obj) {
                Ok(obj) => {
                    return with_warnings(json_response(StatusCode::CREATED, &obj), &warnings);
                }
                // Created in between: apply to it.
                Err(_) => continue,
            }
        };
        let applied = match admit(state, r, applied, Some(&current)) {
            Ok((admitted, _)) => admitted,
            Err(response) => return response,
        };
        if dry_run {
            return json_response(StatusCode::OK, &applied);
        }
        // A resourceVersion in the configuration is a precondition; otherwise the
        // apply is made again on whatever another write left.
        let pinned = config["metadata"]["resourceVersion"].is_string();
        match state.store.update(r.name, &t.namespace, applied) {
            Err(StoreError::Conflict) if !pinned => {}
            result => return updated(t, name, result),
        }
    }
}

pub(super) fn delete_collection(state: &State, t: &Target, req: &Req) -> hyper::Response<Body> {
    let r = t.resource;
    let (items, _) = state.store.list(
        r.name,
        (!t.namespace.is_empty()).then_some(t.namespace.as_str()),
    );
    let selector = Selector::parse(req.query("labelSelector"), req.query("fieldSelector"));
    let deleted: Vec<Value> = items
        .iter()
        .filter(|o| selector.matches(o))
        .filter_map(|o| {
            state
                .store
                .delete(
                    r.name,
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str()?,
                )
                .ok()
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": {"resourceVersion": state.store.current_rv().to_string()}, "items": deleted}),
    )
}
