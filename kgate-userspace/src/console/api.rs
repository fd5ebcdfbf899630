//! The console's JSON API under `/api/`, a plain `match` on method and path. Errors
//! are JSON `{"message": …}` with the status the cause calls for (the API server's own
//! code when it refused).
//!
//! - `GET /api/whoami`: the mode, and the signed-in user
//! - `POST /api/signin` `{token}`, `POST /api/signout` (non-loopback consoles)
//! - `GET /api/nodes`: every node's agent, from the heartbeat Leases
//! - `GET /api/approvals`, `GET /api/approvals/events` (Server-Sent Events)
//! - `POST /api/approvals/NAME/approve` `{for?, reason?}`, `.../deny` `{reason?}`
//! - `GET /api/sessions?user&pod&since&node&offset&limit`
//! - `GET /api/sessions/ID`: the session and its requests as a timeline
//! - `GET /api/sessions/ID/streams/AUDIT/asciicast`
//!
//! Not here: the checks before routing ([`super::guard`]), the event stream
//! ([`super::events`]).

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Console, error, events, json_response,
    source::{Caller, Query, SourceError},
    viewer::ViewerError,
};
use crate::{
    body::{self, Body},
    decisions::{self, DecideError, Verdict},
    record::event,
};

/// Larger request bodies are refused: sign-in and decisions are a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;
/// A sessions page unless `limit` says otherwise, and the most it may say.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub(super) async fn handle(console: &Console, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().trim_start_matches("/api/").to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let parts: Vec<&str> = path.split('/').collect();
    // Routes that need no client.
    match (&method, parts.as_slice()) {
        (&Method::POST, ["signin"]) => return sign_in(console, req).await,
        (&Method::POST, ["signout"]) => {
            let cookie = console.viewers.sign_out(req.headers());
            let mut r = json_response(StatusCode::OK, &json!({}));
            if let Ok(v) = cookie.parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            return r;
        }
        _ => {}
    }
    let super::viewer::Acting {
        client,
        user,
        token,
    } = match console.viewers.client(req.headers()) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    let caller = Caller {
        client: client.clone(),
        token,
    };
    match (&method, parts.as_slice()) {
        (&Method::GET, ["whoami"]) => {
            let user = match user {
                Some(u) => Some(u),
                None => decisions::whoami(&client).await,
            };
            let mode = console.viewers.credentials.name();
            json_response(StatusCode::OK, &json!({"user": user, "mode": mode}))
        }
        (&Method::GET, ["nodes"]) => {
            match crate::nodes::from_leases(client, &console.namespace).await {
                Ok(rows) => json_response(StatusCode::OK, &crate::nodes::node_json(&rows)),
                Err(e) => error(StatusCode::BAD_GATEWAY, &format!("{e:#}")),
            }
        }
        (&Method::GET, ["approvals"]) => match decisions::list(client).await {
            Ok(items) => json_response(StatusCode::OK, &items),
            Err(e) => decide_error(&e),
        },
        (&Method::GET, ["approvals", "events"]) => events::approvals(client),
        (&Method::POST, ["approvals", name, verb @ ("approve" | "deny")]) => {
            let name = (*name).to_owned();
            let approve = *verb == "approve";
            decide(req, client, &name, approve).await
        }
        (&Method::GET, ["sessions"]) => sessions(console, caller, &query).await,
        (&Method::GET, ["sessions", id]) => session(console, caller, id).await,
        (&Method::GET, ["sessions", id, "streams", stream, "asciicast"]) => {
            match console
                .sessions
                .asciicast(caller, (*id).to_owned(), (*stream).to_owned())
                .await
            {
                Ok(cast) => Response::builder()
                    .header(header::CONTENT_TYPE, "application/x-asciicast")
                    .header(header::CACHE_CONTROL, "no-store")
                    .body(body::full(cast))
                    .unwrap_or_else(|_| Response::new(body::empty())),
                Err(e) => source_error(&e),
            }
        }
        (_, _) => error(
            StatusCode::NOT_FOUND,
            &format!("no API {method} /api/{path}"),
        ),
    }
}

/// The request's JSON body, bounded.
async fn read_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")))?
        .to_bytes();
    let bytes = if bytes.is_empty() {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("the body: {e}")))
}

async fn sign_in(console: &Console, req: Request<Incoming>) -> Response<Body> {
    #[derive(Deserialize)]
    struct SignIn {
        token: String,
    }
    let SignIn { token } = match read_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match console.viewers.sign_in(&token).await {
        Ok((cookie, user)) => {
            let mut r = json_response(StatusCode::OK, &json!({ "user": user }));
            if let Ok(v) = cookie.parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e @ ViewerError::NotRemote) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => error(StatusCode::UNAUTHORIZED, &e.to_string()),
    }
}

async fn decide(
    req: Request<Incoming>,
    client: kube::Client,
    name: &str,
    approve: bool,
) -> Response<Body> {
    #[derive(Deserialize)]
    struct Decision {
        #[serde(default, rename = "for")]
        grant_for: Option<String>,
        #[serde(default)]
        reason: Option<String>,
    }
    let Decision { grant_for, reason } = match read_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let blank = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let (grant_for, reason) = (blank(grant_for), blank(reason));
    let verdict = if approve {
        Verdict::Approve {
            grant_for: grant_for.as_deref(),
        }
    } else {
        Verdict::Deny
    };
    match decisions::decide(client, name, verdict, reason.as_deref()).await {
        Ok(decided) => json_response(
            StatusCode::OK,
            &json!({"name": name, "decision": if approve { "approve" } else { "deny" }, "decidedBy": decided.by}),
        ),
        Err(e) => decide_error(&e),
    }
}

fn decide_error(e: &DecideError) -> Response<Body> {
    let code = match e {
        DecideError::BadDuration(_) => StatusCode::BAD_REQUEST,
        DecideError::NotPending { .. } => StatusCode::CONFLICT,
        DecideError::Kube(kube::Error::Api(status)) => {
            StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        DecideError::Kube(_) => StatusCode::BAD_GATEWAY,
    };
    let message = match e {
        DecideError::Kube(kube::Error::Api(status)) => status.message.clone(),
        other => other.to_string(),
    };
    error(code, &message)
}

fn source_error(e: &SourceError) -> Response<Body> {
    let code = match e {
        SourceError::NotFound(_) => StatusCode::NOT_FOUND,
        SourceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, &e.to_string())
}

/// `GET /api/sessions`: one page, newest first.
async fn sessions(console: &Console, caller: Caller, query: &str) -> Response<Body> {
    let mut q = Query {
        limit: DEFAULT_PAGE,
        ..Query::default()
    };
    for (key, value) in form_pairs(query) {
        let value = value.trim().to_owned();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "user" => q.user = Some(value),
            "pod" => q.pod = Some(value),
            "node" => q.node = Some(value),
            "since" => {
                let Some(since) = crate::approval::parse_duration(&value)
                    .and_then(|d| jiff::SignedDuration::try_from(d).ok())
                else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("since {value:?}: a duration such as 90s, 10m or 2h"),
                    );
                };
                q.since = Some(jiff::Timestamp::now() - since);
            }
            "offset" | "limit" => {
                let Ok(n) = value.parse::<usize>() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("{key} {value:?}: a number"),
                    );
                };
                if key == "offset" {
                    q.offset = n;
                } else {
                    q.limit = n.clamp(1, MAX_PAGE);
                }
            }
            _ => {}
        }
    }
    match console.sessions.list(caller, q).await {
        Ok(page) => json_response(StatusCode::OK, &page),
        Err(e) => source_error(&e),
    }
}

/// One request of a session, as the timeline shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    audit_id: String,
    time: String,
    verb: String,
    resource: String,
    decision: String,
    rule: Option<String>,
    approval: Option<String>,
    code: Option<u16>,
    message: Option<String>,
    latency_ms: Option<f64>,
    /// `RequestReceived` only: the agent stopped before the answer was recorded.
    unfinished: bool,
    /// The request's body as recorded (masked), at level `Request` and above.
    request_object: Option<Value>,
    response_object: Option<Value>,
}

async fn session(console: &Console, caller: Caller, id: &str) -> Response<Body> {
    match console.sessions.session(caller, id.to_owned()).await {
        Ok((node, s)) => {
            let rows: Vec<Row> = s.events.iter().map(row).collect();
            json_response(
                StatusCode::OK,
                &json!({"node": node, "session": &s, "timeline": rows}),
            )
        }
        Err(e) => source_error(&e),
    }
}

fn row(e: &event::Event) -> Row {
    Row {
        audit_id: e.audit_id.clone(),
        time: e.request_received_timestamp.clone(),
        verb: e.verb.clone(),
        resource: e.what(),
        decision: e.annotation(event::DECISION).unwrap_or("-").to_owned(),
        rule: e.annotation(event::RULE).map(str::to_owned),
        approval: e.annotation(event::APPROVAL).map(str::to_owned),
        code: e.code(),
        message: e
            .response_status
            .as_ref()
            .map(|s| s.message.clone())
            .filter(|m| !m.is_empty()),
        latency_ms: e
            .annotation(event::LATENCY_US)
            .and_then(|us| us.parse::<f64>().ok())
            .map(|us| us / 1000.0),
        unfinished: e.stage == event::STAGE_RECEIVED,
        request_object: e.request_object.clone(),
        response_object: e.response_object.clone(),
    }
}

/// `a=1&b=x%20y` as pairs, percent- and plus-decoded.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let cases = [
            ("user=alice", vec![("user", "alice")]),
            (
                "pod=demo%2Fweb-*&since=10m",
                vec![("pod", "demo/web-*"), ("since", "10m")],
            ),
            (
                "user=system%3Aserviceaccount%3Ademo%3Abot",
                vec![("user", "system:serviceaccount:demo:bot")],
            ),
            (
                "a=x+y&b=%zz&c=%4",
                vec![("a", "x y"), ("b", "%zz"), ("c", "%4")],
            ),
            ("", vec![]),
        ];
        for (query, want) in cases {
            let got = form_pairs(query);
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(got, want, "{query}");
        }
    }
}
