//! Where a request goes: read and authenticated, through the impersonation filter
//! ([`crate::impersonation`]), logged (for the tests that ask what reached "the API
//! server", with the user and whom it acted as), refused if anonymous on anything but
//! the health and version paths, then dispatched: discovery, OIDC, OpenAPI here;
//! resource paths to api.rs.
//!
//! Not here: authorization (every authenticated user may do anything, but for the
//! impersonations a test refused).

use std::sync::Arc;

use http::{StatusCode, header};
use serde_json::Value;

use crate::{
    Body, State, api, authn, full, impersonation, json_response, openapi,
    request::{Req, read_limited},
    resources, response, status,
};

/// One request as it reached the double.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The authenticated user (the audit event's `user`).
    pub user: Option<String>,
    /// Whom the request was handled as through impersonation (the audit event's
    /// `impersonatedUser`): its name and groups.
    pub impersonated_user: Option<String>,
    pub impersonated_groups: Vec<String>,
    pub headers: Vec<(String, String)>,
}

pub(crate) async fn route(
    state: Arc<State>,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let Ok(body) = read_limited(body).await else {
        let mut response = status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "request body too large",
        );
        let close = header::HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
        return response;
    };
    let query_str = parts.uri.query().unwrap_or_default().to_owned();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: form_urlencoded::parse(query_str.as_bytes())
            .into_owned()
            .collect(),
        headers: parts.headers,
        body,
        upgrade,
        user: Value::Null,
    };
    let mut req = req;
    let user = authn::authenticate(&state, &req);
    let username = user
        .as_ref()
        .ok()
        .and_then(|u| u.as_ref()?["username"].as_str().map(str::to_owned));
    // The headers as they came, for the log: the filter removes the impersonation ones.
    let notable = notable_headers(&req);
    let acting = match &user {
        Ok(Some(requester)) => Some(impersonation::apply(
            &state.refused_access.lock().unwrap(),
            &mut req,
            requester.clone(),
        )),
        _ => None,
    };
    let impersonated = match &acting {
        Some(Ok(acting)) if Some(acting) != user.as_ref().ok().and_then(Option::as_ref) => {
            Some(acting)
        }
        _ => None,
    };
    state.requests.lock().unwrap().push(Logged {
        method: req.method.to_string(),
        path: req.path.clone(),
        query: query_str.clone(),
        user: username,
        impersonated_user: impersonated.and_then(|u| u["username"].as_str().map(str::to_owned)),
        impersonated_groups: impersonated
            .and_then(|u| u["groups"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        headers: notable,
    });
    let user = match (user, acting) {
        (Err(response), _) | (_, Some(Err(response))) => return response,
        (Ok(_), Some(Ok(acting))) => Some(acting),
        (Ok(user), None) => user,
    };
    req.user = user.clone().unwrap_or(Value::Null);
    let path = req.path.trim_end_matches('/');
    let anonymous_ok = matches!(path, "/version" | "/healthz" | "/livez" | "/readyz");
    if user.is_none() && !anonymous_ok {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "forbidden: User \"system:anonymous\" cannot {} path \"{}\"",
                req.method.as_str().to_lowercase(),
                req.path
            ),
        );
    }
    match path {
        "/version" => json_response(StatusCode::OK, &resources::version(state.version)),
        "/healthz" | "/livez" | "/readyz" => {
            response(StatusCode::OK, "text/plain; charset=utf-8", full("ok"))
        }
        "/api" => json_response(StatusCode::OK, &resources::api_versions()),
        "/apis" => json_response(StatusCode::OK, &resources::api_groups()),
        "/api/v1" => json_response(
            StatusCode::OK,
            &resources::resource_list("", "v1").expect("served"),
        ),
        // Installed only for an issuer kube-apiserver serves discovery for (tokens.rs).
        "/.well-known/openid-configuration" if state.jwks_uri.is_some() => json_response(
            StatusCode::OK,
            &state
                .signer
                .openid_configuration(state.jwks_uri.as_deref().unwrap_or_default()),
        ),
        "/openid/v1/jwks" if state.jwks_uri.is_some() => {
            json_response(StatusCode::OK, &state.signer.jwks())
        }
        "/openapi/v3" => json_response(StatusCode::OK, &openapi::index()),
        _ => {
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            match segs.as_slice() {
                ["apis", g, v] => match resources::resource_list(g, v) {
                    Some(list) => json_response(StatusCode::OK, &list),
                    None => status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                },
                ["api" | "apis", ..] => api::handle(&state, req),
                ["openapi", "v3", gv @ ..] => match openapi::document(&gv.join("/")) {
                    Some(doc) => json_response(StatusCode::OK, &doc),
                    None => status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                },
                _ => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            }
        }
    }
}

fn notable_headers(req: &Req) -> Vec<(String, String)> {
    let notable = |k: &str| {
        k.starts_with("impersonate-")
            || k.starts_with("x-forwarded")
            || matches!(
                k,
                "audit-id" | "forwarded" | "x-real-ip" | "upgrade" | "accept"
            )
    };
    req.headers
        .iter()
        .filter(|(k, _)| notable(k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect()
}
