//! Resource requests under `/api/v1` and `/apis/GROUP/VERSION`: get, list (limit,
//! continue, label and field selectors), create, update, patch, delete,
//! deletecollection, watch, the `scale` subresource, and `as=Table`, with the status
//! codes and `Status` bodies the real server sends.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    Body, Req, State, json_response,
    resources::{self, Resource},
    status,
    store::StoreError,
    streams, table,
};

/// A parsed resource path.
struct Target {
    resource: &'static Resource,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
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
        (&Method::POST, None, None) if r.name == "tokenreviews" => token_review(state, &req),
        _ if r.name == "tokenreviews" => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        (&Method::POST, Some(name), Some("token")) if r.name == "serviceaccounts" => {
            token_request(state, &target, name, &req)
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
            match state.store.delete(r.name, &target.namespace, name) {
                Ok(obj) => json_response(StatusCode::OK, &obj),
                Err(_) => not_found(r, name),
            }
        }
        (_, Some(name), Some("scale")) if r.name == "deployments" => {
            scale(state, &target, name, &req)
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

fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

pub fn not_found(r: &Resource, name: &str) -> hyper::Response<Body> {
    let mut body = status_body(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{}{} \"{name}\" not found", r.name, group_suffix(r)),
    );
    body["details"] = json!({"name": name, "group": r.group, "kind": r.name});
    json_response(StatusCode::NOT_FOUND, &body)
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
    let media = req
        .header("content-type")
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if media != "application/json" && media != "*/*" {
        return Err(status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json (this double does not decode {media})"
            ),
        ));
    }
    let mut obj: Value = serde_json::from_slice(&req.body).map_err(|e| {
        status(StatusCode::BAD_REQUEST, "BadRequest", &format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e}; content-type {:?})", req.header("content-type")))
    })?;
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
    obj["kind"] = json!(r.kind);
    obj["apiVersion"] = json!(r.api_version());
    if r.name == "secrets" {
        fold_string_data(&mut obj);
    }
    Ok(obj)
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
    if is_true(req.query("dryRun").map(|_| "true")) {
        return json_response(StatusCode::CREATED, &obj);
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match state.store.create(r.name, &t.namespace, obj) {
        Ok(obj) => json_response(StatusCode::CREATED, &obj),
        Err(_) => {
            let mut body = status_body(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{}{} \"{name}\" already exists", r.name, group_suffix(r)),
            );
            body["details"] = json!({"name": name, "group": r.group, "kind": r.name});
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
    store_update(state, t, name, obj)
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
            body["details"] = json!({"name": name, "group": r.group, "kind": r.name});
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
    store_update(state, t, name, patched)
}

fn apply_patch(current: &Value, req: &Req) -> Result<Value, hyper::Response<Body>> {
    let content_type = req.header("content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let bad = |e: String| status(StatusCode::BAD_REQUEST, "BadRequest", &e);
    let mut doc = current.clone();
    match media {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(&req.body).map_err(|e| bad(e.to_string()))?;
            json_patch::merge(&mut doc, &p);
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

fn scale(state: &State, t: &Target, name: &str, req: &Req) -> hyper::Response<Body> {
    let Some(mut deploy) = state.store.get("deployments", &t.namespace, name) else {
        return not_found(t.resource, name);
    };
    let as_scale = |d: &Value| {
        json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": name, "namespace": t.namespace, "uid": d["metadata"]["uid"], "resourceVersion": d["metadata"]["resourceVersion"], "creationTimestamp": d["metadata"]["creationTimestamp"]},
            "spec": {"replicas": d["spec"]["replicas"]},
            "status": {"replicas": d["spec"]["replicas"], "selector": "app=".to_owned() + name},
        })
    };
    let replicas = match req.method {
        Method::GET => return json_response(StatusCode::OK, &as_scale(&deploy)),
        Method::PUT => serde_json::from_slice::<Value>(&req.body)
            .ok()
            .map(|s| s["spec"]["replicas"].clone()),
        Method::PATCH => apply_patch(&as_scale(&deploy), req)
            .ok()
            .map(|s| s["spec"]["replicas"].clone()),
        _ => {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            );
        }
    };
    let Some(replicas) = replicas.filter(Value::is_i64) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "spec.replicas must be an integer",
        );
    };
    deploy["spec"]["replicas"] = replicas;
    deploy["metadata"]["resourceVersion"] = json!("");
    match state.store.update("deployments", &t.namespace, deploy) {
        Ok(d) => json_response(StatusCode::OK, &as_scale(&d)),
        Err(_) => not_found(t.resource, name),
    }
}

// === tokens ===

fn token_request(state: &State, t: &Target, name: &str, req: &Req) -> hyper::Response<Body> {
    let Some(sa) = state.store.get("serviceaccounts", &t.namespace, name) else {
        return not_found(t.resource, name);
    };
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("invalid TokenRequest: {e}"),
            );
        }
    };
    let spec = &body["spec"];
    let expiration = spec["expirationSeconds"].as_u64().unwrap_or(3600);
    if expiration < 600 {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        );
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if audiences.is_empty() {
        audiences.push(state.signer.issuer.clone());
    }
    let bound = &spec["boundObjectRef"];
    let pod = match bound["kind"].as_str() {
        None => None,
        Some("Pod") => {
            let pod_name = bound["name"].as_str().unwrap_or_default();
            let Some(pod) = state.store.get("pods", &t.namespace, pod_name) else {
                return not_found(resources::find("", "v1", "pods").expect("served"), pod_name);
            };
            let uid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Some((
                pod_name.to_owned(),
                uid,
                pod["spec"]["nodeName"].as_str().map(str::to_owned),
            ))
        }
        Some(other) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("cannot bind token to object of kind {other}"),
            );
        }
    };
    let subject = super::Subject {
        namespace: t.namespace.clone(),
        service_account: name.to_owned(),
        service_account_uid: sa["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        pod,
    };
    let (token, exp) = state.signer.mint(&subject, &audiences, expiration);
    let exp = super::store::rfc3339(exp);
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": t.namespace, "creationTimestamp": super::store::now()},
            "spec": {"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": spec["boundObjectRef"]},
            "status": {"token": token, "expirationTimestamp": exp},
        }),
    )
}

fn token_review(state: &State, req: &Req) -> hyper::Response<Body> {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("invalid TokenReview: {e}"),
            );
        }
    };
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<&str> = body["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let status_body = match state.signer.verify(token) {
        Ok(claims) => {
            let token_aud: Vec<&str> = claims["aud"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let audiences: Vec<&str> = if wanted.is_empty() {
                token_aud.clone()
            } else {
                wanted
                    .iter()
                    .copied()
                    .filter(|a| token_aud.contains(a))
                    .collect()
            };
            if audiences.is_empty() {
                json!({"authenticated": false, "error": "token audiences do not match the requested audiences"})
            } else {
                json!({"authenticated": true, "user": super::tokens::review_user(&claims), "audiences": audiences})
            }
        }
        Err(why) => {
            json!({"authenticated": false, "error": format!("[invalid bearer token, {why}]")})
        }
    };
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null}, "spec": body["spec"], "status": status_body,
        }),
    )
}

// === selectors ===

/// Label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`)
/// and the field selectors `metadata.name` and `metadata.namespace`.
#[derive(Clone, Default)]
struct Selector {
    labels: Vec<(String, Op)>,
    fields: Vec<(String, String, bool)>,
}

#[derive(Clone)]
enum Op {
    Eq(String),
    Ne(String),
    Exists,
    NotExists,
    In(Vec<String>),
    NotIn(Vec<String>),
}

impl Selector {
    fn parse(labels: Option<&str>, fields: Option<&str>) -> Self {
        let mut s = Self::default();
        for term in split_terms(labels.unwrap_or_default()) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let op = if let Some((k, v)) = term.split_once("!=") {
                (k, Op::Ne(v.trim().into()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, Op::Eq(v.trim().into()))
            } else if let Some((k, v)) = term.split_once(" notin ") {
                (k, Op::NotIn(set(v)))
            } else if let Some((k, v)) = term.split_once(" in ") {
                (k, Op::In(set(v)))
            } else if let Some(k) = term.strip_prefix('!') {
                (k, Op::NotExists)
            } else {
                (term, Op::Exists)
            };
            s.labels.push((op.0.trim().to_owned(), op.1));
        }
        for term in fields
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            if let Some((k, v)) = term.split_once("!=") {
                s.fields.push((k.into(), v.into(), false));
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                s.fields.push((k.into(), v.into(), true));
            }
        }
        s
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label_ok = self.labels.iter().all(|(k, op)| {
            let v = labels[k].as_str();
            match op {
                Op::Eq(want) => v == Some(want.as_str()),
                Op::Ne(want) => v != Some(want.as_str()),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
            }
        });
        label_ok
            && self.fields.iter().all(|(k, want, eq)| {
                let v = match k.as_str() {
                    "metadata.name" => obj["metadata"]["name"].as_str(),
                    "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
                    _ => None,
                };
                (v == Some(want.as_str())) == *eq
            })
    }
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(v: &str) -> Vec<String> {
    v.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}
