//! Resource requests under `/api/v1` and `/apis/GROUP/VERSION`: the path parsed into
//! resource, namespace, name and subresource and dispatched; get, list (limit,
//! continue, selectors), watch, create, update, patch and deletecollection here, with
//! the status codes and `Status` bodies the real server sends. Single deletes, the
//! `scale` subresource, tokens and reviews have their own modules.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    Body, Req, State, authn, crd, delete, json_response,
    resources::{self, Resource},
    reviews, scale,
    selector::Selector,
    status,
    store::StoreError,
    strategic, streams, table,
};

/// A parsed resource path.
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn handle(state: &Arc<State>, req: Req) -> hyper::Response<Body> {
    let target = match parse(&req.path) {
        Ok(target) => target,
        Err(response) => return response,
    };
    let r = target.resource;
    match (
        &req.method,
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (&Method::POST, None, None) if r.name == "tokenreviews" => authn::token_review(state, &req),
        (&Method::POST, None, None) if r.name == "subjectaccessreviews" => {
            reviews::subject_access(&state.denied_users.lock().unwrap(), r, &req)
        }
        (&Method::POST, None, None) if resources::is_review(r.name) => {
            reviews::answer(&state.refused_access.lock().unwrap(), r, &req)
        }
        _ if resources::is_review(r.name) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        (&Method::POST, Some(name), Some("token")) if r.name == "serviceaccounts" => {
            authn::token_request(state, &target.namespace, name, &req)
        }
        (&Method::GET, None, None) if is_true(req.query("watch")) => watch(state, &target, &req),
        (&Method::GET, None, None) => list(state, &target, &req),
        (&Method::POST, None, None) => create(state, &target, &req),
        (&Method::DELETE, None, None) => delete_collection(state, &target, &req),
        (&Method::GET, Some(name), None) => {
            match state.store.get(r.name, &target.namespace, name) {
                Some(obj) if table::wants_table(&req.accept()) => json_response(
                    StatusCode::OK,
                    &table::table(r, &[obj], state.store.current_rv(), false),
                ),
                Some(obj) => json_response(StatusCode::OK, &obj),
                None => not_found(r, name),
            }
        }
        (&Method::PUT, Some(name), None) => update(state, &target, name, &req),
        (&Method::PATCH, Some(name), None) => patch(state, &target, name, &req),
        (&Method::DELETE, Some(name), None) => {
            delete::one(state, &target.namespace, target.resource, name, &req)
        }
        // The status subresource of kgate's custom resources: the double keeps status
        // in the same object, so it is the object itself.
        (&Method::GET, Some(name), Some("status"))
            if r.group == "kgate.io" || r.name == "customresourcedefinitions" =>
        {
            match state.store.get(r.name, &target.namespace, name) {
                Some(obj) => json_response(StatusCode::OK, &obj),
                None => not_found(r, name),
            }
        }
        (&Method::PATCH, Some(name), Some("status")) if r.group == "kgate.io" => {
            patch(state, &target, name, &req)
        }
        (&Method::PUT, Some(name), Some("status")) if r.group == "kgate.io" => {
            update(state, &target, name, &req)
        }
        (_, Some(name), Some("scale")) if r.name == "deployments" => {
            scale::serve(state, &target, name, &req)
        }
        (_, Some(name), Some(sub @ ("log" | "exec" | "attach" | "portforward")))
            if r.name == "pods" =>
        {
            let Some(pod) = state.store.get("pods", &target.namespace, name) else {
                return not_found(r, name);
            };
            streams::serve(req, &pod, sub)
        }
        (_, Some(_), Some(sub)) if r.subresources.contains(&sub) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!(
                "the server does not allow this method on the requested resource ({}/{sub})",
                r.name
            ),
        ),
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn parse(path: &str) -> Result<Target, hyper::Response<Body>> {
    let not_found = || {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, tail @ ..]
            if resources::find(group, version, r).is_some_and(|r| r.namespaced) =>
        {
            ((*ns).to_owned(), [&[*r][..], tail].concat())
        }
        _ => (String::new(), rest.to_vec()),
    };
    let resource = rest
        .first()
        .and_then(|r| resources::find(group, version, r))
        .ok_or_else(not_found)?;
    if rest.len() > 3 && rest.get(2) != Some(&"log") {
        return Err(not_found());
    }
    Ok(Target {
        resource,
        namespace,
        name: rest.get(1).map(|s| (*s).to_owned()),
        subresource: rest.get(2).map(|s| (*s).to_owned()),
    })
}

pub fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

pub fn not_found(r: &Resource, name: &str) -> hyper::Response<Body> {
    let mut body = status_body(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{}{} \"{name}\" not found", r.name, group_suffix(r)),
    );
    body["details"] = details(r, name);
    json_response(StatusCode::NOT_FOUND, &body)
}

/// StatusDetails: `kind` holds the resource (the real server's quirk), and an empty
/// group is left out (omitempty).
pub fn details(r: &Resource, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": r.name});
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    details
}

fn group_suffix(r: &Resource) -> String {
    if r.group.is_empty() {
        String::new()
    } else {
        format!(".{}", r.group)
    }
}

fn status_body(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()})
}

// === list and watch ===

fn list(state: &State, t: &Target, req: &Req) -> hyper::Response<Body> {
    let r = t.resource;
    let (mut items, rv) = state.store.list(
        r.name,
        (!t.namespace.is_empty()).then_some(t.namespace.as_str()),
    );
    let selector = Selector::parse(req.query("labelSelector"), req.query("fieldSelector"));
    items.retain(|o| selector.matches(o));
    // continue token: the position after the last item of the previous page.
    let start: usize = req
        .query("continue")
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let limit: usize = req
        .query("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(items.len());
    let page: Vec<Value> = items
        .get(start.min(items.len())..end)
        .unwrap_or_default()
        .to_vec();
    let next = (end < items.len())
        .then(|| base64::engine::general_purpose::STANDARD.encode(end.to_string()));
    if table::wants_table(&req.accept()) {
        let include = req.query("includeObject") == Some("Object");
        let mut t = table::table(r, &page, rv, include);
        if let Some(next) = &next {
            t["metadata"]["continue"] = json!(next);
        }
        return json_response(StatusCode::OK, &t);
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
        metadata["remainingItemCount"] = json!(items.len() - end);
    }
    let head = json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": metadata});
    stream_list(head, page)
}

/// Writes a list as it goes, item by item, so a huge list never exists as one string.
fn stream_list(head: Value, items: Vec<Value>) -> hyper::Response<Body> {
    let (tx, body) = super::channel_body();
    tokio::spawn(async move {
        let mut text = serde_json::to_string(&head).unwrap_or_default();
        text.pop(); // the closing brace
        text.push_str(",\"items\":[");
        let mut chunk = text.into_bytes();
        for (i, mut item) in items.into_iter().enumerate() {
            // Items of a typed list carry no kind or apiVersion, as the real server's.
            if let Some(map) = item.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            if i > 0 {
                chunk.push(b',');
            }
            serde_json::to_writer(&mut chunk, &item).unwrap_or_default();
            if chunk.len() >= 64 * 1024
                && tx
                    .send(Bytes::from(std::mem::take(&mut chunk)))
                    .await
                    .is_err()
            {
                return;
            }
        }
        chunk.extend_from_slice(b"]}");
        let _ = tx.send(Bytes::from(chunk)).await;
    });
    super::response(StatusCode::OK, "application/json", body)
}

fn watch(state: &Arc<State>, t: &Target, req: &Req) -> hyper::Response<Body> {
    let r = t.resource;
    let ns = (!t.namespace.is_empty()).then(|| t.namespace.clone());
    let selector = Selector::parse(req.query("labelSelector"), req.query("fieldSelector"));
    let as_table = table::wants_table(&req.accept());
    let bookmarks = is_true(req.query("allowWatchBookmarks"));
    let timeout = req
        .query("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let since: Option<u64> = req
        .query("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());

    // Subscribe before reading the state, so no event falls between the two.
    let mut live = state.store.subscribe();
    let (initial, from_rv) = match since {
        None => {
            let (items, rv) = state.store.list(r.name, ns.as_deref());
            (
                Ok(items.into_iter().map(|o| ("ADDED", o)).collect::<Vec<_>>()),
                rv,
            )
        }
        Some(rv) => match state.store.events_since(r.name, rv) {
            Some(events) => {
                let last = events.last().map_or(rv, |e| e.rv);
                let events = events
                    .into_iter()
                    .filter(|e| ns.as_deref().is_none_or(|n| n == e.namespace))
                    .map(|e| (e.kind, e.object))
                    .collect();
                (Ok(events), last)
            }
            None => (Err(rv), rv),
        },
    };
    let (tx, body) = super::channel_body();
    let state = state.clone();
    tokio::spawn(async move {
        let send = |kind: &str, object: Value| {
            let object = if as_table && kind != "BOOKMARK" && kind != "ERROR" {
                table::table(r, &[object], 0, false)
            } else {
                object
            };
            let mut line =
                serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
            line.push(b'\n');
            tx.send(Bytes::from(line))
        };
        let initial = match initial {
            Ok(initial) => initial,
            Err(rv) => {
                let gone = status_body(
                    StatusCode::GONE,
                    "Expired",
                    &format!(
                        "too old resource version: {rv} ({})",
                        state.store.current_rv()
                    ),
                );
                let _ = send("ERROR", gone).await;
                return;
            }
        };
        for (kind, obj) in initial {
            if selector.matches(&obj) && send(kind, obj).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut bookmark = tokio::time::interval(state.bookmark_interval);
        bookmark.tick().await;
        loop {
            let sleep_until = deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                event = live.recv() => match event {
                    Ok(e) if e.resource == r.name && e.rv > from_rv
                        && ns.as_deref().is_none_or(|n| n == e.namespace) && selector.matches(&e.object) => {
                        if send(e.kind, e.object).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    // A watcher that fell behind is ended, as the real server does.
                    Err(_) => return,
                },
                _ = bookmark.tick(), if bookmarks => {
                    let obj = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"resourceVersion": state.store.current_rv().to_string()}});
                    if send("BOOKMARK", obj).await.is_err() { return; }
                }
                () = tokio::time::sleep_until(sleep_until) => return,
                () = tx.closed() => return,
            }
        }
    });
    super::response(StatusCode::OK, "application/json", body)
}

// === writes ===

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

fn create(state: &State, t: &Target, req: &Req) -> hyper::Response<Body> {
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
    let (obj, warnings) = match admit(state, r, obj, None) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
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

fn update(state: &State, t: &Target, name: &str, req: &Req) -> hyper::Response<Body> {
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
            Ok((admitted, _)) => admitted,
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
    let r = t.resource;
    match state.store.update(r.name, &t.namespace, obj) {
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

fn patch(state: &State, t: &Target, name: &str, req: &Req) -> hyper::Response<Body> {
    let Some(current) = state.store.get(t.resource.name, &t.namespace, name) else {
        return not_found(t.resource, name);
    };
    let patched = match apply_patch(&current, req) {
        Ok(v) => v,
        Err(response) => return response,
    };
    let mut patched = patched;
    if t.resource.name == "secrets" {
        fold_string_data(&mut patched);
    }
    let patched = match admit(state, t.resource, patched, Some(&current)) {
        Ok((admitted, _)) => admitted,
        Err(response) => return response,
    };
    store_update(state, t, name, patched)
}

pub fn apply_patch(current: &Value, req: &Req) -> Result<Value, hyper::Response<Body>> {
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
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
                ),
            ));
        }
    }
    Ok(doc)
}

fn delete_collection(state: &State, t: &Target, req: &Req) -> hyper::Response<Body> {
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
