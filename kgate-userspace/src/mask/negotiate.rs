//! Content negotiation for masked requests: the masker reads JSON only, so the
//! upstream is asked for the JSON alternatives the client listed, parameters kept
//! (`application/json;as=Table;v=v1;g=meta.k8s.io`), and for no compression.
//!
//! A client that accepts no JSON (protobuf only, YAML only) gets a 406 Status saying
//! why; kgate does not convert JSON into other formats.

use http::{
    HeaderMap, HeaderValue,
    header::{ACCEPT, ACCEPT_ENCODING},
};

use super::Plan;
use crate::api_status::Status;

/// Rewrites `Accept` (and drops `Accept-Encoding`) for the upstream request, or
/// refuses the request with a 406 Status.
pub(crate) fn negotiate(plan: &Plan, headers: &mut HeaderMap) -> Result<(), Status> {
    accept_json(headers, |accept| refuse(plan, accept))
}

/// As [`negotiate`], for any response kgate must read: `refuse` builds the 406 from
/// what the client accepts.
pub(crate) fn accept_json(
    headers: &mut HeaderMap,
    refuse: impl Fn(&str) -> Status,
) -> Result<(), Status> {
    let mut ranges = Vec::new();
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else {
            return Err(refuse(&String::from_utf8_lossy(value.as_bytes())));
        };
        ranges.extend(value.split(',').map(str::trim).filter(|r| !r.is_empty()));
    }
    let accept = if ranges.is_empty() {
        // No Accept: the API server would answer JSON anyway; say so explicitly.
        "application/json".to_owned()
    } else {
        let json: Vec<String> = ranges.iter().filter_map(|r| json_range(r)).collect();
        if json.is_empty() {
            return Err(refuse(&ranges.join(",")));
        }
        json.join(",")
    };
    let accept = HeaderValue::from_str(&accept).map_err(|_| refuse(&accept))?;
    headers.insert(ACCEPT, accept);
    // A compressed answer could not be scanned; the agent-to-API-server hop is local.
    headers.remove(ACCEPT_ENCODING);
    Ok(())
}

/// A media range as JSON, if it admits JSON: `application/json`, `application/*` or
/// `*/*`, with its parameters, unless its `q` is zero.
fn json_range(range: &str) -> Option<String> {
    let mut parts = range.split(';').map(str::trim);
    let media = parts.next()?;
    let params: Vec<&str> = parts.filter(|p| !p.is_empty()).collect();
    let refused = params.iter().any(|p| {
        p.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
        })
    });
    let json = ["application/json", "application/*", "*/*"]
        .iter()
        .any(|m| media.eq_ignore_ascii_case(m));
    (json && !refused).then(|| {
        std::iter::once("application/json")
            .chain(params)
            .collect::<Vec<_>>()
            .join(";")
    })
}

fn refuse(plan: &Plan, accept: &str) -> Status {
    Status::not_acceptable(format!(
        "kgate: responses about {} are masked, and kgate masks only JSON, but this request \
         accepts only {accept:?}; accept application/json (kubectl and client-go do)",
        plan.resource
    ))
}
