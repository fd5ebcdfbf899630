//! The `scale` subresource of Deployments (autoscaling/v1 Scale): get, update and
//! patch of `spec.replicas`, the rest of the Deployment left alone.
//!
//! Not here: `status.replicas` that lags behind (no controller runs; status follows
//! spec at once).

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    Body, Req, State,
    api::{Target, apply_patch, not_found},
    json_response, status,
};

pub(crate) fn serve(state: &State, t: &Target, name: &str, req: &Req) -> hyper::Response<Body> {
    let Some(mut deploy) = state.store.get("deployments", &t.namespace, name) else {
        return not_found(t.resource, name);
    };
    let as_scale = |d: &Value| {
        json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": name, "namespace": t.namespace, "uid": d["metadata"]["uid"], "resourceVersion": d["metadata"]["resourceVersion"], "creationTimestamp": d["metadata"]["creationTimestamp"]},
            "spec": {"replicas": d["spec"]["replicas"]},
            "status": {"replicas": d["spec"]["replicas"], "selector": selector_string(&d["spec"]["selector"])},
        })
    };
    let replicas = match req.method {
        Method::GET => return json_response(StatusCode::OK, &as_scale(&deploy)),
        Method::PUT => req
            .decode_body()
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

/// A LabelSelector as metav1.FormatLabelSelector prints it (`a=b,c in (d,e)`).
fn selector_string(selector: &Value) -> String {
    let mut terms: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "DoesNotExist" => format!("!{key}"),
            _ => key.to_owned(),
        });
    }
    terms.join(",")
}
