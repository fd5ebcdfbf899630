//! Resource requests under `/api/v1` and `/apis/GROUP/VERSION`: the path parsed into
//! resource, namespace, name and subresource and dispatched; get here, list and watch
//! in [`list`](mod@list), create, update, patch and deletecollection in [`write`](mod@write), with the
//! status codes and `Status` bodies the real server sends. Single deletes, the `scale`
//! subresource, tokens and reviews have their own modules.

mod list;
mod write;

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};

pub(crate) use self::write::apply_patch;
use self::{
    list::{list, watch},
    write::{create, delete_collection, patch, update},
};
use super::{
    Body, Req, State, authn, delete, json_response,
    resources::{self, Resource},
    reviews, scale, status, streams, table,
};

/// A parsed resource path.
pub(crate) struct Target {
    pub resource: &'static Resource,
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub(crate) fn handle(state: &Arc<State>, req: Req) -> hyper::Response<Body> {
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
        (&Method::POST, None, None) if r.name == "subjectaccessreviews" => reviews::subject_access(
            &state.denied_users.lock().unwrap(),
            &state.refused_access.lock().unwrap(),
            r,
            &req,
        ),
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

pub(crate) fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

pub(crate) fn not_found(r: &Resource, name: &str) -> hyper::Response<Body> {
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
pub(crate) fn details(r: &Resource, name: &str) -> Value {
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
