//! The node's recorded sessions on the admin endpoint, for `kgate sessions` run
//! cluster-wide (and the console) from an admin's machine:
//!
//! - `GET /sessions?user=GLOB&pod=GLOB&since=RFC3339&id=PREFIX`: the sessions the
//!   filter selects (`id`: those whose ID or connection starts with it), as NDJSON,
//!   one summary per line, oldest first (by start, then ID).
//! - `GET /sessions/{id}`: that session's audit events, NDJSON, in request order.
//! - `GET /sessions/{id}/streams/{stream}`: one exec/attach stream as asciicast v2
//!   (`?format=json`: its captured frames, what `replay -o json` prints). `{stream}` is
//!   the stream's audit ID or a unique prefix, or `terminal` for the session's only
//!   exec/attach stream (no audit ID, a UUID, starts with `t`).
//!
//! Authorization is narrower than `/status`: a SubjectAccessReview on the virtual
//! resource `sessions` of group `kgate.io` (no namespace), verb `list` for the list and
//! `get` (with the session ID as the name) for one session, because a session shows
//! what a bot typed and read. Refusals are Kubernetes `Status` objects.
//!
//! Memory is what the single-node CLI needs: the list holds summaries (a few words per
//! request), a session its own events, a stream its frames; answers are written line
//! by line, never built whole.
//!
//! Not here: grouping records into sessions ([`crate::record::sessions`]), reaching
//! the agents ([`crate::cluster_sessions`]).

use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header::CONTENT_TYPE};
use hyper::body::Incoming;
use jiff::Timestamp;
use serde_json::json;

use super::Admin;
use crate::{
    api_status::{Status, respond},
    body,
    record::sessions::{self, Filter, SessionsError},
};

/// The virtual resource's group and name, as the SubjectAccessReview asks about them
/// (and `kgate-session-reader` grants).
pub(crate) const GROUP: &str = "kgate.io";
pub(crate) const RESOURCE: &str = "sessions";
/// The `{stream}` that picks the session's only exec/attach stream.
pub(crate) const TERMINAL: &str = "terminal";

/// What a path under `/sessions` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    List,
    Events(String),
    Stream(String, String),
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/sessions")?;
    let parts: Vec<&str> = rest
        .trim_start_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    match parts.as_slice() {
        [] => Some(Route::List),
        [id] => Some(Route::Events((*id).to_owned())),
        [id, "streams", stream] => Some(Route::Stream((*id).to_owned(), (*stream).to_owned())),
        _ => None,
    }
}

/// Answers a request for a path under `/sessions`.
pub(super) async fn serve(admin: &Admin, req: Request<Incoming>) -> Response<body::Body> {
    let Some(route) = route(req.uri().path()) else {
        return respond(&Status::not_found(
            "kgate: the admin endpoint serves /sessions, /sessions/{id} and /sessions/{id}/streams/{stream}",
        ));
    };
    if req.method() != http::Method::GET {
        return respond(&Status::method_not_allowed(
            "kgate: the sessions endpoints take GET",
        ));
    }
    let (verb, name) = match &route {
        Route::List => ("list", ""),
        Route::Events(id) | Route::Stream(id, _) => ("get", id.as_str()),
    };
    let attributes = json!({"resourceAttributes": {
        "group": GROUP, "resource": RESOURCE, "verb": verb, "name": name,
    }});
    let what = if name.is_empty() {
        format!("{verb} {RESOURCE}.{GROUP}")
    } else {
        format!("{verb} {RESOURCE}.{GROUP} {name:?}")
    };
    if let Err(status) = admin.review(&req, attributes, &what).await {
        return respond(&status.for_resource(GROUP, RESOURCE, name));
    }
    let Some(dir) = admin.record_dir.clone() else {
        return respond(&Status::not_found(format!(
            "kgate: node {} keeps no record log (record.dir is not set)",
            admin.node
        )));
    };
    let query = query(req.uri().query().unwrap_or_default());
    match route {
        Route::List => list(dir, &query).await,
        Route::Events(id) => events(dir, id).await,
        Route::Stream(id, stream) => {
            let json = query.iter().any(|(k, v)| k == "format" && v == "json");
            replay(dir, id, stream, json).await
        }
    }
}

fn query(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The filter a list's query names.
fn filter(query: &[(String, String)]) -> Result<(Filter, Option<String>), Status> {
    let mut filter = Filter::default();
    let mut id = None;
    for (key, value) in query {
        match key.as_str() {
            "user" => filter.user = Some(wildmatch::WildMatch::new(value)),
            "pod" => filter.pod = Some(wildmatch::WildMatch::new(value)),
            "since" => {
                filter.since = Some(value.parse::<Timestamp>().map_err(|e| {
                    Status::bad_request(format!(
                        "kgate: since={value:?} is not an RFC 3339 time: {e}"
                    ))
                })?);
            }
            "id" => id = Some(value.clone()),
            _ => {}
        }
    }
    Ok((filter, id))
}

/// A session ID (or prefix) selects it as [`sessions::find`] does.
fn id_matches(session: &sessions::Session, id: &str) -> bool {
    session.id.starts_with(id) || session.connection.starts_with(id)
}

async fn list(dir: PathBuf, query: &[(String, String)]) -> Response<body::Body> {
    let (filter, id) = match filter(query) {
        Ok(f) => f,
        Err(status) => return respond(&status),
    };
    let loaded = tokio::task::spawn_blocking(move || sessions::load_summaries(&dir)).await;
    let mut selected = match loaded {
        Ok(Ok((all, _damage))) => sessions::select(all, &filter),
        Ok(Err(e)) => return respond(&read_failed(&e)),
        Err(e) => return respond(&Status::internal_error(format!("kgate: {e}"))),
    };
    if let Some(id) = id {
        selected.retain(|s| id_matches(s, &id));
    }
    // Oldest first, a total order: the cluster-wide list merges nodes by this key.
    selected.sort_by(|a, b| (&a.start, &a.id).cmp(&(&b.start, &b.id)));
    ndjson(selected.into_iter())
}

async fn events(dir: PathBuf, id: String) -> Response<body::Body> {
    let loaded = tokio::task::spawn_blocking(move || sessions::load_session(&dir, &id)).await;
    match loaded {
        Ok(Ok((session, _, _))) => ndjson(session.events.into_iter()),
        Ok(Err(e)) => respond(&session_error(&e)),
        Err(e) => respond(&Status::internal_error(format!("kgate: {e}"))),
    }
}

async fn replay(dir: PathBuf, id: String, stream: String, json: bool) -> Response<body::Body> {
    let written = tokio::task::spawn_blocking(move || {
        let (session, recordings, _) = sessions::load_session(&dir, &id)?;
        let pick = (stream != TERMINAL).then_some(stream.as_str());
        let rec = sessions::pick_stream(&session, &recordings, pick)?;
        let mut out = Vec::new();
        if json {
            serde_json::to_writer_pretty(&mut out, rec).map_err(std::io::Error::from)
        } else {
            crate::record::replay::asciicast(rec, &mut out)
        }
        .map_err(|e| SessionsError::ReadFailed("the recording".into(), e))?;
        Ok::<_, SessionsError>(out)
    })
    .await;
    let content_type = if json {
        "application/json"
    } else {
        "application/x-asciicast"
    };
    match written {
        Ok(Ok(out)) => Response::builder()
            .header(CONTENT_TYPE, content_type)
            .body(body::full(out))
            .unwrap_or_else(|_| respond(&Status::internal_error("kgate: the recording"))),
        Ok(Err(e)) => respond(&session_error(&e)),
        Err(e) => respond(&Status::internal_error(format!("kgate: {e}"))),
    }
}

/// Each item as one JSON line, serialized as the body is read.
fn ndjson<T, I>(items: I) -> Response<body::Body>
where
    T: serde::Serialize,
    I: Iterator<Item = T> + Send + 'static,
{
    let stream = futures_util::stream::iter(items.map(|item| {
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, body::BoxError>(hyper::body::Frame::data(Bytes::from(line)))
    }));
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/x-ndjson")
        .body(body::stream(http_body_util::StreamBody::new(stream)))
        .unwrap_or_else(|_| respond(&Status::internal_error("kgate: the sessions")))
}

fn read_failed(e: &SessionsError) -> Status {
    Status::internal_error(format!("kgate: {e}"))
}

/// A session-lookup failure as the Status its client reads: what is not there is a
/// 404, an ambiguous name a 409 listing the candidates, a stream that cannot be played
/// a 400.
fn session_error(e: &SessionsError) -> Status {
    match e {
        SessionsError::ReadFailed(..) => read_failed(e),
        SessionsError::NotFound(_)
        | SessionsError::NoStream(_)
        | SessionsError::StreamNotFound(..) => {
            Status::not_found(format!("kgate: {e}")).for_resource(GROUP, RESOURCE, "")
        }
        SessionsError::Ambiguous(..) | SessionsError::WhichStream(..) => {
            Status::conflict(format!("kgate: {e}"))
        }
        SessionsError::NotTerminal(_) => Status::bad_request(format!("kgate: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases: &[(&str, Option<Route>)] = &[
            ("/sessions", Some(Route::List)),
            ("/sessions/", Some(Route::List)),
            ("/sessions/abc", Some(Route::Events("abc".into()))),
            (
                "/sessions/abc.2/streams/terminal",
                Some(Route::Stream("abc.2".into(), "terminal".into())),
            ),
            ("/sessions/abc/streams", None),
            ("/sessions/abc/other/x", None),
            ("/sessionsx", None),
        ];
        for (path, want) in cases {
            assert_eq!(&route(path), want, "{path}");
        }
    }

    #[test]
    fn filters() {
        let q = query("user=system%3Aserviceaccount%3A*&since=2026-01-02T03:04:05Z&id=ab");
        let (f, id) = filter(&q).unwrap();
        assert!(f.user.unwrap().matches("system:serviceaccount:demo:bot"));
        assert_eq!(f.since.unwrap().as_second(), 1_767_323_045);
        assert_eq!(id.as_deref(), Some("ab"));
        let Err(bad) = filter(&query("since=10m")) else {
            panic!("since=10m is not a time");
        };
        assert_eq!(bad.http_status(), StatusCode::BAD_REQUEST);
    }
}
