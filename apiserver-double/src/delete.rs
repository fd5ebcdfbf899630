//! DELETE of one object, answered as the real server answers it: pods and namespaces
//! return the object (their storage sets ReturnDeletedObject), every other kind a
//! Success `Status` naming what was deleted (finalizeDelete's shape). A pod on a node
//! is deleted gracefully, the kubelet's part played by a timer; a namespace takes
//! everything in it along, the namespace controller's part done at once.
//!
//! Not here: finalizers, `propagationPolicy` (no owner references are followed) and
//! `preconditions`.

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use serde_json::{Value, json};

use super::{
    Body, Req, State,
    api::{details, not_found},
    json_response,
    resources::{self, Resource},
    store,
};

/// How long the "kubelet" takes to stop a pod's containers after a graceful delete.
const POD_STOP: Duration = Duration::from_millis(300);

pub(crate) fn one(
    state: &Arc<State>,
    namespace: &str,
    r: &'static Resource,
    name: &str,
    req: &Req,
) -> hyper::Response<Body> {
    let Some(current) = state.store.get(r.name, namespace, name) else {
        return not_found(r, name);
    };
    // DeleteOptions come in the body (kubectl) or the query (kube-rs, curl).
    let options = req.decode_body().unwrap_or(Value::Null);
    let grace = req
        .query("gracePeriodSeconds")
        .and_then(|g| g.parse::<i64>().ok())
        .or_else(|| options["gracePeriodSeconds"].as_i64());
    let dry_run = req.query("dryRun").is_some()
        || options["dryRun"].as_array().is_some_and(|d| !d.is_empty());
    if dry_run {
        return deleted(r, name, &current);
    }
    match r.name {
        "pods" => pod(state, namespace, name, current, grace),
        "namespaces" => {
            for inner in resources::RESOURCES.iter().filter(|r| r.namespaced) {
                for obj in state.store.list(inner.name, Some(name)).0 {
                    let inner_name = obj["metadata"]["name"].as_str().unwrap_or_default();
                    let _ = state.store.delete(inner.name, name, inner_name);
                }
            }
            match state.store.delete(r.name, "", name) {
                Ok(mut ns) => {
                    ns["metadata"]["deletionTimestamp"] = json!(store::now());
                    ns["status"]["phase"] = json!("Terminating");
                    json_response(StatusCode::OK, &ns)
                }
                Err(_) => not_found(r, name),
            }
        }
        _ => match state.store.delete(r.name, namespace, name) {
            Ok(obj) => deleted(r, name, &obj),
            Err(_) => not_found(r, name),
        },
    }
}

/// A pod on a node gets a deletionTimestamp (a MODIFIED event) and disappears when
/// the kubelet has stopped it (DELETED). An unscheduled pod, or
/// `gracePeriodSeconds=0`, goes at once.
fn pod(
    state: &Arc<State>,
    namespace: &str,
    name: &str,
    mut pod: Value,
    grace: Option<i64>,
) -> hyper::Response<Body> {
    let r = resources::find("", "v1", "pods").expect("served");
    let scheduled = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let grace = grace
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if !scheduled || grace == 0 {
        return match state.store.delete(r.name, namespace, name) {
            Ok(obj) => json_response(StatusCode::OK, &obj),
            Err(_) => not_found(r, name),
        };
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return json_response(StatusCode::OK, &pod);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    pod["metadata"]["deletionTimestamp"] =
        json!(store::rfc3339(now.saturating_add(grace.unsigned_abs())));
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    let Ok(pod) = state.store.update(r.name, namespace, pod) else {
        return not_found(r, name);
    };
    let (state, ns, name) = (state.clone(), namespace.to_owned(), name.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(POD_STOP).await;
        let _ = state.store.delete("pods", &ns, &name);
    });
    json_response(StatusCode::OK, &pod)
}

fn deleted(r: &Resource, name: &str, obj: &Value) -> hyper::Response<Body> {
    if matches!(r.name, "pods" | "namespaces") {
        return json_response(StatusCode::OK, obj);
    }
    let mut details = details(r, name);
    details["uid"] = obj["metadata"]["uid"].clone();
    json_response(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    )
}
