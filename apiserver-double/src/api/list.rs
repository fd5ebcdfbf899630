//! Reads of a collection: list (label and field selectors, `limit` and `continue`,
//! `as=Table`), written item by item so a huge list never exists as one string; and
//! watch (from now, or resumed from a resourceVersion, with BOOKMARKs and
//! `timeoutSeconds`; a resourceVersion the server no longer has ends in one 410 ERROR),
//! including the streaming list (`sendInitialEvents=true`, the WatchList feature,
//! on by default since 1.32: every object as ADDED, then a BOOKMARK annotated
//! `k8s.io/initial-events-end`). Their options are validated as the API server's
//! `ValidateListOptions` does (422 `ListOptions.meta.k8s.io`).
//!
//! Not here: getting one object (api.rs).

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::{Target, is_true, status_body};
use crate::{Body, Req, State, channel_body, json_response, response, selector::Selector, table};

/// The API server's checks of a list's or watch's options (`ValidateListOptions`,
/// the WatchList feature enabled): each error as `FIELD: TYPE: DETAIL`, with its
/// cause reason.
fn option_errors(req: &Req, watch: bool) -> Vec<(&'static str, &'static str, String)> {
    let forbidden = |field, detail: &str| {
        (
            field,
            "FieldValueForbidden",
            format!("{field}: Forbidden: {detail}"),
        )
    };
    let rv_match = req.query("resourceVersionMatch").filter(|m| !m.is_empty());
    let send_initial = req.query("sendInitialEvents");
    let mut errors = Vec::new();
    if watch {
        if send_initial.is_some() && rv_match != Some("NotOlderThan") {
            errors.push(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if let Some(m) = rv_match {
            if send_initial.is_none() {
                errors.push(forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            if m != "NotOlderThan" {
                errors.push((
                    "resourceVersionMatch",
                    "FieldValueNotSupported",
                    format!(
                        "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"NotOlderThan\""
                    ),
                ));
            }
        }
        return errors;
    }
    if let Some(m) = rv_match {
        if req.query("resourceVersion").is_none_or(str::is_empty) {
            errors.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if req.query("continue").is_some_and(|c| !c.is_empty()) {
            errors.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if m != "Exact" && m != "NotOlderThan" {
            errors.push((
                "resourceVersionMatch",
                "FieldValueNotSupported",
                format!(
                    "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
                ),
            ));
        }
    }
    if is_true(send_initial) {
        errors.push(forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    errors
}

/// The 422 for invalid list options, as `errors.NewInvalid` writes it.
fn invalid_options(errors: &[(&str, &str, String)]) -> hyper::Response<Body> {
    let listed: Vec<&str> = errors.iter().map(|(_, _, m)| m.as_str()).collect();
    let joined = if let [one] = listed.as_slice() {
        (*one).to_owned()
    } else {
        format!("[{}]", listed.join(", "))
    };
    let mut body = status_body(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!("ListOptions.meta.k8s.io \"\" is invalid: {joined}"),
    );
    body["details"] = json!({
        "group": "meta.k8s.io",
        "kind": "ListOptions",
        "causes": errors.iter().map(|(field, reason, message)| {
            let detail = message.split_once(": ").map_or(message.as_str(), |(_, d)| d);
            json!({"reason": reason, "message": detail, "field": field})
        }).collect::<Vec<_>>(),
    });
    json_response(StatusCode::UNPROCESSABLE_ENTITY, &body)
}

pub(super) fn list(state: &State, t: &Target, req: &Req) -> hyper::Response<Body> {
    let errors = option_errors(req, false);
    if !errors.is_empty() {
        return invalid_options(&errors);
    }
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
    let (tx, body) = channel_body();
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
    response(StatusCode::OK, "application/json", body)
}

pub(super) fn watch(state: &Arc<State>, t: &Target, req: &Req) -> hyper::Response<Body> {
    let errors = option_errors(req, true);
    if !errors.is_empty() {
        return invalid_options(&errors);
    }
    let r = t.resource;
    // Some(true): a streaming list; Some(false): no synthetic events even without a
    // resourceVersion; None: as before the WatchList feature.
    let send_initial = req.query("sendInitialEvents").map(|v| is_true(Some(v)));
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
    let (initial, from_rv) = match (send_initial, since) {
        (Some(false), None) => (Ok(Vec::new()), state.store.current_rv()),
        // The state as it is now is never older than what was asked.
        (Some(true), _) | (None, None) => {
            let (items, rv) = state.store.list(r.name, ns.as_deref());
            (
                Ok(items.into_iter().map(|o| ("ADDED", o)).collect::<Vec<_>>()),
                rv,
            )
        }
        (_, Some(rv)) => match state.store.events_since(r.name, rv) {
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
    let (tx, body) = channel_body();
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
        if send_initial == Some(true) && bookmarks {
            let end = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {
                "resourceVersion": from_rv.to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"}}});
            if send("BOOKMARK", end).await.is_err() {
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
    response(StatusCode::OK, "application/json", body)
}
